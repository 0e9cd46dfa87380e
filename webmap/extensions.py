"""What the blueprints share, without importing the app package: the CSRF guard and the
database engine of the current app.

``create_app`` initialises these; blueprints import from here, never from ``webmap`` itself,
so that nothing imports upward.
"""

from __future__ import annotations

from flask import current_app
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine

from geodata.db import get_engine

csrf = CSRFProtect()


def engine() -> Engine:
    """The engine of the current app's database."""
    return get_engine(current_app.config["DATABASE_URL"])
