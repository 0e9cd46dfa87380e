"""Reading and changing the ``settings`` table: per-city numbers and standards, each with its
description and source (household bounds, facility reach, incident categories and limits, the
working calendar, the base map …).

A change must keep the value's shape — a number stays a number (a whole number stays whole, a
number that was not negative stays so), text stays text, a pair of bounds stays a pair with
min ≤ max, a record keeps its fields, a table's entries keep the shape of the others (new
entries may be added; only entries a city added itself may be removed, since stored data and
code refer to the standard ones), dates stay dates — and ``X_min`` ≤ ``X_max`` across rows.
Every change is recorded in the audit log with the value before and after.
"""

from __future__ import annotations

import math
import re
from datetime import date

from sqlalchemy import Connection, Engine, select, update

from geodata.audit import record
from geodata.errors import NotFound, Refused
from geodata.i18n import _
from geodata.models import Setting
from geodata.standards import DEFAULT_SETTINGS

#: Settings whose value is one of a few names.
CHOICES: dict[str, tuple[str, ...]] = {
    "basemap": ("none", "osm", "tianditu", "gaode", "local"),
}
#: Defaults of settings that have no row (databases made before the row was added).
FALLBACKS: dict[str, object] = {"basemap": "none", "session_hours": 8}
SOURCE_LENGTH = 2000

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def list_settings(engine: Engine) -> list[dict]:
    """Every row (``key value description source``), by key."""
    table = Setting.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.key)).all()
    return [{"key": r.key, "value": r.value, "description": r.description, "source": r.source} for r in rows]


def get_value(engine: Engine | Connection, key: str, default=None):
    """The stored value of ``key``; ``default`` (or the known fallback) when there is no row."""
    stmt = select(Setting.value).where(Setting.key == key)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            value = conn.execute(stmt).scalar_one_or_none()
    else:
        value = engine.execute(stmt).scalar_one_or_none()
    return FALLBACKS.get(key, default) if value is None else value


# --- shapes -------------------------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _signature(v) -> str:
    """A value's shape, to tell a table (entries alike) from a record (fields of their own)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "text"
    if isinstance(v, list):
        return "list[" + (_signature(v[0]) if v else "") + "]"
    return "{" + ",".join(f"{k}:{_signature(x)}" for k, x in sorted(v.items())) + "}"


def is_table(v: dict) -> bool:
    """Whether a mapping is a table (entries shaped alike: categories, reach by kind) rather
    than a record (fields of different shapes)."""
    values = list(v.values())
    if not values:
        return False
    if len(values) == 1:
        return isinstance(values[0], dict)
    return len({_signature(x) for x in values}) == 1


def _is_pair(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)


def _check(old, new, where: str, problems: list[str], fixed_keys=None):
    """Problems of ``new`` against the shape of ``old``; returns ``new`` normalised (whole
    numbers as int)."""
    if old is None:
        if new is None or isinstance(new, str | bool) or _is_number(new):
            return _check_number(new, where, problems) if _is_number(new) else new
        problems.append(f"{where}: expected a single value, not a list or table")
        return new
    if new is None:
        problems.append(f"{where}: a value is required")
        return new
    if isinstance(old, bool):
        if not isinstance(new, bool):
            problems.append(f"{where}: expected yes/no (true or false), got {new!r}")
        return new
    if _is_number(old):
        if not _is_number(new):
            problems.append(f"{where}: expected a number, got {_describe(new)}")
            return new
        new = _check_number(new, where, problems)
        if isinstance(old, float):
            return float(new)  # 8 typed where 8.0 was stays a float: a later 8.5 is still welcome
        if isinstance(new, float) and new.is_integer():
            new = int(new)
        if isinstance(new, float):
            problems.append(f"{where}: expected a whole number, got {new}")
        if old >= 0 and new < 0:
            problems.append(f"{where}: cannot be negative ({new})")
        return new
    if isinstance(old, str):
        if not isinstance(new, str):
            problems.append(f"{where}: expected text, got {_describe(new)}")
            return new
        if old.strip() and not new.strip():
            problems.append(f"{where}: cannot be empty")
        elif _DATE.match(old) and not _is_date(new):
            problems.append(f"{where}: {new!r} is not a date (YYYY-MM-DD)")
        elif _CLOCK.match(old) and not _CLOCK.match(new):
            problems.append(f"{where}: {new!r} is not a time of day (HH:MM)")
        return new
    if isinstance(old, list):
        if not isinstance(new, list):
            problems.append(f"{where}: expected a list, got {_describe(new)}")
            return new
        if _is_pair(old):
            if len(new) != 2:
                problems.append(f"{where}: expected two numbers (min, max), got {len(new)} values")
                return new
            new = [_check(old[i], new[i], f"{where}[{i + 1}]", problems) for i in range(2)]
            if _is_pair(new) and old[0] <= old[1] and new[0] > new[1]:
                problems.append(f"{where}: the minimum {new[0]} is above the maximum {new[1]}")
            return new
        template = old[0] if old else None
        return [_check(template, item, f"{where}[{i + 1}]", problems) for i, item in enumerate(new)]
    if isinstance(old, dict):
        if not isinstance(new, dict):
            problems.append(f"{where}: expected a table of named values, got {_describe(new)}")
            return new
        if is_table(old):
            return _check_table(old, new, where, problems, fixed_keys)
        missing = [k for k in old if k not in new]
        extra = [k for k in new if k not in old]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
        if extra:
            problems.append(f"{where}: unknown {', '.join(map(str, extra))} (fields: {', '.join(old)})")
        out = {k: _check(old[k], new[k], f"{where}.{k}", problems) for k in old if k in new}
        _check_min_max(out, where, problems)
        return out
    problems.append(f"{where}: cannot be changed here")
    return new


def _check_table(old: dict, new: dict, where: str, problems: list[str], fixed_keys) -> dict:
    template = next(iter(old.values()))
    if not new:
        problems.append(f"{where}: the table cannot be empty")
    removed = [k for k in old if k not in new and (fixed_keys is None or k in fixed_keys)]
    if removed:
        problems.append(f"{where}: standard entries cannot be removed ({', '.join(removed)}): stored "
                        "data and the application refer to them")
    out = {}
    for key, value in new.items():
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            problems.append(f"{where}: entry name {key!r} is empty or has spaces at either end")
            continue
        out[key] = _check(old.get(key, template), value, f"{where}.{key}", problems)
    _check_min_max(out, where, problems)
    return out


def _check_min_max(values: dict, where: str, problems: list[str]) -> None:
    for low, high in _bound_pairs(values):
        if _is_number(values[low]) and _is_number(values[high]) and values[low] > values[high]:
            problems.append(f"{where}: {low} {values[low]} is above {high} {values[high]}")


def _bound_pairs(keys) -> list[tuple[str, str]]:
    pairs = [("min", "max"), ("minimum", "maximum")]
    pairs += [(k, k[:-4] + "_max") for k in keys if isinstance(k, str) and k.endswith("_min")]
    return [(a, b) for a, b in pairs if a in keys and b in keys]


def _check_number(v, where: str, problems: list[str]):
    if not math.isfinite(v):
        problems.append(f"{where}: {v} is not a number")
    return v


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
        return bool(_DATE.match(text))
    except ValueError:
        return False


def _describe(v) -> str:
    return {dict: "a table", list: "a list", str: "text", bool: "yes/no"}.get(type(v), repr(v)) \
        if not _is_number(v) else f"the number {v}"


def _difference(before, after) -> dict:
    """What changed, for the audit log: the changed entries of a table or record, else both."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
        return {"before": {k: before[k] for k in keys if k in before},
                "after": {k: after[k] for k in keys if k in after}}
    return {"before": before, "after": after}


#: The range each numeric setting may take (every number of it, or per field of its records
#: and tables): a value outside is a typing error that would break what reads it (a photo limit
#: of 1e308 MB made every upload fail). Settings not named here are only held to finite numbers.
RANGES: dict[str, tuple[float, float] | dict[str, tuple[float, float]]] = {
    "households_min": (1, 100_000),
    "households_max": (1, 100_000),
    "grid_households": (1, 100_000),
    "grid_area_m2": (100, 10_000_000),
    "community_floor_area_m2": (0, 1_000_000),
    "service_area_per_100_households_m2": (0, 100_000),
    "people_per_household": (0.5, 20),
    "facility_reach_m": (1, 50_000),
    "facility_standards": {"reach_m": (1, 50_000), "min_floor_area_m2": (0, 1_000_000),
                           "floor_area_per_100_households_m2": (0, 100_000),
                           "households_per_facility": (0, 10_000_000)},
    "incident_categories": {"limit_hours": (0.1, 8760), "limit_days": (0.1, 365)},
    "rate_targets": (0, 1),
    "working_calendar": {"weekdays": (1, 7)},
    "duplicate_distance_m": (0, 10_000),
    "photo_max_mb": (1, 50),
    "supervise_rule": (0.1, 100),
    "session_hours": (1, 744),  # a session of 0 hours would sign everyone out
    "unit_households_max": (1, 2**31 - 1),
    "unit_population_max": (1, 2**31 - 1),
    "import_region": {"lon_min": (-180, 180), "lon_max": (-180, 180),
                      "lat_min": (-90, 90), "lat_max": (-90, 90)},
}


def _out_of_range(key: str, value, where: str, field: str | None, problems: list[str]) -> None:
    """Each number of ``value`` checked against :data:`RANGES` for ``key`` (and the field it
    stands in, for records and tables)."""
    if isinstance(value, dict):
        for name, item in value.items():
            _out_of_range(key, item, f"{where}.{name}", name, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _out_of_range(key, item, f"{where}[{i + 1}]", field, problems)
    elif _is_number(value) and math.isfinite(value):
        limits = RANGES.get(key)
        if isinstance(limits, dict):
            limits = limits.get(field or "")
        if limits is not None and not limits[0] <= value <= limits[1]:
            problems.append(_("{where}: {value} is outside the range {low}–{high}", where=where,
                              value=_readable(value), low=_readable(limits[0]), high=_readable(limits[1])))


def _readable(number: float) -> str:
    """A number as a person reads it: 2,147,483,647 and 0.5, not 2.14748e+09; an absurd one
    (1e308) short rather than in 309 digits."""
    if abs(number) >= 1e15:
        return format(float(number), "g")
    if float(number).is_integer():
        return format(int(number), ",")
    return format(number, ",.6g")


def check_value(key: str, old, new):
    """``new`` normalised, or :class:`Refused` naming every way it breaks ``old``'s shape or
    the setting's range (:data:`RANGES`)."""
    problems: list[str] = []
    defaults = next((row["value"] for row in DEFAULT_SETTINGS if row["key"] == key), None)
    value = _check(old, new, key, problems, set(defaults) if isinstance(defaults, dict) else None)
    if key in CHOICES and value not in CHOICES[key]:
        problems.append(f"{key}: {value!r} is not one of {', '.join(CHOICES[key])}")
    _out_of_range(key, value, key, None, problems)
    if problems:
        raise Refused("; ".join(problems), problems=problems)
    return value


def save_setting(engine: Engine, key: str, value, *, actor: str, source: str | None = None) -> dict:
    """Change setting ``key`` (and its source, when given) after checking the value keeps its
    shape; ``X_min`` must stay ≤ ``X_max``. Recorded in the audit log."""
    table = Setting.__table__
    if source is not None and (not isinstance(source, str) or len(source) > SOURCE_LENGTH):
        raise Refused(_("source is text of at most {SOURCE_LENGTH} characters", SOURCE_LENGTH=SOURCE_LENGTH))
    with engine.begin() as conn:
        row = conn.execute(select(table).where(table.c.key == key)).one_or_none()
        if row is None:
            raise NotFound(_("no setting {key}", key=repr(key)))
        value = check_value(key, row.value, value)
        partner = key[:-4] + ("_max" if key.endswith("_min") else "_min") if key.endswith(("_min", "_max")) \
            else None
        if partner is not None and _is_number(value):
            other = conn.execute(select(table.c.value).where(table.c.key == partner)).scalar_one_or_none()
            if _is_number(other):
                low, high = (value, other) if key.endswith("_min") else (other, value)
                if low > high:
                    raise Refused(_("{key}: the minimum {low} would be above the maximum {high} ({partner} "
                                    "is {other})", key=key, low=low, high=high, partner=partner, other=other))
        changes = {"value": value}
        if source is not None and source.strip() != (row.source or ""):
            changes["source"] = source.strip() or None
        if value == row.value and "source" not in changes:
            return {"key": key, "value": row.value, "description": row.description, "source": row.source}
        conn.execute(update(table).where(table.c.key == key).values(**changes))
        detail = {"key": key, **_difference(row.value, value)}
        if "source" in changes:
            detail["source"] = changes["source"]
        record(conn, actor, "setting:update", layer="settings", object_code=key, detail=detail)
        return {"key": key, "value": value, "description": row.description,
                "source": changes.get("source", row.source)}


__all__ = ["CHOICES", "check_value", "get_value", "is_table", "list_settings", "save_setting"]
