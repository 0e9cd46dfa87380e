"""Every text that reaches a page, a popup, an export or a report is escaped: the XSS payloads of
``tests/hostile_text.py`` go in through every form and import that stores text — a street
office's communities file (names), facilities (names), plan names and a plan's community names,
cases reported by the API, by the form's multipart post and by Open311, the notes of case
actions, user and token names — and come out as text: never verbatim in a page's HTML, never an
element or a dialog in Chromium, exactly as sent in GeoJSON, and behind a ``'`` in CSV when a
spreadsheet would read them as a formula.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import geopandas as gpd
import pytest
from markupsafe import escape

from geodata.db import get_engine
from layers.worker import run_one
from tests.conftest import demo_site
from tests.hostile_text import SPREADSHEET, XSS, unescaped
from tests.webhelpers import PASSWORD, served_copy, sign_in_page, signed_in

#: the pages a payload may reach, as (role, path); ``{plan}``, ``{case}``, ``{street}`` filled in
PAGES = (("planner", "/map"), ("planner", "/plans"), ("planner", "/plans/{plan}"), ("planner", "/layers"),
         ("planner", "/coverage"), ("planner", "/coverage/report?street={street}"),
         ("admin", "/cases"), ("admin", "/cases/{case}"), ("supervisor", "/cases/new"),
         ("supervisor", "/supervisor"), ("admin", "/rates"), ("admin", "/admin/users"),
         ("admin", "/admin/tokens"), ("admin", "/admin/audit"), ("admin", "/admin/settings"))


def plant(url: str, demo, upload_folder, payloads=XSS, spreadsheet=SPREADSHEET) -> dict:
    """The demo at ``url`` with ``payloads`` stored through every way in; what was stored where."""
    engine = get_engine(url)
    app, secrets = demo_site(url, demo, BASEMAP="none", UPLOAD_FOLDER=str(upload_folder))
    texts = [*payloads, *spreadsheet]
    planner, p_headers = signed_in(app, "planner")
    admin, a_headers = signed_in(app, "admin")
    supervisor, s_headers = signed_in(app, "supervisor")
    streets = demo.layers["streets"]
    street = streets["code"].iloc[0]
    # a street office's communities file: the first street's communities renamed (update)
    communities = demo.layers["communities"]
    mine = communities[communities["street_code"] == street].copy()
    names = [texts[i % len(texts)][:50] for i in range(len(mine))]
    mine["name"] = names
    answer = _upload(planner, p_headers, "communities", mine, "社区.geojson")
    assert answer.status_code == 200 and answer.json["ok"], answer.get_data(as_text=True)
    queued = planner.post("/api/layers/communities/import", headers=p_headers,
                          json={"upload": answer.json["upload"], "mode": "update"})
    assert queued.status_code == 202, queued.get_data(as_text=True)
    done = run_one(engine)
    assert done["status"] == "done" and not done["result"]["refused"], done
    # facilities: new ones, named with the payloads
    facilities = demo.layers["facilities"].iloc[: len(texts)].copy()
    facilities["code"] = [f"{c}X" for c in facilities["code"]]
    facilities["name"] = [t[:50] for t in texts[: len(facilities)]]
    answer = _upload(planner, p_headers, "facilities", facilities, "设施.geojson")
    assert answer.status_code == 200 and answer.json["ok"], answer.get_data(as_text=True)
    assert planner.post("/api/layers/facilities/import", headers=p_headers,
                        json={"upload": answer.json["upload"], "mode": "append"}).status_code == 202
    assert run_one(engine)["status"] == "done"
    # a plan named with a payload, renamed with another, one of its communities named with a third
    plan = planner.post("/api/plans", json={"name": payloads[0][:50], "street": street}, headers=p_headers)
    assert plan.status_code == 201, plan.get_data(as_text=True)
    plan_id = plan.json["plan_id"]
    version = planner.get(f"/api/plans/{plan_id}").json["version"]
    renamed = planner.post(f"/api/plans/{plan_id}/rename", headers=p_headers,
                           json={"name": payloads[1][:50], "version": version})
    assert renamed.status_code == 200, renamed.get_data(as_text=True)
    units = planner.get(f"/api/plans/{plan_id}/units").json
    community = units["features"][0]["properties"]["community_code"] if "features" in units else None
    if community:
        version = planner.get(f"/api/plans/{plan_id}").json["version"]
        named = planner.post(f"/api/plans/{plan_id}/communities/{community}/name", headers=p_headers,
                             json={"name": payloads[2][:50], "version": version})
        assert named.status_code in (200, 400), named.get_data(as_text=True)
    # cases: by the API (JSON), by the form's post (multipart), by Open311 — and action notes
    scope = secrets["scope"]
    category = "E01-01"
    cases = []
    for i, text in enumerate(texts):
        if i % 3 == 0:
            answer = supervisor.post("/api/incidents", headers=s_headers,
                                     json={"community": scope, "category": category, "description": text,
                                           "source": text[:50]})
        elif i % 3 == 1:
            answer = supervisor.post("/api/incidents", headers=s_headers, content_type="multipart/form-data",
                                     data={"community": scope, "category": category, "description": text})
        else:
            point = supervisor.get(f"/api/collections/communities/items/{scope}").json["geometry"]
            lon, lat = _inside(point)
            answer = supervisor.post("/open311/v2/requests.json", headers=s_headers,
                                     data={"service_code": category, "lat": lat, "long": lon,
                                           "description": text})
        assert answer.status_code == 201, answer.get_data(as_text=True)
        body = answer.get_json()
        cases.append(body[0]["service_request_id"] if isinstance(body, list) else body["code"])
    for code, text in zip(cases, texts, strict=False):
        case = admin.get(f"/api/incidents/{code}").json
        acted = admin.post(f"/api/incidents/{code}/actions", headers=a_headers,
                           json={"action": "cancel", "version": case["version"], "note": text})
        assert acted.status_code in (200, 400, 403, 409), acted.get_data(as_text=True)
    # accounts and tokens named with payloads (no control characters: those are refused)
    for i, text in enumerate(t for t in payloads if len(t) <= 50 and t.isprintable()):
        kind = "users" if i % 2 == 0 else "tokens"
        body = {"name": text, "role": "viewer"} | ({"password": PASSWORD} if kind == "users" else {})
        made = admin.post(f"/api/admin/{kind}", headers=a_headers, json=body)
        assert made.status_code in (200, 201), made.get_data(as_text=True)
    return {"app": app, "url": url, "plan": plan_id, "cases": cases, "street": street, "texts": texts,
            "names": names, "engine": engine}


def _upload(client, headers, layer: str, frame, filename: str):
    data = gpd.GeoDataFrame(frame, crs=4326).to_json(default=str).encode()
    return client.post(f"/api/layers/{layer}/preview", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(data), filename)})


def _inside(geometry: dict) -> tuple[float, float]:
    from shapely.geometry import shape

    point = shape(geometry).representative_point()
    return point.x, point.y


def pages(site) -> list[tuple[str, str]]:
    return [(role, path.format(plan=site["plan"], case=site["cases"][0], street=site["street"]))
            for role, path in PAGES] + [("admin", f"/cases/{code}") for code in site["cases"][1:]]


def unescaped_on_pages(site) -> list[str]:
    """Each (page, payload) where the payload is in the HTML as it was sent."""
    clients = {}
    found = []
    for role, path in pages(site):
        if role not in clients:
            clients[role] = signed_in(site["app"], role)[0]
        answer = clients[role].get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        html = answer.get_data(as_text=True)
        found += [f"{path}: {p!r}" for p in site["texts"] if unescaped(p, html) or unescaped(p[:50], html)]
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory, spatialite_template, small_demo):
    folder = tmp_path_factory.mktemp("xss")
    shutil.copy(spatialite_template, folder / "gridplan.sqlite")
    return plant(f"sqlite:///{folder / 'gridplan.sqlite'}", small_demo, folder / "uploads")


def test_no_page_shows_a_payload_as_html(site):
    assert unescaped_on_pages(site) == []
    # and the payloads did reach the pages, as text
    client, _ = signed_in(site["app"], "admin")
    plans = client.get("/plans").get_data(as_text=True)
    assert str(escape(XSS[1])) in plans  # the plan's new name


def test_exports_keep_the_text_and_csv_neutralises_formulas(site):
    client, _ = signed_in(site["app"], "admin")
    street = site["street"]
    geojson = client.get(f"/api/layers/communities/export?format=geojson&street={street}")
    assert geojson.status_code == 200
    stored = {f["properties"]["name"] for f in json.loads(geojson.get_data())["features"]}
    assert set(site["names"]) <= stored  # GeoJSON: the text exactly as sent
    for url in (f"/api/layers/communities/export?format=csv&street={street}",
                f"/api/collections/communities/items?f=csv&street_code={street}&limit=1000",
                "/api/exports/incidents?format=csv", "/admin/audit.csv",
                "/api/rates?format=csv&by=community"):
        answer = client.get(url)
        assert answer.status_code == 200, url
        text = answer.get_data().decode("utf-8-sig")
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        formulas = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")
                    or (c[:1] == "-" and not _number(c))]
        assert formulas == [], f"{url}: cells a spreadsheet would run"
        if "incidents" in url:
            assert any(c == "'" + SPREADSHEET[0] for c in cells), "the case's text, behind a '"


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def live(site):
    with served_copy(site["app"]) as base:
        yield base


def injected_in_chromium(chromium_page, base: str, targets: list[tuple[str, str]]) -> list[str]:
    """Each page of ``targets`` (role, path) opened in Chromium: the dialogs that opened and the
    elements a payload made (ids starting with ``xss``)."""
    found: list[str] = []
    by_role: dict[str, list[str]] = {}
    for role, path in targets:
        by_role.setdefault(role, []).append(path)
    for role, paths in by_role.items():
        page = chromium_page(viewport={"width": 1200, "height": 900})
        page.on("dialog", lambda d, page=page, found=found: (
            found.append(f"{page.url}: dialog {d.message!r}"), d.dismiss()))
        sign_in_page(page, base, role)
        for path in paths:
            page.goto(f"{base}{path}")
            page.wait_for_load_state("networkidle")
            # the map's layers: hover every shape, so each tooltip is built
            page.evaluate("""() => document.querySelectorAll('path.leaflet-interactive').forEach(
                (p, i) => { if (i < 200) p.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); })""")
            made = page.evaluate("() => [...document.querySelectorAll('[id^=xss]')].map(e => e.outerHTML)")
            found += [f"{path}: {m}" for m in made]
        page.context.close()  # this role's pages are read: their memory goes now, not at the end
    return found


def test_no_payload_runs_in_chromium(site, live, chromium_page):
    """The pages that show the payloads, in Chromium: no dialog opens, no element a payload
    would make exists — in the pages, the map's tooltips and popups, the tables the scripts
    build."""
    assert injected_in_chromium(chromium_page, live, pages(site)[:len(PAGES) + 3]) == []
    # the detector sees what it looks for: a case page shows its payload as text, and a
    # payload put into the page as HTML is found
    page = chromium_page()
    sign_in_page(page, live, "admin")
    page.goto(f"{live}/cases/{site['cases'][1]}")
    page.wait_for_load_state("networkidle")
    assert site["texts"][1] in page.inner_text("body")  # shown as the text it is
    page.evaluate("(html) => { const d = document.createElement('div'); d.innerHTML = html;"
                  " document.body.append(d); }", XSS[1])
    assert page.evaluate("() => document.querySelector('[id^=xss]') !== null")
