"""gridplan's Flask application: ``flask --app webmap run``.

The app factory follows the Flask tutorial: configuration from the environment (or a test
mapping), one engine per database URL, blueprints for pages, and the CLI commands.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask

from geodata.db import database_url, get_engine
from layers.coverage.cache import CoverageMemory
from layers.plans.memory import PlanMemory
from webmap.extensions import csrf


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app. ``DATABASE_URL`` picks the database (default: SpatiaLite under instance/)."""
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent.parent / "instance"),
                instance_relative_config=True)
    app.config.from_mapping(
        DATABASE_URL=database_url(),
        SECRET_KEY=os.environ.get("SECRET_KEY") or _instance_secret(app.instance_path),
        # base map: the administrator's setting ``basemap`` (none on a fresh install); the
        # environment's osm | tianditu (with TIANDITU_KEY) | gaode | local | none overrides it
        BASEMAP=os.environ.get("GRIDPLAN_BASEMAP") or None,
        TIANDITU_KEY=os.environ.get("GRIDPLAN_TIANDITU_KEY"),
        LOCAL_TILES_URL=os.environ.get("GRIDPLAN_LOCAL_TILES_URL"),
        LOCAL_TILES_DIR=os.environ.get("GRIDPLAN_LOCAL_TILES_DIR"),
        # uploads (imports from the browser) larger than this are refused with a 413
        MAX_CONTENT_LENGTH=int(os.environ.get("GRIDPLAN_MAX_UPLOAD_MB", "512")) * 1024 * 1024,
        # an archive (upload or command line) may not unpack to more than this (zip bombs)
        MAX_UNZIPPED_BYTES=int(os.environ.get("GRIDPLAN_MAX_UNZIPPED_MB", "4096")) * 1024 * 1024,
        # the language when neither the user's setting nor the browser says (and the command
        # line's): zh (default) or en
        DEFAULT_LOCALE=os.environ.get("GRIDPLAN_LOCALE") or "zh",
        # where case photos are kept (default instance/photos): a served app's own folder
        PHOTO_DIR=os.environ.get("GRIDPLAN_PHOTO_DIR") or None,
    )
    if test_config:
        app.config.from_mapping(test_config)

    from webmap import api, auth, commands, errors, i18n, maps
    from webmap.security import init_app as init_security
    from webmap.security import limit_sign_in
    from webmap.views import admin as admin_views
    from webmap.views import grid as grid_views
    from webmap.views import layers as layer_views
    from webmap.views import plans as plan_views

    # what this process keeps in memory about plans, keyed to the stored boundary revision
    app.extensions["gridplan.plans"] = PlanMemory(get_engine(app.config["DATABASE_URL"]))
    # the coverage scopes this process computed, keyed to the stored revisions (never a global)
    app.extensions["gridplan.coverage"] = CoverageMemory(get_engine(app.config["DATABASE_URL"]))
    init_security(app)  # headers, cookie flags, HTTPS when GRIDPLAN_HTTPS=1
    csrf.init_app(app)
    i18n.init_app(app)
    errors.register(app)
    auth.init_app(app)
    app.register_blueprint(maps.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(plan_views.bp)
    app.register_blueprint(grid_views.bp)
    app.register_blueprint(layer_views.bp)
    app.register_blueprint(admin_views.bp)
    from webmap.open311 import bp as open311_bp  # Open311 GeoReport v2
    from webmap.views.incidents import bp as incidents_bp  # the incident loop, supervisors' pages, rates
    app.register_blueprint(incidents_bp)
    app.register_blueprint(open311_bp)
    from webmap.views.coverage import bp as coverage_bp  # coverage gaps, where to build next
    app.register_blueprint(coverage_bp)
    from webmap.views.onboarding import bp as onboarding_bp  # names, codes, topology, units, onboard
    app.register_blueprint(onboarding_bp)
    limit_sign_in(app)  # failed sign-ins counted per account and per address, then refused
    from webmap.responses import compress_static, init_static
    app.after_request(compress_static)  # Leaflet, Chart.js and the pages' scripts sent gzipped
    init_static(app)  # versioned static addresses, kept a year by the browser
    commands.register(app)  # the command line: webmap/commands/, one module per capability

    if os.environ.get("GRIDPLAN_EXPOSE_PROCESS"):  # tests: which gunicorn worker answered
        app.after_request(lambda response: response.headers.update(
            {"X-Gridplan-Process": str(os.getpid())}) or response)
    return app


def _instance_secret(instance: str) -> str:
    """A secret key kept in instance/ so sessions survive restarts of one machine's app."""
    path = Path(instance) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()
