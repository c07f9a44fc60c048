"""``latentfarm gc`` and ``latentfarm delete`` on SQLite and PostgreSQL, with blobs in a directory and in a bucket
(moto's server): what no row references goes (only when asked), what another batch's cached job or a dataset
shares stays, a blob younger than the grace period stays, and a batch that is not finished is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from scheduler.errors import Conflict, NotFound
from scheduler.reclaim import collect_garbage, delete_batch
from scheduler.settings import Settings
from storage import batches, queries, results
from storage.events import add_event
from storage.reclaim import DATASETS
from storage.records import NewJob
from storage.sql import ARTIFACTS, EVENTS, JOBS, METRICS
from storage.store import Store
from tests.s3 import Bucket, isolated_aws_env, s3_bucket, s3_server  # noqa: F401


@pytest.fixture(params=["directory", "s3"])
def env(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> dict[str, str]:
    """The farm's environment: the database (SQLite or PostgreSQL) and the artifact store (a directory or a
    bucket)."""
    common = {"LATENTFARM_DATABASE_URL": db_url, "LATENTFARM_CACHE_DIR": str(tmp_path / "cache"),
              **isolated_aws_env()}
    if request.param == "directory":
        return {**common, "LATENTFARM_ARTIFACTS": str(tmp_path / "artifacts")}
    bucket: Bucket = request.getfixturevalue("s3_bucket")
    return {**bucket.env(), **common}


@pytest.fixture
def store(env: dict[str, str]) -> Store:
    settings = Settings.from_env(env)
    return Store.open(settings.database_url, settings.artifact_store(), upgrade=True)


def _batch(store: Store, name: str, jobs: list[str], status: str = "succeeded") -> tuple[int, dict[str, int]]:
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, name, {"batch": name},
                                             [NewJob(j, "noop", {"j": j}, f"{name}-{j}", "cpu") for j in jobs], [])
        s.execute(update(JOBS).where(JOBS.c.batch_id == batch_id).values(status=status))
    return batch_id, ids


def _artifact(store: Store, job_id: int, name: str, data: bytes) -> str:
    blob = store.artifacts.put_bytes(data)
    with store.session() as s:
        results.put_artifact(s, job_id, name, blob.uri, blob.sha256, blob.bytes, "application/octet-stream")
    return blob.uri


def _dataset(store: Store, name: str, data: bytes) -> str:
    blob = store.artifacts.put_bytes(data)
    with store.session() as s:
        s.execute(insert(DATASETS).values(name=name, kind="file", filename=f"{name}.npz", uri=blob.uri,
                                          sha256=blob.sha256, bytes=blob.bytes, meta={}))
    return blob.uri


def _stored(store: Store) -> set[str]:
    return {b.uri for b in store.artifacts.blobs()}


def test_gc_removes_only_unreferenced_blobs_and_only_when_asked(store: Store) -> None:
    _, ids = _batch(store, "b", ["a"])
    used = _artifact(store, ids["a"], "model.keras", b"a model")
    data = _dataset(store, "faces", b"a dataset")
    orphans = {store.artifacts.put_bytes(b"left by a failed job").uri, store.artifacts.put_bytes(b"and another").uri}
    everything = {used, data} | orphans

    dry = collect_garbage(store, remove=False, grace=0)
    assert (dry.blobs, dry.bytes, dry.removed) == (2, len(b"left by a failed job") + len(b"and another"), False)
    assert _stored(store) == everything
    young = collect_garbage(store, remove=True)  # the default grace: an hour
    assert (young.blobs, young.young) == (0, 2) and _stored(store) == everything
    done = collect_garbage(store, remove=True, grace=0)
    assert (done.blobs, done.removed) == (2, True) and _stored(store) == {used, data}
    assert collect_garbage(store, remove=True, grace=0).blobs == 0


def test_delete_removes_a_finished_batch_and_the_blobs_only_it_referenced(store: Store) -> None:
    old, old_ids = _batch(store, "old", ["train", "encode"], status="succeeded")
    shared = _artifact(store, old_ids["train"], "model.keras", b"the model")
    own = _artifact(store, old_ids["encode"], "z.npy", b"latents")
    data = _dataset(store, "digits", b"the dataset")
    with store.session() as s:  # the encode job read the dataset's blob as an artifact of its own too
        blob = store.artifacts.put_bytes(b"the dataset")
        results.put_artifact(s, old_ids["encode"], "input.npz", blob.uri, blob.sha256, blob.bytes, "x")
        results.put_metrics(s, old_ids["train"], {"loss": 0.5, "val_loss": 0.6}, 1)
        add_event(s, old_ids["train"], "progress", "epoch 1")
    new, new_ids = _batch(store, "new", ["train"])
    with store.session() as s:  # a cache hit in another batch shares the old batch's model
        results.copy_results(s, [(old_ids["train"], new_ids["train"])])
        s.execute(update(JOBS).where(JOBS.c.id == new_ids["train"]).values(cached_from=old_ids["train"]))

    dry = delete_batch(store, old, remove=False, grace=0)
    assert dry.rows["jobs"] == 2 and dry.rows["artifacts"] == 3 and dry.rows["metrics"] == 2
    assert (dry.blobs, dry.bytes, dry.shared, dry.removed) == (1, len(b"latents"), 2, False)
    with store.session() as s:
        assert len(queries.list_jobs(s, batch_id=old)) == 2
    assert _stored(store) == {shared, own, data}

    done = delete_batch(store, old, remove=True, grace=0)
    assert (done.blobs, done.removed) == (1, True) and done.rows["jobs"] == 2 and done.rows["artifacts"] == 3
    assert _stored(store) == {shared, data}
    with store.session() as s:
        old_job_ids = list(old_ids.values())
        for table in (ARTIFACTS, METRICS, EVENTS):
            assert s.scalar(select(func.count()).select_from(table).where(table.c.job_id.in_(old_job_ids))) == 0
        assert s.scalar(select(func.count()).select_from(JOBS).where(JOBS.c.batch_id == old)) == 0
        kept = queries.require_job(s, new_ids["train"])
        assert kept.cached_from is None and [a.uri for a in queries.job_artifacts(s, kept.id)] == [shared]
    assert store.artifacts.get_bytes(shared) == b"the model"
    with pytest.raises(NotFound):
        delete_batch(store, old, remove=True)


def test_delete_leaves_a_blob_younger_than_the_grace_to_gc(store: Store) -> None:
    batch, ids = _batch(store, "fresh", ["a"], status="failed")
    own = _artifact(store, ids["a"], "out.json", b"{}")
    done = delete_batch(store, batch, remove=True)  # the default grace: an hour
    assert (done.blobs, done.young, done.rows["jobs"]) == (0, 1, 1) and _stored(store) == {own}
    assert collect_garbage(store, remove=True, grace=0).blobs == 1 and _stored(store) == set()


def test_delete_refuses_a_batch_that_is_not_finished(store: Store) -> None:
    batch, ids = _batch(store, "busy", ["a", "b", "c"])
    own = _artifact(store, ids["a"], "out.json", b"[1]")
    with store.session() as s:
        s.execute(update(JOBS).where(JOBS.c.id == ids["b"]).values(status="running"))
        s.execute(update(JOBS).where(JOBS.c.id == ids["c"]).values(status="queued"))
    for remove in (False, True):
        with pytest.raises(Conflict, match=r"batch \d+ is not finished \(1 queued, 1 running\): cancel it first"):
            delete_batch(store, batch, remove=remove, grace=0)
    with store.session() as s:
        assert len(queries.list_jobs(s, batch_id=batch)) == 3 and len(queries.job_artifacts(s, ids["a"])) == 1
    assert _stored(store) == {own}


def test_the_commands(store: Store, env: dict[str, str]) -> None:
    from scheduler.cli import cli

    done, ids = _batch(store, "done", ["a"])
    _artifact(store, ids["a"], "out.json", b"done")
    busy, _ = _batch(store, "busy", ["a"], status="running")
    orphan = store.artifacts.put_bytes(b"an orphan").uri
    runner = CliRunner()

    out = runner.invoke(cli, ["gc"], env=env)
    assert out.exit_code == 0, out.output
    assert "0 unreferenced blob(s), 0 B" in out.output and "kept 1 unreferenced blob(s)" in out.output
    out = runner.invoke(cli, ["gc", "--grace", "0", "--json"], env=env)
    assert json.loads(out.output)["blobs"] == 1 and orphan in _stored(store)
    out = runner.invoke(cli, ["gc", "--yes", "--grace", "0"], env=env)
    assert out.exit_code == 0 and "removed 1 unreferenced blob(s), 9 B" in out.output, out.output
    assert orphan not in _stored(store)

    out = runner.invoke(cli, ["delete", "--batch", str(busy), "--yes"], env=env)
    assert out.exit_code == 2 and out.output.strip().splitlines() == [
        f"error: batch {busy} is not finished (1 running): cancel it first (latentfarm cancel --batch {busy}) and "
        "wait for its running jobs to stop"]
    out = runner.invoke(cli, ["delete", "--batch", str(done), "--grace", "0"], env=env)
    assert out.exit_code == 0 and f"latentfarm delete --batch {done} --yes" in out.output, out.output
    out = runner.invoke(cli, ["delete", "--batch", str(done), "--yes", "--grace", "0", "--json"], env=env)
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["rows"]["jobs"] == 1 and shown["blobs"] == 1 and shown["removed"] is True
    with store.session() as s:
        assert [b.batch.id for b in queries.list_batches(s, 10)] == [busy]
    out = runner.invoke(cli, ["delete", "--batch", str(done)], env=env)
    assert out.exit_code == 2 and out.output.strip() == f"error: no batch {done}"
