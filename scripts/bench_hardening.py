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
- ``inject``: on each database, every injection string of ``tests/hostile_text.py`` (and the
  array forms ``a[]=``) on every query parameter and path part of ``tests/test_injection.py``'s
  tables, as an administrator and as a supervisor, and in every text of the write routes' JSON
  bodies: requests, outcomes by status, 5xx, answers wider than a harmless value's, the database
  unchanged by the reads (yes/no); then every XSS and spreadsheet payload stored through every
  form and import (``tests/test_xss.py``) and the pages that show them searched for a payload
  left unescaped.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=800, help="demo size (4000 as make run; 200000 a city)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--signin-tries", type=int, default=20)
    parser.add_argument("--databases", default="spatialite,postgis")
    parser.add_argument("--parts", default="signin,access,load,backup,inject")
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
