"""Coordinate reference systems: reprojection to EPSG:4326, GCJ-02, and metric CRS choice.

Chinese data arrives in WGS 84, CGCS2000 (EPSG:4490, equal to WGS 84 within a metre) or
GCJ-02 (火星坐标, the 300–700 m offset of Gaode and Tencent maps). GCJ-02 has no EPSG code:
it is declared as ``GCJ02`` and converted with :func:`gcj02_to_wgs84`, an iterative inverse of
the published forward transform that converges to centimetres (the common one-step inverse is
up to ~5 m off).
"""

from __future__ import annotations

import functools

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS

from geodata.i18n import _

WGS84 = 4326
CGCS2000 = 4490
GCJ02 = "GCJ02"

_A = 6378245.0  # Krasovsky 1940 semi-major axis, as the GCJ-02 formula uses
_EE = 0.00669342162296594323


def _in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    return (lon > 72.004) & (lon < 137.8347) & (lat > 0.8293) & (lat < 55.8271)


def _offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * np.pi) + 320 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
            + (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
            + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0)
    rad = lat / 180.0 * np.pi
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrt_magic * np.cos(rad) * np.pi)
    inside = _in_china(lon, lat)
    return np.where(inside, dlon, 0.0), np.where(inside, dlat, 0.0)


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """The forward GCJ-02 transform (points outside China are returned unchanged)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    dlon, dlat = _offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon, lat, tol: float = 1e-9, max_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Invert GCJ-02 by fixed-point iteration of the forward transform (to ~1e-9°, ≈0.1 mm)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    wlon, wlat = lon.copy(), lat.copy()
    for _step in range(max_iter):
        glon, glat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = glon - lon, glat - lat
        wlon, wlat = wlon - elon, wlat - elat
        if np.nanmax(np.abs(np.concatenate([elon.ravel(), elat.ravel(), [0.0]]))) < tol:
            break
    return wlon, wlat


def parse_crs(value: str | int | None) -> CRS | str | None:
    """``EPSG:4490``, ``4490``, a WKT/PROJ string, or ``GCJ02`` (case and hyphen insensitive)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.replace("-", "").replace("_", "").upper() in {"GCJ02"}:
        return GCJ02
    try:
        return CRS.from_user_input(int(value) if str(value).isdigit() else value)
    except Exception as exc:  # pyproj raises its own CRSError with a long text
        raise ValueError(_("unknown CRS {value}: give an EPSG code such as EPSG:4490, or GCJ02",
                           value=repr(value))) from exc


def to_wgs84(gdf: gpd.GeoDataFrame, declared: CRS | str | None = None) -> gpd.GeoDataFrame:
    """Reproject ``gdf`` to EPSG:4326 from its own CRS or the ``declared`` one.

    A declared CRS wins over the file's (for files whose ``.prj`` is known to be wrong); GCJ-02
    is converted with the iterative inverse. Raises ``ValueError`` when neither is known.
    """
    source = declared if declared is not None else gdf.crs
    if source is None:
        raise ValueError(_("the file has no coordinate system (no .prj or CRS): declare one with --crs"))
    if source == GCJ02:
        coords = shapely.get_coordinates(gdf.geometry.values)
        lon, lat = gcj02_to_wgs84(coords[:, 0], coords[:, 1])
        geoms = shapely.set_coordinates(np.asarray(gdf.geometry.values, dtype=object).copy(),
                                        np.column_stack([lon, lat]))
        return gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=WGS84)).set_crs(
            WGS84, allow_override=True)
    source = CRS.from_user_input(source)  # once: each costs a look-up in proj.db
    if source.equals(_wgs84(), ignore_axis_order=True) or source.to_epsg() == CGCS2000:
        return gdf.set_crs(WGS84, allow_override=True)  # CGCS2000: same within a metre, no datum shift
    return gdf.set_crs(source, allow_override=True).to_crs(WGS84)


@functools.cache
def _wgs84() -> CRS:
    return CRS.from_epsg(WGS84)


def metric_crs(lon: float, lat: float) -> CRS:
    """A metric CRS for distances and areas around (lon, lat).

    Inside China's span (75°E–135°E, north) the CGCS2000 3-degree Gauss–Krüger zone without
    zone prefix (EPSG:4534–4554, e.g. EPSG:4547 for 114°E); elsewhere the local UTM zone.
    """
    if 73.5 <= lon < 136.5 and lat > 0:
        central = int(round(lon / 3.0) * 3)
        return CRS.from_epsg(4534 + (central - 75) // 3)
    zone = int((lon + 180) // 6) + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def metric_crs_for(gdf: gpd.GeoDataFrame) -> CRS:
    """:func:`metric_crs` at the centre of ``gdf``'s bounds (``gdf`` in EPSG:4326)."""
    minx, miny, maxx, maxy = gdf.total_bounds
    return metric_crs((minx + maxx) / 2, (miny + maxy) / 2)


def to_metric(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` in metres: as it is when already projected, else in :func:`metric_crs_for` it."""
    if gdf.crs is not None and CRS.from_user_input(gdf.crs).is_projected:
        return gdf
    return gdf.to_crs(metric_crs_for(gdf))
