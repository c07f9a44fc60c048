"""No request starves the others: while one client sends the slowest valid requests there are, a real `latentfarm
serve` process answers `/api/v1/health` within a second throughout.

The slow requests: a valid spec near the 1 MiB body limit (about 14,000 jobs, close to 100,000 values: a few
seconds to parse in the server's parsing process, then validated and written in a thread) and the job filter with
a metric ``where`` and ``sort`` over a 10,000-job batch. The batch is written straight into the database through
the storage functions, with a final metric per job, before the server starts. The worst latency is printed
(``pytest -s`` or ``-rA`` shows it).
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from scheduler.web.spec_parser import MAX_BODY
from storage import batches
from storage.models import JobRow, MetricRow
from storage.records import NewJob
from storage.store import Store
from tests.e2e.cli import clean_env
from tests.e2e.test_serve import serving

pytestmark = pytest.mark.timeout(600)

SWEEP = 10_000
ENTRIES = 13_900  # 7 values each: just under the 100,000 values a spec may hold


def big_spec() -> str:
    """A valid spec of just under MAX_BODY bytes: a gate job running for minutes and ENTRIES jobs waiting for it
    (so none of them runs while the test does)."""
    head = "batch: near-the-limit\njobs:\n  - {name: gate, kind: noop, params: {seconds: 300}}\n"
    pad = (MAX_BODY - len(head) - 200) // ENTRIES - len("  - {name: j00000-, kind: noop, needs: gate}\n")
    text = head + "".join(f"  - {{name: j{i:05d}-{'x' * pad}, kind: noop, needs: gate}}\n" for i in range(ENTRIES))
    return text + "#" * (MAX_BODY - len(text) - 1) + "\n"  # to the last byte


def populate(db: Path, artifacts: Path) -> int:
    """A finished 10,000-job sweep with a final metric ``value`` per job, written with the storage functions."""
    store = Store.open(f"sqlite:///{db}", artifacts, upgrade=True)
    try:
        jobs = [NewJob(f"sweep[value={i}]", "noop", {"value": i}, f"fp-latency-{i}", "cpu") for i in range(SWEEP)]
        with store.session() as s:
            batch_id, ids = batches.create_batch(s, "sweep", {"batch": "sweep"}, jobs, [])
            s.execute(update(JobRow).where(JobRow.batch_id == batch_id).values(status="succeeded", progress=1.0))
            s.execute(insert(MetricRow), [{"job_id": job_id, "key": "value", "step": 0, "value": float(i)}
                                          for i, job_id in enumerate(ids.values())])
        return batch_id
    finally:
        store.engine.dispose()


def test_health_answers_within_a_second_while_the_slowest_requests_run(tmp_path: Path) -> None:
    spec = big_spec()
    assert len(spec.encode()) == MAX_BODY
    batch = populate(tmp_path / "lf.db", tmp_path / "artifacts")
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_ARTIFACTS=str(tmp_path / "artifacts"))
    with serving(tmp_path, env) as server:
        base = f"http://127.0.0.1:{server.port}/api/v1"
        latencies: list[float] = []
        slow: dict[str, list[float]] = {"submit": [], "filter": []}
        errors: list[str] = []
        done = threading.Event()

        def timed(kind: str, url: str, body: bytes | None = None) -> Any:
            req = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                         headers={"Content-Type": "application/yaml"} if body else {})
            t = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=300) as r:  # noqa: S310 (a local test server)
                    r.read()
                    status = r.status
            except Exception as e:  # noqa: BLE001 - reported below, with what was asked
                errors.append(f"{kind}: {e}")
                return
            slow[kind].append(time.monotonic() - t)
            if status not in (200, 201):
                errors.append(f"{kind}: {status}")

        def probe() -> None:
            while not done.is_set():
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=30) as r:  # noqa: S310
                        r.read()
                except Exception as e:  # noqa: BLE001
                    errors.append(f"health: {e}")
                latencies.append(time.monotonic() - t)
                time.sleep(0.05)

        def filters() -> None:
            url = f"{base}/jobs?batch={batch}&where=value%3E2000&where=value%3C9990&sort=value&desc=true&limit=1000"
            while not done.is_set():
                timed("filter", url)

        threads = [threading.Thread(target=probe), threading.Thread(target=filters)]
        for t in threads:
            t.start()
        time.sleep(1)
        started = time.monotonic()
        for _ in range(2):
            timed("submit", f"{base}/batches", spec.encode())
        busy = time.monotonic() - started
        done.set()
        for t in threads:
            t.join(60)
        # the gate runs for minutes: cancel the batches, so that the server stops at once
        for b in (batch + 1, batch + 2):
            urllib.request.urlopen(urllib.request.Request(f"{base}/batches/{b}/cancel", method="POST"), timeout=120)

    assert not errors, errors[:5]
    worst = max(latencies)
    print(f"\n/health over {len(latencies)} probes during {busy:.1f} s of slow requests: worst {worst * 1000:.0f} ms, "
          f"median {statistics.median(latencies) * 1000:.0f} ms; submits of {len(spec.encode())} bytes "
          f"({ENTRIES + 1} jobs): {', '.join(f'{s:.1f} s' for s in slow['submit'])}; {len(slow['filter'])} "
          f"filters over {SWEEP} jobs, slowest {max(slow['filter']) * 1000:.0f} ms")
    assert len(slow["submit"]) == 2 and min(slow["submit"]) > 1  # the requests were slow...
    assert worst < 1.0  # ...and the server answered the others within a second throughout
