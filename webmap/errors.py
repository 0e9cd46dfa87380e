"""One place where refusals become HTTP answers.

Domain refusals (:mod:`geodata.errors`: not found, refused input, forbidden, conflict) and HTTP
errors become RFC 9457 problem details (``application/problem+json``: ``type``, ``title``,
``status``, ``detail`` and any extra members such as the current state) for the API, and the
error page for HTML. Views raise; they never build error replies by hand.
"""

from __future__ import annotations

from flask import Flask, Response, json, render_template, request
from sqlalchemy.exc import OperationalError, ProgrammingError
from werkzeug.exceptions import HTTPException

from geodata.errors import GridplanError
from geodata.i18n import N_, _

API_PREFIXES = ("/api/", "/open311/")


def wants_json() -> bool:
    """API paths and clients that ask for JSON get problem details; pages get the error page."""
    if request.path.startswith(API_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def problem(status: int, title: str, detail: str, code: str | None = None, **extra) -> Response:
    """An RFC 9457 problem details answer; ``code`` (an extension member) names the refusal for
    programs (``VersionConflict``, ``StalePlan``, ``Unauthorized`` …). ``title`` is given in
    English and answered in the request's language; ``code`` stays English."""
    body = {"type": "about:blank", "title": _(title), "status": status, "detail": detail,
            "code": code or title.replace(" ", ""), **extra}
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    mimetype="application/problem+json")


#: the titles of HTTP errors, for extraction (``problem`` translates them)
HTTP_TITLES = (N_("Bad Request"), N_("Unauthorized"), N_("Forbidden"), N_("Not Found"),
               N_("Method Not Allowed"), N_("Conflict"), N_("Payload Too Large"),
               N_("Unsupported Media Type"), N_("Unprocessable Entity"), N_("Internal Server Error"),
               N_("Service Unavailable"), N_("Too Many Requests"))
#: what to say instead of Werkzeug's own (English) descriptions
HTTP_DETAILS = {400: N_("The request could not be understood."), 401: N_("Sign in first."),
                403: N_("Your role may not do this."), 404: N_("There is nothing at this address."),
                405: N_("This address does not take that method."), 413: N_("The upload is too large."),
                415: N_("This kind of content is not accepted here."),
                500: N_("The server failed: try again later, and tell an administrator if it happens again.")}


def _detail(exc: HTTPException) -> str:
    """The exception's own description, or for Werkzeug's default one a translated sentence."""
    if exc.description and exc.description != type(exc).description:
        return exc.description
    return _(HTTP_DETAILS.get(exc.code or 500, exc.name))


def _page(status: int, title: str, message: str):
    return render_template("error.html", title=title, message=message), status


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(GridplanError)
    def _domain(exc: GridplanError):
        if wants_json():
            return problem(exc.status, exc.title, str(exc), type(exc).__name__, **exc.details)
        return _page(exc.status, _(exc.title), str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if wants_json():
            return problem(exc.code or 500, exc.name, _detail(exc))
        if exc.code == 403:
            return _page(403, "403", _("Your role may not open this page."))
        return exc

    @app.errorhandler(OperationalError)
    @app.errorhandler(ProgrammingError)
    def _no_schema(exc):
        app.logger.error("database error: %s", exc)
        if busy(exc):
            message = _("The database is busy with other changes: nothing was saved; try again in a moment.")
        else:
            message = _("The database is not ready: run `flask --app webmap init-db`.")
        if wants_json():
            answer = problem(503, "Service Unavailable", message, "DatabaseBusy" if busy(exc) else None)
        else:
            answer = Response(render_template("error.html", title=_("database"), message=message), 503)
        if busy(exc):
            answer.headers["Retry-After"] = "2"
        return answer


def busy(exc: Exception) -> bool:
    """Whether a database error means "another transaction is in the way" (SQLite's lock held
    past the busy timeout, a PostgreSQL deadlock or serialization failure, a lock timeout): the
    transaction was rolled back and trying again later will do."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in ("40001", "40P01", "55P03"):
        return True
    return "database is locked" in str(orig or exc) or "database table is locked" in str(orig or exc)
