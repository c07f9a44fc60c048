"""A worker's claim and a job's success in as few round trips as their guarantees allow, on SQLite and on
PostgreSQL: the claim with the worker's row and whether the job has children, the success with its results, the
worker's count and its children, each guarded; on PostgreSQL each one statement and, without children to queue, a
transaction of its own (no BEGIN, no COMMIT)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import event, select

from scheduler import lifecycle
from scheduler.celery_app import make_celery
from storage import batches, queries, transitions, workers
from storage.records import NewJob
from storage.status import JobStatus
from storage.store import Store
from storage.transitions import Results
from storage.workers import WORKERS
from tests.conftest import make_settings


def _batch(store: Store, names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """A batch of noop jobs, its ready ones queued, and a registered worker ``w@h``."""
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, "b", {"batch": "b"},
                                             [NewJob(n, "noop", {"value": k}, f"fp-{n}", "cpu")
                                              for k, n in enumerate(names)], edges)
        batches.queue_roots(s, batch_id)
        workers.register(s, "w@h", "h", 1, ["cpu"], None, "0")
    return ids


def _worker(store: Store) -> tuple[int | None, int]:
    with store.session() as s:
        row = s.execute(select(WORKERS.c.job_id, WORKERS.c.jobs_done).where(WORKERS.c.name == "w@h")).one()
    return row.job_id, row.jobs_done


def test_a_batch_gets_its_ids_in_plan_order_and_an_event_per_job(store: Store) -> None:
    names = [f"j{k:03d}" for k in range(250)][::-1]  # names that sort the other way
    with store.session() as s:
        _, ids = batches.create_batch(s, "b", {}, [NewJob(n, "noop", {"k": n}, f"fp-{n}", "cpu") for n in names],
                                      [(names[0], names[1])])
        assert [ids[n] for n in names] == sorted(ids.values())
        assert [(e.status, e.message) for e in queries.job_events(s, ids[names[7]])] == [("pending", "submitted")]
        assert queries.require_job(s, ids[names[3]]).params == {"k": names[3]}
        assert queries.job_parents(s, ids[names[1]]) == [ids[names[0]]]


def test_a_claim_marks_the_worker_and_tells_whether_the_job_has_children(store: Store) -> None:
    ids = _batch(store, ["leaf", "parent", "child"], [("parent", "child")])
    with transitions.one_statement(store.engine) as s:
        leaf = transitions.claim_job(s, ids["leaf"], "w@h", 30, host="h")
        assert transitions.claim_job(s, ids["leaf"], "other@h", 30) is None  # a duplicate message: nothing written
        assert transitions.claim_job(s, ids["child"], "w@h", 30) is None  # pending, not queued
    assert leaf is not None and not leaf.has_children
    assert (leaf.job.status, leaf.job.attempts, leaf.job.worker, leaf.job.host) == (JobStatus.RUNNING, 1, "w@h", "h")
    assert _worker(store) == (ids["leaf"], 0)
    with transitions.one_statement(store.engine) as s:
        parent = transitions.claim_job(s, ids["parent"], "w@h", 30)
        events = [(e.status, e.worker, e.attempt) for e in queries.job_events(s, ids["leaf"])]
    assert parent is not None and parent.has_children
    assert events == [("pending", None, None), ("queued", None, 0), ("running", "w@h", 1)]


def test_a_success_records_its_results_and_the_workers_count_guarded_by_its_attempt(store: Store) -> None:
    ids = _batch(store, ["a", "b"], [])
    with transitions.one_statement(store.engine) as s:
        transitions.claim_job(s, ids["a"], "w@h", 30)
        transitions.claim_job(s, ids["b"], "w@h", 30)
    rows = Results({("loss", 0): 0.5, ("loss", 1): 0.25, ("acc", 0): 0.9},
                   {"out.json": ("sha256/aa/aa", "aa" * 32, 12, "application/json", {"k": [1, "x"]})})
    with transitions.one_statement(store.engine) as s:
        assert transitions.succeed(s, ids["a"], "w@h", attempt=2, results=rows, worker="w@h") is None  # not ours
        assert transitions.succeed(s, ids["a"], "w@h", attempt=1, results=rows, worker="w@h",
                                   lock_children=False) == []
        assert transitions.succeed(s, ids["a"], "w@h", attempt=1, results=rows, worker="w@h") is None  # done
    with store.session() as s:
        job = queries.require_job(s, ids["a"])
        metrics = sorted((m.key, m.step, m.value) for m in queries.job_metrics(s, [ids["a"]]))
        [art] = queries.job_artifacts(s, ids["a"])
        last = queries.job_events(s, ids["a"])[-1]
    assert (job.status, job.progress, job.lease_until, job.finished_at is not None) == (
        JobStatus.SUCCEEDED, 1.0, None, True)
    assert metrics == [("acc", 0, 0.9), ("loss", 0, 0.5), ("loss", 1, 0.25)]
    assert (art.name, art.uri, art.sha256, art.bytes, art.media_type, art.meta) == (
        "out.json", "sha256/aa/aa", "aa" * 32, 12, "application/json", {"k": [1, "x"]})
    assert (last.status, last.worker, last.attempt) == ("succeeded", "w@h", 1)
    assert _worker(store) == (ids["b"], 1)  # counted once; it runs its other job now


@pytest.mark.postgres
def test_on_postgresql_a_noop_job_costs_two_statements_and_no_transaction_block(pg_url: str,
                                                                                tmp_path: Path) -> None:
    """The worker's whole database work for a job without children: the claim and the success, one round trip
    each (libpq's trace: one Sync per statement, no BEGIN or COMMIT)."""
    from workers.execute import execute_job
    from workers.runtime import Runtime

    settings = make_settings(tmp_path, database_url=pg_url)
    store = Store.open(pg_url, tmp_path / "artifacts", upgrade=True)
    ids = _batch(store, ["a", "b"], [])
    rt = Runtime(settings, store, make_celery(settings))
    assert execute_job(rt, ids["a"], "w@h") == "succeeded"  # warm: the pool's connection, the statements' cache
    trace = tmp_path / "libpq.trace"
    statements: list[str] = []
    with open(trace, "w") as out:
        def traced(dbapi_conn: object, *_: object) -> None:
            dbapi_conn.pgconn.trace(out.fileno())  # type: ignore[attr-defined]

        def untraced(dbapi_conn: object, *_: object) -> None:
            dbapi_conn.pgconn.untrace()  # type: ignore[attr-defined]

        event.listen(store.engine, "checkout", traced)
        event.listen(store.engine, "checkin", untraced)
        event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert execute_job(rt, ids["b"], "w@h") == "succeeded"
        event.remove(store.engine, "checkout", traced)
        event.remove(store.engine, "checkin", untraced)
    sent = [line.split("\t")[3] for line in trace.read_text().splitlines() if line.split("\t")[1:2] == ["F"]]
    assert len(statements) == 2
    assert sent.count("Sync") == 2  # a round trip each
    assert "Query" not in sent  # no BEGIN, no COMMIT: each statement is a transaction of its own
    with store.session() as s:
        assert ("value", 1.0) in [(m.key, m.value) for m in queries.job_metrics(s, [ids["b"]])]
        assert [a.name for a in queries.job_artifacts(s, ids["b"])] == ["out.json"]
    assert _worker(store) == (None, 2)


def test_fan_in_through_complete_job_queues_each_child_once(store: Store, db_url: str, tmp_path: Path) -> None:
    """Two workers complete the two parents of each of 12 children at the same time: every child is queued exactly
    once (one status event), whichever finishes last."""
    pairs = [(f"p{k}", f"q{k}", f"c{k}") for k in range(12)]
    ids = _batch(store, [n for trio in pairs for n in trio],
                 [e for p, q, c in pairs for e in ((p, c), (q, c))])
    app = make_celery(make_settings(tmp_path, database_url=db_url))
    with transitions.one_statement(store.engine) as s:
        claimed = {n: transitions.claim_job(s, ids[n], f"w-{n[0]}@h", 30) for p, q, _ in pairs for n in (p, q)}
    assert all(c is not None and c.has_children for c in claimed.values())
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def finish(names: list[str]) -> None:
        try:
            start.wait(10)
            for n in names:
                assert lifecycle.complete_job(store, app, ids[n], by=f"w-{n[0]}@h", attempt=1, has_children=True)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=finish, args=([p for p, _, _ in pairs],)),
               threading.Thread(target=finish, args=([q for _, q, _ in pairs],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with store.session() as s:
        for _, _, c in pairs:
            assert queries.require_job(s, ids[c]).status is JobStatus.QUEUED
            assert [e.status for e in queries.job_events(s, ids[c])] == ["pending", "queued"]
