"""The resources jobs used, through the installed ``latentfarm`` on the embedded default: sorted on, listed in
readable units, shown apart from a job's own metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.e2e.cli import run, run_json

pytestmark = pytest.mark.timeout(300)
MIB = 1 << 20
SPEC = {"batch": "memory", "jobs": [
    {"name": "hold", "kind": "noop", "sweep": {"allocate_mb": [0, 160, 80]}, "params": {"seconds": 0.1}},
]}


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("farm")
    (cwd / "memory.yaml").write_text(yaml.safe_dump(SPEC))
    run(["submit", "memory.yaml"], cwd)
    return cwd


def test_jobs_sorted_by_peak_rss(farm: Path) -> None:
    found = run_json(["jobs", "--batch", "1", "--sort", "peak_rss", "--desc"], farm)
    assert [j["name"] for j in found] == ["hold[allocate_mb=160]", "hold[allocate_mb=80]", "hold[allocate_mb=0]"]
    peaks = [j["metrics"]["peak_rss"] for j in found]
    assert peaks[0] - peaks[2] >= 150 * MIB and peaks[1] - peaks[2] >= 70 * MIB, peaks
    assert set(found[0]["metrics"]) == {"peak_rss"}  # the metrics sorted on come along, no others

    table = run(["jobs", "--batch", "1", "--sort", "peak_rss", "--where", "wall_seconds>=0.1"], farm).stdout
    lines = table.splitlines()
    assert "PEAK_RSS" in lines[0] and "WALL_SECONDS" in lines[0]
    assert [re.findall(r"allocate_mb=(\d+)", line) for line in lines[1:]] == [["0"], ["80"], ["160"]]
    for line in lines[1:]:  # bytes and seconds in readable units: "0.125 s   88.9 MiB"
        assert re.search(r"\s\d+\.\d+ s\s+\d+\.\d (MiB|GiB)$", line), line


def test_show_lists_the_resources_apart_from_the_metrics(farm: Path) -> None:
    job = next(j for j in run_json(["jobs", "--batch", "1"], farm) if j["name"] == "hold[allocate_mb=160]")
    out = run(["show", str(job["id"])], farm).stdout
    metrics = out[out.index("metrics:"):out.index("resources:")]
    assert "VALUE" in metrics and "PEAK_RSS" not in metrics and "CPU_SECONDS" not in metrics
    resources = next(line for line in out.splitlines() if line.startswith("resources:"))
    assert re.fullmatch(r"resources: wall [\d.]+ m?s, CPU [\d.]+ m?s, peak RSS [\d.]+ (MiB|GiB)", resources)
    shown = run_json(["show", str(job["id"])], farm)
    final = {m["key"]: m["value"] for m in shown["metrics"] if m["step"] == 0}
    assert final["peak_rss"] >= 160 * MIB and final["wall_seconds"] >= 0.1 and final["value"] == 1.0
