"""The anchors of the coverage benchmark, run in their own virtualenv (bench-out/venv-coverage):

    python anchors_coverage.py INSTANCE.npz PARAMS.json OUT.json

- ``sjoin_nearest``: geopandas, one ``sjoin_nearest(max_distance=r)`` per kind × radius;
- ``networkx``: the same road graph (gridplan's nodes and segments, each household and facility
  joined to its nearest node by the straight distance), one ``multi_source_dijkstra_path_length``
  per kind with cutoff 1,000 m, graph build included; its distances are compared with gridplan's;
- ``pandana``: the same nodes and segments, contraction hierarchies (``precompute(1000)``) and
  ``nearest_pois`` per kind (facilities at their nearest node);
- ``spopt_mclp``: PySAL spopt's ``MCLP.from_cost_matrix`` on the merged demand (one row per
  group of demand points covered by the same candidates), solved by HiGHS through PuLP.

Wall-clock seconds of each, and what it found.
"""

import json
import sys
import time

import numpy as np


def sjoin_nearest(data, params):
    import geopandas as gpd

    households = gpd.GeoDataFrame({"households": data["households"]},
                                  geometry=gpd.points_from_xy(*data["xy"].T), crs=4547)
    t = time.perf_counter()
    covered = {}
    for kind in params["kinds"]:
        at = data["kind"] == kind
        facilities = gpd.GeoDataFrame(geometry=gpd.points_from_xy(*data["fac_xy"][at].T), crs=4547)
        for r in params["radii"]:
            joined = gpd.sjoin_nearest(households, facilities, max_distance=r, how="inner")
            hit = np.unique(joined.index.to_numpy())
            covered[f"{kind}@{int(r)}"] = int(data["households"][hit].sum())
    return {"seconds": round(time.perf_counter() - t, 3), "covered": covered}


def networkx_roads(data, params):
    import networkx as nx

    n = len(data["node_xy"])
    t = time.perf_counter()
    xy, edges = data["node_xy"], data["edges"]
    weight = np.hypot(*(xy[edges[:, 0]] - xy[edges[:, 1]]).T)
    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(edges[:, 0].tolist(), edges[:, 1].tolist(), weight.tolist(),
                                      strict=True))
    leaves = n + np.arange(len(data["fac_xy"]))
    graph.add_weighted_edges_from(zip(data["f_node"].tolist(), leaves.tolist(), data["f_access"].tolist(),
                                      strict=True))
    built = time.perf_counter() - t
    limit = max(params["radii"])
    worst, mismatched = 0.0, 0
    covered = {}
    for i, kind in enumerate(params["kinds"]):
        sources = leaves[data["kind"] == kind].tolist()
        reached = nx.multi_source_dijkstra_path_length(graph, sources, cutoff=limit)
        at_node = np.full(n, np.inf)
        nodes = np.fromiter((k for k in reached if k < n), dtype=np.int64)
        at_node[nodes] = [reached[k] for k in nodes.tolist()]
        distance = at_node[data["h_node"]] + data["h_access"]
        distance[distance > limit] = np.inf
        ours = data["road_distance"][i]
        mismatched += int((np.isfinite(distance) != np.isfinite(ours)).sum())
        both = np.isfinite(distance) & np.isfinite(ours)
        if both.any():
            worst = max(worst, float(np.abs(distance[both] - ours[both]).max()))
        for r in params["radii"]:
            covered[f"{kind}@{int(r)}"] = int(data["households"][distance <= r].sum())
    return {"seconds": round(time.perf_counter() - t, 3), "graph_seconds": round(built, 3),
            "max_abs_difference_m": worst, "reach_mismatches": mismatched, "covered": covered}


def pandana_roads(data, params):
    import pandana
    import pandas as pd

    t = time.perf_counter()
    xy, edges = data["node_xy"], data["edges"]
    weight = np.hypot(*(xy[edges[:, 0]] - xy[edges[:, 1]]).T)
    net = pandana.Network(pd.Series(xy[:, 0]), pd.Series(xy[:, 1]), pd.Series(edges[:, 0]),
                          pd.Series(edges[:, 1]), pd.DataFrame({"w": weight}), twoway=True)
    limit = max(params["radii"])
    net.precompute(limit)
    built = time.perf_counter() - t
    covered = {}
    for kind in params["kinds"]:
        at = data["kind"] == kind
        net.set_pois(kind, limit, 1, pd.Series(data["fac_xy"][at, 0]), pd.Series(data["fac_xy"][at, 1]))
        nearest = net.nearest_pois(limit, kind, num_pois=1)[1].to_numpy()
        distance = nearest[data["h_node"]] + data["h_access"]
        for r in params["radii"]:
            covered[f"{kind}@{int(r)}"] = int(data["households"][distance <= r].sum())
    return {"seconds": round(time.perf_counter() - t, 3), "build_seconds": round(built, 3),
            "covered": covered}


def spopt_mclp(data, params):
    import pulp
    from scipy.spatial.distance import cdist
    from spopt.locate import MCLP

    t = time.perf_counter()
    cost = cdist(data["group_xy"], data["cand_xy"])
    model = MCLP.from_cost_matrix(cost, data["group_weight"], params["siting_radius"],
                                  p_facilities=params["k"])
    built = time.perf_counter() - t
    model.solve(pulp.HiGHS(msg=False))
    objective = float(pulp.value(model.problem.objective))
    return {"seconds": round(time.perf_counter() - t, 3), "build_seconds": round(built, 3),
            "objective": objective, "demand_groups": len(data["group_xy"])}


def main() -> None:
    instance, params_path, out_path = sys.argv[1:4]
    data = dict(np.load(instance, allow_pickle=False))
    params = json.loads(open(params_path).read())
    out = {}
    anchors = (("sjoin_nearest", sjoin_nearest), ("networkx", networkx_roads), ("pandana", pandana_roads),
               ("spopt_mclp", spopt_mclp))
    for name, fn in anchors:
        if name == "spopt_mclp" and params.get("skip_spopt"):
            continue
        try:
            out[name] = fn(data, params)
        except Exception as exc:  # an anchor that cannot run is reported, the others go on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {json.dumps({k: v for k, v in out[name].items() if k != 'covered'})}", flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
