"""The gap report of a province or a country, district by district, on the runners of ``plan --all``.

A district's task (:func:`report_district`) reads its own units, streets, communities and grid
cells, and — within a **halo** around them — the facilities, roads and communities across its
edge: a household near the district's edge is reached by a facility of the next district (along
the roads of that district too), a blind spot is named after the nearest community or road even
across the edge. It answers its part of the report: the households reached (per standard, by
district, street and community), the households each facility serves (its load is summed over
every district it serves), its communities missing a kind, its blind spots and cell problems,
each finding with the key that puts it where the single-process report has it.
:func:`report_all` merges the parts into the report :func:`layers.coverage.gaps.gap_report` makes
of the whole database, household for household and figure for figure.

Why the halo is wide enough (``R`` = the largest reach of any standard):

- **straight-line**: a facility reaching a household within ``R`` lies within ``R`` of it, so
  within ``R`` of the district's box; the facilities of the box widened by ``1.2 R + 100 m`` are read;
- **along the roads**: a walk of at most ``R`` stays within ``R`` of the household, and the node a
  facility joins the roads at (its nearest) lies within ``2 R`` of a household it can reach; the
  roads of the box widened by ``2.4 R + 100 m`` (and at least the 300 m that names a blind
  spot's road) are read, so every walk within reach is the one the whole network gives;
- every district's distances are measured in the **metric CRS of the whole database** (chosen
  once by the coordinator from the units' extent), as the single-process report measures them.

What stays per district (a difference only for data that break nesting): a grid cell is checked
against its own district's communities and units (cells of two districts overlapping are not
seen), and a district with no units is skipped whole (named).

**Siting** district by district (:func:`site_all`, ``flask site KIND K --all``): a task per
district (:func:`site_district`) proposes ``k`` sites in that district from the reads of
``site KIND K --district CODE`` (its units, the facilities and roads of its halo), so each
district's proposals are those of that command run alone. Candidate sites given are shared out:
each is offered to the district it stands in (:func:`candidates_by_district`; one on a boundary to
one district), so no site is proposed by two districts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from sqlalchemy import Engine

from geodata.crs import metric_crs
from geodata.errors import NotFound, Refused
from geodata.extents import read_by_place, read_named, refresh_extents, split_by_district
from geodata.i18n import _
from geodata.store import count_layer, existing_codes, layer_extent, read_layer
from layers.coverage.gaps import (
    ROAD_NAME_M,
    CoverageInputs,
    ReachRun,
    Standard,
    cell_problems,
    choose_method,
    find_blind_spots,
    load_standards,
    lonlat_of,
    missing_kinds,
    primary_standards,
    reach_limits,
    reach_rows,
    standards_from_rows,
    widen_box,
)
from layers.coverage.reach import Facilities, households_from_layers, nearest_by_kind, road_graph
from layers.plans.scale import TaskOutcome, districts_of, peak_memory_mb, process_engine, run_district_tasks

#: the order of the kinds of cell findings in the single-process report (validate_cells, then
#: cell_problems' households in two cells)
CELL_KINDS = ("overlap", "gap", "outside_community", "household_in_no_cell", "household_in_two_cells")
#: at most this many households-in-no-cell findings (as :func:`layers.grid.cells.validate_cells`)
NO_CELL_FINDINGS = 500


@dataclass(frozen=True)
class CoverageTask:
    """What a worker needs for one district's part of the report (plain values: the task crosses
    processes and machines): the database, the district, the distance measure already chosen,
    the whole report's metric CRS (EPSG code) and the standards table's rows."""

    url: str
    district: str
    method: str
    epsg: int
    standards: list
    key: str = ""
    #: also the households out of reach by unit and by community (what the report job keeps for
    #: the coverage pages' layers: :func:`layers.coverage.cache.uncovered_by`)
    uncovered: bool = False


@dataclass
class CoverageOutcome(TaskOutcome):
    """A district's part of the report (see :func:`report_district`) and what it cost."""

    households: int = 0
    reach: list = field(default_factory=list)  # reach_rows of its households
    served: dict = field(default_factory=dict)  # kind → {facility id: households it serves here}
    own_facilities: list = field(default_factory=list)  # rows of the facilities of the district
    missing: list = field(default_factory=list)  # (community id, finding)
    blind_units: list = field(default_factory=list)  # (unit id, finding, households)
    blind_land: list = field(default_factory=list)  # ((street id, part), finding, area m²)
    cells: dict = field(default_factory=dict)  # cell_problems' counts
    cell_findings: list = field(default_factory=list)  # (kind order, key, finding)
    uncovered_by_unit: dict = field(default_factory=dict)  # row key → unit code → households
    uncovered_by_community: dict = field(default_factory=dict)  # row key → community code → households
    read_s: float = 0.0
    work_s: float = 0.0
    #: rows read of each layer, its halo's included (a district inside the country reads more of
    #: its neighbours than one on its edge: what its read and work cost goes with these)
    rows_read: dict = field(default_factory=dict)
    #: seconds each of its reads took (:func:`district_inputs`)
    read_s_by_layer: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.read_s + self.work_s


@dataclass
class DistrictInputs(CoverageInputs):
    """What a district's report reads (:func:`district_inputs`): its own layers, the facilities,
    roads and buildings of its halo, and ``nearby``, the communities of its halo."""

    nearby: gpd.GeoDataFrame | None = None


def halo_m(standards: list[Standard]) -> tuple[float, float]:
    """How far beyond a district's box (metres) its facilities and communities, and its roads,
    are read (see the module's docstring)."""
    reach = max(reach_limits(standards).values(), default=1000.0)
    return 1.2 * reach + 100.0, max(2.4 * reach + 100.0, 1.5 * ROAD_NAME_M)


def _bounds(*frames: gpd.GeoDataFrame) -> tuple[float, float, float, float] | None:
    boxes = np.array([f.total_bounds for f in frames if len(f)])
    if not len(boxes):
        return None
    return (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())


def district_inputs(engine: Engine, district: str, standards: list[Standard],
                    seconds: dict[str, float] | None = None) -> DistrictInputs:
    """What the report of ``district`` reads: its units, streets, communities and cells (every
    statement names ``district_code``), and the facilities, roads and buildings of its box
    widened by the halo (:func:`halo_m`) — read from the districts whose rows can meet it
    (:func:`geodata.extents.read_by_place`) — with the facilities its communities name wherever
    they are. ``communities`` are the district's own; those of the halo are ``nearby``. ``seconds``,
    when given, gets how long each read took (what the benchmark reports)."""
    clock = {"at": time.perf_counter()}

    def timed(name: str, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:  # the read just made
        if seconds is not None:
            now = time.perf_counter()
            seconds[name] = seconds.get(name, 0.0) + now - clock["at"]
            clock["at"] = now
        return frame

    where = {"district_code": district}
    units = timed("units", read_layer(engine, "units", where=where))
    streets = timed("streets", read_layer(engine, "streets", where=where))
    communities = timed("communities", read_layer(engine, "communities", where=where))
    cells = timed("grid_cells", read_layer(engine, "grid_cells", where=where))
    box = _bounds(units, streets, communities)
    if box is None:
        facilities = read_layer(engine, "facilities", where=where)
        roads = read_layer(engine, "roads", where=where)
        return DistrictInputs(units, facilities, communities, streets, cells, roads, nearby=communities)
    near, far = halo_m(standards)
    area = widen_box(box, near)
    split = split_by_district(engine)  # once for the five reads by place
    facilities = timed("facilities_halo", read_by_place(engine, "facilities", area, split=split))
    if len(communities):  # a facility counts for the community its community_code names
        named = timed("facilities_named", read_named(engine, "facilities", communities["code"].tolist(),
                                                     split=split))
        facilities = pd.concat([facilities, named], ignore_index=True).drop_duplicates("id")
        facilities = gpd.GeoDataFrame(facilities.sort_values("id").reset_index(drop=True), crs=4326)
    roads = timed("roads_halo", read_by_place(engine, "roads", widen_box(box, far), split=split))
    buildings = timed("buildings_halo", read_by_place(engine, "buildings", area, split=split))
    buildings = buildings if len(buildings) else None
    # the communities near: blind spots lie by them
    nearby = timed("communities_halo", read_by_place(engine, "communities", area, split=split))
    return DistrictInputs(units, facilities, communities, streets, cells, roads, buildings, nearby=nearby)


def report_district(task: CoverageTask) -> CoverageOutcome:
    """One district's part of the gap report (see :class:`CoverageOutcome`); a district without
    units is skipped (nothing of it in the report)."""
    engine = process_engine(task.url)
    out = CoverageOutcome(task.district, pid=os.getpid())
    started = time.perf_counter()
    standards = standards_from_rows(task.standards)
    inputs = district_inputs(engine, task.district, standards, out.read_s_by_layer)
    out.read_s = time.perf_counter() - started
    out.rows_read = {"units": len(inputs.units), "facilities": len(inputs.facilities),
                     "roads": len(inputs.roads), "communities": len(inputs.nearby),
                     "buildings": 0 if inputs.buildings is None else len(inputs.buildings)}
    started = time.perf_counter()
    units = inputs.units
    if not len(units):
        out.peak_mb = peak_memory_mb()
        return out
    crs = CRS.from_epsg(task.epsg)
    households = households_from_layers(units, inputs.buildings, crs)
    facilities = Facilities.from_layer(inputs.facilities, crs)
    graph = road_graph(inputs.roads, crs) if task.method == "roads" else None
    nearest = nearest_by_kind(households, facilities, reach_limits(standards), graph)
    run = ReachRun(households, facilities, inputs.facilities, standards, task.method, nearest, graph)
    out.units, out.households = len(units), int(households.households.sum())
    out.reach = reach_rows(run)
    # the households each facility serves from this district (its load sums over districts)
    ids = inputs.facilities["id"].to_numpy(dtype=np.int64)
    for kind, row in primary_standards(standards).items():
        near = nearest[kind]
        by = near.within(row.reach_m) & (near.facility >= 0)
        sums = np.bincount(near.facility[by], weights=households.households[by], minlength=len(ids))
        out.served[kind] = {int(ids[i]): float(sums[i]) for i in np.flatnonzero(sums)}
    own = inputs.facilities[inputs.facilities["district_code"] == task.district]
    lonlat = lonlat_of(own.geometry.values)
    out.own_facilities = [
        {"id": int(i), "code": c, "kind": k, "name": n, "community_code": cc, "floor_area_m2": a,
         "lon": float(xy[0]), "lat": float(xy[1])}
        for i, c, k, n, cc, a, xy in zip(own["id"], own["code"], own["kind"], own["name"],
                                         own["community_code"], own["floor_area_m2"], lonlat, strict=True)]
    community_id = dict(zip(inputs.communities["code"], inputs.communities["id"], strict=True))
    out.missing = [(int(community_id[f["community"]]), f)
                   for f in missing_kinds(inputs.communities, inputs.facilities, standards)]
    blind = find_blind_spots(units, inputs.nearby, inputs.streets, crs, inputs.roads)
    unit_id = dict(zip(units["code"], units["id"], strict=True))
    street_id = dict(zip(inputs.streets["code"], inputs.streets["id"], strict=True))
    n_units, part = len(blind.units), {}
    for finding, hh in zip(blind.findings[:n_units], blind.units["households"], strict=True):
        out.blind_units.append((int(unit_id[finding["codes"][0]]), finding, int(hh)))
    for finding, area in zip(blind.findings[n_units:], blind.land["area_m2"], strict=True):
        street = finding["street"]
        part[street] = part.get(street, -1) + 1
        out.blind_land.append(((int(street_id[street]), part[street]), finding, float(area)))
    cells = cell_problems(inputs.communities, inputs.grid_cells, units, crs)  # measured as the whole
    out.cells = {k: v for k, v in cells.items() if k != "findings"}
    cell_id = dict(zip(inputs.grid_cells["code"], inputs.grid_cells["id"], strict=True))
    for finding in cells["findings"]:
        kind, codes = finding["kind"], finding["codes"]
        if kind == "overlap":
            key = tuple(int(cell_id[c]) for c in codes)
        elif kind == "gap":
            key = (int(community_id[codes[0]]),)
        elif kind == "outside_community":
            key = (int(cell_id[codes[0]]),)
        elif kind == "household_in_no_cell":
            key = (codes[0],)  # validate_cells lists them by unit code
        else:
            key = (int(unit_id[codes[0]]),)
        out.cell_findings.append((CELL_KINDS.index(kind), key, finding))
    if task.uncovered:
        from layers.coverage.cache import uncovered_by

        # as layers.coverage.cache.job_result keeps them (households in no community under "")
        communities = pd.Series(households.community, dtype=object).fillna("").to_numpy()
        out.uncovered_by_unit = uncovered_by(run, households.unit)
        out.uncovered_by_community = uncovered_by(run, communities)
    out.work_s = time.perf_counter() - started
    out.peak_mb = peak_memory_mb()
    return out


# --- the coordinator ----------------------------------------------------------------------------


def whole_crs(engine: Engine) -> CRS:
    """The metric CRS the single-process report measures in: the zone of the units' extent (of
    the streets' when no unit is stored), as :func:`layers.coverage.reach.metric_of` picks it."""
    box = layer_extent(engine, "units") or layer_extent(engine, "streets")
    if box is None:
        return CRS.from_epsg(4547)
    return metric_crs((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _merge_reach(parts: list[list[dict]], standards: list[Standard], method: str) -> list[dict]:
    out = []
    for i, row in enumerate(standards):
        rows = [p[i] for p in parts]
        total = sum(r["households"] for r in rows)
        got = sum(r["households_covered"] for r in rows)
        merged = {"kind": row.kind, "name": row.name, "level": row.level, "radius_m": row.reach_m,
                  "method": method, "households": total, "households_covered": got,
                  "share": round(got / total, 4) if total else 1.0}
        for name in ("by_district", "by_street", "by_community"):
            pairs: dict[str, list[int]] = {}
            for r in rows:
                for code, (households, covered) in r[name].items():
                    was = pairs.setdefault(code, [0, 0])
                    was[0] += households
                    was[1] += covered
            merged[name] = {code: pairs[code] for code in sorted(pairs)}
        out.append(merged)
    return out


def _merge_facilities(outcomes: list[CoverageOutcome], standards: list[Standard]) -> list[dict]:
    """:func:`layers.coverage.gaps.facility_problems` of the whole database, from each district's
    facilities and the households each facility serves in every district (the same arithmetic)."""
    rows = sorted((f for o in outcomes for f in o.own_facilities), key=lambda f: f["id"])
    out = []
    for kind, row in primary_standards(standards).items():
        mine = [f for f in rows if f["kind"] == kind]
        if not mine:
            continue
        served = np.zeros(len(mine))
        at = {f["id"]: j for j, f in enumerate(mine)}
        for o in outcomes:
            for fid, households in o.served.get(kind, {}).items():
                if fid in at:
                    served[at[fid]] += households
        area = pd.to_numeric(pd.Series([f["floor_area_m2"] for f in mine], dtype=object),
                             errors="coerce").to_numpy(dtype=float)
        need = np.maximum(row.min_floor_area_m2, row.floor_area_per_100_households_m2 * served / 100.0)
        small = (need > 0) & np.isfinite(area) & (area < need)
        heavy = (row.households_per_facility > 0) & (served > row.households_per_facility)
        for j in np.flatnonzero(small | heavy):
            f = mine[j]
            flags = (("under_floor_area", small[j]), ("overloaded", heavy[j]))
            comm = f["community_code"]
            out.append({"code": f["code"], "kind": kind, "name": f["name"],
                        "community": comm if isinstance(comm, str) else None,
                        "floor_area_m2": None if not np.isfinite(area[j]) else round(float(area[j]), 1),
                        "required_floor_area_m2": round(float(need[j]), 1),
                        "households_served": int(served[j]),
                        "households_per_facility": int(row.households_per_facility) or None,
                        "problem": ",".join(p for p, on in flags if on), "lon": f["lon"], "lat": f["lat"]})
    return out


def _merge_cells(outcomes: list[CoverageOutcome]) -> dict:
    counts = ("cells", "gaps", "overlaps", "outside_community", "households_in_no_cell",
              "households_in_two_cells")
    report: dict = {k: sum(int(o.cells.get(k, 0)) for o in outcomes) for k in counts}
    found = sorted((f for o in outcomes for f in o.cell_findings), key=lambda f: (f[0], f[1]))
    no_cell = CELL_KINDS.index("household_in_no_cell")
    kept, seen = [], 0
    for order, _key, finding in found:
        if order == no_cell:
            seen += 1
            if seen > NO_CELL_FINDINGS:
                continue
        kept.append(finding)
    report["findings"] = kept
    return report


def merge_report(outcomes: list[CoverageOutcome], standards: list[Standard], method: str, crs: CRS) -> dict:
    """The gap report of the whole database from its districts' parts (the keys and order of
    :func:`layers.coverage.gaps.gap_report`)."""
    done = sorted((o for o in outcomes if not o.skipped), key=lambda o: o.district)
    units = sorted((u for o in done for u in o.blind_units), key=lambda u: u[0])
    land = sorted((p for o in done for p in o.blind_land), key=lambda p: p[0])
    return {
        "scope": {"street": None},
        "crs": f"EPSG:{crs.to_epsg()}",
        "method": method,
        "households": sum(o.households for o in done),
        "units": sum(o.units for o in done),
        "standards": [asdict(row) for row in standards],
        "reach": _merge_reach([o.reach for o in done], standards, method),
        "missing": [f for _id, f in sorted((m for o in done for m in o.missing), key=lambda m: m[0])],
        "facilities": _merge_facilities(done, standards),
        "blind_spots": {"units": len(units), "households": sum(hh for _i, _f, hh in units),
                        "land_parts": len(land), "land_m2": round(float(sum(a for _k, _f, a in land)), 1),
                        "findings": [f for _i, f, _h in units] + [f for _k, f, _a in land]},
        "cell_problems": _merge_cells(done),
    }


@dataclass
class ProvinceReport:
    """A gap report made district by district: the report, the districts reported and those
    skipped (no units), each district's outcome, the workers, and how long it took."""

    report: dict
    districts: list[str]
    skipped: list[str]
    outcomes: list[CoverageOutcome]
    workers: int
    seconds: float

    def summary(self) -> dict:
        return {"districts": len(self.districts), "skipped": self.skipped, "workers": self.workers,
                "seconds": round(self.seconds, 2)}

    def uncovered(self, by: str) -> dict[str, dict[str, int]]:
        """Per row of the standards table, the households out of reach by ``unit`` or by
        ``community`` over every district (asked with ``uncovered=True``): what
        :func:`layers.coverage.cache.uncovered_by` gives of the whole database. A community's
        households (and those in none, under "") add up over the districts they live in."""
        out: dict[str, dict[str, int]] = {}
        for outcome in self.outcomes:
            for row, lost in getattr(outcome, f"uncovered_by_{by}").items():
                merged = out.setdefault(row, {})
                for code, households in lost.items():
                    merged[code] = merged.get(code, 0) + int(households)
        return {row: dict(sorted(lost.items())) for row, lost in out.items()}


def report_all(engine: Engine, method: str | None = None, *, runner=None, cluster: str | None = None,
               workers: int | None = None,
               progress: Callable[[int, int, CoverageOutcome], None] | None = None,
               uncovered: bool = False) -> ProvinceReport:
    """The gap report of every district, a task per district on ``runner`` (default
    :func:`layers.plans.scale.runner_for` ``cluster``/``workers``; the scheduler is reached
    before any task runs); ``progress(done, total, outcome)`` as each district finishes. A
    district without units is skipped and named. Nothing is written. ``uncovered``: the
    outcomes also carry the households out of reach by unit and community
    (:meth:`ProvinceReport.uncovered`)."""
    standards = load_standards(engine)
    roads = count_layer(engine, "roads")
    method = choose_method(method, range(min(roads, 1)))  # refused before a worker is asked
    crs = whole_crs(engine)
    started = time.perf_counter()
    if split_by_district(engine):  # once here, not by every task at once
        refresh_extents(engine)
    rows = [asdict(row) for row in standards]
    made = run_district_tasks(
        engine, "coverage", lambda url, d, key: CoverageTask(url, d, method, int(crs.to_epsg()), rows, key,
                                                             uncovered),
        report_district, runner=runner, cluster=cluster, workers=workers, progress=progress)
    return ProvinceReport(merge_report(made.outcomes, standards, method, crs), made.done, made.skipped,
                          made.outcomes, made.workers, time.perf_counter() - started)


# --- siting, district by district ---------------------------------------------------------------


@dataclass(frozen=True)
class SitingTask:
    """What a worker needs to site ``k`` facilities of ``kind`` in one district (plain values, and
    the candidate sites given, if any): the question :func:`site_district` answers as
    ``flask site KIND K --district CODE`` answers it alone."""

    url: str
    district: str
    kind: str
    k: int
    standards: list
    radius: float | None = None
    method: str | None = None
    solver: str = "auto"
    time_limit: float = 60.0
    candidates: gpd.GeoDataFrame | None = field(default=None, compare=False)
    key: str = ""


@dataclass
class SitingOutcome(TaskOutcome):
    """A district's proposals: the GeoJSON collection :func:`layers.coverage.siting.sites_answer`
    makes (None: no units, skipped), and what it cost."""

    answer: dict | None = None
    seconds: float = 0.0


def site_district(task: SitingTask) -> SitingOutcome:
    """``k`` sites of ``kind`` for one district: its units, the facilities and roads of its halo
    (:func:`district_inputs`), its reach measured in its own metric CRS — the reads and the
    arithmetic of ``site KIND K --district CODE``, so a district's proposals are the same run
    alone or with every other. A district without units is skipped."""
    from layers.coverage import siting
    from layers.coverage.gaps import compute_reach

    started = time.perf_counter()
    engine = process_engine(task.url)
    out = SitingOutcome(task.district, pid=os.getpid())
    standards = standards_from_rows(task.standards)
    inputs = district_inputs(engine, task.district, standards)
    if len(inputs.units):
        run = compute_reach(inputs, standards, task.method)
        result, used, radius = siting.site_for(run, task.kind, task.k, radius_m=task.radius,
                                               candidates=task.candidates, units=inputs.units,
                                               method=task.solver, time_limit=task.time_limit)
        out.units = len(inputs.units)
        out.answer = siting.sites_answer(result, used, task.kind, radius, task.k, run.method, engine)
    out.seconds = time.perf_counter() - started
    out.peak_mb = peak_memory_mb()
    return out


@dataclass
class ProvinceSites:
    """Proposals made district by district: each district's collection (by code), the districts
    skipped (no units), the workers and how long it took; with candidate sites given, how many
    were given, how many lie in no district (left out) and the districts none lies in (no task)."""

    answers: dict[str, dict]
    skipped: list[str]
    workers: int
    seconds: float
    candidates: int | None = None
    left_out: int = 0
    without_candidates: list[str] = field(default_factory=list)

    def collection(self) -> dict:
        """Every district's sites as one GeoJSON collection: each feature carries its
        ``district_code``; the properties hold each district's (bound, gap, households …) under
        ``districts``, and the districts ``skipped``; with candidate sites given, ``candidates``
        says how many were given, ``left_out`` (in no district) and ``districts_without`` any."""
        features, districts = [], {}
        for code in sorted(self.answers):
            answer = self.answers[code]
            features += [{**f, "properties": {"district_code": code, **f["properties"]}}
                         for f in answer["features"]]
            districts[code] = answer["properties"]
        first = next(iter(districts.values()))
        properties = {"kind": first["kind"], "k": first["k"], "districts": districts, "skipped": self.skipped}
        if self.candidates is not None:
            properties["candidates"] = {"given": self.candidates, "left_out": self.left_out,
                                        "districts_without": self.without_candidates}
        return {"type": "FeatureCollection", "features": features, "properties": properties}


#: how near an outline (degrees, ≈ 1 cm) a candidate site in no outline still counts as on it:
#: a point of a shared boundary may fall a rounding error outside both outlines
ON_OUTLINE_DEG = 1e-7


def district_outlines(engine: Engine, bbox: tuple[float, float, float, float]) -> gpd.GeoDataFrame:
    """The outline (``code``, ``geometry``, EPSG:4326) of each district coming into ``bbox``: the
    districts table's, else the union of its streets', else of its units' (a database of units
    alone)."""
    shaped = read_layer(engine, "districts", bbox=bbox)
    rows = [(c, g) for c, g in zip(shaped["code"], shaped.geometry.values, strict=True)
            if g is not None and not g.is_empty]
    with engine.connect() as conn:
        listed = existing_codes(conn, "districts")
    blank = set(read_layer(engine, "districts", empty=["geom"])["code"])
    for code in sorted((set(districts_of(engine)) - listed) | blank):
        for layer in ("streets", "units"):
            parts = read_layer(engine, layer, where={"district_code": code}, bbox=bbox)
            if len(parts):
                rows.append((code, shapely.union_all(parts.geometry.values)))
                break
    return gpd.GeoDataFrame({"code": [c for c, _g in rows]}, geometry=[g for _c, g in rows], crs=4326)


def place_candidates(engine: Engine, candidates: gpd.GeoDataFrame) -> np.ndarray:
    """The district each candidate site stands in (None: in none). A site on the boundary of two
    districts — in both outlines, or within :data:`ON_OUTLINE_DEG` of them and in neither — goes
    to the one with the lowest code, so that it is offered once, to the same district by
    ``site --all`` and ``site --district``."""
    points = np.asarray((candidates if candidates.crs is None else candidates.to_crs(4326)).geometry.values,
                        dtype=object)
    placed = np.full(len(points), None, dtype=object)
    if not len(points):
        return placed
    x0, y0, x1, y1 = shapely.total_bounds(points)
    outlines = district_outlines(engine, (x0 - ON_OUTLINE_DEG, y0 - ON_OUTLINE_DEG, x1 + ON_OUTLINE_DEG,
                                          y1 + ON_OUTLINE_DEG))
    if not len(outlines):
        return placed
    outlines = outlines.sort_values("code", kind="stable").reset_index(drop=True)
    codes = outlines["code"].to_numpy(dtype=object)
    tree = shapely.STRtree(outlines.geometry.values)
    for predicate, distance in (("intersects", None), ("dwithin", ON_OUTLINE_DEG)):
        todo = np.flatnonzero(pd.isna(placed))
        if not len(todo):
            break
        at, outline = tree.query(points[todo], predicate=predicate, distance=distance)
        lowest = np.full(len(todo), len(codes))
        np.minimum.at(lowest, at, outline)  # outlines in code order: the lowest code
        hit = lowest < len(codes)
        placed[todo[hit]] = codes[lowest[hit]]
    return placed


def candidates_by_district(engine: Engine, candidates: gpd.GeoDataFrame) -> dict[str, gpd.GeoDataFrame]:
    """The candidate sites of each district they stand in (:func:`place_candidates`), in the
    order given; those in no district are in none."""
    placed = place_candidates(engine, candidates)
    return {code: candidates[placed == code].reset_index(drop=True)
            for code in sorted({c for c in placed if c is not None})}


def candidates_of_district(engine: Engine, candidates: gpd.GeoDataFrame,
                           district: str) -> tuple[gpd.GeoDataFrame, int]:
    """The candidate sites standing in ``district`` (those ``site --all`` offers it), and how
    many of the others were left out. Refused when none stands in it."""
    mine = candidates_by_district(engine, candidates).get(district)
    if mine is None:
        raise Refused(_("none of the {total} candidate sites lies in district {district}",
                        total=len(candidates), district=district))
    return mine, len(candidates) - len(mine)


def site_all(engine: Engine, kind: str, k, *, radius: float | None = None, method: str | None = None,
             solver: str = "auto", time_limit: float = 60.0, candidates: gpd.GeoDataFrame | None = None,
             runner=None, cluster: str | None = None, workers: int | None = None,
             progress: Callable[[int, int, SitingOutcome], None] | None = None) -> ProvinceSites:
    """``k`` sites of ``kind`` in every district, a task per district (:func:`site_district`) on
    ``runner`` (default :func:`layers.plans.scale.runner_for` ``cluster``/``workers``);
    ``progress(done, total, outcome)`` as each district finishes. The kind, ``k`` and the radius
    are refused before a worker is asked; a district without units is skipped and named.
    ``candidates`` given: each district is offered those standing in it
    (:func:`candidates_by_district`: a site on a boundary to one district), so no site is
    proposed twice; those in no district are left out, a district with none has no task.
    Nothing is written."""
    from layers.coverage import siting

    k = siting.check_k(k)
    standards = load_standards(engine)
    limits = reach_limits(standards)
    if kind not in limits:
        raise Refused(_("unknown facility kind {kind}; kinds of the standards table: {p2}",
                        kind=repr(kind), p2=', '.join(limits)))
    if radius is not None and not 0 < float(radius) <= limits[kind]:
        raise Refused(_("radius {radius_m} m: give 0 < radius ≤ {p2} m, the largest reach of {kind} in the "
                        "standards table", radius_m=radius, p2=format(limits[kind], 'g'), kind=kind))
    choose_method(method, range(min(count_layer(engine, "roads"), 1)))  # "roads" without roads
    districts = districts_of(engine)
    shares, without = None, []
    if candidates is not None:
        shares = candidates_by_district(engine, candidates)
        if not shares:
            raise Refused(_("none of the {total} candidate sites lies in a district of the database",
                            total=len(candidates)))
        districts, without = [d for d in districts if d in shares], [d for d in districts if d not in shares]
    started = time.perf_counter()
    if split_by_district(engine):  # once here, not by every task at once
        refresh_extents(engine)
    rows = [asdict(row) for row in standards]

    def task(url: str, district: str, key: str) -> SitingTask:
        offered = candidates if shares is None else shares[district]
        return SitingTask(url, district, kind, k, rows, radius, method, solver, time_limit, offered, key)

    made = run_district_tasks(engine, "siting", task, site_district, districts=districts, runner=runner,
                              cluster=cluster, workers=workers, progress=progress)
    left_out = 0 if shares is None else len(candidates) - sum(len(f) for f in shares.values())
    return ProvinceSites({o.district: o.answer for o in made.outcomes if not o.skipped}, made.skipped,
                         made.workers, time.perf_counter() - started,
                         None if candidates is None else len(candidates), left_out, without)


def check_district(engine: Engine, district: str | None) -> None:
    """Refuse a district that is not a 6-digit code, or that holds no street (404)."""
    if district is None:
        return
    if not (isinstance(district, str) and district.isdigit() and len(district) == 6):
        raise Refused(_("district {district} is not a 6-digit code", district=repr(district)))
    if not count_layer(engine, "streets", where={"district_code": district}):
        raise NotFound(_("no district {district}", district=district))


__all__ = ["CoverageOutcome", "CoverageTask", "DistrictInputs", "ProvinceReport", "ProvinceSites",
           "SitingOutcome", "SitingTask", "candidates_by_district", "candidates_of_district",
           "check_district", "district_inputs", "district_outlines", "halo_m", "merge_report",
           "place_candidates", "report_all", "report_district", "site_all", "site_district", "whole_crs"]
