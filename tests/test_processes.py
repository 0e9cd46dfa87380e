"""The app as ``make run`` serves it — gunicorn with two workers beside the job worker — answers
from the same boundaries in every process: after a plan is adopted through one worker, or the
units are replaced from the command line, every process plans, compares and edits from the new
boundaries."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests

from geodata.db import get_engine
from geodata.exporter import export_layer
from layers.plans.memory import PlanMemory
from layers.plans.workflow import auto_plan
from tests.conftest import demo_site
from tests.webhelpers import BIN, ROOT, gunicorn_app


@pytest.fixture
def served(db_url, small_demo, tmp_path):
    """gunicorn (2 workers, as ``make run`` starts them: plan memory warmed in the background)
    and the job worker on a demo database; bearer tokens per role."""
    engine = get_engine(db_url)
    app = demo_site(db_url, small_demo)[0]
    from webmap.auth import add_token

    with app.app_context():
        tokens = {role: add_token(f"{role}-system", role) for role in ("planner", "admin")}
    with gunicorn_app(db_url, tmp_path, worker=True, GRIDPLAN_WARM_EVERY="1") as (base, env):
        yield base, tokens, env, engine


def call(base: str, token: str, method: str, path: str, **kwargs) -> requests.Response:
    response = requests.request(method, base + path, headers={"Authorization": f"Bearer {token}"},
                                timeout=120, **kwargs)
    assert response.status_code < 400, (path, response.status_code, response.text[:500])
    return response


def every_process(ask, processes: int = 2, seconds: float = 120) -> dict[str, object]:
    """Ask until each gunicorn worker has answered; their answers by process id. Asked for a time,
    not a count: on a busy machine the second worker may still be starting while the first answers
    dozens of quick requests."""
    answers: dict[str, object] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response, value = ask()
        answers.setdefault(response.headers["X-Gridplan-Process"], value)
        if len(answers) == processes:
            return answers
        time.sleep(0.05)
    raise AssertionError(f"only {len(answers)} of {processes} processes answered in {seconds:.0f} s")


def test_every_process_plans_from_the_adopted_boundaries(served, small_demo):
    base, tokens, env, engine = served
    planner, admin = tokens["planner"], tokens["admin"]
    memory = PlanMemory(engine)
    street = next(s for s in sorted(small_demo.layers["streets"]["code"])
                  if auto_plan(memory, "probe", "planner", street=s)[1].scores()["households_moved"] > 0)
    created = call(base, planner, "POST", "/api/plans", json={"name": "街道", "street": street})
    plan_id = created.json()["plan_id"]
    # every process loads the street's units and the plan before the adoption
    every_process(lambda: (call(base, planner, "GET", f"/api/plans/{plan_id}/units"), None))
    v = call(base, planner, "POST", f"/api/plans/{plan_id}/status",
             json={"action": "submit", "version": 1, "reason": "测试"}).json()["version"]
    v = call(base, admin, "POST", f"/api/plans/{plan_id}/status", json={"action": "approve", "version": v,
                                                                        "reason": "测试"}
             ).json()["version"]
    adopted = call(base, admin, "POST", f"/api/plans/{plan_id}/status",
                   json={"action": "adopt", "version": v, "reason": "测试"})
    assert adopted.json()["status"] == "adopted"

    def fresh_plan():
        r = call(base, planner, "POST", "/api/plans", json={"name": "之后", "street": street})
        return r, r.json()

    for answer in every_process(fresh_plan).values():
        assert answer["scores"]["households_moved"] == 0  # planned from the adopted boundaries
        new = answer["plan_id"]
    for diff in every_process(lambda: (r := call(base, planner, "GET", f"/api/plans/{new}/compare"),
                                       r.json())).values():
        assert diff["changed_units"] == []

    def units_now():
        r = call(base, planner, "GET", f"/api/plans/{new}/units")
        return r, {f["properties"]["code"]: f["properties"]["current_code"] for f in r.json()["features"]}

    adopted_units = {f["properties"]["code"]: f["properties"]["community_code"]
                     for f in call(base, planner, "GET", f"/api/plans/{plan_id}/units").json()["features"]}
    for current in every_process(units_now).values():
        assert current == adopted_units
    # a hand edit in each process: the edited plan's figures are those of the adopted communities
    version = 1
    for _ in range(2):
        unit = next(iter(adopted_units))
        r = call(base, planner, "POST", f"/api/plans/{new}/moves",
                 json={"units": [unit], "to": "new", "version": version})
        version = r.json()["version"]

    def described():
        r = call(base, planner, "GET", f"/api/plans/{new}")
        body = r.json()
        figures = sorted((c["community_code"], c["households"]) for c in body["communities"])
        return r, (body["version"], figures, body["scores"])

    # both processes hold the edited plan: the one that did not make an edit caught up on it
    answers = list(every_process(described).values())
    assert answers[0] == answers[1] and answers[0][0] == version == 3
    # the job worker plans the district from the same boundaries
    job = call(base, planner, "POST", "/api/plans", json={"name": "全区"}).json()
    for _ in range(300):
        state = call(base, planner, "GET", f"/api/jobs/{job['job']}").json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert state["status"] == "done", state
    district = state["result"]["plan_id"]
    diff = call(base, planner, "GET", f"/api/plans/{district}/compare").json()
    assert not [d for d in diff["changed_units"] if d["unit"] in adopted_units]


def test_every_process_sees_units_replaced_from_the_command_line(served, small_demo, tmp_path):
    base, tokens, env, engine = served
    planner = tokens["planner"]
    street = sorted(small_demo.layers["streets"]["code"])[0]

    def street_plan():
        r = call(base, planner, "POST", "/api/plans", json={"name": "p", "street": street})
        return r, r.json()["scores"]["households"]

    before = every_process(street_plan)
    units = tmp_path / "units.geojson"
    export_layer(engine, "units", "geojson", units)
    data = json.loads(units.read_text())
    for feature in data["features"]:
        if feature["properties"]["street_code"] == street:
            feature["properties"]["households"] += 10
    units.write_text(json.dumps(data))
    added = 10 * sum(f["properties"]["street_code"] == street for f in data["features"])
    command = ["import", "units", str(units), "--mode", "replace"]
    subprocess.run([str(BIN / "flask"), "--app", "webmap", *command], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    after = every_process(street_plan)
    assert set(before.values()) == {next(iter(before.values()))}
    assert set(after.values()) == {next(iter(before.values())) + added}
