"""A job's memory budget, enforced by the kernel: while a job runs, this process's address space may grow by
``LATENTFARM_JOB_MEMORY`` at most (``RLIMIT_AS``). An allocation beyond it fails in the job (numpy raises
MemoryError, TensorFlow an OOM error), which then fails with "out of memory", and the worker process goes on; the
kernel's OOM killer, which would take the process (or another) down, is never reached.

The limit is the process's: it is set when the first of its jobs starts and lifted when the last ends, so with
several jobs in one process at once (a threads pool) the first one's budget holds for all.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int] | None = None


def address_space() -> int:
    """This process's virtual memory size now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def memory_budget(budget: int) -> Iterator[None]:
    """For the block, let this process's address space grow by ``budget`` bytes at most (see the module)."""
    global _active, _saved
    with _lock:
        _active += 1
        if _active == 1:
            try:
                _saved = resource.getrlimit(resource.RLIMIT_AS)
                hard = _saved[1]
                limit = address_space() + budget
                resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else
                                                        min(limit, hard), hard))
            except (OSError, ValueError) as e:  # no /proc, or a limit the system refuses: the job runs without
                _saved = None
                log.warning("cannot limit this job's memory: %s", e)
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                resource.setrlimit(resource.RLIMIT_AS, _saved)
                _saved = None
