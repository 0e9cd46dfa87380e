"""The web app as a user meets it: the home page lists the layers and their counts."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from geodata.demo import write_demo
from webmap import create_app


@pytest.fixture
def app(db_url):
    return create_app({"DATABASE_URL": db_url, "TESTING": True})


def test_home_page_lists_every_layer_with_its_count(app, engine, small_demo):
    write_demo(engine, small_demo)
    response = app.test_client().get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<tr data-layer="units"><td>units</td><td>规划单元</td>' in page
    assert f"{len(small_demo.layers['units']):,}" in page
    assert f"{len(small_demo.layers['communities']):,}" in page


def test_home_page_without_a_schema_says_what_to_run(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite'}", "TESTING": True})
    response = app.test_client().get("/")
    assert response.status_code == 503
    assert "flask --app webmap init-db" in response.get_data(as_text=True)


def test_home_page_in_chromium(spatialite_url, small_demo, chromium_path):
    from playwright.sync_api import sync_playwright

    from geodata.db import get_engine

    write_demo(get_engine(spatialite_url), small_demo)
    app = create_app({"DATABASE_URL": spatialite_url, "TESTING": True})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            row = page.locator('tr[data-layer="communities"] td.count')
            assert row.inner_text() == f"{len(small_demo.layers['communities']):,}"
            assert page.locator("#layers tbody tr").count() == 9
            browser.close()
    finally:
        server.shutdown()
