"""Files that cannot be trusted (issue 20, items 5–7): every part read under a limit, GeoPackage
layers that are views, a GeoPackage of several layers, .cpg files that disagree with the text,
CSV exports that keep shared vertices shared, and exports older than the boundaries they would
undo — through ``flask import`` and the layers page, on both databases. After every refusal the
database is what it was and no upload is left behind."""

from __future__ import annotations

import io
import json
import sqlite3
import struct
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from sqlalchemy import select

from geodata import plan_rows
from geodata.exporter import export_layer
from geodata.models import UnitAdjacency
from geodata.revisions import current_revision
from geodata.store import read_layer
from layers.onboarding.imports import ImportRefused, import_layer
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from layers.worker import run_one
from tests import test_layers_page
from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in, sign_in_page, snapshot

#: The layers page served in Chromium, as tests/test_layers_page.py serves it.
served, page = test_layers_page.served, test_layers_page.page
#: Tables a refused upload may rightly touch: the job that ran it, the audit log, sign-in counts.
TOUCHED = ("jobs", "audit_log", "rate_limits")


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    """The demo stored, an app on it with a planner signed in, its upload folder and a CLI runner."""
    app = demo_site(db_url, small_demo, BASEMAP="none", UPLOAD_FOLDER=str(tmp_path / "uploads"))[0]
    client = app.test_client()
    assert sign_in(client, "planner").status_code == 302
    client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client.get("/layers").get_data(as_text=True))
    return {"app": app, "url": db_url, "engine": engine, "client": client, "uploads": tmp_path / "uploads",
            "cli": app.test_cli_runner()}


def cli(site, *args: str):
    return site["cli"].invoke(args=["import", *map(str, args)])


def preview(site, layer: str, path: Path, **form):
    body = {"file": (io.BytesIO(path.read_bytes()), path.name), **form}
    return site["client"].post(f"/api/layers/{layer}/preview", data=body, content_type="multipart/form-data")


def no_uploads(site) -> bool:
    return not site["uploads"].exists() or not any(site["uploads"].iterdir())


def refused_everywhere(site, layer: str, path: Path, *words: str, cli_args: tuple[str, ...] = (),
                       kept: bool = False) -> None:
    """``path`` refused by ``flask import`` (one line, non-zero exit) and by the page's preview (a
    4xx naming the problem), ``words`` in both; the database unchanged, no upload left (``kept``:
    the page keeps it for another choice, and forgets it when told)."""
    before = snapshot(site["url"], leave_out=TOUCHED)
    result = cli(site, layer, path, *cli_args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for word in words:
        assert word.lower() in result.output.lower(), (word, result.output)
    answer = preview(site, layer, path)
    assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)[:500]
    for word in words:
        assert word.lower() in answer.json["detail"].lower(), (word, answer.json["detail"])
    if kept:
        forgotten = site["client"].delete(f"/api/layers/uploads/{answer.json['upload']}")
        assert forgotten.status_code == 200
    assert snapshot(site["url"], leave_out=TOUCHED) == before
    assert no_uploads(site), list(site["uploads"].iterdir())


def exported_units(engine, tmp_path: Path, fmt: str = "shp", **kw) -> Path:
    out = tmp_path / f"units.{ {'shp': 'zip'}.get(fmt, fmt)}"
    export_layer(engine, "units", fmt, out, **kw)
    return out


def shapefile_parts(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {m.filename: zf.read(m) for m in zf.infolist()}


def zipped(parts: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


# --- sizes ----------------------------------------------------------------------------------------


def test_a_table_that_claims_gigabytes_is_refused_before_it_is_unpacked_or_read(site, tmp_path, monkeypatch):
    """A small zip whose .dbf header declares 3 GiB (as a sparse or mostly empty 3 GiB table
    compresses to a few MB), a sparse 3 GiB .dbf on disk, and a table honestly past a lowered
    limit: each refused naming the limit, before it is read; nothing stored, no upload left."""
    parts = shapefile_parts(exported_units(site["engine"], tmp_path))
    dbf = bytearray(parts["units.dbf"])
    width = struct.unpack_from("<H", dbf, 10)[0]
    struct.pack_into("<I", dbf, 4, 3 * 1024**3 // width)  # 3 GiB of records declared
    claims = zipped({**parts, "units.dbf": bytes(dbf)}, tmp_path / "claims.zip")
    assert claims.stat().st_size < 100_000
    started = time.monotonic()
    refused_everywhere(site, "units", claims, "over the limit of 512 MB", "GRIDPLAN_MAX_DBF_MB", "units.dbf")
    assert time.monotonic() - started < 20

    # a shapefile given as its parts, its table a sparse file of 3 GiB (no room on disk)
    folder = tmp_path / "sparse"
    folder.mkdir()
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    with open(folder / "units.dbf", "r+b") as f:
        f.seek(4)
        header = struct.unpack_from("<H", bytes(dbf), 8)[0]
        f.write(struct.pack("<I", (3 * 1024**3 - header) // width))
        f.truncate(3 * 1024**3)
    before = snapshot(site["url"], leave_out=TOUCHED)
    result = cli(site, "units", folder / "units.shp")
    assert result.exit_code == 1 and "GRIDPLAN_MAX_DBF_MB" in result.output, result.output
    assert "MemoryError" not in result.output
    assert snapshot(site["url"], leave_out=TOUCHED) == before

    # within its header's word but past a lowered limit: the entry's own size is checked first
    monkeypatch.setenv("GRIDPLAN_MAX_DBF_MB", "1")
    padded = zipped({**parts, "units.dbf": parts["units.dbf"] + b" " * (2 * 1024**2)},
                    tmp_path / "padded.zip")
    refused_everywhere(site, "units", padded, "over the limit of 1 MB", "GRIDPLAN_MAX_DBF_MB")
    monkeypatch.setenv("GRIDPLAN_MAX_CSV_MB", "1")
    csv = exported_units(site["engine"], tmp_path, "csv")
    csv.write_bytes(csv.read_bytes() + b"\n" * (2 * 1024**2))
    refused_everywhere(site, "units", csv, "GRIDPLAN_MAX_CSV_MB")
    refused_everywhere(site, "units", zipped({"units.csv": csv.read_bytes()}, tmp_path / "csv.zip"),
                       "GRIDPLAN_MAX_CSV_MB")


def test_a_value_table_past_its_limit_is_refused_before_it_is_read(tmp_path):
    from layers.onboarding.imports import parse_values

    table = tmp_path / "kinds.csv"
    table.write_bytes("幼儿园,kindergarten\n".encode())
    assert parse_values([f"kind={table}"]) == {"kind": {"幼儿园": "kindergarten"}}
    with open(table, "r+b") as f:
        f.truncate(60 * 1024**2)  # sparse: no room on disk, 60 MB to read
    with pytest.raises(ImportRefused, match="kinds.csv is 60 MB, over the limit of 50 MB"):
        parse_values([f"kind={table}"])


# --- GeoPackages ------------------------------------------------------------------------------------


def gpkg_with_view(engine, tmp_path: Path, name: str, view: str, *, keep_table: bool) -> Path:
    """A GeoPackage of the stored units whose layer ``v`` is the view ``view`` (with the table
    still listed as a layer, or not)."""
    path = tmp_path / name
    export_layer(engine, "units", "gpkg", path)
    conn = sqlite3.connect(path)
    conn.execute(view)
    conn.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) "
                 "VALUES ('v', 'features', 'v', 4326)")
    conn.execute("INSERT INTO gpkg_geometry_columns VALUES ('v', 'geom', 'MULTIPOLYGON', 4326, 0, 0)")
    if not keep_table:
        for table in ("gpkg_contents", "gpkg_geometry_columns"):
            conn.execute(f"DELETE FROM {table} WHERE table_name = 'units'")
    conn.commit()
    conn.close()
    return path


RECURSIVE = ("CREATE VIEW v AS WITH RECURSIVE r(fid, n) AS (SELECT 1, 0 UNION ALL SELECT fid + 1, n + 1 "
             "FROM r) SELECT r.fid AS fid, u.geom AS geom, u.code AS code FROM r JOIN units u ON u.fid = 1")


def test_a_geopackage_layer_that_is_a_view_is_refused_before_gdal_reads_it(site, tmp_path):
    plain = gpkg_with_view(site["engine"], tmp_path, "view.gpkg", "CREATE VIEW v AS SELECT * FROM units",
                           keep_table=False)
    refused_everywhere(site, "units", plain, "layer 'v' is a view")
    started = time.monotonic()
    endless = gpkg_with_view(site["engine"], tmp_path, "recursive.gpkg", RECURSIVE, keep_table=False)
    refused_everywhere(site, "units", endless, "layer 'v' is a view")
    assert time.monotonic() - started < 30  # GDAL would never have come back
    # the GeoPackage's own table of contents a view: refused, not queried
    toc = tmp_path / "toc.gpkg"
    export_layer(site["engine"], "units", "gpkg", toc)
    conn = sqlite3.connect(toc)
    conn.execute("ALTER TABLE gpkg_contents RENAME TO contents_table")
    conn.execute("CREATE VIEW gpkg_contents AS WITH RECURSIVE r(n) AS "
                 "(SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                 "SELECT c.* FROM r, contents_table c")
    conn.commit()
    conn.close()
    refused_everywhere(site, "units", toc, "gpkg_contents is a view")


def test_a_geopackage_of_several_layers_needs_a_layer_chosen(site, small_demo, tmp_path):
    """Without --layer, refused listing the layers (never the first silently); with it, that
    layer is imported — on the command line and on the page (refusal with the layers, then a
    preview and an import of the one chosen)."""
    engine = site["engine"]
    path = tmp_path / "two.gpkg"
    units = read_layer(engine, "units")
    street = units[units["street_code"] == units["street_code"].iloc[0]].iloc[:5].copy()
    street["households"] = street["households"] + 7
    other = street.copy()
    other["households"] = other["households"] + 100
    pyogrio.write_dataframe(other, path, layer="old_units", driver="GPKG")
    pyogrio.write_dataframe(street, path, layer="units", driver="GPKG", append=True)
    refused_everywhere(site, "units", path, "holds 2 layers", "old_units", "units",
                       cli_args=("--mode", "update"), kept=True)
    result = cli(site, "units", path, "--mode", "update", "--layer", "nothing")
    assert result.exit_code == 1 and "has no layer 'nothing'" in result.output, result.output
    result = cli(site, "units", path, "--mode", "update", "--layer", "units")
    assert result.exit_code == 0, result.output
    stored = read_layer(engine, "units").set_index("code")
    assert (stored.loc[street["code"], "households"].to_numpy() == street["households"].to_numpy()).all()

    # the page: refused with the layers and the upload kept, then previewed and imported with one
    answer = preview(site, "units", path, mode="update")
    assert answer.status_code == 400 and answer.json["layers"] == ["old_units", "units"], answer.json
    upload = answer.json["upload"]
    client = site["client"]
    again = client.post("/api/layers/units/preview", data={"upload": upload, "mode": "update",
                                                          "source_layer": "old_units"},
                        content_type="multipart/form-data")
    assert again.status_code == 200 and again.json["ok"], again.json
    assert again.json["features"] == 5 and again.json["source_layer"] == "old_units"
    queued = client.post("/api/layers/units/import", json={"upload": upload, "mode": "update",
                                                          "source_layer": "old_units"})
    assert queued.status_code == 202, queued.get_data(as_text=True)
    job = run_one(engine)
    assert job["status"] == "done" and not job["result"]["refused"], job
    stored = read_layer(engine, "units").set_index("code")
    assert (stored.loc[other["code"], "households"].to_numpy() == other["households"].to_numpy()).all()
    assert no_uploads(site)


# --- encodings --------------------------------------------------------------------------------------


def test_a_cpg_that_disagrees_with_the_text_is_refused_naming_both(site, tmp_path):
    """Communities (their names are Chinese): a .cpg saying GBK over UTF-8 text would read as
    mojibake, one saying UTF-8 over GBK text would not read at all; both refused naming the
    mismatch (a 400 on the page, not a 500)."""
    engine = site["engine"]

    def export(folder: str, **kw) -> dict[str, bytes]:
        out = tmp_path / folder / "communities.zip"
        export_layer(engine, "communities", "shp", out, **kw)
        return shapefile_parts(out)

    utf8 = export("utf8")
    table = utf8["communities.dbf"]
    assert any(b >= 0x80 for b in table[struct.unpack_from("<H", table, 8)[0]:])  # Chinese names
    gbk_over_utf8 = zipped({**utf8, "communities.cpg": b"GBK"}, tmp_path / "gbk_over_utf8.zip")
    refused_everywhere(site, "communities", gbk_over_utf8, "encoding does not match",
                       "communities.cpg says GBK", "is UTF-8")
    gbk = export("gbk", encoding="gbk")
    assert gbk["communities.cpg"] == b"936"
    utf8_over_gbk = zipped({**gbk, "communities.cpg": b"UTF-8"}, tmp_path / "utf8_over_gbk.zip")
    refused_everywhere(site, "communities", utf8_over_gbk, "encoding does not match",
                       "communities.cpg says UTF-8", "reads as GBK")
    # with the right .cpg (or none) each is read as it is, names intact
    names = set(read_layer(engine, "communities")["name"])
    for parts in (gbk, {k: v for k, v in utf8.items() if k != "communities.cpg"},
                  {**utf8, "communities.cpg": b"65001"}):
        result = cli(site, "communities", zipped(parts, tmp_path / "right.zip"), "--mode", "update")
        assert result.exit_code == 0, result.output
        assert set(read_layer(engine, "communities")["name"]) == names


# --- exports that come back ------------------------------------------------------------------------


def adjacency(engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return set(conn.execute(select(UnitAdjacency.unit_a, UnitAdjacency.unit_b)).all())


def test_a_csv_export_imported_back_keeps_every_neighbour(site, tmp_path):
    """One community's units exported and imported back with update: their vertices must stay
    those of the units around them that were not exported (rounded, a shared edge becomes two
    edges a hair apart, and the unit's neighbours are lost). GeoJSON as well."""
    engine = site["engine"]
    before = adjacency(engine)
    units = read_layer(engine, "units")
    community = units["community_code"].value_counts().index[0]
    mine = set(units.loc[units["community_code"] == community, "code"])
    across = {p for p in before if (p[0] in mine) != (p[1] in mine)}
    assert len(across) >= 5  # pairs across the export's edge
    for step, fmt in enumerate(("csv", "geojson"), start=1):
        out = tmp_path / f"part.{fmt}"
        export_layer(engine, "units", fmt, out, community=community)
        more_households(out, fmt)
        report = import_layer(engine, "units", out, mode="update")
        assert report.written == len(mine)  # every row rewritten, its geometry read from the file
        assert adjacency(engine) == before, (fmt, len(before - adjacency(engine)))
        assert read_layer(engine, "units").set_index("code").loc[sorted(mine), "households"].tolist() == \
            (units.set_index("code").loc[sorted(mine), "households"] + step).tolist()


def more_households(path: Path, fmt: str) -> None:
    """One more household in every row of an exported file: each row then differs from the
    stored one, so an update writes it, geometry and all (an unchanged row is not written)."""
    if fmt == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        frame["households"] = (frame["households"].astype(int) + 1).astype(str)
        frame.to_csv(path, index=False, encoding="utf-8-sig")
    else:
        document = json.loads(path.read_text(encoding="utf-8"))
        for feature in document["features"]:
            feature["properties"]["households"] += 1
        path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def adopt(memory: PlanMemory, plan_id: int) -> dict:
    """Submit, approve and adopt ``plan_id`` as its planner and an admin would."""
    v = plan_rows.get_plan(memory.engine, plan_id)["version"]
    v = plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner",
                                    reason="测试")["version"]
    v = plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin", reason="测试")["version"]
    return plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin", reason="测试")


def adopt_a_moving_plan(engine, demo) -> str:
    """Adopt a plan of the first street that moves a few units at community borders into their
    neighbouring community (every community kept, as in a small redrawing); that street."""
    memory = PlanMemory(engine)
    street = sorted(demo.layers["streets"]["code"])[0]
    revision = memory.revision()
    graph = memory.units(street, revision).graph
    assignment = pd.Series(graph.current, index=graph.codes.astype(str))
    left = assignment.value_counts().to_dict()
    moved = 0
    for i, code in enumerate(graph.codes.astype(str)):
        mine = assignment[code]
        other = next((assignment.iloc[j] for j in graph.neighbours(i) if assignment.iloc[j] != mine), None)
        if other is not None and left[mine] > 3 and moved < 12:
            assignment[code] = other
            left[mine] -= 1
            left[other] += 1
            moved += 1
    assert moved
    plan_id = plan_rows.create_plan(engine, f"move {street}", "planner", assignment, base_revision=revision,
                                    district_code=street[:6], streets=[street])
    adopt(memory, plan_id)
    return street


def communities_now(engine) -> pd.Series:
    """Each unit's community (unit code → community code, "" for none), in code order."""
    return read_layer(engine, "units").set_index("code")["community_code"].fillna("").astype(str).sort_index()


@pytest.mark.parametrize("fmt", ["shp", "gpkg", "geojson", "csv"])
def test_an_export_made_before_an_adoption_cannot_undo_it(site, small_demo, tmp_path, fmt):
    """Exported, then a plan adopted, then the export imported with update: refused listing the
    communities it would change (names beside codes) unless forced; a fresh export and a file
    without a revision (another department's) are imported as before."""
    engine = site["engine"]
    old = exported_units(engine, tmp_path / "old", fmt)
    revision = current_revision(engine)
    before_adoption = communities_now(engine)
    street = adopt_a_moving_plan(engine, small_demo)
    adopted = communities_now(engine)
    assert not adopted.equals(before_adoption)
    names = read_layer(engine, "communities").set_index("code")["name"]
    before = snapshot(site["url"], leave_out=TOUCHED)
    with pytest.raises(ImportRefused, match=f"exported at boundary revision {revision}") as refused:
        import_layer(engine, "units", old, mode="update")
    changed = refused.value.communities
    assert changed and all(c[:9] == street for c in changed)
    shown = str(refused.value)
    assert all(f"{c} {names[c]}" in shown for c in changed[:10] if c in names.index)
    assert "adopt" in shown and "--force" in shown
    result = cli(site, "units", old, "--mode", "update")
    assert result.exit_code == 1, result.output
    assert f"exported at boundary revision {revision}" in result.output
    assert snapshot(site["url"], leave_out=TOUCHED) == before
    # the page: the preview names it, the import without the box is refused, with it accepted
    answer = preview(site, "units", old, mode="update")
    assert answer.status_code == 200 and answer.json["stale"], answer.json
    assert answer.json["revision"] == revision and answer.json["stale"]["communities"] == changed
    upload = answer.json["upload"]
    queued = site["client"].post("/api/layers/units/import", json={"upload": upload, "mode": "update"})
    job = run_one(engine)
    assert job["result"]["refused"] and "exported at boundary revision" in job["result"]["problems"][0]
    assert snapshot(site["url"], leave_out=TOUCHED) == before
    assert no_uploads(site)
    # a fresh export goes through: nothing it holds is older than the boundaries
    fresh = exported_units(engine, tmp_path / "fresh", fmt)
    assert not import_layer(engine, "units", fresh, mode="update").written  # the same boundaries
    assert communities_now(engine).equals(adopted)
    # forced (the page's box), the old file undoes the adoption as asked
    answer = preview(site, "units", old, mode="update")
    queued = site["client"].post("/api/layers/units/import", json={"upload": answer.json["upload"],
                                                                  "mode": "update", "force": True})
    assert queued.status_code == 202
    job = run_one(engine)
    assert job["status"] == "done" and not job["result"]["refused"], job
    assert communities_now(engine).equals(before_adoption)
    assert no_uploads(site)


def test_a_file_without_a_revision_and_the_force_flag_keep_todays_behaviour(site, small_demo, tmp_path):
    engine = site["engine"]
    old = exported_units(engine, tmp_path / "old", "gpkg")
    foreign = tmp_path / "foreign.gpkg"  # the same rows, as another department's system writes them
    pyogrio.write_dataframe(gpd.read_file(old), foreign, layer="units", driver="GPKG")
    adopt_a_moving_plan(engine, small_demo)
    assert import_layer(engine, "units", foreign, mode="update").written > 0
    adopt_a_moving_plan(engine, small_demo)
    result = cli(site, "units", old, "--mode", "update", "--force")
    assert result.exit_code == 0, result.output


# --- the page in Chromium ---------------------------------------------------------------------------


def test_the_page_offers_the_layers_and_asks_before_undoing_an_adoption(page, served, small_demo,
                                                                       tmp_path):
    """A GeoPackage of two layers: the page lists them, and the one chosen is previewed. Units
    exported before an adoption: the preview says what they would undo, and Import stays off until
    "Import anyway" is ticked."""
    engine = served["engine"]
    two = tmp_path / "两个图层.gpkg"
    units = read_layer(engine, "units").iloc[:4]
    pyogrio.write_dataframe(units, two, layer="a_units", driver="GPKG")
    pyogrio.write_dataframe(units.iloc[:3], two, layer="b_units", driver="GPKG", append=True)
    sign_in_page(page, served["base"], "planner")
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "units")
    assert page.is_hidden("#source-layer-field")
    page.check("#import-form input[name=mode][value=update]")
    page.set_input_files("#import-form input[name=file]", str(two))
    page.wait_for_selector("#source-layer-field:not([hidden])")
    # a choice to make, not an error: no red refusal before the planner has chosen
    assert "several layers: choose the one to import" in page.inner_text("#import-message")
    assert page.inner_text("#import-problems").strip() == ""
    assert page.locator("#source-layer-field option").all_inner_texts()[1:] == ["a_units", "b_units"]
    page.select_option("#import-form select[name=source_layer]", "b_units")
    page.wait_for_function("() => document.querySelector('#import-message').classList.contains('ok')")
    assert "3" in page.inner_text("#preview-summary")

    old = exported_units(engine, tmp_path / "old", "gpkg")
    adopt_a_moving_plan(engine, small_demo)
    page.goto(f"{served['base']}/layers")
    page.select_option("#import-form select[name=layer]", "units")
    page.check("#import-form input[name=mode][value=update]")
    page.set_input_files("#import-form input[name=file]", str(old))
    page.wait_for_selector("#stale-warning:not([hidden])")
    assert page.is_hidden("#source-layer-field")  # a GeoPackage of one layer: nothing to choose
    assert "exported at boundary revision" in page.inner_text("#stale-warning")
    assert page.is_disabled("#import-start")
    page.check("#force-confirm input")
    assert page.is_enabled("#import-start")
    page.click("#import-start")
    page.wait_for_function("() => document.querySelector('#import-result').classList.contains('ok')",
                           timeout=60_000)
    page.screenshot(path=str(served["folder"] / "layers-stale-forced.png"), full_page=True)
    assert [e for e in page.errors if "400" not in e] == []


def test_a_zip_with_a_file_and_a_folder_of_one_name_is_refused(site, tmp_path):
    """``a`` then ``a/units.shp``: both cannot be unpacked — refused by name, not a 500."""
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a", b"hello")
        zf.writestr("a/units.shp", b"junk")
    before = snapshot(site["url"], leave_out=TOUCHED)
    result = cli(site, "units", archive)
    assert result.exit_code == 1 and "clash.zip is damaged" in result.output, result.output
    answer = preview(site, "units", archive)
    assert answer.status_code == 400 and "clash.zip is damaged" in answer.json["detail"], answer.json
    assert snapshot(site["url"], leave_out=TOUCHED) == before
    assert no_uploads(site)
