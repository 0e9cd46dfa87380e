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

Who does what (GB/T 30428, CJJ/T 106): a 监督员 (``supervisor``) reports and verifies; the
指挥中心 (``dispatcher``: 受理员, 派遣员, 值班长) files, dispatches to a 处置部门 and chases (督办);
a department's ``handler`` sees and handles only the cases dispatched to their department; a
网格长 (a supervisor of a community or street) evaluates and chases. With the setting
``incident_separation`` on (the default) nobody verifies a case they handled themselves.
Administrators may take every step.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from geodata import departments as depts
from geodata import incident_rows as rows
from geodata import place_rows
from geodata.accounts import Account, find_user, role_word
from geodata.audit import record
from geodata.errors import Conflict, Forbidden, NotFound, Refused
from geodata.i18n import N_, _, in_language
from geodata.standards import get_setting
from layers.incidents.working_time import WorkingCalendar

ACTORS = ("admin", "supervisor")
#: who reports a case: a 监督员 in the field, the 指挥中心's 受理员 taking a call
REPORTERS = ("admin", "supervisor", "dispatcher")
#: who adds photos: those who report, and a department's handler (the after-photo)
PHOTOGRAPHERS = ("admin", "supervisor", "dispatcher", "handler")
CENTRE = ("admin", "supervisor", "dispatcher")
#: who chases (督办): the 指挥中心, a 网格长
CHASERS = ("admin", "dispatcher", "supervisor")
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
    "supervised": N_("was chased up"), "noted": N_("was seen again (a note added)"),
    "sent_back": N_("was sent back to the command centre"),
}
DESCRIPTION_LENGTH = 2000
NOTE_LENGTH = 1000
EVALUATIONS = ("satisfied", "basic", "unsatisfied")
EVALUATION_LABELS = {"satisfied": N_("satisfied"), "basic": N_("fairly satisfied"),
                     "unsatisfied": N_("not satisfied")}
#: 督办 levels, lowest first: chased before its limit, at its limit (黄牌), past the red multiple (红牌)
SUPERVISE_LEVELS = ("reminder", "yellow", "red")
SUPERVISE_LABELS = {"reminder": N_("reminder"), "yellow": N_("yellow warning"),
                    "red": N_("red warning")}


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
    "file": Transition(("reported",), "filed", CENTRE, "filed", N_("File the case"), "filed_at"),
    "cancel": Transition(
        ("reported", "filed"), "cancelled", CENTRE, "cancelled", N_("Cancel the case"), note_required=True
    ),
    "dispatch": Transition(("filed",), "dispatched", CENTRE, "dispatched", N_("Dispatch"), "dispatched_at"),
    "handle": Transition(
        ("dispatched",), "handled", (*ACTORS, "handler"), "handled", N_("Mark as handled"), "handled_at"
    ),
    "close": Transition(
        ("handled", "feedback"), "closed", ACTORS, "closed", N_("Check and close"), "closed_at"
    ),
    "return": Transition(
        ("handled", "feedback"), "dispatched", ACTORS, "returned", N_("Return for rework"), note_required=True
    ),
    "evaluate": Transition(
        ("closed",), "evaluated", ACTORS, "evaluated", N_("Evaluate"), "evaluated_at", leader_only=True
    ),
    # 督办: the 指挥中心 or a 网格长 chases a case running late; it stays where it is
    "supervise": Transition(
        ("dispatched",), "dispatched", CHASERS, "supervised", N_("Chase up"),
        "supervised_at", note_required=True, leader_only=True,
    ),
    # 退回: a department sends a case it does not handle back to the 指挥中心, saying why; the case
    # is filed again, with no department and no clock, for the 指挥中心 to dispatch elsewhere
    "send_back": Transition(
        ("dispatched",), "filed", ("admin", "handler"), "sent_back", N_("Send back to the command centre"),
        note_required=True,
    ),
}
#: the verifying steps (核查): with separation on, never by whoever handled the case
VERIFY = ("close", "return")
#: who handles (处置) a case dispatched to a department (GB/T 30428: the 专业部门 handles, the
#: 监督员 verifies): the department's handler, or an administrator; a supervisor handles only a
#: case dispatched to no department (a town without departments)
DEPARTMENT_HANDLERS = ("admin", "handler")


#: with separation on (岗位分离, GB/T 30428) the 指挥中心's steps: a 监督员 reports and verifies,
#: a 网格长 evaluates and chases, neither files, cancels nor dispatches
CENTRE_STEPS = ("file", "cancel", "dispatch")
#: who takes the 指挥中心's steps with separation on: its 受理员 and 值班长, or an administrator
CENTRE_STAFF = ("admin", "dispatcher")


def who(account: Account) -> str:
    """``account``'s role in words (监督员, 网格长, 处置部门人员 …), for messages."""
    return role_word(account.role, account.scope_code)


def step_word(action: str) -> str:
    """A step of the loop in words (立案, 核查结案 …), as its button names it."""
    t = TRANSITIONS.get(action)
    return _(t.label) if t else action


def separated(account: Account, action: str, rules: LoopRules) -> bool:
    """Whether separation of duties keeps ``account`` from the 指挥中心's step ``action``."""
    return rules.separation and action in CENTRE_STEPS and account.role not in CENTRE_STAFF


def handles_here(account: Account, case: dict) -> bool:
    """Whether ``account``'s role may handle ``case`` given whether it went to a department."""
    return not case.get("department_code") or account.role in DEPARTMENT_HANDLERS


@dataclass(frozen=True)
class LoopRules:
    """The city's rules of the loop (settings): separation of duties, when a case may be chased
    and its warning levels (shares of its time limit), the categories needing an after-photo."""

    separation: bool = True
    supervise_from: float = 0.8
    yellow: float = 1.0
    red: float = 2.0
    after_photo: frozenset[str] = frozenset()


def loop_rules(engine: Engine) -> LoopRules:
    """The rules in force (settings ``incident_separation``, ``supervise_rule``,
    ``incident_after_photo``)."""
    with engine.connect() as conn:
        separation = get_setting(conn, "incident_separation")
        rule = get_setting(conn, "supervise_rule") or {}
        photos = get_setting(conn, "incident_after_photo") or []
    yellow = float(rule.get("yellow", 1.0))
    return LoopRules(
        separation=separation is not False,
        supervise_from=min(float(rule.get("from", 0.8)), yellow),
        yellow=yellow,
        red=max(float(rule.get("red", 2.0)), yellow),
        after_photo=frozenset(c for c in photos if isinstance(c, str)),
    )


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
    if account.role == "handler":  # a department's handler: the cases dispatched to it
        return bool(account.department_code) and case.get("department_code") == account.department_code
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


def allowed_actions(
    account: Account, case: dict, rules: LoopRules | None = None, chaseable: bool = False
) -> list[str]:
    """The actions ``account`` may take on ``case`` now (``chaseable``: the case has run
    long enough to be chased, :func:`supervise_level`)."""
    if not covers(account, case):
        return []
    rules = rules or LoopRules()
    out = []
    for action, t in TRANSITIONS.items():
        if case["status"] not in t.sources or account.role not in t.roles:
            continue
        if t.leader_only and account.role == "supervisor" and len(account.scope_code or "") > 12:
            continue
        if action in VERIFY and rules.separation and case.get("handler") == account.name:
            continue
        if separated(account, action, rules):
            continue
        if action == "supervise" and not chaseable:
            continue
        if action == "handle" and not handles_here(account, case):
            continue
        out.append(action)
    return out


def supervise_level(case: dict, cal: WorkingCalendar, catalogue: dict, rules: LoopRules,
                    now: datetime, departments: dict | None = None) -> str | None:
    """The 督办 level a dispatched case has reached now: None before ``supervise_from`` of its
    time limit has run, then reminder, yellow at ``yellow`` × the limit (at due with 1.0), red
    at ``red`` × the limit. The limit is the department's own for the category, else the
    category's."""
    if case["status"] != "dispatched" or case.get("dispatched_at") is None:
        return None
    category = catalogue.get(case["category"])
    if category is None:
        return None
    limit = case_limit(category, case["category"], (departments or {}).get(case.get("department_code")), cal)
    elapsed = _hours(cal, case["dispatched_at"], now) or 0.0
    share = elapsed / limit if limit > 0 else math.inf
    if share >= rules.red:
        return "red"
    if share >= rules.yellow:
        return "yellow"
    if share >= rules.supervise_from:
        return "reminder"
    return None


def case_limit(category: dict, code: str, department: dict | None, cal: WorkingCalendar) -> float:
    """A case's time limit in working hours: its department's own for the category where the
    city set one, else the category's."""
    own = (department or {}).get("limits", {}).get(code)
    return float(own) if own is not None else limit_hours(category, cal)


# --- views ------------------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def describe(
    cases: list[dict], account: Account, cal: WorkingCalendar, catalogue: dict, now: datetime | None = None,
    *, rules: LoopRules | None = None, departments: dict | None = None,
) -> list[dict]:
    """Cases as the API answers them: with working hours left (negative: overdue), overdue,
    closed on time or late, the department's name, the 督办 level reached now, the next actions
    for ``account``, times as ISO text (``departments``: code → department)."""
    now = now or datetime.now()
    rules = rules or LoopRules()
    departments = departments or {}
    due = np.array([c["due_at"] or np.datetime64("NaT") for c in cases], dtype="datetime64[s]")
    left = cal.between(np.datetime64(now, "s"), due) if len(cases) else np.array([])
    out = []
    for case, hours in zip(cases, np.atleast_1d(left), strict=True):
        open_ = case["status"] in OPEN
        overdue = bool(open_ and case["due_at"] is not None and case["due_at"] < now)
        late = bool(not open_ and case["closed_at"] and case["due_at"] and case["closed_at"] > case["due_at"])
        item = {k: _iso(v) for k, v in case.items() if k != "id"}
        chase = supervise_level(case, cal, catalogue, rules, now, departments)
        department = departments.get(case.get("department_code")) or {}
        item.update(
            department_name=department.get("name"),
            due_level=chase,
            supervise_label=_label(SUPERVISE_LABELS, case.get("supervise_level")),
            category_name=in_language((catalogue.get(case["category"]) or {}).get("name", case["category"])),
            status_label=_(STATUS_LABELS.get(case["status"], case["status"])),
            open=open_,
            overdue=overdue,
            closed_late=late,
            hours_left=None if (not open_ or math.isnan(hours)) else round(float(hours), 2),
            approximate=case.get("location_precision") == "approximate",
            actions=[
                {"action": a, "label": _(TRANSITIONS[a].label), "note_required": TRANSITIONS[a].note_required}
                for a in allowed_actions(account, case, rules, chaseable=chase is not None)
            ],
        )
        out.append(item)
    return out


def sort_for_supervisor(cases: list[dict]) -> list[dict]:
    """Open cases by working time left, overdue (negative) first; cases with no clock yet last."""
    return sorted(cases, key=lambda c: (c["hours_left"] is None, c["hours_left"] or 0.0, c["code"]))


def sort_for_department(cases: list[dict]) -> list[dict]:
    """A department's cases: those chased (督办) first, red before yellow before a reminder,
    then by working time left."""
    rank = {level: n for n, level in enumerate(reversed(SUPERVISE_LEVELS))}
    return sorted(sort_for_supervisor(cases),
                  key=lambda c: rank.get(c.get("supervise_level") or "", len(rank)) if c["open"]
                  else len(rank))


def department_table(engine: Engine) -> dict[str, dict]:
    """The departments by code (for :func:`describe`)."""
    return {d["code"]: d for d in depts.list_departments(engine)}


def dispatch_choices(
    engine: Engine, category: str, sent_back: set[str] | frozenset = frozenset()
) -> list[dict]:
    """The departments a case of ``category`` may be dispatched to, its default first (those
    that sent the case back, ``sent_back``, left out while another remains)."""
    handling = depts.for_category(depts.list_departments(engine), category)
    remaining = [d for d in handling if d["code"] not in sent_back] or handling
    return [{"code": d["code"], "name": d["name"]} for d in remaining]


def my_cells(engine: Engine, account: Account) -> list[str] | None:
    """The cells a supervisor holds (grid_assignments), or None when they hold none by name
    (then their whole scope is theirs)."""
    if account.role != "supervisor":
        return None
    held = [a["cell_code"] for a in rows.assignments(engine, user=account.name)]
    return [c for c in held if c.startswith(account.scope_code or "\0")] or None


# --- sent again from a phone (client ids) ------------------------------------------------------

#: what a phone-made id may look like: a UUID (``crypto.randomUUID()``) or any 8 to 64 letters,
#: digits and ``-_.:``
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{8,64}")


class ClientIdReused(Conflict):
    """A phone-made id sent with other content than the first time, or already used by another
    account (409; the other case is not named)."""


def client_key(value) -> str | None:
    """The phone-made id of a report or a step (``client_id``), or None when none was sent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not CLIENT_ID.fullmatch(value):
        raise Refused(_("client_id must be 8 to 64 letters, digits or -_.: (a UUID), not {value}",
                        value=repr(value)[:80]))
    return value


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode()).hexdigest()


def _same_number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def report_fingerprint(data: dict) -> str:
    """What a report says (category, description, place), as a hash: the same ``client_id``
    sent with another report is refused, not taken for the first."""
    description = data.get("description")
    if isinstance(description, str):
        description = plain_text(description).strip() or None
    return _fingerprint("report", data.get("category"), description or None,
                        _same_number(data.get("lon")), _same_number(data.get("lat")),
                        data.get("community") or None, data.get("street") or None)


def step_fingerprint(code: str, data: dict) -> str:
    """What a step says (case, action, version, note, evaluation), as a hash."""
    note = data.get("note")
    if isinstance(note, str):
        note = plain_text(note).strip() or None
    return _fingerprint("step", code, data.get("action"), data.get("version"), note or None,
                        data.get("evaluation"))


def _own_uses(found: list[dict], by: str, account: Account, client_id: str) -> list[dict]:
    """The earlier uses of ``client_id`` (``found``) made by ``account`` (their ``by`` field);
    refused when only another account used it (whose case is not named)."""
    mine = [r for r in found if r[by] == account.name]
    if found and not mine:
        raise ClientIdReused(_("client_id {client_id} was already used by another account: "
                               "make a new one", client_id=client_id))
    return mine


def earlier_report(engine: Engine, account: Account, client_id: str, fingerprint: str) -> dict | None:
    """The case ``account`` reported with ``client_id`` before (marked ``replayed``), None when
    there is none; refused when the id came with another report, or from another account (whose
    case is not named)."""
    mine = _own_uses(rows.reports_by_client_id(engine, client_id), "reporter", account, client_id)
    if not mine:
        return None
    if mine[0]["client_hash"] != fingerprint:
        raise ClientIdReused(
            _("client_id {client_id} was sent before with another report ({code}): "
              "a new report needs a new id", client_id=client_id, code=mine[0]["code"]),
            code_of_first=mine[0]["code"])
    case = rows.get_incident(engine, mine[0]["code"])
    return {**case, "replayed": True}


def earlier_step(
    engine: Engine | Connection, account: Account, code: str, client_id: str, fingerprint: str
) -> bool:
    """Whether ``account`` took this very step (``client_id``) on case ``code`` before; refused
    when the id came with another step or case, or from another account."""
    mine = _own_uses(rows.steps_by_client_id(engine, client_id), "actor", account, client_id)
    if not mine:
        return False
    if mine[0]["code"] != code or mine[0]["client_hash"] != fingerprint:
        raise ClientIdReused(_("client_id {client_id} was sent before with another step: "
                               "a new step needs a new id", client_id=client_id))
    return True


# --- reporting ------------------------------------------------------------------------------


def checked_number(value, what: str, low: float, high: float) -> float:
    """``value`` (a JSON number or text) as a finite number from ``low`` to ``high``, refused
    naming ``what`` (a report's ``lon``/``lat``, a pin's)."""
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


# --- the place in words, what is nearby, what needs someone -----------------------------------


def place(engine: Engine, lon: float, lat: float) -> dict:
    """Where (lon, lat) is, as a 网格员 says it: the grid cell, the community (code and name), the
    street and district codes, and the nearest named road of the roads layer within 300 m with
    its distance; ``words`` puts them in one line (``inside`` is false outside every cell)."""
    with engine.connect() as conn:
        found = rows.locate(conn, lon, lat)
        name = place_rows.community_name(conn, found["community_code"])
        road = place_rows.nearest_road(conn, lon, lat)
    from layers.incidents.rates import cell_names  # here: rates reads this module's statuses

    # the cell as a person reads it (its community and number), else the community alone
    cell = cell_names(engine, [found["grid_code"]]).get(found["grid_code"]) if found["grid_code"] else None
    parts = []
    if cell or name or found["community_code"]:
        parts.append(cell or name or found["community_code"])
    if road is not None:
        parts.append(_("near {road} ({metres} m)", road=road[0], metres=round(road[1])))
    if found["grid_code"] and not cell:
        parts.append(_("grid cell {code}", code=found["grid_code"]))
    return {
        **found,
        "lon": lon,
        "lat": lat,
        "inside": found["grid_code"] is not None,
        "community_name": name,
        "road": road[0] if road else None,
        "road_distance_m": round(road[1], 1) if road else None,
        "words": " · ".join(parts) or _("outside every grid cell"),
    }


def nearest_cell_of(engine: Engine, account: Account, lon: float, lat: float) -> tuple[str, float] | None:
    """The grid cell nearest (lon, lat) among those ``account`` reports in: a 网格员's own cells
    (else their scope's), everyone else's among all; (code, metres) or None."""
    with engine.connect() as conn:
        if account.role == "supervisor":
            mine = my_cells(engine, account)
            if not mine and not account.scope_code:  # no cell and no scope: none is theirs
                return None
            return place_rows.nearest_cell(conn, lon, lat, prefix=account.scope_code, codes=mine)
        return place_rows.nearest_cell(conn, lon, lat)


def cell_words(engine: Engine, code: str) -> str:
    """A grid cell as people name it, its code beside ("鹦鹉社区 网格 1（420103001001001）")."""
    from layers.incidents.rates import cell_names  # here: rates reads this module's statuses

    name = cell_names(engine, [code]).get(code)
    return _("{name} ({code})", name=name, code=code) if name else code


def outside_cells(engine: Engine, account: Account, lon: float, lat: float) -> Refused:
    """The refusal of a pin outside every grid cell, naming the nearest cell of the user's scope."""
    nearest = nearest_cell_of(engine, account, lon, lat)
    if nearest is None:
        return Refused(_("the point ({lon}, {lat}) lies outside every grid cell",
                         lon=format(lon, ".6f"), lat=format(lat, ".6f")))
    return Refused(
        _("the point ({lon}, {lat}) lies outside every grid cell; the nearest of yours is {cell}, "
          "{metres} m away: move the pin into it",
          lon=format(lon, ".6f"), lat=format(lat, ".6f"), cell=cell_words(engine, nearest[0]),
          metres=round(nearest[1])),
        nearest_cell=nearest[0],
        nearest_cell_m=round(nearest[1], 1),
    )


def outside_scope(engine: Engine, account: Account, lon: float, lat: float) -> Forbidden:
    """The refusal of a pin in a cell that is not the user's (403), naming the nearest of theirs."""
    nearest = nearest_cell_of(engine, account, lon, lat)
    if nearest is None:
        return Forbidden(_("this location is outside your cells"))
    return Forbidden(
        _("this location is outside your cells; the nearest of yours is {cell}, {metres} m away",
          cell=cell_words(engine, nearest[0]), metres=round(nearest[1])),
        nearest_cell=nearest[0],
        nearest_cell_m=round(nearest[1], 1),
    )


def nearby_open(engine: Engine, account: Account, category: str, lon: float, lat: float) -> list[dict]:
    """The open cases of ``category`` near (lon, lat) that ``account`` sees, nearest first: what
    the report form offers before sending ("this is the same case"), each with its category's
    name and its status in words."""
    catalogue = categories(engine)
    if category not in catalogue:
        raise Refused(_("unknown category {category}: use one of {p2}",
                        category=repr(category), p2=", ".join(sorted(catalogue))))
    return [
        {**c, "category": category, "category_name": in_language(catalogue[category].get("name", category)),
         "status_label": _(STATUS_LABELS.get(c["status"], c["status"]))}
        for c in likely_duplicates(engine, category, lon, lat, account=account)
    ]


def note_fingerprint(code: str, note: str | None) -> str:
    """What a note says (case, text), as a hash: the same ``client_id`` sent with another note
    or to another case is refused, not taken for the first."""
    return _fingerprint("note", code, note)


def earlier_note(engine: Engine | Connection, account: Account, code: str, client_id: str,
                 fingerprint: str) -> bool:
    """Whether ``account`` added this very note (``client_id``) to case ``code`` before; refused,
    naming the case, when the id came with a note to another case or with another note."""
    mine = _own_uses(rows.steps_by_client_id(engine, client_id), "actor", account, client_id)
    if not mine:
        return False
    if mine[0]["code"] != code:
        raise ClientIdReused(
            _("client_id {client_id} was sent before with a note to case {code}: a note to "
              "another case needs a new id", client_id=client_id, code=mine[0]["code"]),
            code_of_first=mine[0]["code"])
    if mine[0]["client_hash"] != fingerprint:
        raise ClientIdReused(_("client_id {client_id} was sent before with another step: "
                               "a new step needs a new id", client_id=client_id))
    return True


def may_note(account: Account, case: dict) -> bool:
    """Whether ``account`` may add a note (补充说明) to ``case`` (one it sees): a reporter's role,
    the case still open — whether or not the account has a step to take on it."""
    return account.role in REPORTERS and case["status"] in OPEN


def add_note(engine: Engine, account: Account, code: str, data: dict, *, now: datetime | None = None,
             photo: tuple | None = None) -> dict:
    """Add a note to case ``code`` without changing its status or version (a 网格员 who finds the
    case already reported adds what they saw to it: "this is the same case"), with the photo
    they took (``photo``: prepared, as for a step) in the same transaction. With ``client_id``
    (made by the phone, which may send it twice when the signal comes and goes) the note is
    stored once: the same request again returns the case marked ``replayed``. Returns the case."""
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    note = _text(data.get("note"), "note", NOTE_LENGTH, required=True)
    client_id = client_key(data.get("client_id"))
    case = visible_case(engine, account, code)
    if account.role not in REPORTERS:
        raise Forbidden(_("a {role} may not add notes", role=who(account)))
    fingerprint = note_fingerprint(code, note) if client_id else None
    if client_id and earlier_note(engine, account, code, client_id, fingerprint):
        return {**case, "replayed": True}
    if case["status"] not in OPEN:
        raise IllegalTransition(_("case {code} is {status}: a note goes to an open case",
                                  code=code, status=_(STATUS_LABELS.get(case["status"], case["status"]))))
    stored = None
    if photo is not None:
        photo[2].mkdir(parents=True, exist_ok=True)
        stored = photo[2] / (uuid.uuid4().hex + ".jpg")
        stored.write_bytes(photo[0].jpeg)
    try:
        with engine.begin() as conn:
            step_id = rows.add_step(conn, case["id"], "noted", now or datetime.now(), account.name, note,
                                    client_id=client_id, client_hash=fingerprint,
                                    district_code=case["district_code"])
            if stored is not None:
                rows.add_photo(conn, case["id"], stored_name=stored.name, content_type="image/jpeg",
                               size=len(photo[0].jpeg), step="noted", uploaded_by=account.name,
                               original_name=plain_text(photo[1] or "")[:200] or None, step_id=step_id,
                               district_code=case["district_code"])
    except IntegrityError:
        if stored is not None:
            stored.unlink(missing_ok=True)
        # the same note arriving twice at once: the other copy was stored (the id is unique per actor)
        if client_id and earlier_note(engine, account, code, client_id, fingerprint):
            return {**case, "replayed": True}
        raise
    except Exception:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise
    return case


def attention(engine: Engine, account: Account, now: datetime | None = None) -> dict[str, int]:
    """What needs ``account``: the new, returned and overdue cases in a 网格员's cells (else their
    scope), a department handler's in their department (new: dispatched to it, to handle),
    everyone else's in the whole city; with their ``total``."""
    cells = my_cells(engine, account)
    prefix = (account.scope_code or "\0") if account.role == "supervisor" else None
    # a handler: their department's cases only ("\0": none, for a handler without one)
    department = (account.department_code or "\0") if account.role == "handler" else None
    with engine.connect() as conn:
        counts = place_rows.attention_counts(conn, now or datetime.now(), OPEN, prefix=prefix, cells=cells,
                                             department=department, new_status=new_status(account))
    return {**counts, "total": sum(counts.values())}


def base_layers(engine: Engine, account: Account, bbox: tuple[float, float, float, float],
                case_code: str | None = None) -> dict:
    """The grid cells ``account`` may see and the roads within ``bbox`` (GeoJSON features), drawn
    under a pin as the base of the case pages' maps: they work with no base map at all. Roads
    only on a view under about 10 km across (a whole city's roads would swamp a phone).
    ``case_code``: a case ``account`` may see (else :class:`NotFound`), whose cell is drawn
    too — a department's handler sees the cell of their case and no other."""
    # "-" begins no cell code (digits): no cells; never a NUL, which PostgreSQL's text refuses
    prefix = (account.scope_code or "-") if account.role == "supervisor" else None
    if account.role == "handler":
        prefix = "-"  # a department's handler: the roads only, not the city's grid
    if case_code is not None:
        case = visible_case(engine, account, case_code)
        if prefix is not None and case.get("grid_code") and not case["grid_code"].startswith(prefix):
            prefix = case["grid_code"]  # the reader's scope does not hold it: that cell alone
    small = (bbox[2] - bbox[0]) < 0.1 and (bbox[3] - bbox[1]) < 0.1
    with engine.connect() as conn:
        return place_rows.base_features(conn, bbox, prefix, roads=small)


def new_status(account: Account) -> str:
    """The status of a case new to ``account``: dispatched for a department's handler (theirs
    to handle), reported for everyone else (to file, or in their cells)."""
    return "dispatched" if account.role == "handler" else "reported"


def needs_attention(case: dict, account: Account | None = None) -> bool:
    """Whether a described case is new, returned for rework or overdue (what the top bar counts)."""
    new = new_status(account) if account is not None else "reported"
    return bool(case["status"] == new or case["overdue"]
                or (case["status"] == "dispatched" and (case.get("rework_count") or 0) > 0))


def report(
    engine: Engine, account: Account, data: dict, *, now: datetime | None = None
) -> tuple[dict, list[dict]]:
    """Report a case (信息采集): ``category``, ``description``, and ``lon``/``lat`` — or, for a
    case located only approximately, ``community`` or ``street`` (a code) instead. Returns the
    stored case and the open cases of its category nearby (likely duplicates, found before it
    was stored)."""
    if account.role not in REPORTERS:
        raise Forbidden(_("a {role} may not report incidents", role=who(account)))
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    # sent again from a phone (the signal came back): the case stored the first time
    client_id = client_key(data.get("client_id"))
    fingerprint = report_fingerprint(data) if client_id else None
    if client_id and (earlier := earlier_report(engine, account, client_id, fingerprint)) is not None:
        return earlier, []
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
            lon = checked_number(data.get("lon"), "lon", -180, 180)
            lat = checked_number(data.get("lat"), "lat", -90, 90)
            place = rows.locate(conn, lon, lat)
            if place["grid_code"] is None:
                raise outside_cells(engine, account, lon, lat)
            precision = "exact"
        if not covers(account, place):
            raise outside_scope(engine, account, lon, lat)
    duplicates = likely_duplicates(engine, category, lon, lat, account=account)
    try:
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
            if client_id:
                values.update(client_id=client_id, client_hash=fingerprint)
            case = rows.insert_incident(conn, values, lon, lat, now.strftime("%Y%m%d"))
            note = _text(data.get("source"), "source", 50)
            rows.add_step(conn, case["id"], "reported", now, account.name, note,
                          district_code=case["district_code"])
    except IntegrityError:
        # the same report sent twice at once: the other request stored it (unique per reporter)
        earlier = earlier_report(engine, account, client_id, fingerprint) if client_id else None
        if earlier is None:
            raise
        return earlier, []
    return case, duplicates


# --- acting -----------------------------------------------------------------------------------


def act(
    engine: Engine,
    account: Account,
    code: str,
    data: dict,
    *,
    now: datetime | None = None,
    photo: tuple[Photo, str | None, Path] | None = None,
) -> dict:
    """Take one step of the loop on case ``code``: ``{"action": …, "version": n, "note": …}``
    (dispatch: ``department``, a code — the category's default when none is given; evaluate:
    ``evaluation``). ``photo`` (prepared, its file name, the photo folder) is kept as evidence
    of this step, in the same transaction. Returns the case as it is afterwards (its version
    raised by one)."""
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
    # read by its code (which names no district) once; every later statement names its district
    district = case["district_code"]
    # sent again from a phone (the signal came back): taken once, answered with the case as it is
    client_id = client_key(data.get("client_id"))
    fingerprint = step_fingerprint(code, data) if client_id else None
    if client_id and earlier_step(engine, account, code, client_id, fingerprint):
        return {**rows.get_incident(engine, code), "replayed": True}
    if account.role not in t.roles:
        raise Forbidden(_("a {role} may not take the step “{step}”", role=who(account),
                          step=step_word(action)))
    rules = loop_rules(engine)
    if separated(account, action, rules):
        raise Forbidden(_("separation of duties is on: a {role} may not take the step “{step}”; the "
                          "command centre files, cancels and dispatches cases", role=who(account),
                          step=step_word(action)))
    if action in VERIFY and rules.separation and case.get("handler") == account.name:
        raise Forbidden(_("you handled case {code} yourself: another supervisor verifies it (separation "
                          "of duties is on)", code=code))
    if t.leader_only and account.role == "supervisor" and len(account.scope_code or "") > 12:
        raise Forbidden(_("only a community's or street's grid leader may {action} a case", action=action))
    if action == "handle" and not handles_here(account, case):
        raise Forbidden(_("case {code} went to department {department}: its handler handles it, "
                          "a supervisor checks it", code=code, department=case.get("department_code")))
    now = now or datetime.now()
    cal = calendar(engine)
    catalogue = categories(engine)
    table = department_table(engine)
    current = describe([case], account, cal, catalogue, now, rules=rules, departments=table)[0]
    if case["version"] != version:
        if client_id and earlier_step(engine, account, code, client_id, fingerprint):
            return {**rows.get_incident(engine, code), "replayed": True}  # sent twice at once
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
    detail = None
    if action == "handle" and case["category"] in rules.after_photo and photo is None:
        raise Refused(_("{category} needs a photo after handling: send it with the handling",
                        category=current["category_name"]))
    if action == "file":
        values["filing_wh"] = _hours(cal, case["reported_at"], now)
    elif action == "dispatch":
        values["dispatch_wh"] = _hours(cal, case["filed_at"], now)
        category = catalogue.get(case["category"])
        if category is None:
            raise Refused(_("category {category} is no longer in the catalogue", category=case['category']))
        sent_back = sent_back_by(engine, case["id"], district)
        department = _department_for(table, case["category"], current["category_name"],
                                     data.get("department"), sent_back=sent_back)
        values["department_code"] = detail = department["code"] if department else None
        hours = case_limit(category, case["category"], department, cal)
        values["due_at"] = _py(cal.add(np.datetime64(now, "s"), hours))
    elif action == "handle":
        values["feedback_at"] = now  # 处理反馈: the handler's report comes with the handling
        values["handling_wh"] = _hours(cal, case["dispatched_at"], now)
        values["handler"] = account.name
    elif action == "supervise":
        level = current["due_level"]
        if level is None:
            raise Refused(_("case {code} is not due yet ({hours} working hours left): chase it once "
                            "it is nearly due", code=code, hours=format(current["hours_left"] or 0, ".1f")))
        before = case.get("supervise_level")
        if before in SUPERVISE_LEVELS and SUPERVISE_LEVELS.index(before) > SUPERVISE_LEVELS.index(level):
            level = before  # a case keeps the highest warning it reached
        values.update(supervise_count=(case.get("supervise_count") or 0) + 1, supervise_level=level)
        detail = current["due_level"]
    elif action == "close":
        values["verify_wh"] = _hours(cal, case["handled_at"], now)
    elif action == "return":
        values.update(handled_at=None, feedback_at=None, handler=None)
    elif action == "send_back":
        # the department that sends it back is the step's detail (the history and the rates name it)
        detail = case.get("department_code")
        values.update(department_code=None, due_at=None, dispatched_at=None, dispatch_wh=None)
    elif action == "evaluate":
        values["evaluation"] = detail = evaluation or "satisfied"
    stored = None
    if photo is not None:
        if account.role not in PHOTOGRAPHERS:
            raise Forbidden(_("a {role} may not add photos", role=who(account)))
        photo[2].mkdir(parents=True, exist_ok=True)
        stored = photo[2] / (uuid.uuid4().hex + ".jpg")
        stored.write_bytes(photo[0].jpeg)
    try:
        with engine.begin() as conn:
            changed = rows.change_incident(conn, case["id"], version, t.sources, values,
                                           rework=action == "return", district=district)
            if not changed:
                if client_id and earlier_step(conn, account, code, client_id, fingerprint):
                    # sent twice at once: the other copy was taken (and brought its own photo)
                    if stored is not None:
                        stored.unlink(missing_ok=True)
                    return {**rows.get_incident(conn, code, district), "replayed": True}
                latest = rows.get_incident(conn, code, district)
                raise VersionConflict(
                    _("case {code} changed while you acted (now version {version})",
                      code=code, version=latest['version']),
                    current=describe([latest], account, cal, catalogue, now, rules=rules,
                                     departments=table)[0],
                    version=latest["version"],
                )
            step_id = rows.add_step(conn, case["id"], t.step, now, account.name, note, detail,
                                    client_id=client_id, client_hash=fingerprint, district_code=district)
            if stored is not None:
                rows.add_photo(conn, case["id"], stored_name=stored.name, content_type="image/jpeg",
                               size=len(photo[0].jpeg), step=t.step, uploaded_by=account.name,
                               original_name=plain_text(photo[1] or "")[:200] or None, step_id=step_id,
                               district_code=district)
    except Exception:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise
    return rows.get_incident(engine, code, district)


def sent_back_by(engine: Engine, incident_id: int, district: str | None = None) -> set[str]:
    """The departments that sent a case back to the 指挥中心 (退回)."""
    return {s["detail"] for s in rows.steps_of(engine, incident_id, district)
            if s["step"] == "sent_back" and s["detail"]}


def _department_for(table: dict[str, dict], category: str, category_name: str, given,
                    sent_back: set[str] | frozenset = frozenset()) -> dict | None:
    """The department a case of ``category`` is dispatched to: the one ``given`` (refused, named,
    when it does not handle the category or sent this case back), else the category's default
    among those that have not sent it back; None when no department handles it (the case stays
    with the 指挥中心 and the grid)."""
    handling = depts.for_category(list(table.values()), category)
    if given is None or given == "":
        # a case sent back goes by default to the next department handling its category
        others = [d for d in handling if d["code"] not in sent_back]
        if sent_back and not others and handling:
            raise Refused(_("every department handling {category} has sent this case back: "
                            "choose one to dispatch it to again", category=category_name),
                          departments=[d["code"] for d in handling])
        return others[0] if others else None
    remaining = [d for d in handling if d["code"] not in sent_back]
    if isinstance(given, str) and given in sent_back and given in table and remaining:
        # back to the department that sent it back only once every other one has too
        raise Refused(_("{name} ({code}) sent this case back; departments that have not: {others}",
                        name=table[given]["name"], code=given,
                        others=", ".join(f"{d['code']} {d['name']}" for d in remaining)),
                      departments=[d["code"] for d in remaining])
    if not isinstance(given, str) or given not in table:
        raise Refused(_("no department {code}", code=repr(given)),
                      departments=[d["code"] for d in handling])
    department = table[given]
    if category not in department["categories"]:
        others = ", ".join(f"{d['code']} {d['name']}" for d in handling) or _("none")
        raise Refused(_("{name} ({code}) does not handle {category}; departments that do: {others}",
                        name=department["name"], code=given, category=category_name, others=others),
                      departments=[d["code"] for d in handling])
    return department


def history(engine: Engine, account: Account, code: str) -> tuple[dict, list[dict], list[dict]]:
    """A case, its steps (oldest first) and its photos' metadata."""
    case = visible_case(engine, account, code)
    table = department_table(engine)
    steps = [{**s, "at": _iso(s["at"]), "detail_label": _detail_label(s["step"], s.get("detail"), table),
              "label": _(STEP_LABELS[s["step"]]) if s["step"] in STEP_LABELS else _("changed")}
             for s in rows.steps_of(engine, case["id"], case["district_code"])]
    photos = [
        {
            "id": p["id"],
            "content_type": p["content_type"],
            "size": p["size"],
            "step": p["step"],
            "step_id": p.get("step_id"),
            # before: with the report, before the handling; after: with the handling or later
            "phase": "after" if p["step"] in ("handled", "feedback", "closed", "evaluated") else "before",
            "uploaded_by": p["uploaded_by"],
            "uploaded_at": _iso(p["uploaded_at"]),
        }
        for p in rows.photos_of(engine, case["id"], case["district_code"])
    ]
    return case, steps, photos


def _detail_label(step: str, detail: str | None, table: dict[str, dict]) -> str | None:
    """What a step chose, in words: the department dispatched to, the evaluation, the 督办 level."""
    if not detail:
        return None
    if step in ("dispatched", "sent_back"):
        return (table.get(detail) or {}).get("name", detail)
    if step == "evaluated":
        return _label(EVALUATION_LABELS, detail) or detail
    if step == "supervised":
        return _label(SUPERVISE_LABELS, detail) or detail
    return detail


def _label(labels: dict[str, str], key: str | None) -> str | None:
    """The translated label of ``key`` in ``labels``, None for an unknown key."""
    label = labels.get(key or "")
    return _(label) if label else None


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


def checked_photo(engine: Engine, data: bytes) -> Photo:
    """An uploaded photo as it is kept (:func:`prepare_photo`), after the checks every way a
    photo comes in shares: no larger than :func:`photo_limit` (413), not empty. The one place
    these are checked: the report form, a step's after-photo and a photo added later."""
    limit = photo_limit(engine)
    if len(data) > limit:
        raise PhotoTooLarge(_("the photo is {p1} MB; at most {p2} MB",
                              p1=format(len(data) / 1048576, '.1f'), p2=format(limit / 1048576, '.0f')))
    if not data:
        raise Refused(_("the photo is empty"))
    return prepare_photo(data)


def add_photo(
    engine: Engine, account: Account, code: str, data: bytes | Photo, filename: str | None, folder: Path
) -> dict:
    """Keep a photo of case ``code`` in ``folder`` (outside the database) and its metadata in it:
    as :func:`prepare_photo` makes it (``data`` the upload, or a photo prepared already)."""
    case = visible_case(engine, account, code)
    if account.role not in PHOTOGRAPHERS:
        raise Forbidden(_("a {role} may not add photos", role=who(account)))
    if not isinstance(data, Photo):
        data = checked_photo(engine, data)
    folder.mkdir(parents=True, exist_ok=True)
    stored = uuid.uuid4().hex + ".jpg"
    (folder / stored).write_bytes(data.jpeg)
    try:
        with engine.begin() as conn:
            # the photo belongs to the step the case is at (the report's, the handling's …)
            photo_id = rows.add_photo(
                conn,
                case["id"],
                step_id=rows.latest_step_id(conn, case["id"], case["district_code"]),
                district_code=case["district_code"],
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
        raise Forbidden(_("a {role} may not assign supervisors", role=who(actor)))
    if not isinstance(user, str) or not user.strip():  # a list here reached the database (503)
        raise Refused(_("user is the name of a supervisor"))
    target = find_user(engine, name=user)
    if target is None:
        raise NotFound(_("no user {user}", user=repr(user)))
    if target.role != "supervisor":
        raise Refused(_("{user} is a {role}, not a supervisor", user=user, role=who(target)))
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


def fill_step_hours(engine: Engine, cal: WorkingCalendar | None = None, *,
                    conn: Connection | None = None) -> int:
    """Work out the step hours of cases that have step times but no hours (the demo, imports),
    vectorised (on ``conn``'s transaction when given: the cases it wrote). Returns how many cases
    were filled."""
    if conn is None:
        with engine.begin() as conn:
            return fill_step_hours(engine, cal, conn=conn)
    cal = cal or WorkingCalendar.from_setting(get_setting(conn, "working_calendar"))
    found = rows.timing_rows(conn)
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
        {"id": int(i), "district_code": found[n][6],
         **{k: (None if math.isnan(v[n]) else round(float(v[n]), 4)) for k, v in hours.items()}}
        for n, i in enumerate(ids)
    ]
    rows.set_step_hours(conn, out)
    return len(out)


# --- after an adoption: open cases placed again -------------------------------------------------


def rederive_places(conn, streets: list[str], districts: list[str] | None = None) -> dict:
    """Place every open case of ``streets`` (of ``districts``, the streets', when given: every
    statement then names them) again in the stored cell and community holding its
    point (on the caller's transaction, after the boundaries and cells changed): a case in a cell
    takes that cell and the cell's community; a case in no cell the community holding its point;
    a case placed only to a community or street (``approximate``) keeps its place unless that
    community no longer exists. Returns how many cases were looked at and moved, and the moves."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from geodata.store import read_layer

    found = rows.open_cases_of_streets(conn, OPEN, streets, districts)
    if not found:
        return {"open": 0, "moved": 0, "moves": []}
    in_districts = {"district_code": list(districts)} if districts is not None else {}
    cells = gpd.GeoDataFrame(pd.concat([read_layer(conn, "grid_cells", prefix={"code": s}, isin=in_districts)
                                        for s in streets], ignore_index=True), crs=4326)
    communities = read_layer(conn, "communities", isin={"street_code": list(streets)} | in_districts)
    points = shapely.points([c["lon"] for c in found], [c["lat"] for c in found])

    def holder(frame, column: str) -> list[str | None]:
        if frame.empty:
            return [None] * len(found)
        tree = shapely.STRtree(frame.geometry.values)
        at, idx = tree.query(points, predicate="intersects")
        out: list[str | None] = [None] * len(found)
        codes = frame[column].to_numpy()
        for p, i in sorted(zip(at.tolist(), idx.tolist(), strict=True), key=lambda x: (x[0], codes[x[1]])):
            if out[p] is None:
                out[p] = str(codes[i])
        return out

    cell_at, cell_home = holder(cells, "code"), holder(cells, "community_code")
    community_at = holder(communities, "code")
    live = set(communities["code"])
    moves, changed = [], []
    for n, case in enumerate(found):
        if case["location_precision"] == "approximate":
            if case["community_code"] is None or case["community_code"] in live:
                continue
            grid, community = None, community_at[n]
        elif cell_at[n] is not None:
            grid, community = cell_at[n], cell_home[n]
        elif community_at[n] is not None:
            grid, community = None, community_at[n]
        else:  # outside the streets' communities (a point beyond the boundary): left as it was
            continue
        street = community[:9] if community else case["street_code"]
        if (grid, community, street) == (case["grid_code"], case["community_code"], case["street_code"]):
            continue
        changed.append({"id": case["id"], "grid_code": grid, "community_code": community,
                        "street_code": street, "district_code": case["district_code"]})
        if (grid, community) != (case["grid_code"], case["community_code"]):  # not only its street filled in
            moves.append({"code": case["code"], "from": [case["grid_code"], case["community_code"]],
                          "to": [grid, community]})
    rows.set_places(conn, changed)
    return {"open": len(found), "moved": len(moves), "moves": moves[:200]}
