"""Coverage: blind spots named beside their codes (report, layer, CSV, page), the coverage matrix
along the roads walked by windows equal to the whole graph's, and the app's memory of computed
scopes owned by the app (never a module global)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from geodata.db import get_engine
from layers.coverage import cache as coverage_cache
from layers.coverage import gaps as coverage
from layers.coverage import siting
from layers.coverage.reach import RoadGraph
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.test_coverage import _grid_units
from tests.webhelpers import csrf_token, make_accounts, served_copy, sign_in, sign_in_page

SHOTS = Path(os.environ.get("GRIDPLAN_SCREENSHOTS", "/tmp/siting-speed"))


# --- names beside codes -------------------------------------------------------------------------


def _named_blind_spot():
    units = _grid_units()
    street = gpd.GeoDataFrame({"code": ["420103001"], "name": ["民族街道"]},
                              geometry=[shapely.union_all(units.geometry.values)], crs=4326)
    community = gpd.GeoDataFrame({"code": ["420103001001"], "name": ["甲社区"], "street_code": ["420103001"]},
                                 geometry=[shapely.union_all(units.geometry.values[:8])], crs=4326)
    units.loc[8, "community_code"] = None  # the north-east unit: in no community
    return units, street, community


def test_a_blind_spot_says_its_street_nearest_community_and_road():
    units, street, community = _named_blind_spot()
    x0, y0, x1, y1 = units.total_bounds
    metres = 1 / 111_320.0  # a degree of latitude in metres, near enough for these distances
    roads = gpd.GeoDataFrame({"name": ["解放大道", "", "远路"]}, geometry=[
        shapely.LineString([(x0, y1 + 20 * metres), (x1, y1 + 20 * metres)]),  # 20 m north
        shapely.LineString([(x1, y0), (x1, y1)]),  # nearer, but without a name
        shapely.LineString([(x0, y1 + 2000 * metres), (x1, y1 + 2000 * metres)])],  # 2 km: too far
        crs=4326)
    blind = coverage.find_blind_spots(units, community, street, roads=roads)
    unit = next(f for f in blind.summary()["findings"] if f["kind"] == "unit")
    assert unit["codes"] == [units["code"][8]]
    assert (unit["street_name"], unit["near_community"], unit["near_community_name"], unit["road_name"]) == \
        ("民族街道", "420103001001", "甲社区", "解放大道")
    assert blind.units.loc[0, "near_community_name"] == "甲社区"
    far = roads.iloc[[2]]  # no named road within 300 m: no road named
    assert coverage.find_blind_spots(units, community, street, roads=far).findings[0]["road_name"] is None
    # layers without names (an import that had none): codes still, names None, no failure
    bare = coverage.find_blind_spots(units, community.drop(columns="name"), street.drop(columns="name"))
    first = bare.findings[0]
    assert first["street_name"] is None and first["near_community"] == "420103001001"
    assert first["near_community_name"] is None and first["road_name"] is None


# --- the coverage matrix along the roads -----------------------------------------------------------


def _whole_graph_cover(graph: RoadGraph, candidates: np.ndarray, demand: np.ndarray, radius: float):
    """The coverage matrix as it was computed before the windows: every candidate a leaf of the
    whole graph, one bounded Dijkstra per candidate over every node."""
    matrix, leaves = graph.with_leaves(candidates)
    node, access = graph.snap(demand)
    dist = dijkstra(matrix, directed=True, indices=leaves, limit=radius)
    reached = dist[:, node] + access[None, :] <= radius
    rows, cols = np.nonzero(reached)
    return csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(candidates), len(demand)))


@pytest.mark.parametrize("radius", [120.0, 300.0, 700.0])
def test_road_coverage_by_windows_is_the_whole_graphs(radius):
    rng = np.random.default_rng(int(radius))
    # a crooked street grid of 3 km with diagonals (walks far longer than the straight line)
    lines = []
    for i in range(0, 3001, 150):
        ys = np.arange(0, 3001, 150.0)
        lines.append(shapely.LineString(np.column_stack([i + rng.normal(0, 10, len(ys)), ys])))
        lines.append(shapely.LineString(np.column_stack([ys, i + rng.normal(0, 10, len(ys))])))
    lines += [shapely.LineString([(0, 0), (3000, 3000)]), shapely.LineString([(0, 3000), (3000, 0)])]
    graph = RoadGraph.from_lines(np.array(lines, dtype=object))
    candidates = rng.uniform(-200, 3200, (300, 2))
    demand = rng.uniform(-300, 3300, (4000, 2))
    windows = siting.coverage_roads(graph, candidates, demand, radius)
    whole = _whole_graph_cover(graph, candidates, demand, radius)
    assert whole.nnz > 0 and (windows != whole).nnz == 0


# --- the web: API, CSV, memory, page -----------------------------------------------------------------


@pytest.fixture
def site(db_url, small_demo):
    engine = get_engine(db_url)
    write_demo(engine, small_demo)
    app = make_app(db_url)
    make_accounts(app, small_demo)
    return app, engine


def client_as(app, name: str):
    client = app.test_client()
    sign_in(client, name)
    return client, {"X-CSRFToken": csrf_token(client.get("/coverage").get_data(as_text=True))}


NAMES = ("street_name", "near_community", "near_community_name", "road_name")


def test_blind_spots_named_in_the_answer_the_layer_and_the_csv(site, small_demo):
    app, engine = site
    planner, _ = client_as(app, "planner")
    units = [f for f in planner.get("/api/coverage/report").get_json()["blind_spots"]["findings"]
             if f["kind"] == "unit"]
    assert {f["codes"][0] for f in units} == set(small_demo.facts["blind_spot_units"])
    layers = small_demo.layers
    streets = dict(zip(layers["streets"]["code"], layers["streets"]["name"], strict=True))
    communities = set(small_demo.layers["communities"]["name"])
    for finding in units:
        assert finding["street_name"] == streets[finding["street"]]
        assert finding["near_community_name"] in communities
    layer = planner.get("/api/coverage/layers/blind_spots").get_json()["features"]
    named = [f["properties"] for f in layer if f["properties"]["kind"] == "unit"]
    assert named and all(p["street_name"] and p["near_community_name"] for p in named)
    csv = planner.get("/api/coverage/layers/blind_spots?f=csv").get_data(as_text=True)
    header = csv.splitlines()[0]
    assert all(column in header for column in NAMES)
    assert units[0]["street_name"] in csv and units[0]["near_community_name"] in csv


def test_a_citys_blind_spots_are_named_by_view_too(site, small_demo, monkeypatch, tmp_path):
    from layers.worker import run_one

    app, engine = site
    monkeypatch.setattr(coverage_cache, "SYNC_UNITS", 10)  # this small district as a city
    monkeypatch.setenv("GRIDPLAN_SITING_CACHE", str(tmp_path / "siting"))
    planner, _ = client_as(app, "planner")
    assert planner.get("/api/coverage/report").status_code == 202
    assert run_one(engine)["status"] == "done"
    layer = planner.get("/api/coverage/layers/blind_spots").get_json()
    units = [f["properties"] for f in layer["features"] if f["properties"]["kind"] == "unit"]
    assert {p["code"] for p in units} == set(small_demo.facts["blind_spot_units"])
    assert all(p["street_name"] and p["near_community_name"] for p in units)
    csv = planner.get("/api/coverage/layers/blind_spots?f=csv").get_data(as_text=True)
    assert all(column in csv.splitlines()[0] for column in NAMES)


def test_the_memory_of_computed_scopes_is_the_apps_own(site, db_url):
    app, engine = site
    assert not hasattr(coverage_cache, "_MEMORY")  # no module global
    memory = app.extensions["gridplan.coverage"]
    assert isinstance(memory, coverage_cache.CoverageMemory) and len(memory) == 0
    other = make_app(db_url)
    planner, _ = client_as(app, "planner")
    first = planner.get("/api/coverage/report")
    assert first.status_code == 200 and len(memory) == 1
    assert len(other.extensions["gridplan.coverage"]) == 0  # another app (process) keeps its own
    key = coverage_cache.state_key(engine, None, None)
    assert memory.remembered(key) is not None
    # another process changes a layer: the stored revision moves, the kept scope is never used again
    from geodata.store import read_layer, write_layer

    added = read_layer(engine, "facilities").iloc[[0]].assign(code="F-new")  # one more, beside another
    with engine.begin() as conn:
        write_layer(conn, "facilities", added)
    assert coverage_cache.state_key(engine, None, None) != key
    second = planner.get("/api/coverage/report", headers={"If-None-Match": first.headers["ETag"]})
    assert second.status_code == 200 and second.headers["ETag"] != first.headers["ETag"]
    assert len(memory) == 2 and memory.remembered(coverage_cache.state_key(engine, None, None)) is not None


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("coverage-names") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, BASEMAP="none")
    make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield base


def test_the_page_lists_blind_spots_with_names(chromium_page, served, small_demo):
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    errors = page.errors
    sign_in_page(page, served, "planner")
    page.goto(f"{served}/coverage")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=60_000)
    report = page.evaluate("() => fetch('/api/coverage/report').then((r) => r.json())")
    unit = next(f for f in report["blind_spots"]["findings"] if f["kind"] == "unit")
    item = page.locator("#findings li", has_text=unit["codes"][0]).first
    text = item.inner_text()
    assert unit["street_name"] in text and f"近{unit['near_community_name']}" in text
    if unit["road_name"]:
        assert f"{unit['road_name']}旁" in text
    SHOTS.mkdir(parents=True, exist_ok=True)
    item.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "blind-spot-names.png"), full_page=False)
    assert not errors


def test_a_failing_city_report_is_not_queued_again_every_half_minute(site, monkeypatch):
    """The warm-up thread of every server process queues the city's report job when no answer
    exists. Defect from the walk: with standards the job fails on, it queued it again every 30 s,
    for ever. Now the same state is queued again after 10 minutes, 20 after a second failure…;
    a change of state (the data or the standards) queues at once."""
    from datetime import datetime, timedelta

    from geodata import jobs
    from geodata.models import Job

    app, engine = site
    monkeypatch.setattr(coverage_cache, "SYNC_UNITS", 10)  # this small district as a city
    memory = coverage_cache.CoverageMemory(engine)
    queued: list[int] = []

    def queue(params: dict) -> int:
        queued.append(jobs.create_job(engine, coverage_cache.coverage.JOB_KIND, params, per_user=0))
        return queued[-1]

    def fail_last(minutes_ago: float) -> None:
        jobs.fail(engine, queued[-1], "standards refused")
        with engine.begin() as conn:
            conn.execute(Job.__table__.update().where(Job.id == queued[-1]).values(
                finished_at=datetime.now() - timedelta(minutes=minutes_ago)))

    assert memory.warm(start_job=queue) == "queued" and len(queued) == 1
    assert memory.warm(start_job=queue) == "pending" and len(queued) == 1
    fail_last(minutes_ago=1)
    assert memory.warm(start_job=queue) == "failed" and len(queued) == 1  # not again at once
    fail_last(minutes_ago=11)
    assert memory.warm(start_job=queue) == "queued" and len(queued) == 2  # after 10 minutes
    fail_last(minutes_ago=11)
    assert memory.warm(start_job=queue) == "failed" and len(queued) == 2  # the second: 20 minutes
    fail_last(minutes_ago=21)
    assert memory.warm(start_job=queue) == "queued" and len(queued) == 3
    fail_last(minutes_ago=1)
    from geodata.store import read_layer, write_layer

    added = read_layer(engine, "facilities").iloc[[0]].assign(code="F-one-more")
    with engine.begin() as conn:  # the data changed: another state, queued at once
        write_layer(conn, "facilities", added, mode="append")
    assert memory.warm(start_job=queue) == "queued" and len(queued) == 4
