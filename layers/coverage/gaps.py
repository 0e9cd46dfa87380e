"""Coverage gaps (覆盖缺口): what the service standards ask and where the city falls short.

The gap report answers, for a street or the whole database:

- **reach** — households (户) within walking distance of each facility kind, for every kind ×
  distance of the standards table (设施配置标准, the ``facility_standards`` setting), by
  community (社区), street (街道) and district (区), straight-line or along the roads
  (:mod:`layers.coverage.reach`);
- **missing** — communities without a kind every community must have (e.g. its 社区服务站, the
  office and activity rooms);
- **facilities** — facilities under their floor-area standard (at least ``min_floor_area_m2``, and
  ``floor_area_per_100_households_m2`` for every 100 households they serve) or overloaded (serving
  more households than ``households_per_facility``); a facility serves the households within its
  kind's reach whose nearest facility of that kind it is;
- **blind spots** (社区盲点) — units with households outside every community, and land of a
  street that no community covers ("wherever the city grows, a community follows");
- **cell problems** (网格问题) — gaps between a community's grid cells, overlaps, cells reaching
  outside their community, households in no cell or in two (every household in exactly one cell).

Every finding carries ``lon``/``lat``, a point the map can fly to. The JSON shape of
:func:`gap_report` is what other systems read: keep its keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from sqlalchemy import Engine

from geodata.catalog import Field
from geodata.errors import NotFound, Refused
from geodata.extents import read_by_place, split_by_district
from geodata.i18n import N_, _
from geodata.standards import FACILITY_KINDS, get_setting
from geodata.store import count_layer, read_layer
from layers.coverage.reach import (
    METHODS,
    Facilities,
    Households,
    Nearest,
    RoadGraph,
    households_from_layers,
    metric_of,
    nearest_by_kind,
    reached_edges,
    road_graph,
    to_lonlat,
)
from layers.grid.cells import validate_cells

#: The filter that selects blind spots among the units: households, and no community code.
BLIND_SPOT = {"empty": ["community_code"], "ranges": {"households": (1, None)}}
#: Uncovered land smaller than this (m²) is drawing noise, not a gap.
MIN_LAND_M2 = 1.0


def blind_spots(engine: Engine, **filters) -> gpd.GeoDataFrame:
    """Units with households and no community (read with the filters of ``read_layer``)."""
    return read_layer(engine, "units", **BLIND_SPOT, **filters)


# --- the standards table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Standard:
    """One row of the facility standards table (see ``geodata.standards.FACILITY_STANDARDS``)."""

    kind: str
    level: str
    reach_m: float
    required: bool = False
    min_floor_area_m2: float = 0.0
    floor_area_per_100_households_m2: float = 0.0
    households_per_facility: int = 0
    source: str = ""

    @property
    def name(self) -> str:
        """The kind's Chinese name (设施名称), or the kind itself for a city's own kinds."""
        return FACILITY_KINDS.get(self.kind, (self.kind,))[0]


def standards_from_rows(rows: list[dict]) -> list[Standard]:
    """The table's rows as :class:`Standard` (a :class:`Refused` naming every bad row)."""
    if not isinstance(rows, list) or not rows:
        raise Refused(_("facility_standards must be a non-empty list of rows"))
    out, problems = [], []
    names = set(Standard.__dataclass_fields__)
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("kind"), str) or not row["kind"].strip():
            problems.append(f"row {i}: a kind is required")
            continue
        reach = row.get("reach_m")
        if not isinstance(reach, int | float) or isinstance(reach, bool) or not 0 < reach <= 20_000:
            problems.append(f"row {i} ({row['kind']}): reach_m must be a distance in metres, 0 < d ≤ 20,000")
            continue
        out.append(Standard(**{k: v for k, v in row.items() if k in names}))
    if problems:
        raise Refused("; ".join(problems), problems=problems)
    return out


def load_standards(engine: Engine) -> list[Standard]:
    """The city's standards table (the ``facility_standards`` setting, or the shipped default)."""
    with engine.connect() as conn:
        return standards_from_rows(get_setting(conn, "facility_standards"))


def primary_standards(standards: list[Standard]) -> dict[str, Standard]:
    """Each kind's first row: the one holding its floor-area and load standards."""
    out: dict[str, Standard] = {}
    for row in standards:
        out.setdefault(row.kind, row)
    return out


def reach_limits(standards: list[Standard]) -> dict[str, float]:
    """Kind → the largest distance the table asks of it (one nearest-facility search per kind)."""
    limits: dict[str, float] = {}
    for row in standards:
        limits[row.kind] = max(limits.get(row.kind, 0.0), float(row.reach_m))
    return limits


# --- inputs -------------------------------------------------------------------------------------


@dataclass
class CoverageInputs:
    """The layers a gap report reads (EPSG:4326), for one street or the whole database."""

    units: gpd.GeoDataFrame
    facilities: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    streets: gpd.GeoDataFrame
    grid_cells: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame | None = None
    street: str | None = None

    @property
    def crs(self) -> CRS:
        return metric_of(self.units if len(self.units) else self.streets)


def widen_box(bounds, metres: float) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = bounds
    dlat = metres / 111_320.0
    dlon = metres / (111_320.0 * max(math.cos(math.radians((miny + maxy) / 2)), 0.1))
    return (minx - dlon, miny - dlat, maxx + dlon, maxy + dlat)


def check_street(engine: Engine, street: str | None) -> None:
    """Refuse a street that is not a 9-digit code, or that is not stored (404)."""
    if street is None:
        return
    if not (isinstance(street, str) and street.isdigit() and len(street) == 9):
        raise Refused(_("street {street} is not a 9-digit code", street=repr(street)))
    if not count_layer(engine, "streets", where={"code": street}):
        raise NotFound(_("no street {street}", street=street))


def load_inputs(engine: Engine, street: str | None = None, standards: list[Standard] | None = None,
                ) -> CoverageInputs:
    """Read what a gap report needs. With ``street``, its units, communities and cells, and the
    facilities and roads within the largest reach of it (households near a street's edge are
    served across it)."""
    check_street(engine, street)
    scope = {"street": street} if street else {}
    units = read_layer(engine, "units", **scope)
    streets = read_layer(engine, "streets", **({"where": {"code": street}} if street else {}))
    area = None
    if street and len(units):  # what serves it, by place, whichever district keeps it
        reach = max(reach_limits(standards or load_standards(engine)).values(), default=1000.0)
        area = widen_box(units.total_bounds, 1.2 * reach + 100.0)

    split = split_by_district(engine) if area is not None else False

    def read(layer: str) -> gpd.GeoDataFrame:
        return read_layer(engine, layer) if area is None else read_by_place(engine, layer, area, split=split)

    buildings = read("buildings")
    return CoverageInputs(
        units=units, facilities=read("facilities"),
        communities=read_layer(engine, "communities", **scope), streets=streets,
        grid_cells=read_layer(engine, "grid_cells", **scope), roads=read("roads"),
        buildings=buildings if len(buildings) else None, street=street)


# --- reach --------------------------------------------------------------------------------------


@dataclass
class ReachRun:
    """Every household's nearest facility of every kind the standards name, by one method."""

    households: Households
    facilities: Facilities
    facility_frame: gpd.GeoDataFrame
    standards: list[Standard]
    method: str
    nearest: dict[str, Nearest]
    graph: RoadGraph | None = None

    def covered(self, kind: str, radius_m: float) -> np.ndarray:
        """Which household points have a facility of ``kind`` within ``radius_m``."""
        if kind not in self.nearest:
            raise Refused(_("unknown facility kind {kind}; kinds: {p2}",
                            kind=repr(kind), p2=', '.join(self.nearest)))
        return self.nearest[kind].within(radius_m)


def choose_method(method: str | None, roads: gpd.GeoDataFrame) -> str:
    """``straight`` or ``roads``; ``auto`` (None) walks the roads when a roads layer is loaded."""
    if method in (None, "", "auto"):
        return "roads" if len(roads) else "straight"
    if method not in METHODS:
        raise Refused(_("method {method} is not one of auto, {p2}",
                        method=repr(method), p2=', '.join(METHODS)))
    if method == "roads" and not len(roads):
        raise Refused(_("no roads are loaded: import a roads layer, or use method=straight"))
    return method


def compute_reach(inputs: CoverageInputs, standards: list[Standard], method: str | None = None,
                  extra: gpd.GeoDataFrame | None = None) -> ReachRun:
    """Nearest facilities for every household and kind. ``extra``: proposed facilities (points in
    EPSG:4326 with ``kind``, ``code``) counted as if built."""
    method = choose_method(method, inputs.roads)
    crs = inputs.crs
    households = households_from_layers(inputs.units, inputs.buildings, crs)
    frame = inputs.facilities
    if extra is not None and len(extra):
        frame = pd.concat([frame, extra.to_crs(4326)], ignore_index=True)
    facilities = Facilities.from_layer(frame, crs)
    graph = road_graph(inputs.roads, crs) if method == "roads" else None
    nearest = nearest_by_kind(households, facilities, reach_limits(standards), graph)
    return ReachRun(households, facilities, frame, standards, method, nearest, graph)


@dataclass
class _Groups:
    """Household points grouped by a code (community, street, district), factorised once."""

    keys: list[str]  # in code order
    known: np.ndarray  # points that carry a code
    group: np.ndarray  # group of each known point
    weight: np.ndarray  # households of each known point
    total: np.ndarray  # households per group

    @classmethod
    def of(cls, codes: np.ndarray, households: np.ndarray) -> _Groups:
        inverse, keys = pd.factorize(pd.Series(codes, dtype=object), sort=True, use_na_sentinel=True)
        known = inverse >= 0
        weight = households[known].astype(float)
        total = np.bincount(inverse[known], weights=weight, minlength=len(keys))
        return cls([str(k) for k in keys], known, inverse[known], weight, total)

    def pairs(self, covered: np.ndarray) -> dict[str, list[int]]:
        """``{code: [households, covered]}``, codes in order."""
        got = np.bincount(self.group, weights=self.weight * covered[self.known], minlength=len(self.keys))
        return dict(zip(self.keys, np.column_stack([self.total, got]).astype(np.int64).tolist(), strict=True))


def reach_rows(run: ReachRun) -> list[dict]:
    """The ``reach`` part of the report: one entry per row of the standards table."""
    hh = run.households
    groups = {name: _Groups.of(codes, hh.households) for name, codes in
              (("by_district", hh.district), ("by_street", hh.street), ("by_community", hh.community))}
    total = int(hh.households.sum())
    out = []
    for row in run.standards:
        covered = run.covered(row.kind, row.reach_m)
        got = int(hh.households[covered].sum())
        out.append({"kind": row.kind, "name": row.name, "level": row.level, "radius_m": row.reach_m,
                    "method": run.method, "households": total, "households_covered": got,
                    "share": round(got / total, 4) if total else 1.0}
                   | {name: g.pairs(covered) for name, g in groups.items()})
    return out


def uncovered_units(run: ReachRun, units: gpd.GeoDataFrame, kind: str, radius_m: float) -> gpd.GeoDataFrame:
    """Units with households out of reach of ``kind`` within ``radius_m``: ``code``, ``households``,
    ``uncovered`` (households out of reach), ``community_code``, ``street_code``, geometry."""
    covered = run.covered(kind, radius_m)
    hh = run.households
    out = pd.Series(hh.households * ~covered).groupby(hh.unit).sum()
    out = out[out > 0]
    frame = units[units["code"].isin(out.index)].copy()
    frame["uncovered"] = out.reindex(frame["code"]).to_numpy(dtype=np.int64)
    frame["kind"] = kind
    frame["radius_m"] = float(radius_m)
    return frame[["code", "kind", "radius_m", "households", "uncovered", "community_code", "street_code",
                  "geometry"]].reset_index(drop=True)


# --- missing kinds, facility standards ----------------------------------------------------------


def lonlat_of(geoms) -> np.ndarray:
    geoms = np.asarray(geoms, dtype=object)
    if not len(geoms):
        return np.empty((0, 2))
    return np.round(shapely.get_coordinates(shapely.point_on_surface(geoms)), 7)


def missing_kinds(communities: gpd.GeoDataFrame, facilities: gpd.GeoDataFrame,
                  standards: list[Standard]) -> list[dict]:
    """Communities without a facility of a kind every community must have. A facility counts for
    the community its ``community_code`` names, and for the community it lies in."""
    required = list(dict.fromkeys(row.kind for row in standards if row.required))
    if not required or communities.empty:
        return []
    codes = communities["code"].to_numpy(dtype=object)
    have = pd.DataFrame({"community": facilities["community_code"].to_numpy(dtype=object),
                         "kind": facilities["kind"].to_numpy(dtype=object)})
    if len(facilities):
        fac, comm = shapely.STRtree(np.asarray(communities.geometry.values, dtype=object)).query(
            np.asarray(facilities.geometry.values, dtype=object), predicate="within")
        have = pd.concat([have, pd.DataFrame({"community": codes[comm],
                                              "kind": facilities["kind"].to_numpy(dtype=object)[fac]})])
    present = set(zip(have["community"], have["kind"], strict=True))
    lonlat = lonlat_of(communities.geometry.values)
    names = communities["name"].to_numpy(dtype=object)
    out = []
    for i, code in enumerate(codes):
        lacking = [k for k in required if (code, k) not in present]
        if lacking:
            out.append({"community": code, "name": names[i], "kinds": lacking,
                        "lon": float(lonlat[i, 0]), "lat": float(lonlat[i, 1])})
    return out


def facility_problems(run: ReachRun, scope_codes: set[str] | None = None) -> list[dict]:
    """Facilities under their floor-area standard or overloaded. A facility serves the households
    within its kind's reach (the kind's first row) whose nearest facility of the kind it is."""
    frame = run.facility_frame
    out = []
    lonlat = lonlat_of(frame.geometry.values)
    area = pd.to_numeric(frame["floor_area_m2"], errors="coerce").to_numpy(dtype=float)
    codes = frame["code"].to_numpy(dtype=object)
    comm = frame["community_code"].to_numpy(dtype=object)
    hh = run.households.households
    for kind, row in primary_standards(run.standards).items():
        at = run.facilities.of_kind(kind)
        if not len(at):
            continue
        nearest = run.nearest[kind]
        served_by = nearest.within(row.reach_m) & (nearest.facility >= 0)
        served = np.bincount(nearest.facility[served_by], weights=hh[served_by], minlength=len(frame))[at]
        need = np.maximum(row.min_floor_area_m2, row.floor_area_per_100_households_m2 * served / 100.0)
        small = (need > 0) & np.isfinite(area[at]) & (area[at] < need)
        heavy = (row.households_per_facility > 0) & (served > row.households_per_facility)
        for j in np.flatnonzero(small | heavy):
            i = at[j]
            if scope_codes is not None and not (isinstance(comm[i], str) and comm[i] in scope_codes):
                continue
            flags = (("under_floor_area", small[j]), ("overloaded", heavy[j]))
            problem = ",".join(p for p, on in flags if on)
            out.append({"code": codes[i], "kind": kind, "name": frame["name"].iloc[i],
                        "community": comm[i] if isinstance(comm[i], str) else None,
                        "floor_area_m2": None if not np.isfinite(area[i]) else round(float(area[i]), 1),
                        "required_floor_area_m2": round(float(need[j]), 1),
                        "households_served": int(served[j]),
                        "households_per_facility": int(row.households_per_facility) or None,
                        "problem": problem, "lon": float(lonlat[i, 0]), "lat": float(lonlat[i, 1])})
    return out


# --- blind spots --------------------------------------------------------------------------------


@dataclass
class BlindSpots:
    """Blind spots: units with households in no community, and street land no community covers."""

    units: gpd.GeoDataFrame  # code, households, street_code, community_code, geometry (4326)
    land: gpd.GeoDataFrame  # street_code, area_m2, geometry (4326)
    findings: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"units": len(self.units), "households": int(self.units["households"].sum()),
                "land_parts": len(self.land), "land_m2": round(float(self.land["area_m2"].sum()), 1),
                "findings": self.findings}


#: How far from a blind spot a road may be to name where it lies ("by 解放大道").
ROAD_NAME_M = 300.0
#: What a blind-spot finding says in words beside its codes (None where nothing is known).
PLACE_KEYS = ("street_name", "near_community", "near_community_name", "road_name")


def _text_or_none(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _nearest_metric(points: np.ndarray, geoms: np.ndarray, crs: CRS, reach_deg: np.ndarray | float | None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For each point (EPSG:4326) the position of the nearest of ``geoms`` (EPSG:4326) measured in
    metres in ``crs``, and the distance (-1 and inf when none): the candidates are those whose
    boxes lie within ``reach_deg`` degrees (None: within a margin of the nearest in degrees,
    which the nearest in metres always is)."""
    found, far = np.full(len(points), -1, dtype=np.int64), np.full(len(points), np.inf)
    if not len(points) or not len(geoms):
        return found, far
    tree = shapely.STRtree(geoms)
    if reach_deg is None:  # a degree of longitude is shorter than one of latitude: widen by 1/cos
        _, nearest_deg = tree.query_nearest(points, return_distance=True, all_matches=False)
        lat = np.radians(shapely.get_y(points))
        reach_deg = nearest_deg / np.maximum(np.cos(lat), 0.1) * 1.01 + 1e-9
    x, y = shapely.get_x(points), shapely.get_y(points)
    boxes = shapely.box(x - reach_deg, y - reach_deg, x + reach_deg, y + reach_deg)
    at, which = tree.query(boxes)
    if not len(at):
        return found, far
    used, local = np.unique(which, return_inverse=True)
    metric = np.asarray(gpd.GeoSeries(geoms[used], crs=4326).to_crs(crs).values, dtype=object)
    where = np.asarray(gpd.GeoSeries(points, crs=4326).to_crs(crs).values, dtype=object)
    distance = shapely.distance(where[at], metric[local])
    order = np.lexsort((distance, at))
    first = order[np.r_[True, at[order][1:] != at[order][:-1]]]
    found[at[first]], far[at[first]] = which[first], distance[first]
    return found, far


def place_names(points: np.ndarray, street_codes, communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame,
                roads: gpd.GeoDataFrame | None, crs: CRS) -> dict[str, list]:
    """Where each point (EPSG:4326) lies in words, for a planner reading codes: its street's
    name (by ``street_codes``), the nearest community (code and name: a blind spot lies in
    none) and the nearest named road within :data:`ROAD_NAME_M`."""
    n = len(points)
    out: dict[str, list] = {key: [None] * n for key in PLACE_KEYS}
    if not n:
        return out
    if len(streets) and "name" in streets:
        names = dict(zip(streets["code"], streets["name"], strict=False))
        out["street_name"] = [_text_or_none(names.get(code)) for code in street_codes]
    if len(communities):
        geoms = np.asarray(communities.geometry.values, dtype=object)
        found, _far = _nearest_metric(points, geoms, crs, None)
        codes = communities["code"].to_numpy(dtype=object)
        names = (communities["name"].to_numpy(dtype=object) if "name" in communities
                 else np.full(len(codes), None, dtype=object))
        out["near_community"] = [codes[i] if i >= 0 else None for i in found]
        out["near_community_name"] = [_text_or_none(names[i]) if i >= 0 else None for i in found]
    if roads is not None and len(roads) and "name" in roads:
        named = roads[roads["name"].fillna("").astype(str).str.strip() != ""]
        if len(named):
            lat = float(np.mean(shapely.get_y(points)))
            reach = ROAD_NAME_M / 111_320.0 / max(math.cos(math.radians(lat)), 0.1) * 1.2
            found, far = _nearest_metric(points, np.asarray(named.geometry.values, dtype=object), crs, reach)
            names = named["name"].to_numpy(dtype=object)
            out["road_name"] = [_text_or_none(names[i]) if i >= 0 and d <= ROAD_NAME_M else None
                                for i, d in zip(found, far, strict=True)]
    return out


def find_blind_spots(units: gpd.GeoDataFrame, communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame,
                     crs: CRS | None = None, roads: gpd.GeoDataFrame | None = None) -> BlindSpots:
    """Units with households whose representative point lies in no community's polygon (or that
    carry no community code), and the parts of each street's land covered by no community; each
    with where it lies in words (:func:`place_names`: its street's name, the nearest community's
    and the nearest named road's of ``roads``)."""
    crs = crs or metric_of(units if len(units) else streets)
    lived = units[units["households"].fillna(0).to_numpy() > 0]
    points = shapely.point_on_surface(np.asarray(lived.geometry.values, dtype=object))
    inside = np.zeros(len(lived), dtype=bool)
    if len(communities) and len(lived):
        hit, _ = shapely.STRtree(np.asarray(communities.geometry.values, dtype=object)).query(
            points, predicate="within")
        inside[hit] = True
    no_code = pd.isna(lived["community_code"]).to_numpy()
    blind = ~inside | no_code
    blind_units = lived[blind][["code", "households", "street_code", "community_code", "geometry"]]
    findings = []
    xy = np.round(shapely.get_coordinates(points[blind]), 7) if blind.any() else np.empty((0, 2))
    for (code, hh, street), (lon, lat) in zip(blind_units[["code", "households", "street_code"]]
                                              .itertuples(index=False, name=None), xy, strict=True):
        findings.append({"kind": "unit", "codes": [code], "street": street, "households": int(hh),
                         "area_m2": None, "lon": float(lon), "lat": float(lat)})
    land = _uncovered_land(communities, streets, crs)
    for street, area, (lon, lat) in zip(land["street_code"], land["area_m2"],
                                        lonlat_of(land.geometry.values), strict=True):
        findings.append({"kind": "land", "codes": [street], "street": street, "households": None,
                         "area_m2": float(area), "lon": float(lon), "lat": float(lat)})
    names = place_names(shapely.points([[f["lon"], f["lat"]] for f in findings]) if findings
                        else np.empty(0, dtype=object), [f["street"] for f in findings],
                        communities, streets, roads, crs)
    for i, finding in enumerate(findings):
        finding.update({key: names[key][i] for key in PLACE_KEYS})
    n_units = len(blind_units)
    blind_units = blind_units.assign(**{key: names[key][:n_units] for key in PLACE_KEYS})
    land = land.assign(**{key: names[key][n_units:] for key in PLACE_KEYS})
    return BlindSpots(blind_units.reset_index(drop=True), land, findings)


def _uncovered_land(communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame, crs: CRS) -> gpd.GeoDataFrame:
    empty = gpd.GeoDataFrame({"street_code": [], "area_m2": []}, geometry=[], crs=4326)
    if streets.empty:
        return empty
    street_geoms = np.asarray(streets.to_crs(crs).geometry.values, dtype=object)
    comm_geoms = np.asarray(communities.to_crs(crs).geometry.values, dtype=object) if len(communities) \
        else np.empty(0, dtype=object)
    s_idx, c_idx = (shapely.STRtree(comm_geoms).query(street_geoms, predicate="intersects")
                    if len(comm_geoms) else (np.empty(0, int), np.empty(0, int)))
    by_street = pd.Series(c_idx).groupby(s_idx).apply(np.asarray).to_dict() if len(s_idx) else {}
    pieces, owners = [], []
    for i, geom in enumerate(street_geoms):  # per street (a hundred in a city), never per household
        cover = comm_geoms[by_street.get(i, np.empty(0, int))]
        rest = geom if not len(cover) else shapely.difference(geom, shapely.union_all(cover))
        parts = shapely.get_parts(rest)
        parts = parts[shapely.area(parts) >= MIN_LAND_M2]
        pieces.extend(parts)
        owners.extend([streets["code"].iloc[i]] * len(parts))
    if not pieces:
        return empty
    frame = gpd.GeoDataFrame({"street_code": owners, "area_m2": np.round(shapely.area(pieces), 1)},
                             geometry=pieces, crs=crs)
    return frame.to_crs(4326)


# --- cell problems ------------------------------------------------------------------------------


def cell_problems(communities: gpd.GeoDataFrame, cells: gpd.GeoDataFrame, units: gpd.GeoDataFrame,
                  crs: CRS | None = None) -> dict:
    """What breaks "every household in exactly one grid cell, cells tiling their community"
    (:func:`layers.grid.cells.validate_cells`, measured in ``crs``: the report's), with a
    finding for every unit in two cells too."""
    report = validate_cells(communities, cells, units, crs)
    if cells.empty:
        return report
    lived = units[units["households"].fillna(0) > 0]
    points = shapely.point_on_surface(np.asarray(lived.geometry.values, dtype=object))
    tree = shapely.STRtree(np.asarray(cells.geometry.values, dtype=object))
    hit, _ = tree.query(points, predicate="within")
    twice = np.flatnonzero(np.bincount(hit, minlength=len(lived)) > 1)
    xy = np.round(shapely.get_coordinates(points[twice]), 7) if len(twice) else np.empty((0, 2))
    for i, (lon, lat) in zip(twice, xy, strict=True):
        report["findings"].append({"kind": "household_in_two_cells", "codes": [lived["code"].iloc[i]],
                                   "area_m2": 0.0, "lon": float(lon), "lat": float(lat)})
    # where each code lies (its community; a unit in none: its street), so that a page names a
    # cell or a unit beside its code
    where = {str(c): c for c in communities["code"]}  # a gap names its community
    for frame, columns in ((units, ("street_code", "community_code")), (cells, ("community_code",))):
        for column in columns:  # the community, where known, over the street
            if column in frame:
                where.update((str(c), p) for c, p in zip(frame["code"], frame[column], strict=True)
                             if isinstance(p, str) and p)
    for finding in report["findings"]:
        finding["places"] = [where.get(str(c)) for c in finding["codes"]]
    return report


# --- the report ---------------------------------------------------------------------------------


def gap_report(inputs: CoverageInputs, standards: list[Standard], method: str | None = None,
               run: ReachRun | None = None) -> dict:
    """The whole gap report as JSON-ready data (see the module's docstring for its parts);
    ``run``: the reach already computed from these inputs."""
    run = run or compute_reach(inputs, standards, method)
    scope = set(inputs.communities["code"]) if inputs.street else None
    blind = find_blind_spots(inputs.units, inputs.communities, inputs.streets, inputs.crs, inputs.roads)
    return {
        "scope": {"street": inputs.street},
        "crs": f"EPSG:{inputs.crs.to_epsg()}",
        "method": run.method,
        "households": int(run.households.households.sum()),
        "units": len(inputs.units),
        "standards": [asdict(row) for row in standards],
        "reach": reach_rows(run),
        "missing": missing_kinds(inputs.communities, inputs.facilities, standards),
        "facilities": facility_problems(run, scope),
        "blind_spots": blind.summary(),
        "cell_problems": cell_problems(inputs.communities, inputs.grid_cells, inputs.units, inputs.crs),
    }


def report_for(engine: Engine, street: str | None = None, method: str | None = None) -> dict:
    """:func:`gap_report` of the stored layers (one street, or everything)."""
    standards = load_standards(engine)
    return gap_report(load_inputs(engine, street, standards), standards, method)


def facility_point(lon: float, lat: float, kind: str, code: str = "proposed") -> gpd.GeoDataFrame:
    """A proposed facility as a one-row layer (EPSG:4326)."""
    return gpd.GeoDataFrame({"code": [code], "kind": [kind], "name": ["拟建设施"],
                             "floor_area_m2": [None], "community_code": [None]},
                            geometry=[shapely.Point(lon, lat)], crs=4326)


def lonlat(run: ReachRun) -> np.ndarray:
    """The household points of ``run`` in lon/lat."""
    return to_lonlat(run.households.xy, run.households.crs)


# --- gap layers (map and export) ----------------------------------------------------------------


def _f(name: str, dtype: str, short: str, label: str) -> Field:
    return Field(name, dtype, short, label)


#: The gap layers: name → (title, translated where it is shown; fields). Each can be drawn on the map
#: and exported.
GAP_LAYERS: dict[str, tuple[str, list[Field]]] = {
    "uncovered": (N_("households out of reach"), [
        _f("code", "str", "code", "单元代码"), _f("kind", "str", "kind", "设施类型"),
        _f("radius_m", "float", "radius_m", "服务半径"), _f("households", "int", "households", "户数"),
        _f("uncovered", "int", "uncovered", "未覆盖户数"),
        _f("community_code", "str", "comm_code", "社区代码"),
        _f("street_code", "str", "strt_code", "街道代码")]),
    "reach": (N_("reach of the facilities"), [
        _f("code", "str", "code", "设施代码"), _f("kind", "str", "kind", "设施类型"),
        _f("radius_m", "float", "radius_m", "服务半径"), _f("method", "str", "method", "距离算法")]),
    "blind_spots": (N_("blind spots"), [
        _f("kind", "str", "kind", "类型"), _f("code", "str", "code", "代码"),
        _f("street_code", "str", "strt_code", "街道代码"), _f("street_name", "str", "strt_name", "街道"),
        _f("near_community", "str", "near_comm", "最近社区代码"),
        _f("near_community_name", "str", "near_name", "最近社区"),
        _f("road_name", "str", "road_name", "附近道路"),
        _f("households", "int", "households", "户数"), _f("area_m2", "float", "area_m2", "面积")]),
    "cell_problems": (N_("cell problems"), [
        _f("kind", "str", "kind", "问题"), _f("codes", "str", "codes", "代码"),
        _f("area_m2", "float", "area_m2", "面积")]),
    "facility_problems": (N_("facilities under the standard"), [
        _f("code", "str", "code", "设施代码"), _f("kind", "str", "kind", "设施类型"),
        _f("name", "str", "name", "名称"), _f("floor_area_m2", "float", "floor_area", "建筑面积"),
        _f("required_floor_area_m2", "float", "need_area", "应有面积"),
        _f("households_served", "int", "served", "服务户数"), _f("problem", "str", "problem", "问题")]),
    "missing": (N_("communities missing a kind of facility"), [
        _f("code", "str", "code", "社区代码"), _f("name", "str", "name", "名称"),
        _f("kinds", "str", "kinds", "缺少的设施")]),
}


def _points(findings: list[dict]) -> np.ndarray:
    return shapely.points([[f["lon"], f["lat"]] for f in findings]) if findings else np.empty(0, dtype=object)


def gap_layer(name: str, inputs: CoverageInputs, run: ReachRun, *, kind: str | None = None,
              radius_m: float | None = None) -> gpd.GeoDataFrame:
    """One gap layer as a GeoDataFrame (EPSG:4326) with the fields of :data:`GAP_LAYERS`.
    ``uncovered`` and ``reach`` take a kind and radius (default: every row of the standards table)."""
    if name not in GAP_LAYERS:
        raise NotFound(_("no gap layer {name}; layers are: {p2}", name=repr(name), p2=', '.join(GAP_LAYERS)))
    columns = [f.name for f in GAP_LAYERS[name][1]]
    rows = reach_rows_for(run, kind, radius_m) if name in ("uncovered", "reach") else []
    if name == "uncovered":
        parts = [uncovered_units(run, inputs.units, k, r) for k, r in rows]
        frame = pd.concat(parts, ignore_index=True) if parts else None
    elif name == "reach":
        frame = pd.concat([reach_shapes(run, k, r) for k, r in rows], ignore_index=True) if rows else None
    elif name == "blind_spots":
        blind = find_blind_spots(inputs.units, inputs.communities, inputs.streets, inputs.crs, inputs.roads)
        units = blind.units.assign(kind="unit", area_m2=None)
        land = blind.land.assign(kind="land", code=blind.land["street_code"], households=None)
        frame = pd.concat([units, land], ignore_index=True)
    elif name == "cell_problems":
        found = cell_problems(inputs.communities, inputs.grid_cells, inputs.units, inputs.crs)["findings"]
        frame = gpd.GeoDataFrame({"kind": [f["kind"] for f in found],
                                  "codes": [" ".join(f["codes"]) for f in found],
                                  "area_m2": [f["area_m2"] for f in found]},
                                 geometry=_points(found), crs=4326)
    elif name == "facility_problems":
        found = facility_problems(run, set(inputs.communities["code"]) if inputs.street else None)
        frame = gpd.GeoDataFrame(pd.DataFrame(found, columns=columns), geometry=_points(found), crs=4326)
    else:
        found = {m["community"]: " ".join(m["kinds"])
                 for m in missing_kinds(inputs.communities, inputs.facilities, run.standards)}
        frame = inputs.communities[inputs.communities["code"].isin(list(found))].copy()
        frame["kinds"] = frame["code"].map(found)
    if frame is None or not len(frame):
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=4326)
    frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=4326)
    return frame[columns + ["geometry"]].reset_index(drop=True)


def reach_rows_for(run: ReachRun, kind: str | None, radius_m: float | None) -> list[tuple[str, float]]:
    """The (kind, reach in metres) pairs a gap layer shows: every standard's, one kind's, or one
    kind at ``radius_m`` (checked against the kind's largest reach)."""
    if kind is not None and kind not in run.nearest:
        raise Refused(_("unknown facility kind {kind}; kinds: {p2}",
                        kind=repr(kind), p2=', '.join(run.nearest)))
    rows = [(row.kind, float(row.reach_m)) for row in run.standards if kind in (None, row.kind)]
    if radius_m is not None:
        if kind is None:
            raise Refused(_("a radius needs a kind"))
        limit = reach_limits(run.standards)[kind]
        if not 0 < radius_m <= limit:
            raise Refused(_("radius {radius_m} m: give 0 < radius ≤ {limit} m for {kind}",
                            radius_m=format(radius_m, 'g'), limit=format(limit, 'g'), kind=kind))
        rows = [(kind, float(radius_m))]
    return list(dict.fromkeys(rows))


def reach_shapes(run: ReachRun, kind: str, radius_m: float) -> gpd.GeoDataFrame:
    """Where facilities of ``kind`` reach within ``radius_m``: a ring (circle) around each facility
    (straight-line), or the road segments within that walk of one (along the roads: the network
    isochrone, 等时圈, one multi-line for the kind)."""
    at = run.facilities.of_kind(kind)
    crs = run.households.crs
    if run.graph is None:
        rings = shapely.buffer(shapely.points(run.facilities.xy[at]), radius_m, quad_segs=8) if len(at) \
            else np.empty(0, dtype=object)
        frame = gpd.GeoDataFrame({"code": run.facilities.code[at], "kind": kind, "radius_m": float(radius_m),
                                  "method": "straight"}, geometry=rings, crs=crs)
    else:
        edges = reached_edges(run.graph, run.facilities.xy[at], radius_m)
        lines = shapely.multilinestrings(shapely.linestrings(np.stack(
            [run.graph.xy[edges[:, 0]], run.graph.xy[edges[:, 1]]], axis=1))) if len(edges) else None
        frame = gpd.GeoDataFrame({"code": [None] if lines is not None else [], "kind": kind,
                                  "radius_m": float(radius_m), "method": "roads"},
                                 geometry=[lines] if lines is not None else [], crs=crs)
    return frame.to_crs(4326)


def coverage_change(run: ReachRun, proposed: ReachRun, kind: str, radius_m: float) -> dict:
    """How proposed facilities change the reach of ``kind`` at ``radius_m``: households covered
    before and after, and the units whose households they bring within reach."""
    before = run.covered(kind, radius_m)
    after = proposed.covered(kind, radius_m)
    hh = run.households
    gained = after & ~before
    units = pd.Series(hh.households * gained).groupby(hh.unit).sum()
    return {"kind": kind, "radius_m": radius_m, "method": run.method,
            "households": int(hh.households.sum()),
            "households_covered_before": int(hh.households[before].sum()),
            "households_covered_after": int(hh.households[after].sum()),
            "households_added": int(hh.households[gained].sum()),
            "units_gained": {str(u): int(v) for u, v in units[units > 0].items()}}


#: The background job that computes a gap report (``layers.worker.RUNNERS``).
JOB_KIND = "coverage_report"


def run_report_job(engine: Engine, job: dict) -> dict:
    """The worker's runner: the gap report of ``job["params"]`` (``street``, ``method``), as plain
    JSON (a city's report is work for the worker, not for a web request)."""
    from layers.coverage.cache import job_result  # the report with its state key (cached by it)

    params = job.get("params") or {}
    report = job_result(engine, params.get("street"), params.get("method"))
    return json.loads(json.dumps(report, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
