"""Hand edits of a plan, and what the plan page and the API show of it.

An edit moves units to another community (or a new one), splits a community in two (balanced,
or along a drawn line) or merges two; it is allowed even when it breaks a rule, and its answer
names the rules each touched community breaks. Edits run on the plan's
:class:`~layers.partition.Partition` in the process's :class:`~layers.plan_memory.PlanMemory`,
so an edit costs only the units it moves; the stored plan is the truth: the edit is saved with
the version it started from, and memory keeps it only once the save has committed.

Everything the web layer shows of a plan comes from here in domain terms (its description with
the figures of every community, its units as GeoJSON, its export, a comparison), so ``webmap``
never reaches into graphs and partitions.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import shapely.ops

from geodata import plan_rows
from geodata.errors import Refused
from geodata.i18n import _
from geodata.store import community_codes_ever
from layers.partition import Partition, single_street, within_bounds
from layers.plan_io import export_plan
from layers.plan_memory import LoadedPlan, PlanMemory, recheck
from layers.plan_workflow import EDITABLE, WorkflowError
from layers.redistricting import PlanResult, assign_codes, split_in_two, summary


def community_adjacency(loaded: LoadedPlan) -> dict[str, list[str]]:
    """Every community's neighbours (communities sharing an edge with it), longest shared
    boundary first — one pass over the adjacency, the same cost in a street and in a city; kept
    with the loaded plan for its version (an edit saved makes a new version)."""
    cached = loaded.caches.get("adjacency")
    if cached is not None and cached[0] == loaded.version:
        return cached[1]
    p, g = loaded.partition, loaded.graph
    inverse, names = pd.factorize(p.labels)
    names = np.asarray(names, dtype=object)
    rows = np.repeat(np.arange(len(g)), np.diff(g.indptr))
    a, b = inverse[rows], inverse[g.indices]
    keep = (a != b) & (names[a] != "") & (names[b] != "")
    k = len(names)
    pair = a[keep].astype(np.int64) * k + b[keep]
    totals = pd.Series(g.shared[keep]).groupby(pair).sum()
    frame = pd.DataFrame({"a": totals.index // k, "b": totals.index % k, "shared": totals.to_numpy()})
    frame = frame.sort_values(["a", "shared", "b"], ascending=[True, False, True])
    out: dict[str, list[str]] = {label: [] for label in p.communities}
    for a_, group in frame.groupby("a", sort=False)["b"]:
        out[str(names[a_])] = names[group.to_numpy()].tolist()
    loaded.caches["adjacency"] = (loaded.version, out)
    return out


def neighbours_of(loaded: LoadedPlan, label: str) -> list[str]:
    """The communities next to ``label``, longest shared boundary first."""
    p = loaded.partition
    shared = p.neighbours_of(p.members(label), land=False)
    return [c for c, _ in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0])) if c != label]


def community_figures(loaded: LoadedPlan, labels: list[str],
                      neighbours: dict[str, list[str]] | None = None) -> list[dict]:
    """The live figures of these communities, with the rules each one breaks and their
    neighbours (computed for each here unless ``neighbours`` gives them all)."""
    p, r = loaded.partition, loaded.rules
    out = []
    for label in labels:
        if label not in p:
            out.append({"community_code": label, "households": 0, "removed": True, "violations": [],
                        "neighbours": []})
            continue
        households = int(p.households[label])
        violations = []
        if not within_bounds(p, label, r.minimum, r.maximum):
            violations.append(f"below the minimum of {r.minimum} households" if households < r.minimum
                              else f"above the maximum of {r.maximum} households")
        if not loaded.contiguous.get(label, True):
            violations.append("not contiguous")
        if not single_street(p, label):
            violations.append("crosses a street boundary")
        out.append({"community_code": label, "households": households,
                    "population": int(p.population[label]), "area_m2": round(float(p.area[label]), 1),
                    "polsby_popper": round(p.polsby_popper(label), 4), "violations": violations,
                    "bounds": "below" if households < r.minimum else "above" if households > r.maximum
                    else "within",
                    "neighbours": neighbours.get(label, []) if neighbours is not None
                    else neighbours_of(loaded, label)})
    return out


def plan_scores(loaded: LoadedPlan) -> dict:
    """The plan's scores from the partition's running sums and the contiguity kept per community —
    the same cost in a street and in a city."""
    broken = {label for label, whole in loaded.contiguous.items() if not whole}
    return summary(loaded.partition, loaded.rules, broken)


def describe(memory: PlanMemory, plan_id: int) -> dict:
    """The plan's row, the figures of every community and the plan's scores."""
    loaded = memory.plan(plan_id)
    with loaded.lock:
        plan = loaded.plan
        return {**{k: v for k, v in plan.items() if k not in ("created_at", "updated_at")},
                "updated_at": plan["updated_at"].isoformat(timespec="seconds"),
                "communities": community_figures(loaded, loaded.partition.communities,
                                                 community_adjacency(loaded)),
                "scores": plan_scores(loaded), "units": len(loaded.graph),
                "rules": {"minimum": loaded.rules.minimum, "maximum": loaded.rules.maximum,
                          "target": loaded.rules.aim}}


def units_geojson(memory: PlanMemory, plan_id: int) -> str:
    """The plan's units as GeoJSON: each with its community in the plan and the current one
    (``null`` for a blind spot), and a point inside it (for lasso selection)."""
    loaded = memory.plan(plan_id)
    with loaded.lock:
        units = loaded.units[["code", "households", "street_code", "land_use", "geometry"]].copy()
        units["community_code"] = loaded.partition.labels  # units are in graph order
        units["current_code"] = loaded.graph.current
    inside = shapely.point_on_surface(units.geometry.values)
    units["lon"] = np.round(shapely.get_x(inside), 7)
    units["lat"] = np.round(shapely.get_y(inside), 7)
    return units.to_json(drop_id=True, to_wgs84=True)


def export(memory: PlanMemory, plan_id: int, fmt: str, folder: Path) -> Path:
    """Write the plan into ``folder`` as a GeoPackage (``gpkg``) or a shapefile zip (``shp``)."""
    if fmt not in ("gpkg", "shp"):
        raise Refused(_("format is gpkg or shp"))
    loaded = memory.plan(plan_id)
    with loaded.lock:
        result = PlanResult(loaded.graph, loaded.partition, loaded.rules)
        suffix = "zip" if fmt == "shp" else "gpkg"
        return export_plan(result, loaded.units, folder / f"plan-{plan_id}.{suffix}")


def _target(loaded: LoadedPlan, memory: PlanMemory, positions: list[int], to: str) -> str:
    """The community the units go to: an existing one, ``new`` (the street's next free code), or
    a code of their street never used before (what redo after an undone split asks for)."""
    p, g = loaded.partition, loaded.graph
    if to in p:
        return to
    streets = set(g.street[positions])
    if to != "new" and not re.fullmatch(r"[0-9A-Za-z]+-?\d{3}", to):
        raise Refused(_("no community {to} in this plan", to=repr(to)))
    if len(streets) != 1:
        raise Refused(_("a new community lies in one street: choose units of one street"))
    street = streets.pop()
    taken = set(p.communities) | community_codes_ever(memory.engine)
    if to == "new":
        return str(assign_codes(np.array(["new:x"], dtype=object), np.array([street]), taken)[0][0])
    if not to.startswith(street) or to in taken:
        raise Refused(f"no community {to!r} in this plan, and it cannot be a new one in street {street}"
                      + (" (that code was used before: retired codes are never given again)" if to in taken
                         else ""))
    return to


def move_units(memory: PlanMemory, plan_id: int, unit_codes: list[str], to: str, version: int,
               actor: str) -> dict:
    """Move units to a community (an existing code, ``"new"`` for a new one in their street, or an
    unused code of their street). Allowed even when it breaks a rule: the answer names the
    violations. Memory changes only once the save has committed."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    plan_rows.require_version(plan, version, memory.engine)  # first: a stale edit is a conflict
    if plan["status"] not in EDITABLE:
        raise WorkflowError(_("plan {plan_id} is {status}: only drafts can be edited",
                              plan_id=plan_id, status=plan['status']))
    loaded = memory.plan(plan_id, plan)
    with loaded.lock:
        g, p = loaded.graph, loaded.partition
        unknown = [u for u in unit_codes if u not in g.position]
        if unknown:
            raise Refused(_("unit {p1} is not in this plan", p1=unknown[0]))
        if not unit_codes:
            raise Refused(_("no units to move"))
        positions = [g.position[u] for u in unit_codes]
        to = _target(loaded, memory, positions, to)
        before = p.labels[positions].copy()
        touched = sorted(set(before) | {to})
        was = {label: loaded.contiguous.get(label) for label in touched}

        def undo() -> None:
            for label in set(before):
                p.move([u for u, b in zip(positions, before, strict=True) if b == label], label)
            for label, whole in was.items():
                if whole is None:
                    loaded.contiguous.pop(label, None)
                else:
                    loaded.contiguous[label] = whole

        # the edit's scores are worked out on the partition, which then goes back to what is
        # stored until the save has committed: memory never runs ahead of the database
        p.move(positions, to)
        recheck(loaded, touched)
        scores = plan_scores(loaded)
        figures = community_figures(loaded, touched)
        after = {label: loaded.contiguous.get(label) for label in touched}
        undo()
        new_version = plan_rows.save_moves(memory.engine, plan_id, dict.fromkeys(unit_codes, to), version,
                                           actor, scores=scores,
                                           status="draft" if plan["status"] == "rejected" else None)
        p.move(positions, to)
        for label, whole in after.items():
            if whole is None:
                loaded.contiguous.pop(label, None)
            else:
                loaded.contiguous[label] = whole
        memory.saved(loaded, new_version)
        return {"version": new_version, "to": to, "units": list(unit_codes), "communities": figures,
                "plan": scores}


def split_community(memory: PlanMemory, plan_id: int, code: str, version: int, actor: str,
                    line: shapely.LineString | None = None) -> dict:
    """Split a community of the plan in two: balanced, compact and contiguous parts, or along
    a line drawn across it (EPSG:4326); the part with fewer households becomes a new community."""
    loaded = memory.plan(plan_id)
    p = loaded.partition
    if code not in p:
        raise Refused(_("no community {code} in this plan", code=repr(code)))
    if line is None:
        if len(p.land_members(code)) < 2:
            raise Refused(_("community {code} has fewer than two land units: there is nothing to split",
                            code=code))
        return move_units(memory, plan_id, split_in_two(p, code, seed=version), "new", version, actor)
    members = loaded.units.iloc[p.members(code)]
    outline = shapely.union_all(members.geometry.values)
    pieces = shapely.get_parts(shapely.ops.split(outline, line)) if outline.intersects(line) else []
    if len(pieces) < 2:
        raise Refused(_("the line does not cut community {code} in two", code=code))
    points = shapely.point_on_surface(members.geometry.values)
    side = np.array([int(np.argmax([piece.contains(pt) for piece in pieces])) for pt in points])
    households = np.bincount(side, weights=members["households"].to_numpy(), minlength=len(pieces))
    moving = members["code"].astype(str).to_numpy()[side != int(np.argmax(households))].tolist()
    if not moving:
        raise Refused(_("the line leaves every unit of {code} on one side", code=code))
    return move_units(memory, plan_id, moving, "new", version, actor)


def merge_communities(memory: PlanMemory, plan_id: int, keep: str, merge: str, version: int,
                      actor: str) -> dict:
    """Merge community ``merge`` into ``keep`` (which keeps its code)."""
    loaded = memory.plan(plan_id)
    p = loaded.partition
    if keep not in p or merge not in p:
        raise Refused(_("both communities must be in the plan"))
    return move_units(memory, plan_id, loaded.graph.codes[p.members(merge)].tolist(), keep, version, actor)


def compare(memory: PlanMemory, plan_id: int, other: int | None = None) -> dict:
    """The units whose community differs between a plan and the current boundaries (or another
    plan), and the difference of their scores. A blind spot's community is ``None``."""
    mine_plan = memory.plan(plan_id)
    g = mine_plan.graph
    mine = pd.Series(mine_plan.partition.labels, index=g.codes)
    if other is None:
        theirs = pd.Series(g.current, index=g.codes, dtype=object)
        blind = np.array([c or "(blind spot)" for c in g.current], dtype=object)
        other_scores = PlanResult(g, Partition(g, blind), mine_plan.rules).scores()
    else:
        them = memory.plan(other)
        theirs = pd.Series(them.partition.labels, index=them.graph.codes, dtype=object).reindex(mine.index)
        other_scores = plan_scores(them)
    theirs = theirs.astype(object).where(theirs.notna(), None)
    changed = mine[mine.to_numpy() != theirs.to_numpy()]
    my_scores = plan_scores(mine_plan)
    keys = [k for k, v in my_scores.items() if isinstance(v, (int, float)) and k in other_scores]
    return {"plan": plan_id, "other": other or "current", "changed_units": [
        {"unit": u, "from": theirs[u], "to": c} for u, c in changed.items()],
        "scores": {k: {"plan": my_scores[k], "other": other_scores[k],
                       "difference": round(my_scores[k] - other_scores[k], 4)} for k in keys}}
