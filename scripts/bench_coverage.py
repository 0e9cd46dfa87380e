"""Benchmark of the coverage gaps at city size, against its anchors on the same instance.

    .venv/bin/python scripts/bench_coverage.py [--units 200000] [--skip-anchors] [--skip-spopt] \
        --json bench-out/coverage.json

The instance (seeded, synthetic, in metres): ``--units`` household points carrying
``--households`` households (lognormal per unit) on a square city of 7,000 m² per unit, 100 streets
and about 1,000 communities for the roll-ups, ``--facilities`` facilities of six kinds,
``--candidates`` candidate sites (unit points) and a road graph of about ``--nodes`` nodes (a
jittered street grid with 8 % of its segments missing, given as two-point lines, so building the
graph is part of the time).

gridplan, timed:

- the straight-line reach report: every kind × 300/500/1,000 m (18 rows) with the roll-ups by
  street and community (``layers.coverage.reach`` + ``layers.coverage.gaps.reach_rows``),
  checked against shapely
  ``dwithin`` counts (must be equal);
- the road report: the same, walking along the roads, including the graph build;
- siting k = 20 service stations at 300 m among the candidates for the households left
  uncovered: exact (HiGHS, proven bound) and greedy (lazy greedy with its online bound);
- peak memory of this process (``ru_maxrss``).

Anchors (``requirements-bench-coverage.txt``, in a virtualenv of their own, fed the same arrays):
geopandas ``sjoin_nearest`` per kind × radius, networkx multi-source Dijkstra and pandana for the
road report (networkx's distances are compared with gridplan's), PySAL spopt's ``MCLP`` on the
merged demand (its objective compared with gridplan's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchvenv import anchor_venv  # noqa: E402

from layers.coverage import siting  # noqa: E402
from layers.coverage.gaps import ReachRun, Standard, reach_limits, reach_rows  # noqa: E402
from layers.coverage.reach import Facilities, Households, RoadGraph, nearest_by_kind  # noqa: E402

KINDS = {"service_centre": 400, "health_centre": 900, "service_station": 2600, "health_station": 2000,
         "kindergarten": 2300, "elderly_care": 1800}  # shares of the facilities
RADII = (300.0, 500.0, 1000.0)
SITING_KIND, SITING_RADIUS = "service_station", 300.0


def instance(args) -> dict:
    """The synthetic city, as arrays."""
    rng = np.random.default_rng(args.seed)
    side = float(np.sqrt(args.units * 7000.0))
    # denser downtown: a mixture of a uniform city and a centre
    n_centre = args.units // 3
    xy = np.vstack([rng.uniform(0, side, (args.units - n_centre, 2)),
                    np.clip(rng.normal(side / 2, side / 6, (n_centre, 2)), 0, side)])
    raw = rng.lognormal(0, 0.6, args.units)
    households = np.floor(raw / raw.sum() * args.households).astype(np.int64)
    households[rng.choice(args.units, args.households - households.sum(), replace=False)] += 1
    street_ix = (np.minimum(xy // (side / 10), 9)).astype(int)
    street = np.array([f"420103{1 + i * 10 + j:03d}" for i, j in street_ix], dtype=object)
    comm_ix = (np.minimum(xy // (side / 32), 31)).astype(int)
    community = np.array([f"{s}{1 + (i % 4) * 4 + (j % 4):03d}{i // 4}{j // 4}"[:12]
                          for s, (i, j) in zip(street, comm_ix, strict=True)], dtype=object)
    shares = np.array(list(KINDS.values()), dtype=float)
    counts = np.floor(shares / shares.sum() * args.facilities).astype(int)
    counts[0] += args.facilities - counts.sum()
    kind = np.repeat(np.array(list(KINDS), dtype=object), counts)
    fac_xy = xy[rng.choice(args.units, args.facilities, replace=False)]
    fac_xy = fac_xy + rng.normal(0, 30, fac_xy.shape)
    cand_xy = xy[rng.choice(args.units, args.candidates, replace=False)]
    # the street grid
    per_side = int(round(np.sqrt(args.nodes)))
    spacing = side / (per_side - 1)
    gx, gy = np.meshgrid(np.arange(per_side) * spacing, np.arange(per_side) * spacing)
    nodes = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.18, 0.18, (per_side ** 2, 2)) * spacing
    index = np.arange(per_side ** 2).reshape(per_side, per_side)
    pairs = np.vstack([np.column_stack([index[:, :-1].ravel(), index[:, 1:].ravel()]),
                       np.column_stack([index[:-1, :].ravel(), index[1:, :].ravel()])])
    pairs = pairs[rng.uniform(size=len(pairs)) > 0.08]
    return {"xy": xy, "households": households, "street": street, "community": community, "kind": kind,
            "fac_xy": fac_xy, "cand_xy": cand_xy, "nodes": nodes, "pairs": pairs, "side": side}


def standards() -> list[Standard]:
    return [Standard(k, f"{int(r)} m", r) for k in KINDS for r in RADII]


def report(city: dict, graph: RoadGraph | None) -> tuple[ReachRun, list[dict]]:
    hh = Households(city["xy"], city["households"], np.arange(len(city["xy"])), city["community"],
                    city["street"], np.full(len(city["xy"]), "420103", dtype=object), CRS.from_epsg(4547))
    fac = Facilities(city["fac_xy"], city["kind"], np.arange(len(city["fac_xy"])).astype(str))
    rows = standards()
    nearest = nearest_by_kind(hh, fac, reach_limits(rows), graph)
    run = ReachRun(hh, fac, None, rows, "roads" if graph is not None else "straight", nearest, graph)
    return run, reach_rows(run)


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def best_of(n: int, fn, *a, **kw):
    times, out = [], None
    for _ in range(n):
        out, dt = timed(fn, *a, **kw)
        times.append(dt)
    return out, min(times)


def dwithin_counts(city: dict) -> dict[str, int]:
    points = shapely.points(city["xy"])
    out = {}
    for k in KINDS:
        tree = shapely.STRtree(shapely.points(city["fac_xy"][city["kind"] == k]))
        for r in RADII:
            hit, _ = tree.query(points, predicate="dwithin", distance=r)
            out[f"{k}@{int(r)}"] = int(city["households"][np.unique(hit)].sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--households", type=int, default=2_000_000)
    parser.add_argument("--facilities", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=5_000)
    parser.add_argument("--nodes", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs for gridplan's timings")
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--skip-spopt", action="store_true", help="spopt's MCLP takes minutes")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-out" / "coverage.json")
    args = parser.parse_args()
    out: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "instance": {k: getattr(args, k) for k in ("units", "households", "facilities", "candidates",
                                                            "nodes", "k", "seed")}}
    city, dt = timed(instance, args)
    ends = city["nodes"][city["pairs"]]  # (segments, 2, 2)
    lines = shapely.linestrings(ends)
    out["instance"] |= {"seconds_to_build": round(dt, 2), "road_segments": len(lines),
                        "side_km": round(city["side"] / 1000, 1)}
    print(f"instance: {args.units:,} points, {int(city['households'].sum()):,} households, "
          f"{args.facilities:,} facilities, {len(lines):,} road segments ({dt:.1f} s)", flush=True)

    # straight-line report
    (run, rows), t_straight = best_of(args.repeat, report, city, None)
    check = dwithin_counts(city)
    ours = {f"{r['kind']}@{int(r['radius_m'])}": r["households_covered"] for r in rows}
    out["straight"] = {"seconds": round(t_straight, 3), "rows": len(rows), "matches_dwithin": ours == check,
                       "covered": ours}
    print(f"straight report: {t_straight:.3f} s for {len(rows)} rows; "
          f"equal to shapely dwithin: {ours == check}", flush=True)

    # road report, graph build included
    def road_report():
        graph = RoadGraph.from_lines(lines)
        return graph, report(city, graph)

    (graph, (road_run, road_rows)), t_roads = best_of(args.repeat, road_report)
    _, t_graph = best_of(args.repeat, RoadGraph.from_lines, lines)
    out["roads"] = {"seconds": round(t_roads, 3), "graph_seconds": round(t_graph, 3), "nodes": graph.nodes,
                    "edges": len(graph.edges),
                    "covered": {f"{r['kind']}@{int(r['radius_m'])}": r["households_covered"]
                                for r in road_rows}}
    print(f"road report: {t_roads:.3f} s (graph {t_graph:.3f} s, {graph.nodes:,} nodes)", flush=True)

    # siting: k service stations at 300 m for the households left uncovered (straight-line)
    covered = run.covered(SITING_KIND, SITING_RADIUS)
    demand_xy, demand_hh = city["xy"][~covered], city["households"][~covered]
    before = int(city["households"][covered].sum())
    exact, t_exact = timed(siting.site, demand_xy, demand_hh, city["cand_xy"], args.k, SITING_RADIUS,
                           method="exact", covered_before=before, time_limit=120)
    greedy, t_greedy = best_of(args.repeat, siting.site, demand_xy, demand_hh, city["cand_xy"], args.k,
                               SITING_RADIUS, method="greedy", covered_before=before)
    cover = siting.coverage_straight(city["cand_xy"], demand_xy, SITING_RADIUS)
    groups, weight = siting.merge_demand(cover, demand_hh.astype(float))
    (_, g_added, g_bound), t_greedy_solve = best_of(args.repeat, siting.greedy, groups, weight, args.k)
    out["siting"] = {
        "kind": SITING_KIND, "radius_m": SITING_RADIUS, "k": args.k,
        "households_uncovered": int(demand_hh.sum()),
        "demand_points": exact.demand_points, "demand_groups": exact.demand_groups,
        "exact": {"seconds": round(t_exact, 3), "parts": exact.seconds, "households_added": exact.objective,
                  "bound": exact.bound, "optimal": exact.optimal, "solver": exact.method},
        "greedy": {"seconds_end_to_end": round(t_greedy, 4), "seconds_solve": round(t_greedy_solve, 4),
                   "households_added": greedy.objective, "stated_bound": greedy.bound,
                   "stated_gap": round(greedy.gap, 5),
                   "gap_to_optimum": round(1 - greedy.objective / exact.objective, 5)
                   if exact.objective else 0.0},
    }
    print(f"siting: exact {t_exact:.2f} s, +{exact.objective:,} households (optimal {exact.optimal}, bound "
          f"{exact.bound:,.0f}); greedy {t_greedy * 1000:.0f} ms end to end, {t_greedy_solve * 1000:.1f} ms "
          f"solving, +{greedy.objective:,} ({out['siting']['greedy']['gap_to_optimum']:.3%} below the "
          f"optimum, stated gap {greedy.gap:.3%})", flush=True)
    out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"peak memory: {out['peak_memory_mb']:,.0f} MB", flush=True)

    if not args.skip_anchors:
        folder = ROOT / "bench-out" / "coverage"
        folder.mkdir(parents=True, exist_ok=True)
        h_node, h_access = graph.snap(city["xy"])
        f_node, f_access = graph.snap(city["fac_xy"])
        g_mask = np.asarray(groups.sum(axis=0)).ravel() > 0
        rep = _group_representatives(cover, groups, demand_xy)
        np.savez(folder / "instance.npz", xy=city["xy"], households=city["households"], fac_xy=city["fac_xy"],
                 kind=city["kind"].astype(str), node_xy=graph.xy, edges=graph.edges, h_node=h_node,
                 h_access=h_access, f_node=f_node, f_access=f_access, cand_xy=city["cand_xy"],
                 group_xy=rep[g_mask] if len(rep) else rep, group_weight=weight[g_mask],
                 road_distance=np.stack([road_run.nearest[k].distance for k in KINDS]))
        venv = anchor_venv("coverage", "requirements-bench-coverage.txt")
        params = {"radii": list(RADII), "kinds": list(KINDS), "k": args.k, "siting_radius": SITING_RADIUS,
                  "skip_spopt": args.skip_spopt}
        (folder / "params.json").write_text(json.dumps(params))
        result = folder / "anchors.json"
        subprocess.run([str(venv / "bin" / "python"), str(ROOT / "scripts" / "anchors_coverage.py"),
                        str(folder / "instance.npz"), str(folder / "params.json"), str(result)], check=True)
        anchors = json.loads(result.read_text())
        if "sjoin_nearest" in anchors:
            anchors["sjoin_nearest"]["matches_gridplan"] = anchors["sjoin_nearest"].pop("covered") == ours
        if "spopt_mclp" in anchors and "objective" in anchors["spopt_mclp"]:
            spopt = anchors["spopt_mclp"]["objective"]
            anchors["spopt_mclp"]["gridplan_at_least"] = exact.objective >= spopt - 0.5
        out["anchors"] = anchors
        for name, value in anchors.items():
            print(f"anchor {name}: {json.dumps(value)}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=float))
    print(f"written {args.json}")


def _group_representatives(cover, groups, demand_xy) -> np.ndarray:
    """One demand point per merged group (the group's first column in ``cover`` with the same
    candidate set), for the anchors' cost matrix."""
    by_demand = cover.T.tocsr()
    by_demand.sort_indices()
    keys = {}
    for i in np.flatnonzero(np.diff(by_demand.indptr) > 0):  # setup for the anchor, not timed
        keys.setdefault(by_demand.indices[by_demand.indptr[i]:by_demand.indptr[i + 1]].tobytes(), i)
    by_group = groups.T.tocsr()
    by_group.sort_indices()
    rep = np.empty((by_group.shape[0], 2))
    for g in range(by_group.shape[0]):
        rep[g] = demand_xy[keys[by_group.indices[by_group.indptr[g]:by_group.indptr[g + 1]].tobytes()]]
    return rep


if __name__ == "__main__":
    main()
