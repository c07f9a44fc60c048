"""A farm for tests: the control plane plus a real Celery worker consuming from a real broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from scheduler.control import ControlPlane
from scheduler.embedded import in_process_worker
from scheduler.settings import Settings
from storage import queries
from storage.queries import BatchSummary


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@contextmanager
def worker(cp: ControlPlane, concurrency: int = 1) -> Iterator[None]:
    """A real Celery worker (consumer, acks, the same task) on the control plane's broker, in a thread."""
    with in_process_worker(cp.app, concurrency=concurrency, hostname="testworker@localhost"):
        yield


def wait_done(cp: ControlPlane, batch_id: int, timeout: float = 120) -> BatchSummary:
    summary = None
    for snap in cp.follow(batch_id, interval=0.05, timeout=timeout):
        summary = snap.summary
    assert summary is not None and summary.settled, f"batch {batch_id} not done within {timeout}s: {summary}"
    return summary


def wait_for(predicate, timeout: float = 30, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def open_farm(settings: Settings) -> ControlPlane:
    return ControlPlane.open(settings, upgrade=True)


def jobs_by_name(cp: ControlPlane, batch_id: int) -> dict:
    with cp.store.session() as s:
        return {j.name: j for j in queries.list_jobs(s, batch_id=batch_id)}
