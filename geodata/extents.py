"""Where each district's rows of a layer lie (区县图层范围): the districts a read by place names.

Facilities, roads, buildings and communities are kept under a district (``district_code``) but
are also read by place: a district's coverage report reads those of its halo across its edge, a
street's report those within reach of it. On a store split by district a read by box alone
reaches every district's part (each partition's index, each Citus shard) — the cost grows with
the country, not with the box. Naming the districts whose rows can meet the box keeps the read in
their parts (:func:`read_by_place`).

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
from dataclasses import dataclass

import geopandas as gpd
from sqlalchemy import Connection, Engine, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from geodata.catalog import get_layer
from geodata.dialect import bounds_columns
from geodata.models import DistrictExtent, Revision
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


def _stamps(conn: Connection, layer: str) -> tuple[dict[str, int], int]:
    """Each district's stamp of ``layer`` (the sum of its counters: each only rises, so the sum
    moves exactly when one does), and the every-district stamp."""
    bases = _bases(layer)
    names = or_(*[Revision.name.startswith(f"{b}@", autoescape=True) for b in bases])
    stamps: dict[str, int] = defaultdict(int)
    for name, value in conn.execute(select(Revision.name, Revision.value).where(names)):
        stamps[name.rsplit("@", 1)[1]] += int(value or 0)
    every = stamps.pop(EVERY, 0)
    return dict(stamps), every


def _kept(conn: Connection, layer: str) -> tuple[dict[str, Extent], set[str] | None, dict[str, int], int]:
    """What ``district_extents`` keeps of ``layer`` and is current (districts with rows only),
    the districts to measure again (``None``: the whole layer), and the stamps read."""
    stamps, every = _stamps(conn, layer)
    table = DistrictExtent.__table__
    stored = {r.district_code: r for r in conn.execute(select(table).where(table.c.layer == layer))}
    whole = stored.pop(EVERY, None)
    if whole is None or whole.revision != every:
        return {}, None, stamps, every
    stale = {d for d in stored.keys() | stamps.keys()
             if d not in stored or stored[d].revision != stamps.get(d, 0)}
    kept = {d: Extent(None if r.minx is None else (r.minx, r.miny, r.maxx, r.maxy),
                      frozenset(filter(None, (r.named or "").split(","))))
            for d, r in stored.items() if d not in stale}
    return {d: e for d, e in kept.items() if e.bounds is not None or e.named}, stale, stamps, every


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


def _store(conn: Connection, layer: str, measured: dict[str, Extent], stale: set[str] | None,
           stamps: dict[str, int], every: int) -> None:
    """Keep what was measured under the stamps read before it (an upsert: two readers measuring
    at once both write the same)."""
    table = DistrictExtent.__table__
    districts = set(measured) | set(stamps) if stale is None else set(stale)
    if stale is None:  # the whole layer: what is kept of districts now without rows goes
        conn.execute(delete(table).where(table.c.layer == layer,
                                         table.c.district_code.not_in(sorted(districts | {EVERY}))))
    empty = Extent(None)
    rows = []
    for d in sorted(districts):
        extent = measured.get(d, empty)
        rows.append({"layer": layer, "district_code": d, "revision": stamps.get(d, 0),
                     **dict(zip(("minx", "miny", "maxx", "maxy"), extent.bounds or (None,) * 4, strict=True)),
                     "named": ",".join(sorted(extent.named)) or None})
    if stale is None:
        rows.append({"layer": layer, "district_code": EVERY, "revision": every,
                     "minx": None, "miny": None, "maxx": None, "maxy": None, "named": None})
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for start in range(0, len(rows), BATCH_CODES):
        stmt = dialect.insert(table).values(rows[start:start + BATCH_CODES])
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[table.c.layer, table.c.district_code],
            set_={c: stmt.excluded[c] for c in ("revision", "minx", "miny", "maxx", "maxy", "named")}))


def _current(bind: Engine | Connection, layer: str) -> dict[str, Extent]:
    """Each district's current extent of ``layer``: stale ones measured again — on an engine
    kept for the next reader (a transaction of their own), on a connection measured in the
    caller's transaction and not kept (it may be a reader's, or be rolled back)."""
    if isinstance(bind, Connection):
        kept, stale, _stamps_read, _every = _kept(bind, layer)
        if stale is None or stale:
            kept = _merged(kept, stale, _measure(bind, layer, stale))
        return kept
    with bind.connect() as conn:
        kept, stale, stamps, every = _kept(conn, layer)
    if stale is None or stale:
        with bind.begin() as conn:
            measured = _measure(conn, layer, stale)
            _store(conn, layer, measured, stale, stamps, every)
        kept = _merged(kept, stale, measured)
    return kept


def district_extents(bind: Engine | Connection, layer: str) -> dict[str, Bounds]:
    """The extent (minx, miny, maxx, maxy in degrees) of each district's rows of ``layer``, for
    the districts that have rows (stale ones measured again: :func:`_current`)."""
    return {d: e.bounds for d, e in _current(bind, layer).items() if e.bounds is not None}


def refresh_extents(engine: Engine, layers: Iterable[str] = PLACED_LAYERS) -> None:
    """Measure and keep the stale extents of ``layers``: what a coordinator does once before its
    tasks read by place, so that they find them current instead of each measuring them."""
    for layer in layers:
        _current(engine, layer)


def _merged(kept: dict[str, Extent], stale: set[str] | None,
            measured: dict[str, Extent]) -> dict[str, Extent]:
    if stale is None:
        return dict(measured)
    return {**{d: e for d, e in kept.items() if d not in stale}, **measured}


def districts_naming(bind: Engine | Connection, layer: str, communities: Iterable[str]) -> list[str]:
    """The districts whose rows of ``layer`` can name one of ``communities`` (codes): those whose
    rows name a community code with the same first six digits."""
    firsts = {str(c)[:6] for c in communities}
    return sorted(d for d, e in _current(bind, layer).items() if e.named & firsts)


def districts_meeting(bind: Engine | Connection, layer: str, box: Bounds) -> list[str]:
    """The districts whose rows of ``layer`` can meet ``box`` (degrees): those whose extent does."""
    x0, y0, x1, y1 = box
    return sorted(d for d, (minx, miny, maxx, maxy) in district_extents(bind, layer).items()
                  if minx <= x1 and maxx >= x0 and miny <= y1 and maxy >= y0)


def read_by_place(engine: Engine | Connection, layer: str, box: Bounds, **filters) -> gpd.GeoDataFrame:
    """The rows of ``layer`` in ``box`` (degrees), whichever district keeps them — read from the
    districts whose rows can meet the box only (:func:`districts_meeting`): each statement names
    them, so on a store split by district it reaches their parts alone."""
    districts = districts_meeting(engine, layer, box)
    return read_layer(engine, layer, bbox=box, isin={**filters.pop("isin", {}), "district_code": districts},
                      **filters)


def read_named(engine: Engine | Connection, layer: str, communities: list[str]) -> gpd.GeoDataFrame:
    """The rows of ``layer`` that name one of ``communities``, whichever district keeps them —
    read from the districts whose rows can name them only (:func:`districts_naming`)."""
    column = _NAMING[layer]
    return read_layer(engine, layer, isin={column: communities,
                                           "district_code": districts_naming(engine, layer, communities)})


__all__ = ["PLACED_LAYERS", "Extent", "district_extents", "districts_meeting", "districts_naming",
           "read_by_place", "read_named", "refresh_extents"]
