"""Plans in the web app: the plan list, the plan map with hand edits, comparison, approval,
rebase, export — pages and their JSON API. Each view parses the request and asks
:mod:`layers.plans.edits` or :mod:`layers.plans.workflow` in domain terms; refusals are raised and
answered by :mod:`webmap.errors`."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import shapely
from flask import Blueprint, after_this_request, render_template, request, send_file, url_for

from geodata import plan_rows
from geodata.catalog import is_code
from geodata.errors import Refused
from geodata.i18n import N_, _
from geodata.store import read_layer
from layers import worker
from layers.plans import adoption
from layers.plans import documents as plan_documents
from layers.plans import edits as plan_edits
from layers.plans import workflow as plan_workflow
from layers.plans.communities import bounds
from webmap import params as parse
from webmap.api import job_started, start_job
from webmap.auth import current_account, require
from webmap.extensions import engine, plans
from webmap.maps import build_map, render_map
from webmap.responses import conditional, json_answer
from webmap.security import body_limit

bp = Blueprint("plans", __name__)

EDITORS = ("admin", "planner")
READERS = ("admin", "planner", "viewer")
LABELS = {"submit": N_("Submit"), "approve": N_("Approve"), "reject": N_("Reject"), "adopt": N_("Adopt"),
          "rebase": N_("Rebase on the current boundaries")}
STATUSES = ("draft", "submitted", "approved", "rejected", "adopted")
#: a plan edit may name every unit of a street (a city street: ~20,000 codes of ~25 bytes)
PLAN_EDIT_LIMIT_KB = 2048
#: the most households a plan's bounds may name (a community of a million households is none)
MAX_HOUSEHOLDS = 1_000_000


def jsonify(*args, **kwargs):
    """Strict JSON (:func:`webmap.responses.json_answer`), compressed with an ETag when large."""
    return json_answer(args[0] if args else kwargs, cached=True)


def _created(data: dict):
    response = jsonify(data)
    response.status_code = 201
    return response


def _version(data: dict) -> int:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Refused(_("version (the plan version the change starts from) is required"))
    return version


# --- pages ------------------------------------------------------------------------------------


@bp.get("/plans")
@require(*READERS)
def plan_list():
    streets = read_layer(engine(), "streets")[["code", "name"]].sort_values("code")
    chosen = _filters()
    authors = sorted({p["author"] for p in plan_rows.list_plans(engine())})
    return render_template("plans.html", plans=plan_rows.list_plans(engine(), **chosen), chosen=chosen,
                           role=current_account().role,
                           statuses=STATUSES, authors=authors,
                           street_names=dict(zip(streets["code"], streets["name"], strict=True)),
                           streets=list(streets.itertuples(index=False)), title=_("Plans"))


def _filters() -> dict:
    """The plan list's filters from the query string: status, author, street."""
    status = request.args.get("status") or None
    if status and status not in STATUSES:
        raise Refused(_("status is one of {choices}", choices=', '.join(STATUSES)))
    street = request.args.get("street") or None
    if street and not (street.isdigit() and len(street) == 9):
        raise Refused(_("street is a 9-digit code"))
    return {"status": status, "author": request.args.get("author") or None, "street": street}


@bp.get("/plans/<int:plan_id>")
@require(*READERS)
def plan_page(plan_id: int):
    plan = plan_rows.get_plan(engine(), plan_id)
    street = (plan["params"] or {}).get("street")
    district = _district(plan_id)  # a plan of every district: the one district this page works on
    outline = read_layer(engine(), "streets", where={"code": street}) if street else \
        read_layer(engine(), "districts", where={"code": district}) if district else \
        read_layer(engine(), "streets")
    m = build_map(tuple(outline.total_bounds) if len(outline) else None)
    account = current_account()
    stale = plan_workflow.stale_changes(plans(), plan) if plan["status"] != "adopted" else None
    actions = plan_workflow.allowed_actions(plan, account.role, stale is not None)
    config = {"plan": {k: plan[k] for k in ("id", "name", "status", "version", "author")},
              "role": account.role, "editable": "edit" in actions,
              "actions": [{"action": a, "label": _(LABELS[a]), "confirm": a == "adopt"}
                          for a in actions if a in LABELS],
              "documentActions": plan_documents.document_actions(plan, account.role, account.name),
              "timeline": plan_documents.timeline(plans(), plan_id),
              "stale": stale,
              "adoption": plan.get("adoption"),
              "regenerate": plan["status"] == "adopted" and account.role in EDITORS,
              "district": district, "districts": plan_documents.districts(plans(), plan),
              "reasonMax": adoption.REASON_MAX}
    return render_map("plan.html", m, config, plan=plan, title=_("Plan {name}", name=plan['name']))


# --- API --------------------------------------------------------------------------------------


@bp.get("/api/plans")
@require(*READERS, api=True)
def api_list():
    return jsonify(plans=[{**p, "updated_at": p["updated_at"].isoformat(timespec="seconds")}
                          for p in plan_rows.list_plans(engine(), **_filters())])


@bp.post("/api/plans")
@require(*EDITORS, api=True)
def api_create():
    """An automatic plan: one street at once (201), the whole district in the background (202)."""
    data = parse.body()
    name = str(data.get("name") or "").strip()
    if not name:
        raise Refused(_("name is required"))
    params = {k: data[k] for k in ("street", "minimum", "maximum", "target", "fresh", "seed") if data.get(k)}
    for key, high in (("minimum", MAX_HOUSEHOLDS), ("maximum", MAX_HOUSEHOLDS), ("target", MAX_HOUSEHOLDS),
                      ("seed", 2**32 - 1)):
        if key in params:
            params[key] = parse.whole(params[key], key, 1, high)
    if not isinstance(params.get("fresh", False), bool):
        raise Refused(_("fresh is true or false"))
    limits = bounds(engine())  # the city's bounds stand in for the one not given
    low, high = params.get("minimum", limits.minimum), params.get("maximum", limits.maximum)
    if low > high:
        raise Refused(_("minimum {low} is above maximum {high}", low=low, high=high))
    street = params.get("street")
    if street is not None and not (isinstance(street, str) and is_code(street, 9)):
        raise Refused(_("street is a 9-digit code"))
    author = current_account().name
    if params.get("street"):
        plan_id, result = plan_workflow.auto_plan(plans(), name, author, **params)
        return _created({"plan_id": plan_id, "scores": result.scores(),
                         "url": url_for("plans.plan_page", plan_id=plan_id)})
    return job_started(start_job(worker.AUTO_PLAN, {"name": name, "author": author, **params}))


@bp.get("/api/plans/<int:plan_id>")
@require(*READERS, api=True)
def api_plan(plan_id: int):
    """The plan, every community's figures, name, neighbours and colour, what the user may do."""
    described = plan_documents.describe(plans(), plan_id, _district(plan_id))
    stale = plan_workflow.stale_changes(plans(), described) if described["status"] != "adopted" else None
    account = current_account()
    described["stale"] = stale
    described["actions"] = plan_workflow.allowed_actions(described, account.role, stale is not None)
    described["document_actions"] = plan_documents.document_actions(described, account.role, account.name)
    return jsonify(described)


@bp.delete("/api/plans/<int:plan_id>")
@require(*EDITORS, api=True)
def api_delete(plan_id: int):
    """Delete a draft (its author or an admin), naming the version it was seen at."""
    account = current_account()
    data = parse.body()
    return jsonify(plan_documents.delete(plans(), plan_id, _version(data), account.name, account.role))


def _district(plan_id: int) -> str | None:
    """The district of a plan of every district this request works on (``?district=``; by
    default its first): such a plan is opened and edited one district at a time, so that no
    page process holds a province (:func:`layers.plans.documents.district_of_page`). None for a
    plan worked on whole."""
    asked = request.args.get("district") or None
    if asked is not None and not (asked.isascii() and asked.isalnum() and len(asked) <= 12):
        raise Refused(_("district is a district's code"))
    return plan_documents.district_of_page(plans(), plan_rows.get_plan(engine(), plan_id), asked)


def _view() -> tuple[tuple[float, float, float, float] | None, float | None]:
    """``bbox`` (west,south,east,north in degrees) and ``zoom`` from the query string."""
    bbox, zoom = request.args.get("bbox"), request.args.get("zoom")
    try:
        box = tuple(float(v) for v in bbox.split(",")) if bbox else None
        level = float(zoom) if zoom else None
    except ValueError:
        raise Refused(_("bbox is west,south,east,north in degrees and zoom a number")) from None
    if box is not None and (len(box) != 4 or not all(map(math.isfinite, box)) or box[0] > box[2]
                            or box[1] > box[3]):
        raise Refused(_("bbox is west,south,east,north in degrees"))
    if level is not None and not 0 <= level <= 24:
        raise Refused(_("zoom is between 0 and 24"))
    return box, level


@bp.get("/api/plans/<int:plan_id>/units")
@require(*READERS, api=True)
def api_units(plan_id: int):
    """The plan's units as GeoJSON (within ``bbox``, simplified for ``zoom``, when given), each
    with its community in the plan and the current one; gzipped, with an ETag."""
    box, zoom = _view()
    return conditional(plan_documents.units_in_view(plans(), plan_id, box, zoom, _district(plan_id)),
                       headers={"Content-Type": "application/geo+json"})


@bp.get("/api/plans/<int:plan_id>/outlines")
@require(*READERS, api=True)
def api_outlines(plan_id: int):
    """The plan's communities as outlines simplified for ``zoom``, with a point for each label;
    ``codes=A,B``: only those communities (what an edit changed)."""
    _box, zoom = _view()
    codes = request.args.get("codes")
    wanted = None
    if codes is not None:
        wanted = [c.strip() for c in codes.split(",") if c.strip()]
        if len(wanted) > 5000 or any(len(c) > 32 for c in wanted):
            raise Refused(_("codes: at most 5000 community codes, separated by commas"))
    return conditional(plan_documents.outlines(plans(), plan_id, zoom, wanted, _district(plan_id)),
                       headers={"Content-Type": "application/geo+json"})


@bp.get("/api/plans/<int:plan_id>/timeline")
@require(*READERS, api=True)
def api_timeline(plan_id: int):
    return jsonify(timeline=plan_documents.timeline(plans(), plan_id))


@bp.post("/api/plans/<int:plan_id>/rename")
@require(*EDITORS, api=True)
def api_rename(plan_id: int):
    data = parse.body()
    account = current_account()
    return jsonify(plan_documents.rename(plans(), plan_id, str(data.get("name") or ""), _version(data),
                                         account.name, account.role))


@bp.post("/api/plans/<int:plan_id>/duplicate")
@require(*EDITORS, api=True)
def api_duplicate(plan_id: int):
    data = parse.body(optional=True)
    copied = plan_documents.duplicate(plans(), plan_id, data.get("name"), current_account().name)
    return _created({**copied, "url": url_for("plans.plan_page", plan_id=copied["plan_id"])})


@bp.post("/api/plans/<int:plan_id>/communities/<code>/name")
@require(*EDITORS, api=True)
def api_name(plan_id: int, code: str):
    data = parse.body()
    named = plan_documents.name_community(plans(), plan_id, code, str(data.get("name") or ""),
                                          _version(data), current_account().name, _district(plan_id))
    # naming is a step of the plan's history too: the page's undo and redo follow it
    return jsonify({**named, "history": plan_rows.step_counts(engine(), plan_id)})


@bp.post("/api/plans/<int:plan_id>/moves")
@body_limit(PLAN_EDIT_LIMIT_KB)
@require(*EDITORS, api=True)
def api_moves(plan_id: int):
    data = parse.body()
    units, to = data.get("units"), data.get("to")
    if not isinstance(units, list) or not all(isinstance(u, str) for u in units) or not isinstance(to, str):
        raise Refused(_("send units (a list of unit codes) and to (a community code or \"new\")"))
    return jsonify(plan_edits.move_units(plans(), plan_id, units, to, _version(data), current_account().name,
                                         district=_district(plan_id)))


@bp.post("/api/plans/<int:plan_id>/split")
@body_limit(PLAN_EDIT_LIMIT_KB)
@require(*EDITORS, api=True)
def api_split(plan_id: int):
    data = parse.body()
    line = data.get("line")
    if line is not None:
        try:
            line = shapely.LineString([(float(x), float(y)) for x, y in line])
        except (TypeError, ValueError, shapely.errors.GEOSException):
            raise Refused(_("line is a list of at least two [lon, lat] points")) from None
    return jsonify(plan_edits.split_community(plans(), plan_id, str(data.get("community", "")),
                                              _version(data), current_account().name, line,
                                              _district(plan_id)))


@bp.post("/api/plans/<int:plan_id>/merge")
@require(*EDITORS, api=True)
def api_merge(plan_id: int):
    data = parse.body()
    return jsonify(plan_edits.merge_communities(plans(), plan_id, str(data.get("keep", "")),
                                                str(data.get("merge", "")), _version(data),
                                                current_account().name, _district(plan_id)))


@bp.post("/api/plans/<int:plan_id>/undo")
@require(*EDITORS, api=True)
def api_undo(plan_id: int):
    """Take back the plan's newest edit (any kind); 409 when the version is stale or nothing
    is left to undo."""
    return jsonify(plan_edits.replay(plans(), plan_id, _version(parse.body()), current_account().name,
                                     backwards=True, district=_district(plan_id)))


@bp.post("/api/plans/<int:plan_id>/redo")
@require(*EDITORS, api=True)
def api_redo(plan_id: int):
    """Make the edit undone last again; 409 when the version is stale or nothing is undone."""
    return jsonify(plan_edits.replay(plans(), plan_id, _version(parse.body()), current_account().name,
                                     backwards=False, district=_district(plan_id)))


@bp.post("/api/plans/<int:plan_id>/status")
@require(*EDITORS, api=True)
def api_status(plan_id: int):
    data = parse.body()
    account = current_account()
    return jsonify(plan_workflow.change_status(plans(), plan_id, str(data.get("action", "")), _version(data),
                                               account.name, account.role, data.get("comment"),
                                               data.get("reason")))


@bp.get("/api/plans/<int:plan_id>/adoption")
@require(*READERS, api=True)
def api_adoption(plan_id: int):
    """What adopting the plan would do, as data: streets, communities created, retired, renamed
    and changed (households before → after), households moved, cells that would straddle or
    carry a retired code, supervisors whose cells change, open cases in them, rules broken."""
    return jsonify(adoption.adoption_preview(plans(), plan_id))


@bp.post("/api/plans/<int:plan_id>/regenerate-cells")
@require(*EDITORS, api=True)
def api_regenerate_cells(plan_id: int):
    """Regenerate the cells of the communities an adopted plan touched, in the background (202,
    with the job to follow); refused before adoption."""
    plan = plan_rows.get_plan(engine(), plan_id)
    if plan["status"] != "adopted":
        raise Refused(_("plan {plan_id} is {status}: cells are regenerated after adoption",
                        plan_id=plan_id, status=plan["status"]))
    return job_started(start_job(worker.REGENERATE_CELLS,
                                 {"plan_id": plan_id, "author": current_account().name}))


@bp.post("/api/plans/<int:plan_id>/rebase")
@require(*EDITORS, api=True)
def api_rebase(plan_id: int):
    data = parse.body()
    return jsonify(plan_workflow.rebase(plans(), plan_id, _version(data), current_account().name))


@bp.get("/api/plans/<int:plan_id>/compare")
@require(*READERS, api=True)
def api_compare(plan_id: int):
    other = request.args.get("with", "current")
    # ASCII digits, as many as an id can have (``isdigit`` would let "²" and 30 digits through)
    if other != "current" and not (other.isascii() and other.isdigit() and len(other) <= 18):
        raise Refused(_("with is current or another plan's id"))
    return jsonify(plan_edits.compare(plans(), plan_id, None if other == "current" else int(other),
                                      _district(plan_id)))


@bp.get("/api/plans/<int:plan_id>/export")
@require(*READERS, api=True)
def api_export(plan_id: int):
    folder = Path(tempfile.mkdtemp(prefix="gridplan-plan-"))
    try:
        out = plan_edits.export(plans(), plan_id, request.args.get("format", "gpkg"), folder,
                                _district(plan_id))
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    @after_this_request
    def _clean(response):
        shutil.rmtree(folder, ignore_errors=True)
        return response

    return send_file(out, as_attachment=True, download_name=out.name)
