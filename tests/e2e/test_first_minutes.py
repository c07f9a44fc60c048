"""What a new user meets in the first minutes, each saying what happened: the demo's hints name a command that
runs, `latentfarm scheduler` without a farm writes no stray database, and cancelling jobs that had ended says so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from scheduler.cli.demo import command_name
from tests.e2e.cli import latentfarm_bin, run


def test_the_hints_name_latentfarm_as_it_can_be_run_from_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = Path(latentfarm_bin())
    monkeypatch.chdir(venv_bin.parents[2])  # the repository, where `make demo` runs
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not on PATH after `make demo`
    assert command_name(".venv/bin/latentfarm") == ".venv/bin/latentfarm"
    assert command_name(str(venv_bin)) == ".venv/bin/latentfarm"
    monkeypatch.chdir(tmp_path)
    assert command_name(str(venv_bin)) == str(venv_bin)  # from elsewhere: the absolute path
    monkeypatch.setenv("PATH", f"{venv_bin.parent}{os.pathsep}/usr/bin")
    assert command_name(str(venv_bin)) == "latentfarm"  # on PATH: its name
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_name("-c") == f"{sys.executable} -m scheduler.cli"


def test_scheduler_without_a_farm_says_so_and_writes_nothing(tmp_path: Path) -> None:
    proc = run(["scheduler"], tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no broker configured: set LATENTFARM_BROKER_URL and LATENTFARM_DATABASE_URL (a farm's); the embedded "
        "default needs no scheduler: `latentfarm submit` runs the batch itself"]
    assert list(tmp_path.iterdir()) == []  # no stray latentfarm.db


def test_cancelling_jobs_that_had_ended_says_so(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("batch: s\njobs:\n  - {name: a, kind: noop}\n  - {name: b, kind: noop, params: {fail: true}}\n")
    run(["submit", str(spec)], tmp_path, check=False, timeout=120)
    one = run(["cancel", "1"], tmp_path)
    assert one.stdout.strip() == "nothing to cancel: the jobs had ended already (1 succeeded)"
    both = run(["cancel", "--batch", "1"], tmp_path)
    assert both.stdout.strip() == "nothing to cancel: batch 1's jobs had ended already (1 failed, 1 succeeded)"
