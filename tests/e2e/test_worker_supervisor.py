"""``latentfarm worker --gpus/--cpu``: GPU discovery, one pinned worker process per GPU, restarts, refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.control import ControlPlane
from scheduler.errors import UserError
from scheduler.settings import Settings
from scheduler.supervisor import choose_gpus, discover_gpus, plan_workers
from storage import queries
from tests.e2e.test_train_resume_chaos import latentfarm
from tests.integration.farm import wait_done, wait_for, write_spec

HOST = socket.gethostname()


def test_discover_gpus_from_the_environment_or_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({"LATENTFARM_GPUS": "0, 1,"}).gpus == ("0", "1")
    assert discover_gpus(Settings.from_env({"LATENTFARM_GPUS": "0, 1,"}).gpus) == ["0", "1"]
    assert discover_gpus(Settings.from_env({"LATENTFARM_GPUS": ""}).gpus) == []
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPU
    assert Settings.from_env({}).gpus is None and discover_gpus(None) == []


@pytest.mark.parametrize("value,available,expected", [
    ("all", ["0", "1"], ["0", "1"]),
    ("1", ["0", "1"], ["1"]),
    ("1,0,1", ["0", "1"], ["1", "0"]),
])
def test_choose_gpus(value: str, available: list[str], expected: list[str]) -> None:
    assert choose_gpus(value, available) == expected


@pytest.mark.parametrize("value,available,message", [
    ("all", [], "--gpus all: no GPU found on this machine"),
    ("0", [], "--gpus 0: no GPU found on this machine"),
    ("2", ["0", "1"], "--gpus 2: no GPU 2 on this machine (it has 0, 1)"),
    (",", ["0"], "--gpus ,: no GPU (none named) on this machine"),
])
def test_choose_gpus_refuses(value: str, available: list[str], message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        choose_gpus(value, available)


def test_plan_pins_one_process_per_gpu_and_spreads_cpu_threads() -> None:
    workers = plan_workers(["0", "3"], 2, None, "INFO", None, env={"CUDA_VISIBLE_DEVICES": "0,1,2,3", "X": "y"},
                           host="h")
    assert [w.name for w in workers] == ["gpu0@h", "gpu3@h", "cpu0@h", "cpu1@h"]
    gpu3, cpu0 = workers[1], workers[2]
    assert gpu3.env["CUDA_VISIBLE_DEVICES"] == "3" and gpu3.env["LATENTFARM_GPU"] == "3"
    assert gpu3.env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and gpu3.env["X"] == "y"
    assert gpu3.argv[gpu3.argv.index("worker"):gpu3.argv.index("--loglevel")] == [
        "worker", "--queues", "gpu", "--pool", "solo", "--concurrency", "1", "--name", "gpu3@h"]
    assert cpu0.env["CUDA_VISIBLE_DEVICES"] == "" and "LATENTFARM_GPU" not in cpu0.env
    assert cpu0.argv[cpu0.argv.index("--queues") + 1] == "cpu"
    assert cpu0.argv[cpu0.argv.index("--threads") + 1] == str(max(1, (os.cpu_count() or 1) // 4))  # 4 processes
    custom = plan_workers(["0"], 0, "gpu,big", "DEBUG", 4, env={}, host="h")[0]
    assert custom.argv[custom.argv.index("--queues") + 1] == "gpu,big" and custom.argv[-2:] == ["--threads", "4"]


def test_gpus_all_without_a_gpu_exits_nonzero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LATENTFARM_GPUS"}
    env.update(PATH=f"{Path(latentfarm()[0]).parent}:/usr/bin:/bin", LATENTFARM_BROKER_URL="redis://127.0.0.1:1/0",
               LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}")
    proc = subprocess.run([*latentfarm(), "worker", "--gpus", "all"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --gpus all: no GPU found on this machine")


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture
def supervised(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[ControlPlane, subprocess.Popen[str]]]:
    env = {**os.environ, "LATENTFARM_DATABASE_URL": pg_url, "LATENTFARM_BROKER_URL": redis_url,
           "LATENTFARM_ARTIFACTS": str(tmp_path / "artifacts"), "LATENTFARM_GPUS": "0,1", "PYTHONUNBUFFERED": "1"}
    cp = ControlPlane.open(Settings.from_env(env), upgrade=True)
    proc = subprocess.Popen([*latentfarm(), "worker", "--gpus", "all", "--cpu", "1", "--loglevel", "WARNING"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    yield cp, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_one_worker_per_gpu_records_worker_host_and_gpu_and_comes_back_after_a_kill(
        supervised: tuple[ControlPlane, subprocess.Popen[str]], tmp_path: Path) -> None:
    cp, proc = supervised
    spec = {"batch": "pinned", "jobs": [
        {"name": "g", "kind": "noop", "queue": "gpu", "params": {"seconds": 0.5},
         "sweep": {"value": [1, 2, 3, 4, 5, 6]}},
        {"name": "c", "kind": "noop", "queue": "cpu", "params": {"value": 7}},
    ]}
    batch = cp.submit(cp.load(write_spec(tmp_path, spec))).batch_id
    assert wait_done(cp, batch, timeout=90).status == "succeeded"
    with cp.store.session() as s:
        jobs = queries.list_jobs(s, batch_id=batch)
    on_gpu = [j for j in jobs if j.queue == "gpu"]
    assert {(j.worker, j.gpu) for j in on_gpu} == {(f"gpu0@{HOST}", "0"), (f"gpu1@{HOST}", "1")}
    cpu_job = next(j for j in jobs if j.queue == "cpu")
    assert (cpu_job.worker, cpu_job.gpu) == (f"cpu0@{HOST}", None)
    assert all(j.host == HOST for j in jobs)

    children = children_of(proc.pid)
    assert len(children) == 3  # two GPU workers and one CPU worker
    os.kill(min(children), signal.SIGKILL)
    wait_for(lambda: len(children_of(proc.pid) - children) == 1, timeout=30)
    again = cp.submit(cp.load(write_spec(tmp_path, {"batch": "again", "jobs": [
        {"name": "g", "kind": "noop", "queue": "gpu", "sweep": {"value": [1, 2, 3, 4]}, "params": {"seconds": 0.3}}]},
        "again.yaml"))).batch_id
    assert wait_done(cp, again, timeout=90).status == "succeeded"

    # a job stuck past its hard time limit is failed, and its worker process killed and restarted
    before = children_of(proc.pid)
    stuck = cp.submit(cp.load(write_spec(tmp_path, {"batch": "stuck", "jobs": [
        {"name": "s", "kind": "noop", "params": {"seconds": 30, "stuck": True}, "timeout": 0.5}]}, "stuck.yaml")))
    assert wait_done(cp, stuck.batch_id, timeout=60).status == "failed"
    with cp.store.session() as s:
        job = queries.require_job(s, stuck.job_ids["s"])
    assert job.error == "killed: still running 2 s after its timeout of 0.5 s (hard time limit)"
    assert (job.finished_at - job.started_at).total_seconds() < 10
    wait_for(lambda: len(children_of(proc.pid) - before) == 1, timeout=30)

    proc.send_signal(signal.SIGTERM)  # a warm shutdown of every worker
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"started worker gpu0@{HOST}" in out and f"started worker cpu0@{HOST}" in out
    assert "exited with code -9" in out and "restarted worker" in out and "stopped 3 workers" in out
    assert f"worker cpu0@{HOST} exited with code -9" in out  # killed at the stuck job's hard limit
    # nothing left running: the supervisor waited for its workers
    assert children_of(proc.pid) == set()
