"""The city-wide case map by view (/api/incidents/map and the /supervisor page of an
administrator) and the case list's counts: every figure is the server's, of every case the
filters select, on SpatiaLite and PostGIS; a view holding too many cases is drawn as groups,
never as a silently cut set."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest
from sqlalchemy import update

from geodata import incident_rows
from geodata.db import get_engine
from layers.incidents import loop as incidents
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import make_accounts, served_copy, sign_in_page, signed_in

PINS = 100  # a small cap, so that the small demo's city view is drawn as groups


@pytest.fixture
def site(db_url, engine, small_demo):
    write_demo(engine, small_demo)
    app = make_app(db_url, BASEMAP="none", CASE_MAP_PINS=PINS)
    secrets = make_accounts(app, small_demo)
    return {"app": app, "engine": engine, **secrets}


def _bbox(engine) -> tuple[float, float, float, float]:
    cases = incident_rows.list_incidents(engine)
    lons, lats = [c["lon"] for c in cases], [c["lat"] for c in cases]
    return min(lons) - 0.001, min(lats) - 0.001, max(lons) + 0.001, max(lats) + 0.001


def _box(b) -> str:
    return ",".join(f"{v:.6f}" for v in b)


def test_the_map_counts_the_whole_scope_and_draws_the_view(site):
    engine = site["engine"]
    everything = incident_rows.list_incidents(engine)
    assert len(everything) > PINS  # else the test would not see groups
    client, _ = signed_in(site["app"], "admin")
    whole = _bbox(engine)
    answer = client.get(f"/api/incidents/map?bbox={_box(whole)}&zoom=11")
    assert answer.status_code == 200, answer.json
    body = answer.json
    now = datetime.now()
    open_ = [c for c in everything if c["status"] in incidents.OPEN]
    overdue = [c for c in open_ if c["due_at"] is not None and c["due_at"] < now]
    assert body["counts"]["total"] == len(everything)
    assert body["counts"]["open"] == len(open_) and body["counts"]["overdue"] == len(overdue)
    assert sum(body["counts"]["by_status"].values()) == len(everything)
    reported = sum(c["status"] == "reported" for c in everything)
    assert body["counts"]["by_status"].get("reported", 0) == reported
    # too many for pins: groups (streets when zoomed out) that add up to every case of the view
    assert "incidents" not in body and body["group"] == "street"
    assert sum(g["total"] for g in body["groups"]) == body["view"]["total"] == len(everything)
    assert sum(g["overdue"] for g in body["groups"]) == len(overdue)
    zoomed = client.get(f"/api/incidents/map?bbox={_box(whole)}&zoom=14").json
    assert zoomed["group"] == "community" and len(zoomed["groups"]) > len(body["groups"])
    # a small view: each case of it pinned, the counts still of the whole scope
    lon, lat = everything[0]["lon"], everything[0]["lat"]
    small = (lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002)
    inside = [c for c in everything if small[0] <= c["lon"] <= small[2] and small[1] <= c["lat"] <= small[3]]
    assert 0 < len(inside) <= PINS
    pinned = client.get(f"/api/incidents/map?bbox={_box(small)}&zoom=17").json
    assert sorted(p["code"] for p in pinned["incidents"]) == sorted(c["code"] for c in inside)
    assert pinned["view"]["total"] == len(inside) and pinned["counts"] == body["counts"]
    # with a filter: the figures of its matches
    filtered = client.get(f"/api/incidents/map?bbox={_box(whole)}&zoom=11&status=overdue").json
    assert filtered["counts"]["total"] == filtered["counts"]["overdue"] == len(overdue)


def test_the_same_view_again_costs_a_304(site):
    client, _ = signed_in(site["app"], "admin")
    url = f"/api/incidents/map?bbox={_box(_bbox(site['engine']))}&zoom=12"
    first = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200 and first.headers["ETag"]
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"], "Accept-Encoding": "gzip"})
    assert again.status_code == 304 and again.get_data() == b""


def test_a_supervisor_maps_only_their_scope(site):
    client = site["app"].test_client()
    headers = {"Authorization": f"Bearer {site['supervisor_token']}"}
    url = f"/api/incidents/map?bbox={_box(_bbox(site['engine']))}&zoom=12"
    answer = client.get(url, headers=headers).json
    theirs = incident_rows.list_incidents(site["engine"], prefix=site["scope"])
    assert answer["counts"]["total"] == len(theirs) < len(incident_rows.list_incidents(site["engine"]))


@pytest.mark.parametrize("query, message", [
    ("zoom=12", "bbox is required"),
    ("bbox=1,2,3&zoom=12", "bbox is four numbers"),
    ("bbox=1,2,3,x&zoom=12", "bbox"),
    ("bbox=1,2,3,4&zoom=-1", "zoom"),
    ("bbox=1,2,3,4&status=nonsense", "unknown status"),
])
def test_the_map_refuses_bad_views(site, query, message):
    client, _ = signed_in(site["app"], "admin")
    answer = client.get(f"/api/incidents/map?{query}")
    assert answer.status_code == 400 and message in answer.json["detail"]


def test_every_count_of_the_case_list_is_the_filters_matches(site):
    """``numberMatched`` of ``status=needs`` (and overdue) counts the cases that match, not every
    open case."""
    engine = site["engine"]
    # a few open cases with time left (filed, due next year): open but needing no one
    fresh = [c["id"] for c in incident_rows.list_incidents(engine, statuses=incidents.OPEN, limit=3)]
    with engine.begin() as conn:
        conn.execute(update(incident_rows.T).where(incident_rows.T.c.id.in_(fresh))
                     .values(status="filed", rework_count=0, due_at=datetime(datetime.now().year + 1, 1, 1)))
    client, _ = signed_in(site["app"], "admin")
    everything = client.get("/api/incidents?limit=20000").json["incidents"]
    open_ = [c for c in everything if c["status"] in incidents.OPEN]
    needs = [c for c in everything if c["status"] in incidents.OPEN and incidents.needs_attention(c)]
    overdue = [c for c in open_ if c["overdue"]]
    assert 0 < len(needs) < len(open_)  # else the test could not tell the two apart
    for status, expected in (("needs", needs), ("overdue", overdue), ("open", open_)):
        answer = client.get(f"/api/incidents?status={status}&limit=20000").json
        assert sorted(c["code"] for c in answer["incidents"]) == sorted(c["code"] for c in expected), status
        assert answer["numberMatched"] == answer["counts"]["total"] == len(expected), status
        assert answer["counts"]["open"] == len(expected), status
        cut = client.get(f"/api/incidents?status={status}&limit=3").json
        assert cut["numberReturned"] == min(3, len(expected)) and cut["numberMatched"] == len(expected)


# --- the page, in Chromium -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("case-map") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, BASEMAP="none", CASE_MAP_PINS=PINS)
    make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield {"base": base, "app": app}


def test_the_admins_map_loads_by_view(chromium_page, server, tmp_path_factory):
    base = server["base"]
    page = chromium_page(viewport={"width": 1200, "height": 800})
    errors = page.errors
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/incidents" in r.url else None)
    sign_in_page(page, base, "admin")
    page.goto(f"{base}/supervisor")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert not any("limit=20000" in u for u in asked)  # never the whole city in one download
    client, _ = signed_in(server["app"], "admin")
    engine = get_engine(server["app"].config["DATABASE_URL"])
    whole = _bbox(engine)
    counts = client.get(f"/api/incidents/map?bbox={_box(whole)}&zoom=11").json["counts"]
    summary = page.inner_text("#summary")
    for n in (counts["total"], counts["open"], counts["overdue"]):
        assert f"{n:,}" in summary
    # the whole district in view: more cases than pins, so groups and a "zoom in" note
    page.evaluate("(b) => { window.gridplan.map.fitBounds(b, {animate: false}); }",
                  [[whole[1], whole[0]], [whole[3], whole[2]]])
    page.wait_for_function("() => window.gridplan.state.groups && window.gridplan.state.groups.length > 0")
    shown = page.evaluate("window.gridplan.state.groups.reduce((s, g) => s + g.total, 0)")
    assert shown == page.evaluate("window.gridplan.state.view.total") == counts["total"]
    # said once, in the status line (the figures give only the number)
    assert "zoom in" in page.inner_text("#status") and "zoom in" not in page.inner_text("#summary")
    folder = tmp_path_factory.getbasetemp() / "case-map"
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / "groups.png"))
    # zoom in on one case: the cases of that view, each pinned, loaded from the server
    case = incident_rows.list_incidents(engine, limit=1)[0]
    loads = page.evaluate("window.gridplan.state.viewLoads")
    page.evaluate("([lat, lon]) => { window.gridplan.map.setView([lat, lon], 18, {animate: false}); }",
                  [case["lat"], case["lon"]])
    page.wait_for_function(f"() => window.gridplan.state.viewLoads > {loads}"
                           " && !window.gridplan.state.groups")
    bounds = page.evaluate("(() => { const b = window.gridplan.map.getBounds();"
                           " return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
    expected = [c["code"] for c in incident_rows.list_incidents(engine, bbox=tuple(bounds))]
    codes = page.evaluate("window.gridplan.state.incidents.map((f) => f.properties.code)")
    assert case["code"] in codes and sorted(codes) == sorted(expected)
    assert page.evaluate("window.gridplan.layers.clusters.getLayers().length") == len(expected)
    assert f"{counts['total']:,}" in page.inner_text("#summary")  # the scope's figures unchanged
    page.screenshot(path=str(folder / "pins.png"))
    assert errors == []
