"""The layer API, shaped like OGC API – Features, as plain functions (no Flask here).

As in pygeoapi, each function takes parsed arguments and returns ``(status, headers, body)``;
:mod:`webmap.api` only adapts them to Flask. Collections are the layers of the catalogue plus
``blind_spots`` (units with households in no community, a derived, read-only collection).

Items: ``bbox``, ``limit`` (1–10,000, default 1,000), ``offset``, ``next``/``prev`` links,
property filters (``?status=closed``), ``datetime`` on incidents (RFC 3339 interval on
``reported_at``), ``zoom`` (simplify polygons for that zoom, neighbours together so no slivers
open), ``coords=gcj02`` (shift coordinates to match Gaode tiles), ``f=geojson|json|records|csv``
(``json`` is GeoJSON too, as other OGC API – Features servers answer it; ``records`` the bare
attribute list ``{numberMatched, numberReturned, items}``). Errors are raised as
:class:`ApiError` and answered by :mod:`webmap.api` as problem details, like every ``/api/`` route.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from sqlalchemy import Engine

from geodata import plan_rows
from geodata.accounts import Account
from geodata.catalog import LAYERS, get_layer
from geodata.crs import wgs84_to_gcj02
from geodata.errors import Refused
from geodata.i18n import _
from geodata.spreadsheet import cell
from geodata.store import count_layer, layer_extent, read_layer, read_records
from layers.coverage.gaps import BLIND_SPOT
from layers.grid.cells import cell_of_units
from layers.plans.communities import numbers
from webmap import params

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
FORMATS = {"geojson": "application/geo+json", "json": "application/geo+json", "records": "application/json",
           "csv": "text/csv; charset=utf-8"}
RESERVED = {"bbox", "limit", "offset", "f", "zoom", "coords", "datetime"}


@dataclass(frozen=True)
class Collection:
    """A collection of the API: a stored layer, possibly with fixed filters."""

    name: str
    layer: str
    title: str
    filters: dict


COLLECTIONS: dict[str, Collection] = {
    name: Collection(name, name, spec.label, {}) for name, spec in LAYERS.items()
} | {"blind_spots": Collection("blind_spots", "units", "社区盲点 blind spots", BLIND_SPOT)}

#: What a supervisor's scope code limits in each collection: (field, digits of that level).
SCOPED = {"grid_cells": ("code", 15), "incidents": ("grid_code", 15), "communities": ("code", 12),
          "units": ("community_code", 12), "facilities": ("community_code", 12)}
#: layers whose features carry no cell code: a cell's supervisor sees those in the cell
CELL_MEMBERS = ("units", "facilities")
#: stored times are the city's local time (China Standard Time)
LOCAL_TIME = ZoneInfo("Asia/Shanghai")


class ApiError(Exception):
    """An error of the layer API: an HTTP status, an OGC API exception ``code``
    (``InvalidParameterValue``…) and a ``description`` in the reader's language; answered as
    problem details (``detail`` the description, ``code`` the OGC code) by :mod:`webmap.api`."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def _json(data, status: int = 200, content_type: str = "application/json"):
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return status, {"Content-Type": content_type}, body


def _collection(name: str) -> Collection:
    if name not in COLLECTIONS:
        raise ApiError(404, "NotFound", _("no collection {name}; see /api/collections", name=repr(name)))
    return COLLECTIONS[name]


def scope_filters(engine: Engine, collection: Collection, account: Account) -> dict[str, dict]:
    """The filters that keep a supervisor inside their scope in ``collection`` (403 where none
    applies): the codes under their scope; and for a supervisor of one grid cell, whose units
    and facilities carry only a community code, those in the cell (:func:`cell_members`)."""
    if account.role == "handler":  # a department reads its own cases at /api/incidents
        raise ApiError(403, "Forbidden", _("a department's handler reads its cases at /api/incidents"))
    if account.role != "supervisor":
        return {}
    if collection.name not in SCOPED:
        raise ApiError(403, "Forbidden", _("a supervisor's scope does not cover {collection}",
                                           collection=collection.name))
    field, digits = SCOPED[collection.name]
    filters = {"prefix": {field: account.scope_code[:digits]}}
    if collection.layer in CELL_MEMBERS and len(account.scope_code) > 12:
        filters["isin"] = {"code": cell_members(engine, collection.layer, account.scope_code)}
    return filters


def cell_members(engine: Engine, layer: str, cell: str) -> list[str]:
    """The codes of ``layer``'s features in grid cell ``cell``: the units whose inside point
    lies in it (the rule cells are built by), the facilities standing in it."""
    cells = read_layer(engine, "grid_cells", where={"code": cell})
    if cells.empty:
        return []
    features = read_layer(engine, layer, prefix={"community_code": cell[:12]})
    if features.empty:
        return []
    if layer == "units":
        held = cell_of_units(features, cells)
        return sorted(held.index[held == cell].astype(str))
    inside = shapely.covers(cells.geometry.values[0], features.geometry.values)
    return sorted(features["code"][inside].astype(str))


def collections(engine: Engine, base: str, account: Account):
    items = []
    for name in COLLECTIONS:
        if (account.role == "supervisor" and name not in SCOPED) or account.role == "handler":
            continue
        items.append(_describe(engine, COLLECTIONS[name], base))
    return _json({"collections": items, "links": [{"rel": "self", "href": f"{base}/collections"}]})


def _describe(engine: Engine, collection: Collection, base: str) -> dict:
    spec = get_layer(collection.layer)
    extent = layer_extent(engine, collection.layer)
    href = f"{base}/collections/{collection.name}"
    return {
        "id": collection.name, "title": collection.title, "itemType": "feature",
        "extent": {"spatial": {"bbox": [list(extent)] if extent else [],
                               "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
        "properties": {f.name: {"type": f.dtype, "title": f.label} for f in spec.fields},
        "links": [{"rel": "self", "href": href},
                  {"rel": "items", "type": "application/geo+json", "href": f"{href}/items"}],
    }


def collection(engine: Engine, name: str, base: str, account: Account):
    coll = _collection(name)
    if account.role == "supervisor" and coll.name not in SCOPED:
        raise ApiError(403, "Forbidden", _("a supervisor's scope does not cover {collection}",
                                           collection=coll.name))
    if account.role == "handler":
        raise ApiError(403, "Forbidden", _("a department's handler reads its cases at /api/incidents"))
    return _json(_describe(engine, coll, base))


# --- items ---------------------------------------------------------------------------------


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ApiError(400, "InvalidParameterValue", _("bbox {text} is not four numbers",
                                                       text=repr(text))) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ApiError(400, "InvalidParameterValue", _("bbox takes four numbers: minx,miny,maxx,maxy"))
    minx, miny, maxx, maxy = values
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ApiError(400, "InvalidParameterValue",
                       _("bbox must be minx,miny,maxx,maxy in degrees with min ≤ max"))
    return minx, miny, maxx, maxy


def _parse_int(args: dict, key: str, default: int, low: int, high: int) -> int:
    text = args.get(key)
    if text is None or text == "":
        return default
    try:
        value = params.whole(text, key)
    except Refused:
        raise ApiError(400, "InvalidParameterValue", _("{key} {text} is not a whole number",
                                                       key=key, text=repr(text))) from None
    if not low <= value <= high:
        raise ApiError(400, "InvalidParameterValue", _("{key} must be between {low} and {high}",
                                                       key=key, low=low, high=high))
    return value


def _parse_datetime(text: str) -> tuple[datetime | None, datetime | None]:
    parts = text.split("/")
    if len(parts) > 2:
        raise ApiError(400, "InvalidParameterValue", _("datetime is one instant or start/end"))

    def one(value: str) -> datetime | None:
        if value in ("", ".."):
            return None
        try:
            stamp = params.moment(value, "datetime")
        except Refused:
            raise ApiError(400, "InvalidParameterValue",
                           _("datetime {value} is not RFC 3339 from {first} to {last}", value=repr(value),
                             first=params.FIRST_DAY, last=params.LAST_DAY)) from None
        if stamp.tzinfo is not None:  # stored times are local (China Standard Time)
            stamp = stamp.astimezone(LOCAL_TIME).replace(tzinfo=None)
        return stamp

    if len(parts) == 1:
        instant = one(parts[0])
        return instant, instant
    start, end = one(parts[0]), one(parts[1])
    if start is not None and end is not None and start > end:
        raise ApiError(400, "InvalidParameterValue", _("datetime: the start comes after the end"))
    return start, end


def _filter_value(key: str, dtype: str, value: str):
    """A property filter's text as the field's type (400 when it is not one)."""
    try:
        if dtype == "int":
            return params.whole(value, key)
        if dtype == "float":
            return params.number(value, key, -sys.float_info.max, sys.float_info.max)
        if dtype == "date":
            return params.day(value, key)
        if dtype == "datetime":
            return _parse_datetime(value)[0]
        if dtype == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise Refused(_("{key} is true or false", key=key))
            return value.lower() in ("true", "1")
    except Refused as exc:
        message = str(exc)
        if dtype == "int":
            message = _("{key} {value} is not a number (a whole one, within 64 bits)",
                        key=key, value=repr(value))
        elif dtype == "float":
            message = _("{key} {value} is not a number", key=key, value=repr(value))
        raise ApiError(400, "InvalidParameterValue", message) from None
    return value


def parse_query(engine: Engine, collection: Collection, args: dict, account: Account) -> dict:
    """Read the items parameters into ``read_layer`` filters (400 on anything malformed)."""
    spec = get_layer(collection.layer)
    fmt = args.get("f", "geojson")
    if fmt not in FORMATS:
        raise ApiError(400, "InvalidParameterValue", _("f={fmt}: use geojson, json, records or csv",
                                                       fmt=repr(fmt)))
    query = {
        "limit": _parse_int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        "offset": _parse_int(args, "offset", 0, 0, 10**9),
        "zoom": _parse_int(args, "zoom", -1, 0, 24) if args.get("zoom") else None,
        "f": fmt,
        "coords": args.get("coords", "wgs84"),
        "filters": {k: dict(v) if isinstance(v, dict) else list(v) for k, v in collection.filters.items()},
    }
    if query["coords"] not in ("wgs84", "gcj02"):
        raise ApiError(400, "InvalidParameterValue", _("coords is wgs84 (default) or gcj02"))
    filters = query["filters"]
    if "bbox" in args:
        filters["bbox"] = _parse_bbox(args["bbox"])
    if "datetime" in args:
        if "reported_at" not in spec.field_names:
            raise ApiError(400, "InvalidParameter", _("{collection} has no time to filter on",
                                                      collection=collection.name))
        filters.setdefault("ranges", {})["reported_at"] = _parse_datetime(args["datetime"])
    where = {}
    for key, value in args.items():
        if key in RESERVED:
            continue
        if key not in spec.field_names:
            raise ApiError(400, "InvalidParameter", _("unknown parameter {key}; filters are {fields}",
                                                      key=repr(key), fields=", ".join(spec.field_names)))
        where[key] = _filter_value(key, spec.field(key).dtype, value)
    if where:
        filters["where"] = where
    for kind, limits in scope_filters(engine, collection, account).items():
        filters.setdefault(kind, {}).update(limits)
    return query


def simplify_for_zoom(geoms: np.ndarray, zoom: int) -> np.ndarray:
    """Polygons simplified to about a third of a pixel at ``zoom``, neighbours together
    (``coverage_simplify``), so that no slivers open between them; lines and points as they are."""
    kinds = shapely.get_type_id(geoms)
    polygonal = np.isin(kinds, [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    if zoom >= 17 or len(geoms) == 0 or not polygonal.all():
        return geoms
    tolerance = 360.0 / (256 * 2**zoom) / 3
    try:
        return shapely.coverage_simplify(geoms, tolerance)
    except shapely.errors.GEOSException:  # not a clean coverage (e.g. overlapping cells)
        return shapely.simplify(geoms, tolerance, preserve_topology=True)


def _plain(value):
    """A JSON value: dates and times as ISO text, numpy numbers as Python numbers."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(engine: Engine, coll: Collection, query: dict) -> tuple[list[dict], np.ndarray]:
    records, geoms = read_records(engine, coll.layer, limit=query["limit"], offset=query["offset"],
                                  **query["filters"])
    if coll.layer == "communities" and records:
        extra = numbers(engine, [r["code"] for r in records], geoms).drop(columns="code")
        for record, more in zip(records, extra.to_dict("records"), strict=True):
            record.update(more)
        streets = plan_rows.street_names(engine)  # the street by its name beside its code
        for record in records:
            record["street_name"] = streets.get(record.get("street_code"))
    records = [{k: _plain(v) for k, v in r.items()} for r in records]
    if query["zoom"] is not None:
        geoms = simplify_for_zoom(geoms, query["zoom"])
    return records, geoms


def _geojson(geoms: np.ndarray, coords: str) -> np.ndarray:
    """GeoJSON text of each geometry, shifted to GCJ-02 when asked, to 7 decimals (~1 cm)."""
    if coords == "gcj02" and len(geoms):
        xy = shapely.get_coordinates(geoms)
        lon, lat = wgs84_to_gcj02(xy[:, 0], xy[:, 1])
        geoms = shapely.set_coordinates(geoms.copy(), np.column_stack([lon, lat]))
    return shapely.to_geojson(shapely.transform(geoms, lambda xy: np.round(xy, 7)))


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def items(engine: Engine, name: str, args: dict, base: str, account: Account):
    coll = _collection(name)
    query = parse_query(engine, coll, args, account)
    matched = count_layer(engine, coll.layer, **query["filters"])
    records, geoms = _records(engine, coll, query)
    fmt = query["f"]
    if fmt == "records":  # the bare attribute list (f=json is GeoJSON, as OGC API servers answer it)
        return _json({"numberMatched": matched, "numberReturned": len(records), "items": records})
    if fmt == "csv":
        out = io.StringIO()
        fields = list(records[0]) if records else [f.name for f in get_layer(coll.layer).fields]
        writer = csv.DictWriter(out, fieldnames=[*fields, "wkt"])
        writer.writeheader()
        for record, wkt in zip(records, shapely.to_wkt(geoms, rounding_precision=7), strict=True):
            writer.writerow({k: cell(v) for k, v in record.items()} | {"wkt": wkt})
        return 200, {"Content-Type": FORMATS["csv"]}, out.getvalue().encode("utf-8-sig")
    href = f"{base}/collections/{name}/items"
    plain = {k: v for k, v in args.items() if k != "offset"}
    links = [{"rel": "self", "type": FORMATS["geojson"], "href": f"{href}?{urlencode(args)}"}]
    offset, limit = query["offset"], query["limit"]
    if offset + len(records) < matched:
        links.append({"rel": "next", "type": FORMATS["geojson"],
                      "href": f"{href}?{urlencode(plain | {'offset': offset + limit})}"})
    if offset > 0:
        links.append({"rel": "prev", "type": FORMATS["geojson"],
                      "href": f"{href}?{urlencode(plain | {'offset': max(0, offset - limit)})}"})
    # features are assembled as text: the geometry's GeoJSON comes ready-made from GEOS
    texts = _geojson(geoms, query["coords"])
    features = ",".join(f'{{"type":"Feature","id":{_dumps(r.get("code"))},"geometry":{g},'
                        f'"properties":{_dumps(r)}}}' for r, g in zip(records, texts, strict=True))
    # no timeStamp (optional in OGC API Features): it would change the ETag every second, and a
    # map reading the same view again would never get its 304
    head = {"numberMatched": matched, "numberReturned": len(records), "links": links}
    body = f'{{"type":"FeatureCollection","features":[{features}],{_dumps(head)[1:]}'
    return 200, {"Content-Type": FORMATS["geojson"]}, body.encode("utf-8")


def item(engine: Engine, name: str, code: str, base: str, account: Account, coords: str = "wgs84"):
    coll = _collection(name)
    query = parse_query(engine, coll, {}, account)
    query["filters"]["where"] = {"code": code}
    records, geoms = _records(engine, coll, query)
    if not records:
        raise ApiError(404, "NotFound", _("no feature {code} in {name}", code=repr(code), name=name))
    feature = {"type": "Feature", "id": code, "geometry": json.loads(_geojson(geoms, coords)[0]),
               "properties": records[0],
               "links": [{"rel": "self", "href": f"{base}/collections/{name}/items/{code}"},
                         {"rel": "collection", "href": f"{base}/collections/{name}"}]}
    return _json(feature, content_type=FORMATS["geojson"])


# --- the quiet base: the city's own roads and water, for maps without tiles ------------------------

#: roads drawn below street zoom: the arterials and bridges a planner finds their way by
MAJOR_ROADS = ("arterial", "bridge", "primary", "secondary", "trunk", "motorway", "expressway",
               "快速路", "主干路", "次干路", "高速公路", "国道", "省道", "桥梁")
#: from this zoom (street zoom) every road is drawn and named on the page; below it only the
#: major ones (a city's lanes at zoom 15 are thousands of lines a planner cannot read)
STREET_ZOOM = 16
BASE_LIMIT = 5_000


def basemap(engine: Engine, args: dict):
    """``GET /api/basemap?bbox=…&zoom=…``: the city's roads (by class for the zoom) and its water
    (units of ``land_use=water``) in a view, as one GeoJSON collection for the map pages to draw
    as a quiet base when no tile base map is configured (the default on an intranet). Lines are
    simplified to half a pixel; at most 5,000 roads, longest first."""
    if "bbox" not in args:
        raise ApiError(400, "MissingParameterValue", _("bbox is required: minx,miny,maxx,maxy"))
    bbox = _parse_bbox(args["bbox"])
    zoom = _parse_int(args, "zoom", 14, 0, 24)
    road_filter = {} if zoom >= STREET_ZOOM else {"isin": {"road_class": list(MAJOR_ROADS)}}
    roads, road_geoms = read_records(engine, "roads", bbox=bbox, limit=BASE_LIMIT * 4, **road_filter)
    if len(roads) > BASE_LIMIT:  # the longest carry the names people know
        keep = np.sort(np.argsort(-shapely.length(road_geoms), kind="stable")[:BASE_LIMIT])
        roads, road_geoms = [roads[i] for i in keep], road_geoms[keep]
    water, water_geoms = read_records(engine, "units", bbox=bbox, where={"land_use": "water"},
                                      limit=BASE_LIMIT)
    # a base is drawn pale and thin: half a pixel of detail is enough, and 6 decimals (10 cm)
    tolerance = 360.0 / (256 * 2**zoom) / 2
    road_geoms = shapely.simplify(road_geoms, tolerance, preserve_topology=False)
    water_geoms = shapely.simplify(water_geoms, tolerance, preserve_topology=True)
    props = [{"kind": "road", "name": r.get("name"), "road_class": r.get("road_class"),
              "major": r.get("road_class") in MAJOR_ROADS} for r in roads]
    props += [{"kind": "water"} for _ in water]
    geoms = np.concatenate([road_geoms, water_geoms])
    texts = shapely.to_geojson(shapely.transform(geoms, lambda xy: np.round(xy, 6))) if len(geoms) else []
    features = ",".join(f'{{"type":"Feature","geometry":{g},"properties":{_dumps(p)}}}'
                        for p, g in zip(props, texts, strict=True))
    body = f'{{"type":"FeatureCollection","features":[{features}]}}'
    return 200, {"Content-Type": FORMATS["geojson"]}, body.encode("utf-8")
