"""A small KMeans with the default threads against one thread, idle and under load.

    .venv/bin/python benchmarks/threads.py [--load N] [--repeat 5] [--k 10] [--n-init 10] [--json FILE]

KMeans (scikit-learn, k = 10, n_init 10) on the 1797 8x8 digits, timed in this process: with the BLAS and OpenMP
pools at their default (one thread per core) and capped at one thread the way a worker caps a job
(``workers.threads.job_threads``, what ``latentfarm worker --threads 1`` does). Each is timed on an idle machine
and with ``--load`` busy processes (default: one per core) spinning beside it, as other jobs and workers do on a
farm's machine; the median of ``--repeat`` runs. OpenMP's threads spin-wait for each other, and a thread that
loses its core to another process holds up the whole team: under load, the default is many times slower.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

from workers.threads import job_threads  # noqa: E402


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` processes that keep a core each busy for the block."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # all of them running
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(10)


def timed(x: np.ndarray, k: int, n_init: int, repeat: int, threads: int | None) -> float:
    """The median seconds of ``repeat`` KMeans fits, within ``job_threads(threads)`` (None: the default)."""
    runs = []
    for seed in range(repeat):
        with job_threads(threads):
            started = time.perf_counter()
            KMeans(k, n_init=n_init, random_state=seed).fit(x)
            runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes beside the KMeans")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    os.environ.pop("LATENTFARM_THREADS", None)  # the default really is the default
    x = load_digits().data.astype(np.float64)
    KMeans(args.k, n_init=1, random_state=0).fit(x)  # OpenMP and BLAS loaded, the code warm
    default = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
    print(f"KMeans k = {args.k}, n_init {args.n_init} on {x.shape[0]} digits ({x.shape[1]} features); "
          f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} before); default threads {default}; "
          f"median of {args.repeat}", flush=True)
    report: dict[str, Any] = {"cores": os.cpu_count(), "default_threads": default, "k": args.k,
                              "n_init": args.n_init, "points": int(x.shape[0]), "repeat": args.repeat,
                              "load_average": os.getloadavg()[0], "seconds": {}}
    for load in (0, args.load):
        with busy(load):
            for label, threads in (("default", None), ("1 thread", 1)):
                seconds = timed(x, args.k, args.n_init, args.repeat, threads)
                report["seconds"][f"{label}, {load} busy"] = round(seconds, 4)
                print(f"  {load} busy processes, {label:8}: {seconds:7.3f} s", flush=True)
    loaded = report["seconds"]
    ratio = loaded[f"default, {args.load} busy"] / loaded[f"1 thread, {args.load} busy"]
    report["default_over_one_under_load"] = round(ratio, 2)
    print(f"under load the default takes {ratio:.1f}x the time of one thread")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
