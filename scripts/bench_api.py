"""Benchmark: the layer API under load, beside pygeoapi, and the map page in Chromium.

With the city-size demo (200,000 units) in SpatiaLite and in PostGIS, it serves gridplan with
gunicorn and, in the same run, pygeoapi (in a virtualenv of its own, from
requirements-bench-api.txt) on the same PostGIS table. ``wrk`` (Debian) sends bounding-box item
queries (about 600 m × 600 m, 100 features at most) from 10 and 50 connections on loopback and
reports requests per second with p50/p95 latency. Then headless Chromium opens the planner's
map: HTML weight and the time until the communities are drawn.

    .venv/bin/python scripts/bench_api.py --units 200000 --json bench-out/api.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchvenv import anchor_venv  # noqa: E402

from geodata.db import get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.store import layer_extent  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402
from tests.pgcluster import PostgisCluster, free_port  # noqa: E402

VENV = ROOT / "bench-out" / "venv-pygeoapi"
WORKERS = 2
LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout
  io.write(string.format(
    'RESULT {"rps": %%.1f, "p50_ms": %%.2f, "p95_ms": %%.2f, "requests": %%d, "errors": %%d}\\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, summary.requests, errors))
end
"""


def wait_for(url: str, headers: dict | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5):
                return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def bboxes(extent, n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = extent
    dx, dy = 0.006, 0.0054  # about 600 m × 600 m at 30°N
    x = rng.uniform(minx, maxx - dx, n)
    y = rng.uniform(miny, maxy - dy, n)
    return [f"{a:.6f},{b:.6f},{a + dx:.6f},{b + dy:.6f}" for a, b in zip(x, y, strict=True)]


def run_wrk(base: str, paths: list[str], connections: int, seconds: int, headers: dict, tmp: Path) -> dict:
    path_file = tmp / f"paths-{connections}.txt"
    path_file.write_text("\n".join(paths) + "\n")
    script = tmp / "bbox.lua"
    script.write_text(LUA % path_file)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, base], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def serve(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pygeoapi_config(pg_url: str, port: int, extent, tmp: Path) -> tuple[Path, Path]:
    user_host, db = pg_url.split("://", 1)[1].rsplit("/", 1)
    user, host = user_host.split("@")
    host, pg_port = host.split(":")
    config = f"""
server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  languages: [en-US]
  limits: {{default_items: 100, max_items: 10000}}
  map: {{url: "https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png", attribution: OSM}}
logging: {{level: ERROR}}
metadata:
  identification: {{title: gridplan bench, description: bench, keywords: [bench], keywords_type: theme,
                    terms_of_service: none, url: http://127.0.0.1}}
  license: {{name: none, url: http://127.0.0.1}}
  provider: {{name: bench, url: http://127.0.0.1}}
  contact: {{name: bench, position: bench, address: x, city: x, stateorprovince: x, postalcode: x,
            country: x, phone: x, fax: x, email: x@example.org, url: http://127.0.0.1, hours: x,
            instructions: x, role: pointOfContact}}
resources:
  units:
    type: collection
    title: units
    description: planning units
    keywords: [units]
    extents:
      spatial: {{bbox: {list(extent)}, crs: http://www.opengis.net/def/crs/OGC/1.3/CRS84}}
    providers:
      - type: feature
        name: PostgreSQL
        data: {{host: {host}, port: {pg_port}, dbname: {db}, user: {user}, password: ""}}
        id_field: id
        table: units
        geom_field: geom
"""
    cfg = tmp / "pygeoapi.yml"
    cfg.write_text(config)
    openapi = tmp / "openapi.yml"
    subprocess.run([str(VENV / "bin" / "pygeoapi"), "openapi", "generate", str(cfg), "--output-file",
                    str(openapi)], check=True, capture_output=True, env=os.environ | {
                        "PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(openapi)})
    return cfg, openapi


def page_figures(base: str, user: str, password: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("**/tile.openstreetmap.org/**", lambda route: route.abort())
        page.goto(f"{base}/login")
        page.fill("input[name=name]", user)
        page.fill("input[name=password]", password)
        page.click("form.login button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        html = page.request.get(f"{base}/map").body()
        start = time.perf_counter()
        page.goto(f"{base}/map")
        page.wait_for_function("() => window.gridplan && window.gridplan.communitiesDrawnAt", timeout=60_000)
        drawn = time.perf_counter() - start
        in_page = page.evaluate("window.gridplan.communitiesDrawnAt") / 1000
        count = page.evaluate("window.gridplan.layers.communities.getLayers().length")
        browser.close()
    return {"html_bytes": len(html), "communities_drawn_s": round(drawn, 3),
            "communities_drawn_since_navigation_s": round(in_page, 3), "communities": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    anchor_venv("pygeoapi", "requirements-bench-api.txt")
    demo = generate(args.units, 1)
    print(f"demo: {len(demo.layers['units'])} units", flush=True)
    results = {"units": len(demo.layers["units"]), "workers": WORKERS, "rows": [], "pages": {},
               "machine": {"cpus": os.cpu_count(), "machine": platform.machine()}}
    with tempfile.TemporaryDirectory(prefix="gridplan-bench-") as tmp_name, PostgisCluster() as pg_url:
        tmp = Path(tmp_name)
        targets = {"spatialite": f"sqlite:///{tmp / 'bench.sqlite'}", "postgis": pg_url}
        for url in targets.values():
            engine = get_engine(url)
            upgrade(engine)
            write_demo(engine, demo)
        extent = layer_extent(get_engine(pg_url), "units")
        paths = bboxes(extent, 500)
        env_app = {"PYTHONPATH": str(ROOT)}
        # a token and a planner account in each database
        from webmap import create_app
        from webmap.auth import add_token, add_user

        tokens = {}
        for name, url in targets.items():
            app = create_app({"DATABASE_URL": url})
            with app.app_context():
                tokens[name] = add_token("bench", "viewer")
                add_user("bench", "planner", "bench password")
        for name, url in targets.items():
            port = free_port()
            proc = serve([str(ROOT / ".venv" / "bin" / "gunicorn"), "--no-control-socket",
                          "--workers", str(WORKERS), "--bind",
                          f"127.0.0.1:{port}", "webmap:create_app()"], env_app | {"DATABASE_URL": url})
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {tokens[name]}"}
            try:
                wait_for(f"{base}/api/collections", auth)
                ours = [f"/api/collections/units/items?limit=100&bbox={b}" for b in paths]
                for c in (10, 50):
                    row = {"server": "gridplan", "database": name, "connections": c,
                           **run_wrk(base, ours, c, args.seconds, auth, tmp)}
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
                results["pages"][name] = page_figures(base, "bench", "bench password")
                print(name, "page", json.dumps(results["pages"][name]), flush=True)
            finally:
                proc.terminate()
                proc.wait()
        port = free_port()
        cfg, openapi = pygeoapi_config(pg_url, port, extent, tmp)
        proc = serve([str(VENV / "bin" / "gunicorn"), "--workers", str(WORKERS), "--bind",
                      f"127.0.0.1:{port}", "pygeoapi.flask_app:APP"],
                     {"PYGEOAPI_CONFIG": str(cfg), "PYGEOAPI_OPENAPI": str(openapi)})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{base}/collections/units/items?limit=1&f=json")
            theirs = [f"/collections/units/items?f=json&limit=100&bbox={b}" for b in paths]
            for c in (10, 50):
                row = {"server": "pygeoapi", "database": "postgis", "connections": c,
                       **run_wrk(base, theirs, c, args.seconds, {}, tmp)}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait()
    by = {(r["server"], r["database"], r["connections"]): r for r in results["rows"]}
    for c in (10, 50):
        ratio = by[("gridplan", "postgis", c)]["rps"] / by[("pygeoapi", "postgis", c)]["rps"]
        results[f"ratio_postgis_{c}"] = round(ratio, 2)
        print(f"{c} connections: gridplan/pygeoapi throughput on PostGIS = {ratio:.2f}×")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
