"""Workers killed with SIGKILL every few seconds while a 300-job DAG runs: nothing is lost, nothing runs twice to
success, no child starts before its parents succeeded."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import Farm, Processes, report, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.redis, pytest.mark.postgres]

WORKERS = 3
LEASE = 2.0


def dag(rng: random.Random) -> list[dict[str, Any]]:
    """300 noop jobs, 100 of them roots: fan-ins of two roots, chains, fan-ins of chains and a last layer."""
    jobs: list[dict[str, Any]] = []

    def job(name: str, needs: list[str]) -> None:
        entry: dict[str, Any] = {"name": name, "kind": "noop", "queue": "cpu", "max_attempts": 20,
                                 "params": {"seconds": round(rng.uniform(0.02, 0.2), 3), "value": len(jobs)}}
        if needs:
            entry["needs"] = needs
        jobs.append(entry)

    for i in range(100):
        job(f"r{i:03d}", [])
    for i in range(100):
        job(f"f{i:03d}", [f"r{i:03d}", f"r{(i + 1) % 100:03d}"])
    for i in range(60):
        job(f"c{i:03d}", [f"f{i:03d}"] + ([f"c{i - 30:03d}"] if i >= 30 else []))
    for i in range(30):
        job(f"g{i:03d}", [f"c{2 * i:03d}", f"c{2 * i + 1:03d}", f"f{60 + i:03d}"])
    for i in range(10):
        job(f"z{i:03d}", [f"g{3 * i:03d}", f"g{3 * i + 1:03d}", f"g{3 * i + 2:03d}", f"f{90 + i:03d}"])
    assert len(jobs) == 300
    return jobs


class Killer(threading.Thread):
    """Every 2-4 s: SIGKILL one worker process chosen at random, and start a new one in its slot at once."""

    def __init__(self, farm: Farm, workers: dict[str, subprocess.Popen[bytes]], rng: random.Random) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.farm, self.workers, self.rng = farm, workers, rng
        self.stop = threading.Event()
        self.kills = 0  # processes that were alive when killed
        self.restarts = 0
        self.generation = dict.fromkeys(workers, 0)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(2.0, 4.0)):
                slot = self.rng.choice(sorted(self.workers))
                proc = self.workers[slot]
                if proc.poll() is None:
                    self.kills += 1
                Processes.kill(proc)
                self.generation[slot] += 1
                self.workers[slot] = self.farm.start_worker(f"{slot}-{self.generation[slot]}")
                self.restarts += 1
        except BaseException as e:  # reported by the test
            self.error = e


@pytest.mark.timeout(300)
def test_kill_9_workers_during_a_300_job_dag(make_farm: Callable[..., Farm], system_redis_url: str,
                                             tmp_path: Path) -> None:
    seed = int(os.environ.get("LATENTFARM_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    farm = make_farm(system_redis_url, lease=LEASE)
    farm.start_scheduler()
    workers = {f"w{i}": farm.start_worker(f"w{i}-0") for i in range(WORKERS)}
    started = time.monotonic()
    batch, ids = farm.submit("kills", dag(rng))
    killer = Killer(farm, workers, rng)
    killer.start()

    def settled() -> bool:
        counts = farm.counts(batch)
        if counts.get("failed") or counts.get("cancelled"):
            bad = farm.sql("SELECT id, name, status, error FROM jobs WHERE batch_id = :b "
                           "AND status IN ('failed', 'cancelled')", b=batch)
            raise AssertionError(f"jobs ended badly: {counts}: {bad}")
        return counts.get("succeeded", 0) == len(ids)

    try:
        wait_until(settled, 180, f"all {len(ids)} jobs of batch {batch} succeed under kill -9",
                   interval=0.25, details=lambda: f"{farm.counts(batch)}\n{farm.procs.logs('scheduler')}")
    finally:
        killer.stop.set()
        killer.join(30)
    elapsed = time.monotonic() - started
    assert killer.error is None, f"the killer thread failed: {killer.error!r}"

    succeeded = farm.status_events(batch, "succeeded")
    claims = farm.status_events(batch, "running")
    attempts = dict(farm.sql("SELECT id, attempts FROM jobs WHERE batch_id = :b", b=batch))
    figures = {**farm.standard_figures(batch), "kills": killer.kills, "restarts": killer.restarts,
               "workers": WORKERS, "lease_s": LEASE, "seconds": round(elapsed, 1), "seed": seed}
    report("worker_kills", figures, tmp_path)

    assert len(succeeded) == len(ids) == 300
    assert farm.counts(batch) == {"succeeded": 300}
    assert [j for j, n in succeeded.items() if n != 1] == [], "jobs without exactly one success"
    assert {j: (claims[j], attempts[j]) for j in ids.values() if claims[j] != attempts[j]} == {}, (
        "each claim is one attempt")
    assert farm.children_started_after_parents(batch) == [], "a child ran before its parents succeeded"
    # Every attempt ended in the one success, or was handed on (lease expired) or retried (transient error).
    assert figures["claims"] == len(ids) + figures["requeued_by_reaper"] + figures["transient_retries"], figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    # 33 s of sleeps on 3 workers: the batch lasts 11 s at least, long enough for 2 kills 2-4 s apart.
    assert killer.kills >= 2, f"the batch ended before the chaos began ({killer.kills} kills in {elapsed:.0f} s)"
    assert figures["requeued_by_reaper"] >= 1, "no kill hit a running job: the reaper had nothing to do"
