"""Helpers for the web tests: accounts of each role, signing in (a test client or a Chromium page)
as a browser does, and a site served for Chromium (:func:`served_copy`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from geoalchemy2 import Geometry
from sqlalchemy import func, select, text
from werkzeug.serving import make_server

from geodata.db import get_engine
from geodata.models import Base

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
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


def signed_in(app, role: str, page: str = "/login"):
    """A test client signed in as ``role`` and the CSRF header its state changes send."""
    client = app.test_client()
    assert sign_in(client, role).status_code == 302
    return client, {"X-CSRFToken": csrf_token(client.get(page).get_data(as_text=True))}


def sign_in(client, name: str, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": csrf_token(page.get_data(as_text=True))})


def sign_in_page(page, base: str, name: str, password: str = PASSWORD, *, tap: bool = False) -> None:
    """Sign in as ``name`` in a Chromium ``page`` the way a person does — the form at ``/login``
    filled in and sent (``tap``: with a finger, on a touch screen) — and wait until the site has
    let the page through (it has left ``/login``)."""
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    if tap:
        page.tap("form.login button[type=submit]")
    else:
        page.click("form.login button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


@contextmanager
def served_copy(app) -> Iterator[str]:
    """``app`` served by werkzeug in a thread on a free loopback port, for Chromium to open: the
    served copy of a test site. Yields its address (``http://127.0.0.1:<port>``); the server stops
    when the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


#: columns that note a use, not a change: a refused request by a valid token still notes its use
#: (at most once a minute, so whether a run crosses a minute decides it), a sign-in its time
USE_NOTES = {("api_tokens", "last_used_at"), ("users", "last_sign_in_at")}


def snapshot(url: str, *, leave_out: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every row of every gridplan table (geometries as WKB), in primary-key order, but for the
    columns that only note a use (:data:`USE_NOTES`).

    Two snapshots compare equal when the database holds the same rows byte for byte; ``leave_out``
    names tables a refused request may rightly touch (the audit log, ``rate_limits``)."""
    engine = get_engine(url)
    rows = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in leave_out:
                continue
            columns = [func.ST_AsBinary(c) if isinstance(c.type, Geometry) else c for c in table.columns
                       if (table.name, c.name) not in USE_NOTES]
            order = list(table.primary_key.columns) or list(table.columns)
            rows[table.name] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                                for r in conn.execute(select(*columns).order_by(*order))]
        rows["alembic_version"] = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).all())
    return rows


@contextmanager
def gunicorn_app(db_url: str, log_folder: Path, *, worker: bool = False, **settings: str) -> Iterator[tuple]:
    """``webmap.wsgi:app`` under gunicorn with two workers on a free loopback port, as ``make run``
    serves it (with the job worker beside it when ``worker``), answering: (its address, the
    environment it runs with). ``settings`` are extra environment variables (``GRIDPLAN_…``)."""
    from tests.pgcluster import free_port

    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "SECRET_KEY": "test", "GRIDPLAN_BASEMAP": "none",
           "GRIDPLAN_EXPOSE_PROCESS": "1", "PYTHONPATH": str(ROOT), **settings}
    # no control socket: one path in the home folder, shared by every gunicorn started at once
    processes = [subprocess.Popen([str(BIN / "gunicorn"), "--workers", "2", "--no-control-socket",
                                   "--bind", f"127.0.0.1:{port}", "webmap.wsgi:app"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=(log_folder / "gunicorn.log").open("w"))]
    if worker:
        processes.append(subprocess.Popen([str(BIN / "flask"), "--app", "webmap", "worker"], cwd=ROOT,
                                          env=env, stdout=subprocess.DEVNULL,
                                          stderr=(log_folder / "worker.log").open("w")))
    base = f"http://127.0.0.1:{port}"
    try:
        # both workers answering, not just the first: on a busy machine the second may still be
        # importing the app while the first serves a test's quick requests
        answered: set[str] = set()
        deadline = time.monotonic() + 120
        while len(answered) < 2 and time.monotonic() < deadline:
            try:
                answered.add(requests.get(f"{base}/login", timeout=10).headers["X-Gridplan-Process"])
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.2)
        yield base, env
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
