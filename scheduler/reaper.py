"""The reaper: finds work that a dead worker or a lost message left behind, and puts it back on track.

- **Expired leases.** A running job whose lease ran out (its worker died: killed, out of memory, machine gone) is
  queued again for its next attempt, or, when it has used ``max_attempts``, ``failed`` with "worker lost" and its
  descendants cancelled. A job the user asked to cancel is ``cancelled`` instead.
- **Lost messages.** A job is ``queued`` in SQL before its message is sent; if the broker lost the message (a
  restart without persistence, a send that failed after the commit), the job would wait forever. When a queue is
  empty on the broker while SQL has jobs queued on it for ``resend_after`` seconds, their messages are sent again.
  A message that was not lost after all is a duplicate, and the worker's guarded claim drops it.

- **Searches.** Every running search is advanced (``scheduler.search``): trials whose end was not followed by an
  ask (the worker died in between) are replaced, a cancelled search is ended.

``reap`` is one pass (``latentfarm reap``); ``Reaper`` runs passes every ``Settings.reap_every`` seconds, in the
calling thread (``latentfarm scheduler``) or a thread of its own (``latentfarm serve`` on the embedded default).
Several reapers may run at once: expired rows are locked with ``SKIP LOCKED`` and every change is guarded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session

from scheduler import broker
from scheduler import search as searching
from scheduler.errors import BrokerUnavailable, LatentfarmError
from scheduler.lifecycle import end_in
from scheduler.settings import Settings
from storage import leases, queries
from storage.models import utcnow
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store
from storage.transitions import transition

log = logging.getLogger(__name__)
BATCH = 500  # expired jobs handled per transaction


@dataclass
class ReapReport:
    requeued: list[int] = field(default_factory=list)  # lease expired: queued for another attempt
    failed: list[int] = field(default_factory=list)  # lease expired on the last attempt: failed, worker lost
    cancelled: list[int] = field(default_factory=list)  # lease expired on a job the user had cancelled
    descendants_cancelled: list[int] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)  # queued jobs whose message the broker had lost
    asked: list[int] = field(default_factory=list)  # jobs of trials that running searches asked (scheduler.search)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled or self.resent or self.asked)

    def describe(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in vars(self).items() if v]
        return ", ".join(parts) if parts else "nothing to do"


def reap(store: Store, app: Celery, settings: Settings, now: datetime | None = None) -> ReapReport:
    """One pass: expired leases, then lost messages. Returns what it did. A broker in this process's memory (a
    ``latentfarm reap`` on the embedded default) holds no message worth sending: the jobs are queued in SQL, and the
    next process that runs a worker sends them."""
    now = now or utcnow()
    report = ReapReport()
    while True:
        with store.session() as s:
            expired = leases.expired(s, now, BATCH)
            to_send = [job.id for job in expired if _settle(s, job, now, report)]
            queued = queries.jobs_by_ids(s, to_send)
        _send(app, queued)
        if len(expired) < BATCH:
            break
    if not broker.in_memory(app) or getattr(app, "node_name", None):
        _resend_lost(store, app, settings, now, report)
    report.asked = searching.advance_all(store, app)  # a trial's end whose advance was lost, a cancelled search
    if report:
        log.warning("reaper: %s", report.describe())
    return report


def _settle(s: Session, job: Job, now: datetime, report: ReapReport) -> bool:
    """Requeue, fail or cancel one job whose lease expired. Returns whether it must be sent again."""
    lost = (f"worker lost: {job.worker or 'its worker'} stopped renewing its lease "
            f"(expired {(now - job.lease_until).total_seconds():.0f} s ago)" if job.lease_until else "worker lost")
    if job.cancel_requested:
        report.descendants_cancelled += end_in(s, job.id, JobStatus.CANCELLED, f"cancelled by user ({lost})", None,
                                               "reaper", job.attempts)
        report.cancelled.append(job.id)
        return False
    if job.attempts >= job.max_attempts:
        why = f"{lost} on attempt {job.attempts} of {job.max_attempts}"
        report.descendants_cancelled += end_in(s, job.id, JobStatus.FAILED, why, None, "reaper", job.attempts)
        report.failed.append(job.id)
        return False
    if not transition(s, job.id, JobStatus.RUNNING, JobStatus.QUEUED, by="reaper", attempt=job.attempts,
                      message=f"{lost}: requeued for attempt {job.attempts + 1} of {job.max_attempts}",
                      lease_until=None, not_before=None):
        return False
    report.requeued.append(job.id)
    return True


def _resend_lost(store: Store, app: Celery, settings: Settings, now: datetime, report: ReapReport) -> None:
    before = now - timedelta(seconds=settings.resend_after)
    with store.session() as s:
        waiting = leases.queued_waiting(s, before)
    for queue, count in sorted(waiting.items()):
        try:
            on_broker = broker.queue_size(app, queue)
        except BrokerUnavailable as e:
            log.warning("reaper: %s", e)
            return
        if on_broker:
            continue  # messages are still flowing: lost ones are re-sent once the queue has drained
        with store.session() as s:
            jobs = leases.mark_resent(s, queue, before, now,
                                      f"message re-sent: queue {queue!r} was empty on the broker")
        log.warning("reaper: queue %r is empty on the broker but %d jobs are queued on it: re-sending", queue, count)
        _send(app, jobs)
        report.resent += [j.id for j in jobs]


def _send(app: Celery, jobs: list[Job]) -> None:
    try:
        broker.send(app, jobs)
    except BrokerUnavailable as e:
        log.warning("reaper: %s; will try again on the next pass", e)


# on_pass(report of a pass, or None when the pass failed; the error that failed it, or None)
OnPass = Callable[[ReapReport | None, Exception | None], None]


class Reaper:
    """Reaper passes every ``every`` seconds (default ``settings.reap_every``), each reported to ``on_pass``. A
    pass that fails (the database or broker is away) is reported and the next pass tries again."""

    def __init__(self, store: Store, app: Celery, settings: Settings, on_pass: OnPass,
                 every: float | None = None) -> None:
        self.store, self.app, self.settings, self.on_pass = store, app, settings, on_pass
        self.every = every or settings.reap_every
        self.stop = threading.Event()

    def run(self) -> None:
        """Pass after pass until ``stop`` is set."""
        while True:
            try:
                report = reap(self.store, self.app, self.settings)
            except Exception as e:  # the database is busy or away: the next pass tries again
                if not isinstance(e, LatentfarmError):
                    log.exception("reaper pass failed")
                self.on_pass(None, e)
            else:
                self.on_pass(report, None)
            if self.stop.wait(self.every):
                return

    @contextmanager
    def in_thread(self) -> Iterator[None]:
        """Run in a thread of its own while the ``with`` block lasts."""
        thread = threading.Thread(target=self.run, name="latentfarm-reaper", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.stop.set()
            thread.join(10)
