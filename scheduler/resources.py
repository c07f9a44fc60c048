"""The resources a job used, as its worker records them (``workers.resources``): final metrics (step 0) under the
keys below, so that ``--where``, ``--sort``, ``compare`` and the API take them like any metric, and shown apart
from the job's own metrics (``latentfarm show``, the job page, ``resources`` on the API's job) in readable units.
"""

from __future__ import annotations

from collections.abc import Mapping

# key: unit. Bytes and seconds are stored as such; a percentage from 0 to 100.
RESOURCE_METRICS: dict[str, str] = {
    "wall_seconds": "s",  # the handler's run, from its start to its return (the claim and the completion excluded)
    "cpu_seconds": "s",  # the worker process's CPU time (user + system, all its threads) over that run
    "peak_rss": "bytes",  # the process's peak resident memory during the run
    "gpu_peak_memory": "bytes",  # the device memory the process held at most (sampled): GPU workers with NVML only
    "gpu_util_mean": "%",  # the device's mean utilisation over the run (sampled): GPU workers with NVML only
}
LABELS = {"wall_seconds": "wall", "cpu_seconds": "CPU", "peak_rss": "peak RSS", "gpu_peak_memory": "GPU memory",
          "gpu_util_mean": "GPU utilisation"}


def resources_of(values: Mapping[str, float]) -> dict[str, float]:
    """The resource metrics among a job's final ``values``, in the order of ``RESOURCE_METRICS``."""
    return {k: values[k] for k in RESOURCE_METRICS if k in values}


def without_resources(values: Mapping[str, float]) -> dict[str, float]:
    """A job's final ``values`` less the resource metrics: what the job itself recorded."""
    return {k: v for k, v in values.items() if k not in RESOURCE_METRICS}


def format_bytes(n: float) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n:.0f} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_resource(key: str, value: float) -> str:
    """A resource metric's value for a person (``312.4 MiB``, ``1.2 s``, ``0.8 ms``, ``43 %``); another as a number."""
    unit = RESOURCE_METRICS.get(key)
    if unit == "bytes":
        return format_bytes(value)
    if unit == "s":
        if value < 0.01:
            return f"{value * 1000:.2g} ms"
        return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    if unit == "%":
        return f"{value:.0f} %"
    return f"{value:.4g}"
