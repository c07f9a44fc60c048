"""Leases, the reaper, attempt guards, retries, time limits and cancellation, on SQLite and PostgreSQL.

Worker deaths are simulated here by claiming a job the way a worker does and then never renewing its lease; the
chaos tests (tests/chaos) kill real worker processes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler import lifecycle
from scheduler.broker import queue_size
from scheduler.control import ControlPlane
from scheduler.reaper import reap
from scheduler.settings import Settings, renew_interval
from storage import queries, transitions
from storage.models import utcnow
from storage.status import JobStatus
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, wait_for, worker, write_spec
from workers.context import JobLost
from workers.monitor import Watch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return dataclasses.replace(make_settings(tmp_path, database_url=db_url), lease_seconds=0.6, retry_backoff=0.2,
                               resend_after=0.5)


@pytest.fixture
def cp(settings: Settings) -> Iterator[ControlPlane]:
    farm = open_farm(settings)
    _purge(farm)  # the memory transport's queues live as long as the process
    yield farm
    _purge(farm)


def _purge(cp: ControlPlane) -> None:
    with cp.app.connection_for_write() as conn, conn.channel() as channel:
        for q in ("cpu", "gpu"):
            channel.queue_purge(cp.app.broker_queue(q))


def submit(cp: ControlPlane, tmp_path: Path, jobs: list[dict]) -> dict[str, int]:
    return cp.submit(cp.load(write_spec(tmp_path, {"batch": "b", "jobs": jobs}))).job_ids


def claim_and_die(cp: ControlPlane, job_id: int, worker_name: str = "doomed@host") -> int:
    """Claim a queued job as a worker does, with a lease that is already over: a worker that died at once."""
    with cp.store.session() as s:
        job = transitions.claim(s, job_id, worker_name, lease_seconds=-1)
    assert job is not None
    return job.attempts


def get(cp: ControlPlane, job_id: int):  # type: ignore[no-untyped-def]
    with cp.store.session() as s:
        return queries.require_job(s, job_id)


def events(cp: ControlPlane, job_id: int) -> list:
    with cp.store.session() as s:
        return queries.job_events(s, job_id)


# -- the reaper ---------------------------------------------------------------------------------------------------


def test_expired_lease_is_requeued_with_its_message_and_attempts_count(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}])
    _purge(cp)  # the submit's message was taken by the worker that then died
    assert claim_and_die(cp, ids["a"]) == 1
    report = reap(cp.store, cp.app, cp.settings)
    assert report.requeued == [ids["a"]] and not report.failed
    job = get(cp, ids["a"])
    assert job.status is JobStatus.QUEUED and job.attempts == 1 and job.lease_until is None
    assert queue_size(cp.app, "cpu") == 1  # sent again
    last = events(cp, ids["a"])[-1]
    assert last.status == "queued" and last.worker == "reaper"
    assert "worker lost: doomed@host stopped renewing its lease" in last.message
    assert "requeued for attempt 2 of 3" in last.message
    assert reap(cp.store, cp.app, cp.settings).requeued == []  # nothing left to do


def test_last_attempt_lost_fails_the_job_and_cancels_its_descendants(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop", "max_attempts": 2},
                                {"name": "b", "kind": "noop", "needs": ["a"]}])
    for attempt in (1, 2):
        assert claim_and_die(cp, ids["a"]) == attempt
        report = reap(cp.store, cp.app, cp.settings)
    assert report.failed == [ids["a"]] and report.descendants_cancelled == [ids["b"]]
    a, b = get(cp, ids["a"]), get(cp, ids["b"])
    assert a.status is JobStatus.FAILED and a.attempts == 2
    assert a.error.startswith("worker lost: doomed@host stopped renewing its lease") and "attempt 2 of 2" in a.error
    assert b.status is JobStatus.CANCELLED and "worker lost" in b.error


def test_expired_lease_of_a_cancelled_job_ends_cancelled(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}])
    claim_and_die(cp, ids["a"])
    assert lifecycle.cancel(cp.store, [ids["a"]])["flagged"] == [ids["a"]]
    assert reap(cp.store, cp.app, cp.settings).cancelled == [ids["a"]]
    job = get(cp, ids["a"])
    assert job.status is JobStatus.CANCELLED and job.error.startswith("cancelled by user (worker lost")


def test_a_live_lease_is_left_alone(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}])
    with cp.store.session() as s:
        job = transitions.claim(s, ids["a"], "alive@host", lease_seconds=30)
    assert job is not None and not reap(cp.store, cp.app, cp.settings)
    assert get(cp, ids["a"]).status is JobStatus.RUNNING


def test_lost_messages_are_resent_only_when_the_queue_is_empty(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}, {"name": "b", "kind": "noop"}])
    assert queue_size(cp.app, "cpu") == 2
    later = utcnow() + timedelta(seconds=5)
    assert reap(cp.store, cp.app, cp.settings, now=later).resent == []  # the messages are still there
    _purge(cp)  # the broker lost them (a restart without persistence)
    assert reap(cp.store, cp.app, cp.settings).resent == []  # too recent: a worker may be about to claim them
    # A broker in this process's memory with no worker in it (`latentfarm reap` on the embedded default): a message
    # sent there is gone when the process ends, so nothing is re-sent; the next process that runs a worker does it.
    assert reap(cp.store, cp.app, cp.settings, now=later).resent == []
    assert events(cp, ids["a"])[-1].message != "message re-sent: queue 'cpu' was empty on the broker"
    cp.app.node_name = "worker@host"  # a worker runs in this process, as in `latentfarm serve` or a farm's reaper
    report = reap(cp.store, cp.app, cp.settings, now=later)
    assert sorted(report.resent) == sorted(ids.values()) and queue_size(cp.app, "cpu") == 2
    assert events(cp, ids["a"])[-1].message == "message re-sent: queue 'cpu' was empty on the broker"
    with worker(cp):
        wait_done(cp, get(cp, ids["a"]).batch_id)
    assert get(cp, ids["a"]).status is JobStatus.SUCCEEDED and get(cp, ids["a"]).attempts == 1


# -- attempt guards -----------------------------------------------------------------------------------------------


def test_an_attempt_that_lost_its_lease_can_record_nothing(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}, {"name": "b", "kind": "noop", "needs": ["a"]}])
    old = claim_and_die(cp, ids["a"], "slow@host")
    reap(cp.store, cp.app, cp.settings)
    with cp.store.session() as s:
        new = transitions.claim(s, ids["a"], "fresh@host", lease_seconds=30)
    assert new is not None and new.attempts == old + 1
    # the first worker wakes up: its lease renewal and all its outcomes are refused
    with cp.store.session() as s:
        assert transitions.heartbeat(s, ids["a"], old, 30) is None
        assert transitions.heartbeat(s, ids["a"], new.attempts, 30) is False  # alive, no cancel request
    assert not lifecycle.complete_job(cp.store, cp.app, ids["a"], by="slow@host", attempt=old)
    assert lifecycle.end_job(cp.store, ids["a"], JobStatus.FAILED, "late", None, by="slow@host", attempt=old) == []
    assert get(cp, ids["a"]).status is JobStatus.RUNNING and get(cp, ids["a"]).worker == "fresh@host"
    assert lifecycle.complete_job(cp.store, cp.app, ids["a"], by="fresh@host", attempt=new.attempts)
    assert get(cp, ids["a"]).status is JobStatus.SUCCEEDED and get(cp, ids["b"]).status is JobStatus.QUEUED
    succeeded = [e for e in events(cp, ids["a"]) if e.status == "succeeded"]
    assert [(e.worker, e.attempt) for e in succeeded] == [("fresh@host", 2)]


def test_the_lease_keeper_tells_a_job_it_was_handed_on(cp: ControlPlane, tmp_path: Path) -> None:
    from workers.context import JobContext

    ids = submit(cp, tmp_path, [{"name": "a", "kind": "noop"}])
    with cp.store.session() as s:
        job = transitions.claim(s, ids["a"], "w@host", lease_seconds=30)
    assert job is not None
    watch = Watch(cp.store, job.id, job.attempts, 30.0)
    ctx = JobContext(cp.store, cp.settings, job, "w@host", watch)
    ctx.progress(0.5, "half way")  # renews: the lease moves on, progress is written
    assert get(cp, job.id).progress == 0.5 and get(cp, job.id).lease_until > utcnow() + timedelta(seconds=25)
    with cp.store.session() as s:  # the reaper took it back meanwhile (its lease had run out)
        assert transitions.transition(s, job.id, JobStatus.RUNNING, JobStatus.QUEUED, attempt=job.attempts)
    watch.renew()
    with pytest.raises(JobLost):
        ctx.check()
    assert renew_interval(60) == 5.0 and renew_interval(3) == 0.5


# -- whole runs through a real (in-process) worker ------------------------------------------------------------------


def test_transient_errors_are_retried_with_backoff_others_are_not(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [
        {"name": "flaky", "kind": "noop", "params": {"transient_failures": 2}},
        {"name": "hopeless", "kind": "noop", "params": {"transient_failures": 5}, "max_attempts": 2},
        {"name": "broken", "kind": "noop", "params": {"fail": True}},
        {"name": "after", "kind": "noop", "needs": ["flaky"]},
    ])
    with worker(cp):
        wait_done(cp, get(cp, ids["flaky"]).batch_id, timeout=60)
    jobs = jobs_by_name(cp, get(cp, ids["flaky"]).batch_id)
    assert (jobs["flaky"].status, jobs["flaky"].attempts) == (JobStatus.SUCCEEDED, 3)
    assert (jobs["after"].status, jobs["after"].attempts) == (JobStatus.SUCCEEDED, 1)
    assert (jobs["hopeless"].status, jobs["hopeless"].attempts) == (JobStatus.FAILED, 2)
    assert jobs["hopeless"].error.endswith("(attempt 2 of 2)") and "ConnectionError" in jobs["hopeless"].error
    assert (jobs["broken"].status, jobs["broken"].attempts) == (JobStatus.FAILED, 1)  # not transient: no retry
    # exponential backoff: 0.2 s before the 2nd attempt, 0.4 s before the 3rd
    flow = [e for e in events(cp, ids["flaky"]) if e.status in ("queued", "running")]
    assert [e.status for e in flow] == ["queued", "running", "queued", "running", "queued", "running"]
    assert "retry 2/3 in 0.2 s" in flow[2].message and "retry 3/3 in 0.4 s" in flow[4].message
    assert (flow[3].time - flow[2].time).total_seconds() >= 0.2
    assert (flow[5].time - flow[4].time).total_seconds() >= 0.4


def test_time_limits_soft_then_hard(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [
        {"name": "slow", "kind": "noop", "params": {"seconds": 20}, "timeout": 0.5},
        {"name": "stuck", "kind": "noop", "params": {"seconds": 4, "stuck": True}, "timeout": 0.5},
        {"name": "after", "kind": "noop", "needs": ["stuck"]},
    ])
    with worker(cp, concurrency=2):
        wait_done(cp, get(cp, ids["slow"]).batch_id, timeout=60)
    jobs = jobs_by_name(cp, get(cp, ids["slow"]).batch_id)
    assert jobs["slow"].status is JobStatus.FAILED and jobs["slow"].error == "timed out after 0.5 s (the job's timeout)"
    assert (jobs["slow"].finished_at - jobs["slow"].started_at).total_seconds() < 3
    assert jobs["stuck"].status is JobStatus.FAILED
    assert jobs["stuck"].error == "killed: still running 2 s after its timeout of 0.5 s (hard time limit)"
    assert 2.4 < (jobs["stuck"].finished_at - jobs["stuck"].started_at).total_seconds() < 4
    assert jobs["after"].status is JobStatus.CANCELLED
    # the stuck job's thread ran on (an embedded worker is not killed): its late result was refused
    assert not any(e.status == "succeeded" for e in events(cp, ids["stuck"]))


def test_cancel_stops_a_running_job_at_its_next_check(cp: ControlPlane, tmp_path: Path) -> None:
    ids = submit(cp, tmp_path, [{"name": "long", "kind": "noop", "params": {"seconds": 60}},
                                {"name": "next", "kind": "noop", "needs": ["long"]}])
    with worker(cp):
        wait_for(lambda: get(cp, ids["long"]).status is JobStatus.RUNNING, timeout=20)
        asked = time.monotonic()
        out = lifecycle.cancel(cp.store, [ids["long"]])
        assert out == {"cancelled": [ids["next"]], "flagged": [ids["long"]]}
        wait_for(lambda: get(cp, ids["long"]).status is JobStatus.CANCELLED, timeout=10)
        stopped = time.monotonic() - asked
    assert stopped < renew_interval(cp.settings.lease_seconds) + 1.5
    assert get(cp, ids["long"]).error == "cancelled by user"
