"""``noop``/``sleep``: sleeps, records a metric and a small artifact; can be told to fail, to fail transiently on
its first attempts, to get stuck (for tests of the failure paths, retries and time limits), or to hold memory (for
tests of the resources recorded)."""

from __future__ import annotations

import time

from core.kinds.noop import NoopParams
from workers.context import JobContext


def run_noop(ctx: JobContext, params: NoopParams) -> None:
    if ctx.job.attempts <= params.transient_failures:
        raise ConnectionError(f"job {ctx.job.name!r}: transient failure on attempt {ctx.job.attempts} "
                              f"(transient_failures: {params.transient_failures})")
    held = bytearray(b"\x01") * (params.allocate_mb << 20)  # every page written: resident, not just reserved
    deadline = time.monotonic() + params.seconds
    if params.stuck:
        time.sleep(params.seconds)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        ctx.progress(1 - max(deadline - time.monotonic(), 0) / params.seconds)
    if params.fail:
        raise RuntimeError(f"job {ctx.job.name!r} was asked to fail (fail: true)")
    del held
    with ctx.results():
        ctx.metric("value", params.value)
        ctx.artifact_json("out.json", {"job": ctx.job.name, "value": params.value})
