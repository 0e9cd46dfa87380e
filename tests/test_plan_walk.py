"""The planner pages as a tester walking issue 17 found them: comparing plans of different
streets refused (not "192 units change community"), on SpatiaLite and PostGIS."""

from __future__ import annotations

import shutil

import pytest

from layers.plans.adoption import _named_reason
from tests.conftest import demo_site
from tests.test_plan_page import Page
from tests.webhelpers import served_copy, signed_in


@pytest.fixture
def site(db_url, small_demo):
    return demo_site(db_url, small_demo, BASEMAP="none")[0]


def _plan(client, headers, street: str, name: str) -> int:
    answer = client.post("/api/plans", json={"name": name, "street": street}, headers=headers)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.json["plan_id"]


def test_plans_of_different_streets_are_not_compared(site, small_demo):
    streets = small_demo.layers["streets"].sort_values("code")
    (first, first_name), (second, second_name) = list(zip(streets["code"], streets["name"], strict=True))[:2]
    client, headers = signed_in(site, "planner", "/plans")
    mine = _plan(client, headers, first, "甲")
    same = _plan(client, headers, first, "乙")
    other = _plan(client, headers, second, "丙")
    answer = client.get(f"/api/plans/{mine}/compare?with={same}")
    assert answer.status_code == 200 and answer.json["other"] == same
    refused = client.get(f"/api/plans/{mine}/compare?with={other}")
    assert refused.status_code == 400
    assert refused.mimetype == "application/problem+json"
    detail = refused.json["detail"]
    assert f"{first_name} ({first})" in detail and f"{second_name} ({second})" in detail
    assert f"#{mine}" in detail and f"#{other}" in detail and "same streets" in detail
    # the list the page offers carries each plan's streets, so it can offer the same ones only
    listed = {p["id"]: p["streets"] for p in client.get("/api/plans").json["plans"]}
    assert listed[mine] == listed[same] == [first] and listed[other] == [second]


def test_a_regenerated_cells_problem_names_its_community_beside_the_code():
    problem = {"kind": "cut_off", "community": "420103006003", "reason":
               "2 units with 120 households are cut off from the rest of community 420103006003 (by the "
               "river or its edge); cell 420103006003002 too"}
    named = _named_reason(problem, {"420103006003": "桥口社区"})
    assert "community 桥口社区 · 420103006003 (by" in named["reason"]
    assert "cell 420103006003002 too" in named["reason"]  # a cell code is left alone
    assert _named_reason(problem, {}) == problem


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("planwalk") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    app = demo_site(f"sqlite:///{path}", small_demo, BASEMAP="none")[0]
    with served_copy(app) as base:
        yield {"app": app, "base": base}


def test_the_plan_page_offers_only_plans_of_the_same_streets_to_compare(chromium_page, live, small_demo):
    streets = sorted(small_demo.layers["streets"]["code"])
    client, headers = signed_in(live["app"], "planner", "/plans")
    mine, same = _plan(client, headers, streets[0], "甲"), _plan(client, headers, streets[0], "乙")
    other = _plan(client, headers, streets[1], "丙")
    planner = Page(chromium_page, live, "planner")
    page = planner.open(mine)
    page.wait_for_function("() => document.querySelectorAll('#compare-with option').length > 1")
    offered = page.eval_on_selector_all("#compare-with option", "os => os.map((o) => o.value)")
    assert str(same) in offered and str(other) not in offered and "current" in offered
    page.select_option("#compare-with", str(same))
    page.click("#compare")
    page.wait_for_function("() => document.querySelector('#compare-summary').textContent !== ''")
    assert page.query_selector(".banner") is None
    planner.close()
