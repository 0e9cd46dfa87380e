"""处置部门 as stored rows: the departments that fix cases, the categories each handles, whom to
call, their own time limits (category → working hours, where the city sets one) and the
categories each is the default for. Who may dispatch to whom is :mod:`layers.incidents.loop`'s
business; only reading, checking and writing the ``departments`` table lives here, every
change recorded in the audit log on the same transaction.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from geodata.audit import record
from geodata.errors import NotFound, Refused
from geodata.i18n import N_, _
from geodata.models import Department

TABLE = Department.__table__
CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
NAME_LENGTH = 100
CONTACT_LENGTH = 200


def _row(row) -> dict:
    return {"code": row.code, "name": row.name, "categories": list(row.categories or []),
            "contact": row.contact, "limits": dict(row.limits or {}),
            "default_for": list(row.default_for or [])}


def list_departments(engine: Engine | Connection) -> list[dict]:
    """Every department, by code."""
    stmt = select(TABLE).order_by(TABLE.c.code)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return [_row(r) for r in conn.execute(stmt)]
    return [_row(r) for r in engine.execute(stmt)]


def get_department(engine: Engine | Connection, code: str) -> dict | None:
    """The department ``code``, or None."""
    stmt = select(TABLE).where(TABLE.c.code == code)
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            row = conn.execute(stmt).one_or_none()
    else:
        row = engine.execute(stmt).one_or_none()
    return _row(row) if row else None


def for_category(departments: list[dict], category: str) -> list[dict]:
    """The departments that handle ``category``, the category's default first (the one that
    names it in ``default_for``, else the first by code)."""
    handling = [d for d in departments if category in d["categories"]]
    return sorted(handling, key=lambda d: (category not in d["default_for"], d["code"]))


#: the fields of a department as messages name them
FIELDS = {"name": N_("name"), "contact": N_("contact")}


def _text(value, field: str, limit: int, required: bool = False) -> str | None:
    what = _(FIELDS[field])
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Refused(_("a department needs a {what}", what=what))
        return None
    if not isinstance(value, str):
        raise Refused(_("the department's {what} must be text", what=what))
    value = value.strip()
    if len(value) > limit:
        raise Refused(_("the department's {what} is {n} characters long; at most {limit}",
                        what=what, n=len(value), limit=limit))
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise Refused(_("the department's {what} holds control characters", what=what))
    return value


def check(data: dict, catalogue: dict) -> dict:
    """A department as given (``code name categories contact limits default_for``), checked
    against the incident catalogue: a category that is not in it, a limit for a category the
    department does not handle, a limit that is not a number of hours, a default for a category
    it does not handle are refused, each named."""
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    code = data.get("code")
    if not isinstance(code, str) or not CODE.match(code):
        raise Refused(_("a department code is 1–16 letters, digits, - or _ (got {code})", code=repr(code)))
    name = _text(data.get("name"), "name", NAME_LENGTH, required=True)
    cats = data.get("categories")
    if isinstance(cats, str):
        cats = [c.strip() for c in cats.split(",") if c.strip()]
    if not isinstance(cats, list) or not cats or not all(isinstance(c, str) for c in cats):
        raise Refused(_("categories is a list of category codes the department handles"))
    unknown = [c for c in cats if c not in catalogue]
    if unknown:
        raise Refused(_("unknown category {p1}: use one of {p2}",
                        p1=", ".join(unknown[:10]), p2=", ".join(sorted(catalogue))))
    cats = list(dict.fromkeys(cats))
    limits = data.get("limits") or {}
    if not isinstance(limits, dict):
        raise Refused(_("limits is a table: category → working hours"))
    clean: dict[str, float] = {}
    for cat, hours in limits.items():
        if cat not in cats:
            raise Refused(_("a time limit for {category}, which {name} does not handle",
                            category=cat, name=name))
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not math.isfinite(hours) \
                or not 0.1 <= hours <= 8760:
            raise Refused(_("the time limit of {category} is {hours}: working hours between 0.1 and 8760",
                            category=cat, hours=repr(hours)))
        clean[cat] = float(hours)
    default_for = data.get("default_for") or []
    if isinstance(default_for, str):
        default_for = [c.strip() for c in default_for.split(",") if c.strip()]
    if not isinstance(default_for, list) or not all(isinstance(c, str) for c in default_for):
        raise Refused(_("default_for is a list of category codes"))
    stray = [c for c in default_for if c not in cats]
    if stray:
        raise Refused(_("{name} cannot be the default for {p1}: it does not handle it",
                        name=name, p1=", ".join(stray)))
    return {"code": code, "name": name, "categories": cats,
            "contact": _text(data.get("contact"), "contact", CONTACT_LENGTH),
            "limits": clean, "default_for": list(dict.fromkeys(default_for))}


def save_department(engine: Engine, data: dict, catalogue: dict, *, actor: str) -> tuple[dict, bool]:
    """Add the department or, when its code exists, change it. Returns it and whether it is new.
    A name another department has is refused."""
    dept = check(data, catalogue)
    with engine.begin() as conn:
        clash = conn.execute(select(TABLE.c.code).where(TABLE.c.name == dept["name"],
                                                        TABLE.c.code != dept["code"])).first()
        if clash:
            raise Refused(_("department {code} is named {name} already", code=clash.code, name=dept["name"]))
        exists = conn.execute(select(TABLE.c.code).where(TABLE.c.code == dept["code"])).first()
        values = {k: v for k, v in dept.items() if k != "code"}
        if exists:
            conn.execute(update(TABLE).where(TABLE.c.code == dept["code"]).values(**values))
        else:
            conn.execute(insert(TABLE).values(code=dept["code"], created_at=datetime.now(), **values))
        record(conn, actor, "department:update" if exists else "department:create", layer="departments",
               object_code=dept["code"], detail=dept)
    return dept, not exists


def next_code(engine: Engine) -> str:
    """A free code for a department added by name only: D01, D02 …"""
    taken = {d["code"] for d in list_departments(engine)}
    n = 1
    while f"D{n:02d}" in taken:
        n += 1
    return f"D{n:02d}"


def require(engine: Engine | Connection, code: str) -> dict:
    """The department ``code``, or :class:`NotFound` naming it."""
    found = get_department(engine, code) if isinstance(code, str) else None
    if found is None:
        raise NotFound(_("no department {code}", code=repr(code)))
    return found
