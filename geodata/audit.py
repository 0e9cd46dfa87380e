"""The audit log: who changed what, when — written by every change (imports, plans, accounts,
settings, exports), read here for the administrator's search, its CSV export and the layers
page's "last change and who".

>>> with engine.begin() as conn:
...     record(conn, "li", "user:create", layer="users", object_code="7", detail={"name": "wang"})
>>> rows, total = search(engine, AuditFilter(action="user", since=date(2026, 11, 1)))
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, func, insert, select

from geodata.errors import Refused
from geodata.models import AuditLog
from geodata.spreadsheet import cell

#: Actions that read rather than change: they never count as a layer's last change.
READ_ACTIONS = ("export",)
#: Adopting a plan rewrites communities and the community codes of these layers.
ADOPTION_TOUCHES = ("communities", "units", "facilities", "grid_cells")
CSV_COLUMNS = ("at", "actor", "action", "layer", "object_code", "detail")
MAX_PAGE = 500


def record(conn: Connection, actor: str, action: str, *, layer: str | None = None,
           object_code: str | None = None, detail: dict | None = None) -> None:
    """Write one audit row on the caller's transaction (so the change and its record stand or
    fall together)."""
    conn.execute(insert(AuditLog.__table__).values(
        at=datetime.now(), actor=actor[:50], action=action[:32], layer=layer,
        object_code=object_code[:24] if object_code else None, detail=detail))


def log(engine: Engine, actor: str, action: str, **what) -> None:
    """Write one audit row in a transaction of its own (for actions that change nothing else,
    such as an export)."""
    with engine.begin() as conn:
        record(conn, actor, action, **what)


@dataclass(frozen=True)
class AuditFilter:
    """What to look for: ``actor`` (part of the name), ``action`` (a prefix: ``import`` finds
    ``import:append``), ``layer`` (exact), ``since``/``until`` (days, both included)."""

    actor: str | None = None
    action: str | None = None
    layer: str | None = None
    since: date | None = None
    until: date | None = None

    @classmethod
    def parse(cls, args: dict) -> AuditFilter:
        """From query parameters (``actor action layer since until``); bad dates are refused."""
        dates = {}
        for key in ("since", "until"):
            text = (args.get(key) or "").strip()
            if text:
                try:
                    dates[key] = date.fromisoformat(text)
                except ValueError:
                    raise Refused(f"{key} {text!r} is not a date (YYYY-MM-DD)") from None
        if dates.get("since") and dates.get("until") and dates["since"] > dates["until"]:
            raise Refused("the date range ends before it starts")
        return cls(**{k: (args.get(k) or "").strip() or None for k in ("actor", "action", "layer")}, **dates)

    def query_string(self) -> dict[str, str]:
        """The filter as query parameters again (for paging and CSV links)."""
        return {k: str(v) for k, v in self.__dict__.items() if v}


def _where(stmt, f: AuditFilter):
    table = AuditLog.__table__
    if f.actor:
        stmt = stmt.where(table.c.actor.contains(f.actor, autoescape=True))
    if f.action:
        stmt = stmt.where(table.c.action.startswith(f.action, autoescape=True))
    if f.layer:
        stmt = stmt.where(table.c.layer == f.layer)
    if f.since:
        stmt = stmt.where(table.c.at >= datetime.combine(f.since, time.min))
    if f.until:
        stmt = stmt.where(table.c.at < datetime.combine(f.until + timedelta(days=1), time.min))
    return stmt


def _row(r) -> dict:
    return {"id": r.id, "at": r.at, "actor": r.actor, "action": r.action, "layer": r.layer,
            "object_code": r.object_code, "detail": r.detail}


def search(engine: Engine, f: AuditFilter, *, limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    """The matching rows, newest first (one page of them), and how many match in all."""
    table = AuditLog.__table__
    limit = max(1, min(int(limit), MAX_PAGE))
    with engine.connect() as conn:
        total = conn.execute(_where(select(func.count()).select_from(table), f)).scalar_one()
        rows = conn.execute(_where(select(table), f).order_by(table.c.at.desc(), table.c.id.desc())
                            .limit(limit).offset(max(0, int(offset)))).all()
    return [_row(r) for r in rows], total


def iter_rows(engine: Engine, f: AuditFilter) -> Iterator[dict]:
    """Every matching row, newest first, read a page at a time."""
    offset = 0
    while True:
        rows, _ = search(engine, f, limit=MAX_PAGE, offset=offset)
        yield from rows
        if len(rows) < MAX_PAGE:
            return
        offset += len(rows)


def csv_lines(rows: Iterable[dict]) -> Iterator[str]:
    """CSV text (a header, then one line a row) for Excel: the caller writes it as UTF-8 with a BOM."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield "\ufeff" + flush()
    for r in rows:
        row = [r["at"].isoformat(sep=" ", timespec="seconds"), r["actor"], r["action"], r["layer"] or "",
               r["object_code"] or "",
               json.dumps(r["detail"], ensure_ascii=False) if r["detail"] is not None else ""]
        writer.writerow([cell(v) for v in row])  # formulas neutralised (geodata/spreadsheet.py)
        yield flush()


def known_values(engine: Engine) -> dict[str, list[str]]:
    """The actors, actions and layers found in the log (for the search form's suggestions)."""
    table = AuditLog.__table__
    with engine.connect() as conn:
        return {key: sorted(v for v in conn.execute(select(table.c[key]).distinct()).scalars() if v)
                for key in ("actor", "action", "layer")}


def last_changes(engine: Engine, layers: Iterable[str]) -> dict[str, dict]:
    """For each layer, its latest change in the log (``at actor action``): imports and other
    writes to the layer, and plan adoptions for the layers an adoption rewrites."""
    table = AuditLog.__table__
    changes = table.c.action.notin_(READ_ACTIONS)
    out: dict[str, dict] = {}
    with engine.connect() as conn:
        adoption = conn.execute(select(table.c.at, table.c.actor, table.c.action, table.c.object_code)
                                .where(table.c.action == "plan:adopt")
                                .order_by(table.c.at.desc(), table.c.id.desc()).limit(1)).first()
        for layer in layers:
            row = conn.execute(select(table.c.at, table.c.actor, table.c.action, table.c.object_code)
                               .where(table.c.layer == layer, changes)
                               .order_by(table.c.at.desc(), table.c.id.desc()).limit(1)).first()
            if layer in ADOPTION_TOUCHES and adoption is not None and (row is None or adoption.at > row.at):
                row = adoption
            if row is not None:
                out[layer] = {"at": row.at, "actor": row.actor, "action": row.action,
                              "object_code": row.object_code}
    return out


__all__ = ["AuditFilter", "csv_lines", "iter_rows", "known_values", "last_changes", "log", "record", "search"]
