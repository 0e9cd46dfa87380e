"""gridplan's Flask application: ``flask --app webmap run``.

The app factory follows the Flask tutorial: configuration from the environment (or a test
mapping), one engine per database URL, blueprints for pages, and the CLI commands.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, render_template
from sqlalchemy.exc import OperationalError, ProgrammingError

from geodata.db import database_url
from webmap.extensions import csrf


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app. ``DATABASE_URL`` picks the database (default: SpatiaLite under instance/)."""
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent.parent / "instance"),
                instance_relative_config=True)
    app.config.from_mapping(
        DATABASE_URL=database_url(),
        SECRET_KEY=os.environ.get("SECRET_KEY") or _instance_secret(app.instance_path),
        # base map: osm | tianditu (with TIANDITU_KEY) | gaode | local | none
        BASEMAP=os.environ.get("GRIDPLAN_BASEMAP", "osm"),
        TIANDITU_KEY=os.environ.get("GRIDPLAN_TIANDITU_KEY"),
        LOCAL_TILES_URL=os.environ.get("GRIDPLAN_LOCAL_TILES_URL"),
        LOCAL_TILES_DIR=os.environ.get("GRIDPLAN_LOCAL_TILES_DIR"),
    )
    if test_config:
        app.config.from_mapping(test_config)

    from webmap import api, auth, cli, maps, plan_views

    csrf.init_app(app)
    auth.init_app(app)
    app.register_blueprint(maps.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(plan_views.bp)
    cli.register(app)

    @app.errorhandler(OperationalError)
    @app.errorhandler(ProgrammingError)
    def _no_schema(exc):
        app.logger.error("database error: %s", exc)
        return render_template("error.html", title="database", message=(
            "The database is not ready: run `flask --app webmap init-db`.")), 503

    @app.errorhandler(403)
    def _forbidden(_exc):
        return render_template("error.html", title="403", message=(
            "您没有权限 — your role may not open this page.")), 403

    return app


def _instance_secret(instance: str) -> str:
    """A secret key kept in instance/ so sessions survive restarts of one machine's app."""
    path = Path(instance) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
