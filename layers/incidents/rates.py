"""Rates of the incident loop (考核指标) per cell, community, street or district over a period.

For a period ``since``–``until`` (both days included):

- ``reported`` (上报数), ``filed`` (立案数), ``closed`` (结案数): steps taken in the period;
- ``due`` (应结案数): cases whose deadline fell in the period (up to now);
- 结案率 ``closed_rate`` = those of them closed ÷ due; 按期结案率 ``on_time_rate`` = those closed by
  their deadline ÷ due;
- 返工率 ``rework_rate`` = returns ÷ verifications of the cases closed in the period (every
  verification either closes the case or returns it, so verifications = closed + returned);
- average working hours of each step taken in the period: filing (reported → filed), dispatch
  (filed → dispatched), handling (dispatched → handled), verification (handled → closed);
- ``supervised`` (督办数): cases dispatched in the period that were chased (督办) at least once.

Cases located only approximately are in no cell: they count in their community, street and
district. The sums come from the database (:func:`geodata.incident_rows.rate_sums`): for whole
days (every period this module makes) from the daily sums per cell the database keeps beside the
cases (``incident_days``), so a year of a district's million cases reads a few thousand rows; the
rates are divided here, vectorised.
"""

from __future__ import annotations

import io
from datetime import date, datetime, time, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from geodata import departments as depts
from geodata import incident_rows, place_rows
from geodata.errors import Refused
from geodata.i18n import N_, _
from geodata.models import District, Street
from geodata.spreadsheet import frame_cells
from geodata.standards import get_setting
from layers.grid.cells import cell_label
from layers.incidents.loop import OPEN

LEVELS = ("cell", "community", "street", "district")
STEPS = ("filing", "dispatch", "handling", "verify")
COLUMNS = [
    "code",
    "reported",
    "filed",
    "closed",
    "due",
    "due_closed",
    "due_closed_on_time",
    "returned",
    "supervised",
    "closed_rate",
    "on_time_rate",
    "rework_rate",
    *[f"{s}_hours" for s in STEPS],
]
#: names beside the codes: the row's own name, and the street it lies in (cells and communities)
NAME_COLUMNS = ["name", "street_name"]
LABELS = {
    "code": N_("code"),
    "name": N_("name"),
    "street_name": N_("street"),
    "reported": N_("cases reported"),
    "filed": N_("cases filed"),
    "closed": N_("cases closed"),
    "due": N_("cases due"),
    "due_closed": N_("due and closed"),
    "due_closed_on_time": N_("closed on time"),
    "returned": N_("returns for rework"),
    "supervised": N_("cases chased up"),
    "closed_rate": N_("closed rate"),
    "on_time_rate": N_("on-time rate"),
    "rework_rate": N_("rework rate"),
    "filing_hours": N_("filing h"),
    "dispatch_hours": N_("dispatch h"),
    "handling_hours": N_("handling h"),
    "verify_hours": N_("verification h"),
}


def period(since: str | date | None, until: str | date | None) -> tuple[datetime, datetime]:
    """The period's first and last moment from two dates (default: the year up to today)."""

    def parse(value, what):
        if value is None or value == "":
            return None
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise Refused(_("{what} must be a date YYYY-MM-DD, not {value}",
                            what=what, value=repr(value))) from None

    last = parse(until, "to") or date.today()
    first = parse(since, "from") or (last - timedelta(days=364))
    if first > last:
        raise Refused(_("from ({first}) comes after to ({last})", first=first, last=last))
    return datetime.combine(first, time.min), datetime.combine(last, time.max)


def _divide(top: pd.Series, bottom: pd.Series) -> pd.Series:
    top, bottom = top.astype(float), bottom.astype(float)
    return pd.Series(np.where(bottom > 0, top / bottom.where(bottom > 0, 1.0), np.nan), index=top.index)


def rates(
    engine: Engine,
    by: str,
    since: datetime,
    until: datetime,
    *,
    prefix: str | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per cell, community, street or district (``by``) with the sums and rates."""
    if by not in LEVELS:
        raise Refused(_("by must be one of {p1}", p1=', '.join(LEVELS)))
    sums = incident_rows.rate_sums(engine, by, since, until, now or datetime.now(), prefix)
    frame = pd.DataFrame(sums)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS + NAME_COLUMNS)
    chased = incident_rows.supervised_counts(engine, by, since, until, prefix)
    frame["supervised"] = frame["code"].map(lambda c: chased.get(c, {}).get("supervised", 0))
    return with_names(engine, by, finish(frame))


def with_names(engine: Engine, by: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the name of each row's cell, community, street or district beside its code
    (a cell: its community's name and its number in it), and the street's name below a street."""
    codes = [c for c in frame["code"].astype(str) if c]
    with engine.connect() as conn:
        streets = dict(conn.execute(select(Street.code, Street.name)).all())
        if by == "district":
            names = dict(conn.execute(select(District.code, District.name)).all())
        elif by == "street":
            names = streets
        else:
            communities = place_rows.community_names(conn, codes)
            if by == "community":
                names = communities
            else:
                names = _cell_names(conn, codes, communities)
    frame = frame.copy()
    frame["name"] = [names.get(str(c)) for c in frame["code"]]
    frame["street_name"] = [streets.get(str(c)[:9]) if by in ("cell", "community") else None
                            for c in frame["code"]]
    return frame


def _cell_names(conn, codes: list[str], communities: dict[str, str]) -> dict[str, str]:
    """How a person reads each stored cell of ``codes``: its community's name and its number."""
    return {code: cell_label(code, communities.get(community, community))
            for code, community in incident_rows.cells_of(conn, codes).items()}


def cell_names(engine: Engine, codes) -> dict[str, str]:
    """How a person reads each grid cell of ``codes``: its community's name and its number in it
    ("精武社区 第 6 网格"), the way the rates name cells; unknown codes are left out."""
    codes = sorted({str(c) for c in codes if c})
    if not codes:
        return {}
    with engine.connect() as conn:
        return _cell_names(conn, codes, place_rows.community_names(conn, codes))


def place_name(engine: Engine, code: str | None) -> str | None:
    """The name of the district, street, community or grid cell ``code`` (6, 9, 12 or 15
    digits), as a person reads it; None when unknown."""
    if not code:
        return None
    if len(code) == 15:
        return cell_names(engine, [code]).get(code)
    if len(code) == 12:
        with engine.connect() as conn:
            return place_rows.community_name(conn, code)
    table = {6: District, 9: Street}.get(len(code))
    if table is None:
        return None
    with engine.connect() as conn:
        return conn.execute(select(table.name).where(table.code == code)).scalar()


def finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Rates and averages from the sums (also for a totals row)."""
    counts = ["reported", "filed", "closed", "due", "due_closed", "due_closed_on_time", "returned",
              "supervised"]
    frame = frame.copy()
    if "supervised" not in frame:
        frame["supervised"] = 0
    frame[counts] = frame[counts].fillna(0).astype("int64")
    frame["closed_rate"] = _divide(frame["due_closed"], frame["due"])
    frame["on_time_rate"] = _divide(frame["due_closed_on_time"], frame["due"])
    frame["rework_rate"] = _divide(frame["returned"], frame["closed"] + frame["returned"])
    for step in STEPS:
        frame[f"{step}_hours"] = _divide(frame[f"{step}_sum"].fillna(0), frame[f"{step}_n"].fillna(0))
    return frame[COLUMNS + [c for c in frame.columns if c.endswith(("_sum", "_n"))]]


def total(frame: pd.DataFrame) -> pd.DataFrame:
    """The sum of the rows, with its own rates."""
    dropped = [c for c in COLUMNS if c.endswith(("_rate", "_hours"))] + ["code"]
    sums = frame.drop(columns=dropped + [c for c in NAME_COLUMNS if c in frame.columns]).sum()
    summed = finish(pd.DataFrame([{"code": "total", **sums.to_dict()}]))
    summed["name"] = _("Total")
    summed["street_name"] = None
    return summed


def targets(engine: Engine) -> dict:
    """The targets of 结案率 and 按期结案率 (setting ``rate_targets``)."""
    with engine.connect() as conn:
        value = get_setting(conn, "rate_targets")
    return {
        "closed_rate": float(value.get("closed", 0.9)),
        "on_time_rate": float(value.get("closed_on_time", 0.7)),
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    columns = COLUMNS + [c for c in NAME_COLUMNS if c in frame.columns]
    return _plain_records(frame[columns])


def _plain_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON takes them: missing values None, numbers plain, rates to 4 places."""
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for row in out:
        for key, value in row.items():
            if isinstance(value, float):
                row[key] = round(value, 4)
            elif isinstance(value, np.integer):
                row[key] = int(value)
    return out


def as_json(frame: pd.DataFrame, by: str, since: datetime, until: datetime, goal: dict) -> dict:
    """The table as one JSON-ready object, rows below a target named."""
    rows = _records(frame)
    for row in rows:
        row["below_target"] = [k for k, v in goal.items() if row[k] is not None and row[k] < v]
    summary = _records(total(frame))[0] if len(frame) else None
    return {
        "by": by,
        "from": since.date().isoformat(),
        "to": until.date().isoformat(),
        "targets": goal,
        "rows": rows,
        "total": summary,
        "labels": labels(),
    }


def labels() -> dict[str, str]:
    """The columns' names in the reader's language (Chinese unless asked otherwise)."""
    return {k: _(v) for k, v in LABELS.items()}


def to_csv(frame: pd.DataFrame) -> str:
    """The table as CSV (UTF-8 with a byte-order mark, for Excel), with headers in the reader's
    language."""
    out = io.StringIO()
    out.write("\ufeff")
    table = pd.concat([frame, total(frame)]) if len(frame) else frame
    table = table.assign(code=table["code"].where(table["code"] != "total", ""))  # the total is named
    columns = ["code", *[c for c in NAME_COLUMNS if c in table.columns], *COLUMNS[1:]]
    frame_cells(table[columns]).rename(columns=labels()).to_csv(out, index=False, float_format="%.4f")
    return out.getvalue()


def monthly(
    engine: Engine,
    since: datetime,
    until: datetime,
    *,
    prefix: str | None = None,
    now: datetime | None = None,
) -> list[dict]:
    """The district-wide rates month by month over the period (for the chart).

    A period of whole days (as :func:`period` gives) is summed per month in a few grouped
    queries (:func:`geodata.incident_rows.monthly_rate_sums`); any other period month by month."""
    grouped = incident_rows.monthly_rate_sums(engine, since, until, now or datetime.now(), prefix)
    if grouped is not None:
        frame = finish(pd.DataFrame([{"code": m.strftime("%Y-%m"), **row} for m, row in grouped.items()]))
        return [{**row, "name": None, "street_name": None} for row in _records(frame)]
    out = []
    start = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while start <= until:
        nxt = (start + timedelta(days=32)).replace(day=1)
        first, last = max(start, since), min(nxt - timedelta(microseconds=1), until)
        frame = rates(engine, "district", first, last, prefix=prefix, now=now)
        row = _records(total(frame))[0] if len(frame) else {c: None for c in COLUMNS}
        out.append({**row, "code": start.strftime("%Y-%m"), "name": None, "street_name": None})
        start = nxt
    return out


# --- by department (处置部门) -------------------------------------------------------------------

#: the columns of the rates by department: cases dispatched to it in the period, of those still
#: its own handled, handled by the deadline and overdue, cases it sent back (退回), 督办 given
DEPARTMENT_COLUMNS = ["code", "name", "dispatched", "handled", "handled_on_time", "overdue", "returned",
                      "supervised", "on_time_rate"]
DEPARTMENT_LABELS = {
    "code": N_("code"),
    "name": N_("department"),
    "dispatched": N_("cases dispatched"),
    "handled": N_("cases handled"),
    "handled_on_time": N_("handled on time"),
    "overdue": N_("overdue"),
    "returned": N_("sent back"),
    "supervised": N_("times chased up"),
    "on_time_rate": N_("on-time handling rate"),
}


def department_rates(
    engine: Engine, since: datetime, until: datetime, *, prefix: str | None = None,
    now: datetime | None = None, open_statuses: tuple[str, ...] = OPEN,
) -> pd.DataFrame:
    """One row per department (every department, by code, its name beside it; a code no longer
    in the list after them) with the counts of :func:`geodata.incident_rows.department_sums`
    and the on-time rate (handled on time ÷ those handled or overdue: the cases whose time with it
    has been judged)."""
    sums = incident_rows.department_sums(engine, since, until, now or datetime.now(), open_statuses, prefix)
    named = {d["code"]: d["name"] for d in depts.list_departments(engine)}
    codes = list(named) + sorted(c for c in sums if c not in named)
    empty = dict.fromkeys(DEPARTMENT_COLUMNS[2:-1], 0)
    frame = pd.DataFrame([{"code": c, "name": named.get(c), **empty, **sums.get(c, {})} for c in codes],
                         columns=[c for c in DEPARTMENT_COLUMNS if c != "on_time_rate"])
    if frame.empty:
        return pd.DataFrame(columns=DEPARTMENT_COLUMNS)
    frame["on_time_rate"] = _divide(frame["handled_on_time"], frame["handled_on_time"] + frame["overdue"])
    return frame[DEPARTMENT_COLUMNS]


def _department_total(frame: pd.DataFrame) -> dict:
    sums = {c: int(frame[c].sum()) for c in DEPARTMENT_COLUMNS if c not in ("code", "name", "on_time_rate")}
    bottom = sums["handled_on_time"] + sums["overdue"]
    return {"code": None, "name": _("Total"), **sums,
            "on_time_rate": round(sums["handled_on_time"] / bottom, 4) if bottom else None}



def department_json(frame: pd.DataFrame, since: datetime, until: datetime, goal: dict) -> dict:
    """The rates by department as one JSON-ready object (rows below the on-time target named)."""
    rows = _plain_records(frame)
    for row in rows:
        rate = row.get("on_time_rate")
        row["below_target"] = ["on_time_rate"] if rate is not None and rate < goal["on_time_rate"] else []
    return {
        "by": "department",
        "from": since.date().isoformat(),
        "to": until.date().isoformat(),
        "targets": goal,
        "rows": rows,
        "total": _department_total(frame) if len(frame) else None,
        "labels": {k: _(v) for k, v in DEPARTMENT_LABELS.items()},
    }


def department_csv(frame: pd.DataFrame) -> str:
    """The rates by department as CSV (UTF-8 with a byte-order mark), headers in the reader's
    language, the total last."""
    out = io.StringIO()
    out.write("\ufeff")
    table = frame
    if len(frame):
        last = pd.DataFrame([{**_department_total(frame), "code": ""}])
        table = pd.concat([frame, last], ignore_index=True)
    labels = {k: _(v) for k, v in DEPARTMENT_LABELS.items()}
    frame_cells(table[DEPARTMENT_COLUMNS]).rename(columns=labels).to_csv(out, index=False,
                                                                        float_format="%.4f")
    return out.getvalue()
