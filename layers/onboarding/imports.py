"""Imports from the browser, run by the background worker (``kind = "import_layer"``).

The web app saves the uploaded file in a folder of its own (under the instance folder) and
queues a job naming that folder; the worker runs :func:`geodata.importer.import_layer` on it —
the same checks, messages and single transaction as the command line — writes its progress to
``progress.json`` in the folder, and deletes the folder when done, refused or failed.

Progress goes to a file rather than the job row: on SpatiaLite the import's transaction holds
the database's one write lock until it commits, so a progress write from another connection
would wait for the import it reports on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sqlalchemy import Engine

from geodata import jobs
from geodata.importer import MAX_UNZIPPED_BYTES, ImportRefused, import_layer

KIND = "import_layer"
PROGRESS_FILE = "progress.json"
MAX_PROBLEMS = 200


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
        except ImportRefused as exc:
            return {"refused": True, "problems": exc.problems[:MAX_PROBLEMS], "count": len(exc.problems)}
        return {"refused": False, "layer": report.layer, "mode": report.mode, "source": report.source,
                "rows": report.rows, "written": report.written, "deleted": report.deleted,
                "repaired": report.repaired[:MAX_PROBLEMS], "ignored_fields": report.ignored_fields,
                "adjacency_pairs": report.adjacency_pairs, "provisional": report.provisional[:MAX_PROBLEMS],
                "summary": report.summary()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["KIND", "read_progress", "run_import", "write_progress"]
