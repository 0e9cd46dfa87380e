"""Sessions and tokens end: a session lasts ``session_hours`` (8) from signing in, and signing out,
a new password, a role or scope change and disabling end every session of the account — a
copied cookie too, in another process; after signing in or choosing a language the browser is
sent only to a path on this site; sign-ins, refused sign-ins and sign-outs are in the audit log
with the client's address; a token may expire (a 401 that says so), its last use is noted, and
a token in the address (``?api_key=``) is refused."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import text

from geodata.db import get_engine
from tests.conftest import make_app
from tests.test_processes import every_process
from tests.webhelpers import PASSWORD, csrf_token, gunicorn_app, sign_in

HOME = "/"
#: ``next`` values that must never send the browser off the site (as typed in the address)
HOSTILE_NEXT = ("/%09/evil.example", "//evil.example", "https://evil.example", "/%5Cevil.example",
                "/%0d%0a", "/%0d%0aSet-Cookie:%20x=1", "%2F%2Fevil.example", "/%2F/evil.example",
                "/..//evil.example", "/%2e%2e//evil.example", "http:/evil.example", "/\x7f/evil.example",
                "javascript:alert(1)", "evil.example", "/%E3%80%80/x/%09")


def _accounts(app) -> dict[str, str]:
    """One account per role (the supervisor's scope a community) and two tokens."""
    from webmap.auth import add_token, add_user

    with app.app_context():
        for role in ("admin", "planner", "viewer"):
            add_user(role, role, PASSWORD)
        add_user("supervisor", "supervisor", PASSWORD, "150302001001")
        return {"token": add_token("police", "viewer"),
                "supervisor_token": add_token("grid-app", "supervisor", "150302001001")}


@pytest.fixture
def site(db_url):
    app = make_app(db_url, BASEMAP="none")
    secrets = _accounts(app)
    # a second app on the same database: another process, as gunicorn runs several
    other = make_app(db_url, BASEMAP="none")
    return {"app": app, "other": other, "engine": get_engine(db_url), **secrets}


def _signed_in(app, name: str, address: str = "127.0.0.1"):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    answer = sign_in(client, name)
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    return client


def _copy(cookie_from, app):
    """A client of ``app`` holding a copy of ``cookie_from``'s session cookie."""
    copy = app.test_client()
    copy.set_cookie("session", cookie_from.get_cookie("session").value)
    return copy


def _csrf(client) -> dict:
    return {"X-CSRFToken": csrf_token(client.get("/login").get_data(as_text=True))}


def _inside(client) -> int:
    """200 while the session lasts, 401 once it has ended."""
    return client.get("/api/collections").status_code


def _user_id(site, name: str) -> int:
    with site["engine"].connect() as conn:
        return conn.execute(text("SELECT id FROM users WHERE name = :n"), {"n": name}).scalar_one()


def _age_session(client, hours: float) -> None:
    """Make the session look signed in ``hours`` ago (its sign-in time, as the server wrote it)."""
    with client.session_transaction() as session:
        session["signed_in_at"] -= int(hours * 3600)


# --- how long a session lasts ---------------------------------------------------------------------


def test_a_session_ends_eight_hours_after_signing_in(site):
    app = site["app"]
    assert app.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=8)  # not Flask's 31 days
    client = app.test_client()
    answer = sign_in(client, "planner")
    # the browser forgets the cookie when the session ends
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", answer.headers["Set-Cookie"]).group(1))
    assert abs((expires.timestamp() - time.time()) - 8 * 3600) < 120
    assert _inside(client) == 200
    _age_session(client, 7.9)
    assert _inside(client) == 200
    _age_session(client, 0.2)  # 8.1 hours: over, whatever the cookie says about itself
    assert _inside(client) == 401
    page = client.get("/map")
    assert page.status_code == 302 and urlsplit(page.headers["Location"]).path == "/login"
    # a copy of a session that ended is refused by the other process as well
    assert _inside(_copy(client, site["other"])) == 401


def test_the_administrator_sets_how_long_sessions_last(site):
    admin = _signed_in(site["app"], "admin")
    headers = _csrf(admin)
    for bad in (0, -1, 745, 1.5, "8"):
        answer = admin.put("/api/admin/settings/session_hours", json={"value": bad}, headers=headers)
        assert answer.status_code == 400, (bad, answer.get_data(as_text=True))
    answer = admin.put("/api/admin/settings/session_hours", json={"value": 1}, headers=headers)
    assert answer.status_code == 200
    planner = _signed_in(site["app"], "planner")
    _age_session(planner, 0.5)
    assert _inside(planner) == 200
    _age_session(planner, 0.6)
    assert _inside(planner) == 401
    # the environment's GRIDPLAN_SESSION_HOURS (here the configuration) overrides the setting
    longer = make_app(site["app"].config["DATABASE_URL"], SESSION_HOURS=12)
    assert _inside(_copy(planner, longer)) == 200
    assert longer.config["PERMANENT_SESSION_LIFETIME"] == timedelta(hours=12)


def test_a_bad_session_hours_in_the_environment_stops_the_app_naming_it(db_url, monkeypatch):
    monkeypatch.setenv("GRIDPLAN_SESSION_HOURS", "0")
    with pytest.raises(ValueError, match="GRIDPLAN_SESSION_HOURS"):
        make_app(db_url)
    monkeypatch.setenv("GRIDPLAN_SESSION_HOURS", "2")
    assert make_app(db_url).config["PERMANENT_SESSION_LIFETIME"] \
        == timedelta(hours=2)


# --- what ends every session of an account --------------------------------------------------------


def test_signing_out_ends_a_copied_cookie_in_every_process(site):
    client = _signed_in(site["app"], "planner")
    copy = _copy(client, site["other"])
    elsewhere = _signed_in(site["other"], "planner")  # the same account on another computer
    assert _inside(copy) == 200 and _inside(elsewhere) == 200
    assert client.post("/logout", headers=_csrf(client)).status_code == 302
    assert _inside(client) == 401
    assert _inside(copy) == 401  # the cookie copied before signing out
    assert _inside(elsewhere) == 401  # signing out ends the account's every session
    assert _inside(_signed_in(site["other"], "planner")) == 200  # signing in again works


@pytest.mark.parametrize("change", ["password", "role", "scope", "disable and enable", "command line"])
def test_an_account_change_ends_its_sessions(site, change):
    name = "supervisor" if change == "scope" else "planner"
    client = _signed_in(site["app"], name)
    copy = _copy(client, site["other"])
    admin = _signed_in(site["app"], "admin")
    headers = _csrf(admin)
    url = f"/api/admin/users/{_user_id(site, name)}"
    password = PASSWORD
    if change == "password":
        password = "a new password 43"
        assert admin.patch(url, json={"password": password}, headers=headers).status_code == 200
    elif change == "role":
        assert admin.patch(url, json={"role": "viewer"}, headers=headers).status_code == 200
    elif change == "scope":
        assert admin.patch(url, json={"scope_code": "150302001002"}, headers=headers).status_code == 200
    elif change == "disable and enable":
        assert admin.patch(url, json={"disabled": True}, headers=headers).status_code == 200
        assert admin.patch(url, json={"disabled": False}, headers=headers).status_code == 200
    else:
        password = "a new password 44"
        result = site["app"].test_cli_runner().invoke(args=["user", "add", name, "--role", "planner",
                                                            "--password", password])
        assert result.exit_code == 0, result.output
    assert _inside(client) == 401 and _inside(copy) == 401
    assert _inside(admin) == 200  # the administrator's own session goes on
    fresh = site["app"].test_client()
    assert sign_in(fresh, name, password).status_code == 302 and _inside(fresh) == 200


def test_changes_that_are_not_about_access_keep_the_session(site):
    client = _signed_in(site["app"], "planner")
    answer = client.post("/locale", data={"locale": "en", "next": "/map", **_form_csrf(client)})
    assert answer.status_code == 302
    admin = _signed_in(site["app"], "admin")
    # the administrator saves the row unchanged: nothing changed, nothing ends
    assert admin.patch(f"/api/admin/users/{_user_id(site, 'planner')}", json={"role": "planner"},
                       headers=_csrf(admin)).status_code == 200
    assert _inside(client) == 200


def test_a_session_cookie_from_before_this_version_is_signed_out_once(site):
    client = _signed_in(site["app"], "planner")
    with client.session_transaction() as session:
        del session["generation"]
    assert _inside(client) == 401


def test_two_gunicorn_processes_refuse_a_cookie_after_sign_out(db_url, tmp_path):
    """``make run``'s two processes: a cookie works in both, and after signing out through
    either, a copy of it is refused by both (a per-process memory of sessions would let it in)."""
    _accounts(make_app(db_url))
    with gunicorn_app(db_url, tmp_path, GRIDPLAN_WARM_PLANS="0") as (base, _env):
        browser = requests.Session()
        token = csrf_token(browser.get(f"{base}/login", timeout=30).text)
        answer = browser.post(f"{base}/login", data={"name": "planner", "password": PASSWORD,
                                                     "csrf_token": token}, allow_redirects=False, timeout=30)
        assert answer.status_code == 302
        copied = {"session": browser.cookies["session"]}

        def ask():
            response = requests.get(f"{base}/api/layers", cookies=copied, timeout=30)
            return response, response.status_code

        assert set(every_process(ask).values()) == {200}
        token = csrf_token(browser.get(f"{base}/login", timeout=30).text)
        assert browser.post(f"{base}/logout", data={"csrf_token": token}, allow_redirects=False,
                            timeout=30).status_code == 302
        assert set(every_process(ask).values()) == {401}


# --- where the browser is sent --------------------------------------------------------------------


def _form_csrf(client) -> dict:
    return {"csrf_token": csrf_token(client.get("/login").get_data(as_text=True))}


def _on_the_site(location: str) -> bool:
    parts = urlsplit(location)
    return parts.netloc in ("", "localhost") and not parts.scheme.startswith("javascript") \
        and parts.path.startswith("/") and not parts.path.startswith("//") and "\\" not in location


@pytest.mark.parametrize("db_url", ["spatialite"], indirect=True)
def test_after_signing_in_only_paths_on_this_site(site):
    wrong = []
    for target in HOSTILE_NEXT:
        client = site["app"].test_client()
        page = client.get(f"/login?next={target}")
        form = {"name": "planner", "password": PASSWORD,
                "csrf_token": csrf_token(page.get_data(as_text=True))}
        answer = client.post(f"/login?next={target}", data=form)
        if answer.status_code != 302 or answer.headers["Location"] != HOME:
            wrong.append(f"{target}: {answer.status_code} {answer.headers.get('Location')!r}")
    assert wrong == []
    # a path on the site is kept, query included
    client = site["app"].test_client()
    page = client.get("/login")
    answer = client.post("/login?next=/plans%3Fstatus%3Ddraft", data={
        "name": "planner", "password": PASSWORD, "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert answer.headers["Location"] == "/plans?status=draft"


@pytest.mark.parametrize("db_url", ["spatialite"], indirect=True)
def test_after_choosing_a_language_only_paths_on_this_site(site):
    from urllib.parse import unquote

    wrong = []
    for signed_in in (False, True):
        client = _signed_in(site["app"], "viewer") if signed_in else site["app"].test_client()
        for target in HOSTILE_NEXT:
            form = {"locale": "en", "next": unquote(target), **_form_csrf(client)}
            answer = client.post("/locale", data=form)
            if answer.status_code != 302 or not _on_the_site(answer.headers["Location"]) \
                    or answer.headers["Location"] != HOME:
                wrong.append(f"{target}: {answer.status_code} {answer.headers.get('Location')!r}")
        form = {"locale": "zh", "next": "/map?layer=units", **_form_csrf(client)}
        answer = client.post("/locale", data=form)
        assert answer.headers["Location"] == "/map?layer=units"
    assert wrong == []


# --- the audit log --------------------------------------------------------------------------------


def test_sign_ins_refusals_and_sign_outs_are_in_the_audit_log(site):
    app = site["app"]
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.1.2.3"
    assert sign_in(client, "planner", "wrong password").status_code == 401
    assert sign_in(client, "nobody", "wrong password").status_code == 401
    assert sign_in(client, "planner").status_code == 302
    assert client.post("/logout", headers=_csrf(client)).status_code == 302
    admin = _signed_in(app, "admin", address="10.9.9.9")
    rows = admin.get("/api/admin/audit", query_string={"action": "sign"}).json["rows"]
    seen = [(r["actor"], r["action"], r["detail"]["address"], r["detail"].get("reason")) for r in rows]
    assert seen == [("admin", "sign-in", "10.9.9.9", None),
                    ("planner", "sign-out", "10.1.2.3", None),
                    ("planner", "sign-in", "10.1.2.3", None),
                    ("nobody", "sign-in:refused", "10.1.2.3", "unknown name"),
                    ("planner", "sign-in:refused", "10.1.2.3", "wrong password")]
    assert all(isinstance(r["at"], str) and r["at"][:10] == datetime.now().date().isoformat() for r in rows)
    assert "wrong password" not in str([r["detail"] for r in rows if r["action"] == "sign-in"])
    # the users' list says when each last signed in
    users = {u["name"]: u for u in admin.get("/api/admin/users").json["users"]}
    assert users["viewer"]["last_sign_in_at"] is None
    assert datetime.now() - datetime.fromisoformat(users["planner"]["last_sign_in_at"]) < timedelta(minutes=1)
    # the audit page says it in words, in both languages
    english = admin.get("/admin/audit", query_string={"action": "sign"}, headers={"Accept-Language": "en"})
    page = english.get_data(as_text=True)
    assert "sign-in refused" in page and "signed out" in page and "from 10.1.2.3; unknown user name" in page
    admin.post("/locale", data={"locale": "zh", "next": "/admin/audit", **_form_csrf(admin)})
    page = admin.get("/admin/audit", query_string={"action": "sign"}).get_data(as_text=True)
    assert "登录被拒" in page and "退出登录" in page and "来自 10.1.2.3；用户名不存在" in page


@pytest.mark.parametrize("db_url", ["spatialite"], indirect=True)
def test_behind_a_proxy_the_log_has_the_clients_address(site):
    app = make_app(site["app"].config["DATABASE_URL"], PROXY_HOPS=1)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
    page = client.get("/login", headers={"X-Forwarded-For": "203.0.113.7"})
    client.post("/login", data={"name": "viewer", "password": PASSWORD,
                                "csrf_token": csrf_token(page.get_data(as_text=True))},
                headers={"X-Forwarded-For": "203.0.113.7"})
    admin = _signed_in(site["app"], "admin")
    rows = admin.get("/api/admin/audit", query_string={"actor": "viewer", "action": "sign-in"}).json["rows"]
    assert [r["detail"]["address"] for r in rows] == ["203.0.113.7"]


# --- tokens ---------------------------------------------------------------------------------------


def test_tokens_expire_and_their_last_use_is_noted(site):
    app = site["app"]
    admin = _signed_in(app, "admin")
    headers = _csrf(admin)
    past = admin.post("/api/admin/tokens", json={"name": "old", "role": "viewer", "expires_at": "2020-01-01"},
                      headers=headers)
    assert past.status_code == 400 and "has passed" in past.json["detail"]
    bad = admin.post("/api/admin/tokens", json={"name": "old", "role": "viewer", "expires_at": "soon"},
                     headers=headers)
    assert bad.status_code == 400 and "soon" in bad.json["detail"]
    for beyond in ("9999-12-31T23:59-05:00", "9999-12-31", "1999-01-01"):  # past the calendar: no 500
        far = admin.post("/api/admin/tokens", json={"name": "old", "role": "viewer", "expires_at": beyond},
                         headers=headers)
        assert far.status_code == 400 and beyond in far.json["detail"], (beyond, far.get_data(as_text=True))
    made = admin.post("/api/admin/tokens", json={"name": "audit-office", "role": "viewer",
                                                 "expires_at": "2099-12-31"}, headers=headers)
    assert made.status_code == 201 and made.json["expires_at"] == "2099-12-31T23:59:59"  # through that day
    assert made.json["last_used_at"] is None
    bearer = {"Authorization": f"Bearer {made.json['token']}"}
    client = app.test_client()
    assert client.get("/api/layers", headers=bearer).status_code == 200
    listed = {t["name"]: t for t in admin.get("/api/admin/tokens").json["tokens"]}
    used = listed["audit-office"]["last_used_at"]
    assert used and abs(datetime.fromisoformat(used) - datetime.now()) < timedelta(minutes=1)
    assert listed["police"]["last_used_at"] is None and listed["police"]["expires_at"] is None
    # used again within the minute: not written again (one write a minute, not one a request)
    engine = site["engine"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET last_used_at = :t WHERE name = 'audit-office'"),
                     {"t": datetime.now() - timedelta(seconds=30)})
    client.get("/api/layers", headers=bearer)
    with engine.connect() as conn:
        noted = conn.execute(text("SELECT last_used_at FROM api_tokens WHERE name = 'audit-office'")
                             ).scalar_one()
    assert datetime.now() - _as_datetime(noted) >= timedelta(seconds=29)
    # the expiry comes: refused, saying so, on the API and Open311 alike
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET expires_at = :t WHERE name = 'audit-office'"),
                     {"t": datetime.now() - timedelta(minutes=1)})
    refused = client.get("/api/layers", headers=bearer)
    assert refused.status_code == 401 and "expired" in refused.json["detail"]
    assert refused.json["code"] == "TokenExpired"
    posted = client.post("/api/plans", json={"name": "x"}, headers=bearer)  # a POST names it too
    assert posted.status_code == 401 and posted.json["code"] == "TokenExpired"
    spec = client.get("/open311/v2/services.json", headers=bearer)
    assert spec.status_code == 401 and "expired" in spec.json[0]["description"]
    listed = {t["name"]: t for t in admin.get("/api/admin/tokens").json["tokens"]}
    assert listed["audit-office"]["expired"] is True and listed["police"]["expired"] is False


def _as_datetime(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def test_tokens_with_an_expiry_from_the_command_line(site):
    runner = site["app"].test_cli_runner()
    past = runner.invoke(args=["token", "add", "late", "--expires", "2001-01-01"])
    assert past.exit_code != 0 and "has passed" in past.output and "Traceback" not in past.output
    bad = runner.invoke(args=["token", "add", "late", "--expires", "tomorrow"])
    assert bad.exit_code != 0 and "tomorrow" in bad.output
    made = runner.invoke(args=["token", "add", "quarterly", "--expires", "2099-03-31T18:00"])
    assert made.exit_code == 0, made.output
    with site["engine"].connect() as conn:
        expires = conn.execute(text("SELECT expires_at FROM api_tokens WHERE name = 'quarterly'")
                               ).scalar_one()
    assert _as_datetime(expires) == datetime(2099, 3, 31, 18, 0)
    assert site["app"].test_client().get("/api/layers", headers={
        "Authorization": f"Bearer {made.output.strip()}"}).status_code == 200


def test_a_token_in_the_address_is_refused(site):
    client = site["app"].test_client()
    token = site["token"]
    for url in ("/api/layers", "/open311/v2/requests.json", "/open311/v2/services.xml", "/map"):
        answer = client.get(url, query_string={"api_key": token})
        assert answer.status_code == 400, url
        assert "Authorization: Bearer" in answer.get_data(as_text=True), url
    assert client.get("/open311/v2/requests.json", query_string={"api_key": token}).json[0]["code"] == 400
    # with the header as well: still refused, the token has been put in the address
    answer = client.get("/api/layers", query_string={"api_key": token},
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 400 and answer.json["code"] == "TokenInAddress"
    posted = client.post("/open311/v2/requests.json", query_string={"api_key": site["supervisor_token"]},
                         data={"service_code": "E01-01", "lat": "40", "long": "110"})
    assert posted.status_code == 400
    # the header works, and Open311's POST takes the spec's api_key in its body (not in the address)
    assert client.get("/open311/v2/services.json",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200
    body = client.post("/open311/v2/requests.json", data={"api_key": "wrong", "service_code": "E01-01"})
    assert body.status_code == 403 and "api_key is not valid" in body.json[0]["description"]


@pytest.mark.parametrize("db_url", ["spatialite"], indirect=True)
def test_a_signed_in_request_while_the_database_is_not_there_is_a_503(site, tmp_path):
    """The cookie's expiry needs ``session_hours`` from the database, after the answer is made:
    with no database the answer stays the 503 that names it, never a 500."""
    client = _signed_in(site["app"], "planner")
    empty = make_app(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    answer = _copy(client, empty).get("/api/collections")
    assert answer.status_code == 503 and answer.json["code"] == "DatabaseNotReady"
