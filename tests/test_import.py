"""Import: every format, CRS handling, repairs, refusals, and all-or-nothing writes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy import event, func, select, text

from geodata.crs import wgs84_to_gcj02
from geodata.exporter import export_layer
from geodata.models import AuditLog, UnitAdjacency
from geodata.store import layer_counts, read_layer
from layers.onboarding.imports import ImportRefused, import_layer, read_source


def units_sample(demo, n: int = 60) -> gpd.GeoDataFrame:
    units = demo.layers["units"]
    street = units["street_code"].iloc[0]
    return units[units["street_code"] == street].iloc[:n].reset_index(drop=True)


def write_shapefile_zip(gdf: gpd.GeoDataFrame, path: Path, *, prj: bool = True, **kw) -> Path:
    folder = path.parent / (path.stem + "_shp")
    folder.mkdir()
    pyogrio.write_dataframe(gdf, folder / "data.shp", **kw)
    with zipfile.ZipFile(path, "w") as zf:
        for f in folder.iterdir():
            if prj or f.suffix != ".prj":
                zf.write(f, f.name)
    return path


def stored_codes(engine, layer: str) -> set[str]:
    return set(read_layer(engine, layer)["code"])


# --- formats -------------------------------------------------------------------------------


def test_shapefile_zip_export_imports_back_byte_for_byte(engine, small_demo, tmp_path):
    from layers.sample_data.demo import write_demo

    write_demo(engine, small_demo)
    for encoding in ("utf-8", "gbk"):
        out = tmp_path / f"communities_{encoding}.zip"
        export_layer(engine, "communities", "shp", out, encoding=encoding)
        before = read_layer(engine, "communities").set_index("code")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM communities"))
        report = import_layer(engine, "communities", out)
        after = read_layer(engine, "communities").set_index("code").loc[before.index]
        assert report.written == len(before)
        assert [n.encode("utf-8") for n in after["name"]] == [n.encode("utf-8") for n in before["name"]]
        assert (after["street_code"] == before["street_code"]).all()
        assert shapely.equals_exact(np.asarray(after.geometry.values), np.asarray(before.geometry.values),
                                    tolerance=1e-9).all()


def test_units_import_stores_adjacency(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 200)
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    report = import_layer(engine, "units", path)
    assert report.written == 200
    codes = set(units["code"])
    expected = small_demo.adjacency[small_demo.adjacency["unit_a"].isin(codes)
                                    & small_demo.adjacency["unit_b"].isin(codes)]
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one()
        audit = conn.execute(select(AuditLog.action, AuditLog.layer)).all()
    assert stored == report.adjacency_pairs == len(expected)
    assert ("import:append", "units") in audit


def test_geojson_and_csv_with_lon_lat(engine, small_demo, tmp_path):
    facilities = small_demo.layers["facilities"].iloc[:30]
    path = tmp_path / "facilities.geojson"
    pyogrio.write_dataframe(facilities, path, driver="GeoJSON")
    assert import_layer(engine, "facilities", path).written == 30
    csv = pd.DataFrame(facilities.drop(columns="geometry"))
    csv["code"] = csv["code"] + "X"
    csv["经度"] = facilities.geometry.x
    csv["纬度"] = facilities.geometry.y
    csv_path = tmp_path / "facilities.csv"
    csv.to_csv(csv_path, index=False, encoding="gbk")  # other departments send GBK
    assert import_layer(engine, "facilities", csv_path).written == 30
    stored = read_layer(engine, "facilities").set_index("code")
    assert stored.loc[csv["code"].iloc[0], "name"] == facilities["name"].iloc[0]
    assert stored.loc[csv["code"].iloc[0]].geometry.equals_exact(facilities.geometry.iloc[0], 1e-9)


def test_field_mapping_and_short_names(engine, small_demo, tmp_path):
    units = units_sample(small_demo).rename(columns={"households": "HH_2024", "street_code": "strt_code"})
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    report = import_layer(engine, "units", path, mapping={"HH_2024": "households"})
    assert report.written == len(units)
    stored = read_layer(engine, "units").set_index("code")
    assert (stored.loc[units["code"], "households"].to_numpy() == units["HH_2024"].to_numpy()).all()


# --- coordinate systems ---------------------------------------------------------------------


def test_projected_and_cgcs2000_files_are_reprojected(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 20)
    projected = write_shapefile_zip(units.to_crs(4547), tmp_path / "gk.zip")
    import_layer(engine, "units", projected)
    stored = read_layer(engine, "units").set_index("code").loc[units["code"]]
    shift = shapely.hausdorff_distance(np.asarray(stored.geometry.values),
                                       np.asarray(units.geometry.values))
    assert shift.max() < 1e-7  # degrees: about a centimetre
    cgcs = units.set_crs(4490, allow_override=True).assign(code=units["code"] + "C")
    import_layer(engine, "units", write_shapefile_zip(cgcs, tmp_path / "cgcs.zip"))
    assert len(stored_codes(engine, "units")) == 40


def test_gcj02_is_converted_back_within_half_a_metre(engine, small_demo, tmp_path):
    facilities = small_demo.layers["facilities"].iloc[:40]
    lon, lat = wgs84_to_gcj02(facilities.geometry.x.to_numpy(), facilities.geometry.y.to_numpy())
    shifted = facilities.set_geometry(gpd.points_from_xy(lon, lat, crs=4326))
    path = tmp_path / "gaode.geojson"
    pyogrio.write_dataframe(shifted, path, driver="GeoJSON")
    import_layer(engine, "facilities", path, crs="GCJ02")
    stored = read_layer(engine, "facilities").set_index("code").loc[facilities["code"]]
    back = gpd.GeoSeries(stored.geometry.values, crs=4326).to_crs(4547)
    truth = gpd.GeoSeries(facilities.geometry.values, crs=4326).to_crs(4547)
    error = back.distance(truth, align=False)
    assert error.max() < 0.5
    offset = gpd.GeoSeries(shifted.geometry.values, crs=4326).to_crs(4547).distance(truth, align=False)
    assert offset.min() > 100  # the offset was real


# --- geometry repair and refusal ------------------------------------------------------------


def test_slightly_invalid_polygon_is_repaired_and_reported(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 5)
    poly = units.geometry.iloc[2]
    ring = list(poly.exterior.coords)
    # a collapsed spike out of one corner (a digitising slip): invalid, same area once removed
    spike = (ring[1][0] + 2e-4, ring[1][1] + 1e-5)
    bad = shapely.Polygon([ring[0], ring[1], spike, ring[1], *ring[2:]])
    assert not bad.is_valid
    units.loc[2, "geometry"] = bad
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    report = import_layer(engine, "units", path)
    assert report.written == 5
    assert len(report.repaired) == 1 and report.repaired[0].startswith("row 3 ")
    stored = read_layer(engine, "units")
    assert stored.geometry.is_valid.all()


def test_bowtie_is_refused_with_its_row_and_nothing_written(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 5)
    minx, miny, maxx, maxy = units.geometry.iloc[3].bounds
    units.loc[3, "geometry"] = shapely.Polygon([(minx, miny), (maxx, maxy), (maxx, miny), (minx, maxy)])
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    with pytest.raises(ImportRefused, match=r"row 4: invalid geometry"):
        import_layer(engine, "units", path)
    assert layer_counts(engine)["units"] == 0


def test_wrong_geometry_type_is_refused(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 3)
    points = units.set_geometry(units.geometry.centroid)
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(points, path)
    with pytest.raises(ImportRefused, match=r"row 1: geometry is Point, layer units takes"):
        import_layer(engine, "units", path)


# --- bad files ------------------------------------------------------------------------------


def test_shapefile_without_prj_is_refused_unless_declared(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 10)
    path = write_shapefile_zip(units, tmp_path / "noprj.zip", prj=False)
    with pytest.raises(ImportRefused, match=r"has no \.prj"):
        import_layer(engine, "units", path)
    assert layer_counts(engine)["units"] == 0
    assert import_layer(engine, "units", path, crs="EPSG:4326").written == 10


def test_broken_zip_is_refused(engine, tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(ImportRefused, match="not a readable zip archive"):
        import_layer(engine, "units", path)
    truncated = tmp_path / "truncated.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.geojson", '{"type": "FeatureCollection", "features": []}' * 200)
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImportRefused, match="zip"):
        import_layer(engine, "units", truncated)


def test_zip_with_paths_outside_itself_is_refused(engine, tmp_path):
    path = tmp_path / "slip.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../../evil.geojson", "{}")
    with pytest.raises(ImportRefused, match="points outside the archive"):
        import_layer(engine, "units", path)
    assert not (tmp_path.parent / "evil.geojson").exists()


def test_zip_bomb_is_refused(engine, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.csv", "0" * 5_000_000)
    assert path.stat().st_size < 50_000
    with pytest.raises(ImportRefused, match="over the limit"):
        import_layer(engine, "units", path, max_unzipped_bytes=1_000_000)


def test_geojson_past_its_size_limit_is_refused_before_it_is_read(engine, small_demo, tmp_path, monkeypatch):
    """GDAL reads a GeoJSON whole at ~25 times its size: a big one is refused, a GeoPackage asked for."""
    path = tmp_path / "units.geojson"
    units_sample(small_demo, 40).to_file(path, driver="GeoJSON")
    with path.open("a") as f:
        f.write(" " * 1_100_000)  # whitespace: still valid GeoJSON, now over 1 MB
    monkeypatch.setenv("GRIDPLAN_MAX_GEOJSON_MB", "1")
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM units")).scalar_one()
    with pytest.raises(ImportRefused, match="over the limit of 1 MB.*GeoPackage"):
        import_layer(engine, "units", path, mode="append")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM units")).scalar_one() == before
    monkeypatch.setenv("GRIDPLAN_MAX_GEOJSON_MB", "2")
    assert len(read_source(path, workdir=tmp_path)) == 40  # within the limit it is read


def test_unknown_layer_and_unknown_fields_are_named(engine, small_demo, tmp_path):
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units_sample(small_demo, 3), path)
    with pytest.raises(ValueError, match="unknown layer 'parcels'"):
        import_layer(engine, "parcels", path)
    with pytest.raises(ImportRefused, match="'HH' named in --map is not in the file"):
        import_layer(engine, "units", path, mapping={"HH": "households"})
    with pytest.raises(ImportRefused, match="layer units has no field 'hh_total'"):
        import_layer(engine, "units", path, mapping={"households": "hh_total"})


def test_wrong_types_and_bad_codes_are_refused_by_row(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 6).astype({"households": object})
    units.loc[1, "households"] = "很多"
    units.loc[3, "households"] = 12.5
    units.loc[4, "street_code"] = "42010"
    units.loc[5, "community_code"] = "999999999999"
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    with pytest.raises(ImportRefused) as refused:
        import_layer(engine, "units", path)
    problems = refused.value.problems
    assert any(p.startswith("row 2: households") for p in problems)
    # the value as the file holds it, once: not "np.float64(12.5)", and not "empty" as well
    row4 = [p for p in problems if p.startswith("row 4: households")]
    assert len(row4) == 1 and "12.5" in row4[0] and "np." not in row4[0] and "whole number" in row4[0]
    assert any(p.startswith("row 5: street_code '42010' is not a 9-digit code") for p in problems)
    assert any("row 6: community_code 999999999999 does not lie under street_code" in p for p in problems)
    assert layer_counts(engine)["units"] == 0


def test_append_refuses_stored_and_repeated_codes_update_refuses_unknown(engine, small_demo, tmp_path):
    units = units_sample(small_demo, 10)
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    import_layer(engine, "units", path)
    with pytest.raises(ImportRefused, match="10 codes already stored"):
        import_layer(engine, "units", path)
    twice = tmp_path / "twice.gpkg"
    pyogrio.write_dataframe(pd.concat([units.iloc[:2], units.iloc[:2]]).assign(
        code=lambda f: f["code"] + "9"), twice)
    with pytest.raises(ImportRefused, match="codes repeated in the file"):
        import_layer(engine, "units", twice)
    other = tmp_path / "other.gpkg"
    pyogrio.write_dataframe(units_sample(small_demo, 12).iloc[10:], other)
    with pytest.raises(ImportRefused, match="not stored in units"):
        import_layer(engine, "units", other, mode="update")
    report = import_layer(engine, "units", other, mode="replace")
    assert report.deleted == 10
    assert stored_codes(engine, "units") == set(units_sample(small_demo, 12)["code"][10:])


def test_failure_halfway_through_the_inserts_leaves_the_database_as_it_was(engine, small_demo, tmp_path,
                                                                            monkeypatch):
    import geodata.store

    first = units_sample(small_demo, 30)
    path = tmp_path / "first.gpkg"
    pyogrio.write_dataframe(first, path)
    import_layer(engine, "units", path)
    before = read_layer(engine, "units")
    with engine.connect() as conn:
        pairs_before = conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one()

    many = small_demo.layers["units"].iloc[100:700]
    path = tmp_path / "many.gpkg"
    pyogrio.write_dataframe(many, path)
    monkeypatch.setattr(geodata.store, "BATCH", 100)  # six batches of inserts
    calls = {"n": 0}

    def fail_on_the_fourth_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO UNITS"):
            calls["n"] += 1
            if calls["n"] == 4:
                raise RuntimeError("disk full (simulated)")

    event.listen(engine, "before_cursor_execute", fail_on_the_fourth_insert)
    try:
        for mode in ("append", "replace"):
            calls["n"] = 0
            with pytest.raises(RuntimeError, match="disk full"):
                import_layer(engine, "units", path, mode=mode)
            assert calls["n"] == 4
            after = read_layer(engine, "units")
            assert list(after["code"]) == list(before["code"])
            assert (after["households"] == before["households"]).all()
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_the_fourth_insert)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one() == pairs_before
        assert conn.execute(select(func.count()).select_from(AuditLog)).scalar_one() == 1


def test_replacing_communities_keeps_their_past_boundaries(engine, small_demo, tmp_path):
    from datetime import date

    from geodata.models import CommunityHistory

    communities = small_demo.layers["communities"]
    path = tmp_path / "communities.gpkg"
    pyogrio.write_dataframe(communities, path)
    import_layer(engine, "communities", path)
    moved = communities.iloc[:3].copy()
    moved["geometry"] = moved.geometry.translate(0.001, 0)
    moved_path = tmp_path / "moved.gpkg"
    pyogrio.write_dataframe(moved, moved_path)
    import_layer(engine, "communities", moved_path, mode="update")
    history = read_layer_history(engine)
    assert sorted(history["code"]) == sorted(moved["code"])
    assert (history["valid_to"] == date.today()).all()
    old = history.set_index("code").geometry[moved["code"].iloc[0]]
    assert old.equals(communities.geometry.iloc[0])  # the boundary before the move
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CommunityHistory)).scalar_one() == 3


def read_layer_history(engine) -> pd.DataFrame:
    from geodata import dialect
    from geodata.models import CommunityHistory

    table = CommunityHistory.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.code, table.c.valid_to, dialect.as_wkb(table.c.geom))).all()
    frame = pd.DataFrame(rows, columns=["code", "valid_to", "wkb"])
    return gpd.GeoDataFrame(frame, geometry=shapely.from_wkb(frame.pop("wkb")), crs=4326)
