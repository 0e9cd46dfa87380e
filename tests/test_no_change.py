"""Nothing changes when nothing changed: a layer exported and imported back unchanged writes no
row, raises no boundary revision and stales no plan, in every format that round-trips and in
both modes that overwrite; a changed street stales only the plans that touch it, and their
message names that street and the communities of it that changed (names beside codes, ten at
most, then a count), in Chinese and English. Plan numbers are never given twice, so a new plan's
timeline starts empty."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, select

from geodata import plan_rows
from geodata.exporter import FORMATS, export_layer
from geodata.models import Revision
from geodata.revisions import changes_since, current_revision
from geodata.store import layer_counts, read_layer
from layers.onboarding.imports import import_layer
from layers.plans import documents as plan_documents
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from tests.conftest import make_app, streets_of
from tests.webhelpers import make_accounts, signed_in, snapshot

#: the tables an import that changes nothing leaves exactly as they were, row ids included
BOUNDARIES = ("units", "communities", "community_history", "unit_adjacency", "revisions",
              "boundary_changes", "plans", "plan_assignments", "streets", "districts")
SUFFIX = {"shp": "zip"}


def submitted_plan(memory: PlanMemory, street: str | None, name: str) -> int:
    plan_id, _ = plan_workflow.auto_plan(memory, name, "planner", street=street)
    plan_workflow.change_status(memory, plan_id, "submit", 1, "planner", "planner", reason="测试")
    return plan_id


def statuses(memory: PlanMemory, plans: list[int]) -> list[tuple]:
    out = []
    for plan_id in plans:
        plan = plan_rows.get_plan(memory.engine, plan_id)
        out.append((plan["status"], plan["version"], plan_workflow.stale_changes(memory, plan)))
    return out


def boundary_rows(db_url: str) -> dict:
    rows = snapshot(db_url)
    return {name: rows[name] for name in BOUNDARIES}


def test_every_layer_exported_and_imported_back_unchanged_changes_nothing(stored, db_url, small_demo,
                                                                          tmp_path):
    memory = PlanMemory(stored)
    first, second = streets_of(small_demo)[:2]
    plans = [submitted_plan(memory, first, "甲"), submitted_plan(memory, second, "乙"),
             plan_workflow.auto_plan(memory, "全区草案", "planner")[0]]
    revision, seen = current_revision(stored), statuses(memory, plans)
    before = boundary_rows(db_url)
    counts = layer_counts(stored)
    # every format for the layers plans are made of; the others in one format each
    rounds = [(layer, fmt) for layer in ("communities", "units") for fmt in FORMATS]
    rounds += [(layer, "gpkg") for layer, n in counts.items() if n and layer not in ("communities", "units")]
    for layer, fmt in rounds:
        out = export_layer(stored, layer, fmt, tmp_path / f"{layer}.{SUFFIX.get(fmt, fmt)}").path
        for mode in ("update", "replace"):
            report = import_layer(stored, layer, out, mode=mode)
            assert report.revision is None, (layer, fmt, mode)
            if layer in ("communities", "units"):
                assert report.written == 0 and report.deleted == 0, (layer, fmt, mode)
            assert current_revision(stored) == revision, (layer, fmt, mode)
    assert statuses(memory, plans) == seen
    assert all(stale is None for _, _, stale in seen)
    assert boundary_rows(db_url) == before  # not one row rewritten, no history kept of nothing
    assert layer_counts(stored) == counts
    # the plans can still go on: submitted ones be approved
    plan_workflow.change_status(memory, plans[0], "approve", 2, "admin", "admin", reason="测试")


def test_a_changed_street_stales_only_the_plans_touching_it_and_names_what_changed(stored, db_url, small_demo,
                                                                                  tmp_path):
    memory = PlanMemory(stored)
    first, second = streets_of(small_demo)[:2]
    on_first, on_second = submitted_plan(memory, first, "甲"), submitted_plan(memory, second, "乙")
    district = plan_workflow.auto_plan(memory, "全区草案", "planner")[0]
    out = export_layer(stored, "communities", "geojson", tmp_path / "communities.geojson").path
    features = json.loads(out.read_text(encoding="utf-8"))
    mine = [f for f in features["features"] if f["properties"]["street_code"] == first][:12]
    assert len(mine) == 12
    for f in mine:
        f["properties"]["name"] += "新"
    ring = mine[0]["geometry"]["coordinates"][0][0]
    ring[1] = [ring[1][0] + 0.0001, ring[1][1]]  # one vertex of one community moves about 10 m
    edited = tmp_path / "edited.geojson"
    edited.write_text(json.dumps(features, ensure_ascii=False), encoding="utf-8")
    start = current_revision(stored)
    report = import_layer(stored, "communities", edited, mode="replace")  # the whole district's file
    assert report.written == 12 and report.deleted == 12 and report.revision == start + 1
    logged = changes_since(stored, start)
    changed = sorted(f["properties"]["code"] for f in mine)
    assert logged[0]["streets"] == [first] and logged[0]["communities"] == changed

    assert plan_workflow.stale_changes(memory, plan_rows.get_plan(stored, on_second)) is None
    for plan_id in (on_first, district):
        stale = plan_workflow.stale_changes(memory, plan_rows.get_plan(stored, plan_id))
        assert stale["streets"] == [first] and stale["communities"] == changed
    street_name = small_demo.layers["streets"].set_index("code").loc[first, "name"]
    names = {f["properties"]["code"]: f["properties"]["name"] for f in mine}
    with pytest.raises(plan_workflow.StalePlan) as refused:
        plan_workflow.change_status(memory, on_first, "approve", 2, "admin", "admin", reason="测试")
    message = str(refused.value)
    assert f"{street_name} · {first}" in message and second not in message
    shown = [c for c in changed if f"{names[c]} · {c}" in message]
    assert shown == changed[:10] and "and 2 more" in message
    plan_workflow.change_status(memory, on_second, "approve", 2, "admin", "admin",
                                reason="测试")  # the other street goes on

    # the page says it in Chinese, the API in the language asked for
    app = make_app(db_url, BASEMAP="none")
    make_accounts(app, small_demo)
    client, _ = signed_in(app, "planner")
    english = client.get(f"/api/plans/{on_first}").json["stale"]
    assert english["message"].startswith(f"The boundaries of {street_name} · {first} changed")
    assert english["community_names"] == names
    chinese = client.get(f"/api/plans/{on_first}",
                         headers={"Accept-Language": "zh-CN"}).json["stale"]["message"]
    assert f"{street_name} · {first}" in chinese and f"{names[changed[0]]} · {changed[0]}" in chinese
    assert "等 2 个" in chinese and "changed" not in chinese
    assert client.get(f"/api/plans/{on_second}").json["stale"] is None
    admin, admin_headers = signed_in(app, "admin")
    refused = admin.post(f"/api/plans/{on_first}/status", json={"action": "approve", "version": 2,
                                                                "reason": "测试"},
                         headers={**admin_headers, "Accept-Language": "zh-CN"})
    assert refused.status_code == 409
    assert refused.json["detail"].startswith(f"方案 {on_first} 不能批准：方案编制后，")

    # a unit of the second street changes: only the second street's plans (and the district's)
    units = export_layer(stored, "units", "csv", tmp_path / "units.csv", street=second).path
    lines = units.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("households")] = str(int(row[header.index("households")]) + 7)
    units.write_text("\n".join([lines[0], ",".join(row)] + lines[2:]) + "\n", encoding="utf-8-sig")
    report = import_layer(stored, "units", units, mode="update")
    assert report.written == 1
    unit = row[header.index("code")]
    community = read_layer(stored, "units", where={"code": unit})["community_code"].iloc[0]
    stale = plan_workflow.stale_changes(memory, plan_rows.get_plan(stored, on_second))
    assert stale["streets"] == [second] and stale["communities"] == [community]
    assert plan_workflow.stale_changes(memory, plan_rows.get_plan(stored, on_first))["streets"] == [first]


def test_plan_numbers_are_never_given_twice_and_a_new_plan_starts_its_own_history(stored, small_demo):
    memory = PlanMemory(stored)
    street = streets_of(small_demo)[0]
    kept, _ = plan_workflow.auto_plan(memory, "留", "planner", street=street)
    doomed, _ = plan_workflow.auto_plan(memory, "删", "planner", street=street)
    plan_rows.rename_plan(stored, doomed, "删掉", 1, "planner")
    plan_documents.delete(memory, doomed, 2, "planner", "planner")
    fresh, _ = plan_workflow.auto_plan(memory, "新", "planner", street=street)
    assert fresh > doomed > kept
    assert [s["action"] for s in plan_documents.timeline(memory, fresh)] == ["create"]
    copy = plan_documents.duplicate(memory, fresh, None, "planner")["plan_id"]
    plan_documents.delete(memory, copy, 1, "planner", "planner")
    again = plan_workflow.auto_plan(memory, "再", "planner", street=street)[0]
    assert again > copy > fresh
    assert [s["action"] for s in plan_documents.timeline(memory, again)] == ["create"]
    if stored.dialect.name == "sqlite":
        # a database from before plans were counted, whose newest plan was deleted: the audit
        # log still knows its number
        with stored.begin() as conn:
            conn.execute(delete(Revision).where(Revision.name == plan_rows.PLAN_NUMBERS))
        plan_documents.delete(memory, again, 1, "planner", "planner")
        assert plan_workflow.auto_plan(memory, "后", "planner", street=street)[0] > again
        with stored.connect() as conn:
            assert conn.execute(select(Revision.value).where(Revision.name == plan_rows.PLAN_NUMBERS)
                                ).scalar_one() == again + 1
