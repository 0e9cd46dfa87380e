"""A map that reads at a glance, and the grid page — in real headless Chromium (Debian's, driven
by Playwright) on the small demo with no base map configured (the default on an intranet).

The planning map: community outlines clearly heavier than the units, drawn above them; community
names from zoom 14 and never one over another; a legend that folds and stays folded; a metric
scale; the city's own roads and water as the base, with road names from street zoom; the grid
cells fetched only once their layer is switched on. The grid page: a community's cells on the map
and in a table; generate, split, merge and assign through the grid API, its refusals shown.
Screenshots go to /tmp/mapgrid/ to be looked at."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import shapely
from sqlalchemy import text

from geodata.db import get_engine
from geodata.store import read_layer
from layers.grid.cells import cell_of_units, cell_table, grid_rules
from layers.sample_data.demo import write_demo
from tests.conftest import demo_site
from tests.webhelpers import served_copy, sign_in_page, signed_in

SHOTS = Path("/tmp/mapgrid")
SPLIT_HERE = "420103001004"  # three cells in the small demo
SCOPE = "420103001001"  # the test supervisor's community (make_accounts: the first), one cell


@pytest.fixture(scope="module")
def server(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("mapreading") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    app, secrets = demo_site(url, small_demo, BASEMAP="none")
    SHOTS.mkdir(exist_ok=True)
    with served_copy(app) as base:
        yield {"base": base, "engine": engine, "app": app, **secrets}


@pytest.fixture
def page(chromium_page):
    return chromium_page(viewport={"width": 1400, "height": 900}, locale="en-US", requests=True)


def open_page(page, base: str, path: str) -> None:
    page.goto(f"{base}{path}")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)


def view(page, lon: float, lat: float, zoom: int) -> None:
    """Centre the map on (lon, lat) at ``zoom`` and let labels and the base follow."""
    page.evaluate("([lat, lon, z]) => { window.gridplan.map.setView([lat, lon], z, {animate: false}); }",
                  [lat, lon, zoom])
    page.wait_for_function("() => !window.gp.base.pending && !window.gp.labelsPending()")


def overlapping(rects: list[dict]) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(rects) for j, b in enumerate(rects) if i < j
            and a["left"] < b["right"] and b["left"] < a["right"]
            and a["top"] < b["bottom"] and b["top"] < a["bottom"]]


# labels taken away fade out for 200 ms (Leaflet): only those still shown count
LABEL_RECTS = """(cls) => [...document.querySelectorAll(`.leaflet-tooltip.${cls}`)]
    .filter((e) => e.style.opacity !== "0").map((e) => {
    const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom,
    text: e.textContent}; })"""


def test_community_outlines_are_heavier_than_units_and_drawn_above_them(page, server, small_demo):
    sign_in_page(page, server["base"], "planner")
    open_map = open_page
    open_map(page, server["base"], "/map")
    page.get_by_label("Facilities").uncheck()
    target = small_demo.layers["communities"].iloc[5].geometry
    inside = shapely.point_on_surface(target)
    view(page, inside.x, inside.y, 16)
    page.wait_for_function("() => window.gridplan.state.unitsLoaded > 0")
    # the outlines are SVG paths in a pane of their own: their drawn width, read from the page
    widths = page.evaluate("""() => [...document.querySelectorAll('.leaflet-communityOutlines-pane path')]
        .map((p) => parseFloat(p.getAttribute('stroke-width')))""")
    unit_width = page.evaluate("window.gridplan.layers.units.getLayers()[0].options.weight")
    assert len(widths) == len(small_demo.layers["communities"])
    assert min(widths) >= 2.5 and unit_width <= 0.6
    assert min(widths) >= 4 * unit_width
    # above the units: the outline pane is stacked over the pane the units are drawn in
    stacking = page.evaluate("""() => { const m = window.gridplan.map;
        return [+m.getPane('communityOutlines').style.zIndex,
                +getComputedStyle(m.getPane('overlayPane')).zIndex]; }""")
    assert stacking[0] > stacking[1]
    page.screenshot(path=str(SHOTS / "planner-outlines-z16.png"))
    assert page.errors == []


def test_community_names_from_zoom_14_never_one_over_another(page, server, small_demo):
    sign_in_page(page, server["base"], "viewer")
    open_page(page, server["base"], "/map")
    centre = small_demo.layers["communities"].union_all().centroid
    view(page, centre.x, centre.y, 13)
    assert page.evaluate(LABEL_RECTS, "community-label") == []
    page.screenshot(path=str(SHOTS / "planner-labels-z13.png"))
    view(page, centre.x, centre.y, 14)
    labels = page.evaluate(LABEL_RECTS, "community-label")
    names = set(small_demo.layers["communities"]["name"])
    assert len(labels) >= 10 and {x["text"] for x in labels} <= names
    assert overlapping(labels) == []
    page.screenshot(path=str(SHOTS / "planner-labels-z14.png"))
    # the names are a layer: off, they are gone
    page.get_by_label("Community names").uncheck()
    page.wait_for_timeout(300)
    assert page.evaluate(LABEL_RECTS, "community-label") == []
    assert page.errors == []


def test_roads_and_water_are_the_base_with_road_names_at_street_zoom(page, server, small_demo):
    sign_in_page(page, server["base"], "planner")
    open_page(page, server["base"], "/map")
    page.get_by_label("Facilities").uncheck()
    assert any("/api/basemap?" in u for u in page.requests)
    assert page.evaluate("document.querySelector('.leaflet-container').classList.contains('no-tiles')")
    # zoomed out: the major roads only
    centre = small_demo.layers["communities"].union_all().centroid
    view(page, centre.x, centre.y, 13)
    classes = set(page.evaluate("(() => { const out = []; window.gp.base.roads.eachLayer("
                                "(l) => out.push(l.feature.properties.road_class)); return out; })()"))
    assert classes and classes <= {"arterial", "bridge"}
    assert page.evaluate("window.gp.base.water.getLayers().length") > 0
    roads = small_demo.layers["roads"]
    long_branch = roads[roads["road_class"] == "branch"].to_crs(3857)
    road = roads.loc[long_branch.length.idxmax()]
    middle = road.geometry.interpolate(0.5, normalized=True)
    view(page, middle.x, middle.y, 15)
    assert page.evaluate(LABEL_RECTS, "road-label") == []
    view(page, middle.x, middle.y, 16)
    names = page.evaluate(LABEL_RECTS, "road-label")
    assert names and {x["text"] for x in names} <= set(roads["name"])
    community_labels = page.evaluate(LABEL_RECTS, "community-label")
    assert overlapping(names + community_labels) == []
    classes = set(page.evaluate("(() => { const out = []; window.gp.base.roads.eachLayer("
                                "(l) => out.push(l.feature.properties.road_class)); return out; })()"))
    assert "branch" in classes
    page.screenshot(path=str(SHOTS / "planner-roads-z16.png"))
    assert page.errors == []


def test_the_legend_folds_and_stays_folded_and_the_scale_is_metric(page, server):
    sign_in_page(page, server["base"], "planner")
    open_page(page, server["base"], "/map")
    legend = page.locator("details.legend")
    assert legend.evaluate("d => d.open")
    assert page.is_visible("details.legend .legend-body")
    page.click("details.legend > summary")
    assert not legend.evaluate("d => d.open")
    assert not page.is_visible("details.legend .legend-body")
    page.screenshot(path=str(SHOTS / "planner-legend-folded.png"))
    open_page(page, server["base"], "/map")  # the choice is remembered
    assert not page.locator("details.legend").evaluate("d => d.open")
    scale = page.locator(".leaflet-control-scale-line")
    assert scale.count() == 1
    assert re.fullmatch(r"\d+ (m|km)", scale.inner_text().strip())
    page.click("details.legend > summary")
    assert page.locator("details.legend").evaluate("d => d.open")
    assert page.errors == []


def test_the_plan_page_legend_folds_too(page, server):
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan

    street = "420103001"
    plan_id, _ = auto_plan(PlanMemory(server["engine"]), "legend", "planner", street=street)
    sign_in_page(page, server["base"], "planner")
    open_page(page, server["base"], f"/plans/{plan_id}")
    assert page.locator(".leaflet-control-scale-line").count() == 1
    page.click("details.legend > summary")
    assert not page.is_visible("details.legend .legend-body")
    assert page.errors == []


def test_the_grid_cells_are_not_downloaded_while_their_layer_is_off(page, server, small_demo):
    sign_in_page(page, server["base"], "planner")
    open_page(page, server["base"], "/map")
    page.wait_for_load_state("networkidle")
    asked = lambda: [u for u in page.requests if "/api/collections/grid_cells/" in u]  # noqa: E731
    assert asked() == []
    page.get_by_label("Grid cells").check()
    page.wait_for_function("() => window.gridplan.state.gridCells === 'loaded'")
    assert len(asked()) == 1
    drawn = page.evaluate("window.gridplan.layers.grid_cells.getLayers().length")
    assert drawn == len(small_demo.layers["grid_cells"])
    page.get_by_label("Grid cells").uncheck()
    page.get_by_label("Grid cells").check()
    page.wait_for_timeout(300)
    assert len(asked()) == 1  # once is enough
    assert page.errors == []


def _cells(engine, community: str) -> list[str]:
    return sorted(read_layer(engine, "grid_cells", community=community)["code"])


def _table(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#cells-table tbody tr[data-code]')]"
                         ".map(r => r.dataset.code)")


def test_the_grid_page_generates_splits_merges_and_assigns(page, server):
    engine = server["engine"]
    sign_in_page(page, server["base"], "planner")
    open_page(page, server["base"], f"/grid?community={SPLIT_HERE}")
    assert _table(page) == _cells(engine, SPLIT_HERE)
    assert "420103001004" in page.inner_text("#grid-title")
    page.screenshot(path=str(SHOTS / "grid-page.png"))
    # generate: the API's answer, the table as stored
    page.click("#generate")
    page.wait_for_function("() => 'in_range_share' in (window.gridplan.lastAnswer || {})")
    before = _cells(engine, SPLIT_HERE)
    assert _table(page) == before
    # split the first cell: one more cell, stored and shown
    page.click(f"#cells-table tr[data-code='{before[0]}']")
    page.wait_for_selector("#cell:not([hidden])")
    loads = page.evaluate("window.gridplan.loads")
    page.click("#split")
    page.wait_for_function("(n) => window.gridplan.loads > n", arg=loads)
    after = _cells(engine, SPLIT_HERE)
    assert len(after) == len(before) + 1 and _table(page) == after
    # merge the new cell back into the one it came from
    new = sorted(set(after) - set(before))[0]
    page.click(f"#cells-table tr[data-code='{new}']")
    page.select_option("#merge-into", before[0])
    loads = page.evaluate("window.gridplan.loads")
    page.click("#merge")
    page.wait_for_function("(n) => window.gridplan.loads > n", arg=loads)
    assert _cells(engine, SPLIT_HERE) == before and _table(page) == before
    # a supervisor outside the cell's scope is not offered (the API would refuse them): here no
    # supervisor's scope holds the cell, and the list says so
    page.click(f"#cells-table tr[data-code='{before[0]}']")
    offered = page.eval_on_selector_all("#assign-who option", "os => os.map((o) => [o.value, o.textContent])")
    assert offered == [["", "No supervisor's scope holds this cell"]]
    assert page.locator("#assign").is_disabled() and page.locator("#unassign").is_disabled()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grid_assignments WHERE cell_code = :c"),
                            {"c": before[0]}).scalar_one() == 0
    page.screenshot(path=str(SHOTS / "grid-page-refusal.png"))
    assert page.errors == []


def test_the_grid_page_assigns_a_supervisor_in_scope(page, server):
    sign_in_page(page, server["base"], "admin")
    open_page(page, server["base"], f"/grid?street={SCOPE[:9]}")
    cell = _cells(server["engine"], SCOPE)[0]
    page.click(f"#cells-table tr[data-code='{cell}']")
    # only the supervisors whose scope holds the cell, their scope named beside its code
    offered = page.eval_on_selector_all("#assign-who option", "os => os.map((o) => [o.value, o.textContent])")
    name = read_layer(server["engine"], "communities", community=SCOPE)["name"].iloc[0]
    assert offered == [["supervisor", f"supervisor · {name} · {SCOPE}"]]
    page.select_option("#assign-who", "supervisor")
    loads = page.evaluate("window.gridplan.loads")
    page.click("#assign")
    page.wait_for_function("(n) => window.gridplan.loads > n", arg=loads)
    row = page.inner_text(f"#cells-table tr[data-code='{cell}']")
    assert "supervisor" in row
    with server["engine"].connect() as conn:
        assert conn.execute(text("SELECT user_name FROM grid_assignments WHERE cell_code = :c"),
                            {"c": cell}).scalar_one() == "supervisor"
    page.screenshot(path=str(SHOTS / "grid-page-street.png"))
    assert page.errors == []


def test_viewers_read_the_grid_page_and_supervisors_see_their_scope(page, server):
    sign_in_page(page, server["base"], "viewer")
    open_page(page, server["base"], f"/grid?community={SPLIT_HERE}")
    assert _table(page) == _cells(server["engine"], SPLIT_HERE)
    assert page.locator("#generate").is_hidden()
    page.click("#cells-table tbody tr[data-code]")
    assert page.locator("#split").is_hidden() and page.locator("#assign").is_hidden()
    page.context.clear_cookies()
    sign_in_page(page, server["base"], "supervisor")
    open_page(page, server["base"], "/grid")
    assert _table(page) == _cells(server["engine"], SCOPE)
    assert page.locator("#generate").is_hidden()
    response = page.goto(f"{server['base']}/grid?community={SPLIT_HERE}")
    assert response.status == 403
    assert page.errors == []


def test_the_cells_api_answers_by_scope(server, small_demo):
    client, _headers = signed_in(server["app"], "planner")
    answer = client.get(f"/api/grid/cells?community={SPLIT_HERE}").get_json()
    assert [f["properties"]["code"] for f in answer["features"]] == _cells(server["engine"], SPLIT_HERE)
    assert answer["rules"] == {"minimum": 300, "maximum": 500}
    assert client.get("/api/grid/cells").status_code == 400
    assert client.get("/api/grid/cells?community=12").status_code == 400
    supervisor, _ = signed_in(server["app"], "supervisor")
    assert supervisor.get(f"/api/grid/cells?community={SPLIT_HERE}").status_code == 403
    mine = supervisor.get(f"/api/grid/cells?street={SCOPE[:9]}").get_json()
    assert {f["properties"]["community_code"] for f in mine["features"]} == {SCOPE}


def test_the_basemap_api(server):
    client, _headers = signed_in(server["app"], "supervisor")
    assert client.get("/api/basemap").status_code == 400
    assert client.get("/api/basemap?bbox=1,2,3").status_code == 400
    assert client.get("/api/basemap?bbox=0,0,1,1&zoom=99").status_code == 400
    extent = ",".join(str(v) for v in read_layer(server["engine"], "roads").total_bounds)
    low = client.get(f"/api/basemap?bbox={extent}&zoom=12").get_json()["features"]
    high = client.get(f"/api/basemap?bbox={extent}&zoom=16").get_json()["features"]
    classes = {f["properties"]["road_class"] for f in low if f["properties"]["kind"] == "road"}
    assert classes and classes <= {"arterial", "bridge"}
    assert len(high) > len(low) and any(f["properties"]["kind"] == "water" for f in low)


def test_cell_table_counts_each_cells_households(engine, small_demo):
    """The grid page's figures: each cell's households are those of the units whose inside point
    it holds, and a cell outside the range says so in words (both databases)."""
    write_demo(engine, small_demo)
    street = SPLIT_HERE[:9]
    cells, report = cell_table(engine, grid_rules(engine), street=street)
    units = read_layer(engine, "units", street=street)
    held = cell_of_units(units, read_layer(engine, "grid_cells", street=street))
    expected = units.assign(cell=units["code"].map(held)).groupby("cell")["households"].sum()
    assert dict(zip(cells["code"], cells["households"], strict=True)) == expected.astype(int).to_dict()
    assert report["cells"] == len(cells)
    below = cells[cells["households"] < 300]
    assert len(below)
    assert all(any("below the minimum of 300" in p for p in problems) for problems in below["problems"])
    assert set(cells["community_name"].dropna()) <= set(small_demo.layers["communities"]["name"])


def test_a_one_cell_supervisor_is_told_of_their_cell_not_false_gaps(engine, small_demo):
    """A 网格员 whose scope is one cell sees that cell, validated against every cell of the
    community: the rest of the community is not a gap and its households are not "in no cell"
    (both databases)."""
    write_demo(engine, small_demo)
    whole_cells, whole = cell_table(engine, grid_rules(engine), community=SPLIT_HERE)
    assert len(whole_cells) >= 2
    mine = whole_cells["code"].iloc[0]
    cells, report = cell_table(engine, grid_rules(engine), community=SPLIT_HERE, within=mine)
    assert list(cells["code"]) == [mine] and report["cells"] == 1
    assert report["households_in_no_cell"] == whole["households_in_no_cell"]
    assert report["gaps"] == whole["gaps"]
    assert int(cells["households"].iloc[0]) == int(whole_cells["households"].iloc[0])
