"""A plan of every district opened and edited one district at a time (issue 19): its page, its
API and its hand edits read one district's units, never the whole database's, and the whole
plan's scores stay what a reading of the whole plan gives, edit after edit, undo included."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import delete

from geodata import plan_rows
from geodata.db import get_engine
from geodata.models import PlanDistrictFigures
from geodata.store import community_codes_ever, read_layer
from layers.plans import adoption
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory, plan_rules
from layers.plans.scale import SerialRunner, plan_all
from layers.plans.workflow import auto_plan
from layers.sample_data.country import split_district
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.test_plan_scale import module_database
from tests.webhelpers import make_accounts, served_copy, sign_in_page, signed_in

SECOND = "420199"
#: the scores a reading of the whole plan gives (:func:`layers.plans.engine.summary`); not
#: ``cut_edges``: a plan made district by district counts the edges within districts
WHOLE = ("communities", "units", "households", "outside_bounds", "non_contiguous", "households_min",
         "households_median", "households_max", "households_moved", "units_moved", "households_moved_share",
         "pp_mean", "pp_min")


@pytest.fixture(scope="module")
def two_districts(small_demo):
    """The small demo with its last two streets moved into district 420199."""
    return split_district(small_demo, SECOND)


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def city(request, tmp_path_factory, two_districts):
    """The two-district city in a database of each kind: (url, engine, its districts)."""
    url = module_database(request, tmp_path_factory)
    engine = get_engine(url)
    write_demo(engine, two_districts)
    districts = sorted(set(two_districts.layers["units"]["district_code"]))
    assert len(districts) == 2
    return url, engine, districts


@pytest.fixture(scope="module")
def site(city, two_districts):
    """An app on the city, with one account of each kind."""
    app = make_app(city[0], BASEMAP="none")
    make_accounts(app, two_districts)
    return app


def plan_of_every_district(engine) -> int:
    return plan_all(engine, "全区方案", "planner", runner=SerialRunner()).plan_id


def whole_scores(engine, plan_id: int) -> dict:
    """The plan's scores as a process holding the whole plan reads them."""
    scores = plan_edits.describe(PlanMemory(engine), plan_id)["scores"]
    return {k: scores[k] for k in WHOLE}


def stored_scores(engine, plan_id: int) -> dict:
    scores = plan_rows.get_plan(engine, plan_id)["scores"]
    return {k: scores[k] for k in WHOLE}


def test_the_api_of_a_plan_of_every_district_works_on_one_district(city, site, two_districts):
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    app = site
    client, _headers = signed_in(app, "viewer")
    units = two_districts.layers["units"]

    described = client.get(f"/api/plans/{plan_id}").json
    assert described["district"] == first  # the page opens on the first district
    assert described["units"] == int((units["district_code"] == first).sum())
    other = client.get(f"/api/plans/{plan_id}?district={second}").json
    assert other["district"] == second
    assert other["units"] == int((units["district_code"] == second).sum())
    assert {c["community_code"][:6] for c in other["communities"]} <= {second, first}
    # both parts carry the whole plan's scores, and they are what a whole reading gives
    for part in (described, other):
        assert {k: part["plan_scores"][k] for k in WHOLE} == whole_scores(engine, plan_id)
    features = json.loads(client.get(f"/api/plans/{plan_id}/units?district={second}").get_data(as_text=True))
    assert {f["properties"]["street_code"] for f in features["features"]} == \
        set(units.loc[units["district_code"] == second, "street_code"])

    memory = app.extensions["gridplan.plans"]
    assert (None, None) not in memory._units  # no process read the whole database's units

    for bad in ("999999", "../x", "4" * 40):
        answer = client.get(f"/api/plans/{plan_id}?district={bad}")
        assert answer.status_code == 400, bad
    config = page_config(client.get(f"/plans/{plan_id}?district={second}").get_data(as_text=True))
    assert config["district"] == second
    assert [d["code"] for d in config["districts"]] == [first, second]
    assert all(d["name"] for d in config["districts"])  # names beside codes


def page_config(page: str) -> dict:
    """The configuration a map page hands its script."""
    match = re.search(r'<script type="application/json" id="gridplan-config">(.*?)</script>', page, re.S)
    assert match, "the page has no configuration"
    return json.loads(match.group(1))


def test_an_edit_of_one_district_rescores_the_whole_plan(city, site):
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    before = whole_scores(engine, plan_id)
    assert stored_scores(engine, plan_id) == before
    client, headers = signed_in(site, "planner")

    part = client.get(f"/api/plans/{plan_id}?district={second}").json
    biggest = max(part["communities"], key=lambda c: c["households"])["community_code"]
    split = client.post(f"/api/plans/{plan_id}/split?district={second}",
                        json={"community": biggest, "version": part["version"]}, headers=headers)
    assert split.status_code == 200, split.json
    answer = split.json
    assert answer["district"] == second
    after = whole_scores(engine, plan_id)
    assert after["communities"] == before["communities"] + 1
    assert {k: answer["plan_scores"][k] for k in WHOLE} == after == stored_scores(engine, plan_id)

    # an undo asked from the other district's page undoes the step where it was made
    undone = client.post(f"/api/plans/{plan_id}/undo?district={first}", json={"version": answer["version"]},
                         headers=headers)
    assert undone.status_code == 200, undone.json
    assert undone.json["district"] == second
    assert whole_scores(engine, plan_id) == before == stored_scores(engine, plan_id)


def test_a_plan_made_before_its_figures_were_kept_is_scored_whole(city):
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    with engine.begin() as conn:
        conn.execute(delete(PlanDistrictFigures).where(PlanDistrictFigures.plan_id == plan_id))
    memory = PlanMemory(engine)
    assert memory.parts(plan_rows.get_plan(engine, plan_id)) == [first, second]  # from its rows
    part = plan_edits.describe(memory, plan_id, second)
    code = part["communities"][0]["community_code"]
    moved = plan_edits.split_community(memory, plan_id, code, part["version"], "planner", district=second)
    assert {k: moved["plan_scores"][k] for k in WHOLE} == whole_scores(engine, plan_id)
    assert plan_rows.figure_districts(engine, plan_id) == [first, second]


def test_an_edit_of_the_whole_plan_keeps_its_districts_figures(city):
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    whole = PlanMemory(engine)
    loaded = whole.plan(plan_id)
    code = next(c for c in loaded.partition.communities if c.startswith(second))
    plan_edits.split_community(whole, plan_id, code, 1, "planner")  # no district: the whole plan
    # a district's part edited next is scored from figures that followed the whole edit
    memory = PlanMemory(engine)
    part = plan_edits.describe(memory, plan_id, first)
    answer = plan_edits.split_community(memory, plan_id, part["communities"][0]["community_code"],
                                        part["version"], "planner", district=first)
    assert {k: answer["plan_scores"][k] for k in WHOLE} == whole_scores(engine, plan_id)


def test_the_page_of_a_plan_of_every_district_goes_district_by_district(city, site, chromium_page):
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    with served_copy(site) as base:
        sign_in_page(page, base, "planner")
        page.goto(f"{base}/plans/{plan_id}")
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
        select = page.locator("#district-select")
        assert select.input_value() == first
        options = select.locator("option").all_inner_texts()
        assert len(options) == 2 and all(" · " in o for o in options)  # names beside codes
        assert page.locator("#whole-box").is_visible()
        whole = page.evaluate("window.gridplan.wholeScores")
        assert {k: whole[k] for k in WHOLE} == whole_scores(engine, plan_id)
        select.select_option(second)
        page.wait_for_url(lambda u: f"district={second}" in u)
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
        shown = page.evaluate("[...window.gridplan.state.communities.keys()]")
        part = plan_edits.describe(PlanMemory(engine), plan_id, second)
        assert sorted(shown) == sorted(c["community_code"] for c in part["communities"])
        text = page.locator("#panel").inner_text()
        assert "全方案" in text
        assert not re.search(r"[A-Za-z]{2,}", page.locator("#district-box").inner_text())  # no English
        assert page.errors == []


def test_a_plan_of_every_district_is_approved_and_adopted_a_district_at_a_time(city):
    """Its rules, its adoption's preview and its adoption are worked out one district's part at a
    time — never the whole plan in one process — and say and write what a whole reading does."""
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    whole = PlanMemory(engine)
    loaded = whole.plan(plan_id)  # the whole plan, read at once: what the districts must add up to
    expected = adoption._work_out(whole, loaded).preview
    memory = PlanMemory(engine)
    preview = adoption.adoption_preview(memory, plan_id)
    assert {k: v for k, v in preview.items() if k not in ("status", "version")} == expected
    assert adoption.broken_rules(memory, plan_id) == adoption._broken_in(whole, loaded)
    assert (plan_id, None) not in memory._plans and (None, None) not in memory._units

    assignment = plan_rows.plan_assignment(engine, plan_id)
    version = plan_rows.get_plan(engine, plan_id)["version"]
    reason = {"reason": "逐区核对"} if preview["broken_rules"] else {}
    for action, who in (("submit", "planner"), ("approve", "admin"), ("adopt", "admin")):
        version = plan_workflow.change_status(memory, plan_id, action, version, who, who, **reason)["version"]
    assert (plan_id, None) not in memory._plans
    units = read_layer(engine, "units")
    stored = units.set_index("code")["community_code"]
    assert (stored.reindex(assignment.index) == assignment).all()  # every unit, both districts
    communities = read_layer(engine, "communities")
    assert set(communities["code"]) == set(assignment)
    assert set(communities["district_code"]) == {first, second}


def test_a_plan_of_every_district_is_rebased_a_district_at_a_time(city, two_districts):
    """A rebase re-plans the changed streets district by district and keeps the hand edits it
    can: the plan it stores is the one a whole reading makes, its scores a whole reading's."""
    url, engine, (first, second) = city
    plan_id = plan_of_every_district(engine)
    memory = PlanMemory(engine)
    version = 1
    for district in (first, second):  # a hand edit in each district
        part = plan_edits.describe(memory, plan_id, district)
        code = max(part["communities"], key=lambda c: c["households"])["community_code"]
        version = plan_edits.split_community(memory, plan_id, code, version, "planner",
                                             district=district)["version"]
    # the boundaries of one street of the second district change: a street's edited plan adopted
    units = two_districts.layers["units"]
    street = sorted(units.loc[units["district_code"] == second, "street_code"])[0]
    other = PlanMemory(engine)
    street_plan, _ = auto_plan(other, "街道调整", "planner", street=street)
    described = plan_edits.describe(other, street_plan)
    biggest = max(described["communities"], key=lambda c: c["households"])["community_code"]
    v = plan_edits.split_community(other, street_plan, biggest, 1, "planner")["version"]
    for action, who in (("submit", "planner"), ("approve", "admin"), ("adopt", "admin")):
        v = plan_workflow.change_status(other, street_plan, action, v, who, who, reason="街道先行")["version"]

    plan = plan_rows.get_plan(engine, plan_id)
    stale = plan_workflow.stale_changes(memory, plan)
    assert stale and street in stale["streets"]
    whole = PlanMemory(engine)
    expected, kept, _dropped, changed = plan_workflow._rebased(
        whole.units(None), plan_rows.plan_assignment(engine, plan_id),
        plan_rows.plan_assignment(engine, plan_id, edited=True), stale["streets"],
        plan_rules(engine, plan["params"]), community_codes_ever(engine))
    answer = plan_workflow.rebase(memory, plan_id, version, "planner")
    assert answer["streets_replanned"] == changed == [street]
    assert answer["edits_kept"] == len(kept) > 0
    stored = plan_rows.plan_assignment(engine, plan_id)
    assert stored.to_dict() == expected.assignment.to_dict()
    assert (None, None) not in memory._units
    assert stored_scores(engine, plan_id) == whole_scores(engine, plan_id)
