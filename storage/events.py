"""A job's events: status changes (written with the change itself, see ``storage.transitions``), progress
messages and other messages (a dropped message, a re-sent one, a cancel request)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from storage.models import utcnow
from storage.sql import EVENTS
from storage.status import JobStatus


def add_event(session: Session, job_id: int, kind: str, message: str, worker: str | None = None,
              attempt: int | None = None) -> None:
    """Record an event of ``kind`` (progress, message) for a job."""
    session.execute(insert(EVENTS).values(job_id=job_id, time=utcnow(), kind=kind, message=message, worker=worker,
                                          attempt=attempt))


def add_events(session: Session, job_ids: list[int], kind: str, message: str, worker: str | None = None,
               time: datetime | None = None) -> None:
    """The same event for many jobs, in one statement."""
    if job_ids:
        now = time or utcnow()
        session.execute(insert(EVENTS), [{"job_id": job_id, "time": now, "kind": kind, "status": None,
                                          "message": message, "worker": worker, "attempt": None}
                                         for job_id in job_ids])


def add_status_events(session: Session, rows: list[tuple[int, int | None, str | None]], status: JobStatus,
                      time: datetime) -> None:
    """The status events of many jobs that moved to ``status`` at ``time``: (job id, attempt, message) each."""
    if rows:
        session.execute(insert(EVENTS), [{"job_id": job_id, "time": time, "kind": "status", "status": status.value,
                                          "message": message, "worker": None, "attempt": attempt}
                                         for job_id, attempt, message in rows])
