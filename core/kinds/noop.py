"""``noop`` and ``sleep``: a job that does nothing useful, for tests, benchmarks and checking a farm end to end."""

from __future__ import annotations

from dataclasses import dataclass

from core.kinds.base import Kind
from core.params import require


@dataclass(frozen=True)
class NoopParams:
    """A job that does nothing useful: for tests, benchmarks and checking a farm end to end."""

    seconds: float = 0.0  # sleep this long, in short slices so a cancellation is seen
    fail: bool = False  # raise an error instead of succeeding (exercises the failure path)
    value: float = 1.0  # recorded as the metric `value`; also written to the artifact `out.json`
    transient_failures: int = 0  # the first N attempts fail with a connection error (exercises retries)
    stuck: bool = False  # sleep in one piece, never checking in (a job stuck in one long op: hard time limit)
    allocate_mb: int = 0  # hold this many MiB of memory, written to, while it sleeps (shows in its peak_rss)

    def validate(self) -> None:
        require(self.seconds >= 0, "seconds", f"must be >= 0, got {self.seconds}")
        require(self.transient_failures >= 0, "transient_failures", f"must be >= 0, got {self.transient_failures}")
        require(self.allocate_mb >= 0, "allocate_mb", f"must be >= 0, got {self.allocate_mb}")


_SUMMARY = "sleeps `seconds`, records the metric `value` and `out.json`; can fail, fail transiently or get stuck"
KINDS = (
    Kind("noop", NoopParams, "cpu", _SUMMARY, handler="workers.handlers.noop:run_noop", late_params=("allocate_mb",)),
    Kind("sleep", NoopParams, "cpu", _SUMMARY, handler="workers.handlers.noop:run_noop", late_params=("allocate_mb",)),
)
