"""Files that lie (issue 20, item 6) and values that broke the write (item 8): a wrong .prj,
counts of 9e18 or −5, full-width digits in codes, parents that do not exist, text longer than its
column, a units file without population. Each lying file is refused before anything is written,
with a message naming the row, field or place — through ``import_layer``, the command line and the
layers page (preview, then the import job) — on both databases; the database stays byte for byte
what it was. Each file's honest twin is taken, so that every refusal is its lie's.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from geodata.db import get_engine
from geodata.settings import save_setting
from geodata.store import read_layer
from layers.onboarding.imports import ImportRefused, check_source, import_layer, read_source
from layers.sample_data.demo import generate
from layers.worker import run_one
from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in, snapshot

#: Tables a refused upload may rightly touch: its job, the audit log, sign-in counts.
TOUCHED = ("jobs", "audit_log", "rate_limits")


@pytest.fixture(scope="module")
def demo():
    return generate(units=200, seed=20)


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def site(request, demo, tmp_path_factory):
    """The demo stored, an app on it; the tests refuse files and leave it as it was."""
    folder = tmp_path_factory.mktemp(f"values-{request.param}")
    if request.param == "spatialite":
        shutil.copy(request.getfixturevalue("spatialite_template"), folder / "gridplan.sqlite")
        url = f"sqlite:///{folder / 'gridplan.sqlite'}"
    else:
        server = request.getfixturevalue("postgis_server")
        admin = get_engine(server.url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CREATE DATABASE test_values TEMPLATE template_gridplan")
        url = server.url.rsplit("/", 1)[0] + "/test_values"
    engine = get_engine(url)
    app = demo_site(url, demo, BASEMAP="none", UPLOAD_FOLDER=str(folder / "uploads"))[0]
    yield {"app": app, "url": url, "engine": engine, "kind": request.param}
    engine.dispose()


def fresh_units(demo, n: int = 12) -> gpd.GeoDataFrame:
    """``n`` of the demo's units under codes not stored yet: an append takes them as they are."""
    units = demo.layers["units"].iloc[:n].copy().reset_index(drop=True)
    units["code"] = units["code"] + "V"
    return units


def as_csv(gdf: gpd.GeoDataFrame, path: Path, **changes: dict[int, str]) -> Path:
    """``gdf`` as a CSV with a WKT column, every value as text, ``changes[field][row]`` written
    over (rows counted from 0)."""
    frame = pd.DataFrame(gdf.drop(columns="geometry")).astype(object)
    frame = frame.where(frame.notna(), "")
    for name, rows in changes.items():
        for row, value in rows.items():
            frame.loc[row, name] = value
    frame["wkt"] = gdf.geometry.to_wkt().to_numpy()
    frame.to_csv(path, index=False)
    return path


def shapefile_zip(gdf: gpd.GeoDataFrame, path: Path) -> Path:
    folder = Path(tempfile.mkdtemp(dir=path.parent))
    pyogrio.write_dataframe(gdf, folder / "units.shp", encoding="UTF-8")
    with zipfile.ZipFile(path, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
    return path


def refused(site, layer: str, path: Path, *words: str) -> list[str]:
    """Import ``path``; it must be refused naming every one of ``words``, nothing written."""
    before = snapshot(site["url"])
    with pytest.raises(ImportRefused) as caught:
        import_layer(site["engine"], layer, path)
    said = " | ".join(caught.value.problems)
    for word in words:
        assert word in said, (word, said)
    assert snapshot(site["url"]) == before
    return caught.value.problems


def accepted(site, layer: str, path: Path) -> None:
    """The honest twin: every check passes (nothing is written)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = read_source(path, workdir=Path(tmp))
    check_source(site["engine"], layer, raw)


# --- places: the coordinate system a file says it is in -----------------------------------


def test_degrees_under_a_metric_prj_are_refused_at_null_island(site, demo, tmp_path):
    units = fresh_units(demo, 30)
    accepted(site, "units", shapefile_zip(units, tmp_path / "honest.zip"))
    # the .prj says Web Mercator (metres), the coordinates are degrees: every unit within a
    # metre of 0°, 0° — the finding's 774 units at Null Island
    lying = shapefile_zip(units.set_crs(3857, allow_override=True), tmp_path / "lying.zip")
    problems = refused(site, "units", lying, "all 30 features lie at Null Island", "is the .prj right?",
                       "they look like longitude/latitude degrees (EPSG:4490 or EPSG:4326)",
                       "the file says EPSG:3857")
    assert len([p for p in problems if "Null Island" in p]) == 1  # one line, not one per row


def test_the_wrong_gauss_krueger_zone_is_refused_naming_the_right_one(site, demo, tmp_path):
    units = fresh_units(demo, 20).to_crs(4547)  # CGCS2000 3° zone, CM 114°E: Wuhan's
    accepted(site, "units", shapefile_zip(units, tmp_path / "honest.zip"))
    district = demo.layers["districts"]["code"].iloc[0]
    lying = shapefile_zip(units.set_crs(4549, allow_override=True), tmp_path / "cm120.zip")  # CM 120°E
    problems = refused(site, "units", lying, f"km from district {district}", "is the .prj right?",
                       "they look like EPSG:4547", "the file says EPSG:4549")
    far = next(p for p in problems if "km from district" in p)
    km = float(far.split(" lie ")[1].split(" km")[0].replace(",", ""))
    assert 400 < km < 700  # 6° of longitude at 30°N
    metres_as_degrees = shapefile_zip(units.set_crs(4326, allow_override=True), tmp_path / "deg.zip")
    refused(site, "units", metres_as_degrees, "row 1: coordinates are not longitude/latitude",
            "the coordinates of all 20 features are not longitude/latitude: they look like EPSG:4547 "
            "(CGCS2000 / 3-degree Gauss-Kruger CM 114E), but the file says EPSG:4326")


def test_a_file_in_another_city_is_refused_and_some_rows_far_away_are_named(site, demo, tmp_path):
    units = fresh_units(demo, 12)
    moved = units.copy()
    moved["geometry"] = units.geometry.translate(2.0, 0.0)  # 190 km east, still in China
    refused(site, "units", as_csv(moved, tmp_path / "east.csv"), "all 12 features lie 1",
            "km from district")
    some = units.copy()
    some.loc[[3, 7], "geometry"] = units.geometry.iloc[[3, 7]].translate(0.0, 1.0).to_numpy()
    refused(site, "units", as_csv(some, tmp_path / "some.csv"), "2 features lie 1", "(rows 4, 8)")


def test_a_first_import_is_refused_outside_china_and_at_null_island(engine, small_demo, tmp_path):
    """Nothing stored yet: the import region (setting ``import_region``) is all there is to go by."""
    units = small_demo.layers["units"].iloc[:10].reset_index(drop=True)
    abroad = units.copy()
    abroad["geometry"] = units.geometry.translate(-185.0, 11.0)  # Providence's longitude and latitude
    with pytest.raises(ImportRefused, match=r"all 10 features lie outside the import region \(longitude "
                                            r"73–136, latitude 3–54, setting import_region\)"):
        import_layer(engine, "units", as_csv(abroad, tmp_path / "abroad.csv"))
    null = units.copy()
    null["geometry"] = units.geometry.translate(-114.27, -30.59)
    with pytest.raises(ImportRefused, match="all 10 features lie at Null Island"):
        import_layer(engine, "units", as_csv(null, tmp_path / "null.csv"))
    assert read_layer(engine, "units").empty
    save_setting(engine, "import_region", {"lon_min": -180, "lon_max": 180, "lat_min": -90, "lat_max": 90},
                 actor="admin")
    assert import_layer(engine, "units", as_csv(abroad, tmp_path / "abroad.csv")).written == 10
    with pytest.raises(ImportRefused, match="Null Island"):  # never a place, whatever the region
        import_layer(engine, "units", as_csv(null.assign(code=null["code"] + "N"), tmp_path / "null2.csv"))


def test_a_feature_far_from_the_street_its_code_names_is_refused(site, demo, tmp_path):
    units = fresh_units(demo, 6)
    streets = demo.layers["streets"].set_index("code")
    other = next(c for c in streets.index if c != units["street_code"].iloc[2])
    moved = units.copy()
    # row 3 filed under another street and moved 15 km south of it: inside the district's 50 km
    minx, miny, maxx, _maxy = streets.loc[other].geometry.bounds
    moved.loc[2, "street_code"] = other
    moved.loc[2, "community_code"] = None
    moved.loc[2, "geometry"] = shapely.Polygon([(minx, miny - 0.15), (minx + 0.001, miny - 0.15),
                                                (minx + 0.001, miny - 0.149)])
    refused(site, "units", as_csv(moved, tmp_path / "moved.csv"),
            "row 3: lies 1", f"km from streets {other}, which its street_code names")


# --- values -------------------------------------------------------------------------------------


def test_counts_out_of_bounds_are_refused_by_row_and_field(site, demo, tmp_path):
    units = fresh_units(demo, 8)
    accepted(site, "units", as_csv(units, tmp_path / "honest.csv"))
    lying = as_csv(units, tmp_path / "counts.csv",
                   households={0: "9e18", 1: "1e30", 2: "-5", 3: "NaN", 4: "99999999999999999999",
                               5: "100001", 6: "inf"},
                   population={0: "-1", 7: "250000"})
    problems = refused(site, "units", lying,
                       "row 1: households = '9e18' is over the limit of 100,000 "
                       "(setting unit_households_max)",
                       "row 2: households = '1e30' is over the limit of 100,000",
                       "row 3: households = '-5' is negative",
                       "row 4: households = 'NaN' is not a whole number",
                       "row 5: households = '99999999999999999999' is over the limit",
                       "row 6: households = '100001' is over the limit of 100,000",
                       "row 7: households = 'inf' is not a whole number",
                       "row 1: population = '-1' is negative",
                       "row 8: population = '250000' is over the limit of 100,000 "
                       "(setting unit_population_max)")
    assert not any("is empty" in p for p in problems)  # each value named once, for what it is


def test_the_household_limit_is_the_citys_setting(site, demo, tmp_path):
    units = fresh_units(demo, 6)
    path = as_csv(units, tmp_path / "units.csv", households={2: "4000"})
    accepted(site, "units", path)
    save_setting(site["engine"], "unit_households_max", 3000, actor="admin")
    try:
        refused(site, "units", path, "row 3: households = '4000' is over the limit of 3,000 "
                                     "(setting unit_households_max)")
    finally:
        save_setting(site["engine"], "unit_households_max", 100000, actor="admin")


def test_numbers_past_what_a_column_holds_are_refused(site, demo, tmp_path):
    facilities = demo.layers["facilities"].iloc[:5].copy().reset_index(drop=True)
    facilities["code"] = facilities["code"] + "V"
    accepted(site, "facilities", as_csv(facilities, tmp_path / "honest.csv"))
    refused(site, "facilities", as_csv(facilities, tmp_path / "area.csv",
                                       floor_area_m2={0: "1e30", 1: "-20", 2: "inf"}),
            "row 1: floor_area_m2 = '1e30' is over the limit of 10,000,000",
            "row 2: floor_area_m2 = '-20' is negative", "row 3: floor_area_m2 = 'inf' is not a number")
    units = fresh_units(demo, 4)
    refused(site, "units", as_csv(units, tmp_path / "year.csv", built_year={1: "99999999999"}),
            "row 2: built_year = '99999999999' is over the limit of 2,100")


def test_text_longer_than_its_column_is_refused_naming_field_and_row(site, demo, tmp_path):
    facilities = demo.layers["facilities"].iloc[:4].copy().reset_index(drop=True)
    facilities["code"] = facilities["code"] + "V"
    refused(site, "facilities", as_csv(facilities, tmp_path / "long.csv", name={2: "社区服务站" * 30}),
            "row 3: name is 150 characters long, over the limit of 100")
    units = fresh_units(demo, 3)
    refused(site, "units", as_csv(units, tmp_path / "code.csv", code={0: "4201030010024399999999"}),
            "row 1: code is 22 characters long, over the limit of 20")
    refused(site, "units", as_csv(units, tmp_path / "nul.csv", land_use={1: "resi\x00dential"}),
            "row 2: land_use holds a NUL character")


# --- codes and parents -----------------------------------------------------------------------


def test_codes_are_ascii_digits_with_nothing_around_them(site, demo, tmp_path):
    units = fresh_units(demo, 4)
    district = units["district_code"].iloc[0]
    wide = district.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert wide == "４２０１０３" or not wide.isascii()
    problems = refused(site, "units", as_csv(units, tmp_path / "codes.csv",
                                             district_code={0: wide, 1: district + "\n"},
                                             street_code={2: units["street_code"].iloc[2] + "\t"}),
                       f"row 1: district_code {wide!r} is not a 6-digit code",
                       f"row 2: district_code {district + chr(10)!r} is not a 6-digit code",
                       "row 3: street_code")
    assert any("row 3: street_code" in p and "is not a 9-digit code" in p for p in problems)


def test_parents_that_are_not_stored_are_refused_naming_the_codes(site, demo, tmp_path):
    stored = demo.layers["communities"]
    communities = gpd.GeoDataFrame(pd.concat([stored, stored]).iloc[:14], crs=stored.crs)
    communities = communities.reset_index(drop=True)
    district = communities["district_code"].iloc[0]
    streets = [f"{district}{900 + i:03d}" for i in range(len(communities))]  # no such streets
    communities["street_code"] = streets
    communities["code"] = [s + "001" for s in streets]
    problems = refused(site, "communities", as_csv(communities, tmp_path / "communities.csv"),
                       "street_code: 14 codes name no stored streets: " + ", ".join(streets[:10])
                       + " … and 4 more")
    assert len(problems) == 1

    units = fresh_units(demo, 5)
    units.loc[1, "community_code"] = units["street_code"].iloc[1] + "999"
    units.loc[3, "street_code"] = district + "998"
    units.loc[3, "community_code"] = district + "998001"
    refused(site, "units", as_csv(units, tmp_path / "units.csv"),
            f"street_code: 1 codes name no stored streets: {district}998",
            "community_code: 2 codes name no stored communities: "
            + ", ".join(sorted([units["community_code"].iloc[1], f"{district}998001"])))

    cells = demo.layers["grid_cells"].iloc[:3].copy().reset_index(drop=True)
    cells["community_code"] = [c[:9] + "977" for c in cells["community_code"]]
    cells["code"] = [c + f"9{i:02d}" for i, c in enumerate(cells["community_code"])]
    refused(site, "grid_cells", as_csv(cells, tmp_path / "cells.csv"),
            "community_code: ", "codes name no stored communities: " + cells["community_code"].iloc[0])


# --- files that used to end in a traceback -----------------------------------------------------


def test_units_without_population_are_estimated_from_households(engine, small_demo, tmp_path):
    from geodata.settings import get_value

    units = small_demo.layers["units"].iloc[:20].reset_index(drop=True)
    path = tmp_path / "nopop.gpkg"
    pyogrio.write_dataframe(units.drop(columns="population"), path)
    report = import_layer(engine, "units", path)
    assert report.written == 20 and report.estimated_population == 20
    pph = get_value(engine, "people_per_household")
    assert f"population estimated for 20 features as households × {pph}" in report.summary()
    stored = read_layer(engine, "units").set_index("code").loc[units["code"]]
    assert (stored["population"].to_numpy() == np.round(units["households"].to_numpy() * pph)).all()
    # an empty cell is estimated too; the ones given are kept; an empty land use takes the default
    some = small_demo.layers["units"].iloc[20:25].reset_index(drop=True)
    report = import_layer(engine, "units", as_csv(some, tmp_path / "some.csv", population={1: ""},
                                                  land_use={2: ""}))
    assert report.estimated_population == 1
    stored = read_layer(engine, "units").set_index("code").loc[some["code"]]
    assert stored["population"].iloc[0] == some["population"].iloc[0]
    assert stored["population"].iloc[1] == round(some["households"].iloc[1] * pph)
    assert stored["land_use"].iloc[2] == "residential"


# --- the same refusals on the command line and the layers page ---------------------------------


def planner(app):
    client = app.test_client()
    assert sign_in(client, "planner").status_code == 302
    client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client.get("/layers").get_data(as_text=True))
    return client


def test_the_command_line_and_the_layers_page_say_the_same(site, demo, tmp_path):
    units = fresh_units(demo, 10)
    files = {
        "null.zip": (shapefile_zip(units.set_crs(3857, allow_override=True), tmp_path / "null.zip"),
                     "lie at Null Island"),
        "counts.csv": (as_csv(units, tmp_path / "counts.csv", households={4: "9e18"}),
                       "row 5: households = '9e18' is over the limit of 100,000"),
        "parents.csv": (as_csv(units.assign(community_code=units["street_code"] + "999"),
                               tmp_path / "parents.csv"), "codes name no stored communities"),
        "long.csv": (as_csv(units, tmp_path / "long.csv", land_use={0: "x" * 30}),
                     "row 1: land_use is 30 characters long, over the limit of 20"),
    }
    client = planner(site["app"])  # signed in first: a sign-in notes its time on the account
    before = snapshot(site["url"], leave_out=TOUCHED)
    runner = site["app"].test_cli_runner()
    for name, (path, words) in files.items():
        result = runner.invoke(args=["import", "units", str(path)])
        assert result.exit_code == 1 and words in result.output, (name, result.output)
        assert "Traceback" not in result.output
        answer = client.post("/api/layers/units/preview", content_type="multipart/form-data",
                             data={"file": (io.BytesIO(path.read_bytes()), name)})
        assert answer.status_code == 200, (name, answer.get_data(as_text=True)[:300])
        assert not answer.json["ok"] and any(words in p for p in answer.json["problems"]), (name, answer.json)
        queued = client.post("/api/layers/units/import", json={"upload": answer.json["upload"]})
        assert queued.status_code == 202, queued.get_data(as_text=True)
        job = run_one(site["engine"])
        assert job["status"] == "done" and job["result"]["refused"], (name, job)
        assert any(words in p for p in job["result"]["problems"]), (name, job["result"])
    assert snapshot(site["url"], leave_out=TOUCHED) == before


def test_the_admin_page_lists_the_import_limits(site):
    client = site["app"].test_client()
    assert sign_in(client, "admin").status_code == 302
    listed = {s["key"]: s for s in client.get("/api/admin/settings").json["settings"]}
    assert listed["unit_households_max"]["value"] == 100000
    assert listed["unit_population_max"]["value"] == 100000
    assert listed["import_region"]["value"] == {"lon_min": 73.0, "lon_max": 136.0, "lat_min": 3.0,
                                                "lat_max": 54.0}
    assert all(listed[k]["source"] for k in ("unit_households_max", "unit_population_max", "import_region"))
