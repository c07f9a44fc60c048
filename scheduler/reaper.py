"""The reaper: finds work that a dead worker or a lost message left behind, and puts it back on track.

- **Expired leases.** A running job whose lease ran out (its worker died: killed, out of memory, machine gone) is
  queued again for its next attempt, or, when it has used ``max_attempts``, ``failed`` with "worker lost" and its
  descendants cancelled. A job the user asked to cancel is ``cancelled`` instead.
- **Lost messages.** A job is ``queued`` in SQL before its message is sent; if the broker lost the message (a
  restart without persistence, a send that failed after the commit), the job would wait forever. When a queue is
  empty on the broker while SQL has jobs queued on it for ``resend_after`` seconds, their messages are sent again.
  A message that was not lost after all is a duplicate, and the worker's guarded claim drops it.

Run it with ``latentfarm reap`` (once) or ``latentfarm scheduler`` (every few seconds). Several reapers may run
at once: expired rows are locked with ``SKIP LOCKED`` and every change is a guarded transition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from scheduler import dispatch
from scheduler.errors import BrokerUnavailable
from scheduler.settings import Settings
from storage import jobs as jobrepo
from storage import queries
from storage.models import JobRow, utcnow
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store

log = logging.getLogger(__name__)
BATCH = 500  # expired jobs handled per transaction


@dataclass
class ReapReport:
    requeued: list[int] = field(default_factory=list)  # lease expired: queued for another attempt
    failed: list[int] = field(default_factory=list)  # lease expired on the last attempt: failed, worker lost
    cancelled: list[int] = field(default_factory=list)  # lease expired on a job the user had cancelled
    descendants_cancelled: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)  # queued jobs whose message the broker had lost

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled or self.resent)

    def describe(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in vars(self).items() if v]
        return ", ".join(parts) if parts else "nothing to do"


def reap(store: Store, app: Celery, settings: Settings, now: datetime | None = None) -> ReapReport:
    """One pass: expired leases, then lost messages. Returns what it did."""
    now = now or utcnow()
    report = ReapReport()
    while True:
        with store.session() as s:
            expired = _expired(s, now)
            to_send = [jid for job in expired if (jid := _settle(s, job, now, report)) is not None]
            queued = queries.jobs_by_ids(s, to_send)
        _send(app, queued)
        if len(expired) < BATCH:
            break
    _resend_lost(store, app, settings, now, report)
    if report:
        log.warning("reaper: %s", report.describe())
    return report


def _expired(s: Session, now: datetime) -> list[JobRow]:
    return list(s.scalars(
        select(JobRow)
        .where(JobRow.status == JobStatus.RUNNING.value, JobRow.lease_until < now)
        .order_by(JobRow.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    ))


def _settle(s: Session, job: JobRow, now: datetime, report: ReapReport) -> int | None:
    """Requeue, fail or cancel one job whose lease expired. Returns its id if it must be sent again."""
    lost = (f"worker lost: {job.worker or 'its worker'} stopped renewing its lease "
            f"(expired {(now - job.lease_until).total_seconds():.0f} s ago)" if job.lease_until else "worker lost")
    if job.cancel_requested:
        report.descendants_cancelled += dispatch.end_in(s, job.id, JobStatus.CANCELLED, f"cancelled by user ({lost})",
                                                      None, "reaper", job.attempts)
        report.cancelled.append(job.id)
        return None
    if job.attempts >= job.max_attempts:
        why = f"{lost} on attempt {job.attempts} of {job.max_attempts}"
        report.descendants_cancelled += dispatch.end_in(s, job.id, JobStatus.FAILED, why, None, "reaper",
                                                      job.attempts)
        report.failed.append(job.id)
        return None
    if not jobrepo.transition(s, job.id, JobStatus.RUNNING, JobStatus.QUEUED, by="reaper", attempt=job.attempts,
                              message=f"{lost}: requeued for attempt {job.attempts + 1} of {job.max_attempts}",
                              lease_until=None, not_before=None):
        return None
    report.requeued.append(job.id)
    return job.id


def _resend_lost(store: Store, app: Celery, settings: Settings, now: datetime, report: ReapReport) -> None:
    before = now - timedelta(seconds=settings.resend_after)
    with store.session() as s:
        waiting = dict(s.execute(
            select(JobRow.queue, func.count())
            .where(JobRow.status == JobStatus.QUEUED.value,
                   func.coalesce(JobRow.not_before, JobRow.queued_at) < before)
            .group_by(JobRow.queue)
        ).all())
    for queue, count in sorted(waiting.items()):
        try:
            on_broker = queue_size(app, queue)
        except BrokerUnavailable as e:
            log.warning("reaper: %s", e)
            return
        if on_broker:
            continue  # messages are still flowing: lost ones are re-sent once the queue has drained
        with store.session() as s:
            ids = list(s.scalars(
                update(JobRow)
                .where(JobRow.status == JobStatus.QUEUED.value, JobRow.queue == queue,
                       func.coalesce(JobRow.not_before, JobRow.queued_at) < before)
                .values(queued_at=now, not_before=None)
                .returning(JobRow.id)
                .execution_options(synchronize_session=False)
            ))
            for jid in ids:
                jobrepo.add_event(s, jid, "message", f"message re-sent: queue {queue!r} was empty on the broker",
                                  worker="reaper")
            jobs = queries.jobs_by_ids(s, ids)
        log.warning("reaper: queue %r is empty on the broker but %d jobs are queued on it: re-sending", queue, count)
        _send(app, jobs)
        report.resent += ids


def queue_size(app: Celery, queue: str) -> int:
    """How many messages wait in ``queue`` on the broker (0 for a queue it does not know)."""
    from kombu.exceptions import ChannelError

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            with conn.channel() as channel:
                try:
                    return int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:
                    return 0
    except ChannelError:
        return 0
    except Exception as e:
        raise BrokerUnavailable(f"cannot reach the broker {app.conf.broker_url}: {e}") from e


def _send(app: Celery, jobs: list[Job]) -> None:
    try:
        dispatch.send_loaded(app, jobs)
    except BrokerUnavailable as e:
        log.warning("reaper: %s; will try again on the next pass", e)
