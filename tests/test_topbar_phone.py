"""Every role's top bar on a phone (360 × 740, touch) keeps to one line in Chinese and in
English: the pages fold into a ☰ menu, what needs me (the chips) stays beside it. In Debian's
Chromium; screenshots under /tmp/fix-plans/ to be looked at."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import PHONE, demo_site
from tests.webhelpers import PASSWORD, sign_in_page

SHOTS = Path("/tmp/fix-plans")
ROLES = ("admin", "planner", "viewer", "supervisor", "inspector", "dispatcher", "handler")


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    from geodata.db import get_engine
    from layers.sample_data.demo import seed_departments
    from webmap.auth import add_user

    path = tmp_path_factory.mktemp("topbar") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    app, secrets = demo_site(f"sqlite:///{path}", small_demo, BASEMAP="none", DEFAULT_LOCALE="zh")
    seed_departments(get_engine(f"sqlite:///{path}"))  # the demo's 处置部门, the handler's HW among them
    cell = small_demo.layers["grid_cells"]["code"].sort_values().iloc[0]
    with app.app_context():
        add_user("inspector", "supervisor", PASSWORD, cell)
        add_user("dispatcher", "dispatcher", PASSWORD)
        add_user("handler", "handler", PASSWORD, department="HW")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    SHOTS.mkdir(exist_ok=True)
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
def test_every_roles_top_bar_is_one_line_on_a_phone(browser, live, locale):
    for role in ROLES:
        context = browser.new_context(**PHONE, locale=locale)
        try:
            page = context.new_page()
            page.goto(f"{live}/login")
            page.fill("input[name=name]", role)
            page.fill("input[name=password]", PASSWORD)
            page.click("form.login button[type=submit]")
            page.wait_for_url(lambda url: "/login" not in url)
            page.goto(f"{live}/cases" if role == "handler" else f"{live}/rates")
            bar = page.evaluate("""() => { const b = document.querySelector('header.topbar');
                const r = b.getBoundingClientRect();
                const parts = [...b.querySelectorAll('.nav-toggle-label, nav a, .locale-switch, .logout')]
                  .filter((e) => e.getClientRects().length).map((e) => e.getBoundingClientRect());
                const overlap = parts.some((p, i) => parts.some((q, j) => i < j && p.left < q.right - 1
                  && q.left < p.right - 1 && p.top < q.bottom - 1 && q.top < p.bottom - 1));
                return { height: r.height, scroll: b.scrollWidth, width: b.clientWidth, overlap,
                         tops: parts.map((p) => Math.round(p.top)), rights: parts.map((p) => p.right) }; }""")
            assert bar["height"] <= 48, (role, locale, bar)  # one line, not two or three (~140 px)
            assert bar["scroll"] <= bar["width"] and max(bar["rights"]) <= 360, (role, locale, bar)
            assert not bar["overlap"], (role, locale, bar)  # nothing drawn over another
            assert max(bar["tops"]) - min(bar["tops"]) <= 12, (role, locale, bar)  # side by side
            short = "zh" if locale == "zh-CN" else "en"
            top = {"x": 0, "y": 0, "width": 360, "height": 120}
            page.screenshot(path=str(SHOTS / f"topbar_{role}_{short}.png"), clip=top)
            # the menu opens on a touch and offers the pages
            page.tap(".nav-toggle-label")
            shown = page.locator("header.topbar nav a:visible").count()
            assert shown >= 1 and shown == page.locator("header.topbar nav a").count(), (role, locale)
            if role == "dispatcher":
                page.screenshot(path=str(SHOTS / f"topbar_menu_{role}_{short}.png"))
        finally:
            context.close()


def test_no_page_of_any_role_is_wider_than_a_phone(browser, live):
    """Every page in each role's menu, at 360 px: the page itself never scrolls sideways (a wide
    table scrolls inside itself). Defect from the walk: the plans list was 706 px wide."""
    wide = []
    for role in ROLES:
        context = browser.new_context(**PHONE, locale="zh-CN")
        try:
            page = context.new_page()
            sign_in_page(page, live, role)
            links = page.evaluate(
                "() => [...new Set([...document.querySelectorAll('header.topbar nav a')]"
                ".map((a) => a.getAttribute('href')).filter((h) => h && h.startsWith('/')))]")
            assert links, role
            for href in links:
                page.goto(f"{live}{href}")
                page.wait_for_load_state("load")
                width = page.evaluate("() => document.documentElement.scrollWidth")
                if width > 361:
                    wide.append((role, href, width))
        finally:
            context.close()
    assert not wide, "; ".join(f"{r} {h} {w}" for r, h, w in wide)
