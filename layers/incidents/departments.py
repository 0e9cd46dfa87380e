"""The departments (处置部门) cases are dispatched to, as the incident loop changes them: a
department added or changed keeps to the loop's categories; a new one without a code gets the
next free one. Lists and look-ups read :mod:`geodata.departments` directly."""

from __future__ import annotations

from sqlalchemy import Engine

from geodata import departments as rows
from layers.incidents.loop import categories


def save_department(engine: Engine, data: dict, *, actor: str) -> tuple[dict, bool]:
    """Add a department (``new`` true) or change the one with ``data["code"]``: ``{code, name,
    categories, contact, limits, default_for}``; a new one named without a code gets the next
    code. Answers the department as stored and whether it is new."""
    if isinstance(data, dict) and not data.get("code") and data.get("name"):
        data = {**data, "code": rows.next_code(engine)}
    return rows.save_department(engine, data, categories(engine), actor=actor)
