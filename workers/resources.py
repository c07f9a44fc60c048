"""A job's resources, measured in its worker process around its handler and recorded with its success, as final
metrics (step 0) in the transaction that marks it succeeded (keys and units: ``scheduler.resources``).

- ``wall_seconds``: ``time.perf_counter`` around the handler.
- ``cpu_seconds``: ``time.process_time`` around it: the process's CPU time, all its threads' (TensorFlow's and
  BLAS's pools included). The solo pool runs one job at a time in a process, so it is the job's; in a threads
  pool, jobs that run at the same time share the process and each counts all of it.
- ``peak_rss``: the process's peak resident memory while the job ran, in bytes. On Linux the kernel keeps the
  process's high-water mark (``VmHWM`` in ``/proc/self/status``): it is reset to the current size when the job
  starts (``5`` written to ``/proc/self/clear_refs``) and read when it ends, so the peak is exact and costs two
  system calls. Where the reset is refused, the resident size (``/proc/self/statm``) is sampled at the start, at
  the end and every ``SAMPLE_SECONDS`` between; without ``/proc``, it is the process's peak since it started
  (``ru_maxrss``). In a threads pool the mark is reset only when no other job of the process is running, so a
  job's peak may include a neighbour's.
- ``gpu_peak_memory`` (bytes) and ``gpu_util_mean`` (percent): where ``nvidia-ml-py`` is installed, the NVIDIA
  driver answers and the worker has a GPU (``LATENTFARM_GPU``, else ``CUDA_VISIBLE_DEVICES``, else every device
  NVML lists), sampled every ``SAMPLE_SECONDS`` by one thread per process. Memory is what NVML lists this
  process holding (a framework's allocator keeps what it took: memory that an earlier job in the process
  reserved counts too); where NVML lists only processes of another PID namespace (in a container), the device's
  used memory. Utilisation is the device's, shared by every job on it (K jobs per GPU see the same). A job
  shorter than the interval takes the latest sample. Without the library, a driver or a GPU there are no GPU
  metrics; an NVML error is logged once (at debug) and ends the GPU sampling of the process, never a job.

Per job this costs a few clock reads and system calls, no thread switch and no database round trip (the metrics
join the completing transaction's). NVML is initialised and the sampling thread started once per process, at its
first job. A job that fails, is cancelled or is handed back records none.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

from workers.context import JobContext

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.25  # between samples of a GPU (and of the resident size where the high-water mark can't be reset)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Usage:
    """One job's measures so far."""

    __slots__ = ("wall", "cpu", "rss_peak", "gpu_peak", "util_sum", "samples")

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.rss_peak = 0
        self.gpu_peak = 0
        self.util_sum = 0.0
        self.samples = 0  # GPU samples taken

    def add_gpu(self, memory: int, util: float) -> None:
        self.gpu_peak = max(self.gpu_peak, memory)
        self.util_sum += util
        self.samples += 1


class Gpu:
    """The GPUs a worker process watches, through NVML (``pynvml``, initialised once)."""

    def __init__(self, nvml: Any, handles: list[Any], pinned: bool) -> None:
        self.nvml = nvml
        self.handles = handles
        self.pinned = pinned  # the worker was given its devices (not every device NVML lists)

    @classmethod
    def open(cls, gpu: str | None) -> Gpu | None:
        """The devices of a worker pinned to ``gpu`` (``Settings.gpu``), else those ``CUDA_VISIBLE_DEVICES`` names,
        else all; None where there is none, or no NVML library or driver."""
        watched = _watched(gpu)
        if watched == []:
            return None
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            if watched is None:
                handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            else:
                handles = [pynvml.nvmlDeviceGetHandleByIndex(int(d)) if d.isdigit()
                           else pynvml.nvmlDeviceGetHandleByUUID(d) for d in watched]
        except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, _NotFound, ...: no GPU metrics
            log.debug("no GPU metrics in this worker process: NVML: %s", e)
            return None
        return cls(pynvml, handles, pinned=watched is not None) if handles else None

    def sample(self) -> tuple[int, float]:
        """(device memory this process holds in bytes, summed over its devices; their mean utilisation in %)."""
        nvml, pid = self.nvml, os.getpid()
        memory, util = 0, 0.0
        for h in self.handles:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
            mine = [p for p in procs if p.pid == pid]
            if mine:
                memory += sum(p.usedGpuMemory or 0 for p in mine)
            elif procs and not any(os.path.exists(f"/proc/{p.pid}") for p in procs):
                memory += int(nvml.nvmlDeviceGetMemoryInfo(h).used)  # NVML's pids are another namespace's
            util += float(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        return memory, util / len(self.handles)


def _watched(gpu: str | None) -> list[str] | None:
    """The device ids (NVML index or UUID) a worker uses: ``gpu``, else ``CUDA_VISIBLE_DEVICES``'s (up to its first
    invalid entry, as CUDA reads it), else None (every device)."""
    if gpu:
        return [gpu]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    found = []
    for d in (d.strip() for d in visible.split(",")):
        if not d or d.startswith("-"):
            break
        found.append(d)
    return found


class Meter:
    """This process's means of measuring, opened at its first job (a forked child opens its own)."""

    def __init__(self, gpu: str | None) -> None:
        self._lock = threading.Lock()
        self._running: set[Usage] = set()
        self._clear = _open_clear_refs()
        self._status = _open("/proc/self/status") if self._clear is not None else None
        self._statm = _open("/proc/self/statm") if self._status is None else None
        self.gpu = Gpu.open(gpu)
        self._latest: tuple[int, float] | None = None  # the latest GPU sample
        self._thread: threading.Thread | None = None
        if self.gpu is not None or self._statm is not None:
            self._thread = threading.Thread(target=self._sample, name="latentfarm-resources", daemon=True)
            self._thread.start()

    def start(self) -> Usage:
        usage = Usage()
        with self._lock:
            alone = not self._running
            self._running.add(usage)
        if self._clear is not None:
            if alone:
                os.write(self._clear, b"5")  # the high-water mark is now the current resident size
        elif self._statm is not None:
            usage.rss_peak = self._resident()
        return usage

    def stop(self, usage: Usage) -> dict[str, float]:
        """``usage``'s final values, by metric key."""
        wall, cpu = time.perf_counter() - usage.wall, time.process_time() - usage.cpu
        with self._lock:
            self._running.discard(usage)
            latest = self._latest
        if self._status is not None:
            rss = self._high_water()
        elif self._statm is not None:
            rss = self._resident()
        else:
            rss = _max_rss()
        values = {"wall_seconds": wall, "cpu_seconds": cpu, "peak_rss": float(max(rss, usage.rss_peak))}
        if usage.samples == 0 and latest is not None:
            usage.add_gpu(*latest)
        if usage.samples:
            values["gpu_peak_memory"] = float(usage.gpu_peak)
            values["gpu_util_mean"] = usage.util_sum / usage.samples
        return values

    def close(self) -> None:
        """Close its files (in a forked child, whose copies name the parent's ``/proc`` entries); its sampling
        thread, if any, ends."""
        fds = (self._clear, self._status, self._statm)
        self._clear = self._status = self._statm = None
        self.gpu = None
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def _high_water(self) -> int:
        assert self._status is not None
        data = os.pread(self._status, 8192, 0)
        at = data.index(b"VmHWM:") + 6
        return int(data[at:data.index(b"kB", at)]) * 1024

    def _resident(self) -> int:
        fd = self._statm
        return int(os.pread(fd, 200, 0).split()[1]) * _PAGE if fd is not None else 0

    def _sample(self) -> None:
        """The sampling thread: until there is nothing left to sample (the GPU failed, the meter was closed)."""
        while self.gpu is not None or self._statm is not None:
            time.sleep(SAMPLE_SECONDS)
            gpu = self._sample_gpu()
            rss = self._resident() if self._statm is not None and self._running else 0
            with self._lock:
                if gpu is not None:
                    self._latest = gpu
                for usage in self._running:
                    usage.rss_peak = max(usage.rss_peak, rss)
                    if gpu is not None:
                        usage.add_gpu(*gpu)

    def _sample_gpu(self) -> tuple[int, float] | None:
        gpu = self.gpu
        if gpu is None:
            return None
        try:
            return gpu.sample()
        except Exception as e:  # a driver that went away, a device that fell off the bus: no more GPU metrics
            log.debug("GPU metrics stop in this worker process: NVML: %s", e)
            self.gpu = None
            self._latest = None
            return None


def _open(path: str, flags: int = os.O_RDONLY) -> int | None:
    try:
        return os.open(path, flags | _CLOEXEC)
    except OSError:
        return None


def _open_clear_refs() -> int | None:
    """``/proc/self/clear_refs``, if this process may reset its high-water mark through it (Linux >= 4.0)."""
    fd = _open("/proc/self/clear_refs", os.O_WRONLY)
    if fd is None:
        return None
    try:
        os.write(fd, b"5")
    except OSError:
        os.close(fd)
        return None
    return fd


def _max_rss() -> int:
    """The process's peak resident size since it started: ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


_meter: Meter | None = None
_meter_lock = threading.Lock()


def meter(gpu: str | None) -> Meter:
    """This process's meter, opened on first use (``gpu``: the worker's ``Settings.gpu``)."""
    global _meter
    m = _meter
    if m is None:
        with _meter_lock:
            if _meter is None:
                _meter = Meter(gpu)
            m = _meter
    return m


def _after_fork() -> None:
    global _meter
    if _meter is not None:
        _meter.close()
    _meter = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class measured:  # noqa: N801 - used as a context manager, as contextlib's are
    """Measure the block (a job's handler); if it returns, record the job's resources with its success. A
    measurement that fails (a ``/proc`` file gone) is logged and skipped, never the job's failure."""

    __slots__ = ("ctx", "usage")

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None

    def __enter__(self) -> None:
        try:
            self.usage = meter(self.ctx.settings.gpu).start()
        except Exception:
            log.exception("job %s: its resources are not measured", self.ctx.job.id)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.usage is None:
            return
        try:
            values = meter(self.ctx.settings.gpu).stop(self.usage)
        except Exception:
            log.exception("job %s: its resources are not measured", self.ctx.job.id)
            return
        if kind is None:
            with self.ctx.results():
                self.ctx.metrics(values)
