"""Run one job by id: claim it, keep its lease, run its handler, record the outcome. No exception leaves
unrecorded, and a job is never recorded twice: every write that ends a run is guarded by the attempt it claimed.

Outcomes:

- the handler returns: results, its resources (``workers.resources``) and ``succeeded`` in one transaction,
  children queued;
- it raises a transient error (a connection to the database or broker lost): the job is queued again after an
  exponential backoff, until it has used ``max_attempts``; out of a GPU's memory (a neighbour may have filled it):
  retried once;
- it runs out of its memory budget (``workers.limits``: an allocation fails): ``failed`` with "out of memory",
  not retried, and the worker goes on;
- any other error (the user's spec, data or code): ``failed`` at once, with the message and traceback;
- its worker shuts down (warm or cold, SIGINT or SIGTERM): ``queued`` again for another attempt, never failed;
- its search's pruner stopped it (``workers.pruning``): ``pruned`` at that check, its downstream jobs cancelled,
  and its search asks its next trial;
- the user cancelled it: ``cancelled`` at its next check; past its ``timeout``: ``failed`` at its next check, or,
  stuck ``hard_grace`` seconds more, failed and its process killed (a worker process of its own only);
- its lease ran out while it ran (the database was away for longer than the lease) and the reaper handed it on:
  nothing is recorded by this attempt.

Writes that end a run wait for the database to come back for up to the lease's length.

The worker's row in the ``workers`` table follows: the claim sets its ``job_id`` (in the claiming transaction), a
success counts in ``jobs_done`` (in the completing one); any other end clears the job, and a failure counts in
``jobs_failed``, in a write of its own that may fail without touching the job (the next heartbeat mends ``job_id``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from celery.exceptions import Reject

from core.kinds import KINDS
from core.memory import gib
from core.params import parse_config
from scheduler import lifecycle
from scheduler import search as searching
from scheduler.broker import hard_grace
from scheduler.errors import DatabaseUnavailable, is_transient, out_of_memory
from scheduler.spec import first_line
from storage import queries, workers
from storage.events import add_event
from storage.records import Job
from storage.status import JobStatus
from storage.transitions import claim_job, one_statement
from workers.context import JobCancelled, JobContext, JobLost, JobReleased, JobTimedOut
from workers.handlers import handler_for
from workers.limits import memory_budget
from workers.monitor import Watch, monitor
from workers.pruning import JobPruned
from workers.resources import measured
from workers.runtime import Runtime
from workers.threads import job_threads

log = logging.getLogger(__name__)
T = TypeVar("T")
_ENDED = {s.value for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED)}


def patiently(rt: Runtime, write: Callable[[], T], what: str) -> T:
    """Run ``write`` (one transaction), waiting out a database that is away for up to the lease's length."""
    deadline = time.monotonic() + rt.settings.lease_seconds
    pause = 0.2
    while True:
        try:
            return write()
        except DatabaseUnavailable as e:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: %s; trying again in %.1f s", what, e, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def execute_job(rt: Runtime, job_id: int, worker: str) -> str:
    """Run job ``job_id`` on this worker. Returns the outcome: succeeded, failed, cancelled, queued (to be
    retried), lost or skipped.

    ``skipped`` means the message was a duplicate or stale (the job is not ``queued``): the guarded claim makes
    a redelivered message for a running or finished job a no-op.
    """
    try:
        claimed = patiently(rt, lambda: _claim(rt, job_id, worker, rt.settings.gpu), f"job {job_id}: claim")
    except DatabaseUnavailable as e:  # the message goes back to its queue: the job must not wait for the reaper
        raise Reject(f"job {job_id}: cannot claim it: {e}", requeue=True) from e
    if claimed is None:
        return "skipped"
    job, ctx, has_children = claimed
    watch = Watch(rt.store, job.id, job.attempts, rt.settings.lease_seconds, job.timeout,
                  on_hard_limit=lambda w: _hard_limit(rt, job, w, worker))
    ctx.watch = watch
    log.info("job %s (%s %s) started, attempt %s/%s", job.id, job.kind, job.name, job.attempts, job.max_attempts)
    monitor().add(watch)  # the lease is renewed until the outcome is recorded
    try:
        outcome = _run(rt, ctx, job, worker, has_children)
    except DatabaseUnavailable as e:  # cut off from the database longer than a lease: the attempt is not ours now
        log.warning("job %s: cannot record the outcome of attempt %s (%s): its lease runs out and the reaper hands "
                    "the job on; this attempt's results are dropped", job.id, job.attempts, e)
        outcome = "lost"
    finally:
        monitor().remove(watch)
    if outcome != "succeeded":  # a success was counted with its results
        _forget_job(rt, worker, failed=outcome == JobStatus.FAILED.value)
    if outcome in _ENDED and KINDS[job.kind].searchable:  # a trial's slot is free: its search asks the next one
        searching.after_trial(rt.store, rt.app, job.id)
    return outcome


def _forget_job(rt: Runtime, worker: str, failed: bool) -> None:
    """The worker's row no longer shows the job, and counts it if it failed. A write of its own, tried once: a
    database that is away costs the worker's count, never the job."""
    try:
        with rt.store.session() as s:
            workers.job_ended(s, worker, failed=failed)
    except Exception as e:
        log.warning("worker %s: cannot record the end of its job in the workers table: %s", worker, first_line(e))


def _claim(rt: Runtime, job_id: int, worker: str, gpu: str | None) -> tuple[Job, JobContext, bool] | None:
    """The claim (with the worker's row), one statement on PostgreSQL: a transaction of its own, one round trip.
    Returns the job, its context and whether it has children, or None for a message to drop."""
    with one_statement(rt.store.engine) as s:
        claimed = claim_job(s, job_id, worker, rt.settings.lease_seconds, gpu=gpu, host=socket.gethostname())
        if claimed is None:
            current = queries.get_job(s, job_id)
            if current is not None:
                add_event(s, job_id, "message", f"message dropped: job is {current.status.value}",
                                  worker=worker)
            log.info("job %s not claimed (%s): message dropped", job_id,
                     current.status.value if current else "no such job")
            return None
    return claimed.job, JobContext(rt.store, rt.settings, claimed.job, worker), claimed.has_children


def _run(rt: Runtime, ctx: JobContext, job: Job, worker: str, has_children: bool | None = None) -> str:
    try:
        params: Any = parse_config(KINDS[job.kind].params, job.params)
        if KINDS[job.kind].reads_results:  # its parents and their artifacts, which no longer change: no transaction
            with one_statement(rt.store.engine) as s:
                ctx.read_parents(s)
        with memory_budget(rt.settings.job_memory), job_threads(), measured(ctx):  # measured: workers.resources
            handler_for(job.kind)(ctx, params)
    except JobLost as e:
        log.warning("job %s: %s; this attempt's results are dropped", job.id, e)
        return "lost"
    except JobReleased as e:
        return _release(rt, job, str(e), worker)
    except JobCancelled as e:
        return _finish(rt, job, JobStatus.CANCELLED, str(e), None, worker)
    except JobPruned as e:  # its search's pruner stopped it: done early, not failed
        return _finish(rt, job, JobStatus.PRUNED, str(e), None, worker)
    except JobTimedOut as e:
        return _finish(rt, job, JobStatus.FAILED, str(e), traceback.format_exc(), worker)
    except Exception as e:
        if ctx.watch is not None and ctx.watch.released:  # a second Ctrl-C raised into the job: not its failure
            return _release(rt, job, ctx.watch.released, worker)
        why = f"{type(e).__name__}: {e}"
        oom = out_of_memory(e)
        if oom == "host" or (oom == "device" and job.attempts >= 2):  # a device's: retried once, then this
            why = (f"out of memory: {first_line(e)} (a job may use {gib(rt.settings.job_memory)} of this machine's "
                   "memory: LATENTFARM_JOB_MEMORY)" if oom == "host" else f"out of device memory: {first_line(e)}")
            return _finish(rt, job, JobStatus.FAILED, why, traceback.format_exc(), worker)
        if oom == "device" or is_transient(e):
            log.warning("job %s: transient error: %s", job.id, why)
            outcome = patiently(rt, lambda: lifecycle.retry_later(rt.store, rt.app, job, why, traceback.format_exc(),
                                                                 worker, rt.settings.retry_backoff),
                                f"job {job.id}: requeue")
            if outcome == "lost":  # the reaper handed the job on while this attempt waited for the database
                log.warning("job %s: attempt %s no longer holds it: its retry is dropped", job.id, job.attempts)
            return outcome
        return _finish(rt, job, JobStatus.FAILED, why, traceback.format_exc(), worker)
    except BaseException:  # KeyboardInterrupt, SystemExit: the process is going, the job is not done
        _release(rt, job, "interrupted", worker)
        raise

    held = ctx.held_results()  # metrics and artifacts go into the completing statement (else: written before it)
    done = patiently(rt, lambda: lifecycle.complete_job(
        rt.store, rt.app, job.id, by=worker, results=ctx.write_results if held is None else None,
        attempt=job.attempts, rows=held, worker=worker, has_children=has_children), f"job {job.id}: completion")
    if not done:
        log.warning("job %s finished but attempt %s no longer holds it: result dropped", job.id, job.attempts)
        return "lost"
    ctx.after_results()
    log.info("job %s succeeded", job.id)
    return "succeeded"


def _release(rt: Runtime, job: Job, why: str, worker: str) -> str:
    """The worker is going: the job goes back to ``queued`` for another attempt (training resumes from its
    checkpoint), its message re-sent; never failed."""
    log.warning("job %s released (%s): queued for another attempt", job.id, why)
    try:
        released = lifecycle.release(rt.store, rt.app, job.id, job.attempts, why, worker)
    except DatabaseUnavailable as e:  # its lease runs out and the reaper queues it again
        log.warning("job %s: cannot release it now (%s): the reaper will, once its lease runs out", job.id, e)
        return "lost"
    return "released" if released else "lost"


def _finish(rt: Runtime, job: Job, status: JobStatus, why: str, tb: str | None, worker: str) -> str:
    log.log(logging.INFO if status is JobStatus.CANCELLED else logging.WARNING, "job %s %s: %s", job.id, status, why)
    patiently(rt, lambda: lifecycle.end_job(rt.store, job.id, status, why, tb, by=worker, attempt=job.attempts),
              f"job {job.id}: outcome")
    return status.value


def _hard_limit(rt: Runtime, job: Job, watch: Watch, worker: str) -> None:
    """The job ignored its soft time limit: fail it, and kill this process if it is a worker's own."""
    assert job.timeout is not None
    why = (f"killed: still running {hard_grace(job.timeout):g} s after its timeout of {job.timeout:g} s "
           "(hard time limit)")
    lifecycle.end_job(rt.store, job.id, JobStatus.FAILED, why, None, by=worker, attempt=job.attempts)
    watch.lost = True
    if rt.settings.owns_process:
        log.error("job %s: %s; killing worker process %s", job.id, why, os.getpid())
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
    log.error("job %s: %s; it runs on in this process (not a worker process of its own), its result dropped",
              job.id, why)
