"""The ``noop``/``sleep`` kind: sleeps, records a metric and a small artifact; can be told to fail, to fail
transiently on its first attempts, or to get stuck (for tests of the failure paths, retries and time limits)."""

from __future__ import annotations

import time

from core.config import NoopConfig
from workers.context import JobContext


def run_noop(ctx: JobContext, config: NoopConfig) -> None:
    if ctx.job.attempts <= config.transient_failures:
        raise ConnectionError(f"job {ctx.job.name!r}: transient failure on attempt {ctx.job.attempts} "
                              f"(transient_failures: {config.transient_failures})")
    deadline = time.monotonic() + config.seconds
    if config.stuck:
        time.sleep(config.seconds)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        ctx.progress(1 - max(deadline - time.monotonic(), 0) / config.seconds)
    if config.fail:
        raise RuntimeError(f"job {ctx.job.name!r} was asked to fail (fail: true)")
    with ctx.results():
        ctx.metric("value", config.value)
        ctx.artifact_json("out.json", {"job": ctx.job.name, "value": config.value})
