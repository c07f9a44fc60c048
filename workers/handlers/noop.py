"""The ``noop``/``sleep`` kind: sleeps, records a metric and a small artifact; can be told to fail."""

from __future__ import annotations

import time

from core.config import NoopConfig
from workers.context import JobCancelled, JobContext


def run_noop(ctx: JobContext, config: NoopConfig) -> None:
    deadline = time.monotonic() + config.seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        if ctx.progress(1 - max(deadline - time.monotonic(), 0) / config.seconds):
            raise JobCancelled("cancelled by user")
    if config.fail:
        raise RuntimeError(f"job {ctx.job.name!r} was asked to fail (fail: true)")
    with ctx.results():
        ctx.metric("value", config.value)
        ctx.artifact_json("out.json", {"job": ctx.job.name, "value": config.value})
