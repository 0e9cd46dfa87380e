"""Coverage gaps through the app on both databases: the report API and its JSON contract, the gap
layers and their exports, proposed facilities, where to build next, the standards table edited by
an administrator, roles, refusals, and the two commands."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pyogrio
import pytest
import shapely

from geodata.db import get_engine
from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in

REPORT_KEYS = {"reach", "missing", "facilities", "blind_spots", "cell_problems"}


@pytest.fixture
def site(db_url, small_demo):
    app, secrets = demo_site(db_url, small_demo)
    return app, secrets


def client_as(app, name: str):
    client = app.test_client()
    sign_in(client, name)
    token = csrf_token(client.get("/coverage").get_data(as_text=True)) if name != "supervisor" else None
    return client, {"X-CSRFToken": token} if token else {}


def test_report_layers_exports_proposals_and_sites(site, small_demo, tmp_path):
    app, _ = site
    planner, headers = client_as(app, "planner")
    answer = planner.get("/api/coverage/report")
    assert answer.status_code == 200
    report = answer.get_json()
    assert REPORT_KEYS <= set(report) and report["method"] == "roads"  # the demo has roads
    units = small_demo.layers["units"]
    assert report["households"] == int(units["households"].sum())
    for row in report["reach"]:
        assert set(row) >= {"kind", "radius_m", "method", "households", "households_covered", "by_street",
                            "by_community"}
        assert row["method"] == "roads"
    assert set(report["blind_spots"]) >= {"units", "households", "findings"}
    assert set(report["cell_problems"]) >= {"gaps", "overlaps", "households_in_no_cell",
                                            "households_in_two_cells", "findings"}
    for f in report["facilities"]:
        assert set(f) >= {"code", "kind", "floor_area_m2", "households_served", "problem", "lon", "lat"}
    straight = planner.get("/api/coverage/report?method=straight").get_json()
    assert all(r["method"] == "straight" for r in straight["reach"])
    kg = next(r for r in report["reach"] if r["kind"] == "kindergarten")
    kg_straight = next(r for r in straight["reach"] if r["kind"] == "kindergarten")
    assert kg["households_covered"] <= kg_straight["households_covered"]  # a walk is never shorter

    # one street: only its households, the same numbers as in the whole report
    street = sorted(kg["by_street"])[0]
    one = planner.get(f"/api/coverage/report?street={street}").get_json()
    assert one["households"] == int(units.loc[units["street_code"] == street, "households"].sum())
    assert next(r for r in one["reach"] if r["kind"] == "kindergarten")["households_covered"] == \
        kg["by_street"][street][1]

    # the map's layer of households out of reach adds up to the report
    layer = planner.get("/api/coverage/layers/uncovered?kind=kindergarten&radius=300")
    assert layer.status_code == 200 and layer.mimetype == "application/geo+json"
    feats = layer.get_json()["features"]
    assert sum(f["properties"]["uncovered"] for f in feats) == kg["households"] - kg["households_covered"]
    blind = planner.get("/api/coverage/layers/blind_spots").get_json()["features"]
    assert {f["properties"]["code"] for f in blind if f["properties"]["kind"] == "unit"} == \
        set(small_demo.facts["blind_spot_units"])
    reach = planner.get("/api/coverage/layers/reach?kind=service_station").get_json()
    assert reach["properties"]["method"] == "roads"
    assert reach["properties"]["title"] == "reach of the facilities"  # the reader's language alone
    chinese = planner.get("/api/coverage/layers/reach?kind=service_station",
                          headers={"Accept-Language": "zh-CN"})
    assert chinese.get_json()["properties"]["title"] == "设施服务范围"
    assert reach["features"][0]["geometry"]["type"] == "MultiLineString"

    # exports: shapefile zip, GeoPackage, CSV
    shp = planner.get("/api/coverage/layers/blind_spots?f=shp")
    assert shp.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(shp.data)).namelist()
    assert {"blind_spots.shp", "blind_spots.dbf", "blind_spots.cpg", "blind_spots.prj"} <= set(names)
    gpkg = planner.get("/api/coverage/layers/facility_problems?f=gpkg")
    path = tmp_path / "facility_problems.gpkg"
    path.write_bytes(gpkg.data)
    frame = pyogrio.read_dataframe(path)
    assert len(frame) == len(report["facilities"])
    csv = planner.get("/api/coverage/layers/cell_problems?f=csv").get_data(as_text=True)
    assert csv.startswith("\ufeffkind,codes,area_m2") and "gap" in csv

    # a proposed kindergarten in the middle of uncovered households: counted at once
    biggest = max(feats, key=lambda f: f["properties"]["uncovered"])
    centre = shapely.point_on_surface(shapely.geometry.shape(biggest["geometry"]))
    body = {"kind": "kindergarten", "sites": [{"lon": centre.x, "lat": centre.y}]}
    change = planner.post("/api/coverage/proposal", json=body, headers=headers).get_json()
    assert change["households_covered_before"] == kg["households_covered"]
    assert change["households_added"] >= biggest["properties"]["uncovered"] > 0
    assert change["households_covered_after"] == \
        change["households_covered_before"] + change["households_added"]
    assert biggest["properties"]["code"] in change["units_gained"]
    assert planner.post("/api/coverage/proposal", json=body).status_code == 400  # no CSRF token

    # where to build next: three sites, each adding what it says
    sites = planner.post("/api/coverage/sites", json={"kind": "kindergarten", "k": 3}, headers=headers)
    assert sites.status_code == 200 and sites.mimetype == "application/geo+json"
    collection = sites.get_json()
    props = collection["properties"]
    assert [f["properties"]["order"] for f in collection["features"]] == [1, 2, 3]
    added = [f["properties"]["households_added"] for f in collection["features"]]
    assert added == sorted(added, reverse=True) and sum(added) == props["households_added"]
    after = [f["properties"]["households_covered_after"] for f in collection["features"]]
    assert after[-1] == props["households_covered_after"] == kg["households_covered"] + sum(added)
    assert props["optimal"] and props["bound_households_added"] == props["households_added"]


def test_refusals_and_roles(site):
    app, secrets = site
    planner, headers = client_as(app, "planner")
    for url, status in [("/api/coverage/report?street=12", 400),
                        ("/api/coverage/report?street=420103099", 404),
                        ("/api/coverage/report?method=flying", 400), ("/api/coverage/layers/nothing", 404),
                        ("/api/coverage/layers/uncovered?kind=casino", 400),
                        ("/api/coverage/layers/uncovered?kind=kindergarten&radius=abc", 400),
                        ("/api/coverage/layers/uncovered?kind=kindergarten&radius=-5", 400),
                        ("/api/coverage/layers/uncovered?kind=kindergarten&radius=5000", 400),
                        ("/api/coverage/layers/missing?f=xlsx", 400)]:
        answer = planner.get(url)
        assert answer.status_code == status, url
        assert answer.mimetype == "application/problem+json" and answer.get_json()["detail"]
    for body, message in [({"kind": "kindergarten", "k": 0}, "k must be"),
                          ({"kind": "kindergarten", "k": "three"}, "k must be"),
                          ({"kind": "kindergarten", "k": 2.5}, "k must be"),
                          ({"kind": "casino", "k": 2}, "unknown facility kind"),
                          ({"k": 2}, "kind is required"),
                          ({"kind": "kindergarten", "k": 2, "street": "999999999"}, "no street")]:
        answer = planner.post("/api/coverage/sites", json=body, headers=headers)
        assert 400 <= answer.status_code < 500 and message in answer.get_json()["detail"], body
    for body, message in [({"kind": "kindergarten", "sites": []}, "sites"),
                          ({"kind": "kindergarten", "sites": [{"lon": "x", "lat": 1}]}, "lon and lat"),
                          ({"kind": "kindergarten", "sites": [{"lon": 500, "lat": 1}]}, "longitude"),
                          ({"kind": "casino", "sites": [{"lon": 114.3, "lat": 30.6}]},
                           "unknown facility kind")]:
        answer = planner.post("/api/coverage/proposal", json=body, headers=headers)
        assert answer.status_code == 400 and message in answer.get_json()["detail"], body
    viewer, _ = client_as(app, "viewer")
    assert viewer.get("/api/coverage/report").status_code == 200
    supervisor, _ = client_as(app, "supervisor")
    assert supervisor.get("/api/coverage/report").status_code == 403
    assert supervisor.get("/coverage").status_code == 403
    assert app.test_client().get("/api/coverage/report").status_code == 401
    token = {"Authorization": f"Bearer {secrets['token']}"}
    assert app.test_client().get("/api/coverage/report", headers=token).status_code == 200


def test_standards_table_edited_by_an_administrator(site):
    app, _ = site
    admin, headers = client_as(app, "admin")
    listed = admin.get("/api/admin/settings").get_json()["settings"]
    row = next(s for s in listed if s["key"] == "facility_standards")
    assert all(r["source"] for r in row["value"])
    table = row["value"]
    kg = next(r for r in table if r["kind"] == "kindergarten")
    kg["reach_m"] = 500
    table.append({**kg, "level": "10-minute", "reach_m": 800, "source": "本市 2026 年规定"})
    saved = admin.put("/api/admin/settings/facility_standards", json={"value": table}, headers=headers)
    assert saved.status_code == 200
    report = admin.get("/api/coverage/report?method=straight").get_json()
    radii = [r["radius_m"] for r in report["reach"] if r["kind"] == "kindergarten"]
    assert radii == [500, 800]
    covered = [r["households_covered"] for r in report["reach"] if r["kind"] == "kindergarten"]
    assert covered[0] <= covered[1]
    broken = [dict(r) for r in table]
    broken[0]["reach_m"] = "far"
    refused = admin.put("/api/admin/settings/facility_standards", json={"value": broken}, headers=headers)
    assert refused.status_code == 400 and "expected a number" in refused.get_json()["detail"]


def test_commands(site, small_demo, tmp_path):
    app, _ = site
    runner = app.test_cli_runner()
    out = tmp_path / "report.json"
    result = runner.invoke(args=["coverage", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert REPORT_KEYS <= set(report) and "households" in result.output
    for finding in report["blind_spots"]["findings"] + report["cell_problems"]["findings"]:
        assert {"lon", "lat"} <= set(finding)
    street = small_demo.layers["streets"]["code"].iloc[0]
    result = runner.invoke(args=["coverage", "--street", street, "--method", "straight", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text())["scope"]["street"] == street

    sites = tmp_path / "sites.geojson"
    result = runner.invoke(args=["site", "kindergarten", "3", "-o", str(sites)])
    assert result.exit_code == 0, result.output
    collection = json.loads(sites.read_text(encoding="utf-8"))
    assert [f["properties"]["order"] for f in collection["features"]] == [1, 2, 3]
    assert {"households_added", "households_covered_after"} <= set(collection["features"][0]["properties"])
    assert {"bound_households_added", "gap", "optimal"} <= set(collection["properties"])

    # a candidate-sites layer: only its points can be chosen
    units = small_demo.layers["units"]
    lived = units[units["households"] > 0].iloc[::37]
    points = shapely.point_on_surface(np.asarray(lived.geometry.values, dtype=object))
    candidates = tmp_path / "candidates.geojson"
    candidates.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": f"S{i}"}, "geometry": json.loads(shapely.to_geojson(p))}
        for i, p in enumerate(points)]}))
    result = runner.invoke(args=["site", "elderly_care", "2", "--candidates", str(candidates),
                                 "--solver", "greedy", "-o", str(sites)])
    assert result.exit_code == 0, result.output
    chosen = json.loads(sites.read_text())
    assert all(f["properties"]["code"].startswith("S") for f in chosen["features"])
    assert chosen["properties"]["households_added"] <= chosen["properties"]["bound_households_added"]

    for args, message in [(["site", "casino", "3"], "unknown facility kind"),
                          (["site", "kindergarten", "0"], "k must"),
                          (["site", "kindergarten", "x"], "k must"),
                          (["site", "kindergarten", "2", "--street", "123"], "9-digit"),
                          (["coverage", "--street", "420103099"], "no street")]:
        result = runner.invoke(args=[*args, "-o", str(tmp_path / "x.json")])
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_report_as_a_background_job(site, db_url):
    from layers.worker import run_one

    app, _ = site
    planner, headers = client_as(app, "planner")
    unknown = planner.post("/api/coverage/jobs", json={"street": "420103099"}, headers=headers)
    assert unknown.status_code == 404
    started = planner.post("/api/coverage/jobs", json={"method": "straight"}, headers=headers)
    assert started.status_code == 202
    job = started.get_json()["job"]
    assert planner.get(f"/api/coverage/jobs/{job}").get_json()["status"] == "queued"
    assert run_one(get_engine(db_url))["status"] == "done"  # what `flask worker` does
    answer = planner.get(f"/api/coverage/jobs/{job}").get_json()
    assert answer["status"] == "done" and REPORT_KEYS <= set(answer["report"])
    assert answer["report"] == planner.get("/api/coverage/report?method=straight").get_json()
    assert planner.get("/api/coverage/jobs/999999").status_code == 404
