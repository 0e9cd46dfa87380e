"""Coverage gaps (覆盖缺口) in the web app: the gap report (page, printable
report, JSON API), the gap layers (map and export as shapefile, GeoPackage, GeoJSON or CSV),
proposed facilities and where to build next. Views parse the request and call
:mod:`layers.coverage.gaps` and :mod:`layers.coverage.siting`.

API (readers: admin, planner, viewer):

- ``GET /api/coverage/report?street=&method=auto|straight|roads`` — the whole report as JSON;
- ``GET /api/coverage/layers/<name>?street=&kind=&radius=&method=&f=geojson|gpkg|shp|csv`` — a gap
  layer (``uncovered``, ``reach``, ``blind_spots``, ``cell_problems``, ``facility_problems``,
  ``missing``);
- ``POST /api/coverage/proposal`` ``{kind, sites: [{lon, lat}], radius?, street?, method?}`` — the
  reach of ``kind`` with proposed facilities added;
- ``POST /api/coverage/sites`` ``{kind, k, radius?, street?, method?, solver?, candidates?}`` —
  where to build next, as GeoJSON.

Command line (``coverage``, ``site``): :mod:`webmap.commands.coverage`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
from flask import Blueprint, Response, after_this_request, render_template, request, send_file

from geodata.errors import NotFound, Refused
from geodata.exporter import FORMATS, ExportError, write_frame
from geodata.i18n import _
from geodata.standards import FACILITY_KINDS
from geodata.store import layer_extent, read_layer
from layers import worker
from layers.coverage import cache as coverage_cache
from layers.coverage import gaps as coverage
from layers.coverage import siting
from webmap import params
from webmap.api import job_started, job_state, start_job, visible_job
from webmap.auth import current_account, require
from webmap.extensions import coverage_memory, engine
from webmap.i18n import current_locale, facility_kind_name, life_circle
from webmap.maps import build_map, render_map
from webmap.responses import json_answer as _json

bp = Blueprint("coverage", __name__)
READERS = ("admin", "planner", "viewer")
EXTENSIONS = {"shp": "zip", "gpkg": "gpkg", "geojson": "geojson", "csv": "csv"}
MAX_PROPOSED = 200


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _text(values, key: str) -> str | None:
    value = values.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise Refused(_("{key} must be text", key=key))
    return value.strip() or None


def _radius(values) -> float | None:
    value = values.get("radius")
    if value in (None, ""):
        return None
    try:
        radius = float(value)
    except (TypeError, ValueError):
        raise Refused(_("radius must be a distance in metres, not {value}", value=repr(value))) from None
    if isinstance(value, bool) or not math.isfinite(radius) or radius <= 0:
        raise Refused(_("radius must be a distance in metres above 0, not {value}", value=repr(value)))
    return radius


def _run(values, extra: gpd.GeoDataFrame | None = None):
    standards = coverage.load_standards(engine())
    inputs = coverage.load_inputs(engine(), _text(values, "street"), standards)
    return inputs, coverage.compute_reach(inputs, standards, _text(values, "method"), extra)


# --- pages --------------------------------------------------------------------------------------


@bp.get("/coverage")
@require(*READERS)
def page():
    """The coverage map: uncovered households by kind, reach, blind spots, cell problems."""
    standards = coverage.load_standards(engine())
    rows = [{"kind": r.kind, "name": facility_kind_name(r.kind, r.name), "level": life_circle(r.level),
             "radius": r.reach_m} for r in standards]
    streets = read_layer(engine(), "streets")
    m = build_map(layer_extent(engine(), "communities") or layer_extent(engine(), "units"))
    names = {k: facility_kind_name(k) for k in FACILITY_KINDS} | {r["kind"]: r["name"] for r in rows}
    config = {"standards": rows, "roads": bool(layer_extent(engine(), "roads")), "kind_names": names,
              # each street's box (none when it has no outline): choosing a street goes to it
              "streets": [{"code": c, "name": n, "bbox": None if g is None or g.is_empty
                           else [round(float(v), 6) for v in g.bounds]}
                          for c, n, g in zip(streets["code"], streets["name"], streets.geometry,
                                             strict=True)]}
    return render_map("coverage.html", m, config, title=_("Coverage gaps"))


@bp.get("/coverage/report")
@require(*READERS)
def report_page():
    """The printable gap report: totals, coverage by street and kind with charts, findings."""
    key, street, method = _etag_key(request.args)
    prepared = _prepared(key, street, method)  # cached; a city's from the worker's job
    if isinstance(prepared, Response):
        return render_template("error.html", title=_("Coverage gap report"), message=_(
            "the coverage of this scope is being computed in the background: open this page again "
            "in a few minutes")), 202
    report = json.loads(json.dumps(prepared.report, default=_plain))  # a copy: names are set below
    streets = read_layer(engine(), "streets", **({"where": {"code": street}} if street else {}))
    names = dict(zip(streets["code"], streets["name"], strict=True))
    for row in report["reach"]:  # kinds and levels in the reader's language
        row.update(name=facility_kind_name(row["kind"], row["name"]), level=life_circle(row["level"]))
    for row in report["standards"]:
        row.update(level=life_circle(row["level"]))
    return render_template("coverage_report.html", title=_("Coverage gap report"), report=report,
                           street_names=names, chart={"reach": [
                               {"label": f"{r['name']} {r['radius_m']:g} m", "by_street": r["by_street"]}
                               for r in report["reach"]], "streets": names})


# --- API ----------------------------------------------------------------------------------------


def _etag_key(values, *parts) -> tuple[str, str | None, str | None]:
    """The state key of the scope asked (see :func:`layers.coverage.cache.state_key`) and the
    scope: a bad street is refused here, before anything is computed."""
    street, method = _text(values, "street"), _text(values, "method")
    coverage.check_street(engine(), street)
    if method not in (None, "auto", "straight", "roads"):
        raise Refused(_("method {method} is not one of auto, straight, roads", method=repr(method)))
    return coverage_cache.state_key(engine(), street, method), street, method


def _not_modified(etag: str) -> Response | None:
    """A 304 when the client holds the answer of this very state (nothing computed)."""
    if etag in request.if_none_match:
        response = Response(status=304)
        response.set_etag(etag)
        response.headers["Cache-Control"] = "private, no-cache"
        return response
    return None


def _prepared(key: str, street: str | None, method: str | None):
    """The computed scope, or a 202 naming the worker's job computing it (a city: no web
    request computes it)."""
    found = coverage_memory().remembered(key) or coverage_memory().from_jobs(key, street)
    if found is not None:
        return found
    if not coverage_cache.too_large(engine(), street):
        return coverage_memory().compute(street, method, key)
    job_id = coverage_cache.pending_job(engine(), street, method) or start_job(
        worker.COVERAGE_REPORT, {"street": street, "method": method, "by": current_account().name})
    return job_started(job_id, _("the coverage of this scope is being computed in the background"))


def _cached_json(data, etag: str, mimetype: str = "application/json") -> Response:
    response = _json(data, mimetype=mimetype, cached=True)
    response.set_etag(etag)
    return response


@bp.get("/api/coverage/report")
@require(*READERS, api=True)
def api_report():
    """The whole gap report as JSON (see :func:`layers.coverage.gaps.gap_report`); cached by the
    state of the data (ETag); a city's is computed by the worker (202 with the job meanwhile)."""
    key, street, method = _etag_key(request.args)
    etag = f"report-{key}-{current_locale()}"  # the cells' names are in the reader's language
    unchanged = _not_modified(etag)
    if unchanged is not None:
        return unchanged
    prepared = _prepared(key, street, method)
    if isinstance(prepared, Response):
        return prepared
    return _cached_json(_cell_problems_named(prepared.report), etag)


def _cell_problems_named(report: dict) -> dict:
    """The report with each grid-cell finding's codes named (``names`` beside ``codes``): a cell
    as /rates names it (its community and its number), a unit or a gap by its community (a unit
    in none by its street). The computed report, shared by every reader, is left as it is."""
    from geodata.plan_rows import place_names
    from layers.grid.cells import cell_label

    findings = (report.get("cell_problems") or {}).get("findings") or []
    wanted = {c for f in findings for c in f.get("places") or [] if c}
    if not wanted:
        return report
    streets, communities = place_names(engine(), {c for c in wanted if len(c) == 9},
                                       {c for c in wanted if len(c) == 12})
    known = {**streets, **communities}
    named = []
    for f in findings:
        names = []
        for code, place in zip(f["codes"], f.get("places") or [None] * len(f["codes"]), strict=True):
            name = known.get(place) if place else None
            names.append(cell_label(code, name) if len(str(code)) == 15 and name else name)
        named.append({**f, "names": names})
    return {**report, "cell_problems": {**report["cell_problems"], "findings": named}}


def _view_args(values) -> tuple:
    try:
        bbox = coverage_cache.parse_bbox(values.get("bbox"))
    except ValueError as exc:
        raise Refused(str(exc)) from None
    zoom = values.get("zoom")
    if zoom not in (None, ""):
        try:
            zoom = float(zoom)
        except ValueError:
            raise Refused(_("zoom must be a number, not {zoom}", zoom=repr(zoom))) from None
        if not (math.isfinite(zoom) and 0 <= zoom <= 24):
            raise Refused(_("zoom must be between 0 and 24, not {zoom}", zoom=repr(zoom)))
    else:
        zoom = None
    return bbox, zoom


def _view_layer(name: str, prepared, kind: str | None, radius: float | None, bbox, zoom,
                outlines: bool = True):
    """Gap layer ``name`` within ``bbox`` and its totals over the whole scope (``outlines=False``:
    a city's communities without their outlines, which the page has)."""
    report = prepared.report
    if name in ("uncovered", "reach") and kind is None and not prepared.whole:
        raise Refused(_("kind is required for this layer of a city on the map"))
    if name in ("uncovered", "reach") and kind is not None:
        radius = coverage_cache.check_row(prepared, kind, radius)
    if name == "uncovered" and kind is not None:
        try:
            return coverage_cache.uncovered_in_view(engine(), prepared, kind, radius, bbox, zoom, outlines)
        except KeyError:
            raise Refused(_("no row of the standards table for {kind} at {radius} m",
                            kind=kind, radius=format(radius, 'g'))) from None
    if prepared.whole:
        frame = prepared.layers.get((name, kind, radius))
        if frame is None:  # each layer computed once per state of the data
            frame = coverage.gap_layer(name, prepared.inputs, prepared.run, kind=kind, radius_m=radius)
            prepared.layers[(name, kind, radius)] = frame
        totals = {"features": len(frame)}
        if name == "uncovered":
            totals |= {"units": len(frame), "uncovered": int(frame["uncovered"].sum())}
        return coverage_cache.in_view(frame, bbox, zoom), totals
    # a city: the findings of the worker's report, drawn as points where they are
    if name == "reach":  # along the roads of a whole city: drawn for a street
        return coverage_cache.finding_points([]), {"features": 0, "by_street": True}
    findings = {"blind_spots": report["blind_spots"]["findings"], "cell_problems":
                report["cell_problems"]["findings"], "facility_problems": report["facilities"],
                "missing": [m | {"codes": [m["community"]]} for m in report["missing"]]}[name]
    frame = coverage_cache.finding_points(findings)
    if name == "facility_problems":
        for column in ("name", "problem", "floor_area_m2", "required_floor_area_m2", "households_served"):
            frame[column] = [f.get(column) for f in findings]
    elif name == "missing":
        frame["name"] = [f.get("name") for f in findings]
        frame["kinds"] = [" ".join(f.get("kinds") or []) for f in findings]
    elif name == "cell_problems":
        frame["codes"] = frame["code"]
    elif name == "blind_spots":  # names beside the codes (a report of older code has none)
        frame["street_code"] = [f.get("street") for f in findings]
        for column in coverage.PLACE_KEYS:
            frame[column] = [f.get(column) for f in findings]
    return coverage_cache.in_view(frame, bbox, zoom), {"features": len(frame)}




@bp.get("/api/coverage/layers/<name>")
@require(*READERS, api=True)
def api_layer(name: str):
    """A gap layer as GeoJSON, or exported (``f=gpkg|shp|csv``, also ``geojson`` as a file with
    ``download=1``)."""
    if name not in coverage.GAP_LAYERS:
        raise NotFound(_("no gap layer {name}; layers are: {layers}",
                         name=repr(name), layers=', '.join(coverage.GAP_LAYERS)))
    fmt = request.args.get("f") or "geojson"
    if fmt not in FORMATS:
        raise Refused(_("unknown format {fmt}: use {choices}", fmt=repr(fmt), choices=', '.join(FORMATS)))
    if fmt == "geojson" and not request.args.get("download"):
        # the map's answer: by view (bbox, zoom), cached by the state of the data
        key, street, method = _etag_key(request.args)
        bbox, zoom = _view_args(request.args)
        kind, radius = _text(request.args, "kind"), _radius(request.args)
        # outlines=page: the page has the communities' outlines (a city's shading is drawn on them)
        outlines = request.args.get("outlines") != "page"
        etag = "layer-" + hashlib.sha256(json.dumps(
            [key, name, kind, radius, bbox, zoom, outlines]).encode()).hexdigest()[:32]
        unchanged = _not_modified(etag)
        if unchanged is not None:
            return unchanged
        prepared = _prepared(key, street, method)
        if isinstance(prepared, Response):
            return prepared
        frame, totals = _view_layer(name, prepared, kind, radius, bbox, zoom, outlines)
        body = json.loads(frame.to_json(drop_id=True, na="null")) if len(frame) else \
            {"type": "FeatureCollection", "features": []}
        body["properties"] = {"layer": name, "title": _(coverage.GAP_LAYERS[name][0]), "count": len(frame),
                              "method": prepared.report["method"], "bbox": bbox, "totals": totals,
                              "whole": prepared.whole}
        return _cached_json(body, etag, "application/geo+json")
    key, street, method = _etag_key(request.args)
    prepared = coverage_memory().remembered(key)
    if prepared is None and not coverage_cache.too_large(engine(), street):
        prepared = coverage_memory().compute(street, method, key)
    if prepared is not None and prepared.whole:  # computed already: the file is written from it
        inputs, run = prepared.inputs, prepared.run
    else:  # a city's file: every unit and the reach along its roads, read for this download
        inputs, run = _run(request.args)
    frame = coverage.gap_layer(name, inputs, run, kind=_text(request.args, "kind"),
                               radius_m=_radius(request.args))
    folder = Path(tempfile.mkdtemp(prefix="gridplan-coverage-"))

    @after_this_request
    def _clean(response):
        shutil.rmtree(folder, ignore_errors=True)
        return response

    street = _text(request.args, "street")
    filename = f"{name}{'-' + street if street else ''}.{EXTENSIONS[fmt]}"
    try:
        report = write_frame(frame, coverage.GAP_LAYERS[name][1], name, fmt, folder / filename,
                             encoding=request.args.get("encoding") or "utf-8")
    except (ExportError, ValueError) as exc:
        raise Refused(_("export failed: {reason}", reason=exc)) from None
    response = send_file(folder / filename, as_attachment=True, download_name=filename)
    response.headers["X-Gridplan-Features"] = str(report.features)
    return response


@bp.post("/api/coverage/jobs")
@require(*READERS, api=True)
def api_start_job():
    """Compute the report in the background worker (a city's report): ``{street?, method?}`` →
    202 with the job's id; follow it at ``GET /api/jobs/<id>`` (its ``url``)."""
    data = params.body(optional=True)
    street, method = _text(data, "street"), _text(data, "method")
    coverage.check_street(engine(), street)
    if method not in (None, "auto", "straight", "roads"):
        raise Refused(_("method {method} is not one of auto, straight, roads", method=repr(method)))
    return job_started(start_job(worker.COVERAGE_REPORT, {"street": street, "method": method,
                                                          "by": current_account().name}))


@bp.get("/api/coverage/jobs/<int:job_id>")
@require(*READERS, api=True)
def api_job(job_id: int):
    """A report job: its status and progress, and the report once done."""
    state = job_state(current_account(), visible_job(current_account(), job_id, worker.COVERAGE_REPORT))
    if isinstance(state.get("report"), dict):  # named as /api/coverage/report names it
        state = {**state, "report": _cell_problems_named(state["report"])}
    return _json(state)


def _proposed(data: dict, kind: str) -> gpd.GeoDataFrame:
    sites = data.get("sites")
    if not isinstance(sites, list) or not sites:
        raise Refused(_("sites: give a list of {lon, lat}"))
    if len(sites) > MAX_PROPOSED:
        raise Refused(_("at most {limit} proposed sites at once", limit=MAX_PROPOSED))
    frames = []
    for i, s in enumerate(sites, 1):
        try:
            lon, lat = float(s["lon"]), float(s["lat"])
        except (TypeError, KeyError, ValueError):
            raise Refused(_("site {i}: give lon and lat as numbers", i=i)) from None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise Refused(_("site {i}: ({lon}, {lat}) is not a longitude and latitude",
                            i=i, lon=lon, lat=lat))
        frames.append(coverage.facility_point(lon, lat, kind, f"proposed-{i}"))
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=4326)


@bp.post("/api/coverage/proposal")
@require(*READERS, api=True)
def api_proposal():
    """What proposed facilities of a kind would change: households within reach before and
    after, and the units they bring within reach."""
    data = params.body()
    kind = _text(data, "kind")
    if not kind:
        raise Refused(_("kind is required"))
    standards = coverage.load_standards(engine())
    known = {r.kind for r in standards}
    if kind not in known:
        raise Refused(_("unknown facility kind {kind}; kinds: {kinds}", kind=repr(kind),
                        kinds=", ".join(sorted(known))))
    radius = _radius(data) or float(next(r.reach_m for r in standards if r.kind == kind))
    if radius > coverage.reach_limits(standards)[kind]:
        raise Refused(_("radius {radius} m is beyond the largest reach of {kind} in the standards table",
                        radius=format(radius, 'g'), kind=kind))
    proposed = _proposed(data, kind)
    inputs = coverage.load_inputs(engine(), _text(data, "street"), standards)
    method = _text(data, "method")
    run = coverage.compute_reach(inputs, standards, method)
    after = coverage.compute_reach(inputs, standards, method, extra=proposed)
    return _json(coverage.coverage_change(run, after, kind, radius))



@bp.post("/api/coverage/sites")
@require(*READERS, api=True)
def api_sites():
    """Where to build ``k`` facilities of ``kind`` (maximal covering location), as GeoJSON."""
    data = params.body()
    kind = _text(data, "kind")
    if not kind:
        raise Refused(_("kind is required"))
    k = siting.check_k(data.get("k"))
    candidates = None
    if data.get("candidates") is not None:
        try:
            frame = gpd.GeoDataFrame.from_features(data["candidates"], crs=4326)
            candidates = siting.candidates_from_frame(frame)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise Refused(_("candidates: give a GeoJSON FeatureCollection of points ({exc})",
                            exc=exc)) from None
    solver = _text(data, "solver") or "auto"
    if solver not in ("auto", "exact", "greedy"):
        raise Refused(_("solver {solver} is not one of auto, exact, greedy", solver=repr(solver)))
    if candidates is None:
        key, street, method = _etag_key(data)
        prepared = coverage_memory().remembered(key)
        if (prepared is None or not prepared.whole) and coverage_cache.too_large(engine(), street):
            # a city: the worker computes it (the greedy answer first, then the exact one)
            known = {r.kind for r in coverage.load_standards(engine())}
            if kind not in known:
                raise Refused(_("unknown facility kind {kind}; kinds: {kinds}", kind=repr(kind),
                                kinds=", ".join(sorted(known))))
            return job_started(start_job(worker.COVERAGE_SITES, {
                "kind": kind, "k": k, "radius": _radius(data), "solver": solver, "street": street,
                "method": method, "by": current_account().name}),
                _("the sites of this scope are being chosen in the background"))
        prepared = prepared or coverage_memory().compute(street, method, key)
        body = coverage_cache.sites_for(prepared.run, prepared.inputs.units, {
            "kind": kind, "k": k, "radius": _radius(data), "solver": solver, "time_limit": 20.0},
            engine=engine())
        return _json(body, mimetype="application/geo+json")
    inputs, run = _run(data)
    result, used, radius = siting.site_for(run, kind, k, radius_m=_radius(data), candidates=candidates,
                                           units=inputs.units, method=solver, time_limit=30.0)
    return _json(siting.sites_answer(result, used, kind, radius, k, run.method, engine()),
                 mimetype="application/geo+json")


@bp.get("/api/coverage/sites/jobs/<int:job_id>")
@require(*READERS, api=True)
def api_sites_job(job_id: int):
    """A siting job: its status and progress, the greedy answer as soon as it is found
    (``stage: greedy``), and the final answer with its bound once done."""
    return _json(job_state(current_account(), visible_job(current_account(), job_id, worker.COVERAGE_SITES)))
