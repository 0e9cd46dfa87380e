"""Run one anchor of the redistricting benchmark in its own virtualenv (bench-out/venv-anchors).

    python anchors_plan.py maxp|tree|bound UNITS.gpkg ADJACENCY.csv PARAMS.json OUT.json

``maxp``: PySAL spopt's MaxPHeuristic (floor = the minimum households); ``tree``: GerryChain's
recursive_tree_part with as many parts as gridplan made; ``bound``: a lower bound on the
households that must move after growth — an integer program (PuLP + HiGHS) over the touched
streets with the household bounds and moves between adjacent communities only (no contiguity).
Writes the labels (or the bound) and the CPU seconds.
"""

import json
import sys
import time

import geopandas as gpd
import pandas as pd


def maxp(units, adjacency, params):
    from libpysal.weights import W
    from spopt.region import MaxPHeuristic

    units = units.reset_index(drop=True)  # spopt indexes the frame by position
    position = {c: i for i, c in enumerate(units["code"])}
    neighbours = {i: [] for i in range(len(units))}
    for a, b in zip(adjacency["unit_a"].map(position), adjacency["unit_b"].map(position), strict=True):
        neighbours[a].append(b)
        neighbours[b].append(a)
    w = W(neighbours, silence_warnings=True)
    model = MaxPHeuristic(units, w, ["households"], "households", params["minimum"], top_n=2)
    model.solve()
    return dict(zip(units["code"], (f"maxp-{label}" for label in model.labels_), strict=True))


def tree(units, adjacency, params):
    import networkx as nx
    from gerrychain import Graph
    from gerrychain.tree import recursive_tree_part

    graph = nx.Graph()
    for code, households in zip(units["code"], units["households"], strict=True):
        graph.add_node(code, households=int(households))
    graph.add_edges_from(zip(adjacency["unit_a"], adjacency["unit_b"], strict=True))
    parts = params["parts"]
    target = units["households"].sum() / parts
    epsilon = min((params["maximum"] - target) / target, (target - params["minimum"]) / target)
    graph = Graph.from_networkx(graph)
    assignment = recursive_tree_part(graph, range(parts), target, "households", max(epsilon, 0.01))
    return {c: f"tree-{p}" for c, p in assignment.items()}


def bound(units, adjacency, params):
    import pulp

    current = dict(zip(units["code"], units["community_code"], strict=True))
    households = dict(zip(units["code"], units["households"], strict=True))
    touching = {}
    for a, b in zip(adjacency["unit_a"], adjacency["unit_b"], strict=True):
        ca, cb = current.get(a), current.get(b)
        if ca and cb and ca != cb:
            touching.setdefault(ca, set()).add(cb)
            touching.setdefault(cb, set()).add(ca)
    communities = sorted({c for c in current.values() if c})
    problem = pulp.LpProblem("moves", pulp.LpMinimize)
    x = {}
    for u, c0 in current.items():
        if not c0:
            continue
        for c in {c0} | touching.get(c0, set()):
            x[u, c] = pulp.LpVariable(f"x_{len(x)}", cat="Binary")
    problem += pulp.lpSum(households[u] * v for (u, c), v in x.items() if c != current[u])
    for u in current:
        options = [v for (uu, _c), v in x.items() if uu == u]
        if options:
            problem += pulp.lpSum(options) == 1
    by_community = {c: [] for c in communities}
    for (u, c), v in x.items():
        by_community[c].append(households[u] * v)
    for terms in by_community.values():
        problem += pulp.lpSum(terms) >= params["minimum"]
        problem += pulp.lpSum(terms) <= params["maximum"]
    solver = pulp.HiGHS(msg=False, timeLimit=params.get("time_limit", 60))
    problem.solve(solver)
    info = problem.solverModel.getInfo()
    return {"status": pulp.LpStatus[problem.status], "incumbent": pulp.value(problem.objective),
            "lower_bound": info.mip_dual_bound, "gap": info.mip_gap}


def main():
    method, units_path, adjacency_path, params_path, out_path = sys.argv[1:]
    units = gpd.read_file(units_path)
    adjacency = pd.read_csv(adjacency_path, dtype={"unit_a": str, "unit_b": str})
    params = json.load(open(params_path))
    start = time.process_time()
    try:
        result = {"maxp": maxp, "tree": tree, "bound": bound}[method](units, adjacency, params)
        error = None
    except Exception as exc:  # an anchor that fails is a result, not a crash of the benchmark
        result, error = None, f"{type(exc).__name__}: {exc}"
    json.dump({"method": method, "cpu_s": time.process_time() - start, "result": result, "error": error},
              open(out_path, "w"))


if __name__ == "__main__":
    main()
