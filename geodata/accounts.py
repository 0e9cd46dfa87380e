"""Accounts and API tokens as stored rows. Hashing and sessions are the web app's business;
this module only reads and writes the ``users`` and ``api_tokens`` tables, and records every
change in the audit log on the same transaction.

A disabled account cannot sign in and its sessions stop working (the web app reloads the
account on every request); a revoked token stops working at once. At least one enabled
administrator always remains, and nobody disables or demotes their own account.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update

from geodata.audit import record
from geodata.errors import Conflict, NotFound, Refused
from geodata.i18n import _
from geodata.models import ApiToken, User

ROLES = ("admin", "planner", "supervisor", "viewer")
LOCALES = ("zh", "en")  # the languages of the web pages and the command line
NAME_LENGTH = 50


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


def _check(role: str, scope_code: str | None) -> None:
    if role not in ROLES:
        raise Refused(_("unknown role {role}: use {p2}", role=repr(role), p2=', '.join(ROLES)))
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
            "disabled": bool(row.disabled), "created_at": row.created_at}


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
              scope_code: str | None = None, *, actor: str = "cli") -> Account:
    """Add the account ``name`` or, when it exists, set its role, scope and password (the
    command line's ``user add``)."""
    _check(role, scope_code)
    check_name(name, "user name")
    table = User.__table__
    with engine.begin() as conn:
        existing = conn.execute(select(table.c.id).where(table.c.name == name)).scalar_one_or_none()
        values = {"role": role, "scope_code": scope_code, "password_hash": password_hash}
        if existing is None:
            existing = conn.execute(insert(table).values(name=name, created_at=datetime.now(), disabled=False,
                                                         **values).returning(table.c.id)).scalar_one()
            action = "user:create"
        else:
            conn.execute(update(table).where(table.c.id == existing).values(**values))
            action = "user:update"
        record(conn, actor, action, layer="users", object_code=str(existing),
               detail={"name": name, "role": role, "scope_code": scope_code, "password": "set"})
    return find_user(engine, name=name)


def create_user(engine: Engine, name: str, role: str, password_hash: str, scope_code: str | None = None,
                *, actor: str) -> dict:
    """A new account; a name already taken is refused (:class:`NameTaken`)."""
    check_name(name, "user name")
    _check(role, scope_code)
    table = User.__table__
    with engine.begin() as conn:
        if conn.execute(select(table.c.id).where(table.c.name == name)).first():
            raise NameTaken(_("a user named {name} exists already", name=repr(name)))
        user_id = conn.execute(insert(table).values(
            name=name, role=role, scope_code=scope_code, password_hash=password_hash, disabled=False,
            created_at=datetime.now()).returning(table.c.id)).scalar_one()
        record(conn, actor, "user:create", layer="users", object_code=str(user_id),
               detail={"name": name, "role": role, "scope_code": scope_code})
        return _user_dict(_user_row(conn, user_id, None))


_UNSET = object()


def update_user(engine: Engine, *, actor: str, user_id: int | None = None, name: str | None = None,
                role: str | None = None, scope_code=_UNSET, disabled: bool | None = None,
                password_hash: str | None = None) -> dict:
    """Change an account's role, scope, disabled flag or password (only what is given).

    Refused: a change that would leave no enabled administrator, and disabling or demoting
    one's own account.
    """
    table = User.__table__
    with engine.begin() as conn:
        row = _user_row(conn, user_id, name)
        new_role = row.role if role is None else role
        new_scope = row.scope_code if scope_code is _UNSET else (scope_code or None)
        _check(new_role, new_scope)
        changes: dict = {}
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
        conn.execute(update(table).where(table.c.id == row.id).values(**changes))
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
                  table.c.disabled, table.c.locale)
    stmt = stmt.where(table.c.name == name) if name is not None else stmt.where(table.c.id == user_id)
    with engine.connect() as conn:
        row = conn.execute(stmt).one_or_none()
    return Account(row.id, row.name, row.role, row.scope_code, row.password_hash,
                   disabled=bool(row.disabled), locale=row.locale) if row else None


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
            "created_at": row.created_at, "revoked_at": row.revoked_at}


def _token_row(conn: Connection, token_id: int | None, name: str | None):
    table = ApiToken.__table__
    stmt = select(table)
    stmt = stmt.where(table.c.id == token_id) if token_id is not None else stmt.where(table.c.name == name)
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFound(_("no token {p1}", p1=repr(token_id if token_id is not None else name)))
    return row


def save_token(engine: Engine, name: str, role: str, token_sha256: str,
               scope_code: str | None = None, *, actor: str = "cli") -> dict:
    """Store a new token (its hash); a name already used, even by a revoked token, is refused."""
    check_name(name, "token name")
    _check(role, scope_code)
    table = ApiToken.__table__
    with engine.begin() as conn:
        if conn.execute(select(table.c.id).where(table.c.name == name)).first():
            raise NameTaken(_("a token named {name} exists already (revoked tokens keep their names): "
                              "choose another name", name=repr(name)))
        token_id = conn.execute(insert(table).values(
            name=name, role=role, scope_code=scope_code, token_sha256=token_sha256,
            created_at=datetime.now()).returning(table.c.id)).scalar_one()
        record(conn, actor, "token:create", layer="api_tokens", object_code=str(token_id),
               detail={"name": name, "role": role, "scope_code": scope_code})
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
    """The account of a token that is not revoked, or None."""
    table = ApiToken.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table.c.id, table.c.name, table.c.role, table.c.scope_code)
                           .where(table.c.token_sha256 == token_sha256, table.c.revoked_at.is_(None))
                           ).one_or_none()
    return Account(*row, via_token=True) if row else None
