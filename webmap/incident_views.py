"""Incidents in the web app: the supervisor's case list, case page and report form (made for a
phone), the incident API (report, act, photos, duplicates nearby, supervisors' cells), rates,
exports, and the ``rates`` / ``incidents-export`` / ``open311-import`` commands.

Views parse the request and call :mod:`layers.incidents`, :mod:`layers.rates` and
:mod:`layers.open311`; refusals are raised and answered by :mod:`webmap.errors` (problem
details: 400 bad input, 403 role or scope, 404 unknown or out of scope, 409 a version conflict
or a step the case's status does not allow, with the case as it is now; 413 a photo too big).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import click
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

from geodata import incident_rows
from geodata.errors import GridplanError, Refused
from geodata.i18n import _
from layers import incident_export as exports
from layers import incidents, rates
from webmap import params
from webmap.auth import current_account, require
from webmap.cli import database_errors
from webmap.extensions import engine
from webmap.responses import conditional
from webmap.security import rate_limited

bp = Blueprint("incidents", __name__, cli_group=None)

READERS = ("admin", "planner", "supervisor", "viewer")
STATUS_FILTERS = {
    "open": incidents.OPEN,
    "closed": ("closed", "evaluated"),
    "cancelled": ("cancelled",),
    "overdue": incidents.OPEN,
}


def photo_folder() -> Path:
    """Where photos are kept: ``PHOTO_DIR``, or ``instance/photos`` (never in the database)."""
    return Path(current_app.config.get("PHOTO_DIR") or Path(current_app.instance_path) / "photos")


def _json() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused("send a JSON object (Content-Type: application/json)")
    return data


def _date(value: str | None, what: str, end: bool = False) -> datetime | None:
    return params.day_start(value, what, end=end)


def _describe(cases: list[dict]) -> list[dict]:
    account = current_account()
    return incidents.describe(cases, account, incidents.calendar(engine()), incidents.categories(engine()))


def _case_answer(case: dict, status: int = 200, **extra) -> tuple[Response, int]:
    return jsonify({**_describe([case])[0], **extra}), status


# --- the API --------------------------------------------------------------------------------


@bp.get("/api/incidents")
@require(*READERS, api=True)
def api_list():
    """Cases with filters: ``status`` (open, overdue, closed, cancelled or a status), ``category``,
    ``from``/``to`` (reported, dates), ``mine=1`` (a supervisor's own cells), ``bbox``, ``limit``.
    Open cases come sorted by working time left, overdue first."""
    account = current_account()
    args = request.args
    status = args.get("status") or None
    statuses = STATUS_FILTERS.get(status, (status,) if status else None)
    if status and status not in STATUS_FILTERS and status not in incidents.STATUS_LABELS:
        raise Refused(f"unknown status {status!r}")
    limit = min(params.whole(args.get("limit") or "5000", "limit", 1), 20000)
    bbox = args.get("bbox", "").split(",") if args.get("bbox") else None
    if bbox is not None and len(bbox) != 4:
        raise Refused("bbox is four numbers minx,miny,maxx,maxy")
    if bbox is not None:
        bbox = tuple(params.number(v, "bbox", -180, 180) for v in bbox)
    cells = incidents.my_cells(engine(), account) if args.get("mine") else None
    prefix = account.scope_code if account.role == "supervisor" else (args.get("scope") or None)
    category = args.get("category") or None
    found = incident_rows.list_incidents(
        engine(),
        prefix=None if cells else prefix,
        cells=cells,
        statuses=statuses,
        category=category,
        since=_date(args.get("from"), "from"),
        until=_date(args.get("to"), "to", end=True),
        bbox=bbox,
        limit=limit,
        order_due=True,
    )
    described = _describe(found)
    if status == "overdue":
        described = [c for c in described if c["overdue"]]
    if status in ("open", "overdue"):
        described = incidents.sort_for_supervisor(described)
    # the figures of every case the filters select, by the database: never those of a list cut
    # at the limit
    counts = incident_rows.incident_counts(
        engine(), now=datetime.now(), open_statuses=incidents.OPEN, prefix=None if cells else prefix,
        cells=cells, statuses=statuses, category=category, since=_date(args.get("from"), "from"),
        until=_date(args.get("to"), "to", end=True), bbox=bbox)
    if status == "overdue":
        counts["total"] = counts["open"] = counts["overdue"]
    return jsonify(
        incidents=described,
        numberReturned=len(described),
        numberMatched=counts["total"],
        counts=counts,
        cells=cells,
        now=datetime.now().isoformat(timespec="seconds"),
    )


def _photo_upload():
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return None
    data = upload.read()
    return data, upload.filename


@bp.post("/api/incidents")
@rate_limited("reports")
@require("admin", "supervisor", api=True)
def api_report():
    """Report a case: JSON ``{lon, lat, category, description}`` (or ``community``/``street``
    instead of lon/lat), or a form with the same fields and a ``photo``."""
    account = current_account()
    photo = None
    if request.mimetype == "multipart/form-data" or request.mimetype == "application/x-www-form-urlencoded":
        data = {k: v for k, v in request.form.items() if k != "csrf_token"}
        photo = _photo_upload()
        if photo is not None:  # refuse a bad photo before the case is stored
            if len(photo[0]) > incidents.photo_limit(engine()):
                raise incidents.PhotoTooLarge(f"the photo is {len(photo[0]) / 1048576:.1f} MB; too big")
            photo = incidents.prepare_photo(photo[0]), photo[1]
    else:
        data = _json()
    case, duplicates = incidents.report(engine(), account, data)
    photos = []
    if photo is not None:
        photos.append(
            incidents.add_photo(engine(), account, case["code"], photo[0], photo[1], photo_folder())
        )
    response, status = _case_answer(case, 201, likely_duplicates=duplicates, photos=photos)
    response.headers["Location"] = url_for("incidents.api_case", code=case["code"])
    return response, status


@bp.get("/api/incidents/duplicates")
@require("admin", "supervisor", api=True)
def api_duplicates():
    """Open cases of ``category`` near ``lon``/``lat`` (what a report there would be offered)."""
    args = request.args
    category = args.get("category")
    if category not in incidents.categories(engine()):
        raise Refused(f"unknown category {category!r}")
    lon = incidents._number(args.get("lon"), "lon", -180, 180)
    lat = incidents._number(args.get("lat"), "lat", -90, 90)
    return jsonify(
        likely_duplicates=incidents.likely_duplicates(engine(), category, lon, lat, account=current_account())
    )


@bp.get("/api/incidents/<code>")
@require(*READERS, api=True)
def api_case(code: str):
    case, steps, photos = incidents.history(engine(), current_account(), code)
    for p in photos:
        p["url"] = url_for("incidents.api_photo", code=code, photo_id=p["id"])
    return _case_answer(case, steps=steps, photos=photos)


@bp.post("/api/incidents/<code>/actions")
@require(*READERS, api=True)
def api_act(code: str):
    """One step of the loop: ``{"action": …, "version": n, "note": …}``; answers the case with
    its new version (409 with the current state when someone acted first)."""
    case = incidents.act(engine(), current_account(), code, _json())
    return _case_answer(case)


@bp.post("/api/incidents/<code>/photos")
@require("admin", "supervisor", api=True)
def api_add_photo(code: str):
    photo = _photo_upload()
    if photo is None:
        raise Refused("send the photo as multipart/form-data field 'photo'")
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
@require(*READERS, api=True)
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
    data = _json()
    held = incidents.assign_cells(
        engine(), current_account(), data.get("user"), data.get("cells"), remove=bool(data.get("remove"))
    )
    return jsonify(user=data.get("user"), cells=[a["cell_code"] for a in held])


def _rates_args():
    args = request.args
    by = args.get("by", "community")
    if by not in rates.LEVELS:
        raise Refused(f"by must be one of {', '.join(rates.LEVELS)}")
    for key in ("from", "to"):  # the days themselves, before rates counts whole months from them
        if args.get(key):
            params.day(args[key], key)
    since, until = rates.period(args.get("from"), args.get("to"))
    account = current_account()
    prefix = account.scope_code if account.role == "supervisor" else (args.get("scope") or None)
    return by, since, until, prefix


@bp.get("/api/rates")
@require(*READERS, api=True)
def api_rates():
    """结案率 and the other rates per ``by`` (cell, community, street, district) for ``from``–``to``;
    ``every=month`` adds the series over time; ``format=csv`` for a spreadsheet."""
    by, since, until, prefix = _rates_args()
    if request.args.get("every") == "month" and request.args.get("series") == "only":
        # the chart's months alone: the page asks for them beside the table, not after it
        series = rates.monthly(engine(), since, until, prefix=prefix)
        answer = {"by": by, "from": since.date().isoformat(), "to": until.date().isoformat(),
                  "targets": rates.targets(engine()), "series": series}
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
    answer = rates.add_names(engine(), rates.as_json(table, by, since, until, rates.targets(engine())))
    if request.args.get("every") == "month":
        answer["series"] = rates.monthly(engine(), since, until, prefix=prefix)
    # gzipped, and a 304 when nothing changed (a city's table by community is 300 kB of JSON)
    return conditional(json.dumps(answer, ensure_ascii=False), headers={"Content-Type": "application/json"})


@bp.get("/api/exports/<layer>")
@require(*READERS, api=True)
def api_export(layer: str):
    """Cells or incidents (with their history) as ``format=shp|gpkg|geojson|csv``."""
    fmt = request.args.get("format", "gpkg")
    if layer not in ("grid_cells", "incidents") or fmt not in exports.FORMATS:
        raise Refused(f"export grid_cells or incidents as {', '.join(exports.FORMATS)}")
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
        "categories": {k: v.get("name", k) for k, v in cats.items()},
        **extra,
    }


@bp.get("/cases")
@require("admin", "supervisor")
def case_list():
    return render_template("cases.html", config=_page_config(), title=_("My cases"))


@bp.get("/cases/new")
@require("admin", "supervisor")
def case_new():
    return render_template("case_new.html", config=_page_config(), title=_("Report a case"))


@bp.get("/cases/<code>")
@require(*READERS)
def case_page(code: str):
    case = incidents.visible_case(engine(), current_account(), code)
    return render_template(
        "case.html", config=_page_config(code=case["code"]), code=case["code"],
        title=_("Case {code}", code=case["code"])
    )


@bp.get("/rates")
@require(*READERS)
def rates_page():
    return render_template("rates.html", config=_page_config(levels=list(rates.LEVELS)), title=_("Rates"))


# --- command line ---------------------------------------------------------------------------


@bp.cli.command("rates")
@click.option("--by", type=click.Choice(rates.LEVELS), default="community", show_default=True)
@click.option("--from", "since", help="first day, YYYY-MM-DD (default: a year before --to)")
@click.option("--to", "until", help="last day, YYYY-MM-DD (default: today)")
@click.option("--scope", help="only under this code (district, street, community)")
def rates_command(by: str, since: str | None, until: str | None, scope: str | None) -> None:
    """Print the rates (结案率, 按期结案率, 返工率 …) per cell, community, street or district as JSON."""
    try:
        first, last = rates.period(since, until)
        table = rates.rates(engine(), by, first, last, prefix=scope)
    except GridplanError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(rates.as_json(table, by, first, last, rates.targets(engine())), ensure_ascii=False))


@bp.cli.command("incidents-export")
@click.argument("layer", type=click.Choice(["incidents", "grid_cells"]))
@click.option("--format", "fmt", type=click.Choice(exports.FORMATS), default="gpkg", show_default=True)
@click.option("--scope", help="only under this code")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="a folder")
def export_command(layer: str, fmt: str, scope: str | None, output: Path) -> None:
    """Export cells (with their supervisors) or incidents with their history."""
    output.mkdir(parents=True, exist_ok=True)
    click.echo(str(exports.export(engine(), layer, fmt, output, prefix=scope)))


@bp.cli.command("open311-import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=click.Choice(["boston", "nyc", "open311"]), required=True)
@click.option("--default-category", help="catalogue code for service types the mapping does not know")
@click.option(
    "--district", default="000000", show_default=True, help="district code for cases outside every area"
)
@database_errors
def open311_import(path: Path, kind: str, default_category: str | None, district: str) -> None:
    """Import 311 requests (Boston or NYC open data CSV, or Open311 JSON) into the loop."""
    from layers import open311

    try:
        result = open311.import_file(
            engine(), path, kind, default_category=default_category, district=district
        )
    except GridplanError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, ensure_ascii=False))
