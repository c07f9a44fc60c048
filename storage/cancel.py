"""Cancelling jobs in bulk: a few statements per thousand jobs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.events import add_events, add_status_events
from storage.models import utcnow
from storage.sql import JOBS, chunks
from storage.status import JobStatus, can_move


def request_cancel(session: Session, job_ids: Iterable[int], reason: str) -> dict[str, list[int]]:
    """Cancel jobs: pending/queued ones at once, running ones by flag (the worker stops at its next check).

    Guarded ``pending/queued -> cancelled`` UPDATEs ... RETURNING with their status events, as ``transition``
    writes them, and the cancel flag with a message event on running ones. Rows are locked in id order first, as
    ``graph.ready_children`` locks them, so a cancel and a finishing parent on PostgreSQL cannot deadlock.
    Returns the ids ``cancelled`` now and those ``flagged``, in id order.
    """
    for src in (JobStatus.PENDING, JobStatus.QUEUED):
        if not can_move(src, JobStatus.CANCELLED):  # pragma: no cover - the status graph allows it
            raise ValueError(f"illegal job transition {src} -> cancelled")
    now = utcnow()
    cancelled: list[Any] = []
    flagged: list[int] = []
    for part in chunks(sorted(set(job_ids))):
        session.execute(select(JOBS.c.id).where(JOBS.c.id.in_(part)).order_by(JOBS.c.id).with_for_update())
        cancelled += session.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(part), JOBS.c.status.in_([JobStatus.PENDING.value, JobStatus.QUEUED.value]))
            .values(status=JobStatus.CANCELLED.value, error=reason, finished_at=now)
            .returning(JOBS.c.id, JOBS.c.attempts)
        ).all()
        flagged += session.scalars(
            update(JOBS).where(JOBS.c.id.in_(part), JOBS.c.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True).returning(JOBS.c.id)
        ).all()
    cancelled.sort(key=lambda r: r.id)
    flagged.sort()
    add_status_events(session, [(r.id, r.attempts, reason) for r in cancelled], JobStatus.CANCELLED, now)
    add_events(session, flagged, "message", f"cancel requested: {reason}", time=now)
    return {"cancelled": [r.id for r in cancelled], "flagged": flagged}
