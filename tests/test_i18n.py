"""The interface's languages: Chinese by default, English by a switch (the user's setting, else
the browser's Accept-Language), for pages, scripts, problem details and the command line; and a
catalogue in which every string has its Chinese translation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from sqlalchemy import text

from geodata.catalog import LAYERS
from geodata.db import get_engine
from geodata.standards import FACILITY_KINDS
from layers.sample_data.demo import write_demo
from tests.conftest import demo_site, make_app
from tests.webhelpers import PASSWORD, csrf_token, make_accounts, served_copy, sign_in, sign_in_page

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "webmap" / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
PLACEHOLDERS = re.compile(r"\{\w+\}|%\(\w+\)s")


def _catalogue(path: Path):
    with path.open("rb") as fh:
        return read_po(fh)


# --- the catalogue -----------------------------------------------------------------------------


def test_every_string_in_the_code_has_a_chinese_translation(tmp_path):
    """Extract the strings as `make messages` does; each must be in the zh catalogue, translated,
    not fuzzy, with the same {named} parameters — a string added without its translation fails."""
    pot = tmp_path / "messages.pot"
    CommandLineInterface().run(["pybabel", "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "t",
                                "-k", "N_", "-o", str(pot), str(ROOT)])
    extracted = [m for m in _catalogue(pot) if m.id]
    assert len(extracted) > 500, "the extraction found too few strings: is babel.cfg right?"
    zh = {m.id: m for m in _catalogue(CATALOGUE) if m.id}
    problems = []
    for m in extracted:
        where = ", ".join(f"{f}:{n}" for f, n in m.locations[:2])
        if CJK.search(m.id):
            problems.append(f"msgid in Chinese (msgids are English) at {where}: {m.id!r}")
            continue
        entry = zh.get(m.id)
        if entry is None or not entry.string:
            problems.append(f"untranslated at {where}: {m.id!r}")
        elif entry.fuzzy:
            problems.append(f"fuzzy at {where}: {m.id!r}")
        elif sorted(PLACEHOLDERS.findall(m.id)) != sorted(PLACEHOLDERS.findall(entry.string)):
            problems.append(f"parameters differ at {where}: {m.id!r} → {entry.string!r}")
    assert not problems, "run `make messages` and translate:\n" + "\n".join(problems)


def test_every_script_string_is_seen_by_the_extraction():
    """Babel's JavaScript extractor does not look inside template literals or nested calls, so a
    ``t("…")`` there never reaches the catalogue and shows in English on a Chinese page: every
    ``t("…")`` literal of the scripts must be a msgid of the catalogue."""
    zh = {m.id for m in _catalogue(CATALOGUE) if m.id}
    missed = []
    for script in sorted((ROOT / "webmap" / "static" / "js").glob("*.js")):
        source = script.read_text(encoding="utf-8")
        for m in re.finditer(r'\bt\(\s*"((?:[^"\\]|\\.)*)"', source):
            if m.group(1) not in zh:
                missed.append(f"{script.name}:{source[:m.start()].count(chr(10)) + 1}: {m.group(1)!r}")
    assert not missed, "call t() outside template literals and nested calls, then `make messages`:\n" \
        + "\n".join(missed)


# --- which language ------------------------------------------------------------------------------


@pytest.fixture
def chinese_app(spatialite_url, small_demo, monkeypatch):
    """An app as installed: nothing says which language (no GRIDPLAN_LOCALE)."""
    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)
    write_demo(get_engine(spatialite_url), small_demo)
    app = make_app(spatialite_url, BASEMAP="none")
    secrets = make_accounts(app, small_demo)
    return app, secrets


def _lang(html: str) -> str:
    return re.search(r'<html lang="([^"]+)"', html).group(1)


def test_with_no_preference_pages_problems_and_the_command_line_are_chinese(chinese_app):
    app, secrets = chinese_app
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert _lang(page) == "zh-CN"
    assert "<h1>登录</h1>" in page and "Sign in" not in page and "Password" not in page
    # a refusal of the domain as problem details: title and detail in Chinese, the code in English
    answer = client.get("/api/incidents/NOPE", headers={"Authorization": f"Bearer {secrets['token']}"})
    assert answer.status_code == 404
    body = answer.get_json()
    assert body["title"] == "未找到" and body["detail"] == "没有案件 'NOPE'" and body["code"] == "NotFound"
    # a wrong password: the flash message
    token = csrf_token(client.get("/login").get_data(as_text=True))
    answer = client.post("/login", data={"name": "admin", "password": "nope", "csrf_token": token})
    assert answer.status_code == 401 and "用户名或密码错误" in answer.get_data(as_text=True)
    # the command line: a refusal in Chinese, exit code non-zero
    result = app.test_cli_runner().invoke(args=["user", "add", "x", "--role", "supervisor", "--password",
                                                "long enough 1"])
    assert result.exit_code != 0 and "网格员需要负责范围" in result.output
    result = app.test_cli_runner().invoke(args=["user", "add", "x", "--role", "viewer",
                                                "--password", "short"])
    assert result.exit_code != 0 and "密码至少需要 8 个字符" in result.output


#: an English word of two letters or more (a path, a code or a number is not one)
ENGLISH_WORD = re.compile(r"\b[A-Za-z]{2,}\b")


def _words_outside(output: str, *paths: Path | str) -> list[str]:
    """The English words of ``output`` once ``paths`` (data the user named) are taken out."""
    for path in paths:
        output = output.replace(str(path), "")
    return ENGLISH_WORD.findall(output)


def test_the_command_lines_summaries_are_chinese_by_default(spatialite_url, tmp_path, monkeypatch):
    """``demo`` and ``export`` print their counts in Chinese (no English word outside the paths the
    user named), numbers with thousands separators; with GRIDPLAN_LOCALE=en, in English."""
    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)
    runner = make_app(spatialite_url).test_cli_runner()
    demo = runner.invoke(args=["demo", "--units", "1200", "--seed", "3"])
    assert demo.exit_code == 0, demo.output
    summary = demo.output.strip().splitlines()[-1]
    assert summary.startswith("演示数据已写入：") and "个区县" in summary and "个网格" in summary, summary
    assert re.search(r"\d,\d{3} 个规划单元", summary), summary
    assert not _words_outside(demo.output), demo.output
    out = tmp_path / "streets.geojson"
    export = runner.invoke(args=["export", "streets", "--format", "geojson", "-o", str(out)])
    assert export.exit_code == 0 and out.exists(), export.output
    assert "个要素" in export.output and not _words_outside(export.output, out), export.output
    again = runner.invoke(args=["import", "streets", str(out), "--mode", "update"])
    assert again.exit_code == 0 and "街道：" in again.output and "（更新）" in again.output, again.output
    assert not _words_outside(again.output, out, out.name), again.output
    account = runner.invoke(args=["user", "add", "clerk", "--role", "viewer", "--password", "long enough 1"])
    assert account.exit_code == 0 and account.output == "账户 clerk：查看人员\n", account.output
    # the same command in English, as the tests and scripts read it
    monkeypatch.setenv("GRIDPLAN_LOCALE", "en")
    export = make_app(spatialite_url).test_cli_runner().invoke(
        args=["export", "streets", "--format", "geojson", "-o", str(out)])
    assert export.exit_code == 0 and re.fullmatch(rf"\d+ features written to {re.escape(str(out))}\n",
                                                   export.output), export.output


def test_the_command_lines_help_is_chinese_by_default(spatialite_url, monkeypatch):
    """``--help`` of a command, of its options and of a group speaks the command line's language."""
    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)
    runner = make_app(spatialite_url).test_cli_runner()
    demo = runner.invoke(args=["demo", "--help"])
    assert demo.exit_code == 0 and "用生成的演示区县替换所有图层。" in demo.output, demo.output
    assert "随机种子" in demo.output and "random seed" not in demo.output
    # Click's own words too: the usage line, the sections, the help option, an option's default
    assert demo.output.startswith("用法：") and "选项:" in demo.output and "[默认: 1]" in demo.output
    assert "显示本帮助并退出。" in demo.output
    user = runner.invoke(args=["user", "--help"])
    assert "添加账户 NAME" in user.output and "Add the account" not in user.output, user.output
    assert "命令:" in user.output
    for english in ("Usage:", "Options:", "Commands:", "Show this message", "default:"):
        assert english not in demo.output + user.output, english
    monkeypatch.setenv("GRIDPLAN_LOCALE", "en")
    demo = make_app(spatialite_url).test_cli_runner().invoke(args=["demo", "--help"])
    assert "Replace every layer with a generated demo district." in demo.output
    assert "random seed" in demo.output and "[default: 1]" in demo.output
    assert demo.output.startswith("Usage: ") and "Show this message and exit." in demo.output
    assert not CJK.search(demo.output.replace("≈", "")), demo.output


def test_the_command_line_speaks_english_with_gridplan_locale_en(spatialite_url, monkeypatch):
    monkeypatch.setenv("GRIDPLAN_LOCALE", "en")
    app = make_app(spatialite_url)
    result = app.test_cli_runner().invoke(args=["user", "add", "x", "--role", "supervisor", "--password",
                                                "long enough 1"])
    assert result.exit_code != 0 and "a supervisor needs a scope" in result.output
    assert not CJK.search(result.output)


def test_accept_language_and_the_users_setting_choose_the_language(chinese_app):
    app, secrets = chinese_app
    client = app.test_client()
    english = client.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9"}).get_data(as_text=True)
    assert _lang(english) == "en" and "<h1>Sign in</h1>" in english and not CJK.search(
        english.split("</header>")[1])
    assert _lang(client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
                 .get_data(as_text=True)) == "zh-CN"
    assert _lang(client.get("/login", headers={"Accept-Language": "fr-FR"}).get_data(as_text=True)) == "zh-CN"
    problem = client.get("/api/incidents/NOPE", headers={"Authorization": f"Bearer {secrets['token']}",
                                                         "Accept-Language": "en"}).get_json()
    assert problem["title"] == "Not found" and problem["detail"] == "no incident 'NOPE'"

    # the planner picks Chinese in the top bar: it wins over a browser that asks for English
    sign_in(client, "planner")
    page = client.get("/plans", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert _lang(page) == "en" and "Plans" in page
    answer = client.post("/locale", data={"locale": "zh", "next": "/plans", "csrf_token": csrf_token(page)},
                         headers={"Accept-Language": "en"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/plans")
    client.delete_cookie("gridplan_locale")  # the setting is kept with the account, not only in a cookie
    page = client.get("/plans", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert _lang(page) == "zh-CN" and "<h1>方案</h1>" in page
    with get_engine(app.config["DATABASE_URL"]).connect() as conn:
        assert conn.execute(text("SELECT locale FROM users WHERE name = 'planner'")).scalar_one() == "zh"
    # and back to English; an unknown language is refused, nothing stored
    client.post("/locale", data={"locale": "en", "next": "/plans", "csrf_token": csrf_token(page)})
    assert _lang(client.get("/plans", headers={"Accept-Language": "zh"}).get_data(as_text=True)) == "en"
    refused = client.post("/locale", data={"locale": "fr", "csrf_token": csrf_token(page)},
                          headers={"Accept": "application/json"})
    assert refused.status_code == 400
    # without the CSRF token the switch is refused
    assert client.post("/locale", data={"locale": "zh"}).status_code == 400


def test_anonymous_choice_is_a_cookie(chinese_app):
    app, _secrets = chinese_app
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    answer = client.post("/locale", data={"locale": "en", "next": "/login", "csrf_token": csrf_token(page)})
    assert answer.status_code == 302 and "gridplan_locale=en" in answer.headers["Set-Cookie"]
    assert _lang(client.get("/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)) == "en"


def test_the_scripts_catalogue_is_embedded_for_the_pages_locale(chinese_app):
    app, _secrets = chinese_app
    client = app.test_client()
    sign_in(client, "planner")
    zh = client.get("/map").get_data(as_text=True)
    messages = json.loads(re.search(r'<script type="application/json" id="messages">(.*?)</script>', zh,
                                    re.S).group(1))
    assert messages["locale"] == "zh-CN" and messages["messages"]["Nothing found"] == "没有结果"
    assert "Sign out" not in messages["messages"]  # only the scripts' strings
    en = client.get("/map", headers={"Accept-Language": "en"}).get_data(as_text=True)
    messages = json.loads(re.search(r'id="messages">(.*?)</script>', en, re.S).group(1))
    assert messages["locale"] == "en" and "Nothing found" not in messages["messages"]


# --- in Chromium -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    """One server with the small demo, one plan and the demo's cases, as installed (no language
    configured)."""
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan

    path = tmp_path_factory.mktemp("i18n") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    engine = get_engine(url)
    app, secrets = demo_site(url, small_demo, BASEMAP="none", DEFAULT_LOCALE="zh")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id, _result = auto_plan(PlanMemory(engine), "自动方案", "planner", street=street)
    with engine.connect() as conn:
        case = conn.execute(text("SELECT code FROM incidents WHERE grid_code LIKE :p ORDER BY code LIMIT 1"),
                            {"p": secrets["scope"] + "%"}).scalar_one()
        data = set()
        for table in ("districts", "streets", "communities", "facilities", "plans", "roads"):
            data |= {r[0] for r in conn.execute(text(f"SELECT name FROM {table}")) if r[0]}
        data |= {r[0] for r in conn.execute(text("SELECT description FROM incidents")) if r[0]}
        data |= {r[0] for r in conn.execute(text("SELECT actor FROM incident_steps")) if r[0]}
        # the 网格员 named on each cell: a person's name, shown on the grid page in either language
        data |= {r[0] for r in conn.execute(text("SELECT supervisor FROM grid_cells")) if r[0]}
        settings = [json.loads(v) if isinstance(v, str) else v
                    for (v,) in conn.execute(text("SELECT value FROM settings"))]
        rows = conn.execute(text("SELECT description, source FROM settings"))
        settings += [x for r in rows for x in r if x]
    # texts of the settings (descriptions, sources, names the city set): data, in whatever language
    settings_text = {x for x in _strings(settings) if x}
    data |= settings_text
    # names that come from data and tables rather than from the interface
    data |= {spec.label for spec in LAYERS.values()}
    data |= {f.label for spec in LAYERS.values() for f in spec.fields}
    data |= {name for name, _reach in FACILITY_KINDS.values()}
    # English words that are data too: account names, layer names, the settings' texts
    words = {"admin", "planner", "supervisor", "viewer", "police", "grid-app"} | set(LAYERS) | settings_text
    with served_copy(app) as base:
        yield {"base": base, "plan": plan_id, "case": case, "data": data, "words": words}


VISIBLE_TEXT = """() => {
  const out = [];
  const seen = (el) => el && el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    const text = node.textContent.trim();
    if (!text || !el || ["SCRIPT", "STYLE", "NOSCRIPT", "OPTION"].includes(el.tagName)) continue;
    if (el.closest(".locale-switch")) continue;  // each language named in itself: 中文 | English
    if (seen(el)) out.push(text);
  }
  for (const select of document.querySelectorAll("select")) {
    if (seen(select)) for (const o of select.options) out.push(o.textContent.trim());
  }
  for (const el of document.querySelectorAll("[placeholder], input[type=submit], button[title]")) {
    if (seen(el)) out.push(el.getAttribute("placeholder") || el.value || el.title);
  }
  return out.filter(Boolean);
}"""

PAGES = [  # (who, path, what shows the page is drawn)
    ("planner", "/map", "window.gridplan && window.gridplan.ready"),
    ("planner", "/plans", None),
    ("planner", "/plans/{plan}", "window.gridplan && window.gridplan.ready"),
    ("planner", "/layers", None),
    ("planner", "/coverage", "window.gridplan && window.gridplan.ready"),
    ("planner", "/coverage/report", None),
    ("supervisor", "/supervisor", "window.gridplan && window.gridplan.ready"),
    ("planner", "/grid", "window.gridplan && window.gridplan.ready"),
    ("supervisor", "/grid", "window.gridplan && window.gridplan.ready"),
    ("supervisor", "/cases", "document.getElementById('case-count').textContent !== ''"),
    ("supervisor", "/cases/{case}", "document.querySelector('#action-buttons button, #case-history li')"),
    ("supervisor", "/cases/new", None),
    ("viewer", "/rates", "document.querySelector('#rates-table tbody tr')"),
    ("admin", "/admin/users", "document.querySelector('#users tbody tr')"),
    ("admin", "/admin/tokens", "document.querySelector('#tokens tbody tr')"),
    ("admin", "/admin/settings", "document.querySelector('#settings .setting, #settings table')"),
    ("admin", "/admin/audit", None),
    ("admin", "/admin/departments", None),
    (None, "/login", None),
]


def _signed_in(chromium_page, live, who: str | None, locale: str):
    """A page whose browser asks for ``locale``, signed in as ``who`` (no one: signed out)."""
    page = chromium_page(viewport={"width": 1400, "height": 900}, locale=locale)
    if who:
        sign_in_page(page, live["base"], who)
    return page


def _visit(page, live, path: str, ready: str | None) -> list[str]:
    page.goto(live["base"] + path.format(plan=live["plan"], case=live["case"]))
    if ready:
        page.wait_for_function(f"() => {ready}", timeout=30_000)  # a function: the CSP refuses eval
    page.wait_for_load_state("networkidle")
    return page.evaluate(VISIBLE_TEXT)


def _strings(value) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _english_msgids() -> set[str]:
    """The catalogue's English texts a Chinese page must not show (those translated differently)."""
    out = set()
    for m in _catalogue(CATALOGUE):
        if m.id and isinstance(m.id, str) and m.string and m.string != m.id and re.search(r"[a-z]{2}", m.id):
            out.add(m.id)
    return out


@pytest.mark.parametrize("who,path,ready", PAGES, ids=[p[1] for p in PAGES])
def test_each_page_in_chinese_shows_no_english_from_the_catalogue(chromium_page, live, who, path, ready):
    english = _english_msgids()
    plain = {m for m in english if not PLACEHOLDERS.search(m)}
    long_ones = {m for m in plain if len(m.split()) >= 3}
    page = _signed_in(chromium_page, live, who, "zh-CN")
    texts = _visit(page, live, path, ready)
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    texts = [t for t in texts if t not in live["words"]]
    shown = [t for t in texts if t in plain or any(m in t for m in long_ones)]
    assert not shown, f"{path} in Chinese shows English: {shown}"
    assert not page.errors, page.errors


@pytest.mark.parametrize("who,path,ready", PAGES, ids=[p[1] for p in PAGES])
def test_each_page_in_english_shows_chinese_only_in_data(chromium_page, live, who, path, ready):
    data = sorted(live["data"], key=len, reverse=True)
    page = _signed_in(chromium_page, live, who, "en-US")
    texts = _visit(page, live, path, ready)
    assert page.evaluate("document.documentElement.lang") == "en"
    left = []
    for t in texts:
        if not CJK.search(t):
            continue
        rest = t
        for value in data:
            if value in rest:
                rest = rest.replace(value, " ")
        if CJK.search(rest):
            left.append(t)
    assert not left, f"{path} in English shows Chinese that is not data: {left}"
    assert not page.errors, page.errors


def test_the_switch_in_the_top_bar(chromium_page, live):
    """Signed out: the choice is a cookie; signed in: it is the user's setting, and it stays
    when the browser asks for the other language."""
    page = chromium_page(locale="zh-CN")
    page.goto(f"{live['base']}/login")
    assert page.inner_text("h1") == "登录" and page.get_attribute("#locale-zh", "aria-pressed") == "true"
    page.click("#locale-en")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    assert page.inner_text("h1") == "Sign in"
    page.fill("input[name=name]", "viewer")  # the other tests' users keep no setting
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert "Planning map" in page.inner_text("header.topbar")
    # the script's text follows: the histogram's heading is drawn by planner.js
    page.click("#locale-zh")
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    page.wait_for_function("() => window.gridplan && window.gridplan.ready", timeout=30_000)
    assert "规划" in page.inner_text("header.topbar") and "社区" in page.inner_text("#status")
    # another browser asking for English: the planner's setting (Chinese) wins
    page = _signed_in(chromium_page, live, "viewer", "en-US")
    page.goto(f"{live['base']}/rates")
    assert page.evaluate("document.documentElement.lang") == "zh-CN" and "考核" in page.inner_text("h1")


def test_a_templates_named_parameters_are_filled_in_both_styles(chinese_app):
    """``{{ _("{name}: handles", name=…) }}`` reads "…：负责" — not the raw ``{name}`` the
    department page's check boxes once read aloud; ``%(n)s`` still works; values are escaped."""
    app, _secrets = chinese_app
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        render = app.jinja_env.from_string
        braces = render('{{ _("{name}: handles", name=who) }}').render(who="<b>城管</b>")
        percent = render('{{ _("%(total)s entries", total=7) }}').render()
    assert "{name}" not in braces and "&lt;b&gt;城管&lt;/b&gt;" in braces and "<b>" not in braces
    assert "7" in percent and "%(" not in percent
