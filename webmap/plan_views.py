"""Plans in the web app: the plan list, the plan map with hand edits, comparison, approval,
export — pages and their JSON API. Everything here parses a request and calls
:mod:`layers.planning`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import shapely
from flask import Blueprint, abort, after_this_request, jsonify, render_template, request, send_file, url_for
from flask_wtf.csrf import CSRFError

from geodata import jobs, plan_rows
from geodata.store import read_layer
from layers import planning
from layers.plan_io import export_plan
from layers.redistricting import PlanResult
from webmap.auth import bearer_request, current_account, require
from webmap.extensions import csrf, engine
from webmap.maps import build_map, render_map

bp = Blueprint("plans", __name__)
csrf.exempt(bp)  # checked below, except for bearer-token requests (no cookie, no CSRF risk)

EDITORS = ("admin", "planner")
READERS = ("admin", "planner", "viewer")


@bp.before_request
def _check_csrf():
    if request.method not in ("GET", "HEAD", "OPTIONS") and not bearer_request():
        csrf.protect()


@bp.errorhandler(CSRFError)
def _csrf_failed(exc):
    return jsonify(code="CSRF", description=exc.description), 400


def _body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="send a JSON object")
    return data


def _version(data: dict) -> int:
    version = data.get("version")
    if not isinstance(version, int):
        abort(400, description="version (the plan version the change starts from) is required")
    return version


@bp.errorhandler(400)
def _bad(exc):
    return jsonify(code="BadRequest", description=exc.description), 400


def _answer(fn, *args, **kwargs):
    """Run a planning call; map its refusals to HTTP answers."""
    try:
        return jsonify(fn(*args, **kwargs))
    except plan_rows.PlanNotFound as exc:
        return jsonify(code="NotFound", description=str(exc)), 404
    except plan_rows.VersionConflict as exc:
        return jsonify(code="Conflict", description=str(exc)), 409
    except planning.WorkflowError as exc:
        return jsonify(code="Forbidden", description=str(exc)), 403
    except ValueError as exc:
        return jsonify(code="InvalidParameterValue", description=str(exc)), 400


# --- pages ------------------------------------------------------------------------------------


@bp.get("/plans")
@require(*READERS)
def plan_list():
    streets = read_layer(engine(), "streets")[["code", "name"]].sort_values("code")
    return render_template("plans.html", plans=plan_rows.list_plans(engine()),
                           streets=list(streets.itertuples(index=False)), title="方案 plans")


@bp.get("/plans/<int:plan_id>")
@require(*READERS)
def plan_page(plan_id: int):
    try:
        plan = plan_rows.get_plan(engine(), plan_id)
    except plan_rows.PlanNotFound:
        abort(404)
    street = (plan["params"] or {}).get("street")
    outline = read_layer(engine(), "streets", where={"code": street} if street else None)
    m = build_map(tuple(outline.total_bounds) if len(outline) else None)
    account = current_account()
    editable = account.role in EDITORS and plan["status"] in planning.EDITABLE
    config = {"plan": {k: plan[k] for k in ("id", "name", "status", "version", "author")},
              "role": account.role, "editable": editable}
    return render_map("plan.html", m, config, plan=plan, title=f"方案 {plan['name']}")


# --- API --------------------------------------------------------------------------------------


@bp.get("/api/plans")
@require(*READERS, api=True)
def api_list():
    return jsonify(plans=[{**p, "updated_at": p["updated_at"].isoformat(timespec="seconds")}
                          for p in plan_rows.list_plans(engine())])


@bp.post("/api/plans")
@require(*EDITORS, api=True)
def api_create():
    """An automatic plan: one street at once (201), the whole district in the background (202)."""
    data = _body()
    name = str(data.get("name") or "").strip()
    if not name:
        abort(400, description="name is required")
    params = {k: data[k] for k in ("street", "minimum", "maximum", "target", "fresh", "seed") if data.get(k)}
    for key in ("minimum", "maximum", "target", "seed"):
        if key in params and not isinstance(params[key], int):
            abort(400, description=f"{key} must be a whole number")
    author = current_account().name
    if params.get("street"):
        try:
            plan_id, result = planning.auto_plan(engine(), name, author, **params)
        except ValueError as exc:
            return jsonify(code="InvalidParameterValue", description=str(exc)), 400
        return jsonify(plan_id=plan_id, scores=result.scores(),
                       url=url_for("plans.plan_page", plan_id=plan_id)), 201
    job_id = jobs.create_job(engine(), "auto_plan", {"name": name, "author": author, **params})
    return jsonify(job_id=job_id, status="queued", url=url_for("plans.api_job", job_id=job_id)), 202


@bp.get("/api/jobs/<int:job_id>")
@require(api=True)
def api_job(job_id: int):
    job = jobs.get_job(engine(), job_id)
    if job is None:
        return jsonify(code="NotFound", description=f"no job {job_id}"), 404
    return jsonify({k: (v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v)
                    for k, v in job.items()})


@bp.get("/api/plans/<int:plan_id>")
@require(*READERS, api=True)
def api_plan(plan_id: int):
    def describe():
        plan = plan_rows.get_plan(engine(), plan_id)
        s = planning.session(engine(), plan_id)
        return {**{k: v for k, v in plan.items() if k not in ("created_at", "updated_at")},
                "updated_at": plan["updated_at"].isoformat(timespec="seconds"),
                "communities": planning.community_scores(s, sorted(s.partition.households)),
                "scores": planning.plan_scores(s)}
    return _answer(describe)


@bp.get("/api/plans/<int:plan_id>/units")
@require(*READERS, api=True)
def api_units(plan_id: int):
    """The plan's units as GeoJSON, each with its community in the plan and the current one."""
    try:
        s = planning.session(engine(), plan_id)
    except plan_rows.PlanNotFound as exc:
        return jsonify(code="NotFound", description=str(exc)), 404
    units = s.units[["code", "households", "street_code", "land_use", "geometry"]].copy()
    units["community_code"] = s.partition.labels[[s.graph.position[c] for c in units["code"]]]
    units["current_code"] = s.graph.current[[s.graph.position[c] for c in units["code"]]]
    inside = units.geometry.representative_point()  # for lasso selection in the browser
    units["lon"], units["lat"] = inside.x.round(7), inside.y.round(7)
    return units.to_json(drop_id=True, to_wgs84=True), 200, {"Content-Type": "application/geo+json"}


@bp.post("/api/plans/<int:plan_id>/moves")
@require(*EDITORS, api=True)
def api_moves(plan_id: int):
    data = _body()
    units, to = data.get("units"), data.get("to")
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units) or not isinstance(to, str):
        abort(400, description="send units (a list of unit codes) and to (a community code or \"new\")")
    return _answer(planning.move_units, engine(), plan_id, units, to, _version(data), current_account().name)


@bp.post("/api/plans/<int:plan_id>/split")
@require(*EDITORS, api=True)
def api_split(plan_id: int):
    data = _body()
    line = data.get("line")
    if line is not None:
        try:
            line = shapely.LineString([(float(x), float(y)) for x, y in line])
        except (TypeError, ValueError, shapely.errors.GEOSException):
            abort(400, description="line is a list of at least two [lon, lat] points")
    return _answer(planning.split_community, engine(), plan_id, str(data.get("community", "")),
                   _version(data), current_account().name, line)


@bp.post("/api/plans/<int:plan_id>/merge")
@require(*EDITORS, api=True)
def api_merge(plan_id: int):
    data = _body()
    return _answer(planning.merge_communities, engine(), plan_id, str(data.get("keep", "")),
                   str(data.get("merge", "")), _version(data), current_account().name)


@bp.post("/api/plans/<int:plan_id>/status")
@require(*EDITORS, api=True)
def api_status(plan_id: int):
    data = _body()
    account = current_account()
    return _answer(planning.change_status, engine(), plan_id, str(data.get("action", "")), _version(data),
                   account.name, account.role, data.get("comment"))


@bp.get("/api/plans/<int:plan_id>/compare")
@require(*READERS, api=True)
def api_compare(plan_id: int):
    other = request.args.get("with", "current")
    if other != "current" and not other.isdigit():
        abort(400, description="with is current or another plan's id")
    return _answer(planning.compare, engine(), plan_id, None if other == "current" else int(other))


@bp.get("/api/plans/<int:plan_id>/export")
@require(*READERS, api=True)
def api_export(plan_id: int):
    fmt = request.args.get("format", "gpkg")
    if fmt not in ("gpkg", "shp"):
        abort(400, description="format is gpkg or shp")
    try:
        s = planning.session(engine(), plan_id)
    except plan_rows.PlanNotFound as exc:
        return jsonify(code="NotFound", description=str(exc)), 404
    folder = Path(tempfile.mkdtemp(prefix="gridplan-plan-"))
    out = export_plan(PlanResult(s.graph, s.partition, s.rules), s.units,
                      folder / f"plan-{plan_id}.{'zip' if fmt == 'shp' else 'gpkg'}")

    @after_this_request
    def _clean(response):
        out.unlink(missing_ok=True)
        folder.rmdir()
        return response

    return send_file(out, as_attachment=True, download_name=out.name)

