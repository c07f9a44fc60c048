"""The deep-learning framework of a worker process: Keras and its backend, imported once, by the first job that
needs them (``load``), never when a worker process starts or forks.

TensorFlow's CPU build runs convolutions through oneDNN's kernels, about twice as fast as its own on x86 (a conv
autoencoder on MNIST: 844 against 410 images/s on the CI machine), with float round-off that differs a little. It
says so at import, on stderr, before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence it: ``load``
drops that notice (and absl's line about early log messages) and passes every other line of the import on. With
oneDNN, TensorFlow's graph remapper fails to fuse a Conv2D, its bias and a LeakyReLU in the gradient (conv_ae's
encoder) and logs an error on every training run; it goes on without the fusion, and turning the remapper off costs
about 3% (817 images/s) and keeps the worker's log clean.

The backend is TensorFlow unless LATENTFARM_BACKEND (or KERAS_BACKEND) says ``jax``: ``load`` sets KERAS_BACKEND
before it imports Keras, and on JAX keeps TensorFlow out of the process even where it is installed
(``core.backend.keep_tensorflow_out``), so a GPU machine needs no TensorFlow to join the farm.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Lines the import prints that say nothing a user can act on.
NOTICES = (b"oneDNN custom operations are on", b"All log messages before absl::InitializeLog() is called")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Import Keras (and with it its backend) in this process, once; the start-up notices are dropped."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            choose_backend()
            with _stderr_without(NOTICES):
                _limit_gpu_memory()  # before the framework touches the GPU
                import keras
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.optimizer.set_experimental_options({"remapping": False})
            else:
                from core.backend import keep_tensorflow_out

                keep_tensorflow_out()
            _loaded = True


def backend_name() -> str:
    """The Keras backend this worker runs its jobs on: LATENTFARM_BACKEND, else KERAS_BACKEND, else tensorflow.
    Raises ValueError for a backend core does not run on."""
    from core.backend import BACKENDS

    name = (os.environ.get("LATENTFARM_BACKEND") or os.environ.get("KERAS_BACKEND") or "tensorflow").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"LATENTFARM_BACKEND must be {' or '.join(BACKENDS)}, got {name!r}")
    return name


def choose_backend() -> str:
    """Set KERAS_BACKEND to ``backend_name()`` before Keras is imported (Keras reads it once, at import) and return
    it. Raises RuntimeError if this process imported Keras already, on another backend."""
    name = backend_name()
    keras = sys.modules.get("keras")
    if keras is not None:
        running = keras.backend.backend()
        if running != name:
            raise RuntimeError(f"LATENTFARM_BACKEND is {name}, but this process imported Keras on {running} before")
        return name
    os.environ["KERAS_BACKEND"] = name
    return name


def _limit_gpu_memory() -> None:
    """Keep this worker to its share of its GPU's memory, where it shares the GPU (``latentfarm worker --per-gpu K``
    sets LATENTFARM_GPU_MEMORY_FRACTION, and LATENTFARM_GPU_MEMORY in MiB where nvidia-smi gave the total).
    TensorFlow: one logical device with that memory limit, the total read through NVML (nvidia-ml-py) or nvidia-smi
    where only the fraction is given; without either, memory growth only (logged). JAX: its memory fraction
    (XLA_PYTHON_CLIENT_MEM_FRACTION, set by the supervisor; here where it is not). Nothing without a share, or on a
    machine where the framework sees no GPU."""
    fraction, mib = os.environ.get("LATENTFARM_GPU_MEMORY_FRACTION"), os.environ.get("LATENTFARM_GPU_MEMORY")
    if not fraction and not mib:
        return
    backend = os.environ.get("LATENTFARM_BACKEND") or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if backend == "jax":
        if fraction:
            for var in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION"):
                os.environ.setdefault(var, fraction)
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        return
    if backend != "tensorflow":
        return
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    limit = int(mib) if mib and mib.isdigit() else None
    if limit is None and fraction:
        total = _device_memory_mib(os.environ.get("LATENTFARM_GPU", "0"))
        limit = int(total * float(fraction)) if total else None
    if limit is None:
        log.warning("GPU memory share %s: the device's total is unknown (neither nvidia-ml-py nor nvidia-smi "
                    "answers); memory growth only, no limit", fraction or mib)
        return
    try:
        for gpu in gpus:  # one: CUDA_VISIBLE_DEVICES names it
            tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
    except RuntimeError as e:  # the GPU was already initialised in this process
        log.warning("GPU memory share of %d MiB not applied: %s", limit, e)
        return
    log.info("GPU memory limited to %d MiB (this worker's share of the device)", limit)


def _device_memory_mib(index: str) -> int | None:
    """The memory of GPU ``index`` (nvidia-smi's numbering) in MiB: NVML through nvidia-ml-py, else nvidia-smi;
    None where neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(int(index))).total) >> 20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no nvidia-ml-py, no driver, no such device: ask nvidia-smi
        pass
    try:
        out = subprocess.run(["nvidia-smi", "-i", index, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out) if out.isdigit() else None


@contextmanager
def _stderr_without(notices: tuple[bytes, ...]) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the block; afterwards its lines, but those containing one of
    ``notices``, are written to the real stderr (nothing is lost: output of other threads meanwhile comes late)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught:
                if not any(n in line for n in notices):
                    os.write(2, line)
