"""The child side of ``spec_parser``: a process that parses submitted spec text (YAML or JSON) and answers with the
parsed value, under a cap on its address space.

It imports only the YAML parser and ``scheduler.spec``: it never touches the database, the broker or the network.
Each answer is a small tuple (``("ok", value)``, ``("spec", (path, message, job, field))``, ``("memory", None)``)
because a ``SpecError`` does not survive pickling (its constructor takes more than its message).
"""

from __future__ import annotations

import json
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from scheduler.errors import SpecError
from scheduler.spec import check_shape, first_line, read_spec_text

JSON = "application/json"


def serve(conn: Connection, memory: int) -> None:
    """Parse what arrives on ``conn`` until the parent closes it. ``memory``: bytes of address space this process
    may add to what it holds once started (0: no cap)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `latentfarm serve` stops the parent, which stops this
    if memory:
        limit_memory(memory)
    conn.send(("ready", None))
    while True:
        try:
            source, media, path = conn.recv()
        except (EOFError, OSError):
            return
        answer = parse(source, media, path)
        try:
            if answer is not None:
                conn.send(answer)
                continue
        except MemoryError:  # while pickling the answer: nothing was written yet
            pass
        conn.send(("memory", None))
        return  # a process that ran out of memory is not reused: the parent starts another


def parse(source: str, media: str, path: str) -> tuple[str, Any] | None:
    """The parsed spec, or why it cannot be; None when it ran out of memory. ``check_shape`` runs here too, so what
    is sent back is small and shallow (at most 100,000 values, 64 levels) whatever the text held."""
    try:
        if media == JSON:
            try:
                raw = json.loads(source)
            except (ValueError, RecursionError) as e:
                raise SpecError(path, f"malformed JSON: {first_line(e)}") from e
        else:
            raw = read_spec_text(source, path)
        check_shape(raw, path)
        return ("ok", raw)
    except SpecError as e:
        return ("spec", (e.path, e.message, e.job, e.field))
    except MemoryError:
        return None


def limit_memory(extra: int) -> None:
    """Cap this process's address space at what it uses now plus ``extra`` bytes (Linux: RLIMIT_AS). The base is
    measured rather than assumed: the process imported whatever its parent's main module imports. Elsewhere (no
    /proc, no RLIMIT_AS) the time limit alone bounds the work."""
    try:
        import resource

        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ImportError, OSError, StopIteration, ValueError):
        return


if __name__ == "__main__":  # started by spec_parser: the socket's file descriptor, the memory cap in bytes
    serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
