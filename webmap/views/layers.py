"""The layers page: every layer's count, extent, last change and who made it; import from the
browser with a preview, and export with the command line's options — pages and their JSON API.

Import runs in two steps, through the import service (:mod:`layers.onboarding.imports`).
``preview`` saves the upload in a folder of its own under the instance folder, reads and checks
it (:func:`layers.onboarding.imports.preview` — the command line's own checks and messages,
nothing written) and answers with the first rows, the source columns, the field mapping the import
will use and every problem found. ``import`` then queues a background job that runs
:func:`layers.onboarding.imports.import_layer` on that folder (one transaction, all or nothing,
recorded in the audit log under the user's name) and deletes it; the page follows the job's
progress.
A job rather than the request, because a city's layer takes longer to import than a web worker
may spend on one request (gunicorn stops it after 30 s); small files finish within a second or
two of polling all the same.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, after_this_request, current_app, render_template, request, send_file

from geodata import audit_words, jobs
from geodata import crs as crs_mod
from geodata.catalog import LAYERS, get_layer
from geodata.errors import NotFound, Refused
from geodata.exporter import ENCODINGS, FORMATS, ExportError
from geodata.i18n import N_, _, speaks_english
from geodata.layer_info import code_exists, code_names, layer_overview
from geodata.standards import FACILITY_KIND_LABELS
from layers import worker
from layers.exports import export_recorded
from layers.onboarding import imports
from layers.onboarding.imports import MODES
from webmap import params as parse
from webmap.api import job_started, job_state, start_job, visible_job
from webmap.auth import current_account, require
from webmap.errors import problem
from webmap.extensions import engine
from webmap.i18n import facility_kind_name
from webmap.responses import json_answer as _json

bp = Blueprint("layers", __name__)

EDITORS = ("admin", "planner")
READERS = ("admin", "planner", "viewer")
EXTENSIONS = {"shp": "zip", "gpkg": "gpkg", "geojson": "geojson", "csv": "csv"}
FORMAT_LABELS = {"shp": "Shapefile (zip)", "gpkg": "GeoPackage", "geojson": "GeoJSON", "csv": "CSV (Excel)"}
MODE_LABELS = {"append": N_("Append: add new features; codes already stored are refused"),
               "replace": N_("Replace: the file replaces the whole layer"),
               "update": N_("Update: change the features with these codes; unknown codes are refused")}


@bp.errorhandler(413)
def _too_big(_exc):
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return problem(413, "Payload Too Large",
                   _("the file is larger than the upload limit of {limit}: split it, or import it with the "
                     "command line", limit=_megabytes(limit)))


def _megabytes(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:,.0f} KB"


# --- the page -----------------------------------------------------------------------------------


def _worded(layer: dict) -> dict:
    """A layer's name and fields as the page's reader names them: the catalogue's Chinese labels
    (the shapefile's alias table), or in English the layer's English name and each field's name
    in words (``community code``)."""
    if not speaks_english():
        return {"label": layer["label"], "fields": layer["fields"]}
    return {"label": audit_words.layer_name(layer["name"]),
            "fields": [f | {"label": f["name"].replace("_", " ")} for f in layer["fields"]]}


@bp.get("/layers")
@require(*READERS)
def layer_list():
    account = current_account()
    overview = layer_overview(engine())
    config = {
        "canImport": account.role in EDITORS,
        "maxUpload": current_app.config.get("MAX_CONTENT_LENGTH"),
        "maxUploadText": _megabytes(current_app.config.get("MAX_CONTENT_LENGTH") or 0),
        "layers": {row["name"]: _worded(row) for row in overview},
        # a file's facility kinds (service_centre …) shown by their names in the preview
        "facilityKinds": {kind: facility_kind_name(kind) for kind in FACILITY_KIND_LABELS},
    }
    districts = code_names(engine(), "districts")
    return render_template("layers.html", layers=overview, config=config,
                           modes={k: _(v) for k, v in MODE_LABELS.items()}, formats=FORMAT_LABELS,
                           encodings=list(ENCODINGS), districts=districts, title=_("Layers"),
                           layer_name=audit_words.layer_name, action_name=audit_words.action_name,
                           actor_name=audit_words.actor_name)


@bp.get("/api/layers")
@require(*READERS, api=True)
def api_layers():
    """Every layer's count, extent (degrees) and last change (``at actor action``, with the actor
    and the action also in words)."""
    rows = layer_overview(engine())
    for row in rows:  # the action and the actor in words beside their keys
        if row.get("last_change"):
            row["last_change"] = {**row["last_change"],
                                  "action_name": audit_words.action_name(row["last_change"]["action"]),
                                  "actor_name": audit_words.actor_name(row["last_change"]["actor"])}
    return _json({"layers": [{k: v for k, v in row.items() if k != "fields"} for row in rows]})


@bp.get("/api/layers/places")
@require(*READERS, api=True)
def api_places():
    """Streets and communities (code and name) to export a part of a layer."""
    return _json({"streets": code_names(engine(), "streets"),
                  "communities": code_names(engine(), "communities")})


# --- uploads ------------------------------------------------------------------------------------


def _upload_root() -> Path:
    root = Path(current_app.config.get("UPLOAD_FOLDER") or Path(current_app.instance_path) / "uploads")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _save_upload(file, actor: str) -> tuple[str, Path, dict]:
    return imports.save_upload(_upload_root(), file, actor, jobs.starter(current_account()))


def _open_upload(upload: str, actor: str) -> tuple[Path, dict]:
    return imports.open_upload(_upload_root(), upload, actor, jobs.starter(current_account()))


def _mapping(raw) -> dict[str, str]:
    """A field mapping from the form: ``{source column: layer field}``; empty choices dropped."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise Refused(_("mapping is a JSON object {source column: layer field}")) from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str | None)
                                            for k, v in raw.items()):
        raise Refused(_("mapping is a JSON object {source column: layer field}"))
    return {k: v for k, v in raw.items() if v}


def _district(value) -> str | None:
    """The district streets and communities given by name get provisional codes under (the
    command line's ``--district``); checked with the import's own check."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise Refused(_("district is a 6-digit district code"))
    return value.strip()


def _source_layer(value) -> str | None:
    """The layer of a GeoPackage of several to import (the command line's ``--layer``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise Refused(_("source_layer is the name of a layer in the file"))
    return value.strip()


def _declared_crs(text: str | None):
    text = (text or "").strip()
    if not text:
        return None, None
    try:
        return text, crs_mod.parse_crs(text)
    except ValueError as exc:
        raise Refused(str(exc)) from None


@bp.post("/api/layers/<layer>/preview")
@require(*EDITORS, api=True)
def api_preview(layer: str):
    """Read and check an uploaded file for ``layer`` without writing anything.

    Form fields: ``file`` (a new upload) or ``upload`` (the id of one already previewed),
    ``crs`` (declared source CRS), ``mapping`` (JSON ``{source column: layer field}``), ``mode``,
    ``district`` (streets and communities given by name: the district their provisional codes
    go under), ``source_layer`` (the layer of a GeoPackage of several). The checks are the command
    line's own (:func:`layers.onboarding.imports.check_source`), names resolved into codes included.
    A file that cannot be read is refused (400, every problem named) and deleted; a readable
    one is kept for the import and described, with the checks' problems if any. A GeoPackage of
    several layers and none chosen is refused with ``layers`` (and its ``upload`` kept, to be
    previewed again with one); a file past a size limit is deleted whatever else is chosen.
    Units exported before boundary changes they would undo come with ``stale`` (the refusal the
    import will give unless forced).
    """
    _spec(layer)
    actor = current_account().name
    crs_text, declared = _declared_crs(request.form.get("crs"))
    mapping = _mapping(request.form.get("mapping"))
    district = _district(request.form.get("district"))
    mode = request.form.get("mode") or "append"
    if mode not in MODES:
        raise Refused(_("unknown mode {mode}: use {p2}", mode=repr(mode), p2=', '.join(MODES)))
    source_layer = _source_layer(request.form.get("source_layer"))
    if "file" in request.files and request.files["file"].filename:
        upload, folder, meta = _save_upload(request.files["file"], actor)
        fresh = True
    elif request.form.get("upload"):
        upload = request.form["upload"]
        folder, meta = _open_upload(upload, actor)
        fresh = False
    else:
        raise Refused(_("choose a file: a shapefile zip, .gpkg, .geojson or .csv"))
    return _json(imports.preview(engine(), layer, folder, meta, upload, fresh=fresh, crs_text=crs_text,
                                 declared=declared, mapping=mapping, district=district, mode=mode,
                                 source_layer=source_layer,
                                 max_unzipped_bytes=current_app.config["MAX_UNZIPPED_BYTES"]))


@bp.delete("/api/layers/uploads/<upload>")
@require(*EDITORS, api=True)
def api_forget_upload(upload: str):
    """Delete an upload that will not be imported (another file was chosen)."""
    folder, meta = _open_upload(upload, current_account().name)
    imports.delete_upload(folder, meta)
    return _json({"deleted": upload})


@bp.post("/api/layers/<layer>/import")
@require(*EDITORS, api=True)
def api_import(layer: str):
    """Queue the import of a previewed upload: JSON ``{upload, mode, crs, mapping, district,
    source_layer, force}`` → 202 and the address where its progress is followed. ``force`` imports
    units exported before boundary changes they would undo (the command line's ``--force``)."""
    _spec(layer)
    data = parse.body("{upload, mode, crs, mapping}")
    actor = current_account().name
    folder, meta = _open_upload(data.get("upload"), actor)
    mode = data.get("mode") or "append"
    if mode not in MODES:
        raise Refused(_("unknown mode {mode}: use {p2}", mode=repr(mode), p2=', '.join(MODES)))
    crs_text, _crs = _declared_crs(data.get("crs"))
    mapping = _mapping(data.get("mapping"))
    district = _district(data.get("district"))
    source_layer = _source_layer(data.get("source_layer"))
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise Refused(_("force is true or false"))
    params = imports.import_params(layer, folder, meta, mode=mode, crs=crs_text, mapping=mapping,
                                   district=district, actor=actor, source_layer=source_layer, force=force,
                                   max_unzipped_bytes=current_app.config["MAX_UNZIPPED_BYTES"])
    job_id = start_job(worker.LAYER_IMPORT, params)
    imports.mark_queued(folder, meta, job_id)
    return job_started(job_id)


@bp.get("/api/layers/imports/<int:job_id>")
@require(*EDITORS, api=True)
def api_import_status(job_id: int):
    """An import's state: ``queued running done failed``, progress 0–1, the phase (checking,
    writing ``done``/``total``) and, when done, the report or (``refused``) every problem."""
    try:  # an import is its author's and the administrators' alone (JOB_READERS names no readers)
        job = visible_job(current_account(), job_id, worker.LAYER_IMPORT)
    except NotFound:
        raise NotFound(_("no import {job_id}", job_id=job_id)) from None
    return _json(job_state(current_account(), job))


# --- export -------------------------------------------------------------------------------------


def _spec(layer: str):
    if layer not in LAYERS:
        raise NotFound(_("no layer {layer}; layers are: {p2}", layer=repr(layer), p2=', '.join(LAYERS)))
    return get_layer(layer)


def _place(args, key: str, layer: str, digits: int) -> str | None:
    code = (args.get(key) or "").strip()
    if not code:
        return None
    if not (code.isdigit() and len(code) == digits):
        raise Refused(_("{key} is a {digits}-digit code, not {code}",
                        key=key, digits=digits, code=repr(code)))
    if not code_exists(engine(), layer, code):
        raise Refused(_("no {key} {code} is stored", key=key, code=code))
    return code


@bp.get("/api/layers/<layer>/export")
@require(*READERS, api=True)
def api_export(layer: str):
    """The layer (or a street's or community's part) as a file: ``format`` shp|gpkg|geojson|csv,
    ``encoding`` utf-8|gbk (shapefile, CSV), ``crs`` (EPSG:4326 default, EPSG:4490, a projected
    EPSG code), ``street``, ``community``. Recorded in the audit log."""
    _spec(layer)
    args = request.args
    fmt = args.get("format") or "gpkg"
    if fmt not in FORMATS:
        raise Refused(_("unknown format {fmt}: use {p2}", fmt=repr(fmt), p2=', '.join(FORMATS)))
    encoding = args.get("encoding") or "utf-8"
    crs = (args.get("crs") or "").strip() or None
    street = _place(args, "street", "streets", 9)
    community = _place(args, "community", "communities", 12)
    part = community or street
    out_dir = Path(tempfile.mkdtemp(prefix="export-", dir=_upload_root()))
    name = f"{layer}{'-' + part if part else ''}.{EXTENSIONS[fmt]}"
    try:
        report = export_recorded(engine(), current_account().name, layer, fmt, out_dir / name,
                                 encoding=encoding, crs=crs, street=street, community=community)
    except (ExportError, ValueError) as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise Refused(_("export failed: {reason}", reason=exc)) from None

    @after_this_request
    def _clean(response):
        shutil.rmtree(out_dir, ignore_errors=True)
        return response

    response = send_file(out_dir / name, as_attachment=True, download_name=name)
    response.headers["X-Gridplan-Features"] = str(report.features)
    if report.truncated:
        response.headers["X-Gridplan-Truncated"] = str(len(report.truncated))
    return response
