"""Administration: users, API tokens, settings and standards, the audit log, the base map —
through Flask's test client on both databases, and the user and token pages in Chromium."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest

from geodata.audit import AuditFilter, search
from geodata.settings import get_value
from tests.conftest import make_app
from tests.webhelpers import PASSWORD, csrf_token, make_accounts, served_copy, sign_in, sign_in_page


def strict(response) -> dict:
    """The body parsed as strict JSON: NaN or Infinity would fail the test."""

    def refuse(name):
        raise AssertionError(f"{name} in a JSON answer")

    return json.loads(response.get_data(as_text=True), parse_constant=refuse)


@pytest.fixture
def site(db_url, engine, small_demo):
    app = make_app(db_url)
    secrets = make_accounts(app, small_demo)
    return app, secrets


def client_as(app, role: str, password: str = PASSWORD):
    client = app.test_client()
    assert sign_in(client, role, password).status_code == 302
    page = client.get("/admin/users" if role == "admin" else "/login")
    return client, {"X-CSRFToken": csrf_token(page.get_data(as_text=True))}


PAGES = ["/admin/users", "/admin/tokens", "/admin/settings", "/admin/audit", "/admin/audit.csv"]
APIS = ["/api/admin/users", "/api/admin/tokens", "/api/admin/settings", "/api/admin/audit"]


def test_only_administrators_see_the_admin_pages(site):
    app, secrets = site
    admin, _ = client_as(app, "admin")
    for path in PAGES + APIS:
        assert admin.get(path).status_code == 200, path
    assert ">Administration</a>" in admin.get("/layers").get_data(as_text=True)
    for role in ("planner", "viewer", "supervisor"):
        client, headers = client_as(app, role)
        for path in PAGES:
            assert client.get(path).status_code == 403, (role, path)
        for path in APIS:
            answer = client.get(path)
            assert answer.status_code == 403 and strict(answer)["status"] == 403, (role, path)
        assert client.post("/api/admin/users", headers=headers, json={}).status_code == 403
        assert ">Administration</a>" not in client.get("/login").get_data(as_text=True)
    assert app.test_client().get("/admin/users").status_code == 302  # nobody: sign in first
    assert app.test_client().get("/api/admin/users").status_code == 401
    # an API token, even an administrator's, never administers
    with app.app_context():
        from webmap.auth import add_token

        token = add_token("robot", "admin")
    answer = app.test_client().get("/api/admin/users", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403 and "signed-in administrator" in strict(answer)["detail"]


def test_create_users_and_refuse_bad_input(site, engine):
    app, _ = site
    admin, headers = client_as(app, "admin")
    made = admin.post("/api/admin/users", headers=headers, json={
        "name": "王芳", "role": "supervisor", "scope_code": "420103001001", "password": "long enough"})
    assert made.status_code == 201 and strict(made)["scope_code"] == "420103001001"
    assert "password_hash" not in made.get_data(as_text=True)
    client = app.test_client()
    assert sign_in(client, "王芳", "long enough").status_code == 302
    for body, status, message in [
        ({"name": "王芳", "role": "viewer", "password": "long enough"}, 409, "exists already"),
        ({"name": "li", "role": "king", "password": "long enough"}, 400, "unknown role 'king'"),
        ({"name": "li", "role": "supervisor", "password": "long enough"}, 400, "a supervisor needs a scope"),
        ({"name": "li", "role": "viewer", "scope_code": "12", "password": "long enough"}, 400,
         "is not a 6/9/12/15"),
        ({"name": "li", "role": "viewer", "password": "short"}, 400, "at least 8 characters"),
        ({"name": "li", "role": "viewer"}, 400, "set a first password"),
        ({"name": "l\u0007i", "role": "viewer", "password": "long enough"}, 400, "control characters"),
        ({"name": "l" * 51, "role": "viewer", "password": "long enough"}, 400, "at most 50"),
        ({"name": "", "role": "viewer", "password": "long enough"}, 400, "is required"),
        ({"name": ["li"], "role": "viewer", "password": "long enough"}, 400, "name is text"),
    ]:
        answer = admin.post("/api/admin/users", headers=headers, json=body)
        assert answer.status_code == status and message in strict(answer)["detail"], body
    assert admin.post("/api/admin/users", headers=headers, data="[1,", content_type="application/json"
                      ).status_code == 400
    assert admin.post("/api/admin/users", json={"name": "x"}).status_code == 400  # no CSRF token
    names = [u["name"] for u in strict(admin.get("/api/admin/users"))["users"]]
    assert names.count("王芳") == 1 and "li" not in names
    rows, _ = search(engine, AuditFilter(action="user:create", actor="admin"))
    assert [r["detail"]["name"] for r in rows] == ["王芳"]


def test_disable_change_role_and_scope(site, engine):
    app, _ = site
    admin, headers = client_as(app, "admin")
    users = {u["name"]: u for u in strict(admin.get("/api/admin/users"))["users"]}
    planner, _ = client_as(app, "planner")
    assert planner.get("/map").status_code == 200

    planner_url = f"/api/admin/users/{users['planner']['id']}"
    answer = admin.patch(planner_url, headers=headers, json={"disabled": True})
    assert answer.status_code == 200 and strict(answer)["disabled"] is True
    assert planner.get("/map").status_code == 302  # the open session stops at once
    refused = sign_in(app.test_client(), "planner")
    assert refused.status_code == 403 and "disabled" in refused.get_data(as_text=True)
    assert admin.patch(f"/api/admin/users/{users['planner']['id']}", headers=headers,
                       json={"disabled": False}).status_code == 200
    planner, _ = client_as(app, "planner")

    answer = admin.patch(planner_url, headers=headers, json={"role": "viewer"})
    assert strict(answer)["role"] == "viewer"
    assert planner.get("/layers").status_code == 302  # a new role ends the open session …
    planner, _ = client_as(app, "planner")  # … and the next one is a viewer's
    assert planner.get("/layers").status_code == 200 and 'id="import-panel"' not in planner.get(
        "/layers").get_data(as_text=True)
    answer = admin.patch(f"/api/admin/users/{users['supervisor']['id']}", headers=headers,
                         json={"scope_code": ""})
    assert answer.status_code == 400 and "needs a scope" in strict(answer)["detail"]
    answer = admin.patch(f"/api/admin/users/{users['supervisor']['id']}", headers=headers,
                         json={"scope_code": users["supervisor"]["scope_code"][:9]})
    assert strict(answer)["scope_code"] == users["supervisor"]["scope_code"][:9]
    answer = admin.patch(f"/api/admin/users/{users['viewer']['id']}", headers=headers,
                         json={"password": "a new password"})
    assert answer.status_code == 200
    assert sign_in(app.test_client(), "viewer", "a new password").status_code == 302

    # nobody locks the door behind them
    me = users["admin"]["id"]
    for body in ({"disabled": True}, {"role": "planner"}):
        answer = admin.patch(f"/api/admin/users/{me}", headers=headers, json=body)
        assert answer.status_code == 400 and "your own account" in strict(answer)["detail"]
    assert admin.patch("/api/admin/users/9999", headers=headers, json={"role": "viewer"}).status_code == 404
    assert admin.patch(f"/api/admin/users/{me}", headers=headers, json={"disabled": "yes"}).status_code == 400

    actions = [r["action"] for r in search(engine, AuditFilter(layer="users", actor="admin"))[0]]
    assert actions.count("user:disable") == 1 and actions.count("user:enable") == 1
    assert actions.count("user:update") == 3


def test_the_last_enabled_administrator_stays(engine, db_url, small_demo):
    from geodata.accounts import create_user, update_user
    from geodata.errors import Refused

    boss = create_user(engine, "boss", "admin", "x", actor="cli")
    deputy = create_user(engine, "deputy", "admin", "x", actor="cli")
    update_user(engine, actor="boss", user_id=deputy["id"], disabled=True)
    with pytest.raises(Refused, match="at least one enabled administrator"):
        update_user(engine, actor="deputy", user_id=boss["id"], role="planner")
    assert update_user(engine, actor="boss", user_id=deputy["id"], disabled=False)["disabled"] is False
    assert update_user(engine, actor="deputy", user_id=boss["id"], role="planner")["role"] == "planner"


def test_tokens_shown_once_changed_and_revoked(site, engine):
    app, secrets = site
    admin, headers = client_as(app, "admin")
    made = admin.post("/api/admin/tokens", headers=headers, json={"name": "民政局", "role": "viewer"})
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    token = strict(made)["token"]
    listed = admin.get("/api/admin/tokens").get_data(as_text=True)
    assert token not in listed and "token_sha256" not in listed  # shown once, never again
    auth = {"Authorization": f"Bearer {token}"}
    api = app.test_client()
    assert api.get("/api/collections", headers=auth).status_code == 200
    again = admin.post("/api/admin/tokens", headers=headers, json={"name": "民政局", "role": "viewer"})
    assert again.status_code == 409 and "exists already" in strict(again)["detail"]

    token_id = strict(made)["id"]
    scope = secrets["scope"]
    changed = admin.patch(f"/api/admin/tokens/{token_id}", headers=headers,
                          json={"role": "supervisor", "scope_code": scope})
    assert strict(changed)["role"] == "supervisor"
    cells = strict(api.get("/api/collections/grid_cells/items", headers=auth))
    assert all(f["id"].startswith(scope) for f in cells["features"])

    revoked = admin.post(f"/api/admin/tokens/{token_id}/revoke", headers=headers)
    assert revoked.status_code == 200 and strict(revoked)["revoked_at"]
    assert api.get("/api/collections", headers=auth).status_code == 401  # at once
    assert admin.post(f"/api/admin/tokens/{token_id}/revoke", headers=headers).status_code == 400
    assert admin.patch(f"/api/admin/tokens/{token_id}", headers=headers,
                       json={"role": "viewer"}).status_code == 400
    assert admin.post("/api/admin/tokens/9999/revoke", headers=headers).status_code == 404
    bad = admin.post("/api/admin/tokens", headers=headers, json={"name": "x", "role": "supervisor"})
    assert bad.status_code == 400 and "needs a scope" in strict(bad)["detail"]
    actions = [r["action"] for r in search(engine, AuditFilter(layer="api_tokens", actor="admin"))[0]]
    assert actions == ["token:revoke", "token:update", "token:create"]


def test_settings_keep_their_shape(site, engine):
    app, _ = site
    admin, headers = client_as(app, "admin")
    listed = strict(admin.get("/api/admin/settings"))
    keys = {s["key"] for s in listed["settings"]}
    assert {"households_min", "households_max", "facility_reach_m", "incident_categories", "basemap"} <= keys
    assert all(s["source"] for s in listed["settings"])

    def put(key, value, **extra):
        return admin.put(f"/api/admin/settings/{key}", headers=headers, json={"value": value, **extra})

    ok = put("households_max", 3500, source="本市民政局 2026 年 12 号文")
    assert ok.status_code == 200 and strict(ok)["source"].startswith("本市")
    from layers.plans.communities import bounds

    assert bounds(engine).maximum == 3500  # the map and the planner use it at once
    for key, value, message in [
        ("households_max", "lots", "expected a number"),
        ("households_max", 2500.5, "expected a whole number"),
        ("households_max", -1, "cannot be negative"),
        ("households_max", None, "a value is required"),
        ("households_min", 4000, "would be above the maximum"),
        ("grid_households", [600, 500], "the minimum 600 is above the maximum 500"),
        ("grid_households", [300], "expected two numbers"),
        ("facility_reach_m", {"kindergarten": 300}, "standard entries cannot be removed"),
        ("rate_targets", {"closed": "high", "closed_on_time": 0.7},
         "Rate targets · Closure rate: expected a number"),
        ("basemap", "google", "is not one of none, osm"),
        ("basemap", 3, "expected text"),
    ]:
        answer = put(key, value)
        assert answer.status_code == 400 and message in strict(answer)["detail"], (key, value)
    assert put("nonexistent", 1).status_code == 404
    nan = admin.put("/api/admin/settings/households_max", headers=headers, data='{"value": NaN}',
                    content_type="application/json")
    assert nan.status_code == 400 and "NaN" in strict(nan)["detail"]
    assert get_value(engine, "households_max") == 3500

    categories = get_value(engine, "incident_categories")
    added = {**categories, "E06-01": {"kind": "event", "name": "噪音扰民 (noise)", "limit_hours": 8}}
    assert put("incident_categories", added).status_code == 200
    missing_field = {**categories, "E06-02": {"kind": "event", "name": "x"}}
    answer = put("incident_categories", missing_field)
    assert answer.status_code == 400
    assert "Incident categories · E06-02: missing Time limit (working hours)" in strict(answer)["detail"]
    del added["E06-01"]  # an entry the city added may go again
    assert put("incident_categories", added).status_code == 200
    rows, _ = search(engine, AuditFilter(action="setting:update"))
    assert [r["object_code"] for r in rows] == ["incident_categories", "incident_categories",
                                                "households_max"]
    assert rows[-1]["detail"]["before"] == 3000 and rows[-1]["detail"]["after"] == 3500


def test_the_base_map_is_the_administrators_choice(site, engine, monkeypatch):
    app, _ = site
    admin, headers = client_as(app, "admin")
    assert get_value(engine, "basemap") == "none"  # a fresh install: no tiles that cannot load
    assert "L.tileLayer" not in admin.get("/map").get_data(as_text=True)
    assert admin.put("/api/admin/settings/basemap", headers=headers, json={"value": "osm"}).status_code == 200
    assert "tile.openstreetmap.org" in admin.get("/map").get_data(as_text=True)
    monkeypatch.setenv("GRIDPLAN_BASEMAP", "gaode")  # the environment still wins when set
    overridden = make_app(app.config["DATABASE_URL"])
    client = overridden.test_client()
    sign_in(client, "admin")
    assert "autonavi.com" in client.get("/map").get_data(as_text=True)
    note = strict(client.get("/api/admin/settings"))["notes"]["basemap"]
    # in words: the variable's name is for whoever runs the server (docs/operations.md)
    assert "configuration sets the base map to Gaode (GCJ-02)" in note and "GRIDPLAN_" not in note


def test_audit_log_search_and_csv(site, engine):
    app, _ = site
    admin, headers = client_as(app, "admin")
    admin.post("/api/admin/tokens", headers=headers, json={"name": "police2", "role": "viewer"})
    admin.put("/api/admin/settings/households_min", headers=headers, json={"value": 900})
    page = admin.get("/admin/audit?actor=adm&action=token").get_data(as_text=True)
    assert "police2" in page and "Fewest households per community" not in page
    # the setting by its name, the change as a sentence
    assert "Fewest households per community: 1,000 → 900" in admin.get(
        "/admin/audit?layer=settings").get_data(as_text=True)
    today = date.today()
    assert "police2" in admin.get(f"/admin/audit?since={today}&until={today}").get_data(as_text=True)
    tomorrow = today + timedelta(days=1)
    assert "police2" not in admin.get(f"/admin/audit?since={tomorrow}").get_data(as_text=True)
    bad = admin.get("/admin/audit?since=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.get_data(as_text=True)
    assert admin.get(f"/admin/audit?since={tomorrow}&until={today}").status_code == 400

    answer = admin.get("/api/admin/audit?action=token&limit=5")
    body = strict(answer)
    assert body["total"] >= 3 and all(r["action"].startswith("token") for r in body["rows"])
    assert admin.get("/api/admin/audit?since=2026-13-01").status_code == 400

    exported = admin.get("/admin/audit.csv?actor=admin")
    assert exported.status_code == 200 and exported.data.startswith(b"\xef\xbb\xbf")
    assert "attachment" in exported.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(exported.data.decode("utf-8-sig"))))
    assert rows[0] == ["at", "actor", "action", "layer", "object_code", "detail"]
    assert {r[2] for r in rows[1:]} == {"sign-in", "token:create", "setting:update"}
    assert json.loads(next(r for r in rows[1:] if r[2] == "setting:update")[5])["after"] == 900


# --- in Chromium ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, spatialite_template, small_demo, chromium_path):
    import shutil

    folder = tmp_path_factory.mktemp("admin_pages")
    shutil.copy(spatialite_template, folder / "gridplan.sqlite")
    app = make_app(f"sqlite:///{folder / 'gridplan.sqlite'}")
    secrets = make_accounts(app, small_demo)
    with served_copy(app) as base:
        yield {"base": base, "folder": folder, **secrets}


@pytest.fixture
def page(served, chromium_page):
    return chromium_page(viewport={"width": 1400, "height": 1000}, console=True)


def test_users_page_in_chromium(page, served, chromium_page):
    sign_in_page(page, served["base"], "admin")
    page.click("text=Administration")
    page.wait_for_selector("#admin[data-ready]")
    assert page.locator("#users tbody tr").count() == 4
    # when each account last signed in: the administrator just now, the viewer never
    assert page.inner_text('#users tr[data-user="viewer"] td.last-sign-in') == "never signed in"
    assert "never" not in page.inner_text('#users tr[data-user="admin"] td.last-sign-in')
    # a new account; then the same name again is refused next to the form
    page.fill("#new-user input[name=name]", "<b>赵</b>")
    page.select_option("#new-user select[name=role]", "viewer")
    page.fill("#new-user input[name=password]", "long enough")
    page.click("#new-user button[type=submit]")
    page.wait_for_selector('#users tr[data-user="<b>赵</b>"]')
    assert page.locator("#users b").count() == 0  # names are text, never HTML
    page.fill("#new-user input[name=name]", "<b>赵</b>")
    page.fill("#new-user input[name=password]", "long enough")
    page.click("#new-user button[type=submit]")
    page.wait_for_function("() => document.querySelector('#new-user-message').classList.contains('bad')")
    assert "exists already" in page.inner_text("#new-user-message")
    # disable the planner; the row says so
    row = '#users tr[data-user="planner"]'
    page.click(f"{row} button.toggle")
    page.wait_for_selector(f"{row}.disabled")
    assert "disabled" in page.inner_text(f"{row} td.state")
    # a supervisor without a scope is refused in the row
    # the scope is chosen by name, street → community → cell (this database holds no streets: the
    # stored code stays as it is); no street is no scope
    scope = '#users tr[data-user="supervisor"] .scope-picker'
    page.select_option(f"{scope} select.street", "")
    page.click('#users tr[data-user="supervisor"] button.save')
    page.wait_for_function(
        "() => document.querySelector('#users tr[data-user=\"supervisor\"] td.message')"
        ".classList.contains('bad')")
    assert "needs a scope" in page.inner_text('#users tr[data-user="supervisor"] td.message')
    assert page.is_disabled('#users tr[data-user="admin"] button.toggle')  # not one's own account
    page.screenshot(path=str(served["folder"] / "admin-users.png"), full_page=True)
    assert [e for e in page.errors if "409" not in e and "400" not in e] == []

    other = chromium_page()  # another browser
    other.goto(f"{served['base']}/login")
    other.fill("input[name=name]", "planner")
    other.fill("input[name=password]", PASSWORD)
    other.click("form.login button[type=submit]")
    assert "disabled" in other.inner_text("p.flash")


def test_tokens_page_in_chromium(page, served):
    import urllib.request

    sign_in_page(page, served["base"], "admin")
    page.goto(f"{served['base']}/admin/tokens")
    page.wait_for_selector("#admin[data-ready]")
    page.fill("#new-token input[name=name]", "公安分局")
    page.fill("#new-token input[name=expires_at]", "2099-12-31")
    page.click("#new-token button[type=submit]")
    page.wait_for_selector("#token-once:not([hidden])")
    token = page.inner_text("#token-once-value")
    assert len(token) > 30

    def api(tok):
        request = urllib.request.Request(f"{served['base']}/api/collections",
                                         headers={"Authorization": f"Bearer {tok}"})
        try:
            return urllib.request.urlopen(request).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert api(token) == 200
    page.screenshot(path=str(served["folder"] / "admin-tokens.png"), full_page=True)
    page.reload()
    page.wait_for_selector("#admin[data-ready]")
    assert token not in page.content()  # shown once
    row = '#tokens tr[data-token="公安分局"]'
    # valid through the day chosen, used just now
    assert "2099" in page.inner_text(f"{row} td.expires")
    assert page.inner_text(f"{row} td.last-used") not in ("", "never used")
    assert page.inner_text('#tokens tr[data-token="police"] td.expires') == "no expiry"
    page.click(f"{row} button.revoke")
    assert "Click again" in page.inner_text(f"{row} td.message")
    page.click(f"{row} button.revoke")
    page.wait_for_selector(f"{row}.revoked")
    assert api(token) == 401
    assert page.errors == []


def test_settings_page_in_chromium(page, served):
    sign_in_page(page, served["base"], "admin")
    page.goto(f"{served['base']}/admin/settings")
    page.wait_for_selector("#admin[data-ready]")
    card = '#settings section[data-key="households_max"]'
    page.fill(f"{card} input[type=number]", "2800")
    page.fill(f"{card} input.source", "本市 2026 年规定")
    page.click(f"{card} button")
    page.wait_for_function(f"() => document.querySelector('{card} .message').classList.contains('ok')")
    assert page.input_value(f"{card} input.source") == "本市 2026 年规定"
    pair = '#settings section[data-key="grid_households"]'
    page.fill(f"{pair} input[aria-label$='min']", "900")
    page.click(f"{pair} button")
    assert "minimum is above the maximum" in page.inner_text(f"{pair} .message")
    base = '#settings section[data-key="basemap"]'
    assert page.locator("#settings section").first.get_attribute("data-key") == "basemap"
    page.select_option(f"{base} select", "osm")
    page.click(f"{base} button")
    page.wait_for_function(f"() => document.querySelector('{base} .message').classList.contains('ok')")
    table = '#settings section[data-key="incident_categories"]'
    assert page.is_disabled(f"{table} tr:nth-child(2) button")  # standard entries stay
    page.click(f"{table} button.add")
    page.fill(f"{table} tr:last-child input[placeholder]", "E06-01")
    page.select_option(f"{table} tr:last-child select[data-field=kind]", "event")
    page.fill(f"{table} tr:last-child input[data-field=name]", "噪音扰民 noise")
    page.fill(f"{table} tr:last-child input[data-field=limit_hours]", "8")
    page.click(f"{table} > button")
    page.wait_for_function(f"() => document.querySelector('{table} .message').classList.contains('ok')")
    assert "E06-01" in page.inner_text(table)
    page.screenshot(path=str(served["folder"] / "admin-settings.png"), full_page=True)
    page.goto(f"{served['base']}/admin/audit?layer=settings")
    assert page.locator("#audit tbody tr").count() == 3
    page.screenshot(path=str(served["folder"] / "admin-audit.png"), full_page=True)
    assert [e for e in page.errors if "400" not in e] == []


def test_settings_name_categories_in_one_language_and_pick_them_by_name(page, served):
    """The case categories read in the reader's language only (a bilingual stored name is kept
    whole when not edited), their first column is the code; the categories needing an
    after-photo are ticked by name, and the audit log names them beside their codes."""
    from geodata.db import get_engine

    engine = get_engine(f"sqlite:///{served['folder'] / 'gridplan.sqlite'}")
    stored = get_value(engine, "incident_categories")
    sign_in_page(page, served["base"], "admin")
    page.goto(f"{served['base']}/admin/settings")
    page.wait_for_selector("#admin[data-ready]")
    table = '#settings section[data-key="incident_categories"]'
    assert page.inner_text(f"{table} tr:first-child th:first-child") == "Code"
    assert page.input_value(f"{table} tr:nth-child(2) input[data-field=name]") == "manhole cover damaged"
    for code in ("C01-01", "E01-02", "E03-02"):  # standard entries, stored in both languages
        name = page.input_value(f'{table} tr:has(td[data-entry="{code}"]) input[data-field=name]')
        assert name and not any("\u4e00" <= c <= "\u9fff" for c in name), name
    # wide enough for what it holds
    assert page.evaluate(f"""() => [...document.querySelectorAll('{table} input[data-field=name]')]
        .every((e) => e.scrollWidth <= e.clientWidth)""")
    page.fill(f"{table} tr:nth-child(3) input[data-field=limit_hours]", "12")
    page.click(f"{table} > button")
    page.wait_for_function(f"() => document.querySelector('{table} .message').classList.contains('ok')")
    saved = get_value(engine, "incident_categories")
    assert saved["C01-02"]["limit_hours"] == 12 and saved["C01-02"]["name"] == stored["C01-02"]["name"]
    assert all(saved[k]["name"] == v["name"] for k, v in stored.items())  # both languages kept

    photo = '#settings section[data-key="incident_after_photo"]'
    before = get_value(engine, "incident_after_photo")
    assert page.locator(f"{photo} input[type=text]").count() == 0
    labels = page.inner_text(photo)
    assert "C02-01 · road surface damaged" in labels and "E05-01 · flooded road" in labels
    assert page.is_checked(f"{photo} input[value='C02-01']")
    page.check(f"{photo} input[value='E05-01']")
    page.click(f"{photo} button.save")
    page.wait_for_function(f"() => document.querySelector('{photo} .message').classList.contains('ok')")
    assert get_value(engine, "incident_after_photo") == [*before, "E05-01"]
    page.screenshot(path=str(served["folder"] / "admin-settings-categories.png"), full_page=True)
    page.goto(f"{served['base']}/admin/audit?action=setting:update")
    said = page.inner_text("#audit tbody")
    assert "After-photo required: road surface damaged C02-01" in said and "flooded road E05-01" in said
    # (a base map chosen by another test loads no tiles on this machine)
    assert [e for e in page.errors if "400" not in e and "net::ERR_NAME_NOT_RESOLVED" not in e] == []


def test_a_refused_sign_in_is_said_by_the_form_and_keeps_the_name(page, served):
    """A wrong password: the message stands in the form, just above the fields (not at the top
    left of the page), the user name stays filled in and the password box takes the cursor."""
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{served['base']}/login")
    page.fill("input[name=name]", "admin")
    page.fill("input[name=password]", "not the password")
    page.click("form.login button[type=submit]")
    page.wait_for_selector("form.login #login-refused")
    assert page.inner_text("form.login #login-refused") == "Wrong name or password"
    assert page.input_value("input[name=name]") == "admin"
    assert page.evaluate("document.activeElement.name") == "password"
    said = page.locator("#login-refused").bounding_box()
    field = page.locator("input[name=name]").bounding_box()
    assert 0 <= field["y"] - (said["y"] + said["height"]) < 60 and abs(said["x"] - field["x"]) < 4
    page.screenshot(path=str(served["folder"] / "login-refused.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def test_disable_and_revoke_from_the_command_line(site, engine):
    from geodata.accounts import find_user

    app, secrets = site
    runner = app.test_cli_runner()
    result = runner.invoke(args=["user", "disable", "planner"])
    assert result.exit_code == 0 and "disabled" in result.output
    assert find_user(engine, name="planner").disabled
    assert sign_in(app.test_client(), "planner").status_code == 403
    assert runner.invoke(args=["user", "enable", "planner"]).exit_code == 0
    assert sign_in(app.test_client(), "planner").status_code == 302
    assert runner.invoke(args=["user", "disable", "nobody"]).exit_code == 1
    auth = {"Authorization": f"Bearer {secrets['token']}"}
    assert app.test_client().get("/api/collections", headers=auth).status_code == 200
    result = runner.invoke(args=["token", "revoke", "police"])
    assert result.exit_code == 0 and "revoked" in result.output
    assert app.test_client().get("/api/collections", headers=auth).status_code == 401
    again = runner.invoke(args=["token", "revoke", "police"])
    assert again.exit_code == 1 and "revoked already" in again.output
    actions = [r["action"] for r in search(engine, AuditFilter(actor="cli"))[0]]
    assert actions[:3] == ["token:revoke", "user:enable", "user:disable"]


def test_the_audit_page_names_the_servers_commands_in_words(site, engine, monkeypatch):
    """An audit row written by a command of the server (``cli``, ``demo-accounts``) names it in
    words on the page, in both languages; the CSV keeps the stored actor."""
    from geodata.settings import save_setting

    app, _ = site
    save_setting(engine, "households_min", 950, actor="cli")
    save_setting(engine, "households_min", 960, actor="demo-accounts")
    admin, _ = client_as(app, "admin")
    page = admin.get("/admin/audit?action=setting").get_data(as_text=True)
    assert "server command line" in page and "demo accounts setup" in page
    assert "<td>cli</td>" not in page and "<td>demo-accounts</td>" not in page
    assert "cli" in admin.get("/admin/audit.csv?action=setting").get_data(as_text=True)
    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)  # as installed: Chinese
    chinese = make_app(app.config["DATABASE_URL"])
    admin, _ = client_as(chinese, "admin")
    page = admin.get("/admin/audit?action=setting", headers={"Accept-Language": "zh-CN"})
    page = page.get_data(as_text=True)
    assert "服务器命令行" in page and "演示账号设置" in page and "<td>cli</td>" not in page


def test_the_audit_page_names_codes_and_users_beside_them(site, engine):
    """A scope, a department and case categories read with their names beside their codes, and a
    sign-in's object is the user's name, not only their number (the stored rows keep the codes)."""
    from geodata.departments import save_department
    from layers.incidents.loop import categories

    app, secrets = site
    catalogue = categories(engine)
    first = sorted(catalogue)[0]
    save_department(engine, {"code": "HW", "name": "环卫所", "categories": [first]}, catalogue, actor="admin")
    admin, _ = client_as(app, "admin")
    page = admin.get("/admin/audit?action=department").get_data(as_text=True)
    assert "环卫所" in page
    from geodata.i18n import in_language
    with app.test_request_context():
        assert f"{in_language(catalogue[first].get('name', first))} {first}" in page
    from geodata.audit_words import describe
    scope = secrets["scope"]
    with app.test_request_context():
        said = describe("user:create", {"scope_code": scope}, {"places": {scope: "水果湖社区"}})
    assert said == f"scope 水果湖社区 {scope}"
    page = admin.get("/admin/audit?action=sign-in").get_data(as_text=True)
    assert "admin (no. " in page


def test_the_audit_page_words_every_detail_of_a_plans_workflow(db_url, engine, small_demo, monkeypatch):
    """A plan made, edited, named, renamed, undone and redone, submitted and approved although it
    breaks rules: every row of the audit page reads in words, in Chinese — no stored
    key (``broken_rules``, ``not_contiguous``, ``community_code``, an edit's kind ``name``) — and a
    broken rule reads as the plan page words it, the community's name beside its code."""
    import re

    from tests.conftest import demo_site
    from tests.test_plans_web import browser_client

    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    planner, ph = browser_client(app, "planner")
    admin, ah = browser_client(app, "admin")
    street = small_demo.layers["streets"]["code"].iloc[0]
    plan_id = planner.post("/api/plans", json={"name": "东区调整", "street": street},
                           headers=ph).json["plan_id"]
    unit = small_demo.layers["units"].query("street_code == @street")["code"].iloc[0]
    moved = planner.post(f"/api/plans/{plan_id}/moves", json={"units": [unit], "to": "new", "version": 1},
                         headers=ph).json  # a community of one unit: below the minimum
    v = planner.post(f"/api/plans/{plan_id}/communities/{moved['to']}/name",
                     json={"name": "青年社区", "version": moved["version"]}, headers=ph).json["version"]
    v = planner.post(f"/api/plans/{plan_id}/rename", json={"name": "东区调整二", "version": v},
                     headers=ph).json["version"]
    v = planner.post(f"/api/plans/{plan_id}/undo", json={"version": v}, headers=ph).json["version"]
    v = planner.post(f"/api/plans/{plan_id}/redo", json={"version": v}, headers=ph).json["version"]
    answer = planner.post(f"/api/plans/{plan_id}/status",
                          json={"action": "submit", "version": v, "reason": "测试"}, headers=ph)
    assert answer.status_code == 200, answer.json
    admin.post(f"/api/plans/{plan_id}/status",
               json={"action": "approve", "version": answer.json["version"], "reason": "测试"}, headers=ah)
    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)  # as installed: Chinese
    chinese = make_app(app.config["DATABASE_URL"])
    client, _ = client_as(chinese, "admin")
    page = client.get("/admin/audit", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    details = re.findall(r'<td class="detail">(.*?)</td>', page, flags=re.S)
    actions = set(re.findall(r'<td data-action="([^"]+)"', page))
    assert {"plan:create", "plan:name", "plan:rename", "plan:undo", "plan:redo", "plan:submitted",
            "plan:approved"} <= actions
    keys = [d for d in details if re.search(r"[a-z]+_[a-z_]+", d)]
    assert keys == []
    assert not [d for d in details if re.search(r"(类型|kind) (name|move|paint|split|merge|new)\b", d)]
    ruled = [d for d in details if "原因 测试" in d]
    assert len(ruled) == 2, details
    # the community by its name beside its code, the rule in words, as the plan page says it
    assert all(f"青年社区 · {moved['to']}" in d and "低于下限" in d for d in ruled), ruled
