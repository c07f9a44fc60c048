"""A real Celery worker in the workers table: it registers, shows the job it runs, counts its outcomes, stops; the
embedded default never warns; job priorities on Redis (kombu's own key separator) still order the jobs."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scheduler.control import ControlPlane
from scheduler.embedded import in_process_worker
from storage import queries, workers
from storage.records import Worker
from tests.conftest import make_settings
from tests.integration.farm import open_farm, wait_done, wait_for, write_spec

NAME = "presence@localhost"
_LONG_AGO = datetime.min.replace(tzinfo=timezone.utc)
_NEVER = Worker(0, "", "", 0, [], None, "", None, _LONG_AGO, _LONG_AGO, None, 0, 0)


def _row(cp: ControlPlane) -> tuple[Worker | None, str]:
    """The worker's row and state (None, "" before it registered)."""
    with cp.store.session() as s:
        found = [w for w in workers.list_workers(s, cp.settings.worker_lost_after) if w.worker.name == NAME]
    return (found[0].worker, found[0].state) if found else (None, "")


def workers_now(cp: ControlPlane) -> datetime:
    with cp.store.session() as s:
        return workers.database_now(s)


def test_an_in_process_worker_registers_shows_its_job_counts_its_outcomes_and_stops(tmp_path: Path) -> None:
    cp = open_farm(dataclasses.replace(make_settings(tmp_path), heartbeat_seconds=0.2))
    spec = {"batch": "b", "jobs": [{"name": "slow", "kind": "noop", "params": {"seconds": 2}},
                                   {"name": "bad", "kind": "noop", "params": {"fail": True}, "needs": ["slow"]},
                                   {"name": "ok", "kind": "noop", "needs": ["slow"]},
                                   {"name": "odd", "kind": "noop", "queue": "special", "needs": ["slow"]}]}
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with in_process_worker(cp.app, hostname=NAME):
        wait_for(lambda: _row(cp)[1] == "running", timeout=10)
        worker, _ = _row(cp)
        assert worker is not None and worker.job_id == result.job_ids["slow"] and worker.queues == [workers.EVERY_QUEUE]
        assert cp.warnings() == [] and cp.farm().warnings == []  # embedded: its worker takes every queue
        summary = wait_done(cp, result.batch_id, timeout=60)
        assert summary.counts == {"succeeded": 3, "failed": 1}
        wait_for(lambda: getattr(_row(cp)[0], "jobs_done", 0) == 3, timeout=5)
        worker, state = _row(cp)
        assert worker is not None
        assert (state, worker.job_id, worker.jobs_done, worker.jobs_failed) == ("idle", None, 3, 1)
        assert worker.stopped_at is None and worker.last_seen > worker.started_at  # it heartbeats
    worker, state = _row(cp)
    assert state == "stopped" and worker is not None and worker.stopped_at is not None


@pytest.mark.redis
def test_job_priorities_still_order_a_queue_on_redis(tmp_path: Path, redis_url: str) -> None:
    cp = open_farm(make_settings(tmp_path, broker_url=redis_url))
    priorities = [0, 9, 3, 7, 5]
    spec = {"batch": "p", "jobs": [{"name": f"p{p}", "kind": "noop", "priority": p} for p in priorities]}
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))  # all queued before any worker takes one
    with in_process_worker(cp.app, hostname=NAME):  # one job at a time
        wait_done(cp, result.batch_id, timeout=60)
    with cp.store.session() as s:
        jobs = queries.jobs_by_ids(s, result.job_ids.values())
    assert [j.name for j in sorted(jobs, key=lambda j: j.started_at)] == ["p9", "p7", "p5", "p3", "p0"]


@pytest.mark.postgres
def test_heartbeats_survive_a_database_that_is_away_and_so_does_the_job(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL cut away (a TCP proxy resets every connection) for 2 s while a job runs: the heartbeats fail,
    the job succeeds all the same, the worker lives on and its heartbeats come back."""
    import sqlalchemy as sa

    from tests.chaos.harness import TcpProxy

    url = sa.make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        cp = open_farm(dataclasses.replace(make_settings(tmp_path, database_url=proxied), heartbeat_seconds=0.2))
        result = cp.submit(cp.load(write_spec(tmp_path, {"batch": "b", "jobs": [
            {"name": "slow", "kind": "noop", "params": {"seconds": 4}}]})))
        with in_process_worker(cp.app, hostname=NAME) as controller:
            wait_for(lambda: _row(cp)[1] == "running", timeout=10)
            proxy.cut()
            beacon = controller.latentfarm_beacon
            wait_for(lambda: beacon.failing, timeout=5)
            time.sleep(2)
            proxy.restore()
            restored = workers_now(cp)
            wait_for(lambda: (_row(cp)[0] or _NEVER).last_seen > restored, timeout=10)
            assert beacon.alive and not beacon.failing
            summary = wait_done(cp, result.batch_id, timeout=60)
        assert summary.counts == {"succeeded": 1}
        worker, state = _row(cp)
        assert state == "stopped" and worker is not None and worker.jobs_done == 1
        with cp.store.session() as s:
            assert queries.require_job(s, result.job_ids["slow"]).attempts == 1
    finally:
        proxy.close()
