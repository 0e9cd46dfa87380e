"""Benchmark: the coverage page, the rates page and the administrator's case map (/supervisor)
in headless Chromium, on the demo district and on a generated city, with the bytes they move.

For each page: the time from navigation to the page ready (its figures shown, its map layers
drawn: ``window.gridplan.ready``), the bytes transferred (as they went over the wire: gzip
counted as gzip), first open and second open (the browser's cache on: what a user reloading
gets; 304s cost a few hundred bytes). On the coverage page also: a pan (the gap layers of the
new view) and "where to build next" (k = 5) from the page. On the plan page of the city: the
bytes of one hand edit's answer are measured by ``bench_plan_page.py``.

``--code PATH`` measures another checkout of gridplan (the previous figures): the pages of
that code with the same databases.

    .venv/bin/python scripts/bench_pages.py [--city-db PATH | --city-units N] [--no-city] \
        [--no-demo] [--code /work/main] [--pages coverage,rates,cases] [--json bench-out/pages.json]

Aims (issue 17 item 8): coverage ≤ 2 s on the demo and ≤ 4 s for a city, rates ≤ 1 s, ≤ 2 MB a
page at city size and ≤ 1 MB on a second load; siting from the page ≤ 5 s for a city.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench horse 42"


def _code(path: Path) -> None:
    sys.path.insert(0, str(path))


def prepare(url: str, units: int | None) -> None:
    from geodata.db import get_engine
    from geodata.migrate import upgrade
    from geodata.standards import seed_settings
    from layers.sample_data.demo import generate, write_demo

    engine = get_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    if units:
        print(f"building a district of {units:,} units …", flush=True)
        write_demo(engine, generate(units, 1))


def serve(url: str, warm: bool):
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from webmap import create_app
    from webmap.auth import add_user

    app = create_app({"DATABASE_URL": url, "TESTING": True, "BASEMAP": "none"})
    with app.app_context():
        for name, role in (("bench-planner", "planner"), ("bench-admin", "admin")):
            try:
                add_user(name, role, PASSWORD)
            except Exception:  # noqa: BLE001 — the copy may have it already
                pass
    warmed = None
    if warm:  # what webmap.wsgi's background thread does when a server process starts
        try:
            from geodata import jobs
            from geodata.db import get_engine
            from layers.coverage.gaps import JOB_KIND
            memory = app.extensions.get("gridplan.coverage")
            if memory is not None:  # the app's own memory of coverage scopes
                warm_coverage = lambda engine, start_job: memory.warm(start_job=start_job)  # noqa: E731
            else:  # older code: a module's memory
                from layers.coverage.cache import warm as warm_coverage
        except ImportError:  # the previous code: nothing to warm
            warm_coverage = None
        if warm_coverage:
            engine = get_engine(url)
            started = time.perf_counter()
            how = warm_coverage(engine, start_job=lambda p: jobs.create_job(engine, JOB_KIND, p, per_user=0))
            warmed = {"how": how, "s": round(time.perf_counter() - started, 3)}
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server, f"http://127.0.0.1:{server.server_port}", warmed


def worker_once(url: str, stop: threading.Event) -> threading.Thread:
    """The background worker, as ``flask --app webmap worker`` runs it, in a thread of this
    process (jobs one after the other)."""
    from geodata import jobs
    from geodata.db import get_engine
    from layers.worker import RUNNERS

    engine = get_engine(url)

    def loop() -> None:
        while not stop.is_set():
            job = jobs.claim_next(engine)
            if job is None:
                time.sleep(0.3)
                continue
            try:
                jobs.finish(engine, job["id"], RUNNERS[job["kind"]](engine, job))
            except Exception as exc:  # noqa: BLE001
                jobs.fail(engine, job["id"], f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def wait_for_jobs(url: str) -> float:
    """Seconds until no job is queued or running (the city's report job, warmed at start)."""
    from sqlalchemy import func, select

    from geodata.db import get_engine
    from geodata.models import Job

    engine = get_engine(url)
    started = time.perf_counter()
    while True:
        with engine.connect() as conn:
            busy = conn.execute(select(func.count()).select_from(Job).where(
                Job.status.in_(("queued", "running")))).scalar_one()
        if not busy:
            return round(time.perf_counter() - started, 1)
        time.sleep(1.0)


NEW_REACH_JS = """async () => {
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const accept = { headers: { Accept: "application/json" } };
  const report = await (await fetch("/api/coverage/report", accept)).json();
  const row = report.standards[0];
  const radius = Math.round(row.reach_m * 0.8);
  const started = performance.now();
  const response = await fetch("/api/coverage/sites", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify({ kind: row.kind, radius, k: 5, solver: "auto" }) });
  let answer = await response.json();
  const follow = answer.url || answer.href;  // the job resource (``href`` in older code)
  for (let asked = 0; answer.job && !answer.sites; asked++) {
    if (performance.now() - started > 900000) return { failed: "no answer in 15 min" };
    await new Promise((resolve) => setTimeout(resolve, Math.min(1500, 250 * (asked + 1))));
    const polled = await fetch(follow, accept);
    if (!polled.ok) return { failed: `${follow}: HTTP ${polled.status}` };
    const job = await polled.json();
    if (job.status === "failed") return { failed: job.message };
    if (job.sites) answer = job;
  }
  const first = (performance.now() - started) / 1000;
  const sites = answer.sites || answer;
  return { kind: row.kind, radius_m: radius, first_answer_s: Math.round(first * 1000) / 1000,
           stage: answer.stage || "final", households_added: sites.properties.households_added };
}"""

def _step(what: str) -> None:
    """What the benchmark is doing now, on stderr (a city's steps take minutes)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def _signed_in(browser, base: str, name: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    page.goto("about:blank")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    moved = {"bytes": 0}
    cdp.on("Network.loadingFinished",
           lambda e: moved.__setitem__("bytes", moved["bytes"] + e["encodedDataLength"]))
    return context, page, moved


def measure_case_map(browser, base: str) -> dict:
    """The administrator's city-wide case map (/supervisor): first and second open, then a zoom
    in of three levels (the cases of the new view)."""
    context, page, moved = _signed_in(browser, base, "bench-admin")
    out: dict = {}
    for attempt in ("first_open", "second_open"):
        _step(f"case map, {attempt}")
        moved["bytes"] = 0
        started = time.perf_counter()
        page.goto(f"{base}/supervisor")
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=900_000)
        wall = time.perf_counter() - started
        page.wait_for_timeout(300)
        out[f"cases_map_{attempt}"] = {"ready_s": round(wall, 3), "transferred_bytes": moved["bytes"],
                                       "summary": page.inner_text("#summary").replace("\n", " ")[:300],
                                       "status": page.inner_text("#status")[:200]}
    if page.evaluate("typeof window.gridplan.state.viewLoads") == "number":
        loads = page.evaluate("window.gridplan.state.viewLoads")
        moved["bytes"] = 0
        started = time.perf_counter()
        page.evaluate("() => { const m = window.gridplan.map;"
                      " m.setZoom(m.getZoom() + 3, {animate: false}); }")
        page.wait_for_function(f"() => window.gridplan.state.viewLoads > {loads}", timeout=120_000)
        out["cases_map_zoom_in"] = {"s": round(time.perf_counter() - started, 3),
                                    "transferred_bytes": moved["bytes"],
                                    "status": page.inner_text("#status")[:200]}
    context.close()
    return out


def measure(browser, base: str, no_sites: bool = False) -> dict:
    context, page, moved = _signed_in(browser, base, "bench-planner")
    out: dict = {}
    for name, path in (("coverage", "/coverage"), ("rates", "/rates")):
        for attempt in ("first_open", "second_open"):
            _step(f"{name}, {attempt}")
            moved["bytes"] = 0
            started = time.perf_counter()
            page.goto(f"{base}{path}")
            page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=900_000)
            wall = time.perf_counter() - started
            page.wait_for_timeout(300)
            out[f"{name}_{attempt}"] = {"ready_s": round(wall, 3), "transferred_bytes": moved["bytes"]}
            table = page.evaluate("() => window.gridplan.tableAt || null")
            if table:  # the rates table shown (the chart's months may come after it)
                out[f"{name}_{attempt}"]["table_s"] = round(table / 1000, 3)
            if name == "coverage" and attempt == "first_open":
                out[f"{name}_{attempt}"]["status"] = page.inner_text("#status")
        if name == "coverage":
            loads = page.evaluate("window.gridplan.layerLoads || 0")
            if page.evaluate("typeof window.gridplan.layerLoads") == "number":
                moved["bytes"] = 0
                started = time.perf_counter()
                page.evaluate("() => { const m = window.gridplan.map; m.setZoom(m.getZoom() + 2); }")
                page.wait_for_function(f"() => (window.gridplan.layerLoads || 0) >= {loads + 6}",
                                       timeout=120_000)
                out["coverage_zoom_in"] = {"s": round(time.perf_counter() - started, 3),
                                           "transferred_bytes": moved["bytes"]}
            if no_sites:
                continue
            _step("where to build next, k = 5")
            started = time.perf_counter()
            page.fill("#sites-k", "5")
            page.click("#sites-form button[type=submit]")
            page.wait_for_function("() => document.querySelector('#sites-table tr:nth-child(2)') || "
                                   "/Failed|失败/.test(document.getElementById('sites-result').textContent)",
                                   timeout=900_000)
            first = time.perf_counter() - started
            out["coverage_sites_k5"] = {"first_answer_s": round(first, 3),
                                        "text": page.inner_text("#sites-result")[:200]}
            # a reach no model was kept for (0.8 of the first row's): asked as the page asks,
            # polled as it polls, until the first answer (greedy) is there
            _step("where to build next, a reach not kept")
            out["coverage_sites_k5_new_reach"] = page.evaluate(NEW_REACH_JS)
    context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--city-db", type=Path, help="a city's SpatiaLite database (copied, never written)")
    parser.add_argument("--city-units", type=int, default=0, help="build a city of this many units instead")
    parser.add_argument("--demo-db", type=Path, help="the demo district's database (copied); default: built")
    parser.add_argument("--no-city", action="store_true")
    parser.add_argument("--no-demo", action="store_true", help="measure the city alone")
    parser.add_argument("--code", type=Path, default=ROOT, help="the gridplan checkout to measure")
    parser.add_argument("--cold", action="store_true", help="no warm-up (as a server before webmap.wsgi's)")
    parser.add_argument("--no-sites", action="store_true", help="leave out siting from the page")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pages", default="coverage,rates,cases",
                        help="which to measure: coverage,rates (together) and cases (the case map)")
    args = parser.parse_args()
    pages = set(args.pages.split(","))
    _code(args.code.resolve())
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="gridplan-bench-pages-"))
    results: dict = {"code": str(args.code), "load_average": os.getloadavg()}
    try:
        places = [] if args.no_demo else [("demo", args.demo_db, 4000)]
        if not args.no_city and (args.city_db or args.city_units):
            places.append(("city", args.city_db, args.city_units))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            for name, source, units in places:
                path = folder / f"{name}.sqlite"
                if source:
                    shutil.copy(source, path)
                url = f"sqlite:///{path}"
                prepare(url, None if source else units)
                _app, server, base, warmed = serve(url, not args.cold)
                stop = threading.Event()
                worker_once(url, stop)
                if warmed and warmed["how"] == "queued":  # a city: the worker computes its report
                    _step(f"{name}: the coverage report job")
                    warmed["job_s"] = wait_for_jobs(url)
                try:
                    results[name] = {"warm_up": warmed}
                    if pages & {"coverage", "rates"}:
                        results[name] |= measure(browser, base, args.no_sites)
                    if "cases" in pages:
                        results[name] |= measure_case_map(browser, base)
                finally:
                    stop.set()
                    server.shutdown()
                print(name, json.dumps(results[name], ensure_ascii=False, indent=1), flush=True)
            browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
