"""The boundary revision: one number in the database that every change of units or communities
raises, with a log of what each revision changed — and the same counter per district.

Whatever a process keeps in memory about units and communities (a plan's graph, its partition)
is keyed to the revision it was built from and rebuilt when the stored one has moved, so two
gunicorn workers and the job worker never answer from different boundaries. The counter is
raised by ``UPDATE … SET value = value + 1`` inside the writer's own transaction: the row lock
serialises writers, a rolled-back change gives its number back, and no revision is skipped.
A writer that must check something against the boundaries before it writes (an adoption) takes
the counter's lock first with :func:`lock_revision`.

One revision per district (issue 19, item 5): beside the whole database's ``boundaries`` (it
numbers the log, whose order plans' staleness and stale files are judged by), every writer
raises ``boundaries@<district>`` for the districts its rows lie in, read on its own transaction
from the rows it wrote or deleted (their streets' districts), and every write of a cached layer
raises ``layer:<name>@<district>`` the same way. A reader that covers some districts (a street's
plan memory, a street's coverage answer) looks only at those districts' counters, so an import or
an adoption in one district leaves what every other district's readers keep in memory as it was;
a city-wide reader looks at all of them. A write whose districts cannot be known (a whole-database
write such as the demo, a street no table places) raises ``…@*``, the counter every reader of any
district also reads: raising it is raising them all, in one row instead of one per district.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from geodata.models import BoundaryChange, Revision, Street, Unit

BOUNDARIES = "boundaries"
#: the counter that numbers new plans on SQLite (:mod:`geodata.plan_rows`), kept in this table but
#: no revision of any data: a new plan must not look like a change of the boundaries or layers
PLAN_NUMBERS = "plans"
#: the district part of a counter that stands for every district (a write whose districts are unknown)
EVERY = "*"
#: codes asked for in one ``IN (…)``
BATCH_CODES = 500


def current_revision(engine: Engine | Connection) -> int:
    """The stored boundary revision (0 on a database no change has touched)."""
    stmt = select(Revision.value).where(Revision.name == BOUNDARIES)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one_or_none() or 0)
    return int(engine.execute(stmt).scalar_one_or_none() or 0)


def lock_revision(conn: Connection, districts: Iterable[str] | None = ()) -> int:
    """The stored boundary revision, locked until the caller's transaction ends.

    A writer of units or communities calls it first, before touching any other row: it is a
    write (``UPDATE … SET value = value``), so on PostGIS it takes the counter's row lock and on
    SpatiaLite the database's one write lock — waiting for them (busy timeout) rather than
    starting as a reader and failing with "database is locked" when it later writes. Two writers
    then queue in the same order instead of deadlocking on each other's rows, and what the
    writer checks against the boundaries (a plan's streets unchanged) holds until it commits.

    ``districts``: the districts' own counters are locked too, after the whole database's and in
    code order (``None``: every district's, through ``…@*``). A district's ``boundaries@…`` is
    only ever raised by a writer already holding ``boundaries`` (:func:`raise_revision` raises it
    first, then the districts' in code order), so the district counters add no deadlock; and as
    every boundary writer raises the whole database's counter, writers of different districts
    still queue behind each other — the log needs one order. What the district counters change
    is what readers invalidate, not how writers queue."""
    table = Revision.__table__
    value = conn.execute(update(table).where(table.c.name == BOUNDARIES).values(value=table.c.value)
                         .returning(table.c.value)).scalar_one_or_none()
    for name in _district_names(BOUNDARIES, districts) if districts != () else []:
        conn.execute(update(table).where(table.c.name == name).values(value=table.c.value))
    return int(value or 0)


def district_name(base: str, district: str) -> str:
    """The name of ``base``'s counter for ``district`` (``boundaries@420103``,
    ``layer:grid_cells@420103``; :data:`EVERY` for all): at most 23 characters with six-digit
    district codes, within the ``revisions`` table's 32."""
    name = f"{base}@{district}"
    if len(name) > 32:  # a district code longer than the schema's six digits: never truncated silently
        raise ValueError(f"revision counter name too long: {name}")
    return name


def _district_names(base: str, districts: Iterable[str] | None) -> list[str]:
    """The counters a write of ``districts`` raises, in lock order (``None``: every district's)."""
    if districts is None:
        return [district_name(base, EVERY)]
    return [district_name(base, d) for d in sorted({str(d) for d in districts})]


def _bump(conn: Connection, name: str) -> int:
    """Raise counter ``name`` by one on the caller's transaction (made at 1 when missing) and
    return its value. An upsert (both databases have ``ON CONFLICT``), so two writers making the
    same district's counter for the first time queue on its key instead of one failing."""
    table = Revision.__table__
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(name=name, value=1).on_conflict_do_update(
        index_elements=[table.c.name], set_={"value": table.c.value + 1})
    return int(conn.execute(stmt.returning(table.c.value)).scalar_one())


def districts_of_streets(conn: Connection, streets: Iterable[str] | None) -> set[str] | None:
    """The districts of ``streets`` as ``conn``'s transaction sees them (the streets table; for a
    street it lacks, the street's units; for a nine-digit code neither has any more — a code table
    renamed it — its first six digits, codes nest); ``None`` when they cannot all be placed (or
    ``streets`` is None: any street may have changed) — the caller then raises every district."""
    if streets is None:
        return None
    wanted = sorted({str(s) for s in streets})
    found: dict[str, set[str]] = {}
    for start in range(0, len(wanted), BATCH_CODES):
        chunk = wanted[start:start + BATCH_CODES]
        for street, district in conn.execute(select(Street.code, Street.district_code)
                                             .where(Street.code.in_(chunk))):
            found.setdefault(street, set()).add(district)
    missing = [s for s in wanted if s not in found]
    for start in range(0, len(missing), BATCH_CODES):
        chunk = missing[start:start + BATCH_CODES]
        for street, district in conn.execute(select(Unit.street_code, Unit.district_code).distinct()
                                             .where(Unit.street_code.in_(chunk))):
            found.setdefault(street, set()).add(district)
    for street in wanted:
        if street not in found and len(street) == 9 and street.isdigit():
            found[street] = {street[:6]}
    districts = set().union(*found.values()) if found else set()
    if len(found) != len(wanted) or None in districts or "" in districts:
        return None
    return districts


def raise_revision(conn: Connection, action: str, *, actor: str | None = None,
                   streets: Iterable[str] | None = None, communities: Iterable[str] | None = None,
                   plan_id: int | None = None, districts: Iterable[str] | None = ()) -> int:
    """Raise the boundary revision on the caller's transaction and log what changed;
    ``streets=None`` means any street may have changed. Returns the new revision.

    The districts' own counters rise too: ``districts`` when the caller names them, else the
    districts of ``streets`` read on the caller's transaction (after its writes, so a street
    whose units all left still has its row in the streets table); every district when they
    cannot be known (``streets=None``, a street no table places)."""
    streets = None if streets is None else set(streets)
    if districts == ():
        districts = districts_of_streets(conn, streets)
    raised = _bump(conn, BOUNDARIES)
    for name in _district_names(BOUNDARIES, districts):
        _bump(conn, name)
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


def raise_layer_revision(conn: Connection, layer: str, districts: Iterable[str] | None = None) -> int:
    """Raise ``layer``'s own revision on the caller's transaction (every write of the layer does:
    :func:`geodata.store.write_layer`), and its counters for ``districts`` — the districts of the
    rows written or deleted; ``None`` (not known) raises every district's. Returns the layer's
    new value (0: a layer no cache is made of)."""
    if layer not in CACHED_LAYERS:
        return 0
    districts = None if districts is None else {d for d in districts if d}
    raised = _bump(conn, layer_revision_name(layer))
    for name in _district_names(layer_revision_name(layer), districts):
        _bump(conn, name)
    return raised


def _read(engine: Engine | Connection, stmt):
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return conn.execute(stmt).all()
    return engine.execute(stmt).all()


def district_revisions(engine: Engine | Connection, districts: Iterable[str],
                       layers: Iterable[str] = ()) -> dict[str, int]:
    """The counters a reader of ``districts`` depends on, in one query: each district's
    ``boundaries@…`` and ``layer:<name>@…`` for ``layers``, and the ``…@*`` ones every district
    shares (a counter never raised is 0). Another district's change moves none of them."""
    bases = [BOUNDARIES, *[layer_revision_name(x) for x in sorted(set(layers))]]
    names = [district_name(b, d) for b in bases for d in [EVERY, *sorted({str(d) for d in districts})]]
    found = dict(_read(engine, select(Revision.name, Revision.value).where(Revision.name.in_(names))))
    return {n: int(found.get(n) or 0) for n in names}


def district_revision(engine: Engine | Connection, district: str) -> int:
    """One number for ``district``'s boundaries: its counter plus the every-district one. Both
    only rise, so the sum moves exactly when one of them does — and never for another
    district's change."""
    return sum(district_revisions(engine, [district]).values())


def all_revisions(engine: Engine | Connection) -> dict[str, int]:
    """Every revision of the ``revisions`` table (the boundaries and each layer's own), read in one
    query: what a cache key is made of, so that a process never answers from what another process
    has changed since."""
    stmt = select(Revision.name, Revision.value).where(Revision.name != PLAN_NUMBERS).order_by(Revision.name)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return {n: int(v) for n, v in conn.execute(stmt).all()}
    return {n: int(v) for n, v in engine.execute(stmt).all()}
