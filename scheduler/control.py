"""The control plane as the interfaces use it: open the store and the Celery app, load and submit specs, follow a
batch. It prints nothing: ``follow`` yields snapshots, and each interface shows them its own way.

On the embedded default the broker lives in the process's memory, so what an interrupted process left is found by
the next: ``open`` queues again the jobs whose process is gone (an ``embedded-<pid>@<host>`` worker on this host
that no longer runs), and ``run`` sends again the queued jobs that have no message (those it did not send itself)
and runs them with the batch. An interrupted ``run`` (Ctrl-C) stops within ``STOP_INTERRUPTED`` seconds: its
running job hands itself back at its next check, or is queued again in SQL, never failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from scheduler import broker, lifecycle
from scheduler import search as searching
from scheduler.celery_app import QUEUES, make_celery
from scheduler.datasets import registered
from scheduler.embedded import embedded_name, in_process_worker, orphan_pid, worker_alive
from scheduler.errors import BrokerUnavailable, SpecError
from scheduler.plan import plan_batch
from scheduler.settings import Settings
from scheduler.spec import BatchSpec, first_line, load_spec
from storage import batches, queries, workers
from storage.queries import BatchSummary
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store
from storage.workers import QueueLoad, WorkerStatus

SEARCH_EVERY = 5.0  # seconds between the advances of a followed batch's searches


@dataclass(frozen=True)
class Snapshot:
    """A batch as it stands: its summary, and a few of its running jobs (with their progress)."""

    summary: BatchSummary
    running: list[Job]
    worker_stopped: bool = False  # the embedded worker died before the batch settled: nothing more will run
    leftovers: int = 0  # jobs an interrupted process left, run with the batch, not finished yet
    warnings: tuple[str, ...] = ()  # why some of its jobs may wait for good (``ControlPlane.warnings``)


@dataclass(frozen=True)
class Farm:
    """The farm as the interfaces show it: its workers, and per queue its jobs, consumers and broker messages."""

    workers: list[WorkerStatus]  # by name: all, or the page asked for
    total: int  # workers in the table
    queues: list[QueueLoad]
    on_broker: dict[str, int] | None  # messages waiting per queue; None where the broker cannot say
    warnings: list[str]


@dataclass(frozen=True)
class DryRunJob:
    name: str
    kind: str
    queue: str
    needs: tuple[str, ...]
    fingerprint: str
    cached_from: int | None  # the job whose results the cache would give it, if any


@dataclass(frozen=True)
class DryRun:
    """A batch as ``submit`` would write it (``ControlPlane.dry_run``)."""

    batch: str
    jobs: tuple[DryRunJob, ...]
    searches: tuple[str, ...]  # search entries: their trials are asked once the batch runs

    @property
    def cached(self) -> int:
        return sum(j.cached_from is not None for j in self.jobs)


@dataclass
class ControlPlane:
    settings: Settings
    store: Store
    app: Celery
    sent: set[int] = field(default_factory=set)  # jobs whose messages this process sent (embedded: it holds them)
    recovered: list[int] = field(default_factory=list)  # jobs ``open`` queued again: their process was gone

    @classmethod
    def open(cls, settings: Settings | None = None, queues: tuple[str, ...] = QUEUES,
             upgrade: bool | None = None) -> ControlPlane:
        """Open the store and make the Celery app. Migrations are applied automatically on the embedded
        default (``upgrade=None``); in production ``latentfarm db upgrade`` does it, once, on purpose."""
        settings = settings or Settings.from_env()
        upgrade = settings.embedded if upgrade is None else upgrade
        store = Store.open(settings.database_url, settings.artifact_store(), upgrade=upgrade)
        with store.session() as s:
            farm = queries.farm_id(s)
        cp = cls(settings, store, make_celery(settings, queues, farm))
        if settings.embedded:
            cp.recover()
        return cp

    def recover(self) -> list[int]:
        """Queue again the jobs left running by an embedded process of this host that is gone (killed, Ctrl-C'd
        mid-cleanup, a laptop gone to sleep and rebooted): they run again without waiting out their lease."""
        with self.store.session() as s:
            running = queries.running_jobs_of(s, "embedded-")
        for job in running:
            pid = orphan_pid(job.worker)
            if pid is not None and lifecycle.release(self.store, self.app, job.id, job.attempts,
                                                     f"its process {pid} is gone", "recovery"):
                self.recovered.append(job.id)
        searching.advance_all(self.store, self.app)  # what an interrupted run left of its searches
        return self.recovered

    def load(self, spec_path: str | Path) -> BatchSpec:
        """Read and validate a spec; the datasets registered in the farm resolve by name (``scheduler.datasets``)."""
        return load_spec(spec_path, self.settings.data_dir, self.settings.job_memory, registered(self.store))

    def submit(self, spec: BatchSpec, no_cache: bool = False) -> lifecycle.SubmitResult:
        """Plan the batch, write it in one transaction and queue its ready jobs. The broker is checked first (on a
        farm), so nothing is written when it cannot be reached."""
        if not self.settings.embedded:
            broker.check(self.app)
        try:  # planning hashes the data files and images the spec names
            plan = searching.plan_searches(plan_batch(spec), spec)
        except OSError as e:  # one exists but cannot be read here
            raise SpecError(spec.path, f"cannot read a file it names: {first_line(e)}") from e
        result = lifecycle.submit(self.store, self.app, plan, no_cache=no_cache)
        self.sent.update(result.queued)
        if plan.searches:  # the first trials (a process that dies first leaves them to the reaper's pass)
            asked = searching.advance_batch(self.store, self.app, result.batch_id)
            self.sent.update(asked)
            result.queued += asked
        return result

    def dry_run(self, spec: BatchSpec, no_cache: bool = False) -> DryRun:
        """What ``submit`` would write, without writing anything: the expanded jobs (parents first) with their
        needs and queues, and which of them the cache already holds (the job that did the work)."""
        try:
            plan = searching.plan_searches(plan_batch(spec), spec)
        except OSError as e:
            raise SpecError(spec.path, f"cannot read a file it names: {first_line(e)}") from e
        needs: dict[str, list[str]] = {}
        for parent, child in plan.edges:
            needs.setdefault(child, []).append(parent)
        with self.store.session() as s:
            cached = {} if no_cache else batches.succeeded_by_fingerprint(s, [j.fingerprint for j in plan.jobs])
        jobs = [DryRunJob(j.name, j.kind, j.queue, tuple(needs.get(j.name, ())), j.fingerprint,
                          cached.get(j.fingerprint)) for j in plan.jobs]
        return DryRun(plan.name, tuple(jobs), tuple(str(s.get("name", "")) for s in plan.searches))

    def retry(self, job_id: int) -> list[int]:
        """``lifecycle.retry``, remembering the messages this process sent."""
        queued = lifecycle.retry(self.store, self.app, job_id)
        self.sent.update(queued)
        return queued

    def snapshot(self, batch_id: int, leftovers: list[int] | None = None) -> Snapshot:
        with self.store.session() as s:
            summary = queries.batch_summary(s, batch_id)
            running = queries.list_jobs(s, batch_id=batch_id, status=JobStatus.RUNNING.value, limit=3)
            left = queries.unsettled_count(s, leftovers) if leftovers else 0
        warn = self.warnings(batch_id) if summary.counts.get(JobStatus.QUEUED.value) else []
        return Snapshot(summary, running, leftovers=left, warnings=tuple(warn))

    def warnings(self, batch_id: int | None = None) -> list[str]:
        """Why jobs may wait for good: a queue on which jobs (of ``batch_id``, or of any batch) wait and that no
        live worker consumes. Never on the embedded default, whose in-process worker takes every queue."""
        if self.settings.embedded:
            return []
        with self.store.session() as s:
            return _unserved(workers.queue_loads(s, self.settings.worker_lost_after, batch_id))

    def farm(self, limit: int | None = None, offset: int = 0) -> Farm:
        """The workers (a page of them) with their states, and every queue: jobs queued and running, live
        consumers, messages on the broker (where it can say), and the warnings."""
        lost_after = self.settings.worker_lost_after
        with self.store.session() as s:
            listed = workers.list_workers(s, lost_after, limit, offset)
            total = workers.count_workers(s)
            loads = workers.queue_loads(s, lost_after, also=QUEUES)
        warn = [] if self.settings.embedded else _unserved(loads)
        on_broker = None
        if not broker.in_memory(self.app):  # the embedded broker lives in the memory of the process running it
            try:
                on_broker = broker.queue_sizes(self.app, [q.queue for q in loads])
            except BrokerUnavailable as e:
                warn.append(self.settings.mask(str(e)))
        return Farm(listed, total, loads, on_broker, warn)

    def follow(self, batch_id: int, interval: float = 0.5, timeout: float | None = None,
               alive: Callable[[], bool] | None = None, leftovers: list[int] | None = None) -> Iterator[Snapshot]:
        """Snapshots of the batch every ``interval`` seconds until it is settled (nothing queued or running) and so
        are ``leftovers``, the ``timeout`` passes, or ``alive`` (the embedded worker's) turns False; the last one
        is final."""
        start = last_advance = time.monotonic()
        while True:
            if time.monotonic() - last_advance > SEARCH_EVERY:  # a search whose advance failed is not left waiting
                last_advance = time.monotonic()
                self.sent.update(searching.advance_batch(self.store, self.app, batch_id))
            snap = self.snapshot(batch_id, leftovers)
            if snap.summary.settled and not snap.leftovers:
                yield snap
                return
            if alive is not None and not alive():
                yield Snapshot(snap.summary, snap.running, worker_stopped=True, leftovers=snap.leftovers)
                return
            yield snap
            if timeout is not None and time.monotonic() - start > timeout:
                return
            time.sleep(interval)

    def run(self, batch_id: int, interval: float = 0.5) -> Iterator[Snapshot]:
        """``follow``; on the embedded default, with an in-process worker that also runs the queued jobs no live
        process holds a message for (left by an interrupted run), stopped at the end or when interrupted."""
        if not self.settings.embedded:
            yield from self.follow(batch_id, interval)
            return
        name = embedded_name()
        leftovers = [j.id for j in self.resend_unsent() if j.batch_id != batch_id]
        try:
            with in_process_worker(self.app, hostname=name) as worker:
                yield from self.follow(batch_id, interval, alive=lambda: worker_alive(worker), leftovers=leftovers)
        except BaseException:
            self._release(name, "interrupted")
            raise

    def resend_unsent(self) -> list[Job]:
        """On the embedded default: send the messages of the queued jobs this process did not send (an earlier
        process held them in its memory). Returns those jobs."""
        with self.store.session() as s:
            again = queries.jobs_by_ids(s, [i for i in queries.queued_job_ids(s) if i not in self.sent])
        broker.send(self.app, again)
        self.sent.update(j.id for j in again)
        return again

    def _release(self, worker: str, why: str) -> None:
        """Queue again what ``worker`` (this process's in-process worker) still runs in SQL: its thread did not hand
        it back in time (a long operation between two checks)."""
        with self.store.session() as s:
            running = [j for j in queries.running_jobs_of(s, worker) if j.worker == worker]
        for job in running:
            lifecycle.release(self.store, self.app, job.id, job.attempts, why, worker)

    def wait(self, batch_id: int, on_snapshot: Callable[[Snapshot], None] | None = None) -> BatchSummary:
        """``run`` to the end; each snapshot to ``on_snapshot``. Returns the last summary."""
        last: Snapshot | None = None
        for last in self.run(batch_id):
            if on_snapshot is not None:
                on_snapshot(last)
        assert last is not None
        return last.summary


def _unserved(loads: list[QueueLoad]) -> list[str]:
    return [f"{q.queued} job{' waits' if q.queued == 1 else 's wait'} on queue {q.queue!r} and no live worker "
            "consumes it" for q in loads if q.unserved]
