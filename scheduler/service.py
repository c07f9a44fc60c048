"""The control plane's operations, shared by the CLI and (later) the API: open the store, submit, follow."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from celery import Celery

from scheduler import dispatch
from scheduler.celery_app import QUEUES, make_celery
from scheduler.embedded import in_process_worker, worker_alive
from scheduler.errors import BrokerUnavailable, SpecError
from scheduler.plan import plan_batch
from scheduler.progress import follow
from scheduler.settings import Settings
from scheduler.spec import BatchSpec, first_line, load_spec
from storage.queries import BatchSummary
from storage.store import Store


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

    def check_broker(self) -> None:
        """Fail before anything is written if the broker cannot be reached."""
        if self.settings.embedded:
            return
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=5)
        except Exception as e:
            raise BrokerUnavailable(f"cannot reach the broker {self.settings.broker_url}: {e}") from e

    def submit(self, spec: BatchSpec, no_cache: bool = False) -> dispatch.SubmitResult:
        self.check_broker()
        try:  # planning hashes the data files and images the spec names
            plan = plan_batch(spec)
        except OSError as e:  # one exists but cannot be read here
            raise SpecError(spec.path, f"cannot read a file it names: {first_line(e)}") from e
        return dispatch.submit(self.store, self.app, plan, no_cache=no_cache)

    def run_embedded(self, batch_id: int, out: TextIO = sys.stderr, show: bool = True) -> BatchSummary:
        """Drain the in-memory queue with an in-process worker until the batch is done."""
        with in_process_worker(self.app) as worker:
            return follow(self.store, batch_id, out=out if show else io.StringIO(), alive=lambda: worker_alive(worker))

    def wait(self, batch_id: int, out: TextIO = sys.stderr, show: bool = True) -> BatchSummary:
        if self.settings.embedded:
            return self.run_embedded(batch_id, out, show)
        return follow(self.store, batch_id, out=out if show else io.StringIO())
