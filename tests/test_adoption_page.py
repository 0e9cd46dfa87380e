"""The confirmation before submitting, approving and adopting a plan, in Chromium (zh-CN): what
it would change named, the rules it breaks with a reason required, and after adoption the button
that regenerates the affected cells and says what it did.

Defect reproduced: adoption asked "确定采用？" (window.confirm) with nothing named, and what it
did appeared afterwards as bare 15-digit codes with nothing to do about them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from geodata import jobs
from geodata.db import get_engine
from layers.plans import adoption
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.test_plan_page import Page, client_of
from tests.webhelpers import make_accounts, served_copy

SHOTS = Path("/tmp/adopt")


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo):
    import shutil

    path = tmp_path_factory.mktemp("adoption-page") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, BASEMAP="none")
    make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield {"app": app, "base": base, "url": url}


def wait_dialog(page):
    page.wait_for_selector("#adoption-dialog[open]")
    page.wait_for_function("() => window.gridplan.dialog && window.gridplan.dialog.ready", timeout=30_000)
    return page.inner_text("#adoption-dialog")


def test_the_confirmation_names_what_changes_and_asks_for_a_reason(chromium_page, live, small_demo):
    SHOTS.mkdir(exist_ok=True)
    client, headers = client_of(live["app"], "planner")
    street = small_demo.layers["streets"]["code"].iloc[2]
    street_name = small_demo.layers["streets"].set_index("code")["name"][street]
    plan_id = client.post("/api/plans", json={"name": "精武方案", "street": street},
                          headers=headers).json["plan_id"]
    unit = client.get(f"/api/plans/{plan_id}/units").json["features"][0]["properties"]["code"]
    moved = client.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                        headers=headers).json
    client.post(f"/api/plans/{plan_id}/communities/{moved['to']}/name",
                json={"name": "长江社区", "version": 2}, headers=headers)

    planner = Page(chromium_page, live, "planner")
    page = planner.open(plan_id)
    page.click("[data-action=submit]")
    shown = wait_dialog(page)
    assert f"{street_name} · {street}" in shown and "报审方案“精武方案”" in shown
    assert f"长江社区 · {moved['to']}" in shown and "低于下限 1,000 户" in shown
    assert "改变所属社区的户数" in shown and "将跨两个社区的网格" in shown
    assert page.is_visible("#reason")
    page.screenshot(path=str(SHOTS / "submit-dialog.png"))
    # no reason: said beside the box, nothing sent
    page.click("#adoption-confirm")
    assert page.is_visible("#reason-missing") and page.is_visible("#adoption-dialog")
    assert client.get(f"/api/plans/{plan_id}").json["status"] == "draft"
    # cancel closes it, nothing sent
    page.click("#adoption-cancel")
    assert not page.is_visible("#adoption-dialog")
    assert client.get(f"/api/plans/{plan_id}").json["status"] == "draft"
    page.click("[data-action=submit]")
    wait_dialog(page)
    page.fill("#reason", "长江社区为新建小区，入住率将逐年提高")
    with page.expect_navigation():
        page.click("#adoption-confirm")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert "理由：长江社区为新建小区" in page.inner_text("#timeline")
    assert client.get(f"/api/plans/{plan_id}").json["status"] == "submitted"
    planner.close()

    admin_client, ah = client_of(live["app"], "admin")
    v = admin_client.get(f"/api/plans/{plan_id}").json["version"]
    approved = admin_client.post(f"/api/plans/{plan_id}/status",
                                 json={"action": "approve", "version": v, "reason": "同意"}, headers=ah)
    assert approved.status_code == 200
    admin = Page(chromium_page, live, "admin")
    page = admin.open(plan_id)
    page.click("[data-action=adopt]")
    shown = wait_dialog(page)
    assert "采用方案“精武方案”" in shown and "将被本方案替换" in shown
    # every cell named in the dialog has its community's name beside its code
    preview = page.evaluate("window.gridplan.dialog.preview")
    for cell in preview["straddling_cells"]:
        for part in cell["communities"]:
            assert f"{part['name']} · {part['code']}" in shown
    page.screenshot(path=str(SHOTS / "adopt-dialog.png"), full_page=True)
    page.fill("#reason", "街道党工委会议同意")
    with page.expect_navigation():
        page.click("#adoption-confirm")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert "本次采用的变化" in page.inner_text("#adoption") and "长江社区" in page.inner_text("#adoption")
    # after adoption: one button regenerates the affected cells (run here as the worker runs it)
    assert page.is_visible("#regenerate")
    page.click("#regenerate")
    engine = get_engine(live["url"])
    for _ in range(100):
        job = jobs.claim_next(engine)
        if job is not None:
            break
        page.wait_for_timeout(100)
    assert job["kind"] == adoption.JOB_KIND
    jobs.finish(engine, job["id"], adoption.run_regeneration_job(engine, job))
    page.wait_for_function("() => document.querySelector('#regenerated').textContent"
                           ".includes('已重新生成网格')", timeout=15_000)
    said = page.inner_text("#regenerated")
    assert "长江社区 · " in said and "方案所涉街道的未结案件已重新核对" in said
    # a cell problem names its community beside the code (it said "社区 420103006003" alone)
    names = dict(zip(small_demo.layers["communities"]["code"], small_demo.layers["communities"]["name"],
                     strict=True)) | {moved["to"]: "长江社区"}
    for code in re.findall(r"(?<![\d·] )(?<!\d)\d{12}(?!\d)", said):
        assert f"{names.get(code)} · {code}" in said, code
    page.screenshot(path=str(SHOTS / "regenerated.png"), full_page=True)
    admin.close()

    # in English the dialog's headings take plain brackets (they showed "Rules this plan breaks（2）")
    other = client.post("/api/plans", json={"name": "English", "street": street},
                        headers=headers).json["plan_id"]
    unit = client.get(f"/api/plans/{other}/units").json["features"][0]["properties"]["code"]
    client.post(f"/api/plans/{other}/moves", json={"units": [unit], "to": "new", "version": 1},
                headers=headers)
    planner = Page(chromium_page, live, "planner")
    page = planner.open(other)
    with page.expect_navigation():
        page.click("#locale-en")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    page.click("[data-action=submit]")
    shown = wait_dialog(page)
    assert re.search(r"Rules this plan breaks \(\d+\)", shown), shown
    assert "（" not in shown and "：" not in shown
    planner.close()
