"""The incident loop: the state machine, its clock on the working calendar, roles and scopes,
versions, photos, duplicates, approximate cases, rates, supervisors' cells and exports — on
SpatiaLite and PostGIS."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from datetime import datetime, timedelta

import numpy as np
import pyogrio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from geodata import incident_rows
from geodata.accounts import Account
from geodata.errors import Forbidden, NotFound, Refused
from geodata.settings import save_setting
from geodata.standards import WORKING_CALENDAR
from layers.incidents import loop as incidents
from layers.incidents import rates
from layers.incidents.loop import TRANSITIONS, IllegalTransition, VersionConflict
from layers.incidents.working_time import WorkingCalendar
from layers.sample_data.demo import write_demo
from tests.conftest import make_app, recorded
from tests.images import JPEG, PNG
from tests.webhelpers import csrf_token, make_accounts, sign_in

CITY = WorkingCalendar.from_setting(WORKING_CALENDAR)
T0 = datetime(2026, 11, 2, 9, 0)  # a Monday morning


# --- the clock -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dispatched", "hours", "due"),
    [
        ("2026-11-20T16:00", 4, "2026-11-23T12:00"),  # Friday afternoon: over the weekend
        ("2026-11-02T09:00", 160, "2026-11-27T17:00"),  # 20 working days: four weeks, ends at the close
        ("2026-09-30T16:00", 4, "2026-10-08T12:00"),  # National Day: 1–7 October are holidays
        ("2026-10-09T15:00", 4, "2026-10-10T11:00"),  # Saturday 10 October is a make-up working day
        ("2026-02-13T16:00", 8, "2026-02-14T16:00"),  # Saturday 14 February too (Spring Festival)
        ("2026-02-14T17:00", 2, "2026-02-24T11:00"),  # then nine days off
        (
            "2026-10-03T10:00",
            1,
            "2026-10-08T10:00",
        ),  # reported on a holiday: counts from the next working day
    ],
)
def test_due_times_on_the_city_calendar(dispatched, hours, due):
    assert CITY.add(np.datetime64(dispatched), hours) == np.datetime64(due)
    assert CITY.between(np.datetime64(dispatched), np.datetime64(due)) == pytest.approx(hours)


def test_limits_in_working_days_and_split_office_hours():
    split = WorkingCalendar.from_setting(
        {"hours": [["08:30", "12:00"], ["14:00", "17:30"]], "weekdays": [1, 2, 3, 4, 5]}
    )
    assert split.hours_per_day == 7
    assert incidents.limit_hours({"limit_days": 2}, split) == 14
    assert incidents.due_time(datetime(2026, 11, 2, 11, 0), {"limit_hours": 2}, split) == datetime(
        2026, 11, 2, 15, 0
    )
    assert incidents.due_time(datetime(2026, 11, 2, 8, 30), {"limit_days": 1}, split) == datetime(
        2026, 11, 2, 17, 30
    )


@settings(max_examples=150, deadline=None)
@given(st.datetimes(datetime(2025, 1, 1), datetime(2026, 12, 20)), st.floats(0.01, 300))
def test_city_calendar_adds_and_measures_alike(start, hours):
    start = np.datetime64(start.replace(microsecond=0), "s")
    end = CITY.add(start, hours)
    assert abs(CITY.between(start, end) - hours) < 1 / 3600 + 1e-9
    day = end.astype("datetime64[D]")
    holiday = np.isin(day, CITY.holidays)
    weekend = ((day - np.datetime64("1970-01-05")).astype(int) % 7) >= 5
    assert not holiday and (not weekend or np.isin(day, CITY.workdays))


# --- a district with accounts -----------------------------------------------------------------


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    write_demo(engine, small_demo)
    # one supervisor takes every step here: the separated loop is tests/test_departments.py's
    save_setting(engine, "incident_separation", False, actor="test")
    app = make_app(db_url, BASEMAP="none", PHOTO_DIR=str(tmp_path / "photos"))
    secrets = make_accounts(app, small_demo)
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    other = cells[~cells["code"].str.startswith(secrets["scope"])]
    point = lambda cell: cell.geometry.representative_point()  # noqa: E731
    return {
        "app": app,
        "engine": engine,
        **secrets,
        "mine": mine,
        "other": other,
        "here": point(mine.iloc[0]),
        "there": point(other.iloc[0]),
    }


def account(role="supervisor", scope=None, name=None):
    return Account(id=0, name=name or role, role=role, scope_code=scope)


def supervisor(site, scope=None):
    return account("supervisor", scope or site["scope"], "supervisor")


def new_case(site, who=None, category="E01-01", where=None, now=T0, **extra):
    where = where or site["here"]
    case, _ = incidents.report(
        site["engine"],
        who or supervisor(site),
        {"lon": where.x, "lat": where.y, "category": category, "description": "暴露垃圾", **extra},
        now=now,
    )
    return case


def step(site, case, action, now, who=None, note="ok"):
    current = incident_rows.get_incident(site["engine"], case["code"])
    return incidents.act(
        site["engine"],
        who or supervisor(site),
        case["code"],
        {"action": action, "version": current["version"], "note": note},
        now=now,
    )


# --- the state machine ---------------------------------------------------------------------------


def test_the_whole_loop_records_who_and_when(site):
    case = new_case(site)
    assert case["status"] == "reported" and case["grid_code"].startswith(site["scope"])
    assert case["community_code"] == site["scope"] and case["street_code"] == site["scope"][:9]
    times = {}
    for action, at in [
        ("file", T0 + timedelta(minutes=30)),
        ("dispatch", T0 + timedelta(hours=1)),
        ("handle", T0 + timedelta(hours=3)),
        ("return", T0 + timedelta(hours=4)),
        ("handle", T0 + timedelta(hours=5)),
        ("close", T0 + timedelta(hours=6)),
        ("evaluate", T0 + timedelta(days=1)),
    ]:
        before = incident_rows.get_incident(site["engine"], case["code"])["version"]
        after = step(site, case, action, at)
        assert after["version"] == before + 1 and after["status"] == TRANSITIONS[action].target
        times[action] = at
    final = incident_rows.get_incident(site["engine"], case["code"])
    assert final["due_at"] == datetime(2026, 11, 2, 14, 0)  # dispatched 10:00 + 4 working hours
    assert final["closed_at"] > final["due_at"] and final["rework_count"] == 1  # closed 15:00: late
    assert incidents.describe([final], supervisor(site), CITY, {})[0]["closed_late"]
    with site["engine"].connect() as conn:
        hours = conn.execute(
            text("SELECT filing_wh, dispatch_wh, handling_wh, verify_wh FROM incidents WHERE code = :c"),
            {"c": case["code"]},
        ).one()
    assert tuple(hours) == pytest.approx((0.5, 0.5, 4.0, 1.0))  # handled at last 14:00, 4 h after dispatch
    _, history, _ = incidents.history(site["engine"], supervisor(site), case["code"])
    assert [s["step"] for s in history] == [
        "reported",
        "filed",
        "dispatched",
        "handled",
        "returned",
        "handled",
        "closed",
        "evaluated",
    ]
    assert all(s["actor"] == "supervisor" and s["at"] for s in history)


def test_a_case_is_read_by_its_code_once_and_then_named_by_its_district(site, tmp_path):
    """A case's code names no district: its first read asks every district's part (on Citus every
    shard). Every later statement of a step, a note, a photo and its history names the case's
    district, so on a store split by district it goes to that part alone (docs/scale.md)."""
    case = new_case(site)
    unnamed = []
    for what in ("file", "dispatch", "note", "photo", "history", "handle", "close"):
        with recorded(site["engine"]) as statements:
            if what == "note":
                incidents.add_note(site["engine"], supervisor(site), case["code"], {"note": "又看到了"})
            elif what == "photo":
                incidents.add_photo(site["engine"], supervisor(site), case["code"], JPEG, "a.jpg",
                                    tmp_path / "photos")
            elif what == "history":
                incidents.history(site["engine"], supervisor(site), case["code"])
            else:
                step(site, case, what, T0 + timedelta(hours=1))
        touching = [s for s in statements if CASE_TABLES.search(s)]
        assert touching, what
        unnamed.append([s for s in touching if "district_code" not in s.split("WHERE", 1)[-1]])
    for what, loose in zip(("file", "dispatch", "note", "photo", "history", "handle", "close"), unnamed,
                           strict=True):
        # the case read by its code (``step`` reads it once more before acting, as a client does)
        by_code = [s for s in loose if re.search(r"WHERE incidents\.code = \S+\s*$", s.strip())]
        assert by_code and len(by_code) == len(loose), (what, loose)
        assert len(by_code) <= (2 if what in ("file", "dispatch", "handle", "close") else 1), (what, by_code)


#: the tables of cases, written and read by a step
CASE_TABLES = re.compile(r"\b(FROM|UPDATE|INTO) (incidents|incident_steps|incident_photos)\b")


STATUSES = ["reported", "filed", "dispatched", "handled", "closed", "evaluated", "cancelled"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# (督办 needs a case nearly due; 退回 is a department's step: tests/test_departments.py)
@given(st.lists(st.sampled_from([a for a in TRANSITIONS if a not in ("supervise", "send_back")]),
                min_size=1, max_size=9))
def test_no_illegal_transition_succeeds(site, actions):
    """Any sequence of actions: each succeeds exactly when the table allows it from the
    current status, and only a success leaves a step and raises the version."""
    case = new_case(site)
    status, version, steps = "reported", 1, 1
    now = T0
    for action in actions:
        now += timedelta(minutes=20)
        t = TRANSITIONS[action]
        try:
            after = incidents.act(
                site["engine"],
                supervisor(site),
                case["code"],
                {"action": action, "version": version, "note": "n"},
                now=now,
            )
        except IllegalTransition as exc:
            assert status not in t.sources and exc.status == 409
            assert exc.details["current"]["status"] == status
            continue
        assert status in t.sources
        status, version, steps = t.target, version + 1, steps + 1
        assert (after["status"], after["version"]) == (status, version)
    stored = incident_rows.get_incident(site["engine"], case["code"])
    assert (stored["status"], stored["version"]) == (status, version)
    assert len(incident_rows.steps_of(site["engine"], stored["id"])) == steps


def test_two_supervisors_on_the_same_version_one_wins(site):
    case = new_case(site)
    first = incidents.act(site["engine"], supervisor(site), case["code"], {"action": "file", "version": 1})
    assert first["version"] == 2
    with pytest.raises(VersionConflict) as caught:
        incidents.act(
            site["engine"],
            account("supervisor", site["scope"], "other"),
            case["code"],
            {"action": "cancel", "version": 1, "note": "duplicate"},
        )
    assert caught.value.status == 409
    assert caught.value.details["current"]["status"] == "filed" and caught.value.details["version"] == 2


def test_roles_and_scopes(site):
    case = new_case(site)
    elsewhere = new_case(site, who=account("admin"), where=site["there"])
    with pytest.raises(Forbidden):
        incidents.act(site["engine"], account("viewer"), case["code"], {"action": "file", "version": 1})
    with pytest.raises(Forbidden):
        incidents.act(site["engine"], account("planner"), case["code"], {"action": "file", "version": 1})
    with pytest.raises(NotFound):  # not theirs: as if it did not exist
        incidents.act(site["engine"], supervisor(site), elsewhere["code"], {"action": "file", "version": 1})
    with pytest.raises(Forbidden):  # reporting outside one's cells
        new_case(site, where=site["there"])
    with pytest.raises(Forbidden):
        incidents.report(site["engine"], account("viewer"), {"lon": 1, "lat": 1, "category": "E01-01"})
    # a 网格员 scoped to one cell works the loop but does not evaluate; the 网格长 does
    cell_man = account("supervisor", case["grid_code"], "cell")
    for action in ("file", "dispatch", "handle", "close"):
        step(site, case, action, T0 + timedelta(hours=1), who=cell_man)
    assert "evaluate" not in incidents.allowed_actions(
        cell_man, incident_rows.get_incident(site["engine"], case["code"])
    )
    with pytest.raises(Forbidden):
        step(site, case, "evaluate", T0 + timedelta(hours=2), who=cell_man)
    assert step(site, case, "evaluate", T0 + timedelta(hours=2))["status"] == "evaluated"


def test_refusals(site):
    engine = site["engine"]
    with pytest.raises(Refused, match="unknown category"):
        new_case(site, category="X99")
    far = type("P", (), {"x": 10.0, "y": 10.0})()
    with pytest.raises(Refused, match="outside every grid cell"):
        new_case(site, who=account("admin"), where=far)
    case = new_case(site)
    for data, message in [
        ({"action": "fly", "version": 1}, "unknown action"),
        ({"action": "file"}, "version"),
        ({"action": "file", "version": "1"}, "version"),
        ({"action": "cancel", "version": 1}, "needs a note"),
    ]:
        with pytest.raises(Refused, match=message):
            incidents.act(engine, supervisor(site), case["code"], data)
    with pytest.raises(IllegalTransition):
        incidents.act(engine, supervisor(site), case["code"], {"action": "close", "version": 1})


def test_approximate_cases_count_in_their_community_and_no_cell(site):
    engine = site["engine"]
    case, _ = incidents.report(
        engine, supervisor(site), {"community": site["scope"], "category": "E04-01"}, now=T0
    )
    assert case["grid_code"] is None and case["location_precision"] == "approximate"
    assert case["community_code"] == site["scope"]
    assert incidents.covers(supervisor(site), case)
    assert not incidents.covers(account("supervisor", site["mine"]["code"].iloc[0]), case)
    since, until = datetime(2026, 11, 1), datetime(2026, 11, 30, 23, 59)
    by_community = rates.rates(engine, "community", since, until, now=T0 + timedelta(days=1))
    by_cell = rates.rates(engine, "cell", since, until, now=T0 + timedelta(days=1))
    assert by_community.set_index("code").loc[site["scope"], "reported"] >= 1
    assert by_cell["reported"].sum() == by_community["reported"].sum() - 1


def test_likely_duplicates_are_offered(site):
    first = new_case(site)
    near = site["here"]
    _, duplicates = incidents.report(
        site["engine"],
        supervisor(site),
        {"lon": near.x + 0.0001, "lat": near.y, "category": "E01-01"},
        now=T0,
    )
    assert [d["code"] for d in duplicates][:1] == [first["code"]] and duplicates[0]["distance_m"] < 15
    _, other_kind = incidents.report(
        site["engine"], supervisor(site), {"lon": near.x, "lat": near.y, "category": "C01-01"}, now=T0
    )
    assert other_kind == []


# --- rates -----------------------------------------------------------------------------------------


def test_rates_against_hand_computed_cases(site):
    engine = site["engine"]
    with engine.begin() as conn:  # only the cases made here
        conn.execute(text("DELETE FROM incident_steps"))
        conn.execute(text("DELETE FROM incidents"))
    cells = site["mine"]["code"].tolist()
    # A: on time; B: closed late after one return; C: still open and overdue; D: cancelled
    a = new_case(site, now=T0)
    for action, h in (("file", 0.5), ("dispatch", 1), ("handle", 2), ("close", 3)):
        step(site, a, action, T0 + timedelta(hours=h))
    b = new_case(site, category="E05-01", now=T0)  # 2 working hours
    for action, at in (
        ("file", T0 + timedelta(hours=1)),
        ("dispatch", T0 + timedelta(hours=1)),
        ("handle", T0 + timedelta(hours=2)),
        ("return", T0 + timedelta(hours=3)),
        ("handle", T0 + timedelta(hours=4)),
        ("close", T0 + timedelta(hours=5)),
    ):
        step(site, b, action, at)
    c = new_case(site, now=T0)
    step(site, c, "file", T0 + timedelta(hours=1))
    step(site, c, "dispatch", T0 + timedelta(hours=2))  # due 15:00
    d = new_case(site, now=T0)
    step(site, d, "cancel", T0 + timedelta(hours=1), note="重复 duplicate")
    now = datetime(2026, 11, 3, 12, 0)
    table = rates.rates(engine, "community", datetime(2026, 11, 1), datetime(2026, 11, 30, 23, 59), now=now)
    row = table.set_index("code").loc[site["scope"]]
    assert (row.reported, row.filed, row.closed, row.due) == (4, 3, 2, 3)
    assert (row.due_closed, row.due_closed_on_time, row.returned) == (2, 1, 1)
    assert row.closed_rate == pytest.approx(2 / 3) and row.on_time_rate == pytest.approx(1 / 3)
    assert row.rework_rate == pytest.approx(1 / 3)  # 1 return ÷ (2 closes + 1 return)
    assert row.filing_hours == pytest.approx((0.5 + 1 + 1) / 3)
    assert row.handling_hours == pytest.approx(
        (1 + 3) / 2
    )  # A 1 h; B dispatched 10:00, handled at last 13:00
    assert row.verify_hours == pytest.approx(1.0)
    assert set(table["code"]) == {site["scope"]} and cells
    answer = rates.as_json(
        table, "community", *rates.period("2026-11-01", "2026-11-30"), rates.targets(engine)
    )
    assert answer["rows"][0]["below_target"] == ["closed_rate", "on_time_rate"]
    with site["app"].test_request_context(headers={"Accept-Language": "zh-CN"}):  # headers in Chinese
        csv_text = rates.to_csv(table)
    assert csv_text.startswith("\ufeff") and "结案率" in csv_text and "合计" in csv_text


def same_sums_as_a_scan(engine, scope: str) -> int:
    """The rates from the daily sums equal those from a scan of the cases, for every level,
    several whole-day periods, ``now`` before, inside (mid-day) and after them, with and without
    a scope. Returns how many rows were compared."""
    compared = 0
    for since, until in (
        rates.period("2026-09-01", "2027-03-31"),  # whole months
        rates.period("2026-10-15", "2027-01-10"),  # days, months, days
        rates.period("2026-11-02", "2026-11-20"),  # days within a month
        rates.period("2026-11-05", "2026-11-05"),
    ):
        for now in (since - timedelta(hours=3), since + timedelta(days=2, hours=11, minutes=7), until
                    + timedelta(days=30), datetime(2026, 11, 5, 12, 30)):
            for prefix in (None, scope, scope[:9]):
                for by in rates.LEVELS:
                    days = incident_rows.rate_sums(engine, by, since, until, now, prefix)
                    scan = incident_rows.rate_sums_scan(engine, by, since, until, now, prefix)
                    assert [r["code"] for r in days] == [r["code"] for r in scan], (by, since, now, prefix)
                    for d, s in zip(days, scan, strict=True):
                        for key, value in s.items():
                            if key.endswith("_sum"):
                                assert d[key] == pytest.approx(value, abs=1e-6), (key, by, since, now)
                            else:
                                assert d[key] == value, (key, by, since, until, now, prefix, d["code"])
                    compared += len(scan)
    return compared


def test_daily_sums_give_the_hand_computed_rates_for_whole_days(site):
    """The hand-computed cases above, over whole days (as the pages and the command ask): the same
    figures, now from the daily sums kept by the database."""
    engine = site["engine"]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM incident_steps"))
        conn.execute(text("DELETE FROM incidents"))
    with engine.connect() as conn:  # deleting every case leaves nothing to count
        for table in ("incident_days", "incident_months"):
            assert conn.execute(text(f"SELECT count(*) FROM {table} WHERE reported <> 0")).scalar_one() == 0
    a, b, c = new_case(site), new_case(site, category="E05-01"), new_case(site)
    for action, h in (("file", 0.5), ("dispatch", 1), ("handle", 2), ("close", 3)):
        step(site, a, action, T0 + timedelta(hours=h))
    for action, h in (("file", 1), ("dispatch", 1), ("handle", 2), ("return", 3), ("handle", 4)):
        step(site, b, action, T0 + timedelta(hours=h))
    step(site, b, "close", T0 + timedelta(hours=5))
    step(site, c, "file", T0 + timedelta(hours=1))
    step(site, c, "dispatch", T0 + timedelta(hours=2))
    step(site, new_case(site), "cancel", T0 + timedelta(hours=1), note="重复 duplicate")
    since, until = rates.period("2026-11-01", "2026-11-30")
    row = rates.rates(engine, "community", since, until, now=datetime(2026, 11, 3, 12, 0)).set_index("code")
    row = row.loc[site["scope"]]
    assert (row.reported, row.filed, row.closed, row.due, row.due_closed) == (4, 3, 2, 3, 2)
    assert (row.due_closed_on_time, row.returned) == (1, 1)
    assert row.filing_hours == pytest.approx((0.5 + 1 + 1) / 3) and row.handling_hours == pytest.approx(2)
    # deadlines later today are not due yet: C (due 15:00) is due only from 15:00
    early = rates.rates(engine, "community", since, until, now=datetime(2026, 11, 2, 14, 0))
    assert early.set_index("code").loc[site["scope"], "due"] == 2
    assert same_sums_as_a_scan(engine, site["scope"]) > 0


def per_month(engine, since, until, now, prefix):
    """The chart's series as it was made before: the district table's total, month by month."""
    out, start = [], since.replace(day=1)
    while start <= until:
        nxt = (start + timedelta(days=32)).replace(day=1)
        first, last = max(start, since), min(nxt - timedelta(microseconds=1), until)
        frame = rates.rates(engine, "district", first, last, prefix=prefix, now=now)
        row = rates._records(rates.total(frame))[0] if len(frame) else dict.fromkeys(rates.COLUMNS)
        out.append({**row, "code": start.strftime("%Y-%m"), "name": None, "street_name": None})
        start = nxt
    return out


def test_monthly_series_in_grouped_queries_equals_the_month_by_month_tables(site):
    """The rates chart's series (summed per month in a few grouped queries) gives, month by month,
    the same figures as the district table computed for each month on its own: periods of whole
    months and of days at the ends, ``now`` before, inside and after, with and without a scope."""
    engine = site["engine"]
    with engine.begin() as conn:  # some cases chased, so 督办 counts per month are compared too
        conn.execute(text("UPDATE incidents SET supervise_count = 1 WHERE dispatched_at IS NOT NULL "
                          "AND id % 3 = 0"))
    with engine.connect() as conn:
        chased = conn.execute(text("SELECT count(*) FROM incidents WHERE supervise_count > 0")).scalar_one()
    assert chased > 0
    compared = 0
    for since, until in (rates.period("2025-11-01", "2026-11-30"), rates.period("2025-12-17", "2026-10-09")):
        for now in (since - timedelta(days=1), datetime(2026, 6, 14, 10, 30), until + timedelta(days=5)):
            for prefix in (None, site["scope"], site["scope"][:9]):
                series = rates.monthly(engine, since, until, prefix=prefix, now=now)
                expected = per_month(engine, since, until, now, prefix)
                assert [r["code"] for r in series] == [r["code"] for r in expected]
                for got, want in zip(series, expected, strict=True):
                    assert got == pytest.approx(want), (since, now, prefix, want["code"])
                compared += sum(1 for r in expected if r["reported"])
    assert compared > 20  # the demo has cases in most months
    statements = []

    def count(*_args):
        statements.append(1)

    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", count)
    try:
        rates.monthly(engine, *rates.period("2025-11-01", "2026-11-30"), now=datetime(2026, 6, 14, 10, 30))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 8  # not a round of queries per month (13 months: 60 and more)


#: the incident loop's tables split by district (docs/scale.md)
SPLIT = re.compile(r"\b(FROM|JOIN|UPDATE) "
                   r"(incidents|incident_steps|incident_days|incident_months|grid_cells)\b")


def scope_figures(engine, prefix: str) -> dict:
    """What a leader of ``prefix`` reads of the loop: the rates at every level below a district
    (from the sums and from a scan), the monthly chart, the departments' table, the list of
    cases and the map's extent."""
    now = datetime(2026, 6, 14, 10, 30)

    out: dict = {}
    for since, until in (rates.period("2025-11-01", "2026-11-30"),
                         (datetime(2025, 11, 1, 8), datetime(2026, 11, 30, 18))):  # a scan
        for by in ("cell", "community", "street"):
            out[by, since] = rates.rates(engine, by, since, until, prefix=prefix, now=now).to_dict("records")
        out["departments", since] = rates.department_rates(engine, since, until, prefix=prefix,
                                                           now=now).to_dict("records")
    out["monthly"] = rates.monthly(engine, *rates.period("2025-11-01", "2026-11-30"), prefix=prefix, now=now)
    out["cases"] = [c["id"] for c in incident_rows.list_incidents(engine, prefix=prefix)]
    out["extent"] = incident_rows.cells_extent(engine, prefix)
    return out


def same(a, b) -> bool:
    """``a`` and ``b`` hold the same figures; hours summed in another order (the sums kept by
    the database's triggers) may differ in their last bits."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return b == pytest.approx(a, rel=1e-9)
    return a == b


def test_a_scopes_rates_and_cases_are_read_from_its_districts_alone(site):
    """A street's or community's rates, chart, departments' table, cases and map extent: every
    statement on a table split by district names the districts under the scope (on a store split
    by district it goes to their parts alone). They are its street's districts, as stored — so a
    street stored under another district than the one its code begins with (a provisional code)
    keeps every figure."""
    engine, scope = site["engine"], site["scope"]
    with engine.begin() as conn:  # some cases chased, so the 督办 reads are made too
        conn.execute(text("UPDATE incidents SET supervise_count = 1 WHERE dispatched_at IS NOT NULL "
                          "AND id % 3 = 0"))
    prefixes = (scope, scope[:9], scope[:6])
    before = {}
    for prefix in prefixes:
        with recorded(engine) as statements:
            before[prefix] = scope_figures(engine, prefix)
        touching = [s for s in statements if SPLIT.search(s)]
        assert len(touching) >= 20, statements
        unscoped = [s for s in touching if "district_code" not in s.split("WHERE", 1)[-1]]
        assert not unscoped, "\n\n".join(unscoped)
    assert before[scope]["cases"] and before[scope]["monthly"] and before[scope]["extent"]
    assert any(row["reported"] for row in before[scope]["street", datetime(2025, 11, 1, 8)])

    street, elsewhere = scope[:9], "429999"
    cases = ("SELECT id FROM incidents WHERE "
             "coalesce(street_code, substr(community_code, 1, 9), substr(grid_code, 1, 9)) = :s")
    where = {"d": elsewhere, "s": street}
    with engine.begin() as conn:  # the street, its cells and its cases stored under another district
        assert conn.execute(text(f"SELECT count(*) FROM incident_photos WHERE incident_id IN ({cases})"),
                            where).scalar_one() == 0
        # a case's steps follow it (on a partitioned database by a key that includes the district)
        conn.execute(text(f"CREATE TEMPORARY TABLE moved_steps AS SELECT * FROM incident_steps "
                          f"WHERE incident_id IN ({cases})"), where)
        conn.execute(text(f"DELETE FROM incident_steps WHERE incident_id IN ({cases})"), where)
        conn.execute(text("UPDATE streets SET district_code = :d WHERE code = :s"), where)
        conn.execute(text("UPDATE grid_cells SET district_code = :d WHERE substr(code, 1, 9) = :s"), where)
        moved = conn.execute(text(f"UPDATE incidents SET district_code = :d WHERE id IN ({cases})"),
                             where).rowcount
        conn.execute(text("UPDATE moved_steps SET district_code = :d"), where)
        conn.execute(text("INSERT INTO incident_steps SELECT * FROM moved_steps"))
        conn.execute(text("DROP TABLE moved_steps"))
    assert moved > 0
    for prefix in (scope, street):
        after = scope_figures(engine, prefix)
        assert after.keys() == before[prefix].keys()
        for key, figures in after.items():
            assert same(figures, before[prefix][key]), (prefix, key)


@pytest.mark.parametrize("kind", ["spatialite", "postgis"])
def test_migration_fills_the_daily_sums_from_the_cases_already_stored(kind, request, tmp_path, small_demo):
    """A database whose cases were stored before migration 0008: the migration sums them."""
    from geodata.db import get_engine
    from geodata.migrate import upgrade

    if kind == "spatialite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    else:
        server = request.getfixturevalue("postgis_server")
        base = server.url.rsplit("/", 1)[0]
        admin = get_engine(base + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CREATE DATABASE before_0008")
        url = base + "/before_0008"
    engine = get_engine(url)
    try:
        for head in ("0004", "0005", "0006", "0007"):  # every head but the daily sums
            upgrade(engine, head)
        # the cases without their steps: the steps' district (district_incident_rows, after 0008)
        # is not there yet for today's writer to fill
        write_demo(engine, dataclasses.replace(small_demo, steps=small_demo.steps.iloc[0:0]))
        upgrade(engine)
        with engine.connect() as conn:
            for table in ("incident_days", "incident_months"):
                reported = conn.execute(text(f"SELECT sum(reported) FROM {table}")).scalar_one()
                assert reported == len(small_demo.layers["incidents"])
        assert same_sums_as_a_scan(engine, small_demo.layers["communities"]["code"].iloc[0]) > 0
    finally:
        engine.dispose()


def test_the_demo_written_over_other_cases_counts_its_sums_once(engine, small_demo):
    """The demo writes a year of cases with the sums' row triggers paused on PostgreSQL and counts
    every district's sums once at the end (SQLite's triggers count row by row): written over
    another district's cases, only its own cases are in the sums, and the rates from the sums
    equal those from a scan of the cases; a case reported after it counts as every later one."""
    from layers.sample_data.country import split_district

    write_demo(engine, split_district(small_demo, "420199"))  # cases in a second district too
    write_demo(engine, small_demo)
    district = str(small_demo.layers["districts"]["code"].iloc[0])
    with engine.connect() as conn:
        kept = dict(conn.execute(text("SELECT district_code, sum(reported) FROM incident_days "
                                      "GROUP BY district_code")).all())
    assert kept == {district: len(small_demo.layers["incidents"])}
    scope = small_demo.layers["communities"]["code"].iloc[0]
    assert same_sums_as_a_scan(engine, scope) > 0
    cell = small_demo.layers["grid_cells"]
    here = cell[cell["code"].str.startswith(scope)].geometry.iloc[0].representative_point()
    incidents.report(engine, Account(id=0, name="s", role="supervisor", scope_code=scope),
                     {"lon": here.x, "lat": here.y, "category": "E01-01", "description": "暴露垃圾"}, now=T0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sum(reported) FROM incident_days")).scalar_one() == \
            len(small_demo.layers["incidents"]) + 1
    assert same_sums_as_a_scan(engine, scope) > 0


ACTIONS = ["file", "cancel", "dispatch", "handle", "close", "return", "evaluate"]
CHANGES = st.one_of(
    st.tuples(st.just("report"), st.integers(0, 40), st.integers(0, 60), st.booleans()),
    st.tuples(st.just("act"), st.integers(0, 40), st.sampled_from(ACTIONS), st.integers(1, 30)),
    st.tuples(st.just("code"), st.integers(0, 40)),
    st.tuples(st.just("hours"), st.integers(0, 40), st.floats(0, 50)),
    st.tuples(st.just("move"), st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.just("delete"), st.integers(0, 40)),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(CHANGES, min_size=1, max_size=25))
def test_daily_sums_follow_every_change_of_the_cases(site, changes):
    """Reports (by point and approximate), every step of the loop (cancel and return included),
    a case's own code changed, step hours rewritten, a case moved to another cell and community
    (as a code replacement does), cases deleted: after any sequence the rates from the daily sums
    equal those from a scan of the cases."""
    engine = site["engine"]
    cells = site["mine"]
    with engine.connect() as conn:
        cases = [r[0] for r in conn.execute(text("SELECT code FROM incidents ORDER BY id")).all()]
    clock = {}
    for change in changes:
        kind, pick = change[0], change[1]
        code = cases[pick % len(cases)] if cases else None
        if kind == "report":
            _, days, hours, approximate = change
            now = T0 + timedelta(days=days, hours=hours % 9)
            if approximate:
                case, _ = incidents.report(
                    engine, supervisor(site), {"community": site["scope"], "category": "E04-01"}, now=now
                )
            else:
                where = cells.geometry.iloc[pick % len(cells)].representative_point()
                case = new_case(site, where=where, now=now)
            cases.append(case["code"])
            clock[case["code"]] = now
        elif code is None:
            continue
        elif kind == "act":
            clock[code] = clock.get(code, T0 + timedelta(days=61)) + timedelta(hours=change[3])
            try:
                step(site, {"code": code}, change[2], clock[code], note="n")
            except (IllegalTransition, Refused, Forbidden, NotFound):
                pass
        elif kind == "code":
            case = incident_rows.get_incident(engine, code)
            with engine.begin() as conn:
                incident_rows.change_code(conn, case["id"], f"X{case['id']}-{len(changes)}")
            cases[cases.index(code)] = f"X{case['id']}-{len(changes)}"
        elif kind == "hours":
            case = incident_rows.get_incident(engine, code)
            with engine.begin() as conn:
                incident_rows.set_step_hours(
                    conn, [{"id": case["id"], "filing_wh": change[2], "verify_wh": change[2] / 2}]
                )
        elif kind == "move":
            cell = site["other"]["code"].iloc[change[2] % len(site["other"])]
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE incidents SET grid_code = :g, community_code = :c, street_code = :s "
                         "WHERE code = :code"),
                    {"g": cell, "c": cell[:12], "s": cell[:9], "code": code},
                )
        elif kind == "delete":
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM incident_steps WHERE incident_id IN "
                                  "(SELECT id FROM incidents WHERE code = :c)"), {"c": code})
                conn.execute(text("DELETE FROM incidents WHERE code = :c"), {"c": code})
            cases.remove(code)
    same_sums_as_a_scan(engine, site["scope"])


# --- the web app ---------------------------------------------------------------------------------


def bearer(site, which="supervisor_token"):
    return {"Authorization": f"Bearer {site[which]}"}


def test_api_reports_and_acts_with_versions(site):
    client = site["app"].test_client()
    here = site["here"]
    answer = client.post(
        "/api/incidents",
        json={"lon": here.x, "lat": here.y, "category": "E01-01", "description": "<b>x</b>"},
        headers=bearer(site),
    )
    assert answer.status_code == 201, answer.json
    code = answer.json["code"]
    assert answer.headers["Location"].endswith(f"/api/incidents/{code}")
    assert [a["action"] for a in answer.json["actions"]] == ["file", "cancel"]
    acted = client.post(
        f"/api/incidents/{code}/actions", json={"action": "file", "version": 1}, headers=bearer(site)
    )
    assert acted.status_code == 200 and acted.json["version"] == 2 and acted.json["status"] == "filed"
    stale = client.post(
        f"/api/incidents/{code}/actions", json={"action": "dispatch", "version": 1}, headers=bearer(site)
    )
    assert stale.status_code == 409 and stale.mimetype == "application/problem+json"
    assert stale.json["code"] == "VersionConflict" and stale.json["current"]["status"] == "filed"
    illegal = client.post(
        f"/api/incidents/{code}/actions", json={"action": "close", "version": 2}, headers=bearer(site)
    )
    assert illegal.status_code == 409 and illegal.json["code"] == "IllegalTransition"
    dispatched = client.post(
        f"/api/incidents/{code}/actions", json={"action": "dispatch", "version": 2}, headers=bearer(site)
    ).json
    assert dispatched["due_at"] and dispatched["hours_left"] is not None
    case = client.get(f"/api/incidents/{code}", headers=bearer(site)).json
    assert [s["step"] for s in case["steps"]] == ["reported", "filed", "dispatched"]
    assert case["description"] == "<b>x</b>"  # kept as text; pages insert it with textContent
    listed = client.get("/api/incidents?status=open&mine=1", headers=bearer(site)).json["incidents"]
    assert code in [c["code"] for c in listed]
    left = [c["hours_left"] for c in listed if c["hours_left"] is not None]
    assert left == sorted(left)
    # the cases done with: the last closed first (those of the supervisor's cells in the demo)
    closed = client.get("/api/incidents?status=closed", headers=bearer(site)).json["incidents"]
    assert len(closed) > 3
    ends = [c["closed_at"] for c in closed]
    assert ends == sorted(ends, reverse=True)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("not json", 400, "JSON object"),
        ({"lon": 114.2, "lat": 30.5, "category": "NOPE"}, 400, "unknown category"),
        ({"lon": 10, "lat": 10, "category": "E01-01"}, 400, "outside every grid cell"),
        ({"lon": "east", "lat": 10, "category": "E01-01"}, 400, "lon must be a number"),
        ({"category": "E01-01"}, 400, "lon and lat are required"),
        ({"lon": 114.2, "lat": 30.5, "community": "420103001001", "category": "E01-01"}, 400, "not both"),
    ],
)
def test_api_refuses_bad_reports(site, body, status, message):
    client = site["app"].test_client()
    kwargs = {"data": body, "content_type": "application/json"} if isinstance(body, str) else {"json": body}
    answer = client.post("/api/incidents", headers=bearer(site), **kwargs)
    assert answer.status_code == status and message in answer.json["detail"]


def test_api_roles_scopes_and_csrf(site):
    app = site["app"]
    case = new_case(site, who=account("admin"), where=site["there"])
    client = app.test_client()
    assert client.get(f"/api/incidents/{case['code']}", headers=bearer(site)).status_code == 404
    assert (
        client.post(
            f"/api/incidents/{case['code']}/actions",
            json={"action": "file", "version": 1},
            headers=bearer(site),
        ).status_code
        == 404
    )
    viewer = client.post(
        f"/api/incidents/{case['code']}/actions",
        json={"action": "file", "version": 1},
        headers=bearer(site, "token"),
    )
    assert viewer.status_code == 403
    assert client.post("/api/incidents", json={}, headers=bearer(site, "token")).status_code == 403
    assert client.get("/api/incidents").status_code == 401
    # a signed-in browser must send the CSRF token
    browser = app.test_client()
    sign_in(browser, "supervisor")
    here = site["here"]
    body = {"lon": here.x, "lat": here.y, "category": "E01-01"}
    assert browser.post("/api/incidents", json=body).status_code == 400
    token = csrf_token(browser.get("/cases").get_data(as_text=True))
    assert browser.post("/api/incidents", json=body, headers={"X-CSRFToken": token}).status_code == 201


def test_history_api_answers_whoever_may_see_the_case(site):
    """``/api/incidents/<code>/history`` follows the rule of ``/api/incidents/<code>``: the
    community's supervisor reads the history of a case placed only in their community (no cell);
    a supervisor of one cell, or of another community, gets 404 for it."""
    app, engine = site["app"], site["engine"]
    approximate, _ = incidents.report(
        engine, supervisor(site), {"community": site["scope"], "category": "E04-01"}, now=T0
    )
    step(site, approximate, "file", T0 + timedelta(hours=1))
    client = app.test_client()
    answer = client.get(f"/api/incidents/{approximate['code']}/history", headers=bearer(site))
    assert answer.status_code == 200, answer.json
    assert [s["step"] for s in answer.json["steps"]] == ["reported", "filed"]
    assert answer.json["steps"][1]["actor"] == "supervisor"
    with app.app_context():
        from webmap.auth import add_token

        one_cell = add_token("cell-app", "supervisor", site["mine"]["code"].iloc[0])
        elsewhere = add_token("other-app", "supervisor", site["other"]["code"].iloc[0][:12])
    for token in (one_cell, elsewhere):
        refused = client.get(
            f"/api/incidents/{approximate['code']}/history", headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 404
        assert client.get(
            f"/api/incidents/{approximate['code']}", headers={"Authorization": f"Bearer {token}"}
        ).status_code == 404
    assert client.get("/api/incidents/nothing-1/history", headers=bearer(site)).status_code == 404
    viewer = client.get(f"/api/incidents/{approximate['code']}/history", headers=bearer(site, "token"))
    assert viewer.status_code == 200


def test_photos_checked_stored_outside_and_served_only_in_scope(site, tmp_path):
    app = site["app"]
    client = app.test_client()
    here = site["here"]
    report = client.post(
        "/api/incidents",
        headers=bearer(site),
        data={
            "lon": str(here.x),
            "lat": str(here.y),
            "category": "E01-01",
            "description": "井盖",
            "photo": (io.BytesIO(JPEG), "scene.jpg"),
        },
        content_type="multipart/form-data",
    )
    assert report.status_code == 201, report.json
    code = report.json["code"]
    photo = report.json["photos"][0]
    stored = list((tmp_path / "photos").iterdir())
    # kept as a JPEG gridplan encoded (tests/test_trust.py: without metadata, resized)
    assert len(stored) == 1 and stored[0].read_bytes()[:3] == b"\xff\xd8\xff"
    case = client.get(f"/api/incidents/{code}", headers=bearer(site)).json
    url = case["photos"][0]["url"]
    got = client.get(url, headers=bearer(site))
    assert got.status_code == 200 and got.data == stored[0].read_bytes() and got.mimetype == "image/jpeg"
    assert photo["content_type"] == "image/jpeg"
    # another community's supervisor sees neither the case nor its photo
    other_scope = site["other"]["code"].iloc[0][:12]
    with app.app_context():
        from webmap.auth import add_token

        other = add_token("other-grid", "supervisor", other_scope)
    assert client.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    added = client.post(
        f"/api/incidents/{code}/photos",
        headers=bearer(site),
        data={"photo": (io.BytesIO(PNG), "b.png")},
        content_type="multipart/form-data",
    )
    assert added.status_code == 201 and added.json["content_type"] == "image/jpeg"  # a PNG too
    bad = client.post(
        f"/api/incidents/{code}/photos",
        headers=bearer(site),
        data={"photo": (io.BytesIO(b"MZ\x90\x00 not an image"), "x.jpg")},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400 and "JPEG, PNG or WebP" in bad.json["detail"]
    with site["engine"].begin() as conn:
        conn.execute(text("UPDATE settings SET value = :v WHERE key = 'photo_max_mb'"), {"v": "0.0001"})
    big = client.post(
        f"/api/incidents/{code}/photos",
        headers=bearer(site),
        data={"photo": (io.BytesIO(JPEG + b"\0" * 200), "big.jpg")},
        content_type="multipart/form-data",
    )
    assert big.status_code == 413
    assert len(list((tmp_path / "photos").iterdir())) == 2


def test_supervisors_cells(site):
    app, engine = site["app"], site["engine"]
    client = app.test_client()
    with app.app_context():
        from webmap.auth import add_token, add_user

        add_user("wang", "supervisor", "a long password", site["scope"])
        admin = add_token("admin-app", "admin")
    cells = site["mine"]["code"].tolist()[:2]
    headers = {"Authorization": f"Bearer {admin}"}
    answer = client.post("/api/grid/assignments", json={"user": "wang", "cells": cells}, headers=headers)
    assert answer.status_code == 200 and answer.json["cells"] == sorted(cells)
    outside = client.post(
        "/api/grid/assignments",
        json={"user": "wang", "cells": [site["other"]["code"].iloc[0]]},
        headers=headers,
    )
    assert outside.status_code == 400 and "outside" in outside.json["detail"]
    assert (
        client.post(
            "/api/grid/assignments", json={"user": "wang", "cells": cells}, headers=bearer(site)
        ).status_code
        == 403
    )
    listed = client.get("/api/grid/assignments?user=wang", headers=bearer(site)).json["assignments"]
    assert sorted(a["cell_code"] for a in listed) == sorted(cells)
    wang = account("supervisor", site["scope"], "wang")
    assert incidents.my_cells(engine, wang) == sorted(cells)
    removed = client.post(
        "/api/grid/assignments", json={"user": "wang", "cells": cells[:1], "remove": True}, headers=headers
    )
    assert removed.json["cells"] == cells[1:]


def test_rates_api_csv_and_command(site):
    app = site["app"]
    client = app.test_client()
    answer = client.get(
        "/api/rates?by=street&from=2025-11-01&to=2026-11-01&every=month", headers=bearer(site, "token")
    )
    assert answer.status_code == 200
    assert answer.json["rows"] and answer.json["total"]["reported"] > 0 and len(answer.json["series"]) == 13
    assert client.get("/api/rates?by=planet", headers=bearer(site, "token")).status_code == 400
    assert client.get("/api/rates?from=2026-13-01", headers=bearer(site, "token")).status_code == 400
    csv_answer = client.get("/api/rates?by=community&format=csv",
                            headers={**bearer(site, "token"), "Accept-Language": "zh-CN"})
    assert csv_answer.mimetype == "text/csv" and "按期结案率" in csv_answer.get_data(as_text=True)
    result = app.test_cli_runner().invoke(
        args=["rates", "--by", "street", "--from", "2025-11-01", "--to", "2026-11-01"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["by"] == "street" and printed["total"]["reported"] == answer.json["total"]["reported"]


@pytest.mark.parametrize("fmt", ["gpkg", "shp", "geojson", "csv"])
def test_exports_of_cells_and_incidents_with_history(site, fmt, tmp_path):
    from layers.incidents.exports import export

    engine = site["engine"]
    incidents.assign_cells(engine, account("admin"), "supervisor", site["mine"]["code"].tolist()[:1])
    cells = export(engine, "grid_cells", fmt, tmp_path / "c", prefix=site["scope"])
    cases = export(engine, "incidents", fmt, tmp_path / "i", prefix=site["scope"])
    assert cells.exists() and cases.exists()
    if fmt == "gpkg":
        frame = pyogrio.read_dataframe(cases, layer="incidents")
        steps = pyogrio.read_dataframe(cases, layer="incident_steps")
        assert len(frame) and len(steps) >= len(frame) and frame["history"].str.contains("reported").all()
        cell_frame = pyogrio.read_dataframe(cells)
        assert (cell_frame["supervisors"] == "supervisor").sum() == 1
    if fmt == "shp":
        names = zipfile.ZipFile(cases).namelist()
        assert "incidents.dbf" in names and "incident_steps.csv" in names
