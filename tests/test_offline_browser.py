"""A 网格员's phone without a signal, in headless Chromium at 360 × 740 by touch, against the app
served by gunicorn as ``make run`` serves it: the case list and the report form open offline
from the service worker's copy, a report and steps made offline wait on the phone
and the page says so; when the signal returns each is stored exactly once — also the step whose
answer was lost on the way — and a step on a case that moved meanwhile stays on the phone with
the 409 explained and the case as it is now, to be redone or discarded. The service worker's
cache is named by the build's hash, keeps no API answer but the case list, and signing out
empties the kept pages and the queue."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.images import JPEG
from tests.webhelpers import PASSWORD, csrf_token, gunicorn_app, make_accounts, sign_in_page

SHOTS = Path("/tmp/offline")


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    folder = tmp_path_factory.mktemp("offline")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url)
    secrets = make_accounts(app, small_demo)
    with app.app_context():
        from webmap.auth import add_token

        secrets["colleague"] = add_token("colleague", "supervisor", secrets["scope"])
        # separation of duties: the 指挥中心 files and dispatches; in a town without departments
        # another 网格员 handles, and the phone's 网格长 checks and closes
        secrets["centre"] = add_token("centre", "dispatcher")
        secrets["fixer"] = add_token("fixer", "supervisor", secrets["scope"])
    cells = small_demo.layers["grid_cells"]
    here = cells[cells["code"].str.startswith(secrets["scope"])].iloc[0].geometry.representative_point()
    with gunicorn_app(url, folder, GRIDPLAN_PHOTO_DIR=str(folder / "photos")) as (base, _env):
        yield {"base": base, "engine": get_engine(url), "here": here, **secrets}


def api(live, method, path, token="supervisor_token", **kwargs):
    return requests.request(method, live["base"] + path, headers={"Authorization": f"Bearer {live[token]}"},
                            timeout=30, **kwargs)


#: who takes each step in these tests (separation of duties is on)
BY = {"file": "centre", "dispatch": "centre", "cancel": "centre", "handle": "fixer"}


def new_case(live, *steps: str) -> dict:
    here = live["here"]
    case = api(live, "POST", "/api/incidents", json={"lon": here.x, "lat": here.y, "category": "E01-01",
                                                      "description": "离线测试"}).json()
    for action in steps:
        by = BY.get(action, "supervisor_token")
        answer = api(live, "POST", f"/api/incidents/{case['code']}/actions", by,
                     json={"action": action, "version": case["version"], "note": "ok"})
        assert answer.status_code == 200, answer.text
        case = answer.json()
    return case


def counts(live, client_id: str) -> tuple[int, int]:
    with live["engine"].connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {table} WHERE client_id = :c"),
                                  {"c": client_id}).scalar_one() for table in ("incidents", "incident_steps"))


@pytest.fixture
def phone(chromium_page, live):
    page = chromium_page(phone=True, locale="en-US", dialogs="accept")
    page.goto(f"{live['base']}/login")
    # a cache an earlier build left on the phone
    page.evaluate("caches.open('gridplan-static-0000oldbuild')"
                  ".then((c) => c.put('/static/x.js', new Response('old')))")
    page.fill("input[name=name]", "supervisor")
    page.fill("input[name=password]", PASSWORD)
    page.tap("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    return page, page.context


def ready(page):
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)


DUMP = "async () => (await window.gpQueue.items()).map((i) => [i.kind, i.code, i.state, i.reason])"


def until(page, predicate: str, timeout: float = 30) -> None:
    """Wait until the async ``predicate`` holds in the page (wait_for_function takes no promise)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate):
        assert time.monotonic() < deadline, f"still not: {predicate}: {page.evaluate(DUMP)}"
        page.wait_for_timeout(200)


def waiting(page) -> list[dict]:
    return page.evaluate("window.gpQueue.items()")


def cache_contents(page) -> dict[str, list[str]]:
    return page.evaluate("""async () => {
        const out = {};
        for (const name of await caches.keys()) {
            const keys = await (await caches.open(name)).keys();
            out[name] = keys.map((r) => new URL(r.url).pathname + new URL(r.url).search);
        }
        return out;
    }""")


def test_offline_reports_and_steps_are_stored_once_when_the_signal_returns(phone, live):
    page, context = phone
    SHOTS.mkdir(exist_ok=True)
    base = live["base"]
    loop = ("file", "dispatch", "handle")  # the 指挥中心 files and dispatches, another 网格员 handles
    a = new_case(live, *loop)  # the phone closes it offline; its answer is lost on the way once
    b = new_case(live, *loop)  # the phone closes it offline; a colleague closes it first
    c = new_case(live, *loop)  # the phone closes it; a colleague returns it first, it is handled again
    # online: the service worker installs, the pages are kept as they are opened
    page.goto(f"{base}/cases")
    ready(page)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()  # now under the service worker's control
    ready(page)
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    page.goto(f"{base}/cases/new")
    ready(page)
    for case in (a, b, c):
        page.goto(f"{base}/cases/{case['code']}")
        ready(page)
    page.goto(f"{base}/cases")
    ready(page)

    context.set_offline(True)
    page.reload()
    ready(page)
    assert "Offline" in page.inner_text("#status")
    assert page.is_visible("#offline-panel") and "Offline" in page.inner_text("#offline-summary")
    before = _totals(live)
    # a report with a photo, made offline
    page.goto(f"{base}/cases/new")
    ready(page)
    page.select_option("select[name=category]", "E01-01")
    page.fill("textarea[name=description]", "地下室漏水")
    # a pin placed by a tap: its icon is the kept one, and the place look-up gives up at once
    page.tap("#pin-map", position={"x": 160, "y": 120})
    page.wait_for_function("() => document.getElementById('place-words').textContent"
                           ".includes('checked when the report is sent')", timeout=5_000)
    assert page.evaluate("""() => { const icons = [...document.querySelectorAll(
        '#pin-map img.leaflet-marker-icon, #pin-map img.leaflet-marker-shadow')];
        return icons.length === 2 && icons.every((i) => i.complete && i.naturalWidth > 0); }""")
    page.click(".lonlat-box summary")  # no signal: the coordinates typed (the map needs its look-ups)
    page.fill("input[name=lon]", f"{live['here'].x:.7f}")
    page.fill("input[name=lat]", f"{live['here'].y:.7f}")
    # (the photo of a replayed report: tests/test_offline.py; photos under gunicorn:
    # tests/test_served_photos.py)
    page.tap("#report-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('Kept on this')")
    # the case pages open offline from what was kept; the 网格长 checks and closes each there
    for case in (a, b, c):
        page.goto(f"{base}/cases/{case['code']}")
        ready(page)
        assert "Offline" in page.inner_text("#status")
        page.tap("#action-buttons button[data-action=close]")
        page.wait_for_selector("#case-actions .waiting-note")
    assert "Kept on this phone" in page.inner_text("#status")
    assert "4 waiting to be sent" in page.inner_text("#offline-summary")
    page.screenshot(path=str(SHOTS / "offline-waiting.png"), full_page=True)
    assert _totals(live) == before  # nothing reached the server
    queued = {(i["kind"], i.get("code")): i for i in waiting(page)}
    # meanwhile: the colleague closes b, returns c for rework, and c is handled again
    assert api(live, "POST", f"/api/incidents/{b['code']}/actions", "colleague",
               json={"action": "close", "version": b["version"]}).status_code == 200
    c_now = api(live, "POST", f"/api/incidents/{c['code']}/actions", "colleague",
                json={"action": "return", "version": c["version"], "note": "redo"}).json()
    c_now = api(live, "POST", f"/api/incidents/{c['code']}/actions", "fixer",
                json={"action": "handle", "version": c_now["version"]}).json()
    # … and a's step reached the server once already, its answer lost on the way
    step_a = queued[("step", a["code"])]
    browser = requests.Session()
    token = csrf_token(browser.get(f"{base}/login", timeout=30).text)
    browser.post(f"{base}/login", data={"name": "supervisor", "password": PASSWORD, "csrf_token": token},
                 timeout=30)
    token = re.search(r'name="csrf-token" content="([^"]+)"',
                      browser.get(f"{base}/cases", timeout=30).text)[1]
    lost = browser.post(f"{base}/api/incidents/{a['code']}/actions", headers={"X-CSRFToken": token},
                        json={**step_a["body"], "client_id": step_a["client_id"]}, timeout=30)
    assert lost.status_code == 200 and lost.json()["status"] == "closed"

    context.set_offline(False)  # the signal returns: what waits is sent, oldest first
    until(page, "async () => (await window.gpQueue.items()).every((x) => x.state === 'refused')")
    # still on c's page, without a reload: the 409 is said there at once with the case as it is
    # now — no "kept on this phone" left over, the version the colleague's steps reached
    page.wait_for_selector("#conflict:not([hidden])", timeout=5_000)
    assert "Someone acted first" in page.inner_text("#conflict") and c["code"] in page.inner_text("#conflict")
    assert "Kept on this phone" not in page.inner_text("#status")
    assert f"at version {c_now['version']}" in page.inner_text("#status")
    figures = page.inner_text("#case-figures")
    assert str(c_now["version"]) in figures and "handled, to check" in figures
    assert "was not taken" in page.inner_text("#case-actions .waiting-note")
    assert page.locator("#action-buttons button[data-action=close]").is_enabled()  # to be redone
    page.screenshot(path=str(SHOTS / "offline-refused-on-the-case.png"), full_page=True)
    page.goto(f"{base}/cases")
    ready(page)
    left = waiting(page)
    assert sorted(i["code"] for i in left) == sorted([b["code"], c["code"]])
    assert all(i["status"] == 409 and i["current"] for i in left)
    assert "2 not taken" in page.inner_text("#offline-summary")
    item = "#offline-items li[data-client-id='{}']".format
    conflict_b = page.locator(item(queued[("step", b["code"])]["client_id"]))
    assert "changed meanwhile" in conflict_b.inner_text() and "closed" in conflict_b.inner_text()
    assert conflict_b.locator("button[data-do=redo]").count() == 0  # closing is no longer a step b can take
    page.screenshot(path=str(SHOTS / "offline-conflicts.png"), full_page=True)
    # every report and step stored exactly once
    report = queued[("report", None)]
    assert counts(live, report["client_id"]) == (1, 0)
    assert counts(live, step_a["client_id"]) == (0, 1)
    assert counts(live, queued[("step", b["code"])]["client_id"]) == (0, 0)
    with live["engine"].connect() as conn:
        code = conn.execute(text("SELECT code FROM incidents WHERE client_id = :c"),
                            {"c": report["client_id"]}).scalar_one()
    assert api(live, "GET", f"/api/incidents/{code}").json()["description"] == "地下室漏水"
    assert api(live, "GET", f"/api/incidents/{a['code']}").json()["version"] == a["version"] + 1
    # c's close is redone on the case as it is now; b's close is discarded
    conflict_c = page.locator(item(queued[("step", c["code"])]["client_id"]))
    conflict_c.locator("button[data-do=redo]").tap()
    until(page, f"async () => !(await window.gpQueue.items()).some((x) => x.code === '{c['code']}')")
    # in Chinese (the kept pages go with the language switch): the box in the reader's words
    page.tap("#locale-zh")
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    ready(page)
    until(page, "async () => document.querySelectorAll('#offline-items li').length === 1")
    assert "未受理" in page.inner_text("#offline-items") and "舍弃" in page.inner_text("#offline-items")
    page.screenshot(path=str(SHOTS / "offline-conflict-zh.png"), full_page=True)
    conflict_b = page.locator(item(queued[("step", b["code"])]["client_id"]))
    conflict_b.locator("button[data-do=discard]").tap()  # asks first (accepted)
    until(page, "async () => (await window.gpQueue.items()).length === 0")
    assert page.is_hidden("#offline-panel")
    assert api(live, "GET", f"/api/incidents/{c['code']}").json()["status"] == "closed"
    assert counts(live, queued[("step", c["code"])]["client_id"]) == (0, 1)
    assert page.errors == []


def _totals(live) -> tuple[int, int, int]:
    with live["engine"].connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("incidents", "incident_steps", "incident_photos"))


def test_the_cache_is_named_by_the_build_keeps_only_the_case_list_and_goes_at_sign_out(phone, live):
    page, context = phone
    base = live["base"]
    worker = requests.get(f"{base}/sw.js", timeout=30)
    assert worker.status_code == 200 and worker.headers["Cache-Control"] == "no-cache"
    build = re.search(r'const BUILD = "([0-9a-f]{16})"', worker.text)[1]
    case = new_case(live, "file", "dispatch", "handle")  # for the phone's 网格长 to check and close
    page.goto(f"{base}/cases")
    ready(page)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()
    ready(page)
    page.goto(f"{base}/cases/{case['code']}")
    ready(page)
    page.goto(f"{base}/cases")
    ready(page)
    until(page, "async () => (await caches.keys()).includes('gridplan-data')")
    kept = cache_contents(page)
    # the earlier build's cache is gone, this build's is there
    assert f"gridplan-static-{build}" in kept and "gridplan-static-0000oldbuild" not in kept
    assert all(p.startswith("/static/") for p in kept[f"gridplan-static-{build}"])
    # of the API, only the case list (no case with its history, no photo, no other answer)
    api_kept = [p for name, paths in kept.items() for p in paths if p.startswith("/api/")]
    assert api_kept and all(p.split("?")[0] == "/api/incidents" for p in api_kept)
    assert set(kept["gridplan-pages"]) <= {"/cases", "/cases/new", f"/cases/{case['code']}"}
    # something waits (offline), then signing out asks, and empties the kept pages and the queue
    context.set_offline(True)
    page.goto(f"{base}/cases/{case['code']}")
    ready(page)
    page.tap("#action-buttons button[data-action=close]")
    page.wait_for_selector("#case-actions .waiting-note")
    assert len(waiting(page)) == 1, page.evaluate(DUMP)
    page.route("**/api/incidents/*/actions", lambda route: route.abort())  # still not sent
    context.set_offline(False)
    page.tap("form.logout button[type=submit]")
    page.wait_for_url(lambda url: "/login" in url)
    left = page.evaluate("""async () => {
        const names = await caches.keys();
        const db = await new Promise((ok) => { const r = indexedDB.open('gridplan-offline', 1);
            r.onupgradeneeded = () => r.result.createObjectStore('queue', { keyPath: 'client_id' });
            r.onsuccess = () => ok(r.result); });
        const items = await new Promise((ok) => {
            const r = db.transaction('queue').objectStore('queue').getAll();
            r.onsuccess = () => ok(r.result); });
        return { names, items: items.length };
    }""")
    assert left["items"] == 0
    assert not {"gridplan-pages", "gridplan-data"} & set(left["names"])
    # the step never went
    assert api(live, "GET", f"/api/incidents/{case['code']}").json()["version"] == case["version"]


def in_english(page) -> None:
    """The signed-in user's pages in English (an earlier test may have switched them to Chinese)."""
    page.evaluate("""async () => { const token = document.querySelector('meta[name=csrf-token]').content;
        await fetch('/locale', {method: 'POST', headers: {'X-CSRFToken': token,
          'Content-Type': 'application/x-www-form-urlencoded'}, body: 'locale=en'}); }""")


def test_the_same_case_offline_is_kept_named_in_the_current_language_and_stored_once(chromium_page, live,
                                                                                    tmp_path):
    """"This is the same case" without a signal: the note and its photo wait on the phone, the
    box names the item in the interface's language (made in English, read in Chinese after the
    switch), and when the signal returns the note is stored once with its photo."""
    SHOTS.mkdir(exist_ok=True)
    base, here = live["base"], live["here"]
    first = new_case(live)
    page = chromium_page(phone=True, locale="en-US", dialogs="accept", permissions=["geolocation"],
                         geolocation={"longitude": here.x, "latitude": here.y})
    context = page.context
    sign_in_page(page, base, "supervisor", tap=True)
    in_english(page)
    page.goto(f"{base}/cases/new")
    page.wait_for_function("() => window.gridplan.pin && window.gridplan.pin.place !== null", timeout=30_000)
    page.select_option("select[name=category]", "E01-01")
    page.wait_for_selector(f"#nearby:not([hidden]) li[data-code='{first['code']}']")
    page.fill("textarea[name=description]", "又看到了，地下室")
    photo = tmp_path / "again.jpg"
    photo.write_bytes(JPEG)
    page.set_input_files("input[name=photo]", str(photo))
    before = _totals(live)
    context.set_offline(True)  # the signal goes as the 网格员 taps
    page.tap(f"#nearby-list button.same-case[data-code='{first['code']}']")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('Kept on this')")
    assert first["code"] in page.inner_text("#reported-text")
    until(page, "async () => (await window.gpQueue.items()).length === 1")
    (item,) = waiting(page)
    assert item["kind"] == "note" and item["code"] == first["code"] and item["state"] == "waiting"
    label = page.inner_text("#offline-items li .label")
    assert label == f"The same case {first['code']}: 又看到了，地下室"
    assert "1 waiting to be sent" in page.inner_text("#offline-summary")
    page.screenshot(path=str(SHOTS / "same-case-offline.png"), full_page=True)
    assert _totals(live) == before  # nothing reached the server
    # back in range but the notes do not get through yet (a captive portal): the language is
    # switched meanwhile, and the waiting item reads in Chinese
    page.route("**/api/incidents/*/notes", lambda route: route.abort())
    context.set_offline(False)
    page.tap("#locale-zh")
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    until(page, "async () => document.querySelectorAll('#offline-items li .label').length === 1")
    label = page.inner_text("#offline-items li .label")
    assert label == f"同一案件 {first['code']}：又看到了，地下室", label
    assert "The same case" not in page.inner_text("#offline-panel")
    page.screenshot(path=str(SHOTS / "same-case-offline-zh.png"), full_page=True)
    assert _totals(live) == before
    page.unroute("**/api/incidents/*/notes")
    page.evaluate("window.gpQueue.flush()")
    until(page, "async () => (await window.gpQueue.items()).length === 0")
    assert counts(live, item["client_id"]) == (0, 1)
    case = api(live, "GET", f"/api/incidents/{first['code']}").json()
    assert case["version"] == first["version"]
    assert case["steps"][-1]["step"] == "noted" and case["steps"][-1]["note"] == "又看到了，地下室"
    assert [p["step"] for p in case["photos"]] == ["noted"]
    assert _totals(live) == (before[0], before[1] + 1, before[2] + 1)
    assert page.errors == []


def test_the_grid_map_of_ones_own_cells_reads_offline_and_says_from_when(phone, live):
    """The 网格员's grid map (/supervisor) opened once with a signal opens again without one:
    their cells, who holds them and their cases from what the phone kept, and the page says it
    is showing saved data, and from when."""
    page, context = phone
    SHOTS.mkdir(exist_ok=True)
    base = live["base"]
    new_case(live)
    in_english(page)
    page.goto(f"{base}/cases")
    ready(page)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.reload()
    ready(page)
    assert page.evaluate("navigator.serviceWorker.controller !== null")
    page.goto(f"{base}/supervisor")
    ready(page)
    online = page.evaluate("[window.gridplan.state.cells, window.gridplan.state.incidents.length]")
    assert online[0] > 0 and online[1] > 0
    assert page.is_hidden("#offline-note")

    context.set_offline(True)
    page.reload()
    ready(page)
    assert page.evaluate("[window.gridplan.state.cells, window.gridplan.state.incidents.length]") == online
    note = page.inner_text("#offline-note")
    assert page.is_visible("#offline-note")
    assert note.startswith("Offline: showing the grid cells and cases saved")
    saved = page.evaluate("window.gridplan.state.offline")
    assert saved and page.evaluate("(iso) => gpLocale.date(iso)", saved) in note
    assert page.evaluate("window.gridplan.layers.cells.getLayers().length") == online[0]  # drawn (canvas)
    assert page.evaluate("document.documentElement.scrollWidth") <= 361
    page.screenshot(path=str(SHOTS / "grid-map-offline.png"))
    page.screenshot(path=str(SHOTS / "grid-map-offline-full.png"), full_page=True)
    # a filter never asked for with a signal: said, and the kept data stays on the map
    page.select_option("#filters select[name=status]", "cancelled")
    page.tap("#filters button[type=submit]")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('not saved')")
    assert page.evaluate("window.gridplan.state.incidents.length") == online[1]
    context.set_offline(False)
    assert page.errors == []
