"""Plans and the boundaries they were made from: the stored revision, stale plans refused at
submit, approve and adopt, rebasing, retired codes never revived, memory that follows the
database and never runs ahead of it."""

from __future__ import annotations

import shutil
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodata import plan_rows
from geodata.db import get_engine
from geodata.exporter import export_layer
from geodata.revisions import changes_since, current_revision
from geodata.store import read_layer
from layers.onboarding.imports import import_layer
from layers.plans import documents as plan_documents
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from layers.sample_data.demo import write_demo
from tests.conftest import streets_of


def adopt(memory: PlanMemory, plan_id: int) -> dict:
    """Submit, approve and adopt ``plan_id`` as its planner and an admin would."""
    v = plan_rows.get_plan(memory.engine, plan_id)["version"]
    v = plan_workflow.change_status(memory, plan_id, "submit", v, "planner", "planner",
                                    reason="测试")["version"]
    v = plan_workflow.change_status(memory, plan_id, "approve", v, "admin", "admin", reason="测试")["version"]
    return plan_workflow.change_status(memory, plan_id, "adopt", v, "admin", "admin", reason="测试")


def moving_street(memory: PlanMemory, demo) -> tuple[str, int]:
    """A street whose automatic plan changes its communities, and that plan."""
    for street in streets_of(demo):
        plan_id, result = plan_workflow.auto_plan(memory, f"plan {street}", "planner", street=street)
        if result.scores()["households_moved"] > 0:
            return street, plan_id
    raise AssertionError("no street of the demo needs changing")


def test_every_change_of_units_or_communities_raises_the_revision(stored, small_demo, tmp_path):
    memory = PlanMemory(stored)
    start = current_revision(stored)
    assert start >= 1  # the demo's own write
    street, plan_id = moving_street(memory, small_demo)
    report = adopt(memory, plan_id)
    assert current_revision(stored) == start + 1 == report["revision"]
    out = export_layer(stored, "communities", "geojson", tmp_path / "communities.geojson", street=street)
    unchanged = import_layer(stored, "communities", out.path, mode="update")
    assert unchanged.revision is None and current_revision(stored) == start + 1  # nothing changed
    renamed = out.path.read_text(encoding="utf-8").replace('"name":"', '"name":"新', 1)
    out.path.write_text(renamed, encoding="utf-8")
    imported = import_layer(stored, "communities", out.path, mode="update")
    assert imported.revision == current_revision(stored) == start + 2 and imported.written == 1
    logged = changes_since(stored, start)
    assert [c["action"] for c in logged] == ["adopt", "import:communities"]
    assert logged[0]["streets"] == [street] and logged[0]["plan_id"] == plan_id
    assert logged[1]["communities"] == [read_layer(stored, "communities", street=street)["code"].iloc[0]]
    # a refused import raises nothing
    with pytest.raises(ValueError):
        import_layer(stored, "units", out.path, mode="append")
    assert current_revision(stored) == start + 2


def test_a_stale_plan_is_refused_at_submit_approve_and_adopt_then_rebased(stored, small_demo):
    memory = PlanMemory(stored)
    street, street_plan = moving_street(memory, small_demo)
    draft, _ = plan_workflow.auto_plan(memory, "district draft", "planner")
    submitted, _ = plan_workflow.auto_plan(memory, "district submitted", "planner")
    approved, _ = plan_workflow.auto_plan(memory, "district approved", "planner")
    plan_workflow.change_status(memory, submitted, "submit", 1, "planner", "planner", reason="测试")
    v = plan_workflow.change_status(memory, approved, "submit", 1, "planner", "planner",
                                    reason="测试")["version"]
    plan_workflow.change_status(memory, approved, "approve", v, "admin", "admin", reason="测试")
    # a hand edit of the draft in a street the adoption will not touch
    loaded = memory.plan(draft)
    other = next(s for s in streets_of(small_demo) if s != street)
    unit = loaded.graph.codes[loaded.partition.land_members(
        next(c for c in loaded.partition.communities if c.startswith(other)))[0]]
    edit = plan_edits.move_units(memory, draft, [str(unit)], "new", 1, "planner")
    adopted = adopt(memory, street_plan)
    assert adopted["status"] == "adopted" and adopted["streets"] == [street]

    with pytest.raises(plan_workflow.StalePlan, match=f"· {street} changed") as refused:
        plan_workflow.change_status(memory, draft, "submit", edit["version"], "planner", "planner",
                                    reason="测试")
    assert refused.value.details["stale"]["streets"] == [street]
    assert any(c["plan_id"] == street_plan for c in refused.value.details["stale"]["changes"])
    with pytest.raises(plan_workflow.StalePlan, match=street):
        plan_workflow.change_status(memory, submitted, "approve", 2, "admin", "admin", reason="测试")
    with pytest.raises(plan_workflow.StalePlan, match=street):
        plan_workflow.change_status(memory, approved, "adopt", 3, "admin", "admin", reason="测试")
    assert read_layer(stored, "communities", street=street)["code"].tolist() == sorted(
        set(plan_rows.plan_assignment(stored, street_plan)))  # nothing was overwritten

    rebased = plan_workflow.rebase(memory, draft, edit["version"], "planner")
    assert rebased["status"] == "draft" and rebased["streets_replanned"] == [street]
    assert rebased["edits_kept"] == 1 and not rebased["edits_dropped"]
    assert plan_rows.plan_assignment(stored, draft)[str(unit)] == edit["to"]
    # the rebased plan starts from the adopted boundaries: the adopted street is left as it is
    after = plan_rows.plan_assignment(stored, draft)
    adopted_units = read_layer(stored, "units", street=street).set_index("code")["community_code"]
    assert (after.reindex(adopted_units.index) == adopted_units).all()
    assert plan_workflow.stale_changes(memory, plan_rows.get_plan(stored, draft)) is None
    v = plan_workflow.change_status(memory, draft, "submit", rebased["version"], "planner",
                                    "planner", reason="测试")["version"]
    assert v == rebased["version"] + 1
    with pytest.raises(ValueError, match="up to date"):
        plan_workflow.rebase(memory, draft, v, "planner")


def test_a_failed_save_leaves_memory_as_it_was(stored, small_demo, monkeypatch):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "p", "planner", street=streets_of(small_demo)[0])
    loaded = memory.plan(plan_id)
    labels = loaded.partition.labels.copy()
    households = dict(loaded.partition.households)
    not_contiguous = loaded.partition.broken()
    sums = (dict(loaded.partition.area), dict(loaded.partition.perimeter), loaded.partition.cut_length)
    unit = str(loaded.graph.codes[0])

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(plan_rows, "save_moves", broken)
    with pytest.raises(RuntimeError):
        plan_edits.move_units(memory, plan_id, [unit], "new", 1, "planner")
    assert (loaded.partition.labels == labels).all()
    assert loaded.partition.households == households and loaded.partition.broken() == not_contiguous
    p = loaded.partition  # put back exactly, not re-summed
    assert (dict(p.area), dict(p.perimeter), p.cut_length) == sums
    assert memory.plan(plan_id) is loaded and loaded.version == 1


def test_memory_follows_what_another_process_changed(stored, small_demo):
    here, there = PlanMemory(stored), PlanMemory(stored)  # two gunicorn workers
    street, plan_id = moving_street(here, small_demo)
    seen_before = there.units(street).graph.current.copy()
    adopt(here, plan_id)
    graph = there.units(street).graph  # the other process rebuilds: the revision moved
    adopted = read_layer(stored, "units", street=street).set_index("code")["community_code"]
    assert (graph.current == adopted.reindex(graph.codes).to_numpy()).all()
    assert (graph.current != seen_before).any()
    fresh, result = plan_workflow.auto_plan(there, "after", "planner", street=street)
    assert result.scores()["households_moved"] == 0  # the adopted boundaries already meet the rules
    assert plan_edits.compare(there, fresh)["changed_units"] == []


spatialite_copies = count()


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(4)))
def test_no_retired_code_is_ever_revived(order, spatialite_template, small_demo, tmp_path):
    path = tmp_path / f"revive-{next(spatialite_copies)}.sqlite"
    shutil.copy(spatialite_template, path)
    engine = get_engine(f"sqlite:///{path}")
    write_demo(engine, small_demo)
    memory = PlanMemory(engine)
    first, second = streets_of(small_demo)[:2]
    made = [plan_workflow.auto_plan(memory, f"p{i}", "planner", **kw)[0] for i, kw in enumerate(
        [{"street": first}, {"street": first, "fresh": True, "seed": 3}, {"street": second}, {"seed": 5}])]
    retired: set[str] = set()
    for index in order:
        plan_id = made[index]
        plan = plan_rows.get_plan(engine, plan_id)
        if plan_workflow.stale_changes(memory, plan):
            plan_workflow.rebase(memory, plan_id, plan["version"], "planner")
        report = adopt(memory, plan_id)
        current = set(read_layer(engine, "communities")["code"])
        assert not current & retired, f"retired codes revived: {sorted(current & retired)}"
        retired |= set(report["retired"])
        assert not set(report["created"]) & retired
    engine.dispose()


def same_state(loaded, fresh) -> None:
    """``loaded`` (caught up) holds what a fresh read of the plan holds."""
    assert (loaded.partition.labels == fresh.partition.labels).all()
    assert loaded.partition.households == fresh.partition.households
    assert loaded.partition.perimeter.keys() == fresh.partition.perimeter.keys()
    assert all(abs(loaded.partition.perimeter[c] - fresh.partition.perimeter[c]) < 1e-6
               for c in fresh.partition.perimeter)
    assert loaded.partition.cut_edges == fresh.partition.cut_edges
    assert loaded.partition.moved_households == fresh.partition.moved_households
    assert loaded.partition.broken() == fresh.partition.broken()
    assert loaded.version == fresh.version


def test_hand_edits_reach_another_process_without_a_reread(stored, small_demo, monkeypatch):
    here, there = PlanMemory(stored), PlanMemory(stored)  # two gunicorn workers
    street, plan_id = moving_street(here, small_demo)
    theirs = there.plan(plan_id)
    mine = here.plan(plan_id)
    a, b = sorted(mine.partition.communities)[:2]
    unit = str(mine.graph.codes[mine.partition.members(a)[0]])
    v = plan_edits.move_units(here, plan_id, [unit], b, 1, "planner")["version"]
    v = plan_edits.split_community(here, plan_id, b, v, "planner")["version"]
    new = (set(here.plan(plan_id).partition.communities) - set(theirs.partition.communities)).pop()
    v = plan_edits.merge_communities(here, plan_id, a, new, v, "planner")["version"]

    def no_reread(*args, **kwargs):
        raise AssertionError("the other process read the whole plan again")

    monkeypatch.setattr(plan_rows, "plan_assignment", no_reread)
    caught_up = there.plan(plan_id)
    assert caught_up is theirs  # the same object, brought up to date from the changed rows
    monkeypatch.undo()
    same_state(caught_up, PlanMemory(stored).plan(plan_id))
    assert caught_up.version == v == 4
    fresh = plan_edits.describe(PlanMemory(stored), plan_id)
    assert plan_edits.describe(there, plan_id)["scores"] == fresh["scores"]


def test_a_rebase_elsewhere_is_read_whole(stored, small_demo):
    here, there = PlanMemory(stored), PlanMemory(stored)
    street, plan_id = moving_street(here, small_demo)
    other = plan_workflow.auto_plan(here, "other", "planner", street=street, fresh=True, seed=2)[0]
    loaded = there.plan(plan_id)
    adopt(here, other)  # the street's boundaries move: the plan is stale
    v = plan_rows.get_plan(stored, plan_id)["version"]
    plan_workflow.rebase(here, plan_id, v, "planner")
    again = there.plan(plan_id)
    assert again is not loaded  # the boundaries moved: nothing of the old one is trusted
    same_state(again, PlanMemory(stored).plan(plan_id))


def test_warming_reads_the_recent_plans_and_follows_the_boundaries(stored, small_demo):
    import threading
    import time

    planner = PlanMemory(stored)
    street, plan_id = moving_street(planner, small_demo)
    second = plan_workflow.auto_plan(planner, "second", "planner", street=street, fresh=True, seed=4)[0]
    server = PlanMemory(stored, capacity=2)
    assert server.warm(prepare=plan_documents.prepare) == [second, plan_id]  # the newest first
    warmed = server.plan(plan_id)
    assert server.plan(plan_id) is warmed
    assert set(warmed.caches.outlines) == set(warmed.partition.communities)  # outlines ready
    assert warmed.caches.described[0] == warmed.version
    stop = threading.Event()
    thread = threading.Thread(target=server.keep_warm, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        adopt(planner, plan_id)  # the boundaries change: the warm copies are rebuilt unasked
        revision = current_revision(stored)
        for _ in range(600):
            warm = server._plans.get((second, None))  # the whole plan (no district's part)
            if all(u.revision == revision for u in server._units.values()) and \
                    warm is not None and warm.revision == revision:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the warm memory did not follow the adoption")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    same_state(server.plan(second), PlanMemory(stored).plan(second))
