"""Background jobs as stored rows, so they survive a page reload and any web worker can answer
for them: queued → running → done | failed, with progress between 0 and 1.

A running job names its worker (``host:pid``); a worker killed in the middle of one (``kill -9``,
a crash, a reboot) leaves it running, and the next worker started on that host fails it
(:func:`fail_abandoned`) — its work was one transaction, rolled back, so nothing of it is kept.

Bounds: a job may run :func:`time_limit` seconds (the worker then kills it and fails it,
:func:`fail_timed_out`), and one user may have :func:`jobs_per_user` jobs queued or running at once
(:func:`create_job` refuses more with :class:`TooManyJobs`, a 429).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import socket
from datetime import datetime

from sqlalchemy import Engine, func, insert, or_, select, text, update

from geodata.accounts import Account
from geodata.errors import GridplanError
from geodata.i18n import N_, _
from geodata.models import Job

#: seconds a job may run before the worker kills it, unless its kind says otherwise (the kinds and
#: their limits are the domain's: :data:`layers.worker.TIME_LIMITS`);
#: ``GRIDPLAN_JOB_TIME_LIMIT_<KIND>`` (e.g. ``…_IMPORT_LAYER=900``) or ``GRIDPLAN_JOB_TIME_LIMIT``
#: (every kind) change them
DEFAULT_TIME_LIMIT = 1800
#: jobs one user may have queued or running at once (``GRIDPLAN_JOBS_PER_USER``; 0: no limit)
JOBS_PER_USER = 3
#: who asked for a job, by name for display, as each kind's params name it (plans: author,
#: coverage: by, imports: actor); who it is, is its ``starter`` (:func:`starter`)
OWNER_KEYS = ("author", "by", "actor")

#: seconds a job may wait in the queue, with no job running, before its readers are told that no
#: worker is taking jobs (an idle worker looks for one every second)
IDLE_WORKER_S = 30

log = logging.getLogger(__name__)


class TooManyJobs(GridplanError):
    """A user who already has :func:`jobs_per_user` jobs queued or running asks for another."""

    status = 429
    title = N_("Too Many Requests")
    retry_after = 30


def time_limit(kind: str, default: float = DEFAULT_TIME_LIMIT) -> float:
    """Seconds a job of ``kind`` may run: ``default`` (its kind's limit) unless the environment
    says otherwise; a value of the environment
    that is not a positive number of seconds (``10m``) is logged and the default used: the worker
    asks for it after it has taken the job, where a crash would leave the job running."""
    default = float(default)
    for variable in (f"GRIDPLAN_JOB_TIME_LIMIT_{kind.upper()}", "GRIDPLAN_JOB_TIME_LIMIT"):
        value = os.environ.get(variable)
        if value:
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if math.isfinite(seconds) and seconds > 0:
                return seconds
            log.warning("%s=%r is not a positive number of seconds: a %s job may run %g s",
                        variable, value, kind, default)
            return default
    return default


def jobs_per_user() -> int:
    """Jobs one user may have queued or running at once (0: any number); a value of
    ``GRIDPLAN_JOBS_PER_USER`` that is not a whole number from 0 is logged and the default used."""
    value = os.environ.get("GRIDPLAN_JOBS_PER_USER")
    if not value:
        return JOBS_PER_USER
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        log.warning("GRIDPLAN_JOBS_PER_USER=%r is not a whole number from 0: one user may have %d jobs",
                    value, JOBS_PER_USER)
        return JOBS_PER_USER
    return limit


def starter(account: Account) -> str:
    """Who starts a job, as its ``starter`` param records it: ``user:<id>`` or ``token:<id>``
    (a token and a user of one name are two different callers)."""
    return f"{'token' if account.via_token else 'user'}:{account.id}"


def owner(params: dict | None) -> str | None:
    """The name of who asked for a job, from its params (for display; who it is: :func:`started_by`)."""
    for key in OWNER_KEYS:
        if (params or {}).get(key):
            return str(params[key])
    return None


def started_by(params: dict | None, who: str | None, name: str | None) -> bool:
    """Whether the caller ``who`` (:func:`starter`) named ``name`` started the job of ``params``.
    A job queued before jobs recorded their starter is its user's by name (never a token's)."""
    params = params or {}
    if params.get("starter"):
        return params["starter"] == who
    return (who is None or who.startswith("user:")) and name is not None and owner(params) == name


def this_worker() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"[:80]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def create_job(engine: Engine, kind: str, params: dict, *, per_user: int | None = None) -> int:
    """Queue a job; refused with :class:`TooManyJobs` when the user who asks for it (:func:`owner`)
    has ``per_user`` (default :func:`jobs_per_user`) jobs queued or running already."""
    limit = jobs_per_user() if per_user is None else per_user
    who, name = params.get("starter"), owner(params)
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, so the count and the insert are one step
        if (who or name) and limit:
            if conn.dialect.name == "postgresql":  # two requests of one user at once: one after the other
                digest = hashlib.sha256(f"jobs:{who or name}".encode()).digest()
                key = int.from_bytes(digest[:8], "big", signed=True)
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            pending = conn.execute(select(Job.params).where(Job.status.in_(("queued", "running")))).scalars()
            if sum(started_by(p, who, name) for p in pending) >= limit:
                raise TooManyJobs(_("{name} has {limit} jobs queued or running already, the most one user "
                                    "may have at once: wait until one of them ends, then try again.",
                                    name=name or who, limit=limit))
        return conn.execute(insert(Job).values(kind=kind, status="queued", progress=0.0, params=params,
                                               created_at=datetime.now()).returning(Job.id)).scalar_one()


def get_job(engine: Engine, job_id: int) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(Job.__table__).where(Job.id == job_id)).mappings().one_or_none()
    return dict(row) if row else None


def waiting(engine: Engine, job: dict, now: datetime | None = None) -> str | None:
    """Why queued ``job`` still waits, as its readers are told (None: it has only just been
    queued): behind how many jobs while the workers are busy, or that no worker is taking jobs
    — none running and it has waited :data:`IDLE_WORKER_S` (no worker started, or every one
    stopped), which the page cannot tell from a slow job otherwise."""
    with engine.connect() as conn:
        running = conn.execute(select(func.count()).where(Job.status == "running")).scalar_one()
        ahead = conn.execute(select(func.count())
                             .where(Job.status == "queued", Job.id < job["id"])).scalar_one()
    if running:
        return _("waiting for the background worker: {running} running, {ahead} queued before it",
                 running=running, ahead=ahead)
    waited = ((now or datetime.now()) - job["created_at"]).total_seconds() if job.get("created_at") else 0.0
    if waited < IDLE_WORKER_S:
        return None
    return _("queued for {minutes} min and no background worker is taking jobs: an administrator starts "
             "it (make run, or flask --app webmap worker)", minutes=max(1, round(waited / 60)))


def claim_next(engine: Engine) -> dict | None:
    """Take the oldest queued job; two workers never take the same one."""
    with engine.begin() as conn:
        queued = select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(5)
        for job_id in list(conn.execute(queued).scalars()):
            claimed = conn.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                   .values(status="running", started_at=datetime.now(),
                                           worker=this_worker()))
            if claimed.rowcount == 1:
                return dict(conn.execute(select(Job.__table__).where(Job.id == job_id)).mappings().one())
    return None


def report(engine: Engine, job_id: int, progress: float, message: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(progress=float(progress), message=message))


def finish(engine: Engine, job_id: int, result: dict) -> None:
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(status="done", progress=1.0, result=result,
                                                                 finished_at=datetime.now()))


def fail(engine: Engine, job_id: int, message: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(status="failed", message=message,
                                                                 finished_at=datetime.now()))


def fail_timed_out(engine: Engine, job_id: int, seconds: float) -> bool:
    """Fail a running job the worker killed at its time limit; whether it was still running
    (it may have ended at the last moment)."""
    message = _("the job ran longer than its time limit of {minutes} min and was stopped; nothing of it "
                "was kept (an administrator sets the limit: GRIDPLAN_JOB_TIME_LIMIT)",
                minutes=f"{seconds / 60:g}")
    with engine.begin() as conn:
        return conn.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(
            status="failed", message=message, finished_at=datetime.now())).rowcount == 1


def fail_vanished(engine: Engine, job_id: int, exitcode: int | None) -> bool:
    """Fail a running job whose process ended without saying how it went (killed by the system,
    out of memory); whether it was still running."""
    message = _("the process running this job ended unexpectedly (exit code {code}); nothing of it was kept: "
                "start it again", code=exitcode)
    with engine.begin() as conn:
        return conn.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(
            status="failed", message=message, finished_at=datetime.now())).rowcount == 1


def fail_abandoned(engine: Engine) -> list[dict]:
    """Fail the running jobs whose worker on this host is gone (and any that name no worker):
    a worker calls this when it starts, before it holds a job of its own. Returns those jobs."""
    me = this_worker()
    host = me.rsplit(":", 1)[0]
    with engine.begin() as conn:
        running = conn.execute(select(Job.__table__).where(Job.status == "running", or_(
            Job.worker.is_(None), Job.worker.like(f"{host}:%")))).mappings().all()
        abandoned = [dict(j) for j in running if not j["worker"] or j["worker"] == me
                     or not _alive(int(j["worker"].rsplit(":", 1)[1]))]
        for job in abandoned:
            conn.execute(update(Job).where(Job.id == job["id"], Job.status == "running").values(
                status="failed", finished_at=datetime.now(),
                message=_("the worker running this job stopped (killed or restarted) before it finished; "
                          "nothing of it was kept: start it again")))
    return abandoned


def report_partial(engine: Engine, job_id: int, result: dict, progress: float,
                   message: str | None = None) -> None:
    """Store a first answer while the job goes on (a greedy siting before the exact solver's
    proof): readers of the job see it at once; :func:`finish` replaces it."""
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(
            progress=float(progress), message=message, result=result))
