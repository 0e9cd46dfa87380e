"""The coverage page and the printable report in real headless Chromium (Debian's, driven by
Playwright), with no base map: the layers and their counts, findings that fly the map, a proposed
facility that changes the numbers at once, where to build next, names shown as text."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from geodata.db import get_engine
from geodata.standards import FACILITY_STANDARDS
from layers.coverage import gaps as coverage
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import make_accounts, served_copy, sign_in_page

EVIL = "<img src=x onerror=alert(1)>"
SHOTS = Path(os.environ.get("GRIDPLAN_SCREENSHOTS", "/tmp/gridplan-shots"))


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("coverage-browser") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    write_demo(engine, small_demo)
    layers = small_demo.layers
    data = coverage.CoverageInputs(units=layers["units"], facilities=layers["facilities"],
                                   communities=layers["communities"], streets=layers["streets"],
                                   grid_cells=layers["grid_cells"], roads=layers["roads"])
    missing = coverage.missing_kinds(data.communities, data.facilities,
                                     coverage.standards_from_rows(FACILITY_STANDARDS))
    evil = missing[0]["community"]  # a community the findings list names
    with engine.begin() as conn:
        conn.execute(text("UPDATE communities SET name = :n WHERE code = :c"), {"n": EVIL, "c": evil})
    app = make_app(url, BASEMAP="osm")
    make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield {"base": base, "evil": evil}


@pytest.fixture
def page(chromium_page):
    # no network, as on an intranet
    return chromium_page(viewport={"width": 1400, "height": 900}, locale="zh-CN", dialogs="dismiss",
                         no_tiles=True)


def open_coverage(page, base: str) -> None:
    page.goto(f"{base}/coverage")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=60_000)


def test_coverage_page_layers_findings_proposal_and_sites(page, served):
    sign_in_page(page, served["base"], "planner")
    open_coverage(page, served["base"])
    report = page.evaluate("window.gridplan.state.report")
    assert page.evaluate("window.gridplan.layers.uncovered.getLayers().length") > 0
    assert page.evaluate("window.gridplan.layers.blind_spots.getLayers().length") == \
        report["blind_spots"]["units"] + report["blind_spots"]["land_parts"]
    assert page.evaluate("window.gridplan.layers.cell_problems.getLayers().length") == \
        len(report["cell_problems"]["findings"])
    legend = page.inner_text("#coverage-legend")
    assert "盲点单元" in legend and str(report["blind_spots"]["units"]) in legend
    figures = page.inner_text("#coverage-figures")
    assert "沿道路步行" in figures and f"{report['households']:,}" in figures
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "coverage.png"))

    # the names in the findings are text, never markup
    findings = page.locator("#findings li")
    assert findings.count() > 0
    assert any(EVIL in t for t in page.locator("#findings li[data-kind=missing]").all_inner_texts())
    # a grid cell's finding names its cells and units beside their codes, as /rates names cells
    cell_findings = report["cell_problems"]["findings"]
    assert cell_findings, "the demo's grid has findings"
    assert all(all(f["names"]) for f in cell_findings), cell_findings
    named = cell_findings
    shown = " ".join(page.locator("#findings li").all_inner_texts())
    for finding in named[:5] + named[-5:]:  # overlaps and gaps first, units in no cell last
        assert f"{finding['names'][0]} {finding['codes'][0]}" in shown, finding
    # a finding flies the map to it
    first = report["blind_spots"]["findings"][0]
    page.locator("#findings li").first.click()
    page.wait_for_function("() => window.gridplan.map.getZoom() === 17", timeout=10_000)
    centre = page.evaluate("(() => { const c = window.gridplan.map.getCenter(); return [c.lng, c.lat]; })()")
    assert centre == pytest.approx([first["lon"], first["lat"]], abs=1e-3)

    # choosing a street takes the map to it; the whole city takes it back
    street = json.loads(page.evaluate("JSON.stringify(window.gp.config.streets.at(-1))"))
    page.select_option("#scope", street["code"])
    page.wait_for_function("() => window.gridplan.ready", timeout=60_000)
    view = page.evaluate("(() => { const b = window.gridplan.map.getBounds(); "
                         "return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; })()")
    west, south, east, north = street["bbox"]
    assert view[0] <= west and view[1] <= south and view[2] >= east and view[3] >= north  # all of it
    assert (view[2] - view[0]) < 4 * (east - west) or (view[3] - view[1]) < 4 * (north - south)  # and near
    assert f"{street['name']} · {street['code']}" in page.inner_text("#scope")
    page.select_option("#scope", "")
    page.wait_for_function("() => window.gridplan.ready", timeout=60_000)

    # choose the kindergarten at 300 m, propose one in the biggest uncovered unit
    standards = json.loads(page.evaluate("JSON.stringify(window.gp.config.standards)"))
    index = next(i for i, r in enumerate(standards)
                 if r["kind"] == "kindergarten")
    page.select_option("#kind", str(index))
    page.wait_for_function("() => document.querySelector('#coverage-figures').textContent.includes('幼儿园')")
    target = page.evaluate("""(() => { let best = null; window.gridplan.layers.uncovered.eachLayer((l) => {
        if (!best || l.feature.properties.uncovered > best.feature.properties.uncovered) best = l; });
        const c = best.getBounds().getCenter();
        return [c.lat, c.lng, best.feature.properties.uncovered]; })()""")
    page.click("#propose")
    page.evaluate("([lat, lng]) => { window.gridplan.map.setView([lat, lng], 16, {animate: false}); }",
                  target[:2])
    box = page.locator(".mapbox").bounding_box()
    point = page.evaluate("""([lat, lng]) => {
        const p = window.gridplan.map.latLngToContainerPoint([lat, lng]); return [p.x, p.y]; }""", target[:2])
    page.mouse.click(box["x"] + point[0], box["y"] + point[1])
    page.wait_for_function("() => window.gridplan.state.proposal !== undefined", timeout=20_000)
    change = page.evaluate("window.gridplan.state.proposal")
    assert change["households_added"] > 0
    assert f"+{change['households_added']:,}" in page.inner_text("#proposal-result")

    # where to build next: three numbered sites and their table
    page.fill("#sites-k", "3")
    page.click("#sites-form button[type=submit]")
    page.wait_for_selector("#sites-table", timeout=30_000)
    assert page.locator("#sites-table tr").count() == 4  # a header and three sites
    assert page.evaluate("window.gridplan.layers.sites.getLayers().length") == 3
    assert "已证明最优" in page.inner_text("#sites-result")
    # each site where it lies in words (its community and street) beside its unit's code
    sites = page.evaluate("window.gridplan.state.sites")["features"]
    rows = page.locator("#sites-table tr").all_inner_texts()[1:]
    for site, row in zip(sites, rows, strict=True):
        q = site["properties"]
        assert q["code"] in row and q["community_name"] and q["community_name"] in row, row
    page.screenshot(path=str(SHOTS / "coverage-sites.png"))
    assert page.dialogs == [] and page.errors == []


def test_printable_report_with_charts(page, served):
    sign_in_page(page, served["base"], "viewer")
    page.goto(f"{served['base']}/coverage/report?method=straight")
    page.wait_for_function("() => window.coverageReportReady === true")
    rows = page.locator("#reach-table tbody tr")
    assert rows.count() == len(FACILITY_STANDARDS)
    assert "幼儿园" in page.inner_text("#reach-table")
    assert page.evaluate("window.coverageChart.data.datasets.length") == len(FACILITY_STANDARDS)
    assert page.evaluate("window.coverageChart.data.labels.length") >= 2  # one bar group per street
    assert EVIL in page.inner_text("#missing-table")  # shown as text
    page.screenshot(path=str(SHOTS / "coverage-report.png"), full_page=True)
    assert page.dialogs == [] and page.errors == []
