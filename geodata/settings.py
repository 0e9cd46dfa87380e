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
from geodata.i18n import N_, _
from geodata.models import Setting
from geodata.standards import DEFAULT_SETTINGS, FACILITY_KIND_LABELS

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
        problems.append(_("{where}: expected a single value, not a list or table", where=where))
        return new
    if new is None:
        problems.append(_("{where}: a value is required", where=where))
        return new
    if isinstance(old, bool):
        if not isinstance(new, bool):
            problems.append(_("{where}: expected yes/no (true or false), got {value}",
                              where=where, value=repr(new)))
        return new
    if _is_number(old):
        if not _is_number(new):
            problems.append(_("{where}: expected a number, got {what}", where=where, what=_describe(new)))
            return new
        new = _check_number(new, where, problems)
        if isinstance(old, float):
            return float(new)  # 8 typed where 8.0 was stays a float: a later 8.5 is still welcome
        if isinstance(new, float) and new.is_integer():
            new = int(new)
        if isinstance(new, float):
            problems.append(_("{where}: expected a whole number, got {value}", where=where, value=new))
        if old >= 0 and new < 0:
            problems.append(_("{where}: cannot be negative ({value})", where=where, value=new))
        return new
    if isinstance(old, str):
        if not isinstance(new, str):
            problems.append(_("{where}: expected text, got {what}", where=where, what=_describe(new)))
            return new
        if old.strip() and not new.strip():
            problems.append(_("{where}: cannot be empty", where=where))
        elif _DATE.match(old) and not _is_date(new):
            problems.append(_("{where}: {value} is not a date (YYYY-MM-DD)", where=where, value=repr(new)))
        elif _CLOCK.match(old) and not _CLOCK.match(new):
            problems.append(_("{where}: {value} is not a time of day (HH:MM)", where=where, value=repr(new)))
        return new
    if isinstance(old, list):
        if not isinstance(new, list):
            problems.append(_("{where}: expected a list, got {what}", where=where, what=_describe(new)))
            return new
        if _is_pair(old):
            if len(new) != 2:
                problems.append(_("{where}: expected two numbers (min, max), got {n} values",
                                  where=where, n=len(new)))
                return new
            new = [_check(old[i], new[i], f"{where} {i + 1}", problems) for i in range(2)]
            if _is_pair(new) and old[0] <= old[1] and new[0] > new[1]:
                problems.append(_("{where}: the minimum {low} is above the maximum {high}",
                                  where=where, low=new[0], high=new[1]))
            return new
        template = old[0] if old else None
        return [_check(template, item, f"{where} {i + 1}", problems) for i, item in enumerate(new)]
    if isinstance(old, dict):
        if not isinstance(new, dict):
            problems.append(_("{where}: expected a table of named values, got {what}",
                              where=where, what=_describe(new)))
            return new
        if is_table(old):
            return _check_table(old, new, where, problems, fixed_keys)
        missing = [k for k in old if k not in new]
        extra = [k for k in new if k not in old]
        if missing:
            problems.append(_("{where}: missing {fields}",
                              where=where, fields=", ".join(_part(k) for k in missing)))
        if extra:
            problems.append(_("{where}: unknown {extra} (fields: {fields})",
                              where=where, extra=", ".join(map(str, extra)),
                              fields=", ".join(_part(k) for k in old)))
        out = {k: _check(old[k], new[k], f"{where} · {_part(k)}", problems) for k in old if k in new}
        _check_min_max(out, where, problems)
        return out
    problems.append(_("{where}: cannot be changed here", where=where))
    return new


def _check_table(old: dict, new: dict, where: str, problems: list[str], fixed_keys) -> dict:
    template = next(iter(old.values()))
    if not new:
        problems.append(_("{where}: the table cannot be empty", where=where))
    removed = [k for k in old if k not in new and (fixed_keys is None or k in fixed_keys)]
    if removed:
        problems.append(_("{where}: standard entries cannot be removed ({entries}): stored data and the "
                          "application refer to them", where=where,
                          entries=", ".join(_part(k) for k in removed)))
    out = {}
    for key, value in new.items():
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            problems.append(_("{where}: entry name {key} is empty or has spaces at either end",
                              where=where, key=repr(key)))
            continue
        out[key] = _check(old.get(key, template), value, f"{where} · {_part(key)}", problems)
    _check_min_max(out, where, problems)
    return out


def _check_min_max(values: dict, where: str, problems: list[str]) -> None:
    for low, high in _bound_pairs(values):
        if _is_number(values[low]) and _is_number(values[high]) and values[low] > values[high]:
            problems.append(_("{where}: {low} {low_value} is above {high} {high_value}",
                              where=where, low=_part(low), low_value=values[low], high=_part(high),
                              high_value=values[high]))


def _bound_pairs(keys) -> list[tuple[str, str]]:
    pairs = [("min", "max"), ("minimum", "maximum")]
    pairs += [(k, k[:-4] + "_max") for k in keys if isinstance(k, str) and k.endswith("_min")]
    return [(a, b) for a, b in pairs if a in keys and b in keys]


def _check_number(v, where: str, problems: list[str]):
    if not math.isfinite(v):
        problems.append(_("{where}: {value} is not a number", where=where, value=v))
    return v


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
        return bool(_DATE.match(text))
    except ValueError:
        return False


def _describe(v) -> str:
    if _is_number(v):
        return _("the number {value}", value=v)
    words = {dict: N_("a table"), list: N_("a list"), str: N_("text"), bool: N_("yes/no")}.get(type(v))
    return _(words) if words else repr(v)


def _part(key) -> str:
    """A field or entry of a setting as people name it (a code such as E06-02 as it is)."""
    key = str(key)
    if key in FIELD_LABELS:
        return _(FIELD_LABELS[key])
    return _(VALUE_LABELS[key]) if key in VALUE_LABELS else key


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
            _out_of_range(key, item, f"{where} · {_part(name)}", name, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _out_of_range(key, item, f"{where} {i + 1}", field, problems)
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
    where = setting_label(key)  # the setting by its name, its fields and entries by theirs
    value = _check(old, new, where, problems, set(defaults) if isinstance(defaults, dict) else None)
    if key in CHOICES and value not in CHOICES[key]:
        problems.append(_("{where}: {value} is not one of {choices}",
                          where=setting_label(key), value=repr(value), choices=", ".join(CHOICES[key])))
    _out_of_range(key, value, where, None, problems)
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
                                    "is {other})", key=setting_label(key), low=low, high=high,
                                    partner=setting_label(partner), other=other))
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


# --- what the settings page says about each setting ---------------------------------------------

#: Each setting as the administrator reads it: its name, what it decides, and the unit of its
#: numbers (translated where shown; the stored ``description`` is the fallback for a key not here).
SETTING_TEXTS: dict[str, tuple[str, str, str]] = {
    "basemap": (N_("Base map"), N_("The map drawn under every layer; on an intranet without internet "
                                   "access choose no base map or local tiles"), ""),
    "households_min": (N_("Fewest households per community"),
                       N_("A community with fewer households is outside the bounds"), N_("households")),
    "households_max": (N_("Most households per community"),
                       N_("A community with more households is outside the bounds"), N_("households")),
    "grid_households": (N_("Households per grid cell"),
                        N_("The social-governance grid: households one grid supervisor looks after"),
                        N_("households")),
    "grid_area_m2": (N_("Area of a unit grid cell"), N_("The urban-management unit grid's cell area"), "m²"),
    "community_floor_area_m2": (N_("Community rooms: least floor area"),
                                N_("Office and activity rooms every community needs at least"), "m²"),
    "service_area_per_100_households_m2": (N_("Service space per 100 households"),
                                           N_("Community service floor area for every 100 households"), "m²"),
    "people_per_household": (N_("People per household"),
                             N_("Average size of a family household, to estimate residents"), N_("people")),
    "facility_reach_m": (N_("Walking reach of each facility kind"),
                         N_("How far residents walk to each kind of facility (5-minute ≈ 300 m, 10-minute "
                            "≈ 500 m, 15-minute 800–1,000 m)"), N_("metres")),
    "facility_standards": (N_("Facility standards"),
                           N_("Per facility kind and life-circle level: walking reach, whether every "
                              "community needs one, floor areas and households per facility (0 = no "
                              "standard), each row with its source"), ""),
    "incident_categories": (N_("Incident categories"),
                            N_("Each category of case with its kind and its time limit in working hours"),
                            N_("working hours")),
    "rate_targets": (N_("Rate targets"), N_("The closure rate and on-time closure rate each street aims for"),
                     N_("share (0–1)")),
    "working_calendar": (N_("Working calendar"),
                         N_("Time limits of cases run on working hours: the hours of a working day, the "
                            "working weekdays, public holidays and make-up working days"), ""),
    "duplicate_distance_m": (N_("Likely duplicate within"),
                             N_("A report this close to an open case of the same category is offered as a "
                                "likely duplicate"), N_("metres")),
    "photo_max_mb": (N_("Largest photo of a case"),
                     N_("The largest photo accepted with a case; JPEG, PNG or WebP"), "MB"),
    "incident_separation": (N_("Separation of duties"),
                            N_("Grid supervisors report and verify, and the one who verifies a case is never "
                               "the one who handled it; the command centre files, cancels and dispatches "
                               "cases (a grid supervisor or grid leader may not); off, one person may take "
                               "every step (a small town's office)"), ""),
    "supervise_rule": (N_("Chasing up"),
                       N_("A case may be chased up once this share of its time limit has run; it is a "
                          "yellow warning at its limit and a red one at this many times its limit"),
                       N_("share of the time limit")),
    "incident_after_photo": (N_("After-photo required"),
                             N_("Categories whose handling must come with a photo of the result"), ""),
    "session_hours": (N_("Sign-in lasts"),
                      N_("Hours after which a user signs in again, whatever they did in between "
                         "(the server's configuration may set it instead)"), N_("hours")),
    "unit_households_max": (N_("Import check: most households per unit"),
                            N_("An imported planning unit or building with more households is refused as "
                               "a typing or unit error"), N_("households")),
    "unit_population_max": (N_("Import check: most people per unit"),
                            N_("An imported planning unit or building with more people is refused"),
                            N_("people")),
    "import_region": (N_("Import check: where features may lie"),
                      N_("Longitude and latitude an imported file must lie within: outside it, or at 0°, "
                         "0°, it was read in the wrong coordinate system and is refused"), N_("degrees")),
}

#: The default sources as read in the interface's language: shown while the stored source is
#: still the default (a source the city wrote is shown as written).
DEFAULT_SOURCES: dict[str, str] = {
    "basemap": N_("administrator's choice; none until one is chosen, so no page waits for tiles that cannot "
                  "load"),
    "households_min": N_("Linyi document Linfa [2001] No. 26 (1,000–3,000 households); the Organic Law of "
                         "Urban Residents' Committees, article 6, says 100–700"),
    "households_max": N_("Linyi document Linfa [2001] No. 26; Wuhai's 67 urban communities hold about "
                         "3,000 households each"),
    "grid_households": N_("commonly quoted range; not a national number"),
    "grid_area_m2": N_("Beijing Dongcheng 2004 (1,652 cells of about 10,000 m²)"),
    "community_floor_area_m2": N_("Inner Mongolia standard (Wuhai average 1,010 m², largest 6,400 m²)"),
    "service_area_per_100_households_m2": N_("NDRC 2022"),
    "people_per_household": N_("2020 census, China"),
    "facility_reach_m": N_("GB 50180-2018 life circles"),
    "facility_standards": N_("GB 50180-2018; Inner Mongolia (300 m²); NDRC 2022 (30 m² per 100 households)"),
    "incident_categories": N_("GB/T 30428, CJ/T 214 (limits vary by city; these are examples)"),
    "rate_targets": N_("common city targets"),
    "working_calendar": N_("State Council holiday notices for 2025 and 2026; a city adds each year's notice "
                           "and its own office hours"),
    "duplicate_distance_m": N_("local practice; choose per city"),
    "photo_max_mb": N_("a phone camera's photo is 2–6 MB"),
    "session_hours": N_("a working day; MLPS 2.0 asks that sessions end"),
    "incident_separation": N_("GB/T 30428, CJJ/T 106 (supervision centre and command centre separate)"),
    "supervise_rule": N_("local practice (e.g. yellow at due, red at twice the limit); choose per city"),
    "incident_after_photo": N_("local practice; choose per city"),
    "unit_households_max": N_("a large compound holds a few thousand households; 100,000 leaves room for "
                              "any block"),
    "unit_population_max": N_("as the most households per unit"),
    "import_region": N_("China's extent (73°E–135°E, 4°N–54°N) with a margin; a city may narrow it to its "
                        "province"),
}

#: Fields of records and columns of tables inside settings, by the name people use.
FIELD_LABELS: dict[str, str] = {
    "kind": N_("Kind"), "level": N_("Life circle"), "reach_m": N_("Walking reach (m)"),
    "required": N_("Every community"), "min_floor_area_m2": N_("Least floor area (m²)"),
    "floor_area_per_100_households_m2": N_("Floor area per 100 households (m²)"),
    "households_per_facility": N_("Households per facility"), "source": N_("Source"), "name": N_("Name"),
    "limit_hours": N_("Time limit (working hours)"), "limit_days": N_("Time limit (working days)"),
    "hours": N_("Working hours"), "weekdays": N_("Working weekdays"), "holidays": N_("Public holidays"),
    "workdays": N_("Make-up working days"), "lon_min": N_("Westmost longitude"),
    "lon_max": N_("Eastmost longitude"),
    "lat_min": N_("Southmost latitude"), "lat_max": N_("Northmost latitude"),
    "closed": N_("Closure rate"), "closed_on_time": N_("On-time closure rate"),
    "from": N_("Chase up from"), "yellow": N_("Yellow warning at"), "red": N_("Red warning at"),
}

#: Values inside settings that are names the application knows (facility kinds, life circles,
#: kinds of incident), as people read them; the stored value stays the key.
VALUE_LABELS: dict[str, str] = {
    **FACILITY_KIND_LABELS,
    "5-minute": N_("5-minute life circle"), "10-minute": N_("10-minute life circle"),
    "15-minute": N_("15-minute life circle"), "component": N_("component"), "event": N_("event"),
}

#: Values chosen from a list (shown as a choice of names, stored as the key).
VALUE_GROUPS: list[list[str]] = [list(FACILITY_KIND_LABELS), ["5-minute", "10-minute", "15-minute"],
                                 ["component", "event"]]


def setting_texts(row: dict) -> dict:
    """A settings row with what the page shows in the interface's language: ``label``, ``text``
    (what the setting decides), ``unit`` and ``source_text`` (the default source translated, a
    source the city wrote as written)."""
    key = row["key"]
    label, text, unit = SETTING_TEXTS.get(key, (key, row.get("description") or "", ""))
    # the basemap row comes from a migration, its source is the msgid itself
    default = next((d.get("source") for d in DEFAULT_SETTINGS if d["key"] == key),
                   DEFAULT_SOURCES["basemap"] if key == "basemap" else None)
    source = row.get("source") or ""
    source_text = _(DEFAULT_SOURCES[key]) if key in DEFAULT_SOURCES and source == default else source
    return {**row, "label": _(label) if key in SETTING_TEXTS else label,
            "text": _(text) if key in SETTING_TEXTS else text, "unit": _(unit) if unit else "",
            "source_text": source_text}


def setting_label(key: str) -> str:
    """The name of setting ``key`` in the interface's language (the key when it has none)."""
    return _(SETTING_TEXTS[key][0]) if key in SETTING_TEXTS else key


__all__ = ["CHOICES", "FIELD_LABELS", "SETTING_TEXTS", "VALUE_LABELS", "setting_label", "setting_texts",
           "check_value", "get_value", "is_table", "list_settings", "save_setting"]
