"""Background jobs over HTTP: a job's state is for the user who started it, for admins, and for
the readers whose scope covers it; its parameters for its author and admins only (the rest of
the rule, scopes and supervisors, in tests/test_trust.py)."""

from __future__ import annotations

from layers.demo import write_demo
from tests.webhelpers import csrf_token, make_accounts, sign_in
from webmap import create_app


def test_a_job_is_shown_to_its_author_and_admins_only(db_url, engine, small_demo):
    write_demo(engine, small_demo)
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "BASEMAP": "none"})
    make_accounts(app, small_demo)
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
