"""Load layers as GeoDataFrames and save them back, in one transaction.

This is the way in and out of the database for ``layers/`` and for import/export. Geometries
travel as WKB and are decoded with shapely's vectorised functions, never row by row.

>>> units = read_layer(engine, "units", street="420103001")
>>> with engine.begin() as conn:
...     write_layer(conn, "units", units, mode="update")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import date

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, Integer, bindparam, delete, func, insert, literal, select, update

from geodata import dialect
from geodata.catalog import LAYERS, LayerSpec, get_layer
from geodata.db import BATCH
from geodata.errors import Conflict
from geodata.i18n import _
from geodata.models import SRID, Community, CommunityHistory, UnitAdjacency

Progress = Callable[[int], None]


_MULTI = {"polygon": (shapely.GeometryType.MULTIPOLYGON, shapely.multipolygons),
          "line": (shapely.GeometryType.MULTILINESTRING, shapely.multilinestrings)}


def as_stored_type(geoms: np.ndarray, family: str) -> np.ndarray:
    """Promote polygons and lines to their multi types, as the columns are declared."""
    if family not in _MULTI:
        return geoms
    multi_type, build = _MULTI[family]
    parts, index = shapely.get_parts(geoms, return_index=True)
    out = np.empty(len(geoms), dtype=object)
    out[:] = build(parts, indices=index) if len(parts) else []
    already = shapely.get_type_id(geoms) == multi_type
    out[already] = geoms[already]
    return out


def _select(spec: LayerSpec, conn: Connection):
    table = spec.table
    columns = [table.c.id] + [table.c[name] for name in spec.field_names]
    return select(*columns, dialect.as_wkb(table.c.geom).label("wkb"))


def _scope(conn: Connection, spec: LayerSpec, stmt, street: str | None, community: str | None):
    """Restrict ``stmt`` to one street or community, through codes where the layer has them."""
    table = spec.table
    for code, level in ((community, "community_code"), (street, "street_code")):
        if code is None:
            continue
        if level in table.c and (level != "street_code" or spec.name != "streets"):
            stmt = stmt.where(table.c[level] == code)
        elif spec.code_digits and spec.code_digits >= len(code):
            stmt = stmt.where(table.c.code.startswith(code, autoescape=True))  # codes nest: prefix = parent
        elif "community_code" in table.c:
            stmt = stmt.where(table.c.community_code.startswith(code, autoescape=True))
        elif "grid_code" in table.c:
            stmt = stmt.where(table.c.grid_code.startswith(code, autoescape=True))
        else:  # roads, buildings: by location inside the parent's polygon
            parent = get_layer("communities" if level == "community_code" else "streets").table
            area = select(parent.c.geom).where(parent.c.code == code).scalar_subquery()
            stmt = stmt.where(func.ST_Intersects(table.c.geom, area))
    return stmt


def _filtered(conn: Connection, spec: LayerSpec, stmt, *, street=None, community=None, bbox=None,
              where=None, prefix=None, ranges=None, empty=None, isin=None):
    table = spec.table
    for key, values in (isin or {}).items():
        stmt = stmt.where(table.c[key].in_(list(values)))
    stmt = _scope(conn, spec, stmt, street, community)
    if bbox is not None:
        stmt = stmt.where(dialect.bbox_filter(conn, table, bbox))
    for key, value in (where or {}).items():
        stmt = stmt.where(table.c[key] == value)
    for key, value in (prefix or {}).items():  # codes nest, so a prefix is a parent
        stmt = stmt.where(table.c[key].startswith(value, autoescape=True))
    for key, (low, high) in (ranges or {}).items():
        if low is not None:
            stmt = stmt.where(table.c[key] >= low)
        if high is not None:
            stmt = stmt.where(table.c[key] <= high)
    for key in empty or ():
        stmt = stmt.where(table.c[key].is_(None))
    return stmt


def read_layer(
    engine: Engine | Connection,
    layer: str,
    *,
    street: str | None = None,
    community: str | None = None,
    bbox: dialect.BBox | None = None,
    where: dict | None = None,
    prefix: dict[str, str] | None = None,
    ranges: dict[str, tuple] | None = None,
    empty: Iterable[str] | None = None,
    isin: dict[str, Iterable] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> gpd.GeoDataFrame:
    """Layer ``layer`` (or one street's or community's part of it) as a GeoDataFrame in EPSG:4326.

    Filters: ``bbox`` (minx, miny, maxx, maxy in degrees, through the spatial index on both
    databases), ``where`` (equal values), ``prefix`` (codes under a parent code), ``ranges``
    (``{field: (low, high)}``, either end ``None``), ``empty`` (fields that are NULL), ``isin``
    (``{field: values}``).
    ``limit``/``offset`` page through the rows in a stable order.
    """
    keys, rows = _rows(engine, layer, limit=limit, offset=offset, street=street, community=community,
                       bbox=bbox, where=where, prefix=prefix, ranges=ranges, empty=empty, isin=isin)
    # column by column: building a frame from Row objects costs 4× more
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(keys)
    frame = pd.DataFrame({k: pd.Series(c, dtype=object) for k, c in zip(keys, columns, strict=True)})
    frame = frame.infer_objects()
    geoms = shapely.from_wkb(frame.pop("wkb").to_numpy())
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=SRID, index=frame.index),
                            crs=SRID)


def _rows(engine: Engine | Connection, layer: str, *, limit: int | None = None, offset: int = 0,
          **filters) -> tuple[list[str], list]:
    spec = get_layer(layer)
    conn_cm = engine.connect() if isinstance(engine, Engine) else nullcontext(engine)
    with conn_cm as conn:
        stmt = _filtered(conn, spec, _select(spec, conn), **filters)
        stmt = stmt.order_by(spec.table.c.id).offset(offset or None).limit(limit)
        result = conn.execute(stmt)
        if any(f.dtype in ("date", "datetime", "bool") for f in spec.fields):
            return list(result.keys()), result.fetchall()
        # no value needs converting: take the driver's rows as they are (a city's units are
        # 200,000 rows, and SQLAlchemy's Row objects would cost more than the query)
        return list(result.keys()), result.cursor.fetchall()


def read_records(engine: Engine | Connection, layer: str, **query) -> tuple[list[dict], np.ndarray]:
    """Like :func:`read_layer`, as plain dicts and a geometry array: no DataFrame, for the many
    small reads of a web API where pandas' overhead would be most of the time."""
    keys, rows = _rows(engine, layer, **query)
    names = keys[1:-1]  # without id and wkb
    records = [dict(zip(names, row[1:-1], strict=True)) for row in rows]
    return records, shapely.from_wkb([row[-1] for row in rows])


def count_layer(engine: Engine | Connection, layer: str, **filters) -> int:
    """How many features of ``layer`` match the filters :func:`read_layer` takes."""
    spec = get_layer(layer)
    conn_cm = engine.connect() if isinstance(engine, Engine) else nullcontext(engine)
    with conn_cm as conn:
        stmt = _filtered(conn, spec, select(func.count()).select_from(spec.table), **filters)
        return conn.execute(stmt).scalar_one()


def layer_extent(engine: Engine, layer: str) -> tuple[float, float, float, float] | None:
    """The bounding box of ``layer`` in degrees, or None when it is empty."""
    table = get_layer(layer).table
    with engine.connect() as conn:
        minx, miny, maxx, maxy = dialect.bounds_columns(conn, table.c.geom)
        row = conn.execute(select(func.min(minx), func.min(miny), func.max(maxx), func.max(maxy))).one()
    return None if row[0] is None else tuple(float(v) for v in row)


def unit_totals(engine: Engine | Connection, by: str = "community_code", **filters) -> pd.DataFrame:
    """Households, population and unit count of the units grouped by ``by`` (a code field)."""
    table = get_layer("units").table
    conn_cm = engine.connect() if isinstance(engine, Engine) else nullcontext(engine)
    with conn_cm as conn:
        stmt = select(table.c[by], func.sum(table.c.households), func.sum(table.c.population),
                      func.count()).group_by(table.c[by])
        stmt = _filtered(conn, get_layer("units"), stmt, **filters)
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame(rows, columns=[by, "households", "population", "units"])
    return frame.astype({"households": "int64", "population": "int64", "units": "int64"})


def _records(spec: LayerSpec, gdf: gpd.GeoDataFrame, columns: Iterable[str]) -> list[dict]:
    geoms = as_stored_type(np.asarray(gdf.geometry.values, dtype=object), spec.geometry)
    wkb = shapely.to_wkb(geoms, output_dimension=2)
    frame = gdf[list(columns)].astype(object)
    frame = frame.where(pd.notna(frame), None)
    records = frame.to_dict("records")
    for record, blob in zip(records, wkb, strict=True):
        record["geom_wkb"] = blob
    return records


def write_layer(
    conn: Connection,
    layer: str,
    gdf: gpd.GeoDataFrame,
    *,
    mode: str = "append",
    progress: Progress | None = None,
) -> int:
    """Write ``gdf`` (fields named as the catalogue says, geometry in EPSG:4326) into ``layer``.

    ``mode`` is ``append`` (insert), ``replace`` (delete the whole layer first) or ``update``
    (rows matched by ``code`` are updated). Runs on the caller's connection so that the caller
    decides the transaction: one import is one transaction. Returns the number of rows written.
    """
    spec = get_layer(layer)
    table = spec.table
    columns = [c for c in spec.field_names if c in gdf.columns]
    if mode == "replace":
        conn.execute(delete(table))
    geom = {"geom": dialect.geom_from_wkb()}
    if mode == "update":
        stmt = (
            update(table)
            .where(table.c.code == bindparam("match_code"))
            .values({c: bindparam(c) for c in columns if c != "code"} | geom)
        )
    else:
        stmt = insert(table).values({c: bindparam(c) for c in columns} | geom)
    written = 0
    for start in range(0, len(gdf), BATCH):
        records = _records(spec, gdf.iloc[start:start + BATCH], columns)
        if mode == "update":
            for record in records:
                record["match_code"] = record.pop("code")
        conn.execute(stmt, records)
        written += len(records)
        if progress:
            progress(len(records))
    return written


def existing_codes(conn: Connection, layer: str, codes: Iterable[str] | None = None) -> set[str]:
    """The codes of ``layer`` already stored (only among ``codes`` when given)."""
    table = get_layer(layer).table
    if codes is None:
        return set(conn.execute(select(table.c.code)).scalars())
    return values_among(conn, table.c.code, codes)


def values_among(conn: Connection, column, values: Iterable[str]) -> set[str]:
    """Which of ``values`` the ``column`` holds, asked ``BATCH`` at a time (SQLite's variable
    limit)."""
    values = list(values)
    found: set[str] = set()
    for start in range(0, len(values), BATCH):
        chunk = values[start:start + BATCH]
        found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def layer_counts(engine: Engine) -> dict[str, int]:
    """Number of features in every layer of the catalogue."""
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(spec.table)).scalar_one()
                for name, spec in LAYERS.items()}


def read_adjacency(engine: Engine, prefix: str | None = None) -> pd.DataFrame:
    """Stored unit adjacency (``unit_a unit_b shared_m``), where either unit's code starts with
    ``prefix`` (unit codes start with their street's code)."""
    table = UnitAdjacency.__table__
    stmt = select(table.c.unit_a, table.c.unit_b, table.c.shared_m)
    if prefix:
        stmt = stmt.where(table.c.unit_a.startswith(prefix, autoescape=True)
                          | table.c.unit_b.startswith(prefix, autoescape=True))
    with engine.connect() as conn:
        # straight from the driver's cursor: a city's 600,000 pairs need no Row objects
        rows = conn.execute(stmt).cursor.fetchall()
    a, b, shared = zip(*rows, strict=True) if rows else ((), (), ())
    return pd.DataFrame({"unit_a": np.array(a, dtype=object), "unit_b": np.array(b, dtype=object),
                         "shared_m": np.array(shared, dtype=float)})


def community_codes_ever(engine: Engine) -> set[str]:
    """Every community code in use or kept in history (a retired code is never given again)."""
    with engine.connect() as conn:
        current = set(conn.execute(select(Community.code)).scalars())
        past = set(conn.execute(select(CommunityHistory.code)).scalars())
    return current | past


def keep_community_history(conn: Connection, *, codes: list[str] | None = None,
                           streets: list[str] | None = None, plan_id: int | None = None) -> None:
    """Copy the current boundaries of ``codes`` (or of the communities of ``streets``, or of every
    community) into ``community_history``, ending today — before they are replaced."""
    current = Community.__table__
    history = CommunityHistory.__table__
    columns = ["code", "name", "street_code", "district_code", "valid_from", "geom"]
    if codes is not None:
        keys, values = current.c.code, list(codes)
    elif streets is not None:
        keys, values = current.c.street_code, list(streets)
    else:
        keys, values = None, [None]
    for start in range(0, len(values), BATCH):
        source = select(*[current.c[c] for c in columns], literal(date.today()).label("valid_to"),
                        literal(plan_id, Integer).label("plan_id"))
        if keys is not None:
            source = source.where(keys.in_(values[start:start + BATCH]))
        conn.execute(insert(history).from_select([*columns, "valid_to", "plan_id"], source))


def replace_cells(conn: Connection, communities: list[str], cells: gpd.GeoDataFrame) -> int:
    """Replace the grid cells of ``communities`` by ``cells`` (code, community_code,
    district_code, geometry) on the caller's transaction; a cell whose code stays keeps its
    supervisor. Returns the number of cells written."""
    table = get_layer("grid_cells").table
    supervisors: dict[str, str] = {}
    for start in range(0, len(communities), BATCH):
        chunk = communities[start:start + BATCH]
        scope = table.c.community_code.in_(chunk)
        supervisors.update(conn.execute(select(table.c.code, table.c.supervisor).where(scope)).all())
        conn.execute(delete(table).where(scope))
    cells = cells.assign(supervisor=[supervisors.get(c) for c in cells["code"]])
    # a stored cell of another community that carries one of the new codes would clash: refuse
    clash = existing_codes(conn, "grid_cells", cells["code"])
    if clash:
        raise Conflict(_("cell codes {p1} belong to cells of other communities: regenerate those "
                         "communities too", p1=', '.join(sorted(clash)[:10])))
    return write_layer(conn, "grid_cells", cells, mode="append")


def search_layer(engine: Engine, layer: str, text: str, limit: int = 20) -> list[dict]:
    """Features of ``layer`` whose name contains ``text`` or whose code starts with it, with
    their bounding boxes — answered by the database, without reading any geometry out."""
    table = get_layer(layer).table
    with engine.connect() as conn:
        stmt = (select(table.c.code, table.c.name, *dialect.bounds_columns(conn, table.c.geom))
                .where(table.c.name.contains(text, autoescape=True)
                       | table.c.code.startswith(text, autoescape=True))
                .order_by(table.c.code).limit(limit))
        rows = conn.execute(stmt).all()
    return [{"layer": layer, "code": r[0], "name": r[1], "bbox": [float(v) for v in r[2:]]} for r in rows]
