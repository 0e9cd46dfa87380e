"""Every street, every path: an automatic plan (the API, the plan job, ``flask plan``), grid cells
(generation, split, merge, moves, validation), the coverage report, proposed facilities and
siting — for every street of the demo districts and of generated cities that lack what real
streets lack (no bridge, no roads, one community, no community at all, no households, units above
the maximum, a piece cut off by the river). Nothing may answer with a 5xx or a traceback; a
refusal names its reason. And units built without any road centre-lines: a tessellation that
tiles each community.

One database per city (module-scoped), SpatiaLite for the sweep, one PostGIS pass on the smallest
city.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from geodata.crs import to_metric
from geodata.db import get_engine
from geodata.store import read_adjacency, read_layer
from layers.onboarding.folder import onboard
from layers.plans.partition import Partition, UnitGraph, is_contiguous
from layers.sample_data.demo import write_demo
from layers.sample_data.sample_city import DISTRICT, sample_city, write_folder
from layers.worker import run_one
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, signed_in

HOUSEHOLD_COLUMNS = {"community": "社区", "households": "户数", "population": "人口"}


# --- the cities ---------------------------------------------------------------------------------


def fresh_database(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gridplan.sqlite"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def site_for(url: str):
    app = make_app(url, BASEMAP="none")
    from webmap.auth import add_user

    with app.app_context():
        add_user("planner", "planner", PASSWORD)
    return app


def onboarded(url: str, city, folder: Path) -> Path:
    """``city`` loaded as a city hands it over (names, roads, a households table, POIs)."""
    folder = write_folder(city, folder, pois=True)
    onboard(get_engine(url), folder, DISTRICT)
    return folder


def city_with_gaps():
    """Streets with no roads inside, one with a single community (and a blind area), one with no
    community at all, a community with no households in the table; no bridges anywhere."""
    return sample_city(9, seed=3, blocks_per_side=3, empty_streets=1, roadless_streets=1, unlisted=1)


def city_of_single_blocks():
    """Streets of one community of one block each: most streets hold a single unit, some above
    the maximum of households, some below the minimum."""
    return sample_city(6, seed=11, blocks_per_side=1, communities_per_street=(1, 1))


@pytest.fixture(scope="module")
def small_demo_site(spatialite_template, tmp_path_factory, small_demo):
    url = fresh_database(spatialite_template, tmp_path_factory.mktemp("small-demo"))
    write_demo(get_engine(url), small_demo)
    return site_for(url), url


@pytest.fixture(scope="module")
def full_demo_site(spatialite_template, tmp_path_factory, district_demo):
    url = fresh_database(spatialite_template, tmp_path_factory.mktemp("full-demo"))
    write_demo(get_engine(url), district_demo)
    return site_for(url), url


@pytest.fixture(scope="module")
def gaps_site(spatialite_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaps-city")
    url = fresh_database(spatialite_template, folder)
    onboarded(url, city_with_gaps(), folder / "city")
    return site_for(url), url


@pytest.fixture(scope="module")
def blocks_site(spatialite_template, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks-city")
    url = fresh_database(spatialite_template, folder)
    onboarded(url, city_of_single_blocks(), folder / "city")
    return site_for(url), url


# --- the sweep ----------------------------------------------------------------------------------


def _answer(call) -> tuple[int, str]:
    """(status, reason) of one request; an exception the app let through counts as a 500."""
    try:
        response = call()
    except Exception as exc:  # noqa: BLE001 — the sweep reports it, it does not stop
        return 500, f"{type(exc).__name__}: {exc}"
    body = response.get_json(silent=True) if response.is_json or "json" in response.mimetype else None
    reason = (body or {}).get("detail", "") if isinstance(body, dict) else ""
    return response.status_code, reason


def _check(problems: list[str], where: str, status: int, reason: str, body_ok: bool = True) -> None:
    if status >= 500:
        problems.append(f"{where}: {status} {reason}")
    elif status >= 400 and (not reason.strip() or "Traceback" in reason):
        problems.append(f"{where}: {status} without a reason")
    elif not body_ok:
        problems.append(f"{where}: {status} {reason}")


def _plan_explained(scores: dict) -> bool:
    """An automatic plan makes no community in pieces, and one with communities outside the bounds
    says why (its ``infeasible`` reasons)."""
    if scores.get("non_contiguous"):
        return False
    if not all(i.get("reason") for i in scores.get("infeasible", [])):
        return False
    return not scores.get("outside_bounds") or bool(scores.get("infeasible"))


def _grid_explained(answer: dict) -> bool:
    """Generated cells outside the range, and units left without a cell, come with reasons."""
    reasons = [p.get("reason") for p in answer.get("problems", [])]
    if not all(reasons):
        return False
    if answer["in_range_share"] < 1 and not any(p["kind"] != "no_community" for p in answer["problems"]):
        return False
    return True


def sweep(app, url: str, tmp: Path) -> tuple[list[str], dict[str, int]]:
    """Every entry point for every street; returns the problems found and how many calls
    answered each status class (to see that the sweep did reach the streets)."""
    engine = get_engine(url)
    client, headers = signed_in(app, "planner", "/plans")
    runner = app.test_cli_runner()
    problems: list[str] = []
    seen: dict[str, int] = {}
    spent: dict[str, float] = {}

    def call(where: str, method: str, path: str, body: dict | None = None, explained=None) -> None:
        """One request; ``explained(answer)`` says whether a 2xx answer explains what it could
        not meet."""
        response = None

        def send():
            nonlocal response
            response = client.post(path, json=body, headers=headers) if method == "POST" else client.get(path)
            return response
        started = time.perf_counter()
        status, reason = _answer(send)
        spent[path.split("?")[0]] = spent.get(path.split("?")[0], 0.0) + time.perf_counter() - started
        ok = explained is None or status >= 300 or explained(response.get_json())
        record(f"{method} {path} {where}", status, reason, ok)

    def record(where: str, status: int, reason: str, ok: bool = True) -> None:
        if status >= 400 and os.environ.get("SWEEP_DEBUG"):
            print("SWEEP", where, status, reason)
        seen[f"{status // 100}xx"] = seen.get(f"{status // 100}xx", 0) + 1
        _check(problems, where, status, reason, ok)

    streets = read_layer(engine, "streets")
    units = read_layer(engine, "units")
    for street, outline in zip(streets["code"], streets.geometry, strict=True):
        # an automatic plan of the street, at once (the 生成方案 button), and on the command line
        call(street, "POST", "/api/plans", {"name": f"sweep {street}", "street": street},
             lambda answer: _plan_explained(answer["scores"]))
        result = runner.invoke(args=["plan", "--street", street, "-o", str(tmp / f"plan-{street}.gpkg")])
        last = (result.output.strip().splitlines() or [""])[-1]
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            record(f"flask plan --street {street}", 500, repr(result.exception))
        else:
            record(f"flask plan --street {street}", 400 if result.exit_code else 200, last)
        # grid cells of the street (cells outside the range say why), their validation
        call(street, "POST", "/api/grid", {"street": street}, _grid_explained)
        call("", "GET", f"/api/grid/problems?street={street}")
        # hand edits of the cells of the street's first community and of its smallest (a single
        # unit, often): what every community goes through is the street's grid above
        mine = units[units["street_code"] == street]
        sizes = mine.groupby("community_code").size().sort_index()
        for community in sorted(set(sizes.index[:1]) | set(sizes.sort_values(kind="stable").index[:1])):
            call(community, "POST", "/api/grid", {"community": community}, _grid_explained)
            cells = sorted(read_layer(engine, "grid_cells", community=community)["code"])
            if cells:
                call(cells[0], "POST", "/api/grid/split", {"cell": cells[0]})
            cells = sorted(read_layer(engine, "grid_cells", community=community)["code"])
            if len(cells) > 1:
                call(community, "POST", "/api/grid/merge", {"keep": cells[0], "merge": cells[1]})
            first = sorted(mine.loc[mine["community_code"] == community, "code"])[:1]
            call(community, "POST", "/api/grid/moves", {"units": first, "to": "new"})
            call("", "GET", f"/api/grid/problems?community={community}")
        # coverage and siting in the street
        call("", "GET", f"/api/coverage/report?street={street}")
        call("", "GET", f"/api/coverage/layers/uncovered?street={street}&kind=kindergarten")
        call(street, "POST", "/api/coverage/sites", {"kind": "kindergarten", "k": 2, "street": street},
             lambda answer: len(answer["features"]) == 2 or bool(answer["properties"]["note"]))
        inside = shapely.point_on_surface(outline)
        call(street, "POST", "/api/coverage/proposal", {
            "kind": "service_station", "sites": [{"lon": inside.x, "lat": inside.y}], "street": street})
    # the whole district's plan and its coverage report, in the background worker
    call("district", "POST", "/api/plans", {"name": "sweep district"})
    call("district", "POST", "/api/coverage/jobs", {})
    while (job := run_one(engine)) is not None:
        record(f"{job['kind']} job", 200 if job["status"] == "done" else 500, job.get("message") or "")
    if os.environ.get("SWEEP_DEBUG"):
        print("SWEEP seconds", {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])})
    return problems, seen


def assert_swept(problems: list[str], seen: dict[str, int]) -> None:
    assert not problems, f"{len(problems)} calls failed:\n" + "\n".join(problems[:40])
    assert seen.get("2xx", 0) > 0


def test_every_street_of_the_small_demo(small_demo_site, tmp_path):
    assert_swept(*sweep(*small_demo_site, tmp_path))


def test_every_street_of_the_demo_make_run_makes(full_demo_site, tmp_path):
    app, url = full_demo_site
    engine = get_engine(url)
    # the streets of the sign-off: no unit of theirs lies near a bridge
    client, headers = signed_in(app, "planner", "/plans")
    for street in ("420103006", "420103010", "420103012", "420103013"):
        answer = client.post("/api/plans", json={"name": street, "street": street}, headers=headers)
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["scores"]["units"] == int((read_layer(engine, "units")["street_code"]
                                                           == street).sum())
    assert_swept(*sweep(app, url, tmp_path))


def test_every_street_of_a_city_with_empty_roadless_and_single_community_streets(gaps_site, tmp_path):
    app, url = gaps_site
    engine = get_engine(url)
    streets = read_layer(engine, "streets")
    communities = read_layer(engine, "communities")
    units = read_layer(engine, "units")
    per_street = communities.groupby("street_code").size().reindex(streets["code"], fill_value=0)
    assert (per_street == 0).any() and (per_street == 1).any()  # an empty street, a single community
    households = units.groupby("community_code")["households"].sum()
    assert (households == 0).any()  # a community the households table does not list
    assert read_layer(engine, "roads", where={"road_class": "bridge"}).empty
    # the street without roads inside was tessellated, not left as its four communities
    first = units[units["street_code"] == streets["code"].iloc[0]]
    assert len(first) > 4 * len(communities[communities["street_code"] == streets["code"].iloc[0]])
    assert_swept(*sweep(app, url, tmp_path))


def test_every_street_of_a_city_of_single_block_communities(blocks_site, tmp_path):
    app, url = blocks_site
    units = read_layer(get_engine(url), "units")
    assert units.groupby("street_code").size().min() == 1
    assert (units["households"] > 3000).any()  # a unit above the maximum
    assert_swept(*sweep(app, url, tmp_path))


def test_the_smallest_city_on_postgis(postgis_url, tmp_path):
    onboarded(postgis_url, city_of_single_blocks(), tmp_path / "city")
    assert_swept(*sweep(site_for(postgis_url), postgis_url, tmp_path))


# --- units without roads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roadless_site(spatialite_template, tmp_path_factory):
    """The city with gaps, onboarded, then its roads removed and its units built again without
    them (the command line, hexagons); returns the app, the URL, the command's output and the
    units the roads made."""
    folder = tmp_path_factory.mktemp("roadless-city")
    url = fresh_database(spatialite_template, folder)
    city_folder = onboarded(url, city_with_gaps(), folder / "city")
    engine = get_engine(url)
    blocks = read_layer(engine, "units")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM roads"))
    app = site_for(url)
    result = app.test_cli_runner().invoke(args=[
        "units", "build", "--households", str(city_folder / "households.csv"),
        "--pois", str(city_folder / "pois.geojson"), "--category", "type"])
    return app, url, result, blocks


def test_units_without_roads_tile_each_community(roadless_site):
    app, url, result, blocks = roadless_site
    assert result.exit_code == 0, result.output
    assert '"method": "tessellation"' in result.output and "not blocks" in result.output
    engine = get_engine(url)
    units = read_layer(engine, "units")
    communities = read_layer(engine, "communities")
    streets = read_layer(engine, "streets")
    metric = to_metric(units)
    crs = metric.crs
    # about a hectare each (pieces at the edges smaller, merged slivers larger)
    area = metric.area
    assert 0.5e4 < area.median() < 1.6e4 and area.min() > 100
    # the units tile each street: no overlaps, no gaps
    geoms = np.asarray(metric.geometry.values, dtype=object)
    assert shapely.coverage_is_valid(geoms, gap_width=0.0)
    for code, street in zip(streets["code"], streets.to_crs(crs).geometry, strict=True):
        mine = metric[metric["street_code"] == code]
        assert abs(mine.area.sum() - street.area) < 1e-6 * street.area + 1.0, code
        assert shapely.union_all(mine.geometry.values).symmetric_difference(street).area < 1.0, code
    # each community is tiled by its units: the same area as its own polygon within the street
    # (less what an overlapping neighbour listed first took)
    comm_m = communities.to_crs(crs)
    street_of = streets.to_crs(crs).set_index("code").geometry
    for code, polygon, street_code in zip(comm_m["code"], comm_m.geometry, comm_m["street_code"],
                                          strict=True):
        mine = metric[metric["community_code"] == code]
        street = street_of[street_code]
        assert len(mine) > 1
        assert mine.area.sum() == pytest.approx(polygon.intersection(street).area, rel=0.02), code
        # every unit nests in its community (a sliver of a metre at most outside)
        assert (mine.geometry.difference(polygon).area < 50).all(), code
    # each community's units are connected through the stored adjacency
    graph = UnitGraph.from_units(units, read_adjacency(engine))
    partition = Partition(graph, graph.current)
    for code in communities["code"]:
        assert is_contiguous(partition, code), f"community {code} is cut in pieces"
    # households conserved: every community's units sum to what its blocks held
    before = blocks.groupby("community_code")["households"].sum()
    after = units.groupby("community_code")["households"].sum()
    pd.testing.assert_series_equal(after.reindex(before.index), before, check_names=False)
    assert units["households"].sum() == blocks["households"].sum()
    assert set(units["households_source"]) <= {"poi+table", "area+table", "none"}


def test_every_street_of_a_city_without_roads(roadless_site, tmp_path):
    app, url, result, _ = roadless_site
    assert result.exit_code == 0
    assert read_layer(get_engine(url), "roads").empty
    assert_swept(*sweep(app, url, tmp_path))


def test_units_build_squares_and_refusals(roadless_site):
    app, url, _, _ = roadless_site
    engine = get_engine(url)
    runner = app.test_cli_runner()
    street = read_layer(engine, "streets")["code"].iloc[0]
    before = read_layer(engine, "units").sort_values("code")["code"].tolist()
    for args, reason in ((["--shape", "triangle"], "triangle"), (["--cell-m2", "5"], "cell size 5")):
        refused = runner.invoke(args=["units", "build", "--street", street, *args])
        assert refused.exit_code != 0 and reason in refused.output
        assert not isinstance(refused.exception, Exception) or isinstance(refused.exception, SystemExit)
    assert read_layer(engine, "units").sort_values("code")["code"].tolist() == before  # nothing written
    squares = runner.invoke(args=["units", "build", "--street", street, "--shape", "square",
                                  "--cell-m2", "20000"])
    assert squares.exit_code == 0, squares.output
    assert '"shape": "square"' in squares.output and "square cells of about 20,000 m²" in squares.output
    mine = to_metric(read_layer(engine, "units", street=street))
    assert 1.2e4 < mine.area.median() < 2.6e4
