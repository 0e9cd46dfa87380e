"""gridplan on a Citus cluster, checked against one PostGIS server: the same answers, and every
statement of a district's task routed to one shard.

Starts a Citus cluster on this machine (a coordinator and two workers, three PostgreSQL 15
servers with the Citus extension this machine has installed) and a plain PostGIS server; makes
both with the real ``flask init-db`` (``--distribute-by-district`` on the coordinator); writes the
same generated country of ``--districts`` districts into both; then on both

1. plans every district (``plan_all``), generates every district's cells (``grid_all``), writes
   the gap report (``report_all``, facilities and roads across district edges counted) and sites
   health stations per district (``site_all``), each task run in this process;
2. adopts a district's plan (submit, approve, adopt) as a planner and an admin would;
3. writes the demo (a year of incidents: the sums kept by row triggers) with an account of each
   role (the access matrix's site, tests/test_access_matrix.py), takes one case through the
   loop, and calls every route of the app as every kind of caller;

and prints, for each step, whether Citus's answer equals the single server's (the plan row for
row, the cells, the report household for household, the sites, the incident rates and sums,
every route's status), the server errors, and the statements Citus ran on more than one shard:
inside a district's task none may name no district (``citus.multi_task_query_log_level`` tells
every such statement); the coordinator's own (what districts there are, the national code
lookups of an adoption, a case read by its code) are listed.

Citus is not a Debian package: build it for PostgreSQL 15 first (docs/scale.md, "On Citus",
says how). Exits 1 when an answer differs, a route answered 5xx or a task's statement asked every
shard, 2 when Citus is missing.

    .venv/bin/python scripts/check_citus.py --districts 4 --json citus.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import Pool  # noqa: E402

from geodata import incident_rows, plan_rows  # noqa: E402
from geodata.accounts import Account  # noqa: E402
from geodata.db import get_engine  # noqa: E402
from layers.coverage.districts import report_all, site_all  # noqa: E402
from layers.grid.cells import grid_rules  # noqa: E402
from layers.grid.districts import grid_all  # noqa: E402
from layers.incidents import loop, rates  # noqa: E402
from layers.plans import workflow as plan_workflow  # noqa: E402
from layers.plans.memory import PlanMemory  # noqa: E402
from layers.plans.scale import SerialRunner, plan_all  # noqa: E402
from layers.sample_data.country import district_codes, tile, write_country  # noqa: E402
from layers.sample_data.demo import generate  # noqa: E402
from tests import pgcluster  # noqa: E402
from tests.test_access_matrix import CALLERS, matrix_site, try_routes  # noqa: E402

CITUS_CONTROL = Path("/usr/share/postgresql/15/extension/citus.control")
#: every server of the Citus cluster loads Citus; the lock table as for a province (docs/scale.md)
CITUS_SETTINGS = {"shared_preload_libraries": "citus", "max_locks_per_transaction": 1024,
                  "max_prepared_transactions": 100}
#: a Citus session that tells (as a NOTICE) every statement it runs on more than one shard
TELLING = "options=-c%20citus.multi_task_query_log_level%3Dnotice"
#: a statement's condition looking up codes alone (``grid_cells.code IN (…)``)
CODE_ALONE = re.compile(r"\s*\w+\.code IN \((?:[^()]|\([^()]*\))*\)\s*")


class Watch:
    """The statements Citus ran on more than one shard, by where they ran: ``coordinator`` or a
    district's task (``plan 420103``). The NOTICE arrives on the connection while its statement
    runs; the statement is the one last sent on that connection."""

    def __init__(self) -> None:
        self.where = "coordinator"
        self.fanned: list[tuple[str, str]] = []
        self._last: dict[int, str] = {}
        self._lock = threading.Lock()
        event.listen(Pool, "connect", self._connected)
        event.listen(Engine, "before_cursor_execute", self._sent)

    def _connected(self, dbapi_connection, _record) -> None:
        if hasattr(dbapi_connection, "add_notice_handler"):
            key = id(dbapi_connection)
            dbapi_connection.add_notice_handler(lambda d, key=key: self._told(key, d))

    def _sent(self, conn, _cursor, statement, _parameters, _context, _many) -> None:
        self._last[id(conn.connection.dbapi_connection)] = statement

    def _told(self, key: int, diagnostic) -> None:
        if "multi-task query" in (diagnostic.message_primary or ""):
            with self._lock:
                self.fanned.append((self.where, " ".join(self._last.get(key, "?").split())))

    def runner(self) -> SerialRunner:
        """A serial runner that names each task while it runs."""
        watch = self

        class Named(SerialRunner):
            def run(self, tasks, work=None):
                inner = super().run
                for task in tasks:
                    kind = (work or plan_all).__name__.split("_")[0]
                    watch.where = f"{kind} {task.district}"
                    try:
                        yield from inner([task], work)
                    finally:
                        watch.where = "coordinator"
        return Named()

    def inside_tasks(self) -> dict[str, list[tuple[str, str]]]:
        """A task's statements that ran on more than one shard, by kind: ``named`` (they name
        the districts they read, ``district_code IN (…)``: the shards of those districts, as a
        district's halo does), ``code`` (a code looked up alone, on purpose: a code is the
        nation's) and ``unrouted`` (none of these: every shard asked — a defect)."""
        kinds: dict[str, list[tuple[str, str]]] = {"named": [], "code": [], "unrouted": []}
        for where, statement in self.fanned:
            if where == "coordinator":
                continue
            condition = statement.split(" WHERE ", 1)[-1] if " WHERE " in statement else ""
            if "district_code" in condition:
                kinds["named"].append((where, statement))
            elif CODE_ALONE.fullmatch(condition.split(" ORDER BY")[0]):
                kinds["code"].append((where, statement))
            else:
                kinds["unrouted"].append((where, statement))
        return kinds


def flask(url: str, *args: str) -> str:
    """``flask --app webmap ARGS`` on the database at ``url``; its output (raises when it fails)."""
    env = os.environ | {"DATABASE_URL": url, "GRIDPLAN_LOCALE": "en"}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "flask"), "--app", "webmap", *args], cwd=ROOT,
                          env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def start_citus() -> list[pgcluster.PostgisCluster]:
    """A coordinator and two workers, the workers added to the coordinator."""
    nodes = [pgcluster.PostgisCluster(settings=CITUS_SETTINGS) for _ in range(3)]
    for node in nodes:
        node.start()
        with get_engine(node.url).begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION citus")
    coordinator = get_engine(nodes[0].url)
    with coordinator.begin() as conn:
        conn.execute(text("SELECT citus_set_coordinator_host('127.0.0.1', :p)"), {"p": nodes[0].port})
    for worker in nodes[1:]:
        with coordinator.begin() as conn:
            conn.execute(text("SELECT citus_add_node('127.0.0.1', :p)"), {"p": worker.port})
    return nodes


def plan_rows_of(engine, plan_id: int) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT unit_code, community_code FROM plan_assignments WHERE plan_id = :p "
                                "ORDER BY unit_code"), conn, params={"p": plan_id})


def cells_of(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT code, community_code, md5(ST_AsBinary(geom)) AS shape "
                                "FROM grid_cells ORDER BY code"), conn)


def compare(name: str, single, citus, results: dict) -> None:
    same = single.equals(citus) if isinstance(single, pd.DataFrame) else single == citus
    results["steps"][name] = {"identical": bool(same)}
    if not same and isinstance(single, str):  # where the two answers part
        pairs = enumerate(zip(single, citus, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(single), len(citus)))
        results["steps"][name] |= {"single": single[max(0, at - 300):at + 300],
                                   "citus": citus[max(0, at - 300):at + 300]}
    elif not same:
        results["steps"][name] |= {"rows": [len(single), len(citus)]}
    print(f"  {name:<44} {'identical' if same else 'DIFFERENT'}", flush=True)


def untimed(answer):
    """An answer without the seconds its parts took (they differ run to run)."""
    if isinstance(answer, dict):
        return {k: untimed(v) for k, v in answer.items() if k != "seconds"}
    if isinstance(answer, list):
        return [untimed(v) for v in answer]
    return answer


def timed(results: dict, name: str, where: str, fn):
    started = time.perf_counter()
    value = fn()
    results["seconds"].setdefault(name, {})[where] = round(time.perf_counter() - started, 2)
    return value


def adopt(engine, plan_id: int) -> None:
    memory = PlanMemory(engine)
    v = plan_rows.get_plan(engine, plan_id)["version"]
    for action, who in (("submit", "planner"), ("approve", "admin"), ("adopt", "admin")):
        v = plan_workflow.change_status(memory, plan_id, action, v, who, who, reason="check_citus")["version"]


def one_case(engine, where, street: str) -> str:
    """A case reported in a street of the demo by its supervisor and taken through the loop to its
    evaluation."""
    supervisor = Account(id=0, name="supervisor", role="supervisor", scope_code=street)
    centre = Account(id=0, name="admin", role="admin", scope_code=None)  # files, dispatches, handles
    at = datetime(2026, 11, 2, 9, 0)
    case, _ = loop.report(engine, supervisor, {"lon": where.x, "lat": where.y, "category": "E01-01",
                                                "description": "暴露垃圾"}, now=at)
    for i, action in enumerate(("file", "dispatch", "handle", "close", "evaluate"), start=1):
        version = incident_rows.get_incident(engine, case["code"])["version"]
        who = centre if action in ("file", "dispatch", "handle") else supervisor  # verified by another
        loop.act(engine, who, case["code"], {"action": action, "version": version, "note": "ok"},
                 now=at + timedelta(hours=i))
    return case["code"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--districts", type=int, default=4, help="districts of the generated country")
    parser.add_argument("--units", type=int, default=4000, help="units of each district")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not CITUS_CONTROL.exists():
        print("Citus is not installed for PostgreSQL 15 here: build it first (docs/scale.md, \"On Citus\")",
              file=sys.stderr)
        return 2
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                     "districts": args.districts, "steps": {}, "seconds": {}}
    watch = Watch()
    with contextlib.ExitStack() as stack:
        single = pgcluster.PostgisCluster()
        stack.callback(single.stop)
        single.start()
        nodes = start_citus()
        for node in nodes:
            stack.callback(node.stop)
        results["citus"] = get_engine(nodes[0].url).connect().execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'citus'")).scalar_one()
        print(flask(single.url, "init-db"))
        print(flask(nodes[0].url, "init-db", "--distribute-by-district"))
        engines = {"single": get_engine(single.url), "citus": get_engine(f"{nodes[0].url}?{TELLING}")}

        demo = generate(args.units, 1)
        country = tile(demo, args.districts, district_codes(args.districts), full=True)
        answers: dict[str, dict] = {}
        for where, engine in engines.items():
            runner = watch.runner() if where == "citus" else SerialRunner()
            timed(results, "write the country", where, lambda e=engine: write_country(e, country))
            made = timed(results, "plan every district", where,
                         lambda e=engine, r=runner: plan_all(e, "check", "planner", runner=r))
            grid = timed(results, "cells of every district", where,
                         lambda e=engine, r=runner: grid_all(e, grid_rules(e), runner=r))
            report = timed(results, "gap report by district", where,
                           lambda e=engine, r=runner: report_all(e, "roads", runner=r))
            sites = timed(results, "siting by district", where,
                          lambda e=engine, r=runner: site_all(e, "health_station", 2, runner=r))
            answers[where] = {"plan": plan_rows_of(engine, made.plan_id), "cells": cells_of(engine),
                              "grid": json.dumps(grid.answer, sort_keys=True, default=str),
                              "report": json.dumps(untimed(report.report), sort_keys=True, default=str),
                              "sites": json.dumps(untimed(sites.answers), sort_keys=True, default=str),
                              "plan_id": made.plan_id}
        print("country:", flush=True)
        compare("plan, row for row", answers["single"]["plan"], answers["citus"]["plan"], results)
        compare("cells", answers["single"]["cells"], answers["citus"]["cells"], results)
        compare("the grid's answer", answers["single"]["grid"], answers["citus"]["grid"], results)
        compare("gap report", answers["single"]["report"], answers["citus"]["report"], results)
        compare("sites", answers["single"]["sites"], answers["citus"]["sites"], results)

        district = district_codes(args.districts)[0]
        street = sorted(country.layers["streets"].loc[country.layers["streets"]["district_code"] == district,
                                                      "code"])[0]
        for where, engine in engines.items():
            def street_plan_adopted(e=engine):
                plan_id, _ = plan_workflow.auto_plan(PlanMemory(e), f"adopt {street}", "planner",
                                                     street=street)
                adopt(e, plan_id)
            timed(results, "a street's plan adopted", where, street_plan_adopted)
            with engine.connect() as conn:
                answers[where]["adopted"] = pd.read_sql(text(
                    "SELECT code, community_code, district_code FROM units ORDER BY code"), conn)
        compare("units after an adoption", answers["single"]["adopted"], answers["citus"]["adopted"], results)

        data = generate(args.units, 1)
        first = data.layers["units"].iloc[0]
        where_case, case_street = first.geometry.representative_point(), str(first["street_code"])
        for where, engine in engines.items():
            # the access matrix's site: the demo, an account of each role, a plan
            # (tests/test_access_matrix.py)
            site = timed(results, "the demo written (a year of incidents), accounts, a plan", where,
                         lambda e=engine: matrix_site(e.url.render_as_string(hide_password=False), data))
            timed(results, "a case through the loop", where,
                  lambda e=engine: one_case(e, where_case, case_street))
            year = rates.rates(engine, "community", datetime(2025, 11, 1), datetime(2026, 11, 3),
                               now=datetime(2026, 11, 3))
            answers[where]["rates"] = year.round(6).reset_index(drop=True)
            with engine.connect() as conn:
                answers[where]["sums"] = pd.read_sql(text(
                    "SELECT district_code, day, grid_code, reported, filed, closed, due, due_closed, "
                    "returned "
                    "FROM incident_days WHERE reported + filed + closed + due + returned > 0 "
                    "ORDER BY 1, 2, 3"), conn)
            # every route of the app as every kind of caller: the pages, the API, Open311
            said = timed(results, "every route as each caller", where,
                         lambda s=site: [line for caller in CALLERS for line in try_routes(s, caller)[0]])
            answers[where]["routes"] = "\n".join(said)
            results.setdefault("server_errors", {})[where] = [
                line for line in said if re.search(r": 5\d\d \(", line)]
        print("incidents:", flush=True)
        compare("rates by community", answers["single"]["rates"], answers["citus"]["rates"], results)
        compare("the kept sums", answers["single"]["sums"], answers["citus"]["sums"], results)
        print("the app:", flush=True)
        compare("every route's answer to each caller", answers["single"]["routes"],
                answers["citus"]["routes"], results)
        for where, errors in results["server_errors"].items():
            print(f"  server errors ({where}): {len(errors)}")
            for line in errors:
                print(f"    {line}")

    inside = watch.inside_tasks()
    coordinator = sorted({s for w, s in watch.fanned if w == "coordinator"})
    results["fanned_out_in_tasks"] = inside
    results["fanned_out_on_coordinator"] = coordinator
    print("statements of a district's task on more than one shard:")
    print(f"  naming the districts they read (a halo's neighbours): {len(inside['named'])}")
    print(f"  a code looked up alone (the nation's codes, on purpose): {len(inside['code'])}")
    print(f"  naming no district (every shard asked): {len(inside['unrouted'])}")
    for where, statement in inside["unrouted"]:
        print(f"    [{where}] {statement[:300]}")
    print(f"on the coordinator (outside the tasks): {len(coordinator)}")
    for statement in coordinator:
        print(f"  {statement[:200]}")
    print("seconds (single server / Citus):")
    for name, by in results["seconds"].items():
        print(f"  {name:<44} {by.get('single', 0):>7.2f} / {by.get('citus', 0):>7.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    differ = [n for n, s in results["steps"].items() if not s["identical"]]
    errors = [line for lines in results["server_errors"].values() for line in lines]
    return 1 if differ or inside["unrouted"] or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
