"""The HTTP adapter of :mod:`webmap.features` (OGC API – Features shaped), plus the small
JSON endpoints the map pages use: search, household statistics, incident history.

Responses are gzip-compressed when the client accepts it and carry an ETag, so an unchanged
layer costs a 304 (:mod:`webmap.responses`, shared with the plan API).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, request

from geodata import jobs
from geodata.accounts import Account
from geodata.errors import NotFound, Refused
from geodata.i18n import _
from geodata.store import search_layer, unit_totals
from layers import worker
from layers.coverage import cache as coverage_cache
from layers.incidents import loop as incidents
from layers.onboarding.imports import read_progress
from layers.plans.communities import bounds
from webmap import features, params
from webmap.auth import current_account, require
from webmap.errors import problem
from webmap.extensions import engine
from webmap.responses import conditional, json_answer

bp = Blueprint("api", __name__, url_prefix="/api")
# strict JSON bodies and path ids in range hold for every route of the app, not only this
# blueprint's: installed once, when the app registers the API
bp.record_once(lambda state: params.install(state.app))


def _respond(result) -> Response:
    status, headers, body = result
    return conditional(body, status, headers)


#: the problem titles of the layer API's statuses
API_TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found"}


def _call(fn, *args, **kwargs) -> Response:
    """The layer API function's answer; its errors as problem details like every ``/api/``
    route's (``code`` the OGC API exception code: ``InvalidParameterValue``, ``NotFound`` …)."""
    try:
        return _respond(fn(*args, **kwargs))
    except features.ApiError as exc:
        return problem(exc.status, API_TITLES.get(exc.status, "Bad Request"), exc.description, exc.code)


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
        raise Refused(_("q is empty"))
    found = search_layer(engine(), "streets", q) + search_layer(engine(), "communities", q)
    return jsonify(results=found[:20])


@bp.get("/stats/households")
@require("admin", "planner", "viewer", api=True)
def household_stats():
    """Households per community, for one street (``street=``) or the whole district."""
    street = request.args.get("street") or None
    if street and not (street.isdigit() and len(street) == 9):
        raise Refused(_("street is a 9-digit code"))
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
JOB_READERS: dict[str, tuple[str, ...]] = {worker.COVERAGE_REPORT: ("planner", "viewer"),
                                          worker.COVERAGE_SITES: ("planner", "viewer"),
                                          worker.AUTO_PLAN: ("planner", "viewer"),
                                          worker.REGENERATE_CELLS: ("planner",)}


def start_job(kind: str, params: dict) -> int:
    """Queue a job for the caller of this request, recording who they are (``starter``: a user
    or a token, :func:`geodata.jobs.starter`) beside the name the job shows."""
    return worker.queue(engine(), kind, {**params, "starter": jobs.starter(current_account())})


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


def job_state(account: Account, job: dict) -> dict:
    """The one shape of a background job, whatever its kind, as ``GET /api/jobs/<id>`` answers
    it and as every "job started" answer (202) gives it: ``job`` (its id), ``kind``, ``status``
    (queued, running, done, failed), ``progress`` (0–1), ``message``, ``url`` (where to follow
    it), ``result`` once there is one, ``id`` (= ``job``) and its times; ``params`` and
    ``worker`` for its author and administrators only (a server folder, who started it). What a
    kind adds: an import its ``layer``, ``file``, ``mode``, ``phase`` (checking, writing
    ``done``/``total``); a coverage report its ``report``; a siting job its ``stage`` (greedy,
    final) and ``sites``."""
    state = {"job": job["id"], "kind": job["kind"], "status": job["status"],
             "progress": job.get("progress") or 0.0, "message": job.get("message"),
             "url": f"/api/jobs/{job['id']}", **job}
    if job["status"] == "queued":  # told in the reader's language, as it stands now
        state["message"] = jobs.waiting(engine(), job)
    if account.role != "admin" and not started_job(account, job):
        # a job's parameters (a server folder, who started it) are for its author and admins
        state = {k: v for k, v in state.items() if k not in ("params", "worker")}
    params, result = job.get("params") or {}, job.get("result")
    if job["kind"] == worker.LAYER_IMPORT:  # an import is its author's and the admins' alone
        state |= {"layer": params.get("layer"), "file": params.get("file"),
                  "mode": params.get("mode"), "progress": 0.0, "phase": "queued"}
        if job["status"] == "running":
            seen = read_progress(Path(params["folder"])) or {"phase": "checking"}
            state["phase"] = seen.get("phase", "checking")
            if state["phase"] == "writing" and seen.get("total"):
                state["done"], state["total"] = int(seen["done"]), int(seen["total"])
                state["progress"] = 0.1 + 0.85 * state["done"] / state["total"]
            else:
                state["progress"] = 0.05
        elif job["status"] in ("done", "failed"):
            state["phase"], state["progress"] = job["status"], 1.0
    elif job["kind"] == worker.COVERAGE_REPORT:
        report = result if job["status"] == "done" else None
        if isinstance(report, dict):  # what the cache keeps beside the report is not the report
            report = {k: v for k, v in report.items() if k not in coverage_cache.CACHE_KEYS}
        state["report"] = report
        state.pop("result", None)  # the report is the result, without what only the cache reads
    elif job["kind"] == worker.COVERAGE_SITES:
        sites = result if job["status"] in ("running", "done") else None
        state["stage"] = "final" if job["status"] == "done" else (sites or {}).get("stage")
        state["sites"] = sites
        state.pop("result", None)  # the sites are the result
    return state


def job_started(job_id: int, message: str | None = None) -> Response:
    """The answer to a request that queued job ``job_id`` (or found it queued): 202 and the
    job's state (:func:`job_state`), to be followed at its ``url``; ``message`` says what it
    does while it has no message of its own."""
    account = current_account()
    state = job_state(account, visible_job(account, job_id))
    if message and not state["message"]:
        state["message"] = message
    return json_answer(state, 202)


@bp.get("/jobs/<int:job_id>")
@require(api=True)
def job(job_id: int):
    """A background job of any kind (a plan, an import, a coverage report, sites, cells
    regenerated), to whoever may follow it (:func:`may_see_job`), in one shape
    (:func:`job_state`)."""
    account = current_account()
    return json_answer(job_state(account, visible_job(account, job_id)))


@bp.get("/basemap")
@require(api=True)
def basemap():
    """The city's roads and water in a view, drawn as the base when no tile base map is set."""
    return _call(features.basemap, engine(), request.args.to_dict())
