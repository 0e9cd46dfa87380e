"""A partition of planning units into communities, with scores kept current as units move.

In the spirit of GerryChain: a :class:`UnitGraph` (units, their households and rook adjacency),
a :class:`Partition` (an assignment of every unit to a community label) whose *updaters* —
households, population, area and perimeter per community, households moved — change
incrementally on every :meth:`Partition.move`, so that a hand edit on a city-size plan costs
only the units it touches. Constraints are plain functions of a partition
(:func:`within_bounds`, :func:`is_contiguous`).

Perimeters come from the units' own perimeters less twice the edges they share inside the same
community, so Polsby–Popper (4πA/P²) needs no polygon union.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geodata.crs import to_metric
from geodata.topology import rook_pairs


@dataclass
class UnitGraph:
    """Planning units as a graph: attributes by position, rook adjacency as CSR.

    ``barrier`` marks units that communities must not be connected through (water: a river is
    not crossed) and unpopulated islands (no households, no land neighbour in their street); they
    are assigned to a community but take no part in contiguity.
    """

    codes: np.ndarray
    households: np.ndarray
    population: np.ndarray
    street: np.ndarray
    current: np.ndarray  # current community code per unit, None for blind spots
    area: np.ndarray  # m²
    perimeter: np.ndarray  # m
    barrier: np.ndarray
    indptr: np.ndarray  # CSR of the adjacency; bridges over the river are links of 1 mm
    indices: np.ndarray
    shared: np.ndarray  # m, aligned with indices
    xy: np.ndarray  # a point inside each unit, metres
    position: dict = field(default_factory=dict)

    @classmethod
    def from_units(cls, units: gpd.GeoDataFrame, adjacency: pd.DataFrame | None = None) -> UnitGraph:
        """Build from units (``code households street_code community_code`` [``population``,
        ``land_use``]) and their stored adjacency (``unit_a unit_b shared_m``), computed when absent."""
        metric = to_metric(units)
        codes = units["code"].astype(str).to_numpy()
        n = len(units)
        position = {c: i for i, c in enumerate(codes)}
        if adjacency is None:
            pairs = rook_pairs(units)
            a, b, shared = pairs["i"], pairs["j"], pairs["shared_m"]
        else:
            known = adjacency["unit_a"].isin(position) & adjacency["unit_b"].isin(position)
            adjacency = adjacency[known]
            a = adjacency["unit_a"].map(position).to_numpy()
            b = adjacency["unit_b"].map(position).to_numpy()
            shared = adjacency["shared_m"].to_numpy(dtype=float)
        rows = np.concatenate([a, b]).astype(np.int64)
        cols = np.concatenate([b, a]).astype(np.int64)
        matrix = csr_matrix((np.concatenate([shared, shared]), (rows, cols)), shape=(n, n))
        matrix.sum_duplicates()
        matrix.sort_indices()
        current = units["community_code"].to_numpy(dtype=object) if "community_code" in units else \
            np.full(n, None, dtype=object)
        current = np.array([c if isinstance(c, str) and c else None for c in current], dtype=object)
        land_use = units["land_use"].to_numpy(dtype=object) if "land_use" in units else np.full(n, "")
        population = units["population"] if "population" in units else units["households"]
        households = units["households"].fillna(0).to_numpy(dtype=np.int64)
        street = units["street_code"].astype(str).to_numpy()
        barrier = np.array([lu == "water" for lu in land_use])
        # unpopulated land with no land neighbour in its street (an island park) joins a community
        # but cannot make it non-contiguous
        rows = np.repeat(np.arange(n), np.diff(matrix.indptr))
        land_link = (street[rows] == street[matrix.indices]) & ~barrier[matrix.indices]
        has_land_neighbour = np.bincount(rows[land_link], minlength=n) > 0
        barrier |= (households == 0) & ~has_land_neighbour & ~barrier
        return cls(
            codes=codes,
            households=households,
            population=pd.to_numeric(population, errors="coerce").fillna(0).to_numpy(dtype=np.int64),
            street=street,
            current=current,
            area=metric.area.to_numpy(),
            perimeter=metric.length.to_numpy(),
            barrier=barrier,
            indptr=matrix.indptr, indices=matrix.indices, shared=matrix.data,
            xy=shapely.get_coordinates(shapely.point_on_surface(metric.geometry.values)),
            position=position,
        )

    def __len__(self) -> int:
        return len(self.codes)

    def neighbours(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u]:self.indptr[u + 1]]

    def shared_with(self, u: int) -> np.ndarray:
        return self.shared[self.indptr[u]:self.indptr[u + 1]]


class Partition:
    """An assignment of every unit to a community label, with per-community sums kept current."""

    def __init__(self, graph: UnitGraph, labels: np.ndarray) -> None:
        self.graph = graph
        self.labels = np.asarray(labels, dtype=object).copy()
        names, inverse = np.unique(self.labels.astype(str), return_inverse=True)
        k = len(names)
        g = graph
        def by_label(values) -> dict:
            return dict(zip(names, np.bincount(inverse, values, k), strict=True))

        self.households = {c: int(v) for c, v in by_label(g.households).items()}
        self.population = {c: int(v) for c, v in by_label(g.population).items()}
        self.area = by_label(g.area)
        # perimeter = Σ unit perimeters − 2 × edges shared inside the community
        rows = np.repeat(np.arange(len(g)), np.diff(g.indptr))
        inside = self.labels[rows].astype(str) == self.labels[g.indices].astype(str)
        internal = np.bincount(inverse[rows[inside]], g.shared[inside], k)  # each edge counted twice
        self.perimeter = dict(zip(names, np.bincount(inverse, g.perimeter, k) - internal, strict=True))
        self.cut_length = float(g.shared[~inside].sum() / 2)
        self.cut_edges = int((~inside).sum() // 2)
        order = np.argsort(inverse, kind="stable")
        bounds_ = np.searchsorted(inverse[order], np.arange(k + 1))
        self._members = {name: set(order[bounds_[i]:bounds_[i + 1]].tolist()) for i, name in enumerate(names)}
        self._had = np.array([c is not None for c in g.current])
        changed = self._had & (self.labels != g.current)
        self.moved_households = int(g.households[changed].sum())
        self.moved_units = int(changed.sum())

    # --- updaters ------------------------------------------------------------------------

    def move(self, units, label: str) -> None:
        """Assign ``units`` (positions) to ``label``, updating every score incrementally."""
        g = self.graph
        for u in np.atleast_1d(units):
            old = self.labels[u]
            if old == label:
                continue
            for key, value in ((self.households, g.households[u]), (self.population, g.population[u]),
                               (self.area, g.area[u])):
                key[old] -= value
                key[label] = key.get(label, 0) + value
            nb, sh = g.neighbours(u), g.shared_with(u)
            nb_labels = self.labels[nb]
            with_old, with_new = sh[nb_labels == old].sum(), sh[nb_labels == label].sum()
            self.perimeter[old] = self.perimeter[old] - g.perimeter[u] + 2 * with_old
            self.perimeter[label] = self.perimeter.get(label, 0.0) + g.perimeter[u] - 2 * with_new
            self.cut_length += with_old - with_new
            self.cut_edges += int((nb_labels == old).sum() - (nb_labels == label).sum())
            if self._had[u]:
                was_moved, now_moved = old != g.current[u], label != g.current[u]
                self.moved_households += int(g.households[u]) * (int(now_moved) - int(was_moved))
                self.moved_units += int(now_moved) - int(was_moved)
            self.labels[u] = label
            self._members[old].discard(int(u))
            self._members.setdefault(label, set()).add(int(u))
            if self.households[old] == 0 and self.area[old] <= 1e-9:
                for key in (self.households, self.population, self.area, self.perimeter, self._members):
                    key.pop(old, None)

    def members(self, label: str) -> np.ndarray:
        """Positions of the units of ``label``, in order (kept as a set per label, so this does
        not scan the whole partition)."""
        return np.array(sorted(self._members.get(label, ())), dtype=np.int64)

    def polsby_popper(self, label: str) -> float:
        p = self.perimeter[label]
        return float(4 * np.pi * self.area[label] / (p * p)) if p > 0 else 0.0

    def moved(self) -> tuple[int, int]:
        """Households (and units) whose community is not their current one (blind spots excluded)."""
        return self.moved_households, self.moved_units

    def non_contiguous(self) -> set[str]:
        """Every label whose non-barrier units are not connected (one sparse-graph pass)."""
        g = self.graph
        rows = np.repeat(np.arange(len(g)), np.diff(g.indptr))
        keep = (self.labels[rows] == self.labels[g.indices]) & ~g.barrier[rows] & ~g.barrier[g.indices]
        n = len(g)
        graph = csr_matrix((np.ones(int(keep.sum())), (rows[keep], g.indices[keep])), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        land = ~g.barrier
        pieces = pd.DataFrame({"label": self.labels[land], "component": component[land]})
        counts = pieces.drop_duplicates().groupby("label").size()
        return set(counts[counts > 1].index)


# --- constraints ------------------------------------------------------------------------------


def is_contiguous(partition: Partition, label: str) -> bool:
    """Whether the non-barrier units of ``label`` are connected through shared edges."""
    g = partition.graph
    members = [u for u in partition.members(label) if not g.barrier[u]]
    if len(members) <= 1:
        return True
    inside = set(members)
    seen = {members[0]}
    queue = deque([members[0]])
    while queue:
        u = queue.popleft()
        for v in g.neighbours(u):
            if v in inside and v not in seen:
                seen.add(v)
                queue.append(v)
    return len(seen) == len(inside)


def within_bounds(partition: Partition, label: str, minimum: int, maximum: int) -> bool:
    return minimum <= partition.households[label] <= maximum


def single_street(partition: Partition, label: str) -> bool:
    return len(set(partition.graph.street[partition.members(label)])) == 1
