"""The last word on the interface's words: Chromium walks every page as every role, in Chinese
and in English. A Chinese page may show no programmer key (``snake_case``) and no English of the
catalogue outside data; an English page no Chinese outside data. Data are what the database
holds (names of districts, streets, communities, facilities, roads and plans, case descriptions,
account names), never the interface's own words.

Pages are listed from ``app.url_map`` (every GET page without parameters, outside ``/api/`` and
``/static/``), plus one plan page and one case page: a page added later is walked without
changing this file.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from sqlalchemy import text

from geodata.db import get_engine
from tests.conftest import demo_site
from tests.test_i18n import CJK, PLACEHOLDERS, VISIBLE_TEXT, _english_msgids
from tests.webhelpers import PASSWORD, served_copy, sign_in_page

ROLES = ("admin", "planner", "supervisor", "viewer", "dispatcher", "handler")
#: a programmer's key: lower-case words joined by underscores (outside data)
SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
#: pages that are not pages: downloads, sign-out, the switch, health checks
NOT_PAGES = re.compile(r"\.(csv|json|js|xml|txt|zip|gpkg|geojson|pdf)$"
                       r"|^/(logout|locale|health|ready|metrics)")


def pages(app) -> list[str]:
    """Every GET HTML page of the app without parameters (from its URL map)."""
    out = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule
        if "GET" not in rule.methods or rule.arguments or path.startswith(("/api/", "/static")):
            continue
        if NOT_PAGES.search(path):
            continue
        out.add(path)
    return sorted(out)


@pytest.fixture(scope="module")
def walk(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    """One server with the small demo, a plan of its first street and its cases."""
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan

    path = tmp_path_factory.mktemp("walk") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    app, secrets = demo_site(url, small_demo, BASEMAP="none", DEFAULT_LOCALE="zh")
    from layers.sample_data.demo import seed_departments
    from webmap.auth import add_user

    department = seed_departments(engine)[0]["code"]
    with app.app_context():  # the 指挥中心 and a department's handler
        add_user("dispatcher", "dispatcher", PASSWORD)
        add_user("handler", "handler", PASSWORD, department=department)
    street = sorted(small_demo.layers["streets"]["code"])[0]
    plan_id, _result = auto_plan(PlanMemory(engine), "自动方案", "planner", street=street)
    data: set[str] = {"admin", "planner", "supervisor", "viewer", "police", "grid-app", "dispatcher",
                      "handler"}
    with engine.connect() as conn:
        case = conn.execute(text("SELECT code FROM incidents WHERE grid_code LIKE :p ORDER BY code LIMIT 1"),
                            {"p": secrets["scope"] + "%"}).scalar_one()
        for table in ("districts", "streets", "communities", "facilities", "plans", "roads", "departments"):
            data |= {r[0] for r in conn.execute(text(f"SELECT name FROM {table}")) if r[0]}
        data |= {r[0] for r in conn.execute(text("SELECT description FROM incidents")) if r[0]}
        data |= {r[0] for r in conn.execute(text("SELECT note FROM incident_steps")) if r[0]}
        data |= {r[0] for r in conn.execute(text("SELECT actor FROM incident_steps")) if r[0]}
        # the 网格员 named on each cell: a person's name, shown on the grid page in either language
        data |= {r[0] for r in conn.execute(text("SELECT supervisor FROM grid_cells")) if r[0]}
    walked = pages(app) + [f"/plans/{plan_id}", f"/cases/{case}"]
    with served_copy(app) as base:
        yield {"base": base, "pages": walked, "data": sorted(data, key=len, reverse=True)}
    engine.dispose()


def _without_data(texts: list[str], data: list[str]) -> list[str]:
    """Each text with the data it holds blanked out."""
    out = []
    for t in texts:
        rest = t
        for value in data:
            if value in rest:
                rest = rest.replace(value, " ")
        out.append(rest)
    return out


def _problems(texts: list[str], locale: str, english: set[str]) -> list[str]:
    plain = {m for m in english if not PLACEHOLDERS.search(m)}
    long_ones = {m for m in plain if len(m.split()) >= 3}
    found = []
    for t in texts:
        if locale == "zh-CN":
            keys = SNAKE.findall(t)
            if keys:
                found.append(f"key {keys[0]!r} in {t[:80]!r}")
            elif t.strip() in plain or any(m in t for m in long_ones):
                found.append(f"English {t[:80]!r}")
        elif CJK.search(t):
            found.append(f"Chinese {t[:80]!r}")
    return found


@pytest.mark.parametrize("locale", ["zh-CN", "en-US"])
@pytest.mark.parametrize("role", ROLES)
def test_every_page_speaks_the_users_language(chromium_page, walk, role, locale):
    english = _english_msgids()
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale=locale)
    failures: list[str] = []
    sign_in_page(page, walk["base"], role)
    for path in walk["pages"]:
        answer = page.goto(walk["base"] + path)
        if answer is None or answer.status in (401, 403) or "/login" in page.url:
            continue  # not this role's page: the access matrix tests say who may
        try:
            page.wait_for_load_state("networkidle", timeout=15_000)
        except Exception:  # noqa: BLE001 - a page that keeps polling is still read as it stands
            pass
        page.wait_for_timeout(300)
        if os.environ.get("GRIDPLAN_SCREENSHOTS"):  # to look at the pages: a folder to keep them in
            slug = re.sub(r"\W+", "-", path).strip("-") or "home"
            page.screenshot(path=f"{os.environ['GRIDPLAN_SCREENSHOTS']}/{role}-{locale}-{slug}.png",
                            full_page=True)
        texts = _without_data(page.evaluate(VISIBLE_TEXT), walk["data"])
        found = _problems(texts, locale, english)
        if found:
            failures.append(f"{path}: " + "; ".join(sorted(set(found))[:8]))
    assert not failures, f"{role} in {locale}:\n" + "\n".join(failures)


def test_a_users_scope_is_chosen_by_name(chromium_page, walk):
    """The users page: the supervisor's scope reads as names (street › community), and choosing a
    grid cell by name stores its 15-digit code."""
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
    sign_in_page(page, walk["base"], "admin")
    page.goto(f"{walk['base']}/admin/users")
    page.wait_for_selector("#admin[data-ready]")
    scope = '#users tr[data-user="supervisor"] .scope-picker'
    shown = page.eval_on_selector(f"{scope} select.community", "s => s.selectedOptions[0].textContent")
    code = page.input_value(f"{scope} select.community")
    assert len(code) == 12 and shown.endswith(code) and shown != code  # a name beside the code
    page.wait_for_function(f"() => document.querySelector('{scope} select.cell').options.length > 1")
    cell = page.eval_on_selector(f"{scope} select.cell", "s => s.options[1].value")
    assert len(cell) == 15 and "网格" in page.eval_on_selector(f"{scope} select.cell",
                                                              "s => s.options[1].textContent")
    page.select_option(f"{scope} select.cell", cell)
    page.click('#users tr[data-user="supervisor"] button.save')
    row = "#users tr[data-user=\\\"supervisor\\\"]"
    page.wait_for_function(f"() => document.querySelector('{row} td.message').classList.contains('ok')")
    page.screenshot(path="/tmp/words/admin-users.png", full_page=True)
    answer = page.evaluate("() => fetch('/api/admin/users').then((r) => r.json())")
    assert next(u for u in answer["users"] if u["name"] == "supervisor")["scope_code"] == cell
