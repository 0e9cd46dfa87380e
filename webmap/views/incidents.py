"""Incidents in the web app: the supervisor's case list, case page and report form (made for a
phone), the incident API (report, act, photos, duplicates nearby, supervisors' cells), rates,
exports (the commands are in :mod:`webmap.commands.incidents`).

Views parse the request and call :mod:`layers.incidents.loop`, :mod:`layers.incidents.rates` and
:mod:`layers.incidents.open311`; refusals are raised and answered by :mod:`webmap.errors` (problem
details: 400 bad input, 403 role or scope, 404 unknown or out of scope, 409 a version conflict
or a step the case's status does not allow, with the case as it is now; 413 a photo too big).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    after_this_request,
    current_app,
    jsonify,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user

from geodata import departments as depts
from geodata import incident_rows
from geodata.accounts import find_user
from geodata.errors import Forbidden, Refused
from geodata.i18n import _, in_language
from layers.incidents import departments, exports, rates
from layers.incidents import loop as incidents
from webmap import params
from webmap.auth import current_account, require
from webmap.extensions import engine
from webmap.responses import compressed_page, conditional
from webmap.security import rate_limited

bp = Blueprint("incidents", __name__)

READERS = ("admin", "planner", "supervisor", "viewer", "dispatcher", "handler")
#: who works cases: the list of cases is theirs
WORKERS = ("admin", "supervisor", "dispatcher", "handler")
#: who reads city-wide figures (rates, who holds which cell): not a department's handler, who
#: reads its own department's cases
CITY_READERS = tuple(r for r in READERS if r != "handler")
STATUS_FILTERS = {
    "open": incidents.OPEN,
    "closed": ("closed", "evaluated"),
    "cancelled": ("cancelled",),
    "overdue": incidents.OPEN,
    "needs": incidents.OPEN,  # what needs me: new, returned for rework, overdue
}


def photo_folder() -> Path:
    """Where photos are kept: ``PHOTO_DIR``, or ``instance/photos`` (never in the database)."""
    return Path(current_app.config.get("PHOTO_DIR") or Path(current_app.instance_path) / "photos")


def _date(value: str | None, what: str, end: bool = False) -> datetime | None:
    return params.day_start(value, what, end=end)


def _describe(cases: list[dict]) -> list[dict]:
    account = current_account()
    described = incidents.describe(cases, account, incidents.calendar(engine()),
                                   incidents.categories(engine()), rules=incidents.loop_rules(engine()),
                                   departments=incidents.department_table(engine()))
    # each case's cell as a person reads it (its community and number), beside the code
    names = rates.cell_names(engine(), [c.get("grid_code") for c in described])
    for c in described:
        c["grid_name"] = names.get(c.get("grid_code") or "")
    return described


def _case_dict(case: dict, **extra) -> dict:
    """A case as the API answers it (and as its page carries it inline)."""
    described = _describe([case])[0]
    if any(a["action"] == "dispatch" for a in described["actions"]):  # whom it may go to, default first
        described["department_choices"] = incidents.dispatch_choices(
            engine(), case["category"], incidents.sent_back_by(engine(), case["id"]))
    described["after_photo_required"] = case["category"] in incidents.loop_rules(engine()).after_photo
    described["may_note"] = incidents.may_note(current_account(), case)
    return {**described, **extra}


def _case_answer(case: dict, status: int = 200, **extra) -> tuple[Response, int]:
    return jsonify(_case_dict(case, **extra)), status


# --- the API --------------------------------------------------------------------------------


def _case_filters(account, args) -> dict:
    """The filters of the case list and of the case map from the query ``args`` (``status``,
    ``category``, ``from``/``to``, ``mine``, ``scope``, ``department``, ``bbox``), in the words of
    :func:`geodata.incident_rows.case_filters`: a supervisor sees their scope, a handler their
    department's cases. ``overdue`` and ``needs`` select in the database, so every count is of
    the filter's matches."""
    status = args.get("status") or None
    if status and status not in STATUS_FILTERS and status not in incidents.STATUS_LABELS:
        raise Refused(_("unknown status {status}", status=repr(status)))
    statuses = STATUS_FILTERS.get(status, (status,) if status else None)
    bbox = args.get("bbox", "").split(",") if args.get("bbox") else None
    if bbox is not None and len(bbox) != 4:
        raise Refused(_("bbox is four numbers minx,miny,maxx,maxy"))
    if bbox is not None:
        bbox = tuple(params.number(v, "bbox", -180, 180) for v in bbox)
    cells = incidents.my_cells(engine(), account) if args.get("mine") else None
    prefix = account.scope_code if account.role == "supervisor" else (args.get("scope") or None)
    now = datetime.now()
    return {
        "prefix": None if cells else prefix,
        "cells": cells,
        "statuses": statuses,
        "category": args.get("category") or None,
        "since": _date(args.get("from"), "from"),
        "until": _date(args.get("to"), "to", end=True),
        "bbox": bbox,
        "department": (account.department_code if account.role == "handler"
                       else (args.get("department") or None)),
        "overdue_at": now if status == "overdue" else None,
        "needs_at": now if status == "needs" else None,
        "open_statuses": incidents.OPEN,
        "new_status": incidents.new_status(account),
    }


@bp.get("/api/incidents")
@require(*READERS, api=True)
def api_list():
    """Cases with filters: ``status`` (open, overdue, needs, closed, cancelled or a status),
    ``category``, ``from``/``to`` (reported, dates), ``mine=1`` (a supervisor's own cells),
    ``bbox``, ``limit``. Open cases come sorted by working time left, overdue first;
    ``numberMatched`` and ``counts`` are of every case the filters select."""
    return jsonify(_list_answer(request.args))


def _list_answer(args) -> dict:
    """The case list as ``GET /api/incidents`` answers it for the query ``args`` (the list page
    carries the same answer inline, so that its first screen needs no second request)."""
    account = current_account()
    status = args.get("status") or None
    limit = min(params.whole(args.get("limit") or "5000", "limit", 1), 20000)
    filters = _case_filters(account, args)
    # the cases done with, the last closed first; the others by working time left
    ended = status in ("closed", "cancelled")
    found = incident_rows.list_incidents(engine(), limit=limit, order_due=not ended, newest_first=ended,
                                         **filters)
    described = _describe(found)
    if status in ("open", "overdue", "needs"):
        described = incidents.sort_for_supervisor(described)
    # the figures of every case the filters select, by the database: never those of a list cut
    # at the limit
    counts = incident_rows.incident_counts(engine(), now=datetime.now(), **filters)
    if account.role == "handler":  # the cases chased (督办) come first for their department
        described = incidents.sort_for_department(described)
    return {
        "incidents": described,
        "numberReturned": len(described),
        "numberMatched": counts["total"],
        "counts": counts,
        "cells": filters["cells"],
        "cell_names": rates.cell_names(engine(), filters["cells"] or []),
        "now": datetime.now().isoformat(timespec="seconds"),
    }


#: the case map pins each case of a view holding at most this many; more are drawn as groups
MAP_PINS = 1500
#: below this zoom the groups are streets (街道), from it communities (社区)
MAP_COMMUNITY_ZOOM = 13


@bp.get("/api/incidents/map")
@require(*READERS, api=True)
def api_map():
    """The city-wide case map by view: ``bbox`` (the map's view) and ``zoom`` with the filters
    of the case list. ``counts``: every case the filters select in the whole scope (not only the
    view), by the database; ``view``: those in the view. A view of at most ``MAP_PINS`` cases
    gets each case (``incidents``: code, category, status, overdue, lon, lat); a bigger one gets
    ``groups`` (per community, or per street when zoomed out: counts and a point), never a cut
    set. Sent with an ETag: the same answer again costs a 304."""
    account = current_account()
    if not request.args.get("bbox"):
        raise Refused(_("bbox is required: the map's view, minx,miny,maxx,maxy"))
    zoom = params.whole(request.args.get("zoom") or "0", "zoom", 0)
    filters = _case_filters(account, request.args)
    now = datetime.now()
    scope = {**filters, "bbox": None}
    counts = incident_rows.incident_counts(engine(), now=now, **scope)
    view = incident_rows.incident_counts(engine(), now=now, **filters)
    pins = int(current_app.config.get("CASE_MAP_PINS", MAP_PINS))
    answer: dict = {"counts": counts, "view": view, "pins_at_most": pins,
                    "status_labels": {k: _(v) for k, v in incidents.STATUS_LABELS.items()}}
    if view["total"] <= pins:
        answer["incidents"] = [
            {"code": c["code"], "category": c["category"], "status": c["status"],
             "overdue": bool(c["status"] in incidents.OPEN and c["due_at"] is not None and c["due_at"] < now),
             "lon": round(c["lon"], 6), "lat": round(c["lat"], 6)}
            for c in incident_rows.list_incidents(engine(), limit=pins, **filters)]
    else:
        group = "community" if zoom >= MAP_COMMUNITY_ZOOM else "street"
        answer["group"] = group
        answer["groups"] = incident_rows.case_groups(engine(), group, now=now, **filters)
    return conditional(json.dumps(answer, ensure_ascii=False, separators=(",", ":")),
                       headers={"Content-Type": "application/json"})


def _photo_upload():
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return None
    data = upload.read()
    return data, upload.filename


@bp.post("/api/incidents")
@rate_limited("reports")
@require(*incidents.REPORTERS, api=True)
def api_report():
    """Report a case: JSON ``{lon, lat, category, description}`` (or ``community``/``street``
    instead of lon/lat), or a form with the same fields and a ``photo``. With ``client_id`` (an
    id the phone made) it is stored once: sent again, the same case answers 200 (201 the first
    time); the same id with another report, or another account's id, is refused 409."""
    account = current_account()
    photo = None
    if request.mimetype == "multipart/form-data" or request.mimetype == "application/x-www-form-urlencoded":
        data = {k: v for k, v in request.form.items() if k != "csrf_token"}
        photo = _photo_upload()
        if photo is not None:  # refuse a bad photo before the case is stored
            photo = incidents.checked_photo(engine(), photo[0]), photo[1]
    else:
        data = params.body()
    case, duplicates = incidents.report(engine(), account, data)
    replayed = bool(case.get("replayed"))  # the same client_id again: the case stored the first time
    photos = []
    if photo is not None and replayed:
        # sent again because the first answer was lost: the photo is added unless it arrived then
        # (stored after the case, it may have failed alone)
        stored = incident_rows.photos_of(engine(), incident_rows.get_incident(engine(), case["code"])["id"])
        if any(p["uploaded_by"] == account.name for p in stored):
            photo = None
    if photo is not None:
        photos.append(
            incidents.add_photo(engine(), account, case["code"], photo[0], photo[1], photo_folder())
        )
    response, status = _case_answer(case, 200 if replayed else 201, likely_duplicates=duplicates,
                                    photos=photos)
    response.headers["Location"] = url_for("incidents.api_case", code=case["code"])
    return response, status


@bp.get("/api/incidents/duplicates")
@require(*incidents.REPORTERS, api=True)
def api_duplicates():
    """Open cases of ``category`` near ``lon``/``lat`` (what a report there would be offered)."""
    args = request.args
    category = args.get("category")
    if category not in incidents.categories(engine()):
        raise Refused(_("unknown category {category}", category=repr(category)))
    lon = incidents.checked_number(args.get("lon"), "lon", -180, 180)
    lat = incidents.checked_number(args.get("lat"), "lat", -90, 90)
    return jsonify(
        likely_duplicates=incidents.likely_duplicates(engine(), category, lon, lat, account=current_account())
    )


@bp.get("/api/incidents/place")
@require(*incidents.REPORTERS, api=True)
def api_place():
    """Where a pin at ``lon``/``lat`` is, in words (community, nearest road, cell), whether it may
    be reported there (``reportable``; else ``refusal`` says why, naming the nearest cell of the
    user's scope), and with ``category`` the open cases of that category nearby."""
    args = request.args
    account = current_account()
    lon = incidents.checked_number(args.get("lon"), "lon", -180, 180)
    lat = incidents.checked_number(args.get("lat"), "lat", -90, 90)
    found = incidents.place(engine(), lon, lat)
    refusal = None
    if not found["inside"]:
        refused = incidents.outside_cells(engine(), account, lon, lat)
        refusal = {"detail": str(refused), **refused.details}
    elif not incidents.covers(account, found):
        refused = incidents.outside_scope(engine(), account, lon, lat)
        refusal = {"detail": str(refused), **refused.details}
    category = args.get("category") or None
    nearby = incidents.nearby_open(engine(), account, category, lon, lat) if category else []
    return jsonify(place=found, reportable=refusal is None, refusal=refusal, likely_duplicates=nearby)


@bp.get("/api/incidents/basemap")
@require(*READERS, api=True)
def api_basemap():
    """The grid cells (a supervisor's within their scope) and roads in ``bbox`` as GeoJSON: the
    base the case pages draw under a pin, with or without tiles; ``case``: a case the reader may
    see, whose cell comes too (a department's handler sees no other cell)."""
    bbox = request.args.get("bbox", "").split(",")
    if len(bbox) != 4:
        raise Refused(_("bbox is four numbers minx,miny,maxx,maxy"))
    minx, miny, maxx, maxy = (params.number(v, "bbox", -180, 180) for v in bbox)
    if minx >= maxx or miny >= maxy or maxx - minx > 1 or maxy - miny > 1:
        raise Refused(_("bbox must have minx < maxx and miny < maxy, at most one degree across"))
    found = incidents.base_layers(engine(), current_account(), (minx, miny, maxx, maxy),
                                  case_code=request.args.get("case") or None)
    return jsonify({k: {"type": "FeatureCollection", "features": v} for k, v in found.items()})


@bp.post("/api/incidents/<code>/notes")
@require(*incidents.REPORTERS, api=True)
def api_note(code: str):
    """``{"note": …, "client_id": …}``: add a note to an open case (the same case seen again),
    its status and version unchanged; or a form with the same fields and the ``photo`` seen,
    stored with the note. Answers the case with its history; the same ``client_id`` again
    stores nothing and answers the same (``"replayed": true``)."""
    photo = None
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data: dict = {k: v for k, v in request.form.items() if k != "csrf_token"}
        upload = _photo_upload()
        if upload is not None:  # refused before anything is written
            incidents.visible_case(engine(), current_account(), code)
            photo = (incidents.checked_photo(engine(), upload[0]), upload[1], photo_folder())
    else:
        data = params.body()
    replayed = bool(incidents.add_note(engine(), current_account(), code, data, photo=photo).get("replayed"))
    case, steps, photos = incidents.history(engine(), current_account(), code)
    steps = _named_steps(steps)
    for p in photos:
        p["url"] = url_for("incidents.api_photo", code=code, photo_id=p["id"])
    extra = {"replayed": True} if replayed else {}
    return _case_answer(case, steps=steps, photos=photos, place=_case_place(case), **extra)


@bp.get("/api/incidents/attention")
@require(*READERS, api=True)
def api_attention():
    """What needs the caller, as the top bar counts it: ``{"new", "returned", "overdue",
    "total"}`` (``null`` for a role nothing waits on) — what a page asks again after a step."""
    return jsonify(attention_count()["attention"])


@bp.get("/api/incidents/<code>")
@require(*READERS, api=True)
def api_case(code: str):
    case, steps, photos = incidents.history(engine(), current_account(), code)
    steps = _named_steps(steps)
    for p in photos:
        p["url"] = url_for("incidents.api_photo", code=code, photo_id=p["id"])
    return _case_answer(case, steps=steps, photos=photos, place=_case_place(case))


def _named_steps(steps: list[dict]) -> list[dict]:
    """The steps with ``actor_label``: who took each, as "name（role word）" for an account
    ("inspector（监督员）"), else as stored (the demo's steps record a role word)."""
    labels: dict[str, str] = {}
    for actor in {s.get("actor") for s in steps if s.get("actor")}:
        account = find_user(engine(), name=actor)
        # each by their own role: a 监督员 (a cell) is not a 网格长 (a community or street)
        labels[actor] = _("{name} ({role})", name=actor, role=incidents.who(account)) if account else actor
    return [{**s, "actor_label": labels.get(s.get("actor") or "", s.get("actor"))} for s in steps]


def _case_place(case: dict) -> dict | None:
    """The case's place in words (None for a case without a point)."""
    if case.get("lon") is None or case.get("lat") is None:
        return None
    found = incidents.place(engine(), float(case["lon"]), float(case["lat"]))
    if case.get("location_precision") == "approximate":
        found["words"] = _("{place} (approximate location)", place=found["words"])
    return found


@bp.post("/api/incidents/<code>/actions")
@require(*READERS, api=True)
def api_act(code: str):
    """One step of the loop: ``{"action": …, "version": n, "note": …}`` (dispatch:
    ``department``; evaluate: ``evaluation``), as JSON or as a form with a ``photo`` taken with
    the step (the handling's after-photo); answers the case with its new version (409 with the
    current state when someone acted first). A step sent again with the same ``client_id`` is
    taken once and answers the case as it is now."""
    photo = None
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data: dict = {k: v for k, v in request.form.items() if k != "csrf_token"}
        if "version" in data:
            data["version"] = params.whole(data["version"], "version", 0)
        upload = _photo_upload()
        if upload is not None:  # refused before anything is written
            # who may not act on the case, or add photos, is refused before a photo is decoded
            account = current_account()
            incidents.visible_case(engine(), account, code)
            if account.role not in incidents.PHOTOGRAPHERS:
                raise Forbidden(_("a {role} may not add photos", role=incidents.who(account)))
            photo = (incidents.checked_photo(engine(), upload[0]), upload[1], photo_folder())
    else:
        data = params.body()
    case = incidents.act(engine(), current_account(), code, data, photo=photo)
    return _case_answer(case)


@bp.post("/api/incidents/<code>/photos")
@require(*incidents.PHOTOGRAPHERS, api=True)
def api_add_photo(code: str):
    photo = _photo_upload()
    if photo is None:
        raise Refused(_("send the photo as multipart/form-data field 'photo'"))
    added = incidents.add_photo(engine(), current_account(), code, photo[0], photo[1], photo_folder())
    added["url"] = url_for("incidents.api_photo", code=code, photo_id=added["id"])
    return jsonify(added), 201


@bp.get("/api/incidents/<code>/photos/<int:photo_id>")
@require(*READERS, api=True)
def api_photo(code: str, photo_id: int):
    path, content_type = incidents.photo_file(engine(), current_account(), code, photo_id, photo_folder())
    response = send_file(path, mimetype=content_type, max_age=0)
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/api/grid/assignments")
@require(*CITY_READERS, api=True)
def api_assignments():
    """Who holds which cell; a supervisor sees those within their scope."""
    account = current_account()
    prefix = account.scope_code if account.role == "supervisor" else (request.args.get("cell") or None)
    return jsonify(
        assignments=[
            {**a, "assigned_at": a["assigned_at"].isoformat(timespec="seconds")}
            for a in incident_rows.assignments(engine(), user=request.args.get("user") or None, prefix=prefix)
        ]
    )


@bp.post("/api/grid/assignments")
@require("admin", "planner", api=True)
def api_assign():
    """``{"user": name, "cells": [codes], "remove": false}``: assign a supervisor to cells."""
    data = params.body()
    held = incidents.assign_cells(
        engine(), current_account(), data.get("user"), data.get("cells"), remove=bool(data.get("remove"))
    )
    return jsonify(user=data.get("user"), cells=[a["cell_code"] for a in held])


def _rates_args():
    args = request.args
    by = args.get("by", "community")
    if by not in rates.LEVELS and by != "department":
        raise Refused(_("by must be one of {choices}", choices=", ".join((*rates.LEVELS, "department"))))
    for key in ("from", "to"):  # the days themselves, before rates counts whole months from them
        if args.get(key):
            params.day(args[key], key)
    since, until = rates.period(args.get("from"), args.get("to"))
    account = current_account()
    prefix = account.scope_code if account.role == "supervisor" else (args.get("scope") or None)
    return by, since, until, prefix


@bp.get("/api/rates")
@require(*CITY_READERS, api=True)
def api_rates():
    """结案率 and the other rates per ``by`` (cell, community, street, district) for ``from``–``to``;
    ``every=month`` adds the series over time; ``format=csv`` for a spreadsheet. ``by=department``:
    per 处置部门 the cases dispatched to it, handled, on time, overdue, sent back and chased."""
    by, since, until, prefix = _rates_args()
    if request.args.get("every") == "month" and request.args.get("series") == "only":
        # the chart's months alone: the page asks for them beside the table, not after it
        series = rates.monthly(engine(), since, until, prefix=prefix)
        answer = {"by": by, "from": since.date().isoformat(), "to": until.date().isoformat(),
                  "targets": rates.targets(engine()), "series": series}
        return conditional(json.dumps(answer, ensure_ascii=False),
                           headers={"Content-Type": "application/json"})
    if by == "department":  # the 处置部门: dispatched, on time, overdue, sent back, 督办
        table = rates.department_rates(engine(), since, until, prefix=prefix, open_statuses=incidents.OPEN)
        if request.args.get("format") == "csv":
            name = f"rates-department-{since:%Y%m%d}-{until:%Y%m%d}.csv"
            return Response(rates.department_csv(table), mimetype="text/csv",
                            headers={"Content-Disposition": f"attachment; filename={name}"})
        answer = rates.department_json(table, since, until, rates.targets(engine()))
        return conditional(json.dumps(answer, ensure_ascii=False),
                           headers={"Content-Type": "application/json"})
    table = rates.rates(engine(), by, since, until, prefix=prefix)
    if request.args.get("format") == "csv":
        body = rates.to_csv(table)
        return Response(
            body,
            mimetype="text/csv",
            headers={
                "Content-Disposition": f"attachment; filename=rates-{by}-{since:%Y%m%d}-{until:%Y%m%d}.csv"
            },
        )
    answer = rates.as_json(table, by, since, until, rates.targets(engine()))
    if request.args.get("every") == "month":
        answer["series"] = rates.monthly(engine(), since, until, prefix=prefix)
    # gzipped, and a 304 when nothing changed (a city's table by community is 300 kB of JSON)
    return conditional(json.dumps(answer, ensure_ascii=False), headers={"Content-Type": "application/json"})


@bp.get("/api/exports/<layer>")
@require(*READERS, api=True)
def api_export(layer: str):
    """Cells or incidents (with their history) as ``format=shp|gpkg|geojson|csv``."""
    if current_account().role == "handler":  # a department reads its own cases, not the city's
        raise Forbidden(_("a department's handler reads its cases at /api/incidents"))
    fmt = request.args.get("format", "gpkg")
    if layer not in ("grid_cells", "incidents") or fmt not in exports.FORMATS:
        raise Refused(_("export grid_cells or incidents as {choices}", choices=', '.join(exports.FORMATS)))
    account = current_account()
    prefix = account.scope_code if account.role == "supervisor" else (request.args.get("scope") or None)
    folder = Path(tempfile.mkdtemp(prefix="gridplan-export-"))
    after_this_request(lambda response: shutil.rmtree(folder, ignore_errors=True) or response)
    path = exports.export(engine(), layer, fmt, folder, prefix=prefix)
    return send_file(path, as_attachment=True, download_name=path.name)


# --- pages ----------------------------------------------------------------------------------


def _page_config(**extra) -> dict:
    account = current_account()
    cats = incidents.categories(engine())
    return {
        "role": account.role,
        "scope": account.scope_code,
        "user": account.name,
        "categories": {k: in_language(v.get("name", k)) for k, v in cats.items()},
        **extra,
    }


@bp.app_context_processor
def scope_words() -> dict:
    """``scope_name``: the name of the signed-in account's scope (community, street, cell) for
    the top bar, beside its code (None when it has none or the database cannot say)."""
    if not getattr(current_user, "is_authenticated", False) or not current_user.account.scope_code:
        return {"scope_name": None}
    try:
        return {"scope_name": rates.place_name(engine(), current_user.account.scope_code)}
    except Exception:  # noqa: BLE001 — the database down: the page (an error page perhaps) still renders
        return {"scope_name": None}


@bp.app_context_processor
def attention_count() -> dict:
    """``attention``: the new, returned and overdue cases of the signed-in 网格员, 指挥中心
    (dispatcher: new reports are theirs to file and dispatch), department handler (new: the
    cases dispatched to them) or administrator, for the top bar
    of every page (None for other roles and visitors)."""
    if not getattr(current_user, "is_authenticated", False):
        return {"attention": None}
    if current_user.account.role not in ("admin", "supervisor", "dispatcher", "handler"):
        return {"attention": None}
    try:
        return {"attention": incidents.attention(engine(), current_user.account)}
    except Exception:  # noqa: BLE001 — the database down: the page (an error page perhaps) still renders
        return {"attention": None}


def _iso_when(value: str | None) -> str:
    """An ISO time of the API's answers as the page writes it ("—" for none)."""
    from webmap.i18n import when

    if not value:
        return "—"
    try:
        return when(datetime.fromisoformat(value))
    except ValueError:
        return str(value)


def _time_left(case: dict) -> str:
    """What the case's clock says, in the words js/cases.js uses: time left, overdue by, closed
    late, or not started."""
    from webmap.i18n import number

    if not case["open"]:
        return _("closed late") if case.get("closed_late") else ""
    if case["hours_left"] is None:
        return _("not dispatched: the clock has not started")
    hours = abs(case["hours_left"])
    text = (_("{n} working days", n=number(hours / 8, 1)) if hours >= 8
            else _("{n} working hours", n=number(hours, 1)))
    return _("overdue by {time}", time=text) if case["overdue"] else _("{time} left", time=text)


@bp.app_context_processor
def case_page_helpers() -> dict:
    """What the case pages' server-drawn first screen writes with: times and the clock's words."""
    return {"case_when": _iso_when, "case_left": _time_left}


#: the scripts of the list page and of a case page: the messages those pages carry
LIST_SCRIPTS = ("i18n.js", "cases.js", "offline_queue.js")
CASE_SCRIPTS = (*LIST_SCRIPTS, "case_map.js")


def _page_messages(scripts: tuple[str, ...]) -> dict[str, str]:
    from webmap.i18n import current_locale, page_messages

    return page_messages(current_locale(), scripts)


@bp.get("/cases")
@require(*WORKERS)
def case_list():
    status = request.args.get("status")
    if status not in ("open", "needs", "overdue", "closed", "cancelled"):
        # the list opens on what needs me when anything does
        status = "needs" if incidents.attention(engine(), current_account())["total"] else "open"
    # "my cells" is on unless a sent filter form left it off (the form without scripts); only a
    # 网格员 holds cells and has the box, so for anyone else the page asks as its form will
    mine = current_account().role == "supervisor" and (
        request.args.get("mine") == "1" if "status" in request.args else True)
    query = {"status": status, "limit": "500", **({"mine": "1"} if mine else {})}
    # the first screen in the page itself: the list as the API answers it, drawn by the server,
    # and the same answer inline for the script (no second round trip on a slow signal)
    first = _list_answer(query)
    return compressed_page(render_template(
        "cases.html", config=_page_config(), title=_("My cases"), status=status, mine=mine, first=first,
        cells_named=", ".join(first["cell_names"].get(c, c) for c in first["cells"] or []),
        first_url=f"/api/incidents?{urlencode(query)}", page_script_messages=_page_messages(LIST_SCRIPTS)))


def _map_config() -> dict:
    """What the case pages' small maps need: the extent of the user's own cells (where the map
    opens without GPS) and the base map's tiles when one is set (tiles that fail leave the cells
    and roads drawn by the page as the base)."""
    from flask import g

    from webmap import maps
    from webmap.security import tile_sources

    account = current_account()
    cells = incidents.my_cells(engine(), account)
    prefix = account.scope_code if account.role == "supervisor" else None
    extent = incident_rows.cells_extent(engine(), prefix, cells)
    name, url, attribution, coords = maps.basemap()
    tiles = None
    if url and coords == "wgs84":  # pins are WGS 84; shifted (GCJ-02) tiles would mislead
        subdomains = "1234" if name in ("gaode", "tianditu") else "abc"
        tiles = {"url": url, "attribution": attribution, "subdomains": subdomains}
        g.tile_sources = tile_sources(url, subdomains)  # the page's img-src
    return {"extent": extent, "tiles": tiles, "myCells": cells}


@bp.get("/cases/new")
@require(*incidents.REPORTERS)
def case_new():
    return render_template("case_new.html", config=_page_config(**_map_config()), title=_("Report a case"))


@bp.get("/cases/<code>")
@require(*READERS)
def case_page(code: str):
    case, steps, photos = incidents.history(engine(), current_account(), code)
    steps = _named_steps(steps)
    for p in photos:
        p["url"] = url_for("incidents.api_photo", code=case["code"], photo_id=p["id"])
    # the case as GET /api/incidents/<code> answers it, drawn by the server and inline for the script
    first = _case_dict(case, steps=steps, photos=photos, place=_case_place(case),
                       now=datetime.now().isoformat(timespec="seconds"))
    return compressed_page(render_template(
        "case.html", config=_page_config(code=case["code"], **_map_config()), code=case["code"],
        title=_("Case {code}", code=case["code"]), first=first,
        page_script_messages=_page_messages(CASE_SCRIPTS),
    ))


@bp.get("/rates")
@require(*CITY_READERS)
def rates_page():
    return render_template("rates.html", config=_page_config(levels=list(rates.LEVELS)), title=_("Rates"))


# --- departments ----------------------------------------------------------------------------


@bp.get("/api/departments")
@require(*READERS, api=True)
def api_departments():
    """The 处置部门: code, name, categories handled, contact, own time limits, defaults
    (``category=``: only those handling it, its default first)."""
    found = depts.list_departments(engine())
    category = request.args.get("category")
    if category:
        found = depts.for_category(found, category)
    return jsonify(departments=found)


@bp.post("/api/departments")
@require("admin", api=True)
def api_save_department():
    """``{code, name, categories, contact, limits, default_for}``: add a department (201) or
    change the one with that code (200)."""
    saved, new = departments.save_department(engine(), params.body(), actor=current_account().name)
    return jsonify(saved), 201 if new else 200


# --- the installable app: its service worker -------------------------------------------------

#: what the case pages need offline, fetched by the service worker when it installs (paths under
#: static/; those of OFFLINE_IF_PRESENT when the build has them: the report form's map)
OFFLINE_ASSETS = ("css/gridplan.css", "css/cases.css", "js/i18n.js", "js/cases.js", "js/offline_queue.js",
                  "favicon.svg", "icons/icon-192.png", "icons/icon-512.png", "manifest.webmanifest")
OFFLINE_IF_PRESENT = ("js/case_map.js", "vendor/leaflet/leaflet.js", "vendor/leaflet/leaflet.css",
                      # the pin's icon (Leaflet takes it from beside its CSS, the 2x on most phones)
                      "vendor/leaflet/images/marker-icon.png", "vendor/leaflet/images/marker-icon-2x.png",
                      "vendor/leaflet/images/marker-shadow.png",
                      # the 网格员's grid map (/supervisor), readable offline too
                      "js/common.js", "js/supervisor.js", "vendor/heat/leaflet-heat.js",
                      "vendor/markercluster/leaflet.markercluster.js",
                      "vendor/markercluster/MarkerCluster.css",
                      "vendor/markercluster/MarkerCluster.Default.css")


@functools.cache
def build_hash(*folders: str) -> str:
    """The build's hash: of the path and bytes of every file in ``folders`` (the static files and
    the templates). The service worker names its cache with it, so a deploy that changes any of
    them replaces the phones' copies."""
    digest = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@bp.get("/sw.js")
def service_worker():
    """The service worker (static/sw.js with this build's hash and files), at the site's root so
    that its scope is every page; public, as the browser fetches it to look for a new build."""
    folder = Path(current_app.static_folder)
    assets = [a for a in OFFLINE_ASSETS if (folder / a).is_file()]
    assets += [a for a in OFFLINE_IF_PRESENT if (folder / a).is_file()]
    body = (folder / "sw.js").read_text(encoding="utf-8")
    build = build_hash(str(folder), str(Path(current_app.root_path) / current_app.template_folder))
    body = body.replace('"__BUILD__"', json.dumps(build)).replace(
        "__ASSETS__", json.dumps([url_for("static", filename=a) for a in assets]))
    # an ETag: the browser's look for a new build at each page costs a 304 when there is none
    response = conditional(body, headers={"Content-Type": "text/javascript; charset=utf-8"})
    response.headers["Cache-Control"] = "no-cache"  # a new build is found at the next page
    return response
