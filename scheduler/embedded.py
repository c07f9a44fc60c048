"""The embedded default: a real Celery worker running in this process on the ``memory://`` transport.

``latentfarm submit`` with no broker configured starts one, lets it drain the batch, and stops it. It is a real
worker (consumer, acks, the same task), not ``task_always_eager``: what runs here runs the same on a farm.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery, signals
from celery.worker import WorkController, state

from scheduler.celery_app import FarmApp

log = logging.getLogger(__name__)


class _WorkController(WorkController):
    """A WorkController that tells when its consumer is ready to take messages, and whether Celery told the world
    it shut down (``worker_shutdown``: it does on a warm stop, not on the cold one that ends an embedded worker)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.ready = threading.Event()
        self.shutdown_sent = False
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: object) -> None:
        self.ready.set()

    def _send_worker_shutdown(self) -> None:
        self.shutdown_sent = True
        super()._send_worker_shutdown()


STOP_INTERRUPTED = 1.0  # seconds an interrupted block waits for its worker's jobs to hand themselves back
THREAD_NAME = "latentfarm-embedded-worker"


def embedded_name(pid: int | None = None) -> str:
    """The node name of this process's in-process worker: ``embedded-<pid>@<host>``, so that a later process on
    the same host can tell that the jobs it left running have no process any more (``orphan_pid``)."""
    return f"embedded-{os.getpid() if pid is None else pid}@{socket.gethostname()}"


def orphan_pid(worker: str | None) -> int | None:
    """The pid in an embedded worker's name, if that worker ran on this host and its process is gone."""
    match = re.fullmatch(r"embedded-(\d+)@(.+)", worker or "")
    if match is None or match.group(2) != socket.gethostname():
        return None
    pid = int(match.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:  # alive, someone else's
        return None
    return None


@contextmanager
def in_process_worker(app: Celery, concurrency: int = 1, hostname: str | None = None,
                      loglevel: str = "ERROR") -> Iterator[WorkController]:
    """Run a worker for ``app`` in a background thread for the duration of the ``with`` block.

    A block left by an exception (Ctrl-C: KeyboardInterrupt) tells the worker it is shutting down, so its running
    job hands itself back at its next check (``workers.tasks`` listens), and waits ``STOP_INTERRUPTED`` seconds
    for that, not for the job to end; what is still running afterwards the caller releases in SQL.

    The worker registers in the ``workers`` table when it starts (Celery's ``worker_init``, which ``workers.tasks``
    listens to) and is marked stopped at the end (``worker_shutdown``, sent here if Celery did not)."""
    settle_interrupted_worker()
    app.finalize()
    app.set_current()
    app.set_default()
    type(app.log)._setup = False
    app.log.setup(loglevel=loglevel)
    worker = _WorkController(
        app=app, concurrency=concurrency, pool="solo" if concurrency == 1 else "threads",
        hostname=hostname or embedded_name(),
        loglevel=loglevel, without_heartbeat=True, without_mingle=True, without_gossip=True, ready_callback=None,
        queues=[q.name for q in app.conf.task_queues],
    )
    if isinstance(app, FarmApp):  # the tasks it runs record it (Celery tells them the machine's name only)
        app.node_name = worker.hostname
    thread = threading.Thread(target=worker.start, name=THREAD_NAME, daemon=True)
    thread.start()
    # lets callers see whether the worker is still alive
    worker.thread = thread  # type: ignore[attr-defined]
    if not worker.ready.wait(30):
        raise RuntimeError("the in-process worker did not start within 30 s")
    interrupted = False
    try:
        yield worker
    except BaseException:
        interrupted = True
        signals.worker_shutting_down.send(sender=worker.hostname, sig="SIGINT", how="Warm", exitcode=1)
        raise
    finally:
        # The consumer loop checks this flag between messages; it is how Celery stops an embedded worker.
        state.should_terminate = 0
        thread.join(STOP_INTERRUPTED if interrupted else 60)
        if not thread.is_alive():
            state.should_terminate = None
        elif not interrupted:
            log.warning("the in-process worker did not stop within 60 s")
        if not worker.shutdown_sent:
            signals.worker_shutdown.send(sender=worker)


def settle_interrupted_worker() -> None:
    """Let the worker of an interrupted block that is still stopping (its job handing itself back) end, and clear
    Celery's stop flag, before another worker starts in this process (a notebook's kernel, after an interrupted
    cell): the flag is the process's, and a new worker that saw it would stop before it is ready."""
    if state.should_terminate is None:
        return
    for thread in threading.enumerate():
        if thread.name == THREAD_NAME:
            thread.join(60)
    state.should_terminate = None


def worker_alive(worker: WorkController) -> bool:
    """Whether the in-process worker's thread is still running."""
    thread = getattr(worker, "thread", None)
    return thread is not None and thread.is_alive()
