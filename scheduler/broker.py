"""The broker: sending jobs' messages, asking how many wait in a queue, checking it can be reached.

A message is the job's id alone, sent after the transaction that marked the job ``queued`` committed. A send that
fails leaves the job queued in SQL, and the reaper sends it again (``send_or_leave``).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.utils.uuid import uuid

from scheduler.celery_app import TASK_NAME, FarmApp
from scheduler.errors import BrokerUnavailable, mask_secrets
from storage.records import Job

PUBLISH_BATCH = 1000  # broker operations buffered before they are written (Redis: one pipeline round trip)
log = logging.getLogger(__name__)


def broker_priority(app: Celery, priority: int) -> int:
    """Specs say 9 = most urgent. Redis serves the lowest number first; AMQP the highest."""
    url = str(app.conf.broker_url or "")
    return 9 - priority if url.startswith(("redis", "rediss", "sentinel")) else priority


def route(app: Celery, queue: str) -> str:
    """The broker queue a job of ``queue`` is sent to (``FarmApp.broker_queue``; a plain Celery app: ``queue``)."""
    return app.broker_queue(queue) if isinstance(app, FarmApp) else queue


def in_memory(app: Celery) -> bool:
    """Whether ``app``'s broker lives in this process's memory (the embedded default): its messages end with it."""
    return str(app.conf.broker_url or "").startswith("memory://")


def hard_grace(timeout: float) -> float:
    """Seconds between a job's soft time limit (a clean failure at its next check) and the hard one (kill)."""
    return min(max(timeout / 2, 2.0), 30.0)


def _limits(job: Job) -> dict[str, float]:
    """Celery's own hard limit, a last resort on prefork pools: the worker's lease keeper fails a job at its
    timeout (soft) and kills it ``hard_grace`` later; Celery kills the pool process 30 s after that."""
    if job.timeout is None:
        return {}
    return {"time_limit": job.timeout + hard_grace(job.timeout) + 30.0}


def send(app: Celery, jobs: list[Job], countdown: float | None = None) -> None:
    """Send one message per job (each already ``queued`` in SQL) to its queue, in pipelines. BrokerUnavailable if
    the broker cannot be reached.

    The messages are Celery's (protocol 2, with a ``task-sent`` event each where the app sends them), made by the
    app's own ``amqp.create_task_message`` and ``send_task_message``: what ``send_task`` does for one message, less
    what is the same for every message of a batch (routing, representations, the origin, the parent task), which is
    worked out once. A queue is declared with its first message."""
    if not jobs:
        return
    farm = {"farm": app.farm_id} if isinstance(app, FarmApp) and app.farm_id else {}
    amqp = app.amqp
    kwargsrepr = saferepr(farm)
    origin = anon_nodename()
    parent = app.current_worker_task  # a worker's job queueing its children: they are its children in Celery too
    root_id = (parent.request.root_id or parent.request.id) if parent else None
    parent_id = parent.request.id if parent else None
    declared: set[str] = set()
    try:
        with app.producer_or_acquire() as producer, _publish_batch(producer):
            for job in jobs:
                queue = route(app, job.queue)
                task_id = uuid()
                message = amqp.create_task_message(
                    task_id, TASK_NAME, [job.id], farm, countdown=countdown, reply_to=app.thread_oid,
                    time_limit=_limits(job).get("time_limit"), create_sent_event=app.conf.task_send_sent_event,
                    root_id=root_id or task_id, parent_id=parent_id, origin=origin, ignore_result=None,
                    argsrepr=f"[{job.id}]", kwargsrepr=kwargsrepr)
                amqp.send_task_message(producer, TASK_NAME, message, queue=queue, routing_key=queue,
                                       priority=broker_priority(app, job.priority),
                                       declare=[] if queue in declared else None)
                declared.add(queue)
    except Exception as e:  # kombu raises many types: OperationalError, ConnectionError, socket errors
        raise BrokerUnavailable(_unreachable(app, "cannot send jobs to", e)) from e


def send_or_leave(app: Celery, jobs: list[Job], countdown: float | None = None) -> None:
    """``send``, after a commit: if the broker is away the jobs stay queued in SQL and the reaper re-sends them."""
    try:
        send(app, jobs, countdown)
    except BrokerUnavailable as e:
        log.warning("%s; %d queued jobs will be re-sent by the reaper", e, len(jobs))


def _publish_batch(producer: Any) -> Any:
    """A context in which ``producer``'s messages are buffered and written to the broker in pipelines of
    ``PUBLISH_BATCH`` operations, flushed at its end (kombu >= 5.7's ``Producer.batch``; transports that cannot
    batch, and older kombu, publish each message at once)."""
    batch = getattr(producer, "batch", None)
    return batch(max_size=PUBLISH_BATCH) if batch is not None else nullcontext()


def _unreachable(app: Celery, what: str, e: BaseException) -> str:
    """The one-line reason the broker could not be used, its password masked."""
    return mask_secrets(f"{what} the broker {app.conf.broker_url}: {e}")


def queue_size(app: Celery, queue: str) -> int:
    """How many messages wait for the jobs of ``queue`` on the broker (0 for a queue it does not know)."""
    return queue_sizes(app, [queue])[queue]


def queue_sizes(app: Celery, queues: list[str]) -> dict[str, int]:
    """``queue_size`` of each of ``queues`` (as specs name them), through one connection. BrokerUnavailable if
    the broker cannot be reached."""
    from kombu.exceptions import ChannelError

    sizes = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            for queue in queues:
                with conn.channel() as channel:  # a channel each: on AMQP, a queue it does not know closes it
                    try:
                        sizes[queue] = int(channel.queue_declare(queue=route(app, queue), passive=True).message_count)
                    except ChannelError:
                        sizes[queue] = 0
    except ChannelError:
        return {**{q: 0 for q in queues}, **sizes}
    except Exception as e:
        raise BrokerUnavailable(_unreachable(app, "cannot reach", e)) from e
    return sizes


def check(app: Celery) -> None:
    """BrokerUnavailable unless the broker can be reached (within about 5 s)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as e:
        raise BrokerUnavailable(_unreachable(app, "cannot reach", e)) from e
