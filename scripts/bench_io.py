"""Benchmark: import and export of the demo's planning units on SpatiaLite and PostGIS.

For each database and format it times gridplan's export of the ``units`` layer next to
``ogr2ogr`` exporting the same table from the same database (the yardstick; aim: within 1.5×),
then gridplan's import of each exported file (checks, repair, reprojection, one transaction and
the adjacency build). Prints a table; ``--json PATH`` also writes the figures.

    .venv/bin/python scripts/bench_io.py --units 200000 --json bench-out/io.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geodata.db import get_engine  # noqa: E402
from geodata.exporter import export_layer  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from layers.onboarding.imports import import_layer  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402
from tests.pgcluster import PostgisCluster  # noqa: E402

FORMATS = {"shp": ("ESRI Shapefile", "shp.zip"), "gpkg": ("GPKG", "gpkg"),
           "geojson": ("GeoJSON", "geojson"), "csv": ("CSV", "csv")}
OGR_OPTIONS = {"shp": ["-lco", "ENCODING=UTF-8"], "gpkg": [], "geojson": ["-lco", "RFC7946=YES"],
               "csv": ["-lco", "GEOMETRY=AS_WKT"]}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def ogr_source(url: str) -> str:
    if url.startswith("sqlite"):
        return url.split(":///", 1)[1]
    rest = url.split("://", 1)[1]
    user, hostpart = rest.split("@", 1)
    host, db = hostpart.split("/", 1)
    host, port = host.split(":")
    return f"PG:host={host} port={port} dbname={db} user={user}"


def bench_database(name: str, url: str, demo, layer: str, out: Path, formats: list[str],
                   imports: bool = True) -> list[dict]:
    engine = get_engine(url)
    upgrade(engine)
    seconds, _ = timed(write_demo, engine, demo)
    rows = [{"database": name, "step": "write demo (all layers)", "format": "-", "seconds": seconds}]
    print(f"{name}: demo written in {seconds:.1f} s", flush=True)
    for fmt in formats:
        driver, suffix = FORMATS[fmt]
        ours = out / f"{name}-{layer}-ours.{'zip' if fmt == 'shp' else fmt}"
        t_ours, report = timed(export_layer, engine, layer, fmt, ours)
        theirs = out / f"{name}-{layer}-ogr.{suffix}"
        cmd = ["ogr2ogr", "-f", driver, *OGR_OPTIONS[fmt], str(theirs), ogr_source(url), layer]
        t_ogr, _ = timed(subprocess.run, cmd, check=True, capture_output=True)
        rows.append({"database": name, "step": f"export {layer}", "format": fmt, "seconds": t_ours,
                     "ogr2ogr_seconds": t_ogr, "ratio": t_ours / t_ogr, "features": report.features})
        print(f"{name}: export {fmt:8s} ours {t_ours:7.2f} s   ogr2ogr {t_ogr:7.2f} s   "
              f"ratio {t_ours / t_ogr:5.2f}", flush=True)
    for fmt in formats if imports else []:
        source = out / f"{name}-{layer}-ours.{'zip' if fmt == 'shp' else fmt}"
        t_in, report = timed(import_layer, engine, layer, source, mode="replace")
        rows.append({"database": name, "step": f"import {layer} (replace)", "format": fmt,
                     "seconds": t_in, "features": report.written,
                     "adjacency_pairs": report.adjacency_pairs})
        print(f"{name}: import {fmt:8s} {t_in:7.2f} s ({report.written} features, "
              f"{report.adjacency_pairs} neighbour pairs)", flush=True)
    engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layer", default="units")
    parser.add_argument("--databases", default="spatialite,postgis")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated: shp,gpkg,geojson,csv")
    parser.add_argument("--no-import", action="store_true", help="time the exports only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    formats = args.formats.split(",")

    seconds, demo = timed(generate, args.units, args.seed)
    print(f"demo of {len(demo.layers['units'])} units generated in {seconds:.1f} s", flush=True)
    rows = [{"database": "-", "step": "generate demo", "format": "-", "seconds": seconds}]
    with tempfile.TemporaryDirectory(prefix="gridplan-bench-") as tmp:
        out = Path(tmp)
        for name in args.databases.split(","):
            if name == "spatialite":
                rows += bench_database(name, f"sqlite:///{out / 'bench.sqlite'}", demo, args.layer, out,
                                       formats, not args.no_import)
            else:
                with PostgisCluster() as url:
                    rows += bench_database(name, url, demo, args.layer, out, formats, not args.no_import)
    machine = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
               "processor": platform.processor() or platform.machine()}
    result = {"units": len(demo.layers["units"]), "machine": machine, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
