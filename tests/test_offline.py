"""Reports and steps sent again from a phone whose signal came back: a ``client_id`` the phone
made is stored once (201 the first time, 200 with the same case after), the same id with another
body or from another account is refused and names no other case, a step on a version that moved
meanwhile is a 409 with the case as it is now — on SpatiaLite and PostGIS."""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import demo_site, make_app
from tests.images import JPEG
from tests.webhelpers import make_accounts, snapshot


@pytest.fixture
def site(db_url, engine, small_demo, tmp_path):
    app, secrets = demo_site(db_url, small_demo, BASEMAP="none", PHOTO_DIR=str(tmp_path / "photos"))
    with app.app_context():
        from webmap.auth import add_token

        # a second supervisor of the same community (another phone, another account)
        secrets["colleague_token"] = add_token("grid-app-2", "supervisor", secrets["scope"])
        # the 指挥中心's two desks: with separation of duties on, they file, dispatch and cancel
        secrets["centre_token"] = add_token("centre-1", "dispatcher")
        secrets["centre2_token"] = add_token("centre-2", "dispatcher")
    cells = small_demo.layers["grid_cells"]
    mine = cells[cells["code"].str.startswith(secrets["scope"])]
    here = mine.iloc[0].geometry.representative_point()
    return {"app": app, "engine": engine, "url": db_url, "here": here, "photos": tmp_path / "photos",
            **secrets}


def bearer(site, which="supervisor_token"):
    return {"Authorization": f"Bearer {site[which]}"}


def body(site, **extra):
    return {"lon": site["here"].x, "lat": site["here"].y, "category": "E01-01", "description": "暴露垃圾",
            **extra}


def stored_with(engine, client_id: str) -> tuple[int, int]:
    """(cases, steps) stored with ``client_id``."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {table} WHERE client_id = :c"),
                                  {"c": client_id}).scalar_one() for table in ("incidents", "incident_steps"))


def total(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(text("SELECT count(*) FROM incidents")).scalar_one(),
                conn.execute(text("SELECT count(*) FROM incident_steps")).scalar_one())


def test_a_report_sent_twice_is_stored_once(site):
    client = site["app"].test_client()
    client_id = str(uuid.uuid4())
    before = total(site["engine"])
    first = client.post("/api/incidents", json=body(site, client_id=client_id), headers=bearer(site))
    assert first.status_code == 201, first.json
    again = client.post("/api/incidents", json=body(site, client_id=client_id), headers=bearer(site))
    assert again.status_code == 200, again.json
    assert again.json["code"] == first.json["code"] and again.json["replayed"] is True
    # one case-number format for every new case (the demo's too): YYYYMMDD-NNNN
    assert re.fullmatch(r"\d{8}-\d{4,}", first.json["code"])
    assert first.json["code"][:8] == first.json["reported_at"][:10].replace("-", "")
    assert stored_with(site["engine"], client_id) == (1, 0)
    assert total(site["engine"]) == (before[0] + 1, before[1] + 1)  # one case, one "reported" step
    # a number sent as text (a form) is the same report
    form = {k: str(v) for k, v in body(site, client_id=client_id).items()}
    as_form = client.post("/api/incidents", data=form, headers=bearer(site))
    assert as_form.status_code == 200 and as_form.json["code"] == first.json["code"]
    # without a client_id every report is a new case, as before
    plain = [client.post("/api/incidents", json=body(site), headers=bearer(site)) for _ in range(2)]
    assert [p.status_code for p in plain] == [201, 201] and plain[0].json["code"] != plain[1].json["code"]


def test_a_report_with_a_photo_sent_twice_keeps_one_photo(site):
    client = site["app"].test_client()
    client_id = str(uuid.uuid4())

    def send():
        data = {k: str(v) for k, v in body(site, client_id=client_id).items()}
        data["photo"] = (io.BytesIO(JPEG), "scene.jpg")
        return client.post("/api/incidents", data=data, headers=bearer(site),
                           content_type="multipart/form-data")

    first, again = send(), send()
    assert (first.status_code, again.status_code) == (201, 200)
    assert len(first.json["photos"]) == 1 and again.json["photos"] == []
    case = client.get(f"/api/incidents/{first.json['code']}", headers=bearer(site)).json
    assert len(case["photos"]) == 1 and len(list(site["photos"].iterdir())) == 1


def test_a_photo_lost_with_the_first_answer_arrives_with_the_replay(site):
    """The case was stored but its photo was not (stored after it, it failed alone): the phone,
    told nothing, sends the report again; the photo is added then, and only once."""
    client = site["app"].test_client()
    client_id = str(uuid.uuid4())
    first = client.post("/api/incidents", json=body(site, client_id=client_id), headers=bearer(site))
    assert first.status_code == 201 and first.json["photos"] == []

    def send():
        data = {k: str(v) for k, v in body(site, client_id=client_id).items()}
        data["photo"] = (io.BytesIO(JPEG), "scene.jpg")
        return client.post("/api/incidents", data=data, headers=bearer(site),
                           content_type="multipart/form-data")

    again, third = send(), send()
    assert (again.status_code, third.status_code) == (200, 200)
    assert len(again.json["photos"]) == 1 and third.json["photos"] == []
    case = client.get(f"/api/incidents/{first.json['code']}", headers=bearer(site)).json
    assert len(case["photos"]) == 1 and len(list(site["photos"].iterdir())) == 1


def test_the_same_client_id_with_another_report_is_refused(site):
    client = site["app"].test_client()
    client_id = str(uuid.uuid4())
    first = client.post("/api/incidents", json=body(site, client_id=client_id), headers=bearer(site))
    assert first.status_code == 201
    before = snapshot(site["url"], leave_out=("audit_log", "rate_limits"))
    other = client.post("/api/incidents", json=body(site, client_id=client_id, description="另一件事"),
                        headers=bearer(site))
    assert other.status_code == 409 and other.mimetype == "application/problem+json"
    assert other.json["code"] == "ClientIdReused" and client_id in other.json["detail"]
    assert "another report" in other.json["detail"]
    assert snapshot(site["url"], leave_out=("audit_log", "rate_limits")) == before


def test_another_accounts_client_id_is_refused_without_naming_its_case(site):
    client = site["app"].test_client()
    client_id = str(uuid.uuid4())
    first = client.post("/api/incidents", json=body(site, client_id=client_id, description="秘密的描述"),
                        headers=bearer(site))
    assert first.status_code == 201
    before = snapshot(site["url"], leave_out=("audit_log", "rate_limits"))
    for sent in (body(site, client_id=client_id, description="秘密的描述"), body(site, client_id=client_id)):
        theirs = client.post("/api/incidents", json=sent, headers=bearer(site, "colleague_token"))
        assert theirs.status_code == 409 and theirs.json["code"] == "ClientIdReused"
        assert "another account" in theirs.json["detail"]
        answer = theirs.get_data(as_text=True)
        assert first.json["code"] not in answer and "秘密" not in answer and "current" not in theirs.json
    assert snapshot(site["url"], leave_out=("audit_log", "rate_limits")) == before


@pytest.mark.parametrize("client_id", [["a-list-of-ids"], 12345678, "short", "x" * 65, "has space 1234"])
def test_a_malformed_client_id_is_refused(site, client_id):
    client = site["app"].test_client()
    before = total(site["engine"])
    answer = client.post("/api/incidents", json=body(site, client_id=client_id), headers=bearer(site))
    assert answer.status_code == 400 and "client_id must be 8 to 64" in answer.json["detail"]
    assert total(site["engine"]) == before


def test_a_step_sent_twice_is_taken_once(site):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    client_id = str(uuid.uuid4())
    step = {"action": "file", "version": 1, "note": "立案", "client_id": client_id}
    centre = bearer(site, "centre_token")  # the 指挥中心 files (separation of duties)
    first = client.post(f"/api/incidents/{code}/actions", json=step, headers=centre)
    assert first.status_code == 200 and first.json["version"] == 2
    # the answer was lost on the way: the phone sends it again, on the version it knew
    again = client.post(f"/api/incidents/{code}/actions", json=step, headers=centre)
    assert again.status_code == 200 and again.json["version"] == 2 and again.json["replayed"] is True
    assert stored_with(site["engine"], client_id) == (0, 1)
    case = client.get(f"/api/incidents/{code}", headers=bearer(site)).json
    assert [s["step"] for s in case["steps"]] == ["reported", "filed"]
    # the same id for another step, or on another case: refused, nothing taken
    other = client.post(f"/api/incidents/{code}/actions", json={**step, "action": "dispatch", "version": 2},
                        headers=centre)
    assert other.status_code == 409 and other.json["code"] == "ClientIdReused"
    code2 = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    elsewhere = client.post(f"/api/incidents/{code2}/actions", json=step, headers=centre)
    assert elsewhere.status_code == 409 and elsewhere.json["code"] == "ClientIdReused"
    assert code not in elsewhere.json["detail"]
    theirs = client.post(f"/api/incidents/{code}/actions", json=step, headers=bearer(site, "centre2_token"))
    assert theirs.status_code == 409 and "another account" in theirs.json["detail"]
    assert client.get(f"/api/incidents/{code2}", headers=bearer(site)).json["version"] == 1
    assert stored_with(site["engine"], client_id) == (0, 1)


def test_a_step_made_offline_on_a_version_that_moved_is_a_409_and_can_be_redone(site):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    # the 指挥中心's laptop, offline, queues "file" on version 1; meanwhile a colleague files it
    queued = {"action": "file", "version": 1, "client_id": str(uuid.uuid4())}
    assert client.post(f"/api/incidents/{code}/actions", json={"action": "file", "version": 1},
                       headers=bearer(site, "centre2_token")).status_code == 200
    late = client.post(f"/api/incidents/{code}/actions", json=queued, headers=bearer(site, "centre_token"))
    assert late.status_code == 409 and late.json["code"] == "VersionConflict"
    assert late.json["current"]["version"] == 2 and late.json["current"]["status"] == "filed"
    assert stored_with(site["engine"], queued["client_id"]) == (0, 0)
    # redone on the case as it is now (the phone's "redo": the next step, the current version)
    redo = {"action": "dispatch", "version": late.json["current"]["version"], "client_id": str(uuid.uuid4())}
    done = client.post(f"/api/incidents/{code}/actions", json=redo, headers=bearer(site, "centre_token"))
    assert done.status_code == 200 and done.json["status"] == "dispatched"
    assert stored_with(site["engine"], redo["client_id"]) == (0, 1)


# --- "this is the same case": a note kept on the phone, sent when the signal returns ---------------


def test_a_note_sent_twice_is_stored_once(site):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    client_id = str(uuid.uuid4())
    note = {"note": "又看到了，更多了", "client_id": client_id}
    first = client.post(f"/api/incidents/{code}/notes", json=note, headers=bearer(site))
    assert first.status_code == 200 and "replayed" not in first.json
    again = client.post(f"/api/incidents/{code}/notes", json=note, headers=bearer(site))
    assert again.status_code == 200 and again.json["replayed"] is True
    assert again.json["version"] == first.json["version"] == 1
    assert [s["step"] for s in again.json["steps"]] == ["reported", "noted"]
    assert stored_with(site["engine"], client_id) == (0, 1)
    # the case closed meanwhile (cancelled): the note it already holds is still answered as stored
    cancel = {"action": "cancel", "version": 1, "note": "重复"}
    assert client.post(f"/api/incidents/{code}/actions", json=cancel,
                       headers=bearer(site, "centre_token")).status_code == 200
    late = client.post(f"/api/incidents/{code}/notes", json=note, headers=bearer(site))
    assert late.status_code == 200 and late.json["replayed"] is True
    assert stored_with(site["engine"], client_id) == (0, 1)


def test_a_note_with_its_photo_sent_twice_keeps_one_photo(site):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    client_id = str(uuid.uuid4())

    def send():
        return client.post(f"/api/incidents/{code}/notes", headers=bearer(site),
                           content_type="multipart/form-data",
                           data={"note": "在同一地点再次发现", "client_id": client_id,
                                 "photo": (io.BytesIO(JPEG), "again.jpg")})

    first, again = send(), send()
    assert (first.status_code, again.status_code) == (200, 200), again.json
    assert again.json["replayed"] is True
    assert len(again.json["photos"]) == 1 and again.json["photos"][0]["step"] == "noted"
    assert again.json["photos"][0]["step_id"] == again.json["steps"][-1]["id"]
    assert len(list(site["photos"].iterdir())) == 1 and stored_with(site["engine"], client_id) == (0, 1)


def test_a_note_client_id_reused_for_another_case_is_refused_naming_it(site):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    code2 = client.post("/api/incidents", json=body(site, description="另一件"),
                        headers=bearer(site)).json["code"]
    client_id = str(uuid.uuid4())
    note = {"note": "又看到了", "client_id": client_id}
    assert client.post(f"/api/incidents/{code}/notes", json=note, headers=bearer(site)).status_code == 200
    before = snapshot(site["url"], leave_out=("audit_log", "rate_limits"))
    elsewhere = client.post(f"/api/incidents/{code2}/notes", json=note, headers=bearer(site))
    assert elsewhere.status_code == 409 and elsewhere.mimetype == "application/problem+json"
    assert elsewhere.json["code"] == "ClientIdReused" and code in elsewhere.json["detail"]
    assert "note to case" in elsewhere.json["detail"]
    other = client.post(f"/api/incidents/{code}/notes", json={**note, "note": "别的话"}, headers=bearer(site))
    assert other.status_code == 409 and other.json["code"] == "ClientIdReused"
    theirs = client.post(f"/api/incidents/{code}/notes", json=note, headers=bearer(site, "colleague_token"))
    assert theirs.status_code == 409 and "another account" in theirs.json["detail"]
    # a step's id is not a note's either
    step = client.post(f"/api/incidents/{code}/actions",
                       json={"action": "file", "version": 1, "client_id": client_id}, headers=bearer(site))
    assert step.status_code == 409 and step.json["code"] == "ClientIdReused"
    assert snapshot(site["url"], leave_out=("audit_log", "rate_limits")) == before


@pytest.mark.parametrize("client_id", [["a-list"], 12345678, "short", "x" * 65, "has space 1234"])
def test_a_note_with_a_malformed_client_id_is_refused(site, client_id):
    client = site["app"].test_client()
    code = client.post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    before = total(site["engine"])
    answer = client.post(f"/api/incidents/{code}/notes", json={"note": "又看到了", "client_id": client_id},
                         headers=bearer(site))
    assert answer.status_code == 400 and "client_id must be 8 to 64" in answer.json["detail"]
    assert total(site["engine"]) == before


def test_the_same_note_sent_at_once_from_many_threads_is_stored_once(site):
    app = site["app"]
    code = app.test_client().post("/api/incidents", json=body(site), headers=bearer(site)).json["code"]
    client_id = str(uuid.uuid4())
    answers: list[int] = []
    lock = threading.Lock()

    def send():
        answer = app.test_client().post(f"/api/incidents/{code}/notes",
                                        json={"note": "又看到了", "client_id": client_id},
                                        headers=bearer(site))
        with lock:
            answers.append(answer.status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 6, answers
    assert stored_with(site["engine"], client_id) == (0, 1)


def test_the_same_report_sent_at_once_from_many_threads_is_stored_once(site):
    app = site["app"]
    client_id = str(uuid.uuid4())
    answers: list[int] = []
    codes: set[str] = set()
    lock = threading.Lock()

    def send():
        answer = app.test_client().post("/api/incidents", json=body(site, client_id=client_id),
                                        headers=bearer(site))
        with lock:
            answers.append(answer.status_code)
            if answer.json and "code" in answer.json:
                codes.add(answer.json["code"])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] * 5 + [201], answers
    assert len(codes) == 1 and stored_with(site["engine"], client_id) == (1, 0)


# --- the service worker and sign-out (no database kind matters here) ------------------------------


@pytest.fixture
def app(spatialite_url):
    return make_app(spatialite_url, BASEMAP="none")


def test_the_service_worker_is_public_and_named_by_the_build(app, tmp_path):
    from webmap.views.incidents import build_hash

    answer = app.test_client().get("/sw.js")  # nobody signed in: the browser looks for updates
    assert answer.status_code == 200 and answer.mimetype == "text/javascript"
    assert answer.headers["Cache-Control"] == "no-cache"
    source = answer.get_data(as_text=True)
    templates = str(Path(app.root_path) / app.template_folder)
    assert f'const BUILD = "{build_hash(app.static_folder, templates)}";' in source
    assert "__BUILD__" not in source
    assets = json.loads(source.split("const ASSETS = ", 1)[1].split(";\n", 1)[0])
    # under the addresses the pages use: versioned by the file's hash
    paths = [a.split("?v=")[0] for a in assets]
    assert "/static/js/offline_queue.js" in paths and "/static/manifest.webmanifest" in paths
    assert all(re.fullmatch(r"/static/[^?]+\?v=[0-9a-f]{12}", a) for a in assets)  # no page, no API answer
    # a new deploy (any static file or template changed) is a new build: the phones' caches go
    folder = tmp_path / "static"
    (folder / "js").mkdir(parents=True)
    (folder / "js" / "cases.js").write_text("one")
    first = build_hash(str(folder))
    build_hash.cache_clear()
    (folder / "js" / "cases.js").write_text("two")
    assert build_hash(str(folder)) != first
    build_hash.cache_clear()


def test_the_manifest_makes_the_case_list_an_app(app):
    manifest = json.loads(app.test_client().get("/static/manifest.webmanifest").get_data(as_text=True))
    assert manifest["start_url"] == "/cases" and manifest["display"] == "standalone"
    sizes = {i["sizes"] for i in manifest["icons"] if i["type"] == "image/png"}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        assert app.test_client().get(icon["src"]).status_code == 200


def test_signing_out_clears_what_the_phone_kept(app, small_demo):
    from tests.webhelpers import csrf_token, sign_in

    write_demo(get_engine(app.config["DATABASE_URL"]), small_demo)
    make_accounts(app, small_demo)
    client = app.test_client()
    sign_in(client, "supervisor")
    page = client.get("/cases").get_data(as_text=True)
    assert 'rel="manifest"' in page and "js/offline_queue.js" in page and 'data-user="supervisor"' in page
    out = client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert out.status_code == 302 and out.headers["Clear-Site-Data"] == '"cache", "storage"'
