"""Submitted specs are parsed in worker processes, bounded in time and memory, never on the server's event loop.

PyYAML is slow even with libyaml's scanner (its values are still made in Python): measured on a 2-core machine,
1 MiB of ``[1,1,1,...]`` (the worst: one token per two bytes) takes 2 to 3 s and about 300 MiB with libyaml,
4 to 10 s and up to 376 MiB without, and 9.8 MB took 147 s and 3.2 GB without. On the event loop
that stalls every request; in a thread it still holds the GIL. So the text goes to one of ``workers`` child
processes (``python -m scheduler.web.spec_worker``), each under an address-space cap, and the request waits for
the answer in a thread.
A child past the time limit is killed and replaced; a child out of memory answers so and is replaced.

The bounds, and why:

- ``MAX_BODY`` (1 MiB): a spec that ``check_shape`` accepts holds at most 100,000 values, which written plainly
  fit in 1 MiB (a sweep over 100,000 numbers is 690 KB; 14,000 jobs with 40-character names and a dependency
  each, 1 MiB); anything larger is refused while it is read (413).
- ``PARSE_SECONDS`` (20 s): twice the slowest 1 MiB body measured (9 s); a valid spec of that size takes 2-5 s.
- ``PARSE_MEMORY`` (768 MiB above the child's own start): twice the most a 1 MiB body was measured to take.
- ``PARSE_WORKERS`` (2) and ``MAX_WAITING`` (8): at most 2 x 768 MiB in use; at most 10 requests hold a thread of
  the server's pool (40) waiting for a parse, so reads always find one; more are told to retry (503).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from scheduler.errors import SpecError
from scheduler.web import spec_worker

MAX_BODY = 1 << 20  # bytes of a submitted spec
PARSE_SECONDS = 20.0
PARSE_MEMORY = 768 << 20  # bytes a parsing process may add to its address space
PARSE_WORKERS = 2
MAX_WAITING = 8  # requests waiting for a free worker, beyond those being parsed
START_SECONDS = 60.0  # for a worker process to start (it imports what the server's main module imports)


def _busy(why: str) -> HTTPException:
    return HTTPException(503, f"{why}: try again shortly", headers={"Retry-After": "5"})


class _Worker:
    """One child process (``python -m scheduler.web.spec_worker``) and a socket pair to it. A fresh interpreter,
    not a fork of the server (which runs threads) nor multiprocessing's spawn (which runs the server's main
    script again): it imports only the parser."""

    def __init__(self, memory: int) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(spec_worker.__file__).resolve().parents[2])  # where `scheduler` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scheduler.web.spec_worker", str(theirs.fileno()), str(memory)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as e:
            ours.close()
            raise _busy(f"the spec parser did not start ({e})") from e
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        if not self.conn.poll(START_SECONDS) or self._recv()[0] != "ready":
            self.kill()
            raise _busy("the spec parser did not start")

    def _recv(self) -> tuple[str, Any]:
        try:
            return self.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            return ("died", None)

    def parse(self, request: tuple[str, str, str], seconds: float) -> tuple[str, Any]:
        """``("ok" | "spec" | "memory" | "died" | "timeout", value)``."""
        try:
            self.conn.send(request)  # the child is ready and reads at once
        except OSError:
            return ("died", None)
        try:
            if not self.conn.poll(seconds):
                return ("timeout", None)
        except OSError:
            return ("died", None)
        return self._recv()

    def kill(self) -> None:
        self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            pass
        self.conn.close()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()


class SpecParser:
    """A small pool of parsing processes, started when first needed. ``parse`` answers the parsed spec or raises:
    SpecError (422) for malformed text, HTTPException 413 past the time or memory limit, 503 when too many
    requests already wait."""

    def __init__(self, workers: int = PARSE_WORKERS, seconds: float = PARSE_SECONDS, memory: int = PARSE_MEMORY,
                 waiting: int = MAX_WAITING) -> None:
        self.seconds = seconds
        self.memory = memory
        self._slots = threading.BoundedSemaphore(workers)
        self._capacity = workers + waiting
        self._admitted = 0
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.last_pid: int | None = None  # of the worker started last

    async def parse(self, source: str, media: str, path: str) -> Any:
        """Parse ``source`` (``media``: application/json, else YAML) in a worker process."""
        with self._lock:
            if self._admitted >= self._capacity:
                raise _busy(f"{self._admitted} specs are being parsed or wait for it")
            self._admitted += 1
        try:
            return await run_in_threadpool(self._parse, (source, media, path))
        finally:
            with self._lock:
                self._admitted -= 1

    def _parse(self, request: tuple[str, str, str]) -> Any:
        # bounded: a thread whose request was abandoned (the client left) still gives up after this long
        if not self._slots.acquire(timeout=self.seconds * (self._capacity + 1)):
            raise _busy("every spec parser is busy")
        try:
            worker = self._take()
            answer, value = worker.parse(request, self.seconds)
            if answer in ("ok", "spec") and worker.alive:
                self._give_back(worker)
            else:
                worker.kill()
        finally:
            self._slots.release()
        path = request[2]
        if answer == "ok":
            return value
        if answer == "spec":
            raise SpecError(*value)
        if answer == "timeout":
            raise HTTPException(413, f"{path}: parsing it took over {self.seconds:g} s, the most allowed: send a "
                                     "smaller spec")
        if answer == "memory":
            raise HTTPException(413, f"{path}: parsing it needs over {self.memory >> 20} MiB, the most allowed: "
                                     "send a smaller spec")
        raise HTTPException(413, f"{path}: its parser stopped (exit code {worker.exitcode}): send a smaller "
                                 "spec")

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    return worker
                worker.kill()
        worker = _Worker(self.memory)
        self.last_pid = worker.process.pid
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()

    def open(self) -> None:
        """Keep the workers that finish a parse again (after ``close``)."""
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """Stop the idle workers; busy ones stop when their parse ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

