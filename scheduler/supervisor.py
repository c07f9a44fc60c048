"""``latentfarm worker --gpus/--cpu``: K Celery worker processes per GPU (and N for the CPU), kept running.

Each GPU worker is its own process, started with ``CUDA_VISIBLE_DEVICES=<i>`` (so the framework, imported later
by the first job, sees that GPU only) and memory growth on, the solo pool (jobs run in the worker process itself:
TensorFlow never runs in a process that forks), the name ``gpu<i>@<host>``, and the ``gpu`` queue. With
``--per-gpu K`` (K > 1) a GPU has K such processes, ``gpu<i>.<k>@<host>`` (k = 0..K-1), so K small jobs run on it
side by side, each given a share of its memory that the others keep: ``GPU_MEMORY_SHARED`` / K of it, passed in the
environment (``gpu_share_env``) and applied before the framework is imported (``workers.framework``: TensorFlow a
logical device with that memory limit, JAX its memory fraction). Every worker process is given its share of the
cores, ``--threads`` or cores // processes (at least 1), in the variables that TensorFlow, OpenMP and the BLAS
libraries read when they load (``thread_env``), and again per job (``workers.threads``). CPU workers
are the same on the ``cpu`` queue, named ``cpu<i>@<host>``, with no GPU visible, and stand by for the ``gpu`` queue:
they take its jobs too while no live GPU worker consumes it (``--gpu-standby``; not with an explicit ``--queues``,
which is taken as given). The supervisor imports neither
Celery's worker nor TensorFlow; it restarts a worker process that dies (a crash, a job killed at its hard time
limit) after a backoff, and passes SIGTERM/SIGINT on to its workers (a warm shutdown: running jobs finish, or
resume from their checkpoints elsewhere once their leases run out).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from scheduler.errors import UserError

# The part of a device's memory that its --per-gpu K workers share, K equal shares: the rest is left for the K CUDA
# contexts (a few hundred MiB each) and the driver, so that K full shares still fit.
GPU_MEMORY_SHARED = 0.9
# Where a worker process reads its job's thread limit (workers.threads), set with the libraries' own variables.
THREADS_VAR = "LATENTFARM_THREADS"
# The variables that cap the threads of TensorFlow, OpenMP (scikit-learn's KMeans) and the BLAS libraries, read once
# when each library loads: set in a worker's environment before it starts, they hold for everything it imports.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS")
RESTART_MAX_DELAY = 30.0  # seconds: the longest wait before restarting a worker that keeps dying
STABLE_AFTER = 60.0  # a worker up this long counts as healthy again: its next restart is immediate


def discover_gpus(declared: Sequence[str] | None) -> list[str]:
    """This machine's GPU indices: those ``declared`` (``Settings.gpus``, from LATENTFARM_GPUS) if given, else
    what ``nvidia-smi`` lists."""
    if declared is not None:
        return list(declared)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def choose_gpus(value: str, available: Sequence[str]) -> list[str]:
    """The GPUs ``--gpus`` names: ``all`` or a comma-separated list of indices, each of which must exist."""
    if not available:
        raise UserError(f"--gpus {value}: no GPU found on this machine (nvidia-smi lists none; LATENTFARM_GPUS "
                        "names them where nvidia-smi is missing)")
    if value.strip() == "all":
        return list(available)
    wanted = [g.strip() for g in value.split(",") if g.strip()]
    missing = [g for g in wanted if g not in available]
    if not wanted or missing:
        raise UserError(f"--gpus {value}: no GPU {', '.join(missing) or '(none named)'} on this machine "
                        f"(it has {', '.join(available)}); use 'all' or indices from that list")
    return list(dict.fromkeys(wanted))


def gpu_memory_totals() -> dict[str, int]:
    """Each GPU's memory in MiB by its ``nvidia-smi`` index; empty where nvidia-smi is missing or fails (simulated
    GPUs, a machine without a driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    totals = {}
    for line in out.splitlines():
        index, _, mib = line.partition(",")
        if mib.strip().isdigit():
            totals[index.strip()] = int(mib.strip())
    return totals


def parse_per_gpu(value: str | None, gpus: str | None) -> int:
    """``--per-gpu``'s K: a whole number >= 1, given with ``--gpus`` only (default 1). UserError otherwise."""
    if value is None:
        return 1
    if gpus is None:
        raise UserError(f"--per-gpu {value}: needs --gpus (the GPUs to start K worker processes on)")
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise UserError(f"--per-gpu {value}: expected a whole number of worker processes per GPU, 1 or more")
    return k


def thread_env(threads: int) -> dict[str, str]:
    """The environment that caps a worker process at ``threads`` threads in every library (``THREAD_VARS``) and
    per job (``THREADS_VAR``)."""
    return {var: str(threads) for var in (*THREAD_VARS, THREADS_VAR)}


def gpu_share_env(per_gpu: int, total_mib: int | None) -> dict[str, str]:
    """The environment of one of ``per_gpu`` workers sharing a GPU of ``total_mib`` MiB (None: unknown): its share
    of the memory as a fraction (LATENTFARM_GPU_MEMORY_FRACTION; JAX's XLA_PYTHON_CLIENT_MEM_FRACTION and
    XLA_CLIENT_MEM_FRACTION, allocated as needed up to it) and, where the total is known, in MiB
    (LATENTFARM_GPU_MEMORY, TensorFlow's limit). Empty for one worker per GPU: it has the whole device."""
    if per_gpu <= 1:
        return {}
    fraction = f"{GPU_MEMORY_SHARED / per_gpu:.4f}"
    env = {"LATENTFARM_GPU_MEMORY_FRACTION": fraction, "XLA_PYTHON_CLIENT_MEM_FRACTION": fraction,
           "XLA_CLIENT_MEM_FRACTION": fraction, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if total_mib:
        env["LATENTFARM_GPU_MEMORY"] = str(int(total_mib * GPU_MEMORY_SHARED / per_gpu))
    return env


@dataclass
class WorkerProcess:
    name: str  # the Celery node name, gpu0@host
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    delay: float = 0.5  # doubled on each quick death: 1 s, 2 s, ... RESTART_MAX_DELAY

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started = time.monotonic()
        self.restart_at = None


def plan_workers(gpus: Sequence[str], cpus: int, queues: str | None, loglevel: str, threads: int | None,
                 env: Mapping[str, str] | None = None, host: str | None = None, per_gpu: int = 1,
                 gpu_memory: Mapping[str, int] | None = None) -> list[WorkerProcess]:
    """The worker processes to start: ``per_gpu`` per GPU, then ``cpus`` CPU workers. Each gets ``threads``
    threads, or its share of the cores (cores // processes, at least 1). ``gpu_memory``: each GPU's memory in MiB
    (``gpu_memory_totals``), for the memory share of ``per_gpu`` > 1 workers."""
    if per_gpu < 1:
        raise ValueError(f"per_gpu must be >= 1, got {per_gpu}")
    env = dict(os.environ if env is None else env)
    host = host or socket.gethostname()
    share = threads or max(1, (os.cpu_count() or 1) // max(1, len(gpus) * per_gpu + cpus))

    def argv(name: str, queue: str) -> list[str]:
        cmd = [sys.executable, "-m", "scheduler.cli", "worker", "--queues", queues or queue, "--pool", "solo",
               "--concurrency", "1", "--name", name, "--loglevel", loglevel]
        if queue == "cpu" and queues is None:  # a CPU-only farm runs gpu jobs too (see the module's docstring)
            cmd.append("--gpu-standby")
        return cmd + ["--threads", str(share)]

    out = []
    for g in gpus:
        memory = gpu_share_env(per_gpu, (gpu_memory or {}).get(g))
        for k in range(per_gpu):
            name = f"gpu{g}@{host}" if per_gpu == 1 else f"gpu{g}.{k}@{host}"
            out.append(WorkerProcess(name, argv(name, "gpu"), {
                **env, **thread_env(share), **memory, "CUDA_VISIBLE_DEVICES": g, "LATENTFARM_GPU": g,
                "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}))  # CUDA numbers the GPUs as nvidia-smi does
    for i in range(cpus):
        name = f"cpu{i}@{host}"
        cpu_env = {k: v for k, v in env.items() if k != "LATENTFARM_GPU"}
        out.append(WorkerProcess(name, argv(name, "cpu"), {**cpu_env, **thread_env(share), "CUDA_VISIBLE_DEVICES": ""}))
    return out


def supervise(workers: list[WorkerProcess], out: TextIO = sys.stderr, poll: float = 0.5) -> int:
    """Start ``workers``, restart any that exits, until SIGTERM/SIGINT; then stop them. Returns 0."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:  # a second signal: stop now
            for w in workers:
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
            return
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for w in workers:
            w.start()
            print(f"started worker {w.name} (pid {w.proc.pid if w.proc else '?'})", file=out, flush=True)
        while not stopping:
            time.sleep(poll)
            now = time.monotonic()
            for w in workers:
                if stopping:
                    break
                _tend(w, now, out)
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown: the running job finishes
        for w in workers:
            if w.proc is not None:
                w.proc.wait()
        print(f"stopped {len(workers)} workers", file=out, flush=True)
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _tend(w: WorkerProcess, now: float, out: TextIO) -> None:
    """Restart ``w`` if it exited: at once if it had been up a while, else after a growing delay."""
    if w.proc is None or w.proc.poll() is None:
        return
    if w.restart_at is None:
        up = now - w.started
        w.delay = 0.0 if up >= STABLE_AFTER else min(max(w.delay * 2, 1.0), RESTART_MAX_DELAY)
        w.restart_at = now + w.delay
        print(f"worker {w.name} exited with code {w.proc.returncode} after {up:.0f} s; restarting in "
              f"{w.delay:.0f} s", file=out, flush=True)
    if now >= w.restart_at:
        w.restarts += 1
        w.start()
        print(f"restarted worker {w.name} (pid {w.proc.pid if w.proc else '?'}, restart {w.restarts})", file=out,
              flush=True)
