"""Sign-in, roles and scopes.

Browser users sign in with a password (hashed with scrypt by Werkzeug) and get a session that
expires; every form and state-changing request carries a CSRF token (Flask-WTF). Other
departments' systems send ``Authorization: Bearer <token>``; only the token's SHA-256 is stored.

Roles: ``admin`` (users, approvals), ``planner`` (plans, layers), ``supervisor`` (scoped to a grid
cell, community or street code), ``viewer`` (read-only). A scope is a code prefix: codes nest, so
a street code covers its communities and cells.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from functools import lru_cache, wraps

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.security import check_password_hash, generate_password_hash

from geodata.accounts import Account, find_token, find_user, save_token, save_user
from geodata.i18n import N_, _
from webmap.extensions import bearer_request, engine

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = N_("Please sign in")  # translated by Flask-Login through gettext below

SESSION_LIFETIME = timedelta(hours=8)


class SignedIn(UserMixin):
    """The Flask-Login wrapper of an :class:`Account`."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def get_id(self) -> str:
        return str(self.account.id)


@login_manager.user_loader
def _load(user_id: str):
    account = find_user(engine(), user_id=int(user_id))
    # reloaded on every request: a disabled account's sessions stop working at once
    return SignedIn(account) if account and not account.disabled else None


def init_app(app) -> None:
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", SESSION_LIFETIME)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
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


def add_user(name: str, role: str, password: str, scope: str | None = None, *, actor: str = "cli") -> Account:
    return save_user(engine(), name, role, generate_password_hash(password), scope, actor=actor)


def add_token(name: str, role: str, scope: str | None = None, *, actor: str = "cli") -> str:
    """Create a token and return it; it is shown once and never stored in clear (a revoked
    token stops working at once: only tokens not revoked are found)."""
    token = secrets.token_urlsafe(32)
    save_token(engine(), name, role, hash_token(token), scope, actor=actor)
    return token


def current_account() -> Account | None:
    """The account behind this request: a bearer token, or the signed-in session."""
    if "account" in g:
        return g.account
    account = None
    if bearer_request():
        account = find_token(engine(), hash_token(request.headers["Authorization"][7:].strip()))
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
                if api or bearer_request():
                    raise Unauthorized(_("sign in, or send Authorization: Bearer <token>"))
                return login_manager.unauthorized()
            if roles and account.role not in roles:
                if api:
                    raise Forbidden(_("the role {role} may not do this", role=account.role))
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
                flash(_("This account is disabled: ask an administrator"))
                return render_template("login.html"), 403
            session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME
            login_user(SignedIn(account))
            target = request.args.get("next", "")
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("maps.home")
            return redirect(target)
        flash(_("Wrong name or password"))
        return render_template("login.html"), 401
    return render_template("login.html")


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
