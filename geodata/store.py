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
from dataclasses import dataclass, field
from datetime import date, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from geodata import dialect
from geodata.catalog import LAYERS, LayerSpec, get_layer
from geodata.db import BATCH
from geodata.errors import Conflict
from geodata.i18n import _
from geodata.models import SRID, Community, CommunityHistory, District, Street, UnitAdjacency
from geodata.partitions import LARGE, ensure_districts
from geodata.revisions import CACHED_LAYERS, raise_layer_revision

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
    On PostgreSQL partitioned by district, a district with no partition yet gets its own first
    (:func:`geodata.partitions.ensure_districts`; the locks that takes are said there).
    """
    spec = get_layer(layer)
    table = spec.table
    columns = [c for c in spec.field_names if c in gdf.columns]
    if table.name in LARGE and "district_code" in gdf.columns and len(gdf):
        # before any row: each lands in its district's partition, none in DEFAULT to move later
        ensure_districts(conn, [str(c) for c in gdf["district_code"].dropna().unique()])
    # the districts whose cached answers this write makes stale: read before the delete
    touched = written_districts(conn, layer, gdf, mode) \
        if layer in CACHED_LAYERS and (len(gdf) or mode == "replace") else set()
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
    # answers cached on this layer (coverage) are stale now; raised last, so that the counters'
    # row locks are held only from here to the commit, not through the writing: writers of
    # different districts (a grid task each) then write side by side
    if len(gdf) or mode == "replace":
        raise_layer_revision(conn, layer, touched)
    return written


def _district_column(table) -> str | None:
    """The column naming a row's district (the districts layer: its own code), if any."""
    if "district_code" in table.c:
        return "district_code"
    return "code" if table.name == "districts" else None


def stored_districts(conn: Connection, layer: str, codes: Iterable[str] | None = None) -> set[str] | None:
    """The districts of ``layer``'s stored rows (of ``codes`` only, when given), read on the
    caller's transaction; ``None`` when the layer does not say (no district column)."""
    table = get_layer(layer).table
    column = _district_column(table)
    if column is None:
        return None
    stmt = select(table.c[column]).distinct()
    if codes is None:
        return {d for (d,) in conn.execute(stmt) if d}
    codes = list(dict.fromkeys(str(c) for c in codes))
    found: set[str] = set()
    for start in range(0, len(codes), BATCH):
        found |= {d for (d,) in conn.execute(stmt.where(table.c.code.in_(codes[start:start + BATCH]))) if d}
    return found


def written_districts(conn: Connection, layer: str, gdf: gpd.GeoDataFrame, mode: str) -> set[str] | None:
    """The districts a write of ``gdf`` into ``layer`` touches: those of its rows, and of the
    stored rows it deletes (``replace``: the whole layer) or updates (a row may move to another
    district); ``None`` — every district — when a row's district cannot be known (the layer or
    the file has no district column, or a row leaves it empty)."""
    column = _district_column(get_layer(layer).table)
    if column is None or column not in gdf.columns or gdf[column].isna().any():
        return None
    before = stored_districts(conn, layer, None if mode == "replace" else
                              gdf["code"].astype(str).tolist() if mode == "update" else [])
    return None if before is None else before | set(gdf[column].astype(str))


#: Two geometries closer than this (degrees, about a centimetre) are the same: a layer exported as
#: GeoJSON (7 decimals) or CSV (8) and imported back must not count as changed.
GEOMETRY_TOLERANCE = 1e-7
#: Two times less than this apart (seconds) are the same: exports write times to the second.
TIME_TOLERANCE = 1.0


@dataclass
class LayerChanges:
    """What writing a file into a layer would change, row by row, compared with what is stored.

    ``changed``: a mask over the file's rows, true for the rows that are new or differ from the
    stored row of their code (an attribute, or the geometry beyond :data:`GEOMETRY_TOLERANCE`);
    ``stored``: a mask, true for the rows whose code is stored; ``removed``: stored codes a
    replacing file leaves out; ``before``: the stored ``street_code`` and ``community_code`` (where
    the layer has them) of every changed or removed row that was stored, so that a writer can say
    which streets and communities the change touched."""

    changed: np.ndarray
    stored: np.ndarray
    removed: list[str] = field(default_factory=list)
    before: dict[str, dict] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        """Whether the write would change anything at all."""
        return bool(self.changed.any()) or bool(self.removed)

    @property
    def unchanged(self) -> int:
        """How many rows of the file are stored exactly as they are."""
        return int((~self.changed).sum())


def _column_default(column):
    default = column.default
    return default.arg if default is not None and default.is_scalar else None


def _plain(value, dtype: str):
    """A value as compared: None for every kind of missing (an empty text too: a shapefile or a
    CSV cannot tell it from none, and a blind spot's community code is stored either way), dates
    and times as Python's."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if dtype == "datetime" and isinstance(value, str):
        value = pd.Timestamp(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if dtype == "date" and isinstance(value, datetime):
        value = value.date()
    if dtype == "date" and isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if dtype == "bool":
        return bool(value)
    return value


def _same_value(dtype: str, a, b) -> bool:
    a, b = _plain(a, dtype), _plain(b, dtype)
    if a is None or b is None:
        return a is None and b is None
    if dtype == "float":
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))
    if dtype == "int":
        return int(a) == int(b)
    if dtype == "datetime":
        return abs((a - b).total_seconds()) < TIME_TOLERANCE
    return a == b


def same_geometries(a: np.ndarray, b: np.ndarray, tolerance: float = GEOMETRY_TOLERANCE) -> np.ndarray:
    """Whether each pair of geometries is the same within ``tolerance``: the same shape whatever
    the order of its rings and their starting points and orientation (a GeoJSON export turns
    exterior rings counterclockwise), every vertex of one within ``tolerance`` of the other."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    same = shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), tolerance=tolerance)
    same = np.asarray(same, dtype=bool)
    # rounding may move which vertex normalising starts a ring from: look closer at the rest of
    # those with the same type and number of vertices
    maybe = ~same & (shapely.get_type_id(a) == shapely.get_type_id(b)) & (
        shapely.get_num_coordinates(a) == shapely.get_num_coordinates(b))
    for i in np.flatnonzero(maybe):
        same[i] = bool(shapely.hausdorff_distance(a[i], b[i]) <= tolerance)
    return same


def compare_with_stored(conn: Connection, layer: str, gdf: gpd.GeoDataFrame, mode: str) -> LayerChanges:
    """Compare the rows of ``gdf`` (fields as the catalogue names them, EPSG:4326, codes unique)
    with the stored rows of their codes, as an ``update`` or ``replace`` of ``layer`` would write
    them: an update leaves the fields the file lacks as they are; a replace gives them their
    defaults, and removes the stored rows whose codes the file leaves out."""
    spec = get_layer(layer)
    table = spec.table
    columns = [c for c in spec.field_names if c != "code"]
    compared = [c for c in columns if c in gdf.columns or mode == "replace"]
    keys = [k for k in ("street_code", "community_code") if k in table.c]
    wanted = list(dict.fromkeys(compared + keys))
    stmt = select(table.c.code, *[table.c[c] for c in wanted], dialect.as_wkb(table.c.geom))
    codes = gdf["code"].astype(str).tolist()
    stored: dict[str, tuple] = {}
    if mode == "replace":
        stored = {row[0]: row[1:] for row in conn.execute(stmt)}
    else:
        for start in range(0, len(codes), BATCH):
            chunk = codes[start:start + BATCH]
            stored.update({row[0]: row[1:] for row in conn.execute(stmt.where(table.c.code.in_(chunk)))})
    position = {c: i for i, c in enumerate(wanted)}
    is_stored = np.array([c in stored for c in codes], dtype=bool)
    changed = ~is_stored
    dtypes = {f.name: f.dtype for f in spec.fields}
    defaults = {c: _column_default(table.c[c]) for c in compared}
    values = {c: (gdf[c].to_numpy(dtype=object) if c in gdf.columns else None) for c in compared}
    for i in np.flatnonzero(is_stored):
        row = stored[codes[i]]
        for c in compared:
            mine = values[c][i] if values[c] is not None else defaults[c]
            if not _same_value(dtypes[c], mine, row[position[c]]):
                changed[i] = True
                break
    check = np.flatnonzero(is_stored & ~changed)
    if len(check):
        theirs = shapely.from_wkb([bytes(stored[codes[i]][-1]) for i in check])
        mine = as_stored_type(np.asarray(gdf.geometry.values, dtype=object)[check], spec.geometry)
        changed[check[~same_geometries(mine, theirs)]] = True
    removed = sorted(set(stored) - set(codes)) if mode == "replace" else []
    before = {c: {k: stored[c][position[k]] for k in keys}
              for c in [codes[i] for i in np.flatnonzero(changed & is_stored)] + removed}
    return LayerChanges(changed, is_stored, removed, before)


def write_changes(conn: Connection, layer: str, gdf: gpd.GeoDataFrame, changes: LayerChanges, *,
                  mode: str, progress: Progress | None = None) -> int:
    """Write only what :func:`compare_with_stored` found changed: an ``update`` updates the changed
    rows; a ``replace`` deletes the rows the file leaves out and those it changes, and inserts the
    changed and new ones. Rows stored exactly as the file has them are not touched (they keep
    their row and id). Returns the number of rows written."""
    table = get_layer(layer).table
    rows = gdf[changes.changed]
    gone = changes.removed + rows.loc[changes.stored[changes.changed], "code"].astype(str).tolist()
    if changes.any and layer in CACHED_LAYERS:  # the districts of the rows deleted or changed, before they go
        before = stored_districts(conn, layer, gone if mode == "replace" else rows["code"].astype(str))
        after = written_districts(conn, layer, rows, "append")
        raise_layer_revision(conn, layer, None if before is None or after is None else before | after)
    if mode == "replace":
        for start in range(0, len(gone), BATCH):
            conn.execute(delete(table).where(table.c.code.in_(gone[start:start + BATCH])))
        written = write_layer(conn, layer, rows, mode="append", progress=progress)
    else:
        written = write_layer(conn, layer, rows, mode="update", progress=progress)
    if progress and changes.unchanged:
        progress(changes.unchanged)  # the rows left as they are count as done
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


def read_adjacency(engine: Engine, prefix: str | None = None, district: str | None = None) -> pd.DataFrame:
    """Stored unit adjacency (``unit_a unit_b shared_m``), where either unit's code starts with
    ``prefix`` (unit codes start with their street's code), of ``district`` only when given (a
    pair is stored under its first unit's district: a pair within a district is always its)."""
    table = UnitAdjacency.__table__
    stmt = select(table.c.unit_a, table.c.unit_b, table.c.shared_m)
    if district is not None:
        stmt = stmt.where(table.c.district_code == district)
    if prefix:
        stmt = stmt.where(table.c.unit_a.startswith(prefix, autoescape=True)
                          | table.c.unit_b.startswith(prefix, autoescape=True))
    with engine.connect() as conn:
        # straight from the driver's cursor: a city's 600,000 pairs need no Row objects
        rows = conn.execute(stmt).cursor.fetchall()
    a, b, shared = zip(*rows, strict=True) if rows else ((), (), ())
    return pd.DataFrame({"unit_a": np.array(a, dtype=object), "unit_b": np.array(b, dtype=object),
                         "shared_m": np.array(shared, dtype=float)})


def community_codes_of_district(engine: Engine | Connection, district: str) -> set[str]:
    """The community codes of ``district`` in use or kept in history (:func:`community_codes_ever`
    for one district: a new code is numbered within its street, so these are all it must avoid)."""
    with nullcontext(engine) if isinstance(engine, Connection) else engine.connect() as conn:
        current = set(conn.execute(select(Community.code)
                                   .where(Community.district_code == district)).scalars())
        past = set(conn.execute(select(CommunityHistory.code)
                                .where(CommunityHistory.district_code == district)).scalars())
    return current | past


def community_codes_ever(engine: Engine) -> set[str]:
    """Every community code in use or kept in history (a retired code is never given again)."""
    with engine.connect() as conn:
        current = set(conn.execute(select(Community.code)).scalars())
        past = set(conn.execute(select(CommunityHistory.code)).scalars())
    return current | past


def known_districts(engine: Engine | Connection) -> list[str]:
    """The district codes the database names: those of the districts table and of its streets
    (sorted, empty codes left out)."""
    stmt = select(District.code).union(select(Street.district_code))
    with nullcontext(engine) if isinstance(engine, Connection) else engine.connect() as conn:
        return sorted(c for c in conn.execute(stmt).scalars() if c)


def unit_district_codes(engine: Engine | Connection) -> set[str | None]:
    """The district codes the units carry, an empty or missing one included (a unit filed under
    no district)."""
    table = get_layer("units").table
    with nullcontext(engine) if isinstance(engine, Connection) else engine.connect() as conn:
        return set(conn.execute(select(table.c.district_code).distinct()).scalars())


def keep_community_history(conn: Connection, *, codes: list[str] | None = None,
                           streets: list[str] | None = None, districts: list[str] | None = None,
                           plan_id: int | None = None) -> None:
    """Copy the current boundaries of ``codes`` (or of the communities of ``streets``, or of every
    community) of ``districts`` (every district when None) into ``community_history``, ending
    today — before they are replaced."""
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
        if districts is not None:
            source = source.where(current.c.district_code.in_(districts))
        conn.execute(insert(history).from_select([*columns, "valid_to", "plan_id"], source))


def replace_cells(conn: Connection, communities: list[str], cells: gpd.GeoDataFrame,
                  districts: list[str] | None = None, origins: dict[str, str] | None = None) -> int:
    """Replace the grid cells of ``communities`` (of ``districts``, theirs, when given: every
    statement then names them) by ``cells`` (code, community_code, district_code, geometry) on
    the caller's transaction; a cell whose code stays keeps its supervisor, and a new cell cut
    from another (``origins``: new code → old) takes that one's. Returns the number of cells
    written."""
    table = get_layer("grid_cells").table
    supervisors: dict[str, str] = {}
    in_districts = [table.c.district_code.in_(districts)] if districts is not None else []
    # even when no cell is written back: the districts of the cells deleted and of those written
    gone: set[str] = set()
    for start in range(0, len(communities), BATCH):
        gone |= {d for (d,) in conn.execute(select(table.c.district_code).distinct().where(
            table.c.community_code.in_(communities[start:start + BATCH]), *in_districts)) if d}
    written = written_districts(conn, "grid_cells", cells, "append") if len(cells) else set()
    for start in range(0, len(communities), BATCH):
        chunk = communities[start:start + BATCH]
        scope = and_(table.c.community_code.in_(chunk), *in_districts)
        supervisors.update(conn.execute(select(table.c.code, table.c.supervisor).where(scope)).all())
        conn.execute(delete(table).where(scope))
    origins = origins or {}
    cells = cells.assign(supervisor=[supervisors.get(c) or supervisors.get(origins.get(c))
                                     for c in cells["code"]])
    # a stored cell of another community that carries one of the new codes would clash: refuse
    clash = existing_codes(conn, "grid_cells", cells["code"])
    if clash:
        raise Conflict(_("cell codes {p1} belong to cells of other communities: regenerate those "
                         "communities too", p1=', '.join(sorted(clash)[:10])))
    count = write_layer(conn, "grid_cells", cells, mode="append")
    # even when no cell is written back; last, as write_layer raises its own (see there)
    raise_layer_revision(conn, "grid_cells", None if written is None else gone | written)
    return count


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
