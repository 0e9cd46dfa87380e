"""Background jobs over HTTP: a job's state is for the user who started it, for admins, and for
the readers whose scope covers it; its parameters for its author and admins only (the rest of
the rule, scopes and supervisors, in tests/test_trust.py)."""

from __future__ import annotations

from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in


def test_a_job_is_shown_to_its_author_and_admins_only(db_url, engine, small_demo):
    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    clients = {}
    for role in ("planner", "admin", "viewer", "supervisor"):
        clients[role] = app.test_client()
        sign_in(clients[role], role)
    headers = {"X-CSRFToken": csrf_token(clients["planner"].get("/plans").get_data(as_text=True))}
    job = clients["planner"].post("/api/plans", json={"name": "全区"}, headers=headers)
    assert job.status_code == 202
    url = job.json["url"]
    assert clients["planner"].get(url).json["status"] == "queued"
    assert clients["admin"].get(url).status_code == 200
    assert "params" in clients["admin"].get(url).json
    # a viewer of the whole district follows the district's plan, without who asked for what
    seen = clients["viewer"].get(url)
    assert seen.status_code == 200 and seen.json["status"] == "queued" and "params" not in seen.json
    hidden = clients["supervisor"].get(url)  # a community's supervisor: no such job
    assert hidden.status_code == 404 and "params" not in hidden.json
    assert clients["planner"].get("/api/jobs/99999").status_code == 404


def test_a_token_named_like_a_user_is_not_that_user_for_jobs(db_url, engine, small_demo, tmp_path):
    """Token names and user names are two namespaces: a token called ``planner`` neither follows
    the user planner's import, nor reads the parameters of their plan job, nor counts in (or
    against) their three jobs; a job queued before jobs recorded who started them is its user's
    by name, never a token's."""
    from geodata import jobs
    from tests.test_layers_page import new_units, preview, shapefile_zip
    from tests.webhelpers import signed_in
    from webmap.auth import add_token

    app = demo_site(db_url, small_demo, BASEMAP="none", UPLOAD_FOLDER=str(tmp_path / "uploads"))[0]
    with app.app_context():
        bearer = {"Authorization": f"Bearer {add_token('planner', 'planner')}"}
    user, headers = signed_in(app, "planner", "/layers")
    token = app.test_client()
    data = shapefile_zip(new_units(small_demo), tmp_path / "shp")
    answer = preview(user, headers, "units", data, "units.zip")
    # nor takes up their uploaded file by its id
    taken = token.post("/api/layers/units/import", headers=bearer, json={"upload": answer.json["upload"]})
    assert taken.status_code == 404 and "gone" in taken.json["detail"], taken.json
    queued = user.post("/api/layers/units/import", headers=headers, json={"upload": answer.json["upload"]})
    assert queued.status_code == 202, queued.json
    assert user.get(queued.json["url"]).status_code == 200
    hidden = token.get(queued.json["url"], headers=bearer)
    assert hidden.status_code == 404 and f"no job {queued.json['job']}" in hidden.json["detail"]
    # the plan job's state is any planner's to follow, its parameters its author's alone
    plan = user.post("/api/plans", json={"name": "全区"}, headers=headers)
    assert plan.status_code == 202 and user.get(plan.json["url"]).json["params"]["author"] == "planner"
    seen = token.get(plan.json["url"], headers=bearer)
    assert seen.status_code == 200 and "params" not in seen.json
    # the user has two jobs, the token none: each may queue up to three of their own
    assert token.post("/api/plans", json={"name": "全区"}, headers=bearer).status_code == 202
    assert user.post("/api/plans", json={"name": "全区"}, headers=headers).status_code == 202
    refused = user.post("/api/plans", json={"name": "全区"}, headers=headers)
    assert refused.status_code == 429 and "planner has 3 jobs" in refused.json["detail"]
    assert [token.post("/api/plans", json={"name": "全区"}, headers=bearer).status_code
            for _ in range(3)] == [202, 202, 429]
    mine = token.post("/api/coverage/jobs", json={}, headers=bearer)
    assert mine.status_code == 429
    # a job of before: its user's by name, not the token's
    old = jobs.create_job(engine, "auto_plan", {"name": "旧", "author": "planner"}, per_user=0)
    assert "params" in user.get(f"/api/jobs/{old}").json
    assert "params" not in token.get(f"/api/jobs/{old}", headers=bearer).json


def test_every_job_started_answers_one_shape_followed_at_one_address(db_url, engine, small_demo, tmp_path):
    """A plan, an import and a coverage report, once queued, answer the same members, and each
    is followed at ``/api/jobs/<id>``, which answers what the kind's own address answers."""
    from tests.test_layers_page import new_units, preview, shapefile_zip
    from tests.webhelpers import signed_in

    app, _secrets = demo_site(db_url, small_demo, BASEMAP="none", UPLOAD_FOLDER=str(tmp_path / "uploads"))
    user, headers = signed_in(app, "planner", "/layers")
    upload = preview(user, headers, "units", shapefile_zip(new_units(small_demo), tmp_path / "shp"),
                     "units.zip").json["upload"]
    started = {"auto_plan": user.post("/api/plans", json={"name": "全区"}, headers=headers),
               "import_layer": user.post("/api/layers/units/import", json={"upload": upload},
                                         headers=headers),
               "coverage_report": user.post("/api/coverage/jobs", json={}, headers=headers)}
    own = {"import_layer": "/api/layers/imports/{}", "coverage_report": "/api/coverage/jobs/{}"}
    for kind, answer in started.items():
        assert answer.status_code == 202, (kind, answer.json)
        body = answer.json
        assert {"job", "kind", "status", "progress", "message", "url"} <= set(body), body
        assert body["kind"] == kind and body["status"] == "queued"
        assert body["url"] == f"/api/jobs/{body['job']}"
        followed = user.get(body["url"]).json
        assert {k: followed[k] for k in ("job", "kind", "status", "url")} == \
            {k: body[k] for k in ("job", "kind", "status", "url")}
        if kind in own:
            assert user.get(own[kind].format(body["job"])).json == followed
    assert user.get(started["import_layer"].json["url"]).json["phase"] == "queued"


def test_a_queued_job_tells_why_it_waits_in_the_readers_language(db_url, engine, small_demo):
    """A job that waits says why, in the language of whoever reads it: nothing just after it is
    queued; behind how many jobs while the workers are busy; and, once it has waited with no job
    running, that no background worker is taking jobs and how one is started — which the page
    could not tell from a slow job before."""
    from datetime import datetime, timedelta

    from sqlalchemy import text

    from geodata import jobs

    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    client = app.test_client()
    sign_in(client, "planner")
    headers = {"X-CSRFToken": csrf_token(client.get("/plans").get_data(as_text=True))}
    url = client.post("/api/plans", json={"name": "全区"}, headers=headers).json["url"]
    job_id = int(url.rsplit("/", 1)[1])
    assert client.get(url).json["message"] is None  # only just queued

    with engine.begin() as conn:  # queued two minutes ago, and no worker has taken it
        conn.execute(text("UPDATE jobs SET created_at = :at WHERE id = :id"),
                     {"at": datetime.now() - timedelta(minutes=2), "id": job_id})
    chinese = client.get(url, headers={"Accept-Language": "zh-CN"}).json
    assert chinese["status"] == "queued"
    assert "后台任务进程" in chinese["message"] and "2" in chinese["message"]
    assert "flask --app webmap worker" in chinese["message"]
    english = client.get(url, headers={"Accept-Language": "en"}).json["message"]
    assert "no background worker" in english and "2 min" in english

    other = jobs.create_job(engine, "auto_plan", {"name": "another"}, per_user=0)  # taken by a worker
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', worker = 'elsewhere:1' WHERE id = :id"),
                     {"id": other})
    busy = client.get(url, headers={"Accept-Language": "en"}).json["message"]
    assert "1 running" in busy and "0 queued before it" in busy
