"""Background jobs as stored rows, so they survive a page reload and any web worker can answer
for them: queued → running → done | failed, with progress between 0 and 1.

A running job names its worker (``host:pid``); a worker killed in the middle of one (``kill -9``,
a crash, a reboot) leaves it running, and the next worker started on that host fails it
(:func:`fail_abandoned`) — its work was one transaction, rolled back, so nothing of it is kept.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from sqlalchemy import Engine, insert, or_, select, update

from geodata.i18n import _
from geodata.models import Job


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


def create_job(engine: Engine, kind: str, params: dict) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(Job).values(kind=kind, status="queued", progress=0.0, params=params,
                                               created_at=datetime.now()).returning(Job.id)).scalar_one()


def get_job(engine: Engine, job_id: int) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(Job.__table__).where(Job.id == job_id)).mappings().one_or_none()
    return dict(row) if row else None


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
