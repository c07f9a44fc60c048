"""A dry run: ``latentfarm validate SPEC`` and ``submit --dry-run`` show the expanded jobs with their needs, queues
and cache hits and write nothing; a bad spec has every error told, each on its own line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli import EXAMPLES, run

BAD = """\
batch: bad
jobs:
  - {name: a, kind: train, params: {epochs: 0}}
  - {name: b, kind: nope}
  - {name: c, kind: noop, params: {seconds: -1}}
  - {name: d, kind: encode, needs: a}
"""


def test_validate_shows_the_jobs_and_writes_nothing_then_counts_the_cache(tmp_path: Path) -> None:
    shown = json.loads(run(["validate", str(EXAMPLES / "quick.yaml"), "--json"], tmp_path).stdout)
    assert list(tmp_path.iterdir()) == []  # not even a database file
    jobs = {j["name"]: j for j in shown["jobs"]}
    assert shown["batch"] == "quick" and len(jobs) == 6 and shown["cached"] == 0 and shown["to_run"] == 6
    assert jobs["gather"]["needs"] == ["step[value=1]", "step[value=2]", "step[value=3]"]
    assert (jobs["train-ae"]["kind"], jobs["train-ae"]["queue"]) == ("train", "gpu")
    small = tmp_path / "small.yaml"
    small.write_text("batch: small\njobs:\n  - {name: a, kind: noop}\n"
                     "  - {name: b, kind: noop, needs: a, sweep: {value: [1, 2]}}\n")
    run(["submit", str(small)], tmp_path)
    small.write_text(small.read_text() + "  - {name: c, kind: noop, needs: b, params: {value: 3}}\n")
    again = run(["submit", "--dry-run", str(small)], tmp_path).stdout
    assert again.strip().endswith("batch 'small': 4 jobs, 3 of them cached, 1 to run. Nothing was written.")
    assert "from job 2" in again
    fresh = json.loads(run(["validate", "--no-cache", "--json", str(small)], tmp_path).stdout)
    assert fresh["cached"] == 0
    batches = json.loads(run(["status", "--json"], tmp_path).stdout)
    assert len(batches) == 1  # the dry runs wrote no batch


def test_every_error_of_a_spec_is_told_on_its_own_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD)
    for args in (["validate", str(spec)], ["submit", str(spec)]):
        proc = run(args, tmp_path, check=False)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"error: {spec}: job 'a': field 'params.epochs': must be >= 1, got 0",
            f"error: {spec}: job 'b': field 'kind': unknown kind 'nope'; expected one of: cluster, dream, encode, "
            "noop, sample, sleep, train",
            f"error: {spec}: job 'c': field 'params.seconds': must be >= 0, got -1.0"]
    many = tmp_path / "many.yaml"
    many.write_text("batch: m\njobs:\n" + "".join(f"  - {{name: j{i}, kind: nope}}\n" for i in range(30)))
    lines = run(["validate", str(many)], tmp_path, check=False).stderr.splitlines()
    assert len(lines) == 21 and lines[-1] == "error: ... more errors left out (fix these first)"
