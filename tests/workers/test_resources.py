"""``workers.resources``: the peak resident memory of a block, by the kernel's high-water mark or by sampling; the
GPU through NVML, absent without a driver; which devices a worker watches."""

from __future__ import annotations

import logging
import os
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from workers import resources
from workers.resources import Gpu, Meter, _watched

MIB = 1 << 20
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _hold(mib: int, seconds: float = 0.0) -> None:
    block = bytearray(b"\x01") * (mib * MIB)  # written: resident
    time.sleep(seconds)
    del block


@linux
def test_the_peak_is_the_blocks_own_by_the_high_water_mark() -> None:
    meter = Meter(None)
    try:
        if meter._clear is None:
            pytest.skip("this kernel refuses to reset the high-water mark (/proc/self/clear_refs)")
        usage = meter.start()
        _hold(150)
        big = meter.stop(usage)
        small = meter.stop(meter.start())  # the mark was reset: the 150 MiB freed before do not count
        assert big["peak_rss"] - small["peak_rss"] >= 140 * MIB, (big, small)
        assert small["peak_rss"] > 10 * MIB
        assert 0 <= small["wall_seconds"] < 1 and 0 <= small["cpu_seconds"] < 1
        assert "gpu_peak_memory" not in big or Gpu.open(None) is not None
    finally:
        meter.close()


@linux
def test_where_the_mark_cannot_be_reset_resident_memory_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_open_clear_refs", lambda: None)
    meter = Meter(None)
    try:
        assert meter._statm is not None and meter._thread is not None
        usage = meter.start()
        _hold(150, seconds=3 * resources.SAMPLE_SECONDS)  # held across samples: seen
        held = meter.stop(usage)
        bare = meter.stop(meter.start())
        assert held["peak_rss"] - bare["peak_rss"] >= 140 * MIB, (held, bare)
    finally:
        meter.close()
    meter._thread.join(2 * resources.SAMPLE_SECONDS + 1)
    assert not meter._thread.is_alive()  # closed: nothing left to sample


def test_without_an_nvidia_driver_there_are_no_gpu_metrics_and_no_error(caplog: pytest.LogCaptureFixture) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # NVMLError_LibraryNotFound where no driver is installed
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with caplog.at_level(logging.DEBUG, logger="workers.resources"):
        assert Gpu.open(None) is None
        assert Gpu.open("0") is None
    assert "NVML" in caplog.text
    meter = Meter("0")
    try:
        values = meter.stop(meter.start())
        assert set(values) == {"wall_seconds", "cpu_seconds", "peak_rss"}
    finally:
        meter.close()


@pytest.mark.parametrize("gpu,visible,watched", [
    ("1", "0,1", ["1"]),  # the worker's own GPU (LATENTFARM_GPU) first
    (None, "2,3", ["2", "3"]),
    (None, "GPU-8f3c", ["GPU-8f3c"]),
    (None, "2,-1,3", ["2"]),  # CUDA stops at the first invalid entry
    (None, "", []),  # no device visible: a CPU worker
    (None, "-1", []),
    (None, None, None),  # unset: every device
])
def test_the_devices_a_worker_watches(monkeypatch: pytest.MonkeyPatch, gpu: str | None, visible: str | None,
                                      watched: list[str] | None) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert _watched(gpu) == watched
    if watched == []:
        assert Gpu.open(gpu) is None


class DriverAnswers:
    """Stands in for ``pynvml`` where there is no GPU: the four calls ``Gpu`` makes, answered from set values."""

    def __init__(self, procs: list[tuple[int, int | None]], used: int, util: float, fail_after: int = -1) -> None:
        self.procs = procs
        self.used = used
        self.util = util
        self.fail_after = fail_after  # calls answered before every call raises, as a driver that went away
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        if 0 <= self.fail_after < self.calls:
            raise RuntimeError("NVML: GPU is lost")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:  # noqa: N802 - pynvml's names
        self._call()
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs]

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:  # noqa: N802
        self._call()
        return SimpleNamespace(used=self.used, total=80 << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:  # noqa: N802
        self._call()
        return SimpleNamespace(gpu=self.util, memory=0)


NOBODY = 2**22 + 12345  # past the largest pid Linux gives: a process of another PID namespace


@pytest.mark.parametrize("procs,memory", [
    ([(os.getpid(), 300 * MIB), (1, 50 * MIB)], 300 * MIB),  # this process's own, as NVML lists it
    ([(os.getpid(), None)], 0),  # listed without a figure (Windows' WDDM)
    ([(NOBODY, 7 * MIB)], 900 * MIB),  # NVML's pids are another namespace's (a container): the device's used
    ([(1, 7 * MIB)], 0),  # another process of this namespace holds it: this one holds none
    ([], 0),
])
def test_gpu_memory_is_this_processs(procs: list[tuple[int, int | None]], memory: int) -> None:
    assert Gpu(DriverAnswers(procs, 900 * MIB, 40.0), ["h0"], pinned=True).sample() == (memory, 40.0)


def test_gpu_samples_make_a_peak_and_a_mean_and_a_failing_driver_ends_them(monkeypatch: pytest.MonkeyPatch,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    nvml = DriverAnswers([(os.getpid(), 512 * MIB)], 0, 30.0)
    monkeypatch.setattr(Gpu, "open", classmethod(lambda cls, gpu: Gpu(nvml, ["h0", "h1"], pinned=True)))
    meter = Meter("0")
    try:
        usage = meter.start()
        time.sleep(3 * resources.SAMPLE_SECONDS)
        values = meter.stop(usage)
        assert values["gpu_peak_memory"] == 2 * 512 * MIB  # over its two devices
        assert values["gpu_util_mean"] == 30.0
        short = meter.stop(meter.start())  # shorter than the interval: the latest sample
        assert short["gpu_util_mean"] == 30.0
        nvml.fail_after = nvml.calls
        with caplog.at_level(logging.DEBUG, logger="workers.resources"):
            time.sleep(3 * resources.SAMPLE_SECONDS)
        assert meter.gpu is None and caplog.text.count("GPU is lost") == 1  # said once, then no more sampling
        after = meter.stop(meter.start())
        assert set(after) == {"wall_seconds", "cpu_seconds", "peak_rss"}
    finally:
        meter.close()
