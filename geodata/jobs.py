"""Background jobs as stored rows, so they survive a page reload and any web worker can answer
for them: queued → running → done | failed, with progress between 0 and 1."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from geodata.models import Job


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
                                   .values(status="running", started_at=datetime.now()))
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
