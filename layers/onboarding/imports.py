"""The import service: a layer's file into the database, for the command line, the layers page,
the onboarding folder and the background worker alike.

An import reads the file (:mod:`geodata.sources`: archive safety, encodings, a GeoPackage's
layers), resolves names into codes (:mod:`layers.onboarding.naming`: provisional codes, a
community's street by name or by area), checks everything (:mod:`geodata.importer`: mapping,
coercion, values, geometry, place) and writes it in one transaction — the same checks and
messages wherever it starts (:func:`import_layer`, :func:`check_source`).

From the browser it runs in two steps. The page saves the upload in a folder of its own
(:func:`save_upload`, under the instance folder; :func:`open_upload` finds it again for its
uploader only; :func:`sweep_uploads` deletes those nobody imported after
:data:`UPLOAD_MAX_AGE_S`) and :func:`preview` reads and checks it, writing nothing. The import
is then a job (``kind = "import_layer"``) naming that folder: the worker runs :func:`run_import`
on it, which writes its progress to ``progress.json`` in the folder and deletes the folder when
done, refused or failed; a job whose worker died has its upload deleted by
:func:`forget_job_upload`.

Progress goes to a file rather than the job row: on SpatiaLite the import's transaction holds
the database's one write lock until it commits, so a progress write from another connection
would wait for the import it reports on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Engine

from geodata import crs as crs_mod
from geodata import jobs
from geodata.audit_words import layer_name
from geodata.catalog import get_layer
from geodata.errors import Conflict, NotFound, Refused
from geodata.i18n import N_, _
from geodata.importer import (
    MODES,
    NAME_FIELDS,
    UNMAPPED,
    CodesRefused,
    ImportReport,
    StaleFile,
    mapped_columns,
    parse_values,
    stale_units,
    write_import,
)
from geodata.importer import check_source as check_read_file
from geodata.layer_info import count_stored
from geodata.sources import (
    MAX_UNZIPPED_BYTES,
    ImportRefused,
    LayerChoice,
    TooLarge,
    file_revision,
    gpkg_layers,
    read_source,
)
from layers.onboarding.naming import check_district, resolver

KIND = "import_layer"
PROGRESS_FILE = "progress.json"
MAX_PROBLEMS = 200
#: What the page accepts (a shapefile comes zipped with its parts).
UPLOAD_SUFFIXES = (".zip", ".gpkg", ".geojson", ".json", ".csv")
#: An upload previewed and left is deleted after this many seconds.
UPLOAD_MAX_AGE_S = 12 * 3600
#: The upload's own record in its folder: who uploaded it, its file, its job once queued.
META = "upload.json"
#: Rows of the file a preview shows.
PREVIEW_ROWS = 10
#: Fields of a file that are not stored but resolved into codes (a community's street by name).
NAME_LABELS = {"street": {"name": "street", "label": N_("name of its street"), "dtype": "str",
                          "required": False}}


# --- the import ---------------------------------------------------------------------------------


def check_source(
    engine: Engine,
    layer: str,
    raw: gpd.GeoDataFrame,
    *,
    declared_crs=None,
    mapping: dict[str, str] | None = None,
    district: str | None = None,
    values: dict[str, dict[str, str]] | None = None,
    unmapped: str = "refuse",
    number: bool = False,
) -> tuple[gpd.GeoDataFrame, ImportReport]:
    """Every check of an import on a file already read, nothing written: names resolved into
    codes (streets and communities by name get their stored code, or a provisional one under
    ``district`` or their street), then :func:`geodata.importer.prepare`. The command line's import
    and the layers page's preview both run this, so they accept and refuse the same files with the
    same messages. Raises :class:`ImportRefused` naming every problem found."""
    check_district(engine, district)
    return check_read_file(engine, layer, raw, declared_crs=declared_crs, mapping=mapping, district=district,
                           values=values, unmapped=unmapped, number=number,
                           resolve=resolver(engine, layer, district))


def import_layer(
    engine: Engine,
    layer: str,
    path: str | Path,
    *,
    mode: str = "append",
    crs: str | int | None = None,
    mapping: dict[str, str] | None = None,
    actor: str = "cli",
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES,
    progress: Callable[[int, int], None] | None = None,
    district: str | None = None,
    values: dict[str, dict[str, str]] | None = None,
    unmapped: str = "refuse",
    number: bool = False,
    source_layer: str | None = None,
    force: bool = False,
) -> ImportReport:
    """Import ``path`` into ``layer``; one transaction, all or nothing.

    ``mode``: ``append`` refuses codes already stored or repeated; ``replace`` swaps the whole
    layer; ``update`` updates the features matched by code and refuses unknown codes.
    ``crs`` declares the source CRS (``EPSG:4490``, ``GCJ02`` …) over the file's own.
    ``mapping`` renames source fields to layer fields (``{"HH": "households"}``; a community's
    ``street`` field holds its street's name).
    ``district`` is the district streets and communities without codes lie in: they get
    provisional codes under it. ``values`` maps the source's values of a field to gridplan's
    (``{"kind": {"幼儿园": "kindergarten"}}``); rows whose value has no mapping are refused, or
    left out with ``unmapped="skip"``. ``number`` numbers a file without codes (roads, facilities …).
    ``progress(written, total)`` is called after every batch of inserts.
    ``source_layer`` is the layer of a GeoPackage of several to read. A units file exported by
    gridplan before later boundary changes that it would undo is refused
    (:func:`geodata.importer.stale_units`) unless ``force``.

    >>> report = import_layer(engine, "units", "units.zip", mode="append", crs="EPSG:4490")
    >>> import_layer(engine, "communities", "sq.shp", district="420503",
    ...              mapping={"SQMC": "name", "SSJD": "street"})
    """
    get_layer(layer)  # an unknown layer is refused before the file is read
    if mode not in MODES:
        raise ImportRefused(_("unknown mode {mode}: use {p2}", mode=repr(mode), p2=', '.join(MODES)))
    try:
        declared = crs_mod.parse_crs(crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    check_district(engine, district)
    with tempfile.TemporaryDirectory(prefix="gridplan-import-") as tmp:
        raw = read_source(path, declared_crs=declared, workdir=Path(tmp),
                          max_unzipped_bytes=max_unzipped_bytes, source_layer=source_layer)
    exported_at = file_revision(raw)
    if raw.empty:
        raise ImportRefused(_("{name} holds no features", name=Path(path).name))
    gdf, report = check_source(engine, layer, raw, declared_crs=declared, mapping=mapping, values=values,
                               unmapped=unmapped, district=district, number=number)
    report.mode, report.source = mode, Path(path).name
    return write_import(engine, layer, gdf, report, mode=mode, actor=actor, exported_at=exported_at,
                        force=force, progress=progress)


# --- uploads from the browser -------------------------------------------------------------------


class UploadedFile(Protocol):
    """A file as the web hands it over (werkzeug's ``FileStorage``)."""

    filename: str | None

    def save(self, dst: Path) -> None: ...


def upload_name(filename: str | None) -> str:
    """The uploaded file's own name (Chinese names kept, for the audit log), without any path."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable() and c not in ':*?"<>|').strip(" .")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".shp":
        raise Refused(_("a shapefile comes as a zip holding its .shp, .shx, .dbf and .prj together: zip "
                        "them and upload the zip"))
    if suffix not in UPLOAD_SUFFIXES:
        raise Refused(_("{p1}: unknown format {p2}; use a shapefile zip, .gpkg, .geojson or .csv",
                        p1=name or 'the file', p2=suffix or '(no extension)'))
    stem = PurePosixPath(name).stem[:100] or "upload"
    return stem + suffix


def sweep_uploads(root: Path) -> None:
    """Delete uploads nobody imported (previewed, then left) after :data:`UPLOAD_MAX_AGE_S`."""
    now = time.time()
    for folder in root.iterdir():
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > UPLOAD_MAX_AGE_S:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def save_upload(root: Path, file: UploadedFile, actor: str, starter: str) -> tuple[str, Path, dict]:
    """Keep an uploaded file in a folder of its own under ``root`` (older ones swept first): its
    id, its folder and its record (``actor`` and ``starter``, :func:`geodata.jobs.starter`, own it)."""
    name = upload_name(file.filename)
    sweep_uploads(root)
    upload = uuid.uuid4().hex
    folder = root / upload
    folder.mkdir()
    path = folder / name
    file.save(path)
    if path.stat().st_size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise Refused(_("{name} is empty", name=name))
    meta = {"actor": actor, "starter": starter, "file": name, "size": path.stat().st_size}
    (folder / META).write_text(json.dumps(meta), encoding="utf-8")
    return upload, folder, meta


def open_upload(root: Path, upload, actor: str, starter: str) -> tuple[Path, dict]:
    """The folder and record of the upload ``upload`` — its uploader's alone (others are told it
    is gone)."""
    if not (isinstance(upload, str) and len(upload) == 32 and all(c in "0123456789abcdef" for c in upload)):
        raise Refused(_("upload is the id a preview answered with"))
    folder = root / upload
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotFound(_("the uploaded file is gone (imported, or older than 12 hours): "
                         "choose the file again")) from None
    if not jobs.started_by(meta, starter, actor):  # a token named like a user too
        raise NotFound(_("the uploaded file is gone: choose the file again"))
    return folder, meta


def delete_upload(folder: Path, meta: dict) -> None:
    """Delete an upload that will not be imported; one being imported is refused."""
    if meta.get("job"):
        raise Conflict(_("the file is being imported (job {job})", job=meta['job']))
    shutil.rmtree(folder, ignore_errors=True)


def import_params(layer: str, folder: Path, meta: dict, *, mode: str, crs: str | None,
                  mapping: dict[str, str], district: str | None, actor: str, source_layer: str | None,
                  force: bool, max_unzipped_bytes: int) -> dict:
    """The params of the job importing an upload (:func:`run_import` reads them); an upload
    already queued is refused."""
    if meta.get("job"):
        raise Conflict(_("this file is being imported already (job {job})", job=meta['job']))
    return {"layer": layer, "folder": str(folder), "file": meta["file"], "mode": mode, "crs": crs,
            "mapping": mapping, "district": district, "actor": actor, "source_layer": source_layer,
            "force": force, "max_unzipped_bytes": max_unzipped_bytes}


def mark_queued(folder: Path, meta: dict, job_id: int) -> None:
    """Record on the upload the job that imports it (it can no longer be deleted or queued again)."""
    meta["job"] = job_id
    (folder / META).write_text(json.dumps(meta), encoding="utf-8")


def forget_job_upload(job: dict) -> None:
    """An import's upload is deleted once its job has ended, however it ended (a worker killed,
    a job past its time limit)."""
    if job["kind"] == KIND and (job["params"] or {}).get("folder"):
        shutil.rmtree(Path(job["params"]["folder"]), ignore_errors=True)


# --- the preview --------------------------------------------------------------------------------


def _cell(v):
    """A preview value as plain JSON (no NaN: empty cells are null)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, pd.Timestamp | datetime | date):
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, bytes):
        return f"({len(v)} bytes)"
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _name_field(name: str) -> dict:
    """A resolved field as the mapping table shows it, its label in the reader's language."""
    field = dict(NAME_LABELS[name])
    label = field["label"]
    field["label"] = _(label)
    return field


def _read_upload(folder: Path, meta: dict, upload: str, *, fresh: bool, declared, max_unzipped_bytes: int,
                 source_layer: str | None) -> gpd.GeoDataFrame:
    """Read an upload. A file that cannot be read is refused (every problem named) and deleted
    when new or past a size limit; a GeoPackage of several layers and none chosen is refused with
    ``layers`` and kept."""
    path = folder / meta["file"]
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix="read-") as tmp:
            raw = read_source(path, declared_crs=declared, workdir=Path(tmp),
                              max_unzipped_bytes=max_unzipped_bytes, source_layer=source_layer)
        if raw.empty:
            raise ImportRefused(_("{file} holds no features", file=meta['file']))
    except LayerChoice as exc:  # keep it: choosing a layer makes it readable
        (folder / META).touch()
        raise Refused(str(exc), problems=exc.problems, file=meta["file"], layers=exc.layers,
                      upload=upload) from None
    except ImportRefused as exc:
        if fresh or isinstance(exc, TooLarge):
            shutil.rmtree(folder, ignore_errors=True)
        else:  # keep it: a declared CRS may make it readable
            (folder / META).touch()
        raise Refused(str(exc), problems=exc.problems, file=meta["file"]) from None
    except BaseException:  # a reader that failed outright (memory, a signal): no upload left behind
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    (folder / META).touch()  # keeps it from the sweep while the user works on it
    return raw


def preview(engine: Engine, layer: str, folder: Path, meta: dict, upload: str, *, fresh: bool,
            crs_text: str | None, declared, mapping: dict[str, str], district: str | None, mode: str,
            source_layer: str | None, max_unzipped_bytes: int) -> dict:
    """Read and check an upload for ``layer`` without writing anything: the first rows, the source
    columns, the field mapping the import will use, every problem found (the command line's own
    checks, :func:`check_source`), what is already stored, and for units exported before boundary
    changes they would undo, ``stale`` (the refusal the import will give unless forced). A file
    that cannot be read is refused (:func:`_read_upload`)."""
    spec = get_layer(layer)
    raw = _read_upload(folder, meta, upload, fresh=fresh, declared=declared,
                       max_unzipped_bytes=max_unzipped_bytes, source_layer=source_layer)
    columns = [str(c) for c in raw.columns if c != raw.geometry.name]
    problems: list[str] = []
    try:
        effective, ignored = mapped_columns(spec, raw, mapping)
    except ImportRefused as exc:
        problems.extend(exc.problems)
        effective, ignored = mapped_columns(spec, raw, {})
    repaired: list[str] = []
    provisional: list[str] = []
    stored = None
    stale = None
    if not problems:
        try:
            checked, report = check_source(engine, layer, raw, declared_crs=declared, mapping=mapping,
                                           district=district)
            repaired, provisional = report.repaired, report.provisional
            codes = [c for c in checked["code"].tolist() if c]
            stored = {"already": count_stored(engine, layer, codes), "in_file": len(codes)}
            if layer == "units" and mode in ("update", "replace"):
                with engine.connect() as conn:
                    found = stale_units(conn, checked, file_revision(raw))
                if found:
                    stale = {"message": str(found), "communities": found.communities[:100]}
        except ImportRefused as exc:
            problems.extend(exc.problems)
    head = raw.head(PREVIEW_ROWS)
    geoms = head.geometry.values
    rows = [[_cell(v) for v in record] + [None if g is None else g.geom_type]
            for record, g in zip(head[columns].itertuples(index=False, name=None), geoms, strict=True)]
    types = raw.geometry.geom_type.fillna("(none)").value_counts()
    return {
        "upload": upload, "file": meta["file"], "size": meta["size"], "layer": layer,
        "features": len(raw), "columns": columns, "rows": rows,
        "geometry_types": {str(k): int(v) for k, v in types.items()},
        "crs": raw.crs.to_string() if raw.crs is not None else None, "declared_crs": crs_text,
        "mapping": {c: effective.get(c) for c in columns}, "ignored": ignored,
        "fields": [{"name": f.name, "label": f.label, "dtype": f.dtype, "required": f.required}
                   for f in spec.fields]
        + [_name_field(n) for n in NAME_FIELDS.get(layer, {})],
        "district": district, "provisional": provisional[:100], "provisional_count": len(provisional),
        "ok": not problems, "problems": problems[:500], "problem_count": len(problems),
        "repaired": repaired[:100], "repaired_count": len(repaired), "stored": stored, "mode": mode,
        "source_layer": source_layer, "revision": file_revision(raw), "stale": stale,
    }


# --- the job --------------------------------------------------------------------------------------


def write_progress(folder: Path, **state) -> None:
    """Replace the folder's progress file atomically (readers never see half of it)."""
    partial = folder / f".{PROGRESS_FILE}.partial"
    partial.write_text(json.dumps(state), encoding="utf-8")
    os.replace(partial, folder / PROGRESS_FILE)


def read_progress(folder: Path) -> dict | None:
    """What :func:`write_progress` last wrote there, or None."""
    try:
        return json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def codes_problem(exc: CodesRefused) -> str:
    """A refusal for the file's codes as the import page words it: the layer by its name and the
    modes as the page names them (the command line's message says ``--mode``)."""
    shown = ", ".join(exc.codes[:20]) + (" …" if len(exc.codes) > 20 else "")
    if exc.mode == "update":
        return _("{n} codes of the file are not stored in the layer {layer}, so there is nothing to update: "
                 "choose the mode “Append” or “Replace”: {codes}", n=f"{len(exc.codes):,}",
                 layer=layer_name(exc.layer), codes=shown)
    return _("{n} codes of the file are stored in the layer {layer} already, so they cannot be added: "
             "choose the mode “Update” or “Replace”: {codes}", n=f"{len(exc.codes):,}",
             layer=layer_name(exc.layer), codes=shown)


def run_import(engine: Engine, job: dict) -> dict:
    """Run one queued import. A refused file is a finished job whose result says ``refused``
    and lists every problem (nothing was written); the folder is deleted in every case."""
    params = job["params"]
    folder = Path(params["folder"])
    try:
        jobs.report(engine, job["id"], 0.0, "checking")
        write_progress(folder, phase="checking")

        def tick(done: int, total: int) -> None:
            write_progress(folder, phase="writing", done=done, total=total)

        try:
            report = import_layer(engine, params["layer"], folder / params["file"], mode=params["mode"],
                                  crs=params.get("crs") or None, mapping=params.get("mapping") or {},
                                  district=params.get("district") or None, actor=params["actor"],
                                  progress=tick, source_layer=params.get("source_layer") or None,
                                  force=bool(params.get("force")),
                                  max_unzipped_bytes=params.get("max_unzipped_bytes") or MAX_UNZIPPED_BYTES)
        except CodesRefused as exc:  # the page's words for its modes, not the command line's flag
            return {"refused": True, "problems": [codes_problem(exc)], "count": 1}
        except ImportRefused as exc:
            return {"refused": True, "problems": exc.problems[:MAX_PROBLEMS], "count": len(exc.problems)}
        return {"refused": False, "layer": report.layer, "mode": report.mode, "source": report.source,
                "rows": report.rows, "written": report.written, "deleted": report.deleted,
                "repaired": report.repaired[:MAX_PROBLEMS], "ignored_fields": report.ignored_fields,
                "adjacency_pairs": report.adjacency_pairs, "provisional": report.provisional[:MAX_PROBLEMS],
                "summary": report.summary()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["KIND", "MAX_UNZIPPED_BYTES", "MODES", "NAME_FIELDS", "UNMAPPED", "ImportRefused", "ImportReport",
           "LayerChoice", "StaleFile", "TooLarge", "check_district", "check_source", "delete_upload",
           "file_revision", "forget_job_upload", "gpkg_layers", "import_layer", "import_params",
           "mark_queued", "open_upload", "parse_values", "preview", "read_progress", "read_source",
           "run_import", "save_upload", "sweep_uploads", "upload_name", "write_progress"]
