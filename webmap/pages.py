"""HTML pages. Until the map arrives, the home page lists the layers and their counts."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy.exc import OperationalError, ProgrammingError

from geodata.catalog import LAYERS
from geodata.store import layer_counts
from webmap import engine

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    try:
        counts = layer_counts(engine())
        error = None
    except (OperationalError, ProgrammingError):
        counts, error = {}, "The database has no schema yet: run `flask --app webmap init-db`."
    layers = [(name, spec.label, counts.get(name)) for name, spec in LAYERS.items()]
    return render_template("index.html", layers=layers, error=error), (503 if error else 200)
