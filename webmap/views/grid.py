"""Grid cells in the web app: generate the cells of a community, a street or the district, and
validate them (gaps, overlaps, cells outside their community, households in no cell); the grid
page (``/grid?community=…`` or ``?street=…``), where a planner sees a community's or a street's
cells on a map and in a table and generates, splits, merges and assigns them through the same
API. Views parse the request and call :mod:`layers.grid.cells`; the ``grid`` command is in
:mod:`webmap.commands.grid`."""

from __future__ import annotations

import json

import shapely
from flask import Blueprint, Response, jsonify, request

from geodata import plan_rows
from geodata.accounts import Account, list_users
from geodata.errors import Forbidden, NotFound, Refused
from geodata.i18n import _
from geodata.store import read_layer
from layers.grid.cells import (
    cell_table,
    generate_grid,
    grid_rules,
    grid_scope,
    merge_cells,
    move_to_cell,
    split_cell,
    validate_cells,
)
from webmap import params
from webmap.auth import current_account, require
from webmap.extensions import engine

bp = Blueprint("grid", __name__)



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
    data = params.body()
    rules = grid_rules(engine(), _whole(data, "minimum"), _whole(data, "maximum"), _whole(data, "area_m2"))
    answer = generate_grid(engine(), rules, **grid_scope(data))
    return jsonify(answer | {"by": current_account().name})


def _cell(value) -> str:
    if not (isinstance(value, str) and value.isdigit() and len(value) == 15):
        raise Refused(_("{value} is not a 15-digit cell code", value=repr(value)))
    return value


@bp.post("/api/grid/moves")
@require("admin", "planner", api=True)
def api_move():
    """Move units to another cell of their community, or to a new one (``"to": "new"``)."""
    data = params.body()
    units, to = data.get("units"), data.get("to")
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units) or not isinstance(to, str):
        raise Refused(_("send units (a list of unit codes) and to (a cell code or \"new\")"))
    return jsonify(move_to_cell(engine(), units, to if to == "new" else _cell(to), grid_rules(engine()),
                                current_account().name))


@bp.post("/api/grid/split")
@require("admin", "planner", api=True)
def api_split():
    return jsonify(split_cell(engine(), _cell(params.body().get("cell")), grid_rules(engine()),
                              current_account().name))


@bp.post("/api/grid/merge")
@require("admin", "planner", api=True)
def api_merge():
    data = params.body()
    keep, merge = _cell(data.get("keep")), _cell(data.get("merge"))
    return jsonify(merge_cells(engine(), keep, merge, grid_rules(engine()), current_account().name))


@bp.get("/api/grid/problems")
@require("admin", "planner", "viewer", api=True)
def api_problems():
    """The validation of the stored cells of a community, a street or the district."""
    scope = {k: v for k, v in grid_scope(request.args).items() if v}
    return jsonify(validate_cells(read_layer(engine(), "communities", **scope),
                                  read_layer(engine(), "grid_cells", **scope),
                                  read_layer(engine(), "units", **scope)))


# --- the grid page ---------------------------------------------------------------------------------


def _page_scope(account: Account) -> dict:
    """The community or street the grid page shows: the one asked for, else (a supervisor) their
    own scope, else the first street. A supervisor may look only at what overlaps their scope."""
    scope = grid_scope(request.args)
    if not scope["community"] and not scope["street"]:
        own = account.scope_code if account.role == "supervisor" else None
        if own:
            scope = ({"community": own[:12], "street": None} if len(own) >= 12
                     else {"community": None, "street": own[:9]})
        else:
            streets = read_layer(engine(), "streets")
            if streets.empty:
                raise NotFound(_("no streets: import or generate the boundaries first"))
            scope = {"community": None, "street": sorted(streets["code"])[0]}
    asked = scope["community"] or scope["street"]
    if account.role == "supervisor":
        own = account.scope_code or ""
        if not (asked.startswith(own) or own.startswith(asked)):
            raise Forbidden(_("{asked} is outside your scope {scope}", asked=asked, scope=own))
    return scope


def _named(frame) -> list[dict]:
    return [{"code": c, "name": n} for c, n in sorted(zip(frame["code"], frame["name"], strict=True))]


def _supervisors() -> list[dict]:
    """The supervisor accounts a planner may assign, each with the name of their scope (street,
    community, or a cell's community) beside its code: the page offers a cell only those whose
    scope holds it."""
    people = [u for u in list_users(engine()) if u["role"] == "supervisor" and not u["disabled"]]
    # the names of their scopes alone (a city's every outline is not read for a few names)
    scopes = {u["scope_code"] for u in people if u["scope_code"]}
    streets, communities = plan_rows.place_names(
        engine(), {s for s in scopes if len(s) == 9}, {s[:12] for s in scopes if len(s) >= 12})
    names = streets | communities

    def scope_name(scope: str | None) -> str | None:
        return names.get(scope[:12] if len(scope) > 12 else scope) if scope else None

    return [{"name": u["name"], "scope": u["scope_code"], "scope_name": scope_name(u["scope_code"])}
            for u in people]


#: who reads the grid page and its cells: not a department's handler, who reads its own cases
GRID_READERS = ("admin", "planner", "viewer", "supervisor", "dispatcher")


@bp.get("/grid")
@require(*GRID_READERS)
def grid_page():
    """A community's or a street's grid cells: on the map and in a table (households against the
    range, supervisor, problems), with generate / split / merge / assign for planners."""
    from webmap.maps import build_map, render_map  # the map pages import this blueprint's CLI

    account = current_account()
    scope = _page_scope(account)
    code = scope["community"] or scope["street"]
    street_code = code[:9]
    streets = read_layer(engine(), "streets")
    communities = read_layer(engine(), "communities", street=street_code)
    if account.role == "supervisor":
        own = account.scope_code or ""
        streets = streets[[own.startswith(c) or c.startswith(own) for c in streets["code"]]]
        communities = communities[[own.startswith(c) or c.startswith(own) for c in communities["code"]]]
    if scope["community"] and scope["community"] not in set(communities["code"]):
        raise NotFound(_("no community {community}", community=scope["community"]))
    if scope["street"] and scope["street"] not in set(streets["code"]):
        raise NotFound(_("no street {street}", street=scope["street"]))
    shown = communities[communities["code"] == scope["community"]] if scope["community"] else communities
    m = build_map(tuple(shown.total_bounds) if len(shown) else None)
    rules = grid_rules(engine())
    street_name = dict(zip(streets["code"], streets["name"], strict=True)).get(street_code)
    community_name = dict(zip(communities["code"], communities["name"], strict=True)).get(scope["community"])
    config = {"scope": scope, "role": account.role, "editable": account.role in ("admin", "planner"),
              "rules": {"minimum": rules.minimum, "maximum": rules.maximum},
              "streets": _named(streets), "communities": _named(communities),
              "street": {"code": street_code, "name": street_name},
              "community": ({"code": scope["community"], "name": community_name}
                            if scope["community"] else None),
              "supervisors": _supervisors() if account.role in ("admin", "planner") else []}
    title = " · ".join(x for x in (community_name or street_name, code) if x)
    return render_map("grid.html", m, config, title=_("Grid cells of {scope}", scope=title))


@bp.get("/api/grid/cells")
@require(*GRID_READERS, api=True)
def api_cells():
    """The cells of a community or a street as GeoJSON: per cell its community's name,
    households, units, area, supervisors and problems in words; with the scope's validation
    (gaps, overlaps, households in no cell) and the household range. A supervisor gets only the
    cells within their scope."""
    account = current_account()
    scope = grid_scope(request.args)
    if not scope["community"] and not scope["street"]:
        raise Refused(_("give a community (12 digits) or a street (9 digits)"))
    asked = scope["community"] or scope["street"]
    within = None
    if account.role == "supervisor":
        own = account.scope_code or ""
        if not (asked.startswith(own) or own.startswith(asked)):
            raise Forbidden(_("{asked} is outside your scope {scope}", asked=asked, scope=own))
        within = own if len(own) > len(asked) else None
    from geodata import incident_rows  # who holds which cell

    rules = grid_rules(engine())
    cells, report = cell_table(engine(), rules, within=within, **scope)
    held: dict[str, list[str]] = {}
    for a in incident_rows.assignments(engine(), prefix=within or asked):
        held.setdefault(a["cell_code"], []).append(a["user_name"])
    geoms = cells.geometry.values
    texts = shapely.to_geojson(shapely.transform(geoms, lambda xy: xy.round(7))) if len(cells) else []
    features = []
    for record, geometry in zip(cells.drop(columns="geometry").to_dict("records"), texts, strict=True):
        # the 网格员 named on the cell (imported or generated with the grid) first, then the
        # accounts assigned to it: either makes the cell one "with a supervisor"
        named = record.pop("supervisor", None)
        assigned = held.get(record["code"], [])
        record["supervisors"] = ([named] if isinstance(named, str) and named.strip() and named not in assigned
                                 else []) + assigned
        record["assigned"] = assigned  # the accounts alone: those a planner can take off the cell
        features.append(f'{{"type":"Feature","id":{json.dumps(record["code"])},"geometry":{geometry},'
                        f'"properties":{json.dumps(record, ensure_ascii=False, default=int)}}}')
    summary = {k: report[k] for k in ("cells", "gaps", "overlaps", "outside_community",
                                      "households_in_no_cell", "households_in_two_cells")}
    head = json.dumps({"rules": {"minimum": rules.minimum, "maximum": rules.maximum}, "validation": summary,
                       "findings": report["findings"][:200]}, ensure_ascii=False)
    body = f'{{"type":"FeatureCollection","features":[{",".join(features)}],{head[1:]}'
    return Response(body, mimetype="application/geo+json")
