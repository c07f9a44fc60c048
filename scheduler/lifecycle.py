"""A job's life, from submission to its end: write a planned batch in one transaction, serve cache hits, queue jobs
whose parents succeeded, and end runs (succeeded, failed, cancelled, retried later); cancel and retry on request.

The store is the truth and Celery the transport: a job is marked ``queued`` in SQL first, and its message (the job
id alone) is sent after the commit. Fan-in is counted in SQL when a parent finishes, not with Celery chords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from scheduler import broker
from scheduler.errors import Conflict, NotFound
from scheduler.plan import BatchPlan
from storage import batches, graph, queries
from storage import cancel as cancelling
from storage.models import utcnow
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store
from storage.transitions import Results, one_statement, succeed, transition

MAX_BACKOFF = 300.0  # seconds: the longest wait before retrying a job after a transient error


@dataclass
class SubmitResult:
    batch_id: int
    job_ids: dict[str, int]
    cached: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)


def submit(store: Store, app: Celery, plan: BatchPlan, no_cache: bool = False) -> SubmitResult:
    """Write the batch (all or nothing), mark cache hits succeeded, queue the ready jobs and send them."""
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, plan.name, dict(plan.spec), list(plan.jobs), plan.edges,
                                             spec_path=plan.spec_path, no_cache=no_cache)
        result = SubmitResult(batch_id, ids)
        if not no_cache:
            # In bulk, a few statements per thousand jobs: each hit is marked succeeded (guarded, from pending)
            # with its status event and its source's results copied.
            hits = batches.succeeded_by_fingerprint(s, [j.fingerprint for j in plan.jobs])
            sources = {ids[j.name]: hits[j.fingerprint] for j in plan.jobs if j.fingerprint in hits}
            cached = set(batches.mark_cached(s, sources))
            result.cached = [ids[j.name] for j in plan.jobs if ids[j.name] in cached]  # parents first, as planned
        if plan.searches:  # their study jobs run on the control plane, never on a worker
            from scheduler.search import open_searches

            open_searches(s, plan, batch_id, ids)
        # One guarded pending -> queued UPDATE for every ready job (children of hits included), with their events.
        queued = batches.queue_roots(s, batch_id)
        result.queued = [j.id for j in queued]
    broker.send(app, queued)  # after the commit: a job is queued in SQL before its message exists
    return result


def complete_job(store: Store, app: Celery, job_id: int, by: str,
                 results: Callable[[Session], None] | None = None, attempt: int | None = None, *,
                 rows: Results | None = None, worker: str | None = None, has_children: bool | None = None) -> bool:
    """Record a running job's results, mark it succeeded and queue its ready children, in one transaction; then
    send them. The results: ``rows`` (metrics, artifacts) and what ``results`` writes in the transaction; with
    ``worker``, its row in the workers table counts the success.

    One transaction, so no reader ever sees the job succeeded without its results, or finished with its children
    not yet queued. Returns False (and records nothing) if the job was no longer running (at ``attempt``).
    A child whose message cannot be sent stays queued in SQL; the reaper re-sends it.

    On PostgreSQL a job known to have no children (``has_children`` False: its claim said so) with no ``results``
    callback succeeds in one statement, a transaction of its own: one round trip. Otherwise the success is one
    statement that locks the pending children, then one queues those that are ready (``storage.graph``).
    """
    alone = has_children is False and results is None
    with (one_statement(store.engine) if alone else store.session()) as s:
        children = succeed(s, job_id, by, attempt, rows, worker, lock_children=not alone)
        if children is None:
            return False
        if results is not None:
            results(s)
        queued = [] if alone else batches.queue_ready(s, children)
    if alone and children:  # children that appeared after its claim (jobs added to its batch since): queued now
        with store.session() as s:
            queued = batches.queue_ready(s, children)
    broker.send_or_leave(app, queued)
    return True


def end_job(store: Store, job_id: int, status: JobStatus, why: str, traceback: str | None, by: str,
            attempt: int | None = None, src: JobStatus = JobStatus.RUNNING) -> list[int]:
    """Mark a job failed or cancelled, with the reason, and cancel its descendants in one transaction.

    Returns the descendants that were cancelled (none if the job was no longer ``src`` at ``attempt``).
    """
    with store.session() as s:
        return end_in(s, job_id, status, why, traceback, by, attempt, src)


def end_in(s: Session, job_id: int, status: JobStatus, why: str, traceback: str | None, by: str | None,
           attempt: int | None, src: JobStatus = JobStatus.RUNNING) -> list[int]:
    """``end_job`` in the caller's transaction ``s``."""
    if not transition(s, job_id, src, status, by=by, attempt=attempt, message=why, error=why, traceback=traceback,
                      lease_until=None):
        return []
    job = queries.require_job(s, job_id)
    reason = f"parent job {job.name!r} (#{job.id}) {status.value}: {why}"
    return cancelling.request_cancel(s, graph.descendants(s, job_id), reason)["cancelled"]


def backoff(settings_backoff: float, attempt: int) -> float:
    """Seconds before retry ``attempt + 1``: the base, doubled on each further attempt, at most 300 s."""
    return float(min(settings_backoff * 2 ** max(attempt - 1, 0), MAX_BACKOFF))


def retry_later(store: Store, app: Celery, job: Job, why: str, traceback: str | None, by: str,
                base_backoff: float) -> str:
    """A running attempt hit a transient error: queue the job again after a backoff, or fail it when it has used
    its ``max_attempts``. Returns ``queued`` or ``failed``."""
    if job.attempts >= job.max_attempts:
        end_job(store, job.id, JobStatus.FAILED, f"{why} (attempt {job.attempts} of {job.max_attempts})",
                traceback, by, attempt=job.attempts)
        return JobStatus.FAILED.value
    delay = backoff(base_backoff, job.attempts)
    with store.session() as s:
        if not transition(
                s, job.id, JobStatus.RUNNING, JobStatus.QUEUED, by=by, attempt=job.attempts,
                message=f"transient error, retry {job.attempts + 1}/{job.max_attempts} in {delay:g} s: {why}",
                error=why, traceback=traceback, lease_until=None, not_before=utcnow() + timedelta(seconds=delay)):
            return "lost"
        again = queries.jobs_by_ids(s, [job.id])
    broker.send_or_leave(app, again, countdown=delay)  # if it cannot be sent, the reaper re-sends it after not_before
    return JobStatus.QUEUED.value


def release(store: Store, app: Celery, job_id: int, attempt: int, why: str, by: str | None) -> bool:
    """Hand a running attempt back: ``running -> queued`` for another attempt (its worker is shutting down, not its
    job failing), and its message sent again. Guarded by the attempt: False if that attempt no longer runs."""
    with store.session() as s:
        if not transition(s, job_id, JobStatus.RUNNING, JobStatus.QUEUED, by=by, attempt=attempt,
                          message=f"released: {why}; queued for attempt {attempt + 1}", lease_until=None,
                          not_before=None):
            return False
        again = queries.jobs_by_ids(s, [job_id])
    if not broker.in_memory(app):  # an in-process broker goes with its process: the next one sends it again
        broker.send_or_leave(app, again)  # a broker that is away: the reaper sends it again
    return True


def cancel(store: Store, job_ids: Iterable[int], reason: str = "cancelled by user") -> dict[str, list[int]]:
    """Cancel jobs and their descendants: queued ones at once, running ones at their next check."""
    ids = list(dict.fromkeys(job_ids))
    with store.session() as s:
        found = queries.existing_job_ids(s, [i for i in ids if 1 <= i <= queries.MAX_ID])
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no job {missing[0]}")
        return cancelling.request_cancel(s, ids + graph.descendants(s, ids), reason)


def retry(store: Store, app: Celery, job_id: int) -> list[int]:
    """Run a failed or cancelled job again; its cancelled descendants wait for it again. A queued job's message is
    sent again (it may be lost). Returns the ids queued or sent.

    NotFound for no such job, Conflict for a job that is pending, running or succeeded."""
    with store.session() as s:
        job = queries.require_job(s, job_id)
        if job.status is JobStatus.QUEUED:  # its message may be lost (an interrupted embedded run): send it again
            again = queries.jobs_by_ids(s, [job_id])
        elif job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise Conflict(f"job {job_id} is {job.status.value}: only failed, cancelled or queued jobs can be "
                           "retried")
        else:
            again = None
    if again is not None:
        broker.send(app, again)  # a duplicate of a message that was not lost is dropped by the guarded claim
        return [job_id]
    with store.session() as s:
        job = queries.require_job(s, job_id)
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):  # it changed in between
            raise Conflict(f"job {job_id} is {job.status.value}: only failed, cancelled or queued jobs can be "
                           "retried")
        reopen: dict[str, Any] = dict(cancel_requested=False, error=None, traceback=None, finished_at=None,
                                      progress=0.0)
        ready = all(queries.require_job(s, p).status is JobStatus.SUCCEEDED for p in queries.job_parents(s, job_id))
        target = JobStatus.QUEUED if ready else JobStatus.PENDING
        transition(s, job_id, job.status, target, message="retry requested", **reopen)
        for d in graph.descendants(s, job_id):
            transition(s, d, JobStatus.CANCELLED, JobStatus.PENDING, message=f"retry of job {job_id}", **reopen)
        queued = queries.jobs_by_ids(s, [job_id]) if ready else []
    broker.send(app, queued)
    return [j.id for j in queued]
