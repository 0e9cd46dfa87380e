"""What the blueprints share, without importing the app package: the CSRF guard, the
database engine of the current app and the app's memory of plans.

``create_app`` initialises these; blueprints import from here, never from ``webmap`` itself,
so that nothing imports upward.
"""

from __future__ import annotations

from flask import current_app
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine

from geodata.db import get_engine
from layers.plan_memory import PlanMemory

csrf = CSRFProtect()


def engine() -> Engine:
    """The engine of the current app's database."""
    return get_engine(current_app.config["DATABASE_URL"])


def plans() -> PlanMemory:
    """The app's :class:`~layers.plan_memory.PlanMemory` (made by ``create_app``)."""
    return current_app.extensions["gridplan.plans"]
