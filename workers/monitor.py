"""The lease keeper: one thread per worker process renews the lease of every job running in it.

A running job holds a lease in SQL (``lease_until``). This thread renews it every ``lease / 6`` seconds (at most
every 5 s) while the job runs, whatever the job is doing (a long TensorFlow op included), and brings back what
the job should react to: the user's cancel request, the end of its time budget, or the loss of its claim (the
lease expired while the database was away and the reaper handed the job on). A job reacts at its next check
(``JobContext.check``: every epoch, OIP step, tile). If a job ignores its soft time limit for ``hard_grace``
seconds more (stuck in one long op), ``on_hard_limit`` is called: the job is failed in SQL and, in a worker
process of its own, the process is killed (the worker is restarted by its supervisor).

If the database cannot be reached, renewals fail quietly and are tried again; once the lease has run out the
reaper may requeue the job, and this attempt's late results are then refused by the attempt guard in SQL.

Beside it, each worker (a Celery node: the parent of a prefork pool, an in-process worker) has a ``Beacon`` thread
that keeps its row in the ``workers`` table alive, and may have it stand in on the gpu queue (see ``Beacon``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from scheduler.broker import hard_grace
from scheduler.celery_app import FarmApp
from scheduler.settings import MAX_RENEW_EVERY, renew_interval
from scheduler.spec import first_line
from storage import workers
from storage.store import Store
from storage.transitions import heartbeat

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class Watch:
    """What the monitor knows about one running job attempt, and what it tells the job."""

    store: Store
    job_id: int
    attempt: int
    lease_seconds: float
    timeout: float | None = None
    on_hard_limit: Callable[[Watch], None] | None = None
    started: float = field(default_factory=time.monotonic)
    progress: float | None = None  # the latest fraction reported, written with the next renewal
    cancel_requested: bool = False
    lost: bool = False  # this attempt no longer runs in SQL: its results must not be recorded
    released: str | None = None  # why the job must hand itself back (its worker is shutting down), once asked
    hard_limited: bool = False
    next_beat: float = 0.0

    def __post_init__(self) -> None:
        self.next_beat = self.started + renew_interval(self.lease_seconds)

    @property
    def timed_out(self) -> bool:
        return self.timeout is not None and time.monotonic() - self.started >= self.timeout

    def renew(self, progress: float | None = None) -> None:
        """Renew the lease now (one UPDATE) and refresh the flags."""
        if progress is not None:
            self.progress = progress
        self.next_beat = time.monotonic() + renew_interval(self.lease_seconds)
        with self.store.session() as s:
            cancel = heartbeat(s, self.job_id, self.attempt, self.lease_seconds, self.progress)
        if cancel is None:
            self.lost = True
        else:
            self.cancel_requested = self.cancel_requested or cancel


class Monitor:
    """The process's lease-keeping thread, started on first use."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._wake_at = 0.0  # when the thread wakes next (monotonic), unless notified sooner

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="latentfarm-leases", daemon=True)
                self._thread.start()
            elif _first_deadline(watch) < self._wake_at:  # else no wake-up: a short job costs no thread switch
                self._wake.notify()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def release_all(self, why: str) -> list[Watch]:
        """Ask every job running in this process to hand itself back at its next check (its worker is shutting
        down): it is queued again for another attempt, never failed. Returns their watches."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            w.released = w.released or why
        return watches

    def _due(self) -> tuple[list[Watch], float]:
        now = time.monotonic()
        due, wait = [], MAX_RENEW_EVERY
        for w in self._watches:
            first = _first_deadline(w)
            if first <= now:
                due.append(w)
            else:
                wait = min(wait, first - now)
        return due, wait

    def _run(self) -> None:
        while True:
            with self._lock:
                due, wait = self._due()
                if not due:
                    self._wake_at = time.monotonic() + wait
                    self._wake.wait(wait)
                    self._wake_at = 0.0
                    continue
            for w in due:
                self._serve(w)

    def _serve(self, w: Watch) -> None:
        now = time.monotonic()
        if (w.timeout is not None and not w.hard_limited
                and now >= w.started + w.timeout + hard_grace(w.timeout)):
            w.hard_limited = True
            log.error("job %s ignored its soft time limit for %.0f s: hard limit", w.job_id, hard_grace(w.timeout))
            if w.on_hard_limit is not None:
                try:
                    w.on_hard_limit(w)
                except Exception:
                    log.exception("job %s: recording the hard time limit failed", w.job_id)
            return
        if now >= w.next_beat:
            try:
                w.renew()
            except Exception as e:  # the database is away: try again next time; the lease may run out
                w.next_beat = time.monotonic() + renew_interval(w.lease_seconds)
                log.warning("job %s: lease renewal failed (%s); retrying", w.job_id, e)


def _first_deadline(w: Watch) -> float:
    """When the monitor must next act for ``w``: renew its lease, or enforce its hard time limit."""
    if w.timeout is not None and not w.hard_limited:
        return min(w.next_beat, w.started + w.timeout + hard_grace(w.timeout))
    return w.next_beat


_monitor: Monitor | None = None
_monitor_lock = threading.Lock()


def monitor() -> Monitor:
    """This process's monitor (a forked child makes its own: threads do not survive a fork)."""
    global _monitor
    with _monitor_lock:
        if _monitor is None:
            _monitor = Monitor()
        return _monitor


def _after_fork() -> None:
    global _monitor
    _monitor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


STANDBY_QUEUE = "gpu"  # the queue a standby CPU worker takes while no live GPU worker consumes it
FORGET_AFTER = timedelta(days=1)  # a worker not seen for this long leaves the workers table


class Beacon:
    """A worker's presence in the ``workers`` table (``storage.workers``), from a thread of its own that never waits
    on a job: it registers the worker, then heartbeats every ``heartbeat_seconds`` (one UPDATE), and marks it
    stopped on a clean shutdown. A database that is away costs heartbeats (said once per outage), never a job.

    With ``standby`` (a CPU worker's ``--gpu-standby``) it also makes the worker consume the farm's gpu queue while
    no live GPU worker (one with a GPU that consumes it) is registered, and stop when one appears: the worker's own
    consumer does it, told through Celery's remote control (handled in the worker's event loop, so safe from this
    thread). A job already taken runs to its end. Standing in starts ``2 * heartbeat_seconds`` after the worker
    starts, so that GPU workers started with it have registered first.
    """

    def __init__(self, store: Store, app: FarmApp, name: str, queues: list[str], gpu: str | None,
                 standby: bool = False) -> None:
        self.store = store
        self.app = app
        self.settings = app.settings
        self.name = name
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.queues = list(queues)  # as specs name them; what it consumes since it started
        self.borrowed: list[str] = []  # queues it took while standing in, confirmed by the worker
        self.gpu = gpu
        self.standby = standby and STANDBY_QUEUE not in self.queues
        self.started = time.monotonic()
        self.registered = False
        self._first = True  # the first registration takes over a row of the same name (a restarted worker)
        self.failing = False  # the last write failed (the database or broker is away)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latentfarm-heartbeat", daemon=True)

    def start(self) -> Beacon:
        self._thread.start()
        return self

    def stop(self, wait: float = 5.0) -> None:
        """Stop beating and mark the worker stopped (from the thread, within ``wait`` seconds)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(wait)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def consumed(self) -> list[str]:
        return self.queues + [q for q in self.borrowed if q not in self.queues]

    def _run(self) -> None:
        interval = self.settings.heartbeat_seconds
        while True:
            self._write(self.beat)
            if self.standby and self.registered and time.monotonic() - self.started >= 2 * interval:
                self._write(self.stand_in)
            if self._stop.wait(interval):
                break
        if self.registered:
            self._write(lambda: self._session(lambda s: workers.stopped(s, self.name, self.host, self.pid)))

    def _session(self, fn: Callable[[Any], T]) -> T:
        with self.store.session() as s:
            return fn(s)

    def _write(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as e:  # the database or broker is away: try again at the next beat
            if not self.failing:
                log.warning("worker %s: heartbeat failed (%s); retrying every %g s", self.name, first_line(e),
                            self.settings.heartbeat_seconds)
            self.failing = True
        else:
            if self.failing:
                log.warning("worker %s: heartbeats written again", self.name)
            self.failing = False

    def beat(self) -> None:
        """Register (once, or again when the row is gone), else heartbeat."""
        if self.registered:
            self.registered = self._session(lambda s: workers.heartbeat(s, self.name, self.host, self.pid,
                                                                        self.consumed))
            if self.registered:
                return
        self.registered = self._session(lambda s: self._register(s, take_over=self._first))
        if not self.registered and not self._first:
            log.error("worker %s: another live process has this name; this one is not in the workers table "
                      "(give each worker its own --name)", self.name)
        self._first = False

    def _register(self, s: Any, take_over: bool) -> bool:
        now = workers.database_now(s)
        workers.forget(s, now - FORGET_AFTER)
        stale = None if take_over else now - timedelta(seconds=self.settings.worker_lost_after)
        return workers.register(s, self.name, self.host, self.pid, self.consumed, self.gpu, _version(),
                                stale_before=stale)

    def stand_in(self) -> None:
        """Consume the gpu queue while no live GPU worker does; give it back when one does."""
        live = self._session(lambda s: workers.live_workers(s, self.settings.worker_lost_after))
        covered = any(w.gpu is not None and STANDBY_QUEUE in w.queues for w in live if w.name != self.name)
        taking = STANDBY_QUEUE in self.borrowed
        if covered == taking:  # taking while covered, or not taking while nobody covers: change
            self._tell(not taking)

    def _tell(self, take: bool) -> None:
        queue = self.app.broker_queue(STANDBY_QUEUE)
        with self.app.connection_for_write() as conn:
            command = self.app.control.add_consumer if take else self.app.control.cancel_consumer
            replies = command(queue, destination=[self.name], reply=True, timeout=5, connection=conn)
        if not any(self.name in r for r in replies or []):
            return  # busy (a solo worker reads its mailbox between jobs): asked again at the next beat
        if take:
            self.borrowed.append(STANDBY_QUEUE)
            log.warning("worker %s: no live GPU worker consumes the gpu queue: this CPU worker takes its jobs too",
                        self.name)
        else:
            self.borrowed.remove(STANDBY_QUEUE)
            log.warning("worker %s: a GPU worker consumes the gpu queue again: this CPU worker leaves it",
                        self.name)
        self._session(lambda s: workers.heartbeat(s, self.name, self.host, self.pid, self.consumed))


def _version() -> str:
    try:
        return version("latentfarm")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout that was never installed
        return "unknown"
