"""Adoption read before the click: what adopting a plan would change, named; the rules it breaks,
refused without a written reason; and the grid put right after it — cells regenerated inside
their communities, supervisors passed to the successor cells, open cases placed again.

Defects reproduced: adoption asked "确定采用？" with nothing named, and left cells straddling two
communities and carrying retired codes with nothing to do about them; a case reported in cell
420103003002001 (精武社区) was filed under community 420103003005; approval and adoption accepted
a plan with a non-contiguous community and six outside the household range without a word."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pytest
from sqlalchemy import select, text

from geodata import incident_rows, plan_rows
from geodata.accounts import create_user
from geodata.crs import to_metric
from geodata.errors import Refused
from geodata.models import AuditLog
from geodata.store import read_layer
from layers.incidents.loop import OPEN
from layers.plans import adoption
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from tests.conftest import make_app, streets_of

REASON = "街道办事处会议决定保留现状社区，待人口普查后再调整"


def breaking_plan(engine, demo, street_index: int = 2) -> tuple[PlanMemory, int, int, dict]:
    """An automatic plan of one street, then two hand edits that break a rule each: one unit
    made a community of its own (below the household minimum) and one unit given to a community
    it does not touch (not contiguous). Returns the memory, the plan, its version and the edits."""
    memory = PlanMemory(engine)
    street = streets_of(demo)[street_index]
    plan_id, _ = plan_workflow.auto_plan(memory, "违规方案", "planner", street=street)
    loaded = memory.plan(plan_id)
    g, p = loaded.graph, loaded.partition
    housed = [u for u in range(len(g)) if g.households[u] > 0 and not g.barrier[u]]
    alone = housed[0]
    moved = plan_edits.move_units(memory, plan_id, [str(g.codes[alone])], "new", 1, "planner")
    small = moved["to"]
    # a unit of another community that touches none of target's units
    target = next(c for c in p.communities if c not in (small, p.labels[alone]))
    members = set(p.members(target).tolist())
    far = next(u for u in housed if p.labels[u] not in (target, small)
               and not members & set(g.neighbours(u).tolist()) and u != alone)
    version = plan_edits.move_units(memory, plan_id, [str(g.codes[far])], target, moved["version"],
                                    "planner")["version"]
    return memory, plan_id, version, {"small": small, "target": target, "far": str(g.codes[far])}


def test_the_preview_names_what_adopting_would_change(stored, small_demo):
    memory, plan_id, version, edits = breaking_plan(stored, small_demo)
    preview = adoption.adoption_preview(memory, plan_id)
    street = streets_of(small_demo)[2]
    names = dict(zip(small_demo.layers["streets"]["code"], small_demo.layers["streets"]["name"], strict=True))
    assert preview["streets"] == [{"code": street, "name": names[street]}]
    # worked out again here from the stored plan and units
    plan = plan_rows.plan_assignment(stored, plan_id)
    units = read_layer(stored, "units", street=street).set_index("code")
    now, then = plan.reindex(units.index), units["community_code"]
    households = units["households"].fillna(0).astype(int)
    before, after = set(then.dropna()), set(now)
    assert {c["code"] for c in preview["created"]} == after - before and edits["small"] in after - before
    assert {c["code"] for c in preview["retired"]} == before - after
    moved = now != then
    touched = set(now[moved]) | set(then[moved].dropna())
    assert {c["code"] for c in preview["changed"]} == (before & after) & touched
    for c in preview["changed"]:
        assert c["households_before"] == households[then == c["code"]].sum()
        assert c["households_after"] == households[now == c["code"]].sum()
        assert c["name"]  # names beside codes
    for c in preview["created"]:
        assert c["households"] == households[now == c["code"]].sum() and c["name"]
    assert preview["households_moved"] == households[moved].sum() > 0
    assert preview["units_moved"] == moved.sum()
    # the rules: the one-unit community below the minimum, the far unit's community in two pieces
    rules = {(r["rule"], r["community_code"]): r for r in preview["broken_rules"]}
    low = rules[("below_minimum", edits["small"])]
    assert low["limit"] == 1000 and low["value"] == households[now == edits["small"]].sum()
    assert low["community_name"]
    assert rules[("not_contiguous", edits["target"])]["value"] == 2
    for rule, code in rules:
        total = households[now == code].sum()
        assert rule == "not_contiguous" or (total < 1000 if rule == "below_minimum" else total > 3000)
    # a straddling cell holds units that go to two communities, each share named
    cells = read_layer(stored, "grid_cells", prefix={"code": street})
    points = gpd.GeoDataFrame({"unit": units.index}, geometry=units.geometry.representative_point().values,
                              crs=4326)
    held = gpd.sjoin(points, cells[["code", "geometry"]], predicate="within").drop_duplicates("unit")
    split_by_plan = held.assign(plan=now.reindex(held["unit"]).to_numpy()).groupby("code")["plan"].nunique()
    straddling = {c["code"]: c for c in preview["straddling_cells"]}
    assert set(split_by_plan[split_by_plan > 1].index) <= set(straddling) and straddling
    for cell in straddling.values():
        assert len(cell["communities"]) >= 2 and abs(sum(x["share"] for x in cell["communities"]) - 1) < 0.01
        assert all(x["name"] for x in cell["communities"])
    # the open cases in the cells that change, counted again
    affected = set(straddling) | {c["code"] for c in preview["cells_with_retired_code"]} \
        | set(preview["cells_to_renumber"])
    cases = read_layer(stored, "incidents")
    expected = cases[cases["status"].isin(OPEN) & cases["grid_code"].isin(affected)]
    assert preview["open_cases"]["count"] == len(expected)
    assert {c["code"] for c in preview["open_cases"]["listed"]} == set(expected["code"])
    # the supervisors named on those cells
    on_cells = cells[cells["code"].isin(affected)]
    assert {s["name"] for s in preview["supervisors"]} >= set(on_cells["supervisor"].dropna())
    # nothing was written
    assert plan_rows.get_plan(stored, plan_id)["version"] == version
    assert set(read_layer(stored, "communities", street=street)["code"]) == before


def test_a_plan_that_breaks_a_rule_goes_on_only_with_a_written_reason(stored, small_demo):
    memory, plan_id, v, edits = breaking_plan(stored, small_demo)
    for blank in (None, "", "   \n "):
        with pytest.raises(plan_workflow.RulesBroken) as refused:
            plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner", reason=blank)
        assert refused.value.status == 422
        assert "新社区" in str(refused.value) and edits["small"] in str(refused.value)
        assert {r["rule"] for r in refused.value.details["rules"]} >= {"below_minimum", "not_contiguous"}
    with pytest.raises(Refused, match="at most 1000"):
        plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner", reason="理" * 1001)
    plan = plan_rows.get_plan(stored, plan_id)
    assert plan["status"] == "draft" and plan["version"] == v  # refused: nothing changed
    v = plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner",
                                    reason=REASON)["version"]
    with pytest.raises(plan_workflow.RulesBroken):
        plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin")
    v = plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin", reason="同意")["version"]
    with pytest.raises(plan_workflow.RulesBroken, match="adopting it needs a written reason"):
        plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin")
    assert plan_rows.get_plan(stored, plan_id)["status"] == "approved"
    report = plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin", reason="予以采用")
    assert report["status"] == "adopted" and report["reason"] == "予以采用"
    assert report["preview"]["broken_rules"] == report["broken_rules"]
    # each step keeps its reason (the timeline, the audit log)
    with stored.connect() as conn:
        logged = {a: d for a, d in conn.execute(select(AuditLog.action, AuditLog.detail).where(
            AuditLog.object_code == str(plan_id), AuditLog.layer == "plans"))}
    assert logged["plan:submitted"]["reason"] == REASON and logged["plan:approved"]["reason"] == "同意"
    assert logged["plan:adopt"]["reason"] == "予以采用"
    assert any(r["community_code"] == edits["small"] for r in logged["plan:submitted"]["broken_rules"])


def test_a_plan_within_the_rules_needs_no_reason(stored, small_demo):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "合规", "planner", street=streets_of(small_demo)[0])
    assert adoption.broken_rules(memory, plan_id) == []
    v = plan_workflow.change_status(memory, plan_id, "submit", 1, "planner", "planner")["version"]
    assert plan_rows.get_plan(stored, plan_id)["status"] == "submitted" and v == 2


def adopt(memory, plan_id, v):
    for action, who in (("submit", "planner"), ("approve", "admin"), ("adopt", "admin")):
        answer = plan_workflow.change_status(memory, plan_id, action, v, who, who, reason=REASON)
        v = answer["version"]
    return answer


def test_regeneration_puts_cells_supervisors_and_cases_right(stored, small_demo):
    """After adoption: every cell inside one community under its code, no retired code, every
    supervisor's scope and cells existing, every open case in the cell holding its point and
    filed under that cell's community — and a case reported afterwards too."""
    memory, plan_id, v, _ = breaking_plan(stored, small_demo, street_index=0)
    street = streets_of(small_demo)[0]
    preview = adoption.adoption_preview(memory, plan_id)
    retired_cell = preview["cells_with_retired_code"][0]["code"]
    retired_community = preview["retired"][0]["code"]
    with stored.begin() as conn:
        incident_rows.assign(conn, "网格员甲", retired_cell, "admin")
    create_user(stored, "网格员甲", "supervisor", "x", retired_cell, actor="admin")
    create_user(stored, "网格长乙", "supervisor", "x", retired_community, actor="admin")
    report = adopt(memory, plan_id, v)
    assert retired_community in report["retired"] and retired_cell in report["cells_with_retired_code"]
    # adopted, the cells not yet regenerated: a case reported now is filed under its cell's
    # community (the cell's supervisor works there), not under the community drawn at its point
    before = read_layer(stored, "communities")
    with stored.connect() as conn:
        located = [incident_rows.locate(conn, lon, lat)
                   for lon, lat in shapely_points_in(before[before["street_code"] == street])]
    cell_community = read_layer(stored, "grid_cells").set_index("code")["community_code"]
    in_cells = [f for f in located if f["grid_code"]]
    assert in_cells and all(f["community_code"] == cell_community[f["grid_code"]] for f in in_cells)
    done = adoption.regenerate_cells(stored, plan_id, "admin")

    communities = read_layer(stored, "communities")
    live = set(communities["code"])
    cells = read_layer(stored, "grid_cells")
    here = cells[cells["code"].str.startswith(street)]
    assert (cells["code"].str[:12] == cells["community_code"]).all()
    assert cells["community_code"].isin(live).all()  # no cell with a retired code
    # every cell inside one community (beyond drawing noise)
    metric = to_metric(here)[["code", "geometry"]]
    area = communities[communities["street_code"] == street][["code", "geometry"]].to_crs(metric.crs)
    pieces = gpd.overlay(metric, area.rename(columns={"code": "community"}), keep_geom_type=True)
    pieces = pieces[pieces.area > 1.0]
    assert (pieces.groupby("code")["community"].nunique() == 1).all()
    # supervisors pass to the successor cells and communities
    with stored.connect() as conn:
        scopes = dict(conn.execute(text("SELECT name, scope_code FROM users")).all())
        held = incident_rows.assignments(conn, user="网格员甲")
    assert scopes["网格员甲"] in set(cells["code"]) and scopes["网格员甲"] != retired_cell
    assert scopes["网格长乙"] in live and scopes["网格长乙"] == preview["successors"][retired_community]
    assert [a["cell_code"] for a in held] == [scopes["网格员甲"]]
    assert {"user": "网格员甲", "from": retired_cell, "to": scopes["网格员甲"]} in done["assignments"]
    assert retired_cell in done["removed"] and done["communities"]
    assert not set(done["removed"]) & set(cells["code"])  # what it says it removed is gone, and only that
    assert all(c["name"] for c in done["communities"])
    # every open case in the cell holding its point, under the cell's community
    cases = read_layer(stored, "incidents")
    open_here = cases[cases["status"].isin(OPEN) & cases["grid_code"].fillna("").str.startswith(street)]
    assert len(open_here)
    polygons = cells.set_index("code")
    for case in open_here.itertuples():
        assert polygons.geometry[case.grid_code].covers(case.geometry)
        assert case.community_code == polygons.community_code[case.grid_code] == case.grid_code[:12]
    # a case reported afterwards anywhere in the street: its cell and community agree
    inside = shapely_points_in(communities[communities["street_code"] == street])
    with stored.connect() as conn:
        for lon, lat in inside:
            found = incident_rows.locate(conn, lon, lat)
            if found["grid_code"]:
                assert found["community_code"] == found["grid_code"][:12]
    assert plan_rows.get_plan(stored, plan_id)["adoption"]["regenerated"]["cells"] == done["cells"]
    # a cell rule the regeneration could not meet names its community beside the code
    names = dict(zip(communities["code"], communities["name"], strict=True))
    for reason in done["problems"]:
        for code in re.findall(r"(?<!\d)\d{12}(?!\d)", reason):
            assert f"{names[code]} · {code}" in reason, reason


def shapely_points_in(frame, n: int = 60) -> list[tuple[float, float]]:
    """Points spread over ``frame``'s polygons (a grid, those inside kept)."""
    import shapely

    minx, miny, maxx, maxy = frame.total_bounds
    xs, ys = np.meshgrid(np.linspace(minx, maxx, n), np.linspace(miny, maxy, n))
    union = shapely.union_all(frame.geometry.values)
    keep = shapely.contains_xy(union, xs.ravel(), ys.ravel())
    return list(zip(xs.ravel()[keep].tolist(), ys.ravel()[keep].tolist(), strict=True))[::7]


def test_regeneration_is_refused_before_adoption(stored, small_demo):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "草稿", "planner", street=streets_of(small_demo)[0])
    with pytest.raises(Refused, match="draft"):
        adoption.regenerate_cells(stored, plan_id, "admin")


def test_demo_cases_carry_the_community_of_their_cell(small_demo):
    cases = small_demo.layers["incidents"]
    assert (cases["community_code"] == cases["grid_code"].str[:12]).all()


# --- the API ---------------------------------------------------------------------------------------


@pytest.fixture
def site(db_url, stored, small_demo):
    from tests.webhelpers import make_accounts

    app = make_app(db_url, BASEMAP="none")
    make_accounts(app, small_demo)
    return app


def test_the_api_previews_refuses_without_a_reason_and_regenerates_in_the_background(site, stored,
                                                                                     small_demo):
    from layers.worker import run_one
    from tests.webhelpers import signed_in

    planner, ph = signed_in(site, "planner", "/plans")
    admin, ah = signed_in(site, "admin", "/plans")
    viewer, _ = signed_in(site, "viewer", "/plans")
    street = streets_of(small_demo)[2]
    plan_id = planner.post("/api/plans", json={"name": "接口", "street": street},
                           headers=ph).json["plan_id"]
    unit = planner.get(f"/api/plans/{plan_id}/units").json["features"][0]["properties"]["code"]
    small = planner.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                         headers=ph).json["to"]
    preview = viewer.get(f"/api/plans/{plan_id}/adoption")
    assert preview.status_code == 200 and preview.json["streets"][0]["code"] == street
    assert any(r["community_code"] == small and r["rule"] == "below_minimum"
               for r in preview.json["broken_rules"])
    # without a reason: 422, problem details naming the rules; nothing changed
    refused = planner.post(f"/api/plans/{plan_id}/status", json={"action": "submit", "version": 2},
                           headers=ph)
    assert refused.status_code == 422 and refused.content_type.startswith("application/problem+json")
    assert refused.json["code"] == "RulesBroken" and small in refused.json["detail"]
    assert refused.json["rules"] == preview.json["broken_rules"]
    for bad in (["a list"], "x" * 1001):
        answer = planner.post(f"/api/plans/{plan_id}/status",
                              json={"action": "submit", "version": 2, "reason": bad}, headers=ph)
        assert answer.status_code == 400
    assert planner.get(f"/api/plans/{plan_id}").json["status"] == "draft"
    # regeneration is for adopted plans
    assert admin.post(f"/api/plans/{plan_id}/regenerate-cells", json={}, headers=ah).status_code == 400
    v = 2
    for client, headers, action in ((planner, ph, "submit"), (admin, ah, "approve"), (admin, ah, "adopt")):
        answer = client.post(f"/api/plans/{plan_id}/status",
                             json={"action": action, "version": v, "reason": REASON}, headers=headers)
        assert answer.status_code == 200, answer.json
        v = answer.json["version"]
    timeline = viewer.get(f"/api/plans/{plan_id}/timeline").json["timeline"]
    steps = [s for s in timeline if s["action"] in ("submitted", "approved", "adopt")]
    assert [s["detail"].get("reason") for s in steps] == [REASON] * 3
    started = planner.post(f"/api/plans/{plan_id}/regenerate-cells", json={}, headers=ph)
    assert started.status_code == 202
    assert run_one(stored)["status"] == "done"
    job = planner.get(started.json["url"]).json
    assert job["status"] == "done" and job["result"]["cells"] > 0
    assert all(c["name"] for c in job["result"]["communities"])
    kept = admin.get(f"/api/plans/{plan_id}").json["adoption"]["regenerated"]
    assert kept["cells"] == job["result"]["cells"]
