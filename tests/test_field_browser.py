"""The 网格员 in the field, in headless Chromium on a 360 × 740 touch phone (zh-CN), with a base
map whose tiles never load: sign in and land on the cases; report by tapping the map, the place
in words filled in; the open cases of the category nearby shown before sending, "this is the
same case" adding a note and no case; the case page's map, place, distance and geo: link; the
count of what needs me in the top bar. Screenshots go to /tmp/field/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from geodata.db import get_engine
from geodata.models import Incident
from layers.sample_data.demo import seed_departments, write_demo
from tests.conftest import make_app
from tests.images import JPEG
from tests.webhelpers import PASSWORD, csrf_token, make_accounts, served_copy, sign_in_page

SHOTS = Path("/tmp/field")


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    folder = tmp_path_factory.mktemp("field")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, BASEMAP="osm", PHOTO_DIR=str(folder / "photos"))
    secrets = make_accounts(app, small_demo)
    seed_departments(get_engine(url))
    with app.app_context():  # the 指挥中心 and a department's handler
        from webmap.auth import add_user

        add_user("dispatcher", "dispatcher", PASSWORD)
        add_user("handler", "handler", PASSWORD, department="SZ")
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    SHOTS.mkdir(parents=True, exist_ok=True)
    with served_copy(app) as base:
        yield {"base": base, "cells": mine, "engine": get_engine(url), **secrets}


def phone_context(chromium_page, here=None):
    where = {} if here is None else {"geolocation": {"longitude": here.x, "latitude": here.y},
                                     "permissions": ["geolocation"]}
    page = chromium_page(phone=True, locale="zh-CN", no_tiles=True, **where)  # no signal for tiles
    # what the page's Content-Security-Policy blocks is an error too (tiles that fail are not)
    page.on("console", lambda m: page.errors.append(m.text) if "Content Security Policy" in m.text else None)
    return page.context, page


def cases(server) -> int:
    with server["engine"].connect() as conn:
        return conn.execute(select(func.count()).select_from(Incident)).scalar_one()


def tap_at(page, selector, lon, lat):
    """Tap the map at (lon, lat) (its container pixel, from Leaflet)."""
    box = page.locator(selector).bounding_box()
    point = page.evaluate("([lat, lon]) => { const map = window.gridplan.pin.map; "
                          "const p = map.latLngToContainerPoint([lat, lon]); return [p.x, p.y]; }",
                          [lat, lon])
    assert 0 <= point[0] <= box["width"] and 0 <= point[1] <= box["height"], "the point is off the map"
    page.touchscreen.tap(box["x"] + point[0], box["y"] + point[1])


def no_sideways_scroll(page):
    assert page.evaluate("document.documentElement.scrollWidth") <= 360 + 1


def test_signing_in_on_a_phone_lands_on_the_cases(chromium_page, server):
    context, page = phone_context(chromium_page)
    page.goto(f"{server['base']}/login")
    button = page.locator("form.login button[type=submit]").bounding_box()
    assert button["height"] >= 44 and button["width"] >= 120  # made for a thumb, not shrunk
    assert page.locator("input[name=name]").bounding_box()["width"] >= 280
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "login.png"))
    sign_in_page(page, server["base"], "supervisor", tap=True)
    assert page.url.endswith("/cases")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready")
    assert page.locator("h1, #case-list, #case-filters").count() >= 1
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "landing.png"))
    assert page.errors == []
    context.close()


def test_a_pin_by_tapping_the_map_duplicates_before_sending_and_the_same_case(chromium_page, server,
                                                                            tmp_path):
    cell = server["cells"].iloc[0]
    here = cell.geometry.representative_point()
    # without GPS: the map opens on the 网格员's own cells, the pin is placed by a tap
    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.goto(f"{server['base']}/cases/new")
    page.wait_for_function("() => window.gridplan.pin && window.gridplan.pin.ready")
    page.wait_for_function("() => document.querySelectorAll('#pin-map svg path').length > 0")  # the base
    page.select_option("select[name=category]", "E01-01")
    before = cases(server)
    page.tap("form#report-form button[type=submit]")  # no pin yet: nothing sent
    assert "图钉" in page.text_content("#status")
    assert cases(server) == before
    tap_at(page, "#pin-map", here.x, here.y)
    page.wait_for_function("() => window.gridplan.pin.place !== null")
    words = page.text_content("#place-words")
    # the cell as a person reads it (community and number), not its 15-digit code
    assert f"第 {int(cell['code'][-3:])} 网格" in words and cell["code"] not in words
    assert page.evaluate("window.gridplan.pin.place.community_name") in words
    assert page.evaluate("window.gridplan.pin.place.road") in words
    lon = float(page.input_value("input[name=lon]"))
    assert abs(lon - here.x) < 0.0002  # where the finger was (a few pixels)
    assert page.locator("#nearby").is_hidden()
    page.fill("textarea[name=description]", "桥下暴露垃圾")
    photo = tmp_path / "scene.jpg"
    photo.write_bytes(JPEG)
    page.set_input_files("input[name=photo]", str(photo))
    page.wait_for_selector("#photo-preview-box:not([hidden])")
    assert page.evaluate("document.getElementById('photo-preview').src").startswith("data:image/jpeg")
    send = page.locator(".send-bar button[type=submit]").bounding_box()
    assert send["y"] + send["height"] <= 740 and send["height"] >= 44  # in reach without scrolling
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "pin.png"))
    page.screenshot(path=str(SHOTS / "pin-full.png"), full_page=True)
    page.tap("form#report-form button[type=submit]")
    page.wait_for_selector("#reported-text a")
    first = page.text_content("#reported-text a")
    assert cases(server) == before + 1
    context.close()

    # another 网格员 with GPS a few metres away: the case is shown before sending
    context, page = phone_context(chromium_page, here)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.goto(f"{server['base']}/cases/new")
    page.wait_for_function("() => window.gridplan.pin && window.gridplan.pin.place !== null")  # GPS pin
    page.select_option("select[name=category]", "E01-01")
    page.wait_for_selector("#nearby:not([hidden]) li")
    assert page.text_content("#nearby-list li a") == first
    page.fill("textarea[name=description]", "又看到了，更多了")
    page.screenshot(path=str(SHOTS / "nearby.png"), full_page=True)
    page.tap(f"#nearby-list button.same-case[data-code='{first}']")
    page.wait_for_selector("#reported-text a")
    assert page.text_content("#reported-text a") == first
    assert cases(server) == before + 1  # no new case
    page.goto(f"{server['base']}/cases/{first}")
    page.wait_for_function("() => window.gridplan.ready && window.gridplan.pin.ready")
    steps = page.locator("#case-history li").evaluate_all("items => items.map((li) => li.dataset.step)")
    assert steps[-1] == "noted"
    assert "又看到了，更多了" in page.text_content("#case-history")
    assert page.errors == []
    context.close()


def test_the_case_page_shows_where_to_go(chromium_page, server):
    cell = server["cells"].iloc[-1]
    here = cell.geometry.representative_point()
    import requests

    made = requests.post(f"{server['base']}/api/incidents",
                         json={"lon": here.x, "lat": here.y, "category": "C01-01", "description": "井盖破损"},
                         headers={"Authorization": f"Bearer {server['supervisor_token']}"}, timeout=10).json()
    standing = type(here)(here.x + 0.003, here.y)  # the 网格员 about 300 m east
    context, page = phone_context(chromium_page, standing)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.goto(f"{server['base']}/cases/{made['code']}")
    page.wait_for_function("() => window.gridplan.ready && window.gridplan.pin.ready")
    # the cell as a person reads it: its community's name and its number, not the 15-digit code
    named = f"第 {int(cell['code'][-3:])} 网格"
    for where in ("#case-place", "#case-figures"):
        assert named in page.text_content(where) and cell["code"] not in page.text_content(where)
    # a hidden control stays hidden (no native file chooser beside the styled photo button)
    assert page.evaluate("() => [...document.querySelectorAll('[hidden]')]"
                         ".every((e) => getComputedStyle(e).display === 'none')")
    assert page.locator("#case-map .leaflet-marker-icon").count() == 1
    page.wait_for_function("() => document.querySelectorAll('#case-map svg path').length > 0")  # cells, roads
    href = page.get_attribute("#geo-link", "href")
    assert href.startswith(f"geo:{here.y:.7f},{here.x:.7f}?q=")
    page.wait_for_function("() => document.getElementById('case-distance').dataset.metres")
    metres = int(page.get_attribute("#case-distance", "data-metres"))
    assert 250 < metres < 350
    assert "距您" in page.text_content("#case-distance")
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "case.png"), full_page=True)
    assert page.errors == []
    context.close()


def test_what_needs_me_counts_in_the_top_bar(chromium_page, server):
    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.wait_for_selector("#attention")
    new = int(page.get_attribute("#attention .chip.new", "data-n"))
    assert new >= 1  # the cases reported above are new
    assert page.input_value("#case-filters select[name=status]") == "needs"  # the list opens on them
    page.wait_for_function("() => window.gridplan.ready")
    assert page.locator("#case-list li").count() >= new
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "needs.png"))
    context.close()


def test_tapping_the_grid_map_offers_a_report_there(chromium_page, server):
    here = server["cells"].iloc[0].geometry.representative_point()
    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.goto(f"{server['base']}/supervisor")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready")
    page.evaluate("([lat, lon]) => window.gridplan.map.setView([lat, lon], 17, { animate: false })",
                  [here.y, here.x])
    # beside the point where the cases reported above sit (a tap on them opens a case); the page
    # position is read in one go, so nothing laid out meanwhile moves the tap
    target = page.evaluate("([lat, lon]) => { const map = window.gridplan.map; "
                           "const box = map.getContainer().getBoundingClientRect(); "
                           "const p = map.latLngToContainerPoint([lat, lon]); "
                           "return [box.left + p.x, box.top + p.y]; }",
                           [here.y, here.x + 0.0006])
    page.touchscreen.tap(target[0], target[1])
    page.wait_for_selector("#report-here")
    page.screenshot(path=str(SHOTS / "grid-map-tap.png"))
    # where the map says the finger landed (a loaded machine may lay the page out a few pixels
    # apart from where the tap was aimed: about 15 m at this zoom)
    tapped = page.evaluate("(() => { const p = window.gridplan.map._popup.getLatLng(); "
                           "return [p.lng, p.lat]; })()")
    assert tapped[0] == pytest.approx(here.x + 0.0006, abs=0.0003)
    page.tap("#report-here")
    page.wait_for_url(lambda url: "/cases/new?" in url)
    page.wait_for_function("() => window.gridplan.pin && window.gridplan.pin.place !== null")
    # the report form's pin is exactly where the map was tapped
    assert page.evaluate("window.gridplan.pin.place.lon") == pytest.approx(tapped[0], abs=1e-6)
    assert page.evaluate("window.gridplan.pin.place.lat") == pytest.approx(tapped[1], abs=1e-6)
    assert page.errors == []
    context.close()


def test_each_role_sees_only_what_it_may_use_and_names_beside_codes(chromium_page, server):
    """A department's handler is offered no report, map, rates or "my cells" (403 pages for
    them); the 网格员's top bar names their community (the code in a title); the 指挥中心's top
    bar has the grid map and the new reports waiting for them."""
    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "handler", tap=True)
    page.goto(f"{server['base']}/cases")
    bar = page.text_content(".case-bar")
    assert "上报" not in bar and "地图" not in bar and "考核" not in bar
    assert page.locator("input[name=mine]").count() == 0
    offered = page.eval_on_selector_all("main a.big-button, .topbar nav a", "els => els.map((e) => e.href)")
    for href in offered:
        assert page.request.get(href).status == 200, href  # every link offered opens
    no_sideways_scroll(page)
    page.screenshot(path=str(SHOTS / "handler_cases.png"), full_page=True)
    context.close()

    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "supervisor", tap=True)
    page.goto(f"{server['base']}/cases")
    # a case of their own to list, whichever tests ran before (or none)
    here = server["cells"].iloc[0].geometry.representative_point()
    case = {"lon": here.x, "lat": here.y, "category": "C01-01", "description": "井盖松动"}
    reported = page.request.post(f"{server['base']}/api/incidents", data=case,
                                 headers={"X-CSRFToken": csrf_token(page.content())})
    assert reported.status == 201, reported.text()
    page.reload()
    scope = page.locator(".topbar .who .scope")
    assert scope.get_attribute("title") == server["scope"]
    assert scope.text_content().strip().endswith("社区") and server["scope"] not in scope.text_content()
    count = page.text_content("#case-count")
    assert server["scope"] not in count
    first = page.locator("#case-list li .muted").first.text_content()
    assert "第 " in first and server["scope"] not in first  # a card names its cell
    page.wait_for_function("() => window.gridplan.ready")  # redrawn by the script: still names
    assert server["scope"] not in page.text_content("#case-list")
    assert page.locator("input[name=mine]").count() == 1
    # who took a step: the login name and the role word (as the demo's steps name a role)
    base = server["base"]
    listed = page.request.get(f"{base}/api/incidents?status=open").json()["incidents"]
    steps = {c["code"]: page.request.get(f"{base}/api/incidents/{c['code']}").json()["steps"] for c in listed}
    mine = next(code for code, done in steps.items() if any(s["actor"] == "supervisor" for s in done))
    page.goto(f"{base}/cases/{mine}")
    # the community's supervisor is its 网格长 (a cell's is a 监督员): each by their own role
    assert "supervisor（网格长）" in page.text_content("#case-history")
    page.wait_for_function("() => window.gridplan.ready")  # redrawn by the script: the same words
    assert "supervisor（网格长）" in page.text_content("#case-history")
    context.close()

    context, page = phone_context(chromium_page)
    sign_in_page(page, server["base"], "dispatcher", tap=True)
    page.goto(f"{server['base']}/cases")
    assert page.locator(".topbar nav a", has_text="网格地图").count() == 1
    assert int(page.get_attribute("#attention .chip.new", "data-n")) >= 1  # new reports are theirs
    assert page.locator(".case-bar a", has_text="上报").count() == 1
    page.screenshot(path=str(SHOTS / "dispatcher_cases.png"))
    context.close()
