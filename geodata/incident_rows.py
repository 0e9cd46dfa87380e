"""Incidents as stored rows: cases, their steps, versions, photo metadata, the cells supervisors
hold, where a location falls, and the sums the rates are made of. The loop itself (which step
may follow which, who may take it, the clock) is :mod:`layers.incidents.loop`; only SQL lives here.

Every change of a case is a compare-and-set on its ``version`` (and status): two supervisors
acting on the same version, one wins and the other finds no row to change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from datetime import date, datetime, time, timedelta
from typing import Any

import shapely
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from geodata import dialect
from geodata.citus import citus_installed
from geodata.db import BATCH
from geodata.models import (
    SRID,
    Community,
    GridAssignment,
    GridCell,
    Incident,
    IncidentDay,
    IncidentMonth,
    IncidentPhoto,
    IncidentStep,
    Street,
)
from geodata.partitions import DISTRICT, MOVED, MOVING
from geodata.routing import districts_of_codes, districts_under, in_districts, starting

T = Incident.__table__
STEPS = IncidentStep.__table__
PHOTOS = IncidentPhoto.__table__
ASSIGN = GridAssignment.__table__

#: Columns of a case as the loop and the API see it (besides lon/lat).
FIELDS = (
    "id",
    "code",
    "category",
    "description",
    "status",
    "reported_at",
    "filed_at",
    "dispatched_at",
    "handled_at",
    "feedback_at",
    "closed_at",
    "evaluated_at",
    "due_at",
    "grid_code",
    "community_code",
    "street_code",
    "district_code",
    "location_precision",
    "version",
    "reporter",
    "rework_count",
    "evaluation",
    "department_code",
    "handler",
    "supervise_count",
    "supervise_level",
    "supervised_at",
)


def _conn(engine: Engine | Connection):
    return engine.connect() if isinstance(engine, Engine) else nullcontext(engine)


def _point(lon: float, lat: float):
    return func.ST_GeomFromWKB(literal(shapely.to_wkb(shapely.Point(lon, lat))), SRID)


def _select():
    return select(
        *[T.c[f] for f in FIELDS], func.ST_X(T.c.geom).label("lon"), func.ST_Y(T.c.geom).label("lat")
    )


def _containing(conn: Connection, table, lon: float, lat: float, *columns):
    eps = 1e-9
    stmt = (
        select(*columns)
        .where(dialect.bbox_filter(conn, table, (lon - eps, lat - eps, lon + eps, lat + eps)))
        .where(func.ST_Intersects(table.c.geom, _point(lon, lat)))
        .order_by(columns[0])
        .limit(1)
    )
    return conn.execute(stmt).first()


# --- where a case is ------------------------------------------------------------------------


def locate(conn: Connection, lon: float, lat: float) -> dict:
    """The grid cell, community, street and district at a point (``None`` where none holds it)."""
    cells, communities, streets = GridCell.__table__, Community.__table__, Street.__table__
    cell = _containing(conn, cells, lon, lat, cells.c.code, cells.c.community_code, cells.c.district_code)
    community = _containing(
        conn,
        communities,
        lon,
        lat,
        communities.c.code,
        communities.c.street_code,
        communities.c.district_code,
    )
    street = None
    if community is None:
        street = _containing(conn, streets, lon, lat, streets.c.code, streets.c.district_code)
    found = {
        "grid_code": cell.code if cell else None,
        "community_code": community.code if community else (cell.community_code if cell else None),
        "street_code": community.street_code if community else (street.code if street else None),
    }
    found["district_code"] = (
        community.district_code
        if community
        else cell.district_code
        if cell
        else street.district_code
        if street
        else None
    )
    if cell is not None and cell.community_code and cell.community_code != found["community_code"]:
        # a case belongs to its cell, and the cell to one community: after an adoption and before
        # the cells are regenerated the two can disagree, and the case must not be filed under a
        # community its cell's supervisor does not work in
        found["community_code"] = cell.community_code
        found["street_code"] = cell.community_code[:9]
        found["district_code"] = cell.district_code or found["district_code"]
    if found["street_code"] is None and found["community_code"]:
        found["street_code"] = found["community_code"][:9]
    return found


def area_point(conn: Connection, level: str, code: str) -> dict | None:
    """A point inside community or street ``code`` (for a case located only to it), with its
    community, street and district codes; None when there is no such area."""
    table = Community.__table__ if level == "community" else Street.__table__
    surface = func.ST_PointOnSurface(table.c.geom)
    row = conn.execute(
        select(
            func.ST_X(surface),
            func.ST_Y(surface),
            table.c.district_code,
            table.c.street_code if level == "community" else table.c.code,
        ).where(table.c.code == code)
    ).first()
    if row is None:
        return None
    return {
        "lon": float(row[0]),
        "lat": float(row[1]),
        "district_code": row[2],
        "street_code": row[3],
        "community_code": code if level == "community" else None,
        "grid_code": None,
    }


def cells_of(conn: Connection, codes: Iterable[str]) -> dict[str, str]:
    """The community of each of ``codes`` that is a stored cell."""
    cells = GridCell.__table__
    codes = list(codes)
    found: dict[str, str] = {}
    for start in range(0, len(codes), BATCH):
        found.update(
            conn.execute(
                select(cells.c.code, cells.c.community_code).where(
                    cells.c.code.in_(codes[start : start + BATCH]),
                    in_districts(cells, districts_of_codes(conn, codes[start : start + BATCH])),
                )
            ).all()
        )
    return found


def cells_extent(engine: Engine, prefix: str | None, codes: Sequence[str] | None = None):
    """Bounding box of the cells under ``prefix`` (or exactly ``codes``), or None."""
    cells = GridCell.__table__
    with engine.connect() as conn:
        minx, miny, maxx, maxy = dialect.bounds_columns(conn, cells.c.geom)
        stmt = select(func.min(minx), func.min(miny), func.max(maxx), func.max(maxy))
        if codes:
            stmt = stmt.where(cells.c.code.in_(list(codes)))
        elif prefix:
            stmt = stmt.where(cells.c.code.startswith(prefix, autoescape=True),
                              in_districts(cells, districts_under(conn, prefix)))
        row = conn.execute(stmt).one()
    return None if row[0] is None else tuple(float(v) for v in row)


# --- cases ----------------------------------------------------------------------------------


def case_number(day: date | datetime | str, number: int) -> str:
    """A case's number (案件编号) as every new case gets it, from the app or the demo:
    ``YYYYMMDD-NNNN``, the day it was reported and its number (at least four digits, more when
    it needs them). Numbers stored before are kept as they are."""
    stamp = day if isinstance(day, str) else day.strftime("%Y%m%d")
    return f"{stamp}-{int(number):04d}"


def insert_incident(conn: Connection, values: dict, lon: float, lat: float, code_prefix: str) -> dict:
    """Store a new case (its code: :func:`case_number` of ``code_prefix``, the day, and its id)
    and return it."""
    marker = f"new-{uuid.uuid4().hex[:20]}"  # unique until the id gives the case its code
    new_id = conn.execute(
        insert(T)
        .values(code=marker, geom=_point(lon, lat), version=1, rework_count=0, **values)
        .returning(T.c.id)
    ).scalar_one()
    code = case_number(code_prefix, new_id)
    district = values.get("district_code")
    conn.execute(update(T).where(T.c.id == new_id, *_in(district)).values(code=code))
    return get_incident(conn, code, district)


def change_code(conn: Connection, incident_id: int, code: str) -> None:
    """Give a stored case its own code (an imported request keeps its source's id)."""
    conn.execute(update(T).where(T.c.id == incident_id).values(code=code))


def last_steps(engine: Engine | Connection, incident_ids: Sequence[int]) -> dict[int, dict]:
    """The latest step of each case (for status notes)."""
    out: dict[int, dict] = {}
    ids = list(incident_ids)
    with _conn(engine) as conn:
        for start in range(0, len(ids), BATCH):
            found = conn.execute(
                select(STEPS.c.incident_id, STEPS.c.step, STEPS.c.at, STEPS.c.note)
                .where(STEPS.c.incident_id.in_(ids[start : start + BATCH]))
                .order_by(STEPS.c.incident_id, STEPS.c.at, STEPS.c.id)
            ).mappings()
            for r in found:
                out[r["incident_id"]] = dict(r)
    return out


def get_incident(engine: Engine | Connection, code: str, district: str | None = None) -> dict | None:
    """The case ``code`` (in ``district`` when its district is known: the statement then goes to
    that district's part alone — a case's code names no district)."""
    with _conn(engine) as conn:
        row = conn.execute(_select().where(T.c.code == code, *_in(district))).mappings().first()
    return dict(row) if row else None


def _in(district: str | None, table=T) -> list:
    """The condition naming a case's district, when it is known (none otherwise)."""
    return [table.c.district_code == district] if district else []


def change_incident(
    conn: Connection,
    incident_id: int,
    version: int,
    statuses: Iterable[str],
    values: dict,
    *,
    rework: bool = False,
    district: str | None = None,
) -> bool:
    """Compare-and-set: apply ``values`` (and raise the version; count one more rework when
    ``rework``) only when the case is still at ``version`` and in one of ``statuses``. Whether it
    was. ``district``: the case's, named in the statement."""
    extra = {"rework_count": T.c.rework_count + 1} if rework else {}
    stmt = (
        update(T)
        .where(T.c.id == incident_id, T.c.version == version, T.c.status.in_(list(statuses)),
               *_in(district))
        .values(version=T.c.version + 1, **values, **extra)
    )
    return conn.execute(stmt).rowcount == 1


def add_step(
    conn: Connection,
    incident_id: int,
    step: str,
    at: datetime,
    actor: str | None,
    note: str | None = None,
    detail: str | None = None,
    *, client_id: str | None = None, client_hash: str | None = None, district_code: str | None = None,
) -> int:
    """Record a step of a case's history (``detail``: what it chose — a department, an
    evaluation, a 督办 level; ``client_id``/``client_hash``: the phone-made id it was sent with);
    returns the step's id (photos taken with it refer to it). The step carries its case's
    district (looked up when ``district_code`` is not given)."""
    return conn.execute(
        insert(STEPS)
        .values(incident_id=incident_id, step=step, at=at, actor=actor, note=note, detail=detail,
                client_id=client_id, client_hash=client_hash,
                district_code=district_code or case_district(conn, incident_id))
        .returning(STEPS.c.id)
    ).scalar_one()


def case_district(conn: Connection, incident_id: int) -> str | None:
    """The district of a case: its steps and photos are stored with it (the same partition)."""
    return conn.execute(select(T.c.district_code).where(T.c.id == incident_id)).scalar_one_or_none()


def latest_step_id(conn: Connection, incident_id: int, district: str | None = None) -> int | None:
    """The id of a case's latest step (what a photo added now is evidence of)."""
    return conn.execute(
        select(STEPS.c.id).where(STEPS.c.incident_id == incident_id, *_in(district, STEPS))
        .order_by(STEPS.c.at.desc(), STEPS.c.id.desc()).limit(1)
    ).scalar_one_or_none()


# --- what phones sent (client ids) ------------------------------------------------------------


def reports_by_client_id(engine: Engine | Connection, client_id: str) -> list[dict]:
    """The cases reported with the phone-made id ``client_id`` (by anyone; at most one per
    reporter): ``code``, ``reporter``, ``client_hash``."""
    with _conn(engine) as conn:
        found = conn.execute(
            select(T.c.code, T.c.reporter, T.c.client_hash).where(T.c.client_id == client_id).order_by(T.c.id)
        ).mappings()
        return [dict(r) for r in found]


def steps_by_client_id(engine: Engine | Connection, client_id: str) -> list[dict]:
    """The steps taken with the phone-made id ``client_id`` (by anyone; at most one per actor):
    ``code`` (of the case), ``actor``, ``client_hash``."""
    with _conn(engine) as conn:
        found = conn.execute(
            select(T.c.code, STEPS.c.actor, STEPS.c.client_hash)
            .join(T, T.c.id == STEPS.c.incident_id)
            .where(STEPS.c.client_id == client_id)
            .order_by(STEPS.c.id)
        ).mappings()
        return [dict(r) for r in found]


def steps_of(engine: Engine | Connection, incident_id: int, district: str | None = None) -> list[dict]:
    """The steps of a case, oldest first (``district``: the case's, named in the statement)."""
    with _conn(engine) as conn:
        rows = conn.execute(
            select(STEPS.c.id, STEPS.c.step, STEPS.c.at, STEPS.c.actor, STEPS.c.note, STEPS.c.detail)
            .where(STEPS.c.incident_id == incident_id, *_in(district, STEPS))
            .order_by(STEPS.c.at, STEPS.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def steps_for(engine: Engine | Connection, incident_ids: Sequence[int]) -> list[dict]:
    """The steps of many cases (for exports), with ``incident_id``."""
    out: list[dict] = []
    ids = list(incident_ids)
    with _conn(engine) as conn:
        for start in range(0, len(ids), BATCH):
            rows = conn.execute(
                select(STEPS.c.incident_id, STEPS.c.step, STEPS.c.at, STEPS.c.actor, STEPS.c.note)
                .where(STEPS.c.incident_id.in_(ids[start : start + BATCH]))
                .order_by(STEPS.c.incident_id, STEPS.c.at, STEPS.c.id)
            ).mappings()
            out.extend(dict(r) for r in rows)
    return out


def scope_clause(prefix: str | None, cells: Sequence[str] | None = None):
    """Cases a scope covers: in a cell under ``prefix`` (or one of ``cells``), or placed only
    approximately in a community or street under it (those are in no cell)."""
    clauses = []
    if cells:
        clauses.append(T.c.grid_code.in_(list(cells)))
    if prefix:
        clauses.append(T.c.grid_code.startswith(prefix, autoescape=True))
        if len(prefix) <= 12:
            clauses.append(and_(T.c.grid_code.is_(None),
                                T.c.community_code.startswith(prefix, autoescape=True)))
        if len(prefix) <= 9:
            clauses.append(
                and_(
                    T.c.grid_code.is_(None), T.c.community_code.is_(None),
                    T.c.street_code.startswith(prefix, autoescape=True),
                )
            )
    return or_(*clauses) if clauses else literal(True)


def case_filters(
    conn: Connection,
    *,
    prefix: str | None = None,
    cells: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    category: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    bbox: dialect.BBox | None = None,
    department: str | None = None,
    overdue_at: datetime | None = None,
    needs_at: datetime | None = None,
    open_statuses: Sequence[str] = (),
    new_status: str = "reported",
) -> list:
    """The conditions that select the cases of a list, a map and their counts — one builder, so
    a count is always of the cases the list shows: the scope (``prefix`` or exactly ``cells``),
    ``statuses``, ``category``, reported between ``since`` and ``until``, within ``bbox``,
    dispatched to ``department``; ``overdue_at``: only open cases past their due time then;
    ``needs_at``: only those that need someone then (new, returned for rework, or overdue).
    ``open_statuses``: what is open (needed by the last two); ``new_status``: what is new for
    the reader (a report for the grid and the 指挥中心, a dispatched case for a department)."""
    where = [scope_clause(prefix, cells) if (prefix or cells) else literal(True)]
    if prefix and not cells:
        where.append(in_districts(T, districts_under(conn, prefix)))
    if department:
        where.append(T.c.department_code == department)
    if statuses:
        where.append(T.c.status.in_(list(statuses)))
    if category:
        where.append(T.c.category == category)
    if since:
        where.append(T.c.reported_at >= since)
    if until:
        where.append(T.c.reported_at <= until)
    if bbox:
        where.append(dialect.bbox_filter(conn, T, bbox))
    is_open = T.c.status.in_(list(open_statuses))
    if overdue_at is not None:
        where.append(and_(is_open, T.c.due_at.is_not(None), T.c.due_at < overdue_at))
    if needs_at is not None:
        # as loop.needs_attention: new, returned for rework (dispatched again), or overdue
        where.append(and_(is_open, or_(
            T.c.status == new_status,
            and_(T.c.status == "dispatched", T.c.rework_count > 0),
            and_(T.c.due_at.is_not(None), T.c.due_at < needs_at))))
    return where


def list_incidents(
    engine: Engine | Connection,
    *,
    limit: int | None = None,
    offset: int = 0,
    order_due: bool = False,
    newest_first: bool = False,
    **filters: Any,
) -> list[dict]:
    """Cases selected by :func:`case_filters` (``filters``: its keywords), at most ``limit``;
    ``order_due``: the soonest due first; ``newest_first``: the last closed (or reported) first."""
    with _conn(engine) as conn:
        stmt = _select().where(*case_filters(conn, **filters))
        if newest_first:
            stmt = stmt.order_by(func.coalesce(T.c.closed_at, T.c.reported_at).desc(), T.c.id.desc())
        else:
            stmt = stmt.order_by(*((T.c.due_at.is_(None), T.c.due_at) if order_due else ()), T.c.id)
        rows = conn.execute(stmt.offset(offset or None).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def open_near(
    conn: Connection,
    category: str,
    lon: float,
    lat: float,
    box_deg: tuple[float, float],
    closed: Sequence[str],
) -> list[dict]:
    """Open cases of ``category`` whose point is within the box around (lon, lat)."""
    dx, dy = box_deg
    stmt = (
        _select()
        .where(dialect.bbox_filter(conn, T, (lon - dx, lat - dy, lon + dx, lat + dy)))
        .where(T.c.category == category, T.c.status.not_in(list(closed)))
        .order_by(T.c.id)
        .limit(50)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def set_step_hours(conn: Connection, rows: list[dict]) -> None:
    """Store the working hours of steps: ``[{"id": …, "district_code": …, "filing_wh": …, …}]``
    (each case by its id and district: on a store split by district, in its part alone)."""
    if not rows:
        return
    keys = [k for k in rows[0] if k not in ("id", "district_code")]
    by_id = update(T).where(T.c.id == bindparam("match_id")).values({k: bindparam(k) for k in keys})
    in_district = by_id.where(T.c.district_code == bindparam("match_district"))
    for stmt, some in ((in_district, [r for r in rows if r.get("district_code")]),
                       (by_id, [r for r in rows if not r.get("district_code")])):  # a case with none
        for start in range(0, len(some), BATCH):
            conn.execute(stmt, [{"match_id": r["id"], "match_district": r.get("district_code"),
                                 **{k: r[k] for k in keys}} for r in some[start:start + BATCH]])


def timing_rows(engine: Engine | Connection, only_missing: bool = True) -> list[tuple]:
    """``id reported filed dispatched handled closed district`` of cases (those without step hours)."""
    with _conn(engine) as conn:
        stmt = select(T.c.id, T.c.reported_at, T.c.filed_at, T.c.dispatched_at, T.c.handled_at, T.c.closed_at,
                      T.c.district_code)
        if only_missing:
            stmt = stmt.where(T.c.filing_wh.is_(None), T.c.filed_at.is_not(None))
        return conn.execute(stmt).all()


# --- the sums, counted once after a bulk write ----------------------------------------------


def _sums_sql():
    """Migration 0008's module: the sums' SQL is written once, there (as migration
    ``district_incident_rows`` reads it too)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("migrations") / "versions" / "0008_incident_sums.py"
    spec = importlib.util.spec_from_file_location("gridplan_migration_0008", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pause_sums(conn: Connection) -> bool:
    """On PostgreSQL, leave the incident sums of this transaction's writes to one
    :func:`recount_sums` at its end, instead of a row trigger's upsert per case written (the
    demo's year of cases: 3 of its 5 s on PostgreSQL, and 20 times that on Citus, where each
    upsert goes through the distributed executor). Whether they were paused: SQLite's triggers
    keep counting, row by row."""
    if conn.dialect.name != "postgresql":
        return False
    if not conn.execute(text("SELECT to_regclass('incident_days') IS NOT NULL")).scalar_one():
        return False  # a database migrated before the sums (tests of that migration)
    if citus_installed(conn):  # the triggers run on the workers' shards: tell them too
        conn.exec_driver_sql("SET LOCAL citus.propagate_set_commands = 'local'")
    conn.exec_driver_sql(MOVING)
    return True


def recount_sums(conn: Connection) -> None:
    """Count every sum again from the cases, as migration 0008 first filled them (its own
    statement: on Citus the shards of each district count theirs, the tables co-located), and
    count what this transaction writes from now on row by row again (the pause of
    :func:`pause_sums` ends). For a writer that replaced every case (the demo)."""
    sql = _sums_sql()
    for table, unit in sql.TABLES.items():
        conn.exec_driver_sql(f"DELETE FROM {table}")
        parts = sql._parts(conn.dialect.name, unit, "r.", "", "FROM incidents r")
        conn.exec_driver_sql(sql._apply(table, parts, upsert=False))  # no row left to add to
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(MOVED)

def count_sums_of(conn: Connection, ids: Iterable[int], districts: Iterable[str] = ()) -> None:
    """Add to the sums the cases ``ids``, written on this transaction while :func:`pause_sums`
    held the row triggers off (a bulk import: one statement per table and batch instead of a
    trigger's upserts per row), and count what this transaction writes from now on row by row
    again. ``districts``: those the cases lie in (the statement then names them: on a store split
    by district it reads their parts alone)."""
    sql = _sums_sql()
    ids = sorted({int(i) for i in ids})
    named = sorted({str(d) for d in districts})
    within = ""
    if named and all(DISTRICT.fullmatch(d) for d in named):
        within = "district_code IN (" + ", ".join(f"'{d}'" for d in named) + ") AND "
    for start in range(0, len(ids), BATCH):
        chosen = ", ".join(str(i) for i in ids[start:start + BATCH])  # integers: nothing to quote
        source = f"FROM (SELECT * FROM incidents WHERE {within}id IN ({chosen})) r"
        for table, unit in sql.TABLES.items():
            conn.exec_driver_sql(sql._apply(table, sql._parts(conn.dialect.name, unit, "r.", "", source)))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(MOVED)


# --- rates ----------------------------------------------------------------------------------


SUMS = ("reported", "filed", "closed", "due", "due_closed", "due_closed_on_time", "returned",
        "filing_sum", "filing_n", "dispatch_sum", "dispatch_n", "handling_sum", "handling_n",
        "verify_sum", "verify_n")
DUE = ("due", "due_closed", "due_closed_on_time")


def _sum_tables(first: date, last: date) -> list[tuple]:
    """Where the sums of ``first``..``last`` (days, both included) are stored: the whole months in
    ``incident_months``, the days before and after them in ``incident_days`` — (table, its date
    column, the ranges to read)."""
    start = first if first.day == 1 else _month_after(first)  # the first whole month
    end = (last + timedelta(days=1)).replace(day=1)  # the month after the last whole one
    parts = []
    if start < end:
        parts.append((IncidentMonth.__table__, "month", [(start, end - timedelta(days=1))]))
        edges = [(first, start - timedelta(days=1)), (end, last)]
    else:
        edges = [(first, last)]
    edges = [(a, b) for a, b in edges if a <= b]
    if edges:
        parts.append((IncidentDay.__table__, "day", edges))
    return parts


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _stored_sums(
    conn: Connection, group: str, first: date, last: date, prefix: str | None, names: Sequence[str] = SUMS,
    districts: list[str] | None = None,
) -> dict[str, dict]:
    """The stored sums per code of ``group`` from ``first`` to ``last`` (days, both included):
    the whole months from ``incident_months``, the days before and after them from ``incident_days``."""
    out: dict[str, dict] = {}
    if first > last:
        return out
    parts = _sum_tables(first, last)
    for table, unit, ranges in parts:
        key = table.c[_SUM_CODES[group]]
        when = table.c[unit]
        stmt = (select(key.label("code"), *[func.sum(table.c[n]).label(n) for n in names])
                .where(key != "", or_(*[when.between(a, b) for a, b in ranges])).group_by(key))
        if prefix:
            stmt = stmt.where(_sums_under(table, prefix, districts))
        for row in conn.execute(stmt).mappings():
            into = out.setdefault(row["code"], dict.fromkeys(names, 0))
            for n in names:
                into[n] += row[n] or 0
    return out


_SUM_CODES = {"cell": "grid_code", "community": "community_code", "street": "street_code",
              "district": "district_code"}


def _whole_days(since: datetime, until: datetime) -> bool:
    return since.time() == time.min and until.time() == time.max


def _level(prefix: str) -> str:
    """The level of a code prefix (codes nest, so the level of the prefix is enough)."""
    n = len(prefix)
    return "district" if n <= 6 else "street" if n <= 9 else "community" if n <= 12 else "cell"


def _sums_under(table, prefix: str, districts: list[str] | None):
    """The rows of a sums table (``incident_days``/``incident_months``) under ``prefix``, in
    ``districts``."""
    return and_(starting(table.c[_SUM_CODES[_level(prefix)]], prefix), in_districts(table, districts))


def _cases_under(prefix: str, districts: list[str] | None):
    """The cases under ``prefix`` (at its level: :func:`_rate_levels`), in ``districts``."""
    level = _rate_levels()[_level(prefix)]
    return and_(level.startswith(prefix, autoescape=True), in_districts(T, districts))


def rate_sums(
    engine: Engine | Connection,
    group: str,
    since: datetime,
    until: datetime,
    now: datetime,
    prefix: str | None = None,
) -> list[dict]:
    """The sums the rates are made of, per ``group`` (``cell``, ``community``, ``street`` or
    ``district``): reported, filed, closed in the period; due in the period (deadline between
    ``since`` and ``min(until, now)``) and of those closed, closed on time; verifications and
    returns of cases closed in the period; step hours summed and counted. One row per code that
    has any case, whether or not it has any in the period.

    Cases placed only approximately (no cell) count in their community and street, never in a cell.

    A period of whole days (as :func:`layers.incidents.rates.period` gives) is summed from the sums the
    database keeps per cell and month (``incident_months``) and, for the days at the ends of the
    period, per cell and day (``incident_days``): a few thousand rows instead of every case. Only
    the cases due earlier today (when ``now`` falls inside the period) are read from ``incidents``.
    Any other period is one scan of the cases (:func:`rate_sums_scan`); both give the same figures.
    """
    if not _whole_days(since, until):
        return rate_sums_scan(engine, group, since, until, now, prefix)
    first, last = since.date(), until.date()
    end_due = min(until, now)
    due_last, today = last, None  # the last whole day of deadlines; the part of today up to now
    if end_due < until:
        due_last = end_due.date() if end_due.time() == time.max else end_due.date() - timedelta(days=1)
        if end_due >= since and end_due.time() != time.max:
            today = (datetime.combine(end_due.date(), time.min), end_due)
    months = IncidentMonth.__table__
    key = months.c[_SUM_CODES[group]]
    present = select(key).where(key != "").group_by(key).having(func.sum(months.c.reported) > 0).order_by(key)
    with _conn(engine) as conn:
        districts = districts_under(conn, prefix)
        if prefix:
            present = present.where(_sums_under(months, prefix, districts))
        codes = conn.execute(present).scalars().all()
        sums = _stored_sums(conn, group, first, last, prefix, districts=districts)
        if due_last < last:  # deadlines after now are not due yet
            later = _stored_sums(conn, group, max(first, due_last + timedelta(days=1)), last, prefix, DUE,
                                 districts)
            for code, row in later.items():
                for n in DUE:
                    sums[code][n] -= row[n]
        if today is not None:
            for row in _due_sums(conn, group, today[0], today[1], prefix, districts):
                into = sums.setdefault(row["code"], dict.fromkeys(SUMS, 0))
                for n in DUE:
                    into[n] += row[n]
    zero = {n: 0.0 if n.endswith("_sum") else 0 for n in SUMS}
    return [{"code": code, **(zero | sums.get(code, {}))} for code in codes]


def _stored_by_month(
    conn: Connection, first: date, last: date, prefix: str | None, names: Sequence[str] = SUMS,
    districts: list[str] | None = None,
) -> dict[date, dict]:
    """The stored district-wide sums per calendar month (its first day) from ``first`` to
    ``last`` (days, both included): the whole months in one query grouped by month on
    ``incident_months``, the days at the ends in one query grouped by day on ``incident_days``."""
    out: dict[date, dict] = {}
    if first > last:
        return out
    parts = _sum_tables(first, last)
    for table, unit, ranges in parts:
        when = table.c[unit]
        stmt = (select(when.label("when"), *[func.sum(table.c[n]).label(n) for n in names])
                .where(table.c.district_code != "", or_(*[when.between(a, b) for a, b in ranges]))
                .group_by(when))
        if prefix:
            stmt = stmt.where(_sums_under(table, prefix, districts))
        for row in conn.execute(stmt).mappings():
            day = row["when"]
            day = date.fromisoformat(day[:10]) if isinstance(day, str) else day
            into = out.setdefault(day.replace(day=1), dict.fromkeys(names, 0))
            for n in names:
                into[n] += row[n] or 0
    return out


def monthly_rate_sums(
    engine: Engine | Connection,
    since: datetime,
    until: datetime,
    now: datetime,
    prefix: str | None = None,
) -> dict[date, dict] | None:
    """The district-wide sums the rates are made of, per calendar month (keyed by its first day)
    of a period of whole days, with ``supervised`` (cases dispatched in the month that were chased):
    the same figures as :func:`rate_sums` summed over the districts for each month on its own, in
    a handful of grouped queries instead of a round of queries per month. ``None`` when the
    period is not made of whole days or no district has any case (the chart then shows gaps)."""
    if not _whole_days(since, until):
        return None
    first, last = since.date(), until.date()
    months = IncidentMonth.__table__
    present = select(months.c.district_code).where(months.c.district_code != "").group_by(
        months.c.district_code).having(func.sum(months.c.reported) > 0).limit(1)
    end_due = min(until, now)
    due_last, today = last, None  # as in rate_sums: deadlines after now are not due yet
    if end_due < until:
        due_last = end_due.date() if end_due.time() == time.max else end_due.date() - timedelta(days=1)
        if end_due >= since and end_due.time() != time.max:
            today = (datetime.combine(end_due.date(), time.min), end_due)
    chased = (select(T.c.dispatched_at)
              .where(T.c.supervise_count > 0, T.c.dispatched_at >= since, T.c.dispatched_at <= until,
                     T.c.district_code.is_not(None)))
    with _conn(engine) as conn:
        districts = districts_under(conn, prefix)
        if prefix:
            present = present.where(_sums_under(months, prefix, districts))
            chased = chased.where(_cases_under(prefix, districts))
        if conn.execute(present).first() is None:
            return None
        sums = _stored_by_month(conn, first, last, prefix, districts=districts)
        if due_last < last:
            later = _stored_by_month(conn, max(first, due_last + timedelta(days=1)), last, prefix, DUE,
                                     districts)
            for month, row in later.items():
                for n in DUE:
                    sums[month][n] -= row[n]
        if today is not None:
            into = sums.setdefault(today[0].date().replace(day=1), dict.fromkeys(SUMS, 0))
            for row in _due_sums(conn, "district", today[0], today[1], prefix, districts):
                for n in DUE:
                    into[n] += row[n] or 0
        supervised: dict[date, int] = {}
        for (at,) in conn.execute(chased):
            at = datetime.fromisoformat(at) if isinstance(at, str) else at
            supervised[at.date().replace(day=1)] = supervised.get(at.date().replace(day=1), 0) + 1
    out: dict[date, dict] = {}
    month = first.replace(day=1)
    while month <= last:
        zero = {n: 0.0 if n.endswith("_sum") else 0 for n in SUMS}
        out[month] = zero | sums.get(month, {}) | {"supervised": supervised.get(month, 0)}
        month = _month_after(month)
    return out


def _rate_levels():
    community = func.coalesce(T.c.community_code, func.substr(T.c.grid_code, 1, 12))
    street = func.coalesce(T.c.street_code, func.substr(community, 1, 9))
    return {"cell": T.c.grid_code, "community": community, "street": street, "district": T.c.district_code}


def _due_sums(conn: Connection, group: str, low: datetime, high: datetime, prefix: str | None,
              districts: list[str] | None = None) -> list[dict]:
    """Cases due between ``low`` and ``high`` per ``group``: due, of those closed, closed on time."""
    levels = _rate_levels()
    key = levels[group]
    closed = T.c.closed_at.is_not(None)
    stmt = (
        select(
            key.label("code"),
            func.count().label("due"),
            func.sum(case((closed, 1), else_=0)).label("due_closed"),
            func.sum(case((and_(closed, T.c.closed_at <= T.c.due_at), 1), else_=0)).label(
                "due_closed_on_time"
            ),
        )
        .where(T.c.due_at >= low, T.c.due_at <= high, key.is_not(None))
        .group_by(key)
    )
    if prefix:
        stmt = stmt.where(_cases_under(prefix, districts))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def rate_sums_scan(
    engine: Engine | Connection,
    group: str,
    since: datetime,
    until: datetime,
    now: datetime,
    prefix: str | None = None,
) -> list[dict]:
    """The sums the rates are made of, per ``group`` (``cell``, ``community``, ``street`` or
    ``district``), in one scan of the cases: for periods not made of whole days, and the
    reference the daily sums are checked against. The same figures as :func:`rate_sums`.

    Cases placed only approximately (no cell) count in their community and street, never in a cell.
    """
    levels = _rate_levels()
    key = levels[group]
    end_due = min(until, now)

    def within(column, low, high):
        return and_(column >= low, column <= high)

    def count(cond):
        return func.sum(case((cond, 1), else_=0))

    closed_in = within(T.c.closed_at, since, until)
    due_in = within(T.c.due_at, since, end_due)
    columns = [
        key.label("code"),
        count(within(T.c.reported_at, since, until)).label("reported"),
        count(within(T.c.filed_at, since, until)).label("filed"),
        count(closed_in).label("closed"),
        count(due_in).label("due"),
        count(and_(due_in, T.c.closed_at.is_not(None))).label("due_closed"),
        count(and_(due_in, T.c.closed_at.is_not(None), T.c.closed_at <= T.c.due_at)).label(
            "due_closed_on_time"
        ),
        func.sum(case((closed_in, T.c.rework_count), else_=0)).label("returned"),
    ]
    for step, column, anchor in (
        ("filing", T.c.filing_wh, T.c.filed_at),
        ("dispatch", T.c.dispatch_wh, T.c.dispatched_at),
        ("handling", T.c.handling_wh, T.c.handled_at),
        ("verify", T.c.verify_wh, T.c.closed_at),
    ):
        inside = and_(within(anchor, since, until), column.is_not(None))
        columns.append(func.sum(case((inside, column), else_=0.0)).label(f"{step}_sum"))
        columns.append(count(inside).label(f"{step}_n"))
    stmt = select(*columns).where(key.is_not(None)).group_by(key).order_by(key)
    with _conn(engine) as conn:
        if prefix:
            stmt = stmt.where(_cases_under(prefix, districts_under(conn, prefix)))
        return [dict(r) for r in conn.execute(stmt).mappings()]


# --- supervisors' cells ---------------------------------------------------------------------


def assign(conn: Connection, user: str, cell: str, by: str) -> bool:
    """Assign ``user`` to ``cell``; False when already assigned."""
    exists = conn.execute(
        select(ASSIGN.c.user_name).where(ASSIGN.c.user_name == user, ASSIGN.c.cell_code == cell)
    ).first()
    if exists:
        return False
    conn.execute(
        insert(ASSIGN).values(user_name=user, cell_code=cell, assigned_at=datetime.now(), assigned_by=by)
    )
    return True


def unassign(conn: Connection, user: str, cell: str) -> bool:
    return (
        conn.execute(delete(ASSIGN).where(ASSIGN.c.user_name == user, ASSIGN.c.cell_code == cell)).rowcount
        > 0
    )


def assignments(
    engine: Engine | Connection, *, user: str | None = None, prefix: str | None = None
) -> list[dict]:
    """Who holds which cell (``user_name cell_code assigned_at assigned_by``)."""
    stmt = select(ASSIGN).order_by(ASSIGN.c.cell_code, ASSIGN.c.user_name)
    if user:
        stmt = stmt.where(ASSIGN.c.user_name == user)
    if prefix:
        stmt = stmt.where(ASSIGN.c.cell_code.startswith(prefix, autoescape=True))
    with _conn(engine) as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


# --- photos ---------------------------------------------------------------------------------


def add_photo(conn: Connection, incident_id: int, **values) -> int:
    """Record a photo of a case (stored with its case's district); returns its id."""
    values.setdefault("district_code", None)
    values["district_code"] = values["district_code"] or case_district(conn, incident_id)
    return conn.execute(
        insert(PHOTOS)
        .values(incident_id=incident_id, uploaded_at=datetime.now(), **values)
        .returning(PHOTOS.c.id)
    ).scalar_one()


def give_departments(conn: Connection, by_category: dict[str, str]) -> int:
    """Cases dispatched with no department get their category's (the demo's departments, added
    after its cases). Returns how many."""
    changed = 0
    for category, code in by_category.items():
        changed += conn.execute(
            update(T)
            .where(T.c.category == category, T.c.department_code.is_(None), T.c.dispatched_at.is_not(None))
            .values(department_code=code)
        ).rowcount
    return changed


def supervised_counts(
    engine: Engine | Connection, group: str, since: datetime, until: datetime, prefix: str | None = None
) -> dict[str, dict]:
    """Per code of ``group`` (``cell``, ``community``, ``street``, ``district`` or
    ``department``): cases dispatched between ``since`` and ``until`` that were chased (督办),
    those that reached a red warning, and the 督办 given to them."""
    levels = {**_rate_levels(), "department": T.c.department_code}
    key = levels[group]
    stmt = (
        select(
            key.label("code"),
            func.count().label("supervised"),
            func.sum(case((T.c.supervise_level == "red", 1), else_=0)).label("supervised_red"),
            func.sum(T.c.supervise_count).label("supervise_count"),
        )
        .where(T.c.supervise_count > 0, T.c.dispatched_at >= since, T.c.dispatched_at <= until,
               key.is_not(None))
        .group_by(key)
    )
    with _conn(engine) as conn:
        if prefix and group != "department":
            stmt = stmt.where(_cases_under(prefix, districts_under(conn, prefix)))
        return {r["code"]: {k: int(r[k] or 0) for k in ("supervised", "supervised_red", "supervise_count")}
                for r in conn.execute(stmt).mappings()}


def photos_of(engine: Engine | Connection, incident_id: int, district: str | None = None) -> list[dict]:
    """The photos of a case (``district``: the case's, named in the statement)."""
    with _conn(engine) as conn:
        rows = conn.execute(
            select(PHOTOS).where(PHOTOS.c.incident_id == incident_id, *_in(district, PHOTOS))
            .order_by(PHOTOS.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def photo(engine: Engine | Connection, photo_id: int) -> dict | None:
    with _conn(engine) as conn:
        row = conn.execute(select(PHOTOS).where(PHOTOS.c.id == photo_id)).mappings().first()
        return dict(row) if row else None


# --- after an adoption: cells passed on, cases placed again ------------------------------------


def assignments_of_cells(conn: Connection, cells: Sequence[str]) -> list[dict]:
    """Who holds which of ``cells`` (``user_name cell_code``)."""
    cells = list(cells)
    out: list[dict] = []
    for start in range(0, len(cells), BATCH):
        stmt = select(ASSIGN.c.user_name, ASSIGN.c.cell_code).where(
            ASSIGN.c.cell_code.in_(cells[start : start + BATCH])
        )
        out += [dict(r) for r in conn.execute(stmt).mappings()]
    return out


def pass_assignments(conn: Connection, successors: dict[str, str], by: str) -> list[dict]:
    """Give every supervisor holding a cell of ``successors`` (old code → new code) the new cell
    instead; returns ``{user, from, to}`` for each assignment passed on."""
    passed = []
    for row in assignments_of_cells(conn, sorted(successors)):
        old, user = row["cell_code"], row["user_name"]
        new = successors[old]
        if new == old:
            continue
        unassign(conn, user, old)
        assign(conn, user, new, by)
        passed.append({"user": user, "from": old, "to": new})
    return passed


def hand_over_cells(conn: Connection, origins: dict[str, str | None], successors: dict[str, str | None],
                    by: str) -> None:
    """After a hand edit of cells: those holding a cell of ``origins`` (new code → the cell it was
    cut from) hold the new cell too, and those holding a cell of ``successors`` (a code gone → the
    cell its ground went to) hold that cell instead (:func:`pass_assignments`)."""
    cut_from = {old: [new for new, o in origins.items() if o == old] for old in set(origins.values()) if old}
    for row in assignments_of_cells(conn, sorted(cut_from)):
        for new in cut_from[row["cell_code"]]:
            assign(conn, row["user_name"], new, by)
    pass_assignments(conn, {gone: to for gone, to in successors.items() if to}, by)


def open_cases_in(
    conn: Connection,
    statuses: Sequence[str],
    *,
    cells: Sequence[str] = (),
    communities: Sequence[str] = (),
    districts: Sequence[str] | None = None,
) -> list[dict]:
    """The cases in ``statuses`` in one of ``cells`` or filed under one of ``communities`` (of
    ``districts`` when given: the cells' and communities')."""
    found: dict[str, dict] = {}
    for column, codes in ((T.c.grid_code, list(cells)), (T.c.community_code, list(communities))):
        for start in range(0, len(codes), BATCH):
            stmt = (
                select(T.c.code, T.c.category, T.c.status, T.c.grid_code, T.c.community_code)
                .where(T.c.status.in_(list(statuses)), column.in_(codes[start : start + BATCH]))
                .order_by(T.c.code)
            )
            if districts is not None:
                stmt = stmt.where(T.c.district_code.in_(list(districts)))
            found.update({r["code"]: dict(r) for r in conn.execute(stmt).mappings()})
    return [found[c] for c in sorted(found)]


def open_cases_of_streets(
    conn: Connection, statuses: Sequence[str], streets: Sequence[str], districts: Sequence[str] | None = None
) -> list[dict]:
    """The cases in ``statuses`` whose cell, community or street lies in one of ``streets`` (in
    ``districts`` when given: the streets'), with their point (``lon``, ``lat``) and how
    precisely they are placed."""
    out = []
    for street in streets:
        stmt = select(
            T.c.id, T.c.code, T.c.grid_code, T.c.community_code, T.c.street_code, T.c.location_precision,
            T.c.district_code, func.ST_X(T.c.geom).label("lon"), func.ST_Y(T.c.geom).label("lat"),
        ).where(
            T.c.status.in_(list(statuses)),
            or_(
                T.c.grid_code.startswith(street, autoescape=True),
                T.c.community_code.startswith(street, autoescape=True),
                T.c.street_code == street,
            ),
        )
        if districts is not None:
            stmt = stmt.where(T.c.district_code.in_(list(districts)))
        out += [dict(r) for r in conn.execute(stmt).mappings()]
    return out


def set_places(conn: Connection, places: Sequence[dict]) -> None:
    """Give each case (``id``) its ``grid_code``, ``community_code`` and ``street_code``."""
    if not places:
        return
    values = {"grid_code": bindparam("grid"), "community_code": bindparam("community"),
              "street_code": bindparam("street")}
    # a case's district, when it has one, routes the change to its district's rows alone
    in_district = update(T).where(T.c.id == bindparam("case_id"), T.c.district_code == bindparam("district"))
    anywhere = update(T).where(T.c.id == bindparam("case_id"))
    for stmt, wanted in ((in_district.values(values), True), (anywhere.values(values), False)):
        rows = [
            {"case_id": p["id"], "grid": p["grid_code"], "community": p["community_code"],
             "street": p["street_code"]} | ({"district": p["district_code"]} if wanted else {})
            for p in places if bool(p.get("district_code")) == wanted
        ]
        for start in range(0, len(rows), BATCH):
            conn.execute(stmt, rows[start : start + BATCH])


def incident_counts(
    engine: Engine | Connection,
    *,
    now: datetime,
    open_statuses: Sequence[str],
    **filters: Any,
) -> dict:
    """How many cases :func:`case_filters` selects (``filters``: its keywords) — all of them
    (``total``), open, open past their deadline at ``now`` (overdue), and per status
    (``by_status``) — counted by the database, whatever a list or a map is cut at: the figures
    shown beside the cases drawn."""
    late = and_(T.c.due_at.is_not(None), T.c.due_at < now)
    with _conn(engine) as conn:
        stmt = (select(T.c.status, func.count(), func.coalesce(func.sum(case((late, 1), else_=0)), 0))
                .where(*case_filters(conn, open_statuses=open_statuses, **filters))
                .group_by(T.c.status))
        rows = conn.execute(stmt).all()
    by_status = {status: int(n) for status, n, _late in rows}
    return {
        "total": sum(by_status.values()),
        "open": sum(n for s, n in by_status.items() if s in open_statuses),
        "overdue": sum(int(late_n) for s, _n, late_n in rows if s in open_statuses),
        "by_status": by_status,
    }


def case_groups(
    engine: Engine | Connection,
    group: str,
    *,
    now: datetime,
    open_statuses: Sequence[str],
    **filters: Any,
) -> list[dict]:
    """The cases :func:`case_filters` selects, counted per ``group`` (``community`` or
    ``street``): ``code``, ``total``, ``open``, ``overdue`` (at ``now``) and where to draw the
    group (``lon``/``lat``: the mean of its cases' points). What a city-wide map draws when a view
    holds too many cases to pin each; cases in no community or street form a group of code ``""``."""
    key = func.coalesce(_rate_levels()[group], "")
    is_open = T.c.status.in_(list(open_statuses))
    late = and_(is_open, T.c.due_at.is_not(None), T.c.due_at < now)
    with _conn(engine) as conn:
        stmt = (
            select(key.label("code"), func.count().label("total"),
                   func.coalesce(func.sum(case((is_open, 1), else_=0)), 0).label("open"),
                   func.coalesce(func.sum(case((late, 1), else_=0)), 0).label("overdue"),
                   func.avg(func.ST_X(T.c.geom)).label("lon"), func.avg(func.ST_Y(T.c.geom)).label("lat"))
            .where(*case_filters(conn, open_statuses=open_statuses, **filters))
            .group_by(key).order_by(key)
        )
        rows = conn.execute(stmt).mappings().all()
    return [{"code": r["code"], "total": int(r["total"]), "open": int(r["open"]),
             "overdue": int(r["overdue"]), "lon": round(float(r["lon"]), 6), "lat": round(float(r["lat"]), 6)}
            for r in rows]


# --- the rates per department (处置部门) ---------------------------------------------------------


def department_sums(
    engine: Engine | Connection, since: datetime, until: datetime, now: datetime,
    open_statuses: Sequence[str], prefix: str | None = None,
) -> dict[str, dict]:
    """Per department code, over the period ``since``–``until``: ``dispatched`` (cases
    dispatched to it then), of those still its own ``handled``, ``handled_on_time`` (by their
    deadline) and ``overdue`` (handled late, or open past their deadline at ``now``),
    ``returned`` (cases it sent back to the 指挥中心 then: 退回) and ``supervised`` (督办 given then
    while a case was its own). ``prefix``: cases of one district, street, community or cell."""
    out: dict[str, dict] = {}

    def row(code: str) -> dict:
        return out.setdefault(code, {"dispatched": 0, "handled": 0, "handled_on_time": 0, "overdue": 0,
                                     "returned": 0, "supervised": 0})

    in_period = and_(STEPS.c.at >= since, STEPS.c.at <= until)
    base = STEPS.join(T, T.c.id == STEPS.c.incident_id)
    with _conn(engine) as conn:
        districts = districts_under(conn, prefix)
        if prefix:
            in_period = and_(in_period, _cases_under(prefix, districts))
        # a step from before departments names none: the case's own department is meant
        to = func.coalesce(STEPS.c.detail, T.c.department_code)
        dispatched = conn.execute(
            select(T.c.id, to.label("detail"), T.c.department_code, T.c.status, T.c.handled_at, T.c.due_at)
            .select_from(base)
            .where(STEPS.c.step == "dispatched", to.is_not(None), in_period)
            .distinct()
        ).mappings().all()
        for r in dispatched:
            counts = row(r["detail"])
            counts["dispatched"] += 1
            if r["department_code"] != r["detail"]:
                continue  # sent back since: the department's part ended with it (counted as returned)
            if r["handled_at"] is not None:
                counts["handled"] += 1
                late = r["due_at"] is not None and r["handled_at"] > r["due_at"]
                counts["handled_on_time" if not late else "overdue"] += 1
            elif r["status"] in open_statuses and r["due_at"] is not None and r["due_at"] < now:
                counts["overdue"] += 1
        returned = conn.execute(
            select(STEPS.c.detail, func.count().label("n")).select_from(base)
            .where(STEPS.c.step == "sent_back", STEPS.c.detail.is_not(None), in_period)
            .group_by(STEPS.c.detail)
        ).all()
        for code, n in returned:
            row(code)["returned"] += int(n)
        # a 督办 counts for the department the case was dispatched to last before it
        chased = conn.execute(
            select(STEPS.c.incident_id, STEPS.c.at).select_from(base)
            .where(STEPS.c.step == "supervised", in_period)
        ).all()
        if chased:
            ids = sorted({c[0] for c in chased})
            sent: dict[int, list] = {}
            for i in range(0, len(ids), BATCH):
                for incident_id, at, detail in conn.execute(
                    select(STEPS.c.incident_id, STEPS.c.at, STEPS.c.detail)
                    .where(STEPS.c.step == "dispatched", STEPS.c.incident_id.in_(ids[i:i + BATCH]),
                           in_districts(STEPS, districts))  # a step is stored with its case's district
                    .order_by(STEPS.c.at, STEPS.c.id)
                ):
                    sent.setdefault(incident_id, []).append((at, detail))
            for incident_id, at in chased:
                before = [d for when, d in sent.get(incident_id, []) if when <= at and d]
                if before:
                    row(before[-1])["supervised"] += 1
    return out
