"""A backup is code as much as data: ``restore`` runs nothing it did not make.

Crafted backups of both kinds — a SpatiaLite file with a planted trigger (a case report that
makes ``viewer`` an admin, a password reset that keeps the old password), an extra view, an
extra table, a gridplan table redefined; a PostgreSQL dump with a function behind a CHECK
constraint that runs ``COPY … TO PROGRAM``, an extra trigger, a rule, a policy, one of
gridplan's own functions rewritten — are each refused naming the foreign object, with a non-zero
exit, and the target database holds the same rows and the same schema afterwards (and the
program never ran). A genuine backup still restores, also as a role without superuser rights.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from geodata.db import dispose_engines, get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import make_accounts, snapshot

_n = itertools.count()


def cli(url: str):
    runner = make_app(url).test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def new_postgis(server_url: str, name: str | None = None) -> str:
    """A new database as ``init-db`` leaves it, on the test server."""
    server = server_url.rsplit("/", 1)[0]
    name = name or f"trust_{next(_n)}"
    with get_engine(server + "/postgres").connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template_gridplan")
    return f"{server}/{name}"


def schema(url: str) -> list[tuple]:
    """What in a database can run code or shape data: every schema object with its definition."""
    engine = get_engine(url)
    with engine.connect() as conn:
        if url.startswith("sqlite"):
            return sorted(conn.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master")).all())
        return sorted(conn.execute(text("""
            SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'f' AND NOT EXISTS (
                   SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
            UNION ALL SELECT 'trigger', tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
            UNION ALL SELECT 'rule', rulename, definition FROM pg_rules WHERE schemaname = 'public'
            UNION ALL SELECT 'policy', policyname, qual FROM pg_policies
            UNION ALL SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE connamespace = 'public'::regnamespace
            UNION ALL SELECT 'relation', relname, relkind::text || relrowsecurity::text FROM pg_class
             WHERE relnamespace = 'public'::regnamespace""")).all())


def refused_each(target: str, crafted: dict[str, tuple[Path, list[str]]]) -> None:
    """Each crafted backup is refused naming what is foreign; the target keeps its rows and schema."""
    dispose_engines()
    rows, objects = snapshot(target), schema(target)
    for case, (backup, names) in crafted.items():
        answer = cli(target)("restore", "--replace", str(backup))
        assert answer.exit_code != 0, (case, answer.output)
        assert "holds a schema that is not gridplan's" in answer.output, (case, answer.output)
        for name in names:
            assert name in answer.output, (case, name, answer.output)
        assert "Traceback" not in answer.output
        dispose_engines()
        assert snapshot(target) == rows, case
        assert schema(target) == objects, case


# --- SpatiaLite ----------------------------------------------------------------------------------

SPATIALITE_CRAFTS = {
    "a case report makes viewer an admin": (
        "CREATE TRIGGER incidents_sync AFTER INSERT ON incidents BEGIN "
        "UPDATE users SET role = 'admin' WHERE name = 'viewer'; END",
        ["trigger incidents_sync (on incidents)"]),
    "a password reset keeps the old password": (
        "CREATE TRIGGER users_keep BEFORE UPDATE OF password_hash ON users BEGIN "
        "SELECT RAISE(IGNORE); END",
        ["trigger users_keep (on users)"]),
    "an extra view": ("CREATE VIEW accounts AS SELECT name, password_hash FROM users", ["view accounts"]),
    "an extra table": ("CREATE TABLE stash (payload TEXT)", ["table stash"]),
    "a gridplan table with a column more": ("ALTER TABLE users ADD COLUMN note TEXT DEFAULT 'x'",
                                            ["defined otherwise than gridplan defines it: table users"]),
    "a gridplan index dropped": ("DROP INDEX ix_incidents_status", ["missing: index ix_incidents_status"]),
}


def test_crafted_spatialite_backups_are_refused_by_name(spatialite_template, small_demo, tmp_path):
    target = tmp_path / "target.sqlite"
    shutil.copy(spatialite_template, target)
    target_url = f"sqlite:///{target}"
    write_demo(get_engine(target_url), small_demo)
    crafted = {}
    for i, (case, (sql, names)) in enumerate(SPATIALITE_CRAFTS.items()):
        path = tmp_path / f"crafted{i}.sqlite"
        shutil.copy(spatialite_template, path)
        engine = get_engine(f"sqlite:///{path}")  # SpatiaLite loaded, as an attacker's copy would have it
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
        dispose_engines()
        crafted[case] = (path, names)
    refused_each(target_url, crafted)
    # the same file without the planted objects restores: the check refuses the objects, not the file
    genuine = tmp_path / "genuine.sqlite"
    shutil.copy(spatialite_template, genuine)
    done = cli(target_url)("restore", "--replace", str(genuine))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert not snapshot(target_url)["units"]


def test_a_trigger_is_refused_even_when_named_like_spatialites_own(spatialite_template, tmp_path):
    """SpatiaLite's metadata triggers are allowed exactly as SpatiaLite writes them, no other way."""
    path = tmp_path / "crafted.sqlite"
    shutil.copy(spatialite_template, path)
    conn = sqlite3.connect(path)
    with conn:
        name, table, sql = conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
            "AND tbl_name = 'geometry_columns' ORDER BY name LIMIT 1").fetchone()
        conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute(f'CREATE TRIGGER "{name}" AFTER INSERT ON users BEGIN '
                     "UPDATE users SET role = 'admin'; END")
    conn.close()  # into the file itself, not its write-ahead log
    target = tmp_path / "target.sqlite"
    shutil.copy(spatialite_template, target)
    refused_each(f"sqlite:///{target}", {"disguised": (path, [f"trigger {name} (on users)"])})
    assert table == "geometry_columns" and sql


def test_a_backup_of_no_or_an_unknown_revision_is_refused_quoting_it_safely(spatialite_template, tmp_path):
    target = tmp_path / "target.sqlite"
    shutil.copy(spatialite_template, target)
    empty, unknown = tmp_path / "empty.sqlite", tmp_path / "unknown.sqlite"
    for path, rows in ((empty, []), (unknown, ["9999_\x1b[2Jfrom_the_future" + "x" * 5000])):
        shutil.copy(spatialite_template, path)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("DELETE FROM alembic_version")
            conn.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in rows])
        conn.close()
    url = f"sqlite:///{target}"
    before = snapshot(url)
    answer = cli(url)("restore", str(empty))
    assert answer.exit_code != 0 and "records no schema revision" in answer.output, answer.output
    answer = cli(url)("restore", str(unknown))
    assert answer.exit_code != 0 and "made by a newer gridplan" in answer.output, answer.output
    assert "\x1b" not in answer.output and "\\x1b[2Jfrom_the_future" in answer.output
    assert len(answer.output) < 600
    dispose_engines()
    assert snapshot(url) == before


def test_role_is_for_postgis_only(spatialite_url, tmp_path, spatialite_template):
    answer = cli(spatialite_url)("restore", "--role", "gridplan", str(spatialite_template))
    assert answer.exit_code != 0 and "--role is for PostGIS" in answer.output


# --- PostGIS -------------------------------------------------------------------------------------


@pytest.fixture
def program_marker():
    """Where ``COPY … TO PROGRAM`` would leave a file (the server runs as the postgres user, who
    cannot enter pytest's own folders)."""
    folder = Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))  # short: it must fit in a rewritten entry
    os.chmod(folder, 0o777)
    yield folder / "ran"
    shutil.rmtree(folder, ignore_errors=True)


def postgis_crafts(marker: Path) -> dict[str, tuple[str, list[str]]]:
    # pg_restore names itself in application_name: the function lies low until a restore runs it
    run_program = (f"IF current_setting('application_name') = 'pg_restore' THEN "
                   f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'; END IF;")
    return {
        "a function behind a CHECK constraint on users": (
            f"CREATE FUNCTION public.user_ok(name text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
            f"{run_program} RETURN true; END $$; "
            "ALTER TABLE public.users ADD CONSTRAINT users_name_ok CHECK (public.user_ok(name))",
            ["FUNCTION public.user_ok(text)", "TABLE public.users"]),
        "an extra trigger": (
            "CREATE TRIGGER incidents_copy AFTER INSERT ON public.incidents "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION public.incident_sums_insert()",
            ["TRIGGER public.incidents incidents_copy"]),
        "a rule": (
            "CREATE RULE keep_password AS ON UPDATE TO public.users DO INSTEAD NOTHING",
            ["RULE public.users keep_password"]),
        "a policy": (
            "CREATE POLICY everyone ON public.users USING (true); "
            "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY",
            ["POLICY public.users everyone", "ROW SECURITY public.users"]),
        "gridplan's own trigger function rewritten": (
            "CREATE OR REPLACE FUNCTION public.incident_sums_insert() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {run_program} RETURN NULL; END $$",
            ["defined otherwise than gridplan defines it: FUNCTION public.incident_sums_insert()"]),
    }


def test_crafted_postgis_dumps_are_refused_by_name(postgis_server, small_demo, tmp_path, program_marker):
    target = new_postgis(postgis_server.url)
    write_demo(get_engine(target), small_demo)
    crafted = {}
    for i, (case, (sql, names)) in enumerate(postgis_crafts(program_marker).items()):
        source = new_postgis(postgis_server.url)
        with get_engine(source).begin() as conn:
            conn.exec_driver_sql(sql)
        if "CHECK" in sql:  # rows for the constraint to check as they are copied in
            make_accounts(make_app(source), small_demo)
        path = tmp_path / f"crafted{i}.dump"
        made = cli(source)("backup", "-o", str(path))
        assert made.exit_code == 0, made.output
        crafted[case] = (path, names)
    refused_each(target, crafted)
    assert not program_marker.exists()


OWN_BY_APP = """
    DO $$ DECLARE r record; BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gridplan_app') THEN
        CREATE ROLE gridplan_app LOGIN CREATEDB NOSUPERUSER;
      END IF;
      FOR r IN SELECT c.oid::regclass AS name FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT EXISTS (
                      SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
        EXECUTE 'ALTER TABLE ' || r.name || ' OWNER TO gridplan_app';
      END LOOP;
      FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                WHERE p.pronamespace = 'public'::regnamespace AND NOT EXISTS (
                      SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE 'ALTER FUNCTION ' || r.name || ' OWNER TO gridplan_app';
      END LOOP;
    END $$;
    GRANT USAGE, CREATE ON SCHEMA public TO gridplan_app"""


def owned_by_the_app(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return conn.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public' "
                                 "AND tablename <> 'spatial_ref_sys'")).scalars().all()


@pytest.fixture
def genuine_dump(postgis_server, small_demo, tmp_path):
    source = new_postgis(postgis_server.url)
    write_demo(get_engine(source), small_demo)
    backup = tmp_path / "genuine.dump"
    assert cli(source)("backup", "-o", str(backup)).exit_code == 0
    return source, backup


def test_a_genuine_dump_restores_as_a_role_without_superuser(postgis_server, genuine_dump):
    """The app's role, as an administrator sets it up, owns gridplan's tables and functions;
    DATABASE_URL is a superuser's, and ``--role`` makes pg_restore create everything as the app's."""
    source, backup = genuine_dump
    target = new_postgis(postgis_server.url)
    with get_engine(target).begin() as conn:
        conn.exec_driver_sql(OWN_BY_APP)
    done = cli(target)("restore", "--role", "gridplan_app", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert snapshot(target) == snapshot(source)
    assert owned_by_the_app(target) == ["gridplan_app"]  # created by the role, not by the superuser
    bad = cli(target)("restore", "--replace", "--role", "x; DROP TABLE users", str(backup))
    assert bad.exit_code != 0 and "is not a PostgreSQL role name" in bad.output


def test_a_genuine_dump_restores_with_a_database_url_without_superuser(postgis_server, genuine_dump,
                                                                       monkeypatch):
    """DATABASE_URL is the app's own role (no superuser): the scratch database to compare with is
    copied from a template that has PostGIS (GRIDPLAN_RESTORE_TEMPLATE), and the restore runs with
    no superuser anywhere; without the template the check cannot be made, and says why."""
    source, backup = genuine_dump
    target = new_postgis(postgis_server.url)
    with get_engine(target).begin() as conn:
        conn.exec_driver_sql(OWN_BY_APP)
    server = postgis_server.url.rsplit("/", 1)[0]
    with get_engine(server + "/postgres").connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = 'template_postgis'")).first():
            conn.exec_driver_sql("CREATE DATABASE template_postgis IS_TEMPLATE true")
            with get_engine(server + "/template_postgis").begin() as t:
                t.exec_driver_sql("CREATE EXTENSION postgis")
            dispose_engines()
    as_app = target.replace("postgres@", "gridplan_app@")
    assert as_app != target
    refused = cli(as_app)("restore", "--replace", str(backup))
    assert refused.exit_code != 0 and "GRIDPLAN_RESTORE_TEMPLATE" in refused.output, refused.output
    monkeypatch.setenv("GRIDPLAN_RESTORE_TEMPLATE", "template_postgis")
    done = cli(as_app)("restore", "--replace", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert snapshot(target) == snapshot(source)
    assert owned_by_the_app(target) == ["gridplan_app"]


def test_a_dump_whose_hidden_setup_entry_was_rewritten_is_refused(postgis_server, tmp_path, program_marker):
    """``pg_restore -l`` does not list the search path entry, and pg_restore runs it before any
    other, whatever the list says: it is compared like every other entry."""
    source = new_postgis(postgis_server.url)
    backup = tmp_path / "genuine.dump"
    assert cli(source)("backup", "-o", str(backup)).exit_code == 0
    original = b"SELECT pg_catalog.set_config('search_path', '', false);\n"
    evil = f"COPY(SELECT)TO PROGRAM'touch {program_marker}';".encode()  # as long, or padded to it
    assert len(evil) < len(original), "the marker's path is too long for this test"
    data = backup.read_bytes()
    assert data.count(original) == 1
    crafted = tmp_path / "crafted.dump"
    crafted.write_bytes(data.replace(original, evil.ljust(len(original) - 1) + b"\n"))
    target = new_postgis(postgis_server.url)
    refused_each(target, {"search path rewritten": (crafted, ["defined otherwise than gridplan defines it: "
                                                              "SEARCHPATH"])})
    assert not program_marker.exists()


def test_an_entry_given_data_it_should_not_have_is_refused(postgis_server, tmp_path):
    """pg_restore runs an entry's data as SQL when the entry has no COPY statement: a table or a
    sequence value that claims data is as foreign as a new function (checked on the table of
    contents as read from a genuine dump, each entry altered in turn)."""
    from dataclasses import replace

    from geodata.backup import BackupRefused, _compare_pg, read_toc

    source = new_postgis(postgis_server.url)
    backup = tmp_path / "genuine.dump"
    assert cli(source)("backup", "-o", str(backup)).exit_code == 0
    entries = read_toc(backup)
    _compare_pg(backup, entries, entries)  # the same entries pass
    for desc, tag in (("TABLE", "users"), ("SEQUENCE SET", "users_id_seq"), ("SEARCHPATH", "SEARCHPATH")):
        crafted = [replace(e, had_dumper=True) if (e.desc, e.tag) == (desc, tag) else e for e in entries]
        assert crafted != entries, (desc, tag)
        with pytest.raises(BackupRefused, match=f"defined otherwise than gridplan defines it: {desc} "):
            _compare_pg(backup, crafted, entries)
    # the value of a sequence is data, the statement around it is not
    def users_seq(entry, defn: str):
        ours = (entry.desc, entry.tag) == ("SEQUENCE SET", "users_id_seq")
        return replace(entry, defn=defn) if ours else entry

    value = [users_seq(e, e.defn.replace(", 1, false)", ", 4711, true)")) for e in entries]
    assert value != entries
    _compare_pg(backup, value, entries)
    around = [users_seq(e, e.defn.replace("SELECT", "SELECT public.evil(),")) for e in entries]
    with pytest.raises(BackupRefused, match="SEQUENCE SET public.users_id_seq"):
        _compare_pg(backup, around, entries)
