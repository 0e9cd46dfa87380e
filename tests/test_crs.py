"""Coordinate systems: the GCJ-02 inverse and the metric CRS choice."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geodata.crs import gcj02_to_wgs84, metric_crs, wgs84_to_gcj02

GEOD = Geod(ellps="WGS84")


@settings(max_examples=300, deadline=None)
@given(st.floats(73.6, 134.7), st.floats(18.2, 53.5))
def test_gcj02_inverse_is_within_a_centimetre(lon, lat):
    glon, glat = wgs84_to_gcj02(lon, lat)
    back_lon, back_lat = gcj02_to_wgs84(glon, glat)
    _, _, error = GEOD.inv(lon, lat, float(back_lon), float(back_lat))
    assert error < 0.01
    _, _, offset = GEOD.inv(lon, lat, float(glon), float(glat))
    assert offset < 1000  # the GCJ-02 offset itself is a few hundred metres


def test_gcj02_leaves_points_outside_china_alone():
    lon, lat = wgs84_to_gcj02(np.array([-71.4]), np.array([41.8]))
    assert lon[0] == -71.4 and lat[0] == 41.8


def test_metric_crs_is_the_cgcs2000_gauss_kruger_zone_in_china_utm_elsewhere():
    assert metric_crs(114.3, 30.6).to_epsg() == 4547  # CM 114°E
    assert metric_crs(116.4, 39.9).to_epsg() == 4548  # Beijing, CM 117°E
    assert metric_crs(-71.4, 41.8).to_epsg() == 32619  # Providence, UTM 19N
