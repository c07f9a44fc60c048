"""The threads a job may use: in a worker started with ``--threads N`` (or by ``latentfarm worker --gpus/--cpu``,
which gives each process its share of the cores) every job runs with the BLAS and OpenMP thread pools capped at N.

The worker's environment carries N (``LATENTFARM_THREADS``) with the libraries' own variables (OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, TF_NUM_INTRAOP_THREADS: ``scheduler.supervisor.thread_env``), which each
library reads once, when it loads. numpy's BLAS is loaded before a worker reads its options, so ``job_threads``
caps the pools already loaded, for the job, through threadpoolctl (scikit-learn's KMeans and PCA run in those
pools and honour it); a pool that a job loads later reads the variables. Without ``LATENTFARM_THREADS`` (the
embedded worker, a worker without ``--threads``) nothing is capped: every library uses all cores.

The BLAS pools are the process's: with several jobs at once in one process (a threads pool) the first to start caps
them and the last to end lifts the cap. OpenMP's limit is a thread's own: each job sets and lifts it in the thread
it runs in (where scikit-learn's OpenMP loops run).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from scheduler.supervisor import THREAD_VARS, THREADS_VAR

log = logging.getLogger(__name__)

_lock = threading.Lock()
_running = 0  # jobs inside job_threads in this process
_blas: Any = None  # threadpoolctl's limit of the BLAS pools while a job runs


def process_threads() -> int | None:
    """This worker process's thread limit (``LATENTFARM_THREADS``); None for none, or for a value that is not a
    whole number >= 1 (logged)."""
    value = os.environ.get(THREADS_VAR, "").strip()
    if not value:
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    log.warning("%s=%r: not a whole number of threads >= 1; jobs use all cores", THREADS_VAR, value)
    return None


@contextmanager
def job_threads(threads: int | None = None) -> Iterator[None]:
    """Run the block (a job) with the BLAS and OpenMP pools capped at ``threads`` (default: ``process_threads()``);
    with no limit, the block runs as it is."""
    global _running, _blas
    threads = threads or process_threads()
    if threads is None:
        yield
        return
    with _lock:
        if _running == 0:
            for var in THREAD_VARS:  # for a library the job loads (scikit-learn's OpenMP on its first cluster job)
                os.environ.setdefault(var, str(threads))
            _take_blas()
            _blas = _pools("blas").limit(limits=threads)
        _running += 1
    openmp = _pools("openmp").limit(limits=threads)  # OpenMP's limit is the calling thread's own
    try:
        yield
    finally:
        openmp.restore_original_limits()
        with _lock:
            _running -= 1
            if _running == 0 and _blas is not None:
                _take_blas()
                _blas.restore_original_limits()
                _blas = None


def _pools(user_api: str) -> Any:
    """threadpoolctl's controller of the ``user_api`` pools loaded in this process. Finding them reads the process's
    memory map (milliseconds with TensorFlow loaded), so threadpoolctl's cached controller is used where it has one:
    found again only when a module was imported since (a library is loaded with one)."""
    import threadpoolctl

    cached = getattr(threadpoolctl, "get_cached_controller", None)  # threadpoolctl >= 3.6
    controller = cached() if cached is not None else threadpoolctl.ThreadpoolController()
    return controller.select(user_api=user_api)


def _take_blas() -> None:
    """Let this thread set OpenBLAS's pool: threadpoolctl (3.8) lets one thread at a time change that process-wide
    pool, the first to do so until it ends, and the job that caps it and the one that lifts the cap may run in
    different threads (always under ``_lock``)."""
    import threadpoolctl

    controller = getattr(threadpoolctl, "OpenBLASController", None)
    clear = getattr(controller, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
