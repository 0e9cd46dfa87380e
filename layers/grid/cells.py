"""Grid cells (网格): every community divided into cells of whole planning units.

The generator is the redistricting engine with other rules: each community's units form their
own :class:`~layers.plans.partition.UnitGraph` (``UnitGraph.subgraph``) and are planned by
:func:`layers.plans.engine.plan_street` — contiguous, compact (METIS), each cell within a
household range (social-governance grids, 300–500 households with one 网格员) or close to a
target area (urban-management unit grids, about 10,000 m²: the weights are the units' areas).
Cells nest in their community (``single_parent``): a community's cells are made of its units
only, so they tile it exactly, with no gaps and no overlaps.

Codes: the community's 12-digit code and a 3-digit sequence numbered west to east, north to south
(Beijing DB11/T 2157-2023). Regenerating starts from the stored cells, so a cell that still meets
the rules keeps its units and its code; new cells take free numbers in spatial order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from sqlalchemy import Engine

from geodata.crs import to_metric
from geodata.db import die_for_fault_tests
from geodata.errors import NotFound, Refused
from geodata.i18n import _
from geodata.incident_rows import hand_over_cells
from geodata.standards import get_setting
from geodata.store import read_layer, replace_cells
from geodata.topology import dissolve
from layers.plans.engine import NEW, Infeasible, Rules, plan_street, split_in_two, street_seed
from layers.plans.files import units_from_database
from layers.plans.partition import Partition, UnitGraph, is_contiguous


@dataclass(frozen=True)
class CellRules:
    """What a cell must satisfy: a household range, or (``area_m2``) a target area within ±50 %."""

    minimum: int = 300
    maximum: int = 500
    area_m2: float | None = None
    seed: int = 0

    def engine_rules(self) -> Rules:
        """The redistricting rules that say the same (weights: households, or m² in area mode)."""
        if self.area_m2:
            target = int(round(self.area_m2))
            return Rules(max(1, target // 2), target * 3 // 2, target, True, self.seed)
        return Rules(self.minimum, self.maximum, None, True, self.seed)


COLUMNS = ["code", "community_code", "households", "area_m2", "units", "in_range"]


@dataclass
class CellPlan:
    """Cells of some communities: every unit's cell code and the cells' figures."""

    cell_of_unit: pd.Series  # unit code → cell code
    cells: pd.DataFrame  # code, community_code, households, area_m2, units, in_range
    kept: list[str] = field(default_factory=list)  # codes of stored cells that stay
    #: why cells are outside the rules or units have none: kind, community, cell, units, reason
    problems: list[dict] = field(default_factory=list)

    @property
    def in_range_share(self) -> float:
        return float(self.cells["in_range"].mean()) if len(self.cells) else 1.0


def _spatial_order(xy: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Order of cells west to east within rows running north to south (row height: the typical
    cell's side)."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    band = max(float(np.sqrt(np.median(area))), 1.0)
    row = np.floor((xy[:, 1].max() - xy[:, 1]) / band)
    return np.lexsort((xy[:, 0], row))


def plan_cells(graph: UnitGraph, rules: CellRules, *, communities: list[str] | None = None,
               current: pd.Series | None = None) -> CellPlan:
    """Divide ``communities`` (default: every community of ``graph``) into cells.

    ``graph.current`` holds each unit's community; ``current`` maps unit codes to their stored
    cell codes (a stored cell counts only where it lies in the unit's community and meets the
    rules). Units outside every community (blind spots) get no cell.
    """
    engine_rules = rules.engine_rules()
    stored = (current.reindex(graph.codes) if current is not None else pd.Series(None, index=graph.codes))
    stored = stored.to_numpy(dtype=object)
    community = graph.current
    by_community = pd.Series(np.arange(len(graph))).groupby(
        pd.Series(community, dtype=object).fillna("")).indices
    todo = sorted(c for c in by_community if c) if communities is None else list(communities)
    labels = np.full(len(graph), None, dtype=object)
    weights = np.round(graph.area).astype(np.int64) if rules.area_m2 else graph.households
    kept: list[str] = []
    problems: list[dict] = []
    for code in todo:
        positions = by_community.get(code)
        if positions is None or not len(positions):
            continue
        before = np.array([s if isinstance(s, str) and s.startswith(code) and len(s) == len(code) + 3
                           else None for s in stored[positions].tolist()], dtype=object)
        # a stored cell is a starting point only while it meets the rules; the units of the others
        # are divided afresh
        names, inverse = np.unique(np.where(pd.isna(before), "", before).astype(str), return_inverse=True)
        totals = np.bincount(inverse, weights[positions], len(names))
        start = np.where((totals[inverse] < engine_rules.minimum) | (totals[inverse] > engine_rules.maximum),
                         None, before).astype(object)
        sub = replace(graph.subgraph(positions), street=np.full(len(positions), code, dtype=object),
                      current=start, households=weights[positions])
        # each community draws from its own generator (seeded from the rules' seed and its code),
        # so its cells do not depend on which communities were divided before it: a district's
        # grid made alone (``grid --all``, a task per district) is the grid made in one piece
        rng = np.random.default_rng(street_seed(rules.seed, code))
        cells, found = plan_street(sub, start, engine_rules, rng)
        labels[positions] = _codes(code, cells, before, graph.xy[positions], graph.area[positions], kept)
        final = dict(zip(cells.tolist(), labels[positions].tolist(), strict=True))
        problems += [cell_problem(replace(f, community=final.get(f.community, f.community)), code, rules)
                     for f in found]
    assigned = labels != None  # noqa: E711
    return CellPlan(pd.Series(labels[assigned], index=graph.codes[assigned], name="grid_code"),
                    cell_figures(graph, labels, engine_rules, rules), sorted(kept), problems)


def cell_problem(problem: Infeasible, community: str, rules: CellRules) -> dict:
    """A rule the cells of ``community`` cannot meet, with the reason in a planner's words
    (``problem`` as :func:`layers.plans.engine.explain` found it, the community as its street)."""
    engine_rules = rules.engine_rules()
    low, high = engine_rules.minimum, engine_rules.maximum

    def amount(value: int) -> str:
        return _("{area} m²", area=f"{value:,}") if rules.area_m2 else \
            _("{households} households", households=f"{value:,}")

    held = amount(problem.households)
    if problem.kind == "unit_above_maximum":
        reason = _("unit {unit} alone holds {amount}, above the cell maximum of {maximum}: a cell is made of "
                   "whole units, so its cell stays above the range (build smaller units to divide it)",
                   unit=problem.units[0], amount=held, maximum=amount(high))
    elif problem.kind == "street_too_small":
        reason = _("community {community} holds {amount}, below the cell minimum of {minimum}: it is one "
                   "cell", community=community, amount=held, minimum=amount(low))
    elif problem.kind == "cut_off":
        reason = _("{units} units with {amount} are cut off from the rest of community {community} (by the "
                   "river or its edge), below the cell minimum of {minimum}: they make a cell of their own",
                   units=len(problem.units), amount=held, community=community, minimum=amount(low))
    elif problem.kind == "indivisible":
        reason = _("{amount} of community {community} cannot be divided into cells of {minimum}–{maximum}",
                   amount=held, community=community, minimum=amount(low), maximum=amount(high))
    else:
        reason = _("cell {cell} keeps {amount}: no move of whole units brings it within {minimum}–{maximum} "
                   "without cutting a cell in two", cell=problem.community, amount=held,
                   minimum=amount(low), maximum=amount(high))
    return {"kind": problem.kind, "community": community,
            "cell": problem.community if problem.kind == "unresolved" else None,
            "units": problem.units[:50], "reason": reason}


def _codes(community: str, cells: np.ndarray, before: np.ndarray, xy: np.ndarray, area: np.ndarray,
           kept: list[str]) -> list[str]:
    """Final codes for one community's cells: stored codes stay; a new cell takes back the stored
    code it shares most units with when that code is free; the rest take free numbers, west to
    east and north to south."""
    names, inverse = np.unique(cells.astype(str), return_inverse=True)
    taken = {n for n in names if not n.startswith(NEW)}
    rename: dict[str, str] = {}
    shared: dict[tuple[str, str], int] = {}
    for cell, old in zip(cells.tolist(), before.tolist(), strict=True):
        if old is not None and cell.startswith(NEW):
            shared[(cell, old)] = shared.get((cell, old), 0) + 1
    for (cell, old), _count in sorted(shared.items(), key=lambda item: -item[1]):
        if cell not in rename and old not in taken:
            rename[cell] = old
            taken.add(old)
    kept.extend(taken)
    fresh = np.array([i for i, n in enumerate(names) if n.startswith(NEW) and n not in rename],
                     dtype=np.int64)
    if len(fresh):
        total = np.bincount(inverse, area, len(names))
        centre = np.column_stack([np.bincount(inverse, xy[:, 0] * area, len(names)),
                                  np.bincount(inverse, xy[:, 1] * area, len(names))])
        centre /= np.maximum(total, 1e-9)[:, None]
        used = {int(n[-3:]) for n in taken}
        free = (n for n in range(1, 1000) if n not in used)
        for i in fresh[_spatial_order(centre[fresh], total[fresh])]:
            rename[names[i]] = f"{community}{next(free):03d}"
    return [rename.get(c, c) for c in cells.tolist()]


def cell_figures(graph: UnitGraph, labels: np.ndarray, engine_rules: Rules, rules: CellRules) -> pd.DataFrame:
    """Per cell: households, area, units, and whether it is within the rules."""
    inside = pd.notna(labels)
    frame = pd.DataFrame({"code": labels[inside], "households": graph.households[inside],
                          "area_m2": graph.area[inside], "units": 1})
    figures = frame.groupby("code", sort=True).sum().reset_index()
    figures.insert(1, "community_code", figures["code"].str[:12])
    weight = figures["area_m2"] if rules.area_m2 else figures["households"]
    figures["in_range"] = weight.between(engine_rules.minimum, engine_rules.maximum)
    figures["area_m2"] = figures["area_m2"].round(1)
    return figures[COLUMNS]


def cell_polygons(plan: CellPlan, units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The cells as polygons, dissolved from their units (so they tile their community)."""
    codes = plan.cell_of_unit.reindex(units["code"].astype(str)).to_numpy(dtype=object)
    inside = pd.notna(codes)
    geoms = dissolve(np.asarray(units.geometry.values, dtype=object)[inside], codes[inside],
                     plan.cells["code"].to_numpy())
    return gpd.GeoDataFrame(plan.cells.assign(district_code=plan.cells["community_code"].str[:6]),
                            geometry=geoms, crs=units.crs)


def cell_of_units(units: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> pd.Series:
    """Unit code → the stored cell holding the unit's inside point (units in no cell left out)."""
    if cells.empty or units.empty:
        return pd.Series(dtype=object)
    points = gpd.GeoDataFrame({"unit": units["code"].to_numpy()},
                              geometry=shapely.point_on_surface(units.geometry.values), crs=units.crs)
    hits = gpd.sjoin(points, cells[["code", "geometry"]], predicate="within", how="inner")
    hits = hits.drop_duplicates("unit")
    return pd.Series(hits["code"].to_numpy(), index=hits["unit"].to_numpy(), dtype=object)


def cell_label(code: str, community_name: str | None) -> str:
    """A grid cell as people name it: its community's name and its number in it ("民权社区 网格 3"),
    in the interface's language (the community's code when it has no name)."""
    code = str(code)
    return _("{community} cell {number}", community=community_name or code[:12],
             number=code[-3:].lstrip("0") or "0")


def validate_cells(communities: gpd.GeoDataFrame, cells: gpd.GeoDataFrame,
                   units: gpd.GeoDataFrame, crs: CRS | None = None) -> dict:
    """What breaks "every household in exactly one cell, cells tiling their community": gaps
    between a community's cells (its land covered by none of them), overlaps between cells,
    cells reaching outside their community, households in no cell or in two. Areas in m², each
    finding with a point (``lon``, ``lat``) the map can fly to. Measured in ``crs`` (a report's
    metric CRS, so that a district's part measures as the whole does), else in the zone of the
    cells' own extent."""
    findings: list[dict] = []
    tolerance = 1.0  # m²: below this, a difference is drawing noise
    if cells.empty:
        lived = units[units["households"] > 0]
        return {"cells": 0, "gaps": len(communities), "overlaps": 0, "outside_community": 0,
                "households_in_no_cell": int(lived["households"].sum()), "households_in_two_cells": 0,
                "findings": []}
    metric_cells = cells.to_crs(crs) if crs is not None else to_metric(cells)
    crs = metric_cells.crs
    metric_communities = communities.to_crs(crs) if len(communities) else communities
    # overlaps: pairs of cells sharing area
    geoms = np.asarray(metric_cells.geometry.values, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="overlaps")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    shared = shapely.intersection(geoms[left], geoms[right])
    big = shapely.area(shared) > tolerance
    for i, j, piece in zip(left[big], right[big], shared[big], strict=True):
        findings.append(_finding("overlap", [cells["code"].iloc[i], cells["code"].iloc[j]], piece, crs))
    # gaps and cells outside their community
    gaps = outside = 0
    if len(metric_communities):
        covered = dissolve(geoms, metric_cells["community_code"].to_numpy(dtype=object),
                           metric_communities["code"].to_numpy(), coverage=False)
        covered = np.array([g if g is not None else shapely.Polygon() for g in covered], dtype=object)
        holes = shapely.difference(np.asarray(metric_communities.geometry.values, dtype=object), covered)
        for code, hole in zip(metric_communities["code"], holes, strict=True):
            if shapely.area(hole) > tolerance:
                gaps += 1
                findings.append(_finding("gap", [code], hole, crs))
        area_of = pd.Series(np.asarray(metric_communities.geometry.values, dtype=object),
                            index=metric_communities["code"].to_numpy())
        home = area_of.reindex(metric_cells["community_code"].to_numpy()).to_numpy(dtype=object)
        known = pd.notna(home)
        beyond = np.full(len(geoms), None, dtype=object)
        beyond[known] = shapely.difference(geoms[known], home[known])
        for code, piece in zip(cells["code"], beyond, strict=True):
            if piece is not None and shapely.area(piece) > tolerance:
                outside += 1
                findings.append(_finding("outside_community", [code], piece, crs))
    # households: each unit's inside point in how many cells
    lived = units[units["households"] > 0]
    points = gpd.GeoDataFrame({"unit": lived["code"].to_numpy(),
                               "households": lived["households"].to_numpy()},
                              geometry=shapely.point_on_surface(lived.geometry.values), crs=units.crs)
    hits = gpd.sjoin(points, cells[["code", "geometry"]], predicate="within", how="left")
    count = hits.groupby("unit")["code"].count()
    households = points.set_index("unit")["households"]
    none, two = count[count == 0].index, count[count > 1].index
    where = points.set_index("unit").geometry
    for unit in none[:500]:
        point = where[unit]
        findings.append({"kind": "household_in_no_cell", "codes": [unit], "area_m2": 0.0,
                         "lon": round(point.x, 7), "lat": round(point.y, 7)})
    return {"cells": len(cells), "gaps": gaps, "overlaps": int(big.sum()), "outside_community": outside,
            "households_in_no_cell": int(households.reindex(none).sum()),
            "households_in_two_cells": int(households.reindex(two).sum()), "findings": findings}


def _finding(kind: str, codes: list[str], geometry, crs) -> dict:
    point = gpd.GeoSeries([shapely.point_on_surface(geometry)], crs=crs).to_crs(4326).iloc[0]
    return {"kind": kind, "codes": codes, "area_m2": round(float(shapely.area(geometry)), 1),
            "lon": round(point.x, 7), "lat": round(point.y, 7)}


def grid_scope(values) -> dict:
    """Where a grid request applies: ``community`` (12 digits) or ``street`` (9 digits), not
    both; nothing given, the whole database."""
    community, street = values.get("community") or None, values.get("street") or None
    if community and street:
        raise Refused(_("give a community or a street, not both"))
    if community and not (str(community).isdigit() and len(str(community)) == 12):
        raise Refused(_("community {community} is not a 12-digit code", community=repr(community)))
    if street and not (str(street).isdigit() and len(str(street)) == 9):
        raise Refused(_("street {street} is not a 9-digit code", street=repr(street)))
    return {"community": community, "street": street}


def districts_of_units(units: gpd.GeoDataFrame) -> list[str] | None:
    """The districts ``units`` lie in — those of their communities' stored cells, a row lying in
    its street's district — or None (every district) when a unit names none."""
    if "district_code" not in units or units["district_code"].isna().any():
        return None
    return sorted({str(d) for d in units["district_code"]})


def grid_rules(engine: Engine, minimum: int | None = None, maximum: int | None = None,
               area_m2: float | None = None, seed: int = 0) -> CellRules:
    """The cell rules the city's settings say (``grid_households``), overridden where given."""
    with engine.connect() as conn:
        low, high = get_setting(conn, "grid_households")
    return CellRules(int(minimum or low), int(maximum or high), area_m2, seed)


def generate_grid(engine: Engine, rules: CellRules, *, community: str | None = None,
                  street: str | None = None, district: str | None = None) -> dict:
    """Generate and store the cells of one community, one street, one district (every statement
    naming it) or the whole database, starting from the stored cells (a cell that still meets the
    rules keeps its units and code). Returns the cells' figures and the validation of the result."""
    if rules.minimum > rules.maximum or rules.minimum <= 0:
        raise Refused(_("household range {minimum}–{maximum} is not 0 < minimum ≤ maximum",
                        minimum=rules.minimum, maximum=rules.maximum))
    scope = ({"community": community} if community else {"street": street} if street
             else {"where": {"district_code": district}} if district else {})
    units, adjacency = units_from_database(engine, street or (community[:9] if community else None),
                                           district=district if not (street or community) else None)
    if community:
        units = units[units["community_code"] == community].reset_index(drop=True)
    if units.empty:
        raise NotFound(_("no units in community {community}", community=community) if community
                       else _("no units in street {street}", street=street) if street
                       else _("district {district} has no units: skipped", district=district) if district
                       else _("no units: import or generate units first"))
    graph = UnitGraph.from_units(units, adjacency)
    communities = sorted({c for c in graph.current if c})
    stored = read_layer(engine, "grid_cells", **scope)
    plan = plan_cells(graph, rules, communities=communities, current=cell_of_units(units, stored))
    # units outside every community (blind spots) get no cell: say so
    loose = np.flatnonzero(pd.isna(graph.current) & ~graph.barrier)
    if len(loose):
        plan.problems.append({
            "kind": "no_community", "community": None, "cell": None,
            "units": graph.codes[loose][:50].tolist(),
            "reason": _("{units} units with {households} households lie in no community (blind spots): cells "
                        "nest in communities, so they get none until a community takes them",
                        units=len(loose), households=int(graph.households[loose].sum()))})
    polygons = cell_polygons(plan, units)
    with engine.begin() as conn:  # the cells of the units' districts alone (a row lies in its street's)
        replace_cells(conn, communities, polygons[["code", "community_code", "district_code", "geometry"]],
                      districts=districts_of_units(units))
        if district:  # a worker of ``grid --all`` dying half-way through its write, for the tests
            die_for_fault_tests(district)
    report = validate_cells(read_layer(engine, "communities", **scope),
                            read_layer(engine, "grid_cells", **scope), units)
    return {"cells": len(plan.cells), "communities": len(communities),
            "in_range_share": round(plan.in_range_share, 4), "in_range": int(plan.cells["in_range"].sum()),
            "kept": len(plan.kept),
            "gaps": report["gaps"], "overlaps": report["overlaps"],
            "outside_community": report["outside_community"],
            "households_in_no_cell": report["households_in_no_cell"],
            "problems": plan.problems[:200],
            "rules": {"minimum": rules.minimum, "maximum": rules.maximum, "area_m2": rules.area_m2}}


def _community_cells(engine: Engine, community: str) -> tuple[gpd.GeoDataFrame, UnitGraph, np.ndarray]:
    """A community's units, their graph, and each unit's stored cell (None where it has none)."""
    units, adjacency = units_from_database(engine, community[:9])
    units = units[units["community_code"] == community].reset_index(drop=True)
    if units.empty:
        raise NotFound(_("no units in community {community}", community=community))
    graph = UnitGraph.from_units(units, adjacency)
    cells = cell_of_units(units, read_layer(engine, "grid_cells", community=community))
    return units, graph, cells.reindex(graph.codes).to_numpy(dtype=object)


def edit_cells(engine: Engine, community: str, labels_of: Callable[[UnitGraph, Partition], dict[str, str]],
               rules: CellRules, actor: str = "grid") -> dict:
    """Apply a hand edit to the stored cells of ``community``: ``labels_of(graph, partition)``
    says which units go to which cell (a stored code, or ``new``); the touched cells are dissolved
    again and stored. A cell's 网格员 keep its ground: a new cell is held by those who held the
    cell most of its units came from, and a cell gone (merged) passes to the cell most of its units
    went to (``actor`` assigns them). Returns every cell's figures with the rules each breaks."""
    units, graph, labels = _community_cells(engine, community)
    before = labels.copy()
    partition = Partition(graph, labels)
    moves = labels_of(graph, partition)
    unknown = [u for u in moves if u not in graph.position]
    if unknown:
        raise Refused(_("unit {p1} is not in community {community}", p1=unknown[0], community=community))
    for target in set(moves.values()):
        if target == "new":
            used = {int(c[-3:]) for c in partition.communities if c.startswith(community)}
            code = f"{community}{min(set(range(1, 1000)) - used):03d}"
            moves = {u: code if t == "new" else t for u, t in moves.items()}
        elif target not in partition:
            raise Refused(_("no cell {target} in community {community}",
                            target=repr(target), community=community))
    for unit, target in moves.items():
        partition.move(graph.position[unit], target)
    engine_rules = rules.engine_rules()
    names = np.array(partition.communities, dtype=object)
    frame = pd.DataFrame({"code": names, "community_code": community,
                          "households": [partition.households[c] for c in names],
                          "area_m2": [round(partition.area[c], 1) for c in names],
                          "units": [len(partition.members(c)) for c in names]})
    weight = frame["area_m2"] if rules.area_m2 else frame["households"]
    frame["in_range"] = weight.between(engine_rules.minimum, engine_rules.maximum)
    plan = CellPlan(pd.Series(partition.labels, index=graph.codes, name="grid_code"), frame)
    polygons = cell_polygons(plan, units)
    after = np.asarray(partition.labels, dtype=object)
    stored = {c for c in before if isinstance(c, str)}
    origins = {c: _most(before[after == c]) for c in names if c not in stored}
    successors = {c: _most(after[before == c]) for c in stored if c not in set(names)}
    with engine.begin() as conn:
        replace_cells(conn, [community], polygons[["code", "community_code", "district_code", "geometry"]],
                      districts=districts_of_units(units),
                      origins={new: old for new, old in origins.items() if old})
        hand_over_cells(conn, origins, successors, actor)
    contiguous = {c: is_contiguous(partition, c) for c in names}
    return {"community": community, "moved": len(moves), "cells": [
        {**row, "contiguous": contiguous[row["code"]],
         "violations": cell_violations(row, contiguous[row["code"]], engine_rules, rules)}
        for row in frame.to_dict("records")]}


def _most(labels: np.ndarray) -> str | None:
    """The cell code most of ``labels`` name (None when none names one)."""
    named = pd.Series(labels, dtype=object).dropna()
    return str(named.value_counts().idxmax()) if len(named) else None


def cell_violations(row: dict, contiguous: bool, engine_rules: Rules, rules: CellRules) -> list[dict]:
    """The rules a cell breaks, as data worded at the edge (as a plan's are):
    ``{"rule": "below_minimum" | "above_maximum", "cell_code", "limit", "value"}`` (households, or
    m² when the cells are sized by area) and ``{"rule": "not_contiguous", "cell_code"}``."""
    weight = row["area_m2"] if rules.area_m2 else row["households"]
    found: list[dict] = []
    if weight < engine_rules.minimum:
        found.append({"rule": "below_minimum", "cell_code": row["code"], "limit": engine_rules.minimum,
                      "value": weight})
    elif weight > engine_rules.maximum:
        found.append({"rule": "above_maximum", "cell_code": row["code"], "limit": engine_rules.maximum,
                      "value": weight})
    if not contiguous:
        found.append({"rule": "not_contiguous", "cell_code": row["code"]})
    return found


def move_to_cell(engine: Engine, unit_codes: list[str], to: str, rules: CellRules,
                 actor: str = "grid") -> dict:
    """Move units (of one community) to another of its cells, or to a new one (``to="new"``)."""
    if not unit_codes:
        raise Refused(_("no units to move"))
    communities = set(read_layer(engine, "units", isin={"code": unit_codes})["community_code"])
    if len(communities) != 1 or None in communities:
        raise Refused(_("choose units of one community: cells nest in their community"))
    return edit_cells(engine, communities.pop(), lambda g, p: dict.fromkeys(unit_codes, to), rules, actor)


def split_cell(engine: Engine, cell: str, rules: CellRules, actor: str = "grid") -> dict:
    """Split a cell in two balanced, compact, contiguous parts; the smaller becomes a new cell
    (held by the cell's 网格员 too)."""
    return edit_cells(engine, cell[:12], lambda g, p: dict.fromkeys(_halves(p, cell), "new"), rules, actor)


def merge_cells(engine: Engine, keep: str, merge: str, rules: CellRules, actor: str = "grid") -> dict:
    """Merge cell ``merge`` into ``keep`` (same community; ``keep`` keeps its code, and those who
    held ``merge`` hold ``keep``)."""
    if keep[:12] != merge[:12]:
        raise Refused(_("cells of two communities cannot be merged"))
    return edit_cells(engine, keep[:12], lambda g, p: _all_of(g, p, merge, keep), rules, actor)


def _halves(partition: Partition, cell: str) -> list[str]:
    if cell not in partition:
        raise NotFound(_("no cell {cell}", cell=cell))
    if len(partition.land_members(cell)) < 2:  # cells are made of whole units
        raise Refused(_("cell {cell} is a single unit: a cell is made of whole units, so there is nothing "
                        "to split", cell=cell))
    return split_in_two(partition, cell)


def _all_of(graph: UnitGraph, partition: Partition, cell: str, to: str) -> dict[str, str]:
    if cell not in partition or to not in partition:
        raise NotFound(_("no cell {p1}", p1=cell if cell not in partition else to))
    return dict.fromkeys(graph.codes[partition.members(cell)].tolist(), to)


def cell_table(engine: Engine, rules: CellRules, *, community: str | None = None, street: str | None = None,
               within: str | None = None) -> tuple[gpd.GeoDataFrame, dict]:
    """The stored cells of a community or a street as the grid page shows them: per cell its
    community (code and name), households, units, area (m²), and the rules it breaks in a
    planner's words (``problems``); beside them the validation of the whole scope
    (:func:`validate_cells`). ``within`` keeps only cells under that code (a supervisor's scope)."""
    scope = {"community": community} if community else {"street": street}
    communities = read_layer(engine, "communities", **scope)
    cells = read_layer(engine, "grid_cells", **scope)
    units = read_layer(engine, "units", **scope)
    if within:
        # validated against every cell of the communities in the scope: a 网格员 of one cell is
        # not told that the rest of their community is a gap with its households in no cell
        communities = communities[communities["code"].str.startswith(within[:12])]
        cells = cells[cells["code"].str.startswith(within[:12])]
        units = units[units["community_code"].fillna("").str.startswith(within[:12])]
    cells = cells.sort_values("code").reset_index(drop=True)
    report = validate_cells(communities, cells, units)
    held = cell_of_units(units, cells)
    if within:
        cells = cells[cells["code"].str.startswith(within)].reset_index(drop=True)
        report = {**report, "cells": len(cells)}  # the cells shown are theirs
    figures = units.assign(cell=units["code"].map(held)).dropna(subset=["cell"]).groupby("cell").agg(
        households=("households", "sum"), units=("code", "count"))
    names = dict(zip(communities["code"], communities["name"], strict=True))
    low, high = rules.minimum, rules.maximum
    metric = to_metric(cells) if len(cells) else cells
    out = cells[["code", "community_code", "geometry"]].copy()
    out["community_name"] = [names.get(c) for c in out["community_code"]]
    # the 网格员 named on the cell (the grid_cells column), beside any accounts assigned to it
    out["supervisor"] = cells["supervisor"].to_numpy() if "supervisor" in cells else None
    out["households"] = out["code"].map(figures["households"]).fillna(0).astype("int64")
    out["units"] = out["code"].map(figures["units"]).fillna(0).astype("int64")
    out["area_m2"] = np.round(np.asarray(metric.area if len(cells) else [], dtype=float), 1)
    pieces = shapely.get_num_geometries(np.asarray(cells.geometry.values, dtype=object)) if len(cells) else []
    problems: list[list[str]] = []
    for households, parts in zip(out["households"], pieces, strict=True):
        found = []
        if households < low:
            found.append(_("{households} households, below the minimum of {minimum}",
                           households=f"{households:,}", minimum=f"{low:,}"))
        elif households > high:
            found.append(_("{households} households, above the maximum of {maximum}",
                           households=f"{households:,}", maximum=f"{high:,}"))
        if parts > 1:
            found.append(_("in {parts} pieces: not contiguous", parts=int(parts)))
        problems.append(found)
    by_code = dict(zip(out["code"], problems, strict=True))
    for finding in report["findings"]:
        codes = finding["codes"]
        if finding["kind"] == "overlap":
            for mine, other in ((codes[0], codes[1]), (codes[1], codes[0])):
                if mine in by_code:
                    by_code[mine].append(_("overlaps cell {cell} ({area} m²)", cell=other,
                                           area=f"{finding['area_m2']:,.0f}"))
        elif finding["kind"] == "outside_community" and codes[0] in by_code:
            by_code[codes[0]].append(_("reaches {area} m² outside its community",
                                       area=f"{finding['area_m2']:,.0f}"))
    out["problems"] = [by_code[c] for c in out["code"]]
    return out, report
