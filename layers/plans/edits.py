"""Hand edits of a plan, and what the plan page and the API show of it.

An edit moves units to another community (or a new one), splits a community in two (balanced,
or along a drawn line) or merges two; it is allowed even when it breaks a rule, and its answer
gives the rules each touched community breaks, as data (:func:`broken_by`: ``rule``, the
community, ``limit``, ``value``), worded only where a reader sees them. Edits run on the plan's
:class:`~layers.plans.partition.Partition` in the process's :class:`~layers.plans.memory.PlanMemory`,
so an edit costs only the units it moves; the stored plan is the truth: an edit is tried on the
partition (:meth:`~layers.plans.partition.Partition.trial`), scored, saved with the version it
started from, and kept in memory only once the save has committed.

Every edit is a step of the plan's history, stored with the plan (:mod:`geodata.plan_rows`):
:func:`replay` undoes the newest step or redoes the one undone last, giving back exactly what the
step changed (units, names, codes), whichever process and tab made it. A merge keeps the
community merged into, unless only the other one has a code of the current boundaries
(:func:`merge_survivor`).

Everything the web layer shows of a plan comes from here in domain terms (its description with
the figures of every community, its units as GeoJSON, its export, a comparison), so ``webmap``
never reaches into graphs and partitions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import shapely.ops

from geodata import plan_rows
from geodata.errors import Conflict, Refused
from geodata.i18n import _
from geodata.store import community_codes_ever
from layers.plans.engine import PlanResult, assign_codes, split_in_two, summary
from layers.plans.figures import combine, figures_by_district, part_figures
from layers.plans.files import export_plan
from layers.plans.memory import LoadedPlan, PlanMemory
from layers.plans.partition import Partition
from layers.plans.workflow import editable_plan


def community_adjacency(loaded: LoadedPlan) -> dict[str, list[str]]:
    """Every community's neighbours (communities sharing an edge with it), longest shared
    boundary first — one pass over the adjacency, the same cost in a street and in a city; kept
    with the loaded plan for its version (an edit saved makes a new version)."""
    cached = loaded.caches.adjacency
    if cached is not None and cached[0] == loaded.version:
        return cached[1]
    p, g = loaded.partition, loaded.graph
    inverse, names = pd.factorize(p.labels)
    names = np.asarray(names, dtype=object)
    rows = np.repeat(np.arange(len(g)), np.diff(g.indptr))
    a, b = inverse[rows], inverse[g.indices]
    keep = (a != b) & (names[a] != "") & (names[b] != "")
    k = len(names)
    pair = a[keep].astype(np.int64) * k + b[keep]
    totals = pd.Series(g.shared[keep]).groupby(pair).sum()
    frame = pd.DataFrame({"a": totals.index // k, "b": totals.index % k, "shared": totals.to_numpy()})
    frame = frame.sort_values(["a", "shared", "b"], ascending=[True, False, True])
    out: dict[str, list[str]] = {label: [] for label in p.communities}
    for a_, group in frame.groupby("a", sort=False)["b"]:
        out[str(names[a_])] = names[group.to_numpy()].tolist()
    loaded.caches.adjacency = (loaded.version, out)
    return out


def neighbours_of(loaded: LoadedPlan, label: str) -> list[str]:
    """The communities next to ``label``, longest shared boundary first."""
    p = loaded.partition
    shared = p.neighbours_of(p.members(label), land=False)
    return [c for c, _ in sorted(shared.items(), key=lambda kv: (-kv[1], kv[0])) if c != label]


def community_figures(loaded: LoadedPlan, labels: list[str],
                      neighbours: dict[str, list[str]] | None = None,
                      codes: dict[str, bool] | None = None) -> list[dict]:
    """The live figures of these communities, with the rules each one breaks and their
    neighbours (computed for each here unless ``neighbours`` gives them all), and with ``codes``
    (the current communities' codes: :func:`current_codes`) how firmly each code stands
    (:func:`standing`: what a merge keeps)."""
    p, r = loaded.partition, loaded.rules
    out = []
    for label in labels:
        if label not in p:
            out.append({"community_code": label, "households": 0, "removed": True, "violations": [],
                        "neighbours": []})
            continue
        households = int(p.households[label])
        violations = broken_by(loaded, label)
        out.append({"community_code": label, "households": households,
                    "standing": _standing(codes, label) if codes is not None else None,
                    "population": int(p.population[label]), "area_m2": round(float(p.area[label]), 1),
                    "polsby_popper": round(p.polsby_popper(label), 4), "violations": violations,
                    "bounds": "below" if households < r.minimum else "above" if households > r.maximum
                    else "within",
                    "neighbours": neighbours.get(label, []) if neighbours is not None
                    else neighbours_of(loaded, label)})
    return out


#: the rules a community of a plan may break (what :func:`broken_by` names)
RULES = ("below_minimum", "above_maximum", "not_contiguous", "crosses_street")


def broken_by(loaded: LoadedPlan, label: str, name: str | None = None) -> list[dict]:
    """The rules community ``label`` breaks, as data, in the order a planner reads them:
    ``rule`` (one of :data:`RULES`), ``community_code``, ``community_name`` (``name``; filled in
    where the name is known), ``limit`` (the plan's household bound it misses; None for the others)
    and ``value`` (its households; its separate pieces; the streets it lies in). The same shape as
    :func:`layers.plans.adoption.broken_rules`; words are the reader's (the page, the view)."""
    p, r = loaded.partition, loaded.rules
    households = int(p.households[label])
    out = []

    def rule(kind: str, limit: int | None, value: int) -> None:
        out.append({"rule": kind, "community_code": label, "community_name": name, "limit": limit,
                    "value": value})

    if households < r.minimum:
        rule("below_minimum", r.minimum, households)
    elif households > r.maximum:
        rule("above_maximum", r.maximum, households)
    if not p.contiguous(label):
        rule("not_contiguous", None, len(p.pieces(label)))
    streets = len(set(p.graph.street[p.members(label)]))
    if streets > 1:
        rule("crosses_street", None, streets)
    return out


def name_figure(figure: dict, name: str | None) -> None:
    """Give a community's figures (and the rules it breaks) its name."""
    figure["name"] = name
    for rule in figure.get("violations", ()):
        rule["community_name"] = name


def plan_scores(loaded: LoadedPlan) -> dict:
    """The plan's scores from the partition's running sums and its contiguity, re-checked only
    for the communities edits touched — the same cost in a street and in a city."""
    return summary(loaded.partition, loaded.rules, loaded.partition.broken())


def describe(memory: PlanMemory, plan_id: int, district: str | None = None) -> dict:
    """The plan's row, the figures of every community and the plan's scores (``district``: of
    that district's part, with the whole plan's scores beside them as ``plan_scores``)."""
    loaded = memory.plan(plan_id, district=district)
    with loaded.lock:
        plan = loaded.plan
        return {**{k: v for k, v in plan.items() if k not in ("created_at", "updated_at")},
                "updated_at": plan["updated_at"].isoformat(timespec="seconds"),
                "communities": community_figures(loaded, loaded.partition.communities,
                                                 community_adjacency(loaded), current_codes(memory, loaded)),
                "history": plan_rows.step_counts(memory.engine, plan_id),
                "scores": plan_scores(loaded), "units": len(loaded.graph), "district": loaded.part,
                "plan_scores": whole_scores(memory, loaded),
                "rules": {"minimum": loaded.rules.minimum, "maximum": loaded.rules.maximum,
                          "target": loaded.rules.aim}}


def whole_scores(memory: PlanMemory, loaded: LoadedPlan) -> dict:
    """The whole plan's scores: a district's part's plan's as stored (combined from every
    district's figures at its last edit); a whole plan's, its own."""
    if loaded.part is None:
        return plan_scores(loaded)
    fill_figures(memory, loaded.plan)
    return {k: v for k, v in (plan_rows.get_plan(memory.engine, loaded.plan_id)["scores"] or {}).items()
            if k != "infeasible"}


def fill_figures(memory: PlanMemory, plan: dict) -> None:
    """Keep the figures of every district of a plan of every district made before they were
    kept (:mod:`layers.plans.figures`), reading its districts one at a time — once per plan."""
    engine = memory.engine
    if (plan["params"] or {}).get("street") or plan_rows.figure_districts(engine, plan["id"]):
        return
    figures = {}
    for district in plan_rows.plan_districts(engine, plan["id"]):
        part = memory.plan(plan["id"], plan, district)
        with part.lock:
            figures[district] = part_figures(PlanResult(part.graph, part.partition, part.rules))
    with engine.begin() as conn:
        plan_rows.write_figures(conn, plan["id"], figures)


def _scored(memory: PlanMemory, loaded: LoadedPlan, touched: np.ndarray
            ) -> tuple[dict, dict, dict[str, dict]]:
    """The scores of an edit tried on ``loaded`` (units at ``touched`` moved): those of the loaded
    plan or part, the whole plan's, and the figures to keep of the districts it changed (a plan
    of every district keeps them: :mod:`layers.plans.figures`; a street's plan none)."""
    own = plan_scores(loaded)
    if loaded.part is not None:
        mine = part_figures(PlanResult(loaded.graph, loaded.partition, loaded.rules))
        others = plan_rows.district_figures(memory.engine, loaded.plan_id, besides=loaded.part)
        figures = [others[d] for d in sorted(others)] + [mine]
        return own, combine(figures, loaded.rules), {loaded.part: mine}
    if (loaded.plan["params"] or {}).get("street"):
        return own, own, {}
    districts = loaded.units["district_code"].to_numpy(dtype=object)
    inside = np.isin(districts, list(set(districts[touched].tolist())))
    if not plan_rows.figure_districts(memory.engine, loaded.plan_id):  # none kept yet: every district's
        inside[:] = True
    return own, own, figures_by_district(loaded.graph, loaded.partition, loaded.rules,
                                         np.where(inside, districts, None))


def export(memory: PlanMemory, plan_id: int, fmt: str, folder: Path, district: str | None = None) -> Path:
    """Write the plan (``district``: that district's part) into ``folder`` as a GeoPackage
    (``gpkg``) or a shapefile zip (``shp``)."""
    if fmt not in ("gpkg", "shp"):
        raise Refused(_("format is gpkg or shp"))
    loaded = memory.plan(plan_id, district=district)
    with loaded.lock:
        result = PlanResult(loaded.graph, loaded.partition, loaded.rules)
        suffix = "zip" if fmt == "shp" else "gpkg"
        engine = memory.engine
        names = plan_rows.current_community_names(engine, loaded.districts) | \
            plan_rows.community_names(engine, plan_id)
        stem = f"plan-{plan_id}" if loaded.part is None else f"plan-{plan_id}-{loaded.part}"
        return export_plan(result, loaded.units, folder / f"{stem}.{suffix}", names=names,
                           street_names=plan_rows.street_names(memory.engine))


def _target(loaded: LoadedPlan, memory: PlanMemory, positions: list[int], to: str) -> str:
    """The community the units go to: an existing one, ``new`` (the street's next free code), or
    a code of their street never used before (what redo after an undone split asks for)."""
    p, g = loaded.partition, loaded.graph
    if to in p:
        return to
    streets = set(g.street[positions])
    if to != "new" and not re.fullmatch(r"[0-9A-Za-z]+-?\d{3}", to):
        raise Refused(_("no community {to} in this plan", to=repr(to)))
    if len(streets) != 1:
        raise Refused(_("a new community lies in one street: choose units of one street"))
    street = streets.pop()
    taken = set(p.communities) | community_codes_ever(memory.engine)
    if to == "new":
        return str(assign_codes(np.array(["new:x"], dtype=object), np.array([street]), taken)[0][0])
    if to in taken:
        raise Refused(_("no community {to} in this plan, and it cannot be a new one in street {street}: that "
                        "code was used before (retired codes are never given again)",
                        to=repr(to), street=street))
    if not to.startswith(street):
        raise Refused(_("no community {to} in this plan, and it cannot be a new one in street {street}",
                        to=repr(to), street=street))
    return to



def _save(memory: PlanMemory, loaded: LoadedPlan, positions: np.ndarray, labels: np.ndarray,
          save: Callable[[dict, dict[str, dict]], int]) -> tuple[int, dict, list[dict], list[str]]:
    """An edit as a trial on the partition: give the units at ``positions`` the communities
    ``labels``, read the plan's scores and the touched communities' figures, ``save`` (given the
    whole plan's scores and the figures of the districts changed, :func:`_scored`; it returns
    the new version), and keep the edit only once that has committed — a save
    that fails rolls the partition back exactly: memory never runs ahead of the database. Returns
    the new version, the plan's scores, the figures of the communities touched and their codes."""
    p = loaded.partition
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=object)
    touched = sorted(set(p.labels[positions].tolist()) | set(labels.tolist()))
    if loaded.part is not None:  # a plan stored before figures were kept: worked out first, not mid-trial
        fill_figures(memory, loaded.plan)
    with p.trial() as trial:
        for label in dict.fromkeys(labels.tolist()):
            p.move(positions[labels == label], label)
        scores, whole, kept = _scored(memory, loaded, positions)
        figures = community_figures(loaded, touched, codes=current_codes(memory, loaded))
        new_version = save(whole, kept)
        trial.keep()
    memory.saved(loaded, new_version)
    names = plan_rows.names_for(memory.engine, loaded.plan_id, touched)
    for figure in figures:  # a community an undo brings back comes back with its name
        name_figure(figure, names.get(figure["community_code"]))
    return new_version, scores, figures, touched


def move_units(memory: PlanMemory, plan_id: int, unit_codes: list[str], to: str, version: int,
               actor: str, *, kind: str = "move", district: str | None = None) -> dict:
    """Move units to a community (an existing code, ``"new"`` for a new one in their street, or an
    unused code of their street). Allowed even when it breaks a rule: the answer names the
    violations. Memory changes only once the save has committed. The edit is one step of the
    plan's history (``kind``: move, split, merge; a move to a new community is ``new``)."""
    plan = editable_plan(memory.engine, plan_id, version)
    loaded = memory.plan(plan_id, plan, district)
    with loaded.lock:
        g, p = loaded.graph, loaded.partition
        unknown = [u for u in unit_codes if u not in g.position]
        if unknown:
            raise Refused(_("unit {p1} is not in this plan", p1=unknown[0]))
        if not unit_codes:
            raise Refused(_("no units to move"))
        positions = np.array([g.position[u] for u in unit_codes], dtype=np.int64)
        kind = "new" if kind == "move" and to not in p else kind
        to = _target(loaded, memory, positions.tolist(), to)
        labels = np.array([to] * len(positions), dtype=object)
        new_version, scores, figures, _touched = _save(
            memory, loaded, positions, labels,
            lambda scores, kept: plan_rows.save_moves(
                memory.engine, plan_id, dict.fromkeys(unit_codes, to), version, actor, scores=scores,
                kind=kind, status="draft" if plan["status"] == "rejected" else None, district=loaded.part,
                figures=kept))
        return {"version": new_version, "to": to, "units": list(unit_codes), "communities": figures,
                "plan": scores, "history": plan_rows.step_counts(memory.engine, plan_id),
                **_whole(memory, loaded)}


def _whole(memory: PlanMemory, loaded: LoadedPlan) -> dict:
    """What an edit of a district's part answers beside its own scores: its district and the
    whole plan's scores (as just saved)."""
    if loaded.part is None:
        return {}
    return {"district": loaded.part, "plan_scores": whole_scores(memory, loaded)}


def replay(memory: PlanMemory, plan_id: int, version: int, actor: str, *, backwards: bool,
           district: str | None = None) -> dict:
    """Undo (``backwards``) the plan's newest step, or redo the step undone last: its units get
    back exactly the communities they had before it (or after it), its names likewise — whatever
    the step was (a move, a paint stroke, a split, a merge, a new community, a name). A code the
    plan itself gave up comes back with its units. Answers the new version, every unit that
    changed with its community, the names that changed, the figures of the communities touched,
    the plan's scores and what can be undone and redone now."""
    plan = editable_plan(memory.engine, plan_id, version)
    step = plan_rows.next_step(memory.engine, plan_id, backwards=backwards)
    if step is None:
        raise plan_rows.nothing_to_replay(plan_id, backwards)
    at = 0 if backwards else 1
    moves = {u: v[at] for u, v in (step["units"] or {}).items()}
    names = {c: v[at] for c, v in (step["names"] or {}).items()}
    if district is not None and moves:  # a plan's steps are one history: the step's own district's part
        district = plan_rows.district_of_units(memory.engine, plan_id, list(moves)) or district
    loaded = memory.plan(plan_id, plan, district)
    with loaded.lock:
        g = loaded.graph
        gone = [u for u in moves if u not in g.position]
        if gone:  # the boundaries changed under the plan: it must be rebased, which clears its steps
            raise Conflict(_("the units {units} of this step are no longer stored: rebase the plan",
                             units=", ".join(sorted(gone)[:10])))
        positions = np.array([g.position[u] for u in moves], dtype=np.int64)
        labels = np.array(list(moves.values()), dtype=object)
        new_version, scores, figures, touched = _save(
            memory, loaded, positions, labels,
            lambda scores, kept: plan_rows.replay_step(
                memory.engine, plan_id, step["seq"], version, actor, backwards=backwards, scores=scores,
                status="draft" if plan["status"] == "rejected" else None, district=loaded.part, figures=kept))
        shown = plan_rows.names_for(memory.engine, plan_id, names)  # no name of the plan's: the current one
        names = {code: shown.get(code) for code in names}
        return {"version": new_version, "assignment": moves, "units": list(moves), "names": names,
                "communities": figures, "plan": scores, "kind": step["kind"],
                "history": plan_rows.step_counts(memory.engine, plan_id), **_whole(memory, loaded)}


def split_community(memory: PlanMemory, plan_id: int, code: str, version: int, actor: str,
                    line: shapely.LineString | None = None, district: str | None = None) -> dict:
    """Split a community of the plan in two: balanced, compact and contiguous parts, or along
    a line drawn across it (EPSG:4326); the part with fewer households becomes a new community."""
    loaded = memory.plan(plan_id, district=district)
    p = loaded.partition
    if code not in p:
        raise Refused(_("no community {code} in this plan", code=repr(code)))
    if line is None:
        if len(p.land_members(code)) < 2:
            raise Refused(_("community {code} has fewer than two land units: there is nothing to split",
                            code=code))
        return move_units(memory, plan_id, split_in_two(p, code, seed=version), "new", version, actor,
                          kind="split", district=district)
    members = loaded.units.iloc[p.members(code)]
    outline = shapely.union_all(members.geometry.values)
    pieces = shapely.get_parts(shapely.ops.split(outline, line)) if outline.intersects(line) else []
    if len(pieces) < 2:
        raise Refused(_("the line does not cut community {code} in two", code=code))
    points = shapely.point_on_surface(members.geometry.values)
    side = np.array([int(np.argmax([piece.contains(pt) for piece in pieces])) for pt in points])
    households = np.bincount(side, weights=members["households"].to_numpy(), minlength=len(pieces))
    moving = members["code"].astype(str).to_numpy()[side != int(np.argmax(households))].tolist()
    if not moving:
        raise Refused(_("the line leaves every unit of {code} on one side", code=code))
    return move_units(memory, plan_id, moving, "new", version, actor, kind="split", district=district)


def standing(memory: PlanMemory, loaded: LoadedPlan, code: str) -> int:
    """How firmly a community's code stands: 2 a current community with an official code, 1 a
    current one with a provisional code (临时代码), 0 one this plan made. In a merge the code
    that stands more firmly survives."""
    return _standing(current_codes(memory, loaded), code)


def current_codes(memory: PlanMemory, loaded: LoadedPlan) -> dict[str, bool]:
    """The current communities' codes, each with whether it is provisional; kept with the loaded
    plan (which is rebuilt when the communities change: the boundary revision)."""
    if loaded.caches.standing is None:
        loaded.caches.standing = plan_rows.current_codes(memory.engine)
    return loaded.caches.standing


def _standing(codes: dict[str, bool], code: str) -> int:
    if code not in codes:
        return 0
    return 1 if codes[code] else 2


def merge_survivor(memory: PlanMemory, loaded: LoadedPlan, into: str, other: str) -> tuple[str, str]:
    """Which community survives merging ``other`` into ``into``: ``into`` keeps its code and name,
    unless ``other`` has an official code and ``into`` not (a current community's code outlives
    one the plan made, whichever way round the planner merges). Returns (survivor, retired)."""
    if standing(memory, loaded, other) > standing(memory, loaded, into):
        return other, into
    return into, other


def merge_communities(memory: PlanMemory, plan_id: int, keep: str, merge: str, version: int,
                      actor: str, district: str | None = None) -> dict:
    """Merge community ``merge`` into ``keep``: ``keep`` survives with its code and name (the
    rule of :func:`merge_survivor` decides when only ``merge`` has an official code). The answer
    says which survived (``to``) and which was retired."""
    loaded = memory.plan(plan_id, district=district)
    p = loaded.partition
    if keep not in p or merge not in p:
        raise Refused(_("both communities must be in the plan"))
    if keep == merge:
        raise Refused(_("a community cannot be merged with itself"))
    survivor, retired = merge_survivor(memory, loaded, keep, merge)
    answer = move_units(memory, plan_id, loaded.graph.codes[p.members(retired)].tolist(), survivor, version,
                        actor, kind="merge", district=district)
    return {**answer, "retired": retired}


def _same_streets(memory: PlanMemory, plan_id: int, mine: LoadedPlan, other: int, them: LoadedPlan) -> None:
    """Refuse to compare plans of different streets: every unit of one would "change community"
    against the other, a count with no meaning (e.g. 192 units, 9,558 households)."""
    ours, theirs = sorted(set(mine.graph.street)), sorted(set(them.graph.street))
    if ours == theirs:
        return
    names = plan_rows.street_names(memory.engine)

    def named(streets: list[str]) -> str:
        return "、".join(f"{names.get(s) or s} ({s})" for s in streets) or "—"

    raise Refused(_("plan {plan} covers {streets} and plan {other} covers {other_streets}: only plans of the "
                    "same streets can be compared", plan=f"#{plan_id}", streets=named(ours),
                    other=f"#{other}", other_streets=named(theirs)))


def compare(memory: PlanMemory, plan_id: int, other: int | None = None, district: str | None = None) -> dict:
    """The units whose community differs between a plan and the current boundaries (or another
    plan), and the difference of their scores. A blind spot's community is ``None``."""
    mine_plan = memory.plan(plan_id, district=district)
    g = mine_plan.graph
    mine = pd.Series(mine_plan.partition.labels, index=g.codes)
    if other is None:
        theirs = pd.Series(g.current, index=g.codes, dtype=object)
        blind = np.array([c or "(blind spot)" for c in g.current], dtype=object)
        other_scores = PlanResult(g, Partition(g, blind), mine_plan.rules).scores()
    else:
        them = memory.plan(other, district=district)
        _same_streets(memory, plan_id, mine_plan, other, them)
        theirs = pd.Series(them.partition.labels, index=them.graph.codes, dtype=object).reindex(mine.index)
        other_scores = plan_scores(them)
    theirs = theirs.astype(object).where(theirs.notna(), None)
    changed = mine[mine.to_numpy() != theirs.to_numpy()]
    my_scores = plan_scores(mine_plan)
    keys = [k for k, v in my_scores.items() if isinstance(v, (int, float)) and k in other_scores]
    return {"plan": plan_id, "other": other or "current", "changed_units": [
        {"unit": u, "from": theirs[u], "to": c} for u, c in changed.items()],
        "scores": {k: {"plan": my_scores[k], "other": other_scores[k],
                       "difference": round(my_scores[k] - other_scores[k], 4)} for k in keys}}
