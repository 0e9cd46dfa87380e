"""Background jobs over HTTP: a job's state is for the user who started it and for admins."""

from __future__ import annotations

from layers.demo import write_demo
from tests.webhelpers import csrf_token, make_accounts, sign_in
from webmap import create_app


def test_a_job_is_shown_to_its_author_and_admins_only(db_url, engine, small_demo):
    write_demo(engine, small_demo)
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "BASEMAP": "none"})
    make_accounts(app, small_demo)
    clients = {}
    for role in ("planner", "admin", "viewer"):
        clients[role] = app.test_client()
        sign_in(clients[role], role)
    headers = {"X-CSRFToken": csrf_token(clients["planner"].get("/plans").get_data(as_text=True))}
    job = clients["planner"].post("/api/plans", json={"name": "全区"}, headers=headers)
    assert job.status_code == 202
    url = job.json["url"]
    assert clients["planner"].get(url).json["status"] == "queued"
    assert clients["admin"].get(url).status_code == 200
    hidden = clients["viewer"].get(url)
    assert hidden.status_code == 404 and "params" not in hidden.json
    assert clients["planner"].get("/api/jobs/99999").status_code == 404
