"""Every query parameter bound, never formatted: the injection strings of
``tests/hostile_text.py`` on every filter and option of every GET route (and the string parts of
their paths), and on the JSON bodies of the write routes.

Each answer is a 2xx no wider than a harmless value's (a filter given ``' OR 1=1 --`` finds what
that literal text would, which is nothing), or a 4xx with a message; never a 5xx; and the
database holds the same rows afterwards (``snapshot``).

``PARAMETERS`` names the query parameters each route reads. The views' own code is read for
``args.get("…")`` and the like: a parameter read there and missing from the table fails the
suite, as a route missing from the access matrix does.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.hostile_text import ARRAY_FORMS
from tests.test_access_matrix import matrix_site, routes
from tests.webhelpers import csrf_token, sign_in, snapshot

#: a filter's results may be no wider than a harmless value's; an option only must not fail
FILTER, OPTION = "filter", "option"

#: method and rule → query parameter → filter or option
PARAMETERS: dict[str, dict[str, str]] = {
    "GET /login": {"next": OPTION},
    "GET /plans": {"status": FILTER, "street": FILTER, "author": FILTER},
    "GET /coverage/report": {"street": FILTER, "method": OPTION},
    "GET /admin/audit": {"actor": FILTER, "action": FILTER, "layer": FILTER, "since": OPTION,
                         "until": OPTION, "offset": OPTION},
    "GET /admin/audit.csv": {"actor": FILTER, "action": FILTER, "layer": FILTER, "since": OPTION,
                             "until": OPTION},
    "GET /api/admin/audit": {"actor": FILTER, "action": FILTER, "layer": FILTER, "since": OPTION,
                             "until": OPTION, "offset": OPTION, "limit": OPTION},
    # OGC API Features: the reserved parameters and a property filter of each kind
    "GET /api/collections/<name>/items": {
        "bbox": OPTION, "limit": OPTION, "offset": OPTION, "f": OPTION, "zoom": OPTION,
        "coords": OPTION, "datetime": OPTION, "code": FILTER, "name": FILTER, "street_code": FILTER,
        "households": FILTER},
    "GET /api/collections/<name>/items/<code>": {"coords": OPTION},
    "GET /api/search": {"q": FILTER},
    "GET /api/stats/households": {"street": FILTER},
    "GET /api/topology/communities": {"street": FILTER},
    "GET /api/layers/<layer>/export": {"format": OPTION, "encoding": OPTION, "crs": OPTION,
                                       "street": FILTER, "community": FILTER},
    "GET /api/plans": {"status": FILTER, "street": FILTER, "author": FILTER},
    # a plan of every district is worked on one district at a time (?district=)
    "GET /plans/<int:plan_id>": {"district": OPTION},
    "GET /api/plans/<int:plan_id>": {"district": OPTION},
    "GET /api/plans/<int:plan_id>/units": {"bbox": OPTION, "zoom": OPTION, "district": OPTION},
    "GET /api/plans/<int:plan_id>/outlines": {"bbox": OPTION, "zoom": OPTION, "codes": FILTER,
                                              "district": OPTION},
    "GET /api/plans/<int:plan_id>/compare": {"with": OPTION, "district": OPTION},
    "GET /api/plans/<int:plan_id>/export": {"format": OPTION, "district": OPTION},
    "GET /api/grid/problems": {"community": FILTER, "street": FILTER},
    "GET /api/grid/assignments": {"cell": FILTER, "user": FILTER},
    "GET /api/incidents": {"status": FILTER, "category": FILTER, "scope": FILTER, "from": OPTION,
                           "to": OPTION, "mine": OPTION, "bbox": OPTION, "limit": OPTION,
                           "department": FILTER},
    "GET /api/incidents/map": {"status": FILTER, "category": FILTER, "scope": FILTER, "from": OPTION,
                               "to": OPTION, "mine": OPTION, "bbox": OPTION, "zoom": OPTION,
                               "department": FILTER},
    "GET /api/incidents/place": {"category": FILTER, "lon": OPTION, "lat": OPTION},
    "GET /api/incidents/basemap": {"bbox": OPTION, "case": FILTER},
    "GET /cases": {"status": FILTER, "mine": OPTION},
    "GET /api/departments": {"category": FILTER},
    "GET /api/incidents/duplicates": {"category": FILTER, "lon": OPTION, "lat": OPTION},
    "GET /api/rates": {"by": OPTION, "from": OPTION, "to": OPTION, "scope": FILTER, "every": OPTION,
                       "format": OPTION, "series": OPTION},
    "GET /api/exports/<layer>": {"format": OPTION, "scope": FILTER},
    "GET /api/coverage/report": {"street": FILTER, "method": OPTION},
    "GET /api/coverage/layers/<name>": {"street": FILTER, "method": OPTION, "kind": FILTER,
                                        "radius": OPTION, "f": OPTION, "download": OPTION,
                                        "encoding": OPTION, "bbox": OPTION, "zoom": OPTION,
                                        "outlines": OPTION},
    "GET /open311/v2/requests.<fmt>": {"service_request_id": FILTER, "service_code": FILTER,
                                       "status": FILTER, "start_date": OPTION, "end_date": OPTION,
                                       "api_key": OPTION},
}

#: routes whose string path parts (``<code>``, ``<name>``, ``<layer>``…) are tried too
PATHS = ("GET /cases/<code>", "GET /api/incidents/<code>", "GET /api/incidents/<code>/history",
         "GET /api/collections/<name>", "GET /api/collections/<name>/items/<code>",
         "GET /api/layers/<layer>/export", "GET /api/exports/<layer>", "GET /api/coverage/layers/<name>",
         "GET /open311/v2/requests/<code>.<fmt>", "GET /open311/v2/services/<code>.<fmt>")

#: write routes and a body whose every text value is replaced by each injection string in turn
BODIES: dict[str, dict] = {
    "POST /api/plans": {"name": "x", "street": "x"},
    "POST /api/plans/<int:plan_id>/rename": {"name": "x", "version": 1},
    "POST /api/incidents": {"community": "x", "category": "x", "description": "x", "address": "x"},
    "POST /api/grid/assignments": {"user": "x", "cells": ["x"]},
    "POST /api/coverage/proposal": {"street": "x", "kind": "x", "sites": [[0, 0]]},
    "POST /api/admin/users": {"name": "x", "role": "x", "password": "x" * 12, "scope_code": "x"},
    "PUT /api/admin/settings/<key>": {"value": "x"},
}

#: a harmless value for a filter (matches nothing) — the width injection strings are held to
HARMLESS = "nothing-matches-this"

_READS = re.compile(
    r"""(?:args|values|request\.args|request\.values)\s*(?:\.get(?:list)?\(\s*|\[\s*)["']([A-Za-z_]+)["']"""
    r"""|["']([A-Za-z_]+)["']\s+in\s+(?:request\.)?args\b"""
    r"""|(?:_text|_place|_parse_int|_radius)\(\s*(?:request\.)?(?:args|values)\s*,\s*["']([A-Za-z_]+)["']""")


def parameters_read(source: str) -> set[str]:
    """The query parameter names a piece of view code reads."""
    return {next(g for g in m.groups() if g) for m in _READS.finditer(source)}


def width(answer) -> int | None:
    """How many results a JSON answer holds (``numberMatched``, or its longest list); None for
    an answer that is not a JSON list of results."""
    if not answer.is_json:
        return None
    body = answer.get_json(silent=True)
    if isinstance(body, list):
        return len(body)
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("numberMatched"), int):
        return body["numberMatched"]
    if isinstance(body.get("total"), int):
        return body["total"]
    lists = [len(v) for v in body.values() if isinstance(v, list)]
    return max(lists) if lists else None


def build(site, route: str, rule, **values) -> str:
    return rule.build({**site["values"], **site["special"].get(route, {}), **values}, append_unknown=False)[1]


def attack_site(url: str, demo) -> dict:
    """The access matrix's site, an administrator's client (sees every street) and a
    supervisor's (the scoped view)."""
    site = matrix_site(url, demo)
    app = site["app"]
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a failure is a 500 counted, not the end of the run
    app.config["UPLOAD_FOLDER"] = str(Path(url.split("///", 1)[-1]).parent / "uploads") \
        if url.startswith("sqlite") else None
    clients = {}
    for role in ("admin", "supervisor"):
        client = app.test_client()
        assert sign_in(client, role).status_code == 302
        clients[role] = (client, {"X-CSRFToken": csrf_token(client.get("/login").get_data(as_text=True))})
    site["clients"] = clients
    site["rules"] = dict(routes(app))
    return site


def try_parameters(site, strings, *, as_roles=("admin",)) -> dict:
    """Each string on each (route, parameter) of ``PARAMETERS``, on each path part of ``PATHS``
    and in the parameter's array forms: the answers by status, and the wrong ones."""
    statuses: dict[int, int] = {}
    wrong: list[str] = []
    requests = 0
    for role in as_roles:
        client, _ = site["clients"][role]
        for route, params in PARAMETERS.items():
            base = build(site, route, site["rules"][route])
            for name, kind in params.items():
                harmless = client.get(base, query_string={name: HARMLESS})
                plain = client.get(base)
                widest = width(harmless) if harmless.status_code < 300 else width(plain)
                # an empty value or a name the view does not read ("a[]") is no filter at all
                unfiltered = max(w for w in (widest, width(plain), -1) if w is not None)
                queries = [(f"{name}={quote(s, safe='')}", widest if s.strip() else unfiltered)
                           for s in strings]
                queries += [(form.format(name=name), unfiltered) for form in ARRAY_FORMS]
                for query, bound in queries:
                    answer = client.get(f"{base}?{query}")
                    requests += 1
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                    problem = _judge(answer, kind, None if bound == -1 else bound)
                    if problem:
                        wrong.append(f"{route} ?{query} as {role}: {answer.status_code} {problem}")
        for route in PATHS:
            rule = site["rules"][route]
            for s in strings:
                parts = {p: s for p in rule.arguments if p not in ("fmt", "plan_id", "job_id", "photo_id")}
                url = build(site, route, rule, **{p: quote(v, safe="") or "%20" for p, v in parts.items()})
                answer = client.get(url)
                requests += 1
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code >= 500 or (answer.status_code >= 400 and not answer.get_data()):
                    wrong.append(f"{url} as {role}: {answer.status_code}")
    return {"requests": requests, "statuses": statuses, "wrong": wrong}


def _judge(answer, kind: str, widest: int | None) -> str | None:
    if answer.status_code >= 500:
        return "a server error"
    if 400 <= answer.status_code < 500:
        return None if answer.get_data() else "a 4xx without a message"
    if kind == FILTER and widest is not None:
        got = width(answer)
        if got is not None and got > widest:
            return f"{got} results where a harmless value finds {widest}"
    return None


def try_bodies(site, strings) -> dict:
    """Each string as every text value of the write routes' JSON bodies, as an administrator
    (a supervisor for the incident report): answers by status, and the 5xx."""
    statuses: dict[int, int] = {}
    wrong: list[str] = []
    requests = 0
    for route, body in BODIES.items():
        method, _ = route.split(" ", 1)
        role = "supervisor" if route == "POST /api/incidents" else "admin"
        client, headers = site["clients"][role]
        url = build(site, route, site["rules"][route])
        for key, value in body.items():
            if not isinstance(value, str) and not isinstance(value, list):
                continue
            for s in strings:
                sent = {**body, key: [s] if isinstance(value, list) else s}
                answer = client.open(url, method=method, json=sent, headers=headers)
                requests += 1
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code >= 500:
                    wrong.append(f"{route} {key}={s!r}: {answer.status_code}")
    return {"requests": requests, "statuses": statuses, "wrong": wrong}


@pytest.fixture(scope="module")
def site(tmp_path_factory, spatialite_template, small_demo):
    path = tmp_path_factory.mktemp("inject") / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    return attack_site(f"sqlite:///{path}", small_demo)


def test_every_parameter_a_view_reads_is_in_the_table(site):
    app = site["app"]
    missing = []
    by_module: dict[str, set[str]] = {}
    for route, rule in routes(app):
        view = inspect.unwrap(app.view_functions[rule.endpoint])
        if not view.__module__.startswith("webmap"):
            continue
        read = parameters_read(inspect.getsource(view))
        if route.startswith("GET "):
            missing += [f"{route}: {name}" for name in sorted(read - PARAMETERS.get(route, {}).keys())]
        by_module.setdefault(view.__module__, set()).update(PARAMETERS.get(route, {}))
    for module, tried in by_module.items():
        source = inspect.getsource(__import__(module, fromlist=["_"]))
        # the POST routes' form fields are read the same way: those the bodies cover are left out
        body_keys = {k for body in BODIES.values() for k in body} | {"api_key", "community", "street"}
        missing += [f"{module}: {name}" for name in sorted(parameters_read(source) - tried - body_keys)]
    assert missing == [], "query parameters read but not tried: add them to PARAMETERS: " + ", ".join(
        missing)
    assert set(PATHS) <= set(site["rules"]) and set(BODIES) <= set(site["rules"])


#: the strings the suite tries (the bench tries all of INJECTION)
SAMPLE = ("' OR 1=1 --", "%", "_", "1; DROP TABLE units", "’ OR 1=1 --", "\x00",
          "99999999999999999999999999999", "NaN", "")


def test_injection_strings_on_every_filter_are_bound(site):
    before = snapshot(site["app"].config["DATABASE_URL"], leave_out=("audit_log", "rate_limits"))
    found = try_parameters(site, SAMPLE)
    assert found["wrong"] == []
    assert found["requests"] > 700
    assert snapshot(site["app"].config["DATABASE_URL"], leave_out=("audit_log", "rate_limits")) == before


def test_search_and_scope_wildcards_match_only_themselves(site):
    """``%`` and ``_`` are LIKE's wildcards: typed into a filter they are the characters
    themselves, so they match nothing here — not every street."""
    client, _ = site["clients"]["admin"]
    assert client.get("/api/search", query_string={"q": "%"}).json["results"] == []
    assert client.get("/api/search", query_string={"q": "' OR 1=1 --"}).json["results"] == []
    everything = client.get("/api/incidents").json["incidents"]
    assert everything, "the demo has cases"
    for scope in ("%", "_%", "%' OR '1'='1"):
        assert client.get("/api/incidents", query_string={"scope": scope}).json["incidents"] == []
    audit = client.get("/api/admin/audit", query_string={"actor": "%"}).json
    assert audit["total"] == 0, audit


def test_injection_strings_in_json_bodies_change_nothing_they_should_not(site):
    url = site["app"].config["DATABASE_URL"]
    strings = ("' OR 1=1 --", "1; DROP TABLE units", "\x00", '{"$gt": ""}', "%")
    found = try_bodies(site, strings)
    assert found["wrong"] == []
    # nothing was dropped or widened: every table is still there and readable
    after = snapshot(url, leave_out=("audit_log", "rate_limits"))
    assert after["units"] and after["communities"]
    assert json.dumps(sorted(found["statuses"]))
