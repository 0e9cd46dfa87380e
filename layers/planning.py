"""Stored plans at work: automatic plans, hand edits with live scores, comparison, approval and
adoption.

The approval workflow (审批): ``draft → submitted → approved | rejected → adopted``. Planners
edit drafts (a rejected plan is edited back into a draft) and submit them; an admin approves
or rejects (with a comment) and adopts. Only an approved plan can be adopted.

Hand edits run on a :class:`~layers.partition.Partition` kept in memory per plan version, so an
edit costs only the units it moves; the stored assignment is the truth, and a cached partition
is used only while its version matches the stored one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import shapely.ops
from sqlalchemy import Engine

from geodata import plan_rows
from geodata.crs import to_metric
from geodata.store import read_layer
from layers.communities import bounds
from layers.partition import Partition, UnitGraph, is_contiguous
from layers.plan_io import community_polygons, retired_codes, units_from_database
from layers.redistricting import PlanResult, Rules, assign_codes, make_plan, split_in_two, summary

#: action → (statuses it starts from, status it leads to, roles allowed)
TRANSITIONS = {
    "submit": ({"draft", "rejected"}, "submitted", {"planner", "admin"}),
    "approve": ({"submitted"}, "approved", {"admin"}),
    "reject": ({"submitted"}, "rejected", {"admin"}),
    "adopt": ({"approved"}, "adopted", {"admin"}),
}
EDITABLE = {"draft", "rejected"}


class WorkflowError(Exception):
    """An action the plan's status or the user's role does not allow."""


@dataclass
class Session:
    """A plan's units, graph and partition in memory, for hand edits."""

    plan_id: int
    version: int
    units: gpd.GeoDataFrame
    graph: UnitGraph
    partition: Partition
    rules: Rules
    contiguous: dict  # label → contiguity, kept current for the labels an edit touches


_sessions: OrderedDict[tuple, Session] = OrderedDict()
_graphs: OrderedDict[tuple, tuple[gpd.GeoDataFrame, UnitGraph]] = OrderedDict()
CACHE = 4


def _graph(engine: Engine, street: str | None) -> tuple[gpd.GeoDataFrame, UnitGraph]:
    key = (str(engine.url), street)
    if key not in _graphs:
        units, adjacency = units_from_database(engine, street)
        _graphs[key] = (units, UnitGraph.from_units(units, adjacency))
        while len(_graphs) > CACHE:
            _graphs.popitem(last=False)
    return _graphs[key]


def forget_units(engine: Engine) -> None:
    """Drop cached units (after the units layer changes)."""
    for key in [k for k in _graphs if k[0] == str(engine.url)]:
        del _graphs[key]


def auto_plan(engine: Engine, name: str, author: str, *, street: str | None = None,
              minimum: int | None = None, maximum: int | None = None, target: int | None = None,
              fresh: bool = False, seed: int = 0, progress=None) -> tuple[int, PlanResult]:
    """Make an automatic plan of one street (or every street) and store it as a draft."""
    limits = bounds(engine)
    rules = Rules(minimum or limits.minimum, maximum or limits.maximum, target, not fresh, seed)
    units, graph = _graph(engine, street)
    if not len(units):
        raise ValueError("no units to plan" + (f" in street {street}" if street else ""))
    result = make_plan(graph, rules, retired=retired_codes(engine), progress=progress)
    params = {"street": street, "minimum": rules.minimum, "maximum": rules.maximum, "target": target,
              "fresh": fresh, "seed": seed}
    plan_id = plan_rows.create_plan(engine, name, author, result.assignment, params=params,
                                     scores=result.scores(), district_code=units["district_code"].iloc[0])
    return plan_id, result


def session(engine: Engine, plan_id: int, plan: dict | None = None) -> Session:
    """The plan in memory at its stored version (rebuilt when someone else saved since);
    ``plan`` is its stored row when the caller has read it already."""
    plan = plan or plan_rows.get_plan(engine, plan_id)
    key = (str(engine.url), plan_id)
    cached = _sessions.get(key)
    if cached is not None and cached.version == plan["version"]:
        _sessions.move_to_end(key)
        return cached
    params = plan["params"] or {}
    units, graph = _graph(engine, params.get("street"))
    assignment = plan_rows.plan_assignment(engine, plan_id)
    labels = assignment.reindex(graph.codes).to_numpy(dtype=object)
    labels = np.where(pd.isna(labels), graph.current, labels)
    rules = Rules(params.get("minimum", 1000), params.get("maximum", 3000), params.get("target"))
    partition = Partition(graph, labels)
    broken = partition.non_contiguous()
    found = Session(plan_id, plan["version"], units, graph, partition, rules,
                    {label: label not in broken for label in partition.households})
    _sessions[key] = found
    while len(_sessions) > CACHE:
        _sessions.popitem(last=False)
    return found


def community_scores(s: Session, labels: list[str]) -> list[dict]:
    """The live figures of these communities, with the rules each one breaks."""
    p, r = s.partition, s.rules
    out = []
    for label in labels:
        if label not in p.households:
            out.append({"community_code": label, "households": 0, "removed": True, "violations": []})
            continue
        households = int(p.households[label])
        violations = []
        if households < r.minimum:
            violations.append(f"below the minimum of {r.minimum} households")
        if households > r.maximum:
            violations.append(f"above the maximum of {r.maximum} households")
        if not is_contiguous(p, label):
            violations.append("not contiguous")
        if len(set(s.graph.street[p.members(label)])) > 1:
            violations.append("crosses a street boundary")
        out.append({"community_code": label, "households": households,
                    "population": int(p.population[label]), "area_m2": round(float(p.area[label]), 1),
                    "polsby_popper": round(p.polsby_popper(label), 4), "violations": violations})
    return out


def move_units(engine: Engine, plan_id: int, unit_codes: list[str], to: str, version: int,
               actor: str) -> dict:
    """Move units to a community (an existing code, or ``"new"`` for a new one in their street).

    The edit is allowed even when it breaks a rule: the answer names the violations.
    """
    plan = plan_rows.get_plan(engine, plan_id)
    if plan["status"] not in EDITABLE:
        raise WorkflowError(f"plan {plan_id} is {plan['status']}: only drafts can be edited")
    if plan["version"] != version:
        raise plan_rows.VersionConflict(f"plan {plan_id} is at version {plan['version']}, not {version}: "
                                         "reload it; nothing was overwritten")
    s = session(engine, plan_id, plan)
    g, p = s.graph, s.partition
    try:
        positions = [g.position[u] for u in unit_codes]
    except KeyError as exc:
        raise ValueError(f"unit {exc.args[0]} is not in this plan") from None
    if not positions:
        raise ValueError("no units to move")
    streets = set(g.street[positions])
    if to == "new":
        if len(streets) != 1:
            raise ValueError("a new community lies in one street: choose units of one street")
        taken = set(p.labels) | retired_codes(engine)
        to = str(assign_codes(np.array(["new:x"], dtype=object), np.array([streets.pop()]), taken)[0][0])
    elif to not in p.households:
        raise ValueError(f"no community {to!r} in this plan")
    touched = sorted({p.labels[i] for i in positions} | {to})
    p.move(positions, to)
    scores = plan_scores(s, touched)
    new_version = plan_rows.save_moves(engine, plan_id, {u: to for u in unit_codes}, version, actor,
                                        scores=scores,
                                        status="draft" if plan["status"] == "rejected" else None)
    s.version = new_version
    return {"version": new_version, "to": to, "units": list(unit_codes),
            "communities": community_scores(s, touched), "plan": scores}


def plan_scores(s: Session, touched: list[str] | None = None) -> dict:
    """The plan's scores from the partition's running sums — an edit re-checks the contiguity of
    the communities it touched only, so it costs the same in a street and in a city."""
    p, r = s.partition, s.rules
    for label in touched or []:
        if label in p.households:
            s.contiguous[label] = is_contiguous(p, label)
        else:
            s.contiguous.pop(label, None)
    return summary(p, r, {label for label, whole in s.contiguous.items() if not whole})


def split_community(engine: Engine, plan_id: int, code: str, version: int, actor: str,
                    line: shapely.LineString | None = None) -> dict:
    """Split a community of the plan in two: balanced, compact and contiguous parts, or along
    a line drawn across it (EPSG:4326); the part with fewer households becomes a new community."""
    s = session(engine, plan_id)
    if code not in s.partition.households:
        raise ValueError(f"no community {code!r} in this plan")
    if line is None:
        moving = split_in_two(s.graph, s.partition.labels, code, s.rules, seed=version)
        return move_units(engine, plan_id, moving, "new", version, actor)
    members = s.units[s.units["code"].isin(s.graph.codes[s.partition.members(code)])]
    outline = shapely.union_all(members.geometry.values)
    pieces = shapely.get_parts(shapely.ops.split(outline, line)) if outline.intersects(line) else []
    if len(pieces) < 2:
        raise ValueError(f"the line does not cut community {code} in two")
    points = members.geometry.representative_point()
    side = np.array([int(np.argmax([piece.contains(p) for piece in pieces])) for p in points])
    households = np.bincount(side, weights=members["households"].to_numpy(), minlength=len(pieces))
    keep = int(np.argmax(households))
    moving = [str(c) for c, k in zip(members["code"], side, strict=True) if k != keep]
    if not moving:
        raise ValueError(f"the line leaves every unit of {code} on one side")
    return move_units(engine, plan_id, moving, "new", version, actor)


def merge_communities(engine: Engine, plan_id: int, keep: str, merge: str, version: int, actor: str) -> dict:
    s = session(engine, plan_id)
    if keep not in s.partition.households or merge not in s.partition.households:
        raise ValueError("both communities must be in the plan")
    units = [str(s.graph.codes[i]) for i in s.partition.members(merge)]
    return move_units(engine, plan_id, units, keep, version, actor)


def change_status(engine: Engine, plan_id: int, action: str, version: int, actor: str, role: str,
                  comment: str | None = None) -> dict:
    """Apply a workflow action (submit, approve, reject, adopt) after checking status and role."""
    if action not in TRANSITIONS:
        raise WorkflowError(f"unknown action {action!r}: use {', '.join(TRANSITIONS)}")
    sources, target, roles = TRANSITIONS[action]
    plan = plan_rows.get_plan(engine, plan_id)
    if role not in roles:
        raise WorkflowError(f"a {role} may not {action} a plan")
    if plan["status"] not in sources:
        raise WorkflowError(f"plan {plan_id} is {plan['status']}: only a plan that is "
                            f"{' or '.join(sorted(sources))} can be {target}")
    if action == "reject" and not (comment or "").strip():
        raise WorkflowError("a rejection needs a comment saying why")
    if action == "adopt":
        report = adopt_plan(engine, plan_id, version, actor)
        return {"status": "adopted", **report}
    new_version = plan_rows.set_status(engine, plan_id, target, version, actor, comment)
    return {"status": target, "version": new_version}


def adopt_plan(engine: Engine, plan_id: int, version: int, actor: str) -> dict:
    """Replace the current communities by the plan's, re-deriving facilities' and cells'
    communities by location; cells that straddle two communities are listed for regeneration."""
    s = session(engine, plan_id)
    result = PlanResult(s.graph, s.partition, s.rules)
    polygons = community_polygons(result, s.units)
    current = read_layer(engine, "communities")
    names = dict(zip(current["code"], current["name"], strict=True))
    polygons["code"] = polygons["community_code"]
    polygons["name"] = [names.get(c, f"新社区{c[-3:]}") for c in polygons["code"]]
    polygons["district_code"] = [c[:6] for c in polygons["code"]]
    streets = sorted(set(polygons["street_code"]))
    facilities = read_layer(engine, "facilities")
    cells = read_layer(engine, "grid_cells")
    area = polygons[["code", "geometry"]]
    # facilities: the community their point lies in (those outside every polygon keep theirs)
    joined = gpd.sjoin(facilities[["code", "geometry"]], area.rename(columns={"code": "community"}),
                       how="inner", predicate="within")
    facility_communities = joined.drop_duplicates("code").set_index("code")["community"]
    # cells: the community holding most of their area; straddling cells listed
    metric_cells = to_metric(cells)[["code", "geometry"]]
    metric_area = area.to_crs(metric_cells.crs).rename(columns={"code": "community"})
    pieces = gpd.overlay(metric_cells, metric_area, how="intersection", keep_geom_type=True)
    pieces["area"] = pieces.area
    pieces = pieces[pieces["area"] > 1.0]
    cell_communities = pieces.sort_values("area", ascending=False).drop_duplicates("code").set_index(
        "code")["community"]
    share = pieces.groupby("code")["area"].max() / pieces.groupby("code")["area"].sum()
    straddling = sorted(share[share < 0.99].index)
    renumber = sorted(c for c, comm in cell_communities.items() if not c.startswith(comm))
    new_version = plan_rows.adopt(engine, plan_id, version, actor, polygons, result.assignment,
                                   facility_communities, cell_communities)
    forget_units(engine)
    return {"version": new_version, "streets": streets, "communities": len(polygons),
            "straddling_cells": straddling, "cells_to_renumber": renumber,
            "facilities_rederived": int(len(facility_communities))}


def compare(engine: Engine, plan_id: int, other: int | None = None) -> dict:
    """The units whose community differs between a plan and the current boundaries (or another
    plan), and the difference of their scores."""
    s = session(engine, plan_id)
    mine = pd.Series(s.partition.labels, index=s.graph.codes)
    if other is None:
        theirs = pd.Series(s.graph.current, index=s.graph.codes)
        other_scores = PlanResult(s.graph, Partition(s.graph, np.array(
            [c or "(blind spot)" for c in s.graph.current], dtype=object)), s.rules).scores()
    else:
        o = session(engine, other)
        theirs = pd.Series(o.partition.labels, index=o.graph.codes).reindex(mine.index)
        other_scores = plan_scores(o)
    changed = mine[mine.to_numpy() != theirs.to_numpy()]
    my_scores = plan_scores(s)
    keys = [k for k, v in my_scores.items() if isinstance(v, (int, float)) and k in other_scores]
    return {"plan": plan_id, "other": other or "current", "changed_units": [
        {"unit": u, "from": theirs[u], "to": c} for u, c in changed.items()],
        "scores": {k: {"plan": my_scores[k], "other": other_scores[k],
                       "difference": round(my_scores[k] - other_scores[k], 4)} for k in keys}}
