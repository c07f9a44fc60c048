"""Fixtures for the REST API's tests: a store populated by real jobs, and a client of the API in this process.

The data is made the way a user makes it: batches submitted through ``POST /api/v1/batches`` and run by a real
Celery worker in this process (the embedded ``memory://`` broker). A module's farm is made once, on SQLite and
(marked ``postgres``) on PostgreSQL, and kept for the module's tests: tests that change jobs (cancel, retry,
submit) make batches of their own and never touch the shared ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from scheduler.control import ControlPlane
from scheduler.embedded import in_process_worker
from storage import queries
from storage.queries import BatchSummary
from tests import services
from tests.conftest import SHARED_DATA, make_settings

API = "/api/v1"
TOKEN = "api-test-token-5f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
YAML = {"Content-Type": "application/yaml"}

# The populated store: a sweep, a job that needs the sweep, a job that fails, and a cluster job on the WiFi data
# (sweep.png and clusters_2d.png, metrics per k: a few seconds, no TensorFlow).
MAIN_SPEC = """\
batch: api-main
jobs:
  - name: sweep
    kind: noop
    sweep: {value: [1, 2, 3]}
  - name: report
    kind: noop
    needs: [sweep]
    params: {value: 10}
  - name: bad
    kind: noop
    params: {fail: true}
  - name: clusters
    kind: cluster
    params: {dataset: wifi, test_size: 0.25, k: [2, 3, 4], n_init: 2, silhouette_sample: 500}
"""
OTHER_SPECS = [
    "batch: api-other-1\njobs:\n  - {name: one, kind: noop, params: {value: 7}}\n",
    "batch: api-other-2\njobs:\n  - {name: two, kind: noop, params: {value: 8}}\n"
    "  - {name: three, kind: noop, params: {value: 9}, needs: two}\n",
]


@dataclass
class Farm:
    """The control plane, the API over it (with ``TOKEN``), a client that sends the token with every request and
    one that sends none, and a worker running the queued jobs."""

    cp: ControlPlane
    app: FastAPI
    client: TestClient
    anon: TestClient
    backend: str
    ids: dict[str, Any] = field(default_factory=dict)  # of the populated store: batches, jobs by name

    def submit(self, spec: str, no_cache: bool = False) -> dict[str, Any]:
        r = self.client.post(f"{API}/batches", content=spec.encode(), headers={**YAML, **AUTH},
                             params={"no_cache": "true"} if no_cache else None)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait(self, batch_id: int, timeout: float = 60) -> BatchSummary:
        """Until nothing of the batch is queued or running."""
        deadline = time.monotonic() + timeout
        while True:
            summary = self.summary(batch_id)
            if summary.settled:
                return summary
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch_id} not settled within {timeout} s: {summary.counts}")
            time.sleep(0.05)

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {timeout} s")
            time.sleep(0.05)

    def summary(self, batch_id: int) -> BatchSummary:
        with self.cp.store.session() as s:
            return queries.batch_summary(s, batch_id)

    def job(self, job_id: int) -> Any:
        with self.cp.store.session() as s:
            return queries.require_job(s, job_id)

    def counts(self) -> dict[str, int]:
        """Rows per table: what a rejected request must leave as it was."""
        from sqlalchemy import text

        with self.cp.store.session() as s:
            return {t: int(s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
                    for t in ("batches", "jobs", "job_deps", "events", "metrics", "artifacts")}


def _data_dir(tmp: Path) -> Path:
    """The farm's data directory: the WiFi file, linked from the shared data, and ``mem.txt``, a link to a file
    that exists but cannot be read."""
    if not (SHARED_DATA / "wifi_localization.txt").is_file():
        pytest.fail(f"the shared data files are missing: {SHARED_DATA}")
    data = tmp / "data"
    data.mkdir()
    (data / "wifi_localization.txt").symlink_to(SHARED_DATA / "wifi_localization.txt")
    (data / "mem.txt").symlink_to("/proc/self/mem")
    return data


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for a module's farm: a SQLite file, or a throwaway PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('apidb') / 'lf.db'}"
    else:
        with services.postgres_schema() as url:
            yield url


def _purge(cp: ControlPlane) -> None:
    """Empty the broker's queues: the memory transport's live as long as the process, shared by every app."""
    with cp.app.connection_for_write() as conn, conn.channel() as channel:
        for q in ("cpu", "gpu"):
            channel.queue_purge(cp.app.broker_queue(q))


@contextmanager
def open_farm(url: str, tmp: Path, keep_worker: bool) -> Iterator[Farm]:
    """A farm whose store is populated through the API by real jobs, run to their end by a worker in this
    process; ``keep_worker``: the worker keeps running (jobs submitted later run), else it is stopped first."""
    from scheduler.web.app import create_app

    # A short lease: a running job renews it (and so sees a cancel request) every 0.5 s, not every 5 s.
    settings = dataclasses.replace(make_settings(tmp, url, data_dir=_data_dir(tmp)), lease_seconds=3.0)
    cp = ControlPlane.open(settings, upgrade=True)
    _purge(cp)
    app = create_app(cp, TOKEN)
    f = Farm(cp, app, TestClient(app, headers=AUTH), TestClient(app), cp.store.engine.dialect.name)
    worker = ExitStack()
    try:
        worker.enter_context(in_process_worker(cp.app, hostname="apiworker@localhost"))
        main = f.submit(MAIN_SPEC)
        others = [f.submit(spec) for spec in OTHER_SPECS]
        for b in [main, *others]:
            f.wait(b["batch"])
        f.ids = {"main": main["batch"], "others": [b["batch"] for b in others], "jobs": main["jobs"],
                 "other_jobs": {k: v for b in others for k, v in b["jobs"].items()}}
        if not keep_worker:
            worker.close()
        yield f
    finally:
        worker.close()
        _purge(cp)
        f.client.close()
        f.anon.close()
        app.state.parser.close()
        cp.store.engine.dispose()


@pytest.fixture(scope="module")
def farm(api_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A populated farm whose worker keeps running: what is submitted or retried in a test runs."""
    with open_farm(api_db, tmp_path_factory.mktemp("farm"), keep_worker=True) as f:
        yield f


@pytest.fixture(scope="module")
def idle_farm(api_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A populated farm with no worker: what is submitted later stays queued (nothing heavy runs)."""
    with open_farm(api_db, tmp_path_factory.mktemp("farm"), keep_worker=False) as f:
        yield f


@pytest.fixture(scope="module")
def client(farm: Farm) -> TestClient:
    return farm.client
