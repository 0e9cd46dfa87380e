"""gridplan's Flask application: ``flask --app webmap run``.

The app factory follows the Flask tutorial: configuration from the environment (or a test
mapping), one engine per database URL, blueprints for pages, and the CLI commands.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import Engine

from geodata.db import database_url, get_engine


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app. ``DATABASE_URL`` picks the database (default: SpatiaLite under instance/)."""
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent.parent / "instance"),
                instance_relative_config=True)
    app.config.from_mapping(
        DATABASE_URL=database_url(),
        SECRET_KEY=os.environ.get("SECRET_KEY") or _instance_secret(app.instance_path),
    )
    if test_config:
        app.config.from_mapping(test_config)

    from webmap import cli, pages

    app.register_blueprint(pages.bp)
    cli.register(app)
    return app


def engine() -> Engine:
    """The engine of the current app's database."""
    return get_engine(current_app.config["DATABASE_URL"])


def _instance_secret(instance: str) -> str:
    """A secret key kept in instance/ so sessions survive restarts of one machine's app."""
    path = Path(instance) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
