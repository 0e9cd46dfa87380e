"""The closed loop of digital urban management (数字城管, GB/T 30428) as a small state machine.

    reported 信息采集 ──file 立案──▶ filed ──dispatch 派遣──▶ dispatched ──handle 处理──▶ handled
        │                          │      (the clock starts:               ▲                │
        └──────cancel 作废─────────┴──▶ cancelled  due = dispatch + limit)  └──return 返工───┤
                                                                                             ▼
                                                  evaluated ◀──evaluate 评价── closed ◀──close 核查结案

Each action names the statuses it may start from, the status it leads to and the roles that
may take it (:data:`TRANSITIONS`); every step is recorded with who and when, and raises the
case's version, as a compare-and-set: of two supervisors acting on the same version one wins,
the other gets a :class:`VersionConflict` carrying the current state. Due times, time left and
overdue are worked out here on the city's working calendar (工作日历), never in the browser.

A supervisor acts only on cases in their scope (a cell, community or street code: codes nest);
cases located only to a community or street (``location_precision = approximate``) are in no
cell and belong to that community's or street's supervisors.
"""

from __future__ import annotations

import math
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from geodata import incident_rows as rows
from geodata.accounts import Account, find_user
from geodata.audit import record
from geodata.errors import Conflict, Forbidden, NotFound, Refused
from geodata.i18n import N_, _, in_language
from geodata.standards import get_setting
from layers.working_time import WorkingCalendar

ACTORS = ("admin", "supervisor")
CLOSED = ("closed", "evaluated", "cancelled")
OPEN = ("reported", "filed", "dispatched", "handled", "feedback")
#: each status as people read it (translated where shown: :func:`status_label`)
STATUS_LABELS = {
    "reported": N_("reported"),
    "filed": N_("filed"),
    "dispatched": N_("dispatched"),
    "handled": N_("handled, to check"),
    "feedback": N_("handled, to check"),
    "closed": N_("closed"),
    "evaluated": N_("evaluated"),
    "cancelled": N_("cancelled"),
}
#: each step of a case's history as people read it (``feedback``: the handler reported back)
STEP_LABELS = {
    "reported": N_("was reported"), "filed": N_("was filed"), "dispatched": N_("was dispatched"),
    "handled": N_("was handled"), "feedback": N_("was reported back as handled"),
    "returned": N_("was returned for rework"), "closed": N_("was checked and closed"),
    "evaluated": N_("was evaluated"), "cancelled": N_("was cancelled"),
}
DESCRIPTION_LENGTH = 2000
NOTE_LENGTH = 1000
EVALUATIONS = ("satisfied", "basic", "unsatisfied")


@dataclass(frozen=True)
class Transition:
    """One action of the loop: from which statuses, to which, by whom, what it stamps."""

    sources: tuple[str, ...]
    target: str
    roles: tuple[str, ...]
    step: str
    label: str
    stamp: str | None = None
    note_required: bool = False
    leader_only: bool = False  # 网格长: a supervisor scoped to a community or street


TRANSITIONS: dict[str, Transition] = {
    "file": Transition(("reported",), "filed", ACTORS, "filed", N_("File the case"), "filed_at"),
    "cancel": Transition(
        ("reported", "filed"), "cancelled", ACTORS, "cancelled", N_("Cancel the case"), note_required=True
    ),
    "dispatch": Transition(("filed",), "dispatched", ACTORS, "dispatched", N_("Dispatch"), "dispatched_at"),
    "handle": Transition(("dispatched",), "handled", ACTORS, "handled", N_("Mark as handled"), "handled_at"),
    "close": Transition(
        ("handled", "feedback"), "closed", ACTORS, "closed", N_("Check and close"), "closed_at"
    ),
    "return": Transition(
        ("handled", "feedback"), "dispatched", ACTORS, "returned", N_("Return for rework"), note_required=True
    ),
    "evaluate": Transition(
        ("closed",), "evaluated", ACTORS, "evaluated", N_("Evaluate"), "evaluated_at", leader_only=True
    ),
}


class VersionConflict(Conflict):
    """Someone acted on the case first (409, with the case as it is now)."""


class PhotoTooLarge(Refused):
    """A photo over the size limit (413)."""

    status = 413
    title = "Payload Too Large"


class IllegalTransition(Conflict):
    """The case's status does not allow the action (409, with the case as it is now)."""


# --- settings -------------------------------------------------------------------------------


def categories(engine: Engine) -> dict[str, dict]:
    """The incident catalogue: code → {kind, name, limit_hours | limit_days}."""
    with engine.connect() as conn:
        return get_setting(conn, "incident_categories")


def calendar(engine: Engine) -> WorkingCalendar:
    """The city's working calendar (setting ``working_calendar``)."""
    with engine.connect() as conn:
        return WorkingCalendar.from_setting(get_setting(conn, "working_calendar"))


def limit_hours(category: dict, cal: WorkingCalendar) -> float:
    """A category's time limit in working hours (a limit in working days: days × hours a day)."""
    if category.get("limit_days") is not None:
        return float(category["limit_days"]) * cal.hours_per_day
    return float(category["limit_hours"])


def due_time(dispatched: datetime, category: dict, cal: WorkingCalendar) -> datetime:
    """When a case dispatched at ``dispatched`` is due: dispatch + the category's limit on the
    working calendar."""
    return _py(cal.add(np.datetime64(dispatched, "s"), limit_hours(category, cal)))


def _py(value) -> datetime:
    return np.datetime64(value, "s").astype(datetime)


def _hours(cal: WorkingCalendar, start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(float(cal.between(np.datetime64(start, "s"), np.datetime64(end, "s"))), 4)


# --- who may see and act ----------------------------------------------------------------------


def covers(account: Account, case: dict) -> bool:
    """Whether ``account`` may see ``case``: everyone but supervisors sees all; a supervisor sees
    the cases in the cells under their scope, and those placed only in a community or street
    under it."""
    if account.role != "supervisor":
        return True
    scope = account.scope_code or "\0"
    if case.get("grid_code"):
        return case["grid_code"].startswith(scope)
    if case.get("community_code") and len(scope) <= 12:
        return case["community_code"].startswith(scope)
    return bool(case.get("street_code")) and len(scope) <= 9 and case["street_code"].startswith(scope)


def visible_case(engine: Engine, account: Account, code: str) -> dict:
    case = rows.get_incident(engine, code)
    if case is None or not covers(account, case):
        raise NotFound(_("no incident {code}", code=repr(code)))
    return case


def allowed_actions(account: Account, case: dict) -> list[str]:
    """The actions ``account`` may take on ``case`` now."""
    if not covers(account, case):
        return []
    out = []
    for action, t in TRANSITIONS.items():
        if case["status"] not in t.sources or account.role not in t.roles:
            continue
        if t.leader_only and account.role == "supervisor" and len(account.scope_code or "") > 12:
            continue
        out.append(action)
    return out


# --- views ------------------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def describe(
    cases: list[dict], account: Account, cal: WorkingCalendar, catalogue: dict, now: datetime | None = None
) -> list[dict]:
    """Cases as the API answers them: with working hours left (negative: overdue), overdue,
    closed on time or late, the next actions for ``account``, times as ISO text."""
    now = now or datetime.now()
    due = np.array([c["due_at"] or np.datetime64("NaT") for c in cases], dtype="datetime64[s]")
    left = cal.between(np.datetime64(now, "s"), due) if len(cases) else np.array([])
    out = []
    for case, hours in zip(cases, np.atleast_1d(left), strict=True):
        open_ = case["status"] in OPEN
        overdue = bool(open_ and case["due_at"] is not None and case["due_at"] < now)
        late = bool(not open_ and case["closed_at"] and case["due_at"] and case["closed_at"] > case["due_at"])
        item = {k: _iso(v) for k, v in case.items() if k != "id"}
        item.update(
            category_name=in_language((catalogue.get(case["category"]) or {}).get("name", case["category"])),
            status_label=_(STATUS_LABELS.get(case["status"], case["status"])),
            open=open_,
            overdue=overdue,
            closed_late=late,
            hours_left=None if (not open_ or math.isnan(hours)) else round(float(hours), 2),
            approximate=case.get("location_precision") == "approximate",
            actions=[
                {"action": a, "label": _(TRANSITIONS[a].label), "note_required": TRANSITIONS[a].note_required}
                for a in allowed_actions(account, case)
            ],
        )
        out.append(item)
    return out


def sort_for_supervisor(cases: list[dict]) -> list[dict]:
    """Open cases by working time left, overdue (negative) first; cases with no clock yet last."""
    return sorted(cases, key=lambda c: (c["hours_left"] is None, c["hours_left"] or 0.0, c["code"]))


def my_cells(engine: Engine, account: Account) -> list[str] | None:
    """The cells a supervisor holds (grid_assignments), or None when they hold none by name
    (then their whole scope is theirs)."""
    if account.role != "supervisor":
        return None
    held = [a["cell_code"] for a in rows.assignments(engine, user=account.name)]
    return [c for c in held if c.startswith(account.scope_code or "\0")] or None


# --- reporting ------------------------------------------------------------------------------


def _number(value, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Refused(_("{what} must be a number", what=what))
    try:
        number = float(value)
    except ValueError:
        raise Refused(_("{what} must be a number, not {value}", what=what, value=repr(value))) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise Refused(_("{what} must be between {low} and {high}", what=what, low=low, high=high))
    return number


#: what XML 1.0 forbids (its ``Char`` production): C0 controls but tab, newline and carriage
#: return, lone surrogates, U+FFFE and U+FFFF. One of them in a description made the whole
#: Open311 XML feed ill-formed, so no text of a case keeps one.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def plain_text(value: str) -> str:
    """``value`` without the characters XML 1.0 forbids (control characters a copy and paste
    brings along): what every text of a case is stored as, whichever way it came in (the API,
    the report form, Open311, a 311 import)."""
    return XML_FORBIDDEN.sub("", value)


def _text(value, what: str, limit: int, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise Refused(_("{what} is required", what=what))
        return None
    if not isinstance(value, str):
        raise Refused(_("{what} must be text", what=what))
    value = plain_text(value).strip()
    if len(value) > limit:
        raise Refused(_("{what} is {n_value} characters long; at most {limit}",
                        what=what, n_value=len(value), limit=limit))
    if required and not value:
        raise Refused(_("{what} is required", what=what))
    return value or None


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in metres (haversine)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


def likely_duplicates(
    engine: Engine,
    category: str,
    lon: float,
    lat: float,
    *,
    account: Account | None = None,
    distance_m: float | None = None,
) -> list[dict]:
    """Open cases of ``category`` within the duplicate distance (setting ``duplicate_distance_m``)
    of (lon, lat) that ``account`` may see, nearest first, each with its distance."""
    with engine.connect() as conn:
        distance = float(distance_m if distance_m is not None else get_setting(conn, "duplicate_distance_m"))
        dy = distance / 111_320.0
        dx = distance / (111_320.0 * max(math.cos(math.radians(lat)), 0.01))
        found = rows.open_near(conn, category, lon, lat, (dx, dy), CLOSED)
    if not found:
        return []
    away = metres(lon, lat, [c["lon"] for c in found], [c["lat"] for c in found])
    near = [
        {
            "code": c["code"],
            "status": c["status"],
            "distance_m": round(float(d), 1),
            "reported_at": _iso(c["reported_at"]),
            "description": c["description"],
            "version": c["version"],
        }
        for c, d in zip(found, away, strict=True)
        if d <= distance and (account is None or covers(account, c))
    ]
    return sorted(near, key=lambda c: c["distance_m"])


def report(
    engine: Engine, account: Account, data: dict, *, now: datetime | None = None
) -> tuple[dict, list[dict]]:
    """Report a case (信息采集): ``category``, ``description``, and ``lon``/``lat`` — or, for a
    case located only approximately, ``community`` or ``street`` (a code) instead. Returns the
    stored case and the open cases of its category nearby (likely duplicates, found before it
    was stored)."""
    if account.role not in ACTORS:
        raise Forbidden(_("role {role} may not report incidents", role=account.role))
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    now = now or datetime.now()
    catalogue = categories(engine)
    category = data.get("category")
    if not isinstance(category, str) or category not in catalogue:
        raise Refused(
            _("unknown category {category}: use one of {p2}",
              category=repr(category), p2=', '.join(sorted(catalogue))),
            categories=sorted(catalogue),
        )
    description = _text(data.get("description"), "description", DESCRIPTION_LENGTH)
    area = [k for k in ("community", "street") if data.get(k)]
    has_point = data.get("lon") is not None or data.get("lat") is not None
    if has_point and area:
        raise Refused(_("give a location (lon, lat) or a community or street, not both"))
    if len(area) > 1:
        raise Refused(_("give a community or a street, not both"))
    with engine.begin() as conn:
        if area:
            level, code = area[0], str(data[area[0]])
            digits = 12 if level == "community" else 9
            if not (code.isdigit() and len(code) == digits):
                raise Refused(_("{level} must be a {digits}-digit code", level=level, digits=digits))
            place = rows.area_point(conn, level, code)
            if place is None:
                raise Refused(_("no {level} {code}", level=level, code=code))
            lon, lat = place.pop("lon"), place.pop("lat")
            precision = "approximate"
        else:
            if data.get("lon") is None or data.get("lat") is None:
                raise Refused(
                    _("lon and lat are required (or a community or street code for a case located only "
                      "approximately)")
                )
            lon = _number(data.get("lon"), "lon", -180, 180)
            lat = _number(data.get("lat"), "lat", -90, 90)
            place = rows.locate(conn, lon, lat)
            if place["grid_code"] is None:
                raise Refused(_("the point ({lon}, {lat}) lies outside every grid cell",
                                lon=format(lon, '.6f'), lat=format(lat, '.6f')))
            precision = "exact"
        if not covers(account, place):
            raise Forbidden(_("this location is outside your cells"))
    duplicates = likely_duplicates(engine, category, lon, lat, account=account)
    with engine.begin() as conn:
        values = {
            "category": category,
            "description": description,
            "status": "reported",
            "reported_at": now,
            "reporter": account.name,
            "location_precision": precision,
            **place,
        }
        case = rows.insert_incident(conn, values, lon, lat, now.strftime("%Y%m%d"))
        note = _text(data.get("source"), "source", 50)
        rows.add_step(conn, case["id"], "reported", now, account.name, note)
    return case, duplicates


# --- acting -----------------------------------------------------------------------------------


def act(engine: Engine, account: Account, code: str, data: dict, *, now: datetime | None = None) -> dict:
    """Take one step of the loop on case ``code``: ``{"action": …, "version": n, "note": …}``.
    Returns the case as it is afterwards (its version raised by one)."""
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    action = data.get("action")
    if not isinstance(action, str) or action not in TRANSITIONS:  # a list or object is no action
        raise Refused(_("unknown action {action}: use one of {p2}",
                        action=repr(action), p2=', '.join(TRANSITIONS)))
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Refused(_("version (the case's version the action starts from) is required"))
    note = _text(data.get("note"), "note", NOTE_LENGTH)
    t = TRANSITIONS[action]
    if t.note_required and not note:
        raise Refused(_("{action} needs a note (why)", action=action))
    evaluation = data.get("evaluation")
    if action == "evaluate" and evaluation is not None and evaluation not in EVALUATIONS:
        raise Refused(_("evaluation must be one of {p1}", p1=', '.join(EVALUATIONS)))
    case = visible_case(engine, account, code)
    if account.role not in t.roles:
        raise Forbidden(_("role {role} may not {action} a case", role=account.role, action=action))
    if t.leader_only and account.role == "supervisor" and len(account.scope_code or "") > 12:
        raise Forbidden(_("only a community's or street's grid leader may {action} a case", action=action))
    now = now or datetime.now()
    cal = calendar(engine)
    current = describe([case], account, cal, categories(engine), now)[0]
    if case["version"] != version:
        raise VersionConflict(
            _("case {code} is at version {version}, not {version2}: someone acted on it first",
              code=code, version=case['version'], version2=version),
            current=current,
            version=case["version"],
        )
    if case["status"] not in t.sources:
        raise IllegalTransition(
            f"a case that is {case['status']} cannot be given '{action}' (only from {', '.join(t.sources)})",
            current=current,
            version=case["version"],
        )
    values: dict = {"status": t.target}
    if t.stamp:
        values[t.stamp] = now
    if action == "file":
        values["filing_wh"] = _hours(cal, case["reported_at"], now)
    elif action == "dispatch":
        values["dispatch_wh"] = _hours(cal, case["filed_at"], now)
        category = categories(engine).get(case["category"])
        if category is None:
            raise Refused(_("category {category} is no longer in the catalogue", category=case['category']))
        values["due_at"] = due_time(now, category, cal)
    elif action == "handle":
        values["feedback_at"] = now  # 处理反馈: the handler's report comes with the handling
        values["handling_wh"] = _hours(cal, case["dispatched_at"], now)
    elif action == "close":
        values["verify_wh"] = _hours(cal, case["handled_at"], now)
    elif action == "return":
        values.update(handled_at=None, feedback_at=None)
    elif action == "evaluate":
        values["evaluation"] = evaluation or "satisfied"
    with engine.begin() as conn:
        if not rows.change_incident(conn, case["id"], version, t.sources, values, rework=action == "return"):
            latest = rows.get_incident(conn, code)
            raise VersionConflict(
                _("case {code} changed while you acted (now version {version})",
                  code=code, version=latest['version']),
                current=describe([latest], account, cal, categories(engine), now)[0],
                version=latest["version"],
            )
        rows.add_step(conn, case["id"], t.step, now, account.name, note)
    return rows.get_incident(engine, code)


def history(engine: Engine, account: Account, code: str) -> tuple[dict, list[dict], list[dict]]:
    """A case, its steps (oldest first) and its photos' metadata."""
    case = visible_case(engine, account, code)
    steps = [{**s, "at": _iso(s["at"]), "label": _(STEP_LABELS[s["step"]]) if s["step"] in STEP_LABELS
              else _("changed")} for s in rows.steps_of(engine, case["id"])]
    photos = [
        {
            "id": p["id"],
            "content_type": p["content_type"],
            "size": p["size"],
            "step": p["step"],
            "uploaded_by": p["uploaded_by"],
            "uploaded_at": _iso(p["uploaded_at"]),
        }
        for p in rows.photos_of(engine, case["id"])
    ]
    return case, steps, photos


# --- photos -----------------------------------------------------------------------------------

#: The first bytes of the image types accepted, and the extension each is stored with.
IMAGE_TYPES = (
    ("image/jpeg", ".jpg", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("image/png", ".png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ("image/webp", ".webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
)


def image_type(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) of a JPEG, PNG or WebP image by its first bytes; None otherwise."""
    for content_type, ext, test in IMAGE_TYPES:
        if test(data):
            return content_type, ext
    return None


#: the most pixels a photo may have: a phone's camera takes 12–50 million, and a photo of
#: 30,000 × 30,000 (a few kilobytes of PNG) would take gigabytes to decode — refused from the
#: file's header, before anything is decoded
MAX_PHOTO_PIXELS = 40_000_000
#: the longest side of a stored photo, in pixels: what a phone's screen shows of a case
PHOTO_SIDE = 2048
PHOTO_QUALITY = 85
#: the GDAL driver that decodes each accepted type (no other driver ever reads an upload)
_DRIVERS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
#: JPEG start-of-frame markers (they carry the size); C4, C8 and CC are other segments
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG, PNG or WebP image as its header states them, without decoding
    it; None when the header cannot be read."""
    kind = image_type(data)
    if kind is None:
        return None
    try:
        if kind[0] == "image/png":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack(">II", data[16:24])
        if kind[0] == "image/webp":
            chunk = data[12:16]
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        at = 2  # JPEG: walk the segments to the first start of frame
        while at + 4 <= len(data):
            if data[at] != 0xFF:
                return None
            marker = data[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                at += 2
                continue
            length = struct.unpack(">H", data[at + 2:at + 4])[0]
            if marker in _SOF:
                height, width = struct.unpack(">HH", data[at + 5:at + 9])
                return width, height
            at += 2 + length
    except struct.error:
        return None
    return None


@dataclass(frozen=True)
class Photo:
    """A photo as gridplan keeps it: a JPEG without metadata, upright, at most
    :data:`PHOTO_SIDE` pixels on its longest side."""

    jpeg: bytes
    width: int
    height: int


def _upright(pixels: np.ndarray, orientation: str | None) -> np.ndarray:
    """Pixels (bands, rows, columns) turned as the EXIF orientation (1–8) says the camera
    held them: the orientation goes with the rest of the metadata."""
    turns = {"2": lambda a: a[:, :, ::-1],  # mirrored
             "3": lambda a: a[:, ::-1, ::-1],  # upside down
             "4": lambda a: a[:, ::-1, :],  # mirrored upside down
             "5": lambda a: a.transpose(0, 2, 1),
             "6": lambda a: a.transpose(0, 2, 1)[:, :, ::-1],  # a quarter turn clockwise
             "7": lambda a: a.transpose(0, 2, 1)[:, ::-1, ::-1],
             "8": lambda a: a.transpose(0, 2, 1)[:, ::-1, :]}  # a quarter turn anticlockwise
    turn = turns.get((orientation or "1").strip())
    return np.ascontiguousarray(turn(pixels)) if turn else pixels


def _as_rgb(src, pixels: np.ndarray) -> np.ndarray:
    """8-bit grey or RGB pixels from whatever the image holds (a palette, 16 bits, an alpha
    channel laid on white)."""
    from rasterio.enums import ColorInterp

    interp = list(src.colorinterp)
    if interp and interp[0] == ColorInterp.palette:
        table = np.zeros((256, 4), dtype=np.uint8)
        for index, colour in src.colormap(1).items():
            if 0 <= index < 256:
                table[index] = colour
        pixels = np.moveaxis(table[pixels[0].astype(np.intp).clip(0, 255)], -1, 0)
        interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    if pixels.dtype != np.uint8:
        top = 65535 if pixels.dtype == np.uint16 else max(float(np.nanmax(pixels)), 1.0)
        pixels = (pixels.astype(np.float64) * (255.0 / top)).clip(0, 255).astype(np.uint8)
    alpha = interp.index(ColorInterp.alpha) if ColorInterp.alpha in interp else None
    colour = [i for i in range(pixels.shape[0]) if i != alpha][:3]
    out = pixels[colour] if len(colour) in (1, 3) else pixels[colour[:1]]
    if alpha is not None:
        weight = pixels[alpha].astype(np.float64) / 255.0
        out = (out * weight + 255.0 * (1.0 - weight)).round().astype(np.uint8)
    return out


def prepare_photo(data: bytes) -> Photo:
    """The photo to keep from an upload: refused unless a JPEG, PNG or WebP image that decodes,
    refused past :data:`MAX_PHOTO_PIXELS` (from its header, before decoding), turned upright,
    made at most :data:`PHOTO_SIDE` pixels on its longest side and re-encoded as a JPEG without
    any metadata — no EXIF, so no GPS position, camera or time travels with it."""
    import warnings

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.io import MemoryFile

    kind = image_type(data)
    if kind is None:
        raise Refused(_("not a JPEG, PNG or WebP image"))
    size = image_size(data)
    if size is None or min(size) < 1:
        raise Refused(_("the photo is damaged: its size cannot be read"))
    width, height = size
    if width * height > MAX_PHOTO_PIXELS:
        raise Refused(_("the photo is {width} × {height} pixels; at most {limit} million pixels",
                        width=width, height=height, limit=MAX_PHOTO_PIXELS // 1_000_000))
    scale = min(1.0, PHOTO_SIDE / max(width, height))
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO", GDAL_JPEG_TO_RGB="YES"):
            warnings.simplefilter("ignore")  # "not georeferenced": a photo never is
            with MemoryFile(data) as upload, upload.open(driver=_DRIVERS[kind[0]]) as src:
                if (src.width, src.height) != (width, height):
                    raise Refused(_("the photo is damaged: its size cannot be read"))
                pixels = src.read(out_shape=(src.count, out_h, out_w), resampling=Resampling.average)
                pixels = _upright(_as_rgb(src, pixels), src.tags().get("EXIF_Orientation"))
            with MemoryFile() as stored:
                with stored.open(driver="JPEG", width=pixels.shape[2], height=pixels.shape[1],
                                 count=pixels.shape[0], dtype="uint8", QUALITY=PHOTO_QUALITY) as dst:
                    dst.write(pixels)
                jpeg = stored.read()
    except RasterioError:
        raise Refused(_("the photo is damaged: it cannot be decoded")) from None
    return Photo(jpeg, int(pixels.shape[2]), int(pixels.shape[1]))


def photo_limit(engine: Engine) -> int:
    """The largest upload accepted as a photo, in bytes (setting ``photo_max_mb``; a value stored
    past the settings' checks counts as at most 50 MB)."""
    with engine.connect() as conn:
        megabytes = float(get_setting(conn, "photo_max_mb"))
    return int(min(megabytes, 50.0) * 1024 * 1024) if math.isfinite(megabytes) else 8 * 1024 * 1024


def add_photo(
    engine: Engine, account: Account, code: str, data: bytes | Photo, filename: str | None, folder: Path
) -> dict:
    """Keep a photo of case ``code`` in ``folder`` (outside the database) and its metadata in it:
    as :func:`prepare_photo` makes it (``data`` the upload, or a photo prepared already)."""
    case = visible_case(engine, account, code)
    if account.role not in ACTORS:
        raise Forbidden(_("role {role} may not add photos", role=account.role))
    if not isinstance(data, Photo):
        limit = photo_limit(engine)
        if len(data) > limit:
            raise PhotoTooLarge(_("the photo is {p1} MB; at most {p2} MB",
                                  p1=format(len(data) / 1048576, '.1f'), p2=format(limit / 1048576, '.0f')))
        if not data:
            raise Refused(_("the photo is empty"))
        data = prepare_photo(data)
    folder.mkdir(parents=True, exist_ok=True)
    stored = uuid.uuid4().hex + ".jpg"
    (folder / stored).write_bytes(data.jpeg)
    try:
        with engine.begin() as conn:
            photo_id = rows.add_photo(
                conn,
                case["id"],
                stored_name=stored,
                content_type="image/jpeg",
                size=len(data.jpeg),
                original_name=plain_text(filename or "")[:200] or None,
                step=case["status"],
                uploaded_by=account.name,
            )
    except Exception:
        (folder / stored).unlink(missing_ok=True)
        raise
    return {"id": photo_id, "content_type": "image/jpeg", "size": len(data.jpeg),
            "width": data.width, "height": data.height}


def photo_file(engine: Engine, account: Account, code: str, photo_id: int, folder: Path) -> tuple[Path, str]:
    """The file and content type of photo ``photo_id`` of case ``code``, for those who may see it."""
    case = visible_case(engine, account, code)
    meta = rows.photo(engine, photo_id)
    if meta is None or meta["incident_id"] != case["id"]:
        raise NotFound(_("no photo {photo_id} of incident {code}", photo_id=photo_id, code=code))
    path = folder / meta["stored_name"]
    if not path.is_file():
        raise NotFound(_("the file of photo {photo_id} is missing", photo_id=photo_id))
    return path, meta["content_type"]


# --- supervisors' cells -----------------------------------------------------------------------


def assign_cells(
    engine: Engine, actor: Account, user: str, cells: list[str], *, remove: bool = False
) -> list[dict]:
    """Assign supervisor ``user`` to ``cells`` (or take them away): an administrator or planner
    does it; a cell must exist and lie within the user's scope. Returns the user's cells."""
    if actor.role not in ("admin", "planner"):
        raise Forbidden(_("role {role} may not assign supervisors", role=actor.role))
    if not isinstance(user, str) or not user.strip():  # a list here reached the database (503)
        raise Refused(_("user is the name of a supervisor"))
    target = find_user(engine, name=user)
    if target is None:
        raise NotFound(_("no user {user}", user=repr(user)))
    if target.role != "supervisor":
        raise Refused(_("{user} is a {role}, not a supervisor", user=user, role=target.role))
    if not isinstance(cells, list) or not cells or not all(isinstance(c, str) for c in cells):
        raise Refused(_("cells is a list of 15-digit cell codes"))
    with engine.begin() as conn:
        known = rows.cells_of(conn, cells)
        missing = [c for c in cells if c not in known]
        if missing:
            raise Refused(_("no grid cell {p1}", p1=', '.join(missing[:10])))
        outside = [c for c in cells if not c.startswith(target.scope_code or "\0")]
        if outside and not remove:
            raise Refused(_("cells {p1} are outside {user}'s scope {scope_code}",
                            p1=', '.join(outside[:10]), user=user, scope_code=target.scope_code))
        changed = [
            c
            for c in cells
            if (rows.unassign(conn, user, c) if remove else rows.assign(conn, user, c, actor.name))
        ]
        if changed:
            record(
                conn,
                actor.name,
                "grid:unassign" if remove else "grid:assign",
                layer="grid_cells",
                object_code=user,
                detail={"user": user, "cells": changed},
            )
    return rows.assignments(engine, user=user)


# --- keeping step hours ------------------------------------------------------------------------


def fill_step_hours(engine: Engine, cal: WorkingCalendar | None = None) -> int:
    """Work out the step hours of cases that have step times but no hours (the demo, imports),
    vectorised. Returns how many cases were filled."""
    cal = cal or calendar(engine)
    found = rows.timing_rows(engine)
    if not found:
        return 0
    ids = np.array([r[0] for r in found])
    t = [np.array([r[i] or np.datetime64("NaT") for r in found], dtype="datetime64[s]") for i in range(1, 6)]
    hours = {
        "filing_wh": cal.between(t[0], t[1]),
        "dispatch_wh": cal.between(t[1], t[2]),
        "handling_wh": cal.between(t[2], t[3]),
        "verify_wh": cal.between(t[3], t[4]),
    }
    out = [
        {"id": int(i), **{k: (None if math.isnan(v[n]) else round(float(v[n]), 4)) for k, v in hours.items()}}
        for n, i in enumerate(ids)
    ]
    with engine.begin() as conn:
        rows.set_step_hours(conn, out)
    return len(out)
