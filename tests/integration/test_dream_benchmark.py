"""The dream benchmark keeps working: its quick mode on the embedded default, checked through its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_dream_benchmark_reports_identical_images(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dream_tiles.py"), "--quick", "--backends",
                           "embedded", "--json", str(out)], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["tiles_per_dream"] == 2 * (1 + 4)
    runs = {r["run"]: r for r in report["farm"]}
    assert runs["single"]["tiles"] == 10 and runs["batch"]["tiles"] == 40
    for r in runs.values():
        assert r["backend"] == "embedded" and r["workers_used"] == 1
        assert r["max_abs_diff_vs_in_process"] < 1e-4
        assert r["wall_s"] > r["algorithm_s"] > 0 and r["in_process_s"] > 0
    assert "overhead" in proc.stdout
