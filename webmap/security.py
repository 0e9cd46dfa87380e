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

import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, Request, Response, current_app, g, make_response, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_talisman import Talisman
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, Unauthorized
from werkzeug.middleware.proxy_fix import ProxyFix

import geodata.rate_limits  # noqa: F401  (registers the gridplan+db:// storage)
from geodata.accounts import find_token
from geodata.i18n import _
from layers.incidents.open311 import to_xml
from webmap.auth import current_account, hash_token
from webmap.errors import problem, wants_json
from webmap.extensions import bearer_request, csrf, engine

talisman = Talisman()

#: JSON bodies deeper than this (``[[[…]]]``, ``{"a":{"a":…}}``) are refused before they are parsed:
#: no body gridplan takes goes past a few levels (a GeoJSON polygon with holes is 4)
MAX_JSON_DEPTH = 64

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it (and so
    without recursion): strings are taken out, then the brackets left are summed up."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_A_BRACKET)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)).max())


class GuardedRequest(Request):
    """A request whose JSON body nests deeper than :data:`MAX_JSON_DEPTH` is a 400 that says so,
    found by :func:`json_depth` before ``json.loads`` runs (it recursed into a ``RecursionError``,
    a 500, at about a thousand levels)."""

    _depth_checked = False
    #: the most a body may weigh on this request's route (set by :func:`guard_body`)
    body_limit: int | None = None

    def _load_form_data(self) -> None:
        # a body that is not a form has no form fields, so the CSRF guard's look at the form must
        # not open its stream: Werkzeug fixes the stream's size limit when it is opened, and the
        # route's limit (guard_body) is set only after the CSRF check
        if "form" not in self.__dict__ and self.mimetype not in FORM_TYPES:
            self.__dict__["form"] = self.parameter_storage_class()
            self.__dict__["files"] = self.parameter_storage_class()
            return
        super()._load_form_data()

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        if not self._depth_checked and (force or self.is_json):
            self._depth_checked = True
            data = self.get_data(cache=True)
            if self.body_limit is not None and len(data) > self.body_limit:  # sent without a length
                raise _too_large(len(data), self.body_limit)
            # even when silent: no caller wants a body like that, so name it
            # (most bodies hold fewer brackets than that in all: nothing to count)
            if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH:
                raise BadRequest(_("the JSON body is nested too deeply: more than {limit} levels",
                                   limit=MAX_JSON_DEPTH))
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:  # cannot happen below MAX_JSON_DEPTH; kept as the last guard
            raise BadRequest(_("the JSON body is nested too deeply: more than {limit} levels",
                               limit=MAX_JSON_DEPTH)) from None


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
    app.config.setdefault("JSON_BODY_LIMIT_KB",
                          int(os.environ.get("GRIDPLAN_JSON_LIMIT_KB") or JSON_BODY_LIMIT_KB))
    app.before_request(guard_body)  # first: who asks and how much, before any body is read
    app.before_request(refuse_nul)


def _has_nul(value) -> bool:
    """Whether a parsed JSON value holds a NUL anywhere, walked with a list (no recursion)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return False


# --- bodies: who asks, then how much, then parsing ---------------------------------------------------

#: what a request body (JSON, a plain form) may weigh by default; uploads (multipart/form-data)
#: are held to MAX_CONTENT_LENGTH (GRIDPLAN_MAX_UPLOAD_MB); a route may take more (:func:`body_limit`)
JSON_BODY_LIMIT_KB = 256
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: the endpoints that take a body from callers not signed in: the sign-in form, signing out, the
#: language switch (the sign-in page has it) and Open311's report, which authenticates with an
#: ``api_key`` of its own (query string or form)
OPEN_ENDPOINTS = frozenset({"auth.login", "auth.logout", "i18n.switch", "open311.request_create"})


def body_limit(kib: int) -> Callable:
    """Decorator: this route takes bodies of up to ``kib`` KiB (instead of ``JSON_BODY_LIMIT_KB``),
    for the few that really take more (plan edits with thousands of unit codes). Put it between
    the route and ``require``."""

    def mark(view):
        view.gridplan_body_limit_kib = kib
        return view

    return mark


def _too_large(size: int, limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(_("the request body is {size} KiB; this address takes at most {limit} KiB",
                                   size=-(-size // 1024), limit=limit // 1024))


def guard_body() -> None:
    """Before any body is read: a caller who is not signed in (no valid token, no session) is
    refused 401 on every route but :data:`OPEN_ENDPOINTS`; a signed-in browser's request without
    its CSRF token 400 (JSON bodies: the token travels in a header, so it is checked here, before
    the body; a form carries it inside, so a form is size-checked first and checked by the CSRF
    guard after); then a body larger than the route takes is refused 413 on its
    ``Content-Length`` alone, and one sent without a length stops being read at the limit."""
    if request.method not in BODY_METHODS or not request.endpoint:
        return
    if request.endpoint not in OPEN_ENDPOINTS and current_account() is None:
        if "token_refusal" in g:  # an expired token is named as such, as on a GET
            raise g.token_refusal
        raise Unauthorized(_("sign in, or send Authorization: Bearer <token>"))
    config = current_app.config
    form = request.mimetype in FORM_TYPES
    if not form and not bearer_request() and config.get("WTF_CSRF_ENABLED", True) \
            and config.get("WTF_CSRF_CHECK_DEFAULT", True):
        csrf.protect(apply_exemptions=True)  # a header only: GuardedRequest leaves the body unopened
    kib = getattr(current_app.view_functions.get(request.endpoint), "gridplan_body_limit_kib", None)
    if request.mimetype == "multipart/form-data" and not kib:  # an upload: the upload limit, as before
        limit = config.get("MAX_CONTENT_LENGTH")
    else:
        limit = (kib or int(config["JSON_BODY_LIMIT_KB"])) * 1024
    if limit is None:
        return
    # a body sent without a length stops being read one byte past the limit (then a 413: Werkzeug
    # would cut it at the limit without a word)
    request.body_limit, request.max_content_length = limit, limit + 1
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)


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

#: failed sign-ins allowed for one account from one address, and from one address under any
#: names; past the first limit a guesser waits out the minute (slowed), past the second the hour
#: (refused). The account is counted per address on purpose: a count for the account alone let
#: anyone lock the real administrator out with five wrong passwords from anywhere.
LOGIN_LIMIT_PER_ACCOUNT = "5 per minute; 20 per hour"
LOGIN_LIMIT_PER_ADDRESS = "20 per minute; 100 per hour"


def client_address() -> str:
    """The client's address as the limits count it: an IPv4 address whole, an IPv6 address by
    its /64 network (one machine is handed a whole /64 and could change address at will)."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _account_key() -> str:
    # names are at most 50 characters; whatever is typed, the key stays short
    return f"account:{request.form.get('name', '').strip()[:60]}@{client_address()}"


def _address_key() -> str:
    return "address:" + client_address()


def _failed(response: Response) -> bool:
    """Only wrong names or passwords count: a planner who signs in is not slowed."""
    return response.status_code == 401


def _wait(limit) -> int:
    return max(1, int(limit.reset_at - time.time()))


def _refusal(limit) -> Response:
    """429 with ``Retry-After``: the sign-in page with a message, or problem details for JSON."""
    wait = _wait(limit)
    minutes = -(-wait // 60)
    message = _("Too many failed sign-ins: try again in {minutes} min. If you have forgotten your "
                "password, ask an administrator.", minutes=minutes)
    if wants_json():
        response = problem(429, "Too Many Requests", message, "TooManySignIns")
    else:
        response = make_response(render_template("login.html", refused=message,
                                                 name=request.form.get("name", "").strip()), 429)
    response.headers["Retry-After"] = str(wait)
    return response


# --- report limits ---------------------------------------------------------------------------------

#: incident reports (``POST /api/incidents``, the report form, Open311's ``POST requests``) one
#: account or token may send, and one address under any accounts; beyond them a 429 and nothing stored
REPORT_LIMIT_PER_ACCOUNT = "60 per minute; 1000 per hour"
REPORT_LIMIT_PER_ADDRESS = "120 per minute; 2000 per hour"


def rate_limited(kind: str) -> Callable:
    """Decorator: this route counts against the ``kind`` limits (``"reports"``: per account or
    token and per address, ``REPORT_LIMIT_PER_ACCOUNT``/``…_ADDRESS``). Put it between the route
    and ``require``; :func:`limit_sign_in` applies the limits when the app is made."""

    def mark(view):
        view.gridplan_rate_limit = kind
        return view

    return mark


def _caller_key() -> str:
    """Who reports: the account or token (Open311's ``api_key`` is a token too); nobody: not
    counted here (the address still is, and the route refuses them)."""
    if "report_caller" in g:  # asked twice a request (the limit and its exemption)
        return g.report_caller
    account = current_account()
    key = _report_api_key()
    if account is None and key:
        account = find_token(engine(), hash_token(key))
    g.report_caller = "" if account is None else f"{'token' if account.via_token else 'user'}:{account.id}"
    return g.report_caller


def _report_api_key() -> str | None:
    """Open311's ``api_key`` of a report, where its view reads it: the form or a JSON body (a key
    in a JSON body escaping the per-token limit would leave a token only the address's)."""
    if request.form:
        return request.form.get("api_key")
    body = request.get_json(silent=True) if request.is_json else None
    key = body.get("api_key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def _window(limit) -> str:
    """``60 per minute`` said as "60 a minute" in the reader's language."""
    item = limit.limit
    unit = item.GRANULARITY.name
    names = {"second": _("a second"), "minute": _("a minute"), "hour": _("an hour"), "day": _("a day")}
    if item.multiples == 1 and unit in names:
        return _("{amount} {window}", amount=item.amount, window=names[unit])
    return _("{amount} in {seconds} s", amount=item.amount, seconds=item.get_expiry())


def _report_refusal(limit) -> Response:
    """429 with ``Retry-After`` and a message naming the limit: problem details, or on Open311's
    route the list of errors GeoReport v2 speaks."""
    wait = _wait(limit)
    by_caller = limit.request_args[-2].startswith(("token:", "user:"))
    g.gridplan_refusal = message = _(
        "Too many reports: at most {limit} {who}; try again in {seconds} s. This report was not stored.",
        limit=_window(limit), seconds=wait,
        who=_("from one account or token") if by_caller else _("from one address"))
    if request.blueprint == "open311":
        errors = [{"code": 429, "description": message}]
        response = (Response(to_xml("errors", "error", errors), 429, mimetype="text/xml")
                    if request.path.endswith(".xml") else
                    Response(json.dumps(errors, ensure_ascii=False), 429, mimetype="application/json"))
    else:
        response = problem(429, "Too Many Requests", message, "TooManyReports")
    response.headers["Retry-After"] = str(wait)
    return response


def limit_sign_in(app: Flask) -> Limiter:
    """Count failed sign-ins per account and address and per address (``LOGIN_LIMIT_PER_ACCOUNT``
    and ``LOGIN_LIMIT_PER_ADDRESS``, from ``GRIDPLAN_LOGIN_LIMIT_PER_ACCOUNT``/``…_ADDRESS``) in the
    database (:mod:`geodata.rate_limits`: shared by every process); past a limit, every sign-in
    of that account from that address, or from that address at all, is refused with a 429 until
    the window ends. Also applies the report limits to the routes marked :func:`rate_limited`."""
    app.config.setdefault("LOGIN_LIMIT_PER_ACCOUNT",
                          os.environ.get("GRIDPLAN_LOGIN_LIMIT_PER_ACCOUNT") or LOGIN_LIMIT_PER_ACCOUNT)
    app.config.setdefault("LOGIN_LIMIT_PER_ADDRESS",
                          os.environ.get("GRIDPLAN_LOGIN_LIMIT_PER_ADDRESS") or LOGIN_LIMIT_PER_ADDRESS)
    app.config.setdefault("REPORT_LIMIT_PER_ACCOUNT",
                          os.environ.get("GRIDPLAN_REPORT_LIMIT_PER_ACCOUNT") or REPORT_LIMIT_PER_ACCOUNT)
    app.config.setdefault("REPORT_LIMIT_PER_ADDRESS",
                          os.environ.get("GRIDPLAN_REPORT_LIMIT_PER_ADDRESS") or REPORT_LIMIT_PER_ADDRESS)
    app.config.setdefault("RATELIMIT_STORAGE_URI", "gridplan+db://")
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"url": app.config["DATABASE_URL"]})
    limiter = Limiter(key_func=_address_key, app=app, strategy="fixed-window")
    view = app.view_functions["auth.login"]
    for limit, key in ((app.config["LOGIN_LIMIT_PER_ACCOUNT"], _account_key),
                       (app.config["LOGIN_LIMIT_PER_ADDRESS"], _address_key)):
        view = limiter.limit(limit, key_func=key, methods=["POST"], deduct_when=_failed,
                             on_breach=_refusal, scope=key.__name__.strip("_"))(view)
    app.view_functions["auth.login"] = view
    for endpoint, view in list(app.view_functions.items()):
        if getattr(view, "gridplan_rate_limit", None) != "reports":
            continue
        # one scope for every report route: a token's reports count once, whichever way they come
        for limit, key, scope in ((app.config["REPORT_LIMIT_PER_ACCOUNT"], _caller_key, "reports-account"),
                                  (app.config["REPORT_LIMIT_PER_ADDRESS"], _address_key, "reports-address")):
            view = limiter.shared_limit(limit, scope, key_func=key, methods=["POST"],
                                        on_breach=_report_refusal, exempt_when=lambda key=key: not key(),
                                        error_message=lambda: g.get("gridplan_refusal", ""))(view)
        app.view_functions[endpoint] = view

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        return exc.get_response()

    return limiter
