"""Production mode through the CLI: Redis broker, PostgreSQL store, `latentfarm worker` as its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from storage.migrate import MIGRATIONS
from tests.e2e.cli import clean_env, latentfarm_bin, run, run_json

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(600)]


@pytest.fixture
def env(tmp_path: Path, redis_url: str, pg_url: str) -> dict[str, str]:
    return clean_env(LATENTFARM_DATABASE_URL=pg_url, LATENTFARM_BROKER_URL=redis_url,
                     LATENTFARM_ARTIFACTS=str(tmp_path / "artifacts"), LATENTFARM_DATA_DIR=str(tmp_path / "data"))


def _start_worker(tmp_path: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([latentfarm_bin(), "worker", "--concurrency", "2", "--name", f"{name}@%h",
                             "--loglevel", "INFO"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _wait_settled(tmp_path: Path, env: dict[str, str], batch: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_json(["status", str(batch)], tmp_path, env)
        if not (status["counts"].get("queued") or status["counts"].get("running")):
            return status
        time.sleep(0.5)
    raise AssertionError(f"batch {batch} still running after {timeout}s: {status['counts']}")


def test_submit_returns_at_once_and_worker_processes_run_the_batch(tmp_path: Path, env: dict[str, str]) -> None:
    worker_missing = run(["worker"], tmp_path, env, check=False)  # before migrations: a clear refusal
    assert worker_missing.returncode == 2 and "latentfarm db upgrade" in worker_missing.stderr
    assert f"is at revision {_head()}" in run(["db", "upgrade"], tmp_path, env).stdout
    spec = tmp_path / "prod.yaml"
    spec.write_text(
        "batch: prod\n"
        "jobs:\n"
        "  - {name: first, kind: noop, params: {seconds: 0.2}}\n"
        "  - {name: fan, kind: noop, needs: first, sweep: {value: [1, 2, 3, 4]}}\n"
        "  - name: ae\n"
        "    kind: train\n"
        "    needs: first\n"
        "    params: {dataset: digits, epochs: 1, limit: 300, batch_size: 64, z_dim: 4, keep_checkpoint: true}\n"
        "  - {name: last, kind: noop, needs: [fan, ae]}\n")
    started = time.monotonic()
    submitted = json.loads(run(["submit", str(spec), "--json"], tmp_path, env).stdout)
    assert time.monotonic() - started < 30  # returns without waiting for any job
    assert submitted["status"] == "submitted" and len(submitted["jobs"]) == 7
    status = run_json(["status", str(submitted["batch_id"])], tmp_path, env)
    assert status["counts"] == {"queued": 1, "pending": 6}  # nothing runs without a worker
    worker = _start_worker(tmp_path, env, "w1")
    try:
        final = _wait_settled(tmp_path, env, submitted["batch_id"])
    finally:
        _stop(worker)
    assert final["status"] == "succeeded", (tmp_path / "w1.log").read_text()[-3000:]
    assert {j["worker"] for j in final["jobs"]} == {f"w1@{os.uname().nodename}"}
    ae = next(j for j in final["jobs"] if j["name"] == "ae")
    shown = run_json(["show", str(ae["id"])], tmp_path, env)
    # TF ran in a prefork child
    assert {a["name"] for a in shown["artifacts"]} == {"model.keras", "checkpoint.keras", "reconstructions.png"}
    table = run(["jobs", "--batch", str(submitted["batch_id"]), "--status", "succeeded"], tmp_path, env).stdout
    assert len(table.splitlines()) == 1 + 7


def test_cancel_queued_batch_then_worker_drops_its_messages(tmp_path: Path, env: dict[str, str]) -> None:
    run(["db", "upgrade"], tmp_path, env)
    spec = tmp_path / "c.yaml"
    spec.write_text("batch: c\njobs:\n  - {name: a, kind: noop}\n  - {name: b, kind: noop}\n"
                    "  - {name: c, kind: noop, needs: [a, b]}\n")
    batch = json.loads(run(["submit", str(spec), "--json"], tmp_path, env).stdout)["batch_id"]
    out = run(["cancel", "--batch", str(batch)], tmp_path, env).stdout
    assert out.startswith("cancelled 3 jobs")
    worker = _start_worker(tmp_path, env, "w2")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both queued messages reach the worker and are dropped
            shown = [run_json(["show", str(j)], tmp_path, env) for j in (1, 2)]
            if all(any((e["message"] or "").startswith("message dropped") for e in s["events"]) for s in shown):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the worker did not drop the cancelled jobs' messages")
    finally:
        _stop(worker)
    final = run_json(["status", str(batch)], tmp_path, env)
    assert final["counts"] == {"cancelled": 3} and all(j["attempts"] == 0 for j in final["jobs"])
