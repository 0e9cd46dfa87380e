"""Where a point is, in words a 网格员 reads: the community's name, the nearest road of the roads
layer, the nearest grid cell of a scope (for a pin outside every cell), and the counts of cases
that need someone (new, returned for rework, overdue). Only SQL and geometry reading live here;
what the words say is :mod:`layers.incidents.loop`.

Distances are measured on shapely geometries in a local metric frame (metres per degree at the
point's latitude): the same answer on SpatiaLite and PostGIS, and exact enough for a few hundred
metres around a pin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import shapely
from sqlalchemy import Connection, case, func, select

from geodata import dialect
from geodata.models import Community, GridCell, Incident, Road
from geodata.routing import districts_of_codes, in_districts

#: metres per degree of latitude (and of longitude at the equator)
METRES_PER_DEGREE = 111_320.0


def _box(lon: float, lat: float, metres: float) -> tuple[float, float, float, float]:
    dy = metres / METRES_PER_DEGREE
    dx = metres / (METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 0.01))
    return lon - dx, lat - dy, lon + dx, lat + dy


def _metric(geoms, lon: float, lat: float):
    """``geoms`` moved into metres around (lon, lat) (an equirectangular frame: fine locally)."""
    kx = METRES_PER_DEGREE * max(math.cos(math.radians(lat)), 0.01)
    return shapely.transform(geoms, lambda xy: (xy - (lon, lat)) * (kx, METRES_PER_DEGREE))


def _nearest(rows: list, lon: float, lat: float) -> tuple[object, float] | None:
    """(the row, its distance in metres) of the row whose geometry (its last column, WKB) is
    nearest (lon, lat)."""
    if not rows:
        return None
    geoms = _metric(shapely.from_wkb([bytes(r[-1]) for r in rows]), lon, lat)
    away = shapely.distance(geoms, shapely.Point(0.0, 0.0))
    best = int(away.argmin())
    return rows[best], float(away[best])


def community_names(conn: Connection, codes: Iterable[str]) -> dict[str, str]:
    """The names of the current communities of ``codes`` (communities' codes, or cells': a cell's
    first 12 digits), read from their districts alone (:func:`geodata.routing.districts_of_codes`)."""
    wanted = sorted({str(c)[:12] for c in codes if c})
    if not wanted:
        return {}
    table = Community.__table__
    return dict(conn.execute(select(table.c.code, table.c.name).where(
        table.c.code.in_(wanted), in_districts(table, districts_of_codes(conn, wanted)))).all())


def community_name(conn: Connection, code: str | None) -> str | None:
    """The name of community ``code`` (None when there is none)."""
    return community_names(conn, [code]).get(code) if code else None


def nearest_road(
    conn: Connection, lon: float, lat: float, within_m: float = 300.0
) -> tuple[str, float] | None:
    """(name, metres) of the nearest named road within ``within_m`` of (lon, lat), or None."""
    roads = Road.__table__
    rows = conn.execute(
        select(roads.c.name, dialect.as_wkb(roads.c.geom))
        .where(dialect.bbox_filter(conn, roads, _box(lon, lat, within_m)))
        .where(roads.c.name.is_not(None), roads.c.name != "")
        .limit(500)
    ).all()
    found = _nearest(rows, lon, lat)
    if found is None or found[1] > within_m:
        return None
    return found[0][0], found[1]


def nearest_cell(
    conn: Connection, lon: float, lat: float, prefix: str | None = None, codes: Sequence[str] | None = None
) -> tuple[str, float] | None:
    """(code, metres) of the grid cell nearest (lon, lat) among ``codes`` (or those under
    ``prefix``, or all), looking ever wider around the point; None when there is no cell."""
    cells = GridCell.__table__
    stmt = select(cells.c.code, dialect.as_wkb(cells.c.geom))
    if codes:
        stmt = stmt.where(cells.c.code.in_(list(codes)))
    elif prefix:
        stmt = stmt.where(cells.c.code.startswith(prefix, autoescape=True))
    for radius in (500.0, 3_000.0, 20_000.0):
        near = stmt.where(dialect.bbox_filter(conn, cells, _box(lon, lat, radius))).limit(2000)
        rows = conn.execute(near).all()
        found = _nearest(rows, lon, lat)
        if found is not None and found[1] <= radius:  # nothing outside the box can be nearer
            return found[0][0], found[1]
    # far from every cell: the 50 whose boxes' centres are nearest (ordered in the database, so
    # a pin far away never reads a whole city's cells), the nearest of them measured exactly
    minx, miny, maxx, maxy = dialect.bounds_columns(conn, cells.c.geom)
    kx = math.cos(math.radians(lat))
    dx, dy = ((minx + maxx) / 2 - lon) * kx, (miny + maxy) / 2 - lat
    found = _nearest(conn.execute(stmt.order_by(dx * dx + dy * dy).limit(50)).all(), lon, lat)
    return None if found is None else (found[0][0], found[1])


def attention_counts(
    conn: Connection,
    now: datetime,
    open_statuses: Sequence[str],
    prefix: str | None = None,
    cells: Sequence[str] | None = None,
    department: str | None = None,
    new_status: str = "reported",
) -> dict[str, int]:
    """How many cases in a scope need someone: ``new`` (reported, not yet filed), ``returned``
    (sent back for rework and not handled again) and ``overdue`` (open past their due time);
    ``department``: only the cases dispatched to it (a handler's); ``new_status``: what is new
    for the reader — for a department a case dispatched to it, neither returned nor overdue."""
    t = Incident.__table__
    new = t.c.status == new_status
    if new_status != "reported":  # not counted twice: a returned or an overdue case is that
        new = new & (t.c.rework_count == 0) & (t.c.due_at.is_(None) | (t.c.due_at >= now))
    stmt = select(
        func.coalesce(func.sum(case((new, 1), else_=0)), 0),
        func.coalesce(func.sum(case(((t.c.status == "dispatched") & (t.c.rework_count > 0), 1), else_=0)), 0),
        func.coalesce(func.sum(case((t.c.due_at < now, 1), else_=0)), 0),
    ).where(t.c.status.in_(list(open_statuses)))
    if department is not None:
        stmt = stmt.where(t.c.department_code == department)
    if cells:
        stmt = stmt.where(t.c.grid_code.in_(list(cells)))
    elif prefix:
        # cases in the cells under the scope, and those placed only in a community or street of it
        no_cell = t.c.grid_code.is_(None)
        stmt = stmt.where(
            t.c.grid_code.startswith(prefix, autoescape=True)
            | (no_cell & t.c.community_code.startswith(prefix, autoescape=True))
            | (no_cell & t.c.community_code.is_(None) & t.c.street_code.startswith(prefix, autoescape=True))
        )
    new, returned, overdue = conn.execute(stmt).one()
    return {"new": int(new), "returned": int(returned), "overdue": int(overdue)}


def _geojson(rows: list, keys: Sequence[str]) -> list[dict]:
    """Rows (properties…, WKB) as GeoJSON features, coordinates to 6 decimals (about 0.1 m)."""
    if not rows:
        return []
    geoms = shapely.set_precision(shapely.from_wkb([bytes(r[-1]) for r in rows]), 1e-6)
    return [
        {"type": "Feature", "properties": dict(zip(keys, r[:-1], strict=True)),
         "geometry": json.loads(shapely.to_geojson(g))}
        for r, g in zip(rows, geoms, strict=True)
    ]


def base_features(
    conn: Connection,
    bbox: tuple[float, float, float, float],
    prefix: str | None = None,
    *,
    roads: bool = True,
    limit: int = 3000,
) -> dict[str, list[dict]]:
    """The grid cells (under ``prefix``) and named roads within ``bbox`` as GeoJSON features: what
    the case pages draw as their base when no base map loads."""
    cells, road = GridCell.__table__, Road.__table__
    stmt = select(cells.c.code, cells.c.community_code, dialect.as_wkb(cells.c.geom)).where(
        dialect.bbox_filter(conn, cells, bbox))
    if prefix:
        stmt = stmt.where(cells.c.code.startswith(prefix, autoescape=True))
    out = {"cells": _geojson(conn.execute(stmt.order_by(cells.c.code).limit(limit)).all(),
                             ("code", "community_code")), "roads": []}
    if roads:
        found = conn.execute(
            select(road.c.name, road.c.road_class, dialect.as_wkb(road.c.geom))
            .where(dialect.bbox_filter(conn, road, bbox)).order_by(road.c.id).limit(limit)
        ).all()
        out["roads"] = _geojson(found, ("name", "road_class"))
    return out
