"""Following a batch to its end with a progress bar: tqdm's ``auto`` bar, a widget in a notebook."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

from scheduler.client.backend import BatchState


def follow(states: Iterator[BatchState], progress: bool, timeout: float | None) -> BatchState:
    """Read ``states`` to the last (or for ``timeout`` seconds), showing a tqdm bar of the jobs that have ended
    and writing each new warning once."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    bar: Any = None
    warned: set[str] = set()
    last: BatchState | None = None
    try:
        for last in states:
            if progress and bar is None:
                bar = tqdm(total=last.total, desc=f"batch {last.id} {last.name}", unit="job", file=sys.stderr)
            for warning in (w for w in last.warnings if w not in warned):
                warned.add(warning)
                (bar.write if bar is not None else print)(f"warning: {warning}", file=sys.stderr)
            if bar is not None:
                bar.total = last.total  # a search adds its trials as it goes
                bar.n = last.finished
                bar.set_postfix_str(", ".join(f"{n} {s}" for s, n in sorted(last.counts.items())), refresh=True)
            if timeout is not None and time.monotonic() - start > timeout:
                break
    finally:
        if bar is not None:
            bar.close()
        close = getattr(states, "close", None)
        if close is not None:  # a batch run here, left before its end: its worker stops, its job goes back
            close()
    assert last is not None, "a batch is followed from its first state"
    return last

