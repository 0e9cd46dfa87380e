"""One place where refusals become HTTP answers.

Domain refusals (:mod:`geodata.errors`: not found, refused input, forbidden, conflict) and HTTP
errors become RFC 9457 problem details (``application/problem+json``: ``type``, ``title``,
``status``, ``detail`` and any extra members such as the current state) for the API, and the
error page for HTML. Views raise; they never build error replies by hand.
"""

from __future__ import annotations

import errno
import sys

from flask import Flask, Response, json, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from geodata.db import DATABASE_ERRORS, database_trouble
from geodata.errors import DatabaseTrouble, GridplanError
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
            answer = problem(exc.status, exc.title, str(exc), exc.code, **exc.details)
        else:
            answer = _page(exc.status, _(exc.title), str(exc))
        if exc.retry_after:
            answer = app.make_response(answer)
            answer.headers["Retry-After"] = str(exc.retry_after)
        return answer

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if wants_json():
            return problem(exc.code or 500, exc.name, _detail(exc))
        if exc.code == 403:
            return _page(403, "403", _("Your role may not open this page."))
        if exc.code and exc.code >= 400:  # a page in the page's language, not Werkzeug's English one
            return _page(exc.code, f"{exc.code} {_(exc.name)}", _detail(exc))
        return exc

    def _database(exc):
        """The database down, busy, full or without its schema: a 503 that says which."""
        app.logger.error("database error: %s", exc)
        return _domain(database_trouble(exc))

    for kind in DATABASE_ERRORS:
        app.register_error_handler(kind, _database)

    @app.errorhandler(OSError)
    def _os_error(exc: OSError):
        """A full disk (an upload saved, a file written) is a 503 naming it; other system errors 500."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            app.logger.error("disk full: %s", exc)
            message = _("The disk is full: the change was not saved. An administrator must free space on "
                        "the disk; then try again.")
            return _domain(DatabaseTrouble(message, code="DiskFull"))
        app.log_exception(sys.exc_info())
        return _internal(InternalServerError(original_exception=exc))

    @app.errorhandler(InternalServerError)
    def _internal(exc: InternalServerError):
        """A database failure outside a view (an after-request hook: the sign-in limiter counting a
        failed sign-in) reaches here as a 500: answered as the 503 it is."""
        original = getattr(exc, "original_exception", None)
        if isinstance(original, DATABASE_ERRORS):
            return _database(original)
        return _http(exc)
