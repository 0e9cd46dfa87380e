"""Sign-in, roles and scopes.

Browser users sign in with a password (hashed with scrypt by Werkzeug) and get a session that
ends ``session_hours`` (a setting, default 8; ``GRIDPLAN_SESSION_HOURS`` overrides it) after
signing in, whatever happens in between; every form and state-changing request carries a CSRF
token (Flask-WTF). The session cookie carries the sign-in time and the account's session
generation, and every request checks both against the database (:func:`_load`): signing out,
a new password, a role or scope change and disabling end every session of the account in every
process, a copied cookie too. Sign-ins, refused sign-ins and sign-outs are in the audit log with
the client's address.

Other departments' systems send ``Authorization: Bearer <token>`` (never in the address:
``?api_key=`` is refused, since proxies log addresses); only the token's SHA-256 is stored, and a
token may expire.

Roles: ``admin`` (users, approvals), ``planner`` (plans, layers), ``supervisor`` (scoped to a grid
cell, community or street code), ``viewer`` (read-only). A scope is a code prefix: codes nest, so
a street code covers its communities and cells.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache, wraps
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.security import check_password_hash, generate_password_hash

from geodata.accounts import (
    Account,
    TokenExpired,
    find_token,
    find_user,
    role_word,
)
from geodata.db import DATABASE_ERRORS
from geodata.errors import Refused
from geodata.i18n import N_, _
from geodata.settings import get_value
from layers.administration import end_sessions, record_sign_in, save_token, save_user
from webmap.extensions import bearer_request, engine

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = N_("Please sign in")  # translated by Flask-Login through gettext below

SESSION_HOURS = 8  # the default of the setting session_hours
#: what a session cookie carries besides Flask-Login's keys
SIGNED_IN_AT, GENERATION = "signed_in_at", "generation"


class SignedIn(UserMixin):
    """The Flask-Login wrapper of an :class:`Account`."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def get_id(self) -> str:
        return str(self.account.id)


@login_manager.user_loader
def _load(user_id: str):
    """The signed-in account of this session, or None (the sign-in page, or a 401) when the
    session has ended: reloaded on every request, so a disabled account, a sign-out, a new
    password, role or scope (a newer session generation) and the end of ``session_hours`` end
    the session at once, in every process."""
    account = find_user(engine(), user_id=int(user_id))
    if account is None or account.disabled or session.get(GENERATION) != account.session_generation:
        return None
    started = session.get(SIGNED_IN_AT)
    now = time.time()
    # the time is the server's own, in a cookie it signed: a session without one is from before
    # sessions ended, and one from the future was not made here
    if not isinstance(started, int | float) or not started - 60 <= now < started + session_seconds():
        return None
    return SignedIn(account)


def session_seconds() -> float:
    """How long a session lasts from signing in: ``GRIDPLAN_SESSION_HOURS`` (``SESSION_HOURS``
    in the app's configuration) when set, else the setting ``session_hours`` (default 8)."""
    if "session_seconds" in g:
        return g.session_seconds
    hours = current_app.config.get("SESSION_HOURS")
    if hours is None:
        hours = get_value(engine(), "session_hours", SESSION_HOURS)
    if not _valid_hours(hours):  # a value no check let through must not lock everyone out
        hours = SESSION_HOURS
    g.session_seconds = float(hours) * 3600
    return g.session_seconds


def _valid_hours(hours) -> bool:
    return isinstance(hours, int | float) and not isinstance(hours, bool) and math.isfinite(hours) \
        and 0 < hours <= 24 * 31


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, expiring in the browser when the session ends on the server (the
    sign-in time plus ``session_hours``)."""

    def get_expiration_time(self, app, session):
        started = session.get(SIGNED_IN_AT)
        if session.permanent and isinstance(started, int | float):
            try:
                seconds = session_seconds()
            except DATABASE_ERRORS:  # the answer (a 503) is written already: the server checks anyway
                seconds = app.permanent_session_lifetime.total_seconds()
            return datetime.fromtimestamp(started + seconds, tz=UTC)
        return super().get_expiration_time(app, session)


def _session_hours_from_environment() -> float | None:
    text = os.environ.get("GRIDPLAN_SESSION_HOURS", "").strip()
    if not text:
        return None
    try:
        hours = float(text)
    except ValueError:
        hours = None
    if not _valid_hours(hours):
        raise ValueError(f"GRIDPLAN_SESSION_HOURS={text!r}: give the hours a session lasts, above 0 and "
                         "at most 744")
    return hours


def refuse_token_in_address() -> None:
    """A token in the address (``?api_key=``) is refused before any view runs: proxies, access
    logs and browser histories keep addresses, so a token there is as good as published."""
    if "api_key" in request.args:
        raise TokenInAddress(_("an API token is not accepted in the address (?api_key=): proxies and logs "
                               "keep addresses. Send it in the header Authorization: Bearer <token> (and "
                               "have this token replaced: it has been seen)"))


class TokenInAddress(Refused):
    """``?api_key=`` in the query string: 400, telling the client to use the header."""


def client_address() -> str | None:
    """The client's address as the request gives it (``GRIDPLAN_PROXY_HOPS``: ProxyFix's)."""
    return request.remote_addr


def safe_next(target: str | None) -> str:
    """Where to go after signing in or choosing a language: ``target`` when it is a path on this
    site (one leading ``/``, no scheme or host, no control characters, backslashes or dot
    segments, also once percent-decoded), else the home page."""
    home = url_for("maps.home")
    if not isinstance(target, str) or not target:
        return home
    for text in (target, unquote(target)):
        if "\\" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return home
        # "//host" and "///host" are read by browsers as another host (urlsplit sees no host in
        # the second): one slash, then something else
        if not text.startswith("/") or text.startswith("//"):
            return home
        try:
            parts = urlsplit(text)
        except ValueError:  # an unbalanced [ in what would be the host
            return home
        if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
            return home
        if any(segment in (".", "..") for segment in parts.path.split("/")):
            return home
    return target


def landing(account) -> str:
    """Where signing in leads when no page was asked for: a 网格员 (supervisor) to 我的案件, the
    cases that need them (they work from a phone, case by case); everyone else home."""
    if account.role == "supervisor":
        return url_for("incidents.case_list")
    return url_for("maps.home")


def init_app(app) -> None:
    # always the configured lifetime: Flask's own default (31 days) is already in the config, so
    # setdefault would never apply; the session's real end is checked by _load on the server
    hours = app.config.get("SESSION_HOURS")
    if hours is None:
        hours = app.config["SESSION_HOURS"] = _session_hours_from_environment()
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=hours or SESSION_HOURS)
    app.session_interface = SessionInterface()
    app.before_request(refuse_token_in_address)
    # set, not setdefault: Flask's own defaults (SameSite None) would win (Talisman sets the same)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    login_manager.init_app(app)
    login_manager.localize_callback = _  # the sign-in prompt in the request's language
    app.register_blueprint(bp)
    decoy_hash()  # made now, so that the first unknown name costs no more than the others


@lru_cache(maxsize=1)
def decoy_hash() -> str:
    """A hash made the same way as every password's (scrypt), of a password nobody knows:
    checked against when the name is unknown."""
    return generate_password_hash(secrets.token_urlsafe(32))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(name: str, role: str, password: str, scope: str | None = None, *, actor: str = "cli",
             department: str | None = None) -> Account:
    return save_user(engine(), name, role, generate_password_hash(password), scope, actor=actor,
                     department_code=department)


def add_token(name: str, role: str, scope: str | None = None, *, actor: str = "cli",
              expires_at: datetime | None = None) -> str:
    """Create a token, valid until ``expires_at`` (none: until revoked), and return it; it is
    shown once and never stored in clear (a revoked token stops working at once: only tokens
    not revoked are found)."""
    token = secrets.token_urlsafe(32)
    save_token(engine(), name, role, hash_token(token), scope, actor=actor, expires_at=expires_at)
    return token


def current_account() -> Account | None:
    """The account behind this request: a bearer token, or the signed-in session."""
    if "account" in g:
        return g.account
    account = g.account = None  # also while a refusal below is answered (its page asks again)
    if bearer_request():
        try:
            account = find_token(engine(), hash_token(request.headers["Authorization"][7:].strip()))
        except TokenExpired as exc:
            g.token_refusal = exc  # refused by require(); elsewhere the request is anonymous
    elif current_user.is_authenticated:
        account = current_user.account
    g.account = account
    return account


def require(*roles: str, api: bool = False):
    """Allow only these roles (any role when none are named); 401 or redirect when nobody is
    signed in, 403 for the wrong role."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            account = current_account()
            if account is None:
                if "token_refusal" in g:
                    raise g.token_refusal
                if api or bearer_request():
                    raise Unauthorized(_("sign in, or send Authorization: Bearer <token>"))
                return login_manager.unauthorized()
            if roles and account.role not in roles:
                if api:
                    # the role in words (处置人员, 查看人员), never its key
                    role = role_word(account.role, account.scope_code)
                    raise Forbidden(_("a {role} may not do this", role=role))
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        account = find_user(engine(), name=name)
        # an unknown name costs the same scrypt as a known one, so the answer's time does not
        # tell which names exist
        stored = account.password_hash if account and account.password_hash else decoy_hash()
        matches = check_password_hash(stored, request.form.get("password", ""))
        if matches and account and account.password_hash:
            if account.disabled:
                record_sign_in(engine(), name, address=client_address(), user_id=account.id,
                               refused="disabled")
                refused = _("This account is disabled: ask an administrator")
                return render_template("login.html", refused=refused, name=name), 403
            session.clear()  # nothing of an earlier visitor's session carries over
            session.permanent = True  # the cookie expires when the session ends (SessionInterface)
            session[SIGNED_IN_AT] = int(time.time())
            session[GENERATION] = account.session_generation
            login_user(SignedIn(account))
            record_sign_in(engine(), account.name, address=client_address(), user_id=account.id)
            target = safe_next(request.args.get("next"))
            # no page asked for (or one refused as off the site): the account's own landing
            return redirect(landing(account) if target == url_for("maps.home") else target)
        record_sign_in(engine(), name, address=client_address(), user_id=account.id if account else None,
                       refused="wrong password" if account else "unknown name")
        # said by the form, the name kept: the user retypes the password only
        return render_template("login.html", refused=_("Wrong name or password"), name=name), 401
    return render_template("login.html")


@bp.post("/logout")
def logout():
    """Sign out: this session and every other session of the account end (in every process)."""
    if current_user.is_authenticated:
        account = current_user.account
        end_sessions(engine(), account.id, actor=account.name, address=client_address())
    logout_user()
    session.clear()
    response = redirect(url_for("auth.login"))
    # a shared phone: the pages, case list and offline queue kept for this user go with them
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    return response
