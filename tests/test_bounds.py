"""Bounded work (issue 20, item 5): what one caller can make the server do.

- Bodies: a caller who is not signed in is refused before the body is read (a 100 MB JSON body to
  ``POST /api/plans`` is a 401 with none of it read), a signed-in browser without its CSRF token
  likewise; then a body larger than the route takes is a 413 on its length alone (JSON 256 KiB by
  default, plan edits more, uploads as before); a JSON body nested deeper than 64 levels is a 400
  naming the limit, found without parsing it; the NUL check walks any depth without recursion.
- Reports: one account or token, and one address, may send so many reports a minute (Open311's
  and the app's count together); past that a 429 with ``Retry-After`` and a message, and nothing
  stored.
- Jobs: one user may have three jobs queued or running, the fourth is a 429 naming the limit; a job
  past its time limit is killed and failed naming the limit, nothing of it is kept, and the worker
  runs the next job.
"""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from sqlalchemy import func, select, text
from werkzeug.test import EnvironBuilder, run_wsgi_app

from geodata import jobs
from geodata.db import dispose_engines, get_engine
from geodata.models import Incident, Job
from layers.sample_data.demo import write_demo
from tests.conftest import demo_site, make_app
from tests.test_faults import units_update_file
from tests.webhelpers import csrf_token, make_accounts, sign_in, snapshot
from webmap.security import MAX_JSON_DEPTH, _has_nul, json_depth


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes made as it is read, counting what was read: the server's
    side of a 100 MB upload without 100 MB in the test's memory."""

    def __init__(self, size: int, fill: bytes = b"[") -> None:
        self.size, self.fill, self.read_bytes, self.position = size, fill, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the test client measures the body by seeking to its end
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = min(self.size, offset if whence == 0 else self.size + offset if whence == 2
                            else self.position + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.position)
        buffer[:n] = self.fill * n
        self.position += n
        self.read_bytes += n
        return n


@pytest.fixture(scope="module")
def site(tmp_path_factory, spatialite_template, small_demo):
    import shutil

    path = tmp_path_factory.mktemp("bounds") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    write_demo(get_engine(url), small_demo)
    app = make_app(url, BASEMAP="none")
    secrets = make_accounts(app, small_demo)
    yield {"app": app, "url": url, "token": secrets["token"], "demo": small_demo}
    dispose_engines()


def browser(app, role: str):
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client.get("/plans" if role != "supervisor" else "/cases")
                                              .get_data(as_text=True))}


# --- bodies ---------------------------------------------------------------------------------------


def test_a_large_body_from_nobody_is_refused_before_a_byte_of_it_is_read(site):
    client = site["app"].test_client()
    body = CountingStream(100 * 1024 * 1024)
    began = time.perf_counter()
    answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                         headers={"Content-Length": str(body.size)})
    assert answer.status_code == 401 and answer.json["code"] == "Unauthorized"
    assert body.read_bytes == 0
    assert time.perf_counter() - began < 1.0
    # a made-up token likewise; a real one past the route's size is a 413 on the length alone
    body = CountingStream(100 * 1024 * 1024)
    answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                         headers={"Content-Length": str(body.size), "Authorization": "Bearer made-up"})
    assert answer.status_code == 401 and body.read_bytes == 0
    body = CountingStream(100 * 1024 * 1024)
    answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                         headers={"Content-Length": str(body.size),
                                  "Authorization": f"Bearer {site['token']}"})
    assert answer.status_code in (403, 413)  # the police token is a viewer: its role or the size
    assert body.read_bytes == 0


def test_a_signed_in_browser_without_its_csrf_token_is_refused_before_the_body_is_read(site):
    client, _ = browser(site["app"], "planner")
    body = CountingStream(10 * 1024 * 1024)
    answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                         headers={"Content-Length": str(body.size)})
    assert answer.status_code == 400 and "CSRF" in answer.json["detail"]
    assert body.read_bytes == 0


def test_each_route_takes_bodies_up_to_its_limit(site):
    engine = get_engine(site["url"])
    client, headers = browser(site["app"], "planner")
    with engine.connect() as conn:
        plans_before = conn.execute(text("SELECT count(*) FROM plans")).scalar_one()
    big = json.dumps({"name": "x" * (300 * 1024)})  # over the 256 KiB of a plain JSON route
    body = CountingStream(len(big))
    answer = client.post("/api/plans", input_stream=body, content_type="application/json",
                         headers={**headers, "Content-Length": str(len(big))})
    assert answer.status_code == 413 and body.read_bytes == 0
    assert "this address takes at most 256 KiB" in answer.json["detail"]
    # a body sent without a length is read up to the limit, not further
    chunked = CountingStream(100 * 1024 * 1024, fill=b" ")
    environ = EnvironBuilder("/api/plans", method="POST", data=b"", content_type="application/json",
                             headers=headers).get_environ()
    environ.pop("CONTENT_LENGTH", None)  # chunked: the server ends the stream (gunicorn does)
    environ.update({"wsgi.input": chunked, "wsgi.input_terminated": True})
    client._add_cookies_to_wsgi(environ)
    _, status, _ = run_wsgi_app(site["app"], environ, buffered=True)
    assert status.startswith("413") and chunked.read_bytes <= 300 * 1024, (status, chunked.read_bytes)
    # a plan edit may name thousands of units: 300 KiB of codes reach the view (a 4xx naming the plan)
    units = ["4201030010010001"] * 15000
    moves = client.post("/api/plans/999999/moves", json={"units": units, "to": "new", "version": 1},
                        headers=headers)
    assert len(json.dumps(units)) > 256 * 1024 and moves.status_code == 404, moves.json
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM plans")).scalar_one() == plans_before


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 450, 950, 40_000])
def test_a_body_nested_too_deep_is_a_400_naming_the_limit(site, depth):
    client, headers = browser(site["app"], "admin")
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + '"\\u0000"' + "}" * depth):
        answer = client.post("/api/plans", data=body, content_type="application/json", headers=headers)
        assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
        assert f"nested too deeply: more than {MAX_JSON_DEPTH} levels" in answer.json["detail"]


def test_the_depth_is_counted_outside_strings_and_the_nul_check_has_no_recursion():
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{\\"]]]"}]}') == 3
    assert json_depth(b'"just a string"') == 0
    assert json_depth(b"[" * 64 + b"]" * 64) == 64
    value: list = []
    deepest = value
    for _ in range(5000):  # deeper than Python's recursion limit
        deepest.append([])
        deepest = deepest[0]
    deepest.append("a\x00b")
    assert _has_nul(value)
    deepest[0] = "ab"
    assert not _has_nul(value)
    assert _has_nul({"key\x00": 1}) and not _has_nul({"k": [1, 2.5, None, True]})


def test_a_body_within_the_limits_still_works(site):
    client, headers = browser(site["app"], "planner")
    street = site["demo"].layers["streets"]["code"].iloc[0]
    nested = {"name": "深度", "street": street, "extra": json.loads("[" * 60 + "]" * 60)}
    answer = client.post("/api/plans", json=nested, headers=headers)
    assert answer.status_code == 201, answer.json
    nul = client.post("/api/plans", json={"name": "a\x00b"}, headers=headers)
    assert nul.status_code == 400 and nul.json["code"] == "NulCharacter"


# --- reports ---------------------------------------------------------------------------------------


def incidents(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(Incident)).scalar_one()


def test_reports_past_the_limit_of_an_account_or_token_are_429_and_not_stored(db_url, small_demo):
    """On each database: the counters are rows of ``rate_limits``."""
    url, engine = db_url, get_engine(db_url)
    write_demo(engine, small_demo)
    app = make_app(url, BASEMAP="none", REPORT_LIMIT_PER_ACCOUNT="4 per minute",
                   REPORT_LIMIT_PER_ADDRESS="6 per minute")
    make_accounts(app, small_demo)
    community = small_demo.layers["communities"]["code"].iloc[0]
    report = {"community": community, "category": "E01-01", "description": "路灯不亮"}
    # the supervisor's token (police is a viewer: reports need a supervisor or admin)
    from webmap.auth import add_token

    with app.app_context():
        token = add_token("bounds-supervisor", "supervisor", community)
    bearer = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    before = incidents(url)
    answers = [client.post("/api/incidents", json=report, headers=bearer,
                           environ_base={"REMOTE_ADDR": "10.1.0.1"}) for _ in range(3)]
    # Open311's report counts with the app's: the same token, the same limit
    open311 = [client.post("/open311/v2/requests.json", data={
        "api_key": token, "service_code": "E01-01", "lat": 0, "long": 0, "description": "x"},
        environ_base={"REMOTE_ADDR": "10.1.0.2"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert open311[0].status_code != 429 and open311[1].status_code == 429
    # the spec's api_key in a JSON body is the same token, held to the same limit
    as_json = client.post("/open311/v2/requests.json", json={
        "api_key": token, "service_code": "E01-01", "lat": 0, "long": 0, "description": "x"},
        environ_base={"REMOTE_ADDR": "10.1.0.4"})
    assert as_json.status_code == 429, as_json.get_data(as_text=True)
    refused = client.post("/api/incidents", json=report, headers=bearer,
                          environ_base={"REMOTE_ADDR": "10.1.0.3"})
    assert refused.status_code == 429 and refused.json["code"] == "TooManyReports"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "at most 4 a minute from one account or token" in refused.json["detail"]
    assert "429" in open311[1].get_data(as_text=True) and open311[1].headers["Retry-After"]
    assert open311[1].json[0]["description"].startswith("Too many reports")
    stored = incidents(url) - before
    assert stored == 3 + (open311[0].status_code == 201)
    # another account is not held back by it; the address limit holds everyone at one address
    sup, headers = browser(app, "supervisor")
    seen = [sup.post("/api/incidents", json=report, headers=headers,
                     environ_base={"REMOTE_ADDR": "10.2.0.1"}).status_code for _ in range(5)]
    assert seen == [201, 201, 201, 201, 429]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rate_limits"))
    admin, headers = browser(app, "admin")
    seen = [admin.post("/api/incidents", json=report, headers=headers,
                       environ_base={"REMOTE_ADDR": "2001:db8::1" if i % 2 else "2001:db8::2"}).status_code
            for i in range(3)]
    sup, headers_sup = browser(app, "supervisor")
    seen += [sup.post("/api/incidents", json=report, headers=headers_sup,
                      environ_base={"REMOTE_ADDR": "2001:db8::3"}).status_code for _ in range(3)]
    assert seen == [201] * 6
    # one /64 is one address: six a minute, whoever reports
    refused = admin.post("/api/incidents", json=report, headers=headers,
                         environ_base={"REMOTE_ADDR": "2001:db8::9"})
    assert refused.status_code == 429 and "from one address" in refused.json["detail"]
    assert sup.post("/api/incidents", json=report, headers=headers_sup,  # another /64
                    environ_base={"REMOTE_ADDR": "2001:db8:0:1::9"}).status_code == 201
    dispose_engines()


# --- jobs ------------------------------------------------------------------------------------------


def test_one_user_may_have_three_jobs_queued_or_running(db_url, small_demo):
    engine = get_engine(db_url)
    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    viewer, headers = browser(app, "viewer")
    started = [viewer.post("/api/coverage/jobs", json={"method": "straight"}, headers=headers)
               for _ in range(4)]
    assert [a.status_code for a in started] == [202, 202, 202, 429]
    refused = started[-1].json
    assert refused["code"] == "TooManyJobs" and started[-1].headers["Retry-After"]
    assert "viewer has 3 jobs queued or running already" in refused["detail"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 3
    # others may still queue theirs; a job that ended frees a place
    planner, headers_p = browser(app, "planner")
    assert planner.post("/api/plans", json={"name": "全区"}, headers=headers_p).status_code == 202
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'done' WHERE id = :id"), {"id": started[0].json["job"]})
    assert viewer.post("/api/coverage/jobs", json={"method": "straight"}, headers=headers).status_code == 202
    dispose_engines()


def test_a_job_past_its_time_limit_is_killed_failed_and_the_next_one_runs(db_url, small_demo, tmp_path,
                                                                         monkeypatch):
    from layers import worker
    from layers.onboarding import imports as layer_import

    engine = get_engine(db_url)
    write_demo(engine, small_demo)
    hung_folder, next_folder = tmp_path / "uploads" / "hung", tmp_path / "uploads" / "next"
    for folder in (hung_folder, next_folder):
        folder.mkdir(parents=True)
        units_update_file(small_demo, folder)
    params = {"layer": "units", "file": "units.gpkg", "mode": "update", "crs": None, "mapping": {},
              "district": None, "actor": "planner"}
    hung = jobs.create_job(engine, layer_import.KIND, {**params, "folder": str(hung_folder)})
    after = jobs.create_job(engine, layer_import.KIND, {**params, "folder": str(next_folder)})
    before = snapshot(db_url, leave_out=("jobs",))
    # the import waits inside its open transaction, as a file that makes the reader loop would
    monkeypatch.setenv("GRIDPLAN_TEST_PAUSE_AT", "import")
    monkeypatch.setenv("GRIDPLAN_JOB_TIME_LIMIT_IMPORT_LAYER", "3")
    began = time.monotonic()
    job = worker.run_one(engine)
    took = time.monotonic() - began
    assert job["id"] == hung and job["status"] == "failed", job
    assert "ran longer than its time limit of 0.05 min" in job["message"]
    assert 3 <= took < 3 + 5, took
    assert snapshot(db_url, leave_out=("jobs",)) == before  # nothing of it was kept
    assert not hung_folder.exists()  # its upload is gone, as for any job that ended
    if db_url.startswith("postgresql"):
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                                {"n": f"gridplan-job-{hung}"}).scalar_one() == 0
    # the worker is free: the next job runs to its end (under the usual limit: 3 s is the hung
    # job's, and a loaded machine imports the district's units in more)
    monkeypatch.delenv("GRIDPLAN_TEST_PAUSE_AT")
    monkeypatch.delenv("GRIDPLAN_JOB_TIME_LIMIT_IMPORT_LAYER")
    done = worker.run_one(engine)
    assert done["id"] == after and done["status"] == "done", done
    assert done["result"]["written"] == len(small_demo.layers["units"])
    assert worker.run_one(engine) is None
    dispose_engines()


@pytest.mark.parametrize("value", ["10m", "-5", "0", "nan", "inf"])
def test_a_job_limit_of_the_environment_that_is_no_number_falls_back_to_the_default(value, monkeypatch,
                                                                                   caplog):
    monkeypatch.setenv("GRIDPLAN_JOB_TIME_LIMIT", value)
    monkeypatch.setenv("GRIDPLAN_JOBS_PER_USER", value)
    assert jobs.time_limit("import_layer", 600) == 600
    assert jobs.jobs_per_user() == jobs.JOBS_PER_USER or value == "0"
    assert "GRIDPLAN_JOB_TIME_LIMIT=" in caplog.text
    monkeypatch.setenv("GRIDPLAN_JOB_TIME_LIMIT_IMPORT_LAYER", "900")  # a good value still counts
    assert jobs.time_limit("import_layer", 600) == 900


def _pool_job(engine, job: dict) -> dict:
    """A job that starts processes of its own, as unit_builder's pool does."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as pool:
        return {"pid": pool.submit(os.getpid).result()}


def test_a_bad_job_limit_neither_stops_the_worker_nor_job_creation(db_url, small_demo, monkeypatch, caplog):
    """``GRIDPLAN_JOB_TIME_LIMIT=10m``: the job runs under the default limit (a job may start
    processes of its own), the worker goes on; ``GRIDPLAN_JOBS_PER_USER=three``: three jobs."""
    from layers import worker

    engine = get_engine(db_url)
    write_demo(engine, small_demo)
    monkeypatch.setenv("GRIDPLAN_JOB_TIME_LIMIT", "10m")
    monkeypatch.setenv("GRIDPLAN_JOBS_PER_USER", "three")
    monkeypatch.setitem(worker.RUNNERS, "pool", _pool_job)
    job_id = jobs.create_job(engine, "pool", {})
    job = worker.run_one(engine)
    assert job["id"] == job_id and job["status"] == "done", job
    assert job["result"]["pid"] not in (os.getpid(), None)
    assert "GRIDPLAN_JOB_TIME_LIMIT='10m'" in caplog.text
    assert worker.run_one(engine) is None
    app = make_app(db_url, BASEMAP="none")
    make_accounts(app, small_demo)
    viewer, headers = browser(app, "viewer")
    assert [viewer.post("/api/coverage/jobs", json={"method": "straight"}, headers=headers).status_code
            for _ in range(4)] == [202, 202, 202, 429]
    dispose_engines()
