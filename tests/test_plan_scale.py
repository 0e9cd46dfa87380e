"""Plans of a province, district by district (issue 19, items 1–2): the same plan, row for row,
whether a street is planned alone or with its district, serially or on several workers, after a
worker died half-way, or with a district written twice; every statement of a district's task
names its district; a scheduler that cannot be reached fails with one line and writes nothing."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import os
import re
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box
from sqlalchemy import func, select, text

from geodata import plan_rows
from geodata.db import get_engine
from geodata.models import Plan, PlanAssignment
from geodata.store import write_layer
from layers.plans.files import collector_paused, home_streets_of_district, units_from_database
from layers.plans.memory import PlanMemory, plan_rules
from layers.plans.scale import (
    DistrictTask,
    PoolRunner,
    SerialRunner,
    dask_available,
    plan_all,
    plan_district,
)
from layers.plans.workflow import auto_plan
from layers.sample_data.country import tile, write_country
from layers.sample_data.demo import write_demo
from tests.conftest import make_app, recorded, streets_of


def rows(engine, plan_id: int) -> pd.Series:
    return plan_rows.plan_assignment(engine, plan_id).sort_index()


_names = itertools.count()


def module_database(request, tmp_path_factory) -> str:
    """A fresh migrated database of the kind ``request.param`` names, kept for the module (its
    tests add plans to it and read their own)."""
    if request.param == "spatialite":
        path = tmp_path_factory.mktemp("scale") / "gridplan.sqlite"
        shutil.copy(request.getfixturevalue("spatialite_template"), path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("postgis_server")
    name = f"scale_{next(_names)}"
    admin = get_engine(server.url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template_gridplan")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def crossing_demo(small_demo):
    """The small demo with a whole community of one street recoded as a bigger community of the
    neighbouring street (a community across a street boundary, as imported data have them): it is
    at home in the other street, so planning this street — alone or with its district — must not
    keep its code here. Returns (demo, a unit of the recoded community, the code it was given)."""
    units = small_demo.layers["units"].copy()
    by_code = units.set_index("code")
    street, community = by_code["street_code"], by_code["community_code"]
    totals = units.groupby("community_code")["households"].sum()
    pairs = small_demo.adjacency
    pairs = pd.concat([pairs, pairs.rename(columns={"unit_a": "unit_b", "unit_b": "unit_a"})])
    a, b = pairs["unit_a"].map(community), pairs["unit_b"].map(community)
    across = pairs[(pairs["unit_a"].map(street) != pairs["unit_b"].map(street)) & a.notna() & b.notna()
                   & (a.map(totals) > b.map(totals) + 200) & (b.map(totals) >= 1000)]
    host, guest = community[across.iloc[0]["unit_a"]], community[across.iloc[0]["unit_b"]]
    moved = units["community_code"] == guest
    units.loc[moved, "community_code"] = host
    demo = dataclasses.replace(small_demo, layers=small_demo.layers | {"units": units})
    return demo, units.loc[moved, "code"].iloc[0], host


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def city(request, tmp_path_factory, crossing_demo):
    """One district (the crossing demo) in a database of each kind: (url, engine)."""
    url = module_database(request, tmp_path_factory)
    engine = get_engine(url)
    write_demo(engine, crossing_demo[0])
    return url, engine


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def country(request, tmp_path_factory, small_demo):
    """Two copies of the small demo under district codes 421001 and 421002, in a database of
    each kind; the plan the serial engine makes of it. (engine, country, serial plan, kind)"""
    url = module_database(request, tmp_path_factory)
    engine = get_engine(url)
    made = tile(small_demo, 2)
    write_country(engine, made)
    serial = plan_all(engine, "serial", "planner", runner=SerialRunner())
    return engine, made, serial, request.param


def test_a_street_planned_alone_is_planned_as_with_its_district(city, crossing_demo):
    _url, engine = city
    demo, moved_unit, foreign = crossing_demo
    memory = PlanMemory(engine)
    district_plan, _ = auto_plan(memory, "district", "planner", seed=3)
    whole = rows(engine, district_plan)
    for street in streets_of(demo):
        alone, _ = auto_plan(memory, f"alone {street}", "planner", street=street, seed=3)
        mine = rows(engine, alone)
        assert mine.equals(whole.reindex(mine.index)), street
    # the community across the street boundary keeps its code only in its home street
    assert whole[moved_unit] != foreign


def test_home_streets_come_from_the_whole_district(city, crossing_demo):
    _url, engine = city
    demo, moved_unit, foreign = crossing_demo
    home = home_streets_of_district(engine, "420103")
    assert home[foreign] == foreign[:9]
    assert len(home) == demo.layers["units"]["community_code"].nunique()


def test_every_district_plan_is_the_serial_engine(city, crossing_demo):
    _url, engine = city
    serial_id, serial = auto_plan(PlanMemory(engine), "serial", "planner", seed=5)
    made = plan_all(engine, "all", "planner", seed=5, runner=SerialRunner())
    assert rows(engine, made.plan_id).equals(rows(engine, serial_id))
    assert made.scores == serial.scores()
    plan = plan_rows.get_plan(engine, made.plan_id)
    assert plan["status"] == "draft" and plan["district_code"] == "420103"
    assert plan["streets"] == streets_of(crossing_demo[0]) and plan["scores"]["units"] == len(serial.graph)


def test_a_district_written_twice_leaves_one_copy(city):
    url, engine = city
    made = plan_all(engine, "once", "planner", runner=SerialRunner())
    first = rows(engine, made.plan_id)
    task = DistrictTask(url, made.plan_id, "420103", dataclasses.asdict(plan_rules(engine, {})))
    again = plan_district(task)
    assert again.units == len(first)
    assert rows(engine, made.plan_id).equals(first)


#: the tables split by district (issue 19, item 4): a district's task must name its district
BY_DISTRICT = re.compile(r"\b(units|unit_adjacency|roads|communities|community_history|plan_assignments)\b")


def test_every_statement_of_a_district_names_it(city, crossing_demo):
    url, engine = city
    made = plan_all(engine, "first", "planner", runner=SerialRunner())
    with recorded(engine) as statements:  # the task's engine in this process
        rules = dataclasses.asdict(plan_rules(engine, {}))
        plan_district(DistrictTask(url, made.plan_id, "420103", rules))
        units_from_database(engine, streets_of(crossing_demo[0])[0])  # a street's read too
        home_streets_of_district(engine, "420103")
    touching = [s for s in statements if BY_DISTRICT.search(s)]
    assert len(touching) >= 8, statements
    unscoped = [s for s in touching if "district_code" not in s.split("WHERE", 1)[-1]]
    assert not unscoped, unscoped


def test_a_district_read_sets_off_no_garbage_collection(city):
    """The rows of a district's read are built with the cyclic collector paused: a full collection
    set off by them walks every object of the worker (80–100 ms a few reads apart, docs/scale.md)."""
    _url, engine = city
    units_from_database(engine, district="420103")  # statements compiled, caches filled
    started: list[int] = []

    def count(phase, info):
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        units, adjacency = units_from_database(engine, district="420103")
    finally:
        gc.callbacks.remove(count)
    assert len(units) > 500 and len(adjacency) > 500  # rows enough to set one off without the pause
    # none while the rows are built; at most the youngest generation's, as the pause ends (the
    # allocations counted meanwhile) — without the pause, dozens, and now and then a full one
    assert started in ([], [0]), started
    assert gc.isenabled()


def test_the_collector_pause_nests_and_restores_what_it_found():
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # a process that turned it off itself keeps it off
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_two_workers_plan_two_districts_as_the_serial_engine(country):
    engine, made, serial, _kind = country
    pool = PoolRunner(2)
    parallel = plan_all(engine, "two workers", "planner", runner=pool)
    assert parallel.districts == serial.districts == made.districts
    assert pool.restarts == 0
    assert rows(engine, parallel.plan_id).equals(rows(engine, serial.plan_id))
    assert len(rows(engine, serial.plan_id)) == len(made.layers["units"])
    assert parallel.scores == serial.scores


def test_a_worker_killed_mid_write_leaves_the_serial_rows(country, tmp_path, monkeypatch):
    engine, made, serial, _kind = country
    marker = tmp_path / "died"
    monkeypatch.setenv("GRIDPLAN_TEST_DIE_IN_DISTRICT", f"421002:{marker}")
    pool = PoolRunner(2)
    again = plan_all(engine, "after a death", "planner", runner=pool)
    assert marker.exists(), "the worker did not die where the test wanted it to"
    assert pool.restarts == 1
    assert rows(engine, again.plan_id).equals(rows(engine, serial.plan_id))
    with engine.connect() as conn:
        counts = dict(conn.execute(select(PlanAssignment.district_code, func.count())
                                   .where(PlanAssignment.plan_id == again.plan_id)
                                   .group_by(PlanAssignment.district_code)).all())
    assert counts == {d: len(made.layers["units"]) // 2 for d in made.districts}


@pytest.fixture(scope="module")
def run(city):
    app = make_app(city[0])
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=list(args), catch_exceptions=False)


def test_plan_all_on_the_command_line_names_a_district_without_units(run, city):
    _url, engine = city
    empty = gpd.GeoDataFrame({"code": ["420199"], "name": ["空区"]}, crs=4326,
                             geometry=[box(120.0, 30.0, 120.01, 30.01)])
    with engine.begin() as conn:  # a district the code table knows, with nothing imported yet
        write_layer(conn, "districts", empty, mode="append")
    result = run("plan", "--all", "--workers", "1", "--seed", "5", "--name", "全区")
    assert result.exit_code == 0, result.output
    assert "district 420199 has no units: skipped" in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == ["420199"] and summary["districts"] == 1
    serial_id, serial = auto_plan(PlanMemory(engine), "serial", "planner", seed=5)
    assert rows(engine, summary["plan_id"]).equals(rows(engine, serial_id))
    assert plan_rows.get_plan(engine, summary["plan_id"])["name"] == "全区"


def test_a_scheduler_that_cannot_be_reached_fails_with_nothing_written(run, city, monkeypatch):
    _url, engine = city

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            return (conn.execute(select(func.count()).select_from(Plan)).scalar_one(),
                    conn.execute(select(func.count()).select_from(PlanAssignment)).scalar_one())

    before = counts()
    monkeypatch.setenv("GRIDPLAN_DASK_CONNECT_TIMEOUT", "1")
    result = run("plan", "--all", "--cluster", "tcp://127.0.0.1:9")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "tcp://127.0.0.1:9" in lines[0], result.output
    assert "Traceback" not in result.output
    assert counts() == before


def test_the_district_wide_job_plans_district_by_district(city):
    from geodata import jobs
    from layers import worker

    _url, engine = city
    # no scheduler named: on this machine's cores (where it runs: the test below)
    params = {"name": "job", "author": "planner", "seed": 9}
    job_id = jobs.create_job(engine, "auto_plan", params, per_user=0)
    job = worker.run_one(engine)
    assert job["id"] == job_id and job["status"] == "done", job
    assert re.match(r"(\d+)/\1 districts", job["message"]), job["message"]  # every district done
    serial_id, _ = auto_plan(PlanMemory(engine), "serial", "planner", seed=9)
    assert rows(engine, job["result"]["plan_id"]).equals(rows(engine, serial_id))


def test_a_job_runs_on_the_machines_cores_unless_capped(country, monkeypatch):
    """The district-wide plan job of two districts, no scheduler named: a LocalCluster of this
    machine's cores as ``plan --all`` (the issue's "without a scheduler, the machine's cores"),
    run by a real ``flask worker --once`` (a job's process forked from a process holding dask's
    threads, as this test process may, can hang: the suite caps in-process jobs with
    ``GRIDPLAN_JOB_WORKERS=1``, tests/conftest.py); ``GRIDPLAN_JOB_WORKERS=1`` keeps it in the
    job's process; a value that is no count fails the job naming it, no plan written. Every plan
    the serial engine's, row for row."""
    import subprocess

    from geodata import jobs
    from layers import worker
    from tests.webhelpers import BIN, ROOT

    engine, _made, serial, kind = country
    monkeypatch.delenv("GRIDPLAN_DASK_SCHEDULER", raising=False)
    if kind == "postgis":  # the LocalCluster path on PostGIS (as the other dask tests)
        job_id = jobs.create_job(engine, "auto_plan", {"name": "cores", "author": "planner"}, per_user=0)
        env = {k: v for k, v in os.environ.items() if k != "GRIDPLAN_JOB_WORKERS"}
        env |= {"DATABASE_URL": engine.url.render_as_string(hide_password=False), "SECRET_KEY": "scale",
                "PYTHONPATH": str(ROOT)}
        done = subprocess.run([str(BIN / "flask"), "--app", "webmap", "worker", "--once"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        job = jobs.get_job(engine, job_id)
        assert job["status"] == "done", (job, done.stderr[-2000:])
        assert job["result"]["workers"] == min(os.cpu_count() or 1, 2), job["result"]
        assert rows(engine, job["result"]["plan_id"]).equals(rows(engine, serial.plan_id))
    monkeypatch.setenv("GRIDPLAN_JOB_WORKERS", "1")
    jobs.create_job(engine, "auto_plan", {"name": "capped", "author": "planner"}, per_user=0)
    job = worker.run_one(engine)
    assert job["status"] == "done" and job["result"]["workers"] == 1, job
    assert rows(engine, job["result"]["plan_id"]).equals(rows(engine, serial.plan_id))
    with engine.connect() as conn:
        plans = conn.execute(text("SELECT count(*) FROM plans")).scalar_one()
    monkeypatch.setenv("GRIDPLAN_JOB_WORKERS", "lots")
    jobs.create_job(engine, "auto_plan", {"name": "bad", "author": "planner"}, per_user=0)
    job = worker.run_one(engine)
    assert job["status"] == "failed" and job["message"].startswith("GRIDPLAN_JOB_WORKERS is “lots”"), job
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM plans")).scalar_one() == plans


def test_the_job_fails_naming_a_scheduler_it_cannot_reach(city, monkeypatch):
    from geodata import jobs
    from layers import worker

    _url, engine = city
    monkeypatch.setenv("GRIDPLAN_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setenv("GRIDPLAN_DASK_CONNECT_TIMEOUT", "1")
    with engine.connect() as conn:
        plans = conn.execute(select(func.count()).select_from(Plan)).scalar_one()
    jobs.create_job(engine, "auto_plan", {"name": "job", "author": "planner"}, per_user=0)
    job = worker.run_one(engine)
    assert job["status"] == "failed" and "tcp://127.0.0.1:9" in job["message"], job
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Plan)).scalar_one() == plans


def test_plan_without_all_still_needs_a_file(run):
    result = run("plan", "--seed", "1")
    assert result.exit_code != 0 and "-o" in result.output


# --- on dask.distributed (skipped where it is not installed) -----------------------------------

needs_dask = pytest.mark.skipif(not dask_available() and os.environ.get("CI") != "true",
                                reason="dask.distributed is not installed")
#: the workers of a cluster share one PostGIS (the process pool's tests cover SpatiaLite)
on_postgis = pytest.mark.parametrize("country", ["postgis"], indirect=True)


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of two worker processes (as the issue asks), shared by the dask tests."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client


@needs_dask
@on_postgis
def test_a_local_cluster_of_two_processes_plans_as_the_serial_engine(country, dask_client):
    from layers.plans.scale import DaskRunner

    engine, made, serial, kind = country
    distributed = plan_all(engine, "dask", "planner", runner=DaskRunner(dask_client))
    assert {o.pid for o in distributed.outcomes} <= set(dask_client.run(os.getpid).values())
    assert rows(engine, distributed.plan_id).equals(rows(engine, serial.plan_id))
    assert distributed.scores == serial.scores


@needs_dask
@on_postgis
def test_plan_all_on_this_machines_cores_uses_a_local_cluster(country):
    engine, made, serial, kind = country
    local = plan_all(engine, "local cluster", "planner", workers=2)  # no runner, no scheduler: LocalCluster
    assert local.workers == 2 and len({o.pid for o in local.outcomes}) >= 1
    assert all(o.pid != os.getpid() for o in local.outcomes)
    assert rows(engine, local.plan_id).equals(rows(engine, serial.plan_id))


@needs_dask
@on_postgis
def test_a_dask_worker_killed_mid_write_has_its_task_run_again(country, dask_client, tmp_path, monkeypatch):
    from layers.plans.scale import DaskRunner

    engine, made, serial, kind = country
    marker = tmp_path / "died"
    # the workers are running already: they learn where to die from their environment, set now
    # (a lambda travels by value and finds the worker's own os.environ there)
    spec = f"421001:{marker}"
    dask_client.run(lambda: os.environ.__setitem__("GRIDPLAN_TEST_DIE_IN_DISTRICT", spec))
    monkeypatch.setenv("GRIDPLAN_TEST_DIE_IN_DISTRICT", spec)  # and the worker started in its place
    try:
        again = plan_all(engine, "dask after a death", "planner", runner=DaskRunner(dask_client))
    finally:
        dask_client.run(lambda: os.environ.pop("GRIDPLAN_TEST_DIE_IN_DISTRICT", None))
    assert marker.exists(), "no worker died where the test wanted it to"
    assert rows(engine, again.plan_id).equals(rows(engine, serial.plan_id))


@dataclasses.dataclass
class SlowTask:
    """A district task of the runner test below: its dask ``key`` and how long it takes."""

    key: str
    seconds: float


def slow_outcome(task: SlowTask) -> bytes:
    import time

    time.sleep(task.seconds)
    return bytes(1_000_000)  # an outcome of weight (a coverage report's findings)


@needs_dask
def test_a_districts_outcome_leaves_its_worker_once_taken(dask_client):
    """The runner hands each district's outcome on and has the cluster forget it at once: kept
    until every district was done, 408 coverage outcomes had a worker's memory grow from 310 to
    485 MB (docs/scale.md)."""
    import time

    from layers.plans.scale import DaskRunner

    tasks = [SlowTask(f"gridplan-test-release-{n}", 0.2 + 0.4 * n) for n in range(4)]
    outcomes = DaskRunner(dask_client).run(tasks, slow_outcome)
    assert len(next(outcomes)) == 1_000_000
    known = lambda: dask_client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.tasks))  # noqa: E731
    deadline = time.monotonic() + 10
    while tasks[0].key in known() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tasks[0].key not in known()  # the first district's outcome, taken: forgotten
    assert tasks[-1].key in known()  # a district still running: kept
    assert sum(len(o) for o in outcomes) == 3_000_000


def test_per_street_seeds_do_not_depend_on_the_order(small_demo):
    from layers.plans.engine import street_seed

    streets = streets_of(small_demo)
    seeds = [street_seed(0, s) for s in streets]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [street_seed(0, s) for s in streets[::-1]][::-1]
    assert street_seed(1, streets[0]) != seeds[0]
    assert np.all(np.array(seeds) < 2**64)


def test_a_job_killed_mid_plan_leaves_no_half_made_draft(country):
    """The district-wide plan job's process killed after one district's rows were written (the
    worker stopped, restarted, out of memory): the worker that starts next fails the job and
    discards the half-made plan with its rows — it was listed as an ordinary draft, covering a
    third of the units — and leaves every finished plan as it was."""
    from geodata import jobs, plan_parts
    from layers import worker

    engine, _made, serial, _kind = country
    job_id = jobs.create_job(engine, "auto_plan", {"name": "half", "author": "planner"}, per_user=0)
    with engine.begin() as conn:  # claimed, and its worker gone
        conn.execute(text("UPDATE jobs SET status = 'running', worker = NULL WHERE id = :i"), {"i": job_id})
    half = plan_rows.create_plan(engine, "half", "planner", pd.Series(dtype=object),
                                 params={"street": None, "all": True, "job": job_id}, streets=[])
    done = rows(engine, serial.plan_id)
    assert plan_parts.write_district(engine, half, "421001", done[done.index.str.startswith("421001")]) > 0
    kept = rows(engine, serial.plan_id)
    assert worker.fail_abandoned(engine) == [job_id]
    assert jobs.get_job(engine, job_id)["status"] == "failed"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Plan).where(Plan.id == half)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(PlanAssignment)
                            .where(PlanAssignment.plan_id == half)).scalar_one() == 0
        reason = conn.execute(text("SELECT detail FROM audit_log WHERE action = 'plan:discard' "
                                   "AND object_code = :p"), {"p": str(half)}).scalar_one()
    assert "stopped before it finished" in str(reason)
    assert rows(engine, serial.plan_id).equals(kept)
