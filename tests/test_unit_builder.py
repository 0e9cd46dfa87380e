"""Planning units where the city has none: blocks from a constructed road grid tile each street
exactly, slivers merge, households follow the best source and sum to the community totals."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, Point, box
from sqlalchemy import func, select

from geodata.crs import WGS84
from geodata.models import UnitAdjacency
from geodata.revisions import current_revision
from geodata.store import read_layer, write_layer
from layers.onboarding.units import (
    BuildRefused,
    Sources,
    build_stored,
    build_units,
    match_totals,
    raster_sums,
)
from tests.conftest import make_app

METRIC = 4547
X0, Y0 = 530_000.0, 3_385_000.0
S1, S2 = "420503901", "420503902"
LEFT, RIGHT, EAST = "420503901901", "420503901902", "420503902901"


def _deg(geoms, **columns) -> gpd.GeoDataFrame:
    moved = [shapely.affinity.translate(g, X0, Y0) for g in geoms]
    return gpd.GeoDataFrame(columns, geometry=moved, crs=METRIC).to_crs(WGS84)


def write_raster(path, crs: str, west: float, north: float, dx: float, dy: float, width: int, height: int,
                 rows_of_ten: int) -> None:
    """A float GeoTIFF whose first ``rows_of_ten`` rows hold 10 and the rest 0, written by rasterio
    in a process of its own (rasterio must not meet SpatiaLite's system PROJ in this one)."""
    code = (
        "import sys, numpy as np, rasterio\n"
        "from rasterio.transform import from_origin\n"
        "path, crs, west, north, dx, dy, width, height, rows = sys.argv[1:]\n"
        "data = np.zeros((int(height), int(width)), dtype='float32'); data[: int(rows), :] = 10.0\n"
        "with rasterio.open(path, 'w', driver='GTiff', width=int(width), height=int(height), count=1,\n"
        "                   dtype='float32', crs=crs,\n"
        "                   transform=from_origin(float(west), float(north), float(dx), float(dy))) as dst:\n"
        "    dst.write(data, 1)\n")
    subprocess.run([sys.executable, "-c", code, str(path), crs, *map(str, (west, north, dx, dy, width, height,
                                                                         rows_of_ten))], check=True)


def grid():
    """Street 1 is 400 × 300 m with two communities (west and east half); street 2 beside it,
    300 × 300 m, one community. Roads: a lattice every 100 m (one crossing into street 2, one
    dangling), and a road 0.5 m beside x = 300 for 150 m: a 75 m² sliver to merge."""
    streets = _deg([box(0, 0, 400, 300), box(400, 0, 700, 300)], code=[S1, S2], name=["一街道", "二镇"],
                   district_code=["420503"] * 2)
    communities = _deg([box(0, 0, 200, 300), box(200, 0, 400, 300), box(400, 0, 700, 300)],
                       code=[LEFT, RIGHT, EAST], name=["甲社区", "乙社区", "丙社区"],
                       street_code=[S1, S1, S2], district_code=["420503"] * 3)
    lines = [LineString([(x, -50), (x, 350)]) for x in (100, 200, 300, 500, 600)]
    lines += [LineString([(-50, 150), (750, 150)]), LineString([(50, 150), (50, 220)]),  # a dead end
              LineString([(300.5, 0), (300.5, 150)])]
    roads = _deg(lines, code=[f"R{i}" for i in range(len(lines))], road_class=["branch"] * len(lines),
                 district_code=["420503"] * len(lines))
    return streets, communities, roads


def test_blocks_tile_each_street_and_households_sum_to_the_totals():
    streets, communities, roads = grid()
    totals = {LEFT: (1000, 2600), RIGHT: (501, None)}
    result = build_units(streets, communities, roads, Sources(totals=totals))
    units = result.units.to_crs(METRIC)
    # street 1: 4 × 2 blocks of 100 × 150 m (the sliver merged into its neighbour); street 2: 3 × 2
    assert (units["street_code"] == S1).sum() == 8 and (units["street_code"] == S2).sum() == 6
    assert result.slivers_merged == 1
    for code, street in zip(streets["code"], streets.to_crs(METRIC).geometry, strict=True):
        mine = units[units["street_code"] == code]
        assert mine.area.sum() == pytest.approx(street.area, rel=1e-7)
        assert shapely.union_all(mine.geometry.values).symmetric_difference(street).area < 0.01
        g = np.asarray(mine.geometry.values, dtype=object)
        overlap = shapely.area(shapely.intersection(g[:, None], g[None, :])).sum() - shapely.area(g).sum()
        assert overlap < 0.01  # no two blocks overlap
    # no block crosses a community boundary, and each knows its community
    assert set(units.loc[units["street_code"] == S1, "community_code"]) == {LEFT, RIGHT}
    sums = units.groupby("community_code")["households"].sum()
    assert sums[LEFT] == 1000 and sums[RIGHT] == 501
    assert units.loc[units["community_code"] == LEFT, "population"].sum() == 2600
    assert set(units.loc[units["community_code"] != EAST, "households_source"]) == {"area+table"}
    # no total and nothing to estimate from: recorded as such
    assert set(units.loc[units["community_code"] == EAST, "households_source"]) == {"none"}
    codes = units["code"].tolist()
    assert len(set(codes)) == len(codes) and all(c.startswith(c[:9]) and len(c) == 14 for c in codes)


def test_best_source_first_buildings_then_points_then_raster(tmp_path):
    streets, communities, roads = grid()
    # buildings in the west community only: two in its north-west block
    west = communities.to_crs(METRIC).geometry.iloc[0].bounds
    buildings = _deg([Point(50, 250), Point(60, 260), Point(150, 50)], households=[30, 10, 20])
    # a residential point in the east half of street 1
    pois = _deg([Point(350, 250)], type=["住宅小区"])
    # a raster over street 2: population in its northern row only
    minx, miny, maxx, maxy = streets.total_bounds
    path = tmp_path / "pop.tif"
    write_raster(path, "EPSG:4326", minx, maxy, (maxx - minx) / 60, (maxy - miny) / 30, 60, 30,
                 rows_of_ten=14)
    totals = {LEFT: (600, None), RIGHT: (100, None)}
    result = build_units(streets, communities, roads, Sources(buildings=buildings, pois=pois, raster=path,
                                                               totals=totals))
    units = result.units.set_index("code")
    by = units.groupby("community_code")
    assert set(by.get_group(LEFT)["households_source"]) == {"buildings+table"}
    assert set(by.get_group(RIGHT)["households_source"]) == {"poi+table"}
    assert set(by.get_group(EAST)["households_source"]) == {"raster"}
    left = by.get_group(LEFT)
    assert left["households"].sum() == 600 and (left["households"] > 0).sum() == 2  # where the buildings are
    assert left["households"].max() == 400  # 40 of 60 households in one block → 400 of 600
    right = by.get_group(RIGHT)
    assert right["households"].sum() == 100 and (right["households"] > 0).sum() == 1
    east = by.get_group(EAST).to_crs(METRIC)
    north = east.geometry.centroid.y > Y0 + 150
    assert (east.loc[north, "households"] > 0).all() and (east.loc[~north, "households"] == 0).all()
    assert west  # (bounds used above only to document the layout)
    # a raster in another CRS is refused with what to do about it
    other = tmp_path / "pop3857.tif"
    write_raster(other, "EPSG:3857", 0, 0, 100, 100, 2, 2, rows_of_ten=2)
    with pytest.raises(BuildRefused, match="EPSG:3857.*gdalwarp -t_srs EPSG:4326"):
        raster_sums(other, np.asarray(units.geometry.values))


def test_households_table_names_are_matched_and_ambiguity_refused():
    communities = pd.DataFrame({"code": [LEFT, RIGHT, EAST], "name": ["甲社区", "乙社区居委会", "甲村"]})
    table = pd.DataFrame({"community": ["乙社区", "丙社区", None], "code": [None, None, EAST],
                          "households": [10, 20, 30], "population": [None, None, 70]})
    totals, unmatched = match_totals(table, communities)
    assert sorted(totals) == [RIGHT, EAST] and unmatched == ["丙社区"]
    assert totals[RIGHT][0] == 10 and pd.isna(totals[RIGHT][1]) and totals[EAST] == (30, 70)
    with pytest.raises(BuildRefused, match="'甲' in the households table is ambiguous"):
        match_totals(pd.DataFrame({"community": ["甲"], "code": [None], "households": [1],
                                   "population": [None]}), communities)


def _store(engine, streets, communities, roads):
    with engine.begin() as conn:
        write_layer(conn, "streets", streets)
        write_layer(conn, "communities", communities)
        if roads is not None:
            write_layer(conn, "roads", roads)


def test_build_stored_replaces_units_with_adjacency_and_raises_the_revision(engine, tmp_path):
    streets, communities, roads = grid()
    _store(engine, streets, communities, roads)
    table = tmp_path / "hh.csv"
    table.write_text("社区,户数,人口\n甲社区,\"1,000\",2600\n乙社区,501,\n丁,7,\n", encoding="gbk")
    before = current_revision(engine)
    result = build_stored(engine, households=table)
    assert result.unmatched_totals == ["丁"] and result.totals_honoured == 2
    assert current_revision(engine) == before + 1
    units = read_layer(engine, "units")
    assert len(units) == 14 and units.groupby("community_code")["households"].sum()[LEFT] == 1000
    with engine.connect() as conn:
        pairs = conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one()
    assert pairs >= 17  # rook pairs of a 4 × 2 and a 3 × 2 grid, and across the street boundary
    # one street again: only its units are replaced
    again = build_stored(engine, street=S2)
    assert again.streets == [S2] and len(read_layer(engine, "units")) == 14
    assert (read_layer(engine, "units")["street_code"] == S1).sum() == 8


def test_cli_units_build_and_its_refusals(db_url, engine, tmp_path):
    streets, communities, roads = grid()
    _store(engine, streets, communities, None)
    runner = make_app(db_url).test_cli_runner()
    # no roads stored: the streets are tessellated instead of refused, and the report says so
    result = runner.invoke(args=["units", "build", "--shape", "square", "--cell-m2", "2500"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["method"] == "tessellation" and "not blocks" in built["note"]
    units = read_layer(engine, "units")
    assert set(units["street_code"]) == {S1, S2} and units.groupby("community_code").size().min() > 4
    with engine.begin() as conn:
        write_layer(conn, "roads", roads)
    bad = tmp_path / "bad.csv"
    bad.write_text("社区,户数\n甲社区,many\n", encoding="utf-8")
    result = runner.invoke(args=["units", "build", "--households", str(bad)])
    assert result.exit_code == 1 and "'many' is not a whole number" in result.output
    result = runner.invoke(args=["units", "build", "--street", "123"])
    assert result.exit_code == 2 and "not a 9-digit street code" in result.output
    result = runner.invoke(args=["units", "build", "--street", S1], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["units"] == 8
