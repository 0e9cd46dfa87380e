"""The background worker: runs stored jobs (a city-wide plan) outside any web request.

``flask --app webmap worker`` runs it; pages follow a job's progress through ``/api/jobs/<id>``.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from geodata import jobs
from geodata.i18n import _
from layers import coverage, layer_import
from layers.plan_memory import PlanMemory
from layers.plan_workflow import auto_plan


def _auto_plan(engine: Engine, job: dict) -> dict:
    params = dict(job["params"])
    name, author = params.pop("name"), params.pop("author")

    def progress(done: int, total: int) -> None:
        jobs.report(engine, job["id"], done / max(total, 1),
                    _("{done}/{total} streets", done=done, total=total))

    # a job's own memory of units: the worker process reads the boundaries as they are now
    plan_id, result = auto_plan(PlanMemory(engine), name, author, progress=progress, **params)
    return {"plan_id": plan_id, "scores": {k: v for k, v in result.scores().items() if k != "infeasible"}}


RUNNERS: dict[str, Callable[[Engine, dict], dict]] = {"auto_plan": _auto_plan,
                                                     layer_import.KIND: layer_import.run_import,
                                                     coverage.JOB_KIND: coverage.run_report_job}


def run_one(engine: Engine) -> dict | None:
    """Run the oldest queued job, if any; returns it."""
    job = jobs.claim_next(engine)
    if job is None:
        return None
    try:
        jobs.finish(engine, job["id"], RUNNERS[job["kind"]](engine, job))
    except Exception as exc:  # a failed job is recorded, the worker goes on
        jobs.fail(engine, job["id"], f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    return jobs.get_job(engine, job["id"])


def fail_abandoned(engine: Engine) -> list[int]:
    """Fail the jobs a killed worker of this host left running, and delete the uploads of the
    imports among them; returns their ids."""
    abandoned = jobs.fail_abandoned(engine)
    for job in abandoned:
        if job["kind"] == layer_import.KIND and (job["params"] or {}).get("folder"):
            shutil.rmtree(Path(job["params"]["folder"]), ignore_errors=True)
    return [job["id"] for job in abandoned]


def work(engine: Engine, *, once: bool = False, poll: float = 1.0) -> None:
    """Run jobs as they come (until there are none, with ``once``), after failing those a killed
    worker left running."""
    fail_abandoned(engine)
    while True:
        job = run_one(engine)
        if job is None:
            if once:
                return
            time.sleep(poll)
