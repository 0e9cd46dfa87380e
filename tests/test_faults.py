"""Faults (issue 12, item 5), on each database where it applies.

- ``kill -9`` of the app in the middle of a layer import (``flask import``), of a plan adoption
  (gunicorn answering ``adopt``), of a batch of incident writes (``flask open311-import``) and of
  the job worker running a browser import: afterwards the database holds none of it (byte for
  byte the same), the app starts and serves, the operation done again is done whole, no job stays
  "running" forever, and SQLite's ``PRAGMA integrity_check`` says ok. The processes are killed
  inside the open transaction: ``GRIDPLAN_TEST_PAUSE_AT`` makes them wait there
  (:func:`geodata.db.pause_for_fault_tests`); ``scripts/bench_hardening.py --parts faults`` kills
  them at random moments instead.
- PostgreSQL stopped and started again under requests (a cluster of this test's own): during the
  outage every request gets a 503 naming the unreachable database, none a 500 or a hang; after it,
  the same app answers again (the pool recovers).
- SQLite on a full disk (a small tmpfs): a report, a plan edit, a failed sign-in and a command-line
  import each get a clear refusal naming the full disk; nothing is half-written, the file passes
  ``PRAGMA integrity_check``; once space is freed the same app works again.

The helpers are shared with the bench.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pytest
import requests
from sqlalchemy import text

from geodata import jobs
from geodata.db import CONNECT_TIMEOUT_S, dispose_engines, get_engine
from geodata.models import Base
from geodata.partitions import partition_by_district
from layers.sample_data.demo import write_demo
from tests.conftest import PARTITIONED, demo_site, make_app, require
from tests.pgcluster import free_port
from tests.webhelpers import PASSWORD, csrf_token, sign_in, snapshot

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

#: tables an operation killed half-way may rightly have touched outside its own transaction
JOB_TABLES = ("jobs",)


# --- helpers (the bench uses them too) ---------------------------------------------------------------


def app_env(url: str, **extra: str) -> dict:
    return {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "faults", "GRIDPLAN_BASEMAP": "none",
            "GRIDPLAN_LOCALE": "en", "PYTHONPATH": str(ROOT), **extra}


def start(args: list[str], url: str, log: Path, pause_at: str | None = None) -> subprocess.Popen:
    """Start ``args`` in a session of its own (so ``kill9`` reaches every process of it)."""
    env = app_env(url, **({"GRIDPLAN_TEST_PAUSE_AT": pause_at} if pause_at else {}))
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            start_new_session=True)


def wait_for_line(log: Path, line: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {line!r}:\n"
                                 + log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    raise AssertionError(f"no {line!r} within {timeout} s:\n" + log.read_text(errors="replace")[-3000:])


def kill9(process: subprocess.Popen) -> None:
    """``kill -9`` the process and every process it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def integrity(url: str) -> str:
    """SQLite's ``PRAGMA integrity_check`` (``ok``), or ``-`` for PostGIS."""
    if not url.startswith("sqlite"):
        return "-"
    connection = sqlite3.connect(url.split(":///", 1)[1])
    try:
        return "; ".join(r[0] for r in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


def units_update_file(demo, folder: Path, more: int = 1) -> Path:
    """Every unit of the demo with ``more`` households: an import in ``update`` mode changes them all."""
    units = demo.layers["units"].copy()
    units["households"] = units["households"] + more
    path = folder / ("units.gpkg" if more == 1 else f"units{more}.gpkg")
    units.to_file(path, driver="GPKG")
    return path


def logged(rows: dict, action: str) -> int:
    """Audit log entries of ``action`` in a snapshot."""
    column = list(Base.metadata.tables["audit_log"].columns.keys()).index("action")
    return sum(1 for r in rows["audit_log"] if r[column] == action)


def import_outcome(url: str, before: dict, demo, leave_out: tuple[str, ...] = (), more: int = 1) -> str:
    """``none`` (the database as before), ``all`` (every unit updated, the import logged once more)
    or ``partial``."""
    after = snapshot(url, leave_out=leave_out)
    if after == before:
        return "none"
    with get_engine(url).connect() as conn:
        stored = dict(conn.execute(text("SELECT code, households FROM units")).all())
    expected = dict(zip(demo.layers["units"]["code"], demo.layers["units"]["households"] + more, strict=True))
    added = logged(after, "import:update") - logged(before, "import:update")
    return "all" if stored == expected and added == 1 else "partial"


def open311_file(demo, folder: Path, n: int, prefix: str = "f") -> Path:
    """``n`` GeoReport requests at points inside the demo's units (codes ``311-<prefix><i>``)."""
    points = gpd.GeoSeries(demo.layers["units"].geometry.representative_point(), crs=demo.layers["units"].crs)
    points = points.to_crs(4326)
    records = [{"service_request_id": f"{prefix}{i}", "service_name": "Street light out",
                "description": f"fault {i}",
                "lat": points.iloc[i % len(points)].y, "long": points.iloc[i % len(points)].x,
                "requested_datetime": "2026-10-01T09:00:00", "status": "open", "agency_responsible": "街道"}
               for i in range(n)]
    path = folder / f"requests-{prefix}.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def open311_outcome(url: str, before: dict, n: int, prefix: str = "f") -> str:
    if snapshot(url) == before:
        return "none"
    like = {"p": f"311-{prefix}%"}
    with get_engine(url).connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM incidents WHERE code LIKE :p"), like).scalar_one()
        steps = conn.execute(text("SELECT count(*) FROM incident_steps s JOIN incidents i "
                                  "ON i.id = s.incident_id WHERE i.code LIKE :p"), like).scalar_one()
    return "all" if stored == n and steps == 3 * n else "partial"


def approved_plan(url: str, demo, token_name: str = "faults-admin") -> tuple[int, int, str]:
    """A plan of the demo's first street with one unit moved, submitted and approved; its id,
    version and an administrator's API token."""
    from webmap.auth import add_token

    app = make_app(url)
    with app.app_context():
        token = add_token(token_name, "admin")
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    street = demo.layers["streets"]["code"].iloc[0]
    made = client.post("/api/plans", json={"name": "故障方案", "street": street}, headers=bearer)
    assert made.status_code == 201, made.get_data(as_text=True)
    plan_id = made.json["plan_id"]
    unit = client.get(f"/api/plans/{plan_id}/units", headers=bearer).json["features"][0]["properties"]["code"]
    version = client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                          headers=bearer).json["version"]
    for action in ("submit", "approve"):
        # the one-unit community is below the household minimum: each step says why it goes on
        answer = client.post(f"/api/plans/{plan_id}/status",
                             json={"action": action, "version": version, "reason": "测试"}, headers=bearer)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        version = answer.json["version"]
    dispose_engines()
    return plan_id, version, token


def adoption_outcome(url: str, before: dict, plan_id: int) -> str:
    after = snapshot(url)
    if after == before:
        return "none"
    with get_engine(url).connect() as conn:
        status = conn.execute(text("SELECT status FROM plans WHERE id = :p"), {"p": plan_id}).scalar_one()
        revision = conn.execute(text("SELECT count(*) FROM boundary_changes WHERE plan_id = :p"),
                                {"p": plan_id}).scalar_one()
    added = logged(after, "plan:adopt") - logged(before, "plan:adopt")
    return "all" if status == "adopted" and added == 1 and revision == 1 else "partial"



def serve(url: str, log: Path, pause_at: str | None = None) -> tuple[subprocess.Popen, str]:
    """gunicorn (one worker) on ``url``, answering; its process and base address."""
    port = free_port()
    web = start([str(BIN / "gunicorn"), "--workers", "1", "--timeout", "600", "--bind", f"127.0.0.1:{port}",
                 "webmap.wsgi:app"], url, log, pause_at)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            requests.get(f"{base}/login", timeout=5)
            return web, base
        except requests.RequestException:
            if web.poll() is not None:
                raise AssertionError(log.read_text()[-3000:]) from None
            time.sleep(0.1)
    raise AssertionError("gunicorn did not answer")


def adopt_in_background(base: str, plan_id: int, version: int, token: str) -> threading.Thread:
    def post() -> None:
        try:
            requests.post(f"{base}/api/plans/{plan_id}/status", json={"action": "adopt", "version": version,
                                                                      "reason": "测试"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=600)
        except requests.RequestException:
            pass  # the server was killed under it

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


@contextmanager
def small_disk(folder: Path, megabytes: int):
    """A tmpfs of ``megabytes`` mounted on ``folder`` (root only), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        dispose_engines()
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte with one file; returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


# --- kill -9 ------------------------------------------------------------------------------------------


@pytest.fixture
def demo_db(db_url, small_demo):
    write_demo(get_engine(db_url), small_demo)
    dispose_engines()
    return db_url


def cli(url: str):

    runner = make_app(url).test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def test_an_import_killed_mid_transaction_leaves_nothing_and_runs_whole_again(demo_db, small_demo, tmp_path):
    path = units_update_file(small_demo, tmp_path)
    before = snapshot(demo_db)
    log = tmp_path / "import.log"
    process = start([str(BIN / "flask"), "--app", "webmap", "import", "units", str(path), "--mode", "update"],
                    demo_db, log, pause_at="import")
    wait_for_line(log, "paused at import", process)
    kill9(process)
    assert process.returncode == -signal.SIGKILL
    assert import_outcome(demo_db, before, small_demo) == "none"
    assert integrity(demo_db) == "ok" or not demo_db.startswith("sqlite")
    again = cli(demo_db)("import", "units", str(path), "--mode", "update")
    assert again.exit_code == 0, again.output
    dispose_engines()
    assert import_outcome(demo_db, before, small_demo) == "all"


def test_an_adoption_killed_mid_transaction_leaves_nothing_and_is_adopted_after_restart(demo_db, small_demo,
                                                                                         tmp_path):
    plan_id, version, token = approved_plan(demo_db, small_demo)
    before = snapshot(demo_db)
    log = tmp_path / "gunicorn.log"
    web, base = serve(demo_db, log, pause_at="adopt")
    try:
        adopt_in_background(base, plan_id, version, token)
        wait_for_line(log, "paused at adopt", web)
    finally:
        kill9(web)
    assert adoption_outcome(demo_db, before, plan_id) == "none"
    assert integrity(demo_db) == "ok" or not demo_db.startswith("sqlite")
    # the app started again serves, and the same adoption goes through whole
    web, base = serve(demo_db, tmp_path / "gunicorn-again.log")
    try:
        answer = requests.post(f"{base}/api/plans/{plan_id}/status", timeout=120,
                               json={"action": "adopt", "version": version, "reason": "测试"},
                               headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    finally:
        web.terminate()
        web.wait(timeout=30)
    assert adoption_outcome(demo_db, before, plan_id) == "all"


def test_a_batch_of_reports_killed_mid_transaction_leaves_none_of_them(demo_db, small_demo, tmp_path):
    n = 60
    path = open311_file(small_demo, tmp_path, n)
    before = snapshot(demo_db)
    log = tmp_path / "open311.log"
    process = start([str(BIN / "flask"), "--app", "webmap", "open311-import", str(path), "--kind", "open311",
                     "--default-category", "E01-01"], demo_db, log, pause_at="open311")
    wait_for_line(log, "paused at open311", process)
    kill9(process)
    assert open311_outcome(demo_db, before, n) == "none"
    assert integrity(demo_db) == "ok" or not demo_db.startswith("sqlite")
    again = cli(demo_db)("open311-import", str(path), "--kind", "open311", "--default-category", "E01-01")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output.strip().splitlines()[-1])["imported"] == n
    dispose_engines()
    assert open311_outcome(demo_db, before, n) == "all"


def test_a_worker_killed_mid_import_leaves_nothing_and_its_job_is_failed_on_restart(
        spatialite_url, small_demo, tmp_path):
    from layers import worker
    from layers.onboarding import imports as layer_import

    url = spatialite_url
    engine = get_engine(url)
    write_demo(engine, small_demo)
    folder = tmp_path / "uploads" / "a1"
    folder.mkdir(parents=True)
    units_update_file(small_demo, folder)
    job_id = jobs.create_job(engine, layer_import.KIND, {
        "layer": "units", "folder": str(folder), "file": "units.gpkg", "mode": "update", "crs": None,
        "mapping": {}, "district": None, "actor": "planner"})
    dispose_engines()
    before = snapshot(url, leave_out=JOB_TABLES)
    log = tmp_path / "worker.log"
    process = start([str(BIN / "flask"), "--app", "webmap", "worker"], url, log, pause_at="import")
    wait_for_line(log, "paused at import", process)
    kill9(process)
    assert jobs.get_job(engine, job_id)["status"] == "running"  # what the killed worker left
    assert import_outcome(url, before, small_demo, leave_out=JOB_TABLES) == "none"
    assert integrity(url) == "ok"
    # a worker started again fails the abandoned job (nothing of it was kept) and removes its upload
    assert worker.fail_abandoned(engine) == [job_id]
    job = jobs.get_job(engine, job_id)
    assert job["status"] == "failed" and "start it again" in job["message"] and job["finished_at"]
    assert not folder.exists()
    assert worker.fail_abandoned(engine) == []
    dispose_engines()


def test_a_running_job_of_a_live_worker_is_left_alone(spatialite_url):
    engine = get_engine(spatialite_url)
    job_id = jobs.create_job(engine, "auto_plan", {})
    with engine.begin() as conn:  # claimed by a live process of this host: the test's parent
        conn.execute(text("UPDATE jobs SET status = 'running', worker = :w WHERE id = :i"),
                     {"w": f"{jobs.this_worker().rsplit(':', 1)[0]}:{os.getppid()}", "i": job_id})
    from layers import worker

    assert worker.fail_abandoned(engine) == []
    assert jobs.get_job(engine, job_id)["status"] == "running"
    dispose_engines()


# --- PostgreSQL restarted under requests ------------------------------------------------------------


def hammer(client_of, base_headers: dict, paths: list[str], stop: threading.Event, seen: list) -> None:
    """Ask ``paths`` in turn until ``stop``; note (time, status, code, seconds) of each answer."""
    client = client_of()
    i = 0
    while not stop.is_set():
        path = paths[i % len(paths)]
        i += 1
        began = time.monotonic()
        answer = client.get(path, headers=base_headers)
        body = answer.get_json(silent=True) or {}
        seen.append((began, answer.status_code, body.get("code"), body.get("detail"),
                     time.monotonic() - began, answer.headers.get("Retry-After")))
        time.sleep(0.02)


@pytest.mark.postgis  # its own cluster, to restart it
def test_postgres_restarted_under_requests_gives_503s_then_answers_again(small_demo):
    from tests import pgcluster

    require(pgcluster.available(), "PostgreSQL 15 with PostGIS")
    from geodata.migrate import upgrade
    from geodata.standards import seed_settings
    from webmap.auth import add_token

    cluster = pgcluster.PostgisCluster(dbname="restarted")
    cluster.start()
    try:
        url = cluster.url
        engine = get_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            seed_settings(conn)
        if PARTITIONED:  # as the other PostGIS tests' databases
            partition_by_district(engine)
        write_demo(engine, small_demo)
        app = make_app(url)
        with app.app_context():
            token = add_token("restart-viewer", "viewer")
        minx, miny, maxx, maxy = small_demo.layers["units"].total_bounds
        paths = [f"/api/collections/units/items?bbox={minx},{miny},{maxx},{maxy}&limit=50",
                 "/api/collections/communities/items?limit=5", "/api/layers"]
        seen: list = []
        stop = threading.Event()
        bearer = {"Authorization": f"Bearer {token}"}
        threads = [threading.Thread(target=hammer, args=(app.test_client, bearer, paths, stop, seen))
                   for _ in range(4)]
        for t in threads:
            t.start()
        try:
            # stop only once each hammer has had an answer: on a busy machine the first requests
            # (a cold app, four threads on two cores) took more than a fixed second
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(1 for s in list(seen) if s[1] == 200) < len(threads):
                time.sleep(0.1)
            down_at = time.monotonic()
            cluster.stop_server("fast")
            time.sleep(4.0)  # long enough to see answers while it is down, on a busy machine too
            up_at = time.monotonic()
            cluster.start_server()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(s[0] > up_at and s[1] == 200 for s in list(seen)):
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        statuses = {s[1] for s in seen}
        assert statuses <= {200, 503}, sorted(statuses)
        before = [s for s in seen if s[0] + s[4] < down_at]  # answered before the stop began
        during = [s for s in seen if down_at + 0.5 < s[0] and s[0] + s[4] < up_at]
        assert before and all(s[1] == 200 for s in before)
        assert during and all(s[1] == 503 for s in during), [s[1] for s in during]
        for _began, _status, code, detail, seconds, retry in (s for s in seen if s[1] == 503):
            assert code == "DatabaseUnreachable" and "cannot be reached" in detail and retry == "5"
            assert seconds < CONNECT_TIMEOUT_S + 2
        recovered = [s for s in seen if s[0] > up_at and s[1] == 200]
        assert recovered, "the app did not answer again after PostgreSQL came back"
        last = max(s[0] for s in seen)
        # once it answers again it stays up: a request begun in the first second may still meet
        # the server finishing its start (seen once under parallel load), none after that
        settled = recovered[0][0] + 1.0
        late = [(round(s[0] - recovered[0][0], 2), s[1], s[2]) for s in seen
                if s[0] > recovered[0][0] and s[1] != 200]
        assert all(s[1] == 200 for s in seen if settled < s[0] < last - 0.01), late
        page = app.test_client().get("/api/layers", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200
    finally:
        dispose_engines()
        cluster.stop()


# --- SQLite on a full disk ---------------------------------------------------------------------------------


def test_sqlite_on_a_full_disk_refuses_clearly_keeps_the_file_whole_and_recovers(
        spatialite_template, small_demo, tmp_path):

    with small_disk(tmp_path / "disk", 40) as disk:
        if disk is None:
            require(False, "a tmpfs mount (root)")
        path = disk / "gridplan.sqlite"
        path.write_bytes(spatialite_template.read_bytes())
        url = f"sqlite:///{path}"
        # as in production, an error after the view (the sign-in limiter's count) is answered, not raised
        app, secrets = demo_site(url, small_demo, PROPAGATE_EXCEPTIONS=False,
                                 UPLOAD_FOLDER=str(disk / "uploads"))
        plan_id, version, token = approved_plan(url, small_demo)
        with get_engine(url).connect() as conn:  # an empty WAL: every write needs new space
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        dispose_engines()
        units = units_update_file(small_demo, tmp_path)
        editor = app.test_client()  # an administrator signed in, on the layers page
        assert sign_in(editor, "admin").status_code == 302
        form_token = {"X-CSRFToken": csrf_token(editor.get("/layers").get_data(as_text=True))}
        dispose_engines()
        before = snapshot(url)
        filler = fill(disk)
        client = app.test_client()
        report = {"community": secrets["scope"], "category": "E01-01", "description": "满盘"}
        supervisor = {"Authorization": f"Bearer {secrets['supervisor_token']}"}
        admin = {"Authorization": f"Bearer {token}"}

        answer = client.post("/api/incidents", json=report, headers=supervisor)
        assert answer.status_code == 503 and answer.json["code"] == "DiskFull", answer.get_data(as_text=True)
        assert "disk is full" in answer.json["detail"]
        answer = client.post(f"/api/plans/{plan_id}/rename", json={"name": "改名", "version": version},
                             headers=admin)
        assert answer.status_code == 503 and answer.json["code"] == "DiskFull", answer.get_data(as_text=True)
        page = client.get("/login")
        failed = client.post("/login", data={"name": "viewer", "password": "wrong",
                                             "csrf_token": csrf_token(page.get_data(as_text=True))})
        assert failed.status_code == 503 and "disk is full" in failed.get_data(as_text=True)
        upload = editor.post("/api/layers/units/preview", headers=form_token,
                             data={"file": (units.open("rb"), "units.gpkg")})
        assert upload.status_code == 503 and upload.json["code"] == "DiskFull", upload.get_data(as_text=True)
        imported = cli(url)("import", "units", str(units), "--mode", "update")
        assert imported.exit_code == 1 and "disk is full" in imported.output, imported.output
        assert "Traceback" not in imported.output
        dispose_engines()
        assert snapshot(url) == before  # nothing half-written
        assert integrity(url) == "ok"

        filler.unlink()  # space again: the same app answers
        answer = client.post("/api/incidents", json=report, headers=supervisor)
        assert answer.status_code == 201, answer.get_data(as_text=True)
        token_now = csrf_token(client.get("/login").get_data(as_text=True))
        signed = client.post("/login", data={"name": "viewer", "password": PASSWORD, "csrf_token": token_now})
        assert signed.status_code == 302
        imported = cli(url)("import", "units", str(units), "--mode", "update")
        assert imported.exit_code == 0, imported.output
        dispose_engines()
        assert integrity(url) == "ok"



# --- what each database failure is called ---------------------------------------------------------------


def test_each_database_failure_is_named_in_the_readers_language(tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from geodata.db import database_trouble

    # PostgreSQL not listening: unreachable, within the connect timeout, in Chinese and English
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gridplan"
    app = make_app(closed)
    began = time.monotonic()
    answer = app.test_client().get("/api/layers", headers={"Authorization": "Bearer x",
                                                            "Accept-Language": "zh"})
    assert time.monotonic() - began < CONNECT_TIMEOUT_S + 2
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json["code"] == "DatabaseUnreachable" and "无法连接数据库" in answer.json["detail"]
    browser = app.test_client()
    form = {"name": "planner", "password": PASSWORD,
            "csrf_token": csrf_token(browser.get("/login").get_data(as_text=True))}
    page = browser.post("/login", data=form, headers={"Accept-Language": "en"})
    assert page.status_code == 503 and "The database cannot be reached" in page.get_data(as_text=True)
    # a file without the schema: not ready, run init-db
    empty = make_app(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    answer = empty.test_client().get("/api/layers", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 503 and answer.json["code"] == "DatabaseNotReady"
    assert "init-db" in answer.json["detail"]
    # SQLite's one write lock held past the timeout: busy
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        impatient = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with pytest.raises(OperationalError) as locked, impatient.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        trouble = database_trouble(locked.value)
        assert trouble.code == "DatabaseBusy" and trouble.status == 503 and trouble.retry_after
        impatient.dispose()
    finally:
        holder.close()
    dispose_engines()
