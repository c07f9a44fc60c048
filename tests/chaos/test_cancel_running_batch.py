"""`latentfarm cancel --batch N` while jobs run: queued and pending jobs are cancelled at once, running ones stop at
their next check and end cancelled, finished ones stay succeeded, and nothing runs again afterwards (the
messages still on the broker are dropped by the workers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.broker import queue_size
from storage.models import utcnow
from tests.chaos.harness import Farm, report, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres]

JOBS = 40
SECONDS = 3.0


def batch_jobs() -> list[dict[str, Any]]:
    """10 roots, 20 children of one root each, 10 fan-ins of two children; 3 s each."""
    jobs: list[dict[str, Any]] = []

    def job(name: str, needs: list[str]) -> None:
        entry: dict[str, Any] = {"name": name, "kind": "noop", "queue": "cpu",
                                 "params": {"seconds": SECONDS, "value": len(jobs)}}
        if needs:
            entry["needs"] = needs
        jobs.append(entry)

    for i in range(10):
        job(f"a{i}", [])
    for i in range(20):
        job(f"b{i:02d}", [f"a{i // 2}"])
    for i in range(10):
        job(f"c{i}", [f"b{2 * i:02d}", f"b{2 * i + 1:02d}"])
    assert len(jobs) == JOBS
    return jobs


@pytest.mark.timeout(180)
def test_cancel_a_running_batch_through_the_cli(make_farm: Callable[..., Farm], system_redis_url: str,
                                               tmp_path: Path) -> None:
    farm = make_farm(system_redis_url, lease=3.0)
    farm.start_scheduler()
    for i in range(2):
        farm.start_worker(f"w{i}")
    batch, ids = farm.submit("cancel", batch_jobs())
    started = time.monotonic()
    cancel = farm.armed_cli("cancel", "--batch", str(batch))  # `latentfarm cancel --batch N`, started ahead

    def fresh_running() -> list[int] | None:
        """Two or more jobs running, each started less than 1.5 s ago (so they are still running when the cancel
        lands), after at least two jobs have succeeded (so the cancel has finished jobs to leave alone)."""
        if farm.count(batch, "succeeded") < 2:
            return None
        rows = farm.sql("SELECT id, started_at FROM jobs WHERE batch_id = :b AND status = 'running'", b=batch)
        now = utcnow()  # the clock the workers stamp started_at with
        if len(rows) >= 2 and all(now - r.started_at < timedelta(seconds=SECONDS / 2) for r in rows):
            return [r.id for r in rows]
        return None

    wait_until(fresh_running, 90, "two jobs running, just started, after two successes", interval=0.05,
               details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs()}")
    before = farm.counts(batch)
    out = cancel.fire()
    cancelled_at = time.monotonic()
    succeeded_at_cancel = {r[0] for r in farm.sql(
        "SELECT id FROM jobs WHERE batch_id = :b AND status = 'succeeded'", b=batch)}
    # The jobs the cancel found running (flagged), and how much of its 3 s each had left then.
    flags = farm.sql("SELECT e.job_id, min(e.time) AS flagged_at, j.started_at FROM events e JOIN jobs j "
                     "ON j.id = e.job_id WHERE j.batch_id = :b AND e.kind = 'message' "
                     "AND e.message LIKE 'cancel requested%' GROUP BY e.job_id, j.started_at", b=batch)
    left = {r.job_id: SECONDS - (r.flagged_at - r.started_at).total_seconds() for r in flags}
    assert out.startswith("cancelled ") and f"; {len(left)} running jobs will stop" in out, out
    # A job flagged with 1 s or more to go sees the flag (renewed every 0.5 s) and stops; one flagged in its last
    # moments may finish first (the CLI takes a while to start on a busy machine): either end is right for it.
    must_stop = [j for j, s in left.items() if s >= 1.0]
    assert must_stop, f"no running job was flagged in time to stop: {out} {left}"

    def settled() -> dict[str, int] | None:
        counts = farm.counts(batch)
        return counts if set(counts) <= {"cancelled", "succeeded"} else None

    final = wait_until(settled, 10, "every job cancelled or succeeded, none pending, queued or running",
                       interval=0.1, details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs()}")
    stopped_after = time.monotonic() - cancelled_at
    claims = sum(farm.status_events(batch, "running").values())
    statuses = dict(farm.sql("SELECT id, status FROM jobs WHERE batch_id = :b", b=batch))

    # Each running job ended cancelled, by its own worker at its next check (or by the reaper had it died).
    ends = {jid: farm.sql("SELECT status, worker, message FROM events WHERE job_id = :j AND kind = 'status' "
                          "ORDER BY id DESC LIMIT 1", j=jid)[0] for jid in left}
    assert {jid: statuses[jid] for jid in must_stop} == dict.fromkeys(must_stop, "cancelled")
    assert all(ends[j].status == "cancelled" and ends[j].worker and "cancel" in (ends[j].message or "")
               for j in must_stop), ends
    assert {statuses[j] for j in left} <= {"cancelled", "succeeded"}
    succeeded = {jid for jid, s in statuses.items() if s == "succeeded"}
    assert succeeded - set(left) == succeeded_at_cancel - set(left), (
        "a job that was not running succeeded after the cancel, or a finished job was cancelled")

    # Afterwards nothing runs again: the workers take the cancelled jobs' messages still on the broker, and drop them.
    wait_until(lambda: queue_size(farm.cp.app, "cpu") == 0, 20, "the workers drain the stale messages",
               details=lambda: farm.procs.logs("w"))
    quiet_from = time.monotonic()
    wait_until(lambda: time.monotonic() - quiet_from >= 2.0, 3, "a quiet period passes")
    claims_after = sum(farm.status_events(batch, "running").values())
    statuses_after = dict(farm.sql("SELECT id, status FROM jobs WHERE batch_id = :b", b=batch))

    figures = {**farm.standard_figures(batch), "counts_at_cancel": before, "running_at_cancel": len(left),
               "seconds_left_when_flagged": sorted(round(s, 1) for s in left.values()),
               "cancel_output": out.strip(), "all_stopped_after_s": round(stopped_after, 1),
               "ended_by": sorted({e.worker for e in ends.values()}), "seconds": round(time.monotonic() - started, 1),
               # here a job is lost if it ended neither cancelled nor succeeded (none may be left unfinished)
               "lost": sum(1 for s in statuses_after.values() if s not in ("cancelled", "succeeded"))}
    report("cancel_running_batch", figures, tmp_path)
    assert claims_after == claims, "a job ran again after the cancel"
    assert statuses_after == statuses and farm.counts(batch) == final
    assert figures["lost"] == 0 and figures["duplicated"] == 0
