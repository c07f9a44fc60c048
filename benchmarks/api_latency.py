"""How long the API and the dashboard take to answer over a 10,000-job batch, on SQLite and PostgreSQL.

A sweep of N noop jobs is submitted (they stay queued: no worker runs) and each job is given, directly in the
database, what a training would have recorded: a final metric ``value``, a ``loss`` per epoch (10 epochs) and an
image ``grid.png`` (one blob, N rows), so the filters, the curves, the scatter, the parallel coordinates and the
gallery have something to read. Each request is made in process through the ASGI app (no network), ``--repeat``
times; the median and the slowest (the first, with nothing cached) are printed, in ms, with the page's size.
Last, the whole batch is cancelled, once.

    python benchmarks/api_latency.py [--jobs 10000] [--repeat 5] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REQUESTS = [
    ("/api/v1/batches", "batches, first page"),
    ("/api/v1/batches/1", "one batch (counts, progress)"),
    ("/api/v1/jobs?batch=1&limit=50", "jobs, first page (SQL)"),
    ("/api/v1/jobs?batch=1&limit=50&offset={deep}", "jobs, a page at offset 0.9 N (SQL)"),
    ("/api/v1/jobs?batch=1&param=value={mid}", "jobs by param (all read)"),
    ("/api/v1/jobs?batch=1&where=value>{mid}&sort=value&desc=true&limit=50", "jobs by final metric, sorted"),
    ("/api/v1/jobs/{mid}/metrics", "one job's metrics"),
    ("/api/v1/batches/1/compare?metric=value&by=value", "compare over N values"),
    ("/", "dashboard: batches"),
    ("/batches/1", "dashboard: batch page (200 jobs)"),
    ("/jobs/{mid}", "dashboard: job page"),
    ("/batches/1?page=45", "table: page 45 of 50 (SQL)"),
    ("/batches/1?sort=m:value&desc=1", "table: sorted by a final metric (SQL)"),
    ("/batches/1?where=value>{mid}&sort=m:loss", "table: a metric filter, sorted (SQL)"),
    ("/batches/1?param=value={mid}", "table: a param filter (lineage, light)"),
    ("/batches/1?sort=p:value&desc=1", "table: sorted by a param (light)"),
    ("/batches/1/curves", "curves: the 50 best of N"),
    ("/batches/1/curves?page=150", "curves: page 150"),
    ("/batches/1/scatter", "scatter: N points"),
    ("/batches/1/parallel", "parallel coordinates: N lines"),
    ("/batches/1/gallery", "gallery: the first 48"),
    ("/batches/1/gallery?sort=value&desc=1&page=150", "gallery: page 150 by a metric"),
    ("/batches/1/compare", "compare form (choices)"),
]
EPOCHS = 10


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{d}/bench.db"
    else:
        from benchmarks.services import pg_schema

        with pg_schema() as url:
            yield url


def _png() -> bytes:
    """A 64x64 PNG: the image every job of the sweep shows in the gallery."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(out, "PNG")
    return out.getvalue()


def run(backend: str, jobs: int, repeat: int) -> list[tuple[str, float, float, int]]:
    from fastapi.testclient import TestClient
    from sqlalchemy import insert

    from scheduler.control import ControlPlane
    from scheduler.settings import Settings
    from scheduler.spec import parse_spec
    from scheduler.web.app import create_app
    from storage.models import ArtifactRow, MetricRow

    with database(backend) as url, tempfile.TemporaryDirectory() as artifacts:
        cp = ControlPlane.open(Settings.from_env({"LATENTFARM_DATABASE_URL": url, "LATENTFARM_ARTIFACTS": artifacts}),
                               upgrade=True)
        spec = {"batch": "bench", "jobs": [{"name": "a", "kind": "noop", "sweep": {"value": list(range(jobs))}}]}
        result = cp.submit(parse_spec(spec, "bench", Path.cwd(), Path.cwd()))
        image = cp.store.artifacts.put_bytes(_png())
        with cp.store.session() as s:
            ids = list(result.job_ids.values())
            s.execute(insert(MetricRow), [{"job_id": i, "key": "value", "step": 0, "value": float(n)}
                                          for n, i in enumerate(ids)])
            s.execute(insert(MetricRow), [{"job_id": i, "key": "loss", "step": e, "value": 1 / e + n / jobs}
                                          for n, i in enumerate(ids) for e in range(1, EPOCHS + 1)])
            s.execute(insert(ArtifactRow), [{"job_id": i, "name": "grid.png", "uri": image.uri, "sha256": image.sha256,
                                             "bytes": image.bytes, "media_type": "image/png", "meta": {}} for i in ids])
        client = TestClient(create_app(cp), base_url="http://127.0.0.1")  # a host name the server answers
        rows = []
        for path, what in REQUESTS:
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = client.get(path.format(mid=jobs // 2, deep=jobs * 9 // 10))
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])
            rows.append((what, statistics.median(times), max(times), len(r.content)))
        # last, once (it changes the batch): cancel every job of the batch, with its events
        t = time.perf_counter()
        r = client.post("/api/v1/batches/1/cancel")
        took = (time.perf_counter() - t) * 1000
        assert r.status_code == 200 and len(r.json()["cancelled"]) == jobs, (r.status_code, r.text[:200])
        rows.append(("cancel the batch (once)", took, took, len(r.content)))
        cp.store.engine.dispose()
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
    for backend in args.backends.split(","):
        rows = run(backend, args.jobs, args.repeat)
        print(f"\n{backend}, {args.jobs} jobs: the answer's size; median / slowest of {args.repeat}, ms")
        for what, median, worst, size in rows:
            print(f"  {what:<40} {size / 1024:8.1f} KiB {median:8.1f} {worst:8.1f}")


if __name__ == "__main__":
    main()
