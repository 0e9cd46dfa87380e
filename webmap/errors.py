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

API_PREFIXES = ("/api/", "/open311/")


def wants_json() -> bool:
    """API paths and clients that ask for JSON get problem details; pages get the error page."""
    if request.path.startswith(API_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def problem(status: int, title: str, detail: str, code: str | None = None, **extra) -> Response:
    """An RFC 9457 problem details answer; ``code`` (an extension member) names the refusal for
    programs (``VersionConflict``, ``StalePlan``, ``Unauthorized`` …)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "code": code or title.replace(" ", ""), **extra}
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    mimetype="application/problem+json")


def _page(status: int, title: str, message: str):
    return render_template("error.html", title=title, message=message), status


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(GridplanError)
    def _domain(exc: GridplanError):
        if wants_json():
            return problem(exc.status, exc.title, str(exc), type(exc).__name__, **exc.details)
        return _page(exc.status, exc.title, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if wants_json():
            return problem(exc.code or 500, exc.name, exc.description or exc.name)
        if exc.code == 403:
            return _page(403, "403", "您没有权限 — your role may not open this page.")
        return exc

    @app.errorhandler(OperationalError)
    @app.errorhandler(ProgrammingError)
    def _no_schema(exc):
        app.logger.error("database error: %s", exc)
        message = "The database is not ready: run `flask --app webmap init-db`."
        if wants_json():
            return problem(503, "Service Unavailable", message)
        return _page(503, "database", message)
