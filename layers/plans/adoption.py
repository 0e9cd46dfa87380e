"""Adoption read before the click, and the grid put right after it.

Before a plan is submitted, approved or adopted, :func:`adoption_preview` says — as data, names
beside codes — what adopting it would do: the streets it covers, the communities it creates,
retires, renames and changes (households before → after), the households that change community,
the grid cells that would straddle two communities or carry a retired community's code, the
supervisors (网格员) whose cells change, the open cases in those cells, and the rules the plan
breaks (:func:`broken_rules`: a community not contiguous, or outside the city's household range).
A plan that breaks a rule goes on only with a written reason, kept with the step.

After adoption, :func:`regenerate_cells` divides the communities the adoption touched into cells
again — a cell that stays inside one community and meets the rules keeps its code — passes each
supervisor's cells and scope to the successor cells (the new cell holding most of the old one's
units), and places every open case again in the cell and community holding its point; all in one
transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select, update

from geodata import incident_rows, plan_rows
from geodata.accounts import pass_scopes, scoped_accounts
from geodata.audit import record
from geodata.crs import to_metric
from geodata.errors import Refused
from geodata.i18n import _
from geodata.models import GridCell
from geodata.revisions import districts_of_streets, raise_layer_revision
from geodata.store import read_layer, replace_cells
from layers.grid.cells import cell_of_units, cell_polygons, grid_rules, plan_cells
from layers.incidents.loop import OPEN, rederive_places
from layers.plans.communities import bounds
from layers.plans.engine import PlanResult
from layers.plans.files import community_polygons, units_from_database
from layers.plans.memory import LoadedPlan, PlanMemory
from layers.plans.partition import UnitGraph

#: the kind of the background job that regenerates an adopted plan's cells
JOB_KIND = "regenerate_cells"
#: the longest reason a step that breaks a rule may carry
REASON_MAX = 1000
#: how many open cases the preview lists one by one (then only their number)
CASES_LISTED = 200
#: below this share of its area in one community a cell straddles (drawing noise aside)
STRADDLE_SHARE = 0.99
#: how many broken rules a refusal's message names (then how many more there are)
RULES_NAMED = 10
#: the name a new community the plan did not name is adopted under
DEFAULT_NAME = "新社区{suffix}"


def default_name(code: str) -> str:
    """The name a new community gets when the plan gave it none."""
    return DEFAULT_NAME.format(suffix=code[-3:])


# --- the rules a plan breaks ---------------------------------------------------------------------


def broken_rules(memory: PlanMemory, plan_id: int) -> list[dict]:
    """Every rule the plan's communities break, as data: ``rule`` (``not_contiguous``,
    ``below_minimum``, ``above_maximum``), ``community_code``, ``community_name``, ``limit`` (the
    city's household bound it misses, None for contiguity) and ``value`` (its households, or
    its number of separate pieces). The household range is the city's (settings
    ``households_min``/``households_max``), whatever range the plan was made with."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    out = []
    for part in memory.parts(plan) or [None]:  # a plan of every district: a district at a time
        out += _broken_in(memory, memory.plan(plan_id, plan, part))
    return sorted(out, key=lambda r: (r["community_code"], r["rule"] != "not_contiguous"))


def _broken_in(memory: PlanMemory, loaded: LoadedPlan) -> list[dict]:
    """The rules the communities of ``loaded`` (a plan, or a district's part of one) break."""
    limits = bounds(memory.engine)
    engine = memory.engine
    names = plan_rows.current_community_names(engine, loaded.districts) | \
        plan_rows.community_names(engine, loaded.plan_id)
    out = []
    with loaded.lock:
        p = loaded.partition
        for code in sorted(str(c) for c in p.communities if c):
            name = names.get(code) or default_name(code)
            if not p.contiguous(code):
                out.append({"rule": "not_contiguous", "community_code": code, "community_name": name,
                            "limit": None, "value": len(p.pieces(code))})
            households = int(p.households.get(code, 0))
            if households < limits.minimum:
                out.append({"rule": "below_minimum", "community_code": code, "community_name": name,
                            "limit": limits.minimum, "value": households})
            elif households > limits.maximum:
                out.append({"rule": "above_maximum", "community_code": code, "community_name": name,
                            "limit": limits.maximum, "value": households})
    return out


def rule_sentence(rule: dict) -> str:
    """One broken rule as a planner reads it, name beside code."""
    who = f"{rule['community_name']} · {rule['community_code']}"
    if rule["rule"] == "not_contiguous":
        return _("{community} is not contiguous ({pieces} separate pieces)", community=who,
                 pieces=rule["value"])
    if rule["rule"] == "below_minimum":
        return _("{community} holds {households} households, below the minimum of {limit}", community=who,
                 households=f"{rule['value']:,}", limit=f"{rule['limit']:,}")
    return _("{community} holds {households} households, above the maximum of {limit}", community=who,
             households=f"{rule['value']:,}", limit=f"{rule['limit']:,}")


def check_reason(reason) -> str | None:
    """A written reason as stored: stripped, None when blank; refused when not text or too long."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise Refused(_("reason is a text saying why the plan goes on although it breaks a rule"))
    reason = " ".join(reason.split())
    if len(reason) > REASON_MAX:
        raise Refused(_("a reason has at most {n} characters", n=REASON_MAX))
    return reason or None


# --- what adoption would do ----------------------------------------------------------------------


@dataclass
class AdoptionWork:
    """What adopting a plan writes, worked out from the units in memory: the communities'
    polygons, the unit assignment, the facilities' and cells' communities re-derived by location,
    and ``preview``, what the adoption changes as the page and the record show it."""

    polygons: gpd.GeoDataFrame
    #: the plan's units, the facilities and the cells: ``code``, ``district_code`` and the
    #: ``community_code`` each takes
    assignment: pd.DataFrame
    facility_communities: pd.DataFrame
    cell_communities: pd.DataFrame
    preview: dict


def _cells_of_streets(engine: Engine, streets: list[str], districts: list[str] | None) -> gpd.GeoDataFrame:
    """The cells of ``streets`` (their codes start with the street's) in ``districts`` (the
    streets'; None: wherever), street by street through the code index — never the whole
    province's cells."""
    in_districts = {"district_code": districts} if districts is not None else None
    parts = [read_layer(engine, "grid_cells", prefix={"code": s}, isin=in_districts) for s in streets]
    parts = [p for p in parts if len(p)]
    if parts:
        return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)
    return read_layer(engine, "grid_cells", limit=0)


def _area_bounds(area: gpd.GeoDataFrame) -> tuple[float, float, float, float] | None:
    """The box of the plan's communities (degrees), a hair wider than their polygons, or None."""
    if not len(area):
        return None
    minx, miny, maxx, maxy = (float(v) for v in area.total_bounds)
    return (minx - 1e-6, miny - 1e-6, maxx + 1e-6, maxy + 1e-6)


def _labelled(code: str, names: dict[str, str]) -> dict:
    return {"code": code, "name": names.get(code)}


def work_out(memory: PlanMemory, plan_id: int) -> AdoptionWork:
    """Work out what adopting plan ``plan_id`` would write and change, writing nothing: a plan of
    every district a district at a time (:meth:`~layers.plans.memory.PlanMemory.parts`: no
    process holds a province's graphs), its districts' work put together (:func:`_together`)."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    parts = memory.parts(plan)
    if not parts:
        return _work_out(memory, memory.plan(plan_id, plan))
    return _together([_work_out(memory, memory.plan(plan_id, plan, part)) for part in parts])


def _together(works: list[AdoptionWork]) -> AdoptionWork:
    """The work of a plan's districts as one adoption: what each writes, and one preview."""
    first = works[0].preview
    previews = [w.preview for w in works]
    preview = {"plan_id": first["plan_id"]}
    for key in ("streets", "created", "retired", "renamed", "changed", "straddling_cells",
                "cells_with_retired_code"):  # in code order, as a whole plan's
        preview[key] = sorted((item for p in previews for item in p[key]), key=lambda item: item["code"])
    preview["cells_to_renumber"] = sorted(c for p in previews for c in p["cells_to_renumber"])
    preview["broken_rules"] = sorted((r for p in previews for r in p["broken_rules"]),
                                     key=lambda r: (r["community_code"], r["rule"] != "not_contiguous"))
    for key in ("communities", "households_moved", "units_moved"):
        preview[key] = sum(p[key] for p in previews)
    for key in ("successors", "names"):
        preview[key] = {k: v for p in previews for k, v in p[key].items()}
    held: dict[str, dict] = {}
    for supervisor in (s for p in previews for s in p["supervisors"]):
        kept = held.setdefault(supervisor["name"], {"name": supervisor["name"], "cells": [],
                                                    "scope_code": supervisor["scope_code"]})
        kept["cells"] = sorted(set(kept["cells"]) | set(supervisor["cells"]))
    preview["supervisors"] = [held[n] for n in sorted(held)]
    listed = [c for p in previews for c in p["open_cases"]["listed"]]
    preview["open_cases"] = {"count": sum(p["open_cases"]["count"] for p in previews),
                             "listed": listed[:CASES_LISTED]}
    polygons = pd.concat([w.polygons for w in works], ignore_index=True)
    return AdoptionWork(
        gpd.GeoDataFrame(polygons, crs=works[0].polygons.crs),
        *(pd.concat([getattr(w, k) for w in works], ignore_index=True)
          for k in ("assignment", "facility_communities", "cell_communities")),
        preview)


def _work_out(memory: PlanMemory, loaded: LoadedPlan) -> AdoptionWork:
    """What adopting ``loaded`` (a plan, or one district's part of a plan of every district)
    would write and change."""
    engine = memory.engine
    plan_id = loaded.plan_id
    with loaded.lock:
        result = PlanResult(loaded.graph, loaded.partition, loaded.rules)
        labels = np.array(loaded.partition.labels, dtype=object)
        current = np.array(loaded.graph.current, dtype=object)
        households = np.asarray(loaded.graph.households, dtype=np.int64)
        unit_codes = np.asarray(loaded.graph.codes, dtype=object)
        after_households = {str(c): int(loaded.partition.households[c]) for c in loaded.partition.communities}
        polygons = community_polygons(result, loaded.units)
        units = loaded.units
        unit_district = dict(zip(units["code"].astype(str), units["district_code"], strict=True))
        assignment = pd.DataFrame({"code": unit_codes, "community_code": labels,
                                   "district_code": [unit_district[str(c)] for c in unit_codes]})
        districts = loaded.districts
    streets = sorted(set(polygons["street_code"]))
    stored = read_layer(engine, "communities", isin={"street_code": streets, "district_code": districts}) \
        if streets else read_layer(engine, "communities", limit=0)
    current_names = dict(zip(stored["code"], stored["name"], strict=True))
    plan_names = plan_rows.community_names(engine, plan_id)
    names = current_names | plan_names
    polygons["code"] = [str(c) for c in polygons["community_code"]]
    polygons["name"] = [names.get(c) or default_name(c) for c in polygons["code"]]
    # a community lies in its street's district (its units'), whatever its code's first digits
    street_district = dict(zip(units["street_code"], units["district_code"], strict=True))
    polygons["district_code"] = [street_district.get(s, c[:6]) for s, c in zip(polygons["street_code"],
                                                                             polygons["code"], strict=True)]
    after_names = dict(zip(polygons["code"], polygons["name"], strict=True))
    before = set(stored["code"])
    after = set(polygons["code"])
    moved = pd.notna(current) & (current != labels)
    touched = set(labels[moved]) | {c for c in current[moved] if c}
    before_households = pd.Series(households).groupby(pd.Series(current, dtype=object)).sum().to_dict()
    retired = sorted(before - after)
    # a retired community's successor: the new community holding most of its households (units
    # when it had none)
    successors: dict[str, str] = {}
    for code in retired:
        mine = current == code
        if not mine.any():
            continue
        weight = pd.Series(households[mine] + 1).groupby(pd.Series(labels[mine], dtype=object)).sum()
        successors[code] = str(weight.idxmax())
    street_names, history_names = plan_rows.place_names(engine, streets, retired, districts)
    all_names = history_names | after_names  # a retired code's name: its last one

    # facilities: the community their point lies in (those outside every polygon keep theirs)
    area = polygons[["code", "geometry"]]
    # read within the plan's box (the spatial index), not every facility of the province
    bounds = _area_bounds(area)
    facilities = read_layer(engine, "facilities", bbox=bounds, isin={"district_code": districts}) if bounds \
        else read_layer(engine, "facilities", limit=0)
    joined = gpd.sjoin(facilities[["code", "district_code", "geometry"]],
                       area.rename(columns={"code": "community"}), how="inner", predicate="within")
    facility_communities = joined.drop_duplicates("code")[["code", "district_code", "community"]].rename(
        columns={"community": "community_code"}).reset_index(drop=True)
    # cells: the community holding most of their area; those in two or more straddle
    cells = _cells_of_streets(engine, streets, districts)
    straddling: list[dict] = []
    cell_communities = pd.Series(dtype=object)
    if len(cells):
        metric_cells = to_metric(cells)[["code", "geometry"]]
        metric_area = area.to_crs(metric_cells.crs).rename(columns={"code": "community"})
        pieces = gpd.overlay(metric_cells, metric_area, how="intersection", keep_geom_type=True)
        pieces["area"] = pieces.area
        pieces = pieces[pieces["area"] > 1.0]
        ordered = pieces.sort_values(["code", "area"], ascending=[True, False])
        cell_communities = ordered.drop_duplicates("code").set_index("code")["community"]
        totals = ordered.groupby("code")["area"].sum()
        for code, group in ordered.groupby("code", sort=True):
            if group["area"].iloc[0] / totals[code] < STRADDLE_SHARE:
                straddling.append({"code": code, "communities": [
                    {"code": c, "name": all_names.get(c), "share": round(float(a / totals[code]), 3)}
                    for c, a in zip(group["community"], group["area"], strict=True)]})
    cell_home = dict(zip(cells["code"], cells["community_code"], strict=True)) if len(cells) else {}
    retired_set = set(retired)
    with_retired = [{"code": c, "retired": _labelled(c[:12], all_names),
                     "community": _labelled(str(cell_communities.get(c, cell_home.get(c))), all_names)}
                    for c in sorted(cell_home) if c[:12] in retired_set]
    renumber = sorted(c for c, comm in cell_communities.items() if not c.startswith(comm))
    affected_cells = sorted({c["code"] for c in straddling} | {c["code"] for c in with_retired}
                            | set(renumber))
    supervisors = _supervisors(engine, cells, affected_cells, retired_set)
    cases = _open_cases(engine, affected_cells, retired_set, districts)
    rules = _broken_in(memory, loaded)
    renamed = [{"code": c, "name_before": current_names[c], "name_after": plan_names[c]}
               for c in sorted(before & after) if c in plan_names and plan_names[c] != current_names.get(c)]
    preview = {
        "plan_id": plan_id,
        "streets": [_labelled(s, street_names) for s in streets],
        "communities": len(polygons),
        "created": [{"code": c, "name": after_names[c], "households": after_households.get(c, 0)}
                    for c in sorted(after - before)],
        "retired": [{"code": c, "name": all_names.get(c), "households": int(before_households.get(c, 0)),
                     "successor": _labelled(successors[c], all_names) if c in successors else None}
                    for c in retired],
        "renamed": renamed,
        "changed": [{"code": c, "name": after_names[c], "households_before": int(before_households.get(c, 0)),
                     "households_after": after_households.get(c, 0)}
                    for c in sorted((before & after) & touched)],
        "households_moved": int(households[moved].sum()),
        "units_moved": int(moved.sum()),
        "straddling_cells": straddling,
        "cells_with_retired_code": with_retired,
        "cells_to_renumber": renumber,
        "supervisors": supervisors,
        "open_cases": cases,
        "broken_rules": rules,
        "successors": successors,
        # the name of every community the preview names (a retired one: its last name)
        "names": {c: n for c, n in all_names.items() if n},
    }
    cell_district = dict(zip(cells["code"], cells["district_code"], strict=True)) if len(cells) else {}
    cell_moves = pd.DataFrame({"code": list(cell_communities.index), "community_code": list(cell_communities),
                               "district_code": [cell_district[c] for c in cell_communities.index]})
    return AdoptionWork(polygons, assignment, facility_communities, cell_moves, preview)


def _supervisors(engine: Engine, cells: gpd.GeoDataFrame, affected: list[str],
                 retired: set[str]) -> list[dict]:
    """The supervisors whose cells change: those assigned to an affected cell (grid assignments),
    named on one (the cell's supervisor), or whose account's scope is such a cell or a retired
    community; each with those cells."""
    affected_set = set(affected)
    held: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for row in incident_rows.assignments_of_cells(conn, affected):
            held.setdefault(row["user_name"], set()).add(row["cell_code"])
        accounts = {a["name"]: a for a in scoped_accounts(conn, affected_set | retired)}
    if len(cells) and "supervisor" in cells:
        for code, name in zip(cells["code"], cells["supervisor"], strict=True):
            if code in affected_set and isinstance(name, str) and name:
                held.setdefault(name, set()).add(code)
    out = []
    for name in sorted(set(held) | set(accounts)):
        account = accounts.get(name)
        out.append({"name": name, "cells": sorted(held.get(name, set())),
                    "scope_code": account["scope_code"] if account else None})
    return out


def _open_cases(engine: Engine, cells: list[str], retired: set[str], districts: list[str]) -> dict:
    """The open cases in ``cells`` or filed under a retired community (of ``districts``): how
    many, the first few."""
    with engine.connect() as conn:
        found = incident_rows.open_cases_in(conn, OPEN, cells=cells, communities=sorted(retired),
                                            districts=districts)
    listed = [{"code": c["code"], "category": c["category"], "status": c["status"],
               "grid_code": c["grid_code"], "community_code": c["community_code"]}
              for c in found[:CASES_LISTED]]
    return {"count": len(found), "listed": listed}


def adoption_preview(memory: PlanMemory, plan_id: int) -> dict:
    """What adopting plan ``plan_id`` would do (see the module's description), as data."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    preview = work_out(memory, plan_id).preview
    preview["status"] = plan["status"]
    preview["version"] = plan["version"]
    return preview


# --- after adoption: the grid put right -----------------------------------------------------------


def regenerate_cells(engine: Engine, plan_id: int, actor: str) -> dict:
    """Divide the communities an adopted plan touched into cells again, pass supervisors to the
    successor cells and place the open cases again (see the module's description). Returns what
    it did: communities and cells (kept, new, removed), supervisors passed on, cases placed
    again — names beside codes — and keeps it with the plan."""
    plan = plan_rows.get_plan(engine, plan_id)
    if plan["status"] != "adopted":
        raise Refused(_("plan {plan_id} is {status}: cells are regenerated after adoption",
                        plan_id=plan_id, status=plan["status"]))
    adoption = plan.get("adoption") or {}
    streets = sorted(adoption.get("streets") or [])
    streets = [s if isinstance(s, str) else s["code"] for s in streets]
    if not streets:
        raise Refused(_("plan {plan_id} records no streets: nothing to regenerate", plan_id=plan_id))
    successors = adoption.get("successors") or {}
    with engine.connect() as conn:
        placed = districts_of_streets(conn, streets)
    districts = sorted(placed) if placed is not None else None  # None: look in every district
    in_districts = {"district_code": districts} if districts is not None else {}
    communities = read_layer(engine, "communities", isin={"street_code": streets} | in_districts)
    live = set(communities["code"])
    cells = _cells_of_streets(engine, streets, districts)
    # the communities whose cells are divided again: those the plan created or changed, those of
    # cells that straddle, carry a code not their community's, or a retired one
    todo = {c for key in ("created", "changed") for c in _codes(adoption.get(key)) if c in live}
    if len(cells):
        metric_cells = to_metric(cells)[["code", "community_code", "geometry"]]
        metric_area = to_metric(communities[["code", "geometry"]]).to_crs(metric_cells.crs)
        pieces = gpd.overlay(metric_cells, metric_area.rename(columns={"code": "community"}),
                             how="intersection", keep_geom_type=True)
        pieces = pieces[pieces.area > 1.0]
        counts = pieces.groupby("code")["community"].nunique()
        for code in counts[counts > 1].index:
            todo |= set(pieces.loc[pieces["code"] == code, "community"])
        odd = cells[(cells["code"].str[:12] != cells["community_code"]) | ~cells["code"].str[:12].isin(live)]
        todo |= {c for c in odd["community_code"] if c in live}
        todo |= {c for c in odd["code"].str[:12] if c in live}
    todo = sorted(todo)
    community_name = dict(zip(communities["code"], communities["name"], strict=True))
    rules = grid_rules(engine)
    old_of_unit: dict[str, str] = {}
    new_of_unit: dict[str, str] = {}
    weight_of_unit: dict[str, int] = {}
    new_cells = []
    problems = []
    for street in sorted({c[:9] for c in todo}):
        units, adjacency = units_from_database(engine, street)
        mine = [c for c in todo if c[:9] == street]
        units = units[units["community_code"].isin(mine)].reset_index(drop=True)
        if units.empty:
            continue
        street_cells = cells[cells["code"].str[:9] == street] if len(cells) else cells
        old = cell_of_units(units, street_cells)
        old_of_unit.update(old.to_dict())
        weight_of_unit.update(zip(units["code"], units["households"].fillna(0).astype(int) + 1, strict=True))
        graph = UnitGraph.from_units(units, adjacency)
        planned = plan_cells(graph, rules, communities=mine, current=old)
        new_of_unit.update(planned.cell_of_unit.to_dict())
        new_cells.append(cell_polygons(planned, units))
        problems += [_named_reason(p, community_name) for p in planned.problems]
    polygons = (gpd.GeoDataFrame(pd.concat(new_cells, ignore_index=True), crs=new_cells[0].crs) if new_cells
                else None)
    new_codes = set(polygons["code"]) if polygons is not None else set()
    before_codes = set(cells["code"]) if len(cells) else set()
    removed_communities = sorted(set(todo) | {c for c in (cells["community_code"] if len(cells) else [])
                                              if c not in live})
    # successors: the new cell holding most of an old cell's households
    shared = pd.DataFrame({"old": pd.Series(old_of_unit), "new": pd.Series(new_of_unit),
                           "weight": pd.Series(weight_of_unit)}).dropna(subset=["old", "new"])
    successor: dict[str, str] = {}
    predecessor: dict[str, str] = {}
    if len(shared):
        sums = shared.groupby(["old", "new"])["weight"].sum().reset_index()
        best = sums.sort_values(["old", "weight"], ascending=[True, False]).drop_duplicates("old")
        successor = dict(zip(best["old"], best["new"], strict=True))
        first = sums.sort_values(["new", "weight"], ascending=[True, False]).drop_duplicates("new")
        predecessor = dict(zip(first["new"], first["old"], strict=True))
    stored_supervisor = dict(zip(cells["code"], cells["supervisor"], strict=True)) if len(cells) else {}
    with engine.begin() as conn:
        # cells of the touched communities, and any left carrying a retired or foreign code
        home = dict(zip(cells["code"], cells["community_code"], strict=True)) if len(cells) else {}
        gone = sorted(c for c in before_codes if c not in new_codes and (
            home.get(c) in removed_communities or c[:12] not in live or home.get(c) not in live))
        cell_district = dict(zip(cells["code"], cells["district_code"], strict=True)) if len(cells) else {}
        _delete_cells(conn, {c: cell_district[c] for c in gone})
        table = GridCell.__table__
        if polygons is not None:
            replace_cells(conn, removed_communities,
                          polygons[["code", "community_code", "district_code", "geometry"]], districts)
            # a new cell takes the supervisor named on the old cell it holds most of
            new_district = dict(zip(polygons["code"], polygons["district_code"], strict=True))
            for code in sorted(new_codes - before_codes):
                name = stored_supervisor.get(predecessor.get(code))
                if isinstance(name, str) and name:
                    conn.execute(update(table).where(table.c.code == code,
                                                     table.c.district_code == new_district[code])
                                 .values(supervisor=name))
        # the cells that are no more (those of communities left alone stay as they were)
        scope = [table.c.district_code.in_(districts)] if districts is not None else []
        after_codes = {c for s in streets for c in conn.execute(
            select(table.c.code).where(table.c.code.startswith(s, autoescape=True), *scope)).scalars()}
        ended = sorted(before_codes - after_codes)
        passed = {c: successor[c] for c in ended if c in successor}
        assignments = incident_rows.pass_assignments(conn, passed, actor)
        scope_map = {**passed, **{k: v for k, v in successors.items() if isinstance(v, str)}}
        scopes = pass_scopes(conn, scope_map, actor)
        placed = rederive_places(conn, streets, districts)
        detail = {"communities": todo, "cells": len(new_codes), "kept": sorted(new_codes & before_codes),
                  "new": sorted(new_codes - before_codes), "removed": ended, "successors": passed,
                  "assignments": assignments, "scopes": scopes, "cases": placed,
                  "problems": problems[:50]}
        record(conn, actor, "plan:regenerate", layer="plans", object_code=str(plan_id),
               detail={k: detail[k] for k in ("cells",)} | {"communities": len(todo), "removed": len(ended),
                                                             "cases": placed["moved"]})
        plan_rows.keep_regeneration(conn, plan_id, _summary(conn, detail, streets, districts))
    return plan_rows.get_plan(engine, plan_id)["adoption"]["regenerated"]


def _named_reason(problem: dict, names: dict[str, str]) -> dict:
    """``problem`` (a rule a community's cells cannot meet) with its community named beside its
    code in the reason: a bare 12-digit code told the planner nothing. Cell codes (the community's
    code and three more digits) are left as they are."""
    code, name = problem.get("community"), names.get(problem.get("community") or "")
    if not (code and name):
        return problem
    reason = re.sub(rf"(?<!\d){re.escape(code)}(?!\d)", lambda _m: f"{name} · {code}", problem["reason"])
    return {**problem, "reason": reason}


def _codes(items) -> list[str]:
    return [i if isinstance(i, str) else i["code"] for i in items or []]


def _delete_cells(conn: Connection, cells: dict[str, str]) -> None:
    """Delete ``cells`` (code → its district), district by district."""
    table = GridCell.__table__
    by_district: dict[str, list[str]] = {}
    for code, district in sorted(cells.items()):
        by_district.setdefault(district, []).append(code)
    for district, codes in by_district.items():
        for start in range(0, len(codes), 500):
            conn.execute(table.delete().where(table.c.code.in_(codes[start:start + 500]),
                                              table.c.district_code == district))
    if cells:  # answers cached by the cells' revision (coverage, grid problems) are stale now
        raise_layer_revision(conn, "grid_cells", {d for d in by_district if d})


def _summary(conn: Connection, detail: dict, streets: list[str], districts: list[str] | None) -> dict:
    """What the regeneration did, names beside codes, as kept with the plan."""
    _, names = plan_rows.place_names(conn, [], detail["communities"], districts)
    return {
        "communities": [{"code": c, "name": names.get(c)} for c in detail["communities"]],
        "cells": detail["cells"], "kept": len(detail["kept"]), "new": detail["new"],
        "removed": detail["removed"], "successors": detail["successors"],
        "assignments": detail["assignments"], "scopes": detail["scopes"], "cases": detail["cases"],
        "problems": [p["reason"] for p in detail["problems"]], "streets": streets,
    }



def run_regeneration_job(engine: Engine, job: dict) -> dict:
    """The background job of :func:`regenerate_cells` (``params``: plan_id, author)."""
    params = job["params"]
    return regenerate_cells(engine, int(params["plan_id"]), str(params.get("author") or "worker"))
