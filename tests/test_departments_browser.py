"""The 指挥中心 on a phone (360 × 740, Chinese) in headless Chromium: dispatch a case to a
department chosen from the list (the category's default offered first), chase (督办) an overdue
case with a note; the case shows the department, the 督办 and the history says who did what."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from geodata import departments as depts
from geodata.accounts import find_user
from geodata.db import get_engine
from layers.incidents import loop as incidents
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, make_accounts, served_copy, sign_in_page
from webmap.auth import add_user

SHOTS = Path("/tmp/dept")


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    folder = tmp_path_factory.mktemp("dispatch")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    write_demo(engine, small_demo)
    catalogue = incidents.categories(engine)
    for code, name, cats, default in (("HW", "区环境卫生管理站", ["E01-01"], ["E01-01"]),
                                      ("JD", "街道办事处", ["E01-01", "E04-01"], [])):
        depts.save_department(engine, {"code": code, "name": name, "categories": cats,
                                       "default_for": default}, catalogue, actor="test")
    app = make_app(url, BASEMAP="none", PHOTO_DIR=str(folder / "p"))
    secrets = make_accounts(app, small_demo)
    with app.app_context():
        add_user("dispatcher", "dispatcher", PASSWORD)
        add_user("hw", "handler", PASSWORD, department="HW")
    cells = small_demo.layers["grid_cells"]
    here = cells[cells["code"].str.startswith(secrets["scope"])].iloc[0].geometry.representative_point()
    supervisor = find_user(engine, name="supervisor")
    dispatcher = find_user(engine, name="dispatcher")

    def new_case(when: datetime, dispatch: bool) -> str:
        case, _ = incidents.report(engine, supervisor, {"lon": here.x, "lat": here.y, "category": "E01-01",
                                                         "description": "路口暴露垃圾"}, now=when)
        incidents.act(engine, dispatcher, case["code"], {"action": "file", "version": 1}, now=when)
        if dispatch:
            incidents.act(engine, dispatcher, case["code"], {"action": "dispatch", "version": 2,
                                                              "department": "HW"}, now=when)
        return case["code"]

    fresh = new_case(datetime.now(), dispatch=False)
    late = new_case(datetime.now() - timedelta(days=14), dispatch=True)
    wrong = new_case(datetime.now(), dispatch=True)  # sent to HW, which will send it back
    with served_copy(app) as base:
        yield {"base": base, "fresh": fresh, "late": late, "wrong": wrong}
    engine.dispose()


def signed_in_phone(chromium_page, server, name: str):
    page = chromium_page(phone=True, locale="zh-CN")
    sign_in_page(page, server["base"], name)
    return page


@pytest.fixture
def phone(chromium_page, server):
    return signed_in_phone(chromium_page, server, "dispatcher")


def ready(page):
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)


def test_dispatch_to_a_department_and_chase_an_overdue_case(phone, server):
    page = phone
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.url.endswith("/cases")  # the 指挥中心 lands on the list
    page.goto(f"{server['base']}/cases/{server['fresh']}")
    ready(page)
    options = page.locator("#case-department option").all_text_contents()
    assert options == ["区环境卫生管理站（默认）", "街道办事处"]
    page.select_option("#case-department", "JD")
    box = page.locator("#action-buttons button[data-action=dispatch]").bounding_box()
    assert box["height"] >= 44
    page.screenshot(path=str(SHOTS / "dispatch.png"), full_page=True)
    page.click("#action-buttons button[data-action=dispatch]")
    page.wait_for_function("() => window.gridplan.case.version === 3")
    assert "街道办事处" in page.text_content("#case-figures")
    history = page.locator("#case-history li[data-step=dispatched]").text_content()
    assert "街道办事处" in history and "dispatcher" in history
    assert page.locator("#action-buttons button[data-action=supervise]").count() == 0  # not due yet

    page.goto(f"{server['base']}/cases/{server['late']}")
    ready(page)
    # neither a department to choose nor an after-photo: the 指挥中心 does not handle
    assert not page.is_visible("#case-department") and not page.is_visible("#case-after-photo-label")
    chase = page.locator("#action-buttons button[data-action=supervise]")
    assert chase.text_content() == "督办"
    chase.click()  # without a note: asked for one, nothing sent
    assert "说明" in page.text_content("#status") or "理由" in page.text_content("#status")
    assert page.evaluate("window.gridplan.case.supervise_count") == 0
    page.fill("#case-note", "已超期，请今日处置")
    chase.click()
    page.wait_for_function("() => window.gridplan.case.supervise_count === 1")
    figures = page.text_content("#case-figures")
    assert "红牌" in figures
    step = page.locator("#case-history li[data-step=supervised]").text_content()
    assert "已超期，请今日处置" in step and "红牌" in step
    assert page.evaluate("document.documentElement.scrollWidth") <= 361
    page.screenshot(path=str(SHOTS / "supervise.png"), full_page=True)
    assert page.errors == []


def test_a_department_sends_back_a_case_and_lands_on_its_list(chromium_page, server):
    """退回: the handler's case page is no longer theirs once sent back, so the phone goes back
    to the list and says what was done (not a 404 on reload)."""
    page = signed_in_phone(chromium_page, server, "hw")
    page.goto(f"{server['base']}/cases/{server['wrong']}")
    ready(page)
    back = page.locator("#action-buttons button[data-action=send_back]")
    page.fill("#case-note", "该处为街道管辖，非环卫站职责")
    back.click()
    page.wait_for_url(lambda url: url.endswith("/cases"))
    ready(page)
    said = f"() => document.getElementById('status').textContent.includes('{server['wrong']}')"
    page.wait_for_function(said)
    assert server["wrong"] not in page.text_content("#case-list")
    assert page.errors == []


def test_a_handlers_case_page_draws_the_cell_and_the_top_bar_counts_what_needs_them(chromium_page, server):
    """A department's handler sees the case's cell outlined on its map (as the 指挥中心 does), and
    the top bar counts what needs them (the overdue case dispatched to them)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = signed_in_phone(chromium_page, server, "hw")
    badge = page.locator("#attention [data-kind=overdue]")
    assert badge.count() == 1 and int(badge.get_attribute("data-n")) >= 1
    page.goto(f"{server['base']}/cases/{server['late']}")
    ready(page)
    outlined = "() => document.querySelectorAll('#case-map path[stroke=\"#d7191c\"]').length === 1"
    page.wait_for_function(outlined, timeout=15_000)  # the case's cell, in the highlight colour
    page.screenshot(path=str(SHOTS / "handler-case.png"), full_page=True)
    assert page.errors == []
