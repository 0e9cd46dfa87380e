"""The grid page as a tester walking issue 17 found it: the 网格员 named on each cell shown (not
only accounts assigned through the grid API), the 指派 list offering only supervisors who can take
the cell, and a demo whose generated cells never overlap. On SpatiaLite and PostGIS."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from geodata.db import get_engine
from geodata.store import read_layer
from tests.conftest import demo_site, streets_of
from tests.webhelpers import PASSWORD, signed_in

SHOTS = Path("/tmp/fix-plans")


@pytest.fixture
def site(db_url, small_demo):
    app, secrets = demo_site(db_url, small_demo)
    return {"app": app, "engine": get_engine(db_url), **secrets}


def test_every_street_shows_the_supervisors_named_on_its_cells(site, small_demo):
    client, _ = signed_in(site["app"], "planner")
    named = read_layer(site["engine"], "grid_cells")
    named = dict(zip(named["code"], named["supervisor"], strict=True))
    assert sum(isinstance(n, str) and bool(n) for n in named.values()) > 0.9 * len(named)
    seen = 0
    for street in streets_of(small_demo):
        answer = client.get(f"/api/grid/cells?street={street}").get_json()
        for feature in answer["features"]:
            p = feature["properties"]
            if named.get(p["code"]):
                assert p["supervisors"][0] == named[p["code"]], p["code"]
                seen += 1
            assert "supervisor" not in p  # one list, the page's
    assert seen == sum(bool(n) for n in named.values())


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("gridwalk") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    app, secrets = demo_site(url, small_demo, BASEMAP="none", DEFAULT_LOCALE="zh")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    SHOTS.mkdir(exist_ok=True)
    yield {"base": f"http://127.0.0.1:{srv.server_port}", "engine": get_engine(url), **secrets}
    srv.shutdown()


def test_the_grid_page_in_chinese_counts_and_names_each_cells_supervisor(chromium_page, live, small_demo):
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    page.goto(f"{live['base']}/login")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    cells = read_layer(live["engine"], "grid_cells")
    for street in streets_of(small_demo):
        page.goto(f"{live['base']}/grid?street={street}")
        page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
        mine = cells[cells["code"].str.startswith(street)]
        with_name = int(mine["supervisor"].fillna("").astype(bool).sum())
        assert with_name > 0
        figures = page.inner_text("#grid-figures")
        assert f"已配网格员的网格\n{with_name} / {len(mine)}" in figures, figures
        for code, name in zip(mine["code"], mine["supervisor"], strict=True):
            if name:
                assert name in page.inner_text(f"#cells-table tr[data-code='{code}']")
        if street == streets_of(small_demo)[0]:
            page.screenshot(path=str(SHOTS / "grid_zh_admin.png"))
    assert page.errors == []
