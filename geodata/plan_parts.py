"""A plan written district by district: each district's part of the assignment in one
transaction that can be repeated, and the plan's row finished once every part is in.

A plan of a province or a country (:mod:`layers.plans.scale`) is made by one task per district,
possibly on several machines. Each task replaces exactly its own district's rows of the plan
(``plan_id, district_code``): a task run again — after its worker died half-way, or twice by
mistake — leaves the same rows, never a second copy. Every statement names the district, so on
a store split by district it stays in that district's part.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select, update

from geodata.db import BATCH, die_for_fault_tests
from geodata.models import AuditLog, Plan, PlanAssignment, PlanDistrictFigures
from geodata.plan_rows import write_figures


def write_district(engine: Engine, plan_id: int, district: str, assignment: pd.Series, *,
                   version: int = 1, figures: dict | None = None) -> int:
    """Replace plan ``plan_id``'s rows of ``district`` by ``assignment`` (unit code → community
    code), and its figures by ``figures`` (:func:`geodata.plan_rows.write_figures`), in one
    transaction; returns the rows written."""
    table = PlanAssignment.__table__
    rows = [{"plan_id": plan_id, "unit_code": u, "community_code": c, "edited": False,
             "changed_in": version, "district_code": district}
            for u, c in zip(assignment.index, assignment.to_numpy(), strict=True)]
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.plan_id == plan_id, table.c.district_code == district))
        for start in range(0, len(rows), BATCH):
            conn.execute(table.insert(), rows[start:start + BATCH])
            if start == 0:
                die_for_fault_tests(district)
        if figures is not None:
            write_figures(conn, plan_id, {district: figures})
    return len(rows)


def district_rows(engine: Engine, plan_id: int, district: str) -> int:
    """How many rows plan ``plan_id`` holds for ``district``."""
    table = PlanAssignment.__table__
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(
            table.c.plan_id == plan_id, table.c.district_code == district)).scalar_one()


def finish_plan(engine: Engine, plan_id: int, *, scores: dict, streets: list[str],
                district_code: str | None) -> None:
    """Record on the plan's row what its parts made: the scores, streets and district (one
    district, else none)."""
    with engine.begin() as conn:
        conn.execute(update(Plan).where(Plan.id == plan_id).values(
            scores=scores, streets=sorted(streets), district_code=district_code))


def discard_plan(engine: Engine, plan_id: int, actor: str, reason: str) -> None:
    """Delete a plan whose parts could not all be made, with whatever parts were written: a
    failed plan leaves nothing behind but the audit log's record of it and why."""
    table = PlanAssignment.__table__
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.plan_id == plan_id))
        conn.execute(delete(PlanDistrictFigures).where(PlanDistrictFigures.plan_id == plan_id))
        conn.execute(delete(Plan).where(Plan.id == plan_id))
        conn.execute(insert(AuditLog).values(at=datetime.now(), actor=actor, action="plan:discard",
                                             layer="plans", object_code=str(plan_id),
                                             detail={"reason": reason[:500]}))


def discard_unfinished(engine: Engine, job_id: int, reason: str) -> list[int]:
    """Delete the plans background job ``job_id`` began and never finished (its process killed
    mid-plan: the time limit, the worker stopped or restarted, out of memory), with the districts'
    rows written so far — a half-made draft in the plans list would look like any other. Their
    ids. A plan is unfinished until :func:`finish_plan` records its scores."""
    with engine.connect() as conn:
        rows = conn.execute(select(Plan.id, Plan.params, Plan.scores)).all()
    unfinished = [i for i, params, scores in rows
                  if isinstance(params, dict) and params.get("job") == job_id and not scores]
    for plan_id in unfinished:
        discard_plan(engine, plan_id, "worker", reason)
    return unfinished


__all__ = ["discard_plan", "discard_unfinished", "district_rows", "finish_plan", "write_district"]
