"""Benchmark: grid cells (网格) for a whole city — generation time, share of cells within the
household range, gaps and overlaps left.

    .venv/bin/python scripts/bench_grid.py [--units 200000] [--db instance/city.sqlite] [--json out.json]

Generates the demo at ``--units`` planning units (200,000 ≈ a city of 2 million households) into a
SpatiaLite file (or reuses ``--db`` when it already holds one), then generates and stores every
community's cells from nothing (300–500 households) and a second time from the stored cells
(regeneration), timing each and validating the result.
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

from sqlalchemy import delete  # noqa: E402

from geodata.db import get_engine  # noqa: E402
from geodata.migrate import upgrade  # noqa: E402
from geodata.models import GridCell  # noqa: E402
from geodata.store import count_layer  # noqa: E402
from layers.grid.cells import generate_grid, grid_rules  # noqa: E402
from layers.sample_data.demo import generate, write_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--db", type=Path, help="a SpatiaLite file to use (made when missing or empty)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="gridplan-bench-")) / "city.sqlite"
    engine = get_engine(f"sqlite:///{path}")
    upgrade(engine)
    if not count_layer(engine, "units"):
        start = time.perf_counter()
        write_demo(engine, generate(args.units, 1))
        print(f"demo of {args.units} units written in {time.perf_counter() - start:.0f} s", flush=True)
    with engine.begin() as conn:
        conn.execute(delete(GridCell))  # from nothing
    results = {"machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version()},
               "units": count_layer(engine, "units")}
    for run in ("from_nothing", "regenerate"):
        start = time.perf_counter()
        answer = generate_grid(engine, grid_rules(engine))
        answer["seconds"] = round(time.perf_counter() - start, 2)
        results[run] = answer
        print(run, json.dumps(answer, ensure_ascii=False), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
