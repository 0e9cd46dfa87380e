"""Undo and redo belong to the plan, on the server: after any sequence of hand edits (moves,
paint strokes, splits, merges, names, new communities) undoing everything gives back the starting
plan exactly — assignment, hand-edit flags, names, codes, figures — and redoing everything the
end; a merge keeps the community merged into, its name and its code, except that a current
community's code outlives one the plan made, whichever way round."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodata import plan_rows
from geodata.errors import Conflict, Refused
from layers.plans import documents as plan_documents
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from tests.conftest import make_app
from tests.webhelpers import make_accounts, signed_in

#: the demo's smallest street (four current communities)
STREET = "420103003"


def state(engine, plan_id: int) -> dict:
    """Everything a planner sees of a stored plan, read afresh (as another process would)."""
    described = plan_documents.describe(PlanMemory(engine), plan_id)
    figures = {c["community_code"]: (c["name"], c["households"], c["population"], c["area_m2"],
                                     c["polsby_popper"], tuple(c["violations"]), tuple(c["neighbours"]))
               for c in described["communities"]}
    return {"assignment": plan_rows.plan_assignment(engine, plan_id).sort_index().to_dict(),
            "edited": sorted(plan_rows.plan_assignment(engine, plan_id, edited=True).index),
            "names": plan_rows.community_names(engine, plan_id), "figures": figures,
            "scores": {k: v for k, v in described["scores"].items() if k != "infeasible"}}


def live_households(memory: PlanMemory, plan_id: int) -> dict:
    """The households of every community as the editing process holds them in memory."""
    p = memory.plan(plan_id).partition
    return {c: int(p.households[c]) for c in p.communities}


EDIT = st.tuples(st.sampled_from(["move", "stroke", "new", "split", "merge", "name", "undo"]),
                 st.integers(0, 10_000), st.integers(0, 10_000))


def apply_edit(memory: PlanMemory, plan_id: int, version: int, edit: tuple, counter: list[int]) -> int:
    """Apply one random edit as the page would send it; returns the plan's version after it."""
    kind, a, b = edit
    engine = memory.engine
    loaded = memory.plan(plan_id)
    p, g = loaded.partition, loaded.graph
    communities = p.communities
    try:
        if kind in ("move", "stroke"):
            units = [str(g.codes[(a + i * 7) % len(g)]) for i in range(1 if kind == "move" else 4)]
            to = communities[b % len(communities)]
            answer = plan_edits.move_units(memory, plan_id, sorted(set(units)), to, version, "planner")
            return answer["version"]
        if kind == "new":  # a new community, named as it is made: one step
            members = p.members(communities[a % len(communities)])
            unit = str(g.codes[members[b % len(members)]])
            answer = plan_edits.move_units(memory, plan_id, [unit], "new", version, "planner")
            counter[0] += 1
            return plan_documents.name_community(memory, plan_id, answer["to"], f"新社区{counter[0]}",
                                                 answer["version"], "planner")["version"]
        if kind == "split":
            return plan_edits.split_community(memory, plan_id, communities[a % len(communities)], version,
                                              "planner")["version"]
        if kind == "merge":
            keep = communities[a % len(communities)]
            neighbours = plan_edits.neighbours_of(loaded, keep) or [c for c in communities if c != keep]
            answer = plan_edits.merge_communities(memory, plan_id, keep, neighbours[b % len(neighbours)],
                                                  version, "planner")
            return answer["version"]
        if kind == "name":
            counter[0] += 1
            return plan_documents.name_community(memory, plan_id, communities[a % len(communities)],
                                                 f"改名{counter[0]}", version, "planner")["version"]
        return plan_edits.replay(memory, plan_id, version, "planner", backwards=True)["version"]
    except (Refused, Conflict):  # nothing to split, nothing to undo …: the plan is as it was
        return plan_rows.get_plan(engine, plan_id)["version"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(EDIT, min_size=1, max_size=8))
def test_undo_everything_gives_back_the_start_and_redo_everything_the_end(stored, edits):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "撤销", "planner", street=STREET)
    start = state(stored, plan_id)
    version, counter = 1, [0]
    for edit in edits:
        version = apply_edit(memory, plan_id, version, edit, counter)
    while plan_rows.step_counts(stored, plan_id)["redo"]:  # the top of the history
        version = plan_edits.replay(memory, plan_id, version, "planner", backwards=False)["version"]
    top = state(stored, plan_id)
    steps = plan_rows.step_counts(stored, plan_id)["undo"]
    for _ in range(steps):
        version = plan_edits.replay(memory, plan_id, version, "planner", backwards=True)["version"]
    assert state(stored, plan_id) == start
    assert live_households(memory, plan_id) == live_households(PlanMemory(stored), plan_id)
    with pytest.raises(Conflict, match="nothing to undo"):
        plan_edits.replay(memory, plan_id, version, "planner", backwards=True)
    other = PlanMemory(stored)  # redo from another process: the history is the plan's
    for _ in range(steps):
        version = plan_edits.replay(other, plan_id, version, "planner", backwards=False)["version"]
    assert state(stored, plan_id) == top
    assert live_households(other, plan_id) == live_households(PlanMemory(stored), plan_id)
    assert plan_rows.step_counts(stored, plan_id) == {"undo": steps, "redo": 0,
                                                      "undo_kind": plan_rows.step_counts(stored, plan_id)[
                                                          "undo_kind"], "redo_kind": None}


def new_community(memory: PlanMemory, plan_id: int, version: int, name: str | None = None) -> tuple[str, int]:
    loaded = memory.plan(plan_id)
    unit = str(loaded.graph.codes[loaded.partition.land_members(loaded.partition.communities[0])[0]])
    answer = plan_edits.move_units(memory, plan_id, [unit], "new", version, "planner")
    version = answer["version"]
    if name:
        version = plan_documents.name_community(memory, plan_id, answer["to"], name, version,
                                                "planner")["version"]
    return answer["to"], version


def test_a_merge_keeps_the_community_merged_into_its_name_and_its_code(stored, small_demo):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "合并", "planner", street=STREET)
    current = small_demo.layers["communities"].set_index("code")["name"]
    loaded = memory.plan(plan_id)
    official = [c for c in loaded.partition.communities if c in current.index]
    into = official[0]
    other = plan_edits.neighbours_of(loaded, into)[0]
    before = state(stored, plan_id)
    merged = plan_edits.merge_communities(memory, plan_id, into, other, 1, "planner")
    assert merged["to"] == into and merged["retired"] == other
    after = state(stored, plan_id)
    assert into in after["figures"] and other not in after["figures"]
    assert after["figures"][into][0] == (current.get(into) if into in current.index else None)
    undone = plan_edits.replay(memory, plan_id, merged["version"], "planner", backwards=True)
    assert set(undone["assignment"].values()) == {other}  # the retired code comes back by undo
    assert state(stored, plan_id) == before


@pytest.mark.parametrize("new_into_official", [True, False])
def test_an_official_code_outlives_a_new_one_whichever_way_round(stored, small_demo, new_into_official):
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "合并", "planner", street=STREET)
    current = set(small_demo.layers["communities"]["code"])
    new, version = new_community(memory, plan_id, 1, "机场新社区")
    loaded = memory.plan(plan_id)
    official = next(c for c in plan_edits.neighbours_of(loaded, new) if c in current)
    figures = {c["community_code"]: c for c in plan_edits.describe(memory, plan_id)["communities"]}
    assert figures[new]["standing"] == 0 and figures[official]["standing"] == 2
    keep, merge = (official, new) if new_into_official else (new, official)
    before = state(stored, plan_id)
    merged = plan_edits.merge_communities(memory, plan_id, keep, merge, version, "planner")
    assert merged["to"] == official and merged["retired"] == new
    assert new not in state(stored, plan_id)["figures"]
    undone = plan_edits.replay(memory, plan_id, merged["version"], "planner", backwards=True)
    assert state(stored, plan_id) == before
    # and the new community's making and naming is one step: one more undo takes both back
    plan_edits.replay(memory, plan_id, undone["version"], "planner", backwards=True)
    gone = state(stored, plan_id)
    assert new not in gone["figures"] and new not in gone["names"]


def test_undo_and_redo_over_http(stored, db_url, small_demo):
    app = make_app(db_url, BASEMAP="none")
    make_accounts(app, small_demo)
    planner, headers = signed_in(app, "planner")
    plan_id = planner.post("/api/plans", json={"name": "网页撤销", "street": STREET},
                           headers=headers).json["plan_id"]
    plan = planner.get(f"/api/plans/{plan_id}").json
    assert plan["history"] == {"undo": 0, "redo": 0, "undo_kind": None, "redo_kind": None}
    nothing = planner.post(f"/api/plans/{plan_id}/undo", json={"version": 1}, headers=headers)
    assert nothing.status_code == 409 and "nothing to undo" in nothing.json["detail"]
    start = state(stored, plan_id)
    code = max(plan["communities"], key=lambda c: c["households"])["community_code"]
    split = planner.post(f"/api/plans/{plan_id}/split", json={"community": code, "version": 1},
                         headers=headers)
    assert split.status_code == 200 and split.json["history"]["undo"] == 1
    assert planner.post(f"/api/plans/{plan_id}/undo", json={"version": 1},
                        headers=headers).status_code == 409  # a stale version, as other edits
    assert planner.post(f"/api/plans/{plan_id}/undo", json={}, headers=headers).status_code == 400
    viewer, viewer_headers = signed_in(app, "viewer")
    assert viewer.post(f"/api/plans/{plan_id}/undo", json={"version": 2},
                       headers=viewer_headers).status_code == 403
    # another tab (another client, another process's memory) undoes it
    other_app = make_app(db_url, BASEMAP="none")
    other, other_headers = signed_in(other_app, "planner")
    undone = other.post(f"/api/plans/{plan_id}/undo", json={"version": 2}, headers=other_headers)
    assert undone.status_code == 200 and undone.json["version"] == 3
    assert set(undone.json["assignment"]) == set(split.json["units"])
    assert set(undone.json["assignment"].values()) == {code}
    assert state(stored, plan_id) == start
    assert planner.get(f"/api/plans/{plan_id}").json["history"]["redo"] == 1  # the first tab sees it
    redone = planner.post(f"/api/plans/{plan_id}/redo", json={"version": 3}, headers=headers)
    assert redone.status_code == 200 and set(redone.json["assignment"].values()) == {split.json["to"]}
    assert redone.json["history"] == {"undo": 1, "redo": 0, "undo_kind": "split", "redo_kind": None}
    assert [s["action"] for s in planner.get(f"/api/plans/{plan_id}/timeline").json["timeline"]] == [
        "create", "edit", "undo", "redo"]


def test_undoing_an_edit_of_a_rejected_plan_makes_it_a_draft(stored, small_demo):
    """An edit of a rejected plan makes it a draft again; so does undoing one (the plan changed)."""
    memory = PlanMemory(stored)
    plan_id, _ = plan_workflow.auto_plan(memory, "退回后撤销", "planner", street=STREET)
    version = plan_rows.get_plan(stored, plan_id)["version"]
    code = plan_rows.plan_assignment(stored, plan_id).value_counts().index[0]  # the largest community
    version = plan_edits.split_community(memory, plan_id, code, version, "planner")["version"]
    version = plan_workflow.change_status(memory, plan_id, "submit", version, "planner", "planner",
                                          reason="测试")["version"]
    version = plan_workflow.change_status(memory, plan_id, "reject", version, "admin", "admin",
                                          comment="重画")["version"]
    assert plan_rows.get_plan(stored, plan_id)["status"] == "rejected"
    undone = plan_edits.replay(memory, plan_id, version, "planner", backwards=True)
    assert plan_rows.get_plan(stored, plan_id)["status"] == "draft"
    plan_edits.replay(memory, plan_id, undone["version"], "planner", backwards=False)
    assert plan_rows.get_plan(stored, plan_id)["status"] == "draft"
