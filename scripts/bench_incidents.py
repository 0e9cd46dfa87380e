"""Benchmark: incident intake under load, and the rates over a million incidents.

1. Intake: the demo district in SpatiaLite and in PostGIS (a throwaway cluster), served by
   gunicorn as ``scripts/bench_api.py`` does; ``--clients`` concurrent clients (threads with
   keep-alive connections) post reports (``POST /api/incidents`` with a supervisor's token) for
   ``--seconds`` on loopback. Reported: reports per second, p50/p95 latency, errors, and a count
   afterwards — every acknowledged report stored exactly once (none lost, none duplicated).
   ``--clients 0`` skips it.
   Each report carries a ``client_id`` (as the phone's offline queue sends it) and
   ``--replay`` (default 10 %) of the requests send an earlier report of the same client again
   (an answer lost on the way): those must answer 200 with the same case, and no ``client_id``
   may be stored twice.
2. The phone (``--pages``, on SpatiaLite): the supervisor's case list and a case page in
   Debian's Chromium at 360 × 740 (touch), over emulated Fast 3G (562.5 ms round trip,
   1.6 Mbit/s down, 750 kbit/s up: a throttling proxy in front of gunicorn, so that the service
   worker's own fetches are slowed too) with the CPU slowed ×4 (CDP
   ``Emulation.setCPUThrottlingRate``). Reported: time to usable (navigation start → the page's
   data shown: the paint of the server-drawn data, element timing ``elementtiming="case-data"``;
   a page without it, ``window.gridplan.readyAt``), the scripts' ready (``readyAt``: every
   button wired) and bytes over the wire up to it, for a first load (nothing cached) and a
   repeat load (the service worker in control). The pages and their API answers are asked for a
   few times first, unthrottled, so that each server process is warm. Aims: ≤ 1.5 s, ≤ 150 kB first,
   ≤ 30 kB repeat.
3. Rates: ``--rates-n`` synthetic incidents over a year (step times and step hours as the loop
   stores them) in each database; the time of the district's, the streets' and the
   communities' rates for the year (from the monthly and daily sums the database keeps), best of
   three, and for comparison the same sums by one scan of the cases (``rate_sums_scan``); the load
   time includes the triggers keeping those sums.

    .venv/bin/python scripts/bench_incidents.py --clients 50 --seconds 60 --rates-n 1000000 \
        --json bench-out/incidents.json
    .venv/bin/python scripts/bench_incidents.py --clients 50 --seconds 10 --rates-n 0 --only spatialite
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, literal, select, text  # noqa: E402

from geodata import incident_rows  # noqa: E402
from geodata.db import BATCH, get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.models import Incident  # noqa: E402
from geodata.standards import seed_settings  # noqa: E402
from layers.incidents import rates  # noqa: E402
from layers.incidents.working_time import add_working_hours  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402
from tests.pgcluster import PostgisCluster, free_port  # noqa: E402

WORKERS = 2


def serve(url: str, port: int, workers: int) -> subprocess.Popen:
    cmd = [str(ROOT / ".venv" / "bin" / "gunicorn"), "--no-control-socket", "--workers", str(workers),
           "--threads", "4",
           "--bind", f"127.0.0.1:{port}", "webmap:create_app()"]
    # the per-account report limit would answer most of the intake 429: lifted here
    env = os.environ | {"PYTHONPATH": str(ROOT), "DATABASE_URL": url,
                        "GRIDPLAN_REPORT_LIMIT_PER_ACCOUNT": "1000000 per minute",
                        "GRIDPLAN_REPORT_LIMIT_PER_ADDRESS": "1000000 per minute"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(port: int, token: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/incidents?limit=1", headers={"Authorization": f"Bearer {token}"})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not answer")


def intake(port: int, token: str, points: np.ndarray, clients: int, seconds: float, tag: str,
           replay: float = 0.1) -> dict:
    """``clients`` threads posting reports until the time is up, each with a ``client_id``, a
    share ``replay`` of them an earlier report of the same client sent again; what each got back."""
    stop = time.time() + seconds
    latencies: list[float] = []
    acknowledged: list[str] = []
    errors: dict[str, int] = {}
    replays = {"sent": 0, "same_case": 0}
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = np.random.default_rng(n)
        i = 0
        mine_lat, mine_ack, mine_err = [], [], {}
        sent: list[tuple[str, str]] = []  # (body, the case it made)
        again = same = 0
        while time.time() < stop:
            replaying = bool(sent) and rng.uniform() < replay
            if replaying:
                body, first_code = sent[rng.integers(len(sent))]
            else:
                lon, lat = points[rng.integers(len(points))]
                description = f"{tag}-{n}-{i}"
                body = json.dumps({"lon": lon, "lat": lat, "category": "E01-01", "description": description,
                                   "client_id": str(uuid.uuid4())})
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/incidents", body=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                status = response.status
            except OSError as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine_lat.append(time.perf_counter() - start)
            if replaying:
                again += 1
                same += status == 200 and json.loads(answer).get("code") == first_code
                if status != 200:
                    mine_err[f"replay {status}"] = mine_err.get(f"replay {status}", 0) + 1
            elif status == 201:
                mine_ack.append(description)
                sent.append((body, json.loads(answer)["code"]))
            else:
                mine_err[str(status)] = mine_err.get(str(status), 0) + 1
            i += 1
        with lock:
            latencies.extend(mine_lat)
            acknowledged.extend(mine_ack)
            replays["sent"] += again
            replays["same_case"] += int(same)
            for k, v in mine_err.items():
                errors[k] = errors.get(k, 0) + v

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - began
    ms = np.array(latencies) * 1000
    return {"acknowledged": acknowledged, "errors": errors, "elapsed_s": round(elapsed, 1),
            "reports_per_s": round(len(acknowledged) / elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "replays_sent": replays["sent"], "replays_same_case": replays["same_case"],
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None}


def check(engine, tag: str, acknowledged: list[str]) -> dict:
    """Every acknowledged report stored exactly once."""
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT description, count(*) FROM incidents WHERE description LIKE :t "
                                   "GROUP BY description"), {"t": f"{tag}-%"}).all()
        twice = conn.execute(text("SELECT count(*) FROM (SELECT client_id FROM incidents WHERE description "
                                  "LIKE :t GROUP BY client_id HAVING count(*) > 1) AS d"), {"t": f"{tag}-%"})
        client_ids_twice = twice.scalar_one()
    counts = dict(stored)
    lost = [d for d in acknowledged if d not in counts]
    duplicated = [d for d, n in counts.items() if n > 1]
    return {"stored": sum(counts.values()), "lost": len(lost), "duplicated": len(duplicated),
            "client_ids_stored_twice": client_ids_twice,
            "unacknowledged_but_stored": len(set(counts) - set(acknowledged))}


# --- the phone: Fast 3G and a slow CPU ----------------------------------------------------------

#: DevTools' "Fast 3G": round trip, and bits per second down and up
FAST_3G = {"rtt_s": 0.5625, "down_bps": 1_600_000, "up_bps": 750_000}
PHONE_PASSWORD = "bench phone 42"


class _Link:
    """One direction of the emulated network, shared by every connection: what is sent queues
    behind what was sent before at the link's rate, then takes half the round trip to arrive."""

    def __init__(self, bits_per_s: float, delay_s: float) -> None:
        self.rate, self.delay, self.free_at, self.bytes = bits_per_s / 8, delay_s, 0.0, 0

    def arrival(self, now: float, n: int, slow: bool) -> float:
        self.bytes += n
        if not slow:
            return now
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        return self.free_at + self.delay


class Throttle:
    """A TCP proxy on loopback in front of the server that slows everything passing through it as
    Fast 3G does (the page's requests and the service worker's alike, which CDP's per-page
    network emulation would not slow), and counts the bytes each way. ``slow`` turns it on."""

    def __init__(self, upstream: int, rtt_s: float, down_bps: float, up_bps: float) -> None:
        self.upstream, self.rtt = upstream, rtt_s
        self.down, self.up = _Link(down_bps, rtt_s / 2), _Link(up_bps, rtt_s / 2)
        self.slow = False
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
            started.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        started.wait()

    def reset(self) -> None:
        self.down.bytes = self.up.bytes = 0

    async def _pipe(self, reader, writer, link: _Link) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                wait = at - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(16384):
                await queue.put((link.arrival(self.loop.time(), len(data), self.slow), data))
        except OSError:
            pass
        await queue.put((link.arrival(self.loop.time(), 0, self.slow), None))
        try:
            await task
        except OSError:
            pass

    async def _client(self, reader, writer) -> None:
        if self.slow:
            await asyncio.sleep(self.rtt)  # the TCP handshake's round trip
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, self.up), self._pipe(up_reader, writer, self.down))


def sign_in_cookie(base: str, name: str, password: str) -> str:
    """The session cookie of ``name`` signed in through the sign-in form."""
    import requests

    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{base}/login", timeout=30).text)[1]
    session.post(f"{base}/login", data={"name": name, "password": password, "csrf_token": token}, timeout=30)
    return session.cookies["session"]


#: when the page's data was first painted: the render time of the element marked
#: ``elementtiming="case-data"`` (the server-drawn list or case), None when the page has none
SHOWN = """() => new Promise((resolve) => {
    if (!document.querySelector('[elementtiming="case-data"]')) { resolve(null); return; }
    setTimeout(() => resolve(null), 5000);
    new PerformanceObserver((list, observer) => {
        const hits = list.getEntries().filter((e) => e.identifier === 'case-data');
        if (!hits.length) return;
        observer.disconnect();
        resolve(Math.min(...hits.map((e) => e.renderTime || e.loadTime)));
    }).observe({ type: 'element', buffered: true });
})"""


def warm(base: str, cookie: str, paths: tuple[str, ...], rounds: int = 4) -> None:
    """Each path asked a few times, unthrottled, before measuring: every server process has
    answered it once (templates compiled, catalogues read), as on a server that has been running."""
    import requests

    for _ in range(rounds):
        for path in paths:
            requests.get(base + path, cookies={"session": cookie}, timeout=60)


def phone_pages(port: int, user: str, case_code: str, listed: int) -> list[dict]:
    """The case list and a case page on a phone over Fast 3G with the CPU slowed ×4: a first
    load with nothing cached, then a repeat load with the service worker in control."""
    from playwright.sync_api import sync_playwright

    throttle = Throttle(port, **FAST_3G)
    base = f"http://127.0.0.1:{throttle.port}"
    cookie = sign_in_cookie(base, user, PHONE_PASSWORD)
    warm(base, cookie, ("/cases", f"/cases/{case_code}", "/api/incidents?status=open&limit=500&mine=1",
                        f"/api/incidents/{case_code}"))
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        for name, path in (("case list", "/cases"), ("case page", f"/cases/{case_code}")):
            context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                                          is_mobile=True, has_touch=True, locale="zh-CN")
            context.add_cookies([{"name": "session", "value": cookie, "url": base}])
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
            row = {"page": name, "cases_listed": listed, "network": "Fast 3G (proxy)", "cpu_slowdown": 4}
            throttle.slow = True
            for load in ("first", "repeat"):
                throttle.reset()
                page.goto(base + path, wait_until="commit", timeout=120_000)
                page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=120_000)
                # bytes up to the scripts' ready (what the page fetches after, e.g. the case map's
                # code, is not the first screen's)
                row[f"{load}_kb"] = round((throttle.down.bytes + throttle.up.bytes) / 1000, 1)
                ready_s = page.evaluate("window.gridplan.readyAt") / 1000
                shown = page.evaluate(SHOWN)
                # usable: the page's data on the screen — painted from the page itself when the
                # server drew it (element timing), else when the script had drawn it
                row[f"{load}_usable_s"] = round(shown / 1000, 2) if shown is not None else round(ready_s, 2)
                row[f"{load}_scripts_ready_s"] = round(ready_s, 2)
                if load == "first":  # the service worker installs and keeps the static files
                    throttle.reset()
                    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
                    page.wait_for_function("() => navigator.serviceWorker.controller !== null",
                                           timeout=120_000)
                    page.wait_for_timeout(1500)
                    row["sw_install_kb"] = round((throttle.down.bytes + throttle.up.bytes) / 1000, 1)
            throttle.slow = False
            row["aims_met"] = (row["first_usable_s"] <= 1.5 and row["repeat_usable_s"] <= 1.5
                               and row["first_kb"] <= 150 and row["repeat_kb"] <= 30)
            out.append(row)
            context.close()
        browser.close()
    throttle.loop.call_soon_threadsafe(throttle.loop.stop)
    return out


def synthetic(engine, demo, n: int, seed: int = 3, base: int = 100_000) -> None:
    """``n`` incidents over a year in the demo's cells, with step times and step hours: ``base``
    made here, the rest copied from them by the database (INSERT … SELECT, with new codes)."""
    _synthetic(engine, demo, min(n, base), seed)
    table = Incident.__table__
    columns = [c for c in table.columns if c.name not in ("id", "code")]
    made, copy = min(n, base), 1
    while made < n:
        take = min(n - made, base)
        source = (select(*columns, (table.c.code + literal(f"-{copy}")).label("code"))
                  .where(table.c.code.like("B%"), ~table.c.code.like("%-%")).order_by(table.c.id).limit(take))
        with engine.begin() as conn:
            conn.execute(insert(table).from_select([c.name for c in columns] + ["code"], source))
        made, copy = made + take, copy + 1
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE incidents")


def _synthetic(engine, demo, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = demo.layers["grid_cells"]
    pick = rng.integers(len(cells), size=n)
    points = shapely.get_coordinates(shapely.point_on_surface(cells.geometry.values))[pick]
    codes = cells["code"].to_numpy()[pick]
    end = np.datetime64("2026-11-01T00:00", "s")
    reported = end - rng.integers(0, 365 * 86400, n).astype("timedelta64[s]")
    filed = reported + rng.integers(600, 7200, n).astype("timedelta64[s]")
    dispatched = filed + rng.integers(600, 7200, n).astype("timedelta64[s]")
    limit = rng.choice([2.0, 4.0, 8.0, 16.0, 40.0], n)
    due = add_working_hours(dispatched, limit)
    handled = add_working_hours(dispatched, limit * rng.lognormal(np.log(0.6), 0.6, n))
    closed = handled + rng.integers(600, 14400, n).astype("timedelta64[s]")
    done = closed < end
    status = np.where(done, "closed", "dispatched")
    rework = (rng.uniform(size=n) < 0.05).astype(int)
    wkb = shapely.to_wkb(shapely.points(points))
    py = lambda a: a.astype("datetime64[us]").astype(datetime)  # noqa: E731
    rows = {"reported_at": py(reported), "filed_at": py(filed), "dispatched_at": py(dispatched),
            "handled_at": py(handled), "closed_at": py(closed), "due_at": py(due)}
    table = Incident.__table__
    from geodata.dialect import geom_from_wkb

    stmt = insert(table).values(geom=geom_from_wkb())
    with engine.begin() as conn:
        for start in range(0, n, BATCH * 5):
            stop = min(start + BATCH * 5, n)
            batch = []
            for i in range(start, stop):
                ok = bool(done[i])
                batch.append({
                    "code": f"B{i:09d}", "category": "E01-01", "description": None, "status": str(status[i]),
                    "reported_at": rows["reported_at"][i], "filed_at": rows["filed_at"][i],
                    "dispatched_at": rows["dispatched_at"][i],
                    "handled_at": rows["handled_at"][i] if ok else None,
                    "feedback_at": None, "closed_at": rows["closed_at"][i] if ok else None,
                    "due_at": rows["due_at"][i], "grid_code": codes[i], "district_code": codes[i][:6],
                    "community_code": codes[i][:12], "street_code": codes[i][:9], "version": 5,
                    "rework_count": int(rework[i]), "filing_wh": 0.5, "dispatch_wh": 0.5,
                    "handling_wh": float(limit[i]) * 0.6 if ok else None, "verify_wh": 1.0 if ok else None,
                    "geom_wkb": wkb[i]})
            conn.execute(stmt, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rates-n", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--replay", type=float, default=0.1, help="share of requests sent again")
    parser.add_argument("--no-pages", dest="pages", action="store_false",
                        help="skip the phone pages on Fast 3G")
    parser.add_argument("--only", choices=["spatialite", "postgis"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    demo = generate(units=args.units, seed=1)
    results = {"clients": args.clients, "seconds": args.seconds, "workers": args.workers, "intake": [],
               "replay": args.replay, "pages": [], "rates": [],
               "machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                        "python": platform.python_version()}}
    from webmap import create_app
    from webmap.auth import add_token

    with tempfile.TemporaryDirectory(prefix="gridplan-bench-") as tmp, PostgisCluster() as pg_url:
        targets = {"spatialite": f"sqlite:///{Path(tmp) / 'bench.sqlite'}", "postgis": pg_url}
        if args.only:
            targets = {args.only: targets[args.only]}
        for name, url in targets.items():
            engine = get_engine(url)
            upgrade(engine)
            with engine.begin() as conn:
                seed_settings(conn)
            write_demo(engine, demo)
            with create_app({"DATABASE_URL": url}).app_context():
                token = add_token("bench", "supervisor", demo.layers["districts"]["code"].iloc[0])
                # the phone's user: the supervisor of the community with the most open cases
                with engine.connect() as conn:
                    community, listed = conn.execute(text(
                        "SELECT substr(grid_code, 1, 12) AS c, count(*) FROM incidents WHERE status NOT IN "
                        "('closed', 'evaluated', 'cancelled') AND grid_code IS NOT NULL "
                        "GROUP BY c ORDER BY count(*) DESC, c LIMIT 1")).one()
                    case_code = conn.execute(text(
                        "SELECT code FROM incidents WHERE substr(grid_code, 1, 12) = :c AND status NOT IN "
                        "('closed', 'evaluated', 'cancelled') ORDER BY id LIMIT 1"),
                        {"c": community}).scalar_one()
                from webmap.auth import add_user

                add_user("phone", "supervisor", PHONE_PASSWORD, community)
            pages = args.pages and name == "spatialite"
            if args.clients or pages:
                cells = demo.layers["grid_cells"]
                points = shapely.get_coordinates(shapely.point_on_surface(cells.geometry.values))
                port = free_port()
                proc = serve(url, port, args.workers)
                try:
                    wait_for(port, token)
                    if pages:  # before the intake adds its thousands of cases
                        for row in phone_pages(port, "phone", case_code, listed):
                            row["loadavg"] = [round(x, 2) for x in os.getloadavg()]
                            results["pages"].append(row)
                            print(json.dumps(row, ensure_ascii=False), flush=True)
                    tag = f"bench{int(time.time())}"
                    got = intake(port, token, points, args.clients, args.seconds, tag, args.replay) \
                        if args.clients else None
                finally:
                    proc.terminate()
                    proc.wait()
            if args.clients:
                row = {"database": name, **{k: v for k, v in got.items() if k != "acknowledged"},
                       "acknowledged": len(got["acknowledged"]), **check(engine, tag, got["acknowledged"]),
                       "loadavg": [round(x, 2) for x in os.getloadavg()]}
                results["intake"].append(row)
                print(json.dumps(row), flush=True)
            if args.rates_n:
                started = time.perf_counter()
                synthetic(engine, demo, args.rates_n)
                loaded = time.perf_counter() - started
                with engine.connect() as conn:
                    total = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
                # a closed year, and the year up to a moment of its last day (deadlines earlier
                # that day read from the cases)
                for (first, last), now in ((("2025-11-01", "2026-10-31"), datetime(2026, 11, 1)),
                                           (("2025-11-01", "2026-10-31"), datetime(2026, 10, 31, 14, 30))):
                    since, until = rates.period(first, last)
                    for by in ("district", "street", "community"):
                        best = []
                        for _ in range(3):
                            started = time.perf_counter()
                            table = rates.rates(engine, by, since, until, now=now)
                            best.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        scan = incident_rows.rate_sums_scan(engine, by, since, until, now)
                        scan_s = time.perf_counter() - started
                        same = [r["due"] for r in scan] == table["due"].tolist() and [
                            r["reported"] for r in scan] == table["reported"].tolist()
                        row = {"database": name, "incidents": total, "by": by, "now": now.isoformat(),
                               "groups": len(table), "seconds": round(min(best), 3),
                               "scan_seconds": round(scan_s, 3), "same_as_scan": same,
                               "load_s": round(loaded, 1), "reported": int(table["reported"].sum()),
                               "loadavg": [round(x, 2) for x in os.getloadavg()]}
                        results["rates"].append(row)
                        print(json.dumps(row), flush=True)
            engine.dispose()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
