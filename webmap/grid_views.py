"""Grid cells in the web app and on the command line: generate the cells of a community, a
street or the district, and validate them (gaps, overlaps, cells outside their community,
households in no cell). Views parse the request and call :mod:`layers.grid_cells`."""

from __future__ import annotations

import json

import click
from flask import Blueprint, jsonify, request

from geodata.errors import GridplanError, Refused
from geodata.i18n import _
from geodata.store import read_layer
from layers.grid_cells import generate_grid, grid_rules, merge_cells, move_to_cell, split_cell, validate_cells
from webmap import params
from webmap.auth import current_account, require
from webmap.extensions import engine

bp = Blueprint("grid", __name__, cli_group=None)


def _scope(values) -> dict:
    community, street = values.get("community") or None, values.get("street") or None
    if community and street:
        raise Refused(_("give a community or a street, not both"))
    if community and not (str(community).isdigit() and len(str(community)) == 12):
        raise Refused(_("community {community} is not a 12-digit code", community=repr(community)))
    if street and not (str(street).isdigit() and len(str(street)) == 9):
        raise Refused(_("street {street} is not a 9-digit code", street=repr(street)))
    return {"community": community, "street": street}


#: the largest household bound and cell area (m²) a request may ask for: past these no cell
#: makes sense, and the engine's arithmetic stays within machine integers
LARGEST = {"minimum": 1_000_000, "maximum": 1_000_000, "area_m2": 100_000_000}


def _whole(values: dict, key: str) -> int | None:
    value = values.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, str):  # text is no number here: a JSON number is asked for
        raise Refused(_("{key} must be a whole number above 0", key=key))
    return params.whole(value, key, 1, LARGEST[key])


@bp.post("/api/grid")
@require("admin", "planner", api=True)
def api_generate():
    """Generate and store the cells of a community, a street or the district."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    rules = grid_rules(engine(), _whole(data, "minimum"), _whole(data, "maximum"), _whole(data, "area_m2"))
    answer = generate_grid(engine(), rules, **_scope(data))
    return jsonify(answer | {"by": current_account().name})


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused(_("send a JSON object"))
    return data


def _cell(value) -> str:
    if not (isinstance(value, str) and value.isdigit() and len(value) == 15):
        raise Refused(_("{value} is not a 15-digit cell code", value=repr(value)))
    return value


@bp.post("/api/grid/moves")
@require("admin", "planner", api=True)
def api_move():
    """Move units to another cell of their community, or to a new one (``"to": "new"``)."""
    data = _body()
    units, to = data.get("units"), data.get("to")
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units) or not isinstance(to, str):
        raise Refused(_("send units (a list of unit codes) and to (a cell code or \"new\")"))
    return jsonify(move_to_cell(engine(), units, to if to == "new" else _cell(to), grid_rules(engine())))


@bp.post("/api/grid/split")
@require("admin", "planner", api=True)
def api_split():
    return jsonify(split_cell(engine(), _cell(_body().get("cell")), grid_rules(engine())))


@bp.post("/api/grid/merge")
@require("admin", "planner", api=True)
def api_merge():
    data = _body()
    keep, merge = _cell(data.get("keep")), _cell(data.get("merge"))
    return jsonify(merge_cells(engine(), keep, merge, grid_rules(engine())))


@bp.get("/api/grid/problems")
@require("admin", "planner", "viewer", api=True)
def api_problems():
    """The validation of the stored cells of a community, a street or the district."""
    scope = {k: v for k, v in _scope(request.args).items() if v}
    return jsonify(validate_cells(read_layer(engine(), "communities", **scope),
                                  read_layer(engine(), "grid_cells", **scope),
                                  read_layer(engine(), "units", **scope)))


@bp.cli.command("grid")
@click.option("--community", help="only this community (12-digit code)")
@click.option("--street", help="only this street (9-digit code)")
@click.option("--min", "minimum", type=int, help="households per cell, at least (default: settings)")
@click.option("--max", "maximum", type=int, help="households per cell, at most (default: settings)")
@click.option("--area", "area_m2", type=float, help="aim at cells of this area (m²) instead")
def grid_command(community, street, minimum, maximum, area_m2) -> None:
    """Generate and store grid cells (网格); print one JSON object of what was made."""
    try:
        scope = _scope({"community": community, "street": street})
        for name, value in (("--min", minimum), ("--max", maximum), ("--area", area_m2)):
            if value is not None and value <= 0:
                raise Refused(_("{name} must be above 0", name=name))
        answer = generate_grid(engine(), grid_rules(engine(), minimum, maximum, area_m2), **scope)
    except GridplanError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(answer, ensure_ascii=False))
