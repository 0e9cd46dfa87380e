"""Backing up and restoring the whole database: every layer, plan, case, history row, account
and setting.

SpatiaLite: SQLite's online backup API (a consistent copy while the app keeps serving, written
to a temporary file and renamed, so a failed backup leaves no file). PostGIS: ``pg_dump -Fc``
and ``pg_restore`` in one transaction. A file is checked before anything is written: its kind
(a SpatiaLite file cannot go into PostGIS nor a PostgreSQL dump into SpatiaLite), that it is
whole, that it is a gridplan database of a schema this version knows. A database that holds
data already is only replaced when asked (``replace=True``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, make_url, text

from geodata.db import dispose_engines, get_engine
from geodata.errors import Refused
from geodata.migrate import MIGRATIONS

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
    unknown = sorted(set(revisions) - _known_revisions())
    if unknown:
        raise BackupRefused(f"{path} was made by a newer gridplan (schema revision {', '.join(unknown)} "
                            "is unknown here): upgrade gridplan first")


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


def _check_sqlite_file(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            status = conn.execute("PRAGMA integrity_check").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in GRIDPLAN_TABLES if t not in tables]
            if missing:
                raise BackupRefused(f"{path} is a SQLite database but not gridplan's (no table "
                                    f"{', '.join(missing)})")
            revisions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"{path} is a damaged SQLite file ({exc}): not restored") from None
    if status != [("ok",)]:
        problems = "; ".join(r[0] for r in status[:3])
        raise BackupRefused(f"{path} is a damaged SQLite file (integrity check: {problems}): not restored")
    _check_revisions(path, revisions)


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
    _check_sqlite_file(path)
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
        _run([_pg_tool("pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-f", temporary, *args], env,
             "pg_dump")
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _pg_contents(path: Path) -> list[str]:
    """The dump's table of contents (``pg_restore -l``); refused when it cannot be read."""
    done = subprocess.run([_pg_tool("pg_restore"), "-l", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupRefused(f"{path} is a damaged PostgreSQL dump ({done.stderr.strip().splitlines()[-1:]}): "
                            "not restored")
    return done.stdout.splitlines()


def _check_pg_file(path: Path) -> None:
    """The dump read to its end (a truncated or damaged archive fails here, before the
    database is touched); refused when not gridplan's or from a newer schema."""
    contents = _pg_contents(path)
    done = subprocess.run([_pg_tool("pg_restore"), "-f", os.devnull, str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        problem = (done.stderr.strip().splitlines() or ["unreadable"])[-1].removeprefix("pg_restore: error: ")
        raise BackupRefused(f"{path} is a damaged PostgreSQL dump ({problem}): not restored")
    tables = {line.split()[-2] for line in contents if " TABLE " in line}
    missing = [t for t in GRIDPLAN_TABLES if t not in tables]
    if missing:
        raise BackupRefused(f"{path} is a PostgreSQL dump but not of gridplan "
                            f"(no table {', '.join(missing)})")
    _check_revisions(path, _pg_revisions(path))


def _pg_restore(path: Path, url: str) -> None:
    contents = _pg_contents(path)
    # the extension is the database's own (created by init-db or its administrator); everything
    # else is restored from the dump, over what is there, in one transaction
    keep = [line for line in contents if line and not line.startswith(";") and " EXTENSION " not in line]
    fd, listing = tempfile.mkstemp(suffix=".list")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(keep) + "\n")
    engine = get_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
        dispose_engines()
        args, env = _pg_args(url)
        _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
              "--single-transaction", "--exit-on-error", "-L", listing, *args, str(path)], env, "pg_restore")
    finally:
        os.unlink(listing)


def _pg_revisions(path: Path) -> list[str]:
    """The schema revisions recorded in the dump (its ``alembic_version`` rows)."""
    done = subprocess.run([_pg_tool("pg_restore"), "--data-only", "--table=alembic_version", "-f", "-",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupRefused(f"{path} is a damaged PostgreSQL dump: its schema revision cannot be read")
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


def backup(url: str, output: Path) -> dict:
    """Write a backup of the database at ``url`` to ``output`` (a SQLite file or a
    ``pg_dump -Fc`` archive); the file appears only when the backup is whole."""
    output = Path(output)
    if output.is_dir():
        raise BackupRefused(f"{output} is a folder: name the backup file")
    kind = database_kind(url)
    (_sqlite_backup if kind == "sqlite" else _pg_backup)(url, output)
    return {"kind": KINDS[kind], "path": str(output), "bytes": output.stat().st_size}


def restore(path: Path, url: str, *, replace: bool = False) -> dict:
    """Replace the database at ``url`` with the backup ``path``. Refused, with nothing written:
    a file of the other database's kind, a damaged file, one that is not gridplan's or comes
    from a newer schema, and a database that holds data unless ``replace``."""
    path = Path(path)
    kind = _refuse_wrong_kind(path, url)
    if kind == "sqlite":
        _check_sqlite_file(path)
    else:
        _check_pg_file(path)
    target = get_engine(url)
    exists = kind != "sqlite" or _sqlite_path(url).exists()
    if exists and not replace and holds_data(target):
        raise BackupRefused("this database holds data already; restore into a fresh database, or add "
                            "--replace to replace everything in it with the backup")
    if kind == "sqlite":
        _sqlite_restore(path, url)
    else:
        _pg_restore(path, url)
    dispose_engines()
    return {"kind": KINDS[kind], "path": str(path)}
