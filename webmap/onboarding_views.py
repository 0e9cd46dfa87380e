"""A real city's data as it arrives: the commands and pages that load, clean, code and build it.

Command line (``flask --app webmap …``):

- ``topology communities`` — overlaps, gaps inside streets, parts outside the street (one JSON object);
- ``clean communities [--max-sliver 50]`` — resolve the small ones, print the same object and ``changed``;
- ``codes apply TABLE.csv`` — the official code table replaces provisional codes (one transaction);
- ``units build [--street CODE] [--households TABLE.csv] [--raster FILE.tif]`` — blocks from roads;
- ``onboard FOLDER --district CODE`` — all of it for a folder of whatever the city has.

API: ``GET /api/topology/communities`` (the findings as GeoJSON, for the map).
Views and commands parse their input and call :mod:`layers`; nothing else happens here.
"""

from __future__ import annotations

import json
import sys

import click
from flask import Blueprint, Response, request

from geodata.errors import GridplanError, Refused
from geodata.migrate import upgrade
from geodata.standards import seed_settings
from layers.boundaries import MAX_SLIVER_M2, clean_stored, stored_topology
from webmap.auth import require
from webmap.extensions import engine

bp = Blueprint("onboarding", __name__, cli_group=None)

BOUNDARY_LAYERS = click.Choice(["communities"])


def _ready():
    """The app's engine with the newest schema and the default settings."""
    eng = engine()
    upgrade(eng)
    with eng.begin() as conn:
        seed_settings(conn)
    return eng


def _echo_json(value: dict) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _street(value: str | None) -> str | None:
    if value is not None and not (value.isdigit() and len(value) == 9):
        raise click.BadParameter(f"{value!r} is not a 9-digit street code", param_hint="--street")
    return value


@bp.get("/api/topology/communities")
@require("admin", "planner", "viewer", api=True)
def api_topology():
    """The overlaps, gaps and outside pieces of the stored communities as GeoJSON (a map layer),
    with the totals as a ``summary`` member."""
    street = request.args.get("street") or None
    if street is not None and not (street.isdigit() and len(street) == 9):
        raise Refused(f"street {street!r} is not a 9-digit code")
    found = stored_topology(engine(), street)
    layer = json.loads(found.layer().to_json(drop_id=True))
    summary = {k: v for k, v in found.summary().items() if k != "findings"}
    body = {"type": "FeatureCollection", "features": layer["features"], "summary": summary}
    return Response(json.dumps(body, ensure_ascii=False), mimetype="application/geo+json")


@bp.cli.command("topology")
@click.argument("layer", type=BOUNDARY_LAYERS)
@click.option("--street", help="only this street (9-digit code)")
def topology_command(layer: str, street: str | None) -> None:
    """Report the overlaps, gaps and parts outside their street of LAYER as one JSON object."""
    eng = _ready()
    _echo_json(stored_topology(eng, _street(street)).summary())


@bp.cli.command("clean")
@click.argument("layer", type=BOUNDARY_LAYERS)
@click.option("--max-sliver", type=float, default=MAX_SLIVER_M2, show_default=True,
              help="resolve overlaps, gaps and outside pieces up to this area (m²)")
@click.option("--street", help="only this street (9-digit code)")
def clean_command(layer: str, max_sliver: float, street: str | None) -> None:
    """Resolve the small overlaps, gaps and outside pieces of LAYER; print the topology after and
    what changed (the old polygons are kept in the history)."""
    eng = _ready()
    if max_sliver < 0:
        raise click.BadParameter("an area in m² cannot be negative", param_hint="--max-sliver")
    try:
        result = clean_stored(eng, max_sliver, street=_street(street))
    except (GridplanError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _echo_json(result.summary())
    print(f"{len(result.changed)} changes, {len(result.communities)} communities redrawn", file=sys.stderr)


__all__ = ["bp"]

