"""Departments and who does what in the loop (GB/T 30428): a 监督员 reports and verifies, the
指挥中心 files, dispatches to a 处置部门 and chases (督办), the department's handler handles with
an after-photo, a 网格长 evaluates — through the API, on SpatiaLite and PostGIS. And the
refusals: a department that does not handle the category, a handler reaching for another
department's case, verifying one's own handling, handling without the photo the category needs,
chasing a case not yet due."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from geodata import incident_rows
from geodata.accounts import find_user
from geodata.models import Department, IncidentPhoto, IncidentStep
from layers.incidents import loop as incidents
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.images import JPEG
from tests.webhelpers import PASSWORD, csrf_token, make_accounts, sign_in
from webmap.auth import add_user

NO_CASE = "20990101-999999"


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    """The small demo with departments made through the API and one account of each kind."""
    write_demo(engine, small_demo)
    app = make_app(db_url, BASEMAP="none", PHOTO_DIR=str(tmp_path / "photos"))
    secrets = make_accounts(app, small_demo)  # supervisor: the 网格长 of the first community
    admin = client_of(app, "admin")
    for body in (
        {"code": "HW", "name": "区环境卫生管理站", "categories": ["E01-01", "E01-02"],
         "default_for": ["E01-01"], "contact": "027-8888 0102"},
        {"code": "JD", "name": "街道办事处", "categories": ["E01-01", "E04-01"]},
        {"code": "SZ", "name": "区市政工程管理处", "categories": ["C01-01", "E05-01"],
         "limits": {"E05-01": 1}},
    ):
        answer = admin.post("/api/departments", json=body)
        assert answer.status_code == 201, answer.get_data(as_text=True)
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    with app.app_context():
        add_user("inspector", "supervisor", PASSWORD, mine["code"].iloc[0])  # 监督员 of one cell
        add_user("dispatcher", "dispatcher", PASSWORD)  # 指挥中心
        add_user("hw", "handler", PASSWORD, department="HW")
        add_user("sz", "handler", PASSWORD, department="SZ")
    return {"app": app, "engine": engine, "here": mine.iloc[0].geometry.representative_point(), **secrets}


class Caller:
    """A signed-in browser: JSON and form posts carry the CSRF token."""

    def __init__(self, app, name: str):
        self.client = app.test_client()
        assert sign_in(self.client, name).status_code == 302
        self.headers = {"X-CSRFToken": csrf_token(self.client.get("/login").get_data(as_text=True))}

    def get(self, url):
        return self.client.get(url)

    def post(self, url, **kwargs):
        return self.client.post(url, headers=self.headers, **kwargs)

    def put(self, url, **kwargs):
        return self.client.put(url, headers=self.headers, **kwargs)


def client_of(app, name: str) -> Caller:
    return Caller(app, name)


def act(caller: Caller, code: str, action: str, **body):
    if "version" in body:
        version = body.pop("version")
    else:
        version = caller.get(f"/api/incidents/{code}").json["version"]
    return caller.post(f"/api/incidents/{code}/actions", json={"action": action, "version": version, **body})


def act_with_photo(caller: Caller, code: str, action: str, version: int, note: str):
    return caller.post(f"/api/incidents/{code}/actions", content_type="multipart/form-data",
                       data={"action": action, "version": str(version), "note": note,
                             "photo": (io.BytesIO(JPEG), "after.jpg")})


def report(site, caller: Caller, category: str = "E01-01") -> str:
    here = site["here"]
    answer = caller.post("/api/incidents", content_type="multipart/form-data",
                         data={"lon": str(here.x), "lat": str(here.y), "category": category,
                               "description": "垃圾堆在路口", "photo": (io.BytesIO(JPEG), "before.jpg")})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.json["code"]


def counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(IncidentStep)).scalar_one(),
                conn.execute(select(func.count()).select_from(IncidentPhoto)).scalar_one())


# --- the loop with four kinds of account -------------------------------------------------------


def test_the_whole_loop_with_separate_accounts(site):
    engine = site["engine"]
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw, sz = client_of(site["app"], "hw"), client_of(site["app"], "sz")
    leader, admin = client_of(site["app"], "supervisor"), client_of(site["app"], "admin")
    assert admin.put("/api/admin/settings/incident_after_photo",
                     json={"value": ["E01-01", "E03-02"]}).status_code == 200
    code = report(site, inspector)  # 监督员 reports, with a before-photo
    assert hw.get(f"/api/incidents/{code}").status_code == 404  # not the department's yet
    assert act(centre, code, "file").status_code == 200  # 受理员 files
    offered = centre.get(f"/api/incidents/{code}").json
    assert [d["code"] for d in offered["department_choices"]] == ["HW", "JD"]  # the default first
    # a department that does not handle the category, one that does not exist: refused, named
    before = counts(engine)
    wrong = act(centre, code, "dispatch", department="SZ")
    assert wrong.status_code == 400 and "区市政工程管理处" in wrong.json["detail"] \
        and "SZ" in wrong.json["detail"] and "HW" in wrong.json["detail"]
    assert act(centre, code, "dispatch", department="XX").status_code == 400
    assert counts(engine) == before and incident_rows.get_incident(engine, code)["status"] == "filed"
    sent = act(centre, code, "dispatch", department="HW", note="请环卫站处置")
    assert sent.status_code == 200 and sent.json["department_code"] == "HW"
    assert sent.json["department_name"] == "区环境卫生管理站"
    incident = incident_rows.get_incident(engine, code)
    # the handler of another department: as if the case did not exist
    other = act(sz, code, "handle", version=incident["version"])
    nothing = act(sz, NO_CASE, "handle", version=incident["version"])
    assert other.status_code == 404 == nothing.status_code
    assert other.get_data(as_text=True).replace(code, NO_CASE) == nothing.get_data(as_text=True)
    assert sz.get(f"/api/incidents/{code}").status_code == 404
    assert code not in sz.get("/api/incidents").get_data(as_text=True)
    assert code in [c["code"] for c in hw.get("/api/incidents").json["incidents"]]
    # the category needs an after-photo: handling without one is refused, nothing written
    before = counts(engine)
    bare = act(hw, code, "handle", note="已清理")
    assert bare.status_code == 400 and "photo" in bare.json["detail"]
    assert counts(engine) == before and incident_rows.get_incident(engine, code)["status"] == "dispatched"
    done = act_with_photo(hw, code, "handle", incident["version"], "已清理完毕")
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.json["status"] == "handled" and done.json["handler"] == "hw"
    assert "close" not in [a["action"] for a in done.json["actions"]]  # a handler does not verify
    assert act(hw, code, "close").status_code == 403
    assert act(inspector, code, "close", note="现场核查已清理").status_code == 200  # the 监督员 verifies
    assert "evaluate" not in [a["action"] for a in inspector.get(f"/api/incidents/{code}").json["actions"]]
    evaluated = act(leader, code, "evaluate", evaluation="basic")  # the 网格长 evaluates
    assert evaluated.status_code == 200 and evaluated.json["evaluation"] == "basic"
    case = leader.get(f"/api/incidents/{code}").json
    steps = [(s["step"], s["actor"]) for s in case["steps"]]
    assert steps == [("reported", "inspector"), ("filed", "dispatcher"), ("dispatched", "dispatcher"),
                     ("handled", "hw"), ("closed", "inspector"), ("evaluated", "supervisor")]
    by_step = {s["step"]: s for s in case["steps"]}
    assert by_step["evaluated"]["detail_label"] == "fairly satisfied"  # the evaluation in the history
    assert by_step["dispatched"]["detail_label"] == "区环境卫生管理站"
    # every photo belongs to a step: the before-photo to the report, the after-photo to the handling
    photos = {p["phase"]: p for p in case["photos"]}
    assert set(photos) == {"before", "after"}
    assert photos["before"]["step_id"] == by_step["reported"]["id"]
    assert photos["after"]["step_id"] == by_step["handled"]["id"] and photos["after"]["uploaded_by"] == "hw"
    assert hw.get(photos["after"]["url"]).status_code == 200
    # Open311: the agency responsible is the department
    listed = admin.get(f"/open311/v2/requests/{code}.json").json
    assert listed[0]["agency_responsible"] == "区环境卫生管理站"


def test_a_department_sends_a_case_back_and_the_centre_dispatches_it_elsewhere(site):
    """退回 and 改派: HW does not handle this one; it sends it back with a reason, the 指挥中心
    dispatches it to JD (not back to HW while JD has not refused it), JD handles it; the history
    shows both dispatches and the sending back, naming the departments."""
    engine = site["engine"]
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw, sz = client_of(site["app"], "hw"), client_of(site["app"], "sz")
    code = report(site, inspector)
    act(centre, code, "file")
    sent = act(centre, code, "dispatch")  # the default: HW
    assert sent.json["department_code"] == "HW" and sent.json["due_at"]
    assert "send_back" in [a["action"] for a in hw.get(f"/api/incidents/{code}").json["actions"]]
    # refused, nothing written: without a reason; by another department (not theirs: 404); by
    # the 指挥中心 or a 网格员 (a department's step); on a version that moved
    before = counts(engine)
    bare = act(hw, code, "send_back")
    assert bare.status_code == 400 and "note" in bare.json["detail"]
    version = sent.json["version"]
    assert act(sz, code, "send_back", note="不归我们", version=version).status_code == 404
    assert act(centre, code, "send_back", note="x").status_code == 403
    assert act(inspector, code, "send_back", note="x").status_code == 403
    assert act(hw, code, "send_back", note="x", version=1).status_code == 409
    assert counts(engine) == before and incident_rows.get_incident(engine, code)["department_code"] == "HW"
    back = act(hw, code, "send_back", note="该处为街道管辖，非环卫站职责")
    assert back.status_code == 200, back.get_data(as_text=True)
    assert back.json["status"] == "filed" and back.json["department_code"] is None
    assert back.json["due_at"] is None and back.json["hours_left"] is None  # no clock until dispatched again
    assert hw.get(f"/api/incidents/{code}").status_code == 404  # no longer the department's
    # the 指挥中心 sees it again with HW left out of the choices; HW itself is refused, named
    offered = centre.get(f"/api/incidents/{code}").json
    assert "dispatch" in [a["action"] for a in offered["actions"]]
    assert [d["code"] for d in offered["department_choices"]] == ["JD"]
    again = act(centre, code, "dispatch", department="HW")
    assert again.status_code == 400 and "sent this case back" in again.json["detail"]
    assert "JD" in again.json["detail"] and "区环境卫生管理站" in again.json["detail"]
    redone = act(centre, code, "dispatch", note="改派街道")  # the default now: JD
    assert redone.status_code == 200 and redone.json["department_code"] == "JD" and redone.json["due_at"]
    case = centre.get(f"/api/incidents/{code}").json
    steps = [(s["step"], s["actor"], s["detail_label"]) for s in case["steps"]]
    assert steps == [("reported", "inspector", None), ("filed", "dispatcher", None),
                     ("dispatched", "dispatcher", "区环境卫生管理站"),
                     ("sent_back", "hw", "区环境卫生管理站"),
                     ("dispatched", "dispatcher", "街道办事处")]
    assert case["steps"][3]["note"] == "该处为街道管辖，非环卫站职责"
    assert case["steps"][3]["label"] == "was sent back to the command centre"
    # a case that is not dispatched cannot be sent back
    admin = client_of(site["app"], "admin")
    assert act(admin, report(site, inspector), "send_back", note="x").status_code == 409
    # the rates by department: HW had it and sent it back; JD has it and handles it in time
    # a case with a department is its handler's (or an administrator's) to handle, not a 网格员's
    supervisor = client_of(site["app"], "supervisor")
    refused = act(supervisor, code, "handle", note="已处理")
    assert refused.status_code == 403 and "JD" in refused.json["detail"]
    assert "handle" not in [a["action"] for a in supervisor.get(f"/api/incidents/{code}").json["actions"]]
    assert act(admin, code, "handle", note="已处理").status_code == 200
    today = datetime.now().date()
    period = f"from={today - timedelta(days=7)}&to={today}"
    answer = centre.get(f"/api/rates?by=department&{period}")
    assert answer.status_code == 200 and answer.json["by"] == "department"
    rows = {r["code"]: r for r in answer.json["rows"]}
    assert list(rows) == ["HW", "JD", "SZ"] and rows["HW"]["name"] == "区环境卫生管理站"
    pick = ("dispatched", "handled", "handled_on_time", "overdue", "returned", "supervised")
    assert [rows["HW"][k] for k in pick] == [1, 0, 0, 0, 1, 0]
    assert [rows["JD"][k] for k in pick] == [1, 1, 1, 0, 0, 0] and rows["JD"]["on_time_rate"] == 1.0
    assert rows["SZ"]["dispatched"] == 0 and rows["SZ"]["on_time_rate"] is None
    assert answer.json["total"]["dispatched"] == 2 and answer.json["total"]["returned"] == 1
    assert answer.json["labels"]["returned"] == "sent back"
    csv = centre.get(f"/api/rates?by=department&{period}&format=csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0].startswith("code,department,cases dispatched") and "sent back" in lines[0]
    assert lines[1].startswith("HW,区环境卫生管理站,1,0,0,0,1,0")
    assert lines[-1].startswith(",Total,2,1,1,0,1,0")
    wrong = centre.get(f"/api/rates?by=departments&{period}")
    assert wrong.status_code == 400 and "department" in wrong.json["detail"]
    # a department reads its own cases, not the city's rates
    assert hw.get(f"/api/rates?by=department&{period}").status_code == 403


def test_nobody_verifies_their_own_handling_while_separation_is_on(site):
    engine = site["engine"]
    # an administrator (who may handle a department's case) verifies no case they handled
    leader, inspector = client_of(site["app"], "admin"), client_of(site["app"], "inspector")
    admin = leader
    code = report(site, inspector)
    for action in ("file", "dispatch", "handle"):  # an administrator may still take these
        assert act(leader, code, action).status_code == 200
    case = leader.get(f"/api/incidents/{code}").json
    assert not {"close", "return"} & {a["action"] for a in case["actions"]}
    before = counts(engine)
    own = act(leader, code, "close", note="我自己核查")
    assert own.status_code == 403 and "yourself" in own.json["detail"] and code in own.json["detail"]
    assert act(leader, code, "return", note="返工").status_code == 403
    assert counts(engine) == before and incident_rows.get_incident(engine, code)["status"] == "handled"
    # the separation is a setting: off, a small town's one administrator closes their own
    assert admin.put("/api/admin/settings/incident_separation", json={"value": False}).status_code == 200
    assert act(leader, code, "close").status_code == 200


def test_separation_keeps_filing_cancelling_and_dispatching_with_the_centre(site):
    """岗位分离 (GB/T 30428): the 监督员 reports and verifies, the 指挥中心 files, cancels and
    dispatches; neither the 监督员 nor the 网格长 is offered those steps or may take them (403
    naming the step and the role in words, nothing written) — and with the setting off, they may."""
    engine = site["engine"]
    inspector, leader = client_of(site["app"], "inspector"), client_of(site["app"], "supervisor")
    centre, admin = client_of(site["app"], "dispatcher"), client_of(site["app"], "admin")
    code = report(site, inspector)

    def offered(caller):
        return {a["action"] for a in caller.get(f"/api/incidents/{code}").json["actions"]}

    for caller, word in ((inspector, "grid inspector"), (leader, "grid leader")):
        assert not {"file", "cancel"} & offered(caller)
        before = counts(engine)
        for action, step in (("file", "File the case"), ("cancel", "Cancel the case")):
            refused = act(caller, code, action, note="自己立案")
            assert refused.status_code == 403, refused.get_data(as_text=True)
            assert f"a {word} may not take the step “{step}”" in refused.json["detail"]
            assert "separation of duties" in refused.json["detail"]
        assert counts(engine) == before and incident_rows.get_incident(engine, code)["status"] == "reported"
    assert {"file", "cancel"} <= offered(centre)
    assert act(centre, code, "file").status_code == 200
    for caller in (inspector, leader):
        assert not {"dispatch", "cancel"} & offered(caller)
        before = counts(engine)
        assert act(caller, code, "dispatch").status_code == 403
        assert act(caller, code, "cancel", note="作废").status_code == 403
        assert counts(engine) == before and incident_rows.get_incident(engine, code)["status"] == "filed"
    assert act(centre, code, "dispatch").status_code == 200
    # the history names each by their own role: the 监督员 is not the 网格长
    steps = {s["step"]: s["actor_label"] for s in leader.get(f"/api/incidents/{code}").json["steps"]}
    assert steps["reported"] == "inspector (grid inspector)"
    assert steps["filed"] == "dispatcher (command centre (dispatcher))"
    # off (one office takes every step): the 监督员 files and dispatches their own report
    assert admin.put("/api/admin/settings/incident_separation", json={"value": False}).status_code == 200
    other = report(site, inspector)
    mine = inspector.get(f"/api/incidents/{other}").json
    assert {"file", "cancel"} <= {a["action"] for a in mine["actions"]}
    assert act(inspector, other, "file").status_code == 200
    assert act(inspector, other, "dispatch").status_code == 200


def test_refusals_name_the_role_and_the_step_in_words(site):
    """A 403 says who may not do what in words (处置部门人员, 核查结案), never a role or action key."""
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw = client_of(site["app"], "hw")
    code = report(site, inspector)
    act(centre, code, "file")
    act(centre, code, "dispatch")
    assert act_with_photo(hw, code, "handle", incident_rows.get_incident(site["engine"], code)["version"],
                          "已清理").status_code == 200
    closing = act(hw, code, "close", note="x")
    assert closing.status_code == 403
    assert closing.json["detail"] == "a department handler may not take the step “Check and close”"
    settings = hw.get("/api/admin/users")
    assert settings.status_code == 403 and settings.json["detail"] == "a department handler may not do this"


def test_a_handlers_top_bar_counts_what_needs_them(site):
    """A department's handler sees in the top bar the cases newly dispatched to them (and their
    returned and overdue ones), like the grid and the 指挥中心; the list opens on them."""
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw = client_of(site["app"], "hw")
    assert 'id="attention"' not in hw.get("/cases").get_data(as_text=True)  # nothing yet
    code = report(site, inspector)
    act(centre, code, "file")
    act(centre, code, "dispatch", department="HW")
    page = hw.get("/cases").get_data(as_text=True)
    assert 'id="attention"' in page and 'data-kind="new" data-n="1"' in page
    assert "newly dispatched 1" in page  # new to a department: dispatched to it, not reported
    assert 'data-kind="overdue"' not in page
    listed = hw.get("/api/incidents?status=needs").json
    assert [c["code"] for c in listed["incidents"]] == [code]
    # the other department has nothing to do
    assert 'id="attention"' not in client_of(site["app"], "sz").get("/cases").get_data(as_text=True)


def test_a_handlers_case_map_shows_the_cases_cell(site):
    """The case page's map draws the case's cell for every role that may see the case: a
    department's handler gets the cell of their case (and no other cell); another department
    asking with that case gets the same 404 as for no case."""
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw, sz = client_of(site["app"], "hw"), client_of(site["app"], "sz")
    code = report(site, inspector)
    act(centre, code, "file")
    act(centre, code, "dispatch", department="HW")
    cell = incident_rows.get_incident(site["engine"], code)["grid_code"]
    here = site["here"]
    bbox = f"{here.x - 0.01:.6f},{here.y - 0.01:.6f},{here.x + 0.01:.6f},{here.y + 0.01:.6f}"
    plain = hw.get(f"/api/incidents/basemap?bbox={bbox}")
    assert plain.status_code == 200 and plain.json["cells"]["features"] == []  # not the city's grid
    mine = hw.get(f"/api/incidents/basemap?bbox={bbox}&case={code}")
    assert mine.status_code == 200
    assert [f["properties"]["code"] for f in mine.json["cells"]["features"]] == [cell]
    seen = centre.get(f"/api/incidents/basemap?bbox={bbox}&case={code}").json["cells"]["features"]
    assert cell in [f["properties"]["code"] for f in seen]  # the 指挥中心: every cell, as before
    assert sz.get(f"/api/incidents/basemap?bbox={bbox}&case={code}").status_code == 404
    assert sz.get(f"/api/incidents/basemap?bbox={bbox}&case={NO_CASE}").status_code == 404


# --- 督办 ---------------------------------------------------------------------------------------


def test_chasing_an_overdue_case(site):
    engine = site["engine"]
    inspector, centre = client_of(site["app"], "inspector"), client_of(site["app"], "dispatcher")
    hw, leader = client_of(site["app"], "hw"), client_of(site["app"], "supervisor")
    late, fresh = report(site, inspector), report(site, inspector)
    dispatcher = find_user(engine, name="dispatcher")
    long_ago = datetime.now() - timedelta(days=14)  # E01-01: 4 working hours; two weeks is red
    for code, when in ((late, long_ago), (fresh, datetime.now())):
        incidents.act(engine, dispatcher, code, {"action": "file", "version": 1}, now=when)
        incidents.act(engine, dispatcher, code, {"action": "dispatch", "version": 2, "department": "HW"},
                      now=when)
    listed = {c["code"]: c for c in centre.get("/api/incidents?status=open").json["incidents"]}
    assert "supervise" in [a["action"] for a in listed[late]["actions"]]
    assert listed[late]["due_level"] == "red"
    assert "supervise" not in [a["action"] for a in listed[fresh]["actions"]]
    assert act(centre, late, "supervise").status_code == 400  # a 督办 says why: a note
    assert act(inspector, late, "supervise", note="快").status_code == 403  # a cell's 网格员 does not chase
    assert act(hw, late, "supervise", note="自己催自己").status_code == 403
    not_due = act(centre, fresh, "supervise", note="催办")
    assert not_due.status_code == 400 and "not due" in not_due.json["detail"]
    chased = act(centre, late, "supervise", note="请今日处置")
    assert chased.status_code == 200, chased.get_data(as_text=True)
    assert chased.json["status"] == "dispatched" and chased.json["supervise_count"] == 1
    assert chased.json["supervise_level"] == "red"
    again = act(leader, late, "supervise", note="网格长再次督办")  # a 网格长 chases too
    assert again.status_code == 200 and again.json["supervise_count"] == 2
    history = leader.get(f"/api/incidents/{late}").json["steps"]
    assert [s["step"] for s in history].count("supervised") == 2 and history[-1]["note"] == "网格长再次督办"
    assert history[-1]["detail_label"] == "red warning"
    # the department sees it first
    theirs = hw.get("/api/incidents").json["incidents"]
    assert theirs[0]["code"] == late
    # the rates count it (dispatched two weeks ago, in the period)
    today = datetime.now().date()
    rows = leader.get(f"/api/rates?by=community&from={today - timedelta(days=30)}&to={today}").json["rows"]
    assert sum(r["supervised"] for r in rows) == 1
    # by department: both dispatched to HW, the late one open past its deadline, chased twice
    rows = {r["code"]: r for r in centre.get(f"/api/rates?by=department&from={today - timedelta(days=30)}"
                                              f"&to={today}").json["rows"]}
    assert (rows["HW"]["dispatched"], rows["HW"]["overdue"], rows["HW"]["supervised"]) == (2, 1, 2)
    assert rows["HW"]["below_target"] == ["on_time_rate"] and rows["JD"]["dispatched"] == 0


def test_a_department_time_limit_sets_the_due_time(site):
    engine = site["engine"]
    dispatcher = find_user(engine, name="dispatcher")
    inspector = client_of(site["app"], "inspector")
    code = report(site, inspector, category="E05-01")  # 路面积水: 2 h; the SZ department's own: 1 h
    monday = datetime(2026, 11, 2, 9, 0)
    incidents.act(engine, dispatcher, code, {"action": "file", "version": 1}, now=monday)
    case = incidents.act(engine, dispatcher, code, {"action": "dispatch", "version": 2}, now=monday)
    assert case["department_code"] == "SZ"  # the only department handling it: the default
    assert case["due_at"] == monday + timedelta(hours=1)


# --- departments and accounts ------------------------------------------------------------------


def test_departments_api_refusals(site):
    engine = site["engine"]
    admin, centre = client_of(site["app"], "admin"), client_of(site["app"], "dispatcher")
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(Department)).scalar_one()
    for body, words in (
        ({"code": "ZZ", "name": "水务", "categories": ["X99"]}, "X99"),
        ({"code": "ZZ", "name": "水务", "categories": []}, "categories"),
        ({"code": "ZZ", "name": "水务", "categories": ["E05-01"], "limits": {"E01-01": 2}}, "E01-01"),
        ({"code": "ZZ", "name": "水务", "categories": ["E05-01"], "limits": {"E05-01": -1}}, "E05-01"),
        ({"code": "ZZ", "name": "水务", "categories": ["E05-01"], "default_for": ["E01-01"]}, "E01-01"),
        ({"code": "Z Z", "name": "水务", "categories": ["E05-01"]}, "code"),
        ({"code": "ZZ", "name": "街道办事处", "categories": ["E05-01"]}, "JD"),  # a name taken
        ({"code": "ZZ", "categories": ["E05-01"]}, "name"),
    ):
        answer = admin.post("/api/departments", json=body)
        assert answer.status_code == 400 and words in answer.json["detail"], (body, answer.json)
    assert centre.post("/api/departments", json={"name": "水务", "categories": ["E05-01"]}).status_code == 403
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Department)).scalar_one() == before
    listed = centre.get("/api/departments?category=E01-01").json["departments"]
    assert [d["code"] for d in listed] == ["HW", "JD"]
    # accounts: a handler needs a known department, and only a handler has one
    for body, words in (({"name": "h1", "role": "handler"}, "department"),
                        ({"name": "h1", "role": "handler", "department_code": "XX"}, "XX"),
                        ({"name": "h1", "role": "viewer", "department_code": "HW"}, "handler")):
        answer = admin.post("/api/admin/users", json={**body, "password": "y" * 12})
        assert answer.status_code == 400 and words in answer.json["detail"], answer.json
    assert find_user(engine, name="h1") is None
    made = admin.post("/api/admin/users", json={"name": "h1", "role": "handler", "department_code": "JD",
                                                "password": "y" * 12})
    assert made.status_code == 201 and made.json["department_code"] == "JD"


def test_departments_command(site):
    runner = site["app"].test_cli_runner()
    result = runner.invoke(args=["departments", "add", "区水务局", "--categories", "E05-01,C01-01",
                                 "--limit", "E05-01=1.5", "--contact", "027-8888 0106"])
    assert result.exit_code == 0, result.output
    assert "区水务局" in result.output and "E05-01" in result.output
    stored = [d for d in incidents.depts.list_departments(site["engine"]) if d["name"] == "区水务局"]
    assert stored and stored[0]["limits"] == {"E05-01": 1.5}
    bad = runner.invoke(args=["departments", "add", "区电力局", "--categories", "P01"])
    assert bad.exit_code == 1 and "P01" in bad.output and len(bad.output.strip().splitlines()) == 1
    bad = runner.invoke(args=["departments", "add", "区电力局", "--categories", "E05-01",
                              "--limit", "E05-01"])
    assert bad.exit_code == 1 and "CATEGORY=HOURS" in bad.output
    assert "区电力局" not in runner.invoke(args=["departments", "list"]).output


def test_a_reporter_adds_a_note_to_an_open_case_with_no_step_of_theirs(site):
    """补充说明: the 监督员 who reported a case has no step on it once it is with the centre, yet
    may add what they saw; a department's handler and a closed case may not."""
    inspector, centre, hw = (client_of(site["app"], n) for n in ("inspector", "dispatcher", "hw"))
    code = report(site, inspector)
    assert act(centre, code, "file").status_code == 200
    seen = inspector.get(f"/api/incidents/{code}").json
    assert seen["actions"] == [] and seen["may_note"] is True
    added = inspector.post(f"/api/incidents/{code}/notes", json={"note": "垃圾又多了两袋"})
    assert added.status_code == 200, added.json
    assert [s["note"] for s in added.json["steps"] if s["step"] == "noted"] == ["垃圾又多了两袋"]
    assert added.json["version"] == seen["version"]  # a note takes no step
    assert act(centre, code, "dispatch", department="HW").status_code == 200
    assert hw.get(f"/api/incidents/{code}").json["may_note"] is False  # a handler acts, or sends back
    assert centre.get(f"/api/incidents/{code}").json["may_note"] is True
