"""A seeded demo district (or city) that looks and misbehaves like a real one.

Modelled on an inner district of Wuhan (江汉区, code 420103, about 28 km²): about 13 streets,
110 communities and 220,000 households in 4,000 planning units. Units are the blocks between
road centre-lines (a Voronoi road network, so most are irregular polygons, not rectangles) and
tile each street exactly; a river crosses the district from west to east, and the pieces of
river inside each street are units of their own (``land_use="water"``, no households), so the
tiling stays exact and a planner can see which units the river separates.

The demo carries the problems planners face: communities above 3,000 and below 1,000
households, a new development outside every community (a blind spot, 社区盲点), communities
whose housing has no service station within reach, a service station under the floor-area
standard, a gap between grid cells, and overdue incidents. Its cells never overlap: an
overlap is a defect the coverage page reports, and a fresh demo showing one sent testers
hunting for a bug in the check.

Everything is drawn from one ``numpy`` generator, so the same ``seed`` and ``reference`` date
give the same data, byte for byte. ``units=200_000`` scales it to a city (about 2 million
households, 1,000 communities, several districts) for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sqlalchemy import Engine, insert, select

from geodata import incident_rows, topology
from geodata.catalog import LAYERS
from geodata.db import BATCH
from geodata.incident_rows import case_number
from geodata.models import IncidentStep, UnitAdjacency
from geodata.revisions import raise_revision
from geodata.standards import FACILITY_KINDS, INCIDENT_CATEGORIES, seed_settings
from geodata.store import write_layer
from layers.incidents.loop import fill_step_hours
from layers.incidents.working_time import add_working_hours

CENTRE = (114.27, 30.59)  # 江汉区, Wuhan
METRIC = CRS.from_epsg(4547)  # CGCS2000 / 3-degree Gauss–Krüger CM 114E
MEAN_UNIT_M2 = 7000.0
DISTRICT_CODES = ["420103", "420102", "420104", "420105", "420106", "420107", "420111",
                  "420112", "420113", "420114", "420115", "420116", "420117"]
DISTRICT_NAMES = ["江汉区", "江岸区", "硚口区", "汉阳区", "武昌区", "青山区", "洪山区",
                  "东西湖区", "汉南区", "蔡甸区", "江夏区", "黄陂区", "新洲区"]
STREET_STEMS = ["民族", "花楼", "满春", "民权", "水塔", "民意", "新华", "万松", "唐家墩", "北湖",
                "汉兴", "常青", "前进", "大兴", "永清", "球场", "后湖", "丹水池", "车站", "一元",
                "二七", "塔子湖", "古田", "宝丰", "汉正", "荣华", "易家", "长丰", "汉中", "宗关"]
COMMUNITY_STEMS = ["友谊", "和平", "新村", "花园", "江滨", "桥口", "紫阳", "青年", "红旗", "建设",
                   "幸福", "长春", "泰宁", "南京", "黄石", "利济", "振兴", "复兴", "永丰", "同心",
                   "华安", "顺道", "三眼桥", "杨汊湖", "常码头", "航空", "西北湖", "贺家墩", "香港",
                   "新湾", "天门墩", "精武", "多福", "保成", "民生", "德润", "汉口", "里城", "竹林",
                   "梅园", "柳堤", "芦苇", "荷花", "金桥", "银杏", "宝岛", "明珠", "长江", "汉水",
                   "晴川", "鹦鹉", "水厂", "铁路", "电厂", "机场", "书院", "文昌", "武胜", "利民"]
SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓"
            "曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈姚卢")
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国红梅玉兰志文斌宇浩凯婷雪琳晨阳"

Progress = Callable[[str], None]


@dataclass
class DemoSize:
    """How big a demo is: derived from the number of planning units."""

    units: int
    households: int
    streets: int
    districts: int

    @classmethod
    def for_units(cls, units: int) -> DemoSize:
        units = max(int(units), 60)
        if units <= 4000:
            households = 55 * units
        else:  # from the district (4,000 → 220,000) to the city (200,000 → 2 million)
            households = int(220_000 * (units / 4000) ** (np.log(2e6 / 2.2e5) / np.log(50)))
        streets = max(3, round(households / 2000 / 8.5))
        districts = max(1, round(streets / 13))
        return cls(units, households, streets, districts)


@dataclass
class Demo:
    """The generated layers (GeoDataFrames in EPSG:4326) and the unit adjacency."""

    layers: dict[str, gpd.GeoDataFrame]
    adjacency: pd.DataFrame
    steps: pd.DataFrame
    facts: dict = field(default_factory=dict)


# --- geometry -----------------------------------------------------------------------------


def _outline(rng: np.random.Generator, area_m2: float) -> shapely.Polygon:
    """An irregular, roughly round district outline of the given area, centred on 0, 0."""
    theta = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 5, 7):
        r += rng.uniform(0.02, 0.08) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    poly = shapely.Polygon(np.column_stack([np.cos(theta) * r * 1.25, np.sin(theta) * r * 0.8]))
    return shapely.affinity.scale(poly, *(2 * [np.sqrt(area_m2 / poly.area)]), origin=(0, 0))


def _seeds(rng: np.random.Generator, outline: shapely.Polygon, n: int) -> np.ndarray:
    """``n`` block seeds inside ``outline``, denser towards the centre, relaxed once (Lloyd)."""
    minx, miny, maxx, maxy = outline.bounds
    pts = np.empty((0, 2))
    radius = max(maxx - minx, maxy - miny) / 2
    while len(pts) < n:
        cand = rng.uniform([minx, miny], [maxx, maxy], size=(2 * n, 2))
        # keep with probability falling off from the centre: small blocks downtown
        keep = rng.uniform(size=len(cand)) < 1.0 - 0.55 * np.hypot(*cand.T) / radius
        cand = cand[keep & shapely.contains_xy(outline, cand[:, 0], cand[:, 1])]
        pts = np.vstack([pts, cand])
    pts = pts[:n]
    cells = _voronoi(pts, outline)
    return shapely.get_coordinates(shapely.centroid(cells))


def _voronoi(pts: np.ndarray, outline: shapely.Polygon) -> np.ndarray:
    """Voronoi cells of ``pts`` in input order, clipped to ``outline``."""
    cells = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=outline, ordered=True)
    return shapely.intersection(shapely.get_parts(cells), outline)


def _river(rng: np.random.Generator, outline: shapely.Polygon, width: float) -> shapely.Polygon:
    """A sinuous river from west to east across ``outline``."""
    minx, miny, maxx, maxy = outline.bounds
    x = np.linspace(minx - 500, maxx + 500, 200)
    span = maxy - miny
    y = (rng.uniform(-0.1, 0.1) * span + 0.08 * span * np.sin(x / (maxx - minx) * 2 * np.pi * 1.3
                                                               + rng.uniform(0, 6))
         + 0.03 * span * np.sin(x / (maxx - minx) * 2 * np.pi * 4.1 + rng.uniform(0, 6)))
    return shapely.LineString(np.column_stack([x, y])).buffer(width / 2, quad_segs=4)


def _kmeans_labels(xy: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                   iterations: int = 12) -> np.ndarray:
    """Weighted Lloyd iterations from a k-means++ start; labels 0..k-1."""
    if len(xy) <= k:
        return np.arange(len(xy))
    if k <= 1:
        return np.zeros(len(xy), dtype=int)
    centres = np.empty((k, 2))
    centres[0] = xy[rng.integers(len(xy))]
    d2 = ((xy - centres[0]) ** 2).sum(1)
    for c in range(1, k):
        centres[c] = xy[rng.choice(len(xy), p=d2 / d2.sum())]
        d2 = np.minimum(d2, ((xy - centres[c]) ** 2).sum(1))
    w = weights + 1.0
    labels = cKDTree(centres).query(xy)[1]
    for _ in range(iterations):
        total = np.bincount(labels, weights=w, minlength=k)
        filled = total > 0
        for axis in (0, 1):
            moment = np.bincount(labels, weights=w * xy[:, axis], minlength=k)
            centres[filled, axis] = moment[filled] / total[filled]
        labels = cKDTree(centres).query(xy)[1]
    return labels


def _contiguous(labels: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Make every label's units connected through ``edges`` (pairs of positions).

    The heaviest component of each label keeps it; the other pieces join the label of a
    neighbour, until nothing moves. Labels come back renumbered 0..k-1.
    """
    n = len(labels)
    labels = labels.copy()
    both = np.vstack([edges, edges[:, ::-1]]) if len(edges) else np.empty((0, 2), dtype=int)
    for _ in range(200):
        same = labels[edges[:, 0]] == labels[edges[:, 1]]
        e = edges[same]
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        comp_weight = np.bincount(comp, weights=weights + 1e-3)
        # the heaviest component of each label is its main one
        order = np.lexsort((-comp_weight[comp], labels))
        first = np.ones(n, dtype=bool)
        first[1:] = labels[order][1:] != labels[order][:-1]
        main = np.full(labels.max() + 1, -1)
        main[labels[order][first]] = comp[order][first]
        stray = comp != main[labels]
        if not stray.any():
            break
        u, v = both[:, 0], both[:, 1]
        ok = stray[u] & ~stray[v] & (labels[u] != labels[v])
        if not ok.any():
            break
        uu, pick = np.unique(u[ok], return_index=True)
        labels[uu] = labels[v[ok][pick]]
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def _row_order(xy: np.ndarray, band: float) -> np.ndarray:
    """Rank points north → south in bands of ``band`` metres, then west → east."""
    return np.lexsort((xy[:, 0], -np.floor(xy[:, 1] / band)))


# --- the generator ------------------------------------------------------------------------


def generate(units: int = 4000, seed: int = 1, reference: date | None = None,
             progress: Progress | None = None) -> Demo:
    """Generate the demo in memory. ``reference`` is the last day of the incident year."""
    say = progress or (lambda _msg: None)
    reference = reference or date(2026, 11, 1)
    rng = np.random.default_rng(seed)
    size = DemoSize.for_units(units)

    say("road network and blocks")
    outline = _outline(rng, size.units * MEAN_UNIT_M2)
    seeds = _seeds(rng, outline, size.units)
    cells = _voronoi(seeds, outline)
    river = _river(rng, outline, width=110.0 if size.units <= 4000 else 250.0)

    # streets: compact groups of blocks, so street boundaries follow roads
    street_of_cell = _kmeans_labels(seeds, np.zeros(len(seeds)), size.streets, rng, iterations=20)
    cell_pairs = topology.rook_pairs(gpd.GeoDataFrame(geometry=cells, crs=METRIC))
    cell_edges = np.column_stack([cell_pairs["i"], cell_pairs["j"]])
    street_of_cell = _contiguous(street_of_cell, cell_edges, np.ones(len(cells)))
    n_streets = street_of_cell.max() + 1

    say("river")
    land = shapely.difference(cells, river)
    water = shapely.intersection(cells, river)
    parts, owner = shapely.get_parts(land, return_index=True)
    part_area = shapely.area(parts)
    sliver = part_area < 1500.0
    unit_geoms = list(parts[~sliver])
    unit_street = list(street_of_cell[owner[~sliver]])
    unit_land = ["land"] * len(unit_geoms)
    # river pieces (plus the slivers the river cut off) become one water unit per street part
    for s in range(n_streets):
        pieces = np.concatenate([water[street_of_cell == s], parts[sliver & (street_of_cell[owner] == s)]])
        pieces = pieces[~shapely.is_empty(pieces)]
        if len(pieces) == 0:
            continue
        for piece in shapely.get_parts(shapely.union_all(pieces)):
            if piece.geom_type == "Polygon" and piece.area > 1.0:
                unit_geoms.append(piece)
                unit_street.append(s)
                unit_land.append("water")
    geoms = shapely.set_precision(np.array(unit_geoms, dtype=object), 0.01)
    geoms = shapely.make_valid(geoms)
    street = np.array(unit_street)
    is_water = np.array(unit_land) == "water"
    n = len(geoms)

    say("households")
    area = shapely.area(geoms)
    centre_xy = shapely.get_coordinates(shapely.point_on_surface(geoms))
    radius = np.hypot(*centre_xy.T) / np.sqrt(outline.area / np.pi)
    land_use = np.where(is_water, "water", rng.choice(
        ["residential", "mixed", "public", "commercial", "park"], size=n,
        p=[0.72, 0.12, 0.08, 0.05, 0.03]))
    density = (1.6 - 0.9 * np.clip(radius, 0, 1.2)) * rng.lognormal(0, 0.55, n)
    density *= np.where(land_use == "residential", 1.0, np.where(land_use == "mixed", 0.5, 0.0))
    raw = area * density
    households = np.floor(raw / raw.sum() * size.households).astype(int)
    population = np.round(households * rng.normal(2.62, 0.25, n).clip(1.6, 3.8)).astype(int)
    built_year = np.where(households > 0, np.round(1955 + 60 * np.clip(radius, 0, 1)
                                                   + rng.normal(0, 8, n)).clip(1950, reference.year - 2),
                          0).astype(int)

    pairs = topology.rook_pairs(gpd.GeoDataFrame(geometry=geoms, crs=METRIC))
    edges = np.column_stack([pairs["i"], pairs["j"]])
    same_street = street[edges[:, 0]] == street[edges[:, 1]]

    # the blind spot: a new development at the eastern edge, in no community
    say("blind spot")
    east = np.argsort(-centre_xy[:, 0])
    start = next(i for i in east if not is_water[i])
    blind = {start}
    frontier = [start]
    both = np.vstack([edges, edges[:, ::-1]])
    nbrs = coo_matrix((np.ones(len(both)), (both[:, 0], both[:, 1])), shape=(n, n)).tocsr()
    while frontier and len(blind) < max(6, size.units // 600):
        u = frontier.pop(0)
        for v in nbrs.indices[nbrs.indptr[u]:nbrs.indptr[u + 1]]:
            if len(blind) < max(6, size.units // 600) and not is_water[v] and street[v] == street[start]:
                if v not in blind:
                    blind.add(v)
                    frontier.append(v)
    blind = np.array(sorted(blind))
    land_use[blind] = "residential"
    households[blind] = rng.integers(120, 260, len(blind))
    population[blind] = np.round(households[blind] * 2.7).astype(int)
    built_year[blind] = reference.year - 1

    say("communities")
    street_codes, district_of_street, district_codes = _street_codes(seeds, street_of_cell,
                                                                     n_streets, size, rng)
    community = np.full(n, -1)
    next_label = 0
    in_blind = np.zeros(n, bool)
    in_blind[blind] = True
    for s in range(n_streets):
        members = np.flatnonzero((street == s) & ~in_blind)
        hh = households[members].sum()
        per = 3600 if s == 0 else (700 if s == 1 else 2000)  # street 0 too big, street 1 too small
        k = max(1, int(round(hh / per)))
        labels = _kmeans_labels(centre_xy[members], households[members].astype(float), k, rng)
        local = {u: i for i, u in enumerate(members)}
        sub = edges[same_street & np.isin(edges[:, 0], members) & np.isin(edges[:, 1], members)]
        sub = np.vectorize(local.get)(sub) if len(sub) else sub.reshape(0, 2)
        labels = _contiguous(labels, sub, households[members].astype(float))
        community[members] = labels + next_label
        next_label += labels.max() + 1

    unit_codes = np.empty(n, dtype=object)
    community_codes = np.empty(n, dtype=object)
    comm_frame = _community_table(community, street, street_codes, centre_xy, households, rng)
    code_of_label = dict(zip(comm_frame["label"], comm_frame["code"], strict=True))
    for i in range(n):
        community_codes[i] = code_of_label.get(community[i])
    order = _row_order(centre_xy, 150.0)
    counters: dict[int, int] = {}
    for i in order:
        counters[street[i]] = counters.get(street[i], 0) + 1
        unit_codes[i] = f"{street_codes[street[i]]}{counters[street[i]]:05d}"

    units = gpd.GeoDataFrame({
        "code": unit_codes, "households": households, "population": population,
        "street_code": [street_codes[s] for s in street], "community_code": community_codes,
        "district_code": [district_codes[district_of_street[s]] for s in street],
        "built_year": np.where(built_year > 0, built_year, None), "land_use": land_use,
    }, geometry=geoms, crs=METRIC)

    say("streets, communities, district")
    streets = units.dissolve("street_code", as_index=False)[["street_code", "geometry"]]
    streets = streets.rename(columns={"street_code": "code"})
    streets["district_code"] = streets["code"].str[:6]
    stem_order = rng.permutation(len(STREET_STEMS))
    streets["name"] = [STREET_STEMS[stem_order[i % len(STREET_STEMS)]]
                       + ("" if i < len(STREET_STEMS) else str(i // len(STREET_STEMS) + 1)) + "街道"
                       for i in range(len(streets))]
    comm_units = units[units["community_code"].notna()]
    communities = comm_units.dissolve("community_code", as_index=False)[["community_code", "geometry"]]
    communities = communities.rename(columns={"community_code": "code"}).merge(
        comm_frame[["code", "name"]], on="code")
    communities["street_code"] = communities["code"].str[:9]
    communities["district_code"] = communities["code"].str[:6]
    communities["valid_from"] = date(2019, 1, 1)
    districts = streets.dissolve("district_code", as_index=False)[["district_code", "geometry"]]
    districts = districts.rename(columns={"district_code": "code"})
    districts["name"] = [DISTRICT_NAMES[DISTRICT_CODES.index(c)] for c in districts["code"]]

    say("facilities")
    facilities = _facilities(units, communities, streets, rng)
    say("grid cells")
    grid_cells, cell_of_unit = _grid_cells(units, edges, rng)
    say("roads")
    roads = _roads(cells, river, street_of_cell, street_codes, rng)
    say("incidents")
    incidents, steps = _incidents(units, grid_cells, cell_of_unit, reference, rng)

    adjacency = pd.DataFrame({
        "unit_a": np.minimum(unit_codes[edges[:, 0]], unit_codes[edges[:, 1]]),
        "unit_b": np.maximum(unit_codes[edges[:, 0]], unit_codes[edges[:, 1]]),
        "shared_m": pairs["shared_m"],
    })
    adjacency["district_code"] = adjacency["unit_a"].str[:6]

    layers = {"districts": districts, "streets": streets, "communities": communities,
              "units": units, "facilities": facilities, "grid_cells": grid_cells, "roads": roads,
              "incidents": incidents}
    # the generator works around (0, 0); move it onto the district's place in EPSG:4547
    x0, y0 = Transformer.from_crs(4326, METRIC, always_xy=True).transform(*CENTRE)
    layers = {k: v.set_geometry(gpd.GeoSeries(shapely.transform(v.geometry.values, lambda c: c + (x0, y0)),
                                              index=v.index, crs=METRIC)).to_crs(4326)
              for k, v in layers.items()}
    facts = {"blind_spot_units": list(unit_codes[blind]), "river_units": int(is_water.sum()),
             "size": size.__dict__}
    return Demo(layers, adjacency, steps, facts)


def _street_codes(seeds, street_of_cell, n_streets, size: DemoSize, rng):
    """9-digit street codes (街道 001–099), numbered west → east, north → south per district."""
    centroid = np.array([seeds[street_of_cell == s].mean(axis=0) for s in range(n_streets)])
    district = _kmeans_labels(centroid, np.zeros(n_streets), size.districts, rng)
    district = np.unique(district, return_inverse=True)[1]
    codes = [None] * n_streets
    district_codes = DISTRICT_CODES[: district.max() + 1]
    for d in range(district.max() + 1):
        members = np.flatnonzero(district == d)
        for rank, s in enumerate(members[_row_order(centroid[members], 1500.0)]):
            codes[s] = f"{district_codes[d]}{rank + 1:03d}"
    return codes, district, district_codes


def _community_table(community, street, street_codes, xy, households, rng) -> pd.DataFrame:
    """Codes (居委会 001–199 under each street) and names for the community labels."""
    frame = pd.DataFrame({"label": community, "street": street, "x": xy[:, 0], "y": xy[:, 1],
                          "hh": households})
    frame = frame[frame["label"] >= 0]
    centre = frame.groupby("label").agg(street=("street", "first"), x=("x", "mean"), y=("y", "mean"))
    rows = []
    stems = list(rng.permutation(COMMUNITY_STEMS))
    variants = ["", "东", "西", "南", "北", "新", "中"] + [f"{n}" for n in "二三四五六七八九十"]
    i = 0
    for s, group in centre.groupby("street"):
        order = _row_order(group[["x", "y"]].to_numpy(), 500.0)
        for rank, label in enumerate(group.index.to_numpy()[order]):
            variant, stem = divmod(i, len(stems))
            prefix = variants[variant % len(variants)] + ("" if variant < len(variants) else str(variant))
            name = (stems[stem] + prefix if variant >= 7 else prefix + stems[stem]) + "社区"
            i += 1
            rows.append({"label": label, "code": f"{street_codes[s]}{rank + 1:03d}", "name": name})
    return pd.DataFrame(rows)


def _facilities(units: gpd.GeoDataFrame, communities, streets, rng) -> gpd.GeoDataFrame:
    """A realistic mix: a service centre, health centre and police post per street; service
    stations, health stations, kindergartens and elderly care in most communities."""
    rows = []
    point = shapely.point_on_surface(units.geometry.values)
    xy = shapely.get_coordinates(point)
    housed = units[units["households"] > 0]

    def central_unit(mask) -> int:
        idx = np.flatnonzero(mask)
        c = xy[idx].mean(axis=0)
        return idx[np.argmin(((xy[idx] - c) ** 2).sum(1))]

    def add(kind, name, at, community, area):
        rows.append({"kind": kind, "name": name, "floor_area_m2": round(float(area), 1),
                     "community_code": community, "geometry": point[at]})

    for code in streets["code"]:
        in_street = (units["street_code"] == code).to_numpy() & (units["land_use"] != "water").to_numpy()
        name = streets.loc[streets["code"] == code, "name"].iloc[0]
        for kind, label, area in (("service_centre", "社区服务中心", rng.uniform(1200, 3000)),
                                  ("health_centre", "社区卫生服务中心", rng.uniform(1500, 4000)),
                                  ("police_post", "派出所警务室", rng.uniform(80, 200))):
            at = (central_unit(in_street) if kind == "service_centre"
                  else rng.choice(np.flatnonzero(in_street)))
            add(kind, name.replace("街道", "") + label, at, units["community_code"].iloc[at], area)
    comm_codes = communities["code"].to_numpy()
    missing_station = set(rng.choice(comm_codes, size=max(2, len(comm_codes) // 30), replace=False))
    small_station = rng.choice([c for c in comm_codes if c not in missing_station])
    for code, cname in zip(comm_codes, communities["name"], strict=True):
        in_comm = (units["community_code"] == code).to_numpy() & (units["households"] > 0).to_numpy()
        if not in_comm.any():
            continue
        choices = np.flatnonzero(in_comm)
        if code not in missing_station:
            area = 180.0 if code == small_station else rng.lognormal(np.log(650), 0.45)
            add("service_station", cname + "党群服务站", central_unit(in_comm), code, max(area, 120.0))
        if rng.uniform() < 0.55:
            add("health_station", cname + "卫生服务站", rng.choice(choices), code, rng.uniform(150, 600))
        if rng.uniform() < 0.65:
            add("kindergarten", cname + "幼儿园", rng.choice(choices), code, rng.uniform(900, 3000))
        if rng.uniform() < 0.5:
            add("elderly_care", cname + "养老服务站", rng.choice(choices), code, rng.uniform(200, 800))
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=units.crs)
    frame.insert(0, "code", [f"F{i + 1:06d}" for i in range(len(frame))])
    frame["district_code"] = [c[:6] if c else housed["district_code"].iloc[0] for c in
                              frame["community_code"].fillna("")]
    assert set(frame["kind"]) <= set(FACILITY_KINDS)
    return frame


def _grid_cells(units: gpd.GeoDataFrame, edges: np.ndarray, rng) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Grid cells of about 400 households inside each community, numbered north→south,
    west→east; one cell shrunk (a gap). No cell overlaps another."""
    xy = shapely.get_coordinates(shapely.point_on_surface(units.geometry.values))
    hh = units["households"].to_numpy().astype(float)
    comm = units["community_code"].to_numpy()
    cell_of_unit = np.full(len(units), None, dtype=object)
    rows = []
    for code in sorted({c for c in comm if isinstance(c, str)}):
        members = np.flatnonzero(comm == code)
        k = max(1, int(round(hh[members].sum() / 400)))
        labels = _kmeans_labels(xy[members], hh[members], k, rng, iterations=8)
        local = {u: i for i, u in enumerate(members)}
        inside = np.isin(edges[:, 0], members) & np.isin(edges[:, 1], members)
        sub = np.vectorize(local.get)(edges[inside]) if inside.any() else np.empty((0, 2), int)
        labels = _contiguous(labels, sub, hh[members])
        centres = np.array([xy[members][labels == c].mean(axis=0) for c in range(labels.max() + 1)])
        rank = np.empty(len(centres), dtype=int)
        rank[_row_order(centres, 200.0)] = np.arange(len(centres))
        for c in range(labels.max() + 1):
            cell_code = f"{code}{rank[c] + 1:03d}"
            cell_of_unit[members[labels == c]] = cell_code
            rows.append({"code": cell_code, "community_code": code})
    cells = units.assign(grid=cell_of_unit)[lambda f: f["grid"].notna()].dissolve("grid")
    frame = pd.DataFrame(rows).set_index("code")
    frame = gpd.GeoDataFrame(frame, geometry=cells.geometry.reindex(frame.index), crs=units.crs)
    frame = frame.reset_index()
    frame["district_code"] = frame["code"].str[:6]
    frame["supervisor"] = [SURNAMES[i] + GIVEN[j] + GIVEN[m] for i, j, m in zip(
        rng.integers(len(SURNAMES), size=len(frame)), rng.integers(len(GIVEN), size=len(frame)),
        rng.integers(len(GIVEN), size=len(frame)), strict=True)]
    multi = frame.index[frame.geometry.area > 40_000].to_numpy()
    # two draws as before (the rest of the demo stays the same for a seed); only the gap is made
    gap_at, _overlap_at = rng.choice(multi, size=2, replace=False)
    frame.loc[gap_at, "geometry"] = frame.geometry[gap_at].buffer(-15.0)
    frame = frame.sort_values("code").reset_index(drop=True)
    return frame[["code", "community_code", "district_code", "supervisor", "geometry"]], cell_of_unit


def _roads(cells, river, street_of_cell, street_codes, rng) -> gpd.GeoDataFrame:
    """Road centre-lines: the block edges (arterials where they part two streets) and bridges."""
    i, j, shared = topology.shared_edges(cells, min_length=1.0)
    arterial = street_of_cell[i] != street_of_cell[j]
    on_land = shapely.difference(shared, river)
    crossing = shapely.intersects(shared, river)
    bridge_pick = crossing & (rng.uniform(size=len(shared)) < 0.25)
    bridges = shapely.intersection(shared[bridge_pick], river.buffer(30.0))
    frame = gpd.GeoDataFrame({
        "road_class": np.concatenate([np.where(arterial, "arterial", "branch"),
                                      np.full(len(bridges), "bridge")]),
        "street": np.concatenate([street_of_cell[i], street_of_cell[i[bridge_pick]]]),
    }, geometry=np.concatenate([on_land, bridges]), crs=METRIC)
    frame = frame[~frame.geometry.is_empty & (frame.geometry.length > 1.0)]
    # one feature per chain of edges of a class within a street
    merged = []
    for (cls, s), group in frame.groupby(["road_class", "street"]):
        lines = shapely.line_merge(shapely.union_all(group.geometry.values))
        for k, part in enumerate(shapely.get_parts(lines)):
            merged.append({"road_class": cls, "street": s, "geometry": part, "k": k})
    roads = gpd.GeoDataFrame(merged, geometry="geometry", crs=METRIC)
    prefix = {"arterial": "路", "branch": "街", "bridge": "桥"}
    stems = COMMUNITY_STEMS + STREET_STEMS
    roads["name"] = [stems[(int(s) * 7 + int(k)) % len(stems)] + prefix[c]
                     for c, s, k in zip(roads["road_class"], roads["street"], roads["k"], strict=True)]
    roads["district_code"] = [street_codes[int(s)][:6] for s in roads["street"]]
    roads.insert(0, "code", [f"R{i + 1:07d}" for i in range(len(roads))])
    return roads[["code", "name", "road_class", "district_code", "geometry"]]


def _incidents(units, grid_cells, cell_of_unit, reference: date, rng):
    """A year of incidents up to ``reference`` with realistic step times; some overdue."""
    housed = np.flatnonzero((units["households"].to_numpy() > 0) & pd.notna(cell_of_unit))
    n = int(len(grid_cells) * 12)
    weights = units["households"].to_numpy()[housed].astype(float) + 20
    at_unit = housed[rng.choice(len(housed), size=n, p=weights / weights.sum())]
    geoms = units.geometry.values[at_unit]
    base = shapely.get_coordinates(shapely.point_on_surface(geoms))
    jitter = base + rng.normal(0, 25, size=base.shape)
    inside = shapely.contains_xy(geoms, jitter[:, 0], jitter[:, 1])
    xy = np.where(inside[:, None], jitter, base)

    cats = np.array(list(INCIDENT_CATEGORIES))
    cat_w = np.array([3, 2, 1, 2, 1, 6, 3, 4, 1.5, 0.7, 4, 0.8])
    cat = cats[rng.choice(len(cats), size=n, p=cat_w / cat_w.sum())]
    limit = np.array([INCIDENT_CATEGORIES[c][2] for c in cat])

    end = np.datetime64(datetime.combine(reference, time(18, 0)), "s")
    start = end - np.timedelta64(365, "D")
    day = rng.integers(0, 365, n).astype("timedelta64[D]")
    minute = (rng.normal(13.5, 3.0, n).clip(7, 21) * 60).astype(int).astype("timedelta64[m]")
    reported = (start.astype("datetime64[D]") + day).astype("datetime64[s]") + minute
    mins = lambda mean: (rng.exponential(mean, n) * 60).astype(int).astype("timedelta64[s]")
    filed = reported + mins(25)
    cancelled = rng.uniform(size=n) < 0.03
    dispatched = filed + mins(35)
    due = add_working_hours(dispatched, limit)
    effort = limit * rng.lognormal(np.log(0.45), 0.7, n)
    handled = add_working_hours(dispatched, effort)
    feedback = handled + mins(50)
    rework = rng.uniform(size=n) < 0.05
    closed = feedback + mins(180) + np.where(rework, add_working_hours(feedback, limit * 0.5) - feedback,
                                             np.timedelta64(0, "s"))

    steps = {"reported": reported, "filed": filed, "dispatched": dispatched, "handled": handled,
             "feedback": feedback, "closed": closed}
    frame = pd.DataFrame({k: pd.to_datetime(v) for k, v in steps.items()})
    cutoff = pd.Timestamp(end)
    for k in list(steps)[1:]:
        frame.loc[frame[k] > cutoff, k] = pd.NaT
    for later in ("handled", "feedback", "closed"):  # a step cannot follow a missing one
        prev = list(steps)[list(steps).index(later) - 1]
        frame.loc[frame[prev].isna(), later] = pd.NaT
    frame.loc[cancelled, ["dispatched", "handled", "feedback", "closed"]] = pd.NaT
    frame["due"] = pd.to_datetime(due)
    frame.loc[frame["dispatched"].isna(), "due"] = pd.NaT
    # a handful of stalled cases: dispatched weeks ago, still open, long overdue
    recent = np.flatnonzero((frame["reported"] > cutoff - pd.Timedelta(days=40)).to_numpy()
                            & (frame["dispatched"].notna().to_numpy()) & ~cancelled)
    stalled = rng.choice(recent, size=min(len(recent), max(8, n // 500)), replace=False)
    frame.loc[stalled, ["handled", "feedback", "closed"]] = pd.NaT

    status = np.select(
        [cancelled & frame["filed"].notna(), frame["closed"].notna(), frame["feedback"].notna(),
         frame["handled"].notna(), frame["dispatched"].notna(), frame["filed"].notna()],
        ["cancelled", "closed", "feedback", "handled", "dispatched", "filed"], "reported")
    point = gpd.GeoSeries(shapely.points(xy), crs=units.crs)
    cells = grid_cells[["code", "geometry"]].rename(columns={"code": "grid_code"})
    joined = gpd.sjoin(gpd.GeoDataFrame(geometry=point), cells, how="left", predicate="within")
    grid_code = joined[~joined.index.duplicated()]["grid_code"].to_numpy()
    grid_code = np.where(pd.isna(grid_code), cell_of_unit[at_unit], grid_code)

    names = {c: INCIDENT_CATEGORIES[c][1].split(" (")[0] for c in cats}
    order = np.argsort(frame["reported"].to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    cat, grid_code, point = cat[order], grid_code[order], point.iloc[order].reset_index(drop=True)
    stamp = frame["reported"].dt.strftime("%Y%m%d").to_numpy()
    # the app's numbers (YYYYMMDD-NNNN): the day reported and the case's place in the year
    codes = [case_number(s, i + 1) for i, s in enumerate(stamp)]
    incidents = gpd.GeoDataFrame({
        "code": codes, "category": cat,
        # as a 监督员 writes one: what, and where within the community (the cell's number)
        "description": [f"{names[c]}，第 {int(str(g)[-3:])} 网格内"
                        for g, c in zip(grid_code, cat, strict=True)],
        "status": status[order],
        "reported_at": frame["reported"], "filed_at": frame["filed"],
        "dispatched_at": frame["dispatched"], "handled_at": frame["handled"],
        "feedback_at": frame["feedback"], "closed_at": frame["closed"], "due_at": frame["due"],
        "grid_code": grid_code, "district_code": [g[:6] for g in grid_code],
        # the community of the cell holding the case: cells nest in communities (a case filed
        # with no community is counted by its cell's code, but a reader asks for its community)
        "community_code": [g[:12] for g in grid_code],
    }, geometry=point.values, crs=units.crs)
    history = frame.melt(ignore_index=False, value_vars=list(steps), var_name="step", value_name="at")
    history = history.dropna(subset=["at"])
    history["code"] = np.asarray(codes, dtype=object)[history.index.to_numpy()]
    cancel = np.flatnonzero(status[order] == "cancelled")
    extra = pd.DataFrame({"step": "cancelled", "at": frame["filed"].iloc[cancel].to_numpy(),
                          "code": np.asarray(codes, dtype=object)[cancel]})
    history = pd.concat([history, extra], ignore_index=True).sort_values(["code", "at"])
    history["actor"] = np.where(history["step"] == "reported", "网格员", "指挥中心")
    return incidents, history.reset_index(drop=True)


# --- writing ------------------------------------------------------------------------------

WRITE_ORDER = ["districts", "streets", "communities", "units", "facilities", "grid_cells",
               "roads", "incidents"]


def write_demo(engine: Engine, demo: Demo, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Replace every layer with the demo's, in one transaction (the cases' step hours and the
    rates' sums counted in it, once, after the rows are written)."""
    with engine.begin() as conn:
        seed_settings(conn)
        raise_revision(conn, "demo", actor="demo")  # every unit and community is new
        paused = incident_rows.pause_sums(conn)  # a year of cases: counted once below
        for name in WRITE_ORDER:
            gdf = demo.layers[name]
            counter = {"done": 0}

            def tick(k: int, name: str = name, total: int = len(gdf), counter: dict = counter) -> None:
                counter["done"] += k
                if progress:
                    progress(name, counter["done"], total)

            write_layer(conn, name, gdf, mode="replace", progress=tick)
        adj = UnitAdjacency.__table__
        conn.execute(adj.delete())
        records = demo.adjacency.to_dict("records")
        for start in range(0, len(records), BATCH):
            conn.execute(insert(adj), records[start:start + BATCH])
        inc = LAYERS["incidents"].table
        ids = dict(conn.execute(select(inc.c.code, inc.c.id)).all())
        districts = dict(conn.execute(select(inc.c.code, inc.c.district_code)).all())
        # a step carries its case's district (stored with it)
        steps = demo.steps.assign(incident_id=demo.steps["code"].map(ids),
                                  district_code=demo.steps["code"].map(districts))
        steps["at"] = steps["at"].dt.to_pydatetime()
        records = steps[["incident_id", "district_code", "step", "at", "actor"]].to_dict("records")
        conn.execute(IncidentStep.__table__.delete())
        for start in range(0, len(records), BATCH):
            conn.execute(insert(IncidentStep.__table__), records[start:start + BATCH])
        fill_step_hours(engine, conn=conn)  # the working hours each step took, for the rates
        if paused:
            incident_rows.recount_sums(conn)  # every layer replaced: every district's sums


#: the demo's 处置部门: code, name, categories (each the default for those it lists first),
#: contact; the street office also takes rubbish and street vending when sent there
DEMO_DEPARTMENTS = (
    ("SZ", "区市政工程管理处", ["C01-01", "C01-02", "C02-01", "E05-01"], "027-8888 0101"),
    ("HW", "区环境卫生管理站", ["E01-01", "E01-02", "C03-01"], "027-8888 0102"),
    ("YL", "区园林绿化局", ["C04-01"], "027-8888 0103"),
    ("CG", "区城管执法大队", ["E02-01", "E03-01", "E03-02", "E04-01"], "027-8888 0104"),
)
#: departments that handle a category without being its default
DEMO_SECOND_CHOICE = (("JD", "街道办事处", ["E01-01", "E04-01"], "027-8888 0105"),)


def seed_departments(engine: Engine) -> list[dict]:
    """The demo's departments (once: a city's own are never overwritten), and the demo's
    dispatched cases given their category's department. Returns the departments."""
    from geodata import departments as depts
    from geodata import incident_rows
    from layers.incidents.loop import categories

    if depts.list_departments(engine):
        return depts.list_departments(engine)
    catalogue = categories(engine)
    defaults: dict[str, str] = {}
    for (code, name, cats, contact), default in [*((d, True) for d in DEMO_DEPARTMENTS),
                                                 *((d, False) for d in DEMO_SECOND_CHOICE)]:
        cats = [c for c in cats if c in catalogue]
        if not cats:
            continue
        depts.save_department(engine, {"code": code, "name": name, "categories": cats, "contact": contact,
                                       "default_for": cats if default else []}, catalogue, actor="demo")
        if default:
            defaults.update(dict.fromkeys(cats, code))
    with engine.begin() as conn:
        incident_rows.give_departments(conn, defaults)
    _photo_after_handling(engine, catalogue)
    return depts.list_departments(engine)


#: the demo's categories whose handling needs a photo of the result, beside the city's default ones:
#: a damaged bin (环卫 HW) replaced is shown, so the demo's handler meets the rule
DEMO_AFTER_PHOTO = ("C03-01",)


def _photo_after_handling(engine: Engine, catalogue: dict) -> None:
    """Add the demo's after-photo categories to the setting ``incident_after_photo`` (once, with
    the demo's departments; the categories it holds already stay)."""
    from geodata.settings import get_value, save_setting

    wanted = get_value(engine, "incident_after_photo") or []
    added = [c for c in DEMO_AFTER_PHOTO if c in catalogue and c not in wanted]
    if added:
        save_setting(engine, "incident_after_photo", [*wanted, *added], actor="demo")
