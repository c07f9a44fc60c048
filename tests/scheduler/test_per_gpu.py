"""``latentfarm worker --gpus all --per-gpu K``: K worker processes per GPU, each pinned to its GPU, given a share of
its memory and of the cores, named ``gpu<i>.<k>@<host>``; simulated GPUs (LATENTFARM_GPUS) stand in for real ones."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.control import ControlPlane
from scheduler.errors import UserError
from scheduler.settings import Settings
from scheduler.supervisor import (
    GPU_MEMORY_SHARED,
    THREAD_VARS,
    gpu_memory_totals,
    gpu_share_env,
    parse_per_gpu,
    plan_workers,
)
from storage import queries, workers
from tests.integration.farm import wait_done, wait_for, write_spec

HOST = socket.gethostname()
CORES = os.cpu_count() or 1


def latentfarm() -> list[str]:
    exe = Path(sys.executable).parent / "latentfarm"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scheduler.cli"]


def test_k_processes_per_gpu_each_pinned_with_a_memory_and_thread_share() -> None:
    planned = plan_workers(["0", "1"], 1, None, "INFO", None, env={"X": "y"}, host="h", per_gpu=2,
                           gpu_memory={"0": 81559})
    assert [w.name for w in planned] == ["gpu0.0@h", "gpu0.1@h", "gpu1.0@h", "gpu1.1@h", "cpu0@h"]
    share = str(max(1, CORES // 5))  # cores // processes
    for w in planned[:4]:
        gpu = w.name[3]
        assert w.env["CUDA_VISIBLE_DEVICES"] == gpu and w.env["LATENTFARM_GPU"] == gpu and w.env["X"] == "y"
        assert w.env["LATENTFARM_GPU_MEMORY_FRACTION"] == w.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.4500"
        assert w.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert w.argv[w.argv.index("--name") + 1] == w.name and w.argv[w.argv.index("--queues") + 1] == "gpu"
        assert w.argv[w.argv.index("--pool") + 1] == "solo"
    # the total is known for GPU 0 only: its workers get a limit in MiB too, GPU 1's the fraction alone
    assert [w.env.get("LATENTFARM_GPU_MEMORY") for w in planned[:4]] == [str(int(81559 * 0.45))] * 2 + [None] * 2
    for w in planned:
        assert w.argv[w.argv.index("--threads") + 1] == share
        assert all(w.env[var] == share for var in THREAD_VARS) and w.env["LATENTFARM_THREADS"] == share
    cpu = planned[4]
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == "" and "LATENTFARM_GPU_MEMORY_FRACTION" not in cpu.env


def test_one_process_per_gpu_keeps_its_name_and_the_whole_device() -> None:
    planned = plan_workers(["0", "3"], 0, None, "INFO", 3, env={}, host="h", gpu_memory={"0": 1000})
    assert [w.name for w in planned] == ["gpu0@h", "gpu3@h"]
    assert not any(k.startswith(("LATENTFARM_GPU_MEMORY", "XLA_")) for w in planned for k in w.env)
    assert planned[1].env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert all(w.argv[-2:] == ["--threads", "3"] and w.env["OMP_NUM_THREADS"] == "3" for w in planned)


@pytest.mark.parametrize("k,total,expected", [
    (1, 80000, {}),
    (4, None, {"LATENTFARM_GPU_MEMORY_FRACTION": "0.2250"}),
    (3, 24576, {"LATENTFARM_GPU_MEMORY_FRACTION": "0.3000", "LATENTFARM_GPU_MEMORY": "7372"}),
])
def test_memory_share(k: int, total: int | None, expected: dict[str, str]) -> None:
    env = gpu_share_env(k, total)
    assert {key: v for key, v in env.items() if key.startswith("LATENTFARM_")} == expected
    if k > 1:  # K shares fit in the device, with room left for the CUDA contexts
        assert k * float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) <= GPU_MEMORY_SHARED < 1


@pytest.mark.parametrize("value,gpus,message", [
    ("0", "all", "--per-gpu 0: expected a whole number of worker processes per GPU, 1 or more"),
    ("-2", "0", "--per-gpu -2: expected a whole number of worker processes per GPU, 1 or more"),
    ("two", "all", "--per-gpu two: expected a whole number of worker processes per GPU, 1 or more"),
    ("2", None, "--per-gpu 2: needs --gpus (the GPUs to start K worker processes on)"),
])
def test_per_gpu_refuses(value: str, gpus: str | None, message: str) -> None:
    with pytest.raises(UserError) as e:
        parse_per_gpu(value, gpus)
    assert str(e.value) == message
    assert parse_per_gpu(None, None) == 1 and parse_per_gpu("4", "all") == 4


@pytest.mark.parametrize("args,message", [
    (["--per-gpu", "2", "--cpu", "1"], "error: --per-gpu 2: needs --gpus"),
    (["--gpus", "all", "--per-gpu", "0"], "error: --per-gpu 0: expected a whole number"),
])
def test_the_cli_refuses_a_bad_per_gpu_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "LATENTFARM_GPUS": "0", "LATENTFARM_BROKER_URL": "redis://127.0.0.1:1/0",
           "LATENTFARM_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}"}
    proc = subprocess.run([*latentfarm(), "worker", *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr


def test_gpu_memory_totals_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: no totals
    assert gpu_memory_totals() == {}
    fake = tmp_path / "nvidia-smi"  # a machine with two GPUs, as nvidia-smi prints them
    fake.write_text("#!/bin/sh\nprintf '0, 81559\\n1, 40960\\n'\n")
    fake.chmod(0o755)
    assert gpu_memory_totals() == {"0": 81559, "1": 40960}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.fixture
def per_gpu_farm(tmp_path: Path, redis_url: str) -> Iterator[tuple[ControlPlane, subprocess.Popen[str]]]:
    """A farm on Redis and SQLite whose `latentfarm worker --gpus all --per-gpu 2` runs on two simulated GPUs."""
    env = {**os.environ, "LATENTFARM_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}", "LATENTFARM_BROKER_URL":
           redis_url, "LATENTFARM_ARTIFACTS": str(tmp_path / "artifacts"), "LATENTFARM_GPUS": "0,1",
           "LATENTFARM_HEARTBEAT_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
    cp = ControlPlane.open(Settings.from_env(env), upgrade=True)
    proc = subprocess.Popen([*latentfarm(), "worker", "--gpus", "all", "--per-gpu", "2", "--loglevel", "WARNING"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    yield cp, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_two_workers_per_simulated_gpu_run_jobs_and_stop(per_gpu_farm: tuple[ControlPlane, subprocess.Popen[str]],
                                                         tmp_path: Path) -> None:
    cp, proc = per_gpu_farm
    names = [f"gpu{g}.{k}@{HOST}" for g in "01" for k in "01"]

    def live() -> list:
        with cp.store.session() as s:
            return workers.live_workers(s, cp.settings.worker_lost_after)

    wait_for(lambda: sorted(w.name for w in live()) == names, timeout=120, interval=0.5)
    share = str(max(1, CORES // 4))
    for w in live():
        env = environ_of(w.pid)
        gpu = w.name[3]
        assert (w.gpu, w.queues, w.host) == (gpu, ["gpu"], HOST)
        assert env["CUDA_VISIBLE_DEVICES"] == gpu == env["LATENTFARM_GPU"]
        assert env["LATENTFARM_GPU_MEMORY_FRACTION"] == env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.4500"
        assert "LATENTFARM_GPU_MEMORY" not in env  # simulated GPUs: no total known, the fraction alone
        assert all(env[var] == share for var in THREAD_VARS)

    spec = {"batch": "shared", "jobs": [{"name": "g", "kind": "noop", "queue": "gpu", "params": {"seconds": 1.0},
                                         "sweep": {"value": list(range(8))}}]}
    batch = cp.submit(cp.load(write_spec(tmp_path, spec))).batch_id
    assert wait_done(cp, batch, timeout=120).status == "succeeded"
    with cp.store.session() as s:
        jobs = queries.list_jobs(s, batch_id=batch)
    used = [str(j.worker) for j in jobs]
    assert set(used) <= set(names) and all(j.gpu == str(j.worker)[3] for j in jobs)
    assert len(set(used)) >= 3, sorted(used)  # eight 1 s jobs spread over the four processes

    proc.send_signal(signal.SIGTERM)  # a warm shutdown of every worker
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert all(f"started worker {n}" in out for n in names) and "stopped 4 workers" in out
