"""The Celery task. Registered on every latentfarm app (shared_task) when a worker imports this module."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from scheduler.celery_app import TASK_NAME
from workers.execute import execute_job
from workers.runtime import runtime_for

log = logging.getLogger(__name__)


@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def run_job(self: Task, job_id: int) -> str:
    """Run the job with this id (the message carries nothing else)."""
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        log.error("malformed message: job id %r is not an integer; dropped", job_id)
        return "skipped"
    rt = runtime_for(self.app)
    return execute_job(rt, job_id, worker=self.request.hostname or rt.settings.worker_name)
