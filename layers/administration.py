"""Administration as the domain sees it: accounts, API tokens, settings, a user's language and
the record of sign-ins — every change the web app makes to them goes through here.

Storage (:mod:`geodata.accounts`, :mod:`geodata.settings`) checks each value and records the
change in the audit log on the same transaction; this module is the one door the web (and the
command line) uses to make those changes, so that a rule about who may change what, or what
follows a change, has one place to live (``docs/domain.md`` §4: reads for lists and look-ups may
go to storage; every change goes through ``layers/``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from geodata import accounts, settings
from geodata.accounts import Account


def save_user(engine: Engine, name: str, role: str, password_hash: str, scope_code: str | None = None,
              *, actor: str = "cli", department_code: str | None = None) -> Account:
    """Add the account ``name`` or, when it exists, set its role, scope, department and password
    (the command line's ``user add``)."""
    return accounts.save_user(engine, name, role, password_hash, scope_code, actor=actor,
                              department_code=department_code)


def create_user(engine: Engine, name: str, role: str, password_hash: str, scope_code: str | None = None,
                *, actor: str, department_code: str | None = None) -> dict:
    """A new account (the administrator's desk); a name already taken is refused."""
    return accounts.create_user(engine, name, role, password_hash, scope_code, actor=actor,
                                department_code=department_code)


def update_user(engine: Engine, *, actor: str, user_id: int | None = None, name: str | None = None,
                **changes) -> dict:
    """Change the account ``user_id`` (or named ``name``, as the command line names it): only what
    ``changes`` names (``role``, ``scope_code``, ``disabled``, ``password_hash``,
    ``department_code``); the last enabled administrator stays."""
    return accounts.update_user(engine, actor=actor, user_id=user_id, name=name, **changes)


def save_token(engine: Engine, name: str, role: str, token_sha256: str, scope_code: str | None = None,
               *, actor: str = "cli", expires_at: datetime | None = None) -> dict:
    """A new API token for another department's system, kept by its hash only."""
    return accounts.save_token(engine, name, role, token_sha256, scope_code, actor=actor,
                               expires_at=expires_at)


def update_token(engine: Engine, *, actor: str, token_id: int, **changes) -> dict:
    """Change a token's role or scope (only what ``changes`` names)."""
    return accounts.update_token(engine, actor=actor, token_id=token_id, **changes)


def revoke_token(engine: Engine, *, actor: str, token_id: int | None = None, name: str | None = None) -> dict:
    """Revoke the token ``token_id`` (or named ``name``): it stops working at once."""
    return accounts.revoke_token(engine, actor=actor, token_id=token_id, name=name)


def save_setting(engine: Engine, key: str, value, *, actor: str, source: str | None = None) -> dict:
    """Change setting ``key`` (and the source it cites), its shape and bounds checked."""
    return settings.save_setting(engine, key, value, actor=actor, source=source)


def set_locale(engine: Engine, user_id: int, locale: str | None) -> None:
    """Keep the language a user chose for the pages (None: follow the browser)."""
    accounts.set_locale(engine, user_id, locale)


def record_sign_in(engine: Engine, name: str, *, address: str | None, user_id: int | None = None,
                   refused: str | None = None) -> None:
    """Record a sign-in, or a refused one (``refused`` says why), in the audit log."""
    accounts.record_sign_in(engine, name, address=address, user_id=user_id, refused=refused)


def end_sessions(engine: Engine, user_id: int, *, actor: str, address: str | None) -> None:
    """Sign a user out everywhere (every session of theirs stops working), recorded."""
    accounts.end_sessions(engine, user_id, actor=actor, address=address)
