"""SQLAlchemy 2 / GeoAlchemy2 models of every gridplan layer (docs/domain.md §3).

Geometries are stored in EPSG:4326. Layers refer to each other by their official codes
(``street_code``, ``community_code``, ``grid_code``) rather than row ids, so a layer can be
replaced by a fresh import without breaking the others. Every large table carries
``district_code`` so that it can later be distributed by district (docs/domain.md §5).
"""

from __future__ import annotations

from datetime import date, datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SRID = 4326


def _geom(kind: str):
    return mapped_column(Geometry(kind, srid=SRID, spatial_index=True), nullable=False)


class Base(DeclarativeBase):
    pass


class District(Base):
    """District or county (区 / 县), 6-digit GB/T 2260 code."""

    __tablename__ = "districts"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(6), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    geom = _geom("MULTIPOLYGON")


class Street(Base):
    """Street, town or township (街道 / 镇 / 乡), 9-digit code."""

    __tablename__ = "streets"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(9), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    #: a provisional code (临时代码, sequence 9xx) given to a street imported by name; the official
    #: code table replaces it (migration 0006)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    geom = _geom("MULTIPOLYGON")


class Community(Base):
    """Community (社区居委会 / 村委会), 12-digit 统计用区划代码."""

    __tablename__ = "communities"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    street_code: Mapped[str] = mapped_column(String(9), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    valid_from: Mapped[date | None] = mapped_column(Date)
    #: a provisional code given to a community imported by name (migration 0006)
    provisional: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    geom = _geom("MULTIPOLYGON")


class CommunityHistory(Base):
    """A past boundary of a community, kept when a plan is adopted or a layer replaced."""

    __tablename__ = "community_history"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), index=True)
    name: Mapped[str] = mapped_column(String(100))
    street_code: Mapped[str] = mapped_column(String(9))
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_to: Mapped[date] = mapped_column(Date)
    plan_id: Mapped[int | None] = mapped_column(Integer)
    geom = _geom("MULTIPOLYGON")


class Unit(Base):
    """Planning unit (街坊 block or 小区 compound); units tile each street."""

    __tablename__ = "units"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    households: Mapped[int] = mapped_column(Integer, default=0)
    population: Mapped[int] = mapped_column(Integer, default=0)
    street_code: Mapped[str] = mapped_column(String(9), index=True)
    community_code: Mapped[str | None] = mapped_column(String(12), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    built_year: Mapped[int | None] = mapped_column(Integer)
    land_use: Mapped[str] = mapped_column(String(20), default="residential")
    #: how the households were estimated when the unit was built from roads (migration 0006):
    #: buildings, poi, raster or area, ``+table`` when scaled to the community's total
    households_source: Mapped[str | None] = mapped_column(String(32))
    geom = _geom("MULTIPOLYGON")

    #: households per community read from the index alone, never from rows carrying geometry
    __table_args__ = (Index("ix_units_totals", "community_code", "households", "population"),)


class UnitAdjacency(Base):
    """Two units that share an edge of positive length (rook neighbours), computed at import.

    Each pair is stored once with ``unit_a < unit_b``.
    """

    __tablename__ = "unit_adjacency"
    unit_a: Mapped[str] = mapped_column(String(20), primary_key=True)
    unit_b: Mapped[str] = mapped_column(String(20), primary_key=True, index=True)
    shared_m: Mapped[float] = mapped_column(Float)
    district_code: Mapped[str] = mapped_column(String(6), index=True)


class Building(Base):
    """Residential building (optional detail below a unit)."""

    __tablename__ = "buildings"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    households: Mapped[int] = mapped_column(Integer, default=0)
    population: Mapped[int] = mapped_column(Integer, default=0)
    unit_code: Mapped[str | None] = mapped_column(String(20), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    geom = _geom("GEOMETRY")


class Facility(Base):
    """Public service facility (service centre, station, health station, elderly care …)."""

    __tablename__ = "facilities"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(100))
    floor_area_m2: Mapped[float | None] = mapped_column(Float)
    community_code: Mapped[str | None] = mapped_column(String(12), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    #: ``approximate`` when geocoded to a community or street, not an address (migration 0006)
    location_precision: Mapped[str | None] = mapped_column(String(16))
    geom = _geom("POINT")


class Road(Base):
    """Road centre-line, by class (for walking distance and for cutting units)."""

    __tablename__ = "roads"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    road_class: Mapped[str] = mapped_column(String(20))
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    geom = _geom("MULTILINESTRING")


class GridCell(Base):
    """Grid cell (网格), 15-digit code; every cell belongs to exactly one community."""

    __tablename__ = "grid_cells"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True)
    community_code: Mapped[str] = mapped_column(String(12), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    supervisor: Mapped[str | None] = mapped_column(String(50))
    geom = _geom("MULTIPOLYGON")


class Incident(Base):
    """A case in the closed loop of digital urban management (数字城管, GB/T 30428).

    The step times are those of 信息采集 (reported), 案卷建立 (filed), 任务派遣 (dispatched,
    the clock starts), 任务处理 (handled), 处理反馈 (feedback) and 核查结案 (closed).
    """

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reported_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    filed_at: Mapped[datetime | None] = mapped_column(DateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime)
    handled_at: Mapped[datetime | None] = mapped_column(DateTime)
    feedback_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    due_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    district_code: Mapped[str] = mapped_column(String(6), index=True)
    #: ``approximate`` cases (geocoded to a community or street) are counted in their community
    #: and placed in no cell (migration 0006)
    location_precision: Mapped[str | None] = mapped_column(String(16))
    community_code: Mapped[str | None] = mapped_column(String(12), index=True)
    #: the loop (migration 0004): a version raised by every step (two supervisors acting on the
    #: same version: one wins), the street found from the location, who reported it, how often
    #: it was returned for rework (返工), its evaluation (综合评价), and the working hours each
    #: step took on the calendar in force then (filed, dispatched, handled, verified)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    street_code: Mapped[str | None] = mapped_column(String(9))
    reporter: Mapped[str | None] = mapped_column(String(50))
    rework_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    evaluated_at: Mapped[datetime | None] = mapped_column(DateTime)
    evaluation: Mapped[str | None] = mapped_column(String(16))
    filing_wh: Mapped[float | None] = mapped_column(Float)
    dispatch_wh: Mapped[float | None] = mapped_column(Float)
    handling_wh: Mapped[float | None] = mapped_column(Float)
    verify_wh: Mapped[float | None] = mapped_column(Float)
    #: departments (migration departments): the 处置部门 the case was dispatched to, who took the
    #: handling step (the 监督员 who verifies must be someone else), and its 督办: how often it
    #: was chased, the highest level reached (reminder, yellow, red) and when last
    department_code: Mapped[str | None] = mapped_column(String(16), index=True)
    handler: Mapped[str | None] = mapped_column(String(50))
    supervise_count: Mapped[int] = mapped_column(Integer, server_default="0")
    supervise_level: Mapped[str | None] = mapped_column(String(16))
    supervised_at: Mapped[datetime | None] = mapped_column(DateTime)
    geom = _geom("POINT")
    #: a report made on a phone carries an id the phone made (migration client_ids): sent again
    #: when the signal comes back, it finds this case instead of making a second; ``client_hash``
    #: is the SHA-256 of what was reported, so the same id with other content is refused
    client_id: Mapped[str | None] = mapped_column(String(64))
    client_hash: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("uq_incidents_reporter_client_id", "reporter", "client_id", unique=True),)


class IncidentStep(Base):
    """One step of an incident's history."""

    __tablename__ = "incident_steps"
    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    #: the case's district (migration district_incident_rows): a step lives where its case does
    #: (the same partition or shard); NOT NULL on PostgreSQL, set by every writer
    district_code: Mapped[str | None] = mapped_column(String(6), index=True)
    step: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str | None] = mapped_column(String(50))
    note: Mapped[str | None] = mapped_column(Text)
    #: what the step chose (migration departments): the department dispatched to, the
    #: evaluation given, the 督办 level
    detail: Mapped[str | None] = mapped_column(String(64))
    #: a step taken on a phone carries an id the phone made (migration client_ids): stored once
    client_id: Mapped[str | None] = mapped_column(String(64))
    client_hash: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("uq_incident_steps_actor_client_id", "actor", "client_id", unique=True),)


class _IncidentSums:
    """The sums the rates are made of, per cell (community, street, district) and period: cases
    reported, filed, closed and due then, and the step hours of the steps taken then. Kept current
    by triggers on ``incidents`` in the same transaction as every write, whoever makes it
    (migration 0008; row triggers on both databases since district_incident_rows, each writing
    only its own row's district's sums). A case in no cell has ``grid_code`` ``''``; its
    community and street are those the rates use (a cell's community and street when the case has none)."""

    district_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    street_code: Mapped[str] = mapped_column(String(9), primary_key=True)
    community_code: Mapped[str] = mapped_column(String(12), primary_key=True)
    grid_code: Mapped[str] = mapped_column(String(15), primary_key=True)
    reported: Mapped[int] = mapped_column(Integer, default=0)
    filed: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[int] = mapped_column(Integer, default=0)
    due: Mapped[int] = mapped_column(Integer, default=0)
    due_closed: Mapped[int] = mapped_column(Integer, default=0)
    due_closed_on_time: Mapped[int] = mapped_column(Integer, default=0)
    returned: Mapped[int] = mapped_column(Integer, default=0)
    filing_sum: Mapped[float] = mapped_column(Float, default=0.0)
    filing_n: Mapped[int] = mapped_column(Integer, default=0)
    dispatch_sum: Mapped[float] = mapped_column(Float, default=0.0)
    dispatch_n: Mapped[int] = mapped_column(Integer, default=0)
    handling_sum: Mapped[float] = mapped_column(Float, default=0.0)
    handling_n: Mapped[int] = mapped_column(Integer, default=0)
    verify_sum: Mapped[float] = mapped_column(Float, default=0.0)
    verify_n: Mapped[int] = mapped_column(Integer, default=0)


class IncidentDay(_IncidentSums, Base):
    """The rates' sums per cell and day (the days at the ends of a period)."""

    __tablename__ = "incident_days"
    day: Mapped[date] = mapped_column(Date, primary_key=True, index=True)


class IncidentMonth(_IncidentSums, Base):
    """The rates' sums per cell and month (``month``: its first day; a period's whole months)."""

    __tablename__ = "incident_months"
    month: Mapped[date] = mapped_column(Date, primary_key=True, index=True)


class GridAssignment(Base):
    """A supervisor (网格员) assigned to a grid cell; a user may hold several cells, a cell
    several users (migration 0004)."""

    __tablename__ = "grid_assignments"
    user_name: Mapped[str] = mapped_column(String(50), primary_key=True)
    cell_code: Mapped[str] = mapped_column(String(15), primary_key=True, index=True)
    assigned_at: Mapped[datetime] = mapped_column(DateTime)
    assigned_by: Mapped[str | None] = mapped_column(String(50))


class IncidentPhoto(Base):
    """A photo of a case: its metadata here, the file under the photo folder (migration 0004)."""

    __tablename__ = "incident_photos"
    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    #: the case's district (migration district_incident_rows), as for steps
    district_code: Mapped[str | None] = mapped_column(String(6), index=True)
    stored_name: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    original_name: Mapped[str | None] = mapped_column(String(200))
    step: Mapped[str | None] = mapped_column(String(16))
    uploaded_by: Mapped[str | None] = mapped_column(String(50))
    uploaded_at: Mapped[datetime] = mapped_column(DateTime)
    #: the step of the case's history the photo is evidence of (migration departments): the
    #: report's before-photo, the handling's after-photo
    step_id: Mapped[int | None] = mapped_column(Integer, index=True)


class Department(Base):
    """A 处置部门: the body that fixes a case (municipal engineering, sanitation, greening …),
    the categories it handles, whom to call, and its own time limits where the city sets them
    (category → working hours; otherwise the category's). A category's default department is
    offered first when a case is dispatched (migration departments)."""

    __tablename__ = "departments"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    categories: Mapped[list] = mapped_column(JSON)
    contact: Mapped[str | None] = mapped_column(String(200))
    limits: Mapped[dict | None] = mapped_column(JSON)
    default_for: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Plan(Base):
    """A redistricting plan: draft → submitted → approved / rejected → adopted."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    district_code: Mapped[str | None] = mapped_column(String(6), index=True)
    params: Mapped[dict | None] = mapped_column(JSON)
    scores: Mapped[dict | None] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    #: the boundary revision the plan was made from, and the streets it covers
    base_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    streets: Mapped[list | None] = mapped_column(JSON)
    #: what adopting it did: communities created, retired, changed; cells to look at
    adoption: Mapped[dict | None] = mapped_column(JSON)


class PlanAssignment(Base):
    """The community a plan gives one unit."""

    __tablename__ = "plan_assignments"
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    unit_code: Mapped[str] = mapped_column(String(20), primary_key=True)
    community_code: Mapped[str] = mapped_column(String(12))
    #: set by a hand edit, so that a rebase keeps it
    edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    #: the plan version that last changed this row: other processes catch up on edits from it
    changed_in: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the unit's district, set by every writer (plans made district by district,
    #: :mod:`layers.plans.scale`, and in one piece); NULL only in rows stored before that
    district_code: Mapped[str | None] = mapped_column(String(6))

    __table_args__ = (Index("ix_plan_assignments_changes", "plan_id", "changed_in"),
                      Index("ix_plan_assignments_district", "plan_id", "district_code"))


class PlanDistrictFigures(Base):
    """One district's part of a plan made or edited district by district, in figures: each
    community's households and compactness, and the district's additive scores (communities,
    households moved, cut edges …). The plan's own scores are combined from these
    (:func:`layers.plans.scale.combine_scores`), so that an edit of one district re-scores the
    whole plan without reading any other district's units."""

    __tablename__ = "plan_district_figures"
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    #: ``households`` and ``polsby_popper`` (one per community), ``sums``, ``infeasible``
    figures: Mapped[dict] = mapped_column(JSON)


class PlanCommunity(Base):
    """The name a plan gives one of its communities (a new one, or an existing one renamed)."""

    __tablename__ = "plan_communities"
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class PlanStep(Base):
    """One hand edit of a plan, kept so that it can be undone and redone on the server: the units
    it moved (unit → [community before, community after, whether the unit was a hand edit
    before]) and the names it gave (code → [name before, name after], ``None`` for no name of
    the plan's own). ``undone`` steps are the plan's redo stack; a new edit drops them."""

    __tablename__ = "plan_steps"
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: move, split, merge, new (a new community, named or not), name
    kind: Mapped[str] = mapped_column(String(16))
    #: the plan version the edit made
    made_in: Mapped[int] = mapped_column(Integer)
    undone: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    actor: Mapped[str | None] = mapped_column(String(50))
    at: Mapped[datetime | None] = mapped_column(DateTime)
    units: Mapped[dict | None] = mapped_column(JSON)
    names: Mapped[dict | None] = mapped_column(JSON)


class Revision(Base):
    """A counter kept in the database. ``boundaries`` rises with every change of units or
    communities (an import, an adoption, a code table): what a process holds in memory about
    them is valid only at the revision it was built from."""

    __tablename__ = "revisions"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class DistrictExtent(Base):
    """Where one district's rows of a layer lie (区县图层范围): their bounding box, stamped with the
    layer's revision counters of that district (:mod:`geodata.extents`). ``district_code`` ``*``
    holds the every-district counter of the last pass over the whole layer; NULL bounds: no rows."""

    __tablename__ = "district_extents"
    layer: Mapped[str] = mapped_column(String(32), primary_key=True)
    district_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    minx: Mapped[float | None] = mapped_column(Float)
    miny: Mapped[float | None] = mapped_column(Float)
    maxx: Mapped[float | None] = mapped_column(Float)
    maxy: Mapped[float | None] = mapped_column(Float)
    #: the first six digits of the community codes its rows name, comma-separated (facilities)
    named: Mapped[str | None] = mapped_column(Text)


class BoundaryChange(Base):
    """What one boundary revision changed: which streets (``None``: possibly all) and communities."""

    __tablename__ = "boundary_changes"
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str | None] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(32))
    streets: Mapped[list | None] = mapped_column(JSON)
    communities: Mapped[list | None] = mapped_column(JSON)
    plan_id: Mapped[int | None] = mapped_column(Integer)


class User(Base):
    """An account: admin, planner, supervisor (scoped to a code) or viewer."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    scope_code: Mapped[str | None] = mapped_column(String(15))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: a disabled account cannot sign in, and its open sessions stop working (migration 0005)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    #: the language of the web pages this user chose (zh, en); none: the browser's (migration 0008)
    locale: Mapped[str | None] = mapped_column(String(8))
    #: raised by sign-out, a new password, a role or scope change and disabling: a session
    #: cookie made under an older generation is refused by every process (migration
    #: session_generation)
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: when the account last signed in (migration session_generation)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: the 处置部门 a handler works for (migration departments); none: the 指挥中心 or the grid
    department_code: Mapped[str | None] = mapped_column(String(16))


class ApiToken(Base):
    """A bearer token for another department's system; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    scope_code: Mapped[str | None] = mapped_column(String(15))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: when the token was revoked; a revoked token stops working at once (migration 0005)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: when the token stops working (none: until revoked) (migration session_generation)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: when the token was last used, to the minute (migration session_generation)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)


class RateLimit(Base):
    """A counter of failed sign-ins (per account or per address) until ``expires_at`` (seconds
    since the epoch); shared by every process of the app (migration rate_limits)."""

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)


class Setting(Base):
    """A per-city number or standard (household bounds, floor-area standards …) with its source."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """Background work (a city-wide plan, a gap report) with its progress."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict | None] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: ``host:pid`` of the worker running it (a restarted worker fails the jobs of dead ones)
    worker: Mapped[str | None] = mapped_column(String(80))


class AuditLog(Base):
    """Who changed what, when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(32))
    layer: Mapped[str | None] = mapped_column(String(32))
    object_code: Mapped[str | None] = mapped_column(String(24))
    detail: Mapped[dict | None] = mapped_column(JSON)


__all__ = [name for name, obj in globals().items() if isinstance(obj, type) and issubclass(obj, Base)]
