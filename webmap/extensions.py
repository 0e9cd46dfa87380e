"""What the blueprints share, without importing the app package: the CSRF guard, the
database engine of the current app and the app's memory of plans.

``create_app`` initialises these; blueprints import from here, never from ``webmap`` itself,
so that nothing imports upward.
"""

from __future__ import annotations

from flask import current_app, request
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine

from geodata.db import get_engine
from layers.coverage.cache import CoverageMemory
from layers.plans.memory import PlanMemory


def bearer_request() -> bool:
    """Whether the request authenticates with a token (no cookie, so no CSRF risk)."""
    return request.headers.get("Authorization", "").startswith("Bearer ")


class CookieCSRFProtect(CSRFProtect):
    """CSRF protects cookie sessions only: a request authenticated by ``Authorization: Bearer``
    carries its credential in a header a page on another site cannot set, and the session
    cookie is not read for it (:func:`webmap.auth.current_account` takes the token, right or
    wrong), so it needs no CSRF token. It is still held to the token's role; every other
    state change (a browser's cookie session, or nobody) needs the session's CSRF token."""

    def protect(self, apply_exemptions: bool = False) -> None:
        if bearer_request():
            return
        super().protect(apply_exemptions)


csrf = CookieCSRFProtect()


def engine() -> Engine:
    """The engine of the current app's database."""
    return get_engine(current_app.config["DATABASE_URL"])


def plans() -> PlanMemory:
    """The app's :class:`~layers.plans.memory.PlanMemory` (made by ``create_app``)."""
    return current_app.extensions["gridplan.plans"]


def coverage_memory() -> CoverageMemory:
    """The app's :class:`~layers.coverage.cache.CoverageMemory` (made by ``create_app``)."""
    return current_app.extensions["gridplan.coverage"]
