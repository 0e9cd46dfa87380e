"""Where to build next (选址): the maximal covering location problem (MCLP).

Given a facility kind, its reach ``r`` and a number ``k``, choose ``k`` sites among candidates
(unit representative points by default, or a candidate-sites layer) that bring the most households
now out of reach within reach. Households already within ``r`` of a facility of the kind are not
demand; a household point within ``r`` of no candidate cannot be helped and is left out.

- **Coverage** is a sparse matrix candidates × demand points (straight-line, ``cKDTree``
  ball queries, or along the roads, one bounded Dijkstra per batch of candidates). Demand points
  covered by exactly the same candidates are merged (their households add up): they are
  indistinguishable to every solution, and merging shrinks the model by an order of magnitude.
- **Greedy**: lazy greedy with a heap (each site's gain is only recomputed when it reaches the
  top); the proven bound is the best of ``f(S_i) + the k largest marginal gains after S_i`` over
  the greedy steps (Nemhauser–Wolsey–Fisher for submodular coverage), so the gap it states is real.
- **Exact**: the MILP ``max Σ w_g y_g`` s.t. ``y_g ≤ Σ_{j covers g} x_j``, ``Σ x_j ≤ k``,
  ``x`` binary, ``0 ≤ y ≤ 1``, built as arrays and solved by HiGHS (``highspy``), warm-started
  from the greedy answer, within a time limit; it returns the optimum with its proof, or the best
  solution found with HiGHS's dual bound. Sites are reported in the order of what each adds.
"""

from __future__ import annotations

import heapq
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree
from sqlalchemy import Engine

from geodata.crs import parse_crs, to_wgs84
from geodata.errors import Refused
from geodata.i18n import _
from geodata.sources import read_source
from geodata.standards import FACILITY_KIND_LABELS
from layers.coverage.gaps import ReachRun, reach_limits
from layers.coverage.reach import RoadGraph, spatial_order

#: Above this many merged demand groups × candidates' non-zeros, "auto" stays greedy.
EXACT_MAX_NNZ = 5_000_000
#: Candidates per bounded Dijkstra batch (each batch holds a dense batch × nodes array).
ROAD_BATCH = 32


@dataclass
class Siting:
    """The chosen sites, in order, with what each adds and the proof of quality."""

    chosen: np.ndarray  # candidate positions, in the order of what each adds
    added: np.ndarray  # households each adds, given the sites before it
    covered_before: int  # households within reach of the existing facilities
    households: int  # households in scope
    bound: float  # proven upper bound on the households ``k`` sites can add
    method: str  # "exact" | "greedy"
    optimal: bool
    seconds: dict = field(default_factory=dict)
    demand_points: int = 0
    demand_groups: int = 0

    @property
    def objective(self) -> int:
        return int(self.added.sum())

    @property
    def gap(self) -> float:
        """(bound − objective) / bound: 0 for a proven optimum."""
        return 0.0 if self.bound <= 0 else max(0.0, (self.bound - self.objective) / self.bound)


def check_k(k) -> int:
    """``k`` as a positive whole number (an int, or text of digits), or :class:`Refused`."""
    whole = isinstance(k, int) and not isinstance(k, bool) or isinstance(k, str) and k.strip().isdigit()
    if not whole or int(k) <= 0:
        raise Refused(_("k must be a whole number above 0, got {k}", k=repr(k)))
    if int(k) > 1000:
        raise Refused(_("k = {p1} is more sites than a plan can use (at most 1,000)", p1=int(k)))
    return int(k)


def coverage_straight(candidates: np.ndarray, demand: np.ndarray, radius_m: float) -> csr_matrix:
    """Candidates × demand points within ``radius_m`` in a straight line (distance ≤ radius)."""
    if not len(candidates) or not len(demand):
        return csr_matrix((len(candidates), len(demand)))
    lists = cKDTree(demand).query_ball_point(candidates, radius_m * (1 + 1e-9) + 1e-9, workers=2,
                                             return_sorted=False)
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    cols = np.concatenate(lists).astype(np.int64) if counts.sum() else np.empty(0, np.int64)
    rows = np.repeat(np.arange(len(candidates)), counts)
    keep = np.hypot(*(candidates[rows] - demand[cols]).T) <= radius_m
    return csr_matrix((np.ones(keep.sum(), dtype=np.int8), (rows[keep], cols[keep])),
                      shape=(len(candidates), len(demand)))


def coverage_roads(graph: RoadGraph, candidates: np.ndarray, demand: np.ndarray,
                   radius_m: float) -> csr_matrix:
    """Candidates × demand points within ``radius_m`` walk along the roads (as :mod:`layers.coverage.reach`
    measures it: straight to the nearest node at both ends).

    Candidates are walked in batches of neighbours (a Z-order of their points), each batch on the
    part of the graph within ``radius_m`` of its candidates in a straight line: a walk is never
    shorter than the straight line (every edge weighs its segment's length), so no node beyond
    that window can be within reach, and the answer is the one of the whole graph, at a fraction
    of its cost (each batch's distances are a batch × window array, not batch × every node of the
    city)."""
    if not len(candidates) or not len(demand) or graph.nodes == 0:
        return csr_matrix((len(candidates), len(demand)))
    c_node, c_access = graph.snap(candidates)
    node, access = graph.snap(demand)
    near = access <= radius_m
    node, idx, access = node[near], np.flatnonzero(near), access[near]
    margin = radius_m * (1 + 1e-9) + 1.0
    by_x = np.argsort(graph.xy[:, 0], kind="stable")
    xs = graph.xy[by_x, 0]
    order = spatial_order(candidates, cell_m=max(radius_m / 2, 1.0))
    base = graph.matrix.tocsr()
    local = np.full(graph.nodes, -1, dtype=np.int64)
    rows, cols = [], []
    for start in range(0, len(candidates), ROAD_BATCH):
        batch = order[start:start + ROAD_BATCH]
        (x0, y0), (x1, y1) = candidates[batch].min(axis=0) - margin, candidates[batch].max(axis=0) + margin
        span = by_x[np.searchsorted(xs, x0, "left"):np.searchsorted(xs, x1, "right")]
        ys = graph.xy[span, 1]
        window = np.sort(span[(ys >= y0) & (ys <= y1)])
        n_w, n_b = len(window), len(batch)
        local[window] = np.arange(n_w)
        sub = base[window][:, window].tocoo()
        # each candidate a leaf joined to its nearest node by the straight walk to it (a node
        # outside the window lies beyond reach: so does everything from that candidate)
        at = local[c_node[batch]]
        ok = at >= 0
        leaf = n_w + np.arange(n_b)
        walk = c_access[batch][ok]
        matrix = csr_matrix((np.concatenate([sub.data, walk, walk]),
                             (np.concatenate([sub.row, at[ok], leaf[ok]]),
                              np.concatenate([sub.col, leaf[ok], at[ok]]))), shape=(n_w + n_b, n_w + n_b))
        dist = dijkstra(matrix, directed=True, indices=leaf, limit=radius_m)
        seen = local[node] >= 0  # demand whose node is in the window (any other is out of reach)
        r, c = np.nonzero(dist[:, local[node[seen]]] + access[seen] <= radius_m)
        rows.append(batch[r])
        cols.append(idx[seen][c])
        local[window] = -1
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(candidates), len(demand)))


def merge_demand(cover: csr_matrix, weight: np.ndarray) -> tuple[csr_matrix, np.ndarray]:
    """Merge demand points (columns) covered by the same set of candidates; drop those covered by
    none. Returns candidates × groups and each group's households."""
    by_demand = cover.T.tocsr()
    by_demand.sum_duplicates()
    by_demand.sort_indices()
    nnz = np.diff(by_demand.indptr)
    useful = np.flatnonzero((nnz > 0) & (weight > 0))
    if not len(useful):
        return csr_matrix((cover.shape[0], 0)), np.empty(0)
    rng = np.random.default_rng(20180)
    keys = rng.integers(1, np.iinfo(np.int64).max, size=(2, cover.shape[0]), dtype=np.int64).astype(np.uint64)
    sub = by_demand[useful]
    starts = sub.indptr[:-1]
    with np.errstate(over="ignore"):
        h1 = np.add.reduceat(keys[0][sub.indices], starts)
        h2 = np.add.reduceat(keys[1][sub.indices] * np.uint64(2654435761), starts)
    count = np.diff(sub.indptr)
    order = np.lexsort((count, h2, h1))  # rows with the same candidates side by side
    change = np.r_[True, (h1[order][1:] != h1[order][:-1]) | (h2[order][1:] != h2[order][:-1])
                   | (count[order][1:] != count[order][:-1])]
    first = order[change]
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(change) - 1
    groups = sub[first]
    merged = np.bincount(inverse, weights=weight[useful], minlength=len(first))
    return groups.T.tocsr().astype(np.int8), merged


def _gains(cover: csr_matrix, weight: np.ndarray, open_: np.ndarray) -> np.ndarray:
    return cover @ (weight * open_)


def greedy(cover: csr_matrix, weight: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Lazy greedy: ``k`` candidates (rows) in order, what each adds, and the proven bound."""
    n = cover.shape[0]
    open_ = np.ones(cover.shape[1], dtype=bool)
    gains = _gains(cover, weight, open_)
    bound = _topk(gains, k)
    heap = [(-g, j) for j, g in enumerate(gains) if g > 0]
    heapq.heapify(heap)
    chosen, added, total = [], [], 0.0
    indptr, indices = cover.indptr, cover.indices
    while heap and len(chosen) < min(k, n):
        neg, j = heapq.heappop(heap)
        cols = indices[indptr[j]:indptr[j + 1]]
        gain = float(weight[cols][open_[cols]].sum())
        if heap and gain < -heap[0][0] - 1e-9:
            if gain > 0:
                heapq.heappush(heap, (-gain, j))
            continue
        if gain <= 0:
            break
        chosen.append(j)
        added.append(gain)
        open_[cols] = False
        total += gain
        # the online bound after this step: f(S) + the k largest marginal gains now
        bound = min(bound, total + _topk(_gains(cover, weight, open_), k))
    return np.array(chosen, dtype=np.int64), np.array(added), float(bound)


def _topk(values: np.ndarray, k: int) -> float:
    if not len(values):
        return 0.0
    k = min(k, len(values))
    return float(np.partition(values, len(values) - k)[len(values) - k:].sum())


def in_order(cover: csr_matrix, weight: np.ndarray, sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sites`` ordered by what each adds after the ones before (largest first)."""
    sites = list(sites)
    open_ = np.ones(cover.shape[1], dtype=bool)
    order, added = [], []
    while sites:
        gains = [float(weight[cover.indices[cover.indptr[j]:cover.indptr[j + 1]]][
            open_[cover.indices[cover.indptr[j]:cover.indptr[j + 1]]]].sum()) for j in sites]
        best = int(np.argmax(gains))
        j = sites.pop(best)
        order.append(j)
        added.append(gains[best])
        open_[cover.indices[cover.indptr[j]:cover.indptr[j + 1]]] = False
    return np.array(order, dtype=np.int64), np.array(added)


def exact(cover: csr_matrix, weight: np.ndarray, k: int, start: np.ndarray | None = None,
          time_limit: float = 30.0) -> tuple[np.ndarray, float, bool]:
    """Solve the MCLP with HiGHS: the chosen rows, the proven bound, and whether it is optimal."""
    import highspy

    n_all = cover.shape[0]
    if n_all <= k:
        return np.arange(n_all), float(weight.sum()), True
    # smaller model, same answers: candidates covering nothing leave; a group only one candidate
    # covers is that candidate's own gain (y_g = x_j at any optimum), so it joins the objective
    full = cover.tocsr()
    used = np.flatnonzero(np.diff(full.indptr) > 0)
    if len(used) <= k:
        return used, float(weight.sum()), True
    sub = full[used]
    by_group_all = sub.T.tocsr()
    single = np.diff(by_group_all.indptr) == 1
    own = np.bincount(by_group_all.indices[by_group_all.indptr[:-1][single]], weights=weight[single],
                      minlength=len(used))
    by_group = by_group_all[~single]
    weight_g = weight[~single]
    n_c, n_g = len(used), by_group.shape[0]
    # rows: y_g − Σ x_j ≤ 0 (one per group), then Σ x_j ≤ k; columns: x (n_c), y (n_g)
    nnz = by_group.nnz
    row_starts = np.concatenate([by_group.indptr[:-1] + np.arange(n_g), [nnz + n_g]])
    indices = np.empty(nnz + n_g, dtype=np.int32)
    values = np.empty(nnz + n_g)
    y_at = by_group.indptr[:-1] + np.arange(n_g)
    x_at = np.setdiff1d(np.arange(nnz + n_g), y_at, assume_unique=True)
    indices[y_at] = n_c + np.arange(n_g)
    values[y_at] = 1.0
    indices[x_at] = by_group.indices
    values[x_at] = -1.0
    indices = np.concatenate([indices, np.arange(n_c, dtype=np.int32)])
    values = np.concatenate([values, np.ones(n_c)])
    row_starts = np.concatenate([row_starts, [len(indices)]])

    lp = highspy.HighsLp()
    lp.num_col_ = n_c + n_g
    lp.num_row_ = n_g + 1
    lp.sense_ = highspy.ObjSense.kMaximize
    lp.col_cost_ = np.concatenate([own, weight_g]).astype(float)
    lp.col_lower_ = np.zeros(n_c + n_g)
    lp.col_upper_ = np.ones(n_c + n_g)
    lp.row_lower_ = np.full(n_g + 1, -highspy.kHighsInf)
    lp.row_upper_ = np.concatenate([np.zeros(n_g), [float(k)]])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_ = n_c + n_g
    lp.a_matrix_.num_row_ = n_g + 1
    lp.a_matrix_.start_ = row_starts.astype(np.int32)
    lp.a_matrix_.index_ = indices
    lp.a_matrix_.value_ = values
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n_c + [highspy.HighsVarType.kContinuous] * n_g
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("presolve", "off")  # measured: HiGHS presolve took 12 s of 12.4 on a city instance
    h.passModel(lp)
    if start is not None and len(start):
        x = np.zeros(n_c + n_g)
        x[np.searchsorted(used, start[np.isin(start, used)])] = 1.0
        x[n_c:] = np.minimum(1.0, by_group @ x[:n_c])
        solution = highspy.HighsSolution()
        solution.col_value = list(x)
        solution.value_valid = True
        h.setSolution(solution)
    if h.run() == highspy.HighsStatus.kError:  # HiGHS refused to run: the greedy answer stands
        return np.empty(0, dtype=np.int64), float(weight.sum()), False
    status = h.getModelStatus()
    info = h.getInfo()
    values_out = np.asarray(h.getSolution().col_value)
    chosen = used[np.flatnonzero(values_out[:n_c] > 0.5)]
    optimal = status == highspy.HighsModelStatus.kOptimal
    bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else float(weight.sum())
    if optimal:  # proven within HiGHS's tolerance: the bound is the optimum itself
        bound = float(weight[np.asarray(full[chosen].sum(axis=0)).ravel() > 0].sum())
    return chosen, bound, optimal


def solve(cover: csr_matrix, weight: np.ndarray, k: int, method: str = "auto",
          time_limit: float = 30.0) -> tuple[np.ndarray, np.ndarray, float, str, bool]:
    """Choose ``k`` rows of ``cover`` (merged demand ``weight``): sites in order, what each adds,
    the proven bound, the method used and whether the answer is proven optimal."""
    if method not in ("auto", "exact", "greedy"):
        raise Refused(_("method {method} is not one of auto, exact, greedy", method=repr(method)))
    sites, added, bound = greedy(cover, weight, k)
    if method == "greedy" or (method == "auto" and cover.nnz > EXACT_MAX_NNZ):
        return sites, added, bound, "greedy", bound - added.sum() < 0.5
    if bound - added.sum() < 0.5:  # greedy met its own bound: proven optimal already
        return sites, added, bound, "greedy", True
    chosen, exact_bound, optimal = exact(cover, weight, k, sites, time_limit)
    order, gains = in_order(cover, weight, chosen)
    bound = min(bound, exact_bound)
    if gains.sum() >= added.sum():
        sites, added = order, gains
    return sites, added, bound, "exact", optimal or bound - added.sum() < 0.5


def demand_model(demand_xy: np.ndarray, demand_households: np.ndarray, candidates_xy: np.ndarray,
                 radius_m: float, graph: RoadGraph | None = None) -> tuple[csr_matrix, np.ndarray, int, dict]:
    """What every solver of one question works on: candidates × merged demand groups, each
    group's households, how many demand points some candidate reaches and the seconds taken.
    Computed once for the greedy answer and the exact one after it."""
    t0 = time.perf_counter()
    if graph is None:
        cover = coverage_straight(candidates_xy, demand_xy, radius_m)
    else:
        cover = coverage_roads(graph, candidates_xy, demand_xy, radius_m)
    t1 = time.perf_counter()
    groups, weight = merge_demand(cover, demand_households.astype(float))
    t2 = time.perf_counter()
    return (groups, weight, int((np.diff(cover.tocsc().indptr) > 0).sum()),
            {"coverage": round(t1 - t0, 4), "merge": round(t2 - t1, 4)})


def site(demand_xy: np.ndarray, demand_households: np.ndarray, candidates_xy: np.ndarray, k: int,
         radius_m: float, *, graph: RoadGraph | None = None, method: str = "auto",
         covered_before: int = 0, time_limit: float = 30.0, model: tuple | None = None) -> Siting:
    """Choose ``k`` of ``candidates_xy`` (metres) to bring the most of the uncovered
    ``demand_households`` (at ``demand_xy``) within ``radius_m`` (``model``: the
    :func:`demand_model` of the same question, already computed)."""
    k = check_k(k)
    if model is None:
        model = demand_model(demand_xy, demand_households, candidates_xy, radius_m, graph)
    return solve_model(model, k, method=method, time_limit=time_limit, covered_before=covered_before,
                       demand=int(demand_households.sum()))


def solve_model(model: tuple, k: int, *, method: str = "auto", time_limit: float = 30.0,
                covered_before: int = 0, demand: int = 0) -> Siting:
    """Choose ``k`` sites on a :func:`demand_model` (``demand``: the households out of reach
    in scope, ``covered_before``: those within reach already)."""
    k = check_k(k)
    groups, weight, points, seconds = model
    t2 = time.perf_counter()
    sites, added, bound, used, optimal = solve(groups, weight, k, method, time_limit)
    t3 = time.perf_counter()
    return Siting(sites, np.round(added).astype(np.int64), int(covered_before),
                  int(demand) + int(covered_before), float(np.floor(bound + 1e-6)), used,
                  bool(optimal), {**seconds, "solve": round(t3 - t2, 4)},
                  demand_points=points, demand_groups=groups.shape[1])


def sites_frame(result: Siting, candidates: gpd.GeoDataFrame, kind: str, radius_m: float) -> gpd.GeoDataFrame:
    """The chosen sites as features (EPSG:4326): ``order``, ``households_added``,
    ``households_covered_after``, the candidate's ``code`` and the kind."""
    chosen = candidates.iloc[result.chosen].reset_index(drop=True)
    after = result.covered_before + np.cumsum(result.added)
    frame = gpd.GeoDataFrame({
        "order": np.arange(1, len(chosen) + 1), "code": chosen["code"].to_numpy(dtype=object),
        "kind": kind, "radius_m": float(radius_m), "households_added": result.added,
        "households_covered_after": after.astype(np.int64),
    }, geometry=np.asarray(chosen.geometry.values, dtype=object), crs=candidates.crs)
    return frame.to_crs(4326)


#: how far from a site a road may be to name where the site lies ("on 解放大道")
ROAD_NAME_M = 300.0


def with_places(engine: Engine, frame: gpd.GeoDataFrame, crs: CRS | None = None) -> gpd.GeoDataFrame:
    """The chosen sites with where they lie in words: ``community_code``, ``community_name``,
    ``street_name`` (from the communities and streets layers) and ``road_name``, the nearest
    named road within :data:`ROAD_NAME_M` (None without a roads layer or a named road near)."""
    from geodata.extents import read_by_place, split_by_district
    from geodata.store import read_layer

    out = frame.copy()
    for column in ("community_code", "community_name", "street_name", "road_name"):
        out[column] = None
    if not len(out):
        return out
    x0, y0, x1, y1 = out.total_bounds
    pad = 0.01  # degrees (≈ 1 km): the roads near the sites, not the city's
    bbox = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    split = split_by_district(engine)
    communities = read_by_place(engine, "communities", bbox, split=split)  # split: from the districts near
    streets = read_layer(engine, "streets", bbox=bbox)
    street_names = dict(zip(streets["code"], streets["name"], strict=False)) if len(streets) else {}
    if len(communities):
        joined = gpd.sjoin(out[["geometry"]], communities.to_crs(4326)[["code", "name", "street_code",
                                                                         "geometry"]],
                           how="left", predicate="within")
        joined = joined[~joined.index.duplicated(keep="first")].reindex(out.index)
        out["community_code"] = joined["code"].where(joined["code"].notna(), None).to_numpy(dtype=object)
        out["community_name"] = joined["name"].where(joined["name"].notna(), None).to_numpy(dtype=object)
        out["street_name"] = [street_names.get(s) if isinstance(s, str) else None
                              for s in joined["street_code"]]
    if len(streets):  # a site in no community (a blind spot) still lies in a street
        inside = gpd.sjoin(out[["geometry"]], streets.to_crs(4326)[["name", "geometry"]], how="left",
                           predicate="within")
        inside = inside[~inside.index.duplicated(keep="first")].reindex(out.index)
        out["street_name"] = [s if isinstance(s, str) else (n if isinstance(n, str) else None)
                              for s, n in zip(out["street_name"], inside["name"], strict=True)]
    roads = read_by_place(engine, "roads", bbox, split=split)
    if len(roads) and "name" in roads:
        roads = roads[roads["name"].fillna("").str.strip() != ""]
    if len(roads):
        metric = crs or out.estimate_utm_crs()
        near = gpd.sjoin_nearest(out[["geometry"]].to_crs(metric), roads[["name", "geometry"]].to_crs(metric),
                                 how="left", max_distance=ROAD_NAME_M)
        near = near[~near.index.duplicated(keep="first")].reindex(out.index)
        out["road_name"] = near["name"].where(near["name"].notna(), None).to_numpy(dtype=object)
    return out


def shortfall(result: Siting, kind: str, radius_m: float, k: int) -> str | None:
    """Why fewer than ``k`` sites were chosen, in a planner's words (None when all ``k`` were)."""
    if len(result.chosen) >= k:
        return None
    if result.households <= 0:
        return _("no households live here: there is no one to bring within reach, so no site is chosen")
    if result.covered_before >= result.households:
        name = _(FACILITY_KIND_LABELS[kind]) if kind in FACILITY_KIND_LABELS else kind  # a city's own kind
        return _("every household here is already within {radius} m of a {kind}: a new site would add none",
                 radius=format(radius_m, "g"), kind=name)
    return _("only {n} of the {k} sites bring households within reach: another would add none",
             n=len(result.chosen), k=k)


def collection_properties(result: Siting, kind: str, radius_m: float, k: int, method: str) -> dict:
    """What the GeoJSON collection of chosen sites says about the whole answer (``note``: why
    fewer than ``k`` sites were chosen)."""
    return {"kind": kind, "radius_m": radius_m, "k": k, "note": shortfall(result, kind, radius_m, k),
            "distance": method, "solver": result.method,
            "optimal": result.optimal, "households": result.households,
            "households_covered_before": result.covered_before,
            "households_added": result.objective,
            "households_covered_after": result.covered_before + result.objective,
            "bound_households_added": int(result.bound), "gap": round(result.gap, 6),
            "demand_points": result.demand_points, "demand_groups": result.demand_groups,
            "seconds": result.seconds}


def candidate_points(units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Default candidates: every land unit's representative point (``code`` = the unit's)."""
    land = units[units["land_use"].fillna("") != "water"] if "land_use" in units else units
    return gpd.GeoDataFrame({"code": land["code"].to_numpy(dtype=object)},
                            geometry=shapely.point_on_surface(np.asarray(land.geometry.values, dtype=object)),
                            crs=units.crs).reset_index(drop=True)


#: Above this many default candidates (a city's units) the candidates are thinned to a grid.
THIN_ABOVE = 20_000
#: About how many candidates a thinned set holds (one per square of a grid over the scope).
THIN_TO = 1_500


def thin_candidates(candidates: gpd.GeoDataFrame, crs: CRS, most: int | None = None) -> gpd.GeoDataFrame:
    """About ``most`` (default :data:`THIN_TO`) of ``candidates``: a square grid over their extent
    sized so that about ``most`` squares hold one, and in each square the candidate nearest the
    middle of the square's candidates (a real unit, so a site still names its unit). At city
    size every unit as a candidate makes the coverage matrix (one walk along the roads per
    candidate) and the exact model far too large; squares of a few hundred metres lose little
    against reaches of 300–1,000 m, and the bound stated is still proven for the set solved."""
    most = most or THIN_TO
    if len(candidates) <= most:
        return candidates
    xy = candidates_xy(candidates, crs)
    x0, y0 = xy.min(axis=0)
    width, height = np.ptp(xy, axis=0) + 1.0
    # the squares that hold a candidate number fewer than all squares: shrink the side until
    # about ``most`` are occupied (a few passes)
    side = float(np.sqrt(width * height / most))
    for _pass in range(8):
        cells = np.floor((xy - (x0, y0)) / side).astype(np.int64)
        key = cells[:, 0] * (int(height // side) + 2) + cells[:, 1]
        occupied = len(np.unique(key))
        if occupied >= 0.8 * most:
            break
        side *= float(np.sqrt(occupied / most))
    inverse = np.unique(key, return_inverse=True)[1]
    counts = np.bincount(inverse)
    middle = np.column_stack([np.bincount(inverse, xy[:, 0]), np.bincount(inverse, xy[:, 1])])
    middle = middle / counts[:, None]
    distance = np.hypot(*(xy - middle[inverse]).T)
    order = np.lexsort((distance, inverse))  # by square, nearest the middle first
    first = order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]]
    return candidates.iloc[np.sort(first)].reset_index(drop=True)


def candidates_xy(candidates: gpd.GeoDataFrame, crs: CRS) -> np.ndarray:
    """Candidate points in metres."""
    if not len(candidates):
        return np.empty((0, 2))
    points = shapely.point_on_surface(np.asarray(candidates.to_crs(crs).geometry.values, dtype=object))
    return shapely.get_coordinates(points)


def site_for(run: ReachRun, kind: str, k, *, radius_m: float | None = None,
             candidates: gpd.GeoDataFrame | None = None, units: gpd.GeoDataFrame | None = None,
             method: str = "auto", time_limit: float = 30.0,
             models: dict | None = None) -> tuple[Siting, gpd.GeoDataFrame, float]:
    """Site ``k`` facilities of ``kind`` for the households ``run`` leaves out of reach (at the
    kind's reach in the standards table, or ``radius_m``), among ``candidates`` (points, EPSG:4326,
    with ``code``) or the representative points of ``units``. Walks the roads when ``run`` did.
    Returns the answer, the candidates used and the radius. ``models``: a dict kept by the
    caller for one ``run``, in which the candidates and coverage matrix of each question are kept
    (the greedy answer and the exact one, or the next question of the same kind and reach, reuse
    them instead of walking the roads again)."""
    if kind not in run.nearest:
        raise Refused(_("unknown facility kind {kind}; kinds of the standards table: {p2}",
                        kind=repr(kind), p2=', '.join(run.nearest)))
    k = check_k(k)
    if radius_m is None:
        radius_m = float(next(row.reach_m for row in run.standards if row.kind == kind))
    if not 0 < float(radius_m) <= reach_limits(run.standards)[kind]:
        raise Refused(_("radius {radius_m} m: give 0 < radius ≤ {p2} m, the largest reach of {kind} in the "
                        "standards table",
                        radius_m=radius_m, p2=format(reach_limits(run.standards)[kind], 'g'), kind=kind))
    given = candidates is not None
    models = {} if models is None else models
    if candidates is None:
        if units is None:
            raise Refused(_("no candidate sites: give a candidates layer or the units"))
        if "units" not in models:
            found = candidate_points(units)
            if len(found) > THIN_ABOVE:  # a city: a grid of candidates, never every unit
                found = thin_candidates(found, run.households.crs)
            models["units"] = found
        candidates = models["units"]
    if not len(candidates):
        raise Refused(_("no candidate sites"))
    hh = run.households
    covered = run.covered(kind, radius_m)
    question = (kind, float(radius_m))
    model = None if given else models.get(question)
    if model is None:
        model = demand_model(hh.xy[~covered], hh.households[~covered], candidates_xy(candidates, hh.crs),
                             float(radius_m), run.graph)
        if not given:
            models[question] = model
            models[("households", *question)] = (int(hh.households[covered].sum()),
                                                  int(hh.households[~covered].sum()))
    result = site(hh.xy[~covered], hh.households[~covered], np.empty((0, 2)), k,
                  float(radius_m), graph=run.graph, method=method,
                  covered_before=int(hh.households[covered].sum()), time_limit=time_limit, model=model)
    return result, candidates, float(radius_m)


def read_candidates(path, declared_crs=None) -> gpd.GeoDataFrame:
    """A candidate-sites layer from a file (shapefile zip, GeoPackage, GeoJSON, CSV with lon/lat):
    points (or polygons, taken at their representative point) in EPSG:4326 with a ``code``
    (the file's ``code`` column, else ``C00001`` … in file order)."""
    with tempfile.TemporaryDirectory(prefix="gridplan-candidates-") as tmp:
        frame = read_source(path, declared_crs=parse_crs(declared_crs), workdir=Path(tmp))
    frame = to_wgs84(frame, parse_crs(declared_crs))
    return candidates_from_frame(frame)


def candidates_from_frame(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Candidate points (EPSG:4326, ``code``) from any layer of points or polygons."""
    geoms = np.asarray(frame.geometry.values, dtype=object)
    good = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if not good.any():
        raise Refused(_("the candidate sites have no usable geometry"))
    codes = (frame["code"].astype(str).to_numpy(dtype=object) if "code" in frame
             else np.array([f"C{i + 1:05d}" for i in range(len(frame))], dtype=object))
    return gpd.GeoDataFrame({"code": codes[good]}, geometry=shapely.point_on_surface(geoms[good]),
                            crs=4326).reset_index(drop=True)


def sites_answer(result, candidates, kind: str, radius: float, k: int, method: str,
                 engine: Engine | None = None) -> dict:
    """The chosen sites as a GeoJSON FeatureCollection whose properties state the bound (with
    ``engine``: each site with where it lies in words, its community, street and road)."""
    frame = sites_frame(result, candidates, kind, radius)
    if engine is not None:
        frame = with_places(engine, frame)
    body = json.loads(frame.to_json(drop_id=True, na="null"))
    body["properties"] = collection_properties(result, kind, radius, k, method)
    return json.loads(json.dumps(body, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
