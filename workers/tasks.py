"""The Celery task. Registered on every latentfarm app (shared_task) when a worker imports this module."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_shutdown,
    worker_shutting_down,
)

from scheduler.celery_app import TASK_NAME, FarmApp
from scheduler.errors import DatabaseUnavailable, SecretsFilter
from scheduler.settings import Settings
from storage.queries import MAX_ID
from storage.workers import EVERY_QUEUE
from workers.execute import execute_job
from workers.monitor import Beacon, monitor
from workers.runtime import runtime_for

log = logging.getLogger(__name__)
_lock = threading.Lock()
bad_messages = 0  # messages this process dropped because they named no possible job
_foreign_farms: set[str] = set()  # the other farms whose messages reached this process
FOREIGN_PAUSE = 1.0  # seconds before a message of another farm goes back to its queue


@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def run_job(self: Task, job_id: Any, farm: Any = None) -> str:
    """Run the job with this id, of the farm ``farm`` (the message carries nothing else; a message without a farm
    was sent before farms had ids)."""
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 1 <= job_id <= MAX_ID:
        _bad(job_id)
        return "skipped"
    rt = runtime_for(self.app)
    try:
        own = rt.farm_id() if farm is not None else None
    except DatabaseUnavailable as e:  # back to its queue: the job must not wait for the reaper
        raise Reject(f"job {job_id}: cannot read this store's farm id: {e}", requeue=True) from e
    if farm is not None and farm != own:
        _foreign(str(farm)[:40], own)
        # Back to its queue for a worker of its own farm. Queues are named after their farm, so this takes a
        # message sent by hand or by a farm configured to share queue names; the pause keeps it from spinning.
        time.sleep(FOREIGN_PAUSE)
        raise Reject(f"job {job_id} is of farm {farm!r}, not of this worker's {own!r}", requeue=True)
    return execute_job(rt, job_id, worker=_node_name(self) or rt.settings.worker_name)


def _node_name(task: Task) -> str | None:
    """The node name of the worker running ``task`` (``gpu0@host``): Celery's worker gives it to the request; an
    in-process worker tells its app (Celery gives its requests only the machine's name)."""
    hostname = task.request.hostname or ""
    if "@" in hostname:
        return hostname
    return getattr(task.app, "node_name", None) or None


def _foreign(farm: str, own: str | None) -> None:
    """Says so loudly, once per farm: this worker's broker carries another store's jobs."""
    with _lock:
        if farm in _foreign_farms:
            return
        _foreign_farms.add(farm)
    log.error("a message of job of farm %r reached this worker of farm %r: another store shares this broker; the "
              "message is left on its queue for a worker of its own farm", farm, own)


def _bad(job_id: Any) -> None:
    """A message whose job id is no id (a string, a float, beyond the database's integers): dropped, logged the
    first time, counted."""
    global bad_messages
    with _lock:
        bad_messages += 1
        count = bad_messages
    if count == 1:
        log.error("dropped a message whose job id %.60r is not an id from 1 to %d; further ones are counted", job_id,
                  MAX_ID)
    elif count % 100 == 0:
        log.error("dropped %d messages whose job id was not an id", count)


@worker_shutting_down.connect
def release_running_jobs(sig: Any = None, how: Any = None, **_: Any) -> None:
    """A worker shutting down, warm or cold, on SIGINT or SIGTERM (or an embedded worker stopped by Ctrl-C) hands
    its running jobs back at their next check: queued for another attempt, never failed."""
    released = monitor().release_all(f"its worker is shutting down ({how or 'warm'}, {sig or 'stopped'})")
    if released:
        log.warning("shutting down: %d running job(s) go back to the queue at their next check", len(released))


@worker_init.connect
def register_worker(sender: Any = None, **_: Any) -> None:
    """A worker of a farm (a ``latentfarm worker`` process, an in-process worker) registers in the ``workers``
    table and heartbeats from a thread of its own (``workers.monitor.Beacon``) until it stops. Its queues as specs
    name them; the embedded default's worker takes every queue."""
    app = getattr(sender, "app", None)
    if not isinstance(app, FarmApp) or getattr(sender, "latentfarm_beacon", None) is not None:
        return
    if app.settings.embedded:
        queues = [EVERY_QUEUE]
    else:
        queues = list(dict.fromkeys(app.spec_queue(q) for q in app.amqp.queues.consume_from))
    beacon = Beacon(runtime_for(app).store, app, sender.hostname, queues, app.settings.gpu, app.gpu_standby)
    sender.latentfarm_beacon = beacon.start()


@worker_shutdown.connect
def unregister_worker(sender: Any = None, **_: Any) -> None:
    """A worker that stops cleanly is marked stopped (one killed is lost once its heartbeats are missed)."""
    beacon = getattr(sender, "latentfarm_beacon", None)
    if beacon is not None:
        beacon.stop()


@after_setup_logger.connect
@after_setup_task_logger.connect
def mask_secrets_in_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """Passwords in URLs and the API token never reach a worker's log, whatever logs them."""
    try:
        secrets = Settings.from_env().secrets
    except Exception:  # settings that do not parse: mask URL passwords anyway
        secrets = ()
    for target in (logger, logging.getLogger()):
        for handler in getattr(target, "handlers", []):
            if not any(isinstance(f, SecretsFilter) for f in handler.filters):
                handler.addFilter(SecretsFilter(secrets))
