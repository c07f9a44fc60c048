"""The embedded default: a real Celery worker running in this process on the ``memory://`` transport.

``latentfarm submit`` with no broker configured starts one, lets it drain the batch, and stops it. It is a real
worker (consumer, acks, the same task), not ``task_always_eager``: what runs here runs the same on a farm.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery
from celery.worker import WorkController, state

log = logging.getLogger(__name__)


class _WorkController(WorkController):
    """A WorkController that tells when its consumer is ready to take messages."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()


@contextmanager
def in_process_worker(app: Celery, concurrency: int = 1, hostname: str | None = None,
                      loglevel: str = "ERROR") -> Iterator[WorkController]:
    """Run a worker for ``app`` in a background thread for the duration of the ``with`` block."""
    app.finalize()
    app.set_current()
    app.set_default()
    type(app.log)._setup = False
    app.log.setup(loglevel=loglevel)
    worker = _WorkController(
        app=app, concurrency=concurrency, pool="solo" if concurrency == 1 else "threads",
        hostname=hostname or f"embedded@{socket.gethostname()}",
        loglevel=loglevel, without_heartbeat=True, without_mingle=True, without_gossip=True, ready_callback=None,
        queues=[q.name for q in app.conf.task_queues],
    )
    thread = threading.Thread(target=worker.start, name="latentfarm-embedded-worker", daemon=True)
    thread.start()
    # lets callers see whether the worker is still alive
    worker.thread = thread  # type: ignore[attr-defined]
    if not worker.ready.wait(30):
        raise RuntimeError("the in-process worker did not start within 30 s")
    try:
        yield worker
    finally:
        # The consumer loop checks this flag between messages; it is how Celery stops an embedded worker.
        state.should_terminate = 0
        thread.join(60)
        state.should_terminate = None
        if thread.is_alive():
            log.warning("the in-process worker did not stop within 60 s")


def worker_alive(worker: WorkController) -> bool:
    """Whether the in-process worker's thread is still running."""
    thread = getattr(worker, "thread", None)
    return thread is not None and thread.is_alive()
