"""Where each district's rows of a layer lie (区县图层范围): the districts a read by place names.

Facilities, roads, buildings and communities are kept under a district (``district_code``) but
are also read by place: a district's coverage report reads those of its halo across its edge, a
street's report those within reach of it. On a store split by district a read by box alone
reaches every district's part (each partition's index, each Citus shard) — the cost grows with
the country, not with the box. Naming the districts whose rows can meet the box keeps the read in
their parts (:func:`read_by_place`). On a whole table the spatial index alone answers a box best,
and the read goes by box as before (:func:`split_by_district`).

Which districts those are cannot be told from the districts' outlines: a row may be kept by a
district it does not stand in (a station run by the next district, a road along the border kept
by one side, a file that named the wrong district), and an import does not refuse that. So each
district's extent is measured from its own rows and kept in ``district_extents``, stamped with
the layer's revision counters of that district (:mod:`geodata.revisions`). Every write of a layer
raises them for the districts it wrote, so a stamp that differs marks an extent to measure again,
district by district (each measure names its district). A write whose districts are unknown
raises the every-district counter instead: the layer is then measured whole, in one pass grouped
by district.

A facility also counts for the community its ``community_code`` names, wherever it stands: each
district's facilities are also summed up by the first six digits of the community codes they
name, so the facilities a district's communities name are read from the districts whose
facilities name codes like theirs (:func:`read_named`).

The counters are read before the rows are measured: a write committed in between is measured
under the older stamp and measured again by the next reader — never missed. An extent that only
grew too wide (a row deleted) costs a district read for nothing until the next write measures it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import geopandas as gpd
from sqlalchemy import Connection, Engine, and_, delete, func, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

from geodata.catalog import get_layer
from geodata.citus import is_distributed
from geodata.dialect import bounds_columns
from geodata.models import DistrictExtent, Revision
from geodata.partitions import is_partitioned
from geodata.revisions import BATCH_CODES, BOUNDARIES, EVERY, layer_revision_name
from geodata.store import read_layer

Bounds = tuple[float, float, float, float]

#: the layers read by place across district edges
PLACED_LAYERS = ("facilities", "roads", "buildings", "communities")
#: the counters a layer's rows move with: a community's outline also changes in an adoption,
#: which raises the boundaries' counters
_COUNTERS = {"communities": (layer_revision_name("communities"), BOUNDARIES)}
#: layers whose rows name a community: a facility counts for the community its code names
#: wherever it stands and whichever district keeps it
_NAMING = {"facilities": "community_code"}


@dataclass(frozen=True)
class Extent:
    """One district's rows of a layer: their bounding box (None: no rows with a geometry) and the
    first six digits of the community codes they name."""

    bounds: Bounds | None
    named: frozenset[str] = frozenset()


def _bases(layer: str) -> tuple[str, ...]:
    return _COUNTERS.get(layer, (layer_revision_name(layer),))


def _stamps(layer: str):
    """Each district's stamp of ``layer`` as a subquery (``district``, ``stamp``): the sum of its
    counters (each only rises, so the sum moves exactly when one does); :data:`EVERY`'s too."""
    parts = [select(func.substr(Revision.name, len(b) + 2).label("district"), Revision.value.label("value"))
             .where(Revision.name.startswith(f"{b}@", autoescape=True)) for b in _bases(layer)]
    counters = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
    return select(counters.c.district, func.sum(counters.c.value).label("stamp")) \
        .group_by(counters.c.district).subquery()


@dataclass
class _Check:
    """What a reader finds of ``layer``'s kept extents: the districts whose stamp moved since they
    were measured (district → its stamp now), or ``whole`` (measure the layer whole: never
    measured, or the every-district counter moved), and the every-district stamp."""

    stale: dict[str, int]
    whole: bool
    every: int


def _check(conn: Connection, layer: str) -> _Check:
    """Compare the kept stamps with the counters in the database, returning only what differs:
    two statements on small tables, whose answer does not grow with the country."""
    table = DistrictExtent.__table__
    stamps = _stamps(layer)
    moved = conn.execute(
        select(stamps.c.district, stamps.c.stamp)
        .select_from(stamps.outerjoin(table, and_(table.c.layer == layer,
                                                  table.c.district_code == stamps.c.district)))
        .where(or_(table.c.revision.is_(None), table.c.revision != stamps.c.stamp))).all()
    stale = {str(d): int(s) for d, s in moved}
    if EVERY in stale:
        return _Check(stale, True, stale.pop(EVERY))
    whole = conn.execute(select(table.c.revision).where(table.c.layer == layer,
                                                        table.c.district_code == EVERY)).scalar_one_or_none()
    return _Check(stale, whole is None, int(whole or 0))


@dataclass
class _Overlay:
    """Extents measured but not kept (on a caller's connection): they stand for what is kept of
    the districts ``over`` (``None``: of every district)."""

    over: set[str] | None = field(default_factory=set)
    measured: dict[str, Extent] = field(default_factory=dict)


def _measure(conn: Connection, layer: str, districts: Iterable[str] | None) -> dict[str, Extent]:
    """The extent of each district's rows of ``layer`` (``districts``; ``None``: every one, in
    one pass grouped by district). A district without rows is absent."""
    table = get_layer(layer).table
    wanted = None if districts is None else sorted(districts)

    def chunks(stmt):  # the districts asked, a statement per batch of them
        if wanted is None:
            return [stmt]
        return [stmt.where(table.c.district_code.in_(wanted[i:i + BATCH_CODES]))
                for i in range(0, len(wanted), BATCH_CODES)]

    minx, miny, maxx, maxy = bounds_columns(conn, table.c.geom)
    boxes: dict[str, Bounds] = {}
    for stmt in chunks(select(table.c.district_code, func.min(minx), func.min(miny), func.max(maxx),
                              func.max(maxy)).group_by(table.c.district_code)):
        for code, *bounds in conn.execute(stmt):
            if code is not None and bounds[0] is not None:
                boxes[str(code)] = tuple(float(v) for v in bounds)
    named: dict[str, set[str]] = defaultdict(set)
    if layer in _NAMING:
        prefix = func.substr(table.c[_NAMING[layer]], 1, 6)
        for stmt in chunks(select(table.c.district_code, prefix).where(table.c[_NAMING[layer]].is_not(None))
                           .group_by(table.c.district_code, prefix)):
            for code, first in conn.execute(stmt):
                if code is not None and first:
                    named[str(code)].add(str(first))
    return {d: Extent(boxes.get(d), frozenset(named.get(d, ()))) for d in sorted(set(boxes) | set(named))}


def _store(conn: Connection, layer: str, measured: dict[str, Extent], check: _Check,
           stamps: dict[str, int]) -> None:
    """Keep what was measured under the stamps read before it (an upsert: two readers measuring
    at once both write the same)."""
    table = DistrictExtent.__table__
    districts = set(measured) | set(stamps) if check.whole else set(stamps)
    if check.whole:  # what is kept of districts now without rows goes
        conn.execute(delete(table).where(table.c.layer == layer,
                                         table.c.district_code.not_in(sorted(districts | {EVERY}))))
    empty = Extent(None)
    rows = []
    for d in sorted(districts):
        extent = measured.get(d, empty)
        rows.append({"layer": layer, "district_code": d, "revision": stamps.get(d, 0),
                     **dict(zip(("minx", "miny", "maxx", "maxy"), extent.bounds or (None,) * 4, strict=True)),
                     "named": ",".join(sorted(extent.named)) or None})
    if check.whole:
        rows.append({"layer": layer, "district_code": EVERY, "revision": check.every,
                     "minx": None, "miny": None, "maxx": None, "maxy": None, "named": None})
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), BATCH_CODES):
        stmt = dialect.insert(table).values(rows[start:start + BATCH_CODES])
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[table.c.layer, table.c.district_code],
            set_={c: stmt.excluded[c] for c in ("revision", "minx", "miny", "maxx", "maxy", "named")}))


def _refresh(bind: Engine | Connection, layer: str) -> _Overlay:
    """Measure again the extents of ``layer`` whose stamps moved: on an engine they are kept for
    the next reader (a transaction of their own); on a connection they are measured in the
    caller's transaction and not kept (it may be a reader's, or be rolled back) — returned."""
    if isinstance(bind, Connection):
        check = _check(bind, layer)
        if check.whole:
            return _Overlay(None, _measure(bind, layer, None))
        return _Overlay(set(check.stale), _measure(bind, layer, check.stale)) if check.stale else _Overlay()
    with bind.connect() as conn:
        check = _check(conn, layer)
        if check.whole:  # every district's stamp, to keep beside what is measured
            stamps = {str(d): int(s) for d, s in conn.execute(select(*_stamps(layer).c)) if d != EVERY}
        else:
            stamps = check.stale
    if check.whole or check.stale:
        with bind.begin() as conn:
            _store(conn, layer, _measure(conn, layer, None if check.whole else stamps), check, stamps)
    return _Overlay()


def _rows(bind: Engine | Connection, stmt) -> list:
    if isinstance(bind, Connection):
        return bind.execute(stmt).all()
    with bind.connect() as conn:
        return conn.execute(stmt).all()


def _kept_where(bind: Engine | Connection, layer: str, overlay: _Overlay, *where) -> set[str]:
    """The districts whose kept extent of ``layer`` answers ``where`` (those the overlay stands for
    left out)."""
    if overlay.over is None:
        return set()
    table = DistrictExtent.__table__
    stmt = select(table.c.district_code).where(table.c.layer == layer, table.c.district_code != EVERY, *where)
    return {str(d) for (d,) in _rows(bind, stmt)} - overlay.over


def district_extents(bind: Engine | Connection, layer: str) -> dict[str, Bounds]:
    """The extent (minx, miny, maxx, maxy in degrees) of each district's rows of ``layer``, for
    the districts that have rows (stale ones measured again first)."""
    overlay = _refresh(bind, layer)
    found: dict[str, Bounds] = {}
    if overlay.over is not None:
        table = DistrictExtent.__table__
        stmt = select(table.c.district_code, table.c.minx, table.c.miny, table.c.maxx, table.c.maxy).where(
            table.c.layer == layer, table.c.district_code != EVERY, table.c.minx.is_not(None))
        found = {str(d): tuple(float(v) for v in b) for d, *b in _rows(bind, stmt) if d not in overlay.over}
    return found | {d: e.bounds for d, e in overlay.measured.items() if e.bounds is not None}


def refresh_extents(engine: Engine, layers: Iterable[str] = PLACED_LAYERS) -> None:
    """Measure and keep the stale extents of ``layers``: what a coordinator does once before its
    tasks read by place, so that they find them current instead of each measuring them."""
    for layer in layers:
        _refresh(engine, layer)


def districts_meeting(bind: Engine | Connection, layer: str, box: Bounds) -> list[str]:
    """The districts whose rows of ``layer`` can meet ``box`` (degrees): those whose extent does
    (found by the database among the kept extents: the answer, not every district, comes back)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    overlay = _refresh(bind, layer)
    table = DistrictExtent.__table__
    found = _kept_where(bind, layer, overlay, table.c.minx <= x1, table.c.maxx >= x0,
                        table.c.miny <= y1, table.c.maxy >= y0)
    found |= {d for d, e in overlay.measured.items() if e.bounds is not None
              and e.bounds[0] <= x1 and e.bounds[2] >= x0 and e.bounds[1] <= y1 and e.bounds[3] >= y0}
    return sorted(found)


def districts_naming(bind: Engine | Connection, layer: str, communities: Iterable[str]) -> list[str]:
    """The districts whose rows of ``layer`` can name one of ``communities`` (codes): those whose
    rows name a community code with the same first six digits."""
    firsts = sorted({str(c)[:6] for c in communities})
    if not firsts:
        return []
    overlay = _refresh(bind, layer)
    table = DistrictExtent.__table__
    listed = literal(",") + table.c.named + literal(",")
    names_one = or_(*[listed.contains(f",{f},", autoescape=True) for f in firsts])
    found = _kept_where(bind, layer, overlay, names_one)
    found |= {d for d, e in overlay.measured.items() if e.named & set(firsts)}
    return sorted(found)


def split_by_district(bind: Engine | Connection) -> bool:
    """Whether the large tables are split by district (PostgreSQL partitioned by
    ``district_code``, or distributed by it over Citus): only there does naming the districts keep a read
    in their parts. On a whole table the spatial index alone answers a box best — naming the
    districts there made the report 7–14 % slower (docs/scale.md, "Reads by place, measured")."""
    if bind.dialect.name != "postgresql":
        return False
    if isinstance(bind, Connection):
        return is_partitioned(bind) or is_distributed(bind)
    with bind.connect() as conn:
        return is_partitioned(conn) or is_distributed(conn)


def read_by_place(engine: Engine | Connection, layer: str, box: Bounds, *, split: bool | None = None,
                  **filters) -> gpd.GeoDataFrame:
    """The rows of ``layer`` in ``box`` (degrees), whichever district keeps them. On a store split
    by district they are read from the districts whose rows can meet the box only
    (:func:`districts_meeting`): each statement names them and reaches their parts alone.
    ``split``: :func:`split_by_district`, when the caller asked it already (several reads)."""
    if not (split_by_district(engine) if split is None else split):
        return read_layer(engine, layer, bbox=box, **filters)
    districts = districts_meeting(engine, layer, box)
    return read_layer(engine, layer, bbox=box, isin={**filters.pop("isin", {}), "district_code": districts},
                      **filters)


def read_named(engine: Engine | Connection, layer: str, communities: list[str], *,
               split: bool | None = None) -> gpd.GeoDataFrame:
    """The rows of ``layer`` that name one of ``communities``, whichever district keeps them. On a
    store split by district they are read from the districts whose rows can name them only
    (:func:`districts_naming`). ``split``: as :func:`read_by_place`'s."""
    column = _NAMING[layer]
    if not (split_by_district(engine) if split is None else split):
        return read_layer(engine, layer, isin={column: communities})
    return read_layer(engine, layer, isin={column: communities,
                                           "district_code": districts_naming(engine, layer, communities)})


__all__ = ["PLACED_LAYERS", "Extent", "district_extents", "districts_meeting", "districts_naming",
           "read_by_place", "read_named", "refresh_extents", "split_by_district"]
