"""Sign-in, roles, scopes and the layer API, through Flask's test client on both databases."""

from __future__ import annotations

import gzip
import json
import re

import pandas as pd
import pytest
import shapely

from tests.conftest import demo_site, make_app
from tests.webhelpers import sign_in


@pytest.fixture
def site(db_url, engine, small_demo):
    app, secrets = demo_site(db_url, small_demo, BASEMAP="none")
    return app, secrets


def client_as(app, role: str):
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client


def test_nobody_signed_in_is_sent_to_sign_in_or_refused(site):
    app, _ = site
    client = app.test_client()
    response = client.get("/map")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    response = client.get("/api/collections")
    assert response.status_code == 401 and response.json["code"] == "Unauthorized"


def test_sign_in_checks_the_password_and_the_csrf_token(site):
    app, _ = site
    client = app.test_client()
    assert sign_in(client, "planner", "wrong password").status_code == 401
    assert client.post("/login", data={"name": "planner", "password": "correct horse 42"}).status_code == 400
    response = sign_in(client, "planner")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/map").status_code == 200
    with client.session_transaction() as session:
        assert session.permanent  # expires after PERMANENT_SESSION_LIFETIME
    assert client.post("/logout").status_code == 400  # no CSRF token: refused
    page = client.get("/map").get_data(as_text=True)
    from tests.webhelpers import csrf_token

    assert client.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert client.get("/map").status_code == 302


def test_every_page_checks_the_role(site):
    app, _ = site
    assert client_as(app, "viewer").get("/map").status_code == 200
    assert client_as(app, "viewer").get("/supervisor").status_code == 403
    assert client_as(app, "supervisor").get("/map").status_code == 403
    assert client_as(app, "supervisor").get("/supervisor").status_code == 200
    assert client_as(app, "supervisor").get("/api/search?q=社区").status_code == 403
    assert client_as(app, "admin").get("/supervisor").status_code == 200


def test_a_supervisor_reads_exactly_their_scope(site, small_demo):
    app, secrets = site
    scope = secrets["scope"]
    client = client_as(app, "supervisor")
    cells = client.get("/api/collections/grid_cells/items").json
    expected_cells = small_demo.layers["grid_cells"]["code"].str.startswith(scope).sum()
    assert cells["numberMatched"] == expected_cells > 0
    assert all(f["id"].startswith(scope) for f in cells["features"])
    incidents = client.get("/api/collections/incidents/items?limit=10000").json
    expected = small_demo.layers["incidents"]["grid_code"].str.startswith(scope).sum()
    assert incidents["numberMatched"] == expected
    assert all(f["properties"]["grid_code"].startswith(scope) for f in incidents["features"])
    assert client.get("/api/collections/streets/items").status_code == 403
    names = {c["id"] for c in client.get("/api/collections").json["collections"]}
    assert "streets" not in names and "incidents" in names
    elsewhere = small_demo.layers["incidents"].loc[
        ~small_demo.layers["incidents"]["grid_code"].str.startswith(scope), "code"].iloc[0]
    assert client.get(f"/api/collections/incidents/items/{elsewhere}").status_code == 404
    assert client.get(f"/api/incidents/{elsewhere}/history").status_code == 404
    mine = incidents["features"][0]["id"]
    history = client.get(f"/api/incidents/{mine}/history").json
    assert history["steps"][0]["step"] == "reported"


def test_api_tokens(site):
    app, secrets = site
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    assert client.get("/api/collections", headers=auth).status_code == 200
    assert client.get("/api/collections", headers={"Authorization": "Bearer nope"}).status_code == 401
    scoped = {"Authorization": f"Bearer {secrets['supervisor_token']}"}
    cells = client.get("/api/collections/grid_cells/items", headers=scoped).json
    assert all(f["id"].startswith(secrets["scope"]) for f in cells["features"])


def test_items_paging_bbox_and_filters(site, small_demo):
    app, secrets = site
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    units = small_demo.layers["units"]
    first = client.get("/api/collections/units/items?limit=100", headers=auth).json
    assert first["numberMatched"] == len(units) and first["numberReturned"] == 100
    links = {link["rel"]: link["href"] for link in first["links"]}
    assert "prev" not in links and "offset=100" in links["next"]
    second = client.get(links["next"].split("localhost")[1], headers=auth).json
    assert {f["id"] for f in second["features"]}.isdisjoint({f["id"] for f in first["features"]})
    assert "prev" in {link["rel"] for link in second["links"]}

    minx, miny, maxx, maxy = units.total_bounds
    box = (minx, miny, (minx + maxx) / 2, (miny + maxy) / 2)
    found = client.get("/api/collections/units/items?limit=10000&bbox=" + ",".join(map(str, box)),
                       headers=auth).json
    expected = units[shapely.intersects(shapely.envelope(units.geometry.values), shapely.box(*box))]
    assert {f["id"] for f in found["features"]} == set(expected["code"])

    street = units["street_code"].iloc[0]
    filtered = client.get(f"/api/collections/units/items?limit=10000&street_code={street}", headers=auth).json
    assert filtered["numberMatched"] == (units["street_code"] == street).sum()
    closed = client.get("/api/collections/incidents/items?status=closed&limit=1", headers=auth).json
    assert closed["numberMatched"] == (small_demo.layers["incidents"]["status"] == "closed").sum()
    reported = small_demo.layers["incidents"]["reported_at"]
    window = client.get("/api/collections/incidents/items?limit=1&datetime=2026-06-01/2026-06-30T23:59:59",
                        headers=auth).json
    assert window["numberMatched"] == reported.between(pd.Timestamp("2026-06-01"),
                                                       pd.Timestamp("2026-06-30 23:59:59")).sum()


@pytest.mark.parametrize("query, message", [
    ("bbox=1,2,3", "four numbers"), ("bbox=a,b,c,d", "not four numbers"),
    ("bbox=10,10,5,5", "min ≤ max"), ("limit=0", "limit must be between"),
    ("limit=lots", "not a whole number"), ("offset=-1", "offset must be between"),
    ("colour=red", "unknown parameter 'colour'"), ("f=kml", "use geojson, json, records or csv"),
    ("households=many", "not a number"), ("datetime=2026-01-01", "units has no time to filter on"),
])
def test_malformed_parameters_get_a_400_naming_the_problem(site, query, message):
    app, secrets = site
    response = app.test_client().get(f"/api/collections/units/items?{query}",
                                     headers={"Authorization": f"Bearer {secrets['token']}"})
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert message in response.json["detail"] and response.json["code"].startswith("InvalidParameter")


def test_malformed_time_interval(site):
    app, secrets = site
    response = app.test_client().get("/api/collections/incidents/items?datetime=yesterday",
                                     headers={"Authorization": f"Bearer {secrets['token']}"})
    assert response.status_code == 400 and "not RFC 3339" in response.json["detail"]


def test_formats_gzip_etag_and_single_items(site, small_demo):
    app, secrets = site
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    as_json = client.get("/api/collections/facilities/items?f=json&limit=5", headers=auth)
    # f=json is GeoJSON, as other OGC API Features servers answer it; the bare list is f=records
    assert as_json.json["type"] == "FeatureCollection" and len(as_json.json["features"]) == 5
    records = client.get("/api/collections/facilities/items?f=records&limit=5", headers=auth)
    assert records.content_type == "application/json" and len(records.json["items"]) == 5
    assert [f["properties"] for f in as_json.json["features"]] == records.json["items"]
    as_csv = client.get("/api/collections/facilities/items?f=csv&limit=5", headers=auth)
    lines = as_csv.get_data().decode("utf-8-sig").splitlines()
    assert lines[0].startswith("code,kind,name") and lines[0].endswith(",wkt") and len(lines) == 6

    zipped = client.get("/api/collections/communities/items", headers=auth | {"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    body = json.loads(gzip.decompress(zipped.get_data()))
    assert body["type"] == "FeatureCollection"
    assert body["numberMatched"] == len(small_demo.layers["communities"])
    again = client.get("/api/collections/communities/items",
                       headers=auth | {"If-None-Match": zipped.headers["ETag"].strip('"')})
    assert again.status_code == 304

    code = small_demo.layers["communities"]["code"].iloc[0]
    one = client.get(f"/api/collections/communities/items/{code}", headers=auth).json
    assert one["id"] == code and one["geometry"]["type"] == "MultiPolygon"
    assert client.get("/api/collections/communities/items/000", headers=auth).status_code == 404
    assert client.get("/api/collections/parcels/items", headers=auth).status_code == 404


def test_communities_carry_their_numbers(site, small_demo):
    app, secrets = site
    body = app.test_client().get("/api/collections/communities/items",
                                 headers={"Authorization": f"Bearer {secrets['token']}"}).json
    sums = small_demo.layers["units"].groupby("community_code")["households"].sum()
    for feature in body["features"]:
        p = feature["properties"]
        assert p["households"] == sums[p["code"]]
        assert p["bounds_status"] == ("below" if p["households"] < 1000 else
                                      "above" if p["households"] > 3000 else "within")
        assert p["area_m2"] > 0
    blind = app.test_client().get("/api/collections/blind_spots/items",
                                  headers={"Authorization": f"Bearer {secrets['token']}"}).json
    units = small_demo.layers["units"]
    assert blind["numberMatched"] == (units["community_code"].isna() & (units["households"] > 0)).sum() > 0


def test_simplified_for_the_zoom_without_slivers(site, small_demo):
    app, secrets = site
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    client = app.test_client()
    full = client.get("/api/collections/communities/items", headers=auth).json
    coarse = client.get("/api/collections/communities/items?zoom=12", headers=auth).json
    vertices = lambda body: sum(shapely.get_num_coordinates(shapely.geometry.shape(f["geometry"]))
                                for f in body["features"])
    assert vertices(coarse) < vertices(full) * 0.7
    geoms = [shapely.geometry.shape(f["geometry"]) for f in coarse["features"]]
    assert shapely.coverage_is_valid(geoms)  # neighbours simplified together: no gaps, no overlaps
    assert len(coarse["features"]) == len(small_demo.layers["communities"])


def test_page_weight_does_not_grow_with_the_data(site):
    app, _ = site
    page = client_as(app, "planner").get("/map").get_data(as_text=True)
    assert len(page.encode()) < 500_000
    assert '"coordinates"' not in page and "FeatureCollection" not in page
    # Every script, style sheet and image the page loads is served by gridplan itself: a machine
    # without the internet shows the same map.  (Not "cdn" anywhere: a random token may hold it.)
    loaded = re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page)
    assert loaded and all(url.startswith("/") and not url.startswith("//") for url in loaded), loaded
    assert "/static/vendor/leaflet/leaflet.js" in page


def test_search_and_household_statistics(site, small_demo):
    app, _ = site
    client = client_as(app, "viewer")
    community = small_demo.layers["communities"].iloc[0]
    found = client.get(f"/api/search?q={community['name']}").json["results"]
    assert found[0]["code"] == community["code"] and len(found[0]["bbox"]) == 4
    by_code = client.get(f"/api/search?q={community['street_code']}").json["results"]
    assert by_code[0]["layer"] == "streets"
    assert client.get("/api/search?q=").status_code == 400
    stats = client.get(f"/api/stats/households?street={community['street_code']}").json
    sums = small_demo.layers["units"].groupby("community_code")["households"].sum()
    assert {c["code"]: c["households"] for c in stats["communities"]} == {
        k: v for k, v in sums.items() if k.startswith(community["street_code"])}
    assert client.get("/api/stats/households?street=12").status_code == 400


def test_database_without_a_schema_says_what_to_run(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    response = sign_in(app.test_client(), "planner")
    assert response.status_code == 503
    assert "flask --app webmap init-db" in response.get_data(as_text=True)


@pytest.mark.parametrize("basemap, expected", [
    ("osm", "tile.openstreetmap.org"), ("gaode", "autonavi.com"), ("local", "/tiles/{z}/{x}/{y}.png"),
    ("none", None), ("tianditu", None),  # Tianditu without a key: no base map rather than a broken one
])
def test_base_maps_are_configurable(site, basemap, expected):
    app, _ = site
    app.config["BASEMAP"] = basemap
    page = client_as(app, "planner").get("/map").get_data(as_text=True)
    if expected:
        assert expected in page
    else:
        assert "L.tileLayer" not in page
    assert ('"coords":"gcj02"' in page.replace(" ", "")) == (basemap == "gaode")


def test_gcj02_coordinates_for_gaode_tiles(site, small_demo):
    app, secrets = site
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    client = app.test_client()
    code = small_demo.layers["facilities"]["code"].iloc[0]
    plain = client.get(f"/api/collections/facilities/items/{code}", headers=auth).json
    shifted = client.get(f"/api/collections/facilities/items/{code}?coords=gcj02", headers=auth).json
    from geodata.crs import wgs84_to_gcj02

    lon, lat = plain["geometry"]["coordinates"]
    assert shifted["geometry"]["coordinates"] == pytest.approx([float(v) for v in wgs84_to_gcj02(lon, lat)],
                                                               abs=1e-6)


def test_local_tiles_are_served_and_missing_ones_fail_soft(site, tmp_path):
    app, _ = site
    app.config["LOCAL_TILES_DIR"] = str(tmp_path)
    (tmp_path / "12" / "3337").mkdir(parents=True)
    (tmp_path / "12" / "3337" / "1681.png").write_bytes(b"\x89PNG fake")
    client = client_as(app, "viewer")
    assert client.get("/tiles/12/3337/1681.png").data == b"\x89PNG fake"
    assert client.get("/tiles/12/3337/9999.png").status_code == 404
