"""Plans over HTTP: automatic plans (a street at once, the district as a background job), hand
edits, conflicts, approval by role, comparison and export; and the plan page in Chromium."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import shapely

from layers.sample_data.demo import write_demo
from layers.worker import run_one
from tests.conftest import demo_site, make_app
from tests.webhelpers import csrf_token, make_accounts, served_copy, sign_in, sign_in_page


@pytest.fixture
def site(db_url, engine, small_demo):
    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    return app


def browser_client(app, role):
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    token = csrf_token(client.get("/plans").get_data(as_text=True))
    return client, {"X-CSRFToken": token}


def test_a_street_plan_at_once_and_a_district_plan_in_the_background(site, engine, small_demo):
    client, headers = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    answer = client.post("/api/plans", json={"name": "街道方案", "street": street}, headers=headers)
    assert answer.status_code == 201 and answer.json["scores"]["non_contiguous"] == 0
    answer = client.post("/api/plans", json={"name": "全区方案"}, headers=headers)
    assert answer.status_code == 202
    job = client.get(answer.json["url"]).json
    assert job["status"] == "queued"
    done = run_one(engine)  # the worker process's loop, once
    assert done["status"] == "done" and done["progress"] == 1.0
    job = client.get(answer.json["url"]).json
    plan = client.get(f"/api/plans/{job['result']['plan_id']}").json
    assert plan["status"] == "draft" and plan["scores"]["units"] == len(small_demo.layers["units"])
    names = [p["name"] for p in client.get("/api/plans").json["plans"]]
    assert names == ["全区方案", "街道方案"]
    assert "街道方案" in client.get("/plans").get_data(as_text=True)


def test_edits_conflicts_and_bad_requests(site, small_demo):
    client, headers = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = client.post("/api/plans", json={"name": "p", "street": street}, headers=headers).json["plan_id"]
    units = client.get(f"/api/plans/{plan_id}/units").json["features"]
    unit = units[0]["properties"]["code"]
    moved = client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                        headers=headers)
    assert moved.status_code == 200 and moved.json["version"] == 2
    assert moved.json["units"] == [unit]
    stale = client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                        headers=headers)
    assert stale.status_code == 409 and "nothing was overwritten" in stale.json["detail"]
    assert client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new"},
                       headers=headers).status_code == 400
    assert client.post(f"/api/plans/{plan_id}/moves", json={"units": ["nope"], "to": "new", "version": 2},
                       headers=headers).status_code == 400
    assert client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 2}
                       ).status_code == 400  # no CSRF token
    assert client.post("/api/plans/999/moves", json={"units": [unit], "to": "new", "version": 1},
                       headers=headers).status_code == 404
    viewer, viewer_headers = browser_client(site, "viewer")
    assert viewer.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 2},
                       headers=viewer_headers).status_code == 403


def test_approval_by_role_comparison_and_export(site, small_demo):
    planner, ph = browser_client(site, "planner")
    admin, ah = browser_client(site, "admin")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = planner.post("/api/plans", json={"name": "p", "street": street}, headers=ph).json["plan_id"]
    assert planner.post(f"/api/plans/{plan_id}/status", json={"action": "approve", "version": 1},
                        headers=ph).status_code == 403
    v = planner.post(f"/api/plans/{plan_id}/status",
                     json={"action": "submit", "version": 1, "reason": "测试"}, headers=ph).json["version"]
    v = admin.post(f"/api/plans/{plan_id}/status", json={"action": "approve", "version": v, "reason": "测试"},
                   headers=ah).json["version"]
    diff = admin.get(f"/api/plans/{plan_id}/compare").json
    assert diff["changed_units"] and diff["scores"]["outside_bounds"]["difference"] < 0
    export = admin.get(f"/api/plans/{plan_id}/export?format=shp")
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.data)) as zf:
        assert {"communities.shp", "communities.prj", "communities.cpg", "scores.json"} <= set(zf.namelist())
    adopted = admin.post(f"/api/plans/{plan_id}/status", json={"action": "adopt", "version": v,
                                                               "reason": "测试"}, headers=ah)
    assert adopted.status_code == 200 and adopted.json["status"] == "adopted"
    assert "straddling_cells" in adopted.json


def test_plan_page_select_move_and_undo(spatialite_url, chromium_page, small_demo):
    from geodata.db import get_engine

    write_demo(get_engine(spatialite_url), small_demo)
    site = make_app(spatialite_url, BASEMAP="none")
    make_accounts(site, small_demo)
    client, headers = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    answer = client.post("/api/plans", json={"name": "浏览器", "street": street}, headers=headers)
    plan_id = answer.json["plan_id"]
    with served_copy(site) as base:
        page = chromium_page(viewport={"width": 1400, "height": 900})
        sign_in_page(page, base, "planner")
        page.goto(f"{base}/plans/{plan_id}")
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
        code = page.evaluate("[...window.gridplan.state.units.keys()][0]")
        community = f"window.gridplan.state.units.get('{code}').feature.properties.community_code"
        before = page.evaluate(community)
        page.evaluate(f"() => {{ window.gridplan.state.units.get('{code}').layer.fire('click'); }}")
        assert "1" in page.inner_text("#selection")
        page.select_option("#move-to", "new")
        page.click("#move")
        page.wait_for_function("() => window.gridplan.state.version === 2")
        after = page.evaluate(community)
        assert after != before and after.startswith(street)
        assert "below the minimum" in page.inner_text("#violations")
        page.click("#undo")
        page.wait_for_function("() => window.gridplan.state.version === 3")
        assert page.evaluate(community) == before
        # lasso: a loop round part of the street selects the units whose inside point it holds
        units = small_demo.layers["units"].query("street_code == @street")
        minx, miny, maxx, maxy = units.total_bounds
        ring = [[minx, miny], [(minx + maxx) / 2, miny], [(minx + maxx) / 2, (miny + maxy) / 2],
                [minx, (miny + maxy) / 2]]
        page.click("#clear")
        page.evaluate("(ring) => window.gridplan.selectWithin(ring)", ring)
        expected = shapely.contains_xy(shapely.Polygon(ring), *np.array(
            [(p.x, p.y) for p in units.geometry.representative_point()]).T).sum()
        assert page.evaluate("window.gridplan.state.selected.size") == expected > 0
        # comparison with the current boundaries: a table of scores, changed units counted
        page.click("#compare")
        page.wait_for_selector("#compare-table:not([hidden])")
        table = page.inner_text("#compare-table")
        assert "Outside the bounds" in table and "outside_bounds" not in table  # names, not keys
        assert "units change community" in page.inner_text("#compare-summary")


def test_split_along_a_drawn_line(site, small_demo):
    client, headers = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    created = client.post("/api/plans", json={"name": "line", "street": street}, headers=headers)
    plan_id = created.json["plan_id"]
    plan = client.get(f"/api/plans/{plan_id}").json
    code = max(plan["communities"], key=lambda c: c["households"])["community_code"]
    units = client.get(f"/api/plans/{plan_id}/units").json["features"]
    mine = [shapely.geometry.shape(f["geometry"]) for f in units if f["properties"]["community_code"] == code]
    minx, miny, maxx, maxy = shapely.union_all(mine).bounds
    middle = (minx + maxx) / 2
    line = [[middle, miny - 0.01], [middle, maxy + 0.01]]  # north to south through the middle
    answer = client.post(f"/api/plans/{plan_id}/split", json={"community": code, "line": line, "version": 1},
                         headers=headers)
    assert answer.status_code == 200, answer.json
    moving = set(answer.json["units"])
    moved = {f["properties"]["code"]: f for f in units if f["properties"]["code"] in moving}
    xs = [shapely.geometry.shape(f["geometry"]).representative_point().x for f in moved.values()]
    assert xs and (all(x > middle for x in xs) or all(x < middle for x in xs))  # one side of the line
    far = [[minx - 1, miny - 1], [minx - 0.9, miny - 1]]
    miss = client.post(f"/api/plans/{plan_id}/split", json={"community": code, "line": far, "version": 2},
                       headers=headers)
    assert miss.status_code == 400 and "does not cut" in miss.json["detail"]
    bad = client.post(f"/api/plans/{plan_id}/split", json={"community": code, "line": "x", "version": 2},
                      headers=headers)
    assert bad.status_code == 400


def test_redo_after_undoing_a_split_recreates_the_community(site, small_demo):
    client, headers = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = client.post("/api/plans", json={"name": "redo", "street": street},
                          headers=headers).json["plan_id"]
    plan = client.get(f"/api/plans/{plan_id}").json
    code = max(plan["communities"], key=lambda c: c["households"])["community_code"]
    split = client.post(f"/api/plans/{plan_id}/split", json={"community": code, "version": 1},
                        headers=headers)
    assert split.status_code == 200
    new, units = split.json["to"], split.json["units"]
    undo = client.post(f"/api/plans/{plan_id}/moves", json={"units": units, "to": code, "version": 2},
                       headers=headers)
    assert undo.status_code == 200 and new not in {c["community_code"] for c in undo.json["communities"]
                                                  if not c.get("removed")}
    redo = client.post(f"/api/plans/{plan_id}/moves", json={"units": units, "to": new, "version": 3},
                       headers=headers)
    assert redo.status_code == 200, redo.json
    assert redo.json["to"] == new
    # a code used before (a current community of another street, or a retired one) is refused
    other = next(c for c in small_demo.layers["communities"]["code"] if not c.startswith(street))
    taken = client.post(f"/api/plans/{plan_id}/moves", json={"units": units, "to": other, "version": 4},
                        headers=headers)
    assert taken.status_code == 400 and taken.headers["Content-Type"] == "application/problem+json"


def test_buttons_are_the_actions_the_role_and_status_allow(site, small_demo):
    planner, ph = browser_client(site, "planner")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = planner.post("/api/plans", json={"name": "roles", "street": street}, headers=ph).json["plan_id"]
    assert planner.get(f"/api/plans/{plan_id}").json["actions"] == ["submit", "edit"]
    viewer, _ = browser_client(site, "viewer")
    assert viewer.get(f"/api/plans/{plan_id}").json["actions"] == []
    page = viewer.get(f"/plans/{plan_id}").get_data(as_text=True)
    assert '"actions": []' in page and '"editable": false' in page
    planner.post(f"/api/plans/{plan_id}/status", json={"action": "submit", "version": 1,
                                                       "reason": "测试"}, headers=ph)
    admin, _ = browser_client(site, "admin")
    assert admin.get(f"/api/plans/{plan_id}").json["actions"] == ["approve", "reject"]
    assert planner.get(f"/api/plans/{plan_id}").json["actions"] == []
