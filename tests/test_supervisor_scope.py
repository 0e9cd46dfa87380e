"""A grid supervisor (网格监督员) guessing ids: every route a supervisor may call, tried with the
codes of another community's cases, photos and cells — signed in and with a supervisor's API
token. Nothing of the other community comes back (404, or an answer without its codes), nothing
of it can be changed, and the database is the same afterwards."""

from __future__ import annotations

import io
import re
import shutil

import pytest
from sqlalchemy import text

from tests.conftest import demo_site
from tests.images import JPEG
from tests.test_access_matrix import ACCESS, routes
from tests.webhelpers import csrf_token, sign_in, signed_in, snapshot

#: tables a refused request may rightly write: who asked is recorded, sign-ins are counted
NOISE = ("audit_log", "rate_limits")
NO_CASE = "20991231999999"  # a code no case has


@pytest.fixture(scope="module")
def site(tmp_path_factory, spatialite_template, small_demo):
    folder = tmp_path_factory.mktemp("scope")
    path = folder / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    url = f"sqlite:///{path}"
    from geodata.db import get_engine

    engine = get_engine(url)
    app, secrets = demo_site(url, small_demo, BASEMAP="none", PHOTO_DIR=str(folder / "photos"))
    scope = secrets["scope"]
    with engine.connect() as conn:
        # a cell's code begins with its community's (15 digits = 12 + 3)
        theirs = conn.execute(text(
            "SELECT code, substr(grid_code, 1, 12) AS community_code FROM incidents "
            "WHERE substr(grid_code, 1, 12) <> :c ORDER BY code"), {"c": scope}).all()
        mine = conn.execute(text("SELECT code FROM incidents WHERE substr(grid_code, 1, 12) = :c "
                                 "ORDER BY code"), {"c": scope}).scalars().all()
        cells = conn.execute(text("SELECT code FROM grid_cells WHERE substr(code, 1, 12) <> :c "
                                  "ORDER BY code"), {"c": scope}).scalars().all()
    assert theirs and mine and cells, "the demo has cases and cells on both sides of the scope"
    # a photo on another community's case, added by the administrator
    admin = app.test_client()
    sign_in(admin, "admin")
    added = admin.post(f"/api/incidents/{theirs[0].code}/photos",
                       headers={"X-CSRFToken": csrf_token(admin.get("/cases").get_data(as_text=True))},
                       data={"photo": (io.BytesIO(JPEG), "scene.jpg")}, content_type="multipart/form-data")
    assert added.status_code == 201, added.get_data(as_text=True)
    return {"app": app, "url": url, "scope": scope, "token": secrets["supervisor_token"],
            "cases": [c.code for c in theirs[:5]], "cells": cells[:5], "mine": mine[0],
            "communities": sorted({c.community_code for c in theirs})[:3],
            "photo": added.json["id"], "photo_case": theirs[0].code}


def _callers(site):
    """The supervisor signed in (with the page's CSRF token) and by API token."""
    return {"session": signed_in(site["app"], "supervisor", "/cases"),
            "token": (site["app"].test_client(), {"Authorization": f"Bearer {site['token']}"})}


def _guesses(site) -> list[tuple[str, str]]:
    """Every supervisor's GET route filled with the other community's codes: (route, url)."""
    urls = []
    for route, rule in routes(site["app"]):
        method, _ = route.split(" ", 1)
        roles = ACCESS.get(route, "")
        if method != "GET" or "supervisor" not in roles or "<" not in rule.rule:
            continue
        if route.startswith("GET /static") or route.startswith("GET /tiles"):
            continue
        names = set(rule.arguments)
        values = {"fmt": "json", "job_id": 1, "layer": "incidents", "name": "incidents"}
        if "photo_id" in names:
            # the photo's own case, and one of the supervisor's cases with the other's photo id
            for code in (site["photo_case"], site["mine"]):
                urls.append((route, rule.build({**values, "code": code, "photo_id": site["photo"]},
                                               append_unknown=False)[1]))
            continue
        if "code" in names:
            if route.startswith("GET /api/collections"):
                for name, codes in (("incidents", site["cases"]), ("grid_cells", site["cells"])):
                    urls += [(route, rule.build({**values, "name": name, "code": c}, append_unknown=False)[1])
                             for c in codes]
                continue
            if "services" in route:
                continue  # the category list, the same for everyone
            urls += [(route, rule.build({**values, "code": c}, append_unknown=False)[1])
                     for c in site["cases"]]
            continue
        urls.append((route, rule.build(values, append_unknown=False)[1]))
    return urls


def _lists(site) -> list[str]:
    """Lists and exports a supervisor may read, asked for the other community by filter."""
    other = site["communities"][0]
    return [
        "/cases", "/supervisor", "/rates",
        "/api/incidents", f"/api/incidents?community={other}", f"/api/incidents?street={other[:9]}",
        f"/api/incidents?cell={site['cells'][0]}", "/api/incidents?status=reported&limit=1000",
        "/api/collections/incidents/items?limit=10000",
        f"/api/collections/incidents/items?community_code={other}",
        "/api/collections/grid_cells/items?limit=10000",
        f"/api/collections/grid_cells/items?community_code={other}",
        "/api/grid/assignments", f"/api/grid/assignments?community={other}",
        "/api/exports/incidents?format=csv", "/api/exports/incidents?format=geojson",
        f"/api/exports/incidents?format=csv&community={other}",
        "/api/rates?level=cell", "/api/rates?level=community", f"/api/rates?level=cell&community={other}",
        "/open311/v2/requests.json", f"/open311/v2/requests.json?service_request_id={site['cases'][0]}",
        "/api/search?q=" + site["cases"][0],
    ]


def _unsalted(page: str) -> str:
    """A page without what differs on every request (the CSP nonce, the CSRF token)."""
    return re.sub(r'(nonce|value|content)="[^"]*"', "", page)


def _leaks(body: str, site) -> list[str]:
    return [c for c in site["cases"] + site["cells"] if c in body]


@pytest.mark.parametrize("caller", ["session", "token"])
def test_guessed_codes_show_nothing_of_another_community(site, caller):
    client, headers = _callers(site)[caller]
    leaked, failed = [], []
    guesses = _guesses(site)
    assert len(guesses) >= 20
    for _route, url in guesses:
        answer = client.get(url, headers=headers)
        body = "<photo>" if answer.data.startswith(JPEG[:4]) else answer.data.decode("utf-8", "replace")
        shown = answer.status_code == 200 and (body == "<photo>" or _leaks(body, site))
        if answer.status_code >= 500 or shown:
            leaked.append(f"{url}: {answer.status_code} {answer.mimetype} {_leaks(body, site) or body[:80]}")
        elif answer.status_code not in (200, 403, 404):
            failed.append(f"{url}: {answer.status_code}")
        elif answer.status_code == 404 and "/jobs/" not in url:
            # answered as a code that does not exist would be: no oracle for guessing
            if site["mine"] in url:  # the other case's photo asked for under one's own case
                none = url.replace(f"/photos/{site['photo']}", "/photos/999999")
                nothing = client.get(none, headers=headers)
                same = nothing.status_code == 404
            else:
                guessed = [*site["cases"], *site["cells"], site["photo_case"]]
                code = next(c for c in guessed if c in url)
                nothing = client.get(url.replace(code, NO_CASE), headers=headers)
                made_up = _unsalted(nothing.get_data(as_text=True))
                same = nothing.status_code == 404 and made_up == _unsalted(body.replace(code, NO_CASE))
            if not same:
                failed.append(f"{url}: answered unlike a code that does not exist")
    for url in _lists(site):
        answer = client.get(url, headers=headers)
        body = answer.get_data(as_text=True)
        if answer.status_code >= 500 or _leaks(body, site):
            leaked.append(f"{url}: {answer.status_code} {_leaks(body, site)}")
    assert leaked == []
    assert failed == []
    # the lists are not empty for want of a case: the supervisor's own are in them
    for url in ("/api/incidents", "/api/collections/incidents/items?limit=10000",
                "/api/exports/incidents?format=csv"):
        assert site["mine"] in client.get(url, headers=headers).get_data(as_text=True), url


@pytest.mark.parametrize("caller", ["session", "token"])
def test_another_communitys_cases_cannot_be_changed(site, caller):
    client, headers = _callers(site)[caller]
    before = snapshot(site["url"], leave_out=NOISE)
    for code in site["cases"]:
        for action in ("file", "cancel", "dispatch", "handle", "close", "return", "evaluate"):
            answer = client.post(f"/api/incidents/{code}/actions", headers=headers,
                                 json={"action": action, "version": 1, "note": "guess"})
            assert answer.status_code == 404, (code, action, answer.status_code)
            # the same answer as for a case that does not exist: no oracle for guessing
            nothing = client.post(f"/api/incidents/{NO_CASE}/actions", headers=headers,
                                  json={"action": action, "version": 1, "note": "guess"})
            assert answer.get_data(as_text=True).replace(code, NO_CASE) == nothing.get_data(as_text=True)
        photo = client.post(f"/api/incidents/{code}/photos", headers=headers,
                            data={"photo": (io.BytesIO(JPEG), "x.jpg")}, content_type="multipart/form-data")
        assert photo.status_code == 404, (code, photo.status_code)
    # reporting into another community's cell, by its community code or a point inside it
    other = site["communities"][0]
    answer = client.post("/api/incidents", headers=headers,
                         json={"community": other, "category": "E01-01", "description": "guess"})
    assert answer.status_code == 403, answer.get_data(as_text=True)
    # the cells' keepers are the planners' to set
    answer = client.post("/api/grid/assignments", headers=headers,
                         json={"cell": site["cells"][0], "supervisor": "supervisor"})
    assert answer.status_code == 403
    assert snapshot(site["url"], leave_out=NOISE) == before
