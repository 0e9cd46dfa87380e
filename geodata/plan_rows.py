"""Plans as stored rows: the plan, its unit-to-community assignment, its versions, adoption.

Saving is optimistic: every change names the version it started from, and a change made from an
older version is refused with :class:`VersionConflict`, so two planners never overwrite each
other. Adoption replaces the current communities in one transaction and keeps the previous
boundaries in ``community_history``.
"""

from __future__ import annotations

from datetime import date, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, literal, select, update

from geodata.models import (
    AuditLog,
    Community,
    CommunityHistory,
    Facility,
    GridCell,
    Plan,
    PlanAssignment,
    Unit,
)
from geodata.store import as_stored_type

BATCH = 5000


class VersionConflict(Exception):
    """The plan changed since the version the change started from."""


class PlanNotFound(LookupError):
    pass


def create_plan(engine: Engine, name: str, author: str, assignment: pd.Series, *, params: dict | None = None,
                scores: dict | None = None, district_code: str | None = None) -> int:
    """Store a new draft plan with ``assignment`` (unit code → community code); returns its id."""
    now = datetime.now()
    with engine.begin() as conn:
        plan_id = conn.execute(insert(Plan).values(
            name=name, author=author, status="draft", version=1, district_code=district_code,
            params=params, scores=scores, created_at=now, updated_at=now).returning(Plan.id)).scalar_one()
        rows = [{"plan_id": plan_id, "unit_code": u, "community_code": c}
                for u, c in zip(assignment.index, assignment.to_numpy(), strict=True)]
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(PlanAssignment), rows[start:start + BATCH])
        _audit(conn, author, "plan:create", str(plan_id), {"name": name, "units": len(rows)})
    return plan_id


def get_plan(engine: Engine | Connection, plan_id: int) -> dict:
    stmt = select(Plan.__table__).where(Plan.id == plan_id)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            row = conn.execute(stmt).mappings().one_or_none()
    else:
        row = engine.execute(stmt).mappings().one_or_none()
    if row is None:
        raise PlanNotFound(f"no plan {plan_id}")
    return dict(row)


def list_plans(engine: Engine) -> list[dict]:
    table = Plan.__table__
    with engine.connect() as conn:
        columns = [table.c[c] for c in ("id", "name", "author", "status", "version", "updated_at", "comment")]
        rows = conn.execute(select(*columns).order_by(table.c.id.desc())).mappings()
        return [dict(r) for r in rows]


def plan_assignment(engine: Engine, plan_id: int) -> pd.Series:
    with engine.connect() as conn:
        rows = conn.execute(select(PlanAssignment.unit_code, PlanAssignment.community_code)
                            .where(PlanAssignment.plan_id == plan_id)).all()
    if not rows:
        get_plan(engine, plan_id)  # raises when the plan does not exist
    return pd.Series([r[1] for r in rows], index=[r[0] for r in rows], name="community_code")


def _bump(conn: Connection, plan_id: int, expected: int, **values) -> int:
    """Move the plan from version ``expected`` to the next one, or raise VersionConflict."""
    result = conn.execute(update(Plan).where(Plan.id == plan_id, Plan.version == expected)
                          .values(version=Plan.version + 1, updated_at=datetime.now(), **values))
    if result.rowcount != 1:
        current = get_plan(conn, plan_id)["version"]
        raise VersionConflict(f"plan {plan_id} is at version {current}, not {expected}: reload it; "
                              "nothing was overwritten")
    return expected + 1


def save_moves(engine: Engine, plan_id: int, moves: dict[str, str], expected_version: int, actor: str,
               *, scores: dict | None = None, status: str | None = None) -> int:
    """Give the units in ``moves`` their new community; returns the new version."""
    with engine.begin() as conn:
        values = {"scores": scores} if scores is not None else {}
        if status:
            values["status"] = status
        version = _bump(conn, plan_id, expected_version, **values)
        stmt = (update(PlanAssignment)
                .where(PlanAssignment.plan_id == plan_id, PlanAssignment.unit_code == bindparam("unit"))
                .values(community_code=bindparam("community")))
        rows = [{"unit": u, "community": c} for u, c in moves.items()]
        for start in range(0, len(rows), BATCH):
            conn.execute(stmt, rows[start:start + BATCH])
        _audit(conn, actor, "plan:edit", str(plan_id), {"units": len(rows), "version": version})
    return version


def set_status(engine: Engine, plan_id: int, status: str, expected_version: int, actor: str,
               comment: str | None = None) -> int:
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, status=status, comment=comment)
        _audit(conn, actor, f"plan:{status}", str(plan_id), {"comment": comment, "version": version})
    return version


def adopt(engine: Engine, plan_id: int, expected_version: int, actor: str, communities: gpd.GeoDataFrame,
          assignment: pd.Series, facility_communities: pd.Series, cell_communities: pd.Series) -> int:
    """Make the plan's communities the current ones, in one transaction.

    ``communities``: code, name, street_code, district_code, geometry (EPSG:4326) of every
    community of the streets the plan covers; ``assignment``: unit code → community code;
    ``facility_communities`` and ``cell_communities``: code → community code, re-derived by
    location. The communities they replace go to ``community_history`` with today's date.
    """
    today = date.today()
    streets = sorted(set(communities["street_code"]))
    with engine.begin() as conn:
        version = _bump(conn, plan_id, expected_version, status="adopted")
        current = Community.__table__
        history = CommunityHistory.__table__
        columns = ["code", "name", "street_code", "district_code", "valid_from", "geom"]
        in_plan = current.c.street_code.in_(streets)
        conn.execute(insert(history).from_select(
            [*columns, "valid_to", "plan_id"],
            select(*[current.c[c] for c in columns], literal(today), literal(plan_id)).where(in_plan)))
        conn.execute(delete(current).where(in_plan))
        geoms = as_stored_type(np.asarray(communities.geometry.values, dtype=object), "polygon")
        rows = [{"code": c, "name": n, "street_code": s, "district_code": d, "valid_from": today,
                 "geom_wkb": w}
                for c, n, s, d, w in zip(communities["code"], communities["name"], communities["street_code"],
                                         communities["district_code"], shapely.to_wkb(geoms), strict=True)]
        stmt = insert(current).values({c: bindparam(c) for c in ("code", "name", "street_code",
                                                                  "district_code", "valid_from")}
                                      | {"geom": func.ST_GeomFromWKB(bindparam("geom_wkb"), 4326)})
        conn.execute(stmt, rows)
        for table, mapping in ((Unit.__table__, assignment), (Facility.__table__, facility_communities),
                               (GridCell.__table__, cell_communities)):
            stmt = update(table).where(table.c.code == bindparam("match")).values(
                community_code=bindparam("community"))
            pairs = [{"match": k, "community": v} for k, v in mapping.items()]
            for start in range(0, len(pairs), BATCH):
                conn.execute(stmt, pairs[start:start + BATCH])
        _audit(conn, actor, "plan:adopt", str(plan_id), {"streets": streets, "communities": len(rows),
                                                          "version": version})
    return version


def _audit(conn: Connection, actor: str, action: str, code: str, detail: dict) -> None:
    conn.execute(insert(AuditLog).values(at=datetime.now(), actor=actor, action=action, layer="plans",
                                         object_code=code, detail=detail))
