"""Export: what ArcGIS and QGIS need from a file, checked with GDAL's own ogrinfo."""

from __future__ import annotations

import json
import subprocess
import zipfile

import pandas as pd
import pyogrio
import pytest
import shapely

from geodata.exporter import ExportError, export_layer
from geodata.store import read_layer
from layers.sample_data.demo import write_demo


@pytest.fixture
def filled(engine, small_demo):
    write_demo(engine, small_demo)
    return engine


def ogrinfo(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ogrinfo", "-ro", "-al", "-so", path], capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("layer", ["units", "communities", "facilities", "grid_cells", "incidents",
                                   "roads", "streets", "districts"])
@pytest.mark.parametrize("fmt", ["shp", "gpkg", "geojson", "csv"])
def test_ogrinfo_opens_every_export_without_a_warning(filled, small_demo, tmp_path, layer, fmt):
    out = tmp_path / f"{layer}.{'zip' if fmt == 'shp' else fmt}"
    report = export_layer(filled, layer, fmt, out)
    assert report.features == len(small_demo.layers[layer])
    target = f"/vsizip/{out}/{layer}.shp" if fmt == "shp" else str(out)
    result = ogrinfo(target)
    assert result.returncode == 0, result.stderr
    assert "warning" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    assert "error" not in result.stderr.lower()
    assert f"Feature Count: {len(small_demo.layers[layer])}" in result.stdout


def test_shapefile_zip_has_the_five_files_ascii_names_and_an_alias_table(filled, tmp_path):
    out = tmp_path / "units.zip"
    export_layer(filled, "units", "shp", out)
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert {"units.shp", "units.shx", "units.dbf", "units.prj", "units.cpg",
                "units_fields.csv", "units_revision.txt"} == names
        assert zf.read("units.cpg").decode() == "UTF-8"
        assert "WGS_1984" in zf.read("units.prj").decode()
        aliases = pd.read_csv(zf.open("units_fields.csv"), encoding="utf-8-sig")
    assert dict(zip(aliases["field"], aliases["name"], strict=True))["strt_code"] == "street_code"
    assert "户数" in set(aliases["label"])
    fields = pyogrio.read_info(f"/vsizip/{out}/units.shp")["fields"]
    assert all(f.isascii() and len(f.encode()) <= 10 for f in fields)
    assert {"households", "strt_code", "comm_code"} <= set(fields)


def test_gbk_shapefile_in_cgcs2000(filled, tmp_path):
    out = tmp_path / "communities.zip"
    export_layer(filled, "communities", "shp", out, encoding="gbk", crs="EPSG:4490")
    with zipfile.ZipFile(out) as zf:
        assert zf.read("communities.cpg").decode() == "936"
        assert "China_2000" in zf.read("communities.prj").decode() or "CGCS" in zf.read(
            "communities.prj").decode()
        dbf = zf.read("communities.dbf")
    names = read_layer(filled, "communities")["name"]
    assert names.iloc[0].encode("gbk") in dbf  # stored as GBK bytes, as ArcGIS expects
    back = pyogrio.read_dataframe(f"/vsizip/{out}/communities.shp")
    assert list(back["name"]) == list(names)
    assert back.crs.to_epsg() == 4490


def test_long_text_is_cut_at_254_bytes_on_a_character_boundary(filled, tmp_path):
    text = "网格化管理" * 40  # 600 bytes in UTF-8
    with filled.begin() as conn:
        conn.exec_driver_sql(f"UPDATE incidents SET description = '{text}' WHERE id = 1")
    out = tmp_path / "incidents.zip"
    report = export_layer(filled, "incidents", "shp", out)
    assert report.truncated == ["row 1 description"]
    back = pyogrio.read_dataframe(f"/vsizip/{out}/incidents.shp")
    cut = back["descr"].iloc[0]
    assert len(cut.encode("utf-8")) <= 254 and text.startswith(cut)
    assert len(cut) == 254 // 3


def test_geojson_is_rfc7946(filled, tmp_path):
    out = tmp_path / "facilities.geojson"
    export_layer(filled, "facilities", "geojson", out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert "crs" not in data
    lon, lat = data["features"][0]["geometry"]["coordinates"]
    assert 114 < lon < 115 and 30 < lat < 31
    with pytest.raises(ExportError, match="GeoJSON is always WGS 84"):
        export_layer(filled, "facilities", "geojson", tmp_path / "x.geojson", crs="EPSG:4547")


def test_gpkg_in_a_projected_crs(filled, tmp_path):
    out = tmp_path / "units.gpkg"
    export_layer(filled, "units", "gpkg", out, crs="EPSG:4547")
    back = pyogrio.read_dataframe(out)
    assert back.crs.to_epsg() == 4547
    assert back.total_bounds[0] > 400_000  # metres in the 114°E Gauss–Krüger zone


def test_csv_opens_in_excel_and_keeps_codes_as_text(filled, tmp_path):
    out = tmp_path / "facilities.csv"
    community = read_layer(filled, "communities")["code"].iloc[0]
    export_layer(filled, "facilities", "csv", out, community=community)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    frame = pd.read_csv(out, dtype=str, encoding="utf-8-sig")
    assert {"lon", "lat", "community_code"} <= set(frame.columns)
    assert frame["community_code"].str.len().eq(12).all()


def test_street_filter_and_bad_requests(filled, small_demo, tmp_path):
    street = small_demo.layers["streets"]["code"].iloc[0]
    out = tmp_path / "units.gpkg"
    report = export_layer(filled, "units", "gpkg", out, street=street)
    assert report.features == (small_demo.layers["units"]["street_code"] == street).sum()
    back = pyogrio.read_dataframe(out)
    assert shapely.intersects(shapely.union_all(back.geometry.values),
                              small_demo.layers["streets"].set_index("code").geometry[street])
    with pytest.raises(ExportError, match="unknown format 'kml'"):
        export_layer(filled, "units", "kml", tmp_path / "u.kml")
    with pytest.raises(ExportError, match="unknown encoding 'latin-1'"):
        export_layer(filled, "units", "shp", tmp_path / "u.zip", encoding="latin-1")
    with pytest.raises(ValueError, match="unknown CRS"):
        export_layer(filled, "units", "gpkg", tmp_path / "u.gpkg", crs="EPSG:99999999")
    assert not (tmp_path / "u.zip").exists() and not (tmp_path / "u.kml").exists()
