"""Storage split by district (issue 19, item 4): incident steps and photos carry their case's
district, the incident sums are kept by row triggers writing only their own district's rows, and
PostgreSQL's tables can be partitioned by district — on SpatiaLite and PostGIS."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from geodata import incident_rows, partitions
from geodata.db import dispose_engines, get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import TEMPLATE, create_database, make_app
from tests.webhelpers import snapshot

T0 = datetime(2026, 11, 2, 9, 0)
#: two districts, one case place each (a point, a community, a street)
PLACES = {"420102": (114.30, 30.60, "420102001001", "420102001"),
          "420103": (114.40, 30.50, "420103002001", "420103002")}


def report(conn, district: str, at: datetime, place: tuple | None = None) -> dict:
    """A case reported in ``district`` at ``at`` (at ``place``: lon, lat, community, street), with
    its report step (the loop's writers)."""
    lon, lat, community, street = place or PLACES[district]
    case = incident_rows.insert_incident(conn, {
        "category": "E01-01", "status": "reported", "reported_at": at, "district_code": district,
        "community_code": community, "street_code": street}, lon, lat, at.strftime("%Y%m%d"))
    incident_rows.add_step(conn, case["id"], "reported", at, "tester")
    return case


def sums_of(conn, district: str) -> dict[str, list[tuple]]:
    """Every row of the incident sums of ``district`` (on PostgreSQL with the transaction that
    last wrote it: a row rewritten with the same numbers is touched too)."""
    version = ", xmin::text" if conn.dialect.name == "postgresql" else ""
    return {table: [tuple(r) for r in conn.execute(text(
        f"SELECT *{version} FROM {table} WHERE district_code = :d ORDER BY 1, 2, 3, 4, 5"), {"d": district})]
        for table in ("incident_days", "incident_months")}


@pytest.fixture
def two_districts(engine):
    """Cases in two districts, written and stepped by the loop's writers."""
    cases = {}
    with engine.begin() as conn:
        for d, district in enumerate(PLACES):
            cases[district] = [report(conn, district, T0 + timedelta(days=d * 3 + i, hours=i))
                               for i in range(3)]
    return cases


def test_steps_and_photos_carry_their_case_district(engine, two_districts):
    with engine.begin() as conn:
        case = two_districts["420103"][1]
        step_id = incident_rows.add_step(conn, case["id"], "filed", T0 + timedelta(days=9), "tester")
        incident_rows.add_photo(conn, case["id"], step_id=step_id, stored_name="a" * 32 + ".jpg",
                                content_type="image/jpeg", size=10)
    with engine.connect() as conn:
        steps = conn.execute(text("SELECT s.district_code, i.district_code FROM incident_steps s "
                                  "JOIN incidents i ON i.id = s.incident_id")).all()
        photo = conn.execute(text("SELECT district_code FROM incident_photos")).scalar_one()
    assert len(steps) == 7 and all(mine == theirs for mine, theirs in steps)
    assert photo == "420103"


def test_a_change_in_one_district_touches_only_its_sums(engine, two_districts):
    """Reporting, stepping, re-timing and deleting cases of district 420102 leaves every sums row
    of 420103 as it was (on PostgreSQL not even rewritten); the sums still equal a scan."""
    with engine.connect() as conn:
        before = sums_of(conn, "420103")
        mine = sums_of(conn, "420102")
    assert before["incident_days"] and mine["incident_days"]
    a = two_districts["420102"]
    with engine.begin() as conn:
        report(conn, "420102", T0 + timedelta(days=1, hours=5))
        conn.execute(text("UPDATE incidents SET filed_at = :t, status = 'filed', filing_wh = 1.5 "
                          "WHERE id = :i"),
                     {"t": T0 + timedelta(days=1, hours=6), "i": a[0]["id"]})
        incident_rows.set_step_hours(conn, [{"id": a[1]["id"], "filing_wh": 2.0}])
        conn.execute(text("DELETE FROM incident_steps WHERE incident_id = :i"), {"i": a[2]["id"]})
        conn.execute(text("DELETE FROM incidents WHERE id = :i"), {"i": a[2]["id"]})
    with engine.connect() as conn:
        assert sums_of(conn, "420103") == before
        assert sums_of(conn, "420102") != mine
        for district in PLACES:
            reported = conn.execute(text("SELECT sum(reported) FROM incident_months "
                                         "WHERE district_code = :d"), {"d": district}).scalar_one()
            cases = conn.execute(text("SELECT count(*) FROM incidents WHERE district_code = :d"),
                                 {"d": district}).scalar_one()
            assert reported == cases
        filed = conn.execute(text("SELECT sum(filed), sum(filing_sum), sum(filing_n) FROM incident_days "
                                  "WHERE district_code = '420102'")).one()
        assert tuple(filed) == (1, pytest.approx(1.5), 1)


def test_postgresql_keeps_the_sums_with_row_triggers(postgis_url):
    """No statement trigger over transition tables is left (Citus refuses them; they cannot be
    split by district): every trigger on incidents is a row trigger. (PostgreSQL's alone: SQLite's
    triggers were always row triggers.)"""
    engine = get_engine(postgis_url)
    with engine.connect() as conn:
        triggers = conn.execute(text(
            "SELECT tgname, (tgtype & 1) = 1 AS per_row, tgoldtable IS NULL AND tgnewtable IS NULL "
            "FROM pg_trigger WHERE tgrelid = 'incidents'::regclass AND NOT tgisinternal "
            "ORDER BY tgname")).all()
    events = ("delete", "insert", "update")
    assert [tuple(t) for t in triggers] == [(f"incident_sums_{e}", True, True) for e in events]


# --- PostgreSQL partitioned by district ---------------------------------------------------------


def cli(url: str):
    runner = make_app(url).test_cli_runner()
    return lambda *args: runner.invoke(args=list(args))


def test_partitioning_is_refused_on_spatialite_in_one_line(tmp_path):
    path = tmp_path / "gridplan.sqlite"
    done = cli(f"sqlite:///{path}")("init-db", "--partition-by-district")
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "Error: init-db refused: --partition-by-district is for PostgreSQL: a SpatiaLite database is one "
        "file and is not partitioned"]
    assert not path.exists() or "units" not in sqlite_tables(path)


def sqlite_tables(path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def partitioned_tables(engine) -> dict[str, list[str]]:
    """Each table partitioned by district and its partitions' names."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.relname, c.relname FROM pg_partitioned_table t JOIN pg_class p ON p.oid = t.partrelid "
            "LEFT JOIN pg_inherits i ON i.inhparent = p.oid LEFT JOIN pg_class c ON c.oid = i.inhrelid "
            "ORDER BY 1, 2")).all()
    out: dict[str, list[str]] = {}
    for parent, child in rows:
        out.setdefault(parent, []).append(child)
    return out


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in partitions.LARGE}


def all_sums(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for t in ("incident_days", "incident_months")
                for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4, 5"))]


def test_init_db_partitions_every_large_table_by_district(postgis_plain_url):
    run = cli(postgis_plain_url)
    engine = get_engine(postgis_plain_url)
    assert partitioned_tables(engine) == {}  # a plain database, in the partitioned pass too
    done = run("init-db", "--partition-by-district")
    assert done.exit_code == 0, done.output
    assert "14 tables partitioned by district" in done.output
    made = partitioned_tables(engine)
    assert sorted(made) == sorted(partitions.LARGE)
    assert all(f"{t}_default" in made[t] for t in partitions.LARGE)
    assert run("init-db", "--partition-by-district").exit_code == 0  # again: nothing to do
    with engine.connect() as conn:
        keys = dict(conn.execute(text(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname IN ('units_pkey', 'incident_steps_incident_id_fkey') AND conparentid = 0")).all())
    assert keys == {"units": "PRIMARY KEY (id, district_code)",
                    "incident_steps": "FOREIGN KEY (incident_id, district_code) REFERENCES "
                                      "incidents(id, district_code) ON DELETE CASCADE"}


def test_distributing_needs_citus_and_changes_nothing_without_it(postgis_plain_url, tmp_path):
    """``init-db --distribute-by-district`` on PostgreSQL without Citus, on SpatiaLite, and asked
    with partitioning too: refused in one line naming why, the tables as they were (the Citus
    cluster itself: scripts/check_citus.py, docs/scale.md)."""
    engine = get_engine(postgis_plain_url)
    cli(postgis_plain_url)("init-db")

    def keys() -> list[str]:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                     "WHERE conrelid = 'units'::regclass AND contype = 'p'")).scalars().all()

    before = keys()
    assert before == ["PRIMARY KEY (id)"]
    done = cli(postgis_plain_url)("init-db", "--distribute-by-district")
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [
        "Error: init-db refused: --distribute-by-district needs Citus: CREATE EXTENSION citus on the "
        "coordinator and add its workers (citus_add_node) first (docs/scale.md)"]
    assert keys() == before and partitioned_tables(engine) == {}
    both = cli(postgis_plain_url)("init-db", "--partition-by-district", "--distribute-by-district")
    assert both.exit_code == 1 and "choose one" in both.output
    assert keys() == before and partitioned_tables(engine) == {}
    path = tmp_path / "gridplan.sqlite"
    on_file = cli(f"sqlite:///{path}")("init-db", "--distribute-by-district")
    assert on_file.exit_code == 1 and "for PostgreSQL" in on_file.output
    assert not path.exists() or "units" not in sqlite_tables(path)


def test_the_tables_citus_distributes_keep_everything_with_the_district_in_their_keys(postgis_plain_url):
    """What ``--distribute-by-district`` makes before Citus distributes the tables: the large tables
    rebuilt plain (not partitioned) with ``district_code`` in every key, their indexes and the
    incident sums' triggers kept, and the foreign key between cases and their steps through it."""
    engine = get_engine(postgis_plain_url)
    cli(postgis_plain_url)("init-db")

    def shape() -> dict:
        with engine.connect() as conn:
            return {t: (conn.execute(text("SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(:t)"),
                                     {"t": t}).scalar_one(),
                        sorted(conn.execute(text("SELECT tgname FROM pg_trigger "
                                                 "WHERE tgrelid = to_regclass(:t) AND NOT tgisinternal"),
                                            {"t": t}).scalars()))
                    for t in partitions.LARGE}

    before = shape()
    with engine.begin() as conn:
        partitions.rebuild_by_district(conn, partitioned=False)
    assert shape() == before and partitioned_tables(engine) == {}
    with engine.connect() as conn:
        keys = dict(conn.execute(text(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname IN ('units_pkey', 'incident_steps_incident_id_fkey')")).all())
        unkeyed = conn.execute(text(
            "SELECT conrelid::regclass::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(:t) "
            "AND pg_get_constraintdef(oid) NOT LIKE '%district_code%'"),
            {"t": list(partitions.LARGE)}).scalars().all()
    assert keys == {"units": "PRIMARY KEY (id, district_code)",
                    "incident_steps": "FOREIGN KEY (incident_id, district_code) REFERENCES "
                                      "incidents(id, district_code) ON DELETE CASCADE"}
    assert unkeyed == []


def test_a_database_holding_rows_is_not_partitioned(postgis_plain_url, small_demo):
    engine = get_engine(postgis_plain_url)
    assert not partitions_of(engine)
    write_demo(engine, small_demo)
    before = counts(engine)
    done = cli(postgis_plain_url)("init-db", "--partition-by-district")
    assert done.exit_code == 1
    assert "the database holds rows already (units, unit_adjacency" in done.output
    assert partitioned_tables(engine) == {} and counts(engine) == before


def partitions_of(engine) -> bool:
    with engine.connect() as conn:
        return partitions.is_partitioned(conn)


def test_each_district_gets_its_partition_and_keeps_its_rows_and_sums(postgis_url, small_demo):
    """The demo written into the DEFAULT partitions, then ``partition-districts``: every row and
    every sum where it was, now in its district's partition; a case reported afterwards lands
    there and the sums still equal a scan of the cases."""
    engine = get_engine(postgis_url)
    partitions.partition_by_district(engine)
    write_demo(engine, small_demo)
    districts = sorted(small_demo.layers["districts"]["code"]) if "districts" in small_demo.layers \
        else sorted(set(small_demo.layers["units"]["district_code"]))
    into_default(engine, districts)  # the demo made its partitions as it was written: as before that
    before, sums = counts(engine), all_sums(engine)
    done = cli(postgis_url)("partition-districts")
    assert done.exit_code == 0, done.output
    for code in districts:
        assert code in done.output
    assert counts(engine) == before and all_sums(engine) == sums
    with engine.connect() as conn:
        for t in partitions.LARGE:
            assert conn.execute(text(f"SELECT count(*) FROM {t}_default WHERE district_code IS NOT NULL "
                                     "AND district_code <> ''")).scalar_one() == 0, t
        in_own = conn.execute(text(f"SELECT count(*) FROM units_d{districts[0]}")).scalar_one()
    assert in_own > 0
    assert "districts given their own partitions: -" in cli(postgis_url)("partition-districts").output
    # the loop writes into the partitions as before; the sums follow
    with engine.begin() as conn:
        district = districts[0]
        place = conn.execute(text("SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)), "
                                  "code, street_code FROM communities WHERE district_code = :d LIMIT 1"),
                             {"d": district}).one()
        case = report(conn, district, T0 + timedelta(days=4), tuple(place))
    with engine.connect() as conn:
        where = conn.execute(text("SELECT tableoid::regclass::text FROM incident_steps "
                                  "WHERE incident_id = :i"), {"i": case["id"]}).scalar_one()
    assert where == f"incident_steps_d{district}"
    since, until = T0 - timedelta(days=400), T0 + timedelta(days=400)
    for by in ("district", "street", "community"):
        assert incident_rows.rate_sums(engine, by, since, until, T0, None) == \
            incident_rows.rate_sums_scan(engine, by, since, until, T0, None)


def new_partitioned(server_url: str) -> str:
    """A new database as ``init-db --partition-by-district`` leaves it: DEFAULT partitions only."""
    url = create_database(server_url, f"partitioned_{next(_n)}", TEMPLATE)
    partitions.partition_by_district(get_engine(url))
    return url


_n = itertools.count()


def into_default(engine, districts: list[str]) -> None:
    """Rows of ``districts`` put back into the DEFAULT partitions and their partitions dropped, as a
    database written before partitions were made on writing holds them (sums moved, not counted)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(partitions.MOVING)
        for district in districts:
            for t in reversed(partitions.LARGE):  # children first: a case's partition goes after its steps'
                name = partitions.partition_name(t, district)
                conn.exec_driver_sql(f"CREATE TEMPORARY TABLE held_{t} AS SELECT * FROM {name}")
                conn.exec_driver_sql(f"ALTER TABLE {t} DETACH PARTITION {name}")
                conn.exec_driver_sql(f"DROP TABLE {name}")
            for t in partitions.LARGE:
                conn.exec_driver_sql(f"INSERT INTO {t} SELECT * FROM held_{t}")
                conn.exec_driver_sql(f"DROP TABLE held_{t}")
        assert conn.execute(text("SELECT count(*) FROM units_default")).scalar_one() > 0


def test_a_partitioned_database_backs_up_and_restores(postgis_url, postgis_server, small_demo, tmp_path):
    """Its dump passes the schema trust check (compared with a scratch database partitioned alike)
    and restores with every row and partition: into a new, empty database; into a partitioned one
    lacking the districts' partitions (made by the restore); over itself with ``--replace``. A
    partitioned database of another schema revision is refused, unchanged."""
    engine = get_engine(postgis_url)
    partitions.partition_by_district(engine)
    write_demo(engine, small_demo)
    partitions.split_districts(engine)
    before, made = counts(engine), partitioned_tables(engine)
    assert len(made["units"]) > 1  # the DEFAULT partition and the districts'
    backup = tmp_path / "partitioned.backup"
    done = cli(postgis_url)("backup", "-o", str(backup))
    assert done.exit_code == 0, done.output
    source = snapshot(postgis_url)
    server = postgis_server.url.rsplit("/", 1)[0]
    with get_engine(server + "/postgres").connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CREATE DATABASE partitioned_restored")  # new and empty: no schema at all
    empty = f"{server}/partitioned_restored"
    done = cli(empty)("restore", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert counts(get_engine(empty)) == before and partitioned_tables(get_engine(empty)) == made
    # into a partitioned database with DEFAULT partitions only: its districts' partitions are made
    target = new_partitioned(postgis_server.url)
    done = cli(target)("restore", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert partitioned_tables(get_engine(target)) == made and snapshot(target) == source
    with get_engine(target).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM units_default")).scalar_one() == 0
    # over partitioned tables holding rows, with --replace: every row replaced, sequences too
    with get_engine(target).begin() as conn:
        conn.exec_driver_sql("DELETE FROM incidents WHERE id IN (SELECT id FROM incidents LIMIT 3)")
        conn.exec_driver_sql("UPDATE units SET population = population + 7 "
                             "WHERE id IN (SELECT id FROM units LIMIT 5)")
    again = cli(target)("restore", "--replace", str(backup))
    assert again.exit_code == 0, again.output
    dispose_engines()
    assert snapshot(target) == source and partitioned_tables(get_engine(target)) == made
    with get_engine(target).connect() as conn, get_engine(postgis_url).connect() as original:
        sequence = "SELECT last_value FROM incidents_id_seq"
        assert conn.execute(text(sequence)).scalar_one() == original.execute(text(sequence)).scalar_one()
    # another schema revision: refused before anything is written
    with get_engine(target).begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('0001')")
    dispose_engines()
    held = snapshot(target)
    refused = cli(target)("restore", "--replace", str(backup))
    assert refused.exit_code == 1
    assert "this database is partitioned by district and its schema revision" in refused.output
    assert "restore into a new, empty database" in refused.output
    dispose_engines()
    assert snapshot(target) == held


def test_a_plain_backup_loads_into_a_partitioned_database(postgis_plain_url, postgis_server, small_demo,
                                                          tmp_path):
    """The way to partition a database in use: restore its backup into a partitioned one. Every
    row arrives (in the DEFAULT partitions), ``partition-districts`` then splits them."""
    write_demo(get_engine(postgis_plain_url), small_demo)
    backup = tmp_path / "plain.backup"
    assert cli(postgis_plain_url)("backup", "-o", str(backup)).exit_code == 0
    target = new_partitioned(postgis_server.url)
    done = cli(target)("restore", str(backup))
    assert done.exit_code == 0, done.output
    dispose_engines()
    assert snapshot(target) == snapshot(postgis_plain_url)
    engine = get_engine(target)
    before = counts(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM units_default")).scalar_one() == before["units"] > 0
    assert cli(target)("partition-districts").exit_code == 0
    dispose_engines()
    assert counts(get_engine(target)) == before
    assert snapshot(target) == snapshot(postgis_plain_url)


def test_a_plan_made_in_one_piece_carries_its_units_districts(engine, small_demo):
    """A street's plan (made in one piece, not district by district) and its copy: each
    assignment row carries its unit's district (on a store split by district, its partition)."""
    from geodata import plan_rows

    write_demo(engine, small_demo)
    units = small_demo.layers["units"]
    street = units["street_code"].iloc[0]
    mine = units[units["street_code"] == street]
    plan_id = plan_rows.create_plan(engine, "一片方案", "tester",
                                    mine.set_index("code")["community_code"], streets=[street])
    copy_id = plan_rows.duplicate_plan(engine, plan_id, "副本", "tester")
    expected = dict(zip(mine["code"], mine["district_code"], strict=True))
    with engine.connect() as conn:
        for pid in (plan_id, copy_id):
            rows = dict(conn.execute(text("SELECT unit_code, district_code FROM plan_assignments "
                                          "WHERE plan_id = :p"), {"p": pid}).all())
            assert rows == expected


def test_a_province_of_districts_is_split_within_postgresqls_lock_table(postgis_server):
    """``partition-districts`` on a province: 40 districts at once, on a server whose shared lock
    table is small (``max_locks_per_transaction`` = 10: ≈ 1,100 locks in all). Every district
    gets its 14 partitions; in one transaction (a lock on each partition and index made) the
    split ran out of shared memory at about a hundred districts with the default setting."""
    from geodata.migrate import upgrade
    from tests import pgcluster

    districts = [f"4{n:05d}" for n in range(1, 41)]
    with pgcluster.PostgisCluster(dbname="small_locks", settings={"max_locks_per_transaction": 10}) as url:
        engine = get_engine(url)
        upgrade(engine)
        partitions.partition_by_district(engine)
        assert partitions.split_districts(engine, districts) == districts
        with engine.connect() as conn:
            made = partitions.partitions(conn)
        assert all(made[t] == set(districts) for t in partitions.LARGE)
        assert partitions.split_districts(engine, districts) == []
        engine.dispose()
        dispose_engines()


# --- partitions made as a district's rows arrive ------------------------------------------------


def where_rows_are(engine, table: str) -> dict[str, int]:
    """The partitions holding ``table``'s rows, and how many each."""
    with engine.connect() as conn:
        return dict(conn.execute(text(f"SELECT tableoid::regclass::text, count(*) FROM {table} "
                                      "GROUP BY 1")).all())


def relations(engine) -> int:
    """How many tables, indexes and sequences the database holds (a partition made adds some)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                                 "ON n.oid = c.relnamespace WHERE n.nspname = 'public'")).scalar_one()


@pytest.fixture
def partitioned(postgis_url, small_demo, tmp_path):
    """A fresh database partitioned by district with no district's partition yet, the demo's
    district, and files of two of its streets' units and of its facilities."""
    import pyogrio

    engine = get_engine(postgis_url)
    partitions.partition_by_district(engine)
    units = small_demo.layers["units"]
    streets = sorted(units["street_code"].unique())
    files = {}
    for i, street in enumerate(streets[:2]):
        files[f"units{i}"] = tmp_path / f"units{i}.gpkg"
        pyogrio.write_dataframe(units[units["street_code"] == street].iloc[:80].reset_index(drop=True),
                                files[f"units{i}"])
    files["facilities"] = tmp_path / "facilities.gpkg"
    pyogrio.write_dataframe(small_demo.layers["facilities"].iloc[:20], files["facilities"])
    district = str(units["district_code"].iloc[0])
    with engine.connect() as conn:
        assert all(district not in made for made in partitions.partitions(conn).values())
    return engine, district, files


def test_an_import_of_a_new_district_makes_its_partitions(partitioned):
    """The first import of a district makes its partitions in every large table and its rows
    land there (DEFAULT stays empty); a second import of the district makes nothing new."""
    from layers.onboarding.imports import import_layer

    engine, district, files = partitioned
    report = import_layer(engine, "units", files["units0"])
    assert report.written == 80 and report.adjacency_pairs > 0
    assert where_rows_are(engine, "units") == {f"units_d{district}": 80}
    assert where_rows_are(engine, "unit_adjacency") == {f"unit_adjacency_d{district}": report.adjacency_pairs}
    with engine.connect() as conn:
        made = partitions.partitions(conn)
        assert all(made[t] == {district} for t in partitions.LARGE), made
        for t in partitions.LARGE:
            assert conn.execute(text(f"SELECT count(*) FROM {t}_default")).scalar_one() == 0, t
    before = relations(engine)
    assert import_layer(engine, "units", files["units1"]).written == 80
    assert import_layer(engine, "facilities", files["facilities"]).written == 20
    assert relations(engine) == before  # nothing made the second time
    assert where_rows_are(engine, "units") == {f"units_d{district}": 160}
    assert where_rows_are(engine, "facilities") == {f"facilities_d{district}": 20}
    with engine.connect() as conn:
        assert partitions.partitions(conn) == made
    assert cli(engine.url.render_as_string(hide_password=False))("partition-districts").output.strip() \
        == "districts given their own partitions: -"


def test_a_failed_import_leaves_its_partitions_empty(partitioned, monkeypatch):
    """An import failing after its district's partitions were made (the disk full on its fourth
    batch of units): its rows are rolled back; the partitions, made before its transaction in
    short ones of their own (so that the import held no lock of the tables while it wrote), stay,
    empty, and the same import made again uses them."""
    from sqlalchemy import event

    import geodata.store
    from layers.onboarding.imports import import_layer

    engine, district, files = partitioned
    monkeypatch.setattr(geodata.store, "BATCH", 20)
    calls = []

    def fail_on_the_fourth_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO UNITS "):
            calls.append(statement)
            if len(calls) == 4:
                raise RuntimeError("disk full (simulated)")

    event.listen(engine, "before_cursor_execute", fail_on_the_fourth_insert)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            import_layer(engine, "units", files["units0"])
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_the_fourth_insert)
    assert len(calls) == 4  # three batches went into the new partition before the failure
    with engine.connect() as conn:
        assert all(district in made for made in partitions.partitions(conn).values())
        assert conn.execute(text("SELECT count(*) FROM units")).scalar_one() == 0
    made = relations(engine)
    import_layer(engine, "units", files["units0"])
    assert relations(engine) == made
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM units_d{district}")).scalar_one() > 0
        assert conn.execute(text("SELECT count(*) FROM units_default")).scalar_one() == 0


def test_an_import_of_a_new_district_holds_no_lock_of_the_tables_while_it_writes(partitioned, monkeypatch):
    """While a new district's units go in, another session reads the units of the database
    (every district) without waiting: the partitions were made before the import's transaction."""
    from sqlalchemy import event

    from layers.onboarding.imports import import_layer

    engine, district, files = partitioned
    waited: list[float] = []
    other = get_engine(engine.url.render_as_string(hide_password=False))

    def read_meanwhile(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO UNITS ") and not waited:
            import time

            with other.connect() as reader:
                reader.execute(text("SET lock_timeout = '2s'"))
                started = time.perf_counter()
                reader.execute(text("SELECT count(*) FROM units")).scalar_one()
                waited.append(time.perf_counter() - started)

    event.listen(engine, "before_cursor_execute", read_meanwhile)
    try:
        import_layer(engine, "units", files["units0"])
    finally:
        event.remove(engine, "before_cursor_execute", read_meanwhile)
        other.dispose()
    assert waited and waited[0] < 2.0


def test_a_district_code_that_cannot_name_a_partition_is_refused(partitioned, small_demo):
    """A writer bringing a district code that cannot name a partition is refused, the code named,
    before anything is made or written — the good district beside it gets no partition either."""
    from geodata.errors import Refused
    from geodata.store import write_layer

    engine, district, _files = partitioned
    before = relations(engine)
    facilities = small_demo.layers["facilities"].iloc[:4].copy()
    facilities["district_code"] = [district, district, "4201-3", "x" * 13]
    with pytest.raises(Refused) as refused, engine.begin() as conn:
        write_layer(conn, "facilities", facilities)
    assert str(refused.value) == "'4201-3', 'xxxxxxxxxxxxx' cannot name a partition (a district code is " \
        "letters and digits)"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM facilities")).scalar_one() == 0
        assert all(district not in made for made in partitions.partitions(conn).values())
    assert relations(engine) == before


def test_a_new_district_waits_for_the_tables_at_most_its_timeout(partitioned, monkeypatch):
    """A long read holding the tables: the import of a new district waits for its lock only so
    long (not queueing every query behind it), then is refused as busy, naming the district;
    nothing made or written. Once the read ends, the same import goes through."""
    from geodata.errors import DatabaseTrouble
    from layers.onboarding.imports import import_layer

    engine, district, files = partitioned
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT_MS", 1000)
    reader = engine.connect()
    try:
        reader.execute(text("SELECT count(*) FROM communities")).scalar_one()  # its lock held to its end
        with pytest.raises(DatabaseTrouble) as busy:
            import_layer(engine, "units", files["units0"])
    finally:
        reader.rollback()
        reader.close()
    assert busy.value.code == "DatabaseBusy" and busy.value.retry_after == 1
    assert str(busy.value) == f"district {district} needs its own partitions, and the tables split by " \
        "district stayed in use for 1 s (a long report or import): nothing was written; try again in a moment"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM units")).scalar_one() == 0
        assert all(district not in made for made in partitions.partitions(conn).values())
    assert import_layer(engine, "units", files["units0"]).written == 80


def test_more_new_districts_than_the_lock_table_holds_are_refused_in_one_line(partitioned, small_demo,
                                                                             monkeypatch):
    """Each district's partitions hold their locks to the commit: a write bringing more new
    districts than the server's lock table holds (past MAX_AT_ONCE, here lifted) is refused,
    saying so, nothing made or written."""
    from geodata.errors import Refused
    from geodata.store import write_layer

    engine, _district, _files = partitioned
    monkeypatch.setattr(partitions, "MAX_AT_ONCE", 10_000)
    with engine.connect() as conn:
        slots = int(conn.execute(text("SHOW max_locks_per_transaction")).scalar_one()) * int(
            conn.execute(text("SHOW max_connections")).scalar_one())
    # ≈ 224 locks a district; the lock table takes spare shared memory too (with 64 × 100 it
    # gave out at 80 districts): four times its nominal size
    many = slots * 4 // 224
    before = relations(engine)
    one = small_demo.layers["facilities"].iloc[:1]
    facilities = one.loc[one.index.repeat(many)].reset_index(drop=True)
    facilities["code"] = [f"F9{i:05d}" for i in range(many)]
    facilities["district_code"] = [f"43{i:04d}" for i in range(many)]
    with pytest.raises(Refused) as refused, engine.begin() as conn:
        write_layer(conn, "facilities", facilities)
    assert str(refused.value).startswith(f"{many} new districts at once need their own partitions, more than "
                                         "the database's lock table holds (max_locks_per_transaction = ")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM facilities")).scalar_one() == 0
    assert relations(engine) == before


def test_two_writers_of_one_new_district_at_once_make_its_partitions_once(partitioned, small_demo):
    """Two transactions writing a new district's first rows at the same moment: one makes the
    partitions, the other waits for its lock, finds them made and writes into them."""
    import threading

    from geodata.store import write_layer

    engine, _district, _files = partitioned
    barrier = threading.Barrier(2)
    outcomes: list = []

    def write(code: str) -> None:
        rows = small_demo.layers["facilities"].iloc[:1].assign(code=code, district_code="420188",
                                                                community_code=None)
        try:
            with engine.begin() as conn:
                barrier.wait()
                write_layer(conn, "facilities", rows)
            outcomes.append("done")
        except Exception as exc:  # noqa: BLE001 - the test reports whatever went wrong
            outcomes.append(exc)

    threads = [threading.Thread(target=write, args=(code,)) for code in ("F8000001", "F8000002")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["done", "done"]
    assert where_rows_are(engine, "facilities") == {"facilities_d420188": 2}
    with engine.connect() as conn:
        assert all(made == {"420188"} for made in partitions.partitions(conn).values())


def test_a_write_of_many_new_districts_leaves_them_to_partition_districts(partitioned, small_demo):
    """More new districts than one write makes partitions for: their rows land in DEFAULT, as
    before, and ``partition-districts`` then gives each its partitions (a transaction each)."""
    from geodata.store import write_layer

    engine, _district, _files = partitioned
    many = partitions.MAX_AT_ONCE + 1
    one = small_demo.layers["facilities"].iloc[:1]
    facilities = one.loc[one.index.repeat(many)].reset_index(drop=True)
    facilities["code"] = [f"F9{i:05d}" for i in range(many)]
    codes = [f"43{i:04d}" for i in range(many)]
    facilities["district_code"] = codes
    with engine.begin() as conn:
        write_layer(conn, "facilities", facilities)
    assert where_rows_are(engine, "facilities") == {"facilities_default": many}
    assert partitions.split_districts(engine) == codes
    assert where_rows_are(engine, "facilities") == {f"facilities_d{c}": 1 for c in codes}
