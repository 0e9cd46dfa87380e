"""The layers page: import from the browser (preview, mapping, the importer's checks and
messages, a background job with progress, the audit log), export with the command line's
options, counts/extents/last changes — through Flask's test client on both databases, and in
headless Chromium."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest

from geodata.store import layer_counts, read_layer
from layers.worker import run_one
from tests.conftest import demo_site
from tests.webhelpers import BIN, ROOT, csrf_token, served_copy, sign_in, sign_in_page


def strict(response) -> dict:
    """The body parsed as strict JSON: NaN or Infinity would fail the test."""

    def refuse(name):
        raise AssertionError(f"{name} in a JSON answer")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    app = demo_site(db_url, small_demo, BASEMAP="none", UPLOAD_FOLDER=str(tmp_path / "uploads"))[0]
    return app


def client_as(app, role: str):
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client.get("/layers").get_data(as_text=True))}


def shapefile_zip(gdf: gpd.GeoDataFrame, folder: Path, name: str = "units", prj: bool = True) -> bytes:
    """A zipped shapefile with the short field names gridplan's own exports use."""
    from geodata.catalog import get_layer

    gdf = gdf.rename(columns={f.name: f.short for f in get_layer("units").fields})
    folder.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(gdf, folder / f"{name}.shp", encoding="UTF-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in folder.iterdir():
            if prj or f.suffix != ".prj":
                zf.write(f, f.name)
    return buffer.getvalue()


def new_units(demo, n: int = 40) -> gpd.GeoDataFrame:
    """Units of the demo's first street under codes not stored yet."""
    units = demo.layers["units"]
    sample = units[units["street_code"] == units["street_code"].iloc[0]].iloc[:n].copy()
    sample["code"] = sample["code"] + "N"
    return sample.reset_index(drop=True)


def preview(client, headers, layer: str, data: bytes, filename: str, **form):
    body = {"file": (io.BytesIO(data), filename), **form}
    return client.post(f"/api/layers/{layer}/preview", data=body, headers=headers,
                       content_type="multipart/form-data")


def test_preview_then_import_in_the_background(site, engine, small_demo, tmp_path):
    client, headers = client_as(site, "planner")
    units = new_units(small_demo)
    data = shapefile_zip(units.rename(columns={"households": "HH"}), tmp_path / "shp")
    answer = preview(client, headers, "units", data, "新单元.zip")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    p = strict(answer)
    assert p["features"] == len(units) and p["file"] == "新单元.zip"
    assert len(p["rows"]) == 10 and p["rows"][0][-1] in ("Polygon", "MultiPolygon")
    assert p["mapping"]["code"] == "code" and p["mapping"]["strt_code"] == "street_code"
    assert p["mapping"]["HH"] is None  # not matched: households is missing …
    assert not p["ok"] and any("missing required field 'households'" in x for x in p["problems"])
    # … until the planner maps it: the same upload, checked again
    again = client.post("/api/layers/units/preview", headers=headers, data={
        "upload": p["upload"], "mapping": json.dumps({"HH": "households"})})
    p = strict(again)
    assert p["ok"] and p["mapping"]["HH"] == "households" and p["stored"] == {"already": 0, "in_file": 40}
    before = layer_counts(engine)["units"]

    queued = client.post("/api/layers/units/import", headers=headers, json={
        "upload": p["upload"], "mode": "append", "mapping": {"HH": "households"}})
    assert queued.status_code == 202
    status = strict(client.get(queued.json["url"]))
    assert status["status"] == "queued" and status["progress"] == 0
    again = client.post("/api/layers/units/import", headers=headers, json={"upload": p["upload"]})
    assert again.status_code == 409  # the same file twice: refused
    done = run_one(engine)
    assert done["status"] == "done", done
    status = strict(client.get(queued.json["url"]))
    assert status["status"] == "done" and status["progress"] == 1.0
    assert not status["result"]["refused"] and status["result"]["written"] == len(units)
    assert layer_counts(engine)["units"] == before + len(units)
    stored = read_layer(engine, "units").set_index("code").loc[units["code"]]
    assert (stored["households"].to_numpy() == units["households"].to_numpy()).all()
    assert not any((tmp_path / "uploads").iterdir())  # the upload is gone

    layers = strict(client.get("/api/layers"))["layers"]
    row = next(r for r in layers if r["name"] == "units")
    assert row["count"] == before + len(units) and len(row["extent"]) == 4
    assert row["last_change"]["actor"] == "planner" and row["last_change"]["action"] == "import:append"
    page = client.get("/layers").get_data(as_text=True)
    assert "imported (added to the layer)" in page and "planner" in page


def test_refused_in_the_job_writes_nothing(site, engine, small_demo):
    client, headers = client_as(site, "planner")
    existing = small_demo.layers["facilities"].iloc[:5]
    data = existing.to_json().encode()
    p = strict(preview(client, headers, "facilities", data, "facilities.geojson"))
    assert p["ok"] and p["stored"]["already"] == 5  # the page warns: append will refuse them
    before = layer_counts(engine)
    queued = client.post("/api/layers/facilities/import", headers=headers, json={"upload": p["upload"],
                                                                                "mode": "append"})
    assert run_one(engine)["status"] == "done"
    result = strict(client.get(queued.json["url"]))["result"]
    # in the page's words: the layer by its name, the modes as the page names them, no --mode flag
    assert result["refused"] and result["problems"][0].startswith(
        "5 codes of the file are stored in the layer facilities already, so they cannot be added: "
        "choose the mode “Update” or “Replace”: ")
    assert "--mode" not in result["problems"][0]
    assert layer_counts(engine) == before
    # the command line keeps its flag
    folder = Path(site.config["UPLOAD_FOLDER"]).parent / "cli"
    folder.mkdir()
    (folder / "facilities.geojson").write_bytes(data)
    said = site.test_cli_runner().invoke(args=["import", "facilities", str(folder / "facilities.geojson")])
    assert said.exit_code != 0 and "use --mode update or replace" in said.output, said.output
    assert layer_counts(engine) == before


@pytest.mark.parametrize("make, filename, message", [
    (lambda units, tmp: b"PK\x03\x04 this is not a zip", "broken.zip", "is not a readable zip archive"),
    (lambda units, tmp: shapefile_zip(units, tmp / "noprj", prj=False), "noprj.zip", "has no .prj"),
    (lambda units, tmp: b"name,value\n1,2\n", "table.csv", "has no lon/lat columns"),
    (lambda units, tmp: b"whatever", "table.xlsx", "unknown format .xlsx"),
    (lambda units, tmp: b"whatever", "units.shp", "a shapefile comes as a zip"),
    (lambda units, tmp: b"", "empty.csv", "is empty"),
])
def test_unreadable_files_are_refused_and_deleted(site, small_demo, tmp_path, make, filename, message):
    client, headers = client_as(site, "planner")
    answer = preview(client, headers, "units", make(new_units(small_demo, 5), tmp_path), filename)
    assert answer.status_code == 400
    body = strict(answer)
    assert answer.content_type == "application/problem+json" and message in body["detail"]
    uploads = tmp_path / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())  # nothing kept, nothing written


def test_a_declared_crs_makes_a_shapefile_without_prj_readable(site, small_demo, tmp_path):
    client, headers = client_as(site, "planner")
    data = shapefile_zip(new_units(small_demo, 5), tmp_path / "noprj", prj=False)
    assert preview(client, headers, "units", data, "noprj.zip").status_code == 400
    answer = preview(client, headers, "units", data, "noprj.zip", crs="EPSG:4490")
    assert answer.status_code == 200 and strict(answer)["ok"]
    assert preview(client, headers, "units", data, "noprj.zip", crs="EPSG:99999").status_code == 400


def test_wrong_field_mapping_is_named(site, small_demo, tmp_path):
    client, headers = client_as(site, "planner")
    data = shapefile_zip(new_units(small_demo, 5), tmp_path / "shp")
    p = strict(preview(client, headers, "units", data, "u.zip", mapping=json.dumps({"HH": "housholds"})))
    assert not p["ok"]
    assert any("field 'HH' named in --map is not in the file" in x for x in p["problems"])
    assert any("layer units has no field 'housholds'" in x for x in p["problems"])
    bad = preview(client, headers, "units", data, "u.zip", mapping="not json")
    assert bad.status_code == 400 and "mapping is a JSON object" in strict(bad)["detail"]


def test_uploads_over_the_limit_get_a_413_that_says_so(site, small_demo, tmp_path):
    site.config["MAX_CONTENT_LENGTH"] = 20_000
    client, headers = client_as(site, "planner")
    answer = preview(client, headers, "units", b"x" * 50_000, "big.csv")
    assert answer.status_code == 413
    body = strict(answer)
    assert "larger than the upload limit" in body["detail"] and "20 KB" in body["detail"]


def test_roles_csrf_and_unknown_uploads(site, small_demo, tmp_path):
    viewer, headers = client_as(site, "viewer")
    data = shapefile_zip(new_units(small_demo, 5), tmp_path / "shp")
    assert preview(viewer, headers, "units", data, "u.zip").status_code == 403
    assert viewer.post("/api/layers/units/import", headers=headers, json={}).status_code == 403
    page = viewer.get("/layers").get_data(as_text=True)
    assert 'id="import-panel"' not in page and 'id="export-panel"' in page
    supervisor = site.test_client()
    sign_in(supervisor, "supervisor")
    assert supervisor.get("/layers").status_code == 403

    planner, headers = client_as(site, "planner")
    no_csrf = planner.post("/api/layers/units/preview", data={"file": (io.BytesIO(data), "u.zip")},
                           content_type="multipart/form-data")
    assert no_csrf.status_code == 400 and "CSRF" in strict(no_csrf)["detail"]
    gone = planner.post("/api/layers/units/import", headers=headers, json={"upload": "0" * 32})
    assert gone.status_code == 404 and "choose the file again" in strict(gone)["detail"]
    assert planner.post("/api/layers/units/import", headers=headers,
                        json={"upload": "../../etc"}).status_code == 400
    assert planner.post("/api/layers/parcels/preview", headers=headers, data={}).status_code == 404
    p = strict(preview(planner, headers, "units", data, "u.zip"))
    other, other_headers = client_as(site, "admin")  # an upload belongs to whoever sent it
    assert other.post("/api/layers/units/import", headers=other_headers,
                      json={"upload": p["upload"]}).status_code == 404
    assert planner.delete(f"/api/layers/uploads/{p['upload']}", headers=headers).status_code == 200
    assert not (tmp_path / "uploads" / p["upload"]).exists()


def test_export_with_options(site, engine, small_demo):
    client, _ = client_as(site, "viewer")
    street = small_demo.layers["streets"]["code"].iloc[0]
    community = small_demo.layers["communities"]["code"].iloc[0]
    units = small_demo.layers["units"]

    answer = client.get(f"/api/layers/units/export?format=shp&encoding=gbk&crs=EPSG:4490&street={street}")
    assert answer.status_code == 200 and f"units-{street}.zip" in answer.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.data)) as zf:
        assert zf.read("units.cpg") == b"936" and "GCS_China_Geodetic_Coordinate_System_2000" in zf.read(
            "units.prj").decode()
    assert int(answer.headers["X-Gridplan-Features"]) == (units["street_code"] == street).sum()

    answer = client.get(f"/api/layers/units/export?format=csv&community={community}")
    lines = answer.data.decode("utf-8-sig").splitlines()
    assert answer.data.startswith(b"\xef\xbb\xbf")
    assert len(lines) == 1 + (units["community_code"] == community).sum()
    answer = client.get("/api/layers/communities/export?format=geojson")
    assert json.loads(answer.data)["type"] == "FeatureCollection"
    assert client.get("/api/layers/facilities/export?format=gpkg").status_code == 200

    for query, message in [("format=kml", "unknown format 'kml'"),
                           ("format=shp&encoding=latin1", "unknown encoding"),
                           ("format=geojson&crs=EPSG:4490", "GeoJSON is always WGS 84"),
                           ("format=gpkg&street=12", "street is a 9-digit code"),
                           ("format=gpkg&street=999999999", "no street 999999999 is stored")]:
        bad = client.get(f"/api/layers/units/export?{query}")
        assert bad.status_code == 400 and message in strict(bad)["detail"], query
    assert client.get("/api/layers/parcels/export?format=gpkg").status_code == 404

    from geodata.audit import AuditFilter, search

    rows, total = search(engine, AuditFilter(action="export", actor="viewer"))
    assert total == 4 and rows[-1]["detail"]["encoding"] == "gbk"
    # exports read, they do not change: the layer's last change is still the demo's (none logged)
    layers = strict(client.get("/api/layers"))["layers"]
    assert next(r for r in layers if r["name"] == "units")["last_change"] is None


# --- in Chromium ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    import shutil

    from geodata.db import get_engine

    folder = tmp_path_factory.mktemp("layers_page")
    shutil.copy(spatialite_template, folder / "gridplan.sqlite")
    url = f"sqlite:///{folder / 'gridplan.sqlite'}"
    engine = get_engine(url)
    app = demo_site(url, small_demo, BASEMAP="none", UPLOAD_FOLDER=str(folder / "uploads"))[0]
    # the background worker beside the app, as `make run` starts it: a process of its own (a job
    # forked from this process, which holds the server's, the browser's and other tests' threads,
    # could hang on a lock one of them held)
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "layers-page", "PYTHONPATH": str(ROOT)}
    log = (folder / "worker.log").open("w")
    worker = subprocess.Popen([str(BIN / "flask"), "--app", "webmap", "worker"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with served_copy(app) as base:
            yield {"base": base, "engine": engine, "folder": folder}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        log.close()


@pytest.fixture
def page(served, chromium_page):
    return chromium_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True, console=True)


def test_upload_preview_mapping_and_import_in_chromium(page, served, small_demo, tmp_path):
    units = new_units(small_demo, 30).rename(columns={"households": "HH"})
    path = tmp_path / "新的单元.zip"
    path.write_bytes(shapefile_zip(units, tmp_path / "shp"))
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    page.click("tr[data-layer=units] .pick-import")
    page.set_input_files("#import-form input[name=file]", str(path))
    page.wait_for_selector("#preview:not([hidden])")
    summary = page.inner_text("#preview-summary")
    assert "30" in summary and "新的单元.zip" in summary
    assert page.locator("#preview-rows tbody tr").count() == 10
    assert "households" in page.inner_text("#import-problems")  # required field not filled yet
    assert page.is_disabled("#import-start")
    page.select_option("#mapping select[data-column=HH]", "households")
    page.wait_for_function("() => document.querySelector('#import-message').classList.contains('ok')")
    assert page.is_hidden("#import-problems")
    page.screenshot(path=str(served["folder"] / "layers-preview.png"), full_page=True)
    page.click("#import-start")
    page.wait_for_function("() => document.querySelector('#import-result').classList.contains('ok')",
                           timeout=30_000)
    assert "30" in page.inner_text("#import-result")
    page.wait_for_function(
        "() => document.querySelector('tr[data-layer=units] .change').textContent.includes('planner')")
    stored = read_layer(served["engine"], "units", isin={"code": list(units["code"])})
    assert len(stored) == 30
    page.screenshot(path=str(served["folder"] / "layers-imported.png"), full_page=True)
    assert page.errors == []


def test_a_refused_file_is_explained_where_the_planner_looks(page, served, small_demo, tmp_path):
    path = tmp_path / "没有prj.zip"
    path.write_bytes(shapefile_zip(new_units(small_demo, 5), tmp_path / "shp", prj=False))
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "units")
    page.set_input_files("#import-form input[name=file]", str(path))
    page.wait_for_selector("#import-problems:not([hidden])")
    assert "has no .prj" in page.inner_text("#import-problems")
    assert "nothing was written" in page.inner_text("#import-message")
    page.screenshot(path=str(served["folder"] / "layers-refused.png"), full_page=True)
    # declaring the CRS sends the file again and the checks pass
    page.fill("#import-form input[name=crs]", "EPSG:4490")
    page.click("#import-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#import-message').classList.contains('ok')")
    assert page.is_hidden("#import-problems")
    assert [e for e in page.errors if "400" not in e] == []  # the refused preview's 400, nothing else


def test_a_mode_that_will_be_refused_is_not_offered_and_a_refusal_says_why(page, served, small_demo,
                                                                           tmp_path):
    """The preview counted the file's codes stored already: append is not offered for them (the
    page says why and which modes to choose, by their names); and when codes come to be stored
    between the preview and the import, the refusal says why right after its colon."""
    from layers.onboarding.imports import import_layer

    stored = tmp_path / "stored.geojson"
    stored.write_text(small_demo.layers["facilities"].iloc[:5].to_json(), encoding="utf-8")
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "facilities")
    page.set_input_files("#import-form input[name=file]", str(stored))
    page.wait_for_selector("#mode-warning:not([hidden])")
    warning = page.inner_text("#mode-warning")
    assert "5 codes of the file are stored in this layer already" in warning
    assert "“Update” or “Replace”" in warning and "--mode" not in warning
    assert page.is_disabled("#import-start")
    page.screenshot(path=str(served["folder"] / "layers-append-refused.png"), full_page=True)
    page.check("#import-form input[name=mode][value=update]")
    page.wait_for_function("() => !document.querySelector('#import-start').disabled")
    assert page.is_hidden("#mode-warning")

    fresh = small_demo.layers["facilities"].iloc[:3].copy()
    fresh["code"] = fresh["code"] + "X"
    path = tmp_path / "new.geojson"
    path.write_text(fresh.to_json(), encoding="utf-8")
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "facilities")
    page.set_input_files("#import-form input[name=file]", str(path))
    page.wait_for_function("() => !document.querySelector('#import-start').disabled")
    import_layer(served["engine"], "facilities", path, mode="append", actor="planner")  # meanwhile
    page.click("#import-start")
    page.wait_for_function("() => document.querySelector('#import-result').classList.contains('bad')",
                           timeout=30_000)
    said = page.inner_text("#import-result")
    assert said.startswith("The import was refused; nothing was written: 3 codes of the file are stored "
                           "in the layer facilities already"), said
    assert "--mode" not in said
    page.screenshot(path=str(served["folder"] / "layers-import-refused.png"), full_page=True)
    assert [e for e in page.errors if "400" not in e] == []


def test_export_options_in_chromium(page, served, small_demo):
    sign_in_page(page, served["base"], "viewer")
    page.goto(f"{served['base']}/layers")
    assert page.locator("#import-panel").count() == 0
    page.wait_for_selector("#export-form[data-ready]")
    street = small_demo.layers["streets"]["code"].iloc[0]
    page.click("tr[data-layer=units] .pick-export")
    page.select_option("#export-form select[name=format]", "geojson")
    assert page.is_disabled("#export-form select[name=encoding]")
    assert page.is_disabled("#export-form input[name=crs]")
    page.select_option("#export-form select[name=format]", "shp")
    page.select_option("#export-form select[name=encoding]", "gbk")
    page.fill("#export-form input[name=crs]", "EPSG:4490")
    page.select_option("#export-form select[name=street]", street)
    communities = page.eval_on_selector_all("#export-form select[name=community] option",
                                            "o => o.map(x => x.value)")
    assert all(c.startswith(street) for c in communities if c)
    with page.expect_download() as download:
        page.click("#export-form button[type=submit]")
    assert download.value.suggested_filename == f"units-{street}.zip"
    with zipfile.ZipFile(download.value.path()) as zf:
        assert zf.read("units.cpg") == b"936"
    assert "Exported" in page.inner_text("#export-message")
    # a refused export is said next to the form
    page.select_option("#export-form select[name=format]", "gpkg")
    page.fill("#export-form input[name=crs]", "EPSG:99999")
    page.click("#export-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#export-message').classList.contains('bad')")
    assert "export failed" in page.inner_text("#export-message")
    page.screenshot(path=str(served["folder"] / "layers-export.png"), full_page=True)
    assert [e for e in page.errors if "400" not in e] == []


def test_csv_rows_are_previewed_as_strict_json(site, small_demo):
    """NaN cells (empty numbers) become null, never a NaN literal."""
    client, headers = client_as(site, "planner")
    facilities = small_demo.layers["facilities"].iloc[:12]
    frame = pd.DataFrame(facilities.drop(columns="geometry"))
    frame["floor_area_m2"] = [None, 1.5] * 6
    frame["lon"], frame["lat"] = facilities.geometry.x, facilities.geometry.y
    answer = preview(client, headers, "facilities", frame.to_csv(index=False).encode(), "f.csv")
    p = strict(answer)
    assert p["rows"][0][p["columns"].index("floor_area_m2")] is None


def communities_by_name(demo, n: int = 3, columns=("SQMC", "SSJD")) -> tuple[bytes, str, list[str]]:
    """A communities file as a street office sends it: names and its street's name (SQMC, SSJD),
    no codes; the polygons of the demo's first street's communities under new names."""
    streets = demo.layers["streets"].set_index("code")
    street = streets.index[0]
    mine = demo.layers["communities"]
    mine = mine[mine["street_code"] == street].iloc[:n]
    names = [f"新建{k + 1}社区" for k in range(len(mine))]
    gdf = gpd.GeoDataFrame({columns[0]: names, columns[1]: [streets.loc[street, "name"]] * len(mine)},
                           geometry=list(mine.geometry.values), crs=4326)
    return gdf.to_json().encode(), street, names


def test_communities_by_name_import_from_the_page_as_from_the_command_line(site, engine, small_demo):
    """What ``flask import communities FILE --district D --map SQMC=name --map SSJD=street``
    accepts, the page accepts: names resolved into provisional codes under their street."""
    client, headers = client_as(site, "planner")
    data, street, names = communities_by_name(small_demo)
    district = street[:6]
    mapping = json.dumps({"SQMC": "name", "SSJD": "street"})
    p = strict(preview(client, headers, "communities", data, "社区.geojson", mapping=mapping,
                       district=district))
    assert p["ok"], p["problems"]
    assert p["provisional_count"] == len(names) and all(c.startswith(street) for c in p["provisional"])
    assert "street" in {f["name"] for f in p["fields"]}  # the street's name can be mapped on the page
    # a district that is not stored is refused with the command line's message
    wrong = strict(client.post("/api/layers/communities/preview", headers=headers, data={
        "upload": p["upload"], "mapping": mapping, "district": "999999"}))
    assert not wrong["ok"] and any("unknown district 999999" in x for x in wrong["problems"])
    queued = client.post("/api/layers/communities/import", headers=headers, json={
        "upload": p["upload"], "mode": "append", "mapping": {"SQMC": "name", "SSJD": "street"},
        "district": district})
    assert queued.status_code == 202
    assert run_one(engine)["status"] == "done"
    result = strict(client.get(queued.json["url"]))["result"]
    assert not result["refused"] and result["written"] == len(names), result
    stored = read_layer(engine, "communities").set_index("name").loc[names]
    assert stored["provisional"].all() and (stored["street_code"] == street).all()
    assert sorted(stored["code"]) == sorted(result["provisional"])


def test_communities_by_name_import_in_chromium(page, served, small_demo, tmp_path):
    """Columns the page maps by themselves (名称 name, 街道 its street's name): the district is
    filled in, the preview says provisional codes will be given, the import stores them."""
    data, street, names = communities_by_name(small_demo, 2, columns=("name", "街道"))
    path = tmp_path / "按名称社区.geojson"
    path.write_bytes(data)
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "communities")
    assert page.is_visible("#district-field")  # the only district, filled in
    assert page.input_value("#import-form input[name=district]") == street[:6]
    page.set_input_files("#import-form input[name=file]", str(path))
    page.wait_for_selector("#preview:not([hidden])")
    assert page.input_value("#mapping select[data-column=街道]") == "street"
    page.wait_for_function("() => document.querySelector('#import-message').classList.contains('ok')")
    assert "provisional" in page.inner_text("#preview-stored")
    page.click("#import-start")
    page.wait_for_function("() => document.querySelector('#import-result').classList.contains('ok')",
                           timeout=30_000)
    stored = read_layer(served["engine"], "communities").set_index("name").loc[names]
    assert stored["provisional"].all() and (stored["street_code"] == street).all()
    assert page.errors == []


def test_the_preview_names_fields_and_facility_kinds_and_the_table_names_commands(page, served, small_demo,
                                                                                  tmp_path):
    """The field mapping offers the layer's fields by their labels (the key only in the option's
    value and tooltip), a file's facility kinds read by their names, and a change a server command
    made is credited to it in words."""
    import re

    from geodata.audit import record

    with served["engine"].begin() as conn:
        record(conn, "demo-accounts", "grid:assign", layer="grid_cells")
    facilities = small_demo.layers["facilities"].iloc[:5]
    path = tmp_path / "fac.geojson"
    facilities.to_file(path, driver="GeoJSON")
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    change = page.inner_text("tr[data-layer=grid_cells] .change")
    assert "demo accounts setup" in change and "demo-accounts" not in change
    page.click("tr[data-layer=facilities] .pick-import")
    page.set_input_files("#import-form input[name=file]", str(path))
    page.wait_for_selector("#preview:not([hidden])")
    options = page.eval_on_selector_all("#mapping option", "os => os.map(o => o.textContent)")
    assert options and not [o for o in options if re.search(r"[a-z]+_[a-z]+", o)], options
    kinds = page.inner_text("#mapping tbody") + page.inner_text("#preview-rows tbody")
    assert "community service centre" in kinds or "community health centre" in kinds
    assert not re.search(r"\b(service|health)_(centre|station)\b|police_post|elderly_care", kinds)
    page.screenshot(path=str(served["folder"] / "layers-facilities.png"), full_page=True)
    assert page.errors == []


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_the_import_mapping_names_every_layer_and_field_in_the_readers_language(site, language):
    """The field mapping's choices: the catalogue's Chinese labels on a Chinese page, English words
    on an English one (a tester found 代码 * among the English page's choices)."""
    import re

    client, _ = client_as(site, "planner")
    html = client.get("/layers", headers={"Accept-Language": language}).get_data(as_text=True)
    config = json.loads(re.search(r'id="layers-config">(.*?)</script>', html, re.S)[1])
    labels = [layer["label"] for layer in config["layers"].values()] + [
        f["label"] for layer in config["layers"].values() for f in layer["fields"]]
    chinese = [label for label in labels if re.search(r"[\u4e00-\u9fff]", label)]
    if language == "en":
        assert not chinese and "community code" in labels and "_" not in "".join(labels)
    else:
        assert len(chinese) == len(labels)
