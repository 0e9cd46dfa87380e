"""Topology of polygon layers: rook neighbours, gaps and overlaps.

Two polygons are **neighbours** when they share an edge of positive length; touching at a
corner does not count (docs/domain.md §3). Lengths are measured in a metric CRS chosen from the
data's centre.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geodata.crs import to_metric

#: Shared boundary shorter than this (metres) is a corner touch, not an edge.
MIN_SHARED_M = 0.01


def _pairs(geoms: np.ndarray, predicate: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``i < j`` of the geometries that meet by ``predicate`` (an STRtree query)."""
    i, j = shapely.STRtree(geoms).query(geoms, predicate=predicate)
    keep = i < j
    return i[keep], j[keep]


def shared_edges(geoms: np.ndarray, min_length: float = MIN_SHARED_M
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``i < j`` and the boundary the polygons ``geoms[i]`` and ``geoms[j]`` share (lines longer
    than ``min_length`` in the geometries' units)."""
    i, j = _pairs(geoms, "intersects")
    boundaries = shapely.boundary(geoms)
    shared = shapely.line_merge(shapely.intersection(boundaries[i], boundaries[j]))
    edge = shapely.length(shared) > min_length
    return i[edge], j[edge], shared[edge]


def rook_pairs(gdf: gpd.GeoDataFrame, min_shared_m: float = MIN_SHARED_M) -> dict[str, np.ndarray]:
    """Pairs of positions ``i < j`` in ``gdf`` whose polygons share an edge, with its length.

    Returns ``{"i": …, "j": …, "shared_m": …}`` as arrays. Vectorised: an STRtree finds the
    candidate pairs, and the length of the intersection of their boundaries decides.
    """
    empty = {"i": np.empty(0, dtype=int), "j": np.empty(0, dtype=int), "shared_m": np.empty(0)}
    if len(gdf) < 2:
        return empty
    geoms = np.asarray(to_metric(gdf).geometry.values, dtype=object)
    i, j, shared = shared_edges(geoms, min_shared_m)
    return {"i": i, "j": j, "shared_m": shapely.length(shared)}


def gaps_and_overlaps(gdf: gpd.GeoDataFrame, frame: shapely.Geometry | None = None,
                      min_area_m2: float = 1.0) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Holes between polygons (inside ``frame``, default their union's outline) and overlaps.

    ``frame`` is in ``gdf``'s CRS. Returns two GeoDataFrames in EPSG:4326: ``gaps`` and
    ``overlaps`` (with the positions ``i``, ``j`` of the two overlapping polygons), each with
    ``area_m2``.
    """
    projected = to_metric(gdf)
    metric = projected.crs
    geoms = np.asarray(projected.geometry.values, dtype=object)
    i, j = _pairs(geoms, "overlaps")
    inter = shapely.intersection(geoms[i], geoms[j])
    area = shapely.area(inter)
    big = area >= min_area_m2
    overlaps = gpd.GeoDataFrame({"i": i[big], "j": j[big], "area_m2": area[big]},
                                geometry=inter[big], crs=metric).to_crs(4326)
    union = shapely.union_all(geoms)
    if frame is None:
        outline = shapely.polygons(shapely.get_exterior_ring(shapely.get_parts(union)))
        frame_m = shapely.union_all(outline)
    else:
        frame_m = gpd.GeoSeries([frame], crs=gdf.crs).to_crs(metric).iloc[0]
    holes = shapely.get_parts(shapely.difference(frame_m, union))
    hole_area = shapely.area(holes)
    gaps = gpd.GeoDataFrame({"area_m2": hole_area[hole_area >= min_area_m2]},
                            geometry=holes[hole_area >= min_area_m2], crs=metric).to_crs(4326)
    return gaps, overlaps


def dissolve(geoms: np.ndarray, labels: np.ndarray, order: np.ndarray, coverage: bool = True) -> np.ndarray:
    """One polygon per label of ``order``, the union of the ``geoms`` carrying it — by coverage
    union (fast, exact for polygons that tile without overlaps: ``coverage=True``, falling back to a
    full union where it fails), or by a full union (polygons that may overlap)."""
    by_label = pd.Series(np.arange(len(labels))).groupby(np.asarray(labels, dtype=object)).indices
    out = np.empty(len(order), dtype=object)
    for i, label in enumerate(order):
        parts = geoms[by_label.get(label, [])]
        if not coverage:
            out[i] = shapely.union_all(shapely.make_valid(parts))
            continue
        try:
            out[i] = shapely.coverage_union_all(parts)
        except shapely.errors.GEOSException:
            out[i] = shapely.union_all(parts)
    return out
