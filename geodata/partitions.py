"""PostgreSQL's tables split by district: declarative partitioning ``PARTITION BY LIST
(district_code)`` of every large table (issue 19, item 4; ``init-db --partition-by-district``).

The small shared tables (districts, streets, settings, users, tokens, plans, jobs, revisions …)
stay whole. Each large table becomes a partitioned table with a ``DEFAULT`` partition
(``units_default``), which takes the rows of a district that has no partition of its own yet
(never an insert refused), and one partition per district (``units_d420102``), made by
:func:`split_districts` for every district of the ``districts`` table and every district found
in a DEFAULT partition — the rows moved out of the DEFAULT partition in the same transaction.
A writer of layers (:func:`geodata.store.write_layer`: imports, the demo, a country, cells, units
built) gives a district its partitions as its first rows arrive (:func:`ensure_districts`), so
the DEFAULT partitions stay empty.

PostgreSQL requires every primary key and unique constraint of a partitioned table to include
the partition key: ``district_code`` is appended to each (``units (id, district_code)``,
``UNIQUE (code, district_code)``; last, so a lookup by id alone still uses the index in each
partition), and the foreign keys between large tables follow it (``incident_steps
(incident_id, district_code) → incidents (id, district_code)``). A code is then unique within its
district — every code gridplan makes starts with its district's (a street's 9 digits with the
district's 6), so nothing changes in practice. Every writer of ``plan_assignments`` gives a row its
unit's district; only rows of units deleted since, and rows stored before that, hold NULL: the
key is ``UNIQUE NULLS NOT DISTINCT (plan_id, unit_code, district_code)`` and such rows live in
the DEFAULT partition.

The schema is made by the migrations first, then converted here, table by table, in one
transaction — on a database without rows in those tables (a fresh ``init-db``; a database in use
is refused: dump its data and load it into a freshly partitioned one). Later migrations (plain
``ADD COLUMN``, ``CREATE INDEX``) apply to partitioned tables as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from geodata.errors import DatabaseTrouble, Refused, excerpt
from geodata.i18n import _

#: the large tables, parents before children (the order their rows are inserted in)
LARGE = ("units", "unit_adjacency", "communities", "community_history", "buildings", "facilities", "roads",
         "grid_cells", "incidents", "incident_steps", "incident_photos", "incident_days", "incident_months",
         "plan_assignments")
KEY = "district_code"
#: a district code as it may appear in a partition's name (the official six digits; provisional
#: codes are digits too)
DISTRICT = re.compile(r"[0-9A-Za-z]{1,12}")
#: set in a transaction that moves rows between partitions: the incident sums' triggers skip it
#: (the sums rows move with the cases); also by a bulk writer that counts the sums once after
#: (:func:`geodata.incident_rows.pause_sums`)
MOVING = "SET LOCAL gridplan.moving_rows = 'on'"
#: the same, once the rows have moved: the writer's own rows count in the sums again
MOVED = "SET LOCAL gridplan.moving_rows = 'off'"
#: how long a writer making a district's partitions waits for the tables' readers and writers
#: before giving up (milliseconds): waiting longer would queue every new query behind it
LOCK_TIMEOUT_MS = 10_000
#: PostgreSQL's codes for a lock not had in time (lock_timeout) and a deadlock
LOCK_NOT_HAD = ("55P03", "40P01")
#: PostgreSQL's code for its lock table full ("out of shared memory")
OUT_OF_LOCKS = "53200"
#: the most new districts one write makes partitions for: each holds ≈ 224 locks (its tables,
#: indexes and TOAST tables) to the writer's commit, and PostgreSQL's default lock table holds
#: 64 × 100 (it gave out at 80 districts). A write bringing more (a province's file) leaves their
#: rows in DEFAULT, for ``partition-districts`` (a transaction per district)
MAX_AT_ONCE = 16


def partition_name(table: str, district: str) -> str:
    """The partition of ``table`` holding ``district``'s rows."""
    return f"{table}_d{district.lower()}"


def is_partitioned(conn: Connection) -> bool:
    """Whether this database's large tables are partitioned by district."""
    if conn.dialect.name != "postgresql":
        return False
    # the table named as a parameter: statement checks looking for reads of a large table that do
    # not name their district (tests/test_plan_scale.py) must not take this for one
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t))"),
        {"t": "public.units"}).scalar_one())


def partitions(conn: Connection) -> dict[str, set[str]]:
    """The district partitions there are: table → district codes (lower case, from the names)."""
    rows = conn.execute(text(
        "SELECT p.relname, c.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = 'public' AND p.relname = ANY(:tables)"), {"tables": list(LARGE)}).all()
    out: dict[str, set[str]] = {t: set() for t in LARGE}
    for parent, child in rows:
        if child.startswith(f"{parent}_d") and child != f"{parent}_default":
            out[parent].add(child[len(parent) + 2:])
    return out


def refuse_sqlite(conn: Connection | Engine) -> None:
    """Partitioning is PostgreSQL's: refused, in one line, on SpatiaLite."""
    if conn.dialect.name != "postgresql":
        raise Refused(_("--partition-by-district is for PostgreSQL: a SpatiaLite database is one file "
                        "and is not partitioned"))


def partition_by_district(engine: Engine) -> dict:
    """Make the large tables of a freshly migrated PostgreSQL database partitioned by district,
    with a DEFAULT partition and one per district known (idempotent: a partitioned database only
    gets the partitions it lacks). Returns ``{"tables", "districts"}``."""
    with engine.begin() as conn:
        refuse_sqlite(conn)
        if not is_partitioned(conn):
            full = [t for t in LARGE if conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar_one()]
            if full:
                raise Refused(_("the database holds rows already ({tables}): partition a fresh database, "
                                "then load the data into it", tables=", ".join(full)))
            rebuild_by_district(conn)
    added = split_districts(engine)
    return {"tables": len(LARGE), "districts": added}


def rebuild_by_district(conn: Connection, *, partitioned: bool = True) -> None:
    """Every large table rebuilt with the same columns, defaults, sequences, indexes, triggers and
    keys, ``district_code`` added to its keys: partitioned by it with a DEFAULT partition, or
    (``partitioned=False``) a plain table for Citus to distribute by it (:mod:`geodata.citus`)."""
    conn.exec_driver_sql("LOCK TABLE " + ", ".join(LARGE) + " IN ACCESS EXCLUSIVE MODE")
    shape = {t: _shape(conn, t) for t in LARGE}
    for t in LARGE:  # foreign keys between large tables go first (they are made again below)
        for name, _kind, _definition in shape[t]["foreign"]:
            conn.exec_driver_sql(f'ALTER TABLE {t} DROP CONSTRAINT "{name}"')
    foreign = [(name, kind) for t in LARGE for name, kind, _ in _referencing(conn, t)]
    if foreign:  # a small table pointing at a large one (none today): it would need the district too
        raise Refused(_("cannot partition: {keys} refer to a table split by district",
                        keys=excerpt(", ".join(n for n, _ in foreign))))
    for t in LARGE:
        s = shape[t]
        split = f" PARTITION BY LIST ({KEY})" if partitioned else ""
        conn.exec_driver_sql(f"CREATE TABLE {t}__split (LIKE {t} INCLUDING DEFAULTS INCLUDING STORAGE "
                             f"INCLUDING COMMENTS){split}")
        for sequence, column in s["sequences"]:
            conn.exec_driver_sql(f'ALTER SEQUENCE "{sequence}" OWNED BY {t}__split."{column}"')
        conn.exec_driver_sql(f"DROP TABLE {t}")
        conn.exec_driver_sql(f"ALTER TABLE {t}__split RENAME TO {t}")
        for name, kind, definition in s["keys"]:
            conn.exec_driver_sql(f'ALTER TABLE {t} ADD CONSTRAINT "{name}" '
                                 f"{_with_key(kind, definition, nullable=s['nullable'])}")
        for definition in s["indexes"]:
            conn.exec_driver_sql(definition)
        for definition in s["triggers"]:
            conn.exec_driver_sql(definition)
        if partitioned:
            conn.exec_driver_sql(f"CREATE TABLE {t}_default PARTITION OF {t} DEFAULT")
    for t in LARGE:
        for name, _kind, definition in shape[t]["foreign"]:
            conn.exec_driver_sql(f'ALTER TABLE {t} ADD CONSTRAINT "{name}" {_foreign_with_key(definition)}')


def _shape(conn: Connection, table: str) -> dict:
    """What a table is made of besides its columns, as SQL to make it again."""
    oid = conn.execute(text("SELECT to_regclass(:t)::oid"), {"t": f"public.{table}"}).scalar_one()
    constraints = conn.execute(text(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = :o "
        "ORDER BY contype, conname"), {"o": oid}).all()
    indexes = conn.execute(text(
        "SELECT pg_get_indexdef(indexrelid), indisunique FROM pg_index WHERE indrelid = :o AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = indexrelid AND c.conrelid = :o) "
        "ORDER BY indexrelid"),
        {"o": oid}).all()
    triggers = conn.execute(text(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = :o AND NOT tgisinternal "
        "ORDER BY tgname"),
        {"o": oid}).scalars().all()
    sequences = conn.execute(text(
        "SELECT s.relname, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = :o AND d.deptype IN ('a', 'i')"), {"o": oid}).all()
    nullable = conn.execute(text(
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = :o AND attname = :k"),
        {"o": oid, "k": KEY}).scalar_one_or_none()
    if nullable is None:
        raise Refused(_("cannot partition: {table} has no {key}", table=table, key=KEY))
    return {
        "keys": [(n, k, d) for n, k, d in constraints if k in ("p", "u", "c")],
        "foreign": [(n, k, d) for n, k, d in constraints if k == "f"],
        "indexes": [_index_with_key(d) if unique else d for d, unique in indexes],
        "triggers": list(triggers),
        "sequences": [tuple(s) for s in sequences],
        "nullable": bool(nullable),
    }


def _referencing(conn: Connection, table: str) -> list[tuple]:
    """Foreign keys of other (small) tables pointing at ``table``."""
    return conn.execute(text(
        "SELECT conname, conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND confrelid = to_regclass(:t) "
        "AND NOT (conrelid::regclass::text = ANY(:large))"),
        {"t": f"public.{table}", "large": list(LARGE)}).all()


def _columns(listing: str) -> list[str]:
    return [c.strip() for c in listing.split(",")]


def _with_key(kind: str, definition: str, *, nullable: bool) -> str:
    """A primary key or unique constraint with ``district_code`` appended (a CHECK as it is)."""
    m = re.fullmatch(r"(PRIMARY KEY|UNIQUE(?: NULLS NOT DISTINCT)?) \((.*)\)(.*)", definition)
    if kind == "c" or not m:
        return definition
    columns = _columns(m.group(2))
    if KEY not in columns:
        columns.append(KEY)
    head = m.group(1)
    if head == "PRIMARY KEY" and nullable:  # a key column may not be NULL: unique, NULLs alike
        head = "UNIQUE NULLS NOT DISTINCT"
    return f"{head} ({', '.join(columns)}){m.group(3)}"


def _index_with_key(definition: str) -> str:
    """A unique index with ``district_code`` appended to its columns."""
    m = re.fullmatch(r"(CREATE UNIQUE INDEX .* USING \w+ )\((.*?)\)((?: NULLS NOT DISTINCT)?(?: WHERE .*)?)",
                     definition)
    if not m:
        raise Refused(_("cannot partition: unexpected index {index}", index=excerpt(definition)))
    columns = _columns(m.group(2))
    if KEY not in columns:
        columns.append(KEY)
    return f"{m.group(1)}({', '.join(columns)}){m.group(3)}"


def _foreign_with_key(definition: str) -> str:
    """A foreign key between large tables through the district too (to a small one: as it was)."""
    m = re.fullmatch(r"FOREIGN KEY \((.*?)\) REFERENCES (\S+)\((.*?)\)(.*)", definition)
    if not m:
        raise Refused(_("cannot partition: unexpected foreign key {key}", key=excerpt(definition)))
    if m.group(2).removeprefix("public.") not in LARGE:
        return definition
    return f"FOREIGN KEY ({m.group(1)}, {KEY}) REFERENCES {m.group(2)}({m.group(3)}, {KEY}){m.group(4)}"


def split_districts(engine: Engine, districts: list[str] | None = None) -> list[str]:
    """Give each district its own partition of every large table: ``districts``, or every
    district of the ``districts`` table and every one with rows in a DEFAULT partition. Rows
    already in the DEFAULT partition move into it, sums and all (the sums' triggers skip the
    move). One transaction per district; run again, it does nothing. Returns the districts given
    partitions."""
    with engine.begin() as conn:
        refuse_sqlite(conn)
        if not is_partitioned(conn):
            raise Refused(_("this database is not partitioned by district (init-db --partition-by-district)"))
        if districts is None:
            wanted = set(conn.execute(text("SELECT code FROM districts")).scalars())
            for t in LARGE:
                wanted |= set(conn.execute(text(
                    f"SELECT DISTINCT {KEY} FROM {t}_default "
                    f"WHERE {KEY} IS NOT NULL AND {KEY} <> ''")).scalars())
        else:
            wanted = set(districts)
        bad = sorted(d for d in wanted if not DISTRICT.fullmatch(d or ""))
        if bad:
            raise Refused(_("{codes} cannot name a partition (a district code is letters and digits)",
                            codes=excerpt(", ".join(map(repr, bad)))))
        have = partitions(conn)
        todo = sorted(d for d in wanted if any(d.lower() not in have[t] for t in LARGE))
    # One transaction per district: a province's hundred districts in one would hold a lock on
    # every partition and index made (≈ 100 × 14 × 4), past PostgreSQL's shared lock table
    # ("out of shared memory", max_locks_per_transaction); a failure keeps the districts already
    # moved, each whole, and running it again goes on from there.
    made = []
    for district in todo:
        with engine.begin() as conn:
            _lock_for_split(conn, [district])
            have = partitions(conn)  # holding the lock: another writer may have made them meanwhile
            if _lacking({district}, have):
                conn.exec_driver_sql(MOVING)
                _split(conn, district, have)
                made.append(district)
    return made


def prepare_districts(engine: Engine, codes: Iterable[str | None]) -> list[str]:
    """Before a writer's own transaction (an import): the partitions of each of ``codes`` that
    lacks them, a district per short transaction of its own (:func:`split_districts`), so that
    the writer's transaction takes no lock of the tables' own and holds none while its rows go
    in. Nothing on SpatiaLite or on PostgreSQL not partitioned. A district made here whose
    import is then refused keeps its empty partitions (harmless; made once). Returns the
    districts given partitions."""
    if engine.dialect.name != "postgresql":
        return []
    wanted = {str(c) for c in codes if isinstance(c, str | int) and str(c) != ""}
    if not wanted:
        return []
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return []
        _refuse_unnamable(wanted)
        todo = _lacking(wanted, partitions(conn))
    return split_districts(engine, todo) if todo else []


def _lock_for_split(conn: Connection, districts: list[str]) -> None:
    """The locks a district's partitions are made under: ``CREATE TABLE … PARTITION OF`` needs
    its parent ``ACCESS EXCLUSIVE``, taken here first for ONLY the 14 parents and their DEFAULT
    partitions (every writer goes through the parents; a plain LOCK TABLE would lock every
    district's partition too) in :data:`LARGE` order — taken at the start, not upgraded from a
    weaker lock, so a writer that read the tables first cannot deadlock with it. Every read and
    write of those tables waits until the caller commits: a short transaction, the district's
    rows moved out of DEFAULT (none, for a district new to the database). Waited for at most
    :data:`LOCK_TIMEOUT_MS`, then refused as busy (:class:`DatabaseTrouble`, 503, ``Retry-After``),
    nothing made."""
    before = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    only = ", ".join(f"ONLY {t}, ONLY {t}_default" for t in LARGE)
    try:
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{LOCK_TIMEOUT_MS}ms"})
        conn.exec_driver_sql(f"LOCK TABLE {only} IN ACCESS EXCLUSIVE MODE")
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) not in LOCK_NOT_HAD:
            raise
        raise DatabaseTrouble(_("district {codes} needs its own partitions, and the tables split by district "
                                "stayed in use for {seconds} s (a long report or import): nothing was "
                                "written; try again in a moment", codes=excerpt(", ".join(districts)),
                                seconds=LOCK_TIMEOUT_MS // 1000),
                              code="DatabaseBusy", retry_after=LOCK_TIMEOUT_MS // 1000) from None
    conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": before})


def _refuse_unnamable(codes: Iterable[str]) -> None:
    """District codes that cannot name a partition (``units_d…``), refused together, named."""
    bad = sorted(str(d) for d in codes if not DISTRICT.fullmatch(str(d or "")))
    if bad:
        raise Refused(_("{codes} cannot name a partition (a district code is letters and digits)",
                        codes=excerpt(", ".join(map(repr, bad)))))


def ensure_districts(conn: Connection, codes: Iterable[str | None]) -> list[str]:
    """Give each of ``codes`` (the districts of rows about to be written) that has none yet its
    own partition of every large table, on the writer's transaction, before its rows go in: they
    land in their district's partition and nothing has to move later (``partition-districts``).
    Returns the districts given partitions, in code order; on SpatiaLite, on PostgreSQL not
    partitioned, and for districts that have theirs, it does nothing (two catalogue reads).

    Made as :func:`split_districts` makes them (the same statements, so a backup's schema check
    finds the same partitions): rows of such a district already in a DEFAULT partition (written
    before, or by a writer that does not come here) move into its partition with them, sums and
    all. Empty codes are left to the DEFAULT partition; a code that cannot name a partition is
    refused before anything is made, named (:class:`Refused`; the caller's transaction then
    rolls back, nothing written).

    **Locks.** An import makes its districts' partitions before its own transaction
    (:func:`prepare_districts`: short transactions of their own) and finds nothing to do here.
    For the other writers (the demo, a generated country, units and cells built) this is the
    fallback: ``CREATE TABLE … PARTITION OF`` locks its parent ``ACCESS EXCLUSIVE``, taken here
    for the 14 large tables at once (:func:`_lock_for_split`) and held to the writer's commit, so
    they stop every read and write of those tables — every district's units, communities, cases …
    — for the rest of that transaction. That happens once
    per district: a later write finds the partitions and takes no lock here. The lock is waited
    for at most :data:`LOCK_TIMEOUT_MS` (a long report reading the tables holds it off; waiting
    longer would queue every new query behind this one); then the write is refused as busy
    (:class:`DatabaseTrouble`, 503, ``Retry-After``), nothing written. A write bringing many new
    districts at once makes 14 tables (with their indexes) for each in one transaction, each
    holding a lock to the commit (≈ 224 a district): a write bringing more than
    :data:`MAX_AT_ONCE` makes none and its rows land in DEFAULT (``partition-districts`` then
    splits them a district per transaction); one that still finds PostgreSQL's lock table full
    (``max_locks_per_transaction``, other sessions' locks) is refused, saying so, nothing
    written (docs/scale.md)."""
    if conn.dialect.name != "postgresql":
        return []
    wanted = {str(c) for c in codes if isinstance(c, str | int) and str(c) != ""}
    if not wanted or not is_partitioned(conn):
        return []
    _refuse_unnamable(wanted)
    todo = _lacking(wanted, partitions(conn))
    if not todo or len(todo) > MAX_AT_ONCE:
        return []
    _lock_for_split(conn, todo)
    have = partitions(conn)  # again, holding the lock: another writer may have made them meanwhile
    todo = _lacking(wanted, have)
    # a bulk writer may have paused the sums' triggers itself (:func:`geodata.incident_rows.pause_sums`)
    paused = conn.execute(text("SELECT current_setting('gridplan.moving_rows', true)")).scalar() == "on"
    conn.exec_driver_sql(MOVING)
    try:
        for district in todo:
            _split(conn, district, have)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != OUT_OF_LOCKS:
            raise
        # each table, index and TOAST table made holds a lock to the commit: too many districts at once
        raise Refused(_("{n} new districts at once need their own partitions, more than the database's lock "
                        "table holds (max_locks_per_transaction = {most}): nothing was written; import them "
                        "a few districts at a time, or raise max_locks_per_transaction",
                        n=len(todo), most=_setting(conn, "max_locks_per_transaction"))) from None
    if not paused:
        conn.exec_driver_sql(MOVED)  # the writer's own rows, written next, count in the sums
    return todo


def _setting(conn: Connection, name: str) -> str:
    """A server setting, read on a connection of its own (the writer's transaction has failed)."""
    try:
        with conn.engine.connect() as other:
            return str(other.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar_one())
    except DBAPIError:
        return "?"


def _lacking(wanted: set[str], have: dict[str, set[str]]) -> list[str]:
    """Of ``wanted``, the districts some large table has no partition for, in code order."""
    return sorted(d for d in wanted if any(d.lower() not in have[t] for t in LARGE))


def _split(conn: Connection, district: str, have: dict[str, set[str]]) -> None:
    """One district's partitions made, its rows moved out of the DEFAULT partitions: children
    out first (a case's deletion would take its steps with it), parents in first (the keys)."""
    value = {"d": district}
    held = {}
    for t in reversed(LARGE):
        if district.lower() in have[t]:
            continue
        held[t] = f"moving_{t}"
        conn.execute(text(f"CREATE TEMPORARY TABLE {held[t]} AS "
                          f"SELECT * FROM {t}_default WHERE {KEY} = :d"), value)
        conn.execute(text(f"DELETE FROM {t}_default WHERE {KEY} = :d"), value)
    for t in LARGE:
        if t not in held:
            continue
        name = partition_name(t, district)
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {t} FOR VALUES IN ('{district}')")
        conn.exec_driver_sql(f"INSERT INTO {name} SELECT * FROM {held[t]}")
        conn.exec_driver_sql(f"DROP TABLE {held[t]}")


def add_partitions(conn: Connection, districts: list[str]) -> list[str]:
    """In the caller's transaction on a partitioned database: give each of ``districts`` (codes
    as a dump names them) the partitions it lacks, moving its rows out of the DEFAULT partitions
    (a restore calls it on emptied tables, before loading the backup's rows). Returns the
    districts given partitions."""
    bad = sorted(d for d in districts if not DISTRICT.fullmatch(d or ""))
    if bad:
        raise Refused(_("{codes} cannot name a partition (a district code is letters and digits)",
                        codes=excerpt(", ".join(map(repr, bad)))))
    have = partitions(conn)
    todo = sorted(d for d in set(districts) if any(d.lower() not in have[t] for t in LARGE))
    for district in todo:
        _split(conn, district, have)
    return todo
