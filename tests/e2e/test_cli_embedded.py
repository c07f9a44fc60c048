"""End to end through the CLI on the embedded default: SQLite, memory:// and an in-process Celery worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.e2e.cli import EXAMPLES, REPO, clean_env, run, run_json

pytestmark = pytest.mark.timeout(600)


def test_submit_example_with_wait_runs_everything(tmp_path: Path) -> None:
    proc = run(["submit", str(EXAMPLES / "quick.yaml"), "--wait"], tmp_path)
    assert "batch 1 'quick': succeeded (6 succeeded)" in proc.stdout
    assert "6/6" in proc.stderr  # live progress was shown
    assert (tmp_path / "latentfarm.db").is_file() and (tmp_path / "latentfarm-artifacts").is_dir()
    status = run_json(["status", "1"], tmp_path)
    assert status["status"] == "succeeded" and status["counts"] == {"succeeded": 6}
    train = next(j for j in status["jobs"] if j["name"] == "train-ae")
    shown = run_json(["show", str(train["id"])], tmp_path)
    # its checkpoint was dropped with its success
    assert {a["name"] for a in shown["artifacts"]} == {"model.keras", "reconstructions.png"}
    assert {(m["key"], m["step"]) for m in shown["metrics"] if m["step"]} >= {("loss", 1), ("val_loss", 2)}
    assert [e["status"] for e in shown["events"] if e["kind"] == "status"] == [
        "pending", "queued", "running", "succeeded"]
    losses = run_json(["metrics", "--batch", "1", "--key", "loss"], tmp_path)
    assert [m["step"] for m in losses] == [1, 2]
    table = run(["jobs", "--kind", "noop"], tmp_path).stdout.splitlines()
    assert table[0].split()[:4] == ["JOB", "BATCH", "NAME", "KIND"] and len(table) == 1 + 5
    # the same batch again comes from the cache, without running anything
    again = run(["submit", str(EXAMPLES / "quick.yaml"), "--json"], tmp_path)
    assert '"status": "succeeded"' in again.stdout and '"queued": []' in again.stdout


def test_failed_job_exits_non_zero_and_retry_reruns_it(tmp_path: Path) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text("batch: f\njobs:\n  - {name: bad, kind: noop, params: {fail: true}}\n"
                    "  - {name: after, kind: noop, needs: bad}\n")
    proc = run(["submit", str(spec)], tmp_path, check=False)
    assert proc.returncode == 1
    assert "job 1 bad failed: RuntimeError: job 'bad' was asked to fail" in proc.stdout
    shown = run(["show", "1"], tmp_path).stdout
    assert "Traceback (most recent call last)" in shown and "error: RuntimeError" in shown
    retried = run(["retry", "1"], tmp_path, check=False)
    assert retried.returncode == 0 and "job 1 queued" in retried.stdout
    job = run_json(["show", "1"], tmp_path)["job"]
    assert job["status"] == "failed" and job["attempts"] == 2
    assert run(["retry", "2"], tmp_path, check=False).returncode == 0  # cancelled child: waits for its parent
    bad = run(["retry", "999"], tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: no job 999"


_DREAM = ("batch: x\njobs:\n  - {{name: c, kind: train, params: {{model: cnn}}}}\n"
          "  - {{name: d, kind: dream, needs: c, params: {{{params}}}}}\n")
_PHOTO = SHARED_DATA / "dream_input.jpg"
BAD_SPECS = {
    "malformed": ("batch: x\njobs: [\n", "malformed YAML at line"),
    "unknown-field": ("batch: x\njobs:\n  - {name: a, kind: noop, colour: red}\n", "field 'colour': unknown field"),
    "negative-epochs": ("batch: x\njobs:\n  - {name: a, kind: train, params: {epochs: -1}}\n",
                        "job 'a': field 'params.epochs': must be >= 1, got -1"),
    "unknown-dataset": ("batch: x\njobs:\n  - {name: a, kind: train, params: {dataset: cifar}}\n",
                        "field 'params.dataset': unknown dataset 'cifar'"),
    "missing-file": ("batch: x\njobs:\n  - {name: a, kind: train, params: {dataset: mnist, data_path: nope.npz}}\n",
                     "field 'params.data_path': mnist data file not found"),
    "unknown-kind": ("batch: x\njobs:\n  - {name: a, kind: paint}\n", "field 'kind': unknown kind 'paint'"),
    "cycle": ("batch: x\njobs:\n  - {name: a, kind: noop, needs: b}\n  - {name: b, kind: noop, needs: a}\n",
              "dependency cycle"),
    "missing-dep": ("batch: x\njobs:\n  - {name: a, kind: noop, needs: z}\n", "needs unknown job 'z'"),
    "dream-no-image": (_DREAM.format(params="image: nope.jpg"), "job 'd': field 'params.image': image not found"),
    "dream-not-an-image": (_DREAM.format(params="image: dream-not-an-image.yaml"),  # the spec file itself
                           "field 'params.image': not an image Pillow can read"),
    "dream-size": (_DREAM.format(params="image: photo.jpg, levels: 2, size: 300"),
                   "field 'params.size': must be a multiple of 112"),
    "dream-map": (_DREAM.format(params="image: photo.jpg, maps: {0: 3, 1: [1, 64]}, levels: 1"),
                  "field 'params.maps': map 64 (level 1) is out of range: the features layer of 'c' has 64 maps"),
    "dream-outside-the-roots": (_DREAM.format(params=f"image: {_PHOTO}"),
                                "field 'params.image': " + f"{_PHOTO}: outside the data roots"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, case: str) -> None:
    text, expected = BAD_SPECS[case]
    spec = tmp_path / f"{case}.yaml"
    spec.write_text(text)
    (tmp_path / "photo.jpg").symlink_to(_PHOTO)  # in the spec's folder: a data root
    proc = run(["submit", str(spec)], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {spec}: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert run_json(["status"], tmp_path) == []  # nothing of the batch was written


def test_corrupt_data_file_fails_the_job_with_a_clear_reason(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"this is not an npz file")
    spec = tmp_path / "s.yaml"
    spec.write_text("batch: x\njobs:\n  - {name: a, kind: train, params: {dataset: mnist, data_path: mnist.npz}}\n")
    proc = run(["submit", str(spec)], tmp_path, check=False)
    assert proc.returncode == 1
    job = run_json(["show", "1"], tmp_path)["job"]
    assert job["status"] == "failed" and "mnist.npz" in job["error"] and job["traceback"]


def test_unknown_job_and_missing_spec_are_user_errors(tmp_path: Path) -> None:
    shown = run(["show", "42"], tmp_path, check=False)
    assert shown.returncode == 2 and shown.stderr.strip() == "error: no job 42"
    missing = run(["submit", "nope.yaml"], tmp_path, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: nope.yaml: cannot read spec")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_data_file_that_cannot_be_read_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "wifi.txt").symlink_to("/proc/self/mem")  # in the spec's folder, but unreadable as a file
    spec = tmp_path / "b.yaml"
    spec.write_text("batch: x\njobs:\n  - {name: a, kind: cluster, params: {dataset: wifi, data_path: wifi.txt}}\n")
    proc = run(["submit", str(spec)], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {spec}: cannot read a file it names: [Errno")
    assert proc.stderr.count("\n") == 1
    assert run_json(["status"], tmp_path) == []


def test_a_data_file_outside_the_data_roots_is_a_user_error(tmp_path: Path) -> None:
    spec = tmp_path / "b.yaml"
    spec.write_text("batch: x\njobs:\n"
                    "  - {name: a, kind: cluster, params: {dataset: wifi, data_path: /proc/self/environ}}\n")
    proc = run(["submit", str(spec)], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: {spec}: job 'a': field 'params.data_path': /proc/self/environ: outside the "
                           "data roots (LATENTFARM_DATA_DIR, and the spec's folder for a spec submitted from a file): "
                           "files elsewhere cannot be read\n")
    assert run_json(["status"], tmp_path) == []


def test_control_plane_imports_leave_tensorflow_out() -> None:
    code = textwrap.dedent("""
        import sys
        import scheduler.cli, scheduler.control, scheduler.spec, workers.tasks, workers.handlers
        from scheduler.web.app import create_app
        from scheduler.control import ControlPlane
        from scheduler.settings import Settings
        create_app(ControlPlane.open(Settings.from_env({"LATENTFARM_DATABASE_URL": "sqlite://"})))
        heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        assert not heavy, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
