"""Follow a batch until it is done, showing live progress: one updating line on a terminal, lines on a pipe."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from storage import queries
from storage.queries import BatchSummary
from storage.status import JobStatus
from storage.store import Store


def progress_line(store: Store, batch_id: int) -> tuple[str, BatchSummary]:
    with store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        running = queries.list_jobs(s, batch_id=batch_id, status=JobStatus.RUNNING.value, limit=3)
    c = summary.counts
    done = sum(c.get(k, 0) for k in ("succeeded", "failed", "cancelled"))
    width = 24
    filled = int(width * done / max(summary.total, 1))
    parts = [f"batch {batch_id} [{'#' * filled}{'.' * (width - filled)}] {done}/{summary.total}"]
    parts += [f"{c[k]} {k}" for k in ("succeeded", "running", "queued", "pending", "failed", "cancelled") if c.get(k)]
    line = ", ".join(parts)
    if running:
        line += " | " + ", ".join(f"{j.name} {j.progress:.0%}" for j in running)
    return line, summary


def follow(store: Store, batch_id: int, out: TextIO = sys.stderr, interval: float = 0.5,
           alive: Callable[[], bool] | None = None, timeout: float | None = None) -> BatchSummary:
    """Poll the store until the batch is settled (nothing queued or running); returns the final summary.

    ``alive`` (optional) is checked each poll: if it turns False (the embedded worker died), stop waiting.
    """
    tty = out.isatty()
    last = ""
    start = time.monotonic()
    while True:
        line, summary = progress_line(store, batch_id)
        if line != last:
            if tty:
                out.write("\r\033[K" + line[: 200])
            else:
                out.write(line + "\n")
            out.flush()
            last = line
        if summary.settled:
            break
        if alive is not None and not alive():
            out.write("\nthe worker stopped before the batch finished\n")
            break
        if timeout is not None and time.monotonic() - start > timeout:
            break
        time.sleep(interval)
    if tty:
        out.write("\n")
    return summary
