"""Working time: the clock incident limits run on."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.incidents.working_time import add_working_hours, working_hours_between


def test_friday_afternoon_plus_four_hours_is_monday_noon():
    start = np.datetime64("2026-11-20T16:00")  # a Friday
    assert add_working_hours(start, 4) == np.datetime64("2026-11-23T12:00")


def test_twenty_working_days_are_four_calendar_weeks():
    start = np.datetime64("2026-11-02T09:00")  # a Monday morning
    assert add_working_hours(start, 160) == np.datetime64("2026-11-27T17:00")


@settings(max_examples=200, deadline=None)
@given(st.datetimes(datetime(2024, 1, 1), datetime(2027, 1, 1)), st.floats(0, 500))
def test_adding_then_measuring_gives_the_hours_back(start, hours):
    start = np.datetime64(start.replace(microsecond=0), "s")
    end = add_working_hours(start, hours)
    assert end >= start
    assert abs(working_hours_between(start, end) - hours) < 1 / 3600 + 1e-9
    weekday = end.astype(datetime).weekday()
    assert weekday < 5 or hours < 1 / 3600  # under a second rounds to the start itself
    if hours > 0:
        assert end.astype(datetime) - start.astype(datetime) <= timedelta(hours=hours * 168 / 40 + 72)
