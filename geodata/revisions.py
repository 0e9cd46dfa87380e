"""The boundary revision: one number in the database that every change of units or communities
raises, with a log of what each revision changed.

Whatever a process keeps in memory about units and communities (a plan's graph, its partition)
is keyed to the revision it was built from and rebuilt when the stored one has moved, so two
gunicorn workers and the job worker never answer from different boundaries. The counter is
raised by ``UPDATE … SET value = value + 1`` inside the writer's own transaction: the row lock
serialises writers, a rolled-back change gives its number back, and no revision is skipped.
A writer that must check something against the boundaries before it writes (an adoption) takes
the counter's lock first with :func:`lock_revision`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from geodata.models import BoundaryChange, Revision

BOUNDARIES = "boundaries"


def current_revision(engine: Engine | Connection) -> int:
    """The stored boundary revision (0 on a database no change has touched)."""
    stmt = select(Revision.value).where(Revision.name == BOUNDARIES)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one_or_none() or 0)
    return int(engine.execute(stmt).scalar_one_or_none() or 0)


def lock_revision(conn: Connection) -> int:
    """The stored boundary revision, locked until the caller's transaction ends.

    A writer of units or communities calls it first, before touching any other row: it is a
    write (``UPDATE … SET value = value``), so on PostGIS it takes the counter's row lock and on
    SpatiaLite the database's one write lock — waiting for them (busy timeout) rather than
    starting as a reader and failing with "database is locked" when it later writes. Two writers
    then queue in the same order instead of deadlocking on each other's rows, and what the
    writer checks against the boundaries (a plan's streets unchanged) holds until it commits."""
    table = Revision.__table__
    value = conn.execute(update(table).where(table.c.name == BOUNDARIES).values(value=table.c.value)
                         .returning(table.c.value)).scalar_one_or_none()
    return int(value or 0)


def raise_revision(conn: Connection, action: str, *, actor: str | None = None,
                   streets: Iterable[str] | None = None, communities: Iterable[str] | None = None,
                   plan_id: int | None = None) -> int:
    """Raise the boundary revision on the caller's transaction and log what changed;
    ``streets=None`` means any street may have changed. Returns the new revision."""
    table = Revision.__table__
    raised = conn.execute(update(table).where(table.c.name == BOUNDARIES)
                          .values(value=table.c.value + 1).returning(table.c.value)).scalar_one_or_none()
    if raised is None:  # a database made before the counter existed
        conn.execute(insert(table).values(name=BOUNDARIES, value=1))
        raised = 1
    conn.execute(insert(BoundaryChange).values(
        revision=raised, at=datetime.now(), actor=actor, action=action,
        streets=sorted(set(streets)) if streets is not None else None,
        communities=sorted(set(communities)) if communities is not None else None, plan_id=plan_id))
    return int(raised)


def changes_since(engine: Engine | Connection, revision: int) -> list[dict]:
    """The logged changes after ``revision``, oldest first (on ``engine``'s connection when it
    is one, so a writer sees what its transaction sees)."""
    stmt = select(BoundaryChange.__table__).where(BoundaryChange.revision > revision) \
        .order_by(BoundaryChange.revision)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]
    return [dict(r) for r in engine.execute(stmt).mappings()]


#: Layers whose every write raises a revision of their own (``layer:<name>``): answers computed
#: from them (the coverage report, its gap layers) are cached under these numbers. (Incidents
#: change all day and no cached answer is made of them.)
CACHED_LAYERS = frozenset({"districts", "streets", "communities", "units", "grid_cells", "facilities",
                           "roads", "buildings"})


def layer_revision_name(layer: str) -> str:
    """The name of ``layer``'s own revision in the ``revisions`` table."""
    return f"layer:{layer}"[:32]


def raise_layer_revision(conn: Connection, layer: str) -> int:
    """Raise ``layer``'s own revision on the caller's transaction (every write of the layer does:
    :func:`geodata.store.write_layer`). Returns the new value (0: a layer no cache is made of)."""
    if layer not in CACHED_LAYERS:
        return 0
    table = Revision.__table__
    name = layer_revision_name(layer)
    raised = conn.execute(update(table).where(table.c.name == name)
                          .values(value=table.c.value + 1).returning(table.c.value)).scalar_one_or_none()
    if raised is None:
        conn.execute(insert(table).values(name=name, value=1))
        raised = 1
    return int(raised)


def all_revisions(engine: Engine | Connection) -> dict[str, int]:
    """Every counter of the ``revisions`` table (the boundaries and each layer's own), read in one
    query: what a cache key is made of, so that a process never answers from what another process
    has changed since."""
    stmt = select(Revision.name, Revision.value).order_by(Revision.name)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return {n: int(v) for n, v in conn.execute(stmt).all()}
    return {n: int(v) for n, v in engine.execute(stmt).all()}
