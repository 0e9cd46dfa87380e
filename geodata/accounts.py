"""Accounts and API tokens as stored rows. Hashing and sessions are the web app's business;
this module only reads and writes the ``users`` and ``api_tokens`` tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from geodata.models import ApiToken, User

ROLES = ("admin", "planner", "supervisor", "viewer")


@dataclass(frozen=True)
class Account:
    """Who is asking: a signed-in user or the holder of an API token."""

    id: int
    name: str
    role: str
    scope_code: str | None
    password_hash: str | None = None
    via_token: bool = False


def _check(role: str, scope_code: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use {', '.join(ROLES)}")
    if role == "supervisor" and not scope_code:
        raise ValueError("a supervisor needs a scope: a grid cell, community or street code")
    if scope_code and not (scope_code.isdigit() and len(scope_code) in (6, 9, 12, 15)):
        raise ValueError(f"scope {scope_code!r} is not a 6/9/12/15-digit district, street, "
                         "community or grid cell code")


def save_user(engine: Engine, name: str, role: str, password_hash: str,
              scope_code: str | None = None) -> Account:
    """Add the account ``name`` or, when it exists, set its role, scope and password."""
    _check(role, scope_code)
    table = User.__table__
    with engine.begin() as conn:
        existing = conn.execute(select(table.c.id).where(table.c.name == name)).scalar_one_or_none()
        values = {"role": role, "scope_code": scope_code, "password_hash": password_hash}
        if existing is None:
            conn.execute(insert(table).values(name=name, created_at=datetime.now(), **values))
        else:
            conn.execute(update(table).where(table.c.id == existing).values(**values))
    return find_user(engine, name=name)


def find_user(engine: Engine, *, name: str | None = None, user_id: int | None = None) -> Account | None:
    table = User.__table__
    stmt = select(table.c.id, table.c.name, table.c.role, table.c.scope_code, table.c.password_hash)
    stmt = stmt.where(table.c.name == name) if name is not None else stmt.where(table.c.id == user_id)
    with engine.connect() as conn:
        row = conn.execute(stmt).one_or_none()
    return Account(*row) if row else None


def save_token(engine: Engine, name: str, role: str, token_sha256: str,
               scope_code: str | None = None) -> None:
    """Store a new token (its hash); a name already used is refused."""
    _check(role, scope_code)
    table = ApiToken.__table__
    with engine.begin() as conn:
        if conn.execute(select(table.c.id).where(table.c.name == name)).first():
            raise ValueError(f"a token named {name!r} exists already")
        conn.execute(insert(table).values(name=name, role=role, scope_code=scope_code,
                                          token_sha256=token_sha256, created_at=datetime.now()))


def find_token(engine: Engine, token_sha256: str) -> Account | None:
    table = ApiToken.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table.c.id, table.c.name, table.c.role, table.c.scope_code)
                           .where(table.c.token_sha256 == token_sha256)).one_or_none()
    return Account(*row, via_token=True) if row else None
