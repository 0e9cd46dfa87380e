"""The map pages: the planner's map and the supervisor's map (folium scaffolds, data from the API).

folium builds the Leaflet map (centre, zoom, base map, scale); the page's own script, served
from ``static/js``, then loads every layer from ``/api`` by bounding box, so the HTML stays a few
kilobytes whatever the size of the city. Leaflet and its plugins come from ``static/vendor``,
never from a CDN, so the page works on an intranet; a base map that cannot load leaves a plain
grey background and nothing else breaks.
"""

from __future__ import annotations

import re
from pathlib import Path

import folium
from flask import Blueprint, current_app, g, redirect, render_template, send_from_directory, url_for
from markupsafe import Markup

from geodata.i18n import _, in_language
from geodata.incident_rows import cells_extent
from geodata.settings import get_value
from geodata.standards import FACILITY_KINDS
from geodata.store import layer_extent
from layers.incidents import loop as incidents
from layers.plans.communities import bounds
from webmap.auth import current_account, require
from webmap.extensions import engine
from webmap.i18n import facility_kind_name
from webmap.security import csp_nonce, tile_sources

bp = Blueprint("maps", __name__)

#: Base maps: name → (tile URL template, attribution, coordinates the tiles expect).
BASEMAPS = {
    "osm": ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "© OpenStreetMap contributors", "wgs84"),
    "tianditu": ("https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
                 "&LAYER=vec&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}"
                 "&TILECOL={x}&tk={key}", "© Tianditu 天地图", "wgs84"),
    "gaode": ("https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8"
              "&x={x}&y={y}&z={z}", "© AutoNavi 高德地图", "gcj02"),
    "local": ("/tiles/{z}/{x}/{y}.png", "local tiles", "wgs84"),
    "none": (None, "", "wgs84"),
}
DEFAULT_CENTRE = (30.59, 114.27)


def basemap_name() -> str:
    """The base map: ``BASEMAP`` (the ``GRIDPLAN_BASEMAP`` environment variable) when set, else
    the administrator's setting ``basemap`` (none until one is chosen)."""
    return current_app.config.get("BASEMAP") or get_value(engine(), "basemap", "none")


def basemap() -> tuple[str, str | None, str, str]:
    """(name, tile URL or None, attribution, coordinates) of the base map in use."""
    name = basemap_name()
    if name not in BASEMAPS:
        current_app.logger.warning("unknown BASEMAP %r; showing no base map", name)
        name = "none"
    url, attribution, coords = BASEMAPS[name]
    if name == "tianditu":
        key = current_app.config.get("TIANDITU_KEY")
        url = url.replace("{key}", key) if key else None
    if name == "local":
        url = current_app.config.get("LOCAL_TILES_URL") or url
    return name, url, attribution, coords


def build_map(extent) -> folium.Map:
    """A folium map on ``extent`` with the configured base map and vendored Leaflet only."""
    # no folium scale: Leaflet's default shows feet and miles beside metres; the pages add a
    # metric one of their own (static/js/common.js)
    m = folium.Map(location=DEFAULT_CENTRE, zoom_start=13, tiles=None, prefer_canvas=True,
                   control_scale=False, max_zoom=19)
    m.default_js = [("leaflet", url_for("static", filename="vendor/leaflet/leaflet.js"))]
    m.default_css = [("leaflet_css", url_for("static", filename="vendor/leaflet/leaflet.css"))]
    name, url, attribution, _ = basemap()
    if url:
        subdomains = "1234" if name in ("gaode", "tianditu") else "abc"
        folium.TileLayer(url, attr=attribution, name=name, max_zoom=19, subdomains=subdomains).add_to(m)
        g.tile_sources = tile_sources(url, subdomains)  # the page's img-src (webmap.security)
    if extent:
        minx, miny, maxx, maxy = extent
        m.fit_bounds([[miny, minx], [maxy, maxx]])
    return m


_SCRIPT_TAG = re.compile(r"<script(?=[\s>])")


def _with_nonce(html: str) -> str:
    """folium's markup with this request's CSP nonce on each of its ``<script>`` tags (folium
    writes them from our own settings; no stored text reaches them)."""
    return _SCRIPT_TAG.sub(f'<script nonce="{csp_nonce()}"', html)


def render_map(template: str, m: folium.Map, config: dict, **context):
    name, url, _attribution, coords = basemap()
    root = m.get_root()
    root.render()
    return render_template(template, map_header=Markup(_with_nonce(root.header.render())),
                           map_html=Markup(root.html.render()), map_script=Markup(root.script.render()),
                           config=config | {"map": m.get_name(), "coords": coords,
                                             "basemap": name if url else "none"}, **context)


@bp.get("/")
@require()
def home():
    account = current_account()
    if account.role in ("dispatcher", "handler"):  # the 指挥中心 and the departments work from the list
        return redirect(url_for("incidents.case_list"))
    return redirect(url_for("maps.supervisor" if account.role == "supervisor" else "maps.planner"))


@bp.get("/map")
@require("admin", "planner", "viewer")
def planner():
    limits = bounds(engine())
    kinds = {k: facility_kind_name(k, v[0]) for k, v in FACILITY_KINDS.items()}
    m = build_map(layer_extent(engine(), "communities") or layer_extent(engine(), "units"))
    return render_map("planner.html", m, {"bounds": [limits.minimum, limits.maximum],
                                       "facilityKinds": kinds}, title=_("Planning map"))


@bp.get("/supervisor")
@require("supervisor", "admin", "dispatcher")  # the 指挥中心 sees the city's cases on the map too
def supervisor():
    account = current_account()
    categories = {k: in_language(v.get("name", k)) for k, v in incidents.categories(engine()).items()}
    # the map opens on the supervisor's own cells (those they hold, else their scope's), so the
    # page's script has nothing left to fit while folium's first view is still animating
    cells = incidents.my_cells(engine(), account)
    prefix = account.scope_code if account.role == "supervisor" else None
    m = build_map(cells_extent(engine(), prefix, cells) or layer_extent(engine(), "grid_cells"))
    return render_map("supervisor.html", m, {"scope": account.scope_code, "categories": categories,
                                             "cells": cells, "user": account.name,
                                             # the whole city's cases: loaded by the map's view
                                             "byView": account.role != "supervisor"},
                      title=_("Grid map"))


@bp.get("/tiles/<int:z>/<int:x>/<int:y>.png")
@require()
def local_tile(z: int, x: int, y: int):
    """A tile from the local tile folder (``LOCAL_TILES_DIR``, default ``instance/tiles``),
    for intranets with a base map of their own; a missing tile is a plain 404."""
    folder = Path(current_app.config.get("LOCAL_TILES_DIR") or Path(current_app.instance_path) / "tiles")
    return send_from_directory(folder, f"{z}/{x}/{y}.png", max_age=86400)
