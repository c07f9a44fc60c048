"""Bulk submission (a few statements per thousand jobs) writes exactly what the one-job-at-a-time path wrote:
the same jobs, statuses, edges, status events, cache hits with their copied results, and queued jobs, whose
messages go out only once they are committed ``queued``. On SQLite and on PostgreSQL (``store``'s ``db_url``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler import broker, lifecycle
from scheduler.celery_app import make_celery
from scheduler.plan import BatchPlan
from storage import batches, graph, queries, results, sql, transitions
from storage.models import ArtifactRow, BatchRow, EventRow, JobDepRow, JobRow, MetricRow
from storage.records import Job, NewJob
from storage.status import JobStatus
from storage.store import Store
from tests.conftest import make_settings

# A batch with roots, a chain, fan-in, cache hits (one of them a cached copy's fingerprint, two sharing one
# fingerprint), a child of a hit (queued at once: its parent succeeded), a child of a hit and a non-hit (waits),
# and a hit whose parent is not one.
JOBS = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]), ("e", []), ("f", ["e"]), ("g", ["e", "a"]),
        ("h", []), ("i", []), ("k", ["a"]), ("m", []), ("n", ["m"])]
HIT_FPS = {"e": "fp-e", "h": "fp-e", "i": "fp-i", "k": "fp-k", "m": "fp-m"}  # fingerprints that succeeded before


def plan(name: str) -> BatchPlan:
    jobs = tuple(NewJob(n, "noop", {"value": k, "name": n}, HIT_FPS.get(n, f"fp-{name}-{n}"), "cpu" if k % 3 else "gpu",
                        priority=k % 10, max_attempts=1 + k % 2, timeout=None if k % 2 else 60.0 + k)
                 for k, (n, _) in enumerate(JOBS))
    edges = tuple((p, n) for n, needs in JOBS for p in needs)
    return BatchPlan(name, f"/specs/{name}.yaml", {"batch": name, "jobs": len(jobs)}, jobs, edges)


def seed(store: Store) -> dict[str, int]:
    """Succeeded jobs with results: the sources of the cache hits. ``fp-m``'s only success is a cached copy."""
    with store.session() as s:
        _, ids = batches.create_batch(s, "seed", {}, [NewJob(n, "noop", {}, fp, "cpu") for n, fp in [
            ("e", "fp-e"), ("i", "fp-i"), ("k", "fp-k"), ("m0", "fp-m0"), ("m", "fp-m")]], [])
        for n in ("e", "i", "k", "m0"):
            assert transitions.transition(s, ids[n], JobStatus.PENDING, JobStatus.SUCCEEDED, progress=1.0)
        assert transitions.transition(s, ids["m"], JobStatus.PENDING, JobStatus.SUCCEEDED, cached_from=ids["m0"])
        results.put_metric(s, ids["e"], "value", 3.0)
        results.put_metric(s, ids["e"], "loss", 0.5, step=1)
        results.put_metric(s, ids["e"], "loss", 0.25, step=2)
        results.put_artifact(s, ids["e"], "out.json", "sha256/ee/ee", "ee" * 32, 12, "application/json", {"k": 1})
        results.put_artifact(s, ids["e"], "model.keras", "sha256/e2/e2", "e2" * 32, 99, "application/zip")
        results.put_metric(s, ids["i"], "value", 7.0)
        results.put_artifact(s, ids["k"], "out.json", "sha256/kk/kk", "kk" * 32, 5, "application/json")
        results.put_metric(s, ids["m0"], "value", 9.0)
        results.put_artifact(s, ids["m0"], "out.json", "sha256/m0/m0", "m0" * 32, 6, "application/json")
    return ids


def submit_one_by_one(store: Store, p: BatchPlan, no_cache: bool = False) -> lifecycle.SubmitResult:
    """The submission as it was before it was made bulk: ORM rows, one transition (and one results copy) per
    job. The reference the bulk path must agree with."""
    with store.session() as s:
        batch = BatchRow(name=p.name, spec=dict(p.spec), spec_path=p.spec_path, no_cache=no_cache)
        s.add(batch)
        s.flush()
        rows = {j.name: JobRow(batch_id=batch.id, name=j.name, kind=j.kind, params=j.params,
                               fingerprint=j.fingerprint, status="pending", queue=j.queue, priority=j.priority,
                               max_attempts=j.max_attempts, timeout=j.timeout, attempts=0, progress=0.0,
                               cancel_requested=False) for j in p.jobs}
        s.add_all(rows.values())
        s.flush()
        s.add_all(JobDepRow(parent_id=rows[a].id, child_id=rows[b].id) for a, b in p.edges)
        s.add_all(EventRow(job_id=r.id, kind="status", status="pending", message="submitted") for r in rows.values())
        s.flush()
        result = lifecycle.SubmitResult(batch.id, {n: r.id for n, r in rows.items()})
        if not no_cache:
            hits = batches.succeeded_by_fingerprint(s, [j.fingerprint for j in p.jobs])
            for j in p.jobs:
                source = hits.get(j.fingerprint)
                jid = rows[j.name].id
                if source is not None and transitions.transition(
                        s, jid, JobStatus.PENDING, JobStatus.SUCCEEDED, cached_from=source, progress=1.0,
                        message=f"cached: same fingerprint as job {source}"):
                    for a in s.scalars(select(ArtifactRow).where(ArtifactRow.job_id == source)):
                        results.put_artifact(s, jid, a.name, a.uri, a.sha256, a.bytes, a.media_type, dict(a.meta))
                    for m in s.scalars(select(MetricRow).where(MetricRow.job_id == source)):
                        s.add(MetricRow(job_id=jid, key=m.key, step=m.step, value=m.value, time=m.time))
                    result.cached.append(jid)
        for jid in graph.roots(s, batch.id):
            if transitions.transition(s, jid, JobStatus.PENDING, JobStatus.QUEUED):
                result.queued.append(jid)
    return result


def snapshot(store: Store, result: lifecycle.SubmitResult) -> dict[str, Any]:
    """What a batch left in the store, by job name (ids differ between two batches)."""
    name_of = {v: k for k, v in result.job_ids.items()}
    with store.session() as s:
        batch = queries.get_batch(s, result.batch_id)
        jobs = {j.name: j for j in queries.list_jobs(s, batch_id=result.batch_id)}
        ids = list(name_of)
        edges = sorted((name_of[p], name_of[c]) for p, c in s.execute(
            select(JobDepRow.parent_id, JobDepRow.child_id).where(JobDepRow.child_id.in_(ids))))
        events = [(name_of[e.job_id], e.kind, e.status, e.message, e.worker, e.attempt) for e in s.scalars(
            select(EventRow).where(EventRow.job_id.in_(ids)).order_by(EventRow.job_id, EventRow.id))]
        metrics = sorted((name_of[m.job_id], m.key, m.step, m.value, m.time) for m in s.scalars(
            select(MetricRow).where(MetricRow.job_id.in_(ids))))
        artifacts = sorted((name_of[a.job_id], a.name, a.uri, a.sha256, a.bytes, a.media_type, str(a.meta))
                           for a in s.scalars(select(ArtifactRow).where(ArtifactRow.job_id.in_(ids))))
    return {
        "batch": (batch.spec, batch.spec_path, batch.no_cache),
        "jobs": {n: (j.status.value, j.kind, j.params, j.fingerprint, j.queue, j.priority, j.max_attempts, j.timeout,
                     j.attempts, j.progress, j.cached_from, j.cancel_requested, j.queued_at is not None,
                     j.finished_at is not None, j.started_at, j.worker) for n, j in jobs.items()},
        "job_ids": {n: jobs[n].id for n in jobs} == result.job_ids,
        "edges": edges,
        "events": events,
        "metrics": metrics,
        "artifacts": artifacts,
        "cached": [name_of[j] for j in result.cached],
        "queued": [name_of[j] for j in result.queued],
    }


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[tuple[int, str, str]]:
    """Jobs whose messages the lifecycle sent, each with its committed status when it was sent (read in a new
    transaction: a job must be queued in SQL before its message exists)."""
    out: list[tuple[int, str, str]] = []

    def record(app: Any, jobs: list[Job], countdown: float | None = None) -> None:
        with store.session() as s:
            for j in jobs:
                out.append((j.id, j.queue, queries.require_job(s, j.id).status.value))

    monkeypatch.setattr(broker, "send", record)
    return out


@pytest.mark.parametrize("chunk", [1000, 2], ids=["chunk1000", "chunk2"])
@pytest.mark.parametrize("no_cache", [False, True], ids=["cache", "no_cache"])
def test_bulk_submit_writes_what_one_by_one_did(store: Store, tmp_path: Path, sent: list[tuple[int, str, str]],
                                                monkeypatch: pytest.MonkeyPatch, chunk: int, no_cache: bool) -> None:
    monkeypatch.setattr(sql, "CHUNK", chunk)  # 2: every bulk statement runs in several chunks
    seeded = seed(store)
    before = snapshot(store, submit_one_by_one(store, plan("x"), no_cache=no_cache))
    app = make_celery(make_settings(tmp_path))
    result = lifecycle.submit(store, app, plan("x"), no_cache=no_cache)
    after = snapshot(store, result)
    assert after == before
    assert after["job_ids"]
    if no_cache:
        assert after["cached"] == [] and after["queued"] == ["a", "e", "h", "i", "m"]
    else:
        assert after["cached"] == ["e", "h", "i", "k", "m"]
        assert after["queued"] == ["a", "f", "n"]  # f and n: their only parent is a hit; g also waits for a
        assert after["jobs"]["g"][0] == "pending"
        assert after["jobs"]["m"][10] == seeded["m0"]  # the job that did the work, not its copy
        assert sorted(a[1] for a in after["artifacts"] if a[0] == "e") == ["model.keras", "out.json"]
        assert sorted((m[1], m[2]) for m in after["metrics"] if m[0] == "h") == [("loss", 1), ("loss", 2),
                                                                                 ("value", 0)]
    # the messages: one per queued job, in id order, each sent once its job was committed queued
    queue_of = {j.name: j.queue for j in plan("x").jobs}
    assert [(j, q) for j, q, _ in sent] == [(result.job_ids[n], queue_of[n]) for n in after["queued"]]
    assert {status for _, _, status in sent} == {"queued"}


def test_children_of_hits_wait_for_unfinished_parents_and_are_queued_once_ready(store: Store, tmp_path: Path,
                                                                                sent: list[Any]) -> None:
    seed(store)
    result = lifecycle.submit(store, make_celery(make_settings(tmp_path)), plan("y"))
    with store.session() as s:
        status = {j.name: j.status.value for j in queries.list_jobs(s, batch_id=result.batch_id)}
        events = {n: [e.status for e in queries.job_events(s, result.job_ids[n]) if e.kind == "status"]
                  for n in ("a", "e", "f", "g", "n")}
    assert status["e"] == status["m"] == "succeeded" and status["f"] == "queued"
    assert status["g"] == "pending" and status["n"] == "queued"  # n's parent m is a hit
    assert events == {"a": ["pending", "queued"], "e": ["pending", "succeeded"], "f": ["pending", "queued"],
                      "g": ["pending"], "n": ["pending", "queued"]}


def test_bulk_transitions_are_guarded(store: Store) -> None:
    """Only pending jobs move: one cancelled meanwhile is neither marked cached nor queued, and gets no event."""
    src = seed(store)["e"]
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, "g", {}, [NewJob(n, "noop", {}, f"fp-{n}", "cpu") for n in "abcd"],
                                             [("a", "d")])
        assert transitions.transition(s, ids["b"], JobStatus.PENDING, JobStatus.CANCELLED)
        assert batches.mark_cached(s, {ids["a"]: src, ids["b"]: src}) == [ids["a"]]
        queued = batches.queue_roots(s, batch_id)
        assert [j.id for j in queued] == [ids["c"], ids["d"]]  # d: its parent a is a hit now
        assert all(j.status is JobStatus.QUEUED and j.queued_at is not None for j in queued)
        assert batches.queue_roots(s, batch_id) == []  # nothing left pending and ready
        status = {n: queries.require_job(s, i).status.value for n, i in ids.items()}
        b_events = [e.status for e in queries.job_events(s, ids["b"])]
    assert status == {"a": "succeeded", "b": "cancelled", "c": "queued", "d": "queued"}
    assert b_events == ["pending", "cancelled"]


def test_a_failing_submit_leaves_no_trace(store: Store, tmp_path: Path, sent: list[Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store)

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(batches, "queue_roots", boom)  # after the batch, its edges, events and cache hits
    with pytest.raises(RuntimeError, match="boom"):
        lifecycle.submit(store, make_celery(make_settings(tmp_path)), plan("z"))
    with store.session() as s:
        assert [b.batch.name for b in queries.list_batches(s)] == ["seed"]
        assert len(queries.list_jobs(s)) == 5
    assert sent == []


def test_large_batch_ids_match_names_across_insert_pages(store: Store) -> None:
    """Job ids come back by name past the 1000-row pages of the bulk INSERT, and edges land on the right jobs."""
    n = 2500
    jobs = [NewJob(f"j{k}", "noop", {"k": k}, f"fp-{k}", "cpu") for k in range(n)]
    edges = [(f"j{k}", f"j{k + 1}") for k in range(0, n, 2)]
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, "big", {}, jobs, edges)
        queued = batches.queue_roots(s, batch_id)
    with store.session() as s:
        rows = {j.id: j for j in queries.list_jobs(s, batch_id=batch_id)}
        deps = {(p, c) for p, c in s.execute(select(JobDepRow.parent_id, JobDepRow.child_id)
                                             .where(JobDepRow.child_id.in_(list(rows))))}
        events = s.scalar(select(EventRow.id).where(EventRow.job_id == ids["j1"]).order_by(EventRow.id.desc()))
    assert len(ids) == n and all(rows[ids[f"j{k}"]].name == f"j{k}" and rows[ids[f"j{k}"]].params == {"k": k}
                                 for k in range(n))
    assert deps == {(ids[p], ids[c]) for p, c in edges}
    assert [j.id for j in queued] == sorted(ids[f"j{k}"] for k in range(0, n, 2))
    assert events is not None
