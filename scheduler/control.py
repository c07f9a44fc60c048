"""The control plane as the interfaces use it: open the store and the Celery app, load and submit specs, follow a
batch. It prints nothing: ``follow`` yields snapshots, and each interface shows them its own way."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from scheduler import broker, lifecycle
from scheduler.celery_app import QUEUES, make_celery
from scheduler.embedded import in_process_worker, worker_alive
from scheduler.errors import SpecError
from scheduler.plan import plan_batch
from scheduler.settings import Settings
from scheduler.spec import BatchSpec, first_line, load_spec
from storage import queries
from storage.queries import BatchSummary
from storage.records import Job
from storage.status import JobStatus
from storage.store import Store


@dataclass(frozen=True)
class Snapshot:
    """A batch as it stands: its summary, and a few of its running jobs (with their progress)."""

    summary: BatchSummary
    running: list[Job]
    worker_stopped: bool = False  # the embedded worker died before the batch settled: nothing more will run


@dataclass
class ControlPlane:
    settings: Settings
    store: Store
    app: Celery

    @classmethod
    def open(cls, settings: Settings | None = None, queues: tuple[str, ...] = QUEUES,
             upgrade: bool | None = None) -> ControlPlane:
        """Open the store and make the Celery app. Migrations are applied automatically on the embedded
        default (``upgrade=None``); in production ``latentfarm db upgrade`` does it, once, on purpose."""
        settings = settings or Settings.from_env()
        upgrade = settings.embedded if upgrade is None else upgrade
        store = Store.open(settings.database_url, settings.artifacts_dir, upgrade=upgrade)
        return cls(settings, store, make_celery(settings, queues))

    def load(self, spec_path: str | Path) -> BatchSpec:
        return load_spec(spec_path, self.settings.data_dir)

    def submit(self, spec: BatchSpec, no_cache: bool = False) -> lifecycle.SubmitResult:
        """Plan the batch, write it in one transaction and queue its ready jobs. The broker is checked first (on a
        farm), so nothing is written when it cannot be reached."""
        if not self.settings.embedded:
            broker.check(self.app)
        try:  # planning hashes the data files and images the spec names
            plan = plan_batch(spec)
        except OSError as e:  # one exists but cannot be read here
            raise SpecError(spec.path, f"cannot read a file it names: {first_line(e)}") from e
        return lifecycle.submit(self.store, self.app, plan, no_cache=no_cache)

    def snapshot(self, batch_id: int) -> Snapshot:
        with self.store.session() as s:
            summary = queries.batch_summary(s, batch_id)
            running = queries.list_jobs(s, batch_id=batch_id, status=JobStatus.RUNNING.value, limit=3)
        return Snapshot(summary, running)

    def follow(self, batch_id: int, interval: float = 0.5, timeout: float | None = None,
               alive: Callable[[], bool] | None = None) -> Iterator[Snapshot]:
        """Snapshots of the batch every ``interval`` seconds until it is settled (nothing queued or running), the
        ``timeout`` passes, or ``alive`` (the embedded worker's) turns False; the last one is final."""
        start = time.monotonic()
        while True:
            snap = self.snapshot(batch_id)
            if snap.summary.settled:
                yield snap
                return
            if alive is not None and not alive():
                yield Snapshot(snap.summary, snap.running, worker_stopped=True)
                return
            yield snap
            if timeout is not None and time.monotonic() - start > timeout:
                return
            time.sleep(interval)

    def run(self, batch_id: int, interval: float = 0.5) -> Iterator[Snapshot]:
        """``follow``, with an in-process worker draining the queue on the embedded default (stopped at the end)."""
        if not self.settings.embedded:
            yield from self.follow(batch_id, interval)
            return
        with in_process_worker(self.app) as worker:
            yield from self.follow(batch_id, interval, alive=lambda: worker_alive(worker))

    def wait(self, batch_id: int, on_snapshot: Callable[[Snapshot], None] | None = None) -> BatchSummary:
        """``run`` to the end; each snapshot to ``on_snapshot``. Returns the last summary."""
        last: Snapshot | None = None
        for last in self.run(batch_id):
            if on_snapshot is not None:
                on_snapshot(last)
        assert last is not None
        return last.summary
