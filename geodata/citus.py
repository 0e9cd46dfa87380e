"""The large tables distributed by district over a Citus cluster (issue 19, item 4;
``init-db --distribute-by-district``; docs/scale.md, "On Citus").

Citus spreads a table's rows over shards on its worker nodes by the hash of one column. Every
large table (:data:`geodata.partitions.LARGE`) is distributed by ``district_code`` and
co-located with ``units``, so one district's rows of every table share a shard group on one
node: a statement naming one district is routed to that node alone, and joins and foreign keys
within a district stay local to it. The small shared tables (districts, streets, settings, users,
plans, jobs, revisions …) become reference tables, a copy on every node.

The keys are those of the partitioned schema (``district_code`` appended to each, as Citus
requires) on plain tables: Citus's shards are the split, so the tables are not also partitioned
(a partition per district would make a distributed table of each, with its own shards: 14 tables ×
thousands of districts × the shard count). Made on a fresh database, after ``CREATE EXTENSION
citus`` and the worker nodes added (``citus_add_node``); run again, it distributes only what is
still local (a table a later migration made).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from geodata.errors import Refused
from geodata.i18n import _
from geodata.partitions import KEY, LARGE, is_partitioned, rebuild_by_district, refuse_sqlite

#: tables that stay on the coordinator alone: the migrations' own bookkeeping and PostGIS's
LOCAL = ("alembic_version", "spatial_ref_sys")
#: the incident sums are kept by row triggers on the cases, steps and hours (geodata/incident_rows.py):
#: Citus makes them on every shard only when told they are wanted
TRIGGERS_ON = "SET LOCAL citus.enable_unsafe_triggers = on"


def citus_installed(conn: Connection) -> bool:
    """Whether this database has the Citus extension (it is a Citus coordinator)."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(text("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"))
                .scalar_one())


def is_distributed(conn: Connection) -> bool:
    """Whether the large tables are distributed by district over a Citus cluster."""
    if not citus_installed(conn):
        return False
    return bool(conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(:t))"),
        {"t": "public.units"}).scalar_one())


def worker_nodes(conn: Connection) -> list[tuple[str, int]]:
    """The Citus worker nodes that hold shards (host, port)."""
    return [(str(h), int(p)) for h, p in conn.execute(text(
        "SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 1, 2")).all()]


def distribute_by_district(engine: Engine) -> dict:
    """Distribute a freshly migrated database's large tables by district over the Citus cluster
    it is the coordinator of, and make its small tables reference tables. Returns ``{"tables",
    "reference", "workers"}``: the tables distributed and made reference tables by this call, and
    the worker nodes. Refused, naming why, on SpatiaLite, without Citus or its workers, on a
    database partitioned by district, and on one holding rows already."""
    with engine.connect() as conn:
        refuse_sqlite(conn)
        if not citus_installed(conn):
            raise Refused(_("--distribute-by-district needs Citus: CREATE EXTENSION citus on the coordinator "
                            "and add its workers (citus_add_node) first (docs/scale.md)"))
        workers = worker_nodes(conn)
        if not workers:
            raise Refused(_("the Citus coordinator has no worker nodes: add them with citus_add_node first"))
        if is_partitioned(conn):
            raise Refused(_("this database is partitioned by district: on Citus the shards split it; "
                            "make a fresh database with --distribute-by-district alone"))
        done = _citus_tables(conn)
        local_large = [t for t in LARGE if t not in done]
        if local_large:
            full = [t for t in local_large
                    if conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar_one()]
            if full:
                raise Refused(_("the database holds rows already ({tables}): distribute a fresh database, "
                                "then load the data into it", tables=", ".join(full)))
    # each step in a transaction of its own: Citus will not mix making reference tables with
    # other work in one ("cannot switch local execution status")
    if local_large:
        with engine.begin() as conn:
            if not _keyed_by_district(conn):
                rebuild_by_district(conn, partitioned=False)
    with engine.connect() as conn:
        small = _referenced_first(conn, [t for t in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).scalars()
            if t not in LARGE and t not in LOCAL and t not in _citus_tables(conn)])
        foreign = _foreign_keys_between(conn, local_large)
    for t in small:
        with engine.begin() as conn:
            conn.execute(text("SELECT create_reference_table(:t)"), {"t": t})
    # a key from one large table to another is made again once both are distributed (Citus checks
    # it shard by shard, co-located); before, it would join a distributed table to a local one
    with engine.begin() as conn:
        for table, name, _definition in foreign:
            conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for t in local_large:  # parents first: ``units`` is the one the others are co-located with
        with engine.begin() as conn:
            conn.exec_driver_sql(TRIGGERS_ON)
            if t == "units":
                conn.execute(text("SELECT create_distributed_table(:t, :k)"), {"t": t, "k": KEY})
            else:
                conn.execute(text("SELECT create_distributed_table(:t, :k, colocate_with => 'units')"),
                             {"t": t, "k": KEY})
    with engine.begin() as conn:
        for table, name, definition in foreign:
            conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    return {"tables": local_large, "reference": small, "workers": workers}


def _citus_tables(conn: Connection) -> set[str]:
    """The tables Citus knows (distributed or reference)."""
    return set(conn.execute(text(
        "SELECT c.relname FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid")).scalars())


def _referenced_first(conn: Connection, tables: list[str]) -> list[str]:
    """``tables`` ordered so that a table comes after those its foreign keys refer to: Citus makes a
    reference table only once what it refers to is one (``plan_communities`` after ``plans``)."""
    refers = {t: set() for t in tables}
    for table, target in conn.execute(text(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid::regclass::text = ANY(:t)"), {"t": tables}).all():
        if target in refers and target != table:
            refers[table].add(target)
    ordered: list[str] = []
    while refers:
        ready_now = sorted(t for t, targets in refers.items() if not targets - set(ordered))
        if not ready_now:  # a cycle of keys (none today): Citus would refuse it, naming the key
            ready_now = sorted(refers)
        ordered += ready_now
        for t in ready_now:
            refers.pop(t)
    return ordered


def _keyed_by_district(conn: Connection) -> bool:
    """Whether ``units``' primary or unique key already includes ``district_code`` (a run that
    rebuilt the tables and stopped before distributing them all)."""
    keys = conn.execute(text(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass('public.units') "
        "AND contype IN ('p', 'u')")).scalars().all()
    return any(KEY in k for k in keys)


def _foreign_keys_between(conn: Connection, tables: list[str]) -> list[tuple[str, str, str]]:
    """The foreign keys from one of ``tables`` to a large table: (table, name, definition)."""
    return [tuple(r) for r in conn.execute(text(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conparentid = 0 AND conrelid::regclass::text = ANY(:tables) "
        "AND confrelid::regclass::text = ANY(:large) ORDER BY 1, 2"),
        {"tables": tables, "large": list(LARGE)}).all()]


__all__ = ["citus_installed", "distribute_by_district", "is_distributed", "worker_nodes"]
