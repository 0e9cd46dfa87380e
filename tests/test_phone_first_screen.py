"""The 网格员's phone pages show their data from the page itself (issue 18's phone aim): the case
list and a case are drawn by the server, so that they read with scripts blocked (a slow phone on
a slow signal shows them before any script has come); the filters work as a plain form; the map's
code is fetched only on a page that shows a map; the static files come under versioned addresses
the browser keeps a year. With scripts, the same pages work as before (the buttons, the map)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import requests

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, make_accounts, served_copy, sign_in_page
from webmap.auth import add_token, add_user

SHOTS = Path("/tmp/phone-speed")


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    folder = tmp_path_factory.mktemp("first-screen")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, PHOTO_DIR=str(folder / "photos"))
    secrets = make_accounts(app, small_demo)
    with app.app_context():  # the command centre files cases (separation of duties)
        add_user("centre", "dispatcher", PASSWORD)
        centre = {"Authorization": f"Bearer {add_token('centre-app', 'dispatcher')}"}
    with served_copy(app) as base:
        cells = small_demo.layers["grid_cells"]
        here = cells[cells["code"].str.startswith(secrets["scope"])].iloc[0].geometry.representative_point()
        headers = {"Authorization": f"Bearer {secrets['supervisor_token']}"}
        made = [requests.post(f"{base}/api/incidents", headers=headers, timeout=30,
                              json={"lon": here.x, "lat": here.y, "category": "E01-01",
                                    "description": f"井盖缺失 {n}"}).json() for n in range(2)]
        # one of them filed: it is open, no longer new
        filed = requests.post(f"{base}/api/incidents/{made[1]['code']}/actions", headers=centre, timeout=30,
                              json={"action": "file", "version": made[1]["version"]})
        assert filed.status_code == 200, filed.text
        yield {"base": base, "made": made}


def phone_page(chromium_page, *, scripts: bool):
    """A page on a supervisor's phone (:data:`tests.conftest.PHONE`) asking for English, its
    scripts on or off; the URLs it asks for recorded in ``page.requests``."""
    return chromium_page(phone=True, locale="en-US", java_script_enabled=scripts, requests=True)


def test_the_list_and_a_case_read_with_scripts_blocked(chromium_page, server):
    page = phone_page(chromium_page, scripts=False)
    asked = page.requests
    sign_in_page(page, server["base"], "supervisor")
    page.goto(f"{server['base']}/cases")
    new, filed = server["made"]
    # the list opens on what needs me: the new case is there, its description and time left in words
    item = page.locator(f".case-item[data-code='{new['code']}']")
    assert item.is_visible() and "井盖缺失 0" in item.inner_text()
    assert "not dispatched: the clock has not started" in item.inner_text()
    assert page.locator(f".case-item[data-code='{filed['code']}']").count() == 0
    assert re.search(r"\d+ cases? · \d+ overdue", page.inner_text("#case-count"))
    assert "Updated" in page.inner_text("#status")
    # the filters are a plain form: "open" shows the filed case too
    page.select_option("select[name=status]", "open")
    page.click("#case-filters-show")
    page.wait_for_url(lambda url: "status=open" in url)
    assert page.locator(f".case-item[data-code='{filed['code']}']").is_visible()
    assert page.is_checked("input[name=mine]")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "list-no-scripts.png"), full_page=True)
    # a case: its title, clock, figures and history, all from the page
    page.click(f".case-item[data-code='{filed['code']}'] a.code")
    page.wait_for_url(lambda url: f"/cases/{filed['code']}" in url)
    assert page.inner_text("#case-title").startswith(filed["code"])
    figures = page.inner_text("#case-figures")
    assert "Status" in figures and "井盖缺失 1" in figures
    history = page.locator("#case-history li")
    steps = [history.nth(i).get_attribute("data-step") for i in range(history.count())]
    assert steps == ["reported", "filed"]
    assert page.inner_text("#status") == "Version 2"
    page.screenshot(path=str(SHOTS / "case-no-scripts.png"), full_page=True)
    # no page asked the API for its data, nor fetched the map's code
    assert not [u for u in asked if "/api/" in u]


def test_with_scripts_the_pages_work_and_fetch_the_map_only_to_show_one(chromium_page, server):
    page = phone_page(chromium_page, scripts=True)
    errors = page.errors
    asked = page.requests
    sign_in_page(page, server["base"], "centre")  # the command centre: filing is its step
    new, _filed = server["made"]
    asked.clear()
    page.goto(f"{server['base']}/cases")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    # the script draws from the answer in the page: the one-tap filing appears, no list asked again
    assert page.locator(f".case-item[data-code='{new['code']}'] button[data-action=file]").is_visible()
    assert page.is_hidden("#case-filters-show")
    assert not [u for u in asked if "/api/incidents?status=needs" in u]
    assert not [u for u in asked if "leaflet" in u]  # the list shows no map
    # the case page fetches Leaflet and draws the map with the pin
    page.click(f".case-item[data-code='{new['code']}'] a.code")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready && window.gridplan.pin"
                           " && window.gridplan.pin.ready", timeout=30_000)
    assert [u for u in asked if "vendor/leaflet/leaflet.js" in u]
    assert page.locator("#case-map .leaflet-marker-icon").count() >= 1
    assert page.locator("#action-buttons button[data-action=file]").is_visible()
    assert not errors


def test_static_files_come_under_versioned_addresses_kept_a_year(server):
    session = requests.Session()
    html = session.get(f"{server['base']}/login", timeout=30).text
    address = re.search(r'src="(/static/js/i18n\.js\?v=[0-9a-f]+)"', html)[1]
    kept = session.get(server["base"] + address, timeout=30)
    assert kept.status_code == 200 and kept.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    # an address of another build's file is not kept: the browser asks again
    other = session.get(f"{server['base']}/static/js/i18n.js?v=000000000000", timeout=30)
    assert other.status_code == 200 and "immutable" not in other.headers.get("Cache-Control", "")
    # and the service worker keeps the same addresses for offline
    worker = session.get(f"{server['base']}/sw.js", timeout=30).text
    assert address in worker
