"""Chaos: ``kill -9`` a worker process in the middle of a training job (real Redis, PostgreSQL, worker and scheduler
processes). The reaper requeues the job once its lease runs out, another worker resumes it from its last
checkpoint, and it succeeds with every epoch's metrics recorded once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler.control import ControlPlane
from scheduler.settings import Settings
from storage import queries
from storage.status import JobStatus
from tests.integration.farm import wait_for, write_spec

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(240)]

EPOCHS = 10
SPEC = {"batch": "resume", "jobs": [{
    "name": "train", "kind": "train",
    "params": {"model": "conv_ae", "dataset": "digits", "z_dim": 8, "epochs": EPOCHS, "batch_size": 16,
               "limit": 600},
}]}


def latentfarm() -> list[str]:
    exe = shutil.which("latentfarm", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "scheduler.cli"]


class Processes:
    """Processes started by a test, each in its own session, all killed at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*latentfarm(), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def farm(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[ControlPlane, Processes]]:
    env = {**os.environ, "LATENTFARM_DATABASE_URL": pg_url, "LATENTFARM_BROKER_URL": redis_url,
           "LATENTFARM_ARTIFACTS": str(tmp_path / "artifacts"), "LATENTFARM_DATA_DIR": str(tmp_path / "data"),
           "LATENTFARM_LEASE_SECONDS": "3", "LATENTFARM_RESEND_AFTER": "5", "PYTHONUNBUFFERED": "1"}
    settings = Settings.from_env(env)
    cp = ControlPlane.open(settings, upgrade=True)
    procs = Processes(env, tmp_path)
    yield cp, procs
    procs.stop_all()
    for log in sorted(tmp_path.glob("*.log")):  # shown when the test failed
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def test_killed_training_resumes_from_its_checkpoint_on_another_worker(
        farm: tuple[ControlPlane, Processes], tmp_path: Path) -> None:
    cp, procs = farm
    procs.start("scheduler", "scheduler", "--interval", "0.5")
    for w in ("w1", "w2"):
        procs.start(w, "worker", "-Q", "gpu", "--pool", "solo", "-c", "1", "--name", f"{w}@test", "--threads", "1")
    job_id = cp.submit(cp.load(write_spec(tmp_path, SPEC))).job_ids["train"]

    def job():  # type: ignore[no-untyped-def]
        with cp.store.session() as s:
            return queries.require_job(s, job_id)

    def epochs_done() -> int:
        with cp.store.session() as s:
            return len({m.step for m in queries.job_metrics(s, [job_id], "loss")})

    wait_for(lambda: epochs_done() >= 3, timeout=120, interval=0.1)
    first = (job().worker or "").split("@")[0]
    procs.kill(first)  # kill -9 in the middle of the training
    killed_after = epochs_done()
    assert killed_after < EPOCHS, "the training ended before the kill: make it longer"
    second = "w2" if first == "w1" else "w1"
    wait_for(lambda: job().status in (JobStatus.SUCCEEDED, JobStatus.FAILED), timeout=150, interval=0.2)
    final = job()
    assert final.status is JobStatus.SUCCEEDED, final.error
    assert final.attempts == 2 and final.worker == f"{second}@test"
    with cp.store.session() as s:
        events = queries.job_events(s, job_id)
    claims = [e.worker for e in events if e.status == "running"]
    assert claims == [f"{first}@test", f"{second}@test"]
    requeue = next(e for e in events if e.status == "queued" and e.worker == "reaper")
    assert f"worker lost: {first}@test stopped renewing its lease" in requeue.message
    resumed = [e.message for e in events if e.kind == "progress" and e.message.startswith("resuming")]
    assert len(resumed) == 1
    resumed_at = int(resumed[0].rsplit(" ", 1)[1])  # "... from its checkpoint after epoch N"
    assert killed_after <= resumed_at < EPOCHS
    # the second attempt trained only the remaining epochs
    trained = [e.message for e in events if e.kind == "progress" and e.attempt == 2 and e.message.startswith("epoch")]
    assert [int(m.split()[1].split("/")[0]) for m in trained] == list(range(resumed_at + 1, EPOCHS + 1))
    with cp.store.engine.connect() as c:
        per_step = c.execute(text("SELECT step, count(*) FROM metrics WHERE job_id = :j AND key = 'loss' "
                                  "GROUP BY step ORDER BY step"), {"j": job_id}).all()
        blobs_recorded = c.execute(text("SELECT count(DISTINCT sha256) FROM artifacts")).scalar_one()
        names = c.execute(text("SELECT name FROM artifacts WHERE job_id = :j ORDER BY name"), {"j": job_id}).scalars()
        assert list(names) == ["model.keras", "reconstructions.png"]  # the checkpoint is dropped with the success
    assert per_step == [(epoch, 1) for epoch in range(1, EPOCHS + 1)]  # each epoch once
    # no checkpoint left behind, not one per epoch nor the last: every blob in the store is one an artifact refers to
    assert len(list((tmp_path / "artifacts" / "sha256").glob("*/*"))) == blobs_recorded
    print(f"chaos figures [train_resume]: 1 job, 1 kill -9 after {killed_after} of {EPOCHS} epochs, resumed after "
          f"epoch {resumed_at} on {second}, attempts {final.attempts}, epochs recorded once each: {EPOCHS}, "
          f"lost 0, duplicated 0, {(final.finished_at - final.created_at).total_seconds():.1f} s from submit")
