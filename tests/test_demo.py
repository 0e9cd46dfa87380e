"""The demo district: its size, its geometry invariants, and the problems it must contain."""

from __future__ import annotations

from datetime import datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geodata.catalog import is_code
from geodata.crs import metric_crs_for
from geodata.topology import gaps_and_overlaps, rook_pairs
from layers.grid.cells import validate_cells
from layers.sample_data.demo import generate


def metric(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return gdf.to_crs(metric_crs_for(gdf))


def test_district_size_is_that_of_a_real_district(district_demo):
    layers = district_demo.layers
    assert 12 <= len(layers["streets"]) <= 14
    assert 100 <= len(layers["communities"]) <= 125
    assert 3800 <= len(layers["units"]) <= 4200
    assert 210_000 <= layers["units"]["households"].sum() <= 230_000
    assert len(layers["districts"]) == 1
    assert layers["districts"]["code"].iloc[0] == "420103"


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = generate(300, seed=3), generate(300, seed=3), generate(300, seed=4)
    for name in a.layers:
        pd.testing.assert_frame_equal(pd.DataFrame(a.layers[name].to_wkb()),
                                      pd.DataFrame(b.layers[name].to_wkb()))
    assert list(a.layers["units"].to_wkb().geometry) != list(c.layers["units"].to_wkb().geometry)


def test_units_tile_each_street_exactly(district_demo):
    units = metric(district_demo.layers["units"])
    streets = metric(district_demo.layers["streets"]).set_index("code")
    for code, group in units.groupby("street_code"):
        street = streets.geometry[code]
        geoms = group.geometry.values
        assert shapely.coverage_is_valid(geoms), f"units of {code} overlap or leave slivers"
        union = shapely.union_all(geoms)
        assert union.symmetric_difference(street).area < 1.0, f"units of {code} leave a gap"
        assert abs(shapely.area(geoms).sum() - street.area) < 1.0, f"units of {code} overlap"
    assert shapely.union_all(streets.geometry.values).area == pytest.approx(
        metric(district_demo.layers["districts"]).area.sum(), rel=1e-6)


def test_neighbours_share_edges_and_most_units_are_not_rectangles(district_demo):
    units = metric(district_demo.layers["units"])
    pairs = district_demo.adjacency
    assert (pairs["shared_m"] > 0.01).all()
    index = pd.Series(range(len(units)), index=units["code"])
    a = units.geometry.values[index[pairs["unit_a"]].to_numpy()]
    b = units.geometry.values[index[pairs["unit_b"]].to_numpy()]
    shared = shapely.length(shapely.intersection(shapely.boundary(a), shapely.boundary(b)))
    assert np.allclose(shared, pairs["shared_m"], atol=0.05)
    # irregular blocks: rectangles would have 4 corners and fill their oriented envelope
    fill = shapely.area(units.geometry.values) / shapely.area(
        shapely.oriented_envelope(units.geometry.values))
    assert (fill > 0.99).mean() < 0.2
    hh = units.loc[units["households"] > 0, "households"]
    assert hh.std() / hh.mean() > 0.5, "households per unit should vary as real compounds do"


def test_river_crosses_at_least_three_streets(district_demo):
    units = district_demo.layers["units"]
    water = units[units["land_use"] == "water"]
    assert water["street_code"].nunique() >= 3
    assert (water["households"] == 0).all()


def test_codes_nest(district_demo):
    layers = district_demo.layers
    assert all(is_code(c, 9) and c.startswith("420103") for c in layers["streets"]["code"])
    comms = layers["communities"]
    assert all(is_code(c, 12) for c in comms["code"])
    assert (comms["code"].str[:9] == comms["street_code"]).all()
    cells = layers["grid_cells"]
    assert all(is_code(c, 15) for c in cells["code"])
    assert (cells["code"].str[:12] == cells["community_code"]).all()
    assert cells["code"].is_unique and comms["code"].is_unique


def test_communities_outside_the_bounds_exist(district_demo):
    units = district_demo.layers["units"]
    households = units.groupby("community_code")["households"].sum()
    assert (households > 3000).sum() >= 1
    assert (households < 1000).sum() >= 1
    assert households.between(1000, 3000).mean() > 0.6, "most communities should be fine"


def test_a_blind_spot_lies_outside_every_community(district_demo):
    units = district_demo.layers["units"]
    blind = units[units["community_code"].isna() & (units["households"] > 0)]
    assert len(blind) >= 3
    assert blind["built_year"].min() >= 2024
    comms = shapely.union_all(metric(district_demo.layers["communities"]).geometry.values)
    inside = shapely.area(shapely.intersection(metric(blind).geometry.values, comms))
    assert (inside < 1.0).all()


def test_some_housing_has_no_service_station_within_reach(district_demo):
    layers = district_demo.layers
    units = metric(layers["units"])
    stations = metric(layers["facilities"]).query("kind == 'service_station'")
    housed = units[units["households"] > 0]
    distance = housed.geometry.centroid.apply(lambda p: stations.distance(p).min())
    far = housed[distance > 300]
    assert far["households"].sum() > 0
    communities = set(layers["communities"]["code"])
    assert len(communities - set(stations["community_code"])) >= 2


def test_a_facility_is_under_the_floor_area_standard(district_demo):
    facilities = district_demo.layers["facilities"]
    stations = facilities[facilities["kind"] == "service_station"]
    assert (stations["floor_area_m2"] < 300).sum() >= 1
    assert {"service_centre", "service_station", "health_station", "kindergarten", "elderly_care",
            "police_post"} <= set(facilities["kind"])


@pytest.fixture(scope="module")
def second_city():
    """Another generated district (its own seed), so no-overlap is not one seed's luck."""
    return generate(units=1200, seed=23)


@pytest.mark.parametrize("which", ["district_demo", "second_city"])
def test_grid_cells_have_a_gap_and_never_overlap(which, request):
    demo = request.getfixturevalue(which)
    cells = demo.layers["grid_cells"]
    comms = demo.layers["communities"]
    frame = shapely.union_all(comms.geometry.values)
    gaps, overlaps = gaps_and_overlaps(cells, frame=frame, min_area_m2=50.0)
    assert len(gaps) >= 1  # the one the demo makes, for the coverage page to show
    assert len(overlaps) == 0
    # the coverage page's check, community by community: no overlap anywhere
    report = validate_cells(comms, cells, demo.layers["units"])
    found = [f["codes"] for f in report["findings"] if f["kind"] == "overlap"]
    assert report["overlaps"] == 0 and found == []
    for code in comms["code"]:
        mine, one = cells[cells["community_code"] == code], comms[comms["code"] == code]
        assert validate_cells(one, mine, demo.layers["units"].iloc[:0])["overlaps"] == 0, code
    # cells nest in their community
    assert set(cells["community_code"]) <= set(comms["code"])


def test_incidents_run_a_year_with_overdue_cases(district_demo):
    incidents = district_demo.layers["incidents"]
    reference = datetime(2026, 11, 1, 18, 0)
    assert incidents["reported_at"].min() >= pd.Timestamp(reference) - pd.Timedelta(days=366)
    assert incidents["reported_at"].max() <= pd.Timestamp(reference)
    open_ = incidents[~incidents["status"].isin(["closed", "cancelled"])]
    overdue = open_[open_["due_at"] < pd.Timestamp(reference)]
    assert len(overdue) >= 5
    closed = incidents[incidents["status"] == "closed"]
    late = (closed["closed_at"] > closed["due_at"]).mean()
    assert 0.02 < late < 0.5, "some closed cases are late, most are not"
    steps = ["reported_at", "filed_at", "dispatched_at", "handled_at", "feedback_at", "closed_at"]
    times = closed[steps]
    assert (times.diff(axis=1).iloc[:, 1:] >= pd.Timedelta(0)).all().all()
    assert set(incidents["grid_code"]) <= set(district_demo.layers["grid_cells"]["code"])
    # the case numbers the app gives (YYYYMMDD-NNNN): the day reported, then the number
    assert incidents["code"].str.fullmatch(r"\d{8}-\d{4,}").all() and incidents["code"].is_unique
    assert (incidents["code"].str[:8] == incidents["reported_at"].dt.strftime("%Y%m%d")).all()


def test_rook_pairs_ignore_corner_touches():
    squares = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1),
                                         shapely.box(1, 1, 2, 2)], crs=4547)
    pairs = rook_pairs(squares.to_crs(4326))
    assert sorted(zip(pairs["i"], pairs["j"], strict=True)) == [(0, 1), (1, 2)]
