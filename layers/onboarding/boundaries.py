"""Boundaries as they are: the topology of communities within their streets, and cleaning it.

Community and street polygons drawn by different departments overlap, leave gaps and stick out
of their street. :func:`topology` reports all three — each piece with its area (m², in the metric
CRS of :func:`geodata.crs.to_metric`) and a point inside it — instead of refusing the data.
:func:`clean` resolves what is small and unambiguous the way planners do by hand (整理边界):

- a piece of a community **outside its street** no larger than ``max_sliver`` is cut off;
- an **overlap** goes to the community whose street holds most of it when the two lie in different
  streets, otherwise to the one whose remaining polygon shares the longer edge with it;
- a **gap** inside a street goes to the neighbouring community of that street with the longest
  shared edge.

Everything larger, or with no neighbour to take it, is left for the planner and listed.
Pairing is by STRtree; intersections, differences and areas are vectorised shapely 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from sqlalchemy import Engine

from geodata.crs import WGS84, metric_crs_for
from geodata.i18n import _
from geodata.revisions import lock_revision, raise_revision
from geodata.store import keep_community_history, read_layer, write_layer

#: Pieces smaller than this (m²) are floating-point noise, not findings.
MIN_AREA_M2 = 0.01
#: Default largest piece (m²) :func:`clean` resolves on its own.
MAX_SLIVER_M2 = 50.0
KINDS = ("overlap", "gap", "outside_street")
#: Lengths (m) and areas (m²) closer than this are a tie (reprojection leaves micrometres).
TIE = 1e-3
#: Metric coordinates are snapped to this grid (m), so that edges drawn on the same line (and
#: moved by a reprojection by micrometres) coincide.
GRID_M = 1e-3


@dataclass
class Topology:
    """Findings (``kind``, ``codes``, ``area_m2``, ``point`` [lon, lat]) and their pieces (metric)."""

    findings: list[dict] = field(default_factory=list)
    pieces: list[shapely.Geometry] = field(default_factory=list)
    crs: object = None

    def summary(self) -> dict:
        """The JSON object ``flask topology communities`` prints."""
        out: dict = {}
        names = {"overlap": ("overlaps", "overlap_m2"), "gap": ("gaps", "gap_m2"),
                 "outside_street": ("outside_street", "outside_street_m2")}
        for kind, (count, area) in names.items():
            mine = [f for f in self.findings if f["kind"] == kind]
            out[count] = len(mine)
            out[area] = round(float(sum(f["area_m2"] for f in mine)), 2)
        out["findings"] = self.findings
        return out

    def layer(self) -> gpd.GeoDataFrame:
        """The findings as a layer for the map (EPSG:4326)."""
        frame = gpd.GeoDataFrame({
            "kind": [f["kind"] for f in self.findings],
            "codes": [",".join(f["codes"]) for f in self.findings],
            "area_m2": [f["area_m2"] for f in self.findings],
        }, geometry=list(self.pieces), crs=self.crs)
        return frame.to_crs(WGS84) if len(frame) else frame.set_crs(WGS84, allow_override=True)


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Only the polygons of ``geom`` (a difference may leave lines and points behind)."""
    parts = shapely.get_parts(geom)
    parts = parts[(shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) > 0)]
    if len(parts) == 1:
        return parts[0]
    return shapely.MultiPolygon(list(parts)) if len(parts) else shapely.Polygon()


def _points(pieces: list, crs) -> list[list[float]]:
    if not pieces:
        return []
    pts = gpd.GeoSeries(shapely.point_on_surface(np.asarray(pieces, dtype=object)), crs=crs).to_crs(WGS84)
    return [[round(float(x), 7), round(float(y), 7)] for x, y in shapely.get_coordinates(pts.values)]


def _explode(geoms: np.ndarray, min_area: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon parts of ``geoms`` larger than ``min_area`` and the position they came from."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) >= min_area)
    return parts[keep], index[keep]


def _overlaps(geoms: np.ndarray, min_area: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pieces where two communities overlap: (i, j, piece) with i < j."""
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    inter = shapely.intersection(geoms[i], geoms[j])
    parts, at = _explode(inter, min_area)
    return i[at], j[at], parts


def _outside(geoms: np.ndarray, street_of: np.ndarray, streets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pieces of communities outside their own street: (community position, piece)."""
    has = street_of >= 0
    rest = np.array([shapely.Polygon()] * len(geoms), dtype=object)
    rest[has] = shapely.difference(geoms[has], streets[street_of[has]])
    parts, at = _explode(rest, MIN_AREA_M2)
    return at, parts


def _gaps(geoms: np.ndarray, streets: np.ndarray, min_area: float) -> tuple[np.ndarray, np.ndarray]:
    """Pieces of each street covered by no community: (street position, piece)."""
    tree = shapely.STRtree(geoms)
    holes = []
    for street in streets:
        near = tree.query(street, predicate="intersects")
        covered = shapely.union_all(geoms[near]) if len(near) else shapely.Polygon()
        holes.append(shapely.difference(street, covered))
    parts, at = _explode(np.asarray(holes, dtype=object), min_area)
    return at, parts


@dataclass
class _Frame:
    """Communities and streets in one metric CRS, with each community's street position."""

    codes: np.ndarray
    street_codes: np.ndarray
    geoms: np.ndarray
    street_ids: np.ndarray
    streets: np.ndarray
    street_of: np.ndarray
    crs: object

    @classmethod
    def build(cls, communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame) -> _Frame:
        both = gpd.GeoDataFrame(geometry=list(communities.geometry.values) + list(streets.geometry.values),
                                crs=WGS84)
        crs = metric_crs_for(both) if len(both) else None
        geoms = np.asarray(communities.to_crs(crs).geometry.values, dtype=object) if len(communities) \
            else np.empty(0, dtype=object)
        street_geoms = np.asarray(streets.to_crs(crs).geometry.values, dtype=object) if len(streets) \
            else np.empty(0, dtype=object)
        street_ids = streets["code"].to_numpy(dtype=object)
        position = {c: k for k, c in enumerate(street_ids)}
        street_codes = communities["street_code"].to_numpy(dtype=object)
        street_of = np.array([position.get(c, -1) for c in street_codes], dtype=int)
        snap = lambda g: shapely.set_precision(shapely.make_valid(g), GRID_M)  # noqa: E731
        return cls(communities["code"].to_numpy(dtype=object), street_codes, snap(geoms), street_ids,
                   snap(street_geoms), street_of, crs)


def _find(frame: _Frame, min_area: float = MIN_AREA_M2) -> Topology:
    out = Topology(crs=frame.crs)
    pieces: list = []
    rows: list[dict] = []
    i, j, overlap = _overlaps(frame.geoms, min_area)
    for a, b, piece in zip(i, j, overlap, strict=True):
        rows.append({"kind": "overlap", "codes": sorted([frame.codes[a], frame.codes[b]])})
        pieces.append(piece)
    at, gap = _gaps(frame.geoms, frame.streets, min_area)
    for s, piece in zip(at, gap, strict=True):
        rows.append({"kind": "gap", "codes": [frame.street_ids[s]]})
        pieces.append(piece)
    at, outside = _outside(frame.geoms, frame.street_of, frame.streets)
    for c, piece in zip(at, outside, strict=True):
        if shapely.area(piece) >= min_area:
            rows.append({"kind": "outside_street", "codes": [frame.codes[c], frame.street_codes[c]]})
            pieces.append(piece)
    areas = shapely.area(np.asarray(pieces, dtype=object)) if pieces else []
    for row, area, point in zip(rows, areas, _points(pieces, frame.crs), strict=True):
        row["area_m2"] = round(float(area), 2)
        row["point"] = point
    out.findings, out.pieces = rows, pieces
    return out


def topology(communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame,
             min_area_m2: float = MIN_AREA_M2) -> Topology:
    """Overlaps between communities, gaps inside streets and parts of communities outside their
    street (``communities``: code, street_code; ``streets``: code; both in EPSG:4326)."""
    return _find(_Frame.build(communities, streets), min_area_m2)


def _touch(piece, others: np.ndarray) -> np.ndarray:
    """Length of the boundary ``piece`` shares with each of ``others``."""
    return shapely.length(shapely.intersection(shapely.boundary(piece), shapely.boundary(others)))


def _clean(frame: _Frame, max_sliver: float) -> list[dict]:
    """Resolve the small findings in ``frame.geoms`` (changed in place); what was done."""
    changed: list[dict] = []
    geoms = frame.geoms
    # 1. slivers outside the street are cut off
    at, outside = _outside(geoms, frame.street_of, frame.streets)
    small = shapely.area(outside) <= max_sliver
    for c in np.unique(at[small]):
        cut = outside[small & (at == c)]
        geoms[c] = _polygonal(shapely.difference(geoms[c], shapely.union_all(cut)))
        for piece in cut:
            changed.append({"kind": "outside_street", "codes": [frame.codes[c], frame.street_codes[c]],
                            "area_m2": float(shapely.area(piece)), "action": "cut off", "piece": piece})
    # 2. overlaps go to one of the two
    i, j, overlap = _overlaps(geoms, MIN_AREA_M2)
    for a, b, piece in zip(i, j, overlap, strict=True):
        area = float(shapely.area(piece))
        if area > max_sliver:
            continue
        winner = None
        sa, sb = frame.street_of[a], frame.street_of[b]
        if sa != sb and sa >= 0 and sb >= 0:
            inside = shapely.area(shapely.intersection(piece, frame.streets[[sa, sb]]))
            if abs(inside[0] - inside[1]) > TIE:
                winner = a if inside[0] > inside[1] else b
        if winner is None:
            rest = shapely.difference(geoms[[a, b]], piece)
            edge = _touch(piece, rest)
            if abs(edge[0] - edge[1]) <= TIE:
                continue  # no rule decides: the planner does
            winner = a if edge[0] > edge[1] else b
        loser = b if winner == a else a
        geoms[loser] = _polygonal(shapely.difference(geoms[loser], piece))
        changed.append({"kind": "overlap", "codes": sorted([frame.codes[a], frame.codes[b]]),
                        "area_m2": area, "action": f"given to {frame.codes[winner]}",
                        "to": frame.codes[winner],
                        "piece": piece})
    # 3. gaps go to the neighbour of their street with the longest shared edge
    at, gaps = _gaps(geoms, frame.streets, MIN_AREA_M2)
    tree = shapely.STRtree(geoms)
    for s, piece in zip(at, gaps, strict=True):
        area = float(shapely.area(piece))
        if area > max_sliver:
            continue
        near = tree.query(piece, predicate="intersects")
        near = near[frame.street_of[near] == s]
        if len(near) == 0:
            continue
        edge = _touch(piece, geoms[near])
        if edge.max() <= 0:
            continue
        top = np.flatnonzero(edge >= edge.max() - TIE)
        if len(top) > 1:
            continue  # two neighbours share it equally: the planner decides
        to = near[top[0]]
        geoms[to] = _polygonal(shapely.union(geoms[to], piece))
        changed.append({"kind": "gap", "codes": [frame.street_ids[s]], "area_m2": area,
                        "action": f"given to {frame.codes[to]}", "to": frame.codes[to], "piece": piece})
    points = _points([c.pop("piece") for c in changed], frame.crs)
    for c, point in zip(changed, points, strict=True):
        c["area_m2"] = round(c["area_m2"], 2)
        c["point"] = point
    return changed


@dataclass
class Cleaned:
    """What :func:`clean` did: the new polygons (EPSG:4326) of the communities it changed."""

    changed: list[dict]
    communities: gpd.GeoDataFrame  # code, geometry: only those that changed
    after: Topology

    def summary(self) -> dict:
        return {**self.after.summary(), "changed": self.changed}


def clean(communities: gpd.GeoDataFrame, streets: gpd.GeoDataFrame,
          max_sliver: float = MAX_SLIVER_M2) -> Cleaned:
    """Resolve the overlaps, gaps and outside pieces of at most ``max_sliver`` m² (see the module
    notes); return what changed and the topology after."""
    if max_sliver < 0:
        raise ValueError(_("--max-sliver is an area in m² and cannot be negative"))
    frame = _Frame.build(communities, streets)
    before = frame.geoms.copy()
    changed = _clean(frame, float(max_sliver))
    moved = np.flatnonzero(~shapely.equals_exact(before, frame.geoms, tolerance=0.0))
    out = gpd.GeoDataFrame({"code": frame.codes[moved]}, geometry=list(frame.geoms[moved]), crs=frame.crs)
    out = out.to_crs(WGS84) if len(out) else out.set_crs(WGS84, allow_override=True)
    return Cleaned(changed, out, _find(frame))


def read_boundaries(engine: Engine, street: str | None = None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The stored communities and streets (one street's, or all)."""
    communities = read_layer(engine, "communities", street=street)
    streets = read_layer(engine, "streets", where={"code": street} if street else None)
    return communities, streets


def stored_topology(engine: Engine, street: str | None = None) -> Topology:
    """:func:`topology` of the stored communities and streets."""
    return topology(*read_boundaries(engine, street))


def clean_stored(engine: Engine, max_sliver: float = MAX_SLIVER_M2, *, street: str | None = None,
                 actor: str = "cli", progress: Callable[[str], None] | None = None) -> Cleaned:
    """:func:`clean` the stored communities and save the changed polygons in one transaction,
    keeping the old ones in ``community_history`` and raising the boundary revision."""
    communities, streets = read_boundaries(engine, street)
    if progress:
        progress("cleaning")
    result = clean(communities, streets, max_sliver)
    if len(result.communities):
        codes = result.communities["code"].tolist()
        touched = set(communities.loc[communities["code"].isin(codes), "street_code"])
        with engine.begin() as conn:
            lock_revision(conn)  # the boundary counters first, as every boundary writer (one lock order)
            keep_community_history(conn, codes=codes)
            write_layer(conn, "communities", result.communities, mode="update")
            raise_revision(conn, "clean:communities", actor=actor, streets=touched, communities=codes)
    return result


__all__ = ["Cleaned", "MAX_SLIVER_M2", "Topology", "clean", "clean_stored", "stored_topology", "topology"]
