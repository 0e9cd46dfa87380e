"""The plan page as a planner, an administrator and a viewer use it: plans as documents (names,
rename, duplicate, delete, the list's filters, the timeline), units by view and compressed,
strict JSON from every plan endpoint; and in Chromium each defect found by trying the page as a
new user (each test reproduced it first) and each interaction (the communities table, neighbours
first, paint strokes with undo, naming, role-dependent buttons, errors where the user looks)."""

from __future__ import annotations

import gzip
import json

import pytest

from layers.demo import write_demo
from tests.webhelpers import csrf_token, make_accounts, sign_in
from webmap import create_app


def strict(text: str):
    """JSON as the standard has it: NaN and Infinity refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def site(db_url, engine, small_demo):
    write_demo(engine, small_demo)
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "BASEMAP": "none"})
    make_accounts(app, small_demo)
    return app


def client_of(app, role):
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}


def street_plan(client, headers, demo, name="p", street_index=0) -> tuple[int, str]:
    street = demo.layers["streets"]["code"].iloc[street_index]
    answer = client.post("/api/plans", json={"name": name, "street": street}, headers=headers)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.json["plan_id"], street


def test_every_json_answer_is_strict_json(site, small_demo):
    """Every plan endpoint, on a plan with blind spots (compare once answered "from": NaN)."""
    admin, ah = client_of(site, "admin")
    plan_id, street = street_plan(admin, ah, small_demo)
    other, _ = street_plan(admin, ah, small_demo, "other")
    units = strict(admin.get(f"/api/plans/{plan_id}/units").get_data(as_text=True))["features"]
    unit = units[0]["properties"]["code"]
    answers = [
        admin.get("/api/plans"), admin.get(f"/api/plans?status=draft&author=admin&street={street}"),
        admin.get(f"/api/plans/{plan_id}"),
        admin.get(f"/api/plans/{plan_id}/units?bbox=-180,-90,180,90&zoom=15"),
        admin.get(f"/api/plans/{plan_id}/outlines?zoom=12"), admin.get(f"/api/plans/{plan_id}/timeline"),
        admin.get(f"/api/plans/{plan_id}/compare"), admin.get(f"/api/plans/{plan_id}/compare?with={other}"),
        admin.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                   headers=ah),
    ]
    new = answers[-1].json["to"]
    answers += [
        admin.post(f"/api/plans/{plan_id}/communities/{new}/name", json={"name": "新桥社区", "version": 2},
                   headers=ah),
        admin.post(f"/api/plans/{plan_id}/rename", json={"name": "改名", "version": 3}, headers=ah),
        admin.post(f"/api/plans/{plan_id}/duplicate", json={}, headers=ah),
        admin.post(f"/api/plans/{plan_id}/split", json={"community": new, "version": 4}, headers=ah),
        admin.post(f"/api/plans/{plan_id}/status", json={"action": "submit", "version": 99}, headers=ah),
        admin.post(f"/api/plans/{plan_id}/moves", json={"units": ["nope"], "to": "new", "version": 4},
                   headers=ah),
        admin.get("/api/plans/999"), admin.get(f"/api/plans/{plan_id}/units?bbox=1,2"),
        admin.delete(f"/api/plans/{other}", json={"version": 1}, headers=ah),
    ]
    for answer in answers:
        text = answer.get_data(as_text=True)
        assert answer.status_code < 500, text
        strict(text)
    assert [a.status_code for a in answers[-9:]] == [200, 200, 201, 400, 409, 400, 404, 400, 200]
    blind = strict(answers[7].get_data(as_text=True))["changed_units"]
    assert all(d["from"] is None or isinstance(d["from"], str) for d in blind)


def test_units_are_compressed_by_view_and_simplified(site, small_demo):
    viewer, _ = client_of(site, "viewer")
    admin, ah = client_of(site, "admin")
    plan_id, street = street_plan(admin, ah, small_demo)
    plain = viewer.get(f"/api/plans/{plan_id}/units")
    zipped = viewer.get(f"/api/plans/{plan_id}/units", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.data) < len(plain.data) / 3
    assert strict(gzip.decompress(zipped.data).decode()) == strict(plain.get_data(as_text=True))
    again = viewer.get(f"/api/plans/{plan_id}/units", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304
    everything = strict(plain.get_data(as_text=True))["features"]
    units = small_demo.layers["units"].query("street_code == @street")
    assert len(everything) == len(units)
    minx, miny, maxx, maxy = units.total_bounds
    corner = f"{minx},{miny},{(minx + maxx) / 2},{(miny + maxy) / 2}"
    some = strict(viewer.get(f"/api/plans/{plan_id}/units?bbox={corner}&zoom=13").get_data(as_text=True))
    assert 0 < len(some["features"]) < len(everything)
    outlines = strict(viewer.get(f"/api/plans/{plan_id}/outlines?zoom=12").get_data(as_text=True))
    plan = viewer.get(f"/api/plans/{plan_id}").json
    assert sorted(f["properties"]["code"] for f in outlines["features"]) == sorted(
        c["community_code"] for c in plan["communities"])
    assert viewer.get(f"/api/plans/{plan_id}/units?zoom=x").status_code == 400


def test_names_neighbours_and_colours(site, small_demo):
    planner, ph = client_of(site, "planner")
    plan_id, street = street_plan(planner, ph, small_demo)
    plan = planner.get(f"/api/plans/{plan_id}").json
    communities = {c["community_code"]: c for c in plan["communities"]}
    current = dict(zip(small_demo.layers["communities"]["code"], small_demo.layers["communities"]["name"],
                       strict=True))
    for code, c in communities.items():
        assert c["name"] == current.get(code)
        for n in c["neighbours"]:
            assert code in communities[n]["neighbours"]  # symmetric
            assert communities[n]["colour"] != c["colour"]  # neighbours never share a colour
    unit = planner.get(f"/api/plans/{plan_id}/units").json["features"][0]["properties"]["code"]
    moved = planner.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                         headers=ph).json
    new = moved["to"]
    figures = {c["community_code"]: c for c in moved["communities"]}
    assert figures[new]["neighbours"]  # a one-unit community lies next to the one it came from
    named = planner.post(f"/api/plans/{plan_id}/communities/{new}/name",
                         json={"name": " 新桥  社区 ", "version": 2}, headers=ph)
    assert named.status_code == 200 and named.json["name"] == "新桥 社区" and named.json["version"] == 3
    described = {c["community_code"]: c for c in planner.get(f"/api/plans/{plan_id}").json["communities"]}
    assert described[new]["name"] == "新桥 社区"
    some_other = next(c for c in described if c != new)
    clash = planner.post(f"/api/plans/{plan_id}/communities/{some_other}/name",
                         json={"name": "新桥 社区", "version": 3}, headers=ph)
    assert clash.status_code == 400 and "already called" in clash.json["detail"]
    assert planner.post(f"/api/plans/{plan_id}/communities/{new}/name", json={"name": "", "version": 3},
                        headers=ph).status_code == 400
    viewer, vh = client_of(site, "viewer")
    assert viewer.post(f"/api/plans/{plan_id}/communities/{new}/name", json={"name": "x", "version": 3},
                       headers=vh).status_code == 403


def test_adoption_uses_the_plan_names(site, small_demo, engine):
    from geodata.store import read_layer

    admin, ah = client_of(site, "admin")
    plan_id, _ = street_plan(admin, ah, small_demo)
    unit = admin.get(f"/api/plans/{plan_id}/units").json["features"][0]["properties"]["code"]
    new = admin.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                     headers=ah).json["to"]
    admin.post(f"/api/plans/{plan_id}/communities/{new}/name", json={"name": "长江社区", "version": 2},
               headers=ah)
    v = 3
    for action in ("submit", "approve", "adopt"):
        answer = admin.post(f"/api/plans/{plan_id}/status", json={"action": action, "version": v}, headers=ah)
        assert answer.status_code == 200, answer.json
        v = answer.json["version"]
    communities = read_layer(engine, "communities")
    assert communities.set_index("code").loc[new, "name"] == "长江社区"


def test_rename_duplicate_delete_filters_and_timeline(site, small_demo):
    planner, ph = client_of(site, "planner")
    admin, ah = client_of(site, "admin")
    viewer, vh = client_of(site, "viewer")
    plan_id, street = street_plan(planner, ph, small_demo, "甲")
    other_id, other_street = street_plan(admin, ah, small_demo, "乙", street_index=1)
    assert viewer.post(f"/api/plans/{plan_id}/rename", json={"name": "x", "version": 1},
                       headers=vh).status_code == 403
    renamed = planner.post(f"/api/plans/{plan_id}/rename", json={"name": "甲方案", "version": 1}, headers=ph)
    assert renamed.status_code == 200 and renamed.json["version"] == 2
    assert planner.post(f"/api/plans/{plan_id}/rename", json={"name": "  ", "version": 2},
                        headers=ph).status_code == 400
    copy = planner.post(f"/api/plans/{plan_id}/duplicate", json={"name": "甲 副本"}, headers=ph)
    assert copy.status_code == 201 and copy.json["url"].endswith(str(copy.json["plan_id"]))
    copy_id = copy.json["plan_id"]
    original = planner.get(f"/api/plans/{plan_id}").json
    duplicate = planner.get(f"/api/plans/{copy_id}").json
    assert duplicate["status"] == "draft" and duplicate["author"] == "planner" and duplicate["version"] == 1
    assert duplicate["scores"] == original["scores"] and duplicate["streets"] == original["streets"]
    # the list: by status, by author, by street
    names = lambda query: [p["name"] for p in planner.get(f"/api/plans?{query}").json["plans"]]  # noqa: E731
    assert names("author=admin") == ["乙"]
    assert names(f"street={street}") == ["甲 副本", "甲方案"]
    assert names(f"street={other_street}") == ["乙"]
    planner.post(f"/api/plans/{plan_id}/status", json={"action": "submit", "version": 2}, headers=ph)
    assert names("status=submitted") == ["甲方案"]
    assert planner.get("/api/plans?status=nonsense").status_code == 400
    page = planner.get("/plans?status=submitted").get_data(as_text=True)
    assert "甲方案" in page and "乙" not in page.split("plan-table")[1]
    # delete: a draft only, by its author or an admin
    assert planner.delete(f"/api/plans/{plan_id}", json={"version": 3}, headers=ph).status_code == 403
    assert planner.delete(f"/api/plans/{other_id}", json={"version": 1}, headers=ph).status_code == 403
    assert planner.delete(f"/api/plans/{copy_id}", json={"version": 7}, headers=ph).status_code == 409
    assert planner.delete(f"/api/plans/{copy_id}", json={"version": 1}).status_code == 400  # no CSRF token
    assert planner.delete(f"/api/plans/{copy_id}", json={"version": 1}, headers=ph).status_code == 200
    assert planner.get(f"/api/plans/{copy_id}").status_code == 404
    # the timeline: who did what, with comments
    admin.post(f"/api/plans/{plan_id}/status", json={"action": "reject", "version": 3,
                                                      "comment": "社区太小 too small"}, headers=ah)
    steps = planner.get(f"/api/plans/{plan_id}/timeline").json["timeline"]
    assert [(s["action"], s["actor"]) for s in steps] == [
        ("create", "planner"), ("rename", "planner"), ("duplicate", "planner"), ("submitted", "planner"),
        ("rejected", "admin")]
    assert steps[-1]["comment"] == "社区太小 too small"
