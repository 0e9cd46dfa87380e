"""Plans as stored rows: the plan, its unit-to-community assignment, its versions, adoption.

Saving is optimistic: every change names the version it started from, and a change made from an
older version is refused with :class:`VersionConflict`, so two planners never overwrite each
other; the refusal carries the plan as it is now (version, status, name) and the changes made
since the caller's version (:func:`current_state`). A plan records the boundary revision
(:mod:`geodata.revisions`) it was made from. Adoption replaces the current communities in one
transaction, keeps the previous boundaries in ``community_history``, raises the boundary revision
and refuses to revive a retired code.

Every hand edit is kept as a step (``plan_steps``: the units it moved with their community before
and after, the names it gave before and after), so that undo and redo are plan edits like the
others, on the server (:func:`replay_step`). Plan numbers are never given twice
(:func:`_plan_number`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import date, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, Integer, bindparam, cast, delete, func, insert, select, update

from geodata import dialect
from geodata.db import BATCH, pause_for_fault_tests
from geodata.errors import Conflict, NotFound
from geodata.i18n import _
from geodata.models import (
    AuditLog,
    Community,
    CommunityHistory,
    District,
    Facility,
    GridCell,
    Plan,
    PlanAssignment,
    PlanCommunity,
    PlanDistrictFigures,
    PlanStep,
    Revision,
    Street,
    Unit,
)
from geodata.revisions import PLAN_NUMBERS, lock_revision, raise_revision
from geodata.store import as_stored_type, keep_community_history


class VersionConflict(Conflict):
    """The plan changed since the version the change started from."""


class PlanNotFound(NotFound):
    """No plan with that id."""


def require_version(plan: dict, version: int, source: Engine | Connection | None = None) -> None:
    """Refuse a change that starts from another version than ``plan``'s stored one; with
    ``source`` the refusal also says what changed since (:func:`changes_after`)."""
    if plan["version"] != version:
        raise VersionConflict(_("plan {id} is at version {version}, not {version2}: reload it; nothing was "
                                "overwritten",
                                id=plan['id'], version=plan['version'],
                                version2=version), **current_state(source, plan, version))


def current_state(source: Engine | Connection | None, plan: dict, since: int) -> dict:
    """What a refused change is told about the plan as it is now: its version, status and name,
    and (with ``source``) the changes made after version ``since``."""
    state = {"version": plan["version"], "plan_status": plan["status"], "name": plan["name"]}
    if source is not None:
        state["changes"] = changes_after(source, plan["id"], since)
    return state


def changes_after(source: Engine | Connection, plan_id: int, version: int) -> list[dict]:
    """The changes that made the plan's versions after ``version``, oldest first: the version
    each made, the action (``edit``, ``rename``, ``submitted`` …), who and when."""
    stmt = (select(AuditLog.at, AuditLog.actor, AuditLog.action, AuditLog.detail)
            .where(AuditLog.layer == "plans", AuditLog.object_code == str(plan_id),
                   AuditLog.action.like("plan:%")).order_by(AuditLog.id))
    if isinstance(source, Engine):
        with source.connect() as conn:
            rows = conn.execute(stmt).all()
    else:
        rows = source.execute(stmt).all()
    out = []
    for at, actor, action, detail in rows:
        made = (detail or {}).get("version")
        if isinstance(made, int) and made > version:
            out.append({"version": made, "action": action.removeprefix("plan:"), "actor": actor,
                        "at": at.isoformat(timespec="seconds")})
    return out


def create_plan(engine: Engine, name: str, author: str, assignment: pd.Series, *, params: dict | None = None,
                scores: dict | None = None, district_code: str | None = None, base_revision: int = 0,
                streets: list[str] | None = None, figures: dict[str, dict] | None = None) -> int:
    """Store a new draft plan with ``assignment`` (unit code → community code), made from the
    boundaries at ``base_revision`` and covering ``streets``, with its districts' ``figures``
    (:func:`write_figures`); returns its id."""
    now = datetime.now()
    with engine.begin() as conn:
        plan_id = conn.execute(insert(Plan).values(
            **_plan_number(conn), name=name, author=author, status="draft", version=1,
            district_code=district_code,
            params=params, scores=scores, created_at=now, updated_at=now, base_revision=base_revision,
            streets=sorted(streets) if streets is not None else None).returning(Plan.id)).scalar_one()
        _insert_assignment(conn, plan_id, assignment, version=1)
        write_figures(conn, plan_id, figures or {})
        _audit(conn, author, "plan:create", str(plan_id), {"name": name, "units": len(assignment)})
    return plan_id


def _plan_number(conn: Connection) -> dict:
    """The id of a new plan where the database might give a deleted plan's number again.

    SQLite gives a table's largest id + 1, so deleting the newest draft would hand its number
    (and, through the audit log, its history) to the next plan: there the number comes from a
    counter that only rises, started above every plan stored or ever created. PostgreSQL's
    sequence never gives a number twice (not even one a rolled-back insert took): there the
    database numbers the plan (``{}``)."""
    if conn.dialect.name != "sqlite":
        return {}
    table = Revision.__table__
    counter = conn.execute(update(table).where(table.c.name == PLAN_NUMBERS)
                           .values(value=table.c.value + 1).returning(table.c.value)).scalar_one_or_none()
    stored = conn.execute(select(func.max(Plan.id))).scalar() or 0
    if counter is None:  # the first plan since numbers were counted: above every plan ever created
        created = conn.execute(select(func.max(cast(AuditLog.object_code, Integer))).where(
            AuditLog.layer == "plans", AuditLog.action == "plan:create")).scalar() or 0
        number = max(stored, int(created)) + 1
        conn.execute(insert(table).values(name=PLAN_NUMBERS, value=number))
        return {"id": number}
    if counter <= stored:  # plans restored from elsewhere: never below them
        counter = stored + 1
        conn.execute(update(table).where(table.c.name == PLAN_NUMBERS).values(value=counter))
    return {"id": int(counter)}


def _insert_assignment(conn: Connection, plan_id: int, assignment: pd.Series,
                       edited: set[str] = frozenset(), *, version: int) -> None:
    rows = [{"plan_id": plan_id, "unit_code": u, "community_code": c, "edited": u in edited,
             "changed_in": version}
            for u, c in zip(assignment.index, assignment.to_numpy(), strict=True)]
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        # each row carries its unit's district: on a store split by district it lives there
        districts = dict(conn.execute(select(Unit.code, Unit.district_code).where(
            Unit.code.in_([r["unit_code"] for r in batch]))).all())
        for r in batch:
            r["district_code"] = districts.get(r["unit_code"])
        conn.execute(insert(PlanAssignment), batch)


def get_plan(engine: Engine | Connection, plan_id: int) -> dict:
    stmt = select(Plan.__table__).where(Plan.id == plan_id)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            row = conn.execute(stmt).mappings().one_or_none()
    else:
        row = engine.execute(stmt).mappings().one_or_none()
    if row is None:
        raise PlanNotFound(_("no plan {plan_id}", plan_id=plan_id))
    return dict(row)


def list_plans(engine: Engine, *, status: str | None = None, author: str | None = None,
               street: str | None = None) -> list[dict]:
    """The plans, newest first, with the streets each covers; filtered by status, author and a
    street the plan covers (a plan of every street covers each)."""
    table = Plan.__table__
    with engine.connect() as conn:
        columns = [table.c[c] for c in ("id", "name", "author", "status", "version", "updated_at", "comment",
                                        "streets", "params")]
        stmt = select(*columns).order_by(table.c.id.desc())
        if status:
            stmt = stmt.where(table.c.status == status)
        if author:
            stmt = stmt.where(table.c.author == author)
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for row in rows:
        params = row.pop("params") or {}
        row["street"] = params.get("street")
        row["streets"] = row["streets"] or []
    if street:
        rows = [r for r in rows if street in r["streets"] or (not r["streets"] and not r["street"])]
    return rows


def community_names(engine: Engine, plan_id: int) -> dict[str, str]:
    """The names the plan gives its communities (code → name)."""
    with engine.connect() as conn:
        rows = conn.execute(select(PlanCommunity.code, PlanCommunity.name)
                            .where(PlanCommunity.plan_id == plan_id)).all()
    return {code: name for code, name in rows}


def current_community_names(engine: Engine, districts: Iterable[str] | None = None) -> dict[str, str]:
    """The names of the current communities (code → name): of ``districts`` (a plan's), else of
    every district."""
    stmt = select(Community.code, Community.name)
    if districts is not None:
        stmt = stmt.where(Community.district_code.in_(sorted(districts)))
    with engine.connect() as conn:
        return {code: name for code, name in conn.execute(stmt).all()}


def street_names(engine: Engine) -> dict[str, str]:
    """The names of the streets (code → name)."""
    with engine.connect() as conn:
        return {code: name for code, name in conn.execute(select(Street.code, Street.name)).all()}


def district_names(engine: Engine) -> dict[str, str]:
    """The names of the districts (code → name)."""
    with engine.connect() as conn:
        return {code: name for code, name in conn.execute(select(District.code, District.name)).all()}


def names_for(engine: Engine, plan_id: int, codes) -> dict[str, str]:
    """The names the plan shows for ``codes``: the plan's own, else the current community's."""
    codes = list(codes)
    out: dict[str, str] = {}
    with engine.connect() as conn:
        for start in range(0, len(codes), BATCH):
            chunk = codes[start:start + BATCH]
            out.update(conn.execute(select(Community.code, Community.name)
                                    .where(Community.code.in_(chunk))).all())
            out.update(conn.execute(select(PlanCommunity.code, PlanCommunity.name).where(
                PlanCommunity.plan_id == plan_id, PlanCommunity.code.in_(chunk))).all())
    return out


def current_codes(engine: Engine) -> dict[str, bool]:
    """The codes of the current communities, each with whether it is provisional (临时代码)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Community.code, Community.provisional)).all()
    return {code: bool(p) for code, p in rows}


def name_community(engine: Engine, plan_id: int, code: str, name: str, expected_version: int,
                   actor: str) -> int:
    """Give community ``code`` of the plan the name ``name``; returns the plan's new version."""
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version)
        was = conn.execute(select(PlanCommunity.name).where(PlanCommunity.plan_id == plan_id,
                                                            PlanCommunity.code == code)).scalar_one_or_none()
        _write_names(conn, plan_id, {code: name})
        last = next_step(conn, plan_id, backwards=True)
        if (last is not None and last["kind"] == "new" and last["made_in"] == expected_version
                and code in {v[1] for v in (last["units"] or {}).values()} and not last["names"]):
            # a new community named as it is made: one step, undone and redone together
            conn.execute(update(PlanStep).where(PlanStep.plan_id == plan_id, PlanStep.seq == last["seq"])
                         .values(names={code: [was, name]}, made_in=version))
            conn.execute(delete(PlanStep).where(PlanStep.plan_id == plan_id, PlanStep.undone.is_(True)))
        else:
            _record_step(conn, plan_id, "name", version, actor, names={code: [was, name]})
        _audit(conn, actor, "plan:name", str(plan_id), {"community": code, "name": name, "version": version})
    return version


def place_names(source: Engine | Connection, streets, communities, districts: Iterable[str] | None = None
                ) -> tuple[dict[str, str], dict[str, str]]:
    """The names of ``streets`` and ``communities`` (code → name): current ones, and for a
    community no longer current the name it last had (from the community history). Communities
    are looked for in ``districts`` when given (those of a plan's streets), else everywhere."""
    streets, communities = list(streets), list(communities)
    in_districts = sorted(districts) if districts is not None else None

    def read(conn: Connection) -> tuple[dict[str, str], dict[str, str]]:
        street_names, community_names = {}, {}
        for start in range(0, max(len(streets), 1), BATCH):
            chunk = streets[start:start + BATCH]
            if chunk:
                street_names.update(conn.execute(select(Street.code, Street.name)
                                                 .where(Street.code.in_(chunk))).all())
        for start in range(0, max(len(communities), 1), BATCH):
            chunk = communities[start:start + BATCH]
            if not chunk:
                continue
            past = select(CommunityHistory.code, CommunityHistory.name).where(
                CommunityHistory.code.in_(chunk))
            now = select(Community.code, Community.name).where(Community.code.in_(chunk))
            if in_districts is not None:
                past = past.where(CommunityHistory.district_code.in_(in_districts))
                now = now.where(Community.district_code.in_(in_districts))
            community_names.update(conn.execute(past.order_by(CommunityHistory.id)).all())  # latest last
            community_names.update(conn.execute(now).all())
        return street_names, community_names

    if isinstance(source, Engine):
        with source.connect() as conn:
            return read(conn)
    return read(source)


def duplicate_plan(engine: Engine, plan_id: int, name: str, author: str) -> int:
    """A new draft with the plan's assignment (hand edits kept as such), parameters, boundary
    revision, streets and community names; returns its id."""
    plan = get_plan(engine, plan_id)
    now = datetime.now()
    with engine.begin() as conn:
        new_id = conn.execute(insert(Plan).values(
            **_plan_number(conn), name=name, author=author, status="draft", version=1,
            district_code=plan["district_code"],
            params=plan["params"], scores=plan["scores"], created_at=now, updated_at=now,
            base_revision=plan["base_revision"], streets=plan["streets"]).returning(Plan.id)).scalar_one()
        rows = conn.execute(select(PlanAssignment.unit_code, PlanAssignment.community_code,
                                   PlanAssignment.edited, PlanAssignment.district_code)
                            .where(PlanAssignment.plan_id == plan_id)).all()
        copied = [{"plan_id": new_id, "unit_code": u, "community_code": c, "edited": bool(e),
                   "changed_in": 1, "district_code": d} for u, c, e, d in rows]
        for start in range(0, len(copied), BATCH):
            conn.execute(insert(PlanAssignment), copied[start:start + BATCH])
        names = conn.execute(select(PlanCommunity.code, PlanCommunity.name)
                             .where(PlanCommunity.plan_id == plan_id)).all()
        if names:
            conn.execute(insert(PlanCommunity), [{"plan_id": new_id, "code": c, "name": n} for c, n in names])
        write_figures(conn, new_id, district_figures(conn, plan_id))
        _audit(conn, author, "plan:create", str(new_id), {"name": name, "units": len(copied),
                                                          "duplicate_of": plan_id})
        _audit(conn, author, "plan:duplicate", str(plan_id), {"copy": new_id, "name": name})
    return new_id


def delete_plan(engine: Engine, plan_id: int, expected_version: int, actor: str) -> None:
    """Delete the plan, its assignment and its names (the audit log keeps what happened)."""
    with engine.begin() as conn:
        plan = get_plan(conn, plan_id)
        if plan["version"] != expected_version:
            raise VersionConflict(_("plan {plan_id} is at version {version}, not {expected_version}: reload "
                                    "it; nothing was deleted",
                                    plan_id=plan_id, version=plan['version'],
                                    expected_version=expected_version),
                                  **current_state(conn, plan, expected_version))
        conn.execute(delete(PlanAssignment).where(PlanAssignment.plan_id == plan_id))
        conn.execute(delete(PlanCommunity).where(PlanCommunity.plan_id == plan_id))
        conn.execute(delete(PlanStep).where(PlanStep.plan_id == plan_id))
        conn.execute(delete(PlanDistrictFigures).where(PlanDistrictFigures.plan_id == plan_id))
        conn.execute(delete(Plan).where(Plan.id == plan_id))
        _audit(conn, actor, "plan:delete", str(plan_id), {"name": plan["name"], "status": plan["status"],
                                                          "version": plan["version"]})


def plan_timeline(engine: Engine, plan_id: int) -> list[dict]:
    """What was done to the plan, oldest first: when, who, which action (``plan:*`` without the
    prefix), and the comment or detail it carried."""
    created = get_plan(engine, plan_id)["created_at"]
    with engine.connect() as conn:
        # from the plan's creation on: a database that once gave a deleted plan's number again
        # keeps the deleted plan's steps under the same number
        rows = conn.execute(select(AuditLog.at, AuditLog.actor, AuditLog.action, AuditLog.detail)
                            .where(AuditLog.layer == "plans", AuditLog.object_code == str(plan_id),
                                   AuditLog.action.like("plan:%"), AuditLog.at >= created)
                            .order_by(AuditLog.at, AuditLog.id)).all()
    return [{"at": at, "actor": actor, "action": action.removeprefix("plan:"), "detail": detail or {}}
            for at, actor, action, detail in rows]


def plan_assignment(engine: Engine, plan_id: int, *, edited: bool = False,
                    district: str | None = None) -> pd.Series:
    """The plan's unit code → community code (only the units changed by hand when ``edited``;
    only those of ``district`` when given: one district's part of a province's plan)."""
    stmt = select(PlanAssignment.unit_code, PlanAssignment.community_code).where(
        PlanAssignment.plan_id == plan_id)
    if district is not None:
        stmt = stmt.where(PlanAssignment.district_code == district)
    if edited:
        stmt = stmt.where(PlanAssignment.edited.is_(True))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows and not edited:
        get_plan(engine, plan_id)  # raises when the plan does not exist
    return pd.Series([r[1] for r in rows], index=[r[0] for r in rows], name="community_code", dtype=object)


def assignment_changes(engine: Engine, plan_id: int, since: int,
                       districts: Iterable[str] | None = None) -> pd.Series:
    """The units whose community the plan changed after version ``since`` (unit code → community
    code): what a process holding the plan at ``since`` must apply to catch up. ``districts``:
    those of the plan's units, when the caller knows them (the rows lie there alone)."""
    stmt = select(PlanAssignment.unit_code, PlanAssignment.community_code).where(
        PlanAssignment.plan_id == plan_id, PlanAssignment.changed_in > since)
    if districts is not None:
        stmt = stmt.where(PlanAssignment.district_code.in_(sorted(districts)))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return pd.Series([r[1] for r in rows], index=[r[0] for r in rows], name="community_code", dtype=object)


def write_figures(conn: Connection, plan_id: int, figures: dict[str, dict]) -> None:
    """Keep each district's part of the plan in figures (district code → its figures: its
    communities' households and compactness, its additive scores), replacing what was kept."""
    for district, kept in sorted(figures.items()):
        conn.execute(delete(PlanDistrictFigures).where(PlanDistrictFigures.plan_id == plan_id,
                                                       PlanDistrictFigures.district_code == district))
        conn.execute(insert(PlanDistrictFigures).values(plan_id=plan_id, district_code=district,
                                                        figures=kept))


def district_figures(source: Engine | Connection, plan_id: int, *, besides: str | None = None
                     ) -> dict[str, dict]:
    """Every district's part of the plan in figures (district code → figures), but ``besides``."""
    stmt = select(PlanDistrictFigures.district_code, PlanDistrictFigures.figures).where(
        PlanDistrictFigures.plan_id == plan_id)
    if besides is not None:
        stmt = stmt.where(PlanDistrictFigures.district_code != besides)
    with nullcontext(source) if isinstance(source, Connection) else source.connect() as conn:
        return {d: f for d, f in conn.execute(stmt).all()}


def figure_districts(engine: Engine, plan_id: int) -> list[str]:
    """The districts whose figures the plan keeps (:func:`write_figures`), in code order."""
    with engine.connect() as conn:
        return sorted(conn.execute(select(PlanDistrictFigures.district_code).where(
            PlanDistrictFigures.plan_id == plan_id)).scalars())


def plan_districts(engine: Engine, plan_id: int) -> list[str]:
    """The districts the plan's units lie in (those of its stored rows)."""
    with engine.connect() as conn:
        return sorted(d for d in conn.execute(select(PlanAssignment.district_code).distinct().where(
            PlanAssignment.plan_id == plan_id)).scalars() if d)


def district_of_units(engine: Engine, plan_id: int, units: list[str]) -> str | None:
    """The district the plan's rows of ``units`` lie in (the first of them found; None: none)."""
    with engine.connect() as conn:
        return conn.execute(select(PlanAssignment.district_code).where(
            PlanAssignment.plan_id == plan_id, PlanAssignment.unit_code.in_(units[:BATCH]),
            PlanAssignment.district_code.isnot(None)).limit(1)).scalar_one_or_none()


def _bump(conn: Connection, plan_id: int, expected: int, **values) -> int:
    """Move the plan from version ``expected`` to the next one, or raise VersionConflict."""
    result = conn.execute(update(Plan).where(Plan.id == plan_id, Plan.version == expected)
                          .values(version=Plan.version + 1, updated_at=datetime.now(), **values))
    if result.rowcount != 1:
        current = get_plan(conn, plan_id)
        raise VersionConflict(_("plan {plan_id} is at version {version}, not {expected}: reload it; nothing "
                                "was overwritten",
                                plan_id=plan_id, version=current['version'], expected=expected),
                              **current_state(conn, current, expected))
    return expected + 1


def save_moves(engine: Engine, plan_id: int, moves: dict[str, str], expected_version: int, actor: str,
               *, scores: dict | None = None, status: str | None = None, kind: str = "move",
               district: str | None = None, figures: dict[str, dict] | None = None) -> int:
    """Give the units in ``moves`` their new community (a hand edit of ``kind``: move, split,
    merge, new); returns the new version. The edit is kept as the plan's newest step, so that it
    can be undone, and the steps undone before it can no longer be redone. ``district``: the
    district the units lie in (every statement about them names it); ``figures``: those of the
    districts the edit changed (:func:`write_figures`)."""
    with engine.begin() as conn:
        values = {"scores": scores} if scores is not None else {}
        if status:
            values["status"] = status
        version = _bump(conn, plan_id, expected_version, **values)
        before = _assignment_of(conn, plan_id, list(moves), district)
        _write_units(conn, plan_id, {u: (c, True) for u, c in moves.items()}, version, district)
        write_figures(conn, plan_id, figures or {})
        _record_step(conn, plan_id, kind, version, actor,
                     units={u: [before[u][0], c, before[u][1]] for u, c in moves.items() if u in before})
        _audit(conn, actor, "plan:edit", str(plan_id), {"units": len(moves), "version": version})
    return version


def _assignment_of(conn: Connection, plan_id: int, units: list[str],
                   district: str | None = None) -> dict[str, tuple[str, bool]]:
    """The stored community and hand-edit flag of ``units`` in the plan (in ``district``)."""
    out: dict[str, tuple[str, bool]] = {}
    for start in range(0, len(units), BATCH):
        stmt = (select(PlanAssignment.unit_code, PlanAssignment.community_code, PlanAssignment.edited)
                .where(PlanAssignment.plan_id == plan_id,
                       PlanAssignment.unit_code.in_(units[start:start + BATCH])))
        if district is not None:
            stmt = stmt.where(PlanAssignment.district_code == district)
        out.update({u: (c, bool(e)) for u, c, e in conn.execute(stmt).all()})
    return out


def _write_units(conn: Connection, plan_id: int, units: dict[str, tuple[str, bool]], version: int,
                 district: str | None = None) -> None:
    """Give each unit its community and hand-edit flag, as changed in ``version`` (the units of
    ``district`` when given: the statement then stays in that district's part of the store)."""
    where = [PlanAssignment.plan_id == plan_id, PlanAssignment.unit_code == bindparam("unit")]
    if district is not None:
        where.append(PlanAssignment.district_code == district)
    stmt = (update(PlanAssignment).where(*where)
            .values(community_code=bindparam("community"), edited=bindparam("hand"), changed_in=version))
    rows = [{"unit": u, "community": c, "hand": e} for u, (c, e) in units.items()]
    for start in range(0, len(rows), BATCH):
        conn.execute(stmt, rows[start:start + BATCH])


def _write_names(conn: Connection, plan_id: int, names: dict[str, str | None]) -> None:
    """Give each community the plan's name for it (``None``: the plan gives it none)."""
    for code, name in names.items():
        conn.execute(delete(PlanCommunity).where(PlanCommunity.plan_id == plan_id,
                                                 PlanCommunity.code == code))
        if name is not None:
            conn.execute(insert(PlanCommunity).values(plan_id=plan_id, code=code, name=name))


# --- the plan's steps: undo and redo ------------------------------------------------------------


def _record_step(conn: Connection, plan_id: int, kind: str, version: int, actor: str, *,
                 units: dict | None = None, names: dict | None = None) -> None:
    """Keep an edit as the plan's newest step; the undone steps (the redo stack) are dropped."""
    conn.execute(delete(PlanStep).where(PlanStep.plan_id == plan_id, PlanStep.undone.is_(True)))
    last = conn.execute(select(func.max(PlanStep.seq)).where(PlanStep.plan_id == plan_id)).scalar() or 0
    conn.execute(insert(PlanStep).values(plan_id=plan_id, seq=last + 1, kind=kind, made_in=version,
                                         undone=False, actor=actor, at=datetime.now(), units=units or {},
                                         names=names or {}))


def next_step(source: Engine | Connection, plan_id: int, *, backwards: bool) -> dict | None:
    """The step undo would take back (``backwards``: the newest one done) or redo would make
    again (the oldest one undone), or None."""
    stmt = select(PlanStep.__table__).where(PlanStep.plan_id == plan_id, PlanStep.undone.is_(not backwards))
    stmt = stmt.order_by(PlanStep.seq.desc() if backwards else PlanStep.seq).limit(1)
    if isinstance(source, Engine):
        with source.connect() as conn:
            row = conn.execute(stmt).mappings().one_or_none()
    else:
        row = source.execute(stmt).mappings().one_or_none()
    return dict(row) if row is not None else None


def step_counts(source: Engine | Connection, plan_id: int) -> dict:
    """How many steps of the plan can be undone and redone, and the kind of the next of each."""
    stmt = select(PlanStep.seq, PlanStep.kind, PlanStep.undone).where(PlanStep.plan_id == plan_id) \
        .order_by(PlanStep.seq)
    if isinstance(source, Engine):
        with source.connect() as conn:
            rows = conn.execute(stmt).all()
    else:
        rows = source.execute(stmt).all()
    done = [k for _, k, undone in rows if not undone]
    undone = [k for _, k, u in rows if u]
    return {"undo": len(done), "redo": len(undone), "undo_kind": done[-1] if done else None,
            "redo_kind": undone[0] if undone else None}


def nothing_to_replay(plan_id: int, backwards: bool) -> Conflict:
    """The refusal of an undo with no step done, or a redo with none undone."""
    if backwards:
        return Conflict(_("plan {plan_id} has nothing to undo", plan_id=plan_id))
    return Conflict(_("plan {plan_id} has nothing to redo", plan_id=plan_id))


def replay_step(engine: Engine, plan_id: int, seq: int, expected_version: int, actor: str, *,
                backwards: bool, scores: dict | None = None, status: str | None = None,
                district: str | None = None, figures: dict[str, dict] | None = None) -> int:
    """Undo (``backwards``) or redo step ``seq`` of the plan: its units get back the community
    and hand-edit flag they had before it (or the ones it gave them), its names likewise; the
    plan moves to a new version (and to ``status`` when given: a rejected plan edited is a draft
    again, as after any edit). Refused (:class:`VersionConflict`) when the plan moved from
    ``expected_version`` meanwhile. Returns the new version."""
    values = {k: v for k, v in (("scores", scores), ("status", status)) if v is not None}
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, **values)
        step = next_step(conn, plan_id, backwards=backwards)
        if step is None or step["seq"] != seq:  # the version check makes this a guard only
            raise nothing_to_replay(plan_id, backwards)
        at = 0 if backwards else 1
        units = {u: ((v[0], bool(v[2])) if backwards else (v[1], True))
                 for u, v in (step["units"] or {}).items()}
        _write_units(conn, plan_id, units, version, district)
        write_figures(conn, plan_id, figures or {})
        _write_names(conn, plan_id, {c: v[at] for c, v in (step["names"] or {}).items()})
        conn.execute(update(PlanStep).where(PlanStep.plan_id == plan_id, PlanStep.seq == seq)
                     .values(undone=backwards))
        _audit(conn, actor, "plan:undo" if backwards else "plan:redo", str(plan_id),
               {"step": seq, "kind": step["kind"], "units": len(units), "version": version})
    return version


def replace_assignment(engine: Engine, plan_id: int, assignment: pd.Series, edited: set[str],
                       expected_version: int, actor: str, *, base_revision: int, scores: dict,
                       detail: dict, figures: dict[str, dict] | None = None) -> int:
    """Give the plan a whole new assignment made from the boundaries at ``base_revision`` (a
    rebase): it becomes a draft again, with its districts' ``figures`` (:func:`write_figures`);
    returns the new version."""
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, status="draft", base_revision=base_revision,
                        scores=scores, comment=None)
        conn.execute(delete(PlanAssignment).where(PlanAssignment.plan_id == plan_id))
        _insert_assignment(conn, plan_id, assignment, edited, version=version)
        conn.execute(delete(PlanDistrictFigures).where(PlanDistrictFigures.plan_id == plan_id))
        write_figures(conn, plan_id, figures or {})
        # the steps were made on other boundaries: none can be undone or redone on these
        conn.execute(delete(PlanStep).where(PlanStep.plan_id == plan_id))
        _audit(conn, actor, "plan:rebase", str(plan_id), {**detail, "version": version})
    return version


def set_status(engine: Engine, plan_id: int, status: str, expected_version: int, actor: str,
               comment: str | None = None, detail: dict | None = None) -> int:
    """Move the plan to ``status``; ``detail`` (a reason to go on although rules are broken, the
    rules) is kept with the step in the audit log."""
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, status=status, comment=comment)
        _audit(conn, actor, f"plan:{status}", str(plan_id), {"comment": comment, **(detail or {}),
                                                              "version": version})
    return version


def rename_plan(engine: Engine, plan_id: int, name: str, expected_version: int, actor: str) -> int:
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, name=name)
        _audit(conn, actor, "plan:rename", str(plan_id), {"name": name, "version": version})
    return version


def revived_codes(conn: Connection, codes: set[str], streets: list[str],
                  districts: Iterable[str] | None = None) -> set[str]:
    """Of ``codes``, those that would bring back a retired community (in history, not current in
    ``streets``) or take a code that is current in another street.

    A community code is the nation's: it is looked up in every district — the one lookup of an
    adoption not routed to its own ``districts`` (a code current or retired under another
    district, even a row stored under the wrong one, must be found). A current row of
    ``streets`` stored outside ``districts`` counts as elsewhere: the adoption, which replaces
    its districts' rows only, would leave it beside the new one."""
    if not codes:
        return set()
    history = set(conn.execute(select(CommunityHistory.code)
                               .where(CommunityHistory.code.in_(codes))).scalars())
    current = conn.execute(select(Community.code, Community.street_code, Community.district_code)
                           .where(Community.code.in_(codes))).all()
    ours = set(districts) if districts is not None else None
    live_here = {c for c, s, d in current if s in streets and (ours is None or d in ours)}
    elsewhere = {c for c, _s, _d in current} - live_here
    return (history - live_here) | elsewhere


def adopt(engine: Engine, plan_id: int, expected_version: int, actor: str, communities: gpd.GeoDataFrame,
          assignment: pd.DataFrame, facility_communities: pd.DataFrame, cell_communities: pd.DataFrame,
          summary: dict, check: Callable[[Connection], None] | None = None,
          detail: dict | None = None) -> tuple[int, int]:
    """Make the plan's communities the current ones, in one transaction.

    ``communities``: code, name, street_code, district_code, geometry (EPSG:4326) of every
    community of the streets the plan covers; ``assignment`` (the plan's units),
    ``facility_communities`` and ``cell_communities`` (re-derived by location): ``code``,
    ``district_code`` and the ``community_code`` each takes; ``summary``: what the adoption
    changes, kept with the plan. The communities they replace go to ``community_history`` with
    today's date. Refuses (:class:`~geodata.errors.Conflict`) to bring back a retired code.
    Returns the plan's new version and the new boundary revision.

    Every statement names the districts of the plan's units and communities (on a store split by
    district it opens only their parts): a stored row lies in its street's district, as the
    importer requires.

    The boundary revision is locked first (:func:`~geodata.revisions.lock_revision`) and then
    ``check(conn)`` runs (it raises to refuse): what it finds about the boundaries — that the
    plan's streets have not changed since the plan was made — holds until the commit, so an
    import racing the adoption either waits for it or is seen by it.
    """
    today = date.today()
    streets = sorted(set(communities["street_code"]))
    districts = sorted(set(communities["district_code"]) | set(assignment["district_code"]))
    codes = set(communities["code"])
    with engine.begin() as conn:
        lock_revision(conn)
        version = _bump(conn, plan_id, expected_version, status="adopted", adoption=summary)
        if check is not None:
            check(conn)
        revived = revived_codes(conn, codes, streets, districts)
        if revived:
            raise Conflict(_("adopting plan {plan_id} would bring back retired or foreign community codes "
                             "{p2}: rebase the plan; nothing was changed",
                             plan_id=plan_id, p2=', '.join(sorted(revived))))
        current = Community.__table__
        flags = _provisional_flags(conn, communities, assignment, streets, districts)
        keep_community_history(conn, streets=streets, districts=districts, plan_id=plan_id)
        conn.execute(delete(current).where(current.c.street_code.in_(streets),
                                           current.c.district_code.in_(districts)))
        geoms = as_stored_type(np.asarray(communities.geometry.values, dtype=object), "polygon")
        rows = [{"code": c, "name": n, "street_code": s, "district_code": d, "valid_from": today,
                 "provisional": flags[c], "geom_wkb": w}
                for c, n, s, d, w in zip(communities["code"], communities["name"], communities["street_code"],
                                         communities["district_code"], shapely.to_wkb(geoms), strict=True)]
        columns = ("code", "name", "street_code", "district_code", "valid_from", "provisional")
        stmt = insert(current).values({c: bindparam(c) for c in columns} | {"geom": dialect.geom_from_wkb()})
        conn.execute(stmt, rows)
        for table, moves in ((Unit.__table__, assignment), (Facility.__table__, facility_communities),
                             (GridCell.__table__, cell_communities)):
            stmt = update(table).where(table.c.code == bindparam("match"),
                                       table.c.district_code == bindparam("district")).values(
                community_code=bindparam("community"))
            pairs = [{"match": k, "district": d, "community": v} for k, d, v in zip(
                moves["code"], moves["district_code"], moves["community_code"], strict=True)]
            for start in range(0, len(pairs), BATCH):
                conn.execute(stmt, pairs[start:start + BATCH])
        changed = {c for key in ("created", "retired", "changed") for c in summary.get(key, [])}
        revision = raise_revision(conn, "adopt", actor=actor, streets=streets, communities=changed,
                                  plan_id=plan_id)
        _audit(conn, actor, "plan:adopt", str(plan_id), {"streets": streets, "communities": len(rows),
                                                          **(detail or {}),
                                                          "version": version, "revision": revision})
        pause_for_fault_tests("adopt")
    return version, revision


def _provisional_flags(conn: Connection, communities: gpd.GeoDataFrame, assignment: pd.DataFrame,
                       streets: list[str], districts: list[str]) -> dict[str, bool]:
    """Whether each community the plan adopts has a provisional code (临时代码): a kept code keeps
    its flag; a new code is provisional when its street is, or when any of its units comes from a
    provisional community (the official code table will replace it, as it replaces theirs)."""
    current, street, unit = Community.__table__, Street.__table__, Unit.__table__
    was = dict(conn.execute(select(current.c.code, current.c.provisional).where(
        current.c.street_code.in_(streets), current.c.district_code.in_(districts))).all())
    provisional_streets = set(conn.execute(select(street.c.code).where(
        street.c.code.in_(streets), street.c.provisional.is_(True))).scalars())
    came_from = dict(conn.execute(select(unit.c.code, unit.c.community_code).where(
        unit.c.street_code.in_(streets), unit.c.district_code.in_(districts))).all())
    from_provisional = {new for u, new in zip(assignment["code"], assignment["community_code"], strict=True)
                        if was.get(came_from.get(u))}
    return {code: bool(was[code]) if code in was else (s in provisional_streets or code in from_provisional)
            for code, s in zip(communities["code"], communities["street_code"], strict=True)}


def _audit(conn: Connection, actor: str, action: str, code: str, detail: dict) -> None:
    conn.execute(insert(AuditLog).values(at=datetime.now(), actor=actor, action=action, layer="plans",
                                         object_code=code, detail=detail))


def keep_regeneration(conn: Connection, plan_id: int, regenerated: dict) -> None:
    """Keep with an adopted plan what regenerating its cells did (``adoption.regenerated``); the
    plan's version stays: its communities did not change."""
    table = Plan.__table__
    adoption = conn.execute(select(table.c.adoption).where(table.c.id == plan_id)).scalar_one_or_none() or {}
    conn.execute(update(table).where(table.c.id == plan_id)
                 .values(adoption={**adoption, "regenerated": {**regenerated, "at": datetime.now().isoformat(
                     timespec="seconds")}}))
