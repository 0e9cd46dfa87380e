"""Benchmark: the plan page in headless Chromium, for the demo district and the city-size demo.

For each: time to first draw (navigation start → the map drawn and the page ready, measured by
the page itself), the bytes transferred (encoded, as they went over the wire: gzip counted as
gzip), the time a paint stroke of 50 units takes to show its figures on the page (and to be
saved), and the time a pan takes to show the units of the new view. The first open after the
server started and a second open are both reported. A server process started as ``make run``
starts it (``webmap.wsgi``) warms its plan memory in the background: the city is measured after
that warm-up (its time reported as ``warm_up_s``) and, with ``--cold``, also without it (the plan
read into memory by the first request, as before the warm-up existed).

The city database: ``--city-db`` (copied, never written to: default ``/tmp/citydb/city.sqlite``
when it exists), else built here (``generate(200_000, 1)`` and ``write_demo``: about 5 minutes)
and its plan made by the engine (several minutes more).

    .venv/bin/python scripts/bench_plan_page.py [--no-city] [--cold] [--city-db PATH] \
        [--json bench-out/plan_page.json]

Aims (issue 11): the city's plan page draws in under 3 s and transfers under 5 MB; paint stroke
figures shown in under 100 ms. Issue 17: an edit's answer ≤ 50 kB (``paint_stroke.transferred_bytes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geodata import plan_rows  # noqa: E402
from geodata.db import dispose_engines, get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.standards import seed_settings  # noqa: E402
from layers.plans.documents import prepare as prepare_page  # noqa: E402
from layers.plans.memory import PlanMemory  # noqa: E402
from layers.plans.workflow import auto_plan  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402

CITY_COPY = Path("/tmp/citydb/city.sqlite")
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench horse 42"

#: 50 units of the communities next to the one the map is framed on, nearest first: the stroke
STROKE = """async (n) => {
  const g = window.gridplan, s = g.state;
  const target = s.community;
  const label = [...s.units.values()].map((u) => u.feature.properties)
    .find((p) => p.community_code === target);
  const near = new Set(s.communities.get(target).neighbours);
  const units = [...s.units.values()].map((u) => u.feature.properties)
    .filter((p) => near.has(p.community_code) && p.land_use !== 'water')
    .sort((a, b) => Math.hypot(a.lon - label.lon, a.lat - label.lat)
      - Math.hypot(b.lon - label.lon, b.lat - label.lat))
    .slice(0, n);
  // a stroke visits each unit's inside point; the page samples between them as a brush would
  const before = s.version;
  const t0 = performance.now();
  const shown = await g.paint(target, units.map((p) => [p.lon, p.lat]));
  const saved = performance.now();
  return { units: g.lastAnswer?.units.length || 0, shown_ms: shown - t0,
           saved_ms: saved - t0, version: [before, s.version], ...g.lastStroke };
}"""


def prepare_district(folder: Path) -> tuple[str, int]:
    url = f"sqlite:///{folder / 'district.sqlite'}"
    engine = get_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    write_demo(engine, generate(4000, 1))
    plan_id, _ = auto_plan(PlanMemory(engine), "全区方案 bench", "planner")
    return url, plan_id


def prepare_city(folder: Path, source: Path | None) -> tuple[str, int]:
    path = folder / "city.sqlite"
    if source and source.exists():
        print(f"copying {source} …", flush=True)
        shutil.copy(source, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    upgrade(engine)
    if not (source and source.exists()):
        print("building the city (generate(200_000, 1), write_demo: minutes) …", flush=True)
        with engine.begin() as conn:
            seed_settings(conn)
        write_demo(engine, generate(200_000, 1))
    plans = plan_rows.list_plans(engine)
    if plans:
        return url, plans[-1]["id"]
    print("planning the city (minutes) …", flush=True)
    plan_id, _ = auto_plan(PlanMemory(engine), "全市方案 bench", "planner")
    return url, plan_id


def serve(url: str, warm: bool) -> tuple[object, str, float | None]:
    from werkzeug.serving import make_server

    from webmap import create_app
    from webmap.auth import add_user

    app = create_app({"DATABASE_URL": url, "TESTING": True, "BASEMAP": "none"})
    with app.app_context():
        try:
            add_user("bench-planner", "planner", PASSWORD)
        except Exception:  # noqa: BLE001 — the copy may have it already
            pass
    warmed = None
    if warm:  # what webmap.wsgi's background thread does when a server process starts
        started = time.perf_counter()
        app.extensions["gridplan.plans"].warm(prepare=prepare_page)
        warmed = round(time.perf_counter() - started, 3)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}", warmed


def measure(browser, base: str, plan_id: int) -> dict:
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=name]", "bench-planner")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    page.wait_for_load_state("networkidle")  # the map signing in leads to, as a planner sees it first
    page.goto("about:blank")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    transferred = {"bytes": 0}
    cdp.on("Network.loadingFinished", lambda e: transferred.__setitem__("bytes", transferred["bytes"]
                                                                        + e["encodedDataLength"]))
    out = {}
    for attempt in ("first_open", "second_open"):
        transferred["bytes"] = 0
        started = time.perf_counter()
        page.goto(f"{base}/plans/{plan_id}")
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=600_000)
        wall = time.perf_counter() - started
        page.wait_for_timeout(300)
        out[attempt] = {"first_draw_s": round(page.evaluate("window.gridplan.readyAt") / 1000, 3),
                        "wall_s": round(wall, 3), "transferred_bytes": transferred["bytes"],
                        "by_view": page.evaluate("window.gridplan.state.byView"),
                        "units_drawn": page.evaluate("window.gridplan.state.units.size"),
                        "communities": page.evaluate("window.gridplan.state.communities.size")}
    # frame a community with many neighbours (its units loaded, when the plan loads them by view)
    code = page.evaluate("""() => [...window.gridplan.state.communities.values()]
        .sort((a, b) => b.neighbours.length - a.neighbours.length)[0].community_code""")
    loads = page.evaluate("window.gridplan.unitLoads || 0")
    page.click(f"#communities-table tr[data-code='{code}']")
    if page.evaluate("window.gridplan.state.byView"):
        page.evaluate("() => { window.gridplan.map.setZoom(Math.max(window.gridplan.map.getZoom(), 15),"
                      " {animate: false}); }")
        page.wait_for_function(f"() => (window.gridplan.unitLoads || 0) > {loads}", timeout=120_000)
    page.wait_for_timeout(300)
    page.click("#mode-paint")
    transferred["bytes"] = 0
    out["paint_stroke"] = page.evaluate(STROKE, 50)
    page.wait_for_timeout(300)
    # what the edit moved over the wire: its request and its answer (only what changed)
    out["paint_stroke"]["transferred_bytes"] = transferred["bytes"]
    # a pan of half the view: how long until the new view's units are drawn
    loads = page.evaluate("window.gridplan.unitLoads || 0")
    started = time.perf_counter()
    page.evaluate("() => { window.gridplan.map.panBy([700, 0], {animate: false}); }")
    if page.evaluate("window.gridplan.state.byView"):
        page.wait_for_function(f"() => (window.gridplan.unitLoads || 0) > {loads}", timeout=120_000)
    out["pan_s"] = round(time.perf_counter() - started, 3)
    # of which the request for the new view's units (asked, answered, read), the rest is drawing
    out["pan_request_s"] = page.evaluate("""() => {
        const r = performance.getEntriesByType('resource').filter((e) => e.name.includes('/units?')).pop();
        return r ? Math.round(r.duration) / 1000 : null; }""")
    out["units_after_pan"] = page.evaluate("window.gridplan.state.units.size")
    context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-city", action="store_true", help="the district only")
    parser.add_argument("--city-db", type=Path, default=CITY_COPY if CITY_COPY.exists() else None,
                        help="a ready city SpatiaLite database to copy (never written to)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--cold", action="store_true",
                        help="also measure the city with no warm-up (the first request reads the plan)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load": os.getloadavg(), "platform": platform.platform()}}
    with tempfile.TemporaryDirectory(prefix="bench-plan-page-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        cases = [("district", True, lambda: prepare_district(Path(tmp)))]
        if not args.no_city:
            cases.append(("city", True, lambda: prepare_city(Path(tmp), args.city_db)))
            if args.cold:
                cases.append(("city_cold", False, lambda: prepare_city(Path(tmp), args.city_db)))
        for name, warm, prepare in cases:
            url, plan_id = prepare()
            server, base, warmed = serve(url, warm)
            try:
                results[name] = {"warm_up_s": warmed, **measure(browser, base, plan_id)}
            finally:
                server.shutdown()
                dispose_engines()
            print(name, json.dumps(results[name], indent=1), flush=True)
        browser.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
