"""``flask --app webmap backup -o FILE`` and ``restore FILE`` on each database: a backup restored
into a fresh database holds every row of every table (layers, plans, cases and their history,
accounts, settings, the audit log); a file of the other kind, a damaged or foreign file, and a
database in use without ``--replace`` are refused with a message and a non-zero exit, and
nothing is written."""

from __future__ import annotations

import itertools
import shutil
import sqlite3

import pytest

from geodata.db import dispose_engines, get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import csrf_token, make_accounts, sign_in, snapshot


def cli(url: str):
    runner = make_app(url).test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


@pytest.fixture
def used(db_url, small_demo):
    """A database in use: the demo, accounts and a token, a plan edited and a case acted on."""
    write_demo(get_engine(db_url), small_demo)
    app = make_app(db_url)
    make_accounts(app, small_demo)
    client = app.test_client()
    sign_in(client, "admin")
    headers = {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan = client.post("/api/plans", json={"name": "街道方案", "street": street}, headers=headers)
    assert plan.status_code == 201, plan.get_data(as_text=True)
    plan_id = plan.json["plan_id"]
    unit = client.get(f"/api/plans/{plan_id}/units").json["features"][0]["properties"]["code"]
    moved = client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                        headers=headers)
    assert moved.status_code == 200, moved.get_data(as_text=True)
    dispose_engines()
    return db_url


_fresh = itertools.count()


def fresh(kind: str, request) -> str:
    """A new database of ``kind``, as ``init-db`` leaves it (not the test's own)."""
    n = next(_fresh)
    if kind == "spatialite":
        path = request.getfixturevalue("tmp_path") / f"fresh{n}.sqlite"
        shutil.copy(request.getfixturevalue("spatialite_template"), path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("postgis_server").url.rsplit("/", 1)[0]
    admin = get_engine(server + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE restored_{n} TEMPLATE template_gridplan")
    return f"{server}/restored_{n}"


def test_a_backup_restored_into_a_fresh_database_holds_every_row(used, tmp_path, request):
    before = snapshot(used)
    for table in ("units", "communities", "plans", "plan_assignments", "incidents", "incident_steps",
                  "users", "api_tokens", "settings", "audit_log"):
        assert before[table], f"the test database has no {table}"
    backup = tmp_path / "gridplan.backup"
    made = cli(used)("backup", "-o", str(backup))
    assert made.exit_code == 0, made.output
    assert "backup written" in made.output and backup.stat().st_size > 0
    kind = "sqlite" if used.startswith("sqlite") else "postgis"
    target = fresh("spatialite" if kind == "sqlite" else "postgis", request)
    restored = cli(target)("restore", str(backup))
    assert restored.exit_code == 0, restored.output
    dispose_engines()
    after = snapshot(target)
    assert after.keys() == before.keys()
    for table in before:
        assert after[table] == before[table], f"{table} differs after the restore"


def test_restore_into_a_file_that_does_not_exist_yet(spatialite_url, small_demo, tmp_path):
    write_demo(get_engine(spatialite_url), small_demo)
    backup = tmp_path / "b.sqlite"
    assert cli(spatialite_url)("backup", "-o", str(backup)).exit_code == 0
    target = f"sqlite:///{tmp_path / 'new' / 'gridplan.sqlite'}"
    done = cli(target)("restore", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert snapshot(target)["units"] == snapshot(spatialite_url)["units"]


def test_a_database_in_use_is_replaced_only_when_asked(used, tmp_path, request):
    backup = tmp_path / "backup"
    assert cli(used)("backup", "-o", str(backup)).exit_code == 0
    kind = "spatialite" if used.startswith("sqlite") else "postgis"
    other = fresh(kind, request)
    write_demo(get_engine(other), request.getfixturevalue("small_demo"))
    dispose_engines()
    before = snapshot(other)
    refused = cli(other)("restore", str(backup))
    assert refused.exit_code != 0
    assert "holds data already" in refused.output and "--replace" in refused.output
    dispose_engines()
    assert snapshot(other) == before
    replaced = cli(other)("restore", "--replace", str(backup))
    assert replaced.exit_code == 0, replaced.output
    dispose_engines()
    assert snapshot(other) == snapshot(used)


def test_refused_files_leave_the_database_as_it_was(spatialite_url, postgis_url, small_demo, tmp_path):
    for url in (spatialite_url, postgis_url):
        write_demo(get_engine(url), small_demo)
    sqlite_backup, pg_backup = tmp_path / "s.backup", tmp_path / "p.backup"
    assert cli(spatialite_url)("backup", "-o", str(sqlite_backup)).exit_code == 0
    assert cli(postgis_url)("backup", "-o", str(pg_backup)).exit_code == 0
    # damaged and foreign files
    truncated_sqlite = tmp_path / "truncated.sqlite"
    truncated_sqlite.write_bytes(sqlite_backup.read_bytes()[: sqlite_backup.stat().st_size // 3])
    truncated_pg = tmp_path / "truncated.dump"
    truncated_pg.write_bytes(pg_backup.read_bytes()[: pg_backup.stat().st_size // 2])
    text_file = tmp_path / "notes.txt"
    text_file.write_text("社区名单 not a backup\n")
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE things (id INTEGER PRIMARY KEY)")
    cases = {
        spatialite_url: [(pg_backup, "is a PostGIS backup and this database is SpatiaLite"),
                         (truncated_sqlite, "damaged SQLite file"), (text_file, "neither a SpatiaLite"),
                         (foreign, "not gridplan's"), (tmp_path / "missing", "no such file")],
        postgis_url: [(sqlite_backup, "is a SpatiaLite backup and this database is PostGIS"),
                      (truncated_pg, "damaged PostgreSQL dump"), (text_file, "neither a SpatiaLite")],
    }
    for url, files in cases.items():
        dispose_engines()
        before = snapshot(url)
        for path, message in files:
            answer = cli(url)("restore", "--replace", str(path))
            assert answer.exit_code != 0, (url, path.name)
            assert message in answer.output, (path.name, answer.output)
            dispose_engines()
            assert snapshot(url) == before, (url, path.name)


def test_a_backup_that_fails_leaves_no_file(spatialite_url, tmp_path):
    answer = cli(spatialite_url)("backup", "-o", str(tmp_path))
    assert answer.exit_code != 0 and "is a folder" in answer.output
    assert not list(tmp_path.glob(".backup-*"))
