"""What the "Trust" findings showed, each kept fixed, on SpatiaLite and PostGIS: the inputs
that were answered with a traceback (now a 4xx naming the problem, nothing written), jobs and
layers outside a supervisor's scope, photos that kept their GPS position or claimed 30,000 ×
30,000 pixels, a control character that broke the Open311 XML feed, and a setting that made
every upload fail."""

from __future__ import annotations

import io
from xml.etree import ElementTree

import pytest

from geodata.db import get_engine
from geodata.settings import get_value
from geodata.store import read_layer
from layers.grid.cells import cell_of_units
from tests.images import JPEG, LATITUDE, blank_png, decode, encode, picture, png_claiming, with_gps
from tests.test_access_matrix import matrix_site
from tests.test_fuzz import database
from tests.webhelpers import csrf_token, sign_in, snapshot
from webmap.auth import add_token

LEAVE_OUT = ("audit_log", "rate_limits")


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def site(request, tmp_path_factory, spatialite_template, small_demo):
    """The access matrix's district (accounts of each role, a plan, a supervisor's case) on
    each database, with photos kept in a folder of the test's own."""
    folder = tmp_path_factory.mktemp(f"trust-{request.param}")
    url = database(request, folder, spatialite_template)
    site = matrix_site(url, small_demo)
    app = site["app"]
    app.config.update(PHOTO_DIR=str(folder / "photos"), PROPAGATE_EXCEPTIONS=False)
    site["url"], site["photos"] = url, folder / "photos"
    site["clients"] = {}
    for role in ("admin", "planner", "viewer", "supervisor"):
        client = app.test_client()
        assert sign_in(client, role).status_code == 302
        headers = {"X-CSRFToken": csrf_token(client.get("/login").get_data(as_text=True))}
        site["clients"][role] = (client, headers)
    return site


def token(site, role: str, scope: str | None = None) -> dict:
    """The header of a token of ``role`` scoped to ``scope`` (one per role and scope)."""
    tokens = site.setdefault("tokens", {})
    if (role, scope) not in tokens:
        with site["app"].app_context():
            tokens[role, scope] = add_token(f"{role}-{scope or 'all'}", role, scope)
    return {"Authorization": f"Bearer {tokens[role, scope]}"}


# --- every one of these was a 500 (or a 503): now a 4xx naming the problem, nothing written -----

PLAN = "/api/plans/{plan_id}"
#: (method, URL, JSON body as sent, status, words the answer names)
SHAPES = [
    ("GET", "/api/collections/units/items?households=9223372036854775808", None, 400, "households"),
    ("GET", "/api/collections/units/items?households=-9223372036854775809", None, 400, "households"),
    ("GET", "/api/collections/incidents/items?datetime=NaN", None, 400, "datetime"),
    ("GET", "/api/collections/incidents/items?datetime=0000-01-01", None, 400, "datetime"),
    ("GET", "/api/collections/incidents/items?datetime=9999-12-31T23:59:59", None, 400, "1900-01-01"),
    ("GET", "/api/collections/incidents/items?datetime=10000-01-01", None, 400, "datetime"),
    ("GET", "/api/plans/9223372036854775808", None, 404, "9223372036854775808"),
    ("GET", "/api/jobs/18446744073709551616", None, 404, "18446744073709551616"),
    ("DELETE", "/api/plans/9223372036854775808", '{"version": 1}', 404, "nothing"),
    ("GET", "/api/incidents?to=9999-12-31", None, 400, "to"),
    ("GET", "/api/rates?to=9999-12-31T23:59:59", None, 400, "to"),
    ("GET", "/api/rates?to=9999-12-31", None, 400, "2199-12-31"),
    ("GET", "/api/incidents?bbox=NaN,NaN,NaN,NaN", None, 400, "bbox"),
    ("GET", "/open311/v2/requests.json?start_date=9999-12-31T23:59:59-14:00", None, 400, "start_date"),
    ("POST", PLAN + "/duplicate", '{"name": "\\ud800"}', 400, "surrogate"),
    ("POST", "/api/grid/moves", '{"units": ["\\ud800"], "to": "new"}', 400, "surrogate"),
    ("POST", "/api/incidents/{code}/actions", '{"action": [], "version": 1}', 400, "action"),
    ("POST", "/api/incidents/{code}/actions", '{"action": {}, "version": 1}', 400, "action"),
    ("POST", "/api/plans", '{"name": "min > max", "street": "{street}", "minimum": 3000, "maximum": 100}',
     400, "minimum 3000 is above maximum 100"),
    ("POST", "/api/plans", '{"name": "min > max", "minimum": 5000}', 400, "above maximum"),
    ("POST", "/api/plans", '{"name": "huge", "street": "{street}", "minimum": 9223372036854775807}',
     400, "minimum"),
    ("POST", "/api/grid", '{"community": "{scope}", "minimum": 9223372036854775807}', 400, "minimum"),
    ("POST", "/api/grid/assignments", '{"user": [], "cells": ["x"]}', 400, "user"),
    ("POST", "/api/grid/assignments", '{"user": [[]], "cells": ["x"]}', 400, "user"),
    ("POST", "/api/plans", '{"name": NaN}', 400, "NaN"),
    ("POST", "/api/plans", '{"name": "x", "seed": 1e999}', 400, "double"),
    ("POST", "/api/plans", '{"name": "x", "seed": 99999999999999999999}', 400, "64-bit"),
    ("POST", "/open311/v2/requests.json", "-1", 400, "JSON object"),
    ("POST", "/open311/v2/requests.json", '"x"', 400, "JSON object"),
]


@pytest.mark.parametrize(("method", "url", "body", "status", "named"), SHAPES)
def test_what_was_a_server_error_is_a_refusal_that_names_it(site, method, url, body, status, named):
    client, headers = site["clients"]["admin"]
    scope = site["special"]["GET /api/collections/<name>/items/<code>"]["code"]  # the supervisor's community
    fill = {"plan_id": site["values"]["plan_id"], "code": site["values"]["code"], "scope": scope,
            "street": scope[:9]}
    for key, value in fill.items():
        url = url.replace("{" + key + "}", str(value))
        body = body.replace("{" + key + "}", str(value)) if body else body
    before = snapshot(site["url"], leave_out=LEAVE_OUT)
    kwargs = {"headers": headers}
    if body is not None:
        kwargs.update(data=body.encode(), content_type="application/json")
    answer = client.open(url, method=method, **kwargs)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert named in answer.get_data(as_text=True)
    assert snapshot(site["url"], leave_out=LEAVE_OUT) == before


def test_pages_answer_a_token(site):
    """A page asked for with ``Authorization: Bearer`` (no session) is drawn for the token's role."""
    answer = site["app"].test_client().get("/plans", headers=token(site, "planner"))
    assert answer.status_code == 200
    assert "plans" in answer.get_data(as_text=True).lower()


# --- jobs and layers within a supervisor's scope ------------------------------------------------


def test_a_job_is_for_its_author_and_those_whose_scope_covers_it(site):
    street = site["special"]["GET /api/collections/<name>/items/<code>"]["code"][:9]
    streets = read_layer(get_engine(site["url"]), "streets")["code"].tolist()
    other_street = next(s for s in streets if s != street)
    planner, headers = site["clients"]["planner"]
    started = planner.post("/api/coverage/jobs", json={"street": street}, headers=headers)
    assert started.status_code == 202, started.get_data(as_text=True)
    job = started.json["job"]
    district = planner.post("/api/coverage/jobs", json={}, headers=headers).json["job"]
    client = site["app"].test_client()
    # the author and an administrator see the job and its parameters
    mine = planner.get(f"/api/jobs/{job}")
    assert mine.status_code == 200 and mine.json["params"]["street"] == street
    assert site["clients"]["admin"][0].get(f"/api/jobs/{job}").json["params"]["by"] == "planner"
    # a viewer of the whole district sees it, without who started it or where it ran
    seen = site["clients"]["viewer"][0].get(f"/api/jobs/{job}")
    assert seen.status_code == 200 and "params" not in seen.json and seen.json["status"] == "queued"
    # a viewer of that street too, of another street not; nor of the whole district's job
    assert client.get(f"/api/jobs/{job}", headers=token(site, "viewer", street)).status_code == 200
    for url in (f"/api/jobs/{job}", f"/api/coverage/jobs/{job}", f"/api/jobs/{district}",
                f"/api/coverage/jobs/{district}"):
        answer = client.get(url, headers=token(site, "viewer", other_street))
        assert answer.status_code == 404, url
    # supervisors read no report: not even their own street's, nor the district's, whatever scope
    supervisor = site["clients"]["supervisor"][0]
    for url in (f"/api/jobs/{job}", f"/api/jobs/{district}"):
        answer = supervisor.get(url)
        assert answer.status_code == 404 and answer.json["detail"] == f"no job {url.rsplit('/', 1)[1]}"
        assert client.get(url, headers=token(site, "supervisor", street)).status_code == 404
    # as for a job that does not exist
    assert supervisor.get("/api/jobs/999999").json["detail"] == "no job 999999"


def _items(client, collection: str, headers=None) -> set[str]:
    answer = client.get(f"/api/collections/{collection}/items?f=records&limit=10000", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {item["code"] for item in answer.json["items"]}


def test_a_cells_supervisor_sees_the_cells_units_and_facilities_only(site):
    engine = get_engine(site["url"])
    cells = read_layer(engine, "grid_cells")
    units = read_layer(engine, "units")
    facilities = read_layer(engine, "facilities")
    # a cell whose community holds facilities, and units outside the cell
    held = cell_of_units(units, cells)
    cell = next(c for c in cells["code"] if (facilities["community_code"] == c[:12]).any()
                and (held == c).sum() < (units["community_code"] == c[:12]).sum())
    client = site["app"].test_client()
    headers = token(site, "supervisor", cell)
    in_cell = _items(client, "units", headers)
    assert in_cell == set(held.index[held == cell])
    community = set(units["code"][units["community_code"] == cell[:12]])
    assert in_cell < community  # before: the whole community
    polygon = cells.geometry[cells["code"] == cell].iloc[0]
    standing = set(facilities["code"][facilities.geometry.covered_by(polygon)])
    assert _items(client, "facilities", headers) == standing
    assert standing <= set(facilities["code"][facilities["community_code"] == cell[:12]])
    # one unit outside the cell, asked for by its code: not found
    outside = sorted(community - in_cell)[0]
    assert client.get(f"/api/collections/units/items/{outside}", headers=headers).status_code == 404
    # the community's supervisor still sees the whole community
    assert _items(client, "units", token(site, "supervisor", cell[:12])) == community


# --- photos ---------------------------------------------------------------------------------------


def _upload(site, data: bytes, name: str = "scene.jpg"):
    client, headers = site["clients"]["supervisor"]
    return client.post(f"/api/incidents/{site['values']['code']}/photos", headers=headers,
                       data={"photo": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_a_photo_loses_its_gps_position_and_is_made_fit_for_a_phone(site):
    taken = with_gps(encode(picture(4000, 3000)), orientation=6)  # held upright: a quarter turn
    pixels, tags = decode(taken)
    assert tags["EXIF_GPSLatitude"] == "({}) ({}) ({})".format(*LATITUDE) and pixels.shape == (3, 3000, 4000)
    added = _upload(site, taken)
    assert added.status_code == 201, added.get_data(as_text=True)
    assert added.json["content_type"] == "image/jpeg"
    assert (added.json["width"], added.json["height"]) == (1536, 2048)
    client, _ = site["clients"]["supervisor"]
    served = client.get(added.json["url"])
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert b"Exif" not in served.data
    assert len(served.data) == added.json["size"]
    pixels, tags = decode(served.data)
    assert not any(key.startswith("EXIF_") for key in tags)
    assert pixels.shape == (3, 2048, 1536)
    # turned upright: the red band along the top of the sensor is along the right edge now
    assert pixels[0, :, -20:].mean() > 200 and pixels[0, :, :20].mean() < 60
    stored = [p.read_bytes() for p in site["photos"].iterdir()]
    assert served.data in stored and not any(b"Exif" in s for s in stored)


@pytest.mark.parametrize("data", [png_claiming(30_000, 30_000), blank_png(8_000, 6_000)],
                         ids=["header-claims-30000x30000", "complete-48-megapixels"])
def test_a_photo_of_too_many_pixels_is_refused_before_it_is_decoded(site, data):
    assert len(data) < 200_000  # small on disk
    before = snapshot(site["url"], leave_out=LEAVE_OUT)
    files = sorted(site["photos"].iterdir()) if site["photos"].exists() else []
    refused = _upload(site, data, "huge.png")
    assert refused.status_code == 400
    assert "at most 40 million pixels" in refused.json["detail"]
    assert snapshot(site["url"], leave_out=LEAVE_OUT) == before
    assert (sorted(site["photos"].iterdir()) if site["photos"].exists() else []) == files


def test_a_photo_that_does_not_decode_is_refused(site):
    for data in (b"\xff\xd8\xff\xe0" + b"\0" * 64, JPEG[: len(JPEG) // 3], b"GIF89a not taken"):
        answer = _upload(site, data)
        assert answer.status_code == 400
        assert answer.json["detail"].startswith(("the photo is damaged", "not a JPEG"))


# --- the Open311 feed stays well-formed --------------------------------------------------------


def test_control_characters_never_reach_the_open311_feed(site):
    client, headers = site["clients"]["supervisor"]
    engine = get_engine(site["url"])
    cells = read_layer(engine, "grid_cells", prefix={"code": site["special"][
        "GET /api/collections/<name>/items/<code>"]["code"]})
    here = cells.geometry.iloc[0].representative_point()
    report = client.post("/api/incidents", headers=headers, json={
        "lon": here.x, "lat": here.y, "category": "E01-01", "description": "垃圾\x01堆\x0b积\ttab"})
    assert report.status_code == 201, report.get_data(as_text=True)
    code = report.json["code"]
    assert report.json["description"] == "垃圾堆积\ttab"
    centre, centre_headers = site["clients"]["admin"]  # the command centre cancels (separation of duties)
    cancelled = centre.post(f"/api/incidents/{code}/actions", headers=centre_headers, json={
        "action": "cancel", "version": report.json["version"], "note": "重复\x1f上报"})
    assert cancelled.status_code == 200
    feed = client.get(f"/open311/v2/requests.xml?service_request_id={code}")
    assert feed.status_code == 200
    root = ElementTree.fromstring(feed.data)  # well-formed: it parses
    assert root.find("request/description").text == "垃圾堆积\ttab"
    assert root.find("request/status_notes").text == "重复上报"
    whole = client.get("/open311/v2/requests.xml")
    ElementTree.fromstring(whole.data)


# --- settings within their ranges ----------------------------------------------------------------


def test_a_setting_out_of_its_range_is_refused_naming_the_range(site):
    client, headers = site["clients"]["admin"]
    before = snapshot(site["url"], leave_out=LEAVE_OUT)
    # each named as the settings page names it (the setting, then the field or the entry)
    for key, value, named in [("photo_max_mb", 1e308,
                               "Largest photo of a case: 1e+308 is outside the range 1–50"),
                              ("photo_max_mb", 0.5, "Largest photo of a case: 0.5 is outside the range 1–50"),
                              ("duplicate_distance_m", -5, "outside the range 0–10,000"),
                              ("rate_targets", {"closed": 9, "closed_on_time": 0.7},
                               "Rate targets · Closure rate: 9 is outside the range 0–1"),
                              ("grid_households", [300, 10**9],
                               "Households per grid cell 2: 1,000,000,000 is outside")]:
        answer = client.put(f"/api/admin/settings/{key}", headers=headers, json={"value": value})
        assert answer.status_code == 400 and named in answer.json["detail"], (key, answer.json)
    infinite = client.put("/api/admin/settings/photo_max_mb", headers=headers, data='{"value": 1e999}',
                          content_type="application/json")
    assert infinite.status_code == 400
    assert snapshot(site["url"], leave_out=LEAVE_OUT) == before
    assert get_value(get_engine(site["url"]), "photo_max_mb") == 8.0
    # and a photo still goes in
    assert _upload(site, JPEG).status_code == 201
