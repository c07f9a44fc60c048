"""A real Celery worker against the real Redis (a dedicated db number, flushed), results in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler.celery_app import TASK_NAME
from scheduler.settings import Settings
from storage import queries
from storage.status import JobStatus
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, wait_for, worker, write_spec

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(300)]

DAG = {
    "batch": "dag",
    "jobs": [
        {"name": "prep", "kind": "noop", "params": {"seconds": 0.1}},
        {"name": "work", "kind": "noop", "needs": ["prep"], "sweep": {"value": [1, 2, 3]}},
        {"name": "merge", "kind": "noop", "needs": ["work"], "params": {"value": 10}},
    ],
}


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, pg_url: str) -> Settings:
    return make_settings(tmp_path, database_url=pg_url, broker_url=redis_url)


def test_batch_with_dependencies_and_sweep_runs_in_order_and_lands_in_postgres(settings: Settings,
                                                                              tmp_path: Path) -> None:
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, DAG)))
    assert len(result.job_ids) == 5 and result.queued == [result.job_ids["prep"]]
    with worker(cp, concurrency=2):
        summary = wait_done(cp, result.batch_id)
    assert summary.status == "succeeded" and summary.counts == {"succeeded": 5}
    jobs = jobs_by_name(cp, result.batch_id)
    assert set(jobs) == {"prep", "work[value=1]", "work[value=2]", "work[value=3]", "merge"}
    for name in ("work[value=1]", "work[value=2]", "work[value=3]"):
        assert jobs[name].started_at >= jobs["prep"].finished_at
        assert jobs["merge"].started_at >= jobs[name].finished_at
    assert all(j.attempts == 1 and j.worker for j in jobs.values())
    # the results are in PostgreSQL, for plain SQL
    with cp.store.engine.connect() as c:
        assert c.dialect.name == "postgresql"
        values = dict(c.execute(text(
            "SELECT j.name, m.value FROM metrics m JOIN jobs j ON j.id = m.job_id "
            "WHERE j.batch_id = :b AND m.key = 'value'"), {"b": result.batch_id}).all())
        arts = c.execute(text("SELECT count(*), min(bytes) FROM artifacts a JOIN jobs j ON j.id = a.job_id "
                              "WHERE j.batch_id = :b"), {"b": result.batch_id}).one()
    assert values == {"prep": 1.0, "work[value=1]": 1.0, "work[value=2]": 2.0, "work[value=3]": 3.0, "merge": 10.0}
    assert arts[0] == 5 and arts[1] > 0


def test_failing_job_records_its_traceback_and_cancels_descendants(settings: Settings, tmp_path: Path) -> None:
    spec = {"batch": "fails", "jobs": [
        {"name": "ok", "kind": "noop"},
        {"name": "boom", "kind": "noop", "params": {"fail": True}, "needs": ["ok"]},
        {"name": "child", "kind": "noop", "needs": ["boom"]},
        {"name": "grandchild", "kind": "noop", "needs": ["child"]},
        {"name": "sibling", "kind": "noop", "needs": ["ok"]},
    ]}
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with worker(cp):
        summary = wait_done(cp, result.batch_id)
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "failed"
    assert jobs["boom"].status is JobStatus.FAILED
    assert jobs["boom"].error == "RuntimeError: job 'boom' was asked to fail (fail: true)"
    assert "Traceback (most recent call last)" in jobs["boom"].traceback
    assert "workers/handlers/noop.py" in jobs["boom"].traceback
    for name in ("child", "grandchild"):
        assert jobs[name].status is JobStatus.CANCELLED
        assert "parent job 'boom'" in jobs[name].error and "asked to fail" in jobs[name].error
    assert jobs["sibling"].status is JobStatus.SUCCEEDED  # the rest of the batch goes on


def test_resubmitting_is_served_from_the_cache_and_no_cache_reruns(settings: Settings, tmp_path: Path) -> None:
    cp = open_farm(settings)
    path = write_spec(tmp_path, DAG)
    with worker(cp):
        first = cp.submit(cp.load(path))
        wait_done(cp, first.batch_id)
        second = cp.submit(cp.load(path))
        assert sorted(second.cached) == sorted(second.job_ids.values()) and second.queued == []
        summary = wait_done(cp, second.batch_id)
        assert summary.status == "succeeded"
        third = cp.submit(cp.load(path), no_cache=True)
        assert third.cached == [] and len(third.queued) == 1
        wait_done(cp, third.batch_id)
    cached = jobs_by_name(cp, second.batch_id)
    originals = jobs_by_name(cp, first.batch_id)
    with cp.store.session() as s:
        for name, job in cached.items():
            assert job.cached_from == originals[name].id and job.attempts == 0
            mine = [(a.name, a.sha256, a.uri) for a in queries.job_artifacts(s, job.id)]
            theirs = [(a.name, a.sha256, a.uri) for a in queries.job_artifacts(s, originals[name].id)]
            assert mine == theirs and mine  # the same blobs, shared
    assert all(j.attempts == 1 and j.cached_from is None for j in jobs_by_name(cp, third.batch_id).values())


def test_duplicated_message_does_not_run_a_job_twice(settings: Settings, tmp_path: Path) -> None:
    spec = {"batch": "dup", "jobs": [{"name": "slow", "kind": "noop", "params": {"seconds": 1.0}}]}
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    jid = result.job_ids["slow"]
    # the broker delivers the same message twice while the job is queued, and once more after it finished
    queue = cp.app.broker_queue("cpu")  # the farm's own name for its cpu queue
    cp.app.send_task(TASK_NAME, args=[jid], queue=queue)
    with worker(cp, concurrency=2):
        wait_done(cp, result.batch_id)
        cp.app.send_task(TASK_NAME, args=[jid], queue=queue)

        def dropped_twice() -> bool:
            with cp.store.session() as s:
                return sum(e.message.startswith("message dropped") for e in queries.job_events(s, jid)
                           if e.message) == 2
        wait_for(dropped_twice)
    with cp.store.session() as s:
        job = queries.require_job(s, jid)
        events = queries.job_events(s, jid)
    runs = [e for e in events if e.status == "running"]
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1 and len(runs) == 1
    assert [e.status for e in events if e.kind == "status"] == ["pending", "queued", "running", "succeeded"]


def test_train_job_on_mnist_records_epochs_and_a_keras_model(settings: Settings, tmp_path: Path,
                                                              shared_data: Path) -> None:
    (tmp_path / "mnist.npz").symlink_to(shared_data / "mnist.npz")  # in the spec's folder: a data root
    spec = {"batch": "mnist", "jobs": [{"name": "ae", "kind": "train", "params": {
        "dataset": "mnist", "data_path": "mnist.npz", "limit": 600, "epochs": 2,
        "batch_size": 64, "z_dim": 8}}]}
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=240)
    jid = result.job_ids["ae"]
    with cp.store.session() as s:
        job = queries.require_job(s, jid)
        metrics = queries.job_metrics(s, [jid])
        artifacts = {a.name: a for a in queries.job_artifacts(s, jid)}
    assert summary.status == "succeeded", job.error
    per_epoch = {(m.key, m.step) for m in metrics if m.step > 0}
    assert per_epoch == {(k, e) for k in ("loss", "val_loss", "mse", "val_mse", "images_per_second") for e in (1, 2)}
    final = {m.key: m.value for m in metrics if m.step == 0}
    assert 0 < final["test_mse"] < 0.2 and 0 < final["test_bce"] < 0.7
    model = artifacts["model.keras"]
    blob = cp.store.artifacts.get_bytes(model.uri, model.sha256)  # checks the sha256
    assert blob[:2] == b"PK" and model.bytes == len(blob)  # a .keras file is a zip archive
    assert artifacts["reconstructions.png"].media_type == "image/png"
    with cp.store.session() as s:  # the job records the dataset's identity: name and file sha256
        messages = [e.message for e in queries.job_events(s, jid)]
    sha = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"  # ../shared/data/SOURCES.md
    assert any(m and m.startswith(f"dataset mnist:{sha}") for m in messages), messages
