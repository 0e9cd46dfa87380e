"""Security headers and cookies on every response (Flask-Talisman).

The Content-Security-Policy allows scripts only from this site or with the request's nonce
(``csp_nonce()`` in templates; the inline scripts folium writes get it in
:func:`webmap.maps.render_map`), images only from this site and the base map's tile host,
and no framing (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``). Styles may be
inline: Leaflet and folium position every map element with ``style`` attributes.

gridplan is served on loopback behind the city's proxy, so HTTPS redirects and HSTS are off
by default; ``GRIDPLAN_HTTPS=1`` turns them on and makes the session cookie ``Secure``.
``GRIDPLAN_PROXY_HOPS=N`` trusts the ``X-Forwarded-For``/``-Proto``/``-Host`` headers of N
proxies in front (the client's address for the login limits, ``https`` for the redirect).
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

from flask import Flask, Request, Response, flash, g, make_response, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_talisman import Talisman
from werkzeug.exceptions import BadRequest
from werkzeug.middleware.proxy_fix import ProxyFix

import geodata.rate_limits  # noqa: F401  (registers the gridplan+db:// storage)
from geodata.i18n import _
from webmap.errors import problem, wants_json

talisman = Talisman()


class GuardedRequest(Request):
    """A request whose JSON body nested deeper than Python's parser goes (``[[[[…]]]]`` a hundred
    thousand deep) is a 400 that says so, not the ``RecursionError`` (500) it was."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:  # even when silent: no caller wants a body like that, so name it
            raise BadRequest(_("the JSON body is nested too deeply")) from None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def tile_sources(url: str | None, subdomains: str) -> list[str]:
    """The origins a Leaflet tile URL template loads from (one per subdomain ``{s}``); none for
    a URL on this site."""
    if not url:
        return []
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return []
    hosts = [parts.netloc.replace("{s}", s) for s in subdomains] if "{s}" in parts.netloc else [parts.netloc]
    return [f"{parts.scheme}://{host}" for host in dict.fromkeys(hosts)]


class _ImageSources:
    """``img-src``: this site, data: URLs (Leaflet's icons) and the tile hosts of the base map
    the page draws (:func:`webmap.maps.build_map` records them in ``g.tile_sources``); read
    when each response's header is written."""

    def __iter__(self):
        yield "'self'"
        yield "data:"
        yield from g.get("tile_sources", ())


def csp_nonce() -> str:
    """This request's nonce for inline scripts (templates call ``csp_nonce()`` too)."""
    return getattr(request, "csp_nonce", "")


def content_security_policy() -> dict:
    return {
        "default-src": "'self'",
        "script-src": "'self'",  # and the request's nonce (content_security_policy_nonce_in)
        "style-src": "'self' 'unsafe-inline'",
        "img-src": _ImageSources(),
        "connect-src": "'self'",
        "font-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }


def init_app(app: Flask) -> None:
    """Headers and cookie flags on every response; ``HTTPS`` (``GRIDPLAN_HTTPS``) turns on
    the redirect to HTTPS, HSTS and the ``Secure`` session cookie."""
    app.request_class = GuardedRequest
    app.config.setdefault("HTTPS", _flag("GRIDPLAN_HTTPS"))
    app.config.setdefault("PROXY_HOPS", int(os.environ.get("GRIDPLAN_PROXY_HOPS", "0") or 0))
    https = bool(app.config["HTTPS"])
    hops = int(app.config["PROXY_HOPS"])
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    talisman.init_app(
        app,
        force_https=https,
        strict_transport_security=https,
        session_cookie_secure=https,
        session_cookie_http_only=True,
        session_cookie_samesite="Lax",
        frame_options="DENY",
        content_security_policy=content_security_policy(),
        content_security_policy_nonce_in=["script-src"],
        referrer_policy="same-origin",
        x_content_type_options=True,
    )
    app.config["SESSION_COOKIE_SECURE"] = https
    app.before_request(refuse_nul)


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def refuse_nul() -> Response | None:
    """A NUL character in a path part, a query parameter, a form field or a JSON text is refused
    with a 400 before any view runs: no text gridplan keeps has one, SQLite's ``LIKE`` would read
    the pattern only up to it (``q=%00`` found everything) and PostgreSQL refuses it outright."""
    parts = [*(request.view_args or {}).values(), *request.args.keys(), *request.args.values()]
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        parts += [*request.form.keys(), *request.form.values()]
        if request.is_json:
            parts.append(request.get_json(silent=True))
    if any(_has_nul(p) for p in parts):
        message = _("a text may not contain the NUL character (\\0)")
        if wants_json():
            return problem(400, "Bad Request", message, "NulCharacter")
        return make_response(message, 400)
    return None


# --- sign-in limits -------------------------------------------------------------------------------

#: failed sign-ins allowed per account name and per client address; past the first limit a
#: guesser waits out the minute (slowed), past the second the hour (refused)
LOGIN_LIMIT_PER_ACCOUNT = "5 per minute; 20 per hour"
LOGIN_LIMIT_PER_ADDRESS = "20 per minute; 100 per hour"


def _account_key() -> str:
    # names are at most 50 characters; whatever is typed, the key stays short
    return "account:" + request.form.get("name", "").strip()[:60]


def _address_key() -> str:
    return "address:" + (request.remote_addr or "unknown")


def _failed(response: Response) -> bool:
    """Only wrong names or passwords count: a planner who signs in is not slowed."""
    return response.status_code == 401


def _refusal(limit) -> Response:
    """429 with ``Retry-After``: the sign-in page with a message, or problem details for JSON."""
    wait = max(1, int(limit.reset_at - time.time()))
    minutes = -(-wait // 60)
    message = _("Too many failed sign-ins: try again in {minutes} min. If you have forgotten your "
                "password, ask an administrator.", minutes=minutes)
    if wants_json():
        response = problem(429, "Too Many Requests", message, "TooManySignIns")
    else:
        flash(message)
        response = make_response(render_template("login.html"), 429)
    response.headers["Retry-After"] = str(wait)
    return response


def limit_sign_in(app: Flask) -> Limiter:
    """Count failed sign-ins per account and per address (``LOGIN_LIMIT_PER_ACCOUNT`` and
    ``LOGIN_LIMIT_PER_ADDRESS``, from ``GRIDPLAN_LOGIN_LIMIT_PER_ACCOUNT``/``…_ADDRESS``) in the
    database (:mod:`geodata.rate_limits`: shared by every process); past a limit, every sign-in
    of that account or from that address is refused with a 429 until the window ends."""
    app.config.setdefault("LOGIN_LIMIT_PER_ACCOUNT",
                          os.environ.get("GRIDPLAN_LOGIN_LIMIT_PER_ACCOUNT") or LOGIN_LIMIT_PER_ACCOUNT)
    app.config.setdefault("LOGIN_LIMIT_PER_ADDRESS",
                          os.environ.get("GRIDPLAN_LOGIN_LIMIT_PER_ADDRESS") or LOGIN_LIMIT_PER_ADDRESS)
    app.config.setdefault("RATELIMIT_STORAGE_URI", "gridplan+db://")
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"url": app.config["DATABASE_URL"]})
    limiter = Limiter(key_func=_address_key, app=app, strategy="fixed-window")
    view = app.view_functions["auth.login"]
    for limit, key in ((app.config["LOGIN_LIMIT_PER_ACCOUNT"], _account_key),
                       (app.config["LOGIN_LIMIT_PER_ADDRESS"], _address_key)):
        view = limiter.limit(limit, key_func=key, methods=["POST"], deduct_when=_failed,
                             on_breach=_refusal, scope=key.__name__.strip("_"))(view)
    app.view_functions["auth.login"] = view

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        return exc.get_response()

    return limiter
