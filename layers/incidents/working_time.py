"""Working time (工作时): the clock incident time limits run on.

Limits such as "exposed rubbish: 4 working hours" or "illegal structure: 20 working days" count
only working time. A :class:`WorkingCalendar` says what that is: the working periods of a day
(e.g. 09:00–17:00, or 08:30–12:00 and 14:00–17:30), the working weekdays, public holidays
(法定节假日) and make-up working days (调休上班, a Saturday or Sunday worked in exchange). A
working day is as long as its periods together; "N working days" is N such days.

Everything is vectorised over numpy ``datetime64`` arrays (a table of working days over the
dates involved, then cumulative sums and ``searchsorted``), so a year of incidents is timed at
once. The module functions use the plain calendar (Monday–Friday, 09:00–17:00, no holidays)
unless a calendar is given; the city's own comes from the ``working_calendar`` setting
(:meth:`WorkingCalendar.from_setting`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_DAY = 86400
_MONDAY = np.datetime64("1970-01-05", "D")


def _clock(text: str) -> float:
    hours, minutes = text.split(":")
    return int(hours) + int(minutes) / 60


def _days(values: Iterable) -> np.ndarray:
    return np.unique(np.asarray(list(values), dtype="datetime64[D]"))


@dataclass(frozen=True)
class WorkingCalendar:
    """Working periods of a day (hours from midnight, ascending, not overlapping), working
    weekdays (Monday = 0), public holidays and make-up working days."""

    periods: tuple[tuple[float, float], ...] = ((9.0, 17.0),)
    weekdays: frozenset[int] = frozenset(range(5))
    holidays: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))
    workdays: np.ndarray = field(default_factory=lambda: np.array([], dtype="datetime64[D]"))

    def __post_init__(self) -> None:
        last = 0.0
        for start, end in self.periods:
            if not (last <= start < end <= 24):
                raise ValueError(f"working periods must ascend within the day: {self.periods}")
            last = end
        if not self.weekdays and not len(self.workdays):
            raise ValueError("a calendar needs working weekdays")

    @classmethod
    def from_setting(cls, value: dict | None) -> WorkingCalendar:
        """The calendar of the ``working_calendar`` setting: ``{"hours": [["09:00", "17:00"]],
        "weekdays": [1, …, 5] (ISO: Monday = 1), "holidays": ["2026-10-01", …], "workdays": [...]}``."""
        value = value or {}
        try:
            periods = tuple((_clock(a), _clock(b)) for a, b in value.get("hours") or [["09:00", "17:00"]])
            weekdays = frozenset(int(d) - 1 for d in value.get("weekdays", [1, 2, 3, 4, 5]))
            return cls(
                periods, weekdays, _days(value.get("holidays") or []), _days(value.get("workdays") or [])
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"working_calendar setting cannot be read: {exc}") from None

    @property
    def hours_per_day(self) -> float:
        return float(sum(end - start for start, end in self.periods))

    # --- the table of working days --------------------------------------------------------

    def _table(self, first: np.datetime64, last: np.datetime64) -> tuple[np.datetime64, np.ndarray]:
        """Day 0 and the working days *before* each day from ``first`` to ``last`` (one longer)."""
        days = np.arange(first, last + np.timedelta64(1, "D"), dtype="datetime64[D]")
        weekday = (days - _MONDAY).astype(np.int64) % 7
        working = np.isin(weekday, list(self.weekdays)) & ~np.isin(days, self.holidays)
        working |= np.isin(days, self.workdays)
        return first, np.concatenate([[0], np.cumsum(working)])

    def _span(self, start: np.ndarray, hours: float) -> tuple[np.datetime64, np.datetime64]:
        first = start.min().astype("datetime64[D]") - np.timedelta64(1, "D")
        per_week = max(len(self.weekdays), 1) * self.hours_per_day
        weeks = int(np.ceil(max(hours, 0.0) / per_week)) + 1
        extra = len(self.holidays) + 7 * weeks + 7
        return first, start.max().astype("datetime64[D]") + np.timedelta64(extra, "D")

    def _within(self, seconds_of_day: np.ndarray) -> np.ndarray:
        hour = seconds_of_day / 3600.0
        return sum(np.clip(hour - a, 0.0, b - a) for a, b in self.periods)

    def _count(self, t: np.ndarray, day0: np.datetime64, before: np.ndarray) -> np.ndarray:
        day = t.astype("datetime64[D]")
        index = (day - day0).astype(np.int64)
        working_today = before[index + 1] - before[index]
        seconds = (t - day.astype("datetime64[s]")).astype(np.int64)
        return before[index] * self.hours_per_day + working_today * self._within(seconds)

    def _moment(self, w: np.ndarray, day0: np.datetime64, before: np.ndarray) -> np.ndarray:
        per_day = self.hours_per_day
        # a limit that uses up a working day ends at its close, not at the next day's start
        index = np.searchsorted(before[1:] * per_day, w - 1e-9, side="left")
        index = np.clip(index, 0, len(before) - 2)
        rest = w - before[index] * per_day
        lengths = np.array([b - a for a, b in self.periods])
        ends = np.cumsum(lengths)
        k = np.clip(np.searchsorted(ends, rest - 1e-9, side="left"), 0, len(lengths) - 1)
        starts = np.array([a for a, _ in self.periods])
        hour = starts[k] + rest - (ends[k] - lengths[k])
        secs = (hour * 3600.0).round().astype(np.int64)
        return (day0 + index.astype("timedelta64[D]")).astype("datetime64[s]") + secs.astype("timedelta64[s]")

    # --- public ------------------------------------------------------------------------------

    def add(self, start, hours) -> np.ndarray:
        """``start`` plus ``hours`` of working time (a start outside working time counts from
        the next working moment). NaT stays NaT."""
        start, hours = np.broadcast_arrays(
            np.asarray(start, dtype="datetime64[s]"), np.asarray(hours, dtype=float)
        )
        out = np.full(start.shape, np.datetime64("NaT"), dtype="datetime64[s]")
        ok = ~np.isnat(start) & np.isfinite(hours)
        if not ok.any():
            return out[()]
        s, h = start[ok], hours[ok]
        day0, before = self._table(*self._span(s, float(h.max())))
        moment = self._moment(self._count(s, day0, before) + h, day0, before)
        out[ok] = np.maximum(moment, s)
        return out[()]  # a scalar for a scalar start

    def between(self, start, end) -> np.ndarray:
        """Working hours from ``start`` to ``end`` (negative when ``end`` comes first; NaN
        where either is NaT)."""
        start = np.asarray(start, dtype="datetime64[s]")
        end = np.asarray(end, dtype="datetime64[s]")
        start, end = np.broadcast_arrays(start, end)
        out = np.full(start.shape, np.nan)
        ok = ~np.isnat(start) & ~np.isnat(end)
        if not ok.any():
            return out[()]
        s, e = start[ok], end[ok]
        both = np.concatenate([s, e])
        first = both.min().astype("datetime64[D]") - np.timedelta64(1, "D")
        day0, before = self._table(first, both.max().astype("datetime64[D]") + np.timedelta64(1, "D"))
        out[ok] = self._count(e, day0, before) - self._count(s, day0, before)
        return out[()]


PLAIN = WorkingCalendar()


def add_working_hours(start, hours, calendar: WorkingCalendar | None = None) -> np.ndarray:
    """``start`` plus ``hours`` of working time on ``calendar`` (default Monday–Friday 09–17)."""
    return (calendar or PLAIN).add(start, hours)


def working_hours_between(start, end, calendar: WorkingCalendar | None = None) -> np.ndarray:
    """Working hours from ``start`` to ``end`` on ``calendar`` (default Monday–Friday 09–17)."""
    return (calendar or PLAIN).between(start, end)
