"""The 网格员 in the field, through the API on SpatiaLite and PostGIS: a pin's place in words
(community, nearest road, cell), the open cases of its category nearby before sending, "this is
the same case" as a note (no new case), a pin outside every cell refused naming the nearest cell
of the user's scope, the base drawn under the pin, the count of what needs me, and the landing
after sign-in."""

from __future__ import annotations

from datetime import datetime, timedelta

import geopandas as gpd
import pytest
import shapely
from sqlalchemy import func, select

from geodata.models import Incident, IncidentStep
from geodata.settings import save_setting
from tests.conftest import demo_site
from tests.webhelpers import PASSWORD, csrf_token, sign_in


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    app, secrets = demo_site(db_url, small_demo, BASEMAP="none", PHOTO_DIR=str(tmp_path / "photos"))
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    return {"app": app, "engine": engine, "demo": small_demo, "mine": mine, **secrets}


def client_of(site, role="supervisor"):
    client = site["app"].test_client()
    assert sign_in(client, role).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client.get("/login").get_data(as_text=True))}


def counts(engine):
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(Incident)).scalar_one(),
                conn.execute(select(func.count()).select_from(IncidentStep)).scalar_one())


def test_a_pin_in_words_and_the_cases_nearby_before_sending(site):
    client, headers = client_of(site)
    cell = site["mine"].iloc[0]
    here = cell.geometry.representative_point()
    communities = site["demo"].layers["communities"].set_index("code")
    answer = client.get(f"/api/incidents/place?lon={here.x}&lat={here.y}&category=E01-01")
    assert answer.status_code == 200
    body = answer.json
    assert body["reportable"] is True and body["refusal"] is None
    place = body["place"]
    assert place["grid_code"] == cell["code"]
    assert place["community_name"] == communities.loc[cell["community_code"], "name"]
    roads = site["demo"].layers["roads"].to_crs(4326)
    assert place["road"] in set(roads["name"])  # the demo's blocks are cut by roads: one is near
    # the cell as a person reads it (its community's name and number), not its 15-digit code
    number = cell["code"][-3:].lstrip("0")
    assert f"{place['community_name']} cell {number}" in place["words"]
    assert cell["code"] not in place["words"]
    assert place["road"] in place["words"]
    assert body["likely_duplicates"] == []
    # a case reported here; a second 网格员's pin a few metres away sees it before sending
    made = client.post("/api/incidents", json={"lon": here.x, "lat": here.y, "category": "E01-01",
                                               "description": "暴露垃圾"}, headers=headers)
    assert made.status_code == 201
    near = client.get(f"/api/incidents/place?lon={here.x + 0.00003}&lat={here.y}&category=E01-01").json
    assert [d["code"] for d in near["likely_duplicates"]] == [made.json["code"]]
    assert near["likely_duplicates"][0]["distance_m"] < 10
    other = client.get(f"/api/incidents/place?lon={here.x}&lat={here.y}&category=C01-01").json
    assert other["likely_duplicates"] == []  # another category is another case
    # "this is the same case": a note on that case, no new case, its version unchanged
    before = counts(site["engine"])
    noted = client.post(f"/api/incidents/{made.json['code']}/notes", json={"note": "又看到了，更多了"},
                        headers=headers)
    assert noted.status_code == 200
    assert noted.json["version"] == made.json["version"]
    last = noted.json["steps"][-1]
    assert last["step"] == "noted" and last["note"] == "又看到了，更多了"
    assert counts(site["engine"]) == (before[0], before[1] + 1)
    empty = client.post(f"/api/incidents/{made.json['code']}/notes", json={"note": " "}, headers=headers)
    assert empty.status_code == 400 and "note" in empty.json["detail"]
    assert counts(site["engine"]) == (before[0], before[1] + 1)
    # a cancelled case takes no note; a case out of the 网格员's sight is not there (404)
    code = made.json["code"]
    version = client.get(f"/api/incidents/{code}").json["version"]
    cancel = {"action": "cancel", "version": version, "note": "重复"}
    # cancelling (作废) is the 指挥中心's step (separation of duties): an administrator's here
    admin, admin_headers = client_of(site, "admin")
    assert client.post(f"/api/incidents/{code}/actions", json=cancel, headers=headers).status_code == 403
    assert admin.post(f"/api/incidents/{code}/actions", json=cancel, headers=admin_headers).status_code == 200
    late = client.post(f"/api/incidents/{code}/notes", json={"note": "又看到了"}, headers=headers)
    assert late.status_code == 409 and made.json["code"] in late.json["detail"]
    cells = site["demo"].layers["grid_cells"]
    there = cells[~cells["code"].str.startswith(site["scope"])].iloc[0].geometry.representative_point()
    elsewhere = admin.post("/api/incidents", json={"lon": there.x, "lat": there.y, "category": "E01-01"},
                           headers=admin_headers).json["code"]
    # a pin in another 网格员's cell: refused (403), naming the nearest of one's own
    refused = client.post("/api/incidents", json={"lon": there.x, "lat": there.y, "category": "E01-01"},
                          headers=headers)
    assert refused.status_code == 403 and "outside your cells" in refused.json["detail"]
    nearest = refused.json["nearest_cell"]
    assert nearest.startswith(site["scope"]) and nearest in refused.json["detail"]
    place = client.get(f"/api/incidents/place?lon={there.x}&lat={there.y}").json
    assert place["reportable"] is False and place["refusal"]["nearest_cell"] == nearest
    hidden = client.post(f"/api/incidents/{elsewhere}/notes", json={"note": "看到了"}, headers=headers)
    assert hidden.status_code == 404
    assert counts(site["engine"])[1] == before[1] + 3  # the note, the cancelling, the other report


def test_a_case_answers_with_its_place(site):
    client, headers = client_of(site)
    here = site["mine"].iloc[-1].geometry.representative_point()
    made = client.post("/api/incidents", json={"lon": here.x, "lat": here.y, "category": "E01-01"},
                       headers=headers).json
    case = client.get(f"/api/incidents/{made['code']}").json
    assert case["place"]["grid_code"] == made["grid_code"]
    assert case["place"]["community_name"] in case["place"]["words"]


@pytest.mark.parametrize("role", ["supervisor", "admin"])
def test_a_pin_outside_every_cell_is_refused_naming_the_nearest_cell(site, role):
    client, headers = client_of(site, role)
    cells = site["demo"].layers["grid_cells"]
    scope = site["mine"] if role == "supervisor" else cells
    union = shapely.union_all(cells.geometry.values)
    # a point 200 m east of the city's edge, level with one of the scope's cells
    cell = scope.iloc[len(scope) // 2]
    y = cell.geometry.representative_point().y
    x = union.bounds[2] + 0.002
    metric = scope.to_crs(scope.estimate_utm_crs())
    pin = gpd.GeoSeries([shapely.Point(x, y)], crs=scope.crs).to_crs(metric.crs).iloc[0]
    expected = scope.iloc[int(metric.geometry.distance(pin).values.argmin())]["code"]
    before = counts(site["engine"])
    answer = client.post("/api/incidents", json={"lon": x, "lat": y, "category": "E01-01"}, headers=headers)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert "outside every grid cell" in answer.json["detail"]
    assert expected in answer.json["detail"]
    # named as people name it, the code beside: its community and its number
    community = site["demo"].layers["communities"].set_index("code").loc[expected[:12], "name"]
    assert f"{community} cell {int(expected[-3:])} ({expected})" in answer.json["detail"]
    assert answer.json["nearest_cell"] == expected
    assert counts(site["engine"]) == before
    place = client.get(f"/api/incidents/place?lon={x}&lat={y}").json
    assert place["reportable"] is False and place["refusal"]["nearest_cell"] == expected
    assert expected in place["refusal"]["detail"]
    # a pin thousands of kilometres away (a phone's position gone wrong) names a cell too
    far = client.post("/api/incidents", json={"lon": 10, "lat": 10, "category": "E01-01"}, headers=headers)
    assert far.status_code == 400 and far.json["nearest_cell"] in set(scope["code"])
    assert far.json["nearest_cell"] in far.json["detail"]
    assert counts(site["engine"]) == before


def test_the_base_under_the_pin(site):
    client, _ = client_of(site)
    minx, miny, maxx, maxy = site["mine"].total_bounds
    base = client.get(f"/api/incidents/basemap?bbox={minx},{miny},{maxx},{maxy}").json
    codes = {f["properties"]["code"] for f in base["cells"]["features"]}
    assert codes and all(c.startswith(site["scope"]) for c in codes)  # only the 网格员's scope
    assert set(site["mine"]["code"]) <= codes
    roads = base["roads"]["features"]
    assert roads and roads[0]["geometry"]["type"].endswith("LineString")
    for bad in ("1,2,3", "1,2,0,3", "0,0,5,5", "a,b,c,d", "nan,0,1,1"):
        refused = client.get(f"/api/incidents/basemap?bbox={bad}")
        assert refused.status_code == 400 and "bbox" in refused.json["detail"]


def test_what_needs_me_in_the_top_bar_and_the_list_opening_on_it(site):
    engine = site["engine"]
    # one account takes every step here (the loop's separation of duties has its own tests)
    save_setting(engine, "incident_separation", False, actor="test")
    client, headers = client_of(site)
    before = client.get("/cases").get_data(as_text=True)
    assert 'id="attention"' not in before, "the demo's cells start with nothing to do"
    here = site["mine"].iloc[0].geometry.representative_point()
    codes = [client.post("/api/incidents", json={"lon": here.x, "lat": here.y, "category": "E01-01"},
                         headers=headers).json["code"] for _ in range(3)]
    # one returned for rework, one overdue (dispatched, due yesterday), one new
    loops = ((codes[0], ("file", "dispatch", "handle", "return")), (codes[1], ("file", "dispatch")))
    for code, steps in loops:
        for action in steps:
            version = client.get(f"/api/incidents/{code}").json["version"]
            body = {"action": action, "version": version, "note": "未清理干净"}
            answer = client.post(f"/api/incidents/{code}/actions", json=body, headers=headers)
            assert answer.status_code == 200
    with engine.begin() as conn:
        conn.execute(Incident.__table__.update().where(Incident.code == codes[1])
                     .values(due_at=datetime.now() - timedelta(days=1)))
    page = client.get("/cases").get_data(as_text=True)
    assert 'id="attention"' in page
    for kind, n in (("new", 1), ("returned", 1), ("overdue", 1)):
        assert f'data-kind="{kind}" data-n="{n}"' in page
    assert '<option value="needs" selected' in page  # the list opens on them
    needs = client.get("/api/incidents?status=needs&mine=1").json["incidents"]
    assert sorted(c["code"] for c in needs) == sorted(codes)
    assert needs[0]["code"] == codes[1]  # overdue first
    viewer, _ = client_of(site, "viewer")
    assert 'id="attention"' not in viewer.get("/rates").get_data(as_text=True)


def test_signing_in_lands_a_supervisor_on_the_cases(site):
    for role, where in (("supervisor", "/cases"), ("admin", "/"), ("planner", "/")):
        client = site["app"].test_client()
        answer = sign_in(client, role)
        assert answer.status_code == 302 and answer.headers["Location"] == where
    client = site["app"].test_client()  # a page asked for comes first
    page = client.get("/login?next=/rates")
    answer = client.post("/login?next=/rates", data={"name": "supervisor", "password": PASSWORD,
                                                     "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert answer.status_code == 302 and answer.headers["Location"] == "/rates"
    client = site["app"].test_client()  # a page off the site is never followed: the cases instead
    page = client.get("/login")
    answer = client.post("/login?next=//evil.example/", data={
        "name": "supervisor", "password": PASSWORD, "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert answer.status_code == 302 and answer.headers["Location"] == "/cases"
