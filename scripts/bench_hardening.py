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
  seconds and bytes.
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
  changed meanwhile, and gaps or repeats in the boundary revision.

    .venv/bin/python scripts/bench_hardening.py --units 4000 --clients 50 --seconds 60 \\
        --json bench-out/hardening.json

Timings depend on the machine's load: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
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
sys.path.insert(0, str(ROOT / "scripts"))

from pgcluster import PostgisCluster  # noqa: E402

from geodata.db import dispose_engines, get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.standards import seed_settings  # noqa: E402
from layers.demo import generate, write_demo  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = "correct horse 42"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    from layers.plan_memory import PlanMemory
    from layers.plan_workflow import auto_plan
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

    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench", "GRIDPLAN_BASEMAP": "none",
           "PYTHONPATH": str(ROOT)}
    log = (folder / f"gunicorn-{port}.log").open("w")
    web = subprocess.Popen([str(BIN / "gunicorn"), "--workers", "2", "--timeout", "120", "--bind",
                            f"127.0.0.1:{port}", "webmap.wsgi:app"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(f"{base}/login", timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.2)
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
    from geodata.importer import ImportRefused, import_layer
    from layers.plan_memory import PlanMemory
    from layers.plan_workflow import auto_plan
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

    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench", "GRIDPLAN_BASEMAP": "none",
           "PYTHONPATH": str(ROOT), "GRIDPLAN_EXPOSE_PROCESS": "1"}
    log = (folder / f"gunicorn-race-{port}.log").open("w")
    web = subprocess.Popen([str(BIN / "gunicorn"), "--workers", "2", "--timeout", "120", "--bind",
                            f"127.0.0.1:{port}", "webmap.wsgi:app"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(f"{base}/login", timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.2)
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

    # cases: two supervisors (or a supervisor and an admin) on one case version
    cases = counts_()
    codes = []
    for r in range(rounds):
        made = call(0, "supervisor", "/api/incidents", {"community": community, "category": "E01-01",
                                                        "description": f"race {r}"})
        code = made.json()["code"]
        codes.append(code)
        actions = [("file", "supervisor"), ("file", "supervisor")] if r % 2 == 0 else \
            [("file", "supervisor"), ("cancel", "admin")]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=800, help="demo size (4000 as make run; 200000 a city)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--signin-tries", type=int, default=20)
    parser.add_argument("--databases", default="spatialite,postgis")
    parser.add_argument("--files-processes", type=int, default=None,
                        help="files: only this many cases as separate processes (default: all)")
    parser.add_argument("--files-memory-mb", type=int, default=2048,
                        help="files: RLIMIT_AS of each process")
    parser.add_argument("--files-timeout", type=float, default=300,
                        help="files: seconds before a process is killed")
    parser.add_argument("--parts", default="signin,access,load,backup,race,files")
    parser.add_argument("--race-rounds", type=int, default=200, help="race: plan and case rounds")
    parser.add_argument("--race-adoptions", type=int, default=20, help="race: adoptions racing an import")
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
