"""The background worker: runs stored jobs (a city-wide plan) outside any web request.

``flask --app webmap worker`` runs it; pages follow a job's progress through ``/api/jobs/<id>``.

Each job runs in a child process of the worker (forked), so that a job past its time limit
(:func:`geodata.jobs.time_limit`: a file that makes the reader loop for ever, a plan that never
converges) can be killed: its one transaction is rolled back by the database when its connection
dies (PostgreSQL's backend is ended too, should it be busy in a query), the job is failed naming
the limit, and the worker goes on with the next one.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

from sqlalchemy import Engine, text

from geodata import jobs, plan_parts
from geodata.db import get_engine
from geodata.errors import GridplanError
from geodata.i18n import _
from geodata.store import count_layer, unit_district_codes
from layers.coverage import cache as coverage_cache
from layers.coverage import gaps as coverage
from layers.onboarding import imports as layer_import
from layers.plans import adoption
from layers.plans.memory import PlanMemory
from layers.plans.scale import SCHEDULER_ENV, districts_of, job_runner, plan_all
from layers.plans.workflow import auto_plan

# The kinds of job the worker runs, named once: the views start jobs by these names and the
# worker picks its runner by them (a literal in a view that differs by a letter is a job no
# runner takes). Each is defined beside the domain code it runs, where it has one.
#: a district-wide automatic plan (:func:`layers.plans.workflow.auto_plan`, :mod:`layers.plans.scale`)
AUTO_PLAN = "auto_plan"
#: a layer imported from an uploaded file (:mod:`layers.onboarding.imports`)
LAYER_IMPORT = layer_import.KIND
#: a city's coverage gap report (:mod:`layers.coverage.gaps`; a city's district by district,
#: :mod:`layers.coverage.districts`)
COVERAGE_REPORT = coverage.JOB_KIND
#: where to build next, for a city (:mod:`layers.coverage.cache`)
COVERAGE_SITES = coverage_cache.SITES_JOB
#: the grid cells of the communities an adopted plan touched (:mod:`layers.plans.adoption`)
REGENERATE_CELLS = adoption.JOB_KIND

#: seconds a job of each kind may run before the worker kills it (a city's import takes a few
#: minutes, a city-wide plan or coverage report up to a quarter of an hour on the bench); the
#: environment may change them (:func:`geodata.jobs.time_limit`)
TIME_LIMITS = {LAYER_IMPORT: 600, AUTO_PLAN: 1800, COVERAGE_REPORT: 1800, COVERAGE_SITES: 1800,
               REGENERATE_CELLS: 1800}


def queue(engine: Engine, kind: str, params: dict) -> int:
    """Queue a job of ``kind`` (one of the kinds above) with ``params`` for the worker; its id.
    Refused (429) when whoever ``params["starter"]`` names has as many jobs waiting or running
    as one may (:func:`geodata.jobs.create_job`)."""
    if kind not in RUNNERS:  # a kind no runner takes would wait for ever
        raise ValueError(f"no runner for jobs of kind {kind!r}")
    return jobs.create_job(engine, kind, params)


def _auto_plan(engine: Engine, job: dict) -> dict:
    params = dict(job["params"])
    name, author = params.pop("name"), params.pop("author")
    params.pop("starter", None)  # who queued it (the plan records its author by name)

    if not params.get("street"):  # every district: a task per district (layers.plans.scale)
        return _plan_every_district(engine, job, name, author, params)

    def progress(done: int, total: int) -> None:
        jobs.report(engine, job["id"], done / max(total, 1),
                    _("{done}/{total} streets", done=done, total=total))

    # a job's own memory of units: the worker process reads the boundaries as they are now
    plan_id, result = auto_plan(PlanMemory(engine), name, author, progress=progress, **params)
    return {"plan_id": plan_id, "scores": {k: v for k, v in result.scores().items() if k != "infeasible"}}


def _district_progress(engine: Engine, job: dict) -> Callable:
    """The progress of a job made of district tasks: the bar moves as districts finish
    ("3/13 districts"), naming those skipped (no units)."""
    skipped: list[str] = []

    def progress(done: int, total: int, outcome) -> None:
        if outcome.skipped:
            skipped.append(outcome.district)
        message = _("{done}/{total} districts", done=done, total=total)
        if skipped:
            message = _("{progress} (no units, skipped: {districts})", progress=message,
                        districts=", ".join(skipped))
        progress.message = message  # what the job says last (a later step adds to it)
        jobs.report(engine, job["id"], done / max(total, 1), message)

    progress.message = ""
    return progress


def _plan_every_district(engine: Engine, job: dict, name: str, author: str, params: dict) -> dict:
    """The district-wide plan job: one task per district, on the scheduler of
    ``GRIDPLAN_DASK_SCHEDULER`` or this machine's cores, as ``plan --all``
    (:func:`layers.plans.scale.job_runner`; ``GRIDPLAN_JOB_WORKERS`` caps them); the progress
    bar moves as districts finish, naming those skipped (no units)."""
    params.pop("street", None)
    runner = job_runner(len(districts_of(engine)), params.pop("workers", None))
    try:
        made = plan_all(engine, name, author, runner=runner, progress=_district_progress(engine, job),
                        job_id=job["id"], **params)
    finally:
        runner.close()
    return {"plan_id": made.plan_id, "scores": made.summary()["scores"], "skipped": made.skipped,
            "workers": made.workers}


#: a city's report job goes district by district on this machine above this many units (below,
#: the report in one piece costs 0.6 times the processor time and shares its reading with the
#: siting models: docs/scale.md); with a scheduler named, always
BY_DISTRICT_UNITS = 400_000


def _report_by_district(engine: Engine, districts: list[str]) -> bool:
    """Whether a city's report job runs district by district: a scheduler is named or the city
    is large — and every unit lies in one of ``districts`` (:func:`districts_of`: a database of
    units alone has its units' districts), so that none is left out of the report."""
    units = count_layer(engine, "units")
    if not units or not (os.environ.get(SCHEDULER_ENV) or units > BY_DISTRICT_UNITS):
        return False
    return unit_district_codes(engine) <= set(districts)


def _coverage_report(engine: Engine, job: dict) -> dict:
    """The coverage report job. A street's, and a city's of up to :data:`BY_DISTRICT_UNITS` units
    with no scheduler named: in the job's process
    (:func:`layers.coverage.gaps.run_report_job`). A larger city's (or a province's): a task per
    district (:func:`layers.coverage.cache.districts_job_result`) on the scheduler of
    ``GRIDPLAN_DASK_SCHEDULER``, else on this machine's cores — as the district-wide plan job
    runs (:func:`layers.plans.scale.job_runner`) — the bar moving as
    districts finish; the same report and cache entry as before, so the pages read it as they
    did (a city's siting models prepared after it, as before). A scheduler that cannot be reached
    fails the job before anything is read."""
    params = job.get("params") or {}
    districts = districts_of(engine)
    if params.get("street") or not _report_by_district(engine, districts):
        return coverage.run_report_job(engine, job)
    runner = job_runner(len(districts))
    progress = _district_progress(engine, job)

    def preparing() -> None:
        jobs.report(engine, job["id"], 0.99, _("{progress}; preparing where to build next",
                                               progress=progress.message))

    try:
        result = coverage_cache.districts_job_result(engine, params.get("method"), runner=runner,
                                                     progress=progress, preparing=preparing)
    finally:
        runner.close()
    return json.loads(json.dumps(result, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


RUNNERS: dict[str, Callable[[Engine, dict], dict]] = {AUTO_PLAN: _auto_plan,
                                                     LAYER_IMPORT: layer_import.run_import,
                                                     COVERAGE_REPORT: _coverage_report,
                                                     REGENERATE_CELLS: adoption.run_regeneration_job,
                                                     COVERAGE_SITES: coverage_cache.run_sites_job}


def _job_engine(engine: Engine, job_id: int) -> Engine:
    """In the job's process: an engine of its own, whose PostgreSQL sessions are named after the job
    (``application_name``) so that the worker can end them if it kills the job."""
    engine.dispose(close=False)  # the worker's pooled connections stay the worker's (both databases)
    if engine.dialect.name != "postgresql":
        return engine
    url = engine.url.update_query_dict({"application_name": f"gridplan-job-{job_id}"})
    return get_engine(url.render_as_string(hide_password=False))


def _run_child(engine: Engine, job: dict, worker_pid: int) -> None:
    """The job's process: run the job, record how it ended, exit."""
    try:  # die with the worker (kill -9 of the worker must not leave the job running unseen)
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != worker_pid:  # the worker died before that took hold
        os._exit(1)
    os.setpgid(0, 0)  # its own process group: whatever it starts is killed with it
    engine = _job_engine(engine, job["id"])
    try:
        jobs.finish(engine, job["id"], RUNNERS[job["kind"]](engine, job))
    except Exception as exc:  # a failed job is recorded, the worker goes on
        # gridplan's own refusals are sentences for the page; anything else names its kind
        message = str(exc) if isinstance(exc, GridplanError) else f"{type(exc).__name__}: {exc}"
        jobs.fail(engine, job["id"], message)
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        engine.dispose()


def _stop(engine: Engine, process: multiprocessing.Process, job_id: int) -> None:
    """Kill the job's process group and end its PostgreSQL sessions (a backend busy in a query
    would otherwise go on, holding its locks, until it next wrote to the dead connection)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # not yet a group of its own
        process.kill()
    process.join(30)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = :name"), {"name": f"gridplan-job-{job_id}"})
            conn.commit()


def run_one(engine: Engine, *, time_limit: float | None = None) -> dict | None:
    """Run the oldest queued job, if any, in a process of its own for at most ``time_limit``
    seconds (default :func:`geodata.jobs.time_limit` of its kind); returns it as it ended."""
    job = jobs.claim_next(engine)
    if job is None:
        return None
    limit = (jobs.time_limit(job["kind"], TIME_LIMITS.get(job["kind"], jobs.DEFAULT_TIME_LIMIT))
             if time_limit is None else time_limit)
    # not daemonic: a job may start processes of its own (the units builder's pool in
    # layers/onboarding/units.py); the parent-death signal and the kill at the time limit end
    # it, and so does the worker leaving (below)
    process = multiprocessing.get_context("fork").Process(target=_run_child, args=(engine, job, os.getpid()),
                                                          name=f"gridplan-job-{job['id']}", daemon=False)
    process.start()
    try:
        process.join(limit)
    except BaseException:  # Ctrl-C or SystemExit of the worker: the job dies with it, not after it
        _stop(engine, process, job["id"])  # failed, and what it left removed, when a worker starts
        raise
    if process.is_alive():
        _stop(engine, process, job["id"])
        if jobs.fail_timed_out(engine, job["id"], limit):
            _forget(engine, job)
    elif jobs.fail_vanished(engine, job["id"], process.exitcode):  # killed by the system, out of memory
        _forget(engine, job)
    return jobs.get_job(engine, job["id"])


def _forget(engine: Engine, job: dict) -> None:
    """What a job killed mid-way leaves behind, removed: an import's upload, a plan's half-made
    draft (its districts written so far) — "nothing of it was kept", as the job's message says."""
    layer_import.forget_job_upload(job)
    if job["kind"] == AUTO_PLAN:
        plan_parts.discard_unfinished(engine, job["id"], _("the job making it stopped before it finished"))


def fail_abandoned(engine: Engine) -> list[int]:
    """Fail the jobs a killed worker of this host left running, and delete the uploads of the
    imports among them; returns their ids."""
    abandoned = jobs.fail_abandoned(engine)
    for job in abandoned:
        _forget(engine, job)
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
