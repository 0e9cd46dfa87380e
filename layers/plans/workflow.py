"""A plan's life (审批): made automatically as a draft, submitted, approved or rejected, adopted —
and refused when the boundaries it was made from have changed since.

``draft → submitted → approved | rejected → adopted``. Planners edit drafts (a rejected plan is
edited back into a draft) and submit them; an admin approves or rejects (with a comment) and
adopts. A plan records the boundary revision it was made from and the streets it covers; when a
later change (another plan's adoption, an import) touched one of those streets, submitting,
approving or adopting it is refused with what changed (:class:`StalePlan`), and the planner
rebases it: the changed streets are planned again on the current boundaries, keeping the hand
edits whose units and communities still exist. Retired community codes are never given again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from geodata import plan_rows
from geodata.accounts import role_word
from geodata.errors import Conflict, Forbidden, Refused
from geodata.i18n import N_, _
from geodata.revisions import changes_since
from geodata.store import community_codes_ever, unit_district_codes
from layers.plans import adoption
from layers.plans.communities import Bounds, bounds
from layers.plans.engine import PlanResult, Rules, current_labels, make_plan
from layers.plans.figures import combine, figures_by_district, part_figures
from layers.plans.memory import PlanMemory, UnitSet, plan_rules

#: action → (statuses it starts from, status it leads to, roles allowed)
TRANSITIONS = {
    "submit": ({"draft", "rejected"}, "submitted", {"planner", "admin"}),
    "approve": ({"submitted"}, "approved", {"admin"}),
    "reject": ({"submitted"}, "rejected", {"admin"}),
    "adopt": ({"approved"}, "adopted", {"admin"}),
}
#: the steps in words, for a refusal that names one
STEP_WORDS = {"submit": N_("submit for approval"), "approve": N_("approve"), "reject": N_("reject"),
              "adopt": N_("adopt")}
EDITABLE = {"draft", "rejected"}
EDITORS = {"planner", "admin"}
#: the actions refused on a plan whose boundaries changed since it was made
CHECKED = {"submit", "approve", "adopt"}


class WorkflowError(Forbidden):
    """An action the plan's status or the user's role does not allow."""


def editable_plan(engine, plan_id: int, version: int) -> dict:
    """Plan ``plan_id`` as stored, when a hand edit at ``version`` may change it: the version
    first (a stale edit is a conflict), then its status (only drafts and rejected plans)."""
    plan = plan_rows.get_plan(engine, plan_id)
    plan_rows.require_version(plan, version, engine)
    if plan["status"] not in EDITABLE:
        raise WorkflowError(_("plan {plan_id} is {status}: only drafts can be edited",
                              plan_id=plan_id, status=plan["status"]))
    return plan


class StalePlan(Conflict):
    """The boundaries of the plan's streets changed since it was made."""


class RulesBroken(Refused):
    """A plan that breaks a rule, submitted, approved or adopted without a written reason (422,
    with the rules as data in ``rules``)."""

    status = 422
    title = N_("Unprocessable Content")


def allowed_actions(plan: dict, role: str, stale: bool = False) -> list[str]:
    """What ``role`` may do with ``plan`` now: workflow actions, ``edit``, and ``rebase`` when its
    boundaries changed since it was made — what the page offers as buttons."""
    actions = [a for a, (sources, _, roles) in TRANSITIONS.items()
               if plan["status"] in sources and role in roles]
    if role in EDITORS and plan["status"] in EDITABLE:
        actions.append("edit")
    if stale:  # refused until rebased
        actions = [a for a in actions if a not in CHECKED]
        if role in EDITORS and plan["status"] != "adopted":
            actions.append("rebase")
    return actions


def draw_plan(unit_set: UnitSet, params: dict, limits: Bounds, *, retired: set[str] | frozenset = frozenset(),
              progress=None) -> tuple[Rules, PlanResult]:
    """The automatic plan of ``unit_set`` under the rules ``params`` say (``minimum maximum target
    fresh seed``; ``limits`` where they say nothing), never giving a ``retired`` code: the one
    way a plan is made, whether stored as a draft (:func:`auto_plan`) or written to a file
    (``flask plan``)."""
    rules = Rules.from_params(params, limits.minimum, limits.maximum)
    return rules, make_plan(unit_set.graph, rules, retired=retired, progress=progress, home=unit_set.home)


def draw_stored_plan(memory: PlanMemory, *, street: str | None = None, minimum: int | None = None,
                     maximum: int | None = None, target: int | None = None, fresh: bool = False,
                     seed: int = 0, progress=None) -> tuple[UnitSet, Rules, PlanResult]:
    """The automatic plan of the stored units of one street (or every street) under the city's
    household bounds where the rules say nothing, never reusing a code used before; not stored.
    Refused when there are no such units."""
    params = {"minimum": minimum, "maximum": maximum, "target": target, "fresh": fresh, "seed": seed}
    unit_set = memory.units(street)
    rules, result = draw_plan(unit_set, params, bounds(memory.engine),
                              retired=community_codes_ever(memory.engine), progress=progress)
    return unit_set, rules, result


def auto_plan(memory: PlanMemory, name: str, author: str, *, street: str | None = None,
              minimum: int | None = None, maximum: int | None = None, target: int | None = None,
              fresh: bool = False, seed: int = 0, progress=None) -> tuple[int, PlanResult]:
    """Make an automatic plan of one street (or every street) and store it as a draft, with the
    boundary revision it was made from."""
    unit_set, rules, result = draw_stored_plan(memory, street=street, minimum=minimum, maximum=maximum,
                                               target=target, fresh=fresh, seed=seed, progress=progress)
    params = {"street": street, "minimum": rules.minimum, "maximum": rules.maximum, "target": target,
              "fresh": fresh, "seed": seed}
    plan_id = plan_rows.create_plan(memory.engine, name, author, result.assignment, params=params,
                                    scores=result.scores(),
                                    district_code=unit_set.units["district_code"].iloc[0],
                                    base_revision=unit_set.revision,
                                    streets=sorted(set(unit_set.graph.street)),
                                    figures=None if street else _figures(unit_set, result))
    return plan_id, result


def _figures(unit_set: UnitSet, result: PlanResult) -> dict[str, dict]:
    """Every district's part of a plan of every district in figures (:mod:`layers.plans.figures`)."""
    return figures_by_district(result.graph, result.partition, result.rules,
                               unit_set.units["district_code"].to_numpy(dtype=object))


#: how many changed communities a stale plan's message names (then how many more there are)
STALE_NAMED = 10


def stale_changes(memory: PlanMemory, plan: dict, conn: Connection | None = None) -> dict | None:
    """What changed in the plan's streets since it was made (None when nothing did): the streets,
    the communities of those streets that changed, each change (revision, action, plan), the
    names of those streets and communities, and ``message``, what the page shows — as
    ``conn``'s transaction sees them when given."""
    streets = set(plan.get("streets") or [])
    source = conn if conn is not None else memory.engine
    relevant = [c for c in changes_since(source, plan.get("base_revision") or 0)
                if c["plan_id"] != plan["id"]
                and (c["streets"] is None or not streets or streets & set(c["streets"]))]
    if not relevant:
        return None
    touched = set().union(*[set(c["streets"]) if c["streets"] is not None else streets for c in relevant])
    touched = touched & streets if streets else touched
    # a change may span streets: only the communities of the plan's streets concern it (a
    # community's code begins with its street's)
    communities = sorted({x for c in relevant for x in c["communities"] or []
                          if not streets or any(x.startswith(s) for s in touched)})
    street_names, community_names = plan_rows.place_names(source, touched, communities)
    stale = {"streets": sorted(touched), "communities": communities,
             "street_names": street_names, "community_names": community_names,
             "changes": [{"revision": c["revision"], "action": c["action"], "plan_id": c["plan_id"],
                          "at": c["at"].isoformat(timespec="seconds")} for c in relevant]}
    stale["message"] = stale_message(stale)
    return stale


def _labelled(code: str, name: str | None) -> str:
    return f"{name} · {code}" if name else code


def stale_message(stale: dict) -> str:
    """What changed under a stale plan, as the planner reads it: the streets and the communities
    that changed, names beside codes, at most :data:`STALE_NAMED` communities and then a count."""
    streets = ", ".join(_labelled(c, stale["street_names"].get(c)) for c in stale["streets"])
    codes = stale["communities"]
    shown = ", ".join(_labelled(c, stale["community_names"].get(c)) for c in codes[:STALE_NAMED])
    if len(codes) > STALE_NAMED:
        shown = _("{communities} and {n} more", communities=shown, n=len(codes) - STALE_NAMED)
    if codes:
        return _("The boundaries of {streets} changed since this plan was made (communities that changed: "
                 "{communities}): rebase it on the current boundaries first.", streets=streets or "—",
                 communities=shown)
    return _("The boundaries of {streets} changed since this plan was made: rebase it on the current "
             "boundaries first.", streets=streets or "—")


def _refuse_if_stale(memory: PlanMemory, plan: dict, action: str, conn: Connection | None = None) -> None:
    stale = stale_changes(memory, plan, conn)
    if stale is None:
        return
    refusals = {"submit": N_("plan {id} cannot be submitted: {reason}"),
                "approve": N_("plan {id} cannot be approved: {reason}"),
                "adopt": N_("plan {id} cannot be adopted: {reason}")}
    raise StalePlan(_(refusals[action], id=plan["id"], reason=stale["message"]), stale=stale)


def change_status(memory: PlanMemory, plan_id: int, action: str, version: int, actor: str, role: str,
                  comment: str | None = None, reason: str | None = None) -> dict:
    """Apply a workflow action (submit, approve, reject, adopt) after checking status, role and
    that the plan's boundaries have not changed since it was made. Submitting, approving and
    adopting a plan that breaks a rule (:func:`layers.plans.adoption.broken_rules`) is refused with
    :class:`RulesBroken` unless a written ``reason`` is given; the reason and the rules are kept
    with the step."""
    if action not in TRANSITIONS:
        raise WorkflowError(_("unknown action {action}: use {p2}",
                              action=repr(action), p2=', '.join(TRANSITIONS)))
    sources, target, roles = TRANSITIONS[action]
    plan = plan_rows.get_plan(memory.engine, plan_id)
    if role not in roles:
        raise WorkflowError(_("a {role} may not take the step “{step}” on a plan", role=role_word(role),
                              step=_(STEP_WORDS[action])))
    # a change that starts from an older version is a conflict (with what changed since), even
    # when that change also moved the status: the caller acted on what it saw
    plan_rows.require_version(plan, version, memory.engine)
    if plan["status"] not in sources:
        raise WorkflowError(_("plan {plan_id} is {status}: only a plan that is {p3} can be {target}",
                              plan_id=plan_id, status=plan['status'], p3=' or '.join(sorted(sources)),
                              target=target))
    if action == "reject" and not (comment or "").strip():
        raise WorkflowError(_("a rejection needs a comment saying why"))
    reason = adoption.check_reason(reason)
    detail: dict = {}
    if action in CHECKED:
        _refuse_if_stale(memory, plan, action)
        detail = _refuse_if_broken(memory, plan, action, reason)
    if action == "adopt":
        return {"status": "adopted", **adopt_plan(memory, plan_id, version, actor, plan, detail=detail)}
    new_version = plan_rows.set_status(memory.engine, plan_id, target, version, actor, comment, detail)
    return {"status": target, "version": new_version}


def _refuse_if_broken(memory: PlanMemory, plan: dict, action: str, reason: str | None) -> dict:
    """Refuse ``action`` on a plan that breaks a rule unless a reason is written; what the step
    keeps of it (the reason and the rules, as data) otherwise."""
    rules = adoption.broken_rules(memory, plan["id"])
    if not rules:
        return {}
    if reason is None:
        refusals = {"submit": N_("plan {id} breaks {n} rules; submitting it needs a written reason: {rules}"),
                    "approve": N_("plan {id} breaks {n} rules; approving it needs a written reason: {rules}"),
                    "adopt": N_("plan {id} breaks {n} rules; adopting it needs a written reason: {rules}")}
        shown = "; ".join(adoption.rule_sentence(r) for r in rules[:adoption.RULES_NAMED])
        if len(rules) > adoption.RULES_NAMED:
            shown = _("{rules} and {n} more", rules=shown, n=len(rules) - adoption.RULES_NAMED)
        raise RulesBroken(_(refusals[action], id=plan["id"], n=len(rules), rules=shown), rules=rules)
    return {"reason": reason, "broken_rules": rules}


def adopt_plan(memory: PlanMemory, plan_id: int, version: int, actor: str, plan: dict | None = None,
               detail: dict | None = None) -> dict:
    """Replace the current communities by the plan's, re-deriving facilities' and cells'
    communities by location. Returns (and keeps with the plan) what changed: communities created,
    retired and changed, cells that now straddle two communities or carry a retired code.

    The adoption is worked out from the units in memory and written in one transaction that
    first locks the boundary revision and checks again that the plan's streets have not changed
    since it was made (an import may have committed meanwhile): it is refused with
    :class:`StalePlan` rather than written onto units that no longer match."""
    plan = plan or plan_rows.get_plan(memory.engine, plan_id)
    work = adoption.work_out(memory, plan_id)
    preview = work.preview
    codes = {key: [c["code"] for c in preview[key]] for key in ("created", "retired", "changed")}
    # kept with the plan: the codes (as before) and what the confirmation showed, names beside codes
    summary = {
        "streets": [s["code"] for s in preview["streets"]], "communities": preview["communities"], **codes,
        "straddling_cells": [c["code"] for c in preview["straddling_cells"]],
        "cells_to_renumber": preview["cells_to_renumber"],
        "cells_with_retired_code": [c["code"] for c in preview["cells_with_retired_code"]],
        "facilities_rederived": int(len(work.facility_communities)),
        "successors": preview["successors"], "preview": preview, **(detail or {}),
    }
    new_version, revision = plan_rows.adopt(
        memory.engine, plan_id, version, actor, work.polygons, work.assignment, work.facility_communities,
        work.cell_communities, summary, check=lambda conn: _refuse_if_stale(memory, plan, "adopt", conn),
        detail={k: v for k, v in (detail or {}).items() if k == "reason"})
    return {"version": new_version, "revision": revision, **summary}


def rebase(memory: PlanMemory, plan_id: int, version: int, actor: str) -> dict:
    """Plan the streets that changed since the plan was made again on the current boundaries,
    keep the plan's other streets as they are, and re-apply the hand edits whose units and
    communities still exist. The plan becomes a draft at the current revision."""
    engine = memory.engine
    plan = plan_rows.get_plan(engine, plan_id)
    if plan["status"] == "adopted":
        raise WorkflowError(_("plan {plan_id} is adopted: there is nothing to rebase", plan_id=plan_id))
    plan_rows.require_version(plan, version, engine)
    stale = stale_changes(memory, plan)
    if stale is None:
        raise Refused(_("plan {plan_id} is up to date with the current boundaries: nothing to rebase",
                        plan_id=plan_id))
    params = plan["params"] or {}
    revision = memory.revision()
    rules = plan_rules(engine, params)
    ever = community_codes_ever(engine)
    parts = memory.parts(plan)
    if not parts:
        unit_set = memory.units(params.get("street"), revision)
        result, kept_edits, dropped, changed = _rebased(
            unit_set, plan_rows.plan_assignment(engine, plan_id),
            plan_rows.plan_assignment(engine, plan_id, edited=True), stale["streets"], rules, ever)
        assignment, scores = result.assignment, result.scores()
        figures = None if params.get("street") else _figures(unit_set, result)
    else:  # a plan of every district: a district at a time (its districts, and any new one)
        pieces, figures, kept_edits, dropped, changed = [], {}, [], [], []
        for district in sorted(set(parts) | {str(d) for d in unit_district_codes(engine) if d}):
            unit_set = memory.units(None, revision, district=district)
            result, kept, gone, again = _rebased(
                unit_set, plan_rows.plan_assignment(engine, plan_id, district=district),
                plan_rows.plan_assignment(engine, plan_id, edited=True, district=district),
                stale["streets"], rules, ever)
            pieces.append(result.assignment)
            figures[district] = part_figures(result)
            kept_edits, dropped, changed = kept_edits + kept, dropped + gone, changed + again
        assignment = pd.concat(pieces)
        scores = combine([figures[d] for d in sorted(figures)], rules)
    detail = {"streets_replanned": sorted(changed), "edits_kept": len(kept_edits),
              "edits_dropped": dropped[:100]}
    new_version = plan_rows.replace_assignment(
        engine, plan_id, assignment, set(kept_edits), version, actor, base_revision=revision,
        scores=scores, detail=detail, figures=figures)
    memory.forget(plan_id)
    return {"version": new_version, "status": "draft", "base_revision": revision, **detail,
            "scores": {k: v for k, v in scores.items() if k != "infeasible"}}


def _rebased(unit_set: UnitSet, old: pd.Series, edited: pd.Series, stale_streets: list[str], rules: Rules,
             ever: set[str]) -> tuple[PlanResult, list[str], list[str], list[str]]:
    """``unit_set``'s plan on the current boundaries: its streets among ``stale_streets`` planned
    again, the others as the plan had them (``old``), the hand edits (``edited``) re-applied where
    their units and communities still exist. Returns the plan, the edits kept, those dropped and
    the streets planned again."""
    graph = unit_set.graph
    changed = sorted(set(stale_streets) & set(graph.street))
    again = np.isin(graph.street, changed)
    kept = old.reindex(graph.codes).to_numpy(dtype=object)
    start = np.where(again | pd.isna(kept), current_labels(graph, unit_set.home), kept)
    result = make_plan(graph, rules, retired=ever, streets=changed, start=start)
    p = result.partition
    kept_edits, dropped = [], []
    for unit, code in edited.items():
        u = graph.position.get(unit)
        if u is None:
            dropped.append(unit)
            continue
        if not again[u]:
            kept_edits.append(unit)  # its street did not change: the plan's assignment stands
            continue
        street = graph.street[u]
        exists = code in p and single_street_of(p, code) == street
        free = code not in p and code not in ever and code.startswith(street)
        if exists or free:
            p.move(u, code)
            kept_edits.append(unit)
        else:
            dropped.append(unit)
    return result, kept_edits, dropped, changed


def single_street_of(partition, code: str) -> str | None:
    """The street of community ``code`` in ``partition`` (communities nest in one street)."""
    members = partition.members(code)
    return str(partition.graph.street[members[0]]) if len(members) else None
