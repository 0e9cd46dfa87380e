"""The supervisor's case pages in headless Chromium at a phone's width (360 px): report a case at
the phone's location with a photo, drive it through every step of the loop with the buttons,
see a version conflict answered with the current state; the map opens on the supervisor's cells."""

from __future__ import annotations

import shutil

import pytest

from geodata.db import get_engine
from geodata.settings import save_setting
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.images import JPEG
from tests.webhelpers import make_accounts, served_copy, sign_in_page

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    folder = tmp_path_factory.mktemp("cases")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    # one supervisor takes every step here: the separated loop is tests/test_departments.py's
    save_setting(get_engine(url), "incident_separation", False, actor="test")
    app = make_app(url, BASEMAP="osm", PHOTO_DIR=str(folder / "photos"))
    secrets = make_accounts(app, small_demo)
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    with served_copy(app) as base:
        yield {"base": base, "cells": mine, "folder": folder, **secrets}


@pytest.fixture
def phone(chromium_page, server):
    here = server["cells"].iloc[0].geometry.representative_point()
    page = chromium_page(
        phone=True,
        locale="zh-CN",  # a supervisor's phone in Chinese
        geolocation={"longitude": here.x, "latitude": here.y},
        permissions=["geolocation"],
        no_tiles=True,
    )
    sign_in_page(page, server["base"], "supervisor")
    return page


def ready(page):
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)


def report_here(page, server) -> str:
    """Report a case at the phone's location with the form's defaults, and open its page; its code."""
    page.goto(f"{server['base']}/cases/new")
    ready(page)
    page.click("#locate")
    page.wait_for_function("() => document.querySelector('input[name=lon]').value !== ''")
    page.click("form#report-form button[type=submit]")
    page.wait_for_selector("#reported-text a")
    code = page.text_content("#reported-text a")
    page.goto(f"{server['base']}/cases/{code}")
    ready(page)
    return code


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth") <= 360 + 1


def test_a_case_through_every_step_on_a_phone(phone, server, tmp_path):
    page = phone
    page.goto(f"{server['base']}/cases/new")
    ready(page)
    page.click("#locate")
    page.wait_for_function("() => document.querySelector('input[name=lon]').value !== ''")
    page.select_option("select[name=category]", "E01-01")
    page.fill("textarea[name=description]", EVIL)
    photo = tmp_path / "scene.jpg"
    photo.write_bytes(JPEG)
    page.set_input_files("input[name=photo]", str(photo))
    page.click("form#report-form button[type=submit]")
    page.wait_for_selector("#reported-text a")
    no_sideways_scroll(page)
    page.screenshot(path=str(server["folder"] / "report.png"), full_page=True)
    code = page.text_content("#reported-text a")
    page.click("#reported-text a")
    ready(page)
    assert page.text_content("#case-figures").count(EVIL) == 1  # as text, never as HTML
    assert page.locator("#case-photos img").count() == 1
    for action in ("file", "dispatch", "handle", "return", "handle", "close", "evaluate"):
        button = page.locator(f"#action-buttons button[data-action={action}]")
        box = button.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44  # a finger's size
        if action == "return":
            page.fill("#case-note", "未清理干净 not clean yet")
        version = page.evaluate("window.gridplan.case.version")
        button.click()
        page.wait_for_function(f"() => window.gridplan.case.version === {version + 1}")
        if action == "dispatch":
            assert page.text_content("#case-clock").startswith("剩余")
        no_sideways_scroll(page)
    page.screenshot(path=str(server["folder"] / "case.png"), full_page=True)
    steps = page.locator("#case-history li").all_text_contents()
    assert page.locator("#case-history li").evaluate_all("items => items.map((li) => li.dataset.step)") == [
        "reported",
        "filed",
        "dispatched",
        "handled",
        "returned",
        "handled",
        "closed",
        "evaluated",
    ]
    assert all("supervisor" in s for s in steps)
    assert page.locator("#action-buttons button").count() == 0
    assert page.errors == []
    assert code


def test_a_conflict_shows_the_current_state(phone, server):
    page = phone
    code = report_here(page, server)
    # someone else files it meanwhile
    import requests

    answer = requests.post(
        f"{server['base']}/api/incidents/{code}/actions",
        json={"action": "file", "version": 1},
        headers={"Authorization": f"Bearer {server['supervisor_token']}"},
        timeout=10,
    )
    assert answer.status_code == 200
    page.click("#action-buttons button[data-action=file]")
    page.wait_for_selector("#conflict:not([hidden])")
    assert "已被他人处理" in page.text_content("#conflict")
    page.wait_for_function("() => window.gridplan.case.version === 2")
    assert page.locator("#action-buttons button[data-action=dispatch]").count() == 1


def test_a_note_is_added_on_the_cases_page(phone, server):
    """补充说明 from the case's page on a phone: the note goes into the history, the case's
    version and status stay."""
    page = phone
    report_here(page, server)
    button = page.locator("#action-buttons button[data-action=note]")
    assert button.inner_text() == "补充说明"
    button.click()  # nothing written yet: asked for, nothing sent
    assert "请先写说明" in page.text_content("#status")
    page.fill("#case-note", "又有人倒了两袋")
    button.click()
    page.wait_for_selector("#case-history li[data-step=noted]")
    assert "又有人倒了两袋" in page.text_content("#case-history")
    assert page.evaluate("window.gridplan.case.version") == 1
    assert page.text_content("#case-figures").count("版本") == 0  # said once, in the status line
    no_sideways_scroll(page)


def test_the_top_bars_count_follows_a_step_taken_on_the_page(phone, server):
    """新上报 N in the top bar counts one case fewer as soon as the case is filed on its page."""
    page = phone
    report_here(page, server)
    chip = page.locator("#attention .chip[data-kind=new]")
    before = int(chip.get_attribute("data-n"))
    assert chip.inner_text() == f"新上报 {before}"
    page.click("#action-buttons button[data-action=file]")
    page.wait_for_function("() => window.gridplan.case.version === 2")
    page.wait_for_function("(n) => { const c = document.querySelector('#attention .chip[data-kind=new]'); "
                           "return n === 0 ? document.getElementById('attention').hidden || c.hidden "
                           ": c.dataset.n === String(n); }", arg=before - 1)
    if before > 1:
        assert chip.inner_text() == f"新上报 {before - 1}"
        assert f"新上报 {before - 1} 件" in page.get_attribute("#attention", "aria-label")


def test_the_case_list_puts_overdue_first(phone, server):
    page = phone
    page.goto(f"{server['base']}/cases")
    ready(page)
    left = page.evaluate("""Array.from(document.querySelectorAll('#case-list li')).map(li => li.className)""")
    overdue = [c.endswith("overdue") for c in left]
    assert overdue == sorted(overdue, reverse=True)
    no_sideways_scroll(page)
    page.screenshot(path=str(server["folder"] / "list.png"), full_page=True)


def test_names_are_listed_as_each_language_lists_them(phone, chromium_page, server):
    """Cells, supervisors, streets and fields one after another: "、" between them on a Chinese
    page, ", " on an English one (``gpLocale.list``, every page's)."""
    phone.goto(f"{server['base']}/cases")
    ready(phone)
    assert phone.evaluate("gpLocale.list(['鹦鹉社区 第 1 网格', '鹦鹉社区 第 2 网格'])") == \
        "鹦鹉社区 第 1 网格、鹦鹉社区 第 2 网格"
    page = chromium_page(locale="en-US", no_tiles=True)
    sign_in_page(page, server["base"], "admin")
    page.goto(f"{server['base']}/cases")
    ready(page)
    assert page.evaluate("gpLocale.list(['cell 1', 'cell 2'])") == "cell 1, cell 2"


def test_the_map_opens_on_the_supervisors_cells_every_time(chromium_page, server):
    cells = server["cells"]
    minx, miny, maxx, maxy = cells.total_bounds
    for _ in range(4):
        page = chromium_page(viewport={"width": 1200, "height": 800}, no_tiles=True)
        sign_in_page(page, server["base"], "supervisor")
        page.wait_for_url(lambda url: "/cases" in url)  # a 网格员 lands on their cases
        page.goto(f"{server['base']}/supervisor")
        ready(page)
        page.wait_for_timeout(400)  # any animation would have ended by now
        bounds = page.evaluate(
            "(() => { const b = window.gridplan.map.getBounds(); "
            "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()"
        )
        width = maxx - minx
        assert bounds[0] <= minx and bounds[2] >= maxx and (bounds[2] - bounds[0]) < 4 * width + 0.01
        page.context.close()  # the next time is a new browser
