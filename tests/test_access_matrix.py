"""Who may call what: every route of the app (from ``app.url_map``) × every kind of caller —
the six roles signed in, nobody, a made-up token and a revoked one — against one table. A
route added without an entry in the table fails here. And a state change from a signed-in
browser without its CSRF token is refused, whatever the route.

The outcome classes: ``in`` (past the door: any answer but 401, 403 or the sign-in page; the
bodies sent are empty, so an allowed caller mostly gets a 4xx naming what is missing),
``sign-in`` (401, or a redirect to the sign-in page), ``refused`` (403) and ``csrf`` (400: no
CSRF token). A request with ``Authorization: Bearer`` needs no CSRF token (CSRF protects cookie
sessions), so a wrong or revoked token meets the sign-in check on every route. Who is not in a
row's roles gets ``sign-in`` when nobody is signed in or the token is wrong or revoked, and
``refused`` when signed in with another role; ``EXCEPTIONS`` names the few that differ.
"""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from geodata.db import get_engine
from geodata.models import AuditLog, Plan
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import csrf_token, make_accounts, sign_in, signed_in

ROLES = ("admin", "planner", "supervisor", "viewer", "dispatcher", "handler")
CALLERS = (*ROLES, "anonymous", "wrong_token", "revoked_token")

ANY = "admin planner supervisor viewer dispatcher handler"
READERS = "admin planner viewer"
EDITORS = "admin planner"
CASES = "admin supervisor"
WORKERS = "admin supervisor dispatcher handler"  # the case list: who works cases
REPORTERS = "admin supervisor dispatcher"  # a 监督员 in the field, the 指挥中心 taking a call
PHOTOGRAPHERS = "admin supervisor dispatcher handler"  # a department's handler: the after-photo
CITY = "admin planner supervisor viewer dispatcher"  # city-wide figures: not a department's handler
EVERYONE = "public"  # no sign-in needed: every caller is let in

#: method and rule → the roles let in
ACCESS: dict[str, str] = {
    "GET /": ANY,
    "GET /login": EVERYONE,
    "POST /login": EVERYONE,
    "POST /logout": EVERYONE,
    "POST /locale": EVERYONE,  # the language switch, on the sign-in page too
    "GET /static/<path:filename>": EVERYONE,
    "GET /sw.js": EVERYONE,  # the service worker: the browser looks for a new build without a session
    "GET /tiles/<int:z>/<int:x>/<int:y>.png": ANY,
    # pages
    "GET /map": READERS,
    "GET /supervisor": CASES + " dispatcher",  # the 指挥中心: the city-wide case map
    "GET /grid": CITY,  # read-only but for planners and administrators; a supervisor: their scope
    "GET /plans": READERS,
    "GET /plans/<int:plan_id>": READERS,
    "GET /layers": READERS,
    "GET /coverage": READERS,
    "GET /coverage/report": READERS,
    "GET /cases": WORKERS,
    "GET /cases/new": REPORTERS,
    "GET /cases/<code>": ANY,
    "GET /rates": CITY,
    "GET /admin": "admin",
    "GET /admin/users": "admin",
    "GET /admin/tokens": "admin",
    "GET /admin/settings": "admin",
    "GET /admin/departments": "admin",
    "GET /admin/audit": "admin",
    "GET /admin/audit.csv": "admin",
    # administration
    "GET /api/admin/users": "admin",
    "POST /api/admin/users": "admin",
    "PATCH /api/admin/users/<int:user_id>": "admin",
    "GET /api/admin/tokens": "admin",
    "POST /api/admin/tokens": "admin",
    "PATCH /api/admin/tokens/<int:token_id>": "admin",
    "POST /api/admin/tokens/<int:token_id>/revoke": "admin",
    "GET /api/admin/settings": "admin",
    "PUT /api/admin/settings/<key>": "admin",
    "GET /api/admin/audit": "admin",
    # layers (OGC API Features), search, statistics
    "GET /api/collections": ANY,
    "GET /api/collections/<name>": ANY,
    "GET /api/collections/<name>/items": ANY,
    "GET /api/collections/<name>/items/<code>": ANY,
    "GET /api/basemap": ANY,  # the city's roads and water, the base of every map page
    "GET /api/search": READERS,
    "GET /api/stats/households": READERS,
    "GET /api/topology/communities": READERS,
    "GET /api/layers": READERS,
    "GET /api/layers/places": READERS,
    "GET /api/layers/<layer>/export": READERS,
    "POST /api/layers/<layer>/preview": EDITORS,
    "POST /api/layers/<layer>/import": EDITORS,
    "GET /api/layers/imports/<int:job_id>": EDITORS,
    "DELETE /api/layers/uploads/<upload>": EDITORS,
    "GET /api/jobs/<int:job_id>": ANY,
    # plans
    "GET /api/plans": READERS,
    "POST /api/plans": EDITORS,
    "GET /api/plans/<int:plan_id>": READERS,
    "DELETE /api/plans/<int:plan_id>": EDITORS,
    "GET /api/plans/<int:plan_id>/units": READERS,
    "GET /api/plans/<int:plan_id>/outlines": READERS,
    "GET /api/plans/<int:plan_id>/compare": READERS,
    "GET /api/plans/<int:plan_id>/timeline": READERS,
    "GET /api/plans/<int:plan_id>/adoption": READERS,
    "POST /api/plans/<int:plan_id>/regenerate-cells": EDITORS,
    "GET /api/plans/<int:plan_id>/export": READERS,
    "POST /api/plans/<int:plan_id>/moves": EDITORS,
    "POST /api/plans/<int:plan_id>/split": EDITORS,
    "POST /api/plans/<int:plan_id>/merge": EDITORS,
    "POST /api/plans/<int:plan_id>/rename": EDITORS,
    "POST /api/plans/<int:plan_id>/undo": EDITORS,
    "POST /api/plans/<int:plan_id>/redo": EDITORS,
    "POST /api/plans/<int:plan_id>/duplicate": EDITORS,
    "POST /api/plans/<int:plan_id>/rebase": EDITORS,
    "POST /api/plans/<int:plan_id>/status": EDITORS,
    "POST /api/plans/<int:plan_id>/communities/<code>/name": EDITORS,
    # grid cells
    "POST /api/grid": EDITORS,
    "POST /api/grid/split": EDITORS,
    "POST /api/grid/merge": EDITORS,
    "POST /api/grid/moves": EDITORS,
    "GET /api/grid/problems": READERS,
    "GET /api/grid/cells": CITY,  # a supervisor gets the cells of their own scope only
    "GET /api/grid/assignments": CITY,
    "POST /api/grid/assignments": EDITORS,
    # the incident loop
    "GET /api/incidents": ANY,
    "GET /api/incidents/map": ANY,
    "POST /api/incidents": REPORTERS,
    "GET /api/incidents/duplicates": REPORTERS,
    "GET /api/incidents/place": REPORTERS,
    "GET /api/incidents/basemap": ANY,
    "GET /api/incidents/attention": ANY,  # null for a role nothing waits on
    "POST /api/incidents/<code>/notes": REPORTERS,
    "GET /api/incidents/<code>": ANY,
    "GET /api/incidents/<code>/history": ANY,
    "POST /api/incidents/<code>/actions": ANY,
    "POST /api/incidents/<code>/photos": PHOTOGRAPHERS,
    "GET /api/incidents/<code>/photos/<int:photo_id>": ANY,
    "GET /api/exports/<layer>": ANY,
    "GET /api/rates": CITY,
    "GET /api/departments": ANY,
    "POST /api/departments": "admin",
    # coverage
    "GET /api/coverage/report": READERS,
    "GET /api/coverage/layers/<name>": READERS,
    "POST /api/coverage/proposal": READERS,
    "POST /api/coverage/sites": READERS,
    "GET /api/coverage/sites/jobs/<int:job_id>": READERS,
    "POST /api/coverage/jobs": READERS,
    "GET /api/coverage/jobs/<int:job_id>": READERS,
    # Open311 GeoReport v2: any account or token reads; reporting needs one
    "GET /open311/v2/services.<fmt>": ANY,
    "GET /open311/v2/services/<code>.<fmt>": ANY,
    "GET /open311/v2/requests.<fmt>": ANY,
    "GET /open311/v2/requests/<code>.<fmt>": ANY,
    "POST /open311/v2/requests.<fmt>": ANY,
}

#: (route, caller) → outcome where it is not the one the roles give
EXCEPTIONS: dict[tuple[str, str], str] = {
    # a wrong name or password (the bodies are empty) is answered 401, whoever asks
    **{("POST /login", caller): "sign-in" for caller in CALLERS},
    # Open311 answers a report without a valid account or key 403, as GeoReport v2 has it
    **{("POST /open311/v2/requests.<fmt>", caller): "refused"
       for caller in ("anonymous", "wrong_token", "revoked_token")},
    # a department's handler reads its own cases (/api/incidents), not the city's layers or exports
    **{(route, "handler"): "refused"
       for route in ("GET /api/collections/<name>", "GET /api/collections/<name>/items",
                     "GET /api/collections/<name>/items/<code>", "GET /api/exports/<layer>")},
}


def expected(route: str, caller: str) -> str:
    if (route, caller) in EXCEPTIONS:
        return EXCEPTIONS[route, caller]
    allowed = ACCESS[route]
    if allowed == EVERYONE or caller in allowed.split():
        return "in"
    return "refused" if caller in ROLES else "sign-in"


def outcome(answer) -> str:
    if answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True):
        return "csrf"
    if answer.status_code == 401:
        return "sign-in"
    if answer.status_code == 403:
        return "refused"
    location = answer.headers.get("Location", "")
    if answer.status_code in (301, 302, 303) and urlsplit(location).path == "/login" and "next=" in location:
        return "sign-in"
    return "in"


def routes(app) -> list[tuple[str, object]]:
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((f"{method} {rule.rule}", rule))
    return found


def matrix_site(url: str, demo) -> dict:
    """The demo in the migrated database at ``url``, accounts of each role, a revoked token, a
    plan, and the values every route's URL is built from (scripts/bench_hardening.py uses it)."""
    write_demo(get_engine(url), demo)
    # every caller's empty sign-in counts against one (empty) name: the limits are
    # tests/test_sign_in_limits.py's, not the matrix's (nor the report limits)
    app = make_app(url, BASEMAP="none", LOGIN_LIMIT_PER_ACCOUNT="1000 per minute",
                   LOGIN_LIMIT_PER_ADDRESS="1000 per minute", REPORT_LIMIT_PER_ACCOUNT="100000 per minute",
                   REPORT_LIMIT_PER_ADDRESS="100000 per minute")
    secrets = make_accounts(app, demo)
    from geodata.accounts import find_user, list_tokens, revoke_token
    from geodata.departments import save_department
    from layers.incidents.loop import categories
    from tests.webhelpers import PASSWORD
    from webmap.auth import add_token, add_user

    # the 指挥中心 and a department's handler (whose department handles none of the demo's cases)
    save_department(get_engine(url), {"code": "MX", "name": "矩阵部门", "categories": ["E03-02"]},
                    categories(get_engine(url)), actor="test")
    with app.app_context():
        add_user("dispatcher", "dispatcher", PASSWORD)
        add_user("handler", "handler", PASSWORD, department="MX")

    with app.app_context():
        revoked = add_token("revoked-admin", "admin")
        spare = add_token("to-revoke", "viewer")  # what the revoke route is tried on
    engine = get_engine(url)
    revoke_token(engine, actor="test", name="revoked-admin")
    admin = app.test_client()
    sign_in(admin, "admin")
    headers = {"X-CSRFToken": csrf_token(admin.get("/plans").get_data(as_text=True))}
    street = demo.layers["streets"]["code"].iloc[0]
    plan = admin.post("/api/plans", json={"name": "矩阵", "street": street}, headers=headers)
    assert plan.status_code == 201, plan.get_data(as_text=True)
    scope = secrets["scope"]
    supervisor = app.test_client()
    sign_in(supervisor, "supervisor")
    case = supervisor.get("/api/incidents").json["incidents"][0]  # one of the supervisor's own
    del spare
    token_id = next(t["id"] for t in list_tokens(engine) if t["name"] == "to-revoke")
    values = {"plan_id": plan.json["plan_id"], "code": case["code"], "name": "communities",
              "layer": "units", "filename": "js/common.js", "fmt": "json", "z": 1, "x": 1, "y": 1,
              "job_id": 999999, "photo_id": 999999, "upload": "nothing", "key": "basemap",
              "user_id": find_user(engine, name="viewer").id, "token_id": token_id}
    special = {"GET /api/collections/<name>/items/<code>": {"code": scope},
               "POST /api/plans/<int:plan_id>/communities/<code>/name": {"code": scope},
               "GET /open311/v2/services/<code>.<fmt>": {"code": "nothing"}}
    return {"app": app, "revoked": revoked, "values": values, "special": special, "engine": engine}


@pytest.fixture(scope="module")
def site(tmp_path_factory, spatialite_template, small_demo):
    """One small demo database for the whole matrix (SpatiaLite: who may do what does not
    depend on the database)."""
    import shutil

    path = tmp_path_factory.mktemp("access") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    return matrix_site(f"sqlite:///{path}", small_demo)


def _client(site, caller: str):
    """A test client for ``caller`` and the headers it sends on every request."""
    app = site["app"]
    if caller in ROLES:
        return signed_in(app, caller)
    client = app.test_client()
    if caller == "anonymous":
        return client, {"X-CSRFToken": csrf_token(client.get("/login").get_data(as_text=True))}
    token = "made-up-token-0123456789" if caller == "wrong_token" else site["revoked"]
    return client, {"Authorization": f"Bearer {token}"}


def test_every_route_has_an_entry_and_every_entry_a_route(site):
    found = {route for route, _ in routes(site["app"])}
    assert sorted(found - ACCESS.keys()) == [], "routes without an entry in ACCESS: say who may call them"
    assert sorted(ACCESS.keys() - found) == [], "entries in ACCESS for routes that are gone"


def try_routes(site, caller: str) -> tuple[list[str], list[str]]:
    """Every route as ``caller``: the answers (route, status, outcome) and those that differ
    from the table."""
    client, headers = _client(site, caller)
    answers: list[str] = []
    wrong: list[str] = []
    # signing out last: it ends the session the other requests use
    for route, rule in sorted(routes(site["app"]), key=lambda r: r[0] == "POST /logout"):
        if route not in ACCESS:
            continue  # reported by the test above
        method = route.split()[0]
        url = rule.build({**site["values"], **site["special"].get(route, {})}, append_unknown=False)[1]
        kwargs = {"headers": headers}
        if method != "GET":
            kwargs["json"] = []  # never a valid body: allowed callers get a 4xx naming what is wrong
        answer = client.open(url, method=method, **kwargs)
        got, want = outcome(answer), expected(route, caller)
        answers.append(f"{route} as {caller}: {answer.status_code} ({got})")
        if got != want or answer.status_code >= 500:
            wrong.append(f"{route} as {caller}: {answer.status_code} ({got}), expected {want}")
    return answers, wrong


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_answers_each_caller_as_the_table_says(site, caller):
    answers, wrong = try_routes(site, caller)
    assert len(answers) == len(ACCESS)
    assert wrong == []


def test_state_changes_without_the_csrf_token_are_refused(site):
    """A signed-in browser's cookie alone changes nothing: every POST, PUT, PATCH and DELETE
    without the CSRF token is a 400 naming the token, and nothing is written."""
    client = site["app"].test_client()
    assert sign_in(client, "admin").status_code == 302
    engine = site["engine"]

    def counts():
        with engine.connect() as conn:
            return (conn.execute(select(func.count()).select_from(AuditLog)).scalar_one(),
                    conn.execute(select(func.count()).select_from(Plan)).scalar_one())

    before = counts()
    let_through = []
    for route, rule in routes(site["app"]):
        method = route.split()[0]
        if method == "GET" or route in ("POST /logout", "POST /login"):
            continue
        url = rule.build({**site["values"], **site["special"].get(route, {})}, append_unknown=False)[1]
        answer = client.open(url, method=method, json={"name": "csrf", "version": 1})
        if answer.status_code != 400 or "CSRF" not in answer.get_data(as_text=True):
            let_through.append(f"{route}: {answer.status_code}")
    assert let_through == []
    assert counts() == before
    # signing out needs the token too: a page elsewhere cannot sign a user out
    assert client.post("/logout").status_code == 400
    assert client.get("/map").status_code == 200


def test_a_token_needs_no_csrf_token_and_keeps_its_role(site, small_demo, tmp_path):
    """``Authorization: Bearer`` is a credential a page on another site cannot send, so a token's
    request needs no CSRF token — the layer upload takes a planner's token as it is — but the
    token's role still decides; a signed-in browser that adds a made-up token to skip the CSRF
    check is not let in on its cookie."""
    from webmap.auth import add_token

    app = site["app"]
    app.config["UPLOAD_FOLDER"] = str(tmp_path / "uploads")
    with app.app_context():
        tokens = {role: add_token(f"csrf-{role}", role) for role in ("planner", "viewer", "admin")}
    facilities = small_demo.layers["facilities"].iloc[:3]
    data = facilities.to_json().encode()

    def upload(client, token):
        return client.post("/api/layers/facilities/preview", content_type="multipart/form-data",
                           headers={"Authorization": f"Bearer {token}"},
                           data={"file": (io.BytesIO(data), "f.geojson")})

    client = app.test_client()
    answer = upload(client, tokens["planner"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    upload_id = answer.json["upload"]
    assert answer.json["features"] == 3
    gone = client.delete(f"/api/layers/uploads/{upload_id}",
                         headers={"Authorization": f"Bearer {tokens['planner']}"})
    assert gone.status_code == 200 and gone.json == {"deleted": upload_id}
    refused = upload(client, tokens["viewer"])
    assert refused.status_code == 403 and "viewer" in refused.json["detail"]
    # tokens never administer, whatever their role: a 403 that says so, not a CSRF 400
    admin = client.post("/api/admin/users", json={"name": "x", "role": "viewer", "password": "y" * 12},
                        headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert admin.status_code == 403 and "token" in admin.get_data(as_text=True)

    browser = app.test_client()
    assert sign_in(browser, "planner").status_code == 302
    sneaky = upload(browser, "made-up-token-0123456789")
    assert sneaky.status_code == 401
    no_csrf = browser.post("/api/layers/facilities/preview", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(data), "f.geojson")})
    assert no_csrf.status_code == 400 and "CSRF" in no_csrf.get_data(as_text=True)
    assert not any((tmp_path / "uploads").iterdir())
