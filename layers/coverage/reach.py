"""Reach (服务半径覆盖): how far every household lives from the nearest facility of each kind.

GB 50180-2018 sizes its life circles (生活圈) by walking distance: 5 minutes ≈ 300 m, 10 minutes
≈ 500 m, 15 minutes ≈ 800–1,000 m. Two measures, both in the metric CRS of docs/domain.md §1 (a CGCS2000
Gauss–Krüger zone chosen from the data's centre):

- **straight** — straight-line distance: one ``scipy.spatial.cKDTree`` query per facility kind
  gives every household its nearest facility, pruned at the kind's largest radius; the radii of
  the standards table are then applied to the one distance array (``d <= r``, as shapely's
  ``dwithin``).
- **roads** — walking distance along the road network (道路网络): the road layer's lines become a
  graph (vertices shared by coordinate; a line ending on another line's interior — a T-junction
  drawn without a vertex — is noded there; lines crossing without a shared vertex, such as an
  overpass, are not connected). A household walks straight to its nearest graph node, along the
  roads, and straight from the facility's nearest node to the facility (each facility is a leaf
  of the graph); one multi-source ``scipy.sparse.csgraph.dijkstra`` per kind (``min_only``,
  ``limit`` = the kind's largest radius) answers every household at once.

Households sit at their building (楼栋) when buildings are loaded, else at their planning unit's
representative point (shapely ``point_on_surface``). Nothing here loops over households.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from geodata.crs import metric_crs_for

#: Coordinates closer than this (metres) are one road node.
NODE_TOLERANCE_M = 0.01
#: A line's end this close to another line (metres) is a junction on it.
JUNCTION_TOLERANCE_M = 0.05

METHODS = ("straight", "roads")


@dataclass
class Households:
    """Where households live, one point per unit (or building): metric coordinates, households,
    and the codes of the unit, community (社区), street (街道) and district (区) holding them."""

    xy: np.ndarray
    households: np.ndarray
    unit: np.ndarray
    community: np.ndarray
    street: np.ndarray
    district: np.ndarray
    crs: CRS

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def lonlat(self) -> np.ndarray:
        """The points in EPSG:4326 (lon, lat)."""
        return to_lonlat(self.xy, self.crs)


def to_lonlat(xy: np.ndarray, crs: CRS) -> np.ndarray:
    """Metric coordinates back to lon/lat."""
    if len(xy) == 0:
        return np.empty((0, 2))
    points = gpd.GeoSeries(shapely.points(xy), crs=crs).to_crs(4326)
    return shapely.get_coordinates(points.values)


def metric_of(units: gpd.GeoDataFrame) -> CRS:
    """The metric CRS of docs/domain.md §1 for these units (chosen from their centre)."""
    return metric_crs_for(units) if len(units) else CRS.from_epsg(4547)


def _project(geoms, crs: CRS) -> np.ndarray:
    return np.asarray(gpd.GeoSeries(geoms, crs=4326).to_crs(crs).values, dtype=object)


def households_from_layers(units: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame | None = None,
                           crs: CRS | None = None) -> Households:
    """The household points of ``units`` (EPSG:4326, with ``households``): a unit's buildings
    carry its households where buildings are loaded (linked by ``unit_code``), the unit's
    representative point (``point_on_surface``) otherwise. Units without households are left out."""
    crs = crs or metric_of(units)
    lived = units[units["households"].fillna(0).to_numpy() > 0]
    codes = lived["code"].to_numpy(dtype=object)
    geoms = shapely.point_on_surface(np.asarray(lived.geometry.values, dtype=object))
    hh = lived["households"].to_numpy(dtype=np.int64)
    owner = np.arange(len(lived))
    if buildings is not None and len(buildings):
        at = pd.Index(codes).get_indexer(buildings["unit_code"].to_numpy(dtype=object))
        b_hh = buildings["households"].fillna(0).to_numpy(dtype=np.int64)
        keep = (at >= 0) & (b_hh > 0)
        if keep.any():
            with_buildings = np.zeros(len(lived), dtype=bool)
            with_buildings[at[keep]] = True
            b_geoms = shapely.point_on_surface(np.asarray(buildings.geometry.values, dtype=object)[keep])
            geoms = np.concatenate([geoms[~with_buildings], b_geoms])
            hh = np.concatenate([hh[~with_buildings], b_hh[keep]])
            owner = np.concatenate([owner[~with_buildings], at[keep]])
    xy = shapely.get_coordinates(_project(geoms, crs)) if len(geoms) else np.empty((0, 2))

    def column(name: str) -> np.ndarray:
        values = lived[name].to_numpy(dtype=object) if name in lived else np.full(len(lived), None, object)
        return np.array([v if isinstance(v, str) and v else None for v in values], dtype=object)[owner]

    return Households(xy, hh, codes[owner], column("community_code"), column("street_code"),
                      column("district_code"), crs)


@dataclass
class Facilities:
    """Facility points (设施): metric coordinates, kind and code."""

    xy: np.ndarray
    kind: np.ndarray
    code: np.ndarray

    @classmethod
    def from_layer(cls, facilities: gpd.GeoDataFrame, crs: CRS) -> Facilities:
        geoms = np.asarray(facilities.geometry.values, dtype=object)
        xy = shapely.get_coordinates(_project(shapely.point_on_surface(geoms), crs)) if len(geoms) \
            else np.empty((0, 2))
        return cls(xy, facilities["kind"].to_numpy(dtype=object), facilities["code"].to_numpy(dtype=object))

    def of_kind(self, kind: str) -> np.ndarray:
        """Positions of the facilities of ``kind``."""
        return np.flatnonzero(self.kind == kind)


@dataclass
class Nearest:
    """Each household's nearest facility of one kind: distance in metres (``inf`` beyond the
    largest radius asked for) and the facility's position in :class:`Facilities` (-1 when none)."""

    distance: np.ndarray
    facility: np.ndarray

    def within(self, radius_m: float) -> np.ndarray:
        """Which households have a facility within ``radius_m`` (distance ≤ radius)."""
        return self.distance <= radius_m


def nearest_straight(points: np.ndarray, targets: np.ndarray, limit_m: float,
                     workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Straight-line distance from every point to its nearest target (``inf`` and -1 beyond
    ``limit_m``, which is included)."""
    if len(targets) == 0 or len(points) == 0:
        return np.full(len(points), np.inf), np.full(len(points), -1, dtype=np.int64)
    # cKDTree keeps only d < bound: widen the bound by a hair, then cut at exactly limit_m
    bound = np.nextafter(limit_m * (1 + 1e-9) + 1e-9, np.inf)
    distance, index = cKDTree(targets).query(points, k=1, distance_upper_bound=bound, workers=workers)
    beyond = distance > limit_m
    distance[beyond] = np.inf
    index = np.where(beyond, -1, index).astype(np.int64)
    return distance, index


@dataclass
class RoadGraph:
    """The road network as a symmetric sparse graph (edge weights in metres) on ``xy`` nodes."""

    matrix: csr_matrix
    xy: np.ndarray
    edges: np.ndarray  # (m, 2) node pairs, each road segment once
    _tree: cKDTree | None = field(default=None, repr=False, compare=False)

    @property
    def nodes(self) -> int:
        return len(self.xy)

    @classmethod
    def from_lines(cls, lines: np.ndarray) -> RoadGraph:
        """Build the graph from road lines already in metres (LineString or MultiLineString)."""
        parts = np.asarray(lines, dtype=object)
        if (shapely.get_type_id(parts) != shapely.GeometryType.LINESTRING).any():
            parts = shapely.get_parts(parts)
        parts = parts[~(shapely.is_missing(parts) | shapely.is_empty(parts))]
        coords, part = shapely.get_coordinates(parts, return_index=True)
        if len(coords) < 2:
            return cls(csr_matrix((0, 0)), np.empty((0, 2)), np.empty((0, 2), dtype=np.int64))
        grid = np.round(coords / NODE_TOLERANCE_M).astype(np.int64)
        grid -= grid.min(axis=0)
        key = grid[:, 0] * (int(grid[:, 1].max()) + 1) + grid[:, 1]  # one integer per grid point
        first, node = _factorise(key)
        xy = coords[first]
        same = part[:-1] == part[1:]
        a, b = node[:-1][same], node[1:][same]
        a, b = _node_junctions(a, b, xy, node, part)
        keep = a != b
        lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        pair_key = lo * len(xy) + hi
        pair_key = pair_key[_factorise(pair_key)[0]]
        pairs = np.column_stack([pair_key // len(xy), pair_key % len(xy)])
        return cls(_symmetric(pairs, xy), xy, pairs)

    def snap(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each point's nearest node and the straight distance to it."""
        if self._tree is None:  # built once per graph (a city's: a few tenths of a second)
            self._tree = cKDTree(self.xy)
        distance, node = self._tree.query(points, k=1, workers=2)
        return node.astype(np.int64), distance

    def with_leaves(self, points: np.ndarray) -> tuple[csr_matrix, np.ndarray]:
        """The graph plus one leaf node per point (joined to its nearest node by the straight
        distance), and the leaves' node numbers."""
        node, distance = self.snap(points)
        n, k = self.nodes, len(points)
        leaves = np.arange(n, n + k)
        rows = np.concatenate([self.edges[:, 0], self.edges[:, 1], node, leaves])
        cols = np.concatenate([self.edges[:, 1], self.edges[:, 0], leaves, node])
        weight = _lengths(self.edges, self.xy)
        data = np.concatenate([weight, weight, distance, distance])
        return csr_matrix((data, (rows, cols)), shape=(n + k, n + k)), leaves


def _factorise(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the first occurrence of each distinct integer of ``key`` (in key order) and
    each element's number among them: ``np.unique`` by one sort (its hashing path is slower)."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    number = np.empty(len(key), dtype=np.int64)
    number[order] = np.cumsum(new) - 1
    return order[new], number


def spatial_order(xy: np.ndarray, cell_m: float = 50.0) -> np.ndarray:
    """An order of points along a Z-order (Morton) curve of ``cell_m`` cells: neighbours in space
    become neighbours in memory, which makes tree and graph look-ups of many points faster."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    cell = np.floor((xy - xy.min(axis=0)) / cell_m).astype(np.uint64) & np.uint64(0xFFFFFFFF)

    def spread(v: np.ndarray) -> np.ndarray:
        for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F),
                            (2, 0x3333333333333333), (1, 0x5555555555555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    return np.argsort(spread(cell[:, 0]) | (spread(cell[:, 1]) << np.uint64(1)), kind="stable")


def _lengths(pairs: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)


def _symmetric(pairs: np.ndarray, xy: np.ndarray) -> csr_matrix:
    n = len(xy)
    weight = _lengths(pairs, xy)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return csr_matrix((np.concatenate([weight, weight]), (rows, cols)), shape=(n, n))


def _node_junctions(a: np.ndarray, b: np.ndarray, xy: np.ndarray, node: np.ndarray,
                    part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split segments ``a→b`` where a line's end lies on their interior (a T-junction, or two
    overlapping pieces such as a bridge drawn over the ends of the road it joins)."""
    first = np.r_[True, part[1:] != part[:-1]]
    last = np.r_[part[1:] != part[:-1], True]
    is_end = np.zeros(len(xy), dtype=bool)
    is_end[node[first | last]] = True
    degree = np.bincount(a, minlength=len(xy)) + np.bincount(b, minlength=len(xy))
    loose = np.flatnonzero(is_end & (degree <= 1))
    if not len(loose) or not len(a):
        return a, b
    # candidates: a point on a segment lies within half its length of its midpoint
    middle = (xy[a] + xy[b]) / 2
    reach = np.hypot(*(xy[b] - xy[a]).T) / 2 + JUNCTION_TOLERANCE_M
    tree = cKDTree(xy[loose])
    near = np.flatnonzero(tree.query_ball_point(middle, reach, return_length=True) > 0)
    if not len(near):
        return a, b
    lists = tree.query_ball_point(middle[near], reach[near])
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    s = np.repeat(near, counts)
    p = loose[np.concatenate(lists).astype(np.int64)]
    inner = (a[s] != p) & (b[s] != p)
    p, s = p[inner], s[inner]
    direction = xy[b[s]] - xy[a[s]]
    t = ((xy[p] - xy[a[s]]) * direction).sum(1) / np.maximum((direction ** 2).sum(1), 1e-18)
    foot = xy[a[s]] + np.clip(t, 0, 1)[:, None] * direction
    on = np.hypot(*(xy[p] - foot).T) <= JUNCTION_TOLERANCE_M
    p, s, t = p[on], s[on], t[on]
    if not len(s):
        return a, b
    marked = np.zeros(len(a), dtype=bool)
    marked[s] = True
    split = np.flatnonzero(marked)
    # every split segment becomes the chain a → points in order along it → b
    seg = np.concatenate([split, split, s])
    pos = np.concatenate([np.zeros(len(split)), np.ones(len(split)), np.clip(t, 1e-9, 1 - 1e-9)])
    at = np.concatenate([a[split], b[split], p])
    order = np.lexsort((pos, seg))
    seg, at = seg[order], at[order]
    chain = seg[:-1] == seg[1:]
    untouched = ~marked
    return (np.concatenate([a[untouched], at[:-1][chain]]),
            np.concatenate([b[untouched], at[1:][chain]]))


def nearest_on_roads(graph: RoadGraph, points: np.ndarray, targets: np.ndarray, limit_m: float,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Walking distance along ``graph`` from every point to its nearest target (``inf`` and -1
    beyond ``limit_m``): straight to the nearest node, along the roads, straight to the target."""
    if len(targets) == 0 or len(points) == 0 or graph.nodes == 0:
        return np.full(len(points), np.inf), np.full(len(points), -1, dtype=np.int64)
    matrix, leaves = graph.with_leaves(targets)
    return _nearest_from_leaves(graph, matrix, leaves, np.arange(len(targets)), points, limit_m)


def _nearest_from_leaves(graph: RoadGraph, matrix: csr_matrix, leaves: np.ndarray, which: np.ndarray,
                         points: np.ndarray, limit_m: float, snapped=None) -> tuple[np.ndarray, np.ndarray]:
    node, access = snapped if snapped is not None else graph.snap(points)
    dist, _, source = dijkstra(matrix, directed=True, indices=leaves[which], min_only=True,
                               limit=limit_m, return_predecessors=True)
    distance = dist[node] + access
    facility = source[node] - graph.nodes  # the leaf that reached the node → the target's position
    beyond = ~(distance <= limit_m)
    distance[beyond] = np.inf
    return distance, np.where(beyond, -1, facility).astype(np.int64)


def nearest_by_kind(households: Households, facilities: Facilities, limits: dict[str, float],
                    graph: RoadGraph | None = None) -> dict[str, Nearest]:
    """Each household's nearest facility of every kind in ``limits`` (kind → largest radius),
    straight-line when ``graph`` is None, along the roads otherwise. Facility positions are
    positions in ``facilities``."""
    out: dict[str, Nearest] = {}
    order = spatial_order(households.xy)
    points = households.xy[order]
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    if graph is not None and graph.nodes:
        matrix, leaves = graph.with_leaves(facilities.xy)
        snapped = tuple(x[back] for x in graph.snap(points))
    for kind, limit in limits.items():
        at = facilities.of_kind(kind)
        if graph is None:
            distance, index = nearest_straight(points, facilities.xy[at], limit)
            distance, index = distance[back], index[back]
        elif graph.nodes == 0 or not len(at) or not len(households):
            distance, index = np.full(len(households), np.inf), np.full(len(households), -1, np.int64)
        else:
            distance, index = _nearest_from_leaves(graph, matrix, leaves, at, households.xy, limit, snapped)
            out[kind] = Nearest(distance, index)  # already positions in ``facilities``
            continue
        out[kind] = Nearest(distance, np.where(index >= 0, at[np.maximum(index, 0)] if len(at) else -1, -1))
    return out


def road_graph(roads: gpd.GeoDataFrame, crs: CRS) -> RoadGraph:
    """The graph of a roads layer (EPSG:4326) in metric ``crs``."""
    return RoadGraph.from_lines(_project(roads.geometry.values, crs) if len(roads) else np.empty(0, object))


def reached_edges(graph: RoadGraph, facility_xy: np.ndarray, radius_m: float) -> np.ndarray:
    """The road segments (node pairs) wholly within ``radius_m`` walk of a facility: the
    network isochrone (等时圈) of the facilities."""
    if graph.nodes == 0 or not len(facility_xy):
        return np.empty((0, 2), dtype=np.int64)
    matrix, leaves = graph.with_leaves(facility_xy)
    dist = dijkstra(matrix, directed=True, indices=leaves, min_only=True, limit=radius_m)
    inside = (dist[graph.edges[:, 0]] <= radius_m) & (dist[graph.edges[:, 1]] <= radius_m)
    return graph.edges[inside]
