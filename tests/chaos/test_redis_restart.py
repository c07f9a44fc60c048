"""Redis killed (SIGKILL, no persistence: every queued message is lost) a third of the way through a batch and
started again 3 s later: the workers reconnect, the reaper re-sends the lost messages, and the batch finishes with
every job run to success exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage.models import utcnow
from tests.chaos.harness import Farm, RedisServer, report, summarize_timeline, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

JOBS = 120
DOWN_FOR = 3.0


def batch_jobs() -> list[dict[str, Any]]:
    """40 roots, 40 chained on them, 40 fan-ins of two of those."""
    jobs: list[dict[str, Any]] = []
    for layer, prefix in enumerate("abc"):
        for i in range(JOBS // 3):
            needs = {0: [], 1: [f"a{i:02d}"], 2: [f"b{i:02d}", f"b{(i + 1) % (JOBS // 3):02d}"]}[layer]
            entry: dict[str, Any] = {"name": f"{prefix}{i:02d}", "kind": "noop", "queue": "cpu", "max_attempts": 10,
                                     "params": {"seconds": 0.05, "value": len(jobs)}}
            if needs:
                entry["needs"] = needs
            jobs.append(entry)
    return jobs


@pytest.mark.timeout(240)
def test_redis_restarted_without_persistence_mid_batch(make_farm: Callable[..., Farm], own_redis: RedisServer,
                                                       tmp_path: Path) -> None:
    farm = make_farm(own_redis.url, lease=3.0)
    farm.start_scheduler()
    workers = [farm.start_worker(f"w{i}") for i in range(2)]
    batch, ids = farm.submit("redis-restart", batch_jobs())
    assert len(ids) == JOBS
    started = time.monotonic()

    wait_until(lambda: farm.count(batch, "succeeded") >= 0.3 * JOBS, 90, "30% of the batch succeeds",
               interval=0.05, details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs()}")
    own_redis.kill()
    killed_at = time.monotonic()
    at_kill = farm.count(batch, "succeeded")
    wait_until(lambda: time.monotonic() - killed_at >= DOWN_FOR, DOWN_FOR + 1, "Redis stays down")  # the outage
    at_restart = farm.count(batch, "succeeded")
    own_redis.start()
    back_at = time.monotonic()
    back_db = utcnow()  # the clock the workers stamp events with
    assert all(w.poll() is None for w in workers), "a worker died when Redis went away\n" + farm.procs.logs("w")

    timeline: list[tuple[float, int]] = [(0.0, at_restart)]

    def progressed() -> bool:
        n = farm.count(batch, "succeeded")
        if n != timeline[-1][1]:
            timeline.append((time.monotonic() - back_at, n))
        return n == JOBS

    wait_until(progressed, 120, "the batch finishes after Redis is back", interval=0.1,
               details=lambda: f"{farm.counts(batch)} timeline {summarize_timeline(timeline)}\n{farm.procs.logs()}")
    finished = time.monotonic()
    first = farm.first_success_after(batch, back_db)

    succeeded = farm.status_events(batch, "succeeded")
    figures = {**farm.standard_figures(batch), "succeeded_at_kill": at_kill, "succeeded_at_restart": at_restart,
               "redis_down_s": round(back_at - killed_at, 1),
               "first_success_after_restart_s": round((first - back_db).total_seconds(), 1) if first else None,
               "finish_after_restart_s": round(finished - back_at, 1), "seconds": round(finished - started, 1),
               "timeline": summarize_timeline(timeline[:40])}
    report("redis_restart", figures, tmp_path)

    assert farm.counts(batch) == {"succeeded": JOBS}
    assert [j for j, n in succeeded.items() if n != 1] == [], "jobs without exactly one success"
    assert at_restart < JOBS * 0.9, "the outage came too late to matter"
    assert len(timeline) >= 3, f"no steady progress after the restart: {summarize_timeline(timeline)}"
    assert figures["messages_resent"] >= 1, "the lost messages were never re-sent, yet the batch finished?"
    assert farm.children_started_after_parents(batch) == []
    # Every attempt ended in the one success, or was handed on (lease expired) or retried (transient error).
    assert figures["claims"] == len(ids) + figures["requeued_by_reaper"] + figures["transient_retries"], figures
    assert all(w.poll() is None for w in workers), "the workers reconnect on their own\n" + farm.procs.logs("w")
