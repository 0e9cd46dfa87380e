"""Automatic redistricting (社区划分): communities within the household bounds, moving as few
households as possible.

Street by street (so communities never cross a street boundary), on a
:class:`~layers.plans.partition.Partition` of the street's units (a river is a barrier: communities do
not reach across it), as small steps in the manner of spopt's phases or GerryChain's proposals:

1. :func:`make_contiguous` — every current community keeps its heaviest connected piece; stray
   pieces become unassigned;
2. :func:`place_unassigned` — unassigned units (blind spots, stray pieces) join a neighbouring
   community with room, or become new communities when they hold enough households;
3. :func:`move_boundary_units` — single boundary units move (never cutting a community in two)
   out of communities above the maximum, or into those below the minimum, toward neighbours with
   room: the fewest households moved for a small excess;
4. :func:`split_too_big` with METIS (balanced, contiguous, cutting as little boundary as it can,
   so the parts are compact; the part with the most of its households keeps the code) and
   :func:`merge_too_small` with a neighbour when the sum fits; then the boundary moves again;
5. :func:`attach_rest` — water and other units outside every community join a neighbour;
6. :func:`explain` — what cannot be satisfied is kept as data (:class:`Infeasible`: kind,
   units, households, community) and worded once, with the final codes, by :func:`describe`.

Communities that already satisfy the rules are left alone unless ``keep_valid=False`` — they
may receive units, and give some only when nothing else meets the bounds, keeping at least 95 %
of their households. New communities take the next free codes of their street; a retired code is
never reused. Streets without a 9-digit code get provisional codes (``STREET-001``).
Deterministic for a given seed, street by street: each street draws from its own generator,
seeded from ``(seed, street_code)`` (:func:`street_seed`), and starts from labels that depend only
on its own units and the home streets of its communities (:func:`current_labels`), so a street
planned alone, with its district, serially or on any number of workers gets the same plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import count

import numpy as np
import pandas as pd
import pymetis

from geodata.catalog import is_code
from geodata.i18n import _
from layers.plans.partition import UNASSIGNED, Partition, UnitGraph, stays_contiguous

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
            raise ValueError(_("bounds {minimum}–{maximum} are not 0 < minimum ≤ maximum",
                               minimum=self.minimum, maximum=self.maximum))

    @classmethod
    def from_params(cls, params: dict | None, minimum: int, maximum: int) -> Rules:
        """The rules a stored plan's parameters say, the city's bounds where they say nothing
        (``params``: ``minimum maximum target fresh seed``, as the plan API and CLI take them)."""
        params = params or {}
        return cls(int(params.get("minimum") or minimum), int(params.get("maximum") or maximum),
                   params.get("target") or None, not params.get("fresh", False), int(params.get("seed") or 0))

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
    """A rule that cannot be met: what kind, which units and households, which community
    (``unresolved``), and — once the plan's codes are final — the reason in words."""

    street: str
    kind: str  # unit_above_maximum | cut_off | street_too_small | indivisible | unresolved
    units: list[str]
    households: int
    community: str | None = None
    reason: str = ""


def describe(problem: Infeasible, rules: Rules) -> str:
    """The reason of ``problem`` in a planner's words (in the request's language)."""
    kind, h = problem.kind, problem.households
    if kind == "unit_above_maximum":
        return _("unit {unit} alone holds {households} households, above the maximum of {maximum}",
                 unit=problem.units[0], households=h, maximum=rules.maximum)
    if kind == "street_too_small":
        return _("street {street} holds {households} households, below the minimum of {minimum}",
                 street=problem.street, households=h, minimum=rules.minimum)
    if kind == "cut_off":
        return _("{units} units with {households} households are cut off from the rest of street {street} "
                 "(by the river or the street's edge), fewer than the minimum of {minimum}",
                 units=len(problem.units), households=h, street=problem.street, minimum=rules.minimum)
    if kind == "indivisible":
        return _("{households} households cannot be divided into communities of {minimum}–{maximum}",
                 households=h, minimum=rules.minimum, maximum=rules.maximum)
    return _("community {community} keeps {households} households: no move found that meets the bounds "
             "without cutting a community in two", community=problem.community, households=h)


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
        labels = p.communities
        broken = p.broken()

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
        return summary(p, self.rules, p.broken()) | {
            "crossing_street": int((streets > 1).sum()),
            "new_communities": int(sum(c not in current for c in p.communities)),
            "infeasible": [asdict(i) for i in self.infeasible],
        }


def summary(partition: Partition, rules: Rules, broken: set[str]) -> dict:
    """A partition's plan-level scores from its running sums; ``broken`` are the labels known to be
    non-contiguous (a hand edit re-checks only the communities it touched)."""
    p = partition
    labels = p.communities
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


# --- the steps, each a function of a street's partition ------------------------------------------

NewLabel = Callable[[], str]


def make_contiguous(p: Partition) -> None:
    """Every community keeps its heaviest connected piece; the other pieces become unassigned."""
    hh = p.graph.households
    for label in p.communities:
        pieces = p.pieces(label)
        if len(pieces) <= 1:
            continue
        pieces.sort(key=lambda piece: (-int(hh[piece].sum()), -len(piece), int(piece[0])))
        for piece in pieces[1:]:
            p.move(piece, UNASSIGNED)


def valid_communities(p: Partition, rules: Rules) -> dict[str, int]:
    """The communities that already meet every rule (code → households), to be left alone."""
    return {c: p.households[c] for c in p.communities if not rules.violation(p.households[c])
            and not c.startswith(NEW)}


def split_parts(p: Partition, members: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``members`` (connected land units) in ``k`` balanced, compact, contiguous parts (METIS,
    households as weights, shared boundary as edge weights)."""
    if k <= 1 or len(members) <= 1:
        return [members]
    g = p.graph
    k = min(k, len(members))
    inner = g.land_matrix[members][:, members].tocsr()
    inner.sort_indices()
    adjacency = pymetis.CSRAdjacency(inner.indptr.tolist(), inner.indices.tolist())
    eweights = np.maximum(1, np.round(inner.data)).astype(int).tolist()
    weights = (g.households[members] + 1).astype(int).tolist()
    seed = int(rng.integers(1 << 30))
    try:
        _, parts = pymetis.part_graph(k, adjacency, eweights=eweights, vweights=weights,
                                      options=pymetis.Options(seed=seed, contig=1, ufactor=50))
    except Exception:  # METIS refuses contig on a disconnected graph: split without it
        _, parts = pymetis.part_graph(k, adjacency, eweights=eweights, vweights=weights,
                                      options=pymetis.Options(seed=seed, ufactor=50))
    parts = np.asarray(parts)
    # METIS may leave a part in pieces: each part keeps its biggest piece, the other pieces join the
    # neighbouring part they share most boundary with
    owner = np.full(len(g), -1, dtype=np.int64)
    orphans: list[np.ndarray] = []
    for part in range(k):
        pieces = sorted(g.pieces(members[parts == part]),
                        key=lambda c: (-int(g.households[c].sum()), -len(c)))
        if pieces:
            owner[pieces[0]] = part
        orphans.extend(pieces[1:])

    def shared_by_owner(piece: np.ndarray) -> np.ndarray:
        rows = g.matrix[piece]
        near = owner[rows.indices]
        return np.bincount(near[near >= 0], rows.data[near >= 0], minlength=k + 1)

    while orphans:
        piece = orphans.pop(0)
        shared = shared_by_owner(piece)
        if not shared.any() and orphans:
            orphans.append(piece)  # try again once its neighbours are placed
            if not any(shared_by_owner(o).any() for o in orphans):
                break
            continue
        owner[piece] = int(np.argmax(shared)) if shared.any() else k
    return [np.flatnonzero(owner == q) for q in np.unique(owner[owner >= 0])]


def place_unassigned(p: Partition, rules: Rules, new_label: NewLabel, rng: np.random.Generator) -> None:
    """Blind spots and stray pieces: new communities when they hold enough households, else the
    neighbour with room that shares most boundary (or a small community of their own, for the
    boundary moves to grow)."""
    hh = p.graph.households
    for cluster in p.graph.pieces(p.land_members(UNASSIGNED)):
        total = int(hh[cluster].sum())
        if total >= rules.minimum:
            k = rules.parts(total) or max(1, total // rules.aim)
            for part in split_parts(p, cluster, k, rng):
                p.move(part, new_label())
            continue
        options = p.neighbours_of(cluster)
        fits = {c: s for c, s in options.items() if p.households[c] + total <= rules.maximum}
        p.move(cluster, max(sorted(fits), key=fits.__getitem__) if fits else new_label())


def _boundary_moves(p: Partition, label: str, over: bool) -> list[tuple[int, str, str]]:
    """(unit, from, to) moves across ``label``'s land boundary: out of it when it is over the
    maximum, into it when it is under the minimum."""
    g = p.graph
    source, target, _ = g.edges_leaving(p.land_members(label))
    keep = ~g.barrier[target] & (p.labels[target] != UNASSIGNED)
    source, target = source[keep], target[keep]
    others = p.labels[target]
    if over:
        moves = {(int(u), label, o) for u, o in zip(source, others, strict=True)}
    else:
        moves = {(int(v), o, label) for v, o in zip(target, others, strict=True)}
    return sorted(moves)


def move_boundary_units(p: Partition, rules: Rules, protected: dict[str, int], budget: int,
                        relaxed: bool = False) -> None:
    """Move single boundary units toward the bounds, the biggest gain first, never cutting a
    community in two and never pushing one out of the bounds. A protected (valid) community gives
    no unit — or, when ``relaxed``, keeps at least 95 % of its own households."""
    g, hh, v = p.graph, p.graph.households, rules.violation

    def may_give(label: str, unit: int) -> bool:
        if label not in protected:
            return True
        if not relaxed:
            return False
        members = p.members(label)
        own = int(hh[members[g.current[members] == label]].sum())
        return own - hh[unit] >= 0.95 * protected[label]

    for _round in range(budget):
        totals = p.households
        bad = [c for c in p.communities if v(totals[c])]
        best = None
        for label in sorted(bad, key=lambda c: (-v(totals[c]), c)):
            for u, src, dst in _boundary_moves(p, label, totals[label] > rules.maximum):
                h = int(hh[u])
                if v(totals[src] - h) > v(totals[src]) or v(totals[dst] + h) > v(totals[dst]):
                    continue
                gain = v(totals[src]) + v(totals[dst]) - v(totals[src] - h) - v(totals[dst] + h)
                if gain <= 0:
                    continue
                key = (gain, -h, u)
                if (best is None or key > best[0]) and may_give(src, u) and stays_contiguous(p, src, u):
                    best = (key, u, dst)
            if best is not None:
                break
        if best is None:
            return
        _, u, dst = best
        p.move(u, dst)


def split_too_big(p: Partition, rules: Rules, new_label: NewLabel, rng: np.random.Generator) -> None:
    """Communities above the maximum split into as many parts as the bounds ask; the part with
    the most of its households keeps the code."""
    hh = p.graph.households
    for label, total in [(c, p.households[c]) for c in p.communities]:
        if total <= rules.maximum:
            continue
        members = p.land_members(label)
        if len(members) <= 1:
            continue
        k = rules.parts(total) or -(-total // rules.maximum)
        parts = sorted(split_parts(p, members, k, rng), key=lambda part: -int(hh[part].sum()))
        for part in parts[1:]:
            p.move(part, new_label())


def merge_too_small(p: Partition, rules: Rules) -> None:
    """A community below the minimum merges with the neighbour that makes the smallest sum within
    the maximum (the bigger of the two keeps its code), the smallest community first."""
    while True:
        totals = p.households
        for label in sorted(p.communities, key=lambda c: (totals[c], c)):
            if totals[label] >= rules.minimum:
                continue
            fits = [c for c in p.neighbours_of(p.land_members(label))
                    if totals[c] + totals[label] <= rules.maximum]
            if not fits:
                continue
            other = min(fits, key=lambda c: (totals[c] + totals[label], c))
            keep, drop = (other, label) if totals[other] >= totals[label] else (label, other)
            p.move(p.members(drop), keep)
            break
        else:
            return


def attach_rest(p: Partition, new_label: NewLabel) -> None:
    """Water and other units still unassigned join the neighbour they share most boundary with;
    those with no neighbour in the street join the nearest community."""
    g = p.graph
    pending = list(p.members(UNASSIGNED))
    while pending:
        progress = False
        for u in list(pending):
            near = p.neighbours_of(np.array([u]), land=False)
            if near:
                p.move(u, max(sorted(near), key=near.__getitem__))
                pending.remove(u)
                progress = True
        if not progress:
            labelled = np.flatnonzero(p.labels != UNASSIGNED)
            for u in pending:
                if len(labelled):
                    nearest = labelled[np.argmin(((g.xy[labelled] - g.xy[u]) ** 2).sum(axis=1))]
                    p.move(u, p.labels[nearest])
                else:
                    p.move(u, new_label())
            return


def explain(p: Partition, rules: Rules, street: str) -> list[Infeasible]:
    """What the street's plan cannot meet, and why, as data."""
    g, hh = p.graph, p.graph.households
    codes = g.codes

    def problem(kind: str, units: np.ndarray, community: str | None = None) -> Infeasible:
        units = np.atleast_1d(units)
        return Infeasible(street, kind, codes[units].tolist(), int(hh[units].sum()), community)

    problems = [problem("unit_above_maximum", u) for u in np.flatnonzero(hh > rules.maximum)]
    total = int(hh.sum())
    if total < rules.minimum:  # an empty street too: nothing can make a community of the minimum
        return problems + [problem("street_too_small", np.arange(len(g)))]
    land = np.flatnonzero(~g.barrier)
    for piece in g.pieces(land):
        h = int(hh[piece].sum())
        if h < rules.minimum and len(piece) < len(land):
            problems.append(problem("cut_off", piece))
        elif h >= rules.minimum and rules.parts(h) is None:
            problems.append(problem("indivisible", piece))
    explained = {u for found in problems for u in found.units}
    for label in p.communities:
        members = p.members(label)
        if rules.violation(p.households[label]) and not explained.intersection(codes[members].tolist()):
            problems.append(problem("unresolved", members, label))
    return problems


def plan_street(graph: UnitGraph, labels: np.ndarray, rules: Rules,
                rng: np.random.Generator) -> tuple[np.ndarray, list[Infeasible]]:
    """Plan one street: ``graph`` is the street's own graph, ``labels`` where its units start
    (None or empty: unassigned). Returns the new labels (new communities as ``new:…``) and what
    cannot be met."""
    street = str(graph.street[0])
    numbers = count(1)

    def new_label() -> str:
        return f"{NEW}{street}:{next(numbers)}"

    p = Partition(graph, labels if rules.keep_valid else np.full(len(graph), UNASSIGNED, dtype=object))
    budget = 4 * len(graph) + 50
    make_contiguous(p)
    protected = valid_communities(p, rules) if rules.keep_valid else {}
    place_unassigned(p, rules, new_label, rng)
    # fewest households moved first: single boundary units across to neighbours with room; only what
    # that cannot fix is split (too big) or merged (too small)
    move_boundary_units(p, rules, protected, budget)
    split_too_big(p, rules, new_label, rng)
    merge_too_small(p, rules)
    move_boundary_units(p, rules, protected, budget)
    move_boundary_units(p, rules, protected, budget, relaxed=True)
    attach_rest(p, new_label)
    return p.labels, explain(p, rules, street)


# --- the plan --------------------------------------------------------------------------------


def street_seed(seed: int, street: str) -> int:
    """The seed of ``street``'s own random generator under the plan's ``seed``: a hash of both
    (SHA-256, the same in every process and on every machine — Python's ``hash`` of a string is
    not), so a street's plan never depends on which streets were planned before it."""
    digest = hashlib.sha256(f"{int(seed)}:{street}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def home_streets(codes, streets, households) -> pd.Series:
    """Community code → its home street: the street holding most of its households (the lower
    street code on a tie). Units without a community are ignored."""
    frame = pd.DataFrame({"code": np.asarray(codes, dtype=object),
                          "street": np.asarray(streets, dtype=object), "hh": np.asarray(households)})
    known = frame[frame["code"].notna()]
    home = known.groupby(["code", "street"])["hh"].sum().reset_index().sort_values(
        ["code", "hh", "street"], ascending=[True, False, True]).drop_duplicates("code")
    return pd.Series(home["street"].to_numpy(), index=home["code"].to_numpy(), dtype=object)


def current_labels(graph: UnitGraph, home: Mapping[str, str] | pd.Series | None = None) -> np.ndarray:
    """Current codes as labels, but a code spread over several streets keeps only its home street
    (the one holding most of its households); elsewhere its units start unassigned.

    ``home`` (community code → street) comes from the whole district
    (:func:`layers.plans.files.home_streets_of_district`, one aggregate query) when ``graph`` holds
    only some of its streets: a street planned alone then starts exactly as it does with its
    district. Without it, the home streets are worked out from ``graph`` itself."""
    if home is None:
        home = home_streets(graph.current, graph.street, graph.households)
    elif not isinstance(home, pd.Series):
        home = pd.Series(dict(home), dtype=object)
    mapped = pd.Series(graph.current, dtype=object).map(home).to_numpy(dtype=object)
    at_home = mapped == graph.street
    return np.where(at_home, graph.current, None).astype(object)


def assign_codes(labels: np.ndarray, streets: np.ndarray, taken: set[str]) -> tuple[np.ndarray, set[str]]:
    """Real codes for the new labels: the next free numbers of each street (never a code that was
    ever used), provisional ``STREET-NNN`` codes where the street has no 9-digit code."""
    provisional: set[str] = set()
    frame = pd.DataFrame({"label": labels, "street": streets})
    new = frame[frame["label"].astype(str).str.startswith(NEW)].drop_duplicates("label")
    mapping = {}
    for street, group in new.groupby("street", sort=False):
        official = is_code(street, 9)
        used = [int(c[-3:]) for c in taken if c.startswith(street) and c[-3:].isdigit()]
        number = max(used, default=0)
        for label in group["label"]:
            number += 1
            code = f"{street}{number:03d}" if official else f"{street}-{number:03d}"
            mapping[label] = code
            if not official:
                provisional.add(code)
    out = frame["label"].map(mapping).fillna(frame["label"]).to_numpy(dtype=object) if mapping \
        else np.asarray(labels, dtype=object).copy()
    return out, provisional


def make_plan(graph: UnitGraph, rules: Rules = Rules(), *, retired: set[str] | frozenset = frozenset(),
              streets: list[str] | None = None, start: np.ndarray | None = None,
              progress: Callable[[int, int], None] | None = None,
              home: Mapping[str, str] | pd.Series | None = None) -> PlanResult:
    """Plan every street of ``graph`` (or only ``streets``); ``retired`` are codes used before.
    ``start`` gives the labels units start from (default: their current communities, with
    ``home`` the home streets of :func:`current_labels`). Each street is planned with its own
    generator (:func:`street_seed`), whatever else is planned with it."""
    labels = current_labels(graph, home) if start is None else np.asarray(start, dtype=object).copy()
    problems: list[Infeasible] = []
    by_street = pd.Series(np.arange(len(graph))).groupby(graph.street).indices
    todo = sorted(by_street) if streets is None else list(streets)
    for done, street in enumerate(todo):
        units = by_street.get(street, np.zeros(0, dtype=np.int64))
        if not len(units):
            continue
        street_labels, found = plan_street(graph.subgraph(units), labels[units], rules,
                                           np.random.default_rng(street_seed(rules.seed, street)))
        labels[units] = street_labels
        problems.extend(found)
        if progress:
            progress(done + 1, len(todo))
    taken = {c for c in graph.current if c is not None} | set(retired)
    codes, provisional = assign_codes(labels, graph.street, taken)
    final = dict(zip(labels.tolist(), codes.tolist(), strict=True))
    problems = [replace(p, community=final.get(p.community, p.community)) for p in problems]
    problems = [replace(p, reason=describe(p, rules)) for p in problems]
    return PlanResult(graph, Partition(graph, codes), rules, problems, provisional)


def split_in_two(partition: Partition, code: str, seed: int = 0) -> list[str]:
    """The unit codes of the smaller of two balanced, compact, contiguous parts of ``code``."""
    members = partition.land_members(code)
    if len(members) < 2:
        raise ValueError(_("community {code} has fewer than two land units", code=code))
    hh = partition.graph.households
    parts = sorted(split_parts(partition, members, 2, np.random.default_rng(seed)),
                   key=lambda part: -int(hh[part].sum()))
    return partition.graph.codes[parts[-1]].tolist()
