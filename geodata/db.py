"""The database engine: SpatiaLite file by default, PostGIS when ``DATABASE_URL`` says so.

Every other module reaches the database through :func:`get_engine`, so both databases sit
behind one code path. What differs between them lives in :mod:`geodata.dialect`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

# pyogrio, pyproj and rasterio must be imported before the first SpatiaLite connection: every
# process (gunicorn workers, `flask run`, the CLI, the job worker) passes through here first.
# SQLite loads mod_spatialite with RTLD_GLOBAL, so the system PROJ it links comes first in the
# symbol lookup of every library loaded after it; the PROJ copied inside each wheel then calls
# the system one's functions on its own structures (segfaults on GPKG writes, "double free" at
# exit, and a gunicorn worker killed by SIGSEGV when rasterio decodes an uploaded photo —
# layers/incidents/loop.py prepare_photo). Loaded first, each wheel's libraries are bound to their
# own copies (Python loads extensions with RTLD_NOW), whatever is loaded afterwards.
import pyogrio  # noqa: F401
import pyproj  # noqa: F401
import rasterio  # noqa: F401  (loads its libgdal and libproj: every rasterio module links only those)
from geoalchemy2.admin.dialects.sqlite import load_spatialite
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError

from geodata.errors import DatabaseTrouble
from geodata.i18n import _

# Debian installs the extension on the loader path as mod_spatialite.so.
os.environ.setdefault("SPATIALITE_LIBRARY_PATH", "mod_spatialite")

DEFAULT_INSTANCE = Path(__file__).resolve().parent.parent / "instance"

#: rows per INSERT/UPDATE statement and per IN (…) list: small enough for SQLite's variable limit,
#: large enough that a city-size write is a few hundred statements
BATCH = 2000

#: seconds to wait for PostgreSQL to accept a connection: while it is down or restarting, a
#: request fails with a 503 after at most this long instead of hanging
CONNECT_TIMEOUT_S = 5


def default_url() -> str:
    """The SpatiaLite file under ``instance/`` used when ``DATABASE_URL`` is not set."""
    return f"sqlite:///{DEFAULT_INSTANCE / 'gridplan.sqlite'}"


def database_url() -> str:
    """``DATABASE_URL`` from the environment, or the embedded default."""
    return os.environ.get("DATABASE_URL") or default_url()


#: how long a SQLite connection waits for another's write lock before "database is locked"
SQLITE_BUSY_MS = 30000


def _on_sqlite_connect(dbapi_conn, _record) -> None:
    # Full SRID init (0.07 s, once per new file) so CGCS2000 and Gauss–Krüger codes exist.
    load_spatialite(dbapi_conn, transaction=True)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the one writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.close()


_writing = threading.local()


@contextlib.contextmanager
def _begin_writing(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` on SQLite: the transaction takes the write lock at ``BEGIN IMMEDIATE``.

    A deferred transaction that reads and then writes fails at once with "database is locked"
    (SQLITE_BUSY_SNAPSHOT, no busy wait) when another writer committed since its first read;
    every ``engine.begin()`` here writes, so it waits for the lock up front instead (busy_timeout),
    while ``engine.connect()`` reads stay deferred and never wait for a writer (WAL). A
    transaction opened inside another one of the same thread stays deferred, as before: waiting
    for the lock its own thread holds would never end."""
    outer = getattr(_writing, "depth", 0)
    with engine.connect() as conn:
        conn.info["write"] = outer == 0
        _writing.depth = outer + 1
        try:
            with conn.begin():
                yield conn
        finally:
            _writing.depth = outer


def _begin_sqlite(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("write", False) else "BEGIN")


_engines: dict[str, Engine] = {}


def get_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default :func:`database_url`), created once per process.

    SQLite URLs get SpatiaLite loaded on every connection; the folder of the file is created
    when missing.
    """
    url = url or database_url()
    if url in _engines:
        return _engines[url]
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _on_sqlite_connect)
        # pysqlite's own transaction handling defers BEGIN; let SQLAlchemy emit it so that
        # a whole import is one transaction, including its DDL-free deletes.
        event.listen(engine, "begin", _begin_sqlite)
        engine.begin = types.MethodType(_begin_writing, engine)

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
    elif url.startswith("postgresql"):
        # pre-ping: after a restart of PostgreSQL, pooled connections are found dead and replaced
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    else:
        raise ValueError(f"unsupported DATABASE_URL {url!r}: use sqlite:///… or postgresql+psycopg://…")
    _engines[url] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests and forked workers call this)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


# SQLSTATE classes and codes of PostgreSQL (psycopg ``sqlstate``), SQLite result codes (``sqlite_errorname``)
_PG_UNREACHABLE = ("08", "57P")  # connection exceptions; admin/crash shutdown, cannot connect now
_PG_BUSY = ("40001", "40P01", "55P03", "57014", "53300")  # serialization, deadlock, lock, timeout, too many
_PG_DISK_FULL = "53100"
_PG_NO_SCHEMA = ("42P01", "42703", "3F000")  # undefined table, column, schema
_SQLITE_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


#: the driver errors that mean the database cannot do it now (down, busy, full, no schema), as
#: opposed to a mistake in gridplan's own SQL: :func:`database_trouble` says which
DATABASE_ERRORS = (OperationalError, ProgrammingError, InterfaceError)


def database_trouble(exc: DBAPIError) -> DatabaseTrouble:
    """What a database failure means to the person who asked, as a 503 refusal: the database
    cannot be reached (PostgreSQL down or restarting), is busy (locked past the timeout), its disk
    is full, or its schema is missing; anything else is a failure of the database."""
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or ""
    name = getattr(orig, "sqlite_errorname", None) or ""
    text = str(orig).lower()
    if state == _PG_DISK_FULL or name.startswith("SQLITE_FULL") or "disk is full" in text \
            or "no space left on device" in text:
        return DatabaseTrouble(_("The database's disk is full: the change was not saved. An administrator "
                                 "must free space on the disk; then try again."), code="DiskFull")
    if state.startswith(_PG_NO_SCHEMA) or "no such table" in text:
        return DatabaseTrouble(_("The database is not ready: run `flask --app webmap init-db`."),
                               code="DatabaseNotReady")
    if name.startswith(_SQLITE_BUSY) or "database is locked" in text or state.startswith(_PG_BUSY):
        return DatabaseTrouble(_("The database is busy: the change was not saved; try again in a moment."),
                               code="DatabaseBusy", retry_after=2)
    if exc.connection_invalidated or state.startswith(_PG_UNREACHABLE) or (
            not state and getattr(orig, "__module__", "").startswith("psycopg")):
        return DatabaseTrouble(_("The database cannot be reached (it may be restarting): try again in a "
                                 "moment."), code="DatabaseUnreachable", retry_after=5)
    return DatabaseTrouble(_("The database failed: try again later, and tell an administrator if it happens "
                             "again."), code="DatabaseFailed")


def pause_for_fault_tests(point: str) -> None:
    """Inert unless ``GRIDPLAN_TEST_PAUSE_AT`` names ``point`` (``import``, ``adopt``, ``open311``):
    then say so on stderr and sleep inside the open transaction, for tests/test_faults.py to kill
    the process there (``kill -9``) and show that nothing of the transaction is kept."""
    if os.environ.get("GRIDPLAN_TEST_PAUSE_AT") == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(600)


def die_for_fault_tests(district: str) -> None:
    """Inert unless ``GRIDPLAN_TEST_DIE_IN_DISTRICT`` is ``district:marker-file`` and the marker
    file does not exist yet: then create it and kill this process (SIGKILL) inside the open
    transaction, once — a worker dying half-way through its write, for the tests."""
    spec = os.environ.get("GRIDPLAN_TEST_DIE_IN_DISTRICT", "")
    target, _, marker = spec.partition(":")
    if target != district or not marker:
        return
    try:
        with open(marker, "x") as flag:
            flag.write(str(os.getpid()))
    except FileExistsError:
        return
    print(f"dying in district {district}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
