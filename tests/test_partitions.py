"""Storage split by district (issue 19, item 4): incident steps and photos carry their case's
district, the incident sums are kept by row triggers writing only their own district's rows, and
PostgreSQL's tables can be partitioned by district — on SpatiaLite and PostGIS."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from geodata import incident_rows

T0 = datetime(2026, 11, 2, 9, 0)
#: two districts, one case place each (a point, a community, a street)
PLACES = {"420102": (114.30, 30.60, "420102001001", "420102001"),
          "420103": (114.40, 30.50, "420103002001", "420103002")}


def report(conn, district: str, at: datetime) -> dict:
    """A case reported in ``district`` at ``at``, with its report step (the loop's writers)."""
    lon, lat, community, street = PLACES[district]
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


def test_postgresql_keeps_the_sums_with_row_triggers(engine):
    """No statement trigger over transition tables is left (Citus refuses them; they cannot be
    split by district): every trigger on incidents is a row trigger."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's triggers were always row triggers")
    with engine.connect() as conn:
        triggers = conn.execute(text(
            "SELECT tgname, (tgtype & 1) = 1 AS per_row, tgoldtable IS NULL AND tgnewtable IS NULL "
            "FROM pg_trigger WHERE tgrelid = 'incidents'::regclass AND NOT tgisinternal "
            "ORDER BY tgname")).all()
    events = ("delete", "insert", "update")
    assert [tuple(t) for t in triggers] == [(f"incident_sums_{e}", True, True) for e in events]
