"""What the reaper reads and writes: running jobs whose lease ran out, and queued jobs whose message may be lost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.events import add_events
from storage.models import JobRow
from storage.queries import jobs_by_ids
from storage.records import Job, from_row
from storage.status import JobStatus


def expired(session: Session, now: datetime, limit: int) -> list[Job]:
    """Up to ``limit`` running jobs whose lease ran out before ``now``, in id order, locked for this transaction.

    Rows another reaper has locked are skipped (``SKIP LOCKED``): several reapers may run at once, each settling
    different jobs; the transitions they then make are guarded anyway.
    """
    rows = session.scalars(
        select(JobRow)
        .where(JobRow.status == JobStatus.RUNNING.value, JobRow.lease_until < now)
        .order_by(JobRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [from_row(Job, r) for r in rows]


def _waiting_since(before: datetime) -> list:  # type: ignore[type-arg]
    return [JobRow.status == JobStatus.QUEUED.value, func.coalesce(JobRow.not_before, JobRow.queued_at) < before]


def queued_waiting(session: Session, before: datetime) -> dict[str, int]:
    """Per queue, how many jobs have been queued since before ``before`` (or were due to retry before then)."""
    return {queue: count for queue, count in session.execute(
        select(JobRow.queue, func.count()).where(*_waiting_since(before)).group_by(JobRow.queue))}


def mark_resent(session: Session, queue: str, before: datetime, now: datetime, message: str) -> list[Job]:
    """Those jobs of ``queue`` (see ``queued_waiting``) queued afresh at ``now``, with a message event each: the
    caller sends their messages again. Returns them."""
    ids = list(session.scalars(
        update(JobRow)
        .where(JobRow.queue == queue, *_waiting_since(before))
        .values(queued_at=now, not_before=None)
        .returning(JobRow.id)
        .execution_options(synchronize_session=False)
    ))
    add_events(session, ids, "message", message, worker="reaper")
    return jobs_by_ids(session, ids)
