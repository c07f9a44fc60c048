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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.broker import hard_grace
from scheduler.settings import MAX_RENEW_EVERY, renew_interval
from storage.store import Store
from storage.transitions import heartbeat

log = logging.getLogger(__name__)


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
