"""The farm-vs-Celery benchmark keeps working: its quick mode on the real Redis and PostgreSQL, checked through its
JSON report (sane figures only: timing goals are the benchmark's business, not a test's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import services

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(300)]


def test_quick_farm_vs_celery_benchmark_reports_sane_figures(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    # redis_url and pg_url: skip locally, fail in CI, when a service is unreachable. The benchmark makes its own
    # schema; it uses the tests' Redis database (flushed by the tests anyway), not its default one.
    out = tmp_path / "report.json"
    env = {**os.environ, "LATENTFARM_BENCH_REDIS_DB": str(services.REDIS_DB),
           "LATENTFARM_TEST_REDIS_HOST": services.REDIS_HOST, "LATENTFARM_TEST_REDIS_PORT": str(services.REDIS_PORT),
           "LATENTFARM_TEST_PG_URL": services.PG_URL}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "farm_vs_celery.py"), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    n = report["config"]["jobs"]

    t = report["throughput"]
    assert t["farm_all_succeeded"] is True
    farm = [r for r in t["rounds"] if r["who"] == "farm"]
    bare = [r for r in t["rounds"] if r["who"] == "celery"]
    assert farm and bare
    for r in farm:
        assert r["statuses"] == {"succeeded": n}
    for r in farm + bare:
        assert r["jobs"] == n
        assert r["processing_jobs_per_s"] > 0 and r["end_to_end_jobs_per_s"] > 0
        assert 0 < r["processing_s"] <= r["end_to_end_s"] and 0 <= r["submit_s"] <= r["end_to_end_s"]
    for measure in ("processing", "end_to_end"):
        s = t["summary"][measure]
        assert s["farm_jobs_per_s"] > 0 and s["celery_jobs_per_s"] > 0 and s["ratio"] > 0

    m = report["config"]["submit_jobs"]
    assert set(report["submit"]) == {"postgresql", "sqlite"}
    for runs in report["submit"].values():
        by = {r["variant"]: r for r in runs}
        assert set(by) == {"flat", "chains", "cached"}
        assert by["flat"]["queued"] == m == by["flat"]["messages_in_redis"] and by["flat"]["cached"] == 0
        assert by["chains"]["queued"] == m // 2 == by["chains"]["edges"] and by["chains"]["jobs"] == m
        assert by["cached"]["cached"] == m and by["cached"]["queued"] == 0 == by["cached"]["messages_in_redis"]
        assert all(r["submit_s"] > 0 and r["load_s"] > 0 and r["plan_s"] > 0 for r in runs)
    assert "ratio" in proc.stdout and "ControlPlane.submit" in proc.stdout
