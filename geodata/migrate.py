"""Schema migrations (Alembic) for SpatiaLite and PostGIS alike.

``upgrade(engine)`` brings any database to the newest schema; ``flask --app webmap init-db``
calls it. New migrations are written with ``revision(engine, message)`` (autogenerate).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Create or upgrade the schema to ``revision`` (every head: work on separate branches of
    the migrations needs no merge revision) in one transaction."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
        command.upgrade(_config(connection), revision)


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new migration from the difference between the models and ``engine``."""
    with engine.begin() as connection:
        command.revision(_config(connection), message=message, autogenerate=True)
