"""A throwaway PostgreSQL 15 + PostGIS cluster for tests and benchmarks.

PostgreSQL will not run as root, so the cluster is created and started as the ``postgres``
user in a folder it owns, listening on 127.0.0.1 and a free port. Use as a context manager::

    with PostgisCluster() as url:
        ...  # url = "postgresql+psycopg://postgres@127.0.0.1:PORT/gridplan"

or from the shell: ``python -m tests.pgcluster`` prints a URL and keeps the cluster up until
interrupted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgisUnavailable(RuntimeError):
    """PostgreSQL 15 or PostGIS is not installed here."""


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test or benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def available() -> bool:
    """Whether PostgreSQL 15 and the PostGIS 3 extension are installed."""
    control = Path("/usr/share/postgresql/15/extension/postgis.control")
    return (PG_BIN / "initdb").exists() and control.exists()


class PostgisCluster:
    """Start a fresh cluster with a ``gridplan`` database that has PostGIS; remove it on exit."""

    def __init__(self, dbname: str = "gridplan", settings: dict[str, str | int] | None = None) -> None:
        self.dbname = dbname
        #: server settings beyond the defaults (``max_locks_per_transaction`` for a province's
        #: thousands of partitions), given to the server as ``-c name=value``
        self.settings = settings or {}
        self.port = free_port()
        self.folder: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> str:
        if not available():
            raise PostgisUnavailable("PostgreSQL 15 with PostGIS 3 is not installed "
                                     "(Debian: postgresql-15-postgis-3)")
        self.folder = Path(tempfile.mkdtemp(prefix="gridplan-pg-"))
        data = self.folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        run = lambda *a: subprocess.run(_as_postgres(*a), check=True, capture_output=True)  # noqa: E731
        run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8")
        self.start_server()
        psql = lambda db, sql: run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U",  # noqa: E731
                                   "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql)
        psql("postgres", f"CREATE DATABASE {self.dbname}")
        psql(self.dbname, "CREATE EXTENSION postgis")
        return self.url

    def start_server(self) -> None:
        """Start the server of the cluster (again, after :meth:`stop_server`), on the same port."""
        subprocess.run(_as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w",
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
            + "".join(f" -c {name}={value}" for name, value in self.settings.items()), "start"),
            check=True, capture_output=True)

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server and keep the cluster (a restart: :meth:`start_server`); ``fast`` ends
        the open sessions, ``immediate`` is a crash."""
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode,
                                    "-w", "stop"), check=True, capture_output=True)

    def stop(self) -> None:
        if self.folder is None:
            return
        subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"),
                                    "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with PostgisCluster() as url:
        print(url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
