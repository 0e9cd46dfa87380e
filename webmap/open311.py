"""Open311 GeoReport v2 under ``/open311/v2/``: ``services.{json,xml}``,
``services/{code}.{json,xml}``, ``requests.{json,xml}`` (GET with the spec's filters; POST with
an API token, as ``Authorization: Bearer`` or the spec's ``api_key`` in the POST body — never in
the address, where proxies log it) and
``requests/{id}.{json,xml}``, mapped onto the incident loop by :mod:`layers.incidents.open311`. Errors
are answered as the spec asks: a list of ``{code, description}``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from geodata import incident_rows
from geodata.accounts import find_token
from geodata.errors import GridplanError
from layers.incidents import loop as incidents
from layers.incidents import open311
from webmap import params
from webmap.auth import current_account, hash_token
from webmap.extensions import csrf, engine
from webmap.security import rate_limited

bp = Blueprint("open311", __name__, url_prefix="/open311/v2")
csrf.exempt(bp)  # token-authenticated API: no cookie is used for POST
MAX_REQUESTS = 1000


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


def _answer(fmt: str, records, root: str = "", item: str = "", status: int = 200) -> Response:
    if fmt == "xml":
        return Response(open311.to_xml(root, item, records), status=status, mimetype="text/xml")
    return Response(
        json.dumps(records, ensure_ascii=False, default=str), status=status, mimetype="application/json"
    )


def _fmt(fmt: str) -> str:
    if fmt not in ("json", "xml"):
        raise Open311Error(404, f"unknown format .{fmt}: use .json or .xml")
    return fmt


@bp.errorhandler(Open311Error)
def _error(exc: Open311Error):
    fmt = "xml" if request.path.endswith(".xml") else "json"
    return _answer(fmt, [{"code": exc.status, "description": exc.description}], "errors", "error", exc.status)


@bp.errorhandler(GridplanError)
def _domain(exc: GridplanError):
    return _error(Open311Error(exc.status, str(exc)))


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException):
    return _error(Open311Error(exc.code or 500, exc.description or exc.name))


def _tz() -> str:
    return current_app.config.get("OPEN311_UTC_OFFSET", "+08:00")


def _account(required: bool = False):
    """Who asks: ``Authorization: Bearer``, a signed-in session or, for the spec's POST, the
    ``api_key`` in the request's body — never in the address (refused before any view runs:
    :func:`webmap.auth.refuse_token_in_address`)."""
    account = current_account()
    if account is None and "token_refusal" in g:
        raise g.token_refusal  # an expired token, named as such
    key = _body_key() if request.method == "POST" else None
    if account is None and key:
        account = find_token(engine(), hash_token(key))
        if account is None:
            raise Open311Error(403, "api_key is not valid")
    if account is None and required:
        raise Open311Error(403, "an api_key in the body (or Authorization: Bearer <token>) is required")
    return account


def _body_key() -> str | None:
    """The spec's ``api_key`` of a POST, from the form or a JSON body."""
    if request.form:
        return request.form.get("api_key")
    body = request.get_json(silent=True)
    key = body.get("api_key") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def _public():
    """Reading is open to any holder of an account or token; anonymous readers see nothing."""
    account = _account()
    if account is None:
        raise Open311Error(401, "send Authorization: Bearer <token>")
    return account


@bp.get("/services.<fmt>")
def service_list(fmt: str):
    _public()
    return _answer(_fmt(fmt), open311.services(incidents.categories(engine())), "services", "service")


@bp.get("/services/<code>.<fmt>")
def service_definition(code: str, fmt: str):
    _public()
    try:
        definition = open311.service_definition(code, incidents.categories(engine()))
    except KeyError:
        raise Open311Error(404, f"no service {code!r}") from None
    if _fmt(fmt) == "xml":
        return Response(
            open311.to_xml("service_definition", "attributes", [{"service_code": code}]), mimetype="text/xml"
        )
    return _answer(fmt, definition)


def _requests(cases: list[dict]) -> list[dict]:
    catalogue = incidents.categories(engine())
    last = incident_rows.last_steps(engine(), [c["id"] for c in cases])
    table = incidents.department_table(engine())
    return [open311.to_request(c, catalogue, last.get(c["id"]), _tz(), table) for c in cases]


def _when(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    parsed = params.moment(value, what)  # a W3C datetime within the years gridplan takes
    if parsed.tzinfo is not None:  # stored times are the city's local time
        hours, minutes = _tz()[1:].split(":")
        sign = 1 if _tz()[0] == "+" else -1
        local = parsed.utcoffset() - sign * timedelta(hours=int(hours), minutes=int(minutes))
        parsed = (parsed - local).replace(tzinfo=None)
    return parsed


@bp.get("/requests.<fmt>")
def request_list(fmt: str):
    fmt = _fmt(fmt)
    account = _public()
    args = request.args
    prefix = account.scope_code if account.role == "supervisor" else None
    if args.get("service_request_id"):
        cases = [
            c
            for code in args["service_request_id"].split(",")
            if (c := incident_rows.get_incident(engine(), code.strip())) and incidents.covers(account, c)
        ]
    else:
        end = _when(args.get("end_date"), "end_date") or datetime.now()
        start = _when(args.get("start_date"), "start_date") or (end - timedelta(days=90))
        status = args.get("status")
        if status and status not in ("open", "closed"):
            raise Open311Error(400, "status is open or closed")
        statuses = {"open": incidents.OPEN, "closed": incidents.CLOSED}.get(status)
        codes = [c.strip() for c in args.get("service_code", "").split(",") if c.strip()]
        cases = []
        for code in codes or [None]:
            cases += incident_rows.list_incidents(
                engine(),
                prefix=prefix,
                statuses=statuses,
                category=code,
                since=start,
                until=end,
                limit=MAX_REQUESTS,
                department=account.department_code if account.role == "handler" else None,
            )
        cases = sorted(cases, key=lambda c: c["reported_at"], reverse=True)[:MAX_REQUESTS]
    return _answer(fmt, _requests(cases), "service_requests", "request")


@bp.get("/requests/<code>.<fmt>")
def request_one(code: str, fmt: str):
    fmt = _fmt(fmt)
    account = _public()
    case = incident_rows.get_incident(engine(), code)
    if case is None or not incidents.covers(account, case):
        raise Open311Error(404, f"no service request {code!r}")
    return _answer(fmt, _requests([case]), "service_requests", "request")


@bp.post("/requests.<fmt>")
@rate_limited("reports")
def request_create(fmt: str):
    fmt = _fmt(fmt)
    account = _account(required=True)
    if not account.via_token:  # a signed-in browser's cookie: the CSRF check of every other form
        csrf.protect()
    form = request.form.to_dict() if request.form else (request.get_json(silent=True) or {})
    if not isinstance(form, dict):
        raise Open311Error(400, "send the request's fields as a form or a JSON object")
    case, _ = incidents.report(engine(), account, open311.from_post(form))
    answer = [{"service_request_id": case["code"], "service_notice": "", "account_id": None}]
    return _answer(fmt, answer, "service_requests", "request", 201)
