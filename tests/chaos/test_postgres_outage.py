"""PostgreSQL cut away from the workers for 5 s while jobs run and finish (a TCP proxy between them resets every
connection and refuses new ones): every job still succeeds exactly once, and every success has its metric and its
artifact, row and blob, recorded with it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.models import utcnow
from tests.chaos.harness import Farm, TcpProxy, report, summarize_timeline, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres]

JOBS = 60
CUT_FOR = 5.0


def value_of(i: int) -> float:
    return 1000.0 + 1.25 * i  # distinct per job, exact in binary


def batch_jobs() -> list[dict[str, Any]]:
    """40 roots and 20 fan-ins of two of them, 0.3 s each."""
    jobs: list[dict[str, Any]] = []
    for i in range(JOBS):
        entry: dict[str, Any] = {"name": f"j{i:02d}", "kind": "noop", "queue": "cpu", "max_attempts": 10,
                                 "params": {"seconds": 0.3, "value": value_of(i)}}
        if i >= 40:
            entry["needs"] = [f"j{2 * (i - 40):02d}", f"j{2 * (i - 40) + 1:02d}"]
        jobs.append(entry)
    return jobs


@pytest.mark.timeout(240)
def test_postgres_away_from_the_workers_while_jobs_finish(make_farm: Callable[..., Farm], system_redis_url: str,
                                                          pg_proxy: tuple[TcpProxy, str], tmp_path: Path) -> None:
    proxy, workers_db = pg_proxy
    farm = make_farm(system_redis_url, lease=3.0, worker_db_url=workers_db)
    farm.start_scheduler()  # on PostgreSQL directly, as the test is
    workers = [farm.start_worker(f"w{i}") for i in range(2)]
    batch, ids = farm.submit("pg-outage", batch_jobs())
    started = time.monotonic()

    def just_started() -> dict[str, int] | None:
        """A fifth of the batch done, and a job running that started under 0.2 s ago: it is still running when
        the line is cut, so it must finish on a later attempt."""
        counts = farm.counts(batch)
        if counts.get("succeeded", 0) < 12:
            return None
        fresh = farm.sql("SELECT count(*) FROM jobs WHERE batch_id = :b AND status = 'running' "
                         "AND started_at > :t", b=batch, t=utcnow() - timedelta(seconds=0.2))[0][0]
        return counts if fresh else None

    for _ in range(3):  # cut while a job runs (once in a blue moon it finishes first: restore and try again)
        at_cut = wait_until(just_started, 90, "a fifth of the batch succeeds, with a job just started",
                            interval=0.02, details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs()}")
        proxy.cut()
        cut_at, cut_db = time.monotonic(), utcnow()  # the clock the workers stamp events with
        running_at_cut = dict(farm.sql("SELECT id, attempts FROM jobs WHERE batch_id = :b AND status = 'running'",
                                       b=batch))
        if running_at_cut:
            break
        proxy.restore()
    assert running_at_cut, "no job was running when PostgreSQL went away"

    def handed_on() -> bool:
        """The outage lasts CUT_FOR seconds, and until the reaper has requeued the jobs it caught running (their
        leases ran out): what a real outage longer than the lease does."""
        if time.monotonic() - cut_at < CUT_FOR:
            return False
        rows = farm.sql("SELECT id, status, attempts FROM jobs WHERE id = ANY(:ids)", ids=list(running_at_cut))
        return all(r.status != "running" or r.attempts != running_at_cut[r.id] for r in rows)

    wait_until(handed_on, CUT_FOR + 20, "the reaper hands on the jobs whose leases ran out during the outage",
               interval=0.1, details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs('scheduler')}")
    proxy.restore()
    restored_at = time.monotonic()
    restored_db = utcnow()
    # No worker transaction begun after the cut (with a margin for one in flight) can have committed.
    succeeded_during = farm.events_count(batch, "e.kind = 'status' AND e.status = 'succeeded' AND e.time > :t "
                                         "AND e.time < :r", t=cut_db + timedelta(seconds=0.5), r=restored_db)

    timeline: list[tuple[float, int]] = [(0.0, farm.count(batch, "succeeded"))]

    def done() -> bool:
        n = farm.count(batch, "succeeded")
        if n != timeline[-1][1]:
            timeline.append((time.monotonic() - restored_at, n))
        counts = farm.counts(batch)
        if counts.get("failed") or counts.get("cancelled"):
            bad = farm.sql("SELECT id, status, error FROM jobs WHERE batch_id = :b AND status IN "
                           "('failed', 'cancelled')", b=batch)
            raise AssertionError(f"jobs ended badly: {counts}: {bad}")
        return n == JOBS

    wait_until(done, 120, "the batch finishes after PostgreSQL is back", interval=0.1,
               details=lambda: f"{farm.counts(batch)} timeline {summarize_timeline(timeline)}\n{farm.procs.logs()}")
    finished = time.monotonic()
    first = farm.first_success_after(batch, restored_db)

    succeeded = farm.status_events(batch, "succeeded")
    retried = farm.sql("SELECT count(*) FROM jobs WHERE batch_id = :b AND attempts > 1", b=batch)[0][0]
    figures = {**farm.standard_figures(batch), "jobs_retried": retried, "running_at_cut": len(running_at_cut),
               "succeeded_at_cut": at_cut["succeeded"], "succeeded_during_cut": succeeded_during,
               "pg_cut_s": round(restored_at - cut_at, 1),
               "connections_reset": proxy.reset, "connections_refused": proxy.refused,
               "first_success_after_restore_s": round((first - restored_db).total_seconds(), 1) if first else None,
               "finish_after_restore_s": round(finished - restored_at, 1), "seconds": round(finished - started, 1)}
    report("postgres_outage", figures, tmp_path)

    assert farm.counts(batch) == {"succeeded": JOBS}
    assert [j for j, n in succeeded.items() if n != 1] == [], "jobs without exactly one success"
    assert succeeded_during == 0, "a job was recorded succeeded while the workers could not reach PostgreSQL"
    assert proxy.reset >= 1, "the cut closed no connection: the workers were not talking to PostgreSQL through it"
    # Their leases ran out during the outage: the reaper (on PostgreSQL directly) handed them on.
    assert figures["requeued_by_reaper"] >= len(running_at_cut)
    assert farm.children_started_after_parents(batch) == []
    # Every attempt ended in the one success, or was handed on (lease expired) or retried (transient error).
    assert figures["claims"] == len(ids) + figures["requeued_by_reaper"] + figures["transient_retries"], figures

    # Nothing recorded as succeeded without its results: the metric `value` (the job's own) and `out.json`.
    expected = {ids[f"j{i:02d}"]: (f"j{i:02d}", value_of(i)) for i in range(JOBS)}
    metrics = farm.sql("SELECT m.job_id, m.value FROM metrics m JOIN jobs j ON j.id = m.job_id "
                       "WHERE j.batch_id = :b AND m.key = 'value'", b=batch)
    assert sorted(metrics) == sorted((jid, v) for jid, (_, v) in expected.items())
    artifacts = farm.sql("SELECT a.job_id, a.uri, a.sha256 FROM artifacts a JOIN jobs j ON j.id = a.job_id "
                         "WHERE j.batch_id = :b AND a.name = 'out.json'", b=batch)
    assert sorted(a.job_id for a in artifacts) == sorted(expected)
    for a in artifacts:
        blob = farm.cp.store.artifacts.get_bytes(a.uri, a.sha256)  # exists and matches its sha256
        name, value = expected[a.job_id]
        assert json.loads(blob) == {"job": name, "value": value}
    assert all(w.poll() is None for w in workers), "a worker died while PostgreSQL was away\n" + farm.procs.logs("w")
