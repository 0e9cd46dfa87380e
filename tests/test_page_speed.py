"""Pages that answer fast and move little (issue 17 item 8), through the app on both databases:
static assets gzipped; coverage answers cached by the revisions stored in the database (ETag,
304), drawn by view (only what meets the bbox) with the server's totals; a city's coverage and
siting computed by the background worker, the greedy answer first; an edit's answer and its
outlines carrying only what changed; the incident map's counts counted by the server; the rates
page on a 360 px phone in real Chromium."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geodata.db import get_engine
from geodata.revisions import all_revisions
from geodata.store import read_layer, write_layer
from layers.coverage import cache as coverage_cache
from layers.coverage import gaps as coverage
from layers.coverage import siting
from layers.plans import workflow as plan_workflow
from layers.sample_data.demo import seed_departments, write_demo
from tests.conftest import demo_site, make_app, streets_of
from tests.webhelpers import csrf_token, make_accounts, served_copy, sign_in, sign_in_page

STATIC = Path(__file__).resolve().parent.parent / "webmap" / "static"


@pytest.fixture
def site(db_url, small_demo):
    engine = get_engine(db_url)
    app = demo_site(db_url, small_demo)[0]
    return app, engine


def client_as(app, name: str):
    client = app.test_client()
    sign_in(client, name)
    return client, {"X-CSRFToken": csrf_token(client.get("/coverage").get_data(as_text=True))}


def test_static_assets_are_sent_gzipped_with_their_own_etag(spatialite_url):
    client = make_app(spatialite_url).test_client()
    for path in ("vendor/chartjs/chart.umd.js", "vendor/leaflet/leaflet.js", "js/coverage.js",
                 "css/cases.css"):
        plain = (STATIC / path).read_bytes()
        answer = client.get(f"/static/{path}", headers={"Accept-Encoding": "gzip, deflate, br"})
        assert answer.status_code == 200 and answer.headers["Content-Encoding"] == "gzip", path
        assert gzip.decompress(answer.data) == plain
        assert len(answer.data) < len(plain) / 2 and "Accept-Encoding" in answer.headers["Vary"]
        again = client.get(f"/static/{path}", headers={"Accept-Encoding": "gzip",
                                                       "If-None-Match": answer.headers["ETag"]})
        assert again.status_code == 304 and again.data == b""
        # a client that takes no gzip gets the file itself, under another ETag
        raw = client.get(f"/static/{path}")
        assert raw.data == plain and "Content-Encoding" not in raw.headers
        assert raw.headers["ETag"] != answer.headers["ETag"]


def test_coverage_answers_are_cached_by_the_stored_revisions(site, small_demo):
    app, engine = site
    planner, _ = client_as(app, "planner")
    urls = ["/api/coverage/report", "/api/coverage/layers/uncovered?kind=kindergarten",
            "/api/coverage/layers/missing"]
    first = {u: planner.get(u) for u in urls}
    for url, answer in first.items():
        assert answer.status_code == 200 and answer.headers.get("ETag"), url
        again = planner.get(url, headers={"If-None-Match": answer.headers["ETag"]})
        assert again.status_code == 304 and again.data == b"", url
    before = first["/api/coverage/report"].get_json()
    # another process (another app on the same database) adds a kindergarten where most
    # households of the district live: every answer changes, and this app sees it at once
    other = make_app(str(engine.url.render_as_string(hide_password=False)))
    units = read_layer(engine, "units")
    busiest = units.sort_values("households").iloc[-1]
    point = shapely.point_on_surface(busiest.geometry)
    with other.app_context(), engine.begin() as conn:
        revisions = all_revisions(conn)
        write_layer(conn, "facilities", gpd.GeoDataFrame(
            {"code": ["KG-new"], "kind": ["kindergarten"], "name": ["新幼儿园"], "floor_area_m2": [900.0],
             "district_code": [busiest["community_code"][:6]],
             "community_code": [busiest["community_code"]]}, geometry=[point], crs=4326))
    assert all_revisions(engine)["layer:facilities"] == revisions.get("layer:facilities", 0) + 1
    for url, answer in first.items():
        changed = planner.get(url, headers={"If-None-Match": answer.headers["ETag"]})
        assert changed.status_code == 200 and changed.headers["ETag"] != answer.headers["ETag"], url
    after = planner.get("/api/coverage/report").get_json()
    covered = {r["kind"]: r["households_covered"] for r in before["reach"]}
    now = {r["kind"]: r["households_covered"] for r in after["reach"]}
    assert now["kindergarten"] > covered["kindergarten"]


def test_gap_layers_by_view_hold_only_the_view_and_count_the_whole_scope(site):
    app, engine = site
    planner, _ = client_as(app, "planner")
    report = planner.get("/api/coverage/report").get_json()
    row = next(r for r in report["reach"] if r["kind"] == "kindergarten")
    whole = planner.get("/api/coverage/layers/uncovered?kind=kindergarten").get_json()
    minx, miny, maxx, maxy = gpd.GeoDataFrame.from_features(whole["features"]).total_bounds
    bbox = (minx, miny, (minx + maxx) / 2, (miny + maxy) / 2)
    text = ",".join(f"{v:.6f}" for v in bbox)
    view = planner.get(f"/api/coverage/layers/uncovered?kind=kindergarten&bbox={text}&zoom=15").get_json()
    shown = gpd.GeoDataFrame.from_features(view["features"])
    assert 0 < len(shown) < len(whole["features"])
    assert shapely.intersects(np.asarray(shown.geometry.values), shapely.box(*bbox)).all()
    every = {f["properties"]["code"] for f in whole["features"]}
    meets = {f["properties"]["code"] for f in whole["features"]
             if shapely.intersects(shapely.geometry.shape(f["geometry"]), shapely.box(*bbox))}
    assert set(shown["code"]) == meets and meets < every
    # the totals are the server's, of the whole scope, the same whatever the view
    for answer in (whole, view):
        totals = answer["properties"]["totals"]
        assert totals["uncovered"] == row["households"] - row["households_covered"]
        assert totals["units"] == len(whole["features"])
    # simplified for the zoom: the same units, fewer vertices
    far = planner.get(f"/api/coverage/layers/uncovered?kind=kindergarten&bbox={text}&zoom=11").get_json()
    vertices = (lambda fc: sum(shapely.get_num_coordinates(shapely.geometry.shape(f["geometry"]))
                               for f in fc["features"]))
    assert len(far["features"]) == len(view["features"]) and vertices(far) < vertices(view)
    for bad in ("1,2,3", "a,b,c,d", "5,5,1,1", "0,0,200,10", "nan,0,1,1"):
        refused = planner.get(f"/api/coverage/layers/uncovered?kind=kindergarten&bbox={bad}")
        assert refused.status_code == 400 and "bbox" in refused.get_json()["detail"], bad
    assert planner.get("/api/coverage/layers/missing?zoom=99").status_code == 400


def test_a_city_is_computed_by_the_worker_and_drawn_by_view(site, db_url, monkeypatch):
    from layers.worker import run_one

    app, engine = site
    monkeypatch.setattr(coverage_cache, "SYNC_UNITS", 10)  # this small district as a city
    monkeypatch.setattr(coverage_cache, "MAX_VIEW_UNITS", 400)
    app.extensions["gridplan.coverage"].clear()
    planner, headers = client_as(app, "planner")
    waiting = planner.get("/api/coverage/report")
    assert waiting.status_code == 202
    job = waiting.get_json()["job"]
    # asked again while it waits: the same job, not another
    assert planner.get("/api/coverage/layers/missing").get_json()["job"] == job
    assert run_one(engine)["status"] == "done"  # what `flask worker` does
    report = planner.get("/api/coverage/report")
    assert report.status_code == 200
    expected = coverage.report_for(engine)
    assert json.loads(json.dumps(expected, default=str))["reach"] == report.get_json()["reach"]
    # the job's own answer is the report, without what the cache keeps beside it
    assert set(planner.get(f"/api/coverage/jobs/{job}").get_json()["report"]) == set(report.get_json())
    row = next(r for r in expected["reach"] if r["kind"] == "kindergarten")
    units = read_layer(engine, "units")
    minx, miny, maxx, maxy = units.total_bounds
    bbox = (minx, miny, minx + (maxx - minx) / 3, miny + (maxy - miny) / 3)
    text = ",".join(f"{v:.6f}" for v in bbox)
    near = planner.get(f"/api/coverage/layers/uncovered?kind=kindergarten&bbox={text}&zoom=16").get_json()
    assert near["properties"]["totals"]["uncovered"] == row["households"] - row["households_covered"]
    box = shapely.box(*bbox)
    assert near["features"] and all(shapely.intersects(shapely.geometry.shape(f["geometry"]), box)
                                    for f in near["features"])
    # seen whole, a city is shaded by community, with the same totals
    afar = planner.get("/api/coverage/layers/uncovered?kind=kindergarten&zoom=11").get_json()
    assert afar["properties"]["totals"]["by_community"]
    assert sum(f["properties"]["uncovered"] for f in afar["features"]) == \
        row["households"] - row["households_covered"]
    # the page has the communities' outlines: their figures alone, the outlines not sent again
    figures = planner.get("/api/coverage/layers/uncovered?kind=kindergarten&zoom=11&outlines=page")
    lean = figures.get_json()
    assert [f["properties"] for f in lean["features"]] == [f["properties"] for f in afar["features"]]
    assert all(f["geometry"] is None for f in lean["features"] if f["properties"]["level"] == "community")
    assert len(figures.data) < len(json.dumps(afar)) / 2
    findings = planner.get("/api/coverage/layers/facility_problems").get_json()
    assert findings["properties"]["count"] == len(expected["facilities"])
    # siting: a job too; the greedy answer is kept first, then the exact one
    started = planner.post("/api/coverage/sites", json={"kind": "kindergarten", "k": 3}, headers=headers)
    assert started.status_code == 202
    href = started.get_json()["url"]
    assert planner.get(href).get_json()["status"] == "queued"
    assert run_one(engine)["status"] == "done"
    done = planner.get(href).get_json()
    assert done["stage"] == "final" and len(done["sites"]["features"]) == 3
    assert done["sites"]["properties"]["households_added"] > 0
    assert planner.post("/api/coverage/sites", json={"kind": "casino", "k": 3},
                        headers=headers).status_code == 400


def test_city_siting_jobs_read_and_walk_once_per_state_of_the_data(site, monkeypatch, tmp_path):
    """A city's report job (made district by district) then keeps, by the stored revisions, the
    siting model (candidates and coverage matrix) of every row of the standards table: a siting
    job then reads no layer and walks no road. Another reach is computed once and kept too; a
    change of the data makes the next job read again — the siting job keeps what a model at any
    reach is computed from too. (Each job runs in a process of its own: what is kept lives in
    files.)"""
    from layers.worker import run_one

    app, engine = site
    monkeypatch.setattr(coverage_cache, "SYNC_UNITS", 10)  # this small district as a city
    monkeypatch.setenv("GRIDPLAN_SITING_CACHE", str(tmp_path / "siting"))
    app.extensions["gridplan.coverage"].clear()
    log = tmp_path / "reads"
    log.write_text("")
    load = coverage.load_inputs

    def reading(*args, **kw):  # the jobs' processes write down each time they read the layers
        with open(log, "a") as out:
            out.write("read\n")
        return load(*args, **kw)

    monkeypatch.setattr(coverage, "load_inputs", reading)
    planner, headers = client_as(app, "planner")

    def reads() -> int:
        return len(log.read_text().split())

    def sites(k: int, **more) -> dict:
        started = planner.post("/api/coverage/sites", json={"kind": "kindergarten", "k": k, **more},
                               headers=headers)
        assert started.status_code == 202
        assert run_one(engine)["status"] == "done"
        done = planner.get(started.get_json()["url"]).get_json()
        assert done["stage"] == "final" and len(done["sites"]["features"]) == k
        return done["sites"]["properties"]

    assert planner.get("/api/coverage/report").status_code == 202
    assert run_one(engine)["status"] == "done" and reads() == 1  # the siting models (districts: their own)
    first = sites(3)
    again = sites(2)
    assert reads() == 1 and first["optimal"] and again["households_added"] <= first["households_added"]
    assert first["households_covered_before"] + first["households_added"] == first["households_covered_after"]
    at_200 = sites(2, radius=200)
    sites(3, radius=200)
    assert reads() == 1  # another reach: from what the report job kept, no layer read, then kept
    standards = coverage.load_standards(engine)  # the same question computed from the layers
    inputs = load(engine, None, standards)
    expected, _, _ = siting.site_for(coverage.compute_reach(inputs, standards), "kindergarten", 2,
                                     radius_m=200, units=inputs.units)
    assert at_200["households_covered_before"] == expected.covered_before
    assert at_200["households_added"] == expected.objective and at_200["optimal"]
    units = read_layer(engine, "units")  # a kindergarten added where most households live
    busiest = units.sort_values("households").iloc[-1]
    with engine.begin() as conn:
        write_layer(conn, "facilities", gpd.GeoDataFrame(
            {"code": ["KG-new"], "kind": ["kindergarten"], "name": ["新幼儿园"], "floor_area_m2": [900.0],
             "district_code": [busiest["community_code"][:6]], "community_code": [busiest["community_code"]]},
            geometry=[shapely.point_on_surface(busiest.geometry)], crs=4326))
    later = sites(3)
    assert reads() == 2 and later["households_covered_before"] > first["households_covered_before"]


def test_an_edit_answers_only_what_changed(site, small_demo):
    app, engine = site
    memory = app.extensions["gridplan.plans"]
    street = streets_of(small_demo)[0]
    plan_id, _ = plan_workflow.auto_plan(memory, "edit bytes", "planner", street=street)
    planner, headers = client_as(app, "planner")
    plan = planner.get(f"/api/plans/{plan_id}").get_json()
    whole = planner.get(f"/api/plans/{plan_id}/outlines?zoom=15")
    units = planner.get(f"/api/plans/{plan_id}/units").get_json()["features"]
    first = units[0]["properties"]
    target = next(c for c in plan["communities"] if c["community_code"] != first["community_code"])
    moved = planner.post(f"/api/plans/{plan_id}/moves", headers=headers, json={
        "units": [first["code"]], "to": target["community_code"], "version": plan["version"]})
    assert moved.status_code == 200
    answer = moved.get_json()
    assert answer["units"] == [first["code"]]
    changed = {c["community_code"] for c in answer["communities"]}
    assert changed == {first["community_code"], target["community_code"]}
    assert len(moved.data) <= 50_000
    redraw = planner.get(f"/api/plans/{plan_id}/outlines?zoom=15&codes={','.join(sorted(changed))}")
    assert {f["properties"]["code"] for f in redraw.get_json()["features"]} == changed
    assert len(redraw.data) < len(whole.data) / 2 and len(redraw.data) <= 50_000
    too_many = ",".join(["x" * 40] * 2)
    assert planner.get(f"/api/plans/{plan_id}/outlines?codes={too_many}").status_code == 400


def test_the_incident_map_counts_every_case_not_what_it_loaded(site):
    app, _ = site
    admin, _ = client_as(app, "admin")
    every = admin.get("/api/incidents?limit=20000").get_json()
    assert every["numberReturned"] > 3
    cut = admin.get("/api/incidents?limit=2").get_json()
    assert cut["numberReturned"] == 2
    open_ = [c for c in every["incidents"] if c["status"] not in ("closed", "evaluated", "cancelled")]
    statuses = {}
    for c in every["incidents"]:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    assert cut["counts"] == {"total": every["numberReturned"], "open": len(open_),
                             "overdue": sum(c["overdue"] for c in every["incidents"]), "by_status": statuses}
    late = admin.get("/api/incidents?status=overdue&limit=1").get_json()
    assert late["counts"]["total"] == late["counts"]["overdue"] == every["counts"]["overdue"]


# --- the rates page on a phone ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("rates-phone") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    seed_departments(get_engine(url))  # the rates by department name them
    app = make_app(url, BASEMAP="none")
    make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield base


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_rates_on_a_360_px_phone(chromium_page, served, small_demo, tmp_path, locale):
    page = chromium_page(phone=True, locale=locale)  # 360 × 740, twice as dense, touch
    errors = page.errors
    sign_in_page(page, served, "viewer")
    if locale == "en":
        page.evaluate("""async () => { const token = document.querySelector('meta[name=csrf-token]').content;
            await fetch('/locale', {method: 'POST', headers: {'X-CSRFToken': token,
              'Content-Type': 'application/x-www-form-urlencoded'}, body: 'locale=en'}); }""")
    page.goto(f"{served}/rates")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=60_000)
    page.wait_for_timeout(300)
    shots = Path("/tmp/perf")
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"rates-360-{locale}.png"))
    page.locator(".rates-chart").screenshot(path=str(shots / f"rates-360-{locale}-chart.png"))
    # nothing wider than the phone: no sideways scrolling
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    widest = page.evaluate("""() => Math.max(...[...document.querySelectorAll('#rates-table td')]
        .map((td) => td.getBoundingClientRect().right))""")
    assert widest <= 360
    chart = page.evaluate("() => document.getElementById('rates-chart').getBoundingClientRect().height")
    assert chart >= 200
    cells = page.locator("#rates-table td.place").all_inner_texts()
    names = set(small_demo.layers["communities"]["name"])
    assert cells and any(name in cells[0] for name in names)  # a name beside the code
    total = cells[-1]
    assert total == ("合计" if locale == "zh-CN" else "Total")
    text = page.inner_text("main")
    assert "total" not in text.replace("Total", "")
    # rates as percentages, labelled on the card itself
    first = page.locator("#rates-table tbody tr").first
    assert "%" in first.inner_text()
    # 督办数 on the card too, as the CSV has it
    card = first.locator("td").evaluate_all("(tds) => tds.map((td) => td.dataset.label)")
    assert ("督办数" if locale == "zh-CN" else "cases chased up") in card
    # by department (处置部门): the department's name beside its code, on the phone's width
    page.select_option("#rates-form select[name=by]", "department")
    page.click("#rates-form button[type=submit]")
    page.wait_for_selector("#rates-table[data-by=department] tbody tr")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / f"rates-360-{locale}-department.png"), full_page=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    widest = page.evaluate("""() => Math.max(...[...document.querySelectorAll('#rates-table td')]
        .map((td) => td.getBoundingClientRect().right))""")
    assert widest <= 360
    places = page.locator("#rates-table td.place").all_inner_texts()
    assert any("区环境卫生管理站" in p and "HW" in p for p in places)
    labels = page.locator("#rates-table tbody tr").first.locator("td").evaluate_all(
        "(tds) => tds.map((td) => td.dataset.label)")  # each figure labelled on its card
    assert ("退回数" if locale == "zh-CN" else "sent back") in labels
    assert "department" in page.locator("#rates-csv").get_attribute("href")
    # the first column headed by the grouping, not "code"; the chart the departments' own rate
    zh = locale == "zh-CN"
    assert page.inner_text("#rates-table thead th >> nth=0") == ("处置部门" if zh else "department")
    title = "各部门按期处置率" if zh else "On-time handling rate by department"
    assert page.inner_text("#rates-chart-title") == title
    bars = page.evaluate("() => Chart.getChart('rates-chart').data.labels")
    assert "区环境卫生管理站" in bars
    # the grouping chosen reads whole in its dropdown on the phone
    fits = page.evaluate("""() => { const s = document.querySelector('#rates-form select[name=by]');
        const probe = document.createElement('span'); probe.style.font = getComputedStyle(s).font;
        probe.textContent = s.selectedOptions[0].textContent; document.body.append(probe);
        const room = s.clientWidth - 28; const need = probe.getBoundingClientRect().width; probe.remove();
        return need <= room; }""")
    assert fits
    assert not errors
