"""Coverage, grid cells and siting district by district (issue 19, item 3): on a generated city of
two districts sharing a boundary (households near it served by facilities across it), the gap
report made a task per district — serially, on the process pool, on a LocalCluster of two
processes — is the single-process report, household for household; the cells generated a task
per district are those generated in one piece; a district with no units is skipped and named; a
scheduler that cannot be reached is refused with nothing written; siting scoped by district."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box
from sqlalchemy import delete, func, select

from geodata.db import get_engine
from geodata.extents import split_by_district
from geodata.models import GridCell
from geodata.store import read_layer, write_layer
from layers.coverage import gaps
from layers.coverage.districts import report_all
from layers.grid.cells import generate_grid, grid_rules
from layers.grid.districts import grid_all
from layers.plans.scale import PoolRunner, SerialRunner, dask_available
from layers.sample_data.country import split_district
from layers.sample_data.demo import write_demo
from tests.conftest import make_app, recorded
from tests.test_plan_scale import module_database

SECOND = "420199"


@pytest.fixture(scope="module")
def two_districts(small_demo):
    """The small demo with its last two streets moved into district 420199."""
    return split_district(small_demo, SECOND)


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def city(request, tmp_path_factory, two_districts):
    """The two-district city in a database of each kind, and its single-process gap report
    (along the roads): (url, engine, report)."""
    url = module_database(request, tmp_path_factory)
    engine = get_engine(url)
    write_demo(engine, two_districts)
    return url, engine, gaps.report_for(engine)


def as_json(report: dict) -> dict:
    """The report as a client reads it (numpy scalars as numbers, tuples as lists)."""
    return json.loads(json.dumps(report, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def test_the_city_has_households_served_across_the_district_boundary(city):
    _url, engine, whole = city
    # the test means something only if the halo matters: some households of one district are
    # reached only by a facility of the other (reports of a district read alone miss them)
    units = read_layer(engine, "units")
    assert set(units["district_code"]) == {"420103", SECOND}
    alone = sum(gaps.gap_report(district_alone(engine, d), gaps.load_standards(engine))["reach"][0]
                ["households_covered"] for d in ("420103", SECOND))
    assert alone < whole["reach"][0]["households_covered"]


def district_alone(engine, district):
    """A district's layers with nothing across its edge (what a task without a halo would see)."""
    where = {"where": {"district_code": district}}
    return gaps.CoverageInputs(*(read_layer(engine, name, **where) for name in
                                 ("units", "facilities", "communities", "streets", "grid_cells", "roads")))


@pytest.mark.parametrize("method", ["auto", "straight"])
def test_the_report_district_by_district_is_the_single_process_report(city, method):
    _url, engine, whole = city
    if method != "auto":
        whole = gaps.report_for(engine, method=method)
    made = report_all(engine, method, runner=SerialRunner())
    assert made.districts == ["420103", SECOND] and made.skipped == []
    assert as_json(made.report) == as_json(whole)
    assert whole["facilities"] and whole["blind_spots"]["findings"] and whole["missing"]  # not vacuous


def test_the_process_pool_reports_as_the_single_process(city):
    _url, engine, whole = city
    made = report_all(engine, runner=PoolRunner(2))
    assert all(o.pid != os.getpid() for o in made.outcomes)
    assert as_json(made.report) == as_json(whole)


needs_dask = pytest.mark.skipif(not dask_available() and os.environ.get("CI") != "true",
                                reason="dask.distributed is not installed")


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of two worker processes, shared by the dask tests of this module."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


@needs_dask
@pytest.mark.parametrize("city", ["postgis"], indirect=True)  # the workers share one PostGIS
def test_a_local_cluster_of_two_processes_reports_as_the_single_process(city, dask_client):
    from layers.plans.scale import DaskRunner

    _url, engine, whole = city
    made = report_all(engine, runner=DaskRunner(dask_client))
    assert {o.pid for o in made.outcomes} <= set(dask_client.run(os.getpid).values())
    assert as_json(made.report) == as_json(whole)


@pytest.fixture(scope="module")
def run(city):
    app = make_app(city[0])
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=list(args), catch_exceptions=False)


def test_coverage_all_on_the_command_line_names_a_district_without_units(run, city, tmp_path):
    _url, engine, whole = city
    empty = gpd.GeoDataFrame({"code": ["420198"], "name": ["空区"]}, crs=4326,
                             geometry=[box(120.0, 30.0, 120.01, 30.01)])
    with engine.begin() as conn:  # a district the code table knows, with nothing imported yet
        write_layer(conn, "districts", empty, mode="append")
    result = run("coverage", "--all", "--workers", "1", "-o", str(tmp_path / "all.json"))
    assert result.exit_code == 0, result.output
    assert "district 420198 has no units: skipped" in result.output
    assert "2 districts on 1 workers" in result.output and "skipped: 420198" in result.output
    assert json.loads((tmp_path / "all.json").read_text(encoding="utf-8")) == as_json(whole)
    one = run("coverage", "-o", str(tmp_path / "one.json"))  # the single-process command, same file
    assert one.exit_code == 0
    assert json.loads((tmp_path / "one.json").read_text(encoding="utf-8")) == as_json(whole)


def test_an_unreachable_scheduler_is_refused_with_nothing_written(run, city, tmp_path, monkeypatch):
    _url, engine, _whole = city
    monkeypatch.setenv("GRIDPLAN_DASK_CONNECT_TIMEOUT", "1")
    for args in (("coverage", "--all", "--cluster", "tcp://127.0.0.1:9", "-o", str(tmp_path / "r.json")),
                 ("grid", "--all", "--cluster", "tcp://127.0.0.1:9")):
        before = cells_of(engine)
        result = run(*args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and "tcp://127.0.0.1:9" in lines[0], result.output
        assert "Traceback" not in result.output
        assert cells_of(engine).equals(before)
    assert not (tmp_path / "r.json").exists()


def test_all_with_a_street_is_refused(run, tmp_path):
    result = run("coverage", "--all", "--street", "420103001", "-o", str(tmp_path / "r.json"))
    assert result.exit_code == 1 and "--street" in result.output and not (tmp_path / "r.json").exists()
    result = run("grid", "--all", "--street", "420103001")
    assert result.exit_code == 1 and "--street" in result.output


def cells_of(engine) -> gpd.GeoDataFrame:
    cells = read_layer(engine, "grid_cells").sort_values("code").reset_index(drop=True)
    cells["wkt"] = cells.geometry.to_wkt(rounding_precision=7)
    return cells[["code", "community_code", "district_code", "wkt"]]


@pytest.fixture(params=["spatialite", "postgis"])
def two_cities(request, tmp_path_factory, two_districts):
    """Two databases holding the two-district city without grid cells (each generates from nothing)."""
    engines = []
    for _ in range(2):
        engine = get_engine(module_database(request, tmp_path_factory))
        write_demo(engine, two_districts)
        with engine.begin() as conn:
            conn.execute(delete(GridCell))
        engines.append(engine)
    return engines


def test_cells_generated_district_by_district_are_those_of_one_piece(two_cities):
    serial, districts = two_cities
    rules = grid_rules(serial)
    whole = generate_grid(serial, rules)
    made = grid_all(districts, rules, runner=PoolRunner(2))
    assert made.districts == ["420103", SECOND]
    assert len(cells_of(serial)) == whole["cells"] > 50
    assert cells_of(districts).equals(cells_of(serial))
    assert {k: made.answer[k] for k in ("cells", "communities", "in_range_share", "kept", "gaps", "overlaps",
                                        "outside_community", "households_in_no_cell")} == \
        {k: whole[k] for k in ("cells", "communities", "in_range_share", "kept", "gaps", "overlaps",
                               "outside_community", "households_in_no_cell")}
    again = grid_all(districts, rules, runner=SerialRunner())  # run again: the same cells, kept
    assert cells_of(districts).equals(cells_of(serial)) and again.answer["kept"] == whole["cells"]


def test_grid_all_on_the_command_line(run, city):
    _url, engine, _whole = city
    result = run("grid", "--all", "--workers", "1")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["districts"] == 2 and answer["workers"] == 1
    with engine.connect() as conn:
        assert answer["cells"] == conn.execute(select(func.count()).select_from(GridCell)).scalar_one()


def test_site_scoped_by_district(run, city, tmp_path):
    _url, engine, _whole = city
    out = tmp_path / "sites.geojson"
    result = run("site", "service_centre", "2", "--district", SECOND, "--method", "straight", "-o", str(out))
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text(encoding="utf-8"))
    units = read_layer(engine, "units", where={"district_code": SECOND})
    mine = gaps.households_from_layers(units).households.sum()
    assert body["properties"]["households"] == mine and 1 <= len(body["features"]) <= 2
    for args, words in ((("--district", "4201"), "not a 6-digit code"),
                        (("--district", "429999"), "no district"),
                        (("--district", SECOND, "--street", "420103001"), "not both")):
        result = run("site", "service_centre", "2", *args, "-o", str(tmp_path / "x.geojson"))
        assert result.exit_code == 1 and words in result.output, result.output
    assert np.isfinite(body["properties"]["households_covered_after"])


def test_a_district_reads_its_own_rows_and_its_halo_from_the_districts_meeting_it(city):

    from layers.coverage.districts import CoverageTask, report_district, whole_crs

    url, engine, _whole = city
    rows = [dataclasses.asdict(s) for s in gaps.load_standards(engine)]
    task = CoverageTask(url, SECOND, "roads", int(whole_crs(engine).to_epsg()), rows)
    report_district(task)  # the task's engine is made (or its inherited connections dropped) first
    from layers.plans.scale import process_engine

    with recorded(process_engine(url)) as statements:
        report_district(task)
    reads = [s for s in statements if LARGE.search(s)]
    assert len(reads) >= 8, statements
    # every read of a large table names the districts it reads; on a store split by district the
    # halo's too, by box within them, and the facilities its communities name (geodata.extents);
    # on a whole table those go by the spatial index and the community codes alone
    split = split_by_district(engine)
    loose = [s for s in reads if "district_code" not in s.split("WHERE", 1)[-1]
             and (split or ("&&" not in s and "SpatialIndex" not in s and "community_code IN" not in s))]
    assert not loose, loose
    assert any("&&" in s or "SpatialIndex" in s for s in reads)  # the halo, by box


LARGE = re.compile(r"\bFROM (units|streets|communities|grid_cells|facilities|roads|buildings)\b")


def test_a_districts_sites_and_cells_name_their_districts(engine, two_districts):
    """Siting a district (its proposals named by the communities and roads near them) and dividing
    its cells read and write the rows of the districts they name alone, on a store split by
    district: there every statement on a large table names ``district_code`` — but for the cell
    codes looked up alone (a cell code is the nation's: one stored under another district must
    still be refused). On whole tables the places near a site are read by box, and the facilities
    its communities name by their codes.
    (On Citus: scripts/check_citus.py, each such statement routed to its districts' shards.)"""
    from layers.coverage.districts import SitingTask, site_district
    from layers.grid.districts import GridTask, grid_district
    from layers.plans.scale import process_engine

    write_demo(engine, two_districts)
    url = engine.url.render_as_string(hide_password=False)
    rows = [dataclasses.asdict(s) for s in gaps.load_standards(engine)]
    site = SitingTask(url, SECOND, "health_station", 2, rows, method="straight")
    grid = GridTask(url, SECOND, dataclasses.asdict(grid_rules(engine)))
    site_district(site)  # the task's engine made first
    with recorded(process_engine(url)) as statements:
        sited = site_district(site)
        grid_district(grid)
    proposals = sited.answer["features"]
    assert proposals and all(f["properties"]["community_code"] for f in proposals)
    touching = [s for s in statements if SPLIT.search(s)]
    assert len(touching) >= 10, statements
    code_alone = re.compile(r"\s*grid_cells\.code IN \((?:[^()]|\([^()]*\))*\)\s*")
    loose = [s for s in touching if "district_code" not in s.split("WHERE", 1)[-1]
             and not code_alone.fullmatch(s.split("WHERE", 1)[-1])
             and (split_by_district(engine)
                  or ("&&" not in s and "SpatialIndex" not in s and "community_code IN" not in s))]
    assert not loose, "\n\n".join(loose)


#: the tables split by district read or written by a task (streets: a small shared table)
SPLIT = re.compile(r"\bFROM (units|communities|grid_cells|facilities|roads|buildings)\b")


# --- the city's report job, through the worker -------------------------------------------------


def test_the_report_job_fails_naming_a_scheduler_it_cannot_reach_and_keeps_nothing(city, tmp_path,
                                                                                 monkeypatch):
    from geodata import jobs
    from layers import worker
    from layers.coverage import cache

    _url, engine, _whole = city
    monkeypatch.setenv("GRIDPLAN_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setenv("GRIDPLAN_DASK_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("GRIDPLAN_SITING_CACHE", str(tmp_path / "siting"))
    jobs.create_job(engine, worker.COVERAGE_REPORT, {"street": None, "method": None}, per_user=0)
    job = worker.run_one(engine)
    assert job["status"] == "failed" and "tcp://127.0.0.1:9" in job["message"], job
    assert "cannot be reached" in job["message"] and job["result"] is None
    assert cache.from_jobs(engine, cache.state_key(engine, None, None), None) is None  # nothing to read
    assert not (tmp_path / "siting").exists() or not any((tmp_path / "siting").iterdir())


def test_the_city_report_job_is_made_district_by_district_as_the_single_process(city, two_districts,
                                                                               tmp_path, monkeypatch):
    from geodata import jobs
    from layers import worker
    from layers.coverage import cache
    from tests.webhelpers import make_accounts, signed_in

    url, engine, _whole = city
    whole = gaps.report_for(engine)  # as the city is now (an earlier test generated its cells again)
    monkeypatch.delenv("GRIDPLAN_DASK_SCHEDULER", raising=False)
    monkeypatch.setattr(worker, "BY_DISTRICT_UNITS", 10)  # a province's job, on a test-sized city
    monkeypatch.setenv("GRIDPLAN_SITING_CACHE", str(tmp_path / "siting"))
    job_id = jobs.create_job(engine, worker.COVERAGE_REPORT, {"street": None, "method": None}, per_user=0)
    job = worker.run_one(engine)  # what `flask worker` does: the job in a process of its own
    assert job["id"] == job_id and job["status"] == "done", job
    # the bar moved district by district (the single-process report says nothing of districts)
    assert re.match(r"(\d+)/\1 districts", job["message"]), job["message"]
    result = job["result"]
    assert {k: v for k, v in result.items() if k not in cache.CACHE_KEYS} == as_json(whole)
    # what the job kept for the pages is what the single-process job kept: key, households out of
    # reach by unit and by community
    single = as_json(cache.job_result(engine, None, None))
    assert result == single
    assert result["uncovered_by_unit"] and result["uncovered_by_community"]  # not vacuous
    # the pages and the API answer from it, with the single-process report's numbers
    found = cache.from_jobs(engine, cache.state_key(engine, None, None), None)
    assert found is not None and found.report == as_json(whole)
    monkeypatch.setattr(cache, "SYNC_UNITS", 10)  # the city is the worker's, not a request's
    app = make_app(url)
    make_accounts(app, two_districts)
    planner, _headers = signed_in(app, "planner")
    answer = planner.get("/api/coverage/report")
    assert answer.status_code == 200, answer.get_json()
    shown = answer.get_json()
    for key in ("households", "units", "method", "reach", "missing", "facilities", "blind_spots"):
        assert shown[key] == as_json(whole)[key], key
    assert shown["cell_problems"]["cells"] == whole["cell_problems"]["cells"]


# --- siting district by district -----------------------------------------------------------------


def same_sites(district: str, every: dict, alone: dict) -> None:
    """A district's sites in the collection of ``site --all`` are those of ``site --district``
    run alone (the solver's timings aside)."""
    mine = [{**f, "properties": {k: v for k, v in f["properties"].items() if k != "district_code"}}
            for f in every["features"] if f["properties"]["district_code"] == district]
    assert mine == alone["features"], district

    def untimed(p):
        return {k: v for k, v in p.items() if k != "seconds"}

    assert untimed(every["properties"]["districts"][district]) == untimed(alone["properties"]), district


@pytest.fixture(scope="module")
def alone(run, city, tmp_path_factory):
    """``site kindergarten 2 --district D`` run alone for each district: D → its collection."""
    folder = tmp_path_factory.mktemp("alone")
    out = {}
    for district in ("420103", SECOND):
        path = folder / f"{district}.geojson"
        result = run("site", "kindergarten", "2", "--district", district, "-o", str(path))
        assert result.exit_code == 0, result.output
        out[district] = json.loads(path.read_text(encoding="utf-8"))
    assert all(len(body["features"]) == 2 and body["properties"]["households_added"] > 0
               for body in out.values())  # not vacuous: each district gains
    return out


def test_site_all_proposes_in_each_district_as_that_district_alone(run, alone, tmp_path):
    path = tmp_path / "all.geojson"
    result = run("site", "kindergarten", "2", "--all", "--workers", "1", "-o", str(path))
    assert result.exit_code == 0, result.output
    every = json.loads(path.read_text(encoding="utf-8"))
    assert {"420103", SECOND} <= set(every["properties"]["districts"])
    for district in ("420103", SECOND):
        same_sites(district, every, alone[district])
        line = rf"district {district}: 2 sites for kindergarten .* → "
        assert re.search(line, result.stdout), result.stdout
    assert "on 1 workers" in result.output


@needs_dask
@pytest.mark.parametrize("city", ["postgis"], indirect=True)  # the workers share one PostGIS
def test_a_local_cluster_of_two_processes_sites_as_each_district_alone(city, alone, dask_client):
    from layers.coverage.districts import site_all
    from layers.plans.scale import DaskRunner

    _url, engine, _whole = city
    made = site_all(engine, "kindergarten", 2, runner=DaskRunner(dask_client))
    assert made.workers == 2
    every = made.collection()
    for district in ("420103", SECOND):
        same_sites(district, every, alone[district])


def border_candidates(engine, path):
    """A candidate-sites file on the two-district city: ``ON``, a vertex of the boundary the two
    districts share (in both outlines); ``NEAR``, a few metres into the second district beside
    it; ``FAR1``/``FAR2`` well inside each district; ``OUT`` in no district."""
    outlines = read_layer(engine, "districts").set_index("code").geometry
    first, second = outlines["420103"], outlines[SECOND]
    shared = shapely.get_coordinates(shapely.intersection(first.boundary, second.boundary))
    on = shapely.Point(shared[len(shared) * 50 // 138])  # one both districts gain from (checked)
    near = next(p for p in (shapely.Point(on.x + dx, on.y + dy) for dx in (-4e-5, 0, 4e-5)
                            for dy in (-4e-5, 0, 4e-5)) if second.contains(p) and not first.intersects(p))
    far = [mine.difference(other.buffer(0.005)).representative_point()
           for mine, other in ((first, second), (second, first))]
    _x0, _y0, x1, y1 = outlines.total_bounds
    points = gpd.GeoDataFrame({"code": ["ON", "NEAR", "FAR1", "FAR2", "OUT"]}, crs=4326,
                              geometry=[on, near, *far, shapely.Point(x1 + 0.1, y1 + 0.1)])
    assert first.covers(on) and second.covers(on)  # on the boundary exactly
    points.to_file(path, driver="GeoJSON")
    return points


def test_a_candidate_on_a_district_boundary_is_offered_to_one_district(run, city, tmp_path):
    from layers.coverage.districts import place_candidates

    _url, engine, _whole = city
    path = tmp_path / "candidates.geojson"
    points = border_candidates(engine, path)
    # the lowest code takes a site on the boundary; a site in no district is nobody's
    assert place_candidates(engine, points).tolist() == ["420103", SECOND, "420103", SECOND, None]
    every_path = tmp_path / "all.geojson"
    result = run("site", "elderly_care", "2", "--all", "--workers", "1", "--candidates", str(path),
                 "-o", str(every_path))
    assert result.exit_code == 0, result.output
    assert "1 of the 5 candidate sites lie in no district of the database: left out" in result.output
    every = json.loads(every_path.read_text(encoding="utf-8"))
    chosen = [(f["properties"]["code"], f["properties"]["district_code"]) for f in every["features"]]
    codes = [code for code, _district in chosen]
    assert len(codes) == len(set(codes)), chosen  # no site proposed twice (nor counted twice)
    assert ("ON", "420103") in chosen and "OUT" not in codes, chosen  # not vacuous: the border site chosen
    offered = every["properties"]["candidates"]
    assert offered["given"] == 5 and offered["left_out"] == 1, offered
    assert not {"420103", SECOND} & set(offered["districts_without"]), offered  # (an earlier test's 420198)
    total = sum(p["households_added"] for p in every["properties"]["districts"].values())
    assert total == sum(f["properties"]["households_added"] for f in every["features"])
    for district, left in (("420103", 3), (SECOND, 3)):
        alone_path = tmp_path / f"{district}.geojson"
        result = run("site", "elderly_care", "2", "--district", district, "--candidates", str(path),
                     "-o", str(alone_path))
        assert result.exit_code == 0, result.output
        assert f"{left} of the 5 candidate sites lie outside district {district}: left out" in result.output
        same_sites(district, every, json.loads(alone_path.read_text(encoding="utf-8")))
    # candidates in no district at all: refused in one line, nothing written
    outside = tmp_path / "outside.geojson"
    points[points["code"] == "OUT"].to_file(outside, driver="GeoJSON")
    for args in (("--all",), ("--district", SECOND)):
        written = tmp_path / "x.json"
        result = run("site", "elderly_care", "2", *args, "--candidates", str(outside), "-o", str(written))
        assert result.exit_code == 1 and "none of the 1 candidate sites lies in" in result.output, args
        assert not written.exists()


def test_site_all_refuses_bad_input_in_one_line_with_nothing_written(run, tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDPLAN_DASK_CONNECT_TIMEOUT", "1")
    path = tmp_path / "x.geojson"
    for args, words in ((("casino", "2"), "unknown facility kind"),
                        (("kindergarten", "0"), "k must be a whole number above 0"),
                        (("kindergarten", "x"), "k must"),
                        (("kindergarten", "100000"), "at most 1,000"),
                        (("kindergarten", "2", "--radius", "99999"), "radius"),
                        (("kindergarten", "2", "--district", SECOND), "leave out --street and --district"),
                        (("kindergarten", "2", "--cluster", "tcp://127.0.0.1:9"), "tcp://127.0.0.1:9")):
        result = run("site", *args, "--all", "-o", str(path))
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and words in lines[0], (args, result.output)
        assert "Traceback" not in result.output and not path.exists(), args


def test_households_at_their_buildings_are_counted_as_in_one_piece(city):
    # last in the module: it adds buildings (households then sit at their buildings, not at their
    # unit's inside point) to the shared city
    _url, engine, _whole = city
    units = read_layer(engine, "units")
    lived = units[units["households"] > 0].iloc[::3]  # every third unit with households: two buildings
    parts = []
    for half, share in ((0, 0.6), (1, 0.4)):
        part = lived[["code", "district_code"]].rename(columns={"code": "unit_code"})
        part["code"] = part["unit_code"] + f"B{half}"
        part["households"] = (lived["households"] * share).round().astype(int)
        part["population"] = 0
        cells = lived.geometry.apply(lambda g, half=half: box(*g.bounds).intersection(g).centroid.buffer(
            0.00005 * (half + 1)))
        parts.append(gpd.GeoDataFrame(part, geometry=cells.values, crs=4326))
    with engine.begin() as conn:
        write_layer(conn, "buildings", gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=4326),
                    mode="append")
    whole = gaps.report_for(engine)
    made = report_all(engine, runner=SerialRunner())
    assert as_json(made.report) == as_json(whole)


def test_a_worker_killed_mid_write_of_its_cells_leaves_the_cells_of_one_piece(two_cities, tmp_path,
                                                                             monkeypatch):
    serial, districts = two_cities
    rules = grid_rules(serial)
    generate_grid(serial, rules)
    marker = tmp_path / "died"
    monkeypatch.setenv("GRIDPLAN_TEST_DIE_IN_DISTRICT", f"{SECOND}:{marker}")
    pool = PoolRunner(2)
    made = grid_all(districts, rules, runner=pool)
    assert marker.exists(), "the worker did not die where the test wanted it to"
    assert pool.restarts == 1 and made.districts == ["420103", SECOND]
    assert cells_of(districts).equals(cells_of(serial))


def test_a_small_city_in_one_piece_and_one_of_units_alone_by_its_units_districts(city, tmp_path, monkeypatch):
    """Below ``BY_DISTRICT_UNITS`` with no scheduler named, the city's report job makes the report
    in one piece (cheaper, and it shares its reading with the siting models); a larger database of
    units and facilities alone (no streets, no districts: a census study) is reported district by
    district, its districts those its units carry (before: none found, so it went in one piece),
    with the single-process numbers either way."""
    from geodata import jobs
    from geodata.db import get_engine as engine_of
    from geodata.migrate import upgrade
    from geodata.standards import seed_settings
    from geodata.store import read_layer, write_layer
    from layers import worker

    _url, engine, _whole = city
    monkeypatch.delenv("GRIDPLAN_DASK_SCHEDULER", raising=False)
    monkeypatch.setenv("GRIDPLAN_SITING_CACHE", str(tmp_path / "siting"))
    alone = engine_of(f"sqlite:///{tmp_path / 'units.sqlite'}")
    upgrade(alone)
    with alone.begin() as conn:
        seed_settings(conn)
        for layer in ("units", "facilities"):
            write_layer(conn, layer, read_layer(engine, layer))
    for db, threshold, by_district in ((engine, worker.BY_DISTRICT_UNITS, False), (alone, 10, True)):
        monkeypatch.setattr(worker, "BY_DISTRICT_UNITS", threshold)
        whole = as_json(gaps.report_for(db))
        jobs.create_job(db, worker.COVERAGE_REPORT, {"street": None, "method": None}, per_user=0)
        job = worker.run_one(db)
        assert job["status"] == "done", job
        said = job["message"] or ""
        assert re.match(r"2/2 districts", said) if by_district else "districts" not in said, said
        assert {k: v for k, v in job["result"].items() if k not in cache_keys()} == whole
    alone.dispose()


def cache_keys():
    from layers.coverage import cache

    return cache.CACHE_KEYS
