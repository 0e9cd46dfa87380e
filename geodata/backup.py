"""Backing up and restoring the whole database: every layer, plan, case, history row, account
and setting.

SpatiaLite: SQLite's online backup API (a consistent copy while the app keeps serving, written
to a temporary file and renamed, so a failed backup leaves no file). PostGIS: ``pg_dump -Fc``
and ``pg_restore`` in one transaction. A file is checked before anything is written: its kind
(a SpatiaLite file cannot go into PostGIS nor a PostgreSQL dump into SpatiaLite), that it is
whole, that it is a gridplan database of a schema this version knows, and that its schema is
gridplan's own and nothing else. A database that holds data already is only replaced when asked
(``replace=True``).

A backup is code as much as data: a trigger, a view, a CHECK constraint calling a function, a
rule or a policy in it runs later, inside the database, with the database's rights. So a
restore runs nothing it did not make: the file's schema is compared, object by object and
definition by definition, with one freshly made by gridplan's own migrations at the file's
revision (a scratch SpatiaLite file, or a scratch PostgreSQL database dumped with the same
``pg_dump`` options), and anything foreign, altered or missing is refused by name before a byte
is written. The file is first copied where only this process writes, so what is checked is what
is restored.
"""

from __future__ import annotations

import functools
import graphlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from geodata import partitions
from geodata.db import dispose_engines, get_engine
from geodata.errors import Refused, excerpt
from geodata.i18n import _
from geodata.migrate import MIGRATIONS, upgrade

SQLITE_MAGIC = b"SQLite format 3\x00"
PGDUMP_MAGIC = b"PGDMP"
#: tables every gridplan database has; a file without them is someone else's database
GRIDPLAN_TABLES = ("alembic_version", "users", "settings", "units", "communities")
#: tables whose rows mean the database is in use (a fresh ``init-db`` holds only settings)
DATA_TABLES = ("users", "units", "communities", "plans", "incidents")

KINDS = {"sqlite": "SpatiaLite", "postgresql": "PostGIS"}


class BackupRefused(Refused):
    """A backup or restore that cannot be done; nothing was written."""


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def file_kind(path: Path) -> str:
    """The kind of database a backup file holds, from its first bytes; refused when neither."""
    path = Path(path)
    if not path.is_file():
        raise BackupRefused(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PGDUMP_MAGIC):
        return "postgresql"
    raise BackupRefused(f"{path} is neither a SpatiaLite database nor a PostgreSQL dump (pg_dump -Fc): "
                        "it is not a gridplan backup, or it is damaged")


def _known_revisions() -> set[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _check_revisions(path: Path, revisions: list[str]) -> None:
    if not revisions:
        raise BackupRefused(_("{path} records no schema revision (its alembic_version is empty): it is not "
                              "a gridplan backup", path=path))
    unknown = sorted(set(revisions) - _known_revisions())
    if unknown:
        named = excerpt(", ".join(map(str, unknown)), 200)
        raise BackupRefused(f"{path} was made by a newer gridplan (schema revision {named} is unknown "
                            "here): upgrade gridplan first")


def holds_data(engine: Engine) -> bool:
    """Whether the database has accounts, layers, plans or cases (not a fresh ``init-db``)."""
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return any(conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first()  # noqa: S608 (fixed names)
                   for table in DATA_TABLES if table in names)


def _refuse_wrong_kind(path: Path, url: str) -> str:
    kind, target = file_kind(path), database_kind(url)
    if kind != target:
        raise BackupRefused(f"{path} is a {KINDS[kind]} backup and this database is {KINDS[target]}: "
                            f"restore it into a {KINDS[kind]} database (DATABASE_URL), or move the data "
                            "with export and import")
    return kind


# --- SpatiaLite --------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    path = make_url(url).database
    if not path or path == ":memory:":
        raise BackupRefused("the database is in memory: nothing to back up")
    return Path(path)


def _check_sqlite_file(path: Path, shown: Path | None = None) -> None:
    """Refused when ``path`` (shown to the user as ``shown``) is damaged, not gridplan's, from a
    newer gridplan, or holds a schema object gridplan's migrations do not make."""
    shown = shown or path
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            # nothing in the file's schema may run while it is looked at (no SpatiaLite is loaded
            # here either, so its functions are unknown to this connection)
            conn.execute("PRAGMA trusted_schema = OFF")
            status = conn.execute("PRAGMA integrity_check").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in GRIDPLAN_TABLES if t not in tables]
            if missing:
                raise BackupRefused(f"{shown} is a SQLite database but not gridplan's (no table "
                                    f"{', '.join(missing)})")
            revisions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
            objects = _sqlite_objects(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"{shown} is a damaged SQLite file ({exc}): not restored") from None
    if status != [("ok",)]:
        problems = "; ".join(r[0] for r in status[:3])
        raise BackupRefused(f"{shown} is a damaged SQLite file (integrity check: {problems}): not restored")
    _check_revisions(shown, revisions)
    _compare_sqlite(shown, objects, _sqlite_reference(revisions))


def _sqlite_backup(url: str, output: Path) -> None:
    source = _sqlite_path(url)
    if not source.exists():
        raise BackupRefused(f"the database {source} does not exist")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".backup-", suffix=".sqlite", dir=output.parent)
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(temporary)
        try:
            src.backup(dst)  # one step: a consistent copy even while the app writes
        finally:
            dst.close()
            src.close()
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _sqlite_restore(path: Path, url: str) -> None:
    """Copy the checked file ``path`` over the database at ``url``."""
    target = _sqlite_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    dispose_engines()
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)  # replaces every page of the target in one transaction
    finally:
        dst.close()
        src.close()


# --- gridplan's own schema ----------------------------------------------------------------------

#: what SQLite itself adds to a database that was analysed (ANALYZE's statistics), as SQLite writes it
SQLITE_OWN = {("table", "sqlite_stat1"): ("sqlite_stat1", "CREATE TABLE sqlite_stat1(tbl,idx,stat)"),
              ("table", "sqlite_stat4"): ("sqlite_stat4",
                                          "CREATE TABLE sqlite_stat4(tbl,idx,neq,nlt,ndlt,sample)")}
#: how many objects a refusal names (the rest are counted)
NAMED = 12



def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED])
    if len(names) <= NAMED:
        return shown
    return _("{names} and {count} more", names=shown, count=len(names) - NAMED)


def _refuse_schema(path: Path, foreign: list[str], altered: list[str], missing: list[str]) -> None:
    """Refuse a backup whose schema differs from gridplan's, naming what differs."""
    problems = []
    if foreign:
        problems.append(_("foreign to gridplan: {names}", names=_listed(foreign)))
    if altered:
        problems.append(_("defined otherwise than gridplan defines it: {names}", names=_listed(altered)))
    if missing:
        problems.append(_("missing: {names}", names=_listed(missing)))
    if problems:
        raise BackupRefused(_("{path} holds a schema that is not gridplan's ({problems}): not restored, "
                              "nothing was written", path=path, problems="; ".join(problems)))


_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}


def _column_list(sql: str) -> tuple[str, tuple[str, ...], str] | str:
    """A CREATE TABLE (or COPY) statement as its text before the column list, the list's items
    sorted, and its text after: two databases whose columns were added in another order (the
    migrations' branches applied in another order) define the same table. Each item is still
    compared character for character. Returns ``sql`` itself when it has no such list."""
    depth, start, items, quote, item_start = 0, -1, [], None, 0
    for i, c in enumerate(sql):
        if quote:
            if c == quote:
                quote = None
            continue
        if c in _QUOTES:
            quote = _QUOTES[c]
        elif c == "(":
            depth += 1
            if depth == 1 and start < 0:
                start = item_start = i + 1
        elif c == ")":
            depth -= 1
            if depth == 0 and start >= 0:
                items.append(sql[item_start:i].strip())
                return sql[:start], tuple(sorted(items)), sql[i:]
        elif c == "," and depth == 1 and start >= 0:
            items.append(sql[item_start:i].strip())
            item_start = i + 1
    return sql


def _sqlite_objects(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Every table, index, view and trigger of a SQLite file: (type, name) → (table, SQL), a
    table's columns in any order."""
    return {(kind, name): (table, _column_list(sql) if kind == "table" and sql else sql)
            for kind, name, table, sql in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}


def _sqlite_reference(revisions: list[str]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """The schema gridplan's migrations make at ``revisions`` in a new SpatiaLite file (SpatiaLite's
    own tables, views, triggers and virtual tables included, exactly as it makes them)."""
    return _sqlite_schema_made(tuple(sorted(set(revisions))))


@functools.lru_cache(maxsize=4)  # a function of the code alone (the migrations and SpatiaLite)
def _sqlite_schema_made(revisions: tuple[str, ...]) -> dict[tuple[str, str], tuple[str, str | None]]:
    with tempfile.TemporaryDirectory(prefix="gridplan-schema-") as folder:
        reference = Path(folder) / "reference.sqlite"
        engine = get_engine(f"sqlite:///{reference}")
        try:
            for revision in revisions:
                upgrade(engine, revision)
        finally:
            dispose_engines()
        conn = sqlite3.connect(f"file:{reference}?mode=ro", uri=True)
        try:
            return _sqlite_objects(conn)
        finally:
            conn.close()


def _compare_sqlite(path: Path, objects: dict, reference: dict) -> None:
    allowed = {**reference, **SQLITE_OWN}

    def label(key: tuple[str, str], table: str) -> str:
        kind, name = key
        on = f" (on {excerpt(table)})" if kind in ("index", "trigger") and table != name else ""
        return f"{kind} {excerpt(name)}{on}"

    foreign = [label(key, table) for key, (table, _sql) in sorted(objects.items()) if key not in allowed]
    altered = [label(key, table) for key, (table, sql) in sorted(objects.items())
               if key in allowed and (table, sql) != allowed[key]]
    missing = [label(key, table) for key, (table, _sql) in sorted(reference.items()) if key not in objects]
    _refuse_schema(path, foreign, altered, missing)


# --- PostGIS archives (pg_dump -Fc): their table of contents ----------------------------------------

#: the pg_dump options of every backup, and of the reference a backup is compared with
PG_DUMP_OPTIONS = ("-Fc", "--no-owner", "--no-privileges")
#: entries pg_restore reads before anything else and acts on whatever the list of entries says
PG_SETUP = {"ENCODING", "STDSTRINGS", "SEARCHPATH"}
#: archive versions this check reads: 1.12 to 1.16 (pg_dump 9.6 to 17; tested with 15's 1.14)
PG_ARCHIVE_VERSIONS = ((1, 12), (1, 16))


@dataclass(frozen=True)
class TocEntry:
    """One entry of a dump's table of contents: what pg_restore would create (``defn``), drop
    (``--clean``), and start a table's data with (``copy``), under which schema and tablespace."""

    dump_id: int
    had_dumper: bool
    desc: str
    namespace: str
    tag: str
    defn: str
    drop: str
    copy: str
    tablespace: str
    tableam: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.desc, self.namespace, self.tag)

    @property
    def sql(self) -> tuple:
        """Everything of the entry that becomes SQL on a restore (a table's columns, and those a
        table's data is copied into, in any order), and whether it has data: pg_restore runs an
        entry's data as SQL commands when the entry has no COPY statement."""
        defn = _column_list(self.defn) if self.desc == "TABLE" else self.defn
        return (self.had_dumper, defn, self.drop, _column_list(self.copy) if self.copy else "",
                self.tablespace, self.tableam)

    @property
    def label(self) -> str:
        return excerpt(f"{self.desc} {self.namespace + '.' if self.namespace else ''}{self.tag}", 120)


class _ArchiveReader:
    """pg_dump's custom format, as pg_backup_archiver.c writes it: integers are a sign byte and
    ``int_size`` little-endian bytes; strings are an integer length (-1: none) and the bytes."""

    def __init__(self, f) -> None:
        self.f = f
        self.int_size = 4

    def byte(self) -> int:
        b = self.f.read(1)
        if not b:
            raise EOFError
        return b[0]

    def integer(self) -> int:
        sign = self.byte()
        raw = self.f.read(self.int_size)
        if len(raw) != self.int_size:
            raise EOFError
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def string(self) -> str | None:
        n = self.integer()
        if n < 0:
            return None
        if n > 256 * 1024**2:  # no definition is a quarter of a gigabyte: a damaged or crafted length
            raise ValueError("string too long")
        raw = self.f.read(n)
        if len(raw) != n:
            raise EOFError
        return raw.decode("utf-8", errors="replace")


def read_toc(path: Path, shown: Path | None = None) -> list[TocEntry]:
    """The table of contents of a ``pg_dump -Fc`` archive, every entry with the SQL it holds (the
    entries ``pg_restore -l`` lists and the ones it hides: encoding, search path …)."""
    shown = shown or path
    damaged = _("{path} is a damaged PostgreSQL dump (its table of contents cannot be read): not restored",
                path=shown)
    try:
        with open(path, "rb") as f:
            r = _ArchiveReader(f)
            if f.read(5) != PGDUMP_MAGIC:
                raise BackupRefused(damaged)
            version = (r.byte(), r.byte(), r.byte())
            if not PG_ARCHIVE_VERSIONS[0] <= version[:2] <= PG_ARCHIVE_VERSIONS[1]:
                raise BackupRefused(_("{path} was written by a pg_dump whose archive version "
                                      "{version} this gridplan cannot check: not restored", path=shown,
                                      version=".".join(map(str, version))))
            r.int_size, offset_size = r.byte(), r.byte()
            if not 1 <= r.int_size <= 8 or not 1 <= offset_size <= 16:
                raise BackupRefused(damaged)
            r.byte()  # format
            if version >= (1, 15, 0):
                r.byte()  # compression algorithm
            else:
                r.integer()  # compression level
            for _field in range(7):  # the time it was made
                r.integer()
            r.string()  # database name
            r.string()  # server version
            r.string()  # pg_dump version
            entries = []
            for _n in range(r.integer()):
                dump_id = r.integer()
                had_dumper = r.integer() != 0  # the entry has data in the archive
                r.string()  # catalogue table oid
                r.string()  # object oid
                tag, desc = r.string(), r.string()
                r.integer()  # section
                defn, drop, copy = r.string(), r.string(), r.string()
                namespace, tablespace = r.string(), r.string()
                tableam = r.string() if version >= (1, 14, 0) else None
                if version >= (1, 16, 0):
                    r.integer()  # relkind
                r.string()  # owner (a restore sets none: --no-owner)
                r.string()  # "with oids", long gone
                while r.string() is not None:  # dependencies
                    pass
                r.byte()  # where the data is (custom format): a flag and an offset
                if len(f.read(offset_size)) != offset_size:
                    raise EOFError
                entries.append(TocEntry(dump_id, had_dumper, desc or "", namespace or "", tag or "",
                                        defn or "", drop or "", copy or "", tablespace or "", tableam or ""))
            return entries
    except (EOFError, ValueError, OSError):
        raise BackupRefused(damaged) from None


def _ignored(entry: TocEntry) -> bool:
    """Entries a restore never runs: the database itself (only with --create, which it never uses)
    and PostGIS with its table of coordinate systems (the database's own, created by init-db or its
    administrator; gridplan adds no coordinate system to it)."""
    if entry.desc in ("DATABASE", "DATABASE PROPERTIES") or entry.desc in ("COMMENT", "SECURITY LABEL") \
            and entry.tag.startswith("DATABASE "):
        return True
    return (entry.desc, entry.namespace, entry.tag) in (
        ("EXTENSION", "", "postgis"), ("COMMENT", "", "EXTENSION postgis"),
        ("TABLE DATA", "public", "spatial_ref_sys"))


_SETVAL = re.compile(r"(SELECT pg_catalog\.setval\('[^']*', )\d+, (?:true|false)\);\n")


def _compare_pg(path: Path, entries: list[TocEntry], reference: list[TocEntry]) -> None:
    expected: dict[tuple[str, str, str], list[TocEntry]] = {}
    for entry in reference:
        if not _ignored(entry):
            expected.setdefault(entry.key, []).append(entry)
    seen: set[tuple[str, str, str]] = set()
    foreign, altered = [], []
    for entry in entries:
        if _ignored(entry):
            continue
        candidates = expected.get(entry.key)
        if not candidates or entry.key in seen:
            foreign.append(entry.label)
            continue
        seen.add(entry.key)
        model = candidates[0]
        if entry.desc == "SEQUENCE SET":
            # the value is data; the statement around it must be gridplan's, word for word
            m = _SETVAL.fullmatch(model.defn)
            pattern = re.escape(m.group(1)) + r"\d+, (?:true|false)\);\n" if m else re.escape(model.defn)
            same = re.fullmatch(pattern, entry.defn) is not None and \
                (entry.sql[0], *entry.sql[2:]) == (model.sql[0], *model.sql[2:])
        else:
            same = entry.sql == model.sql
        if not same:
            altered.append(entry.label)
    missing = [e.label for key, group in expected.items() if key not in seen for e in group[:1]]
    _refuse_schema(path, foreign, altered, missing)


def _pg_reference(url: str, revisions: list[str], districts: tuple[str, ...] | None = None) -> list[TocEntry]:
    """The table of contents of a dump of a scratch database that gridplan's migrations bring to
    ``revisions`` on the same server (made, dumped and dropped here; kept for the process) —
    partitioned by district with a partition for each of ``districts`` when not None."""
    u = make_url(url)
    template = _restore_template()
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:  # what the reference depends on: the server's versions too
            server = tuple(conn.execute(text(
                "SELECT version(), (SELECT default_version FROM pg_available_extensions "
                "WHERE name = 'postgis')")).one())
    except SQLAlchemyError:
        server = ()  # the scratch database's creation below names the problem
    finally:
        admin.dispose()
    key = (u.host, u.port, u.username, template, tuple(sorted(set(revisions))), server, districts)
    if key not in _PG_REFERENCES:
        _PG_REFERENCES[key] = _pg_schema_made(url, template, key[4], districts)
    return list(_PG_REFERENCES[key])


#: the references made in this process, by server (its address, user and versions), template and
#: revisions: what they mirror is the migrations' code and the server's version, both in the key,
#: so no other process can make one stale
_PG_REFERENCES: dict[tuple, tuple[TocEntry, ...]] = {}


def _pg_schema_made(url: str, template: str, revisions: tuple[str, ...],
                    districts: tuple[str, ...] | None = None) -> tuple[TocEntry, ...]:
    """:func:`_pg_reference`'s dump of a scratch database made, dumped and dropped."""
    try:
        with _scratch_database(url, template) as scratch:
            engine = create_engine(scratch, poolclass=NullPool)
            try:
                for revision in revisions:
                    upgrade(engine, revision)
                if districts is not None:  # a partitioned database: made as init-db makes it
                    partitions.partition_by_district(engine)
                    partitions.split_districts(engine, list(districts))
            finally:
                engine.dispose()
            with tempfile.TemporaryDirectory(prefix="gridplan-schema-") as folder:
                dump = Path(folder) / "reference.dump"
                args, env = _pg_args(scratch)
                _run([_pg_tool("pg_dump"), *PG_DUMP_OPTIONS, "-f", str(dump), *args], env, "pg_dump")
                entries = tuple(read_toc(dump))
    except SQLAlchemyError as exc:
        problem = excerpt(str(getattr(exc, "orig", exc)).strip().splitlines()[0], 200)
        raise BackupRefused(_("the backup cannot be checked against gridplan's schema: the user of "
                              "DATABASE_URL must be able to create a scratch database with PostGIS on "
                              "this server to compare it with (CREATEDB, and superuser rights or "
                              "GRIDPLAN_RESTORE_TEMPLATE naming a template with PostGIS) ({problem}); "
                              "nothing was written", problem=problem)) from None
    return entries


def _restore_template() -> str:
    """The template a scratch database is copied from: ``template0``, or GRIDPLAN_RESTORE_TEMPLATE
    (a user without superuser rights cannot create PostGIS in a new database, but may copy a
    template that has it, and nothing else)."""
    template = os.environ.get("GRIDPLAN_RESTORE_TEMPLATE") or "template0"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", template):
        raise BackupRefused(_("GRIDPLAN_RESTORE_TEMPLATE={template} is not a database name",
                              template=excerpt(repr(template))))
    return template


@contextmanager
def _scratch_database(url: str, template: str) -> Iterator[str]:
    """A new database on the server of ``url``, copied from ``template`` (from ``template0``: with
    the encoding and locale of the database at ``url``); its URL, dropped on exit."""
    u = make_url(url)
    name = f"gridplan_check_{secrets.token_hex(6)}"
    admin = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if template == "template0":  # as the database being restored: same encoding and locale
                encoding, collate, ctype = conn.execute(text(
                    "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                    "WHERE datname = current_database()")).one()
                quote = lambda value: "'" + str(value).replace("'", "''") + "'"  # noqa: E731
                conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING {quote(encoding)} "
                                     f"LC_COLLATE {quote(collate)} LC_CTYPE {quote(ctype)}")
            else:
                conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        try:
            yield u.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


# --- PostGIS -----------------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    folder = os.environ.get("GRIDPLAN_PG_BIN")
    found = str(Path(folder) / name) if folder else shutil.which(name)
    if not found or not Path(found).exists():
        raise BackupRefused(f"{name} is not installed (Debian: postgresql-client-15); "
                            "GRIDPLAN_PG_BIN may name its folder")
    return found


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    u = make_url(url)
    args = ["-d", u.database or "postgres"]
    if u.host:
        args += ["-h", u.host]
    if u.port:
        args += ["-p", str(u.port)]
    if u.username:
        args += ["-U", u.username]
    env = {**os.environ}
    if u.password:
        env["PGPASSWORD"] = u.password  # not on the command line, where others could read it
    return args, env


def _run(command: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise BackupRefused(f"{what} failed: {' '.join(lines[-3:]) or f'exit {done.returncode}'}")
    return done


def _pg_backup(url: str, output: Path) -> None:
    args, env = _pg_args(url)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".backup-", suffix=".dump", dir=output.parent)
    os.close(fd)
    try:
        _run([_pg_tool("pg_dump"), *PG_DUMP_OPTIONS, "-f", temporary, *args], env, "pg_dump")
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _check_pg_file(path: Path, url: str, shown: Path | None = None) -> list[TocEntry]:
    """The dump read to its end (a truncated or damaged archive fails here, before the database is
    touched); refused when not gridplan's, from a newer schema, or holding anything gridplan's
    migrations do not make. Returns the entries to restore."""
    shown = shown or path
    entries = read_toc(path, shown)
    done = subprocess.run([_pg_tool("pg_restore"), "-f", os.devnull, str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        problem = (done.stderr.strip().splitlines() or ["unreadable"])[-1].removeprefix("pg_restore: error: ")
        raise BackupRefused(f"{shown} is a damaged PostgreSQL dump ({excerpt(problem, 200)}): "
                            "not restored")
    tables = {e.tag for e in entries if e.desc == "TABLE" and e.namespace == "public"}
    missing = [t for t in GRIDPLAN_TABLES if t not in tables]
    if missing:
        raise BackupRefused(f"{shown} is a PostgreSQL dump but not of gridplan "
                            f"(no table {', '.join(missing)})")
    revisions = _pg_revisions(path, shown)
    _check_revisions(shown, revisions)
    _compare_pg(shown, entries, _pg_reference(url, revisions, _partitioned(entries)))
    return [e for e in entries if not _ignored(e) and e.desc not in PG_SETUP]


def _partitioned(entries: list[TocEntry]) -> tuple[str, ...] | None:
    """A dump of a database partitioned by district (``init-db --partition-by-district``): the
    districts its ``units`` table has partitions for; None for tables made whole. Anything else
    about its partitions is compared with the reference like every other entry."""
    units = [e for e in entries if e.desc == "TABLE" and e.namespace == "public" and e.tag == "units"]
    if not units or "PARTITION BY LIST" not in units[0].defn:
        return None
    found = (re.fullmatch(r"ALTER TABLE ONLY public\.units ATTACH PARTITION public\.units_d[0-9a-z]{1,12} "
                          r"FOR VALUES IN \('([0-9A-Za-z]{1,12})'\);\n", e.defn)
             for e in entries if e.desc == "TABLE ATTACH" and e.namespace == "public")
    return tuple(sorted({m.group(1) for m in found if m}))


def _pg_restore(path: Path, url: str, entries: list[TocEntry], role: str | None) -> None:
    # PostGIS is the database's own (created by init-db or its administrator); every other entry
    # was checked against gridplan's schema and is restored over what is there, in one transaction
    engine = get_engine(url)
    with engine.connect() as conn:
        if partitions.is_partitioned(conn):
            # pg_restore --clean cannot drop a partition's inherited keys (it would fail half-way):
            # the rows are loaded into the partitioned tables instead
            _pg_load(path, url, entries, role)
            return
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
    dispose_engines()
    _pg_restore_run(path, url, entries, role, clean=True)


def _pg_restore_run(path: Path, url: str, entries: list[TocEntry], role: str | None, *, clean: bool) -> None:
    """pg_restore of the checked ``entries`` of ``path`` into the database at ``url``, in one
    transaction (``clean``: over what is there)."""
    fd, listing = tempfile.mkstemp(suffix=".list")
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{e.dump_id};\n" for e in entries))
    try:
        args, env = _pg_args(url)
        as_role = [f"--role={role}"] if role else []
        over = ["--clean", "--if-exists"] if clean else []
        _run([_pg_tool("pg_restore"), *over, "--no-owner", "--no-privileges", *as_role,
              "--single-transaction", "--exit-on-error", "-L", listing, *args, str(path)], env, "pg_restore")
    finally:
        os.unlink(listing)


def _pg_load(path: Path, url: str, entries: list[TocEntry], role: str | None) -> None:
    """Restore into a database partitioned by district, keeping its partitioned tables: the backup
    (checked like any other) is restored into a scratch database first, then, in one transaction
    on the target, every gridplan table is emptied, the backup's district partitions the target
    lacks are made, the rows are copied over (parents first; the incident sums come with the
    backup, so their triggers skip the copy) and the sequences set. A backup of a database made
    whole loads as well: its rows land in their districts' partitions (or the DEFAULT ones).
    Refused, with nothing written, when the target's schema revision is not the backup's."""
    wanted = sorted(set(_pg_revisions(path, path)))
    target = get_engine(url)
    districts = _partitioned(entries) or ()
    try:
        with target.connect() as conn:
            have = sorted(set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()))
        if have != wanted:
            raise BackupRefused(_("this database is partitioned by district and its schema revision "
                                  "({have}) is not the backup's ({wanted}): restore into a new, empty "
                                  "database (CREATE DATABASE …); nothing was written",
                                  have=", ".join(have) or "-", wanted=", ".join(wanted) or "-"))
        with _scratch_database(url, _restore_template()) as scratch:
            source_engine = create_engine(scratch, poolclass=NullPool)
            try:
                with source_engine.begin() as conn:
                    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
                # the role is the target's concern (the rows are written under it below); the
                # scratch database is this user's own
                _pg_restore_run(path, scratch, entries, None, clean=False)
                with source_engine.connect() as source, target.begin() as dest:
                    _copy_rows(source, dest, role, districts)
            finally:
                source_engine.dispose()
    except (SQLAlchemyError, psycopg.Error) as exc:
        problem = excerpt(str(getattr(exc, "orig", exc)).strip().splitlines()[0], 200)
        raise BackupRefused(_("the backup could not be loaded into this partitioned database ({problem}); "
                              "nothing was written", problem=problem)) from None
    dispose_engines()


def _ident(name: str) -> str:
    """A PostgreSQL name, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _copy_rows(source, dest, role: str | None, districts: tuple[str, ...]) -> None:
    """:func:`_pg_load`'s one transaction on the target (``dest``): gridplan's tables emptied, the
    backup's district partitions made, every row of ``source`` copied in, the sequences set."""
    if role:
        dest.exec_driver_sql(f"SET LOCAL ROLE {_ident(role)}")
    dest.exec_driver_sql(partitions.MOVING)
    tables, theirs = _pg_tables(source), _pg_tables(dest)
    differ = sorted(t for t in tables.keys() | theirs.keys()
                    if set(tables.get(t, ())) != set(theirs.get(t, ())))
    if differ:
        raise BackupRefused(_("the tables of this database differ from the backup's ({tables}): restore "
                              "into a new, empty database (CREATE DATABASE …); nothing was written",
                              tables=_listed(differ)))
    dest.exec_driver_sql("TRUNCATE " + ", ".join(f"public.{_ident(t)}" for t in theirs))
    partitions.add_partitions(dest, list(districts))
    raw_source, raw_dest = source.connection.driver_connection, dest.connection.driver_connection
    for table in _parents_first(dest, list(theirs)):
        columns = ", ".join(_ident(c) for c in tables[table])
        name = f"public.{_ident(table)}"
        with raw_source.cursor() as read, raw_dest.cursor() as write, \
                read.copy(f"COPY (SELECT {columns} FROM {name}) TO STDOUT") as rows, \
                write.copy(f"COPY {name} ({columns}) FROM STDIN") as into:
            for block in rows:
                into.write(block)
    for sequence in source.execute(text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'S' "
            "AND c.relnamespace = 'public'::regnamespace AND NOT EXISTS "
            "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') ORDER BY 1")).scalars():
        name = f"public.{_ident(sequence)}"
        value, called = source.execute(text(f"SELECT last_value, is_called FROM {name}")).one()
        dest.execute(text("SELECT setval(CAST(:s AS regclass), :v, :c)"),
                     {"s": name, "v": value, "c": called})


def _pg_tables(conn) -> dict[str, list[str]]:
    """gridplan's tables in a database (a partitioned table, not its partitions; not PostGIS's):
    name → the columns a row is copied by (generated ones are made again, not copied)."""
    rows = conn.execute(text(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND NOT EXISTS "
        "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') ORDER BY c.relname, a.attnum"))
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def _parents_first(conn, tables: list[str]) -> list[str]:
    """``tables`` in an order where every table comes after those its foreign keys refer to."""
    order = graphlib.TopologicalSorter({t: set() for t in tables})
    for child, parent in conn.execute(text(
            "SELECT c.relname, p.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_class p ON p.oid = k.confrelid WHERE k.contype = 'f' AND k.conparentid = 0 "
            "AND k.connamespace = 'public'::regnamespace")):
        if child != parent and child in tables and parent in tables:  # a table's own rows: one COPY
            order.add(child, parent)
    return list(order.static_order())


def _pg_revisions(path: Path, shown: Path) -> list[str]:
    """The schema revisions recorded in the dump (its ``alembic_version`` rows)."""
    done = subprocess.run([_pg_tool("pg_restore"), "--data-only", "--table=alembic_version", "-f", "-",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupRefused(f"{shown} is a damaged PostgreSQL dump: its schema revision cannot be read")
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("COPY ") and "alembic_version" in line), None)
    if start is None:
        return []
    rows = []
    for line in lines[start + 1:]:
        if line == "\\.":
            break
        rows.append(line.strip())
    return rows


# --- both ----------------------------------------------------------------------------------------


@contextmanager
def _private_copy(path: Path) -> Iterator[Path]:
    """``path`` copied into a folder only this user can write (``TMPDIR``): what is checked is
    what is restored, even if someone changes the file in between."""
    with tempfile.TemporaryDirectory(prefix="gridplan-restore-") as folder:
        copy = Path(folder) / "backup"
        shutil.copyfile(path, copy)
        yield copy


def backup(url: str, output: Path) -> dict:
    """Write a backup of the database at ``url`` to ``output`` (a SQLite file or a
    ``pg_dump -Fc`` archive); the file appears only when the backup is whole."""
    output = Path(output)
    if output.is_dir():
        raise BackupRefused(f"{output} is a folder: name the backup file")
    kind = database_kind(url)
    (_sqlite_backup if kind == "sqlite" else _pg_backup)(url, output)
    return {"kind": KINDS[kind], "path": str(output), "bytes": output.stat().st_size}


def restore(path: Path, url: str, *, replace: bool = False, role: str | None = None) -> dict:
    """Replace the database at ``url`` with the backup ``path``. Refused, with nothing written:
    a file of the other database's kind, a damaged file, one that is not gridplan's or comes
    from a newer schema, one whose schema holds anything gridplan's migrations do not make (a
    function, trigger, view, rule, policy, table, column, index or constraint of someone else's,
    or one of gridplan's defined otherwise), and a database that holds data unless ``replace``.
    PostGIS: ``role`` is the role pg_restore creates everything as (``SET ROLE``), one without
    superuser rights where DATABASE_URL's user has them."""
    path = Path(path)
    kind = _refuse_wrong_kind(path, url)
    if role and kind == "sqlite":
        raise BackupRefused(_("--role is for PostGIS: a SpatiaLite file has no roles"))
    if role and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", role):
        raise BackupRefused(_("--role {role} is not a PostgreSQL role name", role=excerpt(repr(role))))
    with _private_copy(path) as copy:
        if kind == "sqlite":
            _check_sqlite_file(copy, path)
        else:
            entries = _check_pg_file(copy, url, path)
        target = get_engine(url)
        exists = kind != "sqlite" or _sqlite_path(url).exists()
        if exists and not replace and holds_data(target):
            raise BackupRefused("this database holds data already; restore into a fresh database, or add "
                                "--replace to replace everything in it with the backup")
        if kind == "sqlite":
            _sqlite_restore(copy, url)
        else:
            _pg_restore(copy, url, entries, role)
    dispose_engines()
    return {"kind": KINDS[kind], "path": str(path)}
