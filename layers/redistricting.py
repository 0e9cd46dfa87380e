"""Automatic redistricting (社区划分): communities within the household bounds, moving as few
households as possible.

Street by street (so communities never cross a street boundary), on the graph of land units
(a river is a barrier: communities do not reach across it):

1. every current community is made contiguous — its heaviest connected piece keeps the code,
   stray pieces become unassigned;
2. unassigned units (blind spots, stray pieces) join a neighbouring community with room, or
   become new communities when they hold enough households;
3. a local search moves single boundary units (never cutting a community in two) from
   communities above the maximum, or into those below the minimum, toward neighbours with room:
   the fewest households moved for a small excess;
4. what that cannot fix is split with METIS (balanced, contiguous, cutting as little boundary as
   it can, so the parts are compact; the part with the most of its households keeps the code)
   or merged with a neighbour when the sum fits; then the local search runs again;
5. what cannot be satisfied is explained (a unit above the maximum, a piece of the street cut off
   with too few households, a street too small) instead of silently breaking a rule.

Communities that already satisfy the rules are left alone unless ``keep_valid=False`` — they
may receive units, and give some only when nothing else meets the bounds, keeping at least 95 %
of their households. New
communities take the next free codes of their street; a retired code is never reused. Streets
without a 9-digit code get provisional codes (``STREET-001``). Deterministic for a given seed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pymetis

from geodata.catalog import is_code
from layers.partition import Partition, UnitGraph

NEW = "new:"


@dataclass(frozen=True)
class Rules:
    """What a plan must satisfy: household bounds (社区户数上下限) and an optional target size."""

    minimum: int = 1000
    maximum: int = 3000
    target: int | None = None
    keep_valid: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum:
            raise ValueError(f"bounds {self.minimum}–{self.maximum} are not 0 < minimum ≤ maximum")

    @property
    def aim(self) -> int:
        return self.target or (self.minimum + self.maximum) // 2

    def violation(self, households: int) -> int:
        return max(0, self.minimum - households) + max(0, households - self.maximum)

    def parts(self, households: int) -> int | None:
        """How many communities ``households`` should make; None when no count fits the bounds."""
        low, high = -(-households // self.maximum), households // self.minimum
        if low > high:
            return None
        return int(min(max(round(households / self.aim), low), high))


@dataclass(frozen=True)
class Infeasible:
    """A rule that cannot be met, and why."""

    street: str
    kind: str  # unit_above_maximum | cut_off | street_too_small | indivisible | unresolved
    units: list[str]
    households: int
    reason: str


@dataclass
class PlanResult:
    """An assignment of every unit to a community, with its scores and what could not be met."""

    graph: UnitGraph
    partition: Partition
    rules: Rules
    infeasible: list[Infeasible] = field(default_factory=list)
    provisional: set[str] = field(default_factory=set)

    @property
    def assignment(self) -> pd.Series:
        return pd.Series(self.partition.labels, index=self.graph.codes, name="community_code")

    def community_table(self) -> pd.DataFrame:
        """Per community: households, population, area, Polsby–Popper, contiguity, moves, status."""
        p, g = self.partition, self.graph
        frame = pd.DataFrame({"label": p.labels, "street": g.street, "households": g.households,
                              "current": g.current})
        moves = frame[frame["current"].notna() & (frame["current"] != frame["label"])]
        by_label = frame.groupby("label")
        labels = sorted(p.households)
        broken = p.non_contiguous()

        def moved(by: str) -> np.ndarray:
            return moves.groupby(by)["households"].sum().reindex(labels, fill_value=0).to_numpy()

        table = pd.DataFrame({
            "community_code": labels,
            "street_code": by_label["street"].first().reindex(labels).to_numpy(),
            "households": [int(p.households[c]) for c in labels],
            "population": [int(p.population[c]) for c in labels],
            "units": by_label.size().reindex(labels).to_numpy(),
            "area_m2": [round(float(p.area[c]), 1) for c in labels],
            "polsby_popper": [round(p.polsby_popper(c), 4) for c in labels],
            "contiguous": [c not in broken for c in labels],
            "moved_in": moved("label"), "moved_out": moved("current"),
            "provisional": [c in self.provisional for c in labels],
        })
        table["within_bounds"] = table["households"].between(self.rules.minimum, self.rules.maximum)
        return table

    def scores(self) -> dict:
        """The plan's scores: bounds, sizes, households moved, compactness, cut edges, reasons."""
        p, g = self.partition, self.graph
        streets = pd.Series(g.street).groupby(p.labels).nunique()
        current = set(g.current)
        return summary(p, self.rules, p.non_contiguous()) | {
            "crossing_street": int((streets > 1).sum()),
            "new_communities": int(sum(c not in current for c in p.households)),
            "infeasible": [asdict(i) for i in self.infeasible],
        }


def summary(partition: Partition, rules: Rules, broken: set[str]) -> dict:
    """A partition's plan-level scores from its running sums; ``broken`` are the labels known to be
    non-contiguous (a hand edit re-checks only the communities it touched)."""
    p = partition
    labels = list(p.households)
    households = np.array([p.households[c] for c in labels]) if labels else np.zeros(1, dtype=int)
    pp = np.array([p.polsby_popper(c) for c in labels]) if labels else np.zeros(1)
    moved, moved_units = p.moved()
    total = int(p.graph.households.sum())
    return {
        "communities": len(labels), "units": len(p.graph), "households": total,
        "outside_bounds": int(sum(rules.violation(p.households[c]) > 0 for c in labels)),
        "non_contiguous": len(broken & set(labels)),
        "households_min": int(households.min()), "households_median": float(np.median(households)),
        "households_max": int(households.max()), "households_moved": moved, "units_moved": moved_units,
        "households_moved_share": round(moved / total, 4) if total else 0.0,
        "pp_mean": round(float(pp.mean()), 4), "pp_min": round(float(pp.min()), 4),
        "cut_edges": p.cut_edges, "bounds": [rules.minimum, rules.maximum],
    }


# --- one street ------------------------------------------------------------------------------


class _Street:
    """The working state of one street: local labels over its units."""

    def __init__(self, graph: UnitGraph, units: np.ndarray, rules: Rules, rng: np.random.Generator) -> None:
        self.g, self.units, self.rules, self.rng = graph, units, rules, rng
        self.code = graph.street[units[0]]
        self.local = {u: i for i, u in enumerate(units)}
        self.hh = graph.households[units]
        self.land = ~graph.barrier[units]
        # neighbours inside the street, land to land (the river is a barrier)
        self.nbrs: list[np.ndarray] = []
        self.any_nbrs: list[tuple[np.ndarray, np.ndarray]] = []
        for i, u in enumerate(units):
            nb, sh = graph.neighbours(u), graph.shared_with(u)
            keep = np.array([v in self.local for v in nb], dtype=bool)
            loc = np.array([self.local[v] for v in nb[keep]], dtype=np.int64)
            self.any_nbrs.append((loc, sh[keep]))
            self.nbrs.append(loc[self.land[loc]] if self.land[i] else np.empty(0, dtype=np.int64))
        self.labels = np.array(graph.current[units], dtype=object)
        self.protected: dict[str, int] = {}  # communities that met the rules: code → households
        self.counter = 0
        self.problems: list[Infeasible] = []

    def new_label(self) -> str:
        self.counter += 1
        return f"{NEW}{self.code}:{self.counter}"

    def codes_of(self, idx) -> list[str]:
        return [str(self.g.codes[self.units[i]]) for i in np.atleast_1d(idx)]

    def problem(self, kind: str, idx, reason: str) -> None:
        idx = np.atleast_1d(idx)
        self.problems.append(Infeasible(self.code, kind, self.codes_of(idx), int(self.hh[idx].sum()), reason))

    # -- graph helpers ------------------------------------------------------------------------

    def components(self, members: np.ndarray) -> list[np.ndarray]:
        """Connected pieces of ``members`` (local land indices)."""
        inside = set(int(m) for m in members)
        seen: set[int] = set()
        pieces = []
        for start in members:
            start = int(start)
            if start in seen:
                continue
            piece, queue = [start], deque([start])
            seen.add(start)
            while queue:
                u = queue.popleft()
                for v in self.nbrs[u]:
                    v = int(v)
                    if v in inside and v not in seen:
                        seen.add(v)
                        piece.append(v)
                        queue.append(v)
            pieces.append(np.array(sorted(piece), dtype=np.int64))
        return pieces

    def land_members(self, label: str) -> np.ndarray:
        return np.flatnonzero((self.labels == label) & self.land)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for label, h in zip(self.labels, self.hh, strict=True):
            if label is not None:
                out[label] = out.get(label, 0) + int(h)
        return out

    def stays_connected(self, label: str, without: int) -> bool:
        members = [int(m) for m in self.land_members(label) if m != without]
        return len(members) <= 1 or len(self.components(np.array(members))) == 1

    # -- steps ---------------------------------------------------------------------------------

    def make_contiguous(self) -> None:
        for label in sorted({lab for lab in self.labels if lab is not None}):
            pieces = self.components(self.land_members(label))
            if len(pieces) <= 1:
                continue
            pieces.sort(key=lambda p: (-int(self.hh[p].sum()), -len(p), int(p[0])))
            for piece in pieces[1:]:
                self.labels[piece] = None

    def split(self, members: np.ndarray, k: int) -> list[np.ndarray]:
        """``members`` (connected, local land indices) in ``k`` balanced, compact, contiguous parts."""
        if k <= 1 or len(members) <= 1:
            return [members]
        k = min(k, len(members))
        pos = {int(m): i for i, m in enumerate(members)}
        xadj, adjncy, eweights = [0], [], []
        for m in members:
            loc, sh = self.any_nbrs[m]
            for v, s in zip(loc, sh, strict=True):
                if int(v) in pos and self.land[v]:
                    adjncy.append(pos[int(v)])
                    eweights.append(max(1, int(round(s))))
            xadj.append(len(adjncy))
        graph = pymetis.CSRAdjacency(xadj, adjncy)
        weights = [int(h) + 1 for h in self.hh[members]]
        seed = int(self.rng.integers(1 << 30))
        try:
            _, parts = pymetis.part_graph(k, graph, eweights=eweights, vweights=weights,
                                          options=pymetis.Options(seed=seed, contig=1, ufactor=50))
        except Exception:  # METIS refuses contig on a disconnected graph: split without it
            _, parts = pymetis.part_graph(k, graph, eweights=eweights, vweights=weights,
                                          options=pymetis.Options(seed=seed, ufactor=50))
        parts = np.asarray(parts)
        # METIS may leave a part in pieces: each part keeps its biggest piece, the other pieces
        # join the neighbouring part they share most boundary with
        owner = {}
        orphans = []
        for p in range(k):
            pieces = sorted(self.components(members[parts == p]),
                            key=lambda c: (-int(self.hh[c].sum()), -len(c)))
            for u in pieces[0] if pieces else []:
                owner[int(u)] = p
            orphans.extend(pieces[1:])
        while orphans:
            piece = orphans.pop(0)
            shared: dict[int, float] = {}
            for m in piece:
                loc, sh = self.any_nbrs[m]
                for v, s in zip(loc, sh, strict=True):
                    if int(v) in owner:
                        shared[owner[int(v)]] = shared.get(owner[int(v)], 0.0) + float(s)
            if not shared and orphans:
                orphans.append(piece)  # try again once its neighbours are placed
                if all(not any(int(v) in owner for m in o for v in self.any_nbrs[m][0]) for o in orphans):
                    break
                continue
            target = max(sorted(shared), key=lambda p: shared[p]) if shared else k
            for u in piece:
                owner[int(u)] = target
        return [np.array(sorted(u for u, p in owner.items() if p == q), dtype=np.int64)
                for q in sorted(set(owner.values()))]

    def split_label(self, label: str, k: int) -> None:
        members = self.land_members(label)
        parts = self.split(members, k)
        parts.sort(key=lambda p: -int(self.hh[p].sum()))
        for part in parts[1:]:  # the part with the most of its households keeps the code
            self.labels[part] = self.new_label()

    def resolve_over(self) -> None:
        for label, total in sorted(self.totals().items()):
            if total > self.rules.maximum:
                members = self.land_members(label)
                k = self.rules.parts(total) or -(-total // self.rules.maximum)
                if len(members) > 1:
                    self.split_label(label, k)

    def place_unassigned(self) -> None:
        """Blind spots and stray pieces: a new community when big enough, else a neighbour."""
        loose = np.flatnonzero((self.labels == None) & self.land)  # noqa: E711
        for cluster in self.components(loose):
            total = int(self.hh[cluster].sum())
            if total >= self.rules.minimum:
                k = self.rules.parts(total) or max(1, total // self.rules.aim)
                for part in self.split(cluster, k):
                    self.labels[part] = self.new_label()
                continue
            neighbour = self.best_neighbour(cluster, total)
            self.labels[cluster] = neighbour if neighbour is not None else self.new_label()

    def neighbour_labels(self, members: np.ndarray) -> dict[str, float]:
        """Labels next to ``members`` (land edges), with the length of boundary shared."""
        inside = set(int(m) for m in members)
        out: dict[str, float] = {}
        for m in members:
            loc, sh = self.any_nbrs[m]
            for v, s in zip(loc, sh, strict=True):
                if int(v) in inside or not self.land[v] or self.labels[v] is None:
                    continue
                out[self.labels[v]] = out.get(self.labels[v], 0.0) + float(s)
        return out

    def best_neighbour(self, members: np.ndarray, households: int) -> str | None:
        totals = self.totals()
        options = self.neighbour_labels(members)
        if not options:
            return None
        fits = {lab: s for lab, s in options.items() if totals.get(lab, 0) + households <= self.rules.maximum}
        if not fits:
            return None  # no room next door: a small community of its own, for the search to grow
        return max(sorted(fits), key=lambda lab: fits[lab])

    def merge_small(self) -> None:
        changed = True
        while changed:
            changed = False
            totals = self.totals()
            for label in sorted(totals, key=lambda lab: (totals[lab], lab)):
                if totals[label] >= self.rules.minimum or label not in self.totals():
                    continue
                options = self.neighbour_labels(self.land_members(label))
                fits = [m for m in options if totals[m] + totals[label] <= self.rules.maximum]
                if not fits:
                    continue
                other = min(fits, key=lambda m: (totals[m] + totals[label], m))
                keep, drop = (other, label) if totals[other] >= totals[label] else (label, other)
                self.labels[self.labels == drop] = keep
                changed = True
                break

    def protect_valid(self) -> None:
        """Remember the communities that already meet every rule, to leave them alone."""
        for label, total in self.totals().items():
            if not self.rules.violation(total) and not label.startswith(NEW):
                self.protected[label] = total

    def may_give(self, label: str, unit: int, relaxed: bool) -> bool:
        """A community that met the rules gives no unit — or, when nothing else helps, keeps at
        least 95 % of its households."""
        if label not in self.protected:
            return True
        if not relaxed:
            return False
        own = (self.labels == label) & (self.g.current[self.units] == label)
        return self.hh[own].sum() - self.hh[unit] >= 0.95 * self.protected[label]

    def local_search(self, budget: int, relaxed: bool = False) -> None:
        """Move single boundary units toward the bounds, never cutting a community in two."""
        r = self.rules
        for _ in range(budget):
            totals = self.totals()
            bad = [lab for lab, t in totals.items() if r.violation(t)]
            if not bad:
                return
            best = None
            for label in sorted(bad, key=lambda lab: (-r.violation(totals[lab]), lab)):
                over = totals[label] > r.maximum
                candidates = self.boundary_moves(label, over)
                for u, src, dst in candidates:
                    h = int(self.hh[u])
                    # neither side may get worse: a community within the bounds stays within them
                    if (r.violation(totals[src] - h) > r.violation(totals[src])
                            or r.violation(totals[dst] + h) > r.violation(totals[dst])):
                        continue
                    gain = r.violation(totals[src]) + r.violation(totals[dst]) \
                        - r.violation(totals[src] - h) - r.violation(totals[dst] + h)
                    if gain <= 0:
                        continue
                    key = (gain, -h, u)
                    if (best is None or key > best[0]) and self.may_give(src, u, relaxed) \
                            and self.stays_connected(src, u):
                        best = (key, u, dst)
                if best is not None:
                    break
            if best is None:
                return
            _, u, dst = best
            self.labels[u] = dst

    def boundary_moves(self, label: str, over: bool) -> list[tuple[int, str, str]]:
        """(unit, from, to) moves across ``label``'s boundary: out of it when it is over the
        maximum, into it when it is under the minimum."""
        moves = []
        for m in self.land_members(label):
            for v in self.nbrs[m]:
                other = self.labels[v]
                if other is None or other == label:
                    continue
                moves.append((int(m), label, other) if over else (int(v), other, label))
        return sorted(set(moves))

    def attach_rest(self) -> None:
        """Barrier (water) and other unlabelled units join the neighbour they share most with."""
        pending = [i for i in range(len(self.units)) if self.labels[i] is None]
        while pending:
            progress = False
            for i in list(pending):
                loc, sh = self.any_nbrs[i]
                scores: dict[str, float] = {}
                for v, s in zip(loc, sh, strict=True):
                    if self.labels[v] is not None:
                        scores[self.labels[v]] = scores.get(self.labels[v], 0.0) + float(s)
                if scores:
                    self.labels[i] = max(sorted(scores), key=lambda lab: scores[lab])
                    pending.remove(i)
                    progress = True
            if not progress:  # nothing next to them in the street: the nearest community takes them
                labelled = np.flatnonzero(self.labels != None)  # noqa: E711
                for i in pending:
                    if len(labelled):
                        xy = self.g.xy[self.units]
                        nearest = labelled[np.argmin(((xy[labelled] - xy[i]) ** 2).sum(axis=1))]
                        self.labels[i] = self.labels[nearest]
                    else:
                        self.labels[i] = self.new_label()
                break

    def explain(self) -> None:
        r = self.rules
        for i in np.flatnonzero(self.hh > r.maximum):
            self.problem("unit_above_maximum", i, f"unit {self.codes_of(i)[0]} alone holds {self.hh[i]} "
                         f"households, above the maximum of {r.maximum}")
        total = int(self.hh.sum())
        if 0 < total < r.minimum:
            self.problem("street_too_small", np.arange(len(self.units)),
                         f"street {self.code} holds {total} households, below the minimum of {r.minimum}")
            return
        for piece in self.components(np.flatnonzero(self.land)):
            h = int(self.hh[piece].sum())
            if 0 < h < r.minimum and len(piece) < self.land.sum():
                self.problem("cut_off", piece, f"{len(piece)} units with {h} households are cut off from the "
                             f"rest of street {self.code} (by the river or the street's edge), fewer than "
                             f"the minimum of {r.minimum}")
            elif h >= r.minimum and r.parts(h) is None:
                self.problem("indivisible", piece, f"{h} households cannot be divided into communities of "
                             f"{r.minimum}–{r.maximum}")

    def run(self) -> None:
        r = self.rules
        if not r.keep_valid:
            self.labels[:] = None
        budget = 4 * len(self.units) + 50
        self.make_contiguous()
        if r.keep_valid:
            self.protect_valid()
        self.place_unassigned()
        # fewest households moved first: single boundary units across to neighbours with room;
        # only what that cannot fix is split (too big) or merged (too small)
        self.local_search(budget)
        self.resolve_over()
        self.merge_small()
        self.local_search(budget)
        self.local_search(budget, relaxed=True)
        self.attach_rest()
        self.explain()
        explained = {c for p in self.problems for c in p.units}
        for label, total in sorted(self.totals().items()):
            members = np.flatnonzero(self.labels == label)
            if r.violation(total) and not explained.intersection(self.codes_of(members)):
                self.problem("unresolved", members, f"community {label} keeps {total} households: no "
                             "move found that meets the bounds without cutting a community in two")


# --- the plan --------------------------------------------------------------------------------


def _foreign_parts(graph: UnitGraph) -> np.ndarray:
    """Current codes as labels, but a code spread over several streets keeps only the street
    holding most of its households; elsewhere its units start unassigned."""
    current = graph.current.copy()
    frame = pd.DataFrame({"code": current, "street": graph.street, "hh": graph.households})
    frame = frame[frame["code"].notna()]
    home = frame.groupby(["code", "street"])["hh"].sum().reset_index().sort_values(
        ["code", "hh", "street"], ascending=[True, False, True]).drop_duplicates("code")
    home = dict(zip(home["code"], home["street"], strict=True))
    for i, (code, street) in enumerate(zip(current, graph.street, strict=True)):
        if code is not None and home.get(code) != street:
            current[i] = None
    return current


def assign_codes(labels: np.ndarray, streets: np.ndarray, taken: set[str]) -> tuple[np.ndarray, set[str]]:
    """Real codes for the new labels: the next free numbers of each street (never a code that was
    ever used), provisional ``STREET-NNN`` codes where the street has no 9-digit code."""
    out = labels.copy()
    provisional: set[str] = set()
    by_street: dict[str, list[str]] = {}
    for label, street in zip(labels, streets, strict=True):
        if label.startswith(NEW) and label not in by_street.setdefault(street, []):
            by_street[street].append(label)
    mapping = {}
    for street, new in by_street.items():
        official = is_code(street, 9)
        used = [int(c[-3:]) for c in taken if c.startswith(street) and c[-3:].isdigit()]
        number = max(used, default=0)
        for label in new:
            number += 1
            code = f"{street}{number:03d}" if official else f"{street}-{number:03d}"
            mapping[label] = code
            if not official:
                provisional.add(code)
    for i, label in enumerate(out):
        out[i] = mapping.get(label, label)
    return out, provisional


def make_plan(graph: UnitGraph, rules: Rules = Rules(), *, retired: set[str] | frozenset = frozenset(),
              streets: list[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> PlanResult:
    """Plan every street of ``graph`` (or only ``streets``); ``retired`` are codes used before."""
    rng = np.random.default_rng(rules.seed)
    graph_current = _foreign_parts(graph)
    labels = graph_current.copy()
    problems: list[Infeasible] = []
    todo = sorted(set(graph.street)) if streets is None else list(streets)
    for done, street in enumerate(todo):
        units = np.flatnonzero(graph.street == street)
        work = _Street(graph, units, rules, np.random.default_rng(rng.integers(1 << 32)))
        work.labels = labels[units].copy()
        work.run()
        labels[units] = work.labels
        problems.extend(work.problems)
        if progress:
            progress(done + 1, len(todo))
    taken = {c for c in graph.current if c is not None} | set(retired)
    codes, provisional = assign_codes(labels.astype(object), graph.street, taken)
    final = dict(zip(labels, codes, strict=True))
    problems = [Infeasible(p.street, p.kind, p.units, p.households,
                           " ".join(final.get(word, word) for word in p.reason.split(" ")))
                for p in problems]
    return PlanResult(graph, Partition(graph, codes), rules, problems, provisional)


def split_in_two(graph: UnitGraph, labels: np.ndarray, code: str, rules: Rules, seed: int = 0) -> list[str]:
    """The unit codes of the smaller of two balanced, compact, contiguous parts of ``code``."""
    members = np.flatnonzero(labels == code)
    street_units = np.flatnonzero(graph.street == graph.street[members[0]])
    work = _Street(graph, street_units, rules, np.random.default_rng(seed))
    work.labels = labels[street_units].copy()
    local = work.land_members(code)
    if len(local) < 2:
        raise ValueError(f"community {code} has fewer than two land units")
    parts = sorted(work.split(local, 2), key=lambda part: -int(work.hh[part].sum()))
    return [str(graph.codes[street_units[i]]) for i in parts[-1]]
