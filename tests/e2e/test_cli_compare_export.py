"""``latentfarm compare`` and ``latentfarm export`` on the embedded default, run as a user runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.cli import run, run_json

pytestmark = pytest.mark.timeout(300)

SPEC = {"batch": "grid", "jobs": [
    {"name": "n", "kind": "noop", "sweep": {"value": [3, 1, 2], "seconds": [0, 0.01]}},
]}


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("farm")
    (cwd / "grid.yaml").write_text(yaml.safe_dump(SPEC))
    run(["submit", "grid.yaml"], cwd)
    return cwd


def test_compare_per_parameter_value(farm: Path) -> None:
    out = run_json(["compare", "1", "--metric", "value", "--by", "seconds"], farm)
    assert [(r["seconds"], r["jobs"], r["best"], r["mean"], r["worst"]) for r in out["rows"]] == [
        (0, 3, 1.0, 2.0, 3.0), (0.01, 3, 1.0, 2.0, 3.0)]
    best = run_json(["compare", "1", "--metric", "value", "--by", "value", "--higher-is-better"], farm)
    assert [(r["value"], r["jobs"], r["best"]) for r in best["rows"]] == [(1, 2, 1.0), (2, 2, 2.0), (3, 2, 3.0)]
    assert all(r["best_name"].endswith(f"value={r['value']:g}]") for r in best["rows"])
    shown = run(["compare", "1", "--metric", "value", "--by", "value"], farm).stdout
    lines = shown.splitlines()
    assert "BEST VALUE" in lines[0].upper() and lines[1].startswith("* 1")  # the best row is marked


def test_jobs_filtered_by_param_and_metric_sorted_as_csv(farm: Path) -> None:
    found = run_json(["jobs", "--batch", "1", "--param", "seconds=0.01", "--where", "value>=2", "--sort", "value",
                      "--desc"], farm)
    assert [(j["name"], j["metrics"]["value"]) for j in found] == [("n[seconds=0.01,value=3]", 3.0),
                                                                   ("n[seconds=0.01,value=2]", 2.0)]
    rows = run(["jobs", "--batch", "1", "--param", "seconds=0", "--sort", "value", "--csv"], farm).stdout
    header, *lines = list(csv.reader(io.StringIO(rows)))
    assert header == ["job", "batch", "name", "kind", "status", "attempts", "worker", "started_at", "finished_at",
                      "seconds", "value"]
    assert [line[2] for line in lines] == ["n[seconds=0,value=1]", "n[seconds=0,value=2]", "n[seconds=0,value=3]"]
    assert [(line[-2], line[-1]) for line in lines] == [("0.0", "1.0"), ("0.0", "2.0"), ("0.0", "3.0")]
    table = run(["jobs", "--batch", "1", "--where", "value<2"], farm).stdout.splitlines()
    assert table[0].split()[-1] == "VALUE" and len(table) == 3


def test_metrics_and_artifacts_as_csv_and_json(farm: Path) -> None:
    header, *rows = list(csv.reader(io.StringIO(run(["metrics", "--batch", "1", "--csv"], farm).stdout)))
    assert header == ["job", "key", "step", "value", "time"]
    own = sorted((int(r[0]), r[1], r[2], r[3]) for r in rows if r[1] == "value")
    assert own[:2] == [(1, "value", "0", "3.0"), (2, "value", "0", "1.0")]
    assert len(own) == 6 and len(rows) == 6 * 4  # each job's value, and the three resources its worker measured
    found = run_json(["artifacts", "--batch", "1", "--name", "out.json"], farm)
    assert len(found) == 6 and all(a["media_type"] == "application/json" for a in found)
    assert all(json.loads(Path(a["path"]).read_text())["value"] in (1.0, 2.0, 3.0) for a in found)
    assert run_json(["artifacts", "1", "--type", "image/png"], farm) == []
    header, *rows = list(csv.reader(io.StringIO(run(["artifacts", "2", "--csv"], farm).stdout)))
    assert header == ["job", "name", "media_type", "bytes", "sha256", "path"] and [r[1] for r in rows] == ["out.json"]


@pytest.mark.parametrize("args,message", [
    (["artifacts"], "error: name one or more jobs (JOB...) or a batch (--batch)"),
    (["artifacts", "--batch", "7"], "error: no batch 7"),
    (["jobs", "--where", "value~2"], "error: --where: expected METRIC OP NUMBER with OP one of < <= > >= = !=, "
                                     "e.g. 'test_loss<0.1', got 'value~2'"),
    (["jobs", "--param", "seconds"], "error: --param: expected NAME=VALUE, e.g. z_dim=16, got 'seconds'"),
    (["compare", "1", "--metric", "value", "--by", "z_dim"],
     "error: no job of batch 1 has a parameter 'z_dim', of its own or from the jobs it needs"),
    (["compare", "1", "--metric", "loss", "--by", "value"],
     "error: no job of batch 1 with a parameter 'value' has the metric 'loss' (metrics there: cpu_seconds, "
     "peak_rss, value, wall_seconds)"),
    (["compare", "9", "--metric", "value", "--by", "value"], "error: no batch 9"),
    (["export", "99", "out"], "error: no job 99"),
    (["cancel"], "error: name one or more jobs (JOB...) or a batch (--batch)"),
    (["cancel", "--batch", "9"], "error: no batch 9"),
    (["cancel", "1", "99"], "error: no job 99"),
])
def test_bad_queries_are_one_line_and_exit_2(farm: Path, args: list[str], message: str) -> None:
    proc = run(args, farm, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == message


def test_export_copies_the_artifacts_checked_with_job_json(farm: Path) -> None:
    jobs = run_json(["jobs", "--batch", "1"], farm)
    job = next(j for j in jobs if j["name"] == "n[seconds=0.01,value=2]")
    out = farm / "export-ok"
    assert "1 artifacts and job.json exported" in run(["export", str(job["id"]), str(out)], farm).stdout
    assert json.loads((out / "out.json").read_text()) == {"job": "n[seconds=0.01,value=2]", "value": 2.0}
    record = json.loads((out / "job.json").read_text())
    assert record["job"]["id"] == job["id"]
    metrics = {m["key"]: m["value"] for m in record["metrics"]}  # its own, and the resources its worker measured
    assert metrics["value"] == 2.0 and set(metrics) == {"value", "wall_seconds", "cpu_seconds", "peak_rss"}
    assert sorted(p.name for p in out.iterdir()) == ["job.json", "out.json"]  # no staging left behind
    again = run(["export", str(job["id"]), str(out)], farm, check=False)
    assert again.returncode == 2 and "already has out.json, job.json" in again.stderr


def test_export_of_a_corrupt_blob_writes_nothing(farm: Path) -> None:
    jobs = run_json(["jobs", "--batch", "1"], farm)
    job = next(j for j in jobs if j["name"] == "n[seconds=0,value=3]")
    shown = run_json(["show", str(job["id"])], farm)
    blob = farm / "latentfarm-artifacts" / shown["artifacts"][0]["uri"]
    good = blob.read_bytes()
    try:
        blob.write_bytes(b"tampered")
        proc = run(["export", str(job["id"]), str(farm / "export-bad")], farm, check=False)
    finally:
        blob.write_bytes(good)
    assert proc.returncode == 1 and "does not match its sha256" in proc.stderr
    assert not (farm / "export-bad").exists()
