"""The API latency benchmark keeps working: a small run on SQLite answers every request it times, then cancels
the batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_api_latency_benchmark_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "api_latency.py"), "--jobs", "60", "--repeat",
                           "1", "--backends", "sqlite"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    from benchmarks.api_latency import REQUESTS

    assert len(lines) == len(REQUESTS) + 1 and "cancel the batch" in lines[-1]  # the cancel comes last
    for line in lines:
        median, worst = map(float, line.split()[-2:])
        assert 0 < median <= worst, line
