"""Races, really run (issue 12, item 4): two planners saving the same plan version, two
supervisors acting on the same case, an import racing a plan's adoption, and the boundary
revision under writers in several processes — on both databases.

Each racer is its own thread released by one :class:`threading.Barrier`, and each talks to its
own app (``create_app`` twice: two processes' plan memories sharing one database), so one
racer's memory cannot help the other. The revision test runs its writers as separate OS
processes. One wins, the other is told of the current state (409); nothing is overwritten.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
from sqlalchemy import func, select

from geodata import plan_rows
from geodata.db import dispose_engines, get_engine
from geodata.exporter import export_layer
from geodata.models import BoundaryChange, Community, Unit
from geodata.revisions import current_revision
from layers.incidents import loop as incidents
from layers.onboarding.imports import ImportRefused, import_layer
from layers.plans.memory import PlanMemory
from layers.plans.workflow import auto_plan
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from webmap.auth import add_token


def race(*calls: Callable[[], object]) -> list:
    """Run ``calls`` at the same moment, each in its own thread; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 — handed back to the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


class Caller:
    """One user in one process: an app of its own (its own plan memory) and a bearer token."""

    def __init__(self, app, token: str) -> None:
        self.app, self.headers = app, {"Authorization": f"Bearer {token}"}

    def get(self, url: str):
        return self.app.test_client().get(url, headers=self.headers)

    def post(self, url: str, body: dict):
        return self.app.test_client().post(url, json=body, headers=self.headers)


@pytest.fixture
def two_processes(db_url, engine, small_demo):
    """Two apps on one database (two server processes), and callers of each role in each."""
    write_demo(engine, small_demo)
    apps = [make_app(db_url, BASEMAP="none") for _ in range(2)]
    community = small_demo.layers["communities"]["code"].iloc[0]
    callers = {}
    with apps[0].app_context():
        for role in ("planner", "admin", "supervisor", "dispatcher"):
            for i, app in enumerate(apps):
                callers[role, i] = Caller(app, add_token(f"{role}-{i}", role,
                                                         community if role == "supervisor" else None))
    return apps, callers, community


def one_wins(answers) -> tuple:
    """The winner's and the loser's answers, after checking that exactly one won."""
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409], [a.get_json() for a in answers]
    return (answers[0], answers[1]) if answers[0].status_code == 200 else (answers[1], answers[0])


def plan_state(engine, plan_id: int) -> dict:
    plan = plan_rows.get_plan(engine, plan_id)
    return {"version": plan["version"], "status": plan["status"], "name": plan["name"],
            "assignment": plan_rows.plan_assignment(engine, plan_id).to_dict(),
            "names": plan_rows.community_names(engine, plan_id)}


def test_two_planners_saving_the_same_version_one_wins_the_other_is_told_what_changed(two_processes, engine,
                                                                                      small_demo):
    _, callers, _ = two_processes
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = auto_plan(PlanMemory(engine), "竞争", "planner-0", street=street)[0]
    url = f"/api/plans/{plan_id}"
    a, b = callers["planner", 0], callers["planner", 1]
    for caller in (a, b):  # both processes hold the plan in memory, at version 1
        assert caller.get(url).status_code == 200

    def edit(caller: Caller, kind: str, version: int, tag: str):
        described = caller.get(url).get_json()  # what the planner sees (memory caught up)
        communities = [c["community_code"] for c in described["communities"]]
        unit = sorted(plan_rows.plan_assignment(engine, plan_id).index)[version % 7]
        here = plan_rows.plan_assignment(engine, plan_id)[unit]
        others = [c for c in communities if c != here]
        if kind == "move":
            to = others[0] if tag == "a" else others[-1]
            return lambda: caller.post(f"{url}/moves", {"units": [unit], "to": to, "version": version})
        if kind == "rename":
            return lambda: caller.post(f"{url}/rename", {"name": f"方案 {tag}{version}", "version": version})
        if kind == "name":
            return lambda: caller.post(f"{url}/communities/{here}/name",
                                       {"name": f"社区 {tag}{version}", "version": version})
        return lambda: caller.post(f"{url}/status", {"action": kind, "version": version,
                                                     "comment": f"退回 {tag}", "reason": "测试"})

    rounds = [("move", "move"), ("rename", "rename"), ("name", "move"), ("move", "rename"),
              ("name", "name"), ("submit", "move"), ("approve", "reject")]
    for kinds in rounds:
        before = plan_state(engine, plan_id)
        v = before["version"]
        if kinds == ("approve", "reject"):
            if before["status"] != "submitted":
                continue
            racers = [callers["admin", 0], callers["admin", 1]]
        else:
            racers = [a, b]
        calls = [edit(racers[0], kinds[0], v, "a"), edit(racers[1], kinds[1], v, "b")]
        answers = race(*calls)
        winner, loser = one_wins(answers)
        after = plan_state(engine, plan_id)
        assert after["version"] == v + 1 == winner.get_json()["version"]
        body = loser.get_json()
        assert body["code"] == "VersionConflict" and body["version"] == v + 1
        assert body["plan_status"] == after["status"] and body["name"] == after["name"]
        assert [c["version"] for c in body["changes"]] == [v + 1]
        won = kinds[answers.index(winner)]
        assert body["changes"][0]["action"] in {"move": ["edit"], "rename": ["rename"], "name": ["name"],
                                                "submit": ["submitted"], "approve": ["approved"],
                                                "reject": ["rejected"]}[won]
        # the stored plan is the winner's edit and nothing of the loser's
        changed = {k for k in ("status", "name", "names") if after[k] != before[k]}
        moved = {u for u, c in after["assignment"].items() if before["assignment"][u] != c}
        if won == "move":
            assert not changed and len(moved) == 1
            request = winner.get_json()
            assert after["assignment"][request["units"][0]] == request["to"]
        else:
            assert not moved and len(changed) == 1
        # and each process's memory answers with the stored plan
        for caller in (a, b):
            seen = caller.get(url).get_json()
            assert seen["version"] == v + 1 and seen["status"] == after["status"]
    assert plan_rows.get_plan(engine, plan_id)["version"] >= len(rounds)


def test_two_dispatchers_acting_on_one_case_one_wins_and_one_step_is_recorded(two_processes, engine):
    """The command centre's steps (filing, cancelling, dispatching: theirs alone with separation of
    duties on) raced by two of its accounts in two processes, or one of them and an administrator."""
    _, callers, community = two_processes
    reporter = callers["supervisor", 0]
    first, second, admin = callers["dispatcher", 0], callers["dispatcher", 1], callers["admin", 1]
    for pair in ([("file", first), ("cancel", second)], [("file", first), ("file", second)],
                 [("dispatch", second), ("dispatch", admin)]):
        case = reporter.post("/api/incidents", {"community": community, "category": "E01-01",
                                                "description": "井盖缺失"})
        assert case.status_code == 201
        code = case.get_json()["code"]
        if pair[0][0] == "dispatch":  # filed first, then raced
            assert first.post(f"/api/incidents/{code}/actions", {"action": "file", "version": 1}
                              ).status_code == 200
        version = incidents.rows.get_incident(engine, code)["version"]
        answers = race(*[lambda action=action, who=who, code=code, version=version: who.post(
            f"/api/incidents/{code}/actions", {"action": action, "version": version, "note": "同时"})
            for action, who in pair])
        winner, loser = one_wins(answers)
        stored = incidents.rows.get_incident(engine, code)
        body = loser.get_json()
        assert body["version"] == stored["version"] == version + 1
        assert body["current"]["status"] == stored["status"] == winner.get_json()["status"]
        steps = [s["step"] for s in incidents.rows.steps_of(engine, stored["id"])]
        assert len(steps) == (3 if pair[0][0] == "dispatch" else 2), steps  # reported (+ filed) + one


def units_of_street_with_more_households(engine, street: str, folder, add: int):
    out = export_layer(engine, "units", "geojson", folder / f"units-{street}-{add}.geojson", street=street)
    units = gpd.read_file(out.path)
    units["households"] = units["households"] + add
    path = folder / f"units-{street}-{add}-changed.geojson"
    units.to_file(path, driver="GeoJSON")
    return path


def partition_holds(engine) -> None:
    """Every unit in exactly one current community of its own street; households summed right."""
    with engine.connect() as conn:
        communities = dict(conn.execute(select(Community.code, Community.street_code)).all())
        units = conn.execute(select(Unit.code, Unit.street_code, Unit.community_code, Unit.households)).all()
        total = conn.execute(select(func.sum(Unit.households))).scalar_one()
    wrong = [(u, s, c) for u, s, c, _ in units if c is not None and communities.get(c) != s]
    assert not wrong, f"units outside a current community of their street: {wrong[:5]}"
    by_community: dict = {}
    for _, _, c, h in units:
        by_community[c] = by_community.get(c, 0) + h
    assert sum(by_community.values()) == total


def test_an_import_racing_an_adoption_either_waits_or_makes_the_adoption_a_conflict(two_processes, engine,
                                                                                  small_demo, tmp_path):
    _, callers, _ = two_processes
    admin, planner = callers["admin", 0], callers["planner", 1]
    streets = sorted(small_demo.layers["streets"]["code"])
    outcomes = []
    for round_, street in enumerate(streets[:3]):
        plan_id = auto_plan(PlanMemory(engine), f"采纳 {street}", "planner-1", street=street)[0]
        url = f"/api/plans/{plan_id}"
        v = planner.post(f"{url}/status", {"action": "submit", "version": 1,
                                           "reason": "测试"}).get_json()["version"]
        v = admin.post(f"{url}/status", {"action": "approve", "version": v,
                                         "reason": "测试"}).get_json()["version"]
        assert admin.get(url).get_json()["stale"] is None
        changed = units_of_street_with_more_households(engine, street, tmp_path, round_ + 1)
        communities_before = plan_rows.current_community_names(engine)

        # one side starts late, so that the transactions meet in either order (the adoption works
        # out its communities before it writes, the import reads and checks its file)
        late_import, late_adoption = [(1.5, 0), (0, 0), (0, 0.4)][round_]

        def importing(path=changed, late=late_import):
            time.sleep(late)
            return import_layer(engine, "units", path, mode="update", actor="importer")

        def adopting(url=url, v=v, late=late_adoption):
            time.sleep(late)
            return admin.post(f"{url}/status", {"action": "adopt", "version": v, "reason": "测试"})

        adoption, report = race(adopting, importing)
        plan = plan_rows.get_plan(engine, plan_id)
        if adoption.status_code == 200:
            revision = adoption.get_json()["revision"]
            assert plan["status"] == "adopted"
            if isinstance(report, ImportRefused):  # its file names communities the adoption retired
                outcomes.append("adopted, then the import refused")
                assert "retired" in str(report) and current_revision(engine) == revision
            else:
                outcomes.append("adopted, then imported")
                assert report.revision == revision + 1, report
            # nothing touched the plan's street between the plan and its adoption
            with engine.connect() as conn:
                between = conn.execute(select(BoundaryChange.action).where(
                    BoundaryChange.revision > plan["base_revision"],
                    BoundaryChange.revision < revision)).all()
            assert not between
        else:
            assert not isinstance(report, Exception), report
            outcomes.append("imported, adoption refused")
            refusal = adoption.get_json()
            assert adoption.status_code == 409 and refusal["code"] == "StalePlan", refusal
            assert street in adoption.get_json()["stale"]["streets"]
            assert plan["status"] == "approved" and plan["version"] == v
            assert plan_rows.current_community_names(engine) == communities_before
        partition_holds(engine)
    assert len(outcomes) == 3, outcomes


def _write_boundaries(url: str, path: str, times: int, queue) -> None:
    """A writer process: import ``path`` (one street's communities, mode update) ``times`` times,
    each time with names no other import gave (an import that changes nothing raises no
    revision), reporting each revision it raised or the error it met."""
    dispose_engines()
    engine = get_engine(url)
    source = Path(path).read_text(encoding="utf-8")
    for k in range(times):
        changed = Path(path).with_name(f"{os.getpid()}-{k}.geojson")
        changed.write_text(source.replace('"name":"', f'"name":"{os.getpid()}-{k}'), encoding="utf-8")
        try:
            queue.put(import_layer(engine, "communities", changed, mode="update", actor="writer").revision)
        except Exception as exc:  # noqa: BLE001 — the parent asserts there were none
            queue.put(f"{type(exc).__name__}: {exc}")
    dispose_engines()


def test_the_boundary_revision_rises_by_one_per_change_from_several_processes(two_processes, db_url, engine,
                                                                           small_demo, tmp_path):
    apps, callers, _ = two_processes
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = auto_plan(PlanMemory(engine), "记忆", "planner-0", street=street)[0]
    memories = [app.extensions["gridplan.plans"] for app in apps]
    for memory in memories:
        memory.plan(plan_id)
    start = current_revision(engine)
    out = export_layer(engine, "communities", "geojson", tmp_path / "communities.geojson", street=street)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    writers, times = 3, 3
    processes = [context.Process(target=_write_boundaries, args=(db_url, str(out.path), times, queue))
                 for _ in range(writers)]
    for p in processes:
        p.start()
    raised = [queue.get(timeout=300) for _ in range(writers * times)]
    for p in processes:
        p.join(60)
    assert all(isinstance(r, int) for r in raised), raised
    assert sorted(raised) == list(range(start + 1, start + writers * times + 1))
    with engine.connect() as conn:
        logged = conn.execute(select(BoundaryChange.revision).where(BoundaryChange.revision > start)
                              .order_by(BoundaryChange.revision)).scalars().all()
    assert logged == sorted(raised) and current_revision(engine) == logged[-1]
    # every process's memory notices before answering: the plan is rebuilt at the new revision
    for memory in memories:
        assert memory.plan(plan_id).revision == logged[-1]
    answer = callers["planner", 1].get(f"/api/plans/{plan_id}").get_json()
    assert answer["stale"] is not None and answer["stale"]["streets"] == [street]
