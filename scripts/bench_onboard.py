"""Benchmark: onboarding a generated city from names, roads and a households table.

    .venv/bin/python scripts/bench_onboard.py [--communities 1000] [--postgis] [--plan] [--json out.json]

Generates a city as cities hand it over (:mod:`layers.sample_data.sample_city`: streets and communities with
names and no codes, community polygons with small overlaps, gaps and slivers outside their street,
road centre-lines as one feature per segment — about 51,000 for 1,000 communities — and a
households table), writes it as a folder, and runs ``flask onboard``'s steps on a fresh SpatiaLite
file (and, with ``--postgis``, on a throwaway PostGIS cluster): the seconds of each step and in all.
``--plan`` also times an automatic plan of the whole city on the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geodata.db import get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.standards import seed_settings  # noqa: E402
from layers.onboarding.folder import onboard  # noqa: E402
from layers.sample_data.sample_city import sample_city, write_folder  # noqa: E402


def _run(url: str, folder: Path, with_plan: bool) -> dict:
    engine = get_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    start = time.perf_counter()
    report = onboard(engine, folder, "420503",
                     progress=lambda name, i, n: print(f"  [{i + 1}/{n}] {name}", flush=True))
    out = report.as_dict()
    out["wall_seconds"] = round(time.perf_counter() - start, 2)
    out["figures"] = out["steps"]["report"]
    out["left_for_planner"] = len(out["steps"]["clean"]["left_for_planner"])
    out["cleaned"] = len(out["steps"]["clean"]["changed"])
    del out["steps"]
    if with_plan:
        from layers.plans.communities import bounds
        from layers.plans.engine import Rules, make_plan
        from layers.plans.files import units_from_database
        from layers.plans.partition import UnitGraph

        start = time.perf_counter()
        limits = bounds(engine)
        units, adjacency = units_from_database(engine)
        result = make_plan(UnitGraph.from_units(units, adjacency),
                           Rules.from_params({}, limits.minimum, limits.maximum))
        table = result.community_table()
        out["plan"] = {"seconds": round(time.perf_counter() - start, 2), "communities": len(table),
                       "within_bounds": int(table["within_bounds"].sum())}
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--communities", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgis", action="store_true", help="also on a throwaway PostGIS cluster")
    parser.add_argument("--plan", action="store_true", help="also time an automatic plan of the city")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gridplan-bench-onboard-"))
    start = time.perf_counter()
    city = sample_city(args.communities, args.seed, blocks_per_side=5, communities_per_street=(4, 4))
    folder = write_folder(city, tmp / "city")
    generated = round(time.perf_counter() - start, 2)
    results = {"machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version()},
               "city": {"communities": len(city.communities), "streets": len(city.streets),
                        "road_segments": len(city.roads), "households": int(city.households["户数"].sum()),
                        "generated_seconds": generated}}
    print(json.dumps(results["city"], ensure_ascii=False), flush=True)
    print("spatialite", flush=True)
    results["spatialite"] = _run(f"sqlite:///{tmp / 'city.sqlite'}", folder, args.plan)
    print(json.dumps(results["spatialite"], ensure_ascii=False), flush=True)
    if args.postgis:
        from tests import pgcluster

        cluster = pgcluster.PostgisCluster(dbname="bench_onboard")
        cluster.start()
        try:
            print("postgis", flush=True)
            results["postgis"] = _run(cluster.url, folder, args.plan)
            print(json.dumps(results["postgis"], ensure_ascii=False), flush=True)
        finally:
            cluster.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
