"""Run one job by id: claim it, run its handler, record the outcome. No exception leaves unrecorded."""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from core.config import KINDS
from core.params import parse_config
from scheduler import dispatch
from storage import jobs as jobrepo
from storage.status import JobStatus
from workers.context import JobCancelled, JobContext
from workers.handlers import HANDLERS
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def execute_job(rt: Runtime, job_id: int, worker: str) -> str:
    """Run job ``job_id`` on this worker. Returns the outcome: succeeded, failed, cancelled or skipped.

    ``skipped`` means the message was a duplicate or stale (the job is not ``queued``): the guarded claim makes
    a redelivered message for a running or finished job a no-op.
    """
    with rt.store.session() as s:
        job = jobrepo.claim(s, job_id, worker, rt.settings.lease_seconds, gpu=os.environ.get("CUDA_VISIBLE_DEVICES"))
        if job is None:
            current = jobrepo.get_job(s, job_id)
            if current is not None:
                jobrepo.add_event(s, job_id, "message", f"message dropped: job is {current.status.value}",
                                  worker=worker)
            log.info("job %s not claimed (%s): message dropped", job_id,
                     current.status.value if current else "no such job")
            return "skipped"
        ctx = JobContext(rt.store, rt.settings, job, worker)
        ctx.read_parents(s)  # in the claiming transaction: one round trip less for jobs that read results
    log.info("job %s (%s %s) started, attempt %s", job.id, job.kind, job.name, job.attempts)
    try:
        config: Any = parse_config(KINDS[job.kind].config, job.params)
        HANDLERS[job.kind](ctx, config)
    except JobCancelled as e:
        return _finish_unsuccessfully(rt, job_id, JobStatus.CANCELLED, str(e), None, worker)
    except SoftTimeLimitExceeded:
        why = f"timed out after {job.timeout:g} s (the job's timeout)"
        return _finish_unsuccessfully(rt, job_id, JobStatus.FAILED, why, traceback.format_exc(), worker)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        return _finish_unsuccessfully(rt, job_id, JobStatus.FAILED, why, traceback.format_exc(), worker)
    if not dispatch.complete_job(rt.store, rt.app, job_id, by=worker, results=ctx.write_results):
        log.warning("job %s finished but was no longer running here: result kept, status unchanged", job_id)
        return "skipped"
    log.info("job %s succeeded", job_id)
    return "succeeded"


def _finish_unsuccessfully(rt: Runtime, job_id: int, status: JobStatus, why: str, tb: str | None,
                           worker: str) -> str:
    log.log(logging.INFO if status is JobStatus.CANCELLED else logging.WARNING, "job %s %s: %s", job_id, status, why)
    dispatch.end_job(rt.store, job_id, status, why, tb, by=worker)
    return status.value
