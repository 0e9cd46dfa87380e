"""Stored plans: automatic plans, hand edits, version conflicts, approval, adoption, comparison."""

from __future__ import annotations

import pytest
import shapely
from sqlalchemy import func, select

from geodata import plan_rows
from geodata.models import AuditLog, CommunityHistory
from geodata.store import read_layer
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from tests.conftest import make_app


@pytest.fixture
def memory(stored) -> PlanMemory:
    """What one process (the app, the worker) keeps in memory about plans."""
    return PlanMemory(stored)


def first_street(demo) -> str:
    return demo.layers["streets"]["code"].iloc[0]


def test_auto_plan_of_a_street_is_stored_as_a_draft(stored, memory, small_demo):
    street = first_street(small_demo)
    plan_id, result = plan_workflow.auto_plan(memory, "第一版", "planner", street=street)
    plan = plan_rows.get_plan(stored, plan_id)
    assert plan["status"] == "draft" and plan["version"] == 1 and plan["author"] == "planner"
    assignment = plan_rows.plan_assignment(stored, plan_id)
    assert len(assignment) == (small_demo.layers["units"]["street_code"] == street).sum()
    assert (assignment == result.assignment.reindex(assignment.index)).all()
    assert plan["scores"]["outside_bounds"] == result.scores()["outside_bounds"]


def test_hand_edits_report_live_scores_and_violations(stored, memory, small_demo):
    street = first_street(small_demo)
    plan_id, _ = plan_workflow.auto_plan(memory, "edit", "planner", street=street)
    s = memory.plan(plan_id)
    code = sorted(s.partition.households)[0]
    members = s.partition.members(code)
    unit = str(s.graph.codes[members[0]])
    neighbour = next(s.partition.labels[v] for m in members for v in s.graph.neighbours(m)
                     if s.partition.labels[v] != code)
    before = {c: s.partition.households[c] for c in (code, neighbour)}
    moved = int(s.graph.households[members[0]])
    answer = plan_edits.move_units(memory, plan_id, [unit], neighbour, 1, "planner")
    assert answer["version"] == 2
    figures = {c["community_code"]: c for c in answer["communities"]}
    assert figures[code]["households"] == before[code] - moved
    assert figures[neighbour]["households"] == before[neighbour] + moved
    assert plan_rows.plan_assignment(stored, plan_id)[unit] == neighbour
    # moving every unit out leaves the community empty; a rule break is reported, not refused
    rest = [str(s.graph.codes[i]) for i in s.partition.members(code)]
    answer = plan_edits.move_units(memory, plan_id, rest[:1], "new", 2, "planner")
    new = answer["to"]
    assert new.startswith(street) and len(new) == 12 and new not in set(s.graph.current)
    assert any(v["rule"] == "below_minimum" and v["community_code"] == new and v["limit"] == s.rules.minimum
               and v["value"] == c["households"]
               for c in answer["communities"] if c["community_code"] == new for v in c["violations"])


def test_two_planners_saving_the_same_version_conflict(stored, memory, small_demo):
    plan_id, _ = plan_workflow.auto_plan(memory, "race", "planner", street=first_street(small_demo))
    s = memory.plan(plan_id)
    a, b = (str(c) for c in s.graph.codes[:2])
    target = s.partition.labels[0]
    plan_edits.move_units(memory, plan_id, [b], target, 1, "planner-a")
    with pytest.raises(plan_rows.VersionConflict, match="nothing was overwritten"):
        plan_edits.move_units(memory, plan_id, [a], "new", 1, "planner-b")
    assert plan_rows.get_plan(stored, plan_id)["version"] == 2


def test_split_and_merge(stored, memory, small_demo):
    plan_id, _ = plan_workflow.auto_plan(memory, "split", "planner", street=first_street(small_demo))
    s = memory.plan(plan_id)
    code = max(s.partition.households, key=s.partition.households.get)
    total = s.partition.households[code]
    answer = plan_edits.split_community(memory, plan_id, code, 1, "planner")
    parts = {c["community_code"]: c["households"] for c in answer["communities"]}
    assert sum(parts.values()) == total and len(parts) == 2
    assert all(not any(v["rule"] == "not_contiguous" for v in c["violations"]) for c in answer["communities"])
    answer = plan_edits.merge_communities(memory, plan_id, code, answer["to"], answer["version"], "planner")
    assert {c["community_code"]: c["households"] for c in answer["communities"]}[code] == total


def test_workflow_roles_and_adoption(stored, memory, small_demo):
    street = first_street(small_demo)
    plan_id, result = plan_workflow.auto_plan(memory, "adopt me", "planner", street=street)
    with pytest.raises(plan_workflow.WorkflowError, match="approved"):
        plan_workflow.change_status(memory, plan_id, "adopt", 1, "admin", "admin", reason="测试")
    refused = "a planner may not take the step “approve” on a plan"
    with pytest.raises(plan_workflow.WorkflowError, match=refused):
        plan_workflow.change_status(memory, plan_id, "approve", 1, "planner", "planner", reason="测试")
    v = plan_workflow.change_status(memory, plan_id, "submit", 1, "planner", "planner",
                                    reason="测试")["version"]
    with pytest.raises(plan_workflow.WorkflowError, match="needs a comment"):
        plan_workflow.change_status(memory, plan_id, "reject", v, "admin", "admin")
    v = plan_workflow.change_status(memory, plan_id, "reject", v, "admin", "admin", "太大了")["version"]
    assert plan_rows.get_plan(stored, plan_id)["status"] == "rejected"
    v = plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner",
                                    reason="测试")["version"]
    v = plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin", reason="测试")["version"]
    with pytest.raises(plan_workflow.WorkflowError, match="only drafts"):
        plan_edits.move_units(memory, plan_id, [str(result.graph.codes[0])], "new", v, "planner")

    before = read_layer(stored, "communities", street=street)
    report = plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin", reason="测试")
    assert report["status"] == "adopted"
    after = read_layer(stored, "communities", street=street)
    assert set(after["code"]) == set(result.assignment.unique())
    # dissolved from the units: no gaps and no overlaps, the street covered exactly
    assert shapely.coverage_is_valid(after.geometry.values)
    outline = small_demo.layers["streets"].set_index("code").geometry[street]
    assert abs(shapely.union_all(after.geometry.values).area - outline.area) < 1e-9
    units = read_layer(stored, "units", street=street).set_index("code")["community_code"]
    assert (units == result.assignment.reindex(units.index)).all()
    with stored.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(CommunityHistory)).scalar_one()
        audit = conn.execute(select(AuditLog.action)).scalars().all()
    assert kept == len(before) and "plan:adopt" in audit
    facilities = read_layer(stored, "facilities")
    inside = facilities[facilities["community_code"].fillna("").str.startswith(street)]
    polygons = after.set_index("code").geometry
    assert all(polygons[c].covers(p) for c, p in zip(inside["community_code"], inside.geometry, strict=True))
    assert isinstance(report["straddling_cells"], list)


def test_compare_with_the_current_boundaries(stored, memory, small_demo):
    plan_id, result = plan_workflow.auto_plan(memory, "compare", "planner", street=first_street(small_demo))
    diff = plan_edits.compare(memory, plan_id)
    current = result.graph.current
    pairs = zip(result.graph.codes, result.partition.labels, current, strict=True)
    changed = {(str(u), c) for u, c, was in pairs if c != was}
    assert {(d["unit"], d["to"]) for d in diff["changed_units"]} == changed
    assert diff["scores"]["outside_bounds"]["plan"] <= diff["scores"]["outside_bounds"]["other"]


def test_bridges_link_the_banks_of_the_river(stored, memory, small_demo):
    from layers.plans.files import units_from_database

    units, adjacency = units_from_database(stored)
    links = adjacency[adjacency["shared_m"] < 0.01]
    assert len(links) > 0
    info = units.set_index("code")
    assert (info.loc[links["unit_a"], "land_use"].to_numpy() != "water").all()
    assert (info.loc[links["unit_a"], "street_code"].to_numpy()
            == info.loc[links["unit_b"], "street_code"].to_numpy()).all()
    # the linked units do not share an edge: they face each other across the water
    rook = set(zip(small_demo.adjacency["unit_a"], small_demo.adjacency["unit_b"], strict=True))
    assert any((a, b) not in rook for a, b in zip(links["unit_a"], links["unit_b"], strict=True))


def test_adoption_keeps_provisional_codes_flagged_until_the_code_table(stored, memory, small_demo, db_url,
                                                                        tmp_path):
    """A street and its communities with provisional codes (临时代码): a plan adopted over them
    keeps the flag on the codes it keeps and gives it to the code it creates, in the layer, the
    API and the exports; the official code table then replaces them."""
    import json

    import pandas as pd
    from sqlalchemy import text

    from geodata.code_table import apply_code_table
    from geodata.exporter import export_layer
    from tests.webhelpers import make_accounts, sign_in

    street = first_street(small_demo)
    with stored.begin() as conn:
        conn.execute(text("UPDATE streets SET provisional = :t WHERE code = :s"), {"t": True, "s": street})
        conn.execute(text("UPDATE communities SET provisional = :t WHERE street_code = :s"),
                     {"t": True, "s": street})
    plan_id, _ = plan_workflow.auto_plan(memory, "provisional", "planner", street=street)
    s = memory.plan(plan_id)
    biggest = max(s.partition.households, key=s.partition.households.get)
    split = plan_edits.split_community(memory, plan_id, biggest, 1, "planner")
    created = split["to"]
    v = split["version"]
    v = plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner",
                                    reason="测试")["version"]
    v = plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin", reason="测试")["version"]
    report = plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin", reason="测试")
    assert created in report["created"]
    communities = read_layer(stored, "communities")
    here = communities[communities["street_code"] == street]
    assert created in set(here["code"]) and here["provisional"].all()
    assert not communities.loc[communities["street_code"] != street, "provisional"].any()
    # the API
    app = make_app(db_url, BASEMAP="none")
    make_accounts(app, small_demo)
    client = app.test_client()
    assert sign_in(client, "planner").status_code == 302
    items = client.get("/api/collections/communities/items?limit=1000").json["features"]
    flags = {f["id"]: f["properties"]["provisional"] for f in items}
    assert set(here["code"]) <= set(flags) and all(flags[c] is True for c in here["code"])
    # the exports
    export_layer(stored, "communities", "geojson", tmp_path / "out.geojson")
    exported = json.loads((tmp_path / "out.geojson").read_text(encoding="utf-8"))["features"]
    assert all(f["properties"]["provisional"] is (f["properties"]["street_code"] == street) for f in exported)
    # the official code table: the street and its communities by name
    official_street = street[:6] + "777"
    rows = [{"code": official_street, "name": small_demo.layers["streets"].set_index("code")["name"][street],
             "parent": street[:6]}]
    rows += [{"code": official_street + f"{k + 1:03d}", "name": name, "parent": official_street}
             for k, name in enumerate(here.sort_values("code")["name"])]
    table = tmp_path / "codes.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    result = apply_code_table(stored, table)
    assert result.streets == {street: official_street}
    assert set(result.communities) == set(here["code"])
    after = read_layer(stored, "communities", street=official_street)
    assert len(after) == len(here) and not after["provisional"].any()
