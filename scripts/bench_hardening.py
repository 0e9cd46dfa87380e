"""Benchmark: gridplan under attack and load — a first version of issue 12's figures.

Parts (``--parts``, all by default):

- ``signin``: the time of a failed sign-in with a known name and with an unknown one (medians
  of ``--signin-tries`` each; they should match: both cost one scrypt), and how many wrong
  passwords one account gets before the 429 with the default limits;
- ``access``: every route × every caller (four roles, nobody, a wrong and a revoked token)
  against the table in ``tests/test_access_matrix.py``: requests, outcomes, mismatches;
- ``load``: ``--clients`` concurrent clients for ``--seconds`` against gunicorn (two workers,
  ``webmap.wsgi:app`` as ``make run`` serves it) on loopback, on each database: map reads
  (units by bounding box, a plan's units in view), incident reports and plan edits (read the
  version, then move a unit or rename the plan: racing clients get 409); 5xx and connection
  errors, p50/p95 per kind, and afterwards the writes counted in the database (no report lost or
  stored twice, one plan version per saved edit, every moved unit where its last saved move put it);
- ``backup``: ``flask backup`` and ``flask restore`` into a fresh database, on each database:
  seconds and bytes;
- ``files``: the corpus of hostile layer files (``tests/hostile_files.py``, about 650 with the
  million-vertex polygons) through the layers page's upload (test client: preview, then the
  import job) and ``flask --app webmap import`` as separate processes under RLIMIT_AS
  (``--files-memory-mb``) and a time limit, on each database: files tried, outcomes by status and
  exit code, refusals that do not name the problem, max seconds, max RSS, and whether every table
  is byte for byte the same afterwards (``--files-processes N``: only N cases as processes).
- ``race``: two callers released at once against gunicorn (two workers) on each database:
  ``--race-rounds`` rounds of two planners editing one plan version (moves, renames, community
  names) and of two supervisors (or a supervisor and an admin) acting on one case version, and
  ``--race-adoptions`` adoptions racing a units import run from the bench's own process; winners,
  conflicts, 5xx, and from the database afterwards lost updates, adoptions written onto units
  changed meanwhile, and gaps or repeats in the boundary revision;
- ``faults``: ``kill -9`` at random moments (``--fault-tries`` each) of ``flask import``, of
  gunicorn adopting a plan and of ``flask open311-import``, on each database: outcomes none / all /
  partial (never partial), kills that landed inside the transaction, integrity checks; PostgreSQL
  stopped 5 s and started again under ``--restart-clients`` clients (statuses, 5xx other than 503,
  seconds until the same app answers again); SQLite on a full tmpfs (root): faults survived / tried.
- ``inject``: on each database, every injection string of ``tests/hostile_text.py`` (and the
  array forms ``a[]=``) on every query parameter and path part of ``tests/test_injection.py``'s
  tables, as an administrator and as a supervisor, and in every text of the write routes' JSON
  bodies: requests, outcomes by status, 5xx, answers wider than a harmless value's, the database
  unchanged by the reads (yes/no); then every XSS and spreadsheet payload stored through every
  form and import (``tests/test_xss.py``) and the pages that show them searched for a payload
  left unescaped.
- ``bodies``: bodies refused before they are read, in the app (anonymous, a made-up token and a
  planner sending 100 MB or 950-deep JSON to ``POST /api/plans``: statuses, p50/p95, bytes of the
  body read, Python memory allocated during the request) and in gunicorn (the headers of a 100 MB
  body and 64 KiB of it: time to the answer, the workers' RSS growth). Aims: ≤ 10 ms, ≤ 5 MB.
- ``flood``: ``--flood-reports`` Open311 reports from one token in at most ``--flood-seconds``
  against gunicorn with the default report limits: statuses, 429s without ``Retry-After``, reports
  stored (aim: the minute's limit, none beyond it).
- ``joblimit``: ``flask worker`` with an import time limit of ``--job-limit`` s, an import that
  hangs in its transaction and a coverage report queued behind it: the hung job failed, the next
  started within the limit + 5 s, the units unchanged.

    .venv/bin/python scripts/bench_hardening.py --units 4000 --clients 50 --seconds 60 \\
        --json bench-out/hardening.json

Timings depend on the machine's load: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geodata.db import dispose_engines, get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.standards import seed_settings  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402
from tests.pgcluster import PostgisCluster, free_port  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = "correct horse 42"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())



def gunicorn(url: str, log_path: Path, **env: str):
    """``webmap.wsgi:app`` under gunicorn with two workers on ``url``, as ``make run`` serves it,
    once it answers: the process, its base address and its open log (close it after)."""
    port = free_port()
    log = log_path.open("w")
    web = subprocess.Popen([str(BIN / "gunicorn"), "--no-control-socket", "--workers", "2",
                            "--timeout", "120", "--bind",
                            f"127.0.0.1:{port}", "webmap.wsgi:app"], cwd=ROOT,
                           env={**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench",
                                "GRIDPLAN_BASEMAP": "none", "PYTHONPATH": str(ROOT),
                                # load and races report far more than one account would: the
                                # report limits are the "bounds" part's
                                "GRIDPLAN_REPORT_LIMIT_PER_ACCOUNT": "1000000 per minute",
                                "GRIDPLAN_REPORT_LIMIT_PER_ADDRESS": "1000000 per minute", **env},
                           stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(f"{base}/login", timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.2)
    return web, base, log


def fresh_database(kind: str, folder: Path, cluster: PostgisCluster | None, name: str) -> str:
    """A migrated, seeded, empty database."""
    if kind == "spatialite":
        url = f"sqlite:///{folder / (name + '.sqlite')}"
    else:
        admin = get_engine(cluster.url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = cluster.url.rsplit("/", 1)[0] + f"/{name}"
    engine = get_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    return url


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.array(values) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1)}


# --- sign-in ---------------------------------------------------------------------------------------


def bench_signin(url: str, demo, tries: int) -> dict:
    from tests.webhelpers import csrf_token, make_accounts
    from webmap import create_app

    write_demo(get_engine(url), demo)
    app = create_app({"DATABASE_URL": url, "TESTING": True,
                      "LOGIN_LIMIT_PER_ACCOUNT": "100000 per minute",
                      "LOGIN_LIMIT_PER_ADDRESS": "100000 per minute"})
    make_accounts(app, demo)
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(tries):
        for kind, name in (("known", "planner"), ("unknown", f"nobody{i}")):
            start = time.perf_counter()
            answer = client.post("/login", data={"name": name, "password": "wrong", "csrf_token": token})
            times[kind].append(time.perf_counter() - start)
            assert answer.status_code == 401, answer.status_code
    limited = create_app({"DATABASE_URL": url, "TESTING": True})
    client = limited.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    before_refusal = 0
    while client.post("/login", data={"name": "viewer", "password": "wrong",
                                      "csrf_token": token}).status_code == 401:
        before_refusal += 1
    known, unknown = percentiles(times["known"]), percentiles(times["unknown"])
    return {"tries": tries, "known_name": known, "unknown_name": unknown,
            "wrong_passwords_before_429": before_refusal,
            "limits": {"per_account": limited.config["LOGIN_LIMIT_PER_ACCOUNT"],
                       "per_address": limited.config["LOGIN_LIMIT_PER_ADDRESS"]}}


# --- access ------------------------------------------------------------------------------------------


def bench_access(url: str, demo) -> dict:
    from tests.test_access_matrix import ACCESS, CALLERS, matrix_site, try_routes

    site = matrix_site(url, demo)
    start = time.perf_counter()
    requests_made, wrong, by_outcome = 0, [], {}
    for caller in CALLERS:
        answers, mismatches = try_routes(site, caller)
        requests_made += len(answers)
        wrong += mismatches
        for line in answers:
            outcome = line.rsplit("(", 1)[1].rstrip(")")
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    return {"routes": len(ACCESS), "callers": len(CALLERS), "requests": requests_made,
            "outcomes": by_outcome, "mismatches": wrong, "seconds": round(time.perf_counter() - start, 1)}


# --- load ----------------------------------------------------------------------------------------------


def bench_load(url: str, demo, clients: int, seconds: float, folder: Path) -> dict:
    from sqlalchemy import text

    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan
    from tests.webhelpers import make_accounts
    from webmap import create_app
    from webmap.auth import add_token

    engine = get_engine(url)
    write_demo(engine, demo)
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    secrets = make_accounts(app, demo)
    with app.app_context():
        planner = add_token("load-planner", "planner")
        viewer = add_token("load-viewer", "viewer")
    supervisor, community = secrets["supervisor_token"], secrets["scope"]
    street = demo.layers["streets"]["code"].iloc[0]
    plan_id = auto_plan(PlanMemory(engine), "load", "planner", street=street)[0]
    with engine.connect() as conn:
        incidents_before = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        version_before = conn.execute(text("SELECT version FROM plans WHERE id = :i"),
                                      {"i": plan_id}).scalar_one()
        communities = sorted(conn.execute(text("SELECT DISTINCT community_code FROM plan_assignments "
                                                "WHERE plan_id = :i"), {"i": plan_id}).scalars())
        plan_units = sorted(conn.execute(text("SELECT unit_code FROM plan_assignments WHERE plan_id = :i"),
                                         {"i": plan_id}).scalars())
    minx, miny, maxx, maxy = demo.layers["units"].total_bounds
    dispose_engines()

    web, base, log = gunicorn(url, folder / "gunicorn-load.log")
    lock = threading.Lock()
    timings: dict[str, list[float]] = {"read": [], "plan_read": [], "report": [], "move": [], "rename": []}
    statuses: dict[str, dict[int, int]] = {k: {} for k in timings}
    errors = {"5xx": 0, "connection": 0}
    reported: list[str] = []
    renamed = 0
    moved: list[tuple[int, str, str]] = []  # (version answered, unit, community) of every move saved
    deadline = time.monotonic() + seconds

    def note(kind: str, answer, elapsed: float) -> None:
        with lock:
            timings[kind].append(elapsed)
            statuses[kind][answer.status_code] = statuses[kind].get(answer.status_code, 0) + 1
            if answer.status_code >= 500:
                errors["5xx"] += 1

    def client(seed: int) -> None:
        nonlocal renamed
        rng = random.Random(seed)
        session = requests.Session()
        while time.monotonic() < deadline:
            roll = rng.random()
            try:
                start = time.perf_counter()
                w, h = (maxx - minx) / 8, (maxy - miny) / 8
                x, y = rng.uniform(minx, maxx - w), rng.uniform(miny, maxy - h)
                if roll < 0.6:
                    answer = session.get(f"{base}/api/collections/units/items",
                                         params={"bbox": f"{x},{y},{x + w},{y + h}", "limit": 500},
                                         headers={"Authorization": f"Bearer {viewer}"}, timeout=120)
                    note("read", answer, time.perf_counter() - start)
                elif roll < 0.7:
                    answer = session.get(f"{base}/api/plans/{plan_id}/units",
                                         params={"bbox": f"{x},{y},{x + w},{y + h}", "zoom": 15},
                                         headers={"Authorization": f"Bearer {planner}"}, timeout=120)
                    note("plan_read", answer, time.perf_counter() - start)
                elif roll < 0.85:
                    answer = session.post(f"{base}/api/incidents", json={
                        "community": community, "category": "E01-01", "description": f"load {seed}"},
                        headers={"Authorization": f"Bearer {supervisor}"}, timeout=120)
                    note("report", answer, time.perf_counter() - start)
                    if answer.status_code == 201:
                        with lock:
                            reported.append(answer.json()["code"])
                else:
                    # a hand edit as the planner's page makes it: read the version, then save
                    # against it; racing clients get 409 and nothing of theirs is stored
                    bearer = {"Authorization": f"Bearer {planner}"}
                    plan = session.get(f"{base}/api/plans/{plan_id}", headers=bearer, timeout=120).json()
                    if roll < 0.97:
                        unit, to = rng.choice(plan_units), rng.choice(communities)
                        answer = session.post(f"{base}/api/plans/{plan_id}/moves", headers=bearer,
                                              timeout=120,
                                              json={"units": [unit], "to": to, "version": plan["version"]})
                        note("move", answer, time.perf_counter() - start)
                        if answer.status_code == 200:
                            with lock:
                                moved.append((answer.json()["version"], unit, to))
                    else:
                        answer = session.post(f"{base}/api/plans/{plan_id}/rename", headers=bearer,
                                              timeout=120, json={"name": f"load {seed} {rng.random():.6f}",
                                                                 "version": plan["version"]})
                        note("rename", answer, time.perf_counter() - start)
                        if answer.status_code == 200:
                            with lock:
                                renamed += 1
            except requests.RequestException:
                with lock:
                    errors["connection"] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    web.terminate()
    web.wait(timeout=30)
    log.close()
    engine = get_engine(url)
    with engine.connect() as conn:
        incidents_after = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        version_after = conn.execute(text("SELECT version FROM plans WHERE id = :i"),
                                     {"i": plan_id}).scalar_one()
        stored = {u: (c, v) for u, c, v in conn.execute(text(
            "SELECT unit_code, community_code, changed_in FROM plan_assignments WHERE plan_id = :i"),
            {"i": plan_id})}
    dispose_engines()
    # every unit's stored community is the one its last saved move gave it, saved by that version
    last: dict[str, tuple[int, str]] = {}
    for version, unit, to in sorted(moved):
        last[unit] = (version, to)
    moves_lost = sum(1 for u, (v, to) in last.items() if stored[u] != (to, v))
    total = sum(len(v) for v in timings.values())
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": total,
        "requests_per_second": round(total / elapsed, 1), "errors": errors,
        "latency": {k: percentiles(v) for k, v in timings.items()},
        "statuses": {k: {str(s): n for s, n in sorted(v.items())} for k, v in statuses.items()},
        "writes": {
            "reports_answered_201": len(reported), "reports_stored": incidents_after - incidents_before,
            "reports_with_the_same_code": len(reported) - len(set(reported)),
            "moves_answered_200": len(moved), "renames_answered_200": renamed,
            "plan_versions_added": version_after - version_before,
            "versions_answered_twice": len(moved) - len({v for v, _, _ in moved}),
            "moved_units_not_as_last_saved": moves_lost,
        },
    }


# --- backup ---------------------------------------------------------------------------------------------


def bench_backup(url: str, fresh_url: str, demo, folder: Path) -> dict:
    from webmap import create_app

    write_demo(get_engine(url), demo)
    output = folder / f"backup-{int(time.time() * 1000)}"
    start = time.perf_counter()
    made = create_app({"DATABASE_URL": url}).test_cli_runner().invoke(args=["backup", "-o", str(output)])
    backup_s = time.perf_counter() - start
    assert made.exit_code == 0, made.output
    dispose_engines()
    start = time.perf_counter()
    done = create_app({"DATABASE_URL": fresh_url}).test_cli_runner().invoke(args=["restore", str(output)])
    restore_s = time.perf_counter() - start
    assert done.exit_code == 0, done.output
    dispose_engines()
    return {"bytes": output.stat().st_size, "backup_s": round(backup_s, 2), "restore_s": round(restore_s, 2)}


# --- bad files ---------------------------------------------------------------------------------------


def bench_files(url: str, folder: Path, processes: int | None, memory_mb: int, timeout_s: float) -> dict:
    """The hostile corpus through the browser upload and the command line; see the docstring."""
    from collections import Counter

    from geodata.store import layer_counts
    from layers.worker import run_one
    from tests.hostile_files import BOMB_LIMIT_MB, corpus, import_in_process
    from tests.test_hostile_files import SEED, TOUCHED, planner, preview
    from tests.webhelpers import make_accounts, snapshot
    from webmap import create_app

    os.environ["GRIDPLAN_LOCALE"] = "en"  # the cases' words are English; the processes speak it too
    demo = generate(units=200, seed=SEED)
    cases = corpus(SEED, demo)
    engine = get_engine(url)
    write_demo(engine, demo)
    uploads = folder / f"uploads-{int(time.time() * 1000)}"
    app = create_app({"DATABASE_URL": url, "TESTING": True, "UPLOAD_FOLDER": str(uploads),
                      "MAX_UNZIPPED_BYTES": BOMB_LIMIT_MB * 1024 * 1024})
    make_accounts(app, demo)
    before = snapshot(url, leave_out=TOUCHED)
    counts = layer_counts(engine)
    client = planner(app)
    web: Counter = Counter()
    unnamed: list[str] = []
    written: list[str] = []
    slowest = (0.0, "")
    for case in cases:
        name, data = case.upload()
        start = time.perf_counter()
        answer = preview(client, case.layer, name, data)
        body = answer.get_json(silent=True) or {}
        if answer.status_code >= 500:
            outcome, said = f"preview {answer.status_code}", ""
        elif answer.status_code >= 400:
            outcome, said = f"preview {answer.status_code}", " ".join([body.get("detail", "")]
                                                                     + list(body.get("problems", [])))
        elif body.get("ok"):
            outcome, said = "preview 200 ok (accepted!)", ""
        else:
            queued = client.post(f"/api/layers/{case.layer}/import", json={"upload": body["upload"]})
            job = run_one(engine) if queued.status_code == 202 else None
            if job is None:
                outcome, said = f"import {queued.status_code}", queued.get_data(as_text=True)
            elif job["status"] != "done" or not job["result"].get("refused"):
                outcome, said = f"job {job['status']} (not refused!)", str(job.get("message"))
            else:
                outcome, said = "preview 200 not ok, job refused", " ".join(job["result"]["problems"])
        elapsed = time.perf_counter() - start
        slowest = max(slowest, (elapsed, case.name))
        web[outcome] += 1
        if not case.named(said):
            unnamed.append(f"{case.name}: {said[:200]}")
        if layer_counts(engine) != counts:
            written.append(case.name)
            counts = layer_counts(engine)
    web_result = {"files": len(cases), "outcomes": dict(web), "not_named": unnamed, "wrote": written,
                  "max_seconds": round(slowest[0], 2), "slowest": slowest[1],
                  "uploads_left": len(list(uploads.iterdir())) if uploads.exists() else 0}
    cli: Counter = Counter()
    cli_unnamed: list[str] = []
    worst = {"seconds": 0.0, "rss_mb": 0.0}
    chosen = cases if processes is None else \
        random.Random(SEED).sample(cases, min(processes, len(cases)))
    for case in chosen:
        o = import_in_process(case, folder / "cli" / case.name.replace("/", "_"), url, memory_mb=memory_mb,
                              timeout_s=timeout_s, flask=BIN / "flask")
        cli["killed at the time limit" if o.exit_code is None else f"exit {o.exit_code}"] += 1
        if o.exit_code in (0, None) or not case.named(o.output) or "Traceback" in o.output:
            cli_unnamed.append(f"{case.name}: exit {o.exit_code}: {o.output.strip()[-200:]}")
        if o.seconds > worst["seconds"]:
            worst.update(seconds=round(o.seconds, 2), slowest=case.name)
        if o.max_rss_mb > worst["rss_mb"]:
            worst.update(rss_mb=round(o.max_rss_mb), largest=case.name)
        shutil.rmtree(folder / "cli" / case.name.replace("/", "_"), ignore_errors=True)
    unchanged = snapshot(url, leave_out=TOUCHED) == before
    dispose_engines()
    return {"upload": web_result,
            "command_line": {"files": len(chosen), "outcomes": dict(cli),
                             "not_refused_or_not_named": cli_unnamed,
                             "max_seconds": worst["seconds"], "slowest": worst.get("slowest"),
                             "max_rss_mb": worst["rss_mb"], "largest": worst.get("largest"),
                             "memory_limit_mb": memory_mb, "time_limit_s": timeout_s},
            "layers_unchanged": unchanged}
# --- race ----------------------------------------------------------------------------------------------


def bench_race(url: str, demo, rounds: int, adoptions: int, folder: Path) -> dict:
    """Two callers released at once (a barrier), each on its own connection to gunicorn (two
    workers): ``rounds`` plan edits and ``rounds`` case actions on one version, ``adoptions``
    adoptions racing a units import run from this process; then the database is counted."""
    import geopandas as gpd
    from sqlalchemy import text

    from geodata import plan_rows
    from geodata.exporter import export_layer
    from layers.onboarding.imports import ImportRefused, import_layer
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan
    from webmap import create_app
    from webmap.auth import add_token

    REVISION = text("SELECT value FROM revisions WHERE name = 'boundaries'")  # noqa: N806
    engine = get_engine(url)
    write_demo(engine, demo)
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    community = demo.layers["communities"]["code"].iloc[0]
    streets = sorted(demo.layers["streets"]["code"])
    with app.app_context():
        tokens = {(role, i): add_token(f"race-{role}-{i}", role, community if role == "supervisor" else None)
                  for role in ("planner", "admin", "supervisor") for i in (0, 1)}
    plan_id = auto_plan(PlanMemory(engine), "race", "race-planner-0", street=streets[0])[0]
    with engine.connect() as conn:
        revision_before = conn.execute(REVISION).scalar_one()
    dispose_engines()

    web, base, log = gunicorn(url, folder / "gunicorn-race.log", GRIDPLAN_EXPOSE_PROCESS="1")
    sessions = [requests.Session(), requests.Session()]
    engine = get_engine(url)

    def call(i: int, role: str, path: str, body: dict | None = None):
        headers = {"Authorization": f"Bearer {tokens[role, i]}"}
        if body is None:
            return sessions[i].get(base + path, headers=headers, timeout=300)
        return sessions[i].post(base + path, json=body, headers=headers, timeout=300)

    def race_two(first, second) -> list:
        barrier = threading.Barrier(2)
        out: list = [None, None]

        def run(k: int, fn) -> None:
            barrier.wait()
            try:
                out[k] = fn()
            except Exception as exc:  # noqa: BLE001 — counted as an error
                out[k] = exc

        threads = [threading.Thread(target=run, args=(k, fn)) for k, fn in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def tally(answers, counts: dict) -> None:
        codes = sorted(a.status_code if not isinstance(a, Exception) else 0 for a in answers)
        counts["rounds"] += 1
        counts["winners"] += codes.count(200) + codes.count(201)
        counts["conflicts"] += codes.count(409)
        counts["5xx"] += sum(c >= 500 for c in codes)
        counts["errors"] += codes.count(0)
        counts["one_winner_one_conflict"] += codes == [200, 409]
        processes = {a.headers.get("X-Gridplan-Process") for a in answers if not isinstance(a, Exception)}
        counts["racers_in_two_processes"] += len(processes) == 2
        for c in codes:
            counts["statuses"][str(c)] = counts["statuses"].get(str(c), 0) + 1

    def counts_() -> dict:
        return {"rounds": 0, "winners": 0, "conflicts": 0, "5xx": 0, "errors": 0,
                "one_winner_one_conflict": 0, "racers_in_two_processes": 0, "statuses": {}}

    started = time.perf_counter()
    # plans: two planners on one version, mixed edits
    plans = counts_()
    kinds = [("move", "move"), ("rename", "rename"), ("name", "move"), ("move", "rename")]
    assignment = plan_rows.plan_assignment(engine, plan_id)
    units = sorted(assignment.index)
    version_start = plan_rows.get_plan(engine, plan_id)["version"]
    path = f"/api/plans/{plan_id}"
    for r in range(rounds):
        version = plan_rows.get_plan(engine, plan_id)["version"]
        communities = sorted(set(plan_rows.plan_assignment(engine, plan_id)))
        unit = units[r % len(units)]

        def edit(i: int, kind: str, version=version, unit=unit, communities=communities, r=r):
            if kind == "move":
                to = communities[(r + i) % len(communities)]
                return lambda: call(i, "planner", f"{path}/moves",
                                    {"units": [unit], "to": to, "version": version})
            if kind == "rename":
                return lambda: call(i, "planner", f"{path}/rename",
                                    {"name": f"race {r} {i}", "version": version})
            return lambda: call(i, "planner", f"{path}/communities/{communities[0]}/name",
                                {"name": f"社区 {r} {i}", "version": version})

        a, b = kinds[r % len(kinds)]
        tally(race_two(edit(0, a), edit(1, b)), plans)
    plan_after = plan_rows.get_plan(engine, plan_id)["version"]
    with engine.connect() as conn:
        audited = [row[0] for row in conn.execute(text(
            "SELECT detail FROM audit_log WHERE layer = 'plans' AND object_code = :p "
            "AND action LIKE 'plan:%'"),
            {"p": str(plan_id)})]
    versions = [json.loads(d)["version"] if isinstance(d, str) else d["version"] for d in audited
                if (json.loads(d) if isinstance(d, str) else d or {}).get("version", 0) > version_start]
    plans["versions_added"] = plan_after - version_start
    plans["lost_updates"] = plans["winners"] - plans["versions_added"]
    plans["versions_written_twice"] = len(versions) - len(set(versions))

    # cases: two filings (or a filing and a cancellation) on one case version — by the command
    # centre's side (an administrator), as separation of duties has it: a supervisor reports
    cases = counts_()
    codes = []
    for r in range(rounds):
        made = call(0, "supervisor", "/api/incidents", {"community": community, "category": "E01-01",
                                                        "description": f"race {r}"})
        code = made.json()["code"]
        codes.append(code)
        actions = [("file", "admin"), ("file", "admin")] if r % 2 == 0 else \
            [("file", "admin"), ("cancel", "admin")]

        def act(i: int, action: str, role: str, code=code):
            return lambda: call(i, role, f"/api/incidents/{code}/actions",
                                {"action": action, "version": 1, "note": "race"})

        tally(race_two(act(0, *actions[0]), act(1, *actions[1])), cases)
    with engine.connect() as conn:
        steps = dict(conn.execute(text(
            "SELECT i.code, count(s.id) FROM incidents i JOIN incident_steps s ON s.incident_id = i.id "
            "WHERE s.step <> 'reported' AND i.code IN (SELECT code FROM incidents) GROUP BY i.code")).all())
    cases["cases_with_no_step_recorded"] = sum(steps.get(c, 0) == 0 for c in codes)
    cases["cases_with_two_steps_recorded"] = sum(steps.get(c, 0) > 1 for c in codes)
    cases["lost_updates"] = cases["winners"] - sum(min(steps.get(c, 0), 1) for c in codes)

    # an adoption racing a units import (this process, the command line's function)
    adopt = {"rounds": 0, "adopted_then_imported": 0, "imported_then_refused": 0, "other": {},
             "adopted_onto_changed_units": 0, "import_refused_naming_retired_communities": 0,
             "import_errors": 0, "5xx": 0}
    for r in range(adoptions):
        street = streets[r % len(streets)]
        pid = auto_plan(PlanMemory(engine), f"race adopt {r}", "race-planner-0", street=street)[0]
        status = f"/api/plans/{pid}/status"
        v = call(0, "planner", status, {"action": "submit", "version": 1}).json()["version"]
        v = call(0, "admin", status, {"action": "approve", "version": v}).json()["version"]
        out = export_layer(engine, "units", "geojson", folder / f"race-units-{r}.geojson", street=street)
        units_file = gpd.read_file(out.path)
        units_file["households"] = units_file["households"] + 1
        changed = folder / f"race-units-{r}-changed.geojson"
        units_file.to_file(changed, driver="GeoJSON")
        # one side (alternately) starts up to 2 s late: the adoption works out its communities and
        # the import reads and checks its file before either writes, so they meet in either order
        delay = random.Random(r).uniform(0, 2.0)
        late_adoption, late_import = (delay, 0.0) if r % 2 else (0.0, delay)
        answer, report = race_two(
            lambda status=status, v=v, late=late_adoption: time.sleep(late) or call(
                1, "admin", status, {"action": "adopt", "version": v}),
            lambda changed=changed, late=late_import: time.sleep(late) or import_layer(
                engine, "units", changed, mode="update", actor="race"))
        adopt["rounds"] += 1
        if isinstance(report, ImportRefused) and "retired" in str(report):
            adopt["import_refused_naming_retired_communities"] += 1
        elif isinstance(report, Exception):
            adopt["import_errors"] += 1
        status = answer.status_code if not isinstance(answer, Exception) else 0
        adopt["5xx"] += status >= 500
        if status == 200:
            adopt["adopted_then_imported"] += 1
            plan = plan_rows.get_plan(engine, pid)
            with engine.connect() as conn:
                between = conn.execute(text(
                    "SELECT count(*) FROM boundary_changes WHERE revision > :a AND revision < :b"),
                    {"a": plan["base_revision"], "b": answer.json()["revision"]}).scalar_one()
            adopt["adopted_onto_changed_units"] += between > 0
        elif status == 409 and answer.json().get("code") == "StalePlan":
            adopt["imported_then_refused"] += 1
        else:
            adopt["other"][str(status)] = adopt["other"].get(str(status), 0) + 1
    seconds = time.perf_counter() - started
    web.terminate()
    web.wait(timeout=30)
    log.close()
    with engine.connect() as conn:
        logged = [r[0] for r in conn.execute(text(
            "SELECT revision FROM boundary_changes WHERE revision > :r ORDER BY revision"),
            {"r": revision_before})]
        revision_after = conn.execute(REVISION).scalar_one()
        orphans = conn.execute(text(
            "SELECT count(*) FROM units u LEFT JOIN communities c ON c.code = u.community_code "
            "WHERE u.community_code IS NOT NULL AND (c.code IS NULL OR c.street_code <> u.street_code)")
        ).scalar_one()
    dispose_engines()
    expected = list(range(revision_before + 1, revision_after + 1))
    return {"rounds": rounds, "adoptions": adoptions, "seconds": round(seconds, 1),
            "plans": plans, "cases": cases, "adopt_vs_import": adopt,
            "revisions": {"before": revision_before, "after": revision_after, "logged": len(logged),
                          "gaps": len(set(expected) - set(logged)),
                          "repeated": len(logged) - len(set(logged))},
            "units_outside_a_community_of_their_street": orphans}
# --- faults ---------------------------------------------------------------------------------------------


def _in_transaction(url: str) -> bool:
    """Whether another process holds a transaction open (SQLite: the write lock; PostgreSQL: a
    client backend with a transaction), asked the moment before a kill."""
    import sqlite3

    from sqlalchemy import text

    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.split(":///", 1)[1], timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with get_engine(url).connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
            "pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL "
            "AND state <> 'idle'")).scalar_one() > 0


def _calibrate(run, url: str) -> dict:
    """Run an operation to its end (``run()`` returns the process or thread to wait for), probing
    every 50 ms: its duration and when a transaction was seen open."""
    began = time.monotonic()
    waited = run()
    seen = []
    while (waited.poll() is None) if hasattr(waited, "poll") else waited.is_alive():
        if _in_transaction(url):
            seen.append(time.monotonic() - began)
        time.sleep(0.05)
    return {"seconds": time.monotonic() - began, "window": (min(seen), max(seen)) if seen else None}


def _moment(rng: random.Random, calibration: dict) -> tuple[str, float]:
    """When to kill: on most tries at a random point of the transaction (``transaction``: seconds
    after it is seen open, up to the length it had in the calibration run), on the others at a
    random moment of the operation's life (``life``: seconds after its start)."""
    if calibration["window"] and rng.random() < 0.8:
        first, last = calibration["window"]
        return "transaction", rng.uniform(0.0, last - first + 0.05)
    return "life", rng.uniform(0.0, calibration["seconds"])


def _kill_at(process: subprocess.Popen, began: float, moment: tuple[str, float], url: str,
             working=None) -> tuple[bool, bool]:
    """Kill ``process`` (its whole session) at ``moment`` (:func:`_moment`): (killed before the work
    ended — ``working()``, by default the process alive —, a transaction open at that moment)."""
    from tests.test_faults import kill9

    working = working or (lambda: process.poll() is None)
    mode, delay = moment
    if mode == "transaction":  # wait until the transaction is seen open (polled every 20 ms)
        while working() and not _in_transaction(url):
            time.sleep(0.02)
        began = time.monotonic()
    while time.monotonic() < began + delay and working():
        time.sleep(0.01)
    if not working():
        return False, False
    mid = _in_transaction(url)
    kill9(process)
    return True, mid


def _run_and_kill(start, moment: tuple[str, float], url: str) -> tuple[bool, bool]:
    """Start a command (``start()``), kill it at ``moment`` unless it ends first (then wait for
    it): :func:`_kill_at`'s (killed, inside the transaction)."""
    began = time.monotonic()
    process = start()
    killed, mid = _kill_at(process, began, moment, url)
    if not killed:
        process.wait()
    dispose_engines()
    return killed, mid


def bench_kills(url: str, demo, tries: int, folder: Path, seed: int) -> dict:
    """kill -9 at random moments of a ``flask import``, of gunicorn adopting a plan and of a
    ``flask open311-import``: each outcome none | all | partial; integrity checks; the app serving
    after each restart."""
    from tests import test_faults as faults
    from tests.test_faults import (
        adopt_in_background,
        adoption_outcome,
        approved_plan,
        import_outcome,
        integrity,
        kill9,
        open311_file,
        open311_outcome,
        serve,
        start,
        units_update_file,
    )
    from tests.webhelpers import snapshot

    rng = random.Random(seed)
    write_demo(get_engine(url), demo)
    dispose_engines()
    figures: dict = {}

    def tally(case: str, outcome: str, killed: bool, mid: bool, check: str) -> None:
        f = figures.setdefault(case, {"tries": 0, "none": 0, "all": 0, "partial": 0,
                                      "killed_mid_transaction": 0, "ended_before_the_kill": 0,
                                      "integrity_not_ok": 0})
        f["tries"] += 1
        f[outcome] += 1
        f["killed_mid_transaction"] += int(killed and mid)
        f["ended_before_the_kill"] += int(not killed)
        f["integrity_not_ok"] += int(check not in ("ok", "-"))

    # the import: files of one and two households more in turn, so each try changes every unit
    files = {more: units_update_file(demo, folder, more) for more in (1, 2)}
    flask = [str(faults.BIN / "flask"), "--app", "webmap"]
    stored = 0

    def run_import(more: int) -> subprocess.Popen:
        return start([*flask, "import", "units", str(files[more]), "--mode", "update"], url,
                     folder / "import.log")

    before = snapshot(url)
    calibration = figures["import_calibration"] = _calibrate(lambda: run_import(1), url)
    assert import_outcome(url, before, demo, more=1) == "all", (folder / "import.log").read_text()[-2000:]
    stored = 1
    for _ in range(tries):
        more = 2 if stored == 1 else 1
        before = snapshot(url)
        killed, mid = _run_and_kill(functools.partial(run_import, more), _moment(rng, calibration), url)
        outcome = import_outcome(url, before, demo, more=more)
        stored = more if outcome == "all" else stored
        tally("import", outcome, killed, mid, integrity(url))

    # the adoption, through gunicorn
    serial = iter(range(10_000))
    plan = approved_plan(url, demo, f"bench-admin-{next(serial)}")
    web, base = serve(url, folder / "gunicorn.log")
    before = snapshot(url)
    began = time.monotonic()
    thread = adopt_in_background(base, *plan)
    calibration = figures["adopt_calibration"] = _calibrate(lambda: thread, url)
    kill9(web)
    assert adoption_outcome(url, before, plan[0]) == "all"
    plan = None
    for _ in range(tries):
        if plan is None:
            plan = approved_plan(url, demo, f"bench-admin-{next(serial)}")
        web, base = serve(url, folder / "gunicorn.log")
        before = snapshot(url)
        began = time.monotonic()
        request = adopt_in_background(base, *plan)
        killed, mid = _kill_at(web, began, _moment(rng, calibration), url, request.is_alive)
        if not killed:
            kill9(web)
        dispose_engines()
        outcome = adoption_outcome(url, before, plan[0])
        if outcome != "none":
            plan = None
        tally("adopt", outcome, killed, mid, integrity(url))

    # a batch of Open311 requests
    n = 500

    def run_batch(prefix: str) -> subprocess.Popen:
        path = open311_file(demo, folder, n, prefix)
        return start([*flask, "open311-import", str(path), "--kind", "open311", "--default-category",
                      "E01-01"], url, folder / "open311.log")

    before = snapshot(url)
    calibration = figures["open311_calibration"] = _calibrate(lambda: run_batch("c"), url)
    assert open311_outcome(url, before, n, "c") == "all", (folder / "open311.log").read_text()[-2000:]
    for i in range(tries):
        prefix = f"k{i}x"
        before = snapshot(url)
        killed, mid = _run_and_kill(functools.partial(run_batch, prefix), _moment(rng, calibration), url)
        tally("open311_batch", open311_outcome(url, before, n, prefix), killed, mid, integrity(url))

    # after all of it the app starts and serves
    web, base = serve(url, folder / "gunicorn.log")
    figures["serves_after"] = requests.get(f"{base}/login", timeout=30).status_code == 200
    kill9(web)
    dispose_engines()
    return figures


def bench_restart(cluster: PostgisCluster, url: str, demo, clients: int, outage: float, folder: Path) -> dict:
    """PostgreSQL stopped for ``outage`` s and started again under ``clients`` clients reading from
    gunicorn (two workers): answers by status, 5xx other than 503, the slowest answer, seconds
    from the start until the app answers again (the app is not restarted)."""
    from tests.test_faults import kill9, serve
    from webmap import create_app
    from webmap.auth import add_token

    write_demo(get_engine(url), demo)
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    with app.app_context():
        token = add_token("restart-viewer", "viewer")
    dispose_engines()
    web, base = serve(url, folder / "gunicorn-restart.log")
    minx, miny, maxx, maxy = demo.layers["units"].total_bounds
    lock = threading.Lock()
    seen: list[tuple[float, int, float]] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while not stop.is_set():
            w, h = (maxx - minx) / 8, (maxy - miny) / 8
            x, y = rng.uniform(minx, maxx - w), rng.uniform(miny, maxy - h)
            began = time.monotonic()
            try:
                answer = session.get(f"{base}/api/collections/units/items", timeout=60,
                                     params={"bbox": f"{x},{y},{x + w},{y + h}", "limit": 200},
                                     headers={"Authorization": f"Bearer {token}"})
                status = answer.status_code
            except requests.RequestException:
                status = 0
            with lock:
                seen.append((began, status, time.monotonic() - began))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(5)
        down = time.monotonic()
        cluster.stop_server("fast")
        time.sleep(outage)
        up = time.monotonic()
        cluster.start_server()
        started = time.monotonic()
        deadline = started + 60
        while time.monotonic() < deadline and not any(s[0] > started and s[1] == 200 for s in list(seen)):
            time.sleep(0.05)
        time.sleep(5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        kill9(web)
    statuses: dict[str, int] = {}
    for _b, status, _s in seen:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    back = [s for s in seen if s[0] > started and s[1] == 200]
    after = [s for s in seen if back and s[0] > back[0][0]]
    return {"clients": clients, "outage_s": outage, "requests": len(seen), "statuses": statuses,
            "5xx_other_than_503": sum(n for s, n in statuses.items() if s.startswith("5") and s != "503"),
            "connection_errors": statuses.get("0", 0),
            "slowest_answer_s": round(max(s[2] for s in seen), 2),
            "slowest_503_s": round(max((s[2] for s in seen if s[1] == 503), default=0), 2),
            "server_start_s": round(started - up, 2),
            "answers_again_s_after_start": round(back[0][0] + back[0][2] - started, 2) if back else None,
            "not_200_after_recovery": sum(1 for s in after if s[1] != 200),
            "outage_window_s": round(started - down, 2)}


def bench_full_disk(template: Path, demo, tries: int, folder: Path, seed: int) -> dict:
    """SQLite on a small tmpfs, filled to a random few kB or MB of free space before an import, a
    report and a plan rename: each refused cleanly naming the disk (or done whole when it fitted),
    nothing half-written, ``PRAGMA integrity_check``, and the same app working once space is freed."""
    from tests.test_faults import approved_plan, fill, integrity, small_disk, units_update_file
    from tests.webhelpers import make_accounts, snapshot
    from webmap import create_app

    rng = random.Random(seed)
    size_mb = template.stat().st_size // (1 << 20) + 40
    units = units_update_file(demo, folder, 3)
    out = {"tries": 0, "survived": 0, "refused_naming_the_disk": 0, "done_whole": 0, "half_written": 0,
           "integrity_ok": 0, "worked_after_freeing": 0, "other_answers": {}}
    for i in range(tries):
        with small_disk(folder / f"disk{i}", size_mb) as disk:
            if disk is None:
                out["skipped"] = "tmpfs could not be mounted (needs root)"
                break
            path = disk / "gridplan.sqlite"
            shutil.copy(template, path)
            url = f"sqlite:///{path}"
            app = create_app({"DATABASE_URL": url, "TESTING": True, "PROPAGATE_EXCEPTIONS": False,
                              "UPLOAD_FOLDER": str(disk / "uploads")})
            secrets = make_accounts(app, demo)
            plan_id, version, token = approved_plan(url, demo, f"disk-admin-{i}")
            with get_engine(url).connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            dispose_engines()
            before = snapshot(url)
            filler = fill(disk)
            spare = rng.choice([0, 4096, 65536, 1 << 20, 4 << 20])  # bytes given back
            if spare:
                os.truncate(filler, max(0, filler.stat().st_size - spare))
            client = app.test_client()
            supervisor = {"Authorization": f"Bearer {secrets['supervisor_token']}"}
            answers = [
                client.post("/api/incidents", headers=supervisor,
                            json={"community": secrets["scope"], "category": "E01-01", "description": "满"}),
                client.post(f"/api/plans/{plan_id}/rename", headers={"Authorization": f"Bearer {token}"},
                            json={"name": f"盘 {i}", "version": version}),
            ]
            cli = app.test_cli_runner().invoke(args=["import", "units", str(units), "--mode", "update"])
            dispose_engines()
            refused = [a for a in answers
                       if a.status_code == 503 and (a.get_json() or {}).get("code") == "DiskFull"]
            fitted = [a for a in answers if a.status_code in (200, 201)]
            for a in answers:
                if a not in refused and a not in fitted:
                    other = out["other_answers"]
                    other[str(a.status_code)] = other.get(str(a.status_code), 0) + 1
            cli_clean = cli.exit_code == 0 or (cli.exit_code == 1 and "disk is full" in cli.output
                                               and "Traceback" not in cli.output)
            unchanged = snapshot(url) == before
            whole = unchanged or bool(fitted) or cli.exit_code == 0
            ok = integrity(url) == "ok"
            filler.unlink()
            again = client.post("/api/incidents", headers=supervisor, json={
                "community": secrets["scope"], "category": "E01-01", "description": "又"})
            dispose_engines()
            out["tries"] += 1
            out["refused_naming_the_disk"] += len(refused) + int(cli.exit_code == 1 and cli_clean)
            out["done_whole"] += len(fitted) + int(cli.exit_code == 0)
            out["half_written"] += int(not whole)
            out["integrity_ok"] += int(ok)
            out["worked_after_freeing"] += int(again.status_code == 201)
            out["survived"] += int(len(refused) + len(fitted) == len(answers) and cli_clean and whole and ok
                                   and again.status_code == 201)
    return out


def bench_faults(kind: str, new, cluster: PostgisCluster | None, demo, tries: int, clients: int,
                 folder: Path, seed: int) -> dict:
    figures = {"kills": bench_kills(new(), demo, tries, folder, seed)}
    if kind == "postgis":
        figures["restart"] = bench_restart(cluster, new(), demo, clients, 5.0, folder)
    else:
        template = Path(new().split(":///", 1)[1])
        write_demo(get_engine(f"sqlite:///{template}"), demo)
        dispose_engines()
        figures["full_disk"] = bench_full_disk(template, demo, tries, folder, seed)
    return figures
# --- inject -----------------------------------------------------------------------------------------------


def bench_inject(url: str, xss_url: str, demo, folder: Path) -> dict:
    from tests.hostile_text import INJECTION, SPREADSHEET, XSS
    from tests.test_injection import attack_site, try_bodies, try_parameters
    from tests.test_xss import pages, plant, unescaped_on_pages
    from tests.webhelpers import snapshot

    site = attack_site(url, demo)
    start = time.perf_counter()
    before = snapshot(url, leave_out=("audit_log", "rate_limits"))
    reads = try_parameters(site, INJECTION, as_roles=("admin", "supervisor"))
    unchanged = snapshot(url, leave_out=("audit_log", "rate_limits")) == before
    writes = try_bodies(site, INJECTION)
    seconds = time.perf_counter() - start
    dispose_engines()
    start = time.perf_counter()
    planted = plant(xss_url, demo, folder / f"uploads-{next(_uploads)}")
    found = unescaped_on_pages(planted)
    xss_seconds = time.perf_counter() - start
    dispose_engines()

    def fivexx(statuses: dict) -> int:
        return sum(n for s, n in statuses.items() if s >= 500)

    def by_status(statuses: dict) -> dict:
        return {str(k): v for k, v in sorted(statuses.items())}

    return {
        "reads": {"requests": reads["requests"], "statuses": by_status(reads["statuses"]),
                  "5xx": fivexx(reads["statuses"]), "wrong": reads["wrong"], "database_unchanged": unchanged},
        "writes": {"requests": writes["requests"], "statuses": by_status(writes["statuses"]),
                   "5xx": fivexx(writes["statuses"]), "wrong": writes["wrong"]},
        "strings": len(INJECTION), "seconds": round(seconds, 1),
        "xss": {"payloads": len(XSS) + len(SPREADSHEET), "pages": len(pages(planted)),
                "unescaped": len(found), "found": found, "seconds": round(xss_seconds, 1)},
    }


_uploads = iter(range(1000))


# --- bounds: bodies, report floods, job time limits ------------------------------------------------


def _workers_rss_mb(master: int) -> dict[int, float]:
    """Resident memory (MB) of each gunicorn worker of ``master``, from /proc."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    found = {}
    for pid in map(int, children):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                found[pid] = int(line.split()[1]) / 1024
    return found


def _raw_post(base: str, path: str, size: int, headers: dict[str, str], first: bytes) -> tuple[str, float]:
    """Send the headers of a ``size``-byte POST and its first bytes only, then wait for the answer:
    its status line and the seconds it took (a server that reads the body would wait for the
    rest, and time out)."""
    import socket

    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        began = time.perf_counter()
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n{head}\r\n".encode()
                     + first)
        answer = sock.recv(4096)
        took = time.perf_counter() - began
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), took


def bench_bodies(url: str, demo, tries: int, folder: Path) -> dict:
    """Bodies refused before they are read: in the app (test client, a body made as it is read so
    the bytes read are counted; Python memory allocated during the request by tracemalloc) and in
    gunicorn (the client sends the headers of 100 MB and 64 KiB of it; time to the answer, the
    workers' RSS before and after)."""
    import tracemalloc

    from tests.test_bounds import CountingStream
    from tests.webhelpers import csrf_token, make_accounts, sign_in
    from webmap import create_app

    write_demo(get_engine(url), demo)
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    secrets = make_accounts(app, demo)
    planner = app.test_client()
    sign_in(planner, "planner")
    csrf = {"X-CSRFToken": csrf_token(planner.get("/plans").get_data(as_text=True))}
    big = 100 * 1024 * 1024
    cases = {  # 950 bytes of "[": 950 levels (no closing brackets: the depth is refused before parsing)
        "anonymous 100 MB JSON": (app.test_client(), big, {}),
        "made-up token 100 MB JSON": (app.test_client(), big, {"Authorization": "Bearer made-up"}),
        "anonymous 950-deep JSON": (app.test_client(), 950, {}),
        "planner 100 MB JSON": (planner, big, csrf),
        "planner 950-deep JSON": (planner, 950, csrf),
    }
    results = {}
    for name, (client, size, headers) in cases.items():
        times, statuses, read, peaks = [], {}, 0, []
        for i in range(tries):
            body = CountingStream(size)
            if i == tries - 1:  # the last try under tracemalloc (it slows Python down: not timed)
                tracemalloc.start()
            began = time.perf_counter()
            answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                                 headers={**headers, "Content-Length": str(size)})
            took = time.perf_counter() - began
            if i == tries - 1:
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            else:
                times.append(took)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            read = max(read, body.read_bytes)
        results[name] = {"statuses": statuses, **percentiles(times), "max_bytes_read": read,
                         "python_mb_allocated": round(max(peaks) / 1048576, 2)}
    # gunicorn, as make run serves it
    web, base, log = gunicorn(url, folder / "bodies.log")
    try:
        rss_before = _workers_rss_mb(web.pid)
        served = {"statuses": {}, "seconds": []}
        for _ in range(tries):
            status, took = _raw_post(base, "/api/plans", big, {"Content-Type": "application/json"},
                                     b"[" * 65536)
            served["statuses"][status] = served["statuses"].get(status, 0) + 1
            served["seconds"].append(took)
        rss_after = _workers_rss_mb(web.pid)
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()
    results["gunicorn anonymous 100 MB JSON"] = {
        "statuses": served["statuses"], **percentiles(served["seconds"]),
        "max_ms": round(max(served["seconds"]) * 1000, 1),
        "worker_rss_growth_mb": round(max(rss_after.get(p, 0) - v for p, v in rss_before.items()), 1)}
    _ = secrets
    return results


def bench_flood(url: str, demo, reports: int, seconds: float, threads: int, folder: Path) -> dict:
    """One Open311 token sends ``reports`` reports from ``threads`` threads within ``seconds``
    against gunicorn with the default report limits: statuses, 429s without Retry-After, and the
    reports stored (aim: the per-account limit, nothing beyond it)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from tests.webhelpers import make_accounts
    from webmap import create_app
    from webmap.security import REPORT_LIMIT_PER_ACCOUNT, REPORT_LIMIT_PER_ADDRESS

    engine = get_engine(url)
    write_demo(engine, demo)
    secrets = make_accounts(create_app({"DATABASE_URL": url, "TESTING": True}), demo)
    cells = demo.layers["grid_cells"]
    here = cells[cells["code"].str.startswith(secrets["scope"])].iloc[0].geometry.representative_point()
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
    web, base, log = gunicorn(url, folder / "flood.log",  # the default limits, not the bench's
                              GRIDPLAN_REPORT_LIMIT_PER_ACCOUNT=REPORT_LIMIT_PER_ACCOUNT,
                              GRIDPLAN_REPORT_LIMIT_PER_ADDRESS=REPORT_LIMIT_PER_ADDRESS)
    deadline = time.monotonic() + seconds
    session = requests.Session()
    form = {"api_key": secrets["supervisor_token"], "service_code": "E01-01", "lat": str(here.y),
            "long": str(here.x), "description": "flood"}

    def send(_i: int) -> tuple[int, bool, float]:
        if time.monotonic() > deadline:
            return 0, True, 0.0
        sent = time.perf_counter()
        answer = session.post(f"{base}/open311/v2/requests.json", data=form, timeout=30)
        return (answer.status_code, answer.status_code != 429 or bool(answer.headers.get("Retry-After")),
                time.perf_counter() - sent)

    began = time.monotonic()
    try:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(send, range(reports)))
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()
    took = time.monotonic() - began
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one() - before
    statuses: dict[int, int] = {}
    for status, _, _ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    latency = {str(code): percentiles([t for s, _, t in outcomes if s == code]) for code in statuses if code}
    return {"sent": sum(1 for s, _, _ in outcomes if s), "seconds": round(took, 1), "statuses": statuses,
            "not_sent_past_deadline": statuses.pop(0, 0), "latency": latency,
            "429_without_retry_after": sum(1 for _, ok, _ in outcomes if not ok),
            "stored": stored, "limit_per_account": REPORT_LIMIT_PER_ACCOUNT,
            "stored_beyond_the_minute_limit": max(0, stored - int(REPORT_LIMIT_PER_ACCOUNT.split()[0]))}


def bench_job_limit(url: str, demo, limit_s: float, folder: Path) -> dict:
    """``flask worker`` with a time limit of ``limit_s`` on imports, an import that hangs inside
    its transaction (the fault tests' pause) and a coverage report queued after it: when the hung
    job was failed, when the next one started and ended, and whether the units are unchanged."""
    from geodata import jobs
    from layers.coverage import gaps as coverage
    from layers.onboarding import imports as layer_import
    from tests.test_faults import units_update_file
    from tests.webhelpers import snapshot

    engine = get_engine(url)
    write_demo(engine, demo)
    upload = folder / f"hung-{time.time_ns()}"
    upload.mkdir()
    units_update_file(demo, upload)
    hung = jobs.create_job(engine, layer_import.KIND, {
        "layer": "units", "folder": str(upload), "file": "units.gpkg", "mode": "update", "crs": None,
        "mapping": {}, "district": None, "actor": "bench"})
    after = jobs.create_job(engine, coverage.JOB_KIND, {"street": None, "method": "straight", "by": "bench"})
    before = snapshot(url, leave_out=("jobs",))
    log_path = folder / "worker.log"
    worker = subprocess.Popen([str(BIN / "flask"), "--app", "webmap", "worker"], cwd=ROOT,
                              env={**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench",
                                   "PYTHONPATH": str(ROOT), "GRIDPLAN_TEST_PAUSE_AT": "import",
                                   "GRIDPLAN_JOB_TIME_LIMIT_IMPORT_LAYER": str(limit_s)},
                              stdout=subprocess.DEVNULL, stderr=log_path.open("w"), start_new_session=True)
    try:
        deadline = time.monotonic() + limit_s + 600
        while time.monotonic() < deadline:
            done = jobs.get_job(engine, after)
            if done["status"] in ("done", "failed"):
                break
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(timeout=30)
    first, second = jobs.get_job(engine, hung), jobs.get_job(engine, after)
    began = second["started_at"]
    return {"limit_s": limit_s, "hung_job": first["status"], "message": first["message"],
            "hung_job_ran_s": round((first["finished_at"] - first["started_at"]).total_seconds(), 1),
            "next_job_started_after_hung_began_s":
                round((began - first["started_at"]).total_seconds(), 1) if began else None,
            "next_job": second["status"], "units_unchanged": snapshot(url, leave_out=("jobs",)) == before,
            "upload_removed": not upload.exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=800, help="demo size (4000 as make run; 200000 a city)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--signin-tries", type=int, default=20)
    parser.add_argument("--databases", default="spatialite,postgis")
    parser.add_argument("--parts", default="signin,access,load,backup,files,race,faults,inject,bodies,flood,"
                                             "joblimit")
    parser.add_argument("--files-processes", type=int, default=None,
                        help="files: only this many cases as separate processes (default: all)")
    parser.add_argument("--files-memory-mb", type=int, default=2048,
                        help="files: RLIMIT_AS of each process")
    parser.add_argument("--files-timeout", type=float, default=300,
                        help="files: seconds before a process is killed")
    parser.add_argument("--race-rounds", type=int, default=200, help="race: plan and case rounds")
    parser.add_argument("--race-adoptions", type=int, default=20, help="race: adoptions racing an import")
    parser.add_argument("--fault-tries", type=int, default=10, help="kills per operation, full disks")
    parser.add_argument("--restart-clients", type=int, default=20)
    parser.add_argument("--body-tries", type=int, default=20, help="bodies: requests per case")
    parser.add_argument("--flood-reports", type=int, default=2000, help="flood: Open311 reports sent")
    parser.add_argument("--flood-seconds", type=float, default=20, help="flood: at most this long")
    parser.add_argument("--job-limit", type=float, default=5, help="joblimit: the import time limit (s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    parts, kinds = args.parts.split(","), args.databases.split(",")
    figures: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                     "units": args.units, "load_average_before": load_average()}
    print(f"load average {figures['load_average_before']} · {os.cpu_count()} CPUs · demo {args.units} units")
    demo = generate(units=args.units, seed=1)
    folder = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    cluster = None
    try:
        if "postgis" in kinds:
            cluster = PostgisCluster(dbname="bench")
            cluster.start()
        counter = iter(range(1000))
        for kind in kinds:
            db = figures.setdefault(kind, {})

            def new(kind: str = kind) -> str:
                return fresh_database(kind, folder, cluster, f"h{next(counter)}")
            if "signin" in parts:
                db["signin"] = s = bench_signin(new(), demo, args.signin_tries)
                print(f"[{kind}] failed sign-in: known name p50 {s['known_name']['p50_ms']} ms, unknown "
                      f"name p50 {s['unknown_name']['p50_ms']} ms ({s['tries']} each); "
                      f"{s['wrong_passwords_before_429']} wrong passwords before the 429 "
                      f"({s['limits']['per_account']} per account)")
            if "access" in parts and kind == kinds[0]:
                figures["access"] = a = bench_access(new(), demo)
                print(f"access: {a['routes']} routes × {a['callers']} callers = {a['requests']} requests in "
                      f"{a['seconds']} s; outcomes {a['outcomes']}; {len(a['mismatches'])} against the table")
            if "load" in parts:
                db["load"] = r = bench_load(new(), demo, args.clients, args.seconds, folder)
                lat = r["latency"]
                print(f"[{kind}] load: {r['clients']} clients × {r['seconds']} s: {r['requests']} requests "
                      f"({r['requests_per_second']}/s), 5xx {r['errors']['5xx']}, connection errors "
                      f"{r['errors']['connection']} (load average now {load_average()})")
                for k, v in lat.items():
                    print(f"    {k:9s} n={v['n']:6d}  p50 {v.get('p50_ms', '-')} ms  "
                          f"p95 {v.get('p95_ms', '-')} ms  statuses {r['statuses'][k]}")
                print(f"    writes: {r['writes']}")
            if "backup" in parts:
                db["backup"] = b = bench_backup(new(), new(), demo, folder)
                print(f"[{kind}] backup {b['backup_s']} s ({b['bytes']:,} bytes), restore into a fresh "
                      f"database {b['restore_s']} s")
            if "files" in parts:
                db["files"] = f = bench_files(new(), folder, args.files_processes, args.files_memory_mb,
                                              args.files_timeout)
                u, c = f["upload"], f["command_line"]
                print(f"[{kind}] bad files, upload: {u['files']} files, outcomes {u['outcomes']}, "
                      f"{len(u['not_named'])} not naming the problem, {len(u['wrote'])} wrote, max "
                      f"{u['max_seconds']} s ({u['slowest']}), {u['uploads_left']} uploads left")
                print(f"[{kind}] bad files, flask import processes: {c['files']} files, outcomes "
                      f"{c['outcomes']}, {len(c['not_refused_or_not_named'])} not refused or not named, max "
                      f"{c['max_seconds']} s "
                      f"({c['slowest']}), max RSS {c['max_rss_mb']} MB ({c['largest']}) under RLIMIT_AS "
                      f"{c['memory_limit_mb']} MB; layers unchanged: "
                      f"{'yes' if f['layers_unchanged'] else 'NO'} "
                      f"(load average now {load_average()})")
                for line in u["not_named"][:10] + c["not_refused_or_not_named"][:10]:
                    print("    " + line)
            if "race" in parts:
                db["race"] = r = bench_race(new(), demo, args.race_rounds, args.race_adoptions, folder)
                print(f"[{kind}] race: {r['rounds']} rounds each, {r['adoptions']} adoptions, "
                      f"{r['seconds']} s (load average now {load_average()})")
                for what in ("plans", "cases"):
                    c = r[what]
                    print(f"    {what}: winners {c['winners']}, conflicts {c['conflicts']}, one-and-one "
                          f"{c['one_winner_one_conflict']}/{c['rounds']}, 5xx {c['5xx']}, lost updates "
                          f"{c['lost_updates']}, racers answered by two processes "
                          f"{c['racers_in_two_processes']}")
                a = r["adopt_vs_import"]
                print(f"    adoption vs import: adopted then imported {a['adopted_then_imported']}, imported "
                      f"then refused (409) {a['imported_then_refused']}, other {a['other']}, adopted onto "
                      f"changed units {a['adopted_onto_changed_units']}, import refused as it names retired "
                      f"communities {a['import_refused_naming_retired_communities']}, import errors "
                      f"{a['import_errors']}, 5xx {a['5xx']}")
                print(f"    revisions {r['revisions']}; units outside a community of their street "
                      f"{r['units_outside_a_community_of_their_street']}")
            if "faults" in parts:
                db["faults"] = f = bench_faults(kind, new, cluster, demo, args.fault_tries,
                                                args.restart_clients, folder, seed=len(kind))
                for case, k in f["kills"].items():
                    if not case.endswith("_calibration") and isinstance(k, dict):
                        print(f"[{kind}] kill -9 mid {case}: {k['tries']} tries, none {k['none']}, all "
                              f"{k['all']}, partial {k['partial']}; {k['killed_mid_transaction']} "
                              f"killed inside the transaction, {k['ended_before_the_kill']} ended first; "
                              f"integrity not ok {k['integrity_not_ok']}")
                print(f"[{kind}] serves after the kills: {f['kills']['serves_after']} "
                      f"(load average now {load_average()})")
                if "restart" in f:
                    r = f["restart"]
                    print(f"[{kind}] PostgreSQL restarted under {r['clients']} clients: {r['requests']} "
                          f"requests, statuses {r['statuses']}, 5xx other than 503: "
                          f"{r['5xx_other_than_503']}, slowest answer {r['slowest_answer_s']} s "
                          f"(503 {r['slowest_503_s']} s), answers again "
                          f"{r['answers_again_s_after_start']} s after the server is up, "
                          f"{r['not_200_after_recovery']} not 200 after")
                if "full_disk" in f:
                    d = f["full_disk"]
                    print(f"[{kind}] full disk: survived {d['survived']}/{d['tries']}; refused naming the "
                          f"disk {d['refused_naming_the_disk']}, done whole {d['done_whole']}, half-written "
                          f"{d['half_written']}, integrity ok {d['integrity_ok']}/{d['tries']}, worked after "
                          f"freeing {d['worked_after_freeing']}/{d['tries']}, other answers "
                          f"{d['other_answers']}")
            if "bodies" in parts:
                db["bodies"] = b = bench_bodies(new(), demo, args.body_tries, folder)
                for case, r in b.items():
                    extra = (f"worker RSS +{r['worker_rss_growth_mb']} MB, max {r['max_ms']} ms"
                             if "worker_rss_growth_mb" in r else f"bytes read {r['max_bytes_read']:,}, "
                             f"Python allocated {r['python_mb_allocated']} MB")
                    print(f"[{kind}] body {case}: {r['statuses']}, p50 {r.get('p50_ms')} ms, p95 "
                          f"{r.get('p95_ms')} ms; {extra}")
            if "flood" in parts:
                db["flood"] = f = bench_flood(new(), demo, args.flood_reports, args.flood_seconds, 8, folder)
                print(f"[{kind}] report flood: {f['sent']} Open311 reports from one token in "
                      f"{f['seconds']} s: {f['statuses']}; 429 without Retry-After "
                      f"{f['429_without_retry_after']}; stored "
                      f"{f['stored']} ({f['limit_per_account']}), beyond the minute's limit "
                      f"{f['stored_beyond_the_minute_limit']}; latency by status {f['latency']} "
                      f"(load average now {load_average()})")
            if "joblimit" in parts:
                db["joblimit"] = j = bench_job_limit(new(), demo, args.job_limit, folder)
                print(f"[{kind}] job time limit {j['limit_s']} s: hung import {j['hung_job']} after "
                      f"{j['hung_job_ran_s']} s; next job started "
                      f"{j['next_job_started_after_hung_began_s']} s after the hung one began, "
                      f"{j['next_job']}; units unchanged "
                      f"{'yes' if j['units_unchanged'] else 'NO'}, upload removed "
                      f"{'yes' if j['upload_removed'] else 'NO'}")
            if "inject" in parts:
                db["inject"] = i = bench_inject(new(), new(), demo, folder)
                r, w, x = i["reads"], i["writes"], i["xss"]
                print(f"[{kind}] inject: {i['strings']} strings; reads {r['requests']} requests "
                      f"{r['statuses']}, "
                      f"5xx {r['5xx']}, wrong {len(r['wrong'])}, database unchanged "
                      f"{'yes' if r['database_unchanged'] else 'NO'}; JSON bodies {w['requests']} requests "
                      f"{w['statuses']}, 5xx {w['5xx']} ({i['seconds']} s, load average {load_average()})")
                for line in r["wrong"][:20] + w["wrong"][:20]:
                    print(f"    {line}")
                print(f"[{kind}] xss: {x['payloads']} payloads through every form and import, "
                      f"{x['pages']} pages: {x['unescaped']} found unescaped ({x['seconds']} s)")
                for line in x["found"][:20]:
                    print(f"    {line}")
    finally:
        dispose_engines()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    figures["load_average_after"] = load_average()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
