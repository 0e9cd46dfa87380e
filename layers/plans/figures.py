"""A plan's scores district by district: each district's part kept in figures, the plan's scores
combined from them.

A province's plan is made one district at a time (:mod:`layers.plans.scale`) and its page works
on one district at a time (:meth:`layers.plans.memory.PlanMemory.plan`, ``district``): no process
holds the province. Its scores (communities, households moved, the smallest and median community,
compactness …) are still the whole plan's. Each district's part is kept as figures
(:func:`part_figures`: its communities' households and compactness, its additive sums) with the
plan (:func:`geodata.plan_rows.write_figures`), and the plan's scores are combined from every
district's figures (:func:`combine`) — so an edit of one district re-scores the whole plan from
its own partition and the other districts' stored figures, reading none of their units.
"""

from __future__ import annotations

import numpy as np

from layers.plans.engine import PlanResult, Rules
from layers.plans.partition import Partition, UnitGraph

#: the scores that add up over districts
ADDITIVE = ("communities", "units", "households", "outside_bounds", "non_contiguous", "households_moved",
            "units_moved", "cut_edges", "crossing_street", "new_communities")


def part_figures(result: PlanResult) -> dict:
    """One district's part of a plan in figures: ``households`` and ``polsby_popper`` (one per
    community), ``sums`` (:data:`ADDITIVE`) and ``infeasible`` (what its streets could not meet)."""
    p = result.partition
    scores = result.scores()
    return {"households": [int(p.households[c]) for c in p.communities],
            "polsby_popper": [float(p.polsby_popper(c)) for c in p.communities],
            "sums": {k: int(scores[k]) for k in ADDITIVE}, "infeasible": scores["infeasible"]}


def figures_by_district(graph: UnitGraph, partition: Partition, rules: Rules, districts: np.ndarray
                        ) -> dict[str, dict]:
    """The figures of every district's part of a plan held whole (``districts``: each unit's
    district, by position) — what a plan made or rebased in one process keeps."""
    districts = np.asarray(districts, dtype=object)
    out = {}
    for district in sorted({str(d) for d in districts if d is not None and d == d}):
        positions = np.flatnonzero(districts == district)
        sub = graph.subgraph(positions)
        out[district] = part_figures(PlanResult(sub, Partition(sub, partition.labels[positions]), rules))
    return out


def combine(figures: list[dict], rules: Rules) -> dict:
    """The plan's scores from its districts' figures (the same keys as
    :meth:`layers.plans.engine.PlanResult.scores`; ``cut_edges`` counts edges within districts)."""
    households = np.array([h for f in figures for h in f["households"]] or [0])
    pp = np.array([x for f in figures for x in f["polsby_popper"]] or [0.0])
    sums = {k: sum(int(f["sums"].get(k, 0)) for f in figures) for k in ADDITIVE}
    total = sums["households"]
    return {
        "communities": sums["communities"], "units": sums["units"], "households": total,
        "outside_bounds": sums["outside_bounds"], "non_contiguous": sums["non_contiguous"],
        "households_min": int(households.min()), "households_median": float(np.median(households)),
        "households_max": int(households.max()), "households_moved": sums["households_moved"],
        "units_moved": sums["units_moved"],
        "households_moved_share": round(sums["households_moved"] / total, 4) if total else 0.0,
        "pp_mean": round(float(pp.mean()), 4), "pp_min": round(float(pp.min()), 4),
        "cut_edges": sums["cut_edges"], "bounds": [rules.minimum, rules.maximum],
        "crossing_street": sums["crossing_street"], "new_communities": sums["new_communities"],
        "infeasible": [i for f in figures for i in f.get("infeasible", [])],
    }
