"""The map pages in real headless Chromium (Debian's, driven by Playwright; no browser download)."""

from __future__ import annotations

import pytest
import shapely
from sqlalchemy import text

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, make_accounts, served_copy, sign_in_page

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    import shutil

    path = tmp_path_factory.mktemp("browser") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    write_demo(engine, small_demo)
    # a community whose name is an attack: it must show as text everywhere
    evil_code = small_demo.layers["communities"]["code"].iloc[0]
    with engine.begin() as conn:
        conn.execute(text("UPDATE communities SET name = :n WHERE code = :c"), {"n": EVIL, "c": evil_code})
    app = make_app(url, BASEMAP="osm")
    secrets = make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield {"base": base, "evil": evil_code, **secrets}


@pytest.fixture
def page(chromium_page):
    # no network beyond this machine: every tile request fails, as on an intranet
    return chromium_page(viewport={"width": 1400, "height": 900}, dialogs="dismiss", no_tiles=True)


def open_map(page, base: str, path: str) -> None:
    page.goto(f"{base}{path}")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)


def show(page, geometry) -> None:
    """Fit the map to ``geometry`` and wait until the planning units of that view are drawn."""
    minx, miny, maxx, maxy = geometry.bounds
    page.evaluate("(b) => { window.gridplan.map.fitBounds(b, {animate: false}); }",
                  [[miny, minx], [maxy, maxx]])
    page.wait_for_function("() => !window.gridplan.state.unitsPending")


def click_at(page, lon: float, lat: float) -> None:
    point = page.evaluate("([lat, lon]) => { const m = window.gridplan.map;"
                          " const p = m.latLngToContainerPoint([lat, lon]);"
                          " const r = m.getContainer().getBoundingClientRect();"
                          " return [r.left + p.x, r.top + p.y]; }", [lat, lon])
    page.mouse.click(*point)


def test_planner_map_shows_every_community_and_a_click_shows_its_households(page, server, small_demo):
    sign_in_page(page, server["base"], "planner")
    open_map(page, server["base"], "/map")
    communities = small_demo.layers["communities"]
    assert page.evaluate("window.gridplan.layers.communities.getLayers().length") == len(communities)
    page.get_by_label("Facilities").uncheck()  # markers would sit on top of the spot we click
    target = communities.iloc[5]
    households = small_demo.layers["units"].query("community_code == @target.code")["households"].sum()
    show(page, target.geometry)
    inside = shapely.point_on_surface(target.geometry)
    click_at(page, inside.x, inside.y)
    page.wait_for_selector("#selected:not([hidden])")
    assert page.inner_text("#selected-name") == target["name"]
    assert f"{households:,}" in page.inner_text("#selected-figures")
    # the street's histogram follows once its figures have arrived
    page.wait_for_function("(street) => window.gridplan.histogram.scope === street",
                           arg=target["street_code"])
    assert page.errors == []


def test_toggling_a_layer_hides_it(page, server):
    sign_in_page(page, server["base"], "viewer")
    open_map(page, server["base"], "/map")
    assert page.evaluate("window.gridplan.map.hasLayer(window.gridplan.layers.facilities)")
    page.get_by_label("Facilities").uncheck()
    assert not page.evaluate("window.gridplan.map.hasLayer(window.gridplan.layers.facilities)")
    page.get_by_label("Grid cells").check()
    assert page.evaluate("window.gridplan.map.hasLayer(window.gridplan.layers.grid_cells)")


def test_text_from_the_database_is_shown_as_text(page, server, small_demo):
    sign_in_page(page, server["base"], "planner")
    open_map(page, server["base"], "/map")
    page.get_by_label("Facilities").uncheck()
    evil = small_demo.layers["communities"].set_index("code").loc[server["evil"]]
    # the side panel
    show(page, evil.geometry)
    inside = shapely.point_on_surface(evil.geometry)
    click_at(page, inside.x, inside.y)
    page.wait_for_selector("#selected:not([hidden])")
    assert page.inner_text("#selected-name") == EVIL
    # the popup and the tooltip of the community
    popup = page.evaluate("""(code) => { const l = window.gridplan.state.communities.get(code).layer;
        l.openPopup(); return l.getPopup().getElement().textContent; }""", server["evil"])
    assert EVIL in popup
    # search
    page.fill("#search-q", "onerror")
    page.click("#search button")
    page.wait_for_selector("#search-results li")
    assert EVIL in page.inner_text("#search-results")
    tooltip = page.evaluate("""(code) => { const l = window.gridplan.state.communities.get(code).layer;
        l.openTooltip(); return l.getTooltip().getElement().textContent; }""", server["evil"])
    assert EVIL in tooltip
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == []


def test_supervisor_sees_only_the_incidents_of_their_cells(page, server, small_demo):
    sign_in_page(page, server["base"], "supervisor")
    open_map(page, server["base"], "/supervisor")
    scope = server["scope"]
    incidents = small_demo.layers["incidents"]
    mine = incidents[incidents["grid_code"].str.startswith(scope)]
    codes = page.evaluate("window.gridplan.state.incidents.map(f => f.properties.grid_code)")
    assert len(codes) == len(mine) > 0 and all(c.startswith(scope) for c in codes)
    cells = small_demo.layers["grid_cells"]["code"].str.startswith(scope).sum()
    assert page.evaluate("window.gridplan.state.cells") == cells
    page.select_option("#filters select[name=status]", "closed")
    page.click("#filters button")
    page.wait_for_function(f"() => window.gridplan.state.shown === {(mine['status'] == 'closed').sum()}")
    first = page.evaluate("window.gridplan.state.incidents[0].properties.code")
    history = page.evaluate(f"fetch('/api/incidents/{first}/history').then(r => r.json())")
    assert history["steps"][0]["step"] == "reported"


def test_the_map_works_with_tiles_cut_off(page, server):
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    sign_in_page(page, server["base"], "planner")  # a planner lands on the map
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert page.url.endswith("/map")
    assert any("tile.openstreetmap.org" in url for url in failed)  # the base map did fail …
    assert page.evaluate("window.gridplan.layers.communities.getLayers().length") > 0  # … and nothing else
    assert page.errors == []
    external = [u for u in failed if "tile.openstreetmap.org" not in u]
    assert external == []


def test_a_supervisor_signs_in_on_a_phone(chromium_page, server):
    """360 px, touch: the sign-in page is laid out at the phone's width (not a 980 px page
    shrunk), its fields span it and the button is a thumb's size; signing in lands on the cases."""
    page = chromium_page(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True,
                         locale="zh-CN")
    page.goto(f"{server['base']}/login")
    assert page.evaluate("() => window.innerWidth") == 360  # no shrunk desktop layout
    field = page.locator("input[name=name]").bounding_box()
    button = page.locator("form.login button[type=submit]").bounding_box()
    assert field["width"] >= 300 and button["height"] >= 44 and button["width"] >= 100, (field, button)
    assert page.locator("h1").inner_text() == "登录"
    page.fill("input[name=name]", "supervisor")
    page.fill("input[name=password]", PASSWORD)
    page.tap("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
