"""Accounts and API tokens as stored rows. Hashing and sessions are the web app's business;
this module only reads and writes the ``users`` and ``api_tokens`` tables, and records every
change in the audit log on the same transaction.

A disabled account cannot sign in and its sessions stop working (the web app reloads the
account on every request); a revoked or expired token stops working at once. At least one
enabled administrator always remains, and nobody disables or demotes their own account.

Every account has a *session generation*, carried in its session cookies: signing out, a new
password, a new role or scope and disabling raise it, so that every session made before —
in any process, on any machine, a copied cookie too — stops working with its next request.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import OperationalError

from geodata.audit import record
from geodata.db import SQLITE_BUSY_MS
from geodata.errors import Conflict, GridplanError, NotFound, Refused
from geodata.i18n import N_, _
from geodata.models import ApiToken, User

#: who does what: ``supervisor`` is a 监督员 / 网格员 (a 网格长 when scoped to a community or
#: street), ``dispatcher`` the 指挥中心's 受理员, 派遣员 and 值班长, ``handler`` a 处置部门's staff
#: (their account names the department)
ROLES = ("admin", "planner", "supervisor", "viewer", "dispatcher", "handler")
#: each role as people read it (a supervisor by their scope: :func:`role_word`)
ROLE_WORDS = {
    "admin": N_("administrator"), "planner": N_("planner"), "supervisor": N_("grid supervisor"),
    "viewer": N_("viewer"), "dispatcher": N_("command centre (dispatcher)"),
    "handler": N_("department handler"),
}
LOCALES = ("zh", "en")  # the languages of the web pages and the command line
NAME_LENGTH = 50
#: a token's last use is written at most this often (one write a minute, not one a request)
LAST_USED_EVERY = timedelta(minutes=1)
#: what raises an account's session generation (see the module's description)
ENDS_SESSIONS = ("password_hash", "role", "scope_code", "disabled", "department_code")


class TokenExpired(GridplanError):
    """A token past its expiry: 401, naming when it expired."""

    status = 401
    title = N_("Unauthorized")


class NameTaken(Conflict, ValueError):
    """A user or token name already in use (409; a ValueError for the command line)."""


@dataclass(frozen=True)
class Account:
    """Who is asking: a signed-in user or the holder of an API token."""

    id: int
    name: str
    role: str
    scope_code: str | None
    password_hash: str | None = None
    via_token: bool = False
    disabled: bool = False
    locale: str | None = None
    #: the session generation a session cookie must carry (users only)
    session_generation: int = 0
    #: the 处置部门 a handler works for
    department_code: str | None = None


def role_word(role: str, scope_code: str | None = None) -> str:
    """A role in words in the reader's language, never its key: a supervisor scoped to a grid
    cell is a 监督员 (grid inspector), one scoped to a community, street or district a 网格长
    (grid leader); an unknown role is given as it is."""
    if role == "supervisor" and scope_code:
        return _("grid inspector") if len(scope_code) > 12 else _("grid leader")
    word = ROLE_WORDS.get(role)
    return _(word) if word else role


def _check(role: str, scope_code: str | None, department_code: str | None = None) -> None:
    if role not in ROLES:
        raise Refused(_("unknown role {role}: use {p2}", role=repr(role), p2=', '.join(ROLES)))
    if role == "handler" and not department_code:
        raise Refused(_("a handler needs a department (the one they work for)"))
    if role != "handler" and department_code:
        raise Refused(_("only a handler belongs to a department, not a {role}", role=role))
    if role == "supervisor" and not scope_code:
        raise Refused(_("a supervisor needs a scope: a grid cell, community or street code"))
    if scope_code and not (scope_code.isdigit() and len(scope_code) in (6, 9, 12, 15)):
        raise Refused(_("scope {scope_code} is not a 6/9/12/15-digit district, street, community or grid "
                        "cell code", scope_code=repr(scope_code)))


def check_name(name: str, what: str = "name") -> str:
    """A user or token name: 1–50 characters, no spaces at either end, nothing unprintable."""
    if not isinstance(name, str) or not name.strip():
        raise Refused(_("a {what} is required", what=what))
    if name != name.strip():
        raise Refused(_("the {what} {name} starts or ends with a space", what=what, name=repr(name)))
    if len(name) > NAME_LENGTH:
        raise Refused(_("the {what} is {n_name} characters long; at most {NAME_LENGTH}",
                        what=what, n_name=len(name), NAME_LENGTH=NAME_LENGTH))
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise Refused(_("the {what} {name} holds control characters", what=what, name=repr(name)))
    return name


def _user_dict(row) -> dict:
    return {"id": row.id, "name": row.name, "role": row.role, "scope_code": row.scope_code,
            "department_code": getattr(row, "department_code", None),
            "disabled": bool(row.disabled), "created_at": row.created_at,
            "last_sign_in_at": row.last_sign_in_at}


def _user_row(conn: Connection, user_id: int | None, name: str | None):
    table = User.__table__
    stmt = select(table)
    stmt = stmt.where(table.c.id == user_id) if user_id is not None else stmt.where(table.c.name == name)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFound(_("no user {p1}", p1=repr(user_id if user_id is not None else name)))
    return row


def _enabled_admins(conn: Connection) -> int:
    table = User.__table__
    return conn.execute(select(func.count()).select_from(table)
                        .where(table.c.role == "admin", table.c.disabled.is_(False))).scalar_one()


# --- users --------------------------------------------------------------------------------------


def save_user(engine: Engine, name: str, role: str, password_hash: str,
              scope_code: str | None = None, *, actor: str = "cli",
              department_code: str | None = None) -> Account:
    """Add the account ``name`` or, when it exists, set its role, scope, department and password
    (the command line's ``user add``)."""
    _check(role, scope_code, department_code)
    check_name(name, "user name")
    table = User.__table__
    with engine.begin() as conn:
        _known_department(conn, department_code)
        existing = conn.execute(select(table.c.id).where(table.c.name == name)).scalar_one_or_none()
        values = {"role": role, "scope_code": scope_code, "password_hash": password_hash,
                  "department_code": department_code}
        if existing is None:
            existing = conn.execute(insert(table).values(name=name, created_at=datetime.now(), disabled=False,
                                                         **values).returning(table.c.id)).scalar_one()
            action = "user:create"
        else:  # a new password (and role, scope): the sessions made with the old ones end
            conn.execute(update(table).where(table.c.id == existing)
                         .values(session_generation=table.c.session_generation + 1, **values))
            action = "user:update"
        record(conn, actor, action, layer="users", object_code=str(existing),
               detail={"name": name, "role": role, "scope_code": scope_code, "password": "set",
                       **({"department_code": department_code} if department_code else {})})
    return find_user(engine, name=name)


def create_user(engine: Engine, name: str, role: str, password_hash: str, scope_code: str | None = None,
                *, actor: str, department_code: str | None = None) -> dict:
    """A new account; a name already taken is refused (:class:`NameTaken`)."""
    check_name(name, "user name")
    _check(role, scope_code, department_code)
    table = User.__table__
    with engine.begin() as conn:
        _known_department(conn, department_code)
        if conn.execute(select(table.c.id).where(table.c.name == name)).first():
            raise NameTaken(_("a user named {name} exists already", name=repr(name)))
        user_id = conn.execute(insert(table).values(
            name=name, role=role, scope_code=scope_code, password_hash=password_hash, disabled=False,
            department_code=department_code, created_at=datetime.now()).returning(table.c.id)).scalar_one()
        record(conn, actor, "user:create", layer="users", object_code=str(user_id),
               detail={"name": name, "role": role, "scope_code": scope_code,
                       **({"department_code": department_code} if department_code else {})})
        return _user_dict(_user_row(conn, user_id, None))


_UNSET = object()


def _known_department(conn: Connection, code: str | None) -> None:
    """Refuse a department code that names no department."""
    if code is None:
        return
    from geodata.models import Department

    table = Department.__table__
    if conn.execute(select(table.c.code).where(table.c.code == code)).first() is None:
        raise Refused(_("no department {code}", code=repr(code)))


def update_user(engine: Engine, *, actor: str, user_id: int | None = None, name: str | None = None,
                role: str | None = None, scope_code=_UNSET, disabled: bool | None = None,
                password_hash: str | None = None, department_code=_UNSET) -> dict:
    """Change an account's role, scope, disabled flag or password (only what is given).

    Refused: a change that would leave no enabled administrator, and disabling or demoting
    one's own account.
    """
    table = User.__table__
    with engine.begin() as conn:
        row = _user_row(conn, user_id, name)
        new_role = row.role if role is None else role
        new_scope = row.scope_code if scope_code is _UNSET else (scope_code or None)
        new_department = row.department_code if department_code is _UNSET else (department_code or None)
        if new_role != "handler":
            new_department = None  # a handler made something else leaves their department
        _check(new_role, new_scope, new_department)
        _known_department(conn, new_department)
        changes: dict = {}
        if new_department != row.department_code:
            changes["department_code"] = new_department
        if new_role != row.role:
            changes["role"] = new_role
        if new_scope != row.scope_code:
            changes["scope_code"] = new_scope
        if disabled is not None and bool(disabled) != bool(row.disabled):
            changes["disabled"] = bool(disabled)
        if password_hash:
            changes["password_hash"] = password_hash
        if not changes:
            return _user_dict(row)
        if row.name == actor and (changes.get("disabled") or changes.get("role", "admin") != "admin"):
            raise Refused(_("you cannot disable or demote your own account; ask another administrator"))
        values = dict(changes)
        if any(k in changes for k in ENDS_SESSIONS):  # every open session of the account ends
            values["session_generation"] = table.c.session_generation + 1
        conn.execute(update(table).where(table.c.id == row.id).values(**values))
        if row.role == "admin" and not row.disabled and _enabled_admins(conn) == 0:
            raise Refused(_("at least one enabled administrator must remain"))
        detail = {k: ("set" if k == "password_hash" else v) for k, v in changes.items()}
        detail = {("password" if k == "password_hash" else k): v for k, v in detail.items()}
        action = ("user:disable" if changes.get("disabled") else "user:enable" if "disabled" in changes
                  and len(changes) == 1 else "user:update")
        record(conn, actor, action, layer="users", object_code=str(row.id),
               detail={"name": row.name, **detail})
        return _user_dict(_user_row(conn, row.id, None))


def list_users(engine: Engine) -> list[dict]:
    """Every account (no password hashes), by name."""
    table = User.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.name)).all()
    return [_user_dict(r) for r in rows]


def find_user(engine: Engine, *, name: str | None = None, user_id: int | None = None) -> Account | None:
    """The account by name or id (disabled ones too: the caller decides), or None."""
    table = User.__table__
    stmt = select(table.c.id, table.c.name, table.c.role, table.c.scope_code, table.c.password_hash,
                  table.c.disabled, table.c.locale, table.c.session_generation, table.c.department_code)
    stmt = stmt.where(table.c.name == name) if name is not None else stmt.where(table.c.id == user_id)
    with engine.connect() as conn:
        row = conn.execute(stmt).one_or_none()
    return Account(row.id, row.name, row.role, row.scope_code, row.password_hash,
                   disabled=bool(row.disabled), locale=row.locale,
                   session_generation=row.session_generation or 0,
                   department_code=row.department_code) if row else None


def end_sessions(engine: Engine, user_id: int, *, actor: str, address: str | None) -> None:
    """Sign ``user_id`` out everywhere (raise the session generation) and record the sign-out
    with the client's address."""
    table = User.__table__
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == user_id)
                     .values(session_generation=table.c.session_generation + 1))
        record(conn, actor, "sign-out", layer="users", object_code=str(user_id), detail={"address": address})


def record_sign_in(engine: Engine, name: str, *, address: str | None, user_id: int | None = None,
                   refused: str | None = None) -> None:
    """Record a sign-in, or a refused one (``refused``: why — ``wrong password``, ``unknown
    name``, ``disabled``) under the name that was typed, with the client's address."""
    typed = "".join(c if c.isprintable() else "?" for c in name[:NAME_LENGTH]) or "?"
    detail: dict = {"address": address}
    if refused:
        detail["reason"] = refused
    with engine.begin() as conn:
        if not refused and user_id is not None:
            table = User.__table__
            conn.execute(update(table).where(table.c.id == user_id).values(last_sign_in_at=datetime.now()))
        record(conn, typed, "sign-in:refused" if refused else "sign-in", layer="users",
               object_code=str(user_id) if user_id is not None else None, detail=detail)


def set_locale(engine: Engine, user_id: int, locale: str | None) -> None:
    """Keep the language ``user_id`` chose for the web pages (None: follow the browser)."""
    if locale is not None and locale not in LOCALES:
        raise Refused(_("unknown language {locale}: use {choices}", locale=repr(locale),
                        choices=", ".join(LOCALES)))
    table = User.__table__
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == user_id).values(locale=locale))


# --- tokens -------------------------------------------------------------------------------------


def _token_dict(row) -> dict:
    return {"id": row.id, "name": row.name, "role": row.role, "scope_code": row.scope_code,
            "created_at": row.created_at, "revoked_at": row.revoked_at, "expires_at": row.expires_at,
            "last_used_at": row.last_used_at,
            "expired": row.expires_at is not None and row.expires_at <= datetime.now()}


def parse_expiry(text: str | None) -> datetime | None:
    """A token's expiry as typed: ``YYYY-MM-DD`` (valid through that day) or ``YYYY-MM-DDTHH:MM``
    (local time); empty: none. Anything else, or a time already past, is refused."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    refused = Refused(_("expires_at {text} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)",
                        text=repr(text[:40])))
    try:
        when = datetime.fromisoformat(text)
        if not 2000 <= when.year <= 2199:  # and 9999-12-31 with an offset overflows below
            raise refused
        if "T" not in text and " " not in text:
            # a day alone: through its last second (shown as 23:59 of that day, not the next midnight)
            when += timedelta(days=1, seconds=-1)
        if when.tzinfo is not None:  # stored times are the server's local time
            when = when.astimezone().replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise refused from None
    return check_expiry(when)


def check_expiry(expires_at: datetime | None) -> datetime | None:
    """A new token's expiry: none (until revoked) or a time still to come."""
    if expires_at is not None and expires_at <= datetime.now():
        raise Refused(_("the expiry {when} has passed already: choose a time to come",
                        when=expires_at.isoformat(sep=" ", timespec="minutes")))
    return expires_at


def _token_row(conn: Connection, token_id: int | None, name: str | None):
    table = ApiToken.__table__
    stmt = select(table)
    stmt = stmt.where(table.c.id == token_id) if token_id is not None else stmt.where(table.c.name == name)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFound(_("no token {p1}", p1=repr(token_id if token_id is not None else name)))
    return row


def save_token(engine: Engine, name: str, role: str, token_sha256: str,
               scope_code: str | None = None, *, actor: str = "cli",
               expires_at: datetime | None = None) -> dict:
    """Store a new token (its hash), valid until ``expires_at`` (none: until revoked); a name
    already used, even by a revoked token, is refused."""
    check_name(name, "token name")
    _check(role, scope_code)
    check_expiry(expires_at)
    table = ApiToken.__table__
    with engine.begin() as conn:
        if conn.execute(select(table.c.id).where(table.c.name == name)).first():
            raise NameTaken(_("a token named {name} exists already (revoked tokens keep their names): "
                              "choose another name", name=repr(name)))
        token_id = conn.execute(insert(table).values(
            name=name, role=role, scope_code=scope_code, token_sha256=token_sha256,
            created_at=datetime.now(), expires_at=expires_at).returning(table.c.id)).scalar_one()
        until = expires_at.isoformat(sep=" ", timespec="minutes") if expires_at else None
        record(conn, actor, "token:create", layer="api_tokens", object_code=str(token_id),
               detail={"name": name, "role": role, "scope_code": scope_code, "expires_at": until})
        return _token_dict(_token_row(conn, token_id, None))


def update_token(engine: Engine, *, actor: str, token_id: int | None = None, name: str | None = None,
                 role: str | None = None, scope_code=_UNSET) -> dict:
    """Change a token's role or scope (only what is given); revoked tokens stay revoked."""
    table = ApiToken.__table__
    with engine.begin() as conn:
        row = _token_row(conn, token_id, name)
        if row.revoked_at is not None:
            raise Refused(_("token {name} is revoked; make a new one", name=repr(row.name)))
        new_role = row.role if role is None else role
        new_scope = row.scope_code if scope_code is _UNSET else (scope_code or None)
        _check(new_role, new_scope)
        changes = {k: v for k, v, old in (("role", new_role, row.role),
                                          ("scope_code", new_scope, row.scope_code)) if v != old}
        if changes:
            conn.execute(update(table).where(table.c.id == row.id).values(**changes))
            record(conn, actor, "token:update", layer="api_tokens", object_code=str(row.id),
                   detail={"name": row.name, **changes})
        return _token_dict(_token_row(conn, row.id, None))


def revoke_token(engine: Engine, *, actor: str, token_id: int | None = None, name: str | None = None) -> dict:
    """Revoke a token: it stops working with the next request."""
    table = ApiToken.__table__
    with engine.begin() as conn:
        row = _token_row(conn, token_id, name)
        if row.revoked_at is not None:
            raise Refused(_("token {name} was revoked already on {p2}",
                            name=repr(row.name), p2=row.revoked_at.isoformat(sep=' ', timespec='minutes')))
        conn.execute(update(table).where(table.c.id == row.id).values(revoked_at=datetime.now()))
        record(conn, actor, "token:revoke", layer="api_tokens", object_code=str(row.id),
               detail={"name": row.name})
        return _token_dict(_token_row(conn, row.id, None))


def list_tokens(engine: Engine) -> list[dict]:
    """Every token (never its hash), by name."""
    table = ApiToken.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.name)).all()
    return [_token_dict(r) for r in rows]


def find_token(engine: Engine, token_sha256: str) -> Account | None:
    """The account of a token that is not revoked, or None; a token past its expiry is
    :class:`TokenExpired`. Each use is noted (``last_used_at``, written at most once a minute)."""
    table = ApiToken.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table.c.id, table.c.name, table.c.role, table.c.scope_code,
                                  table.c.expires_at, table.c.last_used_at)
                           .where(table.c.token_sha256 == token_sha256, table.c.revoked_at.is_(None))
                           ).one_or_none()
    if row is None:
        return None
    now = datetime.now()
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenExpired(_("the token {name} expired on {when}: ask an administrator for a new one",
                             name=repr(row.name), when=row.expires_at.isoformat(sep=" ", timespec="minutes")))
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        _note_use(engine, row.id, now)
    return Account(row.id, row.name, row.role, row.scope_code, via_token=True)


def _note_use(engine: Engine, token_id: int, now: datetime) -> None:
    """``last_used_at`` written without waiting: while an import holds SQLite's write lock (or
    PostgreSQL's row), the use goes unnoted and the request goes on at once — waiting the
    database's busy timeout on every token request would stall them all."""
    table = ApiToken.__table__
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")
            try:
                with conn.begin():
                    if not sqlite:
                        conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
                    conn.execute(update(table).where(table.c.id == token_id).values(last_used_at=now))
            finally:
                if sqlite:
                    conn.connection.dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    except OperationalError:  # busy, locked or read-only: the use goes unnoted, the request on
        pass


# --- after an adoption: scopes passed to the successor areas ------------------------------------


def scoped_accounts(conn: Connection, codes) -> list[dict]:
    """The users and tokens whose scope is one of ``codes`` (``kind`` user or token, name,
    role, scope_code)."""
    codes = sorted(set(codes))
    out: list[dict] = []
    for kind, table in (("user", User.__table__), ("token", ApiToken.__table__)):
        for start in range(0, len(codes), 500):
            rows = conn.execute(select(table.c.id, table.c.name, table.c.role, table.c.scope_code)
                                .where(table.c.scope_code.in_(codes[start:start + 500]))).all()
            out += [{"kind": kind, "id": i, "name": n, "role": r, "scope_code": s} for i, n, r, s in rows]
    return out


def pass_scopes(conn: Connection, successors: dict[str, str], actor: str) -> list[dict]:
    """Give every user and token scoped to a code of ``successors`` (a cell or community an
    adoption ended → the one holding most of it now) the successor's code, on the caller's
    transaction, each change audited. The area is the same ground under a new code, so the
    account's sessions go on. Returns ``{kind, name, from, to}`` for each scope passed on."""
    passed = []
    for account in scoped_accounts(conn, [c for c, s in successors.items() if s and s != c]):
        new = successors[account["scope_code"]]
        table = User.__table__ if account["kind"] == "user" else ApiToken.__table__
        conn.execute(update(table).where(table.c.id == account["id"]).values(scope_code=new))
        layer = "users" if account["kind"] == "user" else "api_tokens"
        record(conn, actor, f"{account['kind']}:update", layer=layer, object_code=str(account["id"]),
               detail={"name": account["name"], "scope_code": new})
        passed.append({"kind": account["kind"], "name": account["name"], "from": account["scope_code"],
                       "to": new})
    return passed
