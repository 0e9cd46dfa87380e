"""Helpers for the web tests: accounts of each role and signing in as a browser does."""

from __future__ import annotations

import re

PASSWORD = "correct horse 42"
SCOPE_CELLS = 12  # supervisors in the tests are scoped to one community


def make_accounts(app, demo) -> dict[str, str]:
    """One account per role; the supervisor's scope is the demo's first community."""
    from webmap.auth import add_token, add_user

    community = demo.layers["communities"]["code"].iloc[0]
    with app.app_context():
        for role in ("admin", "planner", "viewer"):
            add_user(role, role, PASSWORD)
        add_user("supervisor", "supervisor", PASSWORD, community)
        return {"scope": community, "token": add_token("police", "viewer"),
                "supervisor_token": add_token("grid-app", "supervisor", community)}


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sign_in(client, name: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": csrf_token(page.get_data(as_text=True))})
