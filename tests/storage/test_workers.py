"""The workers table on SQLite and on PostgreSQL: registration, heartbeats, the job a worker runs, its counts,
its state, and per queue the jobs waiting and the live workers that consume it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from storage import batches, transitions, workers
from storage.records import NewJob
from storage.status import JobStatus
from storage.store import Store
from storage.workers import WORKERS

LOST_AFTER = 15.0


def _register(store: Store, name: str, queues: list[str], pid: int = 100, gpu: str | None = None,
              take_over: bool = True) -> bool:
    with store.session() as s:
        stale = None if take_over else workers.database_now(s) - timedelta(seconds=LOST_AFTER)
        return workers.register(s, name, "host-a", pid, queues, gpu, "0.1.0", stale_before=stale)


def _states(store: Store) -> dict[str, str]:
    with store.session() as s:
        return {w.worker.name: w.state for w in workers.list_workers(s, LOST_AFTER)}


def _age(store: Store, name: str, seconds: float) -> None:
    """Make the worker's last heartbeat ``seconds`` old."""
    with store.session() as s:
        then = workers.database_now(s) - timedelta(seconds=seconds)
        s.execute(update(WORKERS).where(WORKERS.c.name == name).values(last_seen=then))


def _jobs(store: Store, queues: dict[str, str]) -> dict[str, int]:
    """A batch with a job per name, on the given queues, all queued."""
    with store.session() as s:
        batch_id, ids = batches.create_batch(s, "b", {"batch": "b"}, [NewJob(n, "noop", {"n": n}, f"fp-{n}", q)
                                                                      for n, q in queues.items()], [])
        batches.queue_roots(s, batch_id)
    return ids


def test_a_worker_registers_heartbeats_and_stops(store: Store) -> None:
    assert _register(store, "cpu0@a", ["cpu"])
    with store.session() as s:
        [w] = [x.worker for x in workers.list_workers(s, LOST_AFTER)]
        assert (w.name, w.host, w.pid, w.queues, w.gpu, w.version) == ("cpu0@a", "host-a", 100, ["cpu"], None, "0.1.0")
        assert (w.job_id, w.jobs_done, w.jobs_failed, w.stopped_at) == (None, 0, 0, None)
        first_seen = w.last_seen
    assert _states(store) == {"cpu0@a": "idle"}
    _age(store, "cpu0@a", LOST_AFTER + 1)
    assert _states(store) == {"cpu0@a": "lost"}
    with store.session() as s:  # the heartbeat: this process (host and pid) only, its queues as they are now
        assert workers.heartbeat(s, "cpu0@a", "host-a", 100, ["cpu", "gpu"])
        assert not workers.heartbeat(s, "cpu0@a", "host-a", 101, ["cpu"])  # another process of that name
        assert not workers.heartbeat(s, "nobody@a", "host-a", 100, ["cpu"])
    with store.session() as s:
        [w] = [x.worker for x in workers.list_workers(s, LOST_AFTER)]
    assert w.queues == ["cpu", "gpu"] and w.last_seen >= first_seen
    assert _states(store) == {"cpu0@a": "idle"}
    with store.session() as s:
        workers.stopped(s, "cpu0@a", "host-a", 100)
    assert _states(store) == {"cpu0@a": "stopped"}


def test_a_restarted_worker_takes_its_row_over_but_a_live_namesake_does_not(store: Store) -> None:
    assert _register(store, "w@a", ["cpu"], pid=1)
    with store.session() as s:
        workers.job_ended(s, "w@a", succeeded=True)
    assert _register(store, "w@a", ["gpu"], pid=2)  # restarted: afresh
    with store.session() as s:
        [w] = [x.worker for x in workers.list_workers(s, LOST_AFTER)]
    assert (w.pid, w.queues, w.jobs_done) == (2, ["gpu"], 0)
    assert not _register(store, "w@a", ["cpu"], pid=3, take_over=False)  # pid 2 is alive: left alone
    _age(store, "w@a", LOST_AFTER + 1)
    assert _register(store, "w@a", ["cpu"], pid=3, take_over=False)  # pid 2 is lost: taken over
    with store.session() as s:
        assert workers.count_workers(s) == 1
        assert [x.worker.pid for x in workers.list_workers(s, LOST_AFTER)] == [3]


def test_the_job_a_worker_runs_and_its_counts(store: Store) -> None:
    _register(store, "w@a", ["cpu"])
    ids = _jobs(store, {"a": "cpu", "b": "cpu"})
    with store.session() as s:  # as the worker's claim does: in the claiming transaction
        assert transitions.claim(s, ids["a"], "w@a", 60) is not None
        workers.job_started(s, "w@a", ids["a"])
    assert _states(store) == {"w@a": "running"}
    with store.session() as s:
        assert transitions.claim(s, ids["b"], "w@a", 60) is not None
        workers.job_started(s, "w@a", ids["b"])
    with store.session() as s:  # "a" ends; "b" still runs (a worker of two processes): it shows "b"
        transitions.transition(s, ids["a"], JobStatus.RUNNING, JobStatus.SUCCEEDED)
        workers.job_ended(s, "w@a", succeeded=True)
        assert workers.list_workers(s, LOST_AFTER)[0].worker.job_id == ids["b"]
    with store.session() as s:
        transitions.transition(s, ids["b"], JobStatus.RUNNING, JobStatus.FAILED)
        workers.job_ended(s, "w@a", failed=True)
    with store.session() as s:
        [w] = [x.worker for x in workers.list_workers(s, LOST_AFTER)]
    assert (w.job_id, w.jobs_done, w.jobs_failed) == (None, 1, 1)
    assert _states(store) == {"w@a": "idle"}


def test_a_heartbeat_mends_the_job_from_the_jobs_table(store: Store) -> None:
    """A job whose end was never told (its process killed, the database away then) is not shown for long."""
    _register(store, "w@a", ["cpu"])
    ids = _jobs(store, {"a": "cpu"})
    with store.session() as s:
        transitions.claim(s, ids["a"], "w@a", 60)
    with store.session() as s:
        workers.heartbeat(s, "w@a", "host-a", 100, ["cpu"])
        assert workers.list_workers(s, LOST_AFTER)[0].worker.job_id == ids["a"]  # running, though never told
    with store.session() as s:
        transitions.transition(s, ids["a"], JobStatus.RUNNING, JobStatus.FAILED)
        workers.heartbeat(s, "w@a", "host-a", 100, ["cpu"])
        assert workers.list_workers(s, LOST_AFTER)[0].worker.job_id is None


def test_queue_loads_count_jobs_and_live_consumers(store: Store) -> None:
    ids = _jobs(store, {"g1": "gpu", "g2": "gpu", "s": "special", "c": "cpu"})
    _register(store, "cpu0@a", ["cpu"])
    _register(store, "gpu0@a", ["gpu"], gpu="0")
    _register(store, "old@a", ["special"])
    _age(store, "old@a", LOST_AFTER + 1)  # lost: it consumes nothing any more
    with store.session() as s:
        transitions.claim(s, ids["g1"], "gpu0@a", 60)
        loads = {q.queue: q for q in workers.queue_loads(s, LOST_AFTER, also=["extra"])}
        live = [w.name for w in workers.live_workers(s, LOST_AFTER)]
    assert live == ["cpu0@a", "gpu0@a"]
    assert {name: (q.queued, q.running, q.consumers) for name, q in loads.items()} == {
        "cpu": (1, 0, 1), "gpu": (1, 1, 1), "special": (1, 0, 0), "extra": (0, 0, 0)}
    assert [q.queue for q in loads.values() if q.unserved] == ["special"]
    with store.session() as s:  # one batch's jobs only; a worker that takes every queue serves "special" too
        batches.create_batch(s, "o", {}, [NewJob("x", "noop", {}, "fp-x", "other")], [])
        workers.register(s, "embedded-1@a", "host-a", 1, [workers.EVERY_QUEUE], None, "0.1.0")
        mine = {q.queue: (q.queued, q.consumers) for q in workers.queue_loads(s, LOST_AFTER, batch_id=1)}
    assert mine == {"cpu": (1, 2), "gpu": (1, 2), "special": (1, 1)}


def test_workers_not_seen_for_long_are_forgotten(store: Store) -> None:
    _register(store, "a@h", ["cpu"])
    _register(store, "b@h", ["cpu"])
    _age(store, "a@h", 2 * 86400)
    with store.session() as s:
        assert workers.forget(s, workers.database_now(s) - timedelta(days=1)) == 1
        assert [w.worker.name for w in workers.list_workers(s, LOST_AFTER)] == ["b@h"]
