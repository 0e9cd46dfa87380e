"""The HTTP adapter of :mod:`webmap.features` (OGC API – Features shaped), plus the small
JSON endpoints the map pages use: search, household statistics, incident history.

Responses are gzip-compressed when the client accepts it and carry an ETag, so an unchanged
layer costs a 304 (:mod:`webmap.responses`, shared with the plan API).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from geodata import jobs
from geodata.accounts import Account
from geodata.errors import NotFound, Refused
from geodata.i18n import _
from geodata.store import search_layer, unit_totals
from layers.coverage import gaps as coverage
from layers.incidents import loop as incidents
from layers.plans.communities import bounds
from webmap import features, params
from webmap.auth import current_account, require
from webmap.extensions import engine
from webmap.responses import conditional

bp = Blueprint("api", __name__, url_prefix="/api")
# strict JSON bodies and path ids in range hold for every route of the app, not only this
# blueprint's: installed once, when the app registers the API
bp.record_once(lambda state: params.install(state.app))


def _respond(result) -> Response:
    status, headers, body = result
    return conditional(body, status, headers)


def _call(fn, *args, **kwargs) -> Response:
    try:
        return _respond(fn(*args, **kwargs))
    except features.ApiError as exc:
        return _respond(features.error(exc))


def _base() -> str:
    return request.host_url.rstrip("/") + "/api"


@bp.get("/collections")
@require(api=True)
def collections():
    return _call(features.collections, engine(), _base(), current_account())


@bp.get("/collections/<name>")
@require(api=True)
def collection(name: str):
    return _call(features.collection, engine(), name, _base(), current_account())


@bp.get("/collections/<name>/items")
@require(api=True)
def items(name: str):
    return _call(features.items, engine(), name, request.args.to_dict(), _base(), current_account())


@bp.get("/collections/<name>/items/<code>")
@require(api=True)
def item(name: str, code: str):
    return _call(features.item, engine(), name, code, _base(), current_account(),
                 request.args.get("coords", "wgs84"))


@bp.get("/search")
@require("admin", "planner", "viewer", api=True)
def search():
    """Communities and streets whose name contains ``q`` or whose code starts with it."""
    q = request.args.get("q", "").strip()
    if not q:
        raise Refused("q is empty")
    found = search_layer(engine(), "streets", q) + search_layer(engine(), "communities", q)
    return jsonify(results=found[:20])


@bp.get("/stats/households")
@require("admin", "planner", "viewer", api=True)
def household_stats():
    """Households per community, for one street (``street=``) or the whole district."""
    street = request.args.get("street") or None
    if street and not (street.isdigit() and len(street) == 9):
        raise Refused("street is a 9-digit code")
    totals = unit_totals(engine(), **({"prefix": {"community_code": street}} if street else {}))
    totals = totals[totals["community_code"].notna()]
    limits = bounds(engine())
    return jsonify(street=street, minimum=limits.minimum, maximum=limits.maximum,
                   communities=[{"code": c, "households": int(h)} for c, h in
                                zip(totals["community_code"], totals["households"], strict=True)])


@bp.get("/incidents/<code>/history")
@require(api=True)
def incident_history(code: str):
    """A case's steps, oldest first, to whoever may see the case (the rule of
    ``/api/incidents/<code>``: a supervisor sees the cases in their cells and those placed only
    in a community or street under their scope)."""
    _, steps, _ = incidents.history(engine(), current_account(), code)
    return jsonify(code=code, steps=steps)


# --- background jobs ---------------------------------------------------------------------------

#: who may follow a job besides its author and the administrators: the roles that may read what
#: it computes (a coverage report, a plan). An import (its server folder, its file) is its
#: author's and the administrators' alone.
JOB_READERS: dict[str, tuple[str, ...]] = {coverage.JOB_KIND: ("planner", "viewer"),
                                          "coverage_sites": ("planner", "viewer"),
                                          "auto_plan": ("planner", "viewer"),
                                          "regenerate_cells": ("planner",)}


def start_job(kind: str, params: dict) -> int:
    """Queue a job for the caller of this request, recording who they are (``starter``: a user
    or a token, :func:`geodata.jobs.starter`) beside the name the job shows."""
    return jobs.create_job(engine(), kind, {**params, "starter": jobs.starter(current_account())})


def started_job(account: Account, job: dict) -> bool:
    """Whether ``account`` started ``job`` (a token named like a user did not start the user's)."""
    return jobs.started_by(job.get("params"), jobs.starter(account), account.name)


def may_see_job(account: Account, job: dict) -> bool:
    """Whether ``account`` may follow ``job``: its author, an administrator, or a reader of what
    it computes whose scope covers the job's (a street's job: an account of that street or
    above; a whole district's job: an account without a narrower scope)."""
    if account.role == "admin" or started_job(account, job):
        return True
    if account.role not in JOB_READERS.get(job["kind"], ()):
        return False
    area = (job.get("params") or {}).get("street")
    scope = account.scope_code
    if not scope:
        return True
    return len(scope) <= 6 if area is None else str(area).startswith(scope)


def visible_job(account: Account, job_id: int, kind: str | None = None) -> dict:
    """Job ``job_id`` (of ``kind``, when given) for those who may follow it; to anyone else
    it does not exist (404, as for an id never given)."""
    job = jobs.get_job(engine(), job_id)
    if job is None or (kind is not None and job["kind"] != kind) or not may_see_job(account, job):
        raise NotFound(_("no job {job_id}", job_id=job_id))
    return job


@bp.get("/basemap")
@require(api=True)
def basemap():
    """The city's roads and water in a view, drawn as the base when no tile base map is set."""
    return _call(features.basemap, engine(), request.args.to_dict())
