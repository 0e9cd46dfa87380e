"""A partition of planning units into communities, with scores kept current as units move.

In the spirit of GerryChain: a :class:`UnitGraph` (units, their households and rook adjacency),
a :class:`Partition` (an assignment of every unit to a community label) whose *updaters* —
households, population, area and perimeter per community, members, households moved — change
incrementally on every :meth:`Partition.move`, so that a hand edit on a city-size plan costs
only the units it touches, and *constraints* that are plain functions of a partition and a
label (:func:`is_contiguous`, :func:`within_bounds`, :func:`single_street`,
:func:`single_parent`). The redistricting engine, hand edits and the scores all use these; the
grid-cell generator uses the same pieces with other rules.

Contiguity is an updater too, but a lazy one: a move only marks the communities it touched, and
:meth:`Partition.contiguous` / :meth:`Partition.broken` re-check those (and only those) when
asked, so a hand edit's scores cost the communities it touched, not the city.

A :meth:`Partition.trial` tries moves: inside it, moves change the partition as usual, its scores
can be read, and on leaving it everything is put back exactly as it was (labels, sums, members,
contiguity) unless :meth:`Trial.keep` was called — a hand edit scores its move, saves it, and keeps
it only once the save has committed.

Perimeters come from the units' own perimeters less twice the edges they share inside the same
community, so Polsby–Popper (4πA/P²) needs no polygon union. Connectivity is one sparse-graph
pass (scipy ``connected_components``) over the units in question, never a Python search.

A unit may be *unassigned* (label :data:`UNASSIGNED`, the empty string) while a plan is being
made; unassigned units belong to no community and are left out of :attr:`Partition.communities`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from geodata.crs import to_metric
from geodata.topology import rook_pairs

UNASSIGNED = ""


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
        position = dict(zip(codes.tolist(), range(n), strict=True))
        if adjacency is None:
            pairs = rook_pairs(units)
            a, b, shared = pairs["i"], pairs["j"], pairs["shared_m"]
        else:
            index = pd.Index(codes)
            a = index.get_indexer(adjacency["unit_a"].astype(str))
            b = index.get_indexer(adjacency["unit_b"].astype(str))
            known = (a >= 0) & (b >= 0)
            a, b = a[known].astype(np.int64), b[known].astype(np.int64)
            shared = adjacency["shared_m"].to_numpy(dtype=float)[known]
        rows = np.concatenate([a, b]).astype(np.int64)
        cols = np.concatenate([b, a]).astype(np.int64)
        matrix = csr_matrix((np.concatenate([shared, shared]), (rows, cols)), shape=(n, n))
        matrix.sum_duplicates()
        matrix.sort_indices()
        current = units["community_code"].to_numpy(dtype=object) if "community_code" in units else \
            np.full(n, None, dtype=object)
        current = np.array([c if isinstance(c, str) and c else None for c in current.tolist()], dtype=object)
        land_use = units["land_use"].fillna("").to_numpy(dtype=object) if "land_use" in units \
            else np.full(n, "", dtype=object)
        population = units["population"] if "population" in units else units["households"]
        households = units["households"].fillna(0).to_numpy(dtype=np.int64)
        street = units["street_code"].astype(str).to_numpy()
        barrier = land_use == "water"
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
            current=current.astype(object),
            area=metric.area.to_numpy(),
            perimeter=metric.length.to_numpy(),
            barrier=np.asarray(barrier, dtype=bool),
            indptr=matrix.indptr, indices=matrix.indices, shared=matrix.data,
            xy=shapely.get_coordinates(shapely.point_on_surface(metric.geometry.values)),
            position=position,
        )

    def __len__(self) -> int:
        return len(self.codes)

    @cached_property
    def matrix(self) -> csr_matrix:
        """The adjacency as a sparse matrix of shared edge lengths (metres)."""
        n = len(self)
        return csr_matrix((self.shared, self.indices, self.indptr), shape=(n, n))

    @cached_property
    def land_matrix(self) -> csr_matrix:
        """The adjacency between land units only (what contiguity is measured on)."""
        land = (~self.barrier).astype(float)
        matrix = csr_matrix(self.matrix.multiply(land[:, None]).multiply(land[None, :]))
        matrix.eliminate_zeros()
        return matrix

    def neighbours(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u]:self.indptr[u + 1]]

    def shared_with(self, u: int) -> np.ndarray:
        return self.shared[self.indptr[u]:self.indptr[u + 1]]

    def subgraph(self, positions: np.ndarray) -> UnitGraph:
        """The graph of ``positions`` alone (in that order), keeping only edges between them —
        a street, for the engine, or a community, for its grid cells."""
        positions = np.asarray(positions, dtype=np.int64)
        sub = self.matrix[positions][:, positions].tocsr()
        sub.sort_indices()
        codes = self.codes[positions]
        return UnitGraph(
            codes=codes, households=self.households[positions], population=self.population[positions],
            street=self.street[positions], current=self.current[positions], area=self.area[positions],
            perimeter=self.perimeter[positions], barrier=self.barrier[positions],
            indptr=sub.indptr, indices=sub.indices, shared=sub.data, xy=self.xy[positions],
            position=dict(zip(codes.tolist(), range(len(codes)), strict=True)))

    def pieces(self, members: np.ndarray) -> list[np.ndarray]:
        """The connected pieces of ``members`` (land positions), through land edges among them."""
        members = np.asarray(members, dtype=np.int64)
        if len(members) <= 1:
            return [members] if len(members) else []
        # the induced subgraph, gathered straight from the CSR arrays (scipy's fancy indexing
        # costs more than the search itself on the few hundred units of a community)
        land = self.land_matrix
        starts, counts = land.indptr[members], np.diff(land.indptr)[members]
        gather = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        local = np.full(len(self), -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        target = local[land.indices[gather]]
        keep = target >= 0
        rows = np.repeat(np.arange(len(members)), counts)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=len(members)))])
        inner = csr_matrix((np.ones(int(keep.sum())), target[keep], indptr), shape=(len(members),) * 2)
        _, component = connected_components(inner, directed=False)
        order = np.argsort(component, kind="stable")
        cuts = np.flatnonzero(np.diff(component[order])) + 1
        return [np.sort(members[chunk]) for chunk in np.split(order, cuts)]

    def edges_leaving(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The edges from ``members`` to units outside them: (from, to, shared metres)."""
        members = np.asarray(members, dtype=np.int64)
        rows = self.matrix[members]
        source = np.repeat(members, np.diff(rows.indptr))
        outside = ~np.isin(rows.indices, members)
        return source[outside], rows.indices[outside], rows.data[outside]


class Partition:
    """An assignment of every unit to a community label, with per-community sums kept current."""

    def __init__(self, graph: UnitGraph, labels: np.ndarray) -> None:
        self.graph = graph
        labels = np.asarray(labels, dtype=object).copy()
        labels[pd.isna(labels)] = UNASSIGNED
        self.labels = labels
        names, inverse = np.unique(self.labels.astype(str), return_inverse=True)
        k = len(names)
        g = graph

        def by_label(values) -> dict:
            return dict(zip(names.tolist(), np.bincount(inverse, values, k).tolist(), strict=True))

        self.households = {c: int(v) for c, v in by_label(g.households).items()}
        self.population = {c: int(v) for c, v in by_label(g.population).items()}
        self.area = by_label(g.area)
        # perimeter = Σ unit perimeters − 2 × edges shared inside the community
        rows = np.repeat(np.arange(len(g)), np.diff(g.indptr))
        inside = inverse[rows] == inverse[g.indices]
        internal = np.bincount(inverse[rows[inside]], g.shared[inside], k)  # each edge counted twice
        self.perimeter = dict(zip(names.tolist(), (np.bincount(inverse, g.perimeter, k) - internal).tolist(),
                                  strict=True))
        self.cut_length = float(g.shared[~inside].sum() / 2)
        self.cut_edges = int((~inside).sum() // 2)
        order = np.argsort(inverse, kind="stable")
        bounds_ = np.searchsorted(inverse[order], np.arange(k + 1))
        self._members = {name: set(order[bounds_[i]:bounds_[i + 1]].tolist()) for i, name in enumerate(names)}
        self._had = np.array([c is not None for c in g.current], dtype=bool)
        changed = self._had & (self.labels != g.current)
        self.moved_households = int(g.households[changed].sum())
        self.moved_units = int(changed.sum())
        # contiguity, lazily: known per label; labels a move touched are stale until asked for
        self._contiguous: dict[str, bool] = {}
        self._stale: set[str] = set()
        self._all_known = False
        self._trial: Trial | None = None

    # --- updaters ------------------------------------------------------------------------

    def move(self, units, label: str) -> None:
        """Assign ``units`` (positions) to ``label``, updating every score incrementally: unit by
        unit for a hand edit's few units, in one vectorised pass for a whole piece."""
        units = np.atleast_1d(np.asarray(units, dtype=np.int64))
        if self._trial is not None:
            self._trial.remember(units, label)
        self._stale.update(self.labels[units].tolist())
        self._stale.add(label)
        if len(units) > 16:
            self._move_many(units, label)
            return
        g = self.graph
        for u in units:
            u = int(u)
            old = self.labels[u]
            if old == label:
                continue
            for key, value in ((self.households, g.households[u]), (self.population, g.population[u]),
                               (self.area, g.area[u])):
                key[old] -= value
                key[label] = key.get(label, 0) + value
            nb, sh = g.neighbours(u), g.shared_with(u)
            nb_labels = self.labels[nb]
            to_old, to_new = nb_labels == old, nb_labels == label
            with_old, with_new = sh[to_old].sum(), sh[to_new].sum()
            self.perimeter[old] = self.perimeter[old] - g.perimeter[u] + 2 * with_old
            self.perimeter[label] = self.perimeter.get(label, 0.0) + g.perimeter[u] - 2 * with_new
            self.cut_length += with_old - with_new
            self.cut_edges += int(to_old.sum() - to_new.sum())
            if self._had[u]:
                was_moved, now_moved = old != g.current[u], label != g.current[u]
                self.moved_households += int(g.households[u]) * (int(now_moved) - int(was_moved))
                self.moved_units += int(now_moved) - int(was_moved)
            self.labels[u] = label
            self._members[old].discard(u)
            self._members.setdefault(label, set()).add(u)
            if not self._members[old]:
                for key in (self.households, self.population, self.area, self.perimeter, self._members):
                    key.pop(old, None)

    def _move_many(self, units: np.ndarray, label: str) -> None:
        g = self.graph
        units = np.unique(units)
        old = self.labels[units]
        units, old = units[old != label], old[old != label]
        if not len(units):
            return
        # edges at the moved units, each edge once (an edge between two moved units is seen from
        # both ends: keep it from its lower end)
        starts, counts = g.indptr[units], np.diff(g.indptr)[units]
        gather = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        source, target, shared = np.repeat(units, counts), g.indices[gather], g.shared[gather]
        moving = np.zeros(len(g), dtype=bool)
        moving[units] = True
        once = ~moving[target] | (source < target)
        source, target, shared = source[once], target[once], shared[once]
        cut_before = self.labels[source] != self.labels[target]
        for name in np.unique(old.astype(str)):
            chunk = units[old == name]
            for key, values in ((self.households, g.households), (self.population, g.population),
                                (self.area, g.area)):
                moved = values[chunk].sum().item()  # a Python number, as the other updaters keep
                key[name] -= moved
                key[label] = key.get(label, 0) + moved
            self._members[name].difference_update(chunk.tolist())
        if self._had[units].any():
            had = units[self._had[units]]
            was = old[self._had[units]] != g.current[had]
            now = label != g.current[had]
            self.moved_households += int((g.households[had] * (now.astype(int) - was.astype(int))).sum())
            self.moved_units += int(now.sum() - was.sum())
        self.labels[units] = label
        self._members.setdefault(label, set()).update(units.tolist())
        cut_after = self.labels[source] != self.labels[target]
        self.cut_length += float(shared[cut_after].sum() - shared[cut_before].sum())
        self.cut_edges += int(cut_after.sum() - cut_before.sum())
        for name in {*np.unique(old.astype(str)).tolist(), label}:
            if not self._members.get(name):
                for key in (self.households, self.population, self.area, self.perimeter, self._members):
                    key.pop(name, None)
            else:
                self.perimeter[name] = self._perimeter_of(np.fromiter(self._members[name], np.int64))

    def _perimeter_of(self, members: np.ndarray) -> float:
        """Σ unit perimeters − 2 × the edges shared inside ``members``."""
        g = self.graph
        starts, counts = g.indptr[members], np.diff(g.indptr)[members]
        gather = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        inside = np.zeros(len(g), dtype=bool)
        inside[members] = True
        return float(g.perimeter[members].sum() - g.shared[gather][inside[g.indices[gather]]].sum())

    # --- reading ---------------------------------------------------------------------------

    @property
    def communities(self) -> list[str]:
        """The labels that have units, in order (unassigned units are no community)."""
        return sorted(label for label in self._members if label != UNASSIGNED)

    def __contains__(self, label: str) -> bool:
        return label != UNASSIGNED and label in self._members

    def members(self, label: str) -> np.ndarray:
        """Positions of the units of ``label``, in order (kept as a set per label, so this does
        not scan the whole partition)."""
        return np.array(sorted(self._members.get(label, ())), dtype=np.int64)

    def land_members(self, label: str) -> np.ndarray:
        """The members of ``label`` that count for contiguity (not water, not islands)."""
        members = self.members(label)
        return members[~self.graph.barrier[members]]

    def pieces(self, label: str) -> list[np.ndarray]:
        """The connected pieces of ``label``'s land units."""
        return self.graph.pieces(self.land_members(label))

    def neighbours_of(self, members: np.ndarray, *, land: bool = True) -> dict[str, float]:
        """The communities next to ``members`` (through land edges, unless ``land=False``), with
        the length of boundary shared with each."""
        g = self.graph
        source, target, shared = g.edges_leaving(members)
        keep = self.labels[target] != UNASSIGNED
        if land:
            keep &= ~g.barrier[target] & ~g.barrier[source]
        out: dict[str, float] = {}
        for label, length in zip(self.labels[target[keep]], shared[keep], strict=True):
            out[label] = out.get(label, 0.0) + float(length)
        return out

    def polsby_popper(self, label: str) -> float:
        p = self.perimeter[label]
        return float(4 * np.pi * self.area[label] / (p * p)) if p > 0 else 0.0

    def moved(self) -> tuple[int, int]:
        """Households (and units) whose community is not their current one (blind spots excluded)."""
        return self.moved_households, self.moved_units

    def non_contiguous(self) -> set[str]:
        """Every label whose land units are not connected (one sparse-graph pass)."""
        g = self.graph
        m = g.land_matrix.tocoo()
        keep = self.labels[m.row] == self.labels[m.col]
        n = len(g)
        graph = csr_matrix((np.ones(int(keep.sum())), (m.row[keep], m.col[keep])), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        land = ~g.barrier & (self.labels != UNASSIGNED)
        pieces = pd.DataFrame({"label": self.labels[land], "component": component[land]})
        counts = pieces.drop_duplicates().groupby("label").size()
        return set(counts[counts > 1].index)

    # --- contiguity, a lazy updater --------------------------------------------------------

    def contiguous(self, label: str) -> bool:
        """Whether ``label``'s land units are connected, re-checked only when a move has touched
        ``label`` since it was last checked (an unknown label is contiguous: it has no units)."""
        if label not in self:
            return True
        if label in self._stale or label not in self._contiguous:
            self._contiguous[label] = len(self.pieces(label)) <= 1
            self._stale.discard(label)
        return self._contiguous[label]

    def broken(self) -> set[str]:
        """Every community whose land units are not connected: one sparse-graph pass the first time
        (or when most communities were touched), then only the communities moves touched since."""
        communities = self._members.keys() - {UNASSIGNED}
        if not self._all_known or len(self._stale) > max(64, len(communities) // 4):
            broken = self.non_contiguous()
            self._contiguous = {label: label not in broken for label in communities}
            self._stale.clear()
            self._all_known = True
            return broken
        for label in list(self._stale):
            self.contiguous(label)
        self._stale.clear()
        return {label for label in communities if not self._contiguous.get(label, True)}

    # --- trying a move -----------------------------------------------------------------------

    @contextmanager
    def trial(self) -> Iterator[Trial]:
        """Try moves: within the block, :meth:`move` works as ever and every score can be read;
        on leaving it (normally or by an exception) the partition is put back exactly as it was,
        unless :meth:`Trial.keep` was called. Trials do not nest."""
        if self._trial is not None:
            raise RuntimeError("a trial is already open on this partition")
        trial = Trial(self)
        self._trial = trial
        try:
            yield trial
        finally:
            self._trial = None
            if not trial.kept:
                trial.roll_back()


@dataclass
class Trial:
    """The undo record of moves tried on a :class:`Partition`: the state before the first move of
    every unit and community touched (labels, sums, members, contiguity) and the plan-wide
    counts, so rolling back restores exactly the numbers there were, not a float's re-summed
    neighbour."""

    partition: Partition
    kept: bool = False
    labels: dict[int, str] = field(default_factory=dict)
    communities: dict[str, tuple | None] = field(default_factory=dict)
    counts: tuple = ()
    contiguity: tuple = ()

    def __post_init__(self) -> None:
        p = self.partition
        self.counts = (p.cut_length, p.cut_edges, p.moved_households, p.moved_units)
        self.contiguity = (p._all_known, set(p._stale))

    def keep(self) -> None:
        """Keep the moves tried: leaving the trial changes nothing."""
        self.kept = True

    def remember(self, units: np.ndarray, label: str) -> None:
        """Note what ``units`` moving to ``label`` is about to change (first touch only)."""
        p = self.partition
        for u in units.tolist():
            if u not in self.labels:
                self.labels[u] = p.labels[u]
        for name in {*p.labels[units].tolist(), label}:
            if name not in self.communities:
                self.communities[name] = None if name not in p._members else (
                    p.households[name], p.population[name], p.area[name], p.perimeter[name],
                    set(p._members[name]), p._contiguous.get(name))

    def roll_back(self) -> None:
        """Put the partition back as it was before the first move tried."""
        p = self.partition
        if self.labels:
            positions = np.fromiter(self.labels, dtype=np.int64, count=len(self.labels))
            p.labels[positions] = np.array(list(self.labels.values()), dtype=object)
        for name, before in self.communities.items():
            stores = (p.households, p.population, p.area, p.perimeter, p._members)
            if before is None:
                for store in (*stores, p._contiguous):
                    store.pop(name, None)
                continue
            for store, value in zip(stores, before[:5], strict=True):
                store[name] = value
            if before[5] is None:
                p._contiguous.pop(name, None)
            else:
                p._contiguous[name] = before[5]
        p.cut_length, p.cut_edges, p.moved_households, p.moved_units = self.counts
        p._all_known, p._stale = self.contiguity[0], set(self.contiguity[1])


# --- constraints: plain functions of a partition and a label -----------------------------------


def is_contiguous(partition: Partition, label: str) -> bool:
    """Whether the land units of ``label`` are connected through shared edges."""
    return len(partition.pieces(label)) <= 1


def stays_contiguous(partition: Partition, label: str, without: int) -> bool:
    """Whether ``label`` stays connected when unit ``without`` leaves it."""
    members = partition.land_members(label)
    members = members[members != without]
    return len(partition.graph.pieces(members)) <= 1


def within_bounds(partition: Partition, label: str, minimum: int, maximum: int) -> bool:
    """Whether ``label`` holds between ``minimum`` and ``maximum`` households."""
    return minimum <= partition.households.get(label, 0) <= maximum


def single_street(partition: Partition, label: str) -> bool:
    """Whether ``label``'s units all lie in one street (communities nest in streets)."""
    return len(set(partition.graph.street[partition.members(label)])) <= 1


def single_parent(partition: Partition, label: str, parent: np.ndarray) -> bool:
    """Whether ``label``'s units all lie in one parent (grid cells nest in communities)."""
    return len(set(parent[partition.members(label)])) <= 1
