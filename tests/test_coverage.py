"""Coverage gaps, without a database: reach (straight-line and along the roads) against
hand-checked cases, blind spots and cell problems on constructed data and on the real Providence
blocks, facility standards, and siting against the exact optimum."""

from __future__ import annotations

import heapq
import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import CRS, Transformer
from scipy.spatial import cKDTree

from geodata.errors import Refused
from geodata.standards import FACILITY_STANDARDS
from layers.coverage import gaps as coverage
from layers.coverage import siting
from layers.coverage.reach import RoadGraph, nearest_on_roads, nearest_straight

METRIC = CRS.from_epsg(4547)  # CGCS2000 Gauss–Krüger, 114°E: where the demo district lies
TO_LONLAT = Transformer.from_crs(METRIC, 4326, always_xy=True)
X0, Y0 = 500_000.0, 3_385_000.0  # about 114°E, 30.6°N


def lonlat(xy) -> np.ndarray:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return np.column_stack(TO_LONLAT.transform(xy[:, 0] + X0, xy[:, 1] + Y0))


def square(cx: float, cy: float, side: float) -> shapely.Polygon:
    """A square in metres around (cx, cy), in lon/lat."""
    h = side / 2
    return shapely.Polygon(lonlat([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]))


def point(x: float, y: float) -> shapely.Point:
    return shapely.Point(lonlat([(x, y)])[0])


def standards(**reach) -> list[coverage.Standard]:
    rows = [dict(r) for r in FACILITY_STANDARDS]
    for row in rows:
        if row["kind"] in reach:
            row["reach_m"] = reach[row["kind"]]
    return coverage.standards_from_rows(rows)


def units_at(points: list[tuple[float, float]], households: list[int], street="420103001",
             community="420103001001", side: float = 2.0) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({
        "code": [f"{street}{i + 1:05d}" for i in range(len(points))], "households": households,
        "street_code": street, "community_code": community, "district_code": street[:6],
        "land_use": "residential",
    }, geometry=[square(x, y, side) for x, y in points], crs=4326)


def facilities_at(points, kind="kindergarten", areas=None) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({
        "code": [f"F{i + 1:04d}" for i in range(len(points))], "kind": kind,
        "name": [f"设施{i}" for i in range(len(points))],
        "floor_area_m2": areas if areas is not None else [1000.0] * len(points),
        "community_code": "420103001001",
    }, geometry=[point(x, y) for x, y in points], crs=4326)


def empty(columns=("code",)) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=4326)


def inputs(units, facilities, roads=None, communities=None, streets=None,
           cells=None) -> coverage.CoverageInputs:
    return coverage.CoverageInputs(
        units=units, facilities=facilities,
        communities=communities if communities is not None else empty(("code", "name", "street_code")),
        streets=streets if streets is not None else empty(), grid_cells=cells if cells is not None else empty(
            ("code", "community_code")),
        roads=roads if roads is not None else empty(("code", "road_class")))


# --- straight-line reach ------------------------------------------------------------------------


def test_nearest_straight_includes_the_radius_exactly():
    targets = np.array([[0.0, 0.0], [1000.0, 0.0]])
    points = np.array([[180.0, 240.0],        # exactly 300 m (3-4-5)
                       [180.0, 240.001],      # just beyond
                       [1000.0, 299.0],       # 299 m from the second
                       [500.0, 0.0]])         # 500 m from both
    distance, index = nearest_straight(points, targets, 300.0)
    assert distance[0] == 300.0 and index[0] == 0
    assert np.isinf(distance[1]) and index[1] == -1
    assert distance[2] == pytest.approx(299.0) and index[2] == 1
    assert np.isinf(distance[3])


def test_straight_counts_match_shapely_dwithin():
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 5000, (4000, 2))
    targets = rng.uniform(0, 5000, (40, 2))
    distance, _ = nearest_straight(points, targets, 1000.0)
    tree = shapely.STRtree(shapely.points(targets))
    for radius in (300.0, 500.0, 1000.0):
        hit, _ = tree.query(shapely.points(points), predicate="dwithin", distance=radius)
        assert (distance <= radius).sum() == len(np.unique(hit))


def test_reach_report_by_hand():
    """Four units around one kindergarten at 100, 250, 350 and 600 m; households 10, 20, 40, 80."""
    units = units_at([(100, 0), (0, 250), (-350, 0), (0, -600)], [10, 20, 40, 80])
    units.loc[3, "community_code"] = "420103001002"
    facility = facilities_at([(0, 0)])
    run = coverage.compute_reach(inputs(units, facility), standards(kindergarten=300))
    assert run.method == "straight"
    rows = {r["kind"]: r for r in coverage.reach_rows(run)}
    kg = rows["kindergarten"]
    assert kg["households"] == 150 and kg["households_covered"] == 30 and kg["radius_m"] == 300
    assert kg["by_community"] == {"420103001001": [70, 30], "420103001002": [80, 0]}
    assert kg["by_street"] == {"420103001": [150, 30]}
    assert rows["elderly_care"]["households_covered"] == 0  # no such facility at all
    # the same at 500 m (a second row of the kind): the 350 m unit joins
    run = coverage.compute_reach(inputs(units, facility), coverage.standards_from_rows(
        [{"kind": "kindergarten", "level": "5-minute", "reach_m": 300},
         {"kind": "kindergarten", "level": "10-minute", "reach_m": 500}]))
    assert [r["households_covered"] for r in coverage.reach_rows(run)] == [30, 70]


def test_buildings_carry_households_where_loaded():
    units = units_at([(0, 0), (2000, 0)], [100, 50], side=1000.0)
    buildings = gpd.GeoDataFrame({"code": ["B1", "B2"], "households": [30, 70],
                                  "unit_code": [units["code"][0]] * 2},
                                 geometry=[point(-400, 0), point(400, 0)], crs=4326)
    data = inputs(units, facilities_at([(500, 0)]))
    data.buildings = buildings
    run = coverage.compute_reach(data, standards(kindergarten=300))
    kg = next(r for r in coverage.reach_rows(run) if r["kind"] == "kindergarten")
    # the unit's 100 households are its buildings' 30 + 70; only B2 (100 m away) is within reach
    assert kg["households"] == 30 + 70 + 50 and kg["households_covered"] == 70


# --- along the roads ----------------------------------------------------------------------------


def _lines(*coords) -> np.ndarray:
    return np.array([shapely.LineString(c) for c in coords], dtype=object)


def test_road_graph_nodes_shared_vertices_and_t_junctions_but_not_crossings():
    graph = RoadGraph.from_lines(_lines(
        [(0, 0), (100, 0), (200, 0)],        # a street
        [(100, 0), (100, 100)],              # a side street from its vertex
        [(150, 0), (150, -50)],              # a T-junction drawn without a vertex on the street
        [(50, 50), (50, -50)],               # crosses the street with no shared vertex: an overpass
    ))
    from scipy.sparse.csgraph import connected_components

    n, labels = connected_components(graph.matrix, directed=False)
    at = {tuple(np.round(xy, 2)): i for i, xy in enumerate(graph.xy)}
    assert labels[at[(150.0, -50.0)]] == labels[at[(0.0, 0.0)]]  # the T-junction joins
    assert labels[at[(50.0, 50.0)]] != labels[at[(0.0, 0.0)]]  # the overpass does not
    assert n == 2


def _reference(edges: list[tuple[np.ndarray, np.ndarray]], points: np.ndarray,
               targets: np.ndarray) -> np.ndarray:
    """Plain Dijkstra over every pair of vertices, household → nearest vertex → … → facility."""
    nodes = {}
    adj: dict[int, list] = {}
    for a, b in edges:
        ia, ib = (nodes.setdefault(tuple(np.round(p, 2)), len(nodes)) for p in (a, b))
        w = float(np.hypot(*(a - b)))
        adj.setdefault(ia, []).append((ib, w))
        adj.setdefault(ib, []).append((ia, w))
    xy = np.array(list(nodes))
    snap = lambda p: int(np.argmin(np.hypot(*(xy - p).T)))  # noqa: E731
    out = []
    for p in points:
        start, best = snap(p), np.inf
        dist = {start: float(np.hypot(*(xy[start] - p)))}
        heap = [(dist[start], start)]
        while heap:
            d, u = heapq.heappop(heap)
            if d > dist.get(u, np.inf):
                continue
            for v, w in adj.get(u, []):
                if d + w < dist.get(v, np.inf):
                    dist[v] = d + w
                    heapq.heappush(heap, (d + w, v))
        for t in targets:
            node = snap(t)
            best = min(best, dist.get(node, np.inf) + float(np.hypot(*(xy[node] - t))))
        out.append(best)
    return np.array(out)


def test_walking_distance_by_hand_and_against_a_plain_dijkstra():
    # a U of roads: the facility and the household face each other across a 100 m gap (a river)
    lines = _lines([(0, 0), (0, 400), (100, 400), (100, 0)])
    graph = RoadGraph.from_lines(lines)
    facility = np.array([[-10.0, 0.0]])      # 10 m off the road's end
    house = np.array([[110.0, 0.0]])         # 10 m off the other end
    d_road, idx = nearest_on_roads(graph, house, facility, 1000.0)
    assert d_road[0] == pytest.approx(10 + 400 + 100 + 400 + 10) and idx[0] == 0
    assert np.isinf(nearest_on_roads(graph, house, facility, 900.0)[0][0])
    assert nearest_straight(house, facility, 300.0)[0][0] == pytest.approx(120.0)
    # a random street grid with gaps: every distance equals a plain Dijkstra's
    rng = np.random.default_rng(5)
    segs = []
    for i in range(8):
        for j in range(8):
            if i < 7 and rng.uniform() < 0.85:
                segs.append((np.array([i * 100.0, j * 100.0]), np.array([(i + 1) * 100.0, j * 100.0])))
            if j < 7 and rng.uniform() < 0.85:
                segs.append((np.array([i * 100.0, j * 100.0]), np.array([i * 100.0, (j + 1) * 100.0])))
    graph = RoadGraph.from_lines(np.array([shapely.LineString([a, b]) for a, b in segs], dtype=object))
    points = rng.uniform(-20, 720, (120, 2))
    targets = rng.uniform(0, 700, (4, 2))
    got, _ = nearest_on_roads(graph, points, targets, 10_000.0)
    want = _reference(segs, points, targets)
    assert np.allclose(got, want, rtol=0, atol=1e-6)


def test_report_walks_the_roads_when_roads_are_loaded():
    units = units_at([(110, 0)], [50])
    roads = gpd.GeoDataFrame({"code": ["R1"], "road_class": ["branch"]}, geometry=[shapely.LineString(
        lonlat([(0, 0), (0, 400), (100, 400), (100, 0)]))], crs=4326)
    facility = facilities_at([(-10, 0)])
    data = inputs(units, facility, roads=roads)
    road_run = coverage.compute_reach(data, standards(kindergarten=300))
    straight_run = coverage.compute_reach(data, standards(kindergarten=300), "straight")
    get = lambda run: next(r for r in coverage.reach_rows(run) if r["kind"] == "kindergarten")  # noqa: E731
    assert get(road_run)["method"] == "roads" and get(road_run)["households_covered"] == 0
    assert get(straight_run)["method"] == "straight" and get(straight_run)["households_covered"] == 50
    with pytest.raises(Refused, match="no roads"):
        coverage.compute_reach(inputs(units, facility), standards(), "roads")
    with pytest.raises(Refused, match="method"):
        coverage.compute_reach(data, standards(), "flying")


# --- facilities, missing kinds ------------------------------------------------------------------


def test_floor_area_and_load():
    # 5,000 households 100 m from a small service station, 100 households near a big one
    units = units_at([(100, 0), (5000, 100)], [5000, 100])
    stations = facilities_at([(0, 0), (5000, 0)], kind="service_station", areas=[1200.0, 250.0])
    run = coverage.compute_reach(inputs(units, stations), standards())
    problems = {p["code"]: p for p in coverage.facility_problems(run)}
    # F0001: serves 5,000 > 4,000 (overloaded) and needs 30 m² per 100 households = 1,500 m² > 1,200
    assert problems["F0001"]["problem"] == "under_floor_area,overloaded"
    assert problems["F0001"]["households_served"] == 5000
    assert problems["F0001"]["required_floor_area_m2"] == 1500.0
    # F0002: 250 m² under the 300 m² minimum of a community's rooms
    assert problems["F0002"]["problem"] == "under_floor_area"
    assert problems["F0002"]["required_floor_area_m2"] == 300
    assert {"lon", "lat"} <= set(problems["F0002"])


def test_missing_required_kinds():
    communities = gpd.GeoDataFrame({"code": ["420103001001", "420103001002"], "name": ["甲社区", "乙社区"],
                                    "street_code": "420103001"},
                                   geometry=[square(0, 0, 1000), square(1000, 0, 1000)], crs=4326)
    station = facilities_at([(0, 0)], kind="service_station")
    station["community_code"] = None  # found by location
    missing = coverage.missing_kinds(communities, station, standards())
    assert [(m["community"], m["kinds"]) for m in missing] == [("420103001002", ["service_station"])]
    assert missing[0]["lon"] == pytest.approx(lonlat([(1000, 0)])[0, 0], abs=0.01)


def test_standards_table_refuses_nonsense():
    with pytest.raises(Refused, match="reach_m"):
        coverage.standards_from_rows([{"kind": "kindergarten", "level": "5-minute", "reach_m": 0}])
    with pytest.raises(Refused, match="kind"):
        coverage.standards_from_rows([{"level": "5-minute", "reach_m": 300}])
    with pytest.raises(Refused):
        coverage.standards_from_rows([])
    rows = coverage.standards_from_rows(FACILITY_STANDARDS)
    assert all(r.source for r in rows)
    station = next(r for r in rows if r.kind == "service_station")
    assert station.min_floor_area_m2 == 300 and station.floor_area_per_100_households_m2 == 30
    assert {r.reach_m for r in rows} == {300, 500, 1000}


# --- blind spots and cell problems on constructed data ------------------------------------------


def _grid_units() -> gpd.GeoDataFrame:
    """3 × 3 units of 100 m, 10 households each, in one street."""
    cells = [(x * 100 + 50, y * 100 + 50) for y in range(3) for x in range(3)]
    return units_at(cells, [10] * 9, side=100.0)


def test_blind_spots_and_uncovered_land():
    units = _grid_units()
    street = gpd.GeoDataFrame({"code": ["420103001"]}, geometry=[shapely.union_all(units.geometry.values)],
                              crs=4326)
    # the community covers all but the north-east unit, which also lost its code
    community = gpd.GeoDataFrame({"code": ["420103001001"], "name": ["甲"], "street_code": ["420103001"]},
                                 geometry=[shapely.union_all(units.geometry.values[:8])], crs=4326)
    units.loc[8, "community_code"] = None
    units.loc[4, "community_code"] = None  # no code, but inside the community: still a blind spot by its code
    blind = coverage.find_blind_spots(units, community, street)
    assert sorted(blind.units["code"]) == sorted([units["code"][4], units["code"][8]])
    summary = blind.summary()
    assert summary["households"] == 20 and summary["land_parts"] == 1
    assert summary["land_m2"] == pytest.approx(10_000, rel=1e-3)
    land = [f for f in summary["findings"] if f["kind"] == "land"][0]
    assert land["lon"] == pytest.approx(lonlat([(250, 250)])[0, 0], abs=1e-3)


def test_cell_gaps_overlaps_and_households_in_two_cells():
    units = _grid_units()
    community = gpd.GeoDataFrame({"code": ["420103001001"], "name": ["甲"], "street_code": ["420103001"]},
                                 geometry=[shapely.union_all(units.geometry.values)], crs=4326)
    g = units.geometry.values
    cells = gpd.GeoDataFrame({"code": ["420103001001001", "420103001001002"],
                              "community_code": "420103001001"},
                             geometry=[shapely.union_all(g[[0, 1, 3, 4]]),       # west
                                       shapely.union_all(g[[2, 4, 5, 6, 7]])],   # east, unit 4 again
                             crs=4326)
    report = coverage.cell_problems(community, cells, units)
    assert report["gaps"] == 1  # unit 8 is in no cell
    assert report["overlaps"] == 1  # unit 4 is in both
    assert report["households_in_no_cell"] == 10 and report["households_in_two_cells"] == 10
    kinds = [f["kind"] for f in report["findings"]]
    assert {"gap", "overlap", "household_in_no_cell", "household_in_two_cells"} <= set(kinds)
    two = next(f for f in report["findings"] if f["kind"] == "household_in_two_cells")
    assert two["codes"] == [units["code"][4]] and {"lon", "lat"} <= set(two)


# --- the real Providence blocks -----------------------------------------------------------------


@pytest.fixture(scope="module")
def providence(providence_zip, tmp_path_factory):
    from geodata.sources import read_source

    blocks = read_source(providence_zip, workdir=Path(tmp_path_factory.mktemp("prov"))).to_crs(4326)
    units = gpd.GeoDataFrame({
        "code": blocks["GEOID10"].astype(str).to_numpy(),
        "households": np.round(blocks["TOTPOP"] / 2.62).astype(int).to_numpy(),
        "street_code": [f"999000{int(w):03d}" for w in blocks["WARD"]],
    }, geometry=blocks.geometry.values, crs=4326)
    units["community_code"] = units["street_code"] + "001"
    units["district_code"] = "999000"
    return units


def test_providence_blind_spots_and_cells(providence):
    units = providence.copy()
    rng = np.random.default_rng(11)
    lived = np.flatnonzero(units["households"].to_numpy() > 0)
    taken, gap_blocks = rng.choice(lived, 5, replace=False), rng.choice(lived, 4, replace=False)
    gap_blocks = np.setdiff1d(gap_blocks, taken)
    wards = units.dissolve("street_code", as_index=False)[["street_code", "geometry"]]
    streets = wards.rename(columns={"street_code": "code"})
    keep = np.ones(len(units), dtype=bool)
    keep[taken] = False
    communities = units[keep].dissolve("community_code", as_index=False)[["community_code", "street_code",
                                                                          "geometry"]]
    communities = communities.rename(columns={"community_code": "code"}).assign(name="ward")
    units.loc[taken, "community_code"] = None
    blind = coverage.find_blind_spots(units, communities, streets)
    assert sorted(blind.units["code"]) == sorted(units["code"].iloc[taken])
    assert blind.summary()["households"] == int(units["households"].iloc[taken].sum())
    # the land of the taken blocks, and nothing else of any size, is covered by no community
    taken_area = gpd.GeoSeries(units.geometry.iloc[taken], crs=4326).to_crs(32619).area.sum()
    assert blind.land["area_m2"].sum() == pytest.approx(taken_area, rel=0.01)

    # cells: one per community, with blocks taken out (gaps) and one block duplicated into the
    # cell of another ward (an overlap, and its households in two cells)
    in_cells = keep.copy()
    in_cells[gap_blocks] = False
    cells = units[in_cells].dissolve("community_code", as_index=False)[["community_code", "geometry"]]
    cells["code"] = cells["community_code"] + "001"
    dup = next(i for i in lived if i not in taken and i not in gap_blocks)
    other = cells.index[cells["community_code"] != units["community_code"].iloc[dup]][0]
    cells.loc[other, "geometry"] = shapely.union(cells.geometry[other], units.geometry.iloc[dup])
    report = coverage.cell_problems(communities, cells, units)
    gap_communities = set(units["community_code"].iloc[gap_blocks])
    assert report["gaps"] == len(gap_communities)
    assert report["households_in_no_cell"] == int(units["households"].iloc[np.r_[taken, gap_blocks]].sum())
    assert report["households_in_two_cells"] == int(units["households"].iloc[dup])
    assert report["overlaps"] >= 1 and report["outside_community"] == 1


# --- siting -------------------------------------------------------------------------------------


def _brute_force(cover, weight, k) -> float:
    cover = cover.tocsr()
    best = 0.0
    for combo in itertools.combinations(range(cover.shape[0]), k):
        covered = np.asarray(cover[list(combo)].sum(axis=0)).ravel() > 0
        best = max(best, float(weight[covered].sum()))
    return best


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_siting_equals_the_exact_optimum(seed):
    rng = np.random.default_rng(seed)
    demand = rng.uniform(0, 2000, (300, 2))
    households = rng.integers(1, 60, 300).astype(float)
    candidates = rng.uniform(0, 2000, (14, 2))
    k = 3
    result = siting.site(demand, households, candidates, k, 400.0, method="exact")
    cover = siting.coverage_straight(candidates, demand, 400.0)
    best = _brute_force(cover, households, k)
    assert result.optimal and result.objective == best and result.bound == best
    assert result.added.tolist() == sorted(result.added.tolist(), reverse=True)
    greedy = siting.site(demand, households, candidates, k, 400.0, method="greedy")
    assert greedy.objective <= best <= greedy.bound  # its stated bound is a real bound


def test_siting_agrees_with_a_pulp_model():
    """The same maximal covering model written plainly in PuLP, solved by HiGHS through PuLP."""
    import pulp

    rng = np.random.default_rng(9)
    demand = rng.uniform(0, 3000, (800, 2))
    households = rng.integers(1, 100, 800).astype(float)
    candidates = rng.uniform(0, 3000, (60, 2))
    cover = siting.coverage_straight(candidates, demand, 350.0).tocsc()
    model = pulp.LpProblem("mclp", pulp.LpMaximize)
    x = [model.add_variable(f"x{j}", cat="Binary") for j in range(len(candidates))]
    y = [model.add_variable(f"y{i}", 0, 1) for i in range(len(demand))]
    model += pulp.lpSum(households[i] * y[i] for i in range(len(demand)))
    for i in range(len(demand)):
        model += y[i] <= pulp.lpSum(x[j] for j in cover.indices[cover.indptr[i]:cover.indptr[i + 1]])
    model += pulp.lpSum(x) <= 5
    model.solve(pulp.HiGHS(msg=False))
    result = siting.site(demand, households, candidates, 5, 350.0, method="exact")
    assert result.optimal and result.objective == pytest.approx(pulp.value(model.objective))


def test_merging_demand_keeps_every_answer():
    rng = np.random.default_rng(4)
    demand = np.repeat(rng.uniform(0, 1000, (50, 2)), 4, axis=0)  # four points at each place
    households = rng.integers(1, 10, len(demand)).astype(float)
    cover = siting.coverage_straight(rng.uniform(0, 1000, (10, 2)), demand, 250.0)
    groups, weight = siting.merge_demand(cover, households)
    assert groups.shape[1] <= 50 and weight.sum() == households[np.diff(cover.tocsc().indptr) > 0].sum()
    assert _brute_force(groups, weight, 2) == _brute_force(cover, households, 2)


def test_siting_refusals_and_the_report_of_what_each_site_adds():
    units = units_at([(0, 0), (50, 0), (2000, 0), (2050, 0), (4000, 0)], [100, 100, 60, 60, 10])
    run = coverage.compute_reach(inputs(units, facilities_at([(4000, 10)])), standards(kindergarten=300))
    result, candidates, radius = siting.site_for(run, "kindergarten", 2, units=units)
    frame = siting.sites_frame(result, candidates, "kindergarten", radius)
    assert frame["order"].tolist() == [1, 2]
    assert frame["households_added"].tolist() == [200, 120]
    assert frame["households_covered_after"].tolist() == [210, 330]
    assert result.optimal and result.covered_before == 10
    for bad in (0, -1, "x", 2.5, True, None):
        with pytest.raises(Refused, match="k must be"):
            siting.site_for(run, "kindergarten", bad, units=units)
    with pytest.raises(Refused, match="unknown facility kind"):
        siting.site_for(run, "casino", 2, units=units)
    with pytest.raises(Refused, match="radius"):
        siting.site_for(run, "kindergarten", 2, units=units, radius_m=5000)


def test_a_city_sites_among_a_grid_of_candidates_never_every_unit(monkeypatch):
    """Above THIN_ABOVE units (a city) the default candidates are thinned to about THIN_TO, one
    per square of a grid: real units (a site names its unit), spread over the whole scope (every
    unit near one), and the answer still carries its proof for the set solved."""
    monkeypatch.setattr(siting, "THIN_ABOVE", 1_000)  # this 2,500-unit field as a city
    monkeypatch.setattr(siting, "THIN_TO", 100)
    rng = np.random.default_rng(5)
    where = [(float(x), float(y)) for x, y in rng.uniform(0, 5000, (2_500, 2))]
    units = units_at(where, rng.integers(1, 80, len(where)).tolist())
    run = coverage.compute_reach(inputs(units, facilities_at([(0, 0)])), standards(kindergarten=300))
    result, used, _radius = siting.site_for(run, "kindergarten", 4, units=units, method="exact")
    assert 80 <= len(used) <= 130 and set(used["code"]) <= set(units["code"])
    crs = run.households.crs
    spread = cKDTree(siting.candidates_xy(used, crs)).query(siting.candidates_xy(units, crs))[0]
    assert spread.max() < 2 * 5000 / np.sqrt(100)  # no corner of the scope left without a candidate
    assert result.optimal and len(result.chosen) == 4 and result.objective > 0
    small = units.iloc[:900]  # a district: every unit stays a candidate
    run = coverage.compute_reach(inputs(small, facilities_at([(0, 0)])), standards(kindergarten=300))
    assert len(siting.site_for(run, "kindergarten", 2, units=small)[1]) == len(small)


def test_the_greedy_and_the_exact_answer_share_one_coverage_matrix(monkeypatch):
    """A siting job shows the greedy answer first, then the exact one with its proof; the roads
    are walked (the coverage matrix computed) once for both, and again for no later question of
    the same kind and reach on the same run."""
    from layers.coverage import cache as coverage_cache

    built = []
    model = siting.demand_model
    monkeypatch.setattr(siting, "demand_model", lambda *a, **kw: built.append(1) or model(*a, **kw))
    rng = np.random.default_rng(8)
    units = units_at([(float(x), float(y)) for x, y in rng.uniform(0, 3000, (400, 2))],
                     rng.integers(1, 80, 400).tolist())
    run = coverage.compute_reach(inputs(units, facilities_at([(0, 0)])), standards(kindergarten=300))
    shown, models = [], {}
    answer = coverage_cache.sites_for(run, units, {"kind": "kindergarten", "k": 6, "solver": "exact"},
                                      on_greedy=shown.append, models=models)
    assert [s["stage"] for s in shown] == ["greedy"] and shown[0]["properties"]["solver"] == "greedy"
    assert answer["properties"]["optimal"] and answer["properties"]["solver"] == "exact"
    assert answer["properties"]["households_added"] >= shown[0]["properties"]["households_added"]
    assert len(built) == 1
    coverage_cache.sites_for(run, units, {"kind": "kindergarten", "k": 3}, models=models)
    assert len(built) == 1


def test_demo_report_finds_what_the_demo_carries(small_demo):
    layers = small_demo.layers
    data = coverage.CoverageInputs(units=layers["units"], facilities=layers["facilities"],
                                   communities=layers["communities"], streets=layers["streets"],
                                   grid_cells=layers["grid_cells"], roads=layers["roads"])
    report = coverage.gap_report(data, coverage.standards_from_rows(FACILITY_STANDARDS), "straight")
    assert {"reach", "missing", "facilities", "blind_spots", "cell_problems"} <= set(report)
    assert len(report["reach"]) == len(FACILITY_STANDARDS)
    for row in report["reach"]:
        assert set(row) >= {"kind", "radius_m", "method", "households", "households_covered", "by_street",
                            "by_community"}
        assert sum(v[0] for v in row["by_street"].values()) == row["households"]
        assert sum(v[1] for v in row["by_street"].values()) == row["households_covered"]
    # the blind spot the generator made, and the communities it left without a service station
    assert sorted(f["codes"][0] for f in report["blind_spots"]["findings"] if f["kind"] == "unit") == \
        sorted(small_demo.facts["blind_spot_units"])
    assert report["missing"] and all(m["kinds"] == ["service_station"] for m in report["missing"])
    # its small station (180 m²) is under the 300 m² standard
    assert any(f["floor_area_m2"] == 180.0 and "under_floor_area" in f["problem"]
               for f in report["facilities"])
    cells = report["cell_problems"]
    assert cells["gaps"] >= 1 and cells["overlaps"] == 0  # the demo's cells never overlap
    for finding in report["blind_spots"]["findings"] + cells["findings"] + report["missing"]:
        assert 114 < finding["lon"] < 114.6 and 30.4 < finding["lat"] < 30.8
    assert pd.Series([f["kind"] for f in cells["findings"]]).isin(
        ["gap", "overlap", "outside_community", "household_in_no_cell", "household_in_two_cells"]).all()
