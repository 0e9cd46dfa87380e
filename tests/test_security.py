"""Security headers and cookies: what every response carries (CSP with nonces, no framing,
nosniff, referrer policy), the session cookie's flags, HTTPS only when configured; and in
Chromium, every main page runs under that policy without a single violation, base-map tiles
included."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, csrf_token, make_accounts, served_copy, sign_in, sign_in_page

# a 1×1 PNG, answered for every tile request
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4f40000000049454e44ae426082")


def _app(url: str, **config):
    return make_app(url, **config)


def _policy(header: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.fixture
def site(spatialite_url, small_demo):
    write_demo(get_engine(spatialite_url), small_demo)
    app = _app(spatialite_url, BASEMAP="osm")
    make_accounts(app, small_demo)
    return app


def test_every_kind_of_response_carries_the_security_headers(site):
    client = site.test_client()
    answers = {"login page": client.get("/login"), "static file": client.get("/static/js/common.js"),
               "api refusal": client.get("/api/layers"), "missing page": client.get("/nowhere"),
               "open311": client.get("/open311/v2/services.json")}
    sign_in(client, "planner")
    answers |= {"map page": client.get("/map"), "api answer": client.get("/api/layers"),
                "plan list": client.get("/plans")}
    for what, answer in answers.items():
        headers = answer.headers
        assert headers["X-Frame-Options"] == "DENY", what
        assert headers["X-Content-Type-Options"] == "nosniff", what
        assert headers["Referrer-Policy"] == "same-origin", what
        policy = _policy(headers["Content-Security-Policy"])
        assert policy["frame-ancestors"] == ["'none'"], what
        assert policy["object-src"] == ["'none'"], what
        scripts = policy["script-src"]
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, what
        assert scripts[0] == "'self'" and scripts[1].startswith("'nonce-"), what
        assert "Strict-Transport-Security" not in headers, what  # HTTPS is off by default


def test_a_json_body_nested_forty_thousand_deep_is_a_400_naming_it(site):
    """Python's JSON parser gives up past ~1,000 levels with a RecursionError: every route that
    reads a JSON body answers 400 "nested too deeply" for it (found before parsing, past 64
    levels: tests/test_bounds.py), never 500, and stores nothing. (Forty thousand: more would be
    over a JSON route's 256 KiB, a 413.)"""
    from sqlalchemy import text

    client = site.test_client()
    sign_in(client, "admin")
    headers = {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}
    engine = get_engine(site.config["DATABASE_URL"])
    with engine.connect() as conn:
        before = conn.execute(text("SELECT (SELECT count(*) FROM plans) + (SELECT count(*) FROM incidents)"
                                   " + (SELECT count(*) FROM users)")).scalar_one()
    deep = {"[": "[" * 40_000 + "]" * 40_000, "{": '{"a":' * 40_000 + "1" + "}" * 40_000}
    for path in ("/api/plans", "/api/incidents", "/api/admin/users", "/open311/v2/requests.json",
                 "/api/grid/assignments"):
        for body in deep.values():
            answer = client.post(path, data=body, content_type="application/json", headers=headers)
            assert answer.status_code == 400, (path, answer.status_code)
            assert "nested too deeply" in answer.get_data(as_text=True), path
    with engine.connect() as conn:
        assert conn.execute(text("SELECT (SELECT count(*) FROM plans) + (SELECT count(*) FROM incidents)"
                                 " + (SELECT count(*) FROM users)")).scalar_one() == before


def test_every_view_reads_its_json_body_strictly_and_names_what_is_wrong(site):
    """One reader for every view's JSON body: malformed JSON, JSON that is no object and a NaN
    are each a 400 problem answer that says which, on every route that takes a body; nothing is
    written."""
    from sqlalchemy import text

    client = site.test_client()
    sign_in(client, "admin")
    headers = {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}
    engine = get_engine(site.config["DATABASE_URL"])
    count = text("SELECT (SELECT count(*) FROM plans) + (SELECT count(*) FROM incidents)"
                 " + (SELECT count(*) FROM users) + (SELECT count(*) FROM jobs)")
    with engine.connect() as conn:
        before = conn.execute(count).scalar_one()
    bodies = {"[1,": "not valid JSON", "[1]": "send a JSON object", '"text"': "send a JSON object",
              '{"name": NaN}': "NaN"}
    for path in ("/api/plans", "/api/incidents", "/api/admin/users", "/api/grid/moves",
                 "/api/coverage/proposal", "/api/coverage/sites", "/api/departments",
                 "/api/layers/units/import"):
        for body, named in bodies.items():
            answer = client.post(path, data=body, content_type="application/json", headers=headers)
            assert answer.status_code == 400, (path, body, answer.status_code)
            assert answer.mimetype == "application/problem+json", (path, body)
            assert named in answer.json["detail"], (path, body, answer.json["detail"])
    with engine.connect() as conn:
        assert conn.execute(count).scalar_one() == before


def test_every_inline_script_of_a_page_carries_the_nonce_of_its_answer(site):
    client = site.test_client()
    sign_in(client, "admin")
    for path in ("/map", "/supervisor", "/plans", "/coverage", "/login"):
        answer = client.get(path)
        html = answer.get_data(as_text=True)
        nonce = _policy(answer.headers["Content-Security-Policy"])["script-src"][1][len("'nonce-"):-1]
        for tag in re.findall(r"<script\b[^>]*>", html):
            if "src=" in tag or 'type="application/json"' in tag:
                continue  # files from 'self', and data blocks that never run
            assert f'nonce="{nonce}"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers either


def test_the_map_page_allows_images_from_the_configured_tile_host_only(spatialite_url, small_demo):
    write_demo(get_engine(spatialite_url), small_demo)
    for basemap, expected in [("osm", ["https://tile.openstreetmap.org"]),
                              ("gaode", [f"https://webrd0{s}.is.autonavi.com" for s in "1234"]),
                              ("tianditu", [f"https://t{s}.tianditu.gov.cn" for s in "1234"]),
                              ("none", [])]:
        app = _app(spatialite_url, BASEMAP=basemap, TIANDITU_KEY="key")
        if basemap == "osm":
            make_accounts(app, small_demo)
        client = app.test_client()
        sign_in(client, "planner")
        images = _policy(client.get("/map").headers["Content-Security-Policy"])["img-src"]
        assert images == ["'self'", "data:", *expected], basemap
        # pages without a map load no tiles
        plans = client.get("/plans").headers["Content-Security-Policy"]
        assert _policy(plans)["img-src"] == ["'self'", "data:"]
    app = _app(spatialite_url, BASEMAP="local", LOCAL_TILES_URL="http://tiles.intranet:8080/{z}/{x}/{y}.png")
    client = app.test_client()
    sign_in(client, "planner")
    images = _policy(client.get("/map").headers["Content-Security-Policy"])["img-src"]
    assert images == ["'self'", "data:", "http://tiles.intranet:8080"]


def test_the_session_cookie_is_httponly_and_samesite_lax_and_not_secure_on_plain_http(site):
    client = site.test_client()
    answer = sign_in(client, "planner")
    assert answer.status_code == 302
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie
    assert client.get("/map").status_code == 200  # plain HTTP works: the proxy in front speaks TLS


def test_with_https_configured_plain_http_is_redirected_and_the_cookie_is_secure(spatialite_url, small_demo):
    write_demo(get_engine(spatialite_url), small_demo)
    app = _app(spatialite_url, HTTPS=True)
    make_accounts(app, small_demo)
    client = app.test_client()
    answer = client.get("/login")
    assert answer.status_code in (301, 302)
    assert answer.headers["Location"].startswith("https://")
    secure = app.test_client()
    page = secure.get("/login", base_url="https://localhost")
    assert page.status_code == 200
    assert "max-age=" in page.headers["Strict-Transport-Security"]
    # over HTTPS Flask-WTF also checks the Referer, which the referrer policy still sends
    answer = secure.post("/login", base_url="https://localhost", headers={"Referer": "https://localhost/login"},
                         data={"name": "planner", "password": PASSWORD,
                               "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert answer.status_code == 302
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_behind_a_trusted_proxy_its_https_counts(spatialite_url):
    app = _app(spatialite_url, HTTPS=True, PROXY_HOPS=1)
    answer = app.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert answer.status_code == 200
    assert "Strict-Transport-Security" in answer.headers


# --- in Chromium ---------------------------------------------------------------------------------

VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`));
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    path = tmp_path_factory.mktemp("security") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = _app(url, BASEMAP="osm")
    make_accounts(app, small_demo)
    client = app.test_client()
    sign_in(client, "admin")
    headers = {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan = client.post("/api/plans", json={"name": "p", "street": street}, headers=headers)
    assert plan.status_code == 201, plan.get_data(as_text=True)
    case = client.get("/api/incidents?limit=1").json
    with served_copy(app) as base:
        yield {"base": base, "plan": plan.json["plan_id"], "case": case["incidents"][0]["code"]}


@pytest.fixture
def page(chromium_page):
    page = chromium_page(viewport={"width": 1400, "height": 900}, init_script=VIOLATIONS)
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"error: {e}"))
    page.on("console", lambda m: page.problems.append(f"console: {m.text}")
            if "Content Security Policy" in m.text else None)
    page.tiles = []
    # tiles answered here, as the tile host would: the request is made only if the CSP allows it
    page.route("**/tile.openstreetmap.org/**", lambda route: (
        page.tiles.append(route.request.url), route.fulfill(status=200, content_type="image/png", body=PNG)))
    page.on("dialog", lambda d: d.dismiss())
    return page


def _violations(page) -> list[str]:
    return page.evaluate("window.__violations") + page.problems


def test_browser_tests_wait_with_functions_not_strings():
    """Playwright evaluates a string predicate of ``wait_for_function`` with ``eval``, which the
    pages' CSP refuses (the test then fails with an EvalError): write ``"() => …"``."""
    predicate = re.compile(r'wait_for_function\(\s*f?"(?!\(\w*\) =>)')
    offending = [f"{path.name}:{text[:m.start()].count(chr(10)) + 1}"
                 for path in sorted(Path(__file__).parent.glob("test_*.py"))
                 for text in [path.read_text()] for m in predicate.finditer(text)]
    assert offending == [], "use wait_for_function(\"() => …\"): " + ", ".join(offending)


def test_no_page_reports_a_csp_violation(page, served):
    base = served["base"]
    page.goto(f"{base}/login")
    page.wait_for_load_state("networkidle")
    assert _violations(page) == [], "/login"
    sign_in_page(page, base, "admin")
    ready = {"/map": "() => window.gridplan && window.gridplan.ready",
             "/supervisor": "() => window.gridplan && window.gridplan.ready",
             f"/plans/{served['plan']}": "() => window.gridplan && window.gridplan.ready",
             "/coverage": "() => window.gridplan && window.gridplan.ready",
             "/coverage/report": "() => window.coverageReportReady === true"}
    pages = ["/map", "/supervisor", "/plans", f"/plans/{served['plan']}", "/layers", "/coverage",
             "/coverage/report", "/cases", "/cases/new", f"/cases/{served['case']}", "/rates",
             "/admin/users", "/admin/tokens", "/admin/settings", "/admin/audit"]
    for path in pages:
        answer = page.goto(f"{base}{path}")
        assert answer.status == 200, path
        if path in ready:
            page.wait_for_function(ready[path], timeout=30_000)
        page.wait_for_load_state("networkidle")
        assert _violations(page) == [], path
    assert page.tiles, "the base map's tiles were never requested"
