"""The store on SQLite and on PostgreSQL: schema, batches, guarded transitions, fan-in, cache, artifacts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from storage import batches, cancel, graph, migrate, queries, results, sql, transitions
from storage.artifacts import DirectoryStore
from storage.errors import ArtifactCorrupt, NotFound
from storage.models import EventRow
from storage.records import NewJob
from storage.status import JobStatus
from storage.store import Store


def _batch(store: Store, names: list[str], edges: list[tuple[str, str]], fp: str = "fp") -> tuple[int, dict[str, int]]:
    with store.session() as s:
        return batches.create_batch(s, "b", {"batch": "b"},
                                    [NewJob(n, "noop", {"n": n}, f"{fp}-{n}", "cpu") for n in names], edges)


def test_migrations_create_every_table_at_head(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"batches", "jobs", "job_deps", "metrics", "artifacts", "events", "alembic_version"} <= tables
    assert migrate.current_revision(store.engine) == migrate.head_revision(store.engine)
    assert migrate.upgrade(store.engine) == migrate.head_revision(store.engine)  # idempotent


def test_the_migrations_build_the_schema_the_models_describe(store: Store) -> None:
    """What Alembic would generate from the models against the migrated database: nothing (no table, column,
    type, nullability or index that the migrations and storage/models.py disagree on)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.models import Base

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_status_check_constraint_rejects_unknown_status(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    with pytest.raises(Exception, match="(?i)check|constraint"), store.session() as s:
        s.execute(text("UPDATE jobs SET status = 'exploded' WHERE id = :i"), {"i": ids["a"]})


def test_batch_is_written_whole_or_not_at_all(store: Store) -> None:
    with pytest.raises(KeyError), store.session() as s:  # an edge to a job that is not in the batch
        batches.create_batch(s, "b", {}, [NewJob("a", "noop", {}, "f", "cpu")], [("a", "missing")])
    with store.session() as s:
        assert queries.list_batches(s) == []
        assert queries.list_jobs(s) == []


def test_guarded_transition_happens_once(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    jid = ids["a"]
    with store.session() as s:
        assert transitions.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED)
        assert not transitions.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED)
    with store.session() as s:
        job = transitions.claim(s, jid, "w1", 30)
    assert job is not None and job.status is JobStatus.RUNNING and job.attempts == 1 and job.worker == "w1"
    with store.session() as s:
        assert transitions.claim(s, jid, "w2", 30) is None  # a duplicate message
        assert transitions.transition(s, jid, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    with store.session() as s:
        assert transitions.claim(s, jid, "w3", 30) is None  # a redelivery after the end
        job = queries.require_job(s, jid)
        statuses = [e.status for e in queries.job_events(s, jid) if e.kind == "status"]
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1 and job.finished_at is not None
    assert statuses == ["pending", "queued", "running", "succeeded"]


def test_illegal_transition_is_refused(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    with store.session() as s, pytest.raises(ValueError, match="illegal"):
        transitions.transition(s, ids["a"], JobStatus.SUCCEEDED, JobStatus.RUNNING)


def test_racing_claims_let_exactly_one_worker_run_the_job(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    with store.session() as s:
        transitions.transition(s, ids["a"], JobStatus.PENDING, JobStatus.QUEUED)
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(name: str) -> None:
        barrier.wait()
        with store.session() as s:
            if transitions.claim(s, ids["a"], name, 30) is not None:
                wins.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with store.session() as s:
        assert queries.require_job(s, ids["a"]).attempts == 1
        running = s.scalars(select(EventRow).where(EventRow.job_id == ids["a"], EventRow.status == "running")).all()
    assert len(running) == 1


def test_fan_in_releases_a_child_only_when_all_parents_succeeded(store: Store) -> None:
    _, ids = _batch(store, ["a", "b", "c"], [("a", "c"), ("b", "c")])
    with store.session() as s:
        assert sorted(graph.roots(s, queries.require_job(s, ids["a"]).batch_id)) == [ids["a"], ids["b"]]
        for n in ("a", "b"):
            transitions.transition(s, ids[n], JobStatus.PENDING, JobStatus.QUEUED)
            transitions.claim(s, ids[n], "w", 30)
        transitions.transition(s, ids["a"], JobStatus.RUNNING, JobStatus.SUCCEEDED)
        assert graph.ready_children(s, ids["a"]) == []
        transitions.transition(s, ids["b"], JobStatus.RUNNING, JobStatus.SUCCEEDED)
        assert graph.ready_children(s, ids["a"]) == [ids["c"]]
        assert graph.ready_children(s, ids["b"]) == [ids["c"]]


def test_fan_in_when_two_parents_finish_at_once(store: Store) -> None:
    """Two workers finish the last two parents of one child in overlapping transactions: exactly one of them
    must queue the child. Without a lock each sees only its own success and the child stays pending forever."""
    _, ids = _batch(store, ["a", "b", "c"], [("a", "c"), ("b", "c")])
    with store.session() as s:
        for n in ("a", "b"):
            transitions.transition(s, ids[n], JobStatus.PENDING, JobStatus.QUEUED)
            transitions.claim(s, ids[n], "w", 30)

    def finish(name: str) -> list[int]:
        with store.session() as s:
            transitions.transition(s, ids[name], JobStatus.RUNNING, JobStatus.SUCCEEDED)
            return [c for c in graph.ready_children(s, ids[name])
                    if transitions.transition(s, c, JobStatus.PENDING, JobStatus.QUEUED)]

    second: dict[str, list[int]] = {}
    with store.session() as s:  # the first finisher, held open while the second one starts
        transitions.transition(s, ids["a"], JobStatus.RUNNING, JobStatus.SUCCEEDED)
        first = graph.ready_children(s, ids["a"])
        thread = threading.Thread(target=lambda: second.update(b=finish("b")))
        thread.start()
        thread.join(1.0)  # on PostgreSQL it waits for the child's lock; on SQLite for the write lock
        assert thread.is_alive()
    thread.join(30)
    assert not thread.is_alive()
    assert first == [] and second["b"] == [ids["c"]]
    with store.session() as s:
        assert queries.require_job(s, ids["c"]).status is JobStatus.QUEUED


def test_descendants_and_cancellation(store: Store) -> None:
    _, ids = _batch(store, ["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "d")])
    with store.session() as s:
        assert sorted(graph.descendants(s, ids["a"])) == sorted([ids["b"], ids["c"], ids["d"]])
        assert graph.descendants(s, ids["c"]) == []
        transitions.transition(s, ids["d"], JobStatus.PENDING, JobStatus.QUEUED)
        transitions.claim(s, ids["d"], "w", 30)
        out = cancel.request_cancel(s, [ids["b"], ids["c"], ids["d"]], "parent failed")
    assert sorted(out["cancelled"]) == sorted([ids["b"], ids["c"]]) and out["flagged"] == [ids["d"]]
    with store.session() as s:
        b = queries.require_job(s, ids["b"])
        assert b.status is JobStatus.CANCELLED and b.error == "parent failed"
        d = queries.require_job(s, ids["d"])
        assert d.cancel_requested and d.status is JobStatus.RUNNING
        assert [(e.kind, e.status, e.message, e.attempt) for e in queries.job_events(s, ids["b"])][-1] == \
            ("status", "cancelled", "parent failed", 0)
        assert [(e.kind, e.message) for e in queries.job_events(s, ids["d"])][-1] == \
            ("message", "cancel requested: parent failed")
        # several at once: each downstream job once, whichever start it is reached from
        assert sorted(graph.descendants(s, [ids["b"], ids["a"], ids["b"]])) == sorted([ids[n] for n in "bcd"])
        again = cancel.request_cancel(s, [ids["c"], ids["a"], ids["a"]], "again")
    assert again == {"cancelled": [ids["a"]], "flagged": []}  # c is cancelled already, a was pending


def test_descendants_of_a_wide_fan_out_read_in_slices(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "CHUNK", 2)  # a frontier of 5 jobs takes 3 statements
    wide = [f"b{i}" for i in range(5)]
    _, ids = _batch(store, ["a", *wide, "z"], [("a", b) for b in wide] + [(b, "z") for b in wide])
    with store.session() as s:
        found = graph.descendants(s, ids["a"])
        assert sorted(found) == sorted(ids[n] for n in [*wide, "z"]) and len(found) == 6
        assert queries.artifacts_of(s, [ids[n] for n in wide]) == []


def test_metrics_are_replaced_per_key_and_step(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    with store.session() as s:
        for step, v in [(1, 0.5), (2, 0.4), (1, 0.45)]:  # step 1 again: a resumed attempt
            results.put_metric(s, ids["a"], "loss", v, step)
    with store.session() as s:
        got = [(m.step, m.value) for m in queries.job_metrics(s, [ids["a"]], "loss")]
    assert got == [(1, 0.45), (2, 0.4)]


def test_a_checkpoint_is_replaced_only_by_the_running_attempt_and_dropped_when_unshared(store: Store) -> None:
    _, ids = _batch(store, ["a", "b"], [])
    jid = ids["a"]
    with store.session() as s:
        assert transitions.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED)
    with store.session() as s:
        assert transitions.claim(s, jid, "w1", 30) is not None  # attempt 1
        assert results.replace_artifact(s, jid, "ck", "u1", "s1", 1, "x", attempt=1) == (True, None)
        assert results.replace_artifact(s, jid, "ck", "u2", "s2", 1, "x", attempt=1) == (True, "u1")  # unshared
        results.put_artifact(s, ids["b"], "copy", "u2", "s2", 1, "x")  # another job shares blob s2
        assert results.replace_artifact(s, jid, "ck", "u3", "s3", 1, "x", attempt=1) == (True, None)
        # attempt 1 lost the job to attempt 2 (its lease ran out): it records nothing
        assert transitions.transition(s, jid, JobStatus.RUNNING, JobStatus.QUEUED)
        assert transitions.claim(s, jid, "w2", 30) is not None
        assert results.replace_artifact(s, jid, "ck", "u4", "s4", 1, "x", attempt=1) == (False, None)
        assert results.drop_artifact(s, jid, "ck") == "u3"  # with the success: s3 is no one else's
        assert results.drop_artifact(s, jid, "ck") is None
        assert results.drop_artifact(s, ids["b"], "copy") == "u2"
    with store.session() as s:
        assert queries.job_artifacts(s, jid) == [] and queries.job_artifacts(s, ids["b"]) == []


def test_cache_lookup_points_to_the_job_that_did_the_work(store: Store) -> None:
    _, first = _batch(store, ["a"], [], fp="same")
    with store.session() as s:
        transitions.transition(s, first["a"], JobStatus.PENDING, JobStatus.SUCCEEDED)
        results.put_artifact(s, first["a"], "out.json", "sha256/aa/aa", "aa" * 32, 3, "application/json")
        results.put_metric(s, first["a"], "value", 7.0)
    _, second = _batch(store, ["a"], [], fp="same")
    with store.session() as s:
        assert batches.succeeded_by_fingerprint(s, ["same-a", "other"]) == {"same-a": first["a"]}
        transitions.transition(s, second["a"], JobStatus.PENDING, JobStatus.SUCCEEDED, cached_from=first["a"])
        results.copy_results(s, [(first["a"], second["a"])])
    _, third = _batch(store, ["a"], [], fp="same")
    with store.session() as s:
        assert batches.succeeded_by_fingerprint(s, ["same-a"]) == {"same-a": first["a"]}  # not the cached copy
        arts = queries.job_artifacts(s, second["a"])
        assert [(a.name, a.uri) for a in arts] == [("out.json", "sha256/aa/aa")]
        assert [m.value for m in queries.job_metrics(s, [second["a"]])] == [7.0]


def test_datetimes_come_back_timezone_aware(store: Store) -> None:
    _, ids = _batch(store, ["a"], [])
    with store.session() as s:
        job = queries.require_job(s, ids["a"])
    assert job.created_at.tzinfo is not None and job.created_at.utcoffset().total_seconds() == 0


def test_missing_rows_raise_not_found(store: Store) -> None:
    with store.session() as s:
        with pytest.raises(NotFound):
            queries.require_job(s, 12345)
        with pytest.raises(NotFound):
            queries.get_batch(s, 12345)


def test_artifact_store_is_content_addressed_and_verified(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "a")
    one = store.put_bytes(b"hello")
    again = store.put_bytes(b"hello")
    assert one == again and one.bytes == 5
    assert one.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.path_of(one.uri).read_bytes() == b"hello"
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 10000)
    blob = store.put_file(src)
    assert blob.bytes == src.stat().st_size and store.get_bytes(blob.uri, blob.sha256) == src.read_bytes()
    assert not list((tmp_path / "a").rglob(".tmp-*"))  # no temporary file left behind
    store.path_of(one.uri).write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt):
        store.get_bytes(one.uri, one.sha256)
    with pytest.raises(NotFound):
        store.get_bytes("sha256/00/" + "0" * 64)


def test_sqlite_uses_wal_and_a_busy_timeout(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_light_reads_for_the_filters(store: Store) -> None:
    b1, ids = _batch(store, ["a", "b", "c"], [])
    b2, other = _batch(store, ["a"], [], fp="other")
    with store.session() as s:
        results.put_metrics(s, ids["a"], {"loss": 0.3, "acc": 0.9})
        results.put_metric(s, ids["b"], "loss", 0.5, 1)
        results.put_metric(s, other["a"], "loss", 0.1)
        results.put_metric(s, other["a"], "other", 1.0)
    with store.session() as s:
        assert [(j.id, j.params) for j in queries.jobs_params(s, b1)] == [(ids[n], {"n": n}) for n in "abc"]
        assert queries.jobs_params(s, b1, kind="train") == []
        got = sorted((m.job_id, m.key, m.step, m.value) for m in queries.metrics_of_jobs(s, ["loss"], b1))
        assert got == [(ids["a"], "loss", 0, 0.3), (ids["b"], "loss", 1, 0.5)]
        assert queries.metric_keys(s, b1) == ["acc", "loss"]
        assert queries.metric_keys(s, b2) == ["loss", "other"]

def test_reads_by_a_list_of_ids_past_the_databases_parameter_limits(store: Store) -> None:
    """PostgreSQL takes at most 65535 parameters in a statement: reads by 70,000 ids go in slices."""
    _, ids = _batch(store, ["a", "b", "c"], [])
    _, other = _batch(store, ["a"], [], fp="other")
    with store.session() as s:
        results.put_metrics(s, ids["a"], {"loss": 0.3})
        results.put_metric(s, other["a"], "loss", 0.1)
        results.put_artifact(s, ids["c"], "out.json", "sha256/aa/aa", "aa" * 32, 3, "application/json")
        results.put_artifact(s, other["a"], "out.json", "sha256/bb/bb", "bb" * 32, 3, "application/json")
    # in id order, each once, ids of no job left out
    wanted = [ids["c"], other["a"], 10**6, ids["a"], ids["c"]] + list(range(2 * 10**6, 2 * 10**6 + 70_000))
    with store.session() as s:
        assert [j.id for j in queries.jobs_by_ids(s, wanted)] == sorted([ids["a"], ids["c"], other["a"]])
        assert [(m.job_id, m.value) for m in queries.job_metrics(s, wanted)] == [(ids["a"], 0.3), (other["a"], 0.1)]
        assert [(m.job_id, m.value) for m in queries.job_metrics(s, wanted, "nope")] == []
        assert [a.job_id for a in queries.artifacts_of(s, wanted)] == [ids["c"], other["a"]]
        assert queries.jobs_by_ids(s, []) == [] and queries.job_metrics(s, []) == []
        assert queries.artifacts_of(s, []) == []
