"""Dispatch: write a planned batch in one transaction, serve cache hits, and queue jobs whose parents succeeded.

The store is the truth and Celery the transport: a job is marked ``queued`` in SQL first, and its message (the job
id alone) is sent after the commit. Fan-in is counted in SQL when a parent finishes, not with Celery chords.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from scheduler.celery_app import TASK_NAME
from scheduler.errors import BrokerUnavailable, UserError
from scheduler.plan import BatchPlan
from storage import jobs as jobrepo
from storage import queries
from storage.errors import NotFound
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store

HARD_LIMIT_GRACE = 30.0  # seconds between a job's soft time limit (clean failure) and the hard kill


@dataclass
class SubmitResult:
    batch_id: int
    job_ids: dict[str, int]
    cached: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)


def to_broker_priority(app: Celery, priority: int) -> int:
    """Specs say 9 = most urgent. Redis serves the lowest number first; AMQP the highest."""
    url = str(app.conf.broker_url or "")
    return 9 - priority if url.startswith(("redis", "rediss", "sentinel")) else priority


def send_jobs(app: Celery, store: Store, job_ids: Iterable[int]) -> None:
    """Send one message per job (already ``queued`` in SQL) to its queue."""
    ids = list(job_ids)
    if not ids:
        return
    with store.session() as s:
        jobs = queries.jobs_by_ids(s, ids)
    _send(app, jobs)


def _send(app: Celery, jobs: list[Job]) -> None:
    if not jobs:
        return
    try:
        with app.producer_or_acquire() as producer:
            for job in jobs:
                app.send_task(TASK_NAME, args=[job.id], queue=job.queue, routing_key=job.queue,
                              priority=to_broker_priority(app, job.priority), producer=producer,
                              **_limits(job))
    except Exception as e:  # kombu raises many types: OperationalError, ConnectionError, socket errors
        raise BrokerUnavailable(f"cannot send jobs to the broker {app.conf.broker_url}: {e}") from e


def _limits(job: Job) -> dict[str, float]:
    if job.timeout is None:
        return {}
    return {"soft_time_limit": job.timeout, "time_limit": job.timeout + HARD_LIMIT_GRACE}


def submit(store: Store, app: Celery, plan: BatchPlan, no_cache: bool = False) -> SubmitResult:
    """Write the batch (all or nothing), mark cache hits succeeded, queue the ready jobs and send them."""
    with store.session() as s:
        batch_id, ids = jobrepo.create_batch(s, plan.name, dict(plan.spec), list(plan.jobs), plan.edges,
                                             spec_path=plan.spec_path, no_cache=no_cache)
        result = SubmitResult(batch_id, ids)
        if not no_cache:
            hits = jobrepo.succeeded_by_fingerprint(s, [j.fingerprint for j in plan.jobs])
            for j in plan.jobs:  # parents first, so a child can be a hit once its parents are
                source = hits.get(j.fingerprint)
                if source is None:
                    continue
                jid = ids[j.name]
                if jobrepo.transition(s, jid, JobStatus.PENDING, JobStatus.SUCCEEDED, cached_from=source,
                                      progress=1.0, message=f"cached: same fingerprint as job {source}"):
                    jobrepo.copy_results(s, source, jid)
                    result.cached.append(jid)
        for jid in jobrepo.roots(s, batch_id):
            if jobrepo.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED):
                result.queued.append(jid)
    send_jobs(app, store, result.queued)
    return result


def _queue_ready_children(s: Session, job_id: int) -> list[int]:
    """Queue each pending child of ``job_id`` whose parents have all succeeded (fan-in counted in SQL).

    Two parents finishing at once may both see a child ready; the guarded ``pending -> queued`` lets only one
    of them queue it.
    """
    return [c for c in jobrepo.ready_children(s, job_id)
            if jobrepo.transition(s, c, JobStatus.PENDING, JobStatus.QUEUED)]


def complete_job(store: Store, app: Celery, job_id: int, by: str,
                 results: Callable[[Session], None] | None = None) -> bool:
    """Record a running job's ``results`` (rows: metrics, artifacts), mark it succeeded and queue its ready
    children, in one transaction; then send them.

    One transaction, so no reader ever sees the job succeeded without its results, or finished with its children
    not yet queued. Returns False (and records nothing) if the job was no longer running.
    """
    with store.session() as s:
        if not jobrepo.transition(s, job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED, by=by, progress=1.0,
                                  lease_until=None):
            return False
        if results is not None:
            results(s)
        queued = queries.jobs_by_ids(s, _queue_ready_children(s, job_id))
    _send(app, queued)
    return True


def end_job(store: Store, job_id: int, status: JobStatus, why: str, traceback: str | None, by: str) -> list[int]:
    """Mark a running job failed or cancelled, with the reason, and cancel its descendants in one transaction.

    Returns the descendants that were cancelled.
    """
    with store.session() as s:
        if not jobrepo.transition(s, job_id, JobStatus.RUNNING, status, by=by, message=why, error=why,
                                  traceback=traceback, lease_until=None):
            return []
        job = queries.require_job(s, job_id)
        reason = f"parent job {job.name!r} (#{job.id}) {status.value}: {why}"
        return jobrepo.request_cancel(s, jobrepo.descendants(s, job_id), reason)["cancelled"]


def cancel(store: Store, job_ids: Iterable[int], reason: str = "cancelled by user") -> dict[str, list[int]]:
    """Cancel jobs and their descendants: queued ones at once, running ones at their next check."""
    with store.session() as s:
        targets: dict[int, None] = {}
        for jid in job_ids:
            queries.require_job(s, jid)
            targets[jid] = None
            targets.update(dict.fromkeys(jobrepo.descendants(s, jid)))
        return jobrepo.request_cancel(s, list(targets), reason)


def retry(store: Store, app: Celery, job_id: int) -> list[int]:
    """Run a failed or cancelled job again; its cancelled descendants wait for it again. Returns queued ids."""
    with store.session() as s:
        try:
            job = queries.require_job(s, job_id)
        except NotFound as e:
            raise UserError(str(e)) from e
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise UserError(f"job {job_id} is {job.status.value}: only failed or cancelled jobs can be retried")
        reopen: dict[str, Any] = dict(cancel_requested=False, error=None, traceback=None, finished_at=None,
                                      progress=0.0)
        ready = all(queries.require_job(s, p).status is JobStatus.SUCCEEDED for p in queries.job_parents(s, job_id))
        target = JobStatus.QUEUED if ready else JobStatus.PENDING
        jobrepo.transition(s, job_id, job.status, target, message="retry requested", **reopen)
        for d in jobrepo.descendants(s, job_id):
            jobrepo.transition(s, d, JobStatus.CANCELLED, JobStatus.PENDING, message=f"retry of job {job_id}",
                               **reopen)
    queued = [job_id] if ready else []
    send_jobs(app, store, queued)
    return queued
