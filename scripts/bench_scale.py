"""Benchmark: plans of a synthetic province, district by district (issue 19).

One district is generated (``--district-units`` units; generation costs 2–5 ms per unit) and
copied side by side under new district codes (:mod:`layers.sample_data.country`: copying, not regenerating)
until the country holds each of ``--sizes`` units; each country is loaded into a fresh PostGIS
database (a throwaway cluster) — for each of ``--schemas``: ``plain`` tables, or tables
``partitioned`` by district (``init-db --partition-by-district``, a partition per district made
before the load) — and planned

- serially (every district in this process: the serial engine),
- on a dask ``LocalCluster`` of 1 worker process, then of 2,

and the script reports, for each: units per core-second, the scheduler's overhead per task (wall ×
workers − the tasks' own time, per task, and as a share of a task's time), per-district read
time, peak memory per worker (the largest resident set a task's process reached), write-back
time, and whether the plan is identical, row for row, to the serial one.

Then the **grid** (every district's cells generated from nothing, ``layers.grid.districts``) and
the **coverage report** (``layers.coverage.districts``, with the halo) the same way: serially and on
a ``LocalCluster`` of 1 and 2 workers, each checked against the serial result (the same cells, cell
for cell; the same report as the single-process :func:`layers.coverage.gaps.report_for`, timed too).
``--no-plan`` leaves the plans out. After each load the script runs ``VACUUM (ANALYZE)``, as
PostgreSQL advises after a bulk load and as an operator would before planning a province (timed:
``vacuumed_s``): without it the first runs met autovacuum working through the loaded tables on the
same cores and every page's first read dirtying it (docs/scale.md); ``--no-vacuum`` measures
that state instead.

``--read-probe`` loads each country and only takes a district's read apart (no plans, grid or
report): for a sample of districts, the read as the app makes it (:func:`units_from_database`) on
a fresh connection and again on the same one, and each of its statements (units, adjacency,
bridges) under ``EXPLAIN (ANALYZE, BUFFERS)``: connect time, planning and execution time, the
shared buffers hit and read (planning's catalogue reads apart), on a fresh connection with the
district's pages not yet read, on the same connection again, and on another fresh connection —
right after the load, while autovacuum works on the loaded tables, after ``ANALYZE``, and after
``VACUUM``; first, the old measure in this process with the tiled country held, then freed.
``--pg-setting NAME=VALUE`` (repeatable) starts the throwaway cluster with that server setting
(``shared_buffers=2GB``).

This is a shared 2-core machine: the script refuses countries above 100,000 units unless
``--large`` is given, and its figures carry the load average seen while it ran.

    .venv/bin/python scripts/bench_scale.py --sizes 20000,100000 --json bench-out/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event  # noqa: E402

from geodata import plan_rows  # noqa: E402
from geodata.db import get_engine  # noqa: E402
from geodata.extents import refresh_extents  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.partitions import partition_by_district, split_districts  # noqa: E402
from layers.coverage import gaps  # noqa: E402
from layers.coverage.districts import report_all  # noqa: E402
from layers.grid.cells import grid_rules  # noqa: E402
from layers.grid.districts import grid_all  # noqa: E402
from layers.plans.files import units_from_database  # noqa: E402
from layers.plans.scale import DaskRunner, SerialRunner, plan_all  # noqa: E402
from layers.sample_data.country import tile, write_country  # noqa: E402
from layers.sample_data.demo import generate  # noqa: E402
from tests import pgcluster  # noqa: E402

LIMIT = 100_000


def fresh_database(cluster: pgcluster.PostgisCluster, name: str) -> str:
    admin = get_engine(cluster.url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {cluster.dbname}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


def census(country, spread: float) -> None:
    """The households counted again: each unit's times a log-normal factor (seeded), so that
    communities fall outside the bounds and the plan has households to move — the re-plan after a
    census that the issue sizes, not a plan of boundaries already in bounds."""
    import numpy as np

    units = country.layers["units"]
    factor = np.random.default_rng(2020).lognormal(0.0, spread, len(units))
    units["households"] = np.maximum(0, np.rint(units["households"].to_numpy() * factor)).astype("int64")


def drop_database(cluster: pgcluster.PostgisCluster, name: str) -> None:
    """A country done with: its disk back before the next, larger one is loaded."""
    admin = get_engine(cluster.url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_plan(engine, label: str, runner, workers: int, fixed_s: float = 0.0) -> dict:
    """Plan the country on ``runner``; ``fixed_s`` is the plan's own cost outside its tasks
    (creating and finishing the plan row, measured on the serial run), not counted as the
    scheduler's."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    made = plan_all(engine, label, "bench", runner=runner)
    wall = time.perf_counter() - started
    outcomes = [o for o in made.outcomes if not o.skipped]
    task_s = sum(o.seconds for o in outcomes)
    units = sum(o.units for o in outcomes)
    overhead = max(0.0, (wall - fixed_s) * workers - task_s) / len(outcomes)
    return {
        "runner": label, "workers": workers, "districts": len(outcomes), "units": units,
        "wall_s": round(wall, 2), "tasks_s": round(task_s, 2),
        "outside_tasks_s": round(wall - task_s / workers, 2),
        "units_per_core_s": round(units / (wall * workers), 1),
        # the tasks' own processor time: what a quiet, dedicated core would spend (this machine's
        # cores are shared, so wall × workers counts time other programs had)
        "units_per_task_cpu_s": round(units / sum(o.cpu_s for o in outcomes), 1),
        "cpu_share_of_task_time": round(sum(o.cpu_s for o in outcomes) / task_s, 2),
        "overhead_per_task_ms": round(overhead * 1000, 1),
        "overhead_share": round(overhead / (task_s / len(outcomes)), 3),
        "read_s_per_district": round(statistics.mean(o.read_s for o in outcomes), 3),
        "plan_s_per_district": round(statistics.mean(o.plan_s for o in outcomes), 3),
        "write_s_per_district": round(statistics.mean(o.write_s for o in outcomes), 3),
        "write_s_total": round(sum(o.write_s for o in outcomes), 2),
        "peak_mb_per_worker": round(max(o.peak_mb for o in outcomes), 1),
        "processes": len({o.pid for o in outcomes}),
        "load_average": round(load, 1), "plan_id": made.plan_id,
        "households_moved": made.scores["households_moved"], "outside_bounds": made.scores["outside_bounds"],
    }


def _cells(engine) -> list:
    from geodata.store import read_layer

    cells = read_layer(engine, "grid_cells").sort_values("code")
    return list(zip(cells["code"], cells.geometry.to_wkt(rounding_precision=7), strict=True))


def _clear_cells(engine) -> None:
    from sqlalchemy import delete

    from geodata.models import GridCell

    with engine.begin() as conn:
        conn.execute(delete(GridCell))


def _figures(label: str, workers: int, wall: float, outcomes, seconds, units: int, load: float) -> dict:
    done = [o for o in outcomes if not o.skipped]
    task_s = sum(seconds(o) for o in done)
    overhead = max(0.0, wall * workers - task_s) / max(len(done), 1)
    return {"runner": label, "workers": workers, "districts": len(done), "units": units,
            "wall_s": round(wall, 2), "tasks_s": round(task_s, 2),
            "units_per_core_s": round(units / (wall * workers), 1),
            "overhead_per_task_ms": round(overhead * 1000, 1),
            "overhead_share": round(overhead / (task_s / max(len(done), 1)), 3) if task_s else None,
            "peak_mb_per_worker": round(max(o.peak_mb for o in done), 1),
            "processes": len({o.pid for o in done}), "load_average": round(load, 1)}


def run_grid(engine, label: str, runner, workers: int, units: int) -> tuple[dict, list]:
    """Every district's cells, generated from nothing on ``runner``; the figures and the cells."""
    _clear_cells(engine)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    made = grid_all(engine, grid_rules(engine), runner=runner)
    wall = time.perf_counter() - started
    figures = _figures(label, workers, wall, made.outcomes, lambda o: o.seconds, units, load)
    figures["cells"] = made.answer["cells"]
    return figures, _cells(engine)


def run_coverage(engine, label: str, runner, workers: int, units: int) -> tuple[dict, dict]:
    """The gap report district by district on ``runner``; the figures and the report."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    made = report_all(engine, runner=runner)
    wall = time.perf_counter() - started
    figures = _figures(label, workers, wall, made.outcomes, lambda o: o.seconds, units, load)
    done = [o for o in made.outcomes if not o.skipped]
    figures["read_s_per_district"] = round(statistics.mean(o.read_s for o in done), 3)
    figures["work_s_per_district"] = round(statistics.mean(o.work_s for o in done), 3)
    # a district inside the country reads its neighbours' rows in its halo, one on the edge fewer:
    # the read and the work per row read tell a slower read from a larger one
    rows = [sum(o.rows_read.values()) for o in done]
    figures["rows_read_per_district"] = {
        layer: round(statistics.mean(o.rows_read.get(layer, 0) for o in done))
        for layer in ("units", "facilities", "roads", "communities", "buildings")}
    figures["read_ms_per_1000_rows"] = round(1000 * sum(o.read_s for o in done) / sum(rows) * 1000, 2)
    figures["work_ms_per_1000_rows"] = round(1000 * sum(o.work_s for o in done) / sum(rows) * 1000, 2)
    figures["read_ms_by_layer"] = {
        layer: round(1000 * statistics.mean(o.read_s_by_layer.get(layer, 0.0) for o in done), 1)
        for layer in sorted({k for o in done for k in o.read_s_by_layer})}
    whole = max(rows)  # a district with neighbours on every side
    inner = [o for o, n in zip(done, rows, strict=True) if n >= 0.97 * whole]
    figures["inner_districts"] = len(inner)
    figures["inner_units_per_task_s"] = round(sum(o.units for o in inner) / sum(o.seconds for o in inner), 1)
    figures["inner_read_s_per_district"] = round(statistics.mean(o.read_s for o in inner), 3)
    figures["inner_work_s_per_district"] = round(statistics.mean(o.work_s for o in inner), 3)
    return figures, json.loads(json.dumps(made.report, default=_plain))


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def grid_and_coverage(engine, units: int, worker_counts: list[int], *, grid: bool = True,
                      whole_report: bool = True) -> dict:
    """The grid (unless ``grid`` is false) and the coverage report of the loaded country, serially
    and on LocalClusters; the report also in one piece and serially unless ``whole_report`` is
    false (the LocalClusters' reports are then not checked)."""
    from distributed import Client, LocalCluster

    from layers.plans.scale import DaskRunner

    out: dict = {"grid": [], "coverage": []}
    if grid:
        serial, reference_cells = run_grid(engine, "serial", SerialRunner(), 1, units)
        out["grid"].append(serial)
    whole = None
    if whole_report:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        whole = json.loads(json.dumps(gaps.report_for(engine), default=_plain))
        out["coverage"].append({"runner": "single process (report_for)", "workers": 1, "units": units,
                                "wall_s": round(time.perf_counter() - started, 2),
                                "load_average": round(load, 1)})
        figures, report = run_coverage(engine, "serial", SerialRunner(), 1, units)
        figures["identical_to_single_process"] = report == whole
        out["coverage"].append(figures)
    for workers in worker_counts:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as local, Client(local) as client:
            client.run(lambda: (__import__("layers.grid.districts"), __import__("layers.coverage.districts")))
            if grid:
                figures, cells = run_grid(engine, f"LocalCluster×{workers}", DaskRunner(client), workers,
                                          units)
                figures["identical_to_serial"] = cells == reference_cells
                out["grid"].append(figures)
            figures, report = run_coverage(engine, f"LocalCluster×{workers}", DaskRunner(client), workers,
                                           units)
            figures["identical_to_single_process"] = None if whole is None else report == whole
            out["coverage"].append(figures)
    return out


# --- a district's read taken apart (--read-probe) ----------------------------------------------

#: the phases of the probe: the state of the tables when it reads — right after the load; while
#: autovacuum works on the loaded tables (if it starts within :data:`AUTOVACUUM_WAIT_S`); after
#: ``ANALYZE``; after ``VACUUM``
PROBE_PHASES = ("after_load", "during_autovacuum", "after_analyze", "after_vacuum")
AUTOVACUUM_WAIT_S = 90


def district_statements(url: str, district: str) -> list[tuple[str, str, dict]]:
    """The statements :func:`units_from_database` sends for ``district``, as it sends them: (the
    table read, the SQL, its parameters), in their order (units, adjacency, bridges). It reads
    the district: take one already read (:func:`for_district` gives another's)."""
    import re

    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    sent: list[tuple[str, str, dict]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def keep(_conn, _cursor, statement, parameters, _context, _many):
        found = re.search(r"\bFROM\s+(\w+)", statement)
        if found and statement.lstrip().upper().startswith("SELECT"):
            sent.append((found.group(1), statement, dict(parameters or {})))

    units_from_database(engine, district=district)
    engine.dispose()
    return sent


def for_district(statements: list[tuple[str, str, dict]], old: str, new: str) -> list[tuple[str, str, dict]]:
    """``statements`` of district ``old`` with district ``new`` bound instead."""
    return [(table, sql, {k: new if v == old else v for k, v in params.items()})
            for table, sql, params in statements]


def _plan_nodes(node: dict) -> list[str]:
    """The plan's nodes, depth first: 'Bitmap Heap Scan units_d421001', 'Index Scan …'."""
    here = node["Node Type"] + "".join(f" {node[k]}" for k in ("Relation Name", "Index Name") if k in node)
    return [here] + [n for child in node.get("Plans", []) for n in _plan_nodes(child)]


def _removed(node: dict) -> int:
    """Rows a plan read and threw away (filters, index rechecks), over all its nodes."""
    own = sum(int(node.get(k, 0)) for k in ("Rows Removed by Filter", "Rows Removed by Index Recheck"))
    return own + sum(_removed(child) for child in node.get("Plans", []))


def explain(cursor, sql: str, parameters: dict) -> dict:
    """One statement under ``EXPLAIN (ANALYZE, BUFFERS)``: the client's wall time, the server's
    planning and execution time (the rest — parsing, opening the tables, the round trip — is
    ``other_ms``), shared buffers hit / read (from the operating system or disk) / dirtied, of
    planning (the catalogue) and of execution (the rows and indexes), and the plan's nodes."""
    started = time.perf_counter()
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, parameters)
    wall_ms = (time.perf_counter() - started) * 1000
    plan = cursor.fetchone()[0][0]
    top, planning = plan["Plan"], plan.get("Planning", {})
    return {"wall_ms": round(wall_ms, 2), "planning_ms": round(plan["Planning Time"], 2),
            "execution_ms": round(plan["Execution Time"], 2),
            "other_ms": round(wall_ms - plan["Planning Time"] - plan["Execution Time"], 2),
            "planning_hit": planning.get("Shared Hit Blocks", 0),
            "planning_read": planning.get("Shared Read Blocks", 0),
            "hit": top.get("Shared Hit Blocks", 0), "read": top.get("Shared Read Blocks", 0),
            "dirtied": top.get("Shared Dirtied Blocks", 0), "rows": top.get("Actual Rows", 0),
            "rows_removed": _removed(top), "nodes": _plan_nodes(top)}


def _connect(url: str):
    import psycopg

    started = time.perf_counter()
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)
    return conn, round((time.perf_counter() - started) * 1000, 2)


def probe_statements(url: str, district: str, statements: list[tuple[str, str, dict]]) -> dict:
    """The statements of ``district``'s read under EXPLAIN: ``fresh`` — on a new connection, the
    district's pages not read since the load; ``again`` — the same connection, the same
    statements; ``fresh_warm`` — another new connection (its catalogue read afresh, the pages now
    in the shared buffers)."""
    out: dict = {"district": district}
    conn, out["connect_ms"] = _connect(url)
    with conn:
        cursor = conn.cursor()
        out["fresh"] = {table: explain(cursor, sql, params) for table, sql, params in statements}
        out["again"] = {table: explain(cursor, sql, params) for table, sql, params in statements}
    conn, out["connect_again_ms"] = _connect(url)
    with conn:
        cursor = conn.cursor()
        out["fresh_warm"] = {table: explain(cursor, sql, params) for table, sql, params in statements}
        # the same units read as the app fetches it (rows to the client), on this warm connection
        table, sql, params = statements[0]
        started = time.perf_counter()
        cursor.execute(sql, params)
        cursor.fetchall()
        out["units_fetch_warm_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return out


def probe_app_read(url: str, district: str) -> dict:
    """``units_from_database`` as a new worker makes it: on a new engine (its first connection
    made for it), then again on the same engine (the connection kept in its pool)."""
    engine = create_engine(url, pool_pre_ping=True)
    try:
        started = time.perf_counter()
        units, _adjacency = units_from_database(engine, district=district)
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        units_from_database(engine, district=district)
        again = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"district": district, "units": len(units), "fresh_s": round(fresh, 4), "again_s": round(again, 4)}


def _autovacuum(conn) -> list[str]:
    """What autovacuum's workers are doing now ('autovacuum: VACUUM public.units' …)."""
    return [row[0] for row in conn.execute("SELECT query FROM pg_stat_activity "
                                           "WHERE backend_type = 'autovacuum worker'").fetchall()]


def _table_state(url: str) -> dict:
    """What the server is doing and what it knows of the tables read: autovacuum workers at work,
    how many of the read tables (partitions counted) have been analysed and vacuumed, their size."""
    conn, _ = _connect(url)
    with conn:
        workers = _autovacuum(conn)
        analysed, vacuumed, tables = conn.execute(
            "SELECT count(*) FILTER (WHERE coalesce(last_analyze, last_autoanalyze) IS NOT NULL), "
            "count(*) FILTER (WHERE coalesce(last_vacuum, last_autovacuum) IS NOT NULL), count(*) "
            "FROM pg_stat_user_tables WHERE relname ~ '^(units|unit_adjacency|roads)(_|$)'").fetchone()
        sizes = dict(conn.execute(
            "SELECT t, sum(pg_total_relation_size(c.oid)) FROM pg_class c, LATERAL (SELECT "
            "substring(c.relname from '^(units|unit_adjacency|roads)(?:_d[0-9]+|_default)?$') AS t) n "
            "WHERE c.relkind = 'r' AND t IS NOT NULL GROUP BY t").fetchall())
        buffers = conn.execute("SHOW shared_buffers").fetchone()[0]
    return {"autovacuum": workers, "tables_analysed": analysed, "tables_vacuumed": vacuumed,
            "tables": tables, "shared_buffers": buffers,
            "mb": {t: round(int(b) / 2**20, 1) for t, b in sizes.items()}}


def _median(rows: list[dict], path: tuple) -> float:
    values = []
    for row in rows:
        for key in path:
            row = row[key]
        values.append(row)
    return round(statistics.median(values), 2)


def summarise(phase: dict) -> dict:
    """Medians over the probed districts: the app's read fresh and again (ms); for each statement,
    fresh / again / fresh_warm: wall, planning, execution and other ms, and buffers read."""
    app, statements = phase["app_read"], phase["statements"]
    out = {"app_read_fresh_ms": round(1000 * statistics.median(r["fresh_s"] for r in app), 1),
           "app_read_again_ms": round(1000 * statistics.median(r["again_s"] for r in app), 1),
           "connect_ms": _median(statements, ("connect_ms",)),
           "units_fetch_warm_ms": _median(statements, ("units_fetch_warm_ms",))}
    for table in statements[0]["fresh"]:
        for when in ("fresh", "again", "fresh_warm"):
            out[f"{table}.{when}"] = {key: _median(statements, (when, table, key)) for key in
                                      ("wall_ms", "planning_ms", "execution_ms", "other_ms", "planning_hit",
                                       "planning_read", "hit", "read", "dirtied", "rows_removed")}
    return out


def probe_sets(districts: list[str]) -> list[list[str]]:
    """Districts spread over the country in disjoint sets: the old measure's, the measure with the
    country freed, then two a phase (the app's read, the statements) — each set read once only."""
    import numpy as np

    count = 2 + 2 * len(PROBE_PHASES)
    per_set = max(1, min(5, len(districts) // count))
    spread = np.unique(np.linspace(0, len(districts) - 1, count * per_set).round().astype(int))
    picks = [districts[i] for i in spread]
    return [picks[k::count] for k in range(count)]


def timed_reads(engine, districts: list[str]) -> list[float]:
    """``units_from_database`` of each district on ``engine`` (seconds): the benchmark's old measure."""
    out = []
    for district in districts:
        started = time.perf_counter()
        units_from_database(engine, district=district)
        out.append(round(time.perf_counter() - started, 4))
    return out


def read_probe(engine, url: str, sets: list[list[str]]) -> dict:
    """A district's read taken apart (module docstring), in each of :data:`PROBE_PHASES`, each
    phase on districts not read before (their pages not yet in the shared buffers). First the
    old measure again, in this process with the country freed (``sets[0]``)."""
    import re

    out: dict = {"districts_per_set": len(sets[0])}
    out["as_before_freed"] = timed_reads(engine, sets[0])
    out["as_before_freed_median_ms"] = round(1000 * statistics.median(out["as_before_freed"]), 1)
    template = sets[0][0]  # read already: capturing its statements reads nothing new
    statements = district_statements(url, template)
    admin, _ = _connect(url)
    with admin:
        for number, phase in enumerate(PROBE_PHASES):
            took = 0.0
            started = time.perf_counter()
            if phase == "during_autovacuum":
                ours = re.compile(r"\b(units|unit_adjacency|roads)(_|\b)")
                while not any(ours.search(q) for q in _autovacuum(admin)) \
                        and time.perf_counter() - started < AUTOVACUUM_WAIT_S:
                    time.sleep(0.5)
            elif phase != "after_load":
                admin.execute("ANALYZE" if phase == "after_analyze" else "VACUUM")
            took = round(time.perf_counter() - started, 1)
            state = _table_state(url)
            app = [probe_app_read(url, d) for d in sets[1 + 2 * number]]
            probed = [probe_statements(url, d, for_district(statements, template, d))
                      for d in sets[2 + 2 * number]]
            out[phase] = {"took_s": took, "state": state, "app_read": app, "statements": probed,
                          "autovacuum_after": _autovacuum(admin)}
            out[phase]["summary"] = summarise(out[phase])
            print(json.dumps({phase: out[phase]["summary"], "state": state}, ensure_ascii=False), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--district-units", type=int, default=4000, help="units of the generated district")
    parser.add_argument("--sizes", default="20000,100000", help="units of each country, comma-separated")
    parser.add_argument("--workers", default="1,2", help="LocalCluster sizes, comma-separated")
    parser.add_argument("--large", action="store_true", help=f"allow countries above {LIMIT:,} units")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--profile", action="store_true",
                        help="keep dask's statistical profiler on in the workers (default: off)")
    parser.add_argument("--census", type=float, default=0.0,
                        help="a census since the boundaries were drawn: each unit's households times a "
                             "log-normal factor of this spread (0: as generated, every community in bounds)")
    parser.add_argument("--schemas", default="plain",
                        help="plain, partitioned or both (comma-separated): the tables loaded")
    parser.add_argument("--no-plan", action="store_true", help="only the grid and the coverage report")
    parser.add_argument("--plan-only", action="store_true", help="only the plans (no grid, no report)")
    parser.add_argument("--no-grid", action="store_true", help="no grid (with --no-plan: only the report)")
    parser.add_argument("--no-serial", action="store_true",
                        help="the report on LocalClusters only (not in one piece, not serially, unchecked)")
    parser.add_argument("--no-vacuum", action="store_true",
                        help="no VACUUM (ANALYZE) after the load: measure the tables as loaded")
    parser.add_argument("--read-probe", action="store_true",
                        help="only a district's read, taken apart (no plans, grid or report)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the throwaway PostgreSQL server (repeatable): shared_buffers=2GB")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    schemas = [s.strip() for s in args.schemas.split(",")]
    if set(schemas) - {"plain", "partitioned"}:
        parser.error("--schemas takes plain, partitioned or both")
    settings: dict[str, str | int] = {"max_locks_per_transaction": 1024}
    for setting in args.pg_setting:
        name, equals, value = setting.partition("=")
        if not equals or not name.replace("_", "").isalnum() or not value or " " in value:
            parser.error(f"--pg-setting takes NAME=VALUE (no spaces), not {setting!r}")
        settings[name] = value
    if max(sizes) > LIMIT and not args.large:
        parser.error(f"countries above {LIMIT:,} units need --large (a shared machine: say so first)")
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.profile.enabled": args.profile})

    started = time.perf_counter()
    demo = generate(units=args.district_units, seed=1)
    per_district = len(demo.layers["units"])
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "census": args.census, "pg_settings": settings,
              "district": {"units": per_district, "streets": len(demo.layers["streets"]),
                           "generated_s": round(time.perf_counter() - started, 1)},
              "countries": []}
    # a partitioned country of N districts has 14 × N partitions: a statement that is not pruned
    # to one district locks each (and its indexes) — docs/scale.md sizes the setting
    cluster = pgcluster.PostgisCluster(dbname="gridplan_scale", settings=settings)
    cluster.start()
    try:
        upgrade(get_engine(cluster.url))
        get_engine(cluster.url).dispose()
        for number, (size, schema) in enumerate((z, s) for z in sizes for s in schemas):
            copies = max(1, round(size / per_district))
            started = time.perf_counter()
            country = tile(demo, copies, full=True)  # facilities, cells, roads: the report reads them
            if args.census:
                census(country, args.census)
            tiled_s = time.perf_counter() - started
            engine = get_engine(fresh_database(cluster, f"country_{number}"))
            started = time.perf_counter()
            if schema == "partitioned":  # a fresh database, split before the load (docs/scale.md)
                partition_by_district(engine)
                split_districts(engine, districts=list(country.districts))
            partitioned_s = time.perf_counter() - started
            started = time.perf_counter()
            write_country(engine, country)
            loaded_s = time.perf_counter() - started
            if args.read_probe:
                import gc

                from layers.plans.scale import peak_memory_mb

                entry = {"schema": schema, "districts": copies, "units": len(country.layers["units"]),
                         "loaded_s": round(loaded_s, 1), "load_average": round(os.getloadavg()[0], 1)}
                sets = probe_sets(list(country.districts))
                # this process's first read costs more (statements compiled, PROJ's database
                # opened): paid on a district of no set, so that no measure carries it
                spare = [d for d in country.districts if all(d not in chosen for chosen in sets)]
                entry["first_read_s"] = timed_reads(engine, spare[:1])
                # the old measure as it was: this process still holding the whole tiled country
                held = entry["as_before_held"] = timed_reads(engine, sets[0])
                entry["as_before_held_median_ms"] = round(1000 * statistics.median(held), 1)
                entry["held_objects"] = len(gc.get_objects())  # what the collector walks
                started = time.perf_counter()
                gc.collect()
                entry["held_full_collection_s"] = round(time.perf_counter() - started, 2)
                entry["held_peak_mb"] = round(peak_memory_mb())
                del country
                gc.collect()
                entry["freed_objects"] = len(gc.get_objects())
                url = engine.url.render_as_string(hide_password=False)
                entry["probe"] = read_probe(engine, url, [sets[1]] + sets[2:])
                report["countries"].append(entry)
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2))
                engine.dispose()
                drop_database(cluster, f"country_{number}")
                continue
            sample = country.districts[:: max(1, copies // 5)][:5]
            entry = {"schema": schema, "districts": copies, "units": len(country.layers["units"]),
                     "tiled_s": round(tiled_s, 2), "partitions_made_s": round(partitioned_s, 1),
                     "loaded_s": round(loaded_s, 1), "runs": []}
            if not args.no_vacuum:
                started = time.perf_counter()
                admin, _ = _connect(engine.url.render_as_string(hide_password=False))
                with admin:
                    admin.execute("VACUUM (ANALYZE)")
                entry["vacuumed_s"] = round(time.perf_counter() - started, 1)
            # where each district's rows lie, measured once after the load (what the first report
            # after an import pays), then checked as every later report checks it
            started = time.perf_counter()
            refresh_extents(engine)
            entry["extents_measured_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            refresh_extents(engine)
            entry["extents_checked_ms"] = round(1000 * (time.perf_counter() - started), 1)
            # a district read alone as a new worker reads it: a fresh engine, in a process that does
            # not hold the tiled country (holding it, this process's reads were measured slower —
            # docs/scale.md); then again on that engine's kept connection
            del country
            __import__("gc").collect()
            url = engine.url.render_as_string(hide_password=False)
            reads = [probe_app_read(url, district) for district in sample]
            entry["read_s_per_district_alone"] = round(statistics.median(r["fresh_s"] for r in reads), 3)
            entry["read_s_per_district_again"] = round(statistics.median(r["again_s"] for r in reads), 3)
            worker_counts = [int(w) for w in args.workers.split(",")]
            if not args.no_plan:
                serial = run_plan(engine, "serial", SerialRunner(), 1)
                fixed = serial["outside_tasks_s"]
                entry["runs"].append(serial)
                reference = plan_rows.plan_assignment(engine, serial["plan_id"]).sort_index()
            for workers in worker_counts if not args.no_plan else []:
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, Client(local) as client:
                    # workers up, with the code imported, before the clock starts
                    client.run(lambda: __import__("layers.plans.scale"))
                    run = run_plan(engine, f"LocalCluster×{workers}", DaskRunner(client), workers, fixed)
                got = plan_rows.plan_assignment(engine, run["plan_id"]).sort_index()
                run["identical_to_serial"] = bool(got.equals(reference))
                entry["runs"].append(run)
            if not args.plan_only:
                entry |= grid_and_coverage(engine, entry["units"], worker_counts, grid=not args.no_grid,
                                           whole_report=not args.no_serial)
            report["countries"].append(entry)
            print(json.dumps(entry, ensure_ascii=False), flush=True)
            if args.json:  # each country as it finishes: a long run stopped early keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2))
            engine.dispose()
            drop_database(cluster, f"country_{number}")
    finally:
        cluster.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
