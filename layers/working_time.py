"""Working time (工作时): the clock incident time limits run on.

Limits such as "exposed rubbish: 4 working hours" or "illegal structure: 20 working days" count
only working time. The calendar here is Monday–Friday, 09:00–17:00 (8 hours a day, 40 a week);
public holidays are not modelled. Vectorised over numpy ``datetime64`` arrays so that a year of
incidents is timed at once. Kept in ``geodata`` because the demo generator needs it as much as
the incident workflow in ``layers`` does.
"""

from __future__ import annotations

import numpy as np

DAY_START_H = 9.0
HOURS_PER_DAY = 8.0
_EPOCH = np.datetime64("1970-01-05T00:00:00", "s")  # a Monday
_DAY = 86400


def working_hours(t) -> np.ndarray:
    """Working hours elapsed between a fixed Monday in 1970 and each time in ``t``."""
    secs = (np.asarray(t, dtype="datetime64[s]") - _EPOCH).astype(np.int64)
    days = secs // _DAY
    weeks, dow = days // 7, days % 7
    hour = (secs - days * _DAY) / 3600.0
    today = np.where(dow < 5, np.clip(hour - DAY_START_H, 0.0, HOURS_PER_DAY), 0.0)
    return weeks * 5 * HOURS_PER_DAY + np.minimum(dow, 5) * HOURS_PER_DAY + today


def from_working_hours(w) -> np.ndarray:
    """The moment at which ``w`` working hours (as :func:`working_hours` counts them) are reached."""
    w = np.asarray(w, dtype=float)
    per_week = 5 * HOURS_PER_DAY
    # a limit that uses up a working day ends at 17:00 that day, not at 09:00 the next one
    weeks = np.floor(np.maximum(w - 1e-9, 0.0) / per_week)
    rest = w - weeks * per_week
    dow = np.clip(np.ceil(rest / HOURS_PER_DAY) - 1, 0, 4)
    hour = rest - dow * HOURS_PER_DAY
    secs = ((weeks * 7 + dow) * _DAY + (DAY_START_H + hour) * 3600.0).round().astype(np.int64)
    return _EPOCH + secs.astype("timedelta64[s]")


def add_working_hours(start, hours) -> np.ndarray:
    """``start`` plus ``hours`` of working time (a start outside working time counts from the next)."""
    start = np.asarray(start, dtype="datetime64[s]")
    return np.maximum(from_working_hours(working_hours(start) + np.asarray(hours, dtype=float)), start)


def working_hours_between(start, end) -> np.ndarray:
    """Working hours from ``start`` to ``end``."""
    return working_hours(end) - working_hours(start)
