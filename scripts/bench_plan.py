"""Benchmark: automatic redistricting against its anchors.

Inputs: the Providence census blocks (households = population / 2.62, wards as streets), the
demo district, and (``--city``) the city-size demo. For each: the adjacency build on its own,
then gridplan's plan (wall and CPU seconds) and its scores. On Providence and the demo district,
in the same run and on the same input, each capped at ``--cap`` seconds: PySAL spopt's
MaxPHeuristic (floor = the minimum) and GerryChain's recursive_tree_part (as many parts as
gridplan made) — in a virtualenv of their own (requirements-bench-plan.txt). Then a disruption
case: households in five communities grow 30 % past the maximum and the district is re-planned;
the households moved are compared with a lower bound from an integer program (PuLP + HiGHS).

    .venv/bin/python scripts/bench_plan.py [--city] --json bench-out/plan.json
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

import numpy as np
import pandas as pd
import pyogrio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))
from benchvenv import anchor_venv  # noqa: E402

from geodata.sources import read_source  # noqa: E402
from geodata.topology import rook_pairs  # noqa: E402
from layers.plans.engine import PlanResult, Rules, make_plan  # noqa: E402
from layers.plans.partition import Partition, UnitGraph  # noqa: E402
from layers.sample_data.demo import generate  # noqa: E402

VENV = ROOT / "bench-out" / "venv-anchors"
TEST_DATA = ROOT / "tests" / "data"


def providence():
    with tempfile.TemporaryDirectory() as tmp:
        zipped = TEST_DATA / "providence" / "Providence_blocks.zip"
        blocks = read_source(zipped, workdir=Path(tmp)).to_crs(4326)
    units = blocks[["GEOID10", "geometry"]].rename(columns={"GEOID10": "code"})
    units["households"] = np.round(blocks["TOTPOP"] / 2.62).astype(int)
    units["street_code"] = [f"999000{int(w):03d}" for w in blocks["WARD"]]
    units["community_code"] = None
    return units


def adjacency_of(units) -> tuple[pd.DataFrame, float]:
    start = time.process_time()
    pairs = rook_pairs(units)
    seconds = time.process_time() - start
    codes = units["code"].to_numpy()
    return pd.DataFrame({"unit_a": codes[pairs["i"]], "unit_b": codes[pairs["j"]],
                         "shared_m": pairs["shared_m"]}), seconds


def score(graph: UnitGraph, labels, rules: Rules) -> dict:
    scores = PlanResult(graph, Partition(graph, np.asarray(labels, dtype=object)), rules).scores()
    keep = ("communities", "outside_bounds", "non_contiguous", "crossing_street", "households_moved",
            "households_moved_share", "pp_mean", "households_min", "households_max")
    return {k: scores[k] for k in keep}


def ours(units, adjacency, rules: Rules) -> tuple[dict, PlanResult]:
    wall, cpu = time.perf_counter(), time.process_time()
    graph = UnitGraph.from_units(units, adjacency)
    result = make_plan(graph, rules)
    timing = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3)}
    return {**timing, **score(graph, result.partition.labels, rules),
            "infeasible": len(result.infeasible)}, result


def anchor(method: str, units, adjacency, params: dict, cap: int, tmp: Path) -> dict:
    units_path, adjacency_path = tmp / "units.gpkg", tmp / "adjacency.csv"
    pyogrio.write_dataframe(units[["code", "households", "street_code", "community_code", "geometry"]],
                            units_path)
    adjacency.to_csv(adjacency_path, index=False)
    (tmp / "params.json").write_text(json.dumps(params))
    out = tmp / f"{method}.json"
    start = time.perf_counter()
    try:
        subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "scripts" / "anchors_plan.py"), method,
                        str(units_path), str(adjacency_path), str(tmp / "params.json"), str(out)],
                       check=True, timeout=cap, capture_output=True)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {cap} s"}
    answer = json.loads(out.read_text())
    answer["wall_s"] = round(time.perf_counter() - start, 2)
    return answer


def stored_plan(engine, edits: int = 300) -> dict:
    """On a database holding the demo: an automatic plan of every street from the database to a
    stored draft, in a fresh process's memory (seconds, and where they go), then p50/p95
    milliseconds of a hand edit (one unit to a neighbouring community), each with the stored
    revision and version checked, in-process (the HTTP layer adds a few milliseconds)."""
    from layers.plans import edits as plan_edits
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan

    memory = PlanMemory(engine)  # nothing in memory, as in a worker that has just started
    start = time.perf_counter()
    units = memory.units()
    read_s = time.perf_counter() - start
    plan_id, _ = auto_plan(memory, "bench", "bench")
    stored_s = time.perf_counter() - start
    loaded = memory.plan(plan_id)
    rng = np.random.default_rng(1)
    version, times = loaded.version, []
    graph = units.graph
    while len(times) < edits:
        u = int(rng.integers(len(graph.codes)))
        labels = loaded.partition.labels
        others = [labels[v] for v in graph.neighbours(u) if labels[v] != labels[u]]
        if not others:
            continue
        begin = time.perf_counter()
        answer = plan_edits.move_units(memory, plan_id, [str(graph.codes[u])], others[0], version, "bench")
        version = answer["version"]
        times.append((time.perf_counter() - begin) * 1000)
    return {"units": len(graph.codes), "stored_plan_s": round(stored_s, 2), "read_units_s": round(read_s, 2),
            "edits": edits, "edit_p50_ms": round(float(np.percentile(times, 50)), 1),
            "edit_p95_ms": round(float(np.percentile(times, 95)), 1)}


def stored_demo(demo, tmp: Path):
    from geodata.db import get_engine
    from geodata.migrate import upgrade
    from layers.sample_data.demo import write_demo

    engine = get_engine(f"sqlite:///{tmp / 'plans.sqlite'}")
    upgrade(engine)
    write_demo(engine, demo)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", action="store_true", help="also plan the city-size demo (200,000 units)")
    parser.add_argument("--cap", type=int, default=600, help="seconds each anchor may take")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    anchor_venv("anchors", "requirements-bench-plan.txt")
    rules = Rules()
    results = {"machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                           "python": platform.python_version()}, "inputs": {}}
    inputs = {"providence": providence(), "demo_district": generate(4000, 1).layers["units"]}
    if args.city:
        inputs["city"] = generate(200_000, 1).layers["units"]
    for name, units in inputs.items():
        adjacency, adjacency_s = adjacency_of(units)
        row = {"units": len(units), "adjacency_cpu_s": round(adjacency_s, 2)}
        row["gridplan"], result = ours(units, adjacency, rules)
        print(name, "gridplan", json.dumps(row["gridplan"]), flush=True)
        if name != "city":
            graph = result.graph
            with tempfile.TemporaryDirectory() as tmp:
                for method, params in (("maxp", {"minimum": rules.minimum}),
                                       ("tree", {"minimum": rules.minimum, "maximum": rules.maximum,
                                                 "parts": row["gridplan"]["communities"]})):
                    answer = anchor(method, units, adjacency, params, args.cap, Path(tmp))
                    if answer.get("result"):
                        labels = [answer["result"][c] for c in graph.codes]
                        answer = {"cpu_s": round(answer["cpu_s"], 2), "wall_s": answer["wall_s"],
                                  **score(graph, labels, rules)}
                    row[method] = answer
                    print(name, method, json.dumps(answer), flush=True)
        results["inputs"][name] = row
    # disruption: five communities grow 30 % past the maximum; re-plan; compare with a lower bound
    demo = generate(4000, 1)
    units = demo.layers["units"].copy()
    base = make_plan(UnitGraph.from_units(units, demo.adjacency), rules)
    units["community_code"] = base.assignment.reindex(units["code"]).to_numpy()
    table = base.community_table().set_index("community_code")
    grown = np.random.default_rng(3).choice(table.index, 5, replace=False)
    for code in grown:
        inside = units["community_code"] == code
        factor = 1.3 * rules.maximum / table.loc[code, "households"]
        units.loc[inside, "households"] = np.ceil(units.loc[inside, "households"] * factor).astype(int)
    graph = UnitGraph.from_units(units, demo.adjacency)
    wall = time.perf_counter()
    replan = make_plan(graph, rules)
    seconds = time.perf_counter() - wall
    moved = replan.scores()["households_moved"]
    streets = sorted({c[:9] for c in grown})
    touched = units[units["street_code"].isin(streets)]
    with tempfile.TemporaryDirectory() as tmp:
        pairs = demo.adjacency
        inside = pairs["unit_a"].isin(touched["code"]) & pairs["unit_b"].isin(touched["code"])
        params = {"minimum": rules.minimum, "maximum": rules.maximum, "time_limit": 60}
        lb = anchor("bound", touched, pairs[inside], params, args.cap, Path(tmp))
    totals = units.groupby("community_code")["households"].sum()
    valid = [c for c in totals.index if rules.minimum <= totals[c] <= rules.maximum]
    labels = replan.partition.labels
    kept = min(graph.households[(graph.current == c) & (labels == c)].sum() / totals[c] for c in valid)
    bound = (lb.get("result") or {}).get("lower_bound")
    results["disruption"] = {"grown": list(grown), "replan_s": round(seconds, 3), "households_moved": moved,
                             "lower_bound": lb.get("result") or lb,
                             "ratio": round(moved / bound, 2) if bound else None,
                             "valid_kept_min_share": round(float(kept), 4),
                             "valid_kept_code": all(c in set(labels) for c in valid)}
    print("disruption", json.dumps(results["disruption"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results["stored"] = stored_plan(stored_demo(generate(200_000, 1) if args.city else demo, Path(tmp)))
    print("stored plan and hand edits", json.dumps(results["stored"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
