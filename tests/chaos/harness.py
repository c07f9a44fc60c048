"""Machinery for the chaos tests: real processes (workers, the scheduler, redis-server) each in its own process
group, a TCP proxy that can cut PostgreSQL away from the workers, polling helpers, the SQL that counts what
happened (from the ``events`` table), and the figures each test reports.

Nothing here sleeps for correctness: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from scheduler.control import ControlPlane
from scheduler.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REPORT_FILE = "chaos-report.json"


# -- waiting ------------------------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
               details: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds saying
    ``what`` did not happen (and ``details()``, if given: the state that was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f": {details()}" if details is not None else ""
            raise AssertionError(f"{what}: not within {timeout:g} s{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- processes ----------------------------------------------------------------------------------------------------


def latentfarm_argv(*args: str) -> list[str]:
    """The ``latentfarm`` command as this interpreter runs it (the project's venv)."""
    return [sys.executable, "-m", "scheduler.cli", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a farm process: ours without any LATENTFARM_* of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTFARM_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    env.update(extra)
    return env


class Processes:
    """Every process a test starts, each the leader of its own process group (``start_new_session``), its
    output in ``<log_dir>/<name>.log``. ``kill_all`` (the fixture's finalizer) SIGKILLs the groups still alive."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self.procs[name] = proc
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 20) -> None:
        """Send ``sig`` to the process's group (it leads one) and wait for the process to exit."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self, prefix: str = "", tail: int = 1500) -> str:
        return "\n".join(f"--- {n} (exit {p.poll()}) ---\n{self.log(n, tail)}" for n, p in sorted(self.procs.items())
                         if n.startswith(prefix))

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self.procs.values())
        for proc in procs:
            self.kill(proc)


_ARMED = ("import sys, scheduler.cli, scheduler.control, scheduler.lifecycle, storage.store; "
          "sys.stdin.readline(); scheduler.cli.main()")


class ArmedCommand:
    """A ``latentfarm`` command in a process of its own that has imported the CLI and waits for a line on its
    stdin before it runs ``main()`` with its arguments (those after ``-c CODE`` are ``sys.argv[1:]``)."""

    def __init__(self, procs: Processes, name: str, args: tuple[str, ...], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.out = cwd / f"{name}.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", _ARMED, *args], env=env, cwd=cwd, stdin=subprocess.PIPE,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.procs[name] = self.proc  # killed with the others should the test end first

    def fire(self, timeout: float = 60) -> str:
        """Run the command now; returns its output (it must exit 0)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died starting: its output says why
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        code = self.proc.wait(timeout)
        text = self.out.read_text()
        assert code == 0, f"latentfarm {' '.join(self.args)} exited {code}\n{text}"
        return text


class RedisServer:
    """A redis-server of the test's own on a free port, without persistence: a restart loses every message."""

    def __init__(self, procs: Processes, cwd: Path, binary: str = "redis-server") -> None:
        self.procs = procs
        self.cwd = cwd
        self.binary = shutil.which(binary) or binary
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        self.starts += 1
        self.proc = self.procs.spawn(f"redis-{self.starts}", [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.cwd)], env=clean_env(), cwd=self.cwd)
        wait_until(self.ping, timeout, f"redis-server on port {self.port} answers PING",
                   details=lambda: self.procs.log(f"redis-{self.starts}"))

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
        except redis.exceptions.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to the clients."""
        assert self.proc is not None
        Processes.kill(self.proc)


# -- a TCP proxy that can cut the line ----------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``. ``cut()`` resets every open connection and resets each new
    one at once (a database that went away); ``restore()`` forwards again. Threads: one accepting, one per
    connection (a select loop over its two sockets)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._cut = threading.Event()
        self._closed = threading.Event()
        self.accepted = 0
        self.refused = 0  # connections reset on arrival while cut
        self.reset = 0  # open connections reset by cut()
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        with self._lock:
            self._cut.set()
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            self.reset += 1
            for s in pair:
                _reset(s)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set() or self._closed.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                if self._cut.is_set():  # cut while we connected upstream
                    self.refused += 1
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.add(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(pair,), name=f"proxy-{self.port}-pump", daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        other = {client: server, server: client}
        try:
            while True:
                readable, _, _ = select.select([client, server], [], [], 1.0)
                with self._lock:
                    if pair not in self._pairs:
                        return  # cut (the sockets were reset) or closed
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    other[s].sendall(data)
        except (OSError, ValueError):  # reset by cut() under our feet
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for s in pair:
                with contextlib.suppress(OSError):
                    s.close()


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), waking any thread blocked on the socket."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


# -- the farm -----------------------------------------------------------------------------------------------------


@dataclass
class Farm:
    """A farm on real services: the test's control plane (submits, reads SQL), and its worker and scheduler
    processes. ``worker_db_url`` is what the workers use (a proxy in front of PostgreSQL, or the same URL)."""

    tmp: Path
    db_url: str
    broker_url: str
    lease: float
    procs: Processes
    resend_after: float = 2.0
    retry_backoff: float = 0.2
    worker_db_url: str | None = None
    cp: ControlPlane = field(init=False)
    workers_started: int = 0

    def __post_init__(self) -> None:
        self.settings = Settings(database_url=self.db_url, broker_url=self.broker_url,
                                 artifacts_dir=self.tmp / "artifacts", data_dir=self.tmp / "data",
                                 lease_seconds=self.lease, retry_backoff=self.retry_backoff,
                                 resend_after=self.resend_after, worker_name="chaos-test")
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.cp = ControlPlane.open(self.settings, upgrade=True)
        self.engine = self.cp.store.engine

    def env(self, database_url: str | None = None) -> dict[str, str]:
        return clean_env(LATENTFARM_DATABASE_URL=database_url or self.db_url, LATENTFARM_BROKER_URL=self.broker_url,
                         LATENTFARM_ARTIFACTS=str(self.settings.artifacts_dir),
                         LATENTFARM_DATA_DIR=str(self.settings.data_dir),
                         LATENTFARM_LEASE_SECONDS=f"{self.lease:g}",
                         LATENTFARM_RESEND_AFTER=f"{self.resend_after:g}",
                         LATENTFARM_RETRY_BACKOFF=f"{self.retry_backoff:g}")

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """One worker process: ``latentfarm worker -Q cpu --pool solo -c 1 --name <name>@chaos``."""
        self.workers_started += 1
        return self.procs.spawn(name, latentfarm_argv("worker", "-Q", "cpu", "--pool", "solo", "-c", "1", "--name",
                                                      f"{name}@chaos", "--loglevel", "INFO"),
                                env=self.env(self.worker_db_url), cwd=self.tmp)

    def start_scheduler(self, interval: float = 0.5) -> subprocess.Popen[bytes]:
        """The reaper: ``latentfarm scheduler --interval 0.5``, on PostgreSQL directly."""
        return self.procs.spawn("scheduler", latentfarm_argv("scheduler", "--interval", f"{interval:g}",
                                                             "--status-every", "5"),
                                env=self.env(), cwd=self.tmp)

    def armed_cli(self, *args: str) -> ArmedCommand:
        """``latentfarm ARGS`` started now, its modules imported, run when ``fire()`` is called: a command that
        must land at a given moment does not wait for Python to start on a busy machine."""
        return ArmedCommand(self.procs, f"cli-{args[0]}", args, self.env(), self.tmp)

    def submit(self, name: str, jobs: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
        """Submit a batch through the control plane API. Returns its id and the job ids by name."""
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"batch": name, "jobs": jobs}, sort_keys=False))
        result = self.cp.submit(self.cp.load(path), no_cache=True)
        return result.batch_id, result.job_ids

    def close(self) -> None:
        self.cp.app.close()

    # -- reading what happened, in SQL --

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(sa.text(query), params))

    def counts(self, batch: int) -> dict[str, int]:
        return {s: n for s, n in self.sql("SELECT status, count(*) FROM jobs WHERE batch_id = :b GROUP BY status",
                                          b=batch)}

    def count(self, batch: int, status: str) -> int:
        return self.counts(batch).get(status, 0)

    def status_events(self, batch: int, status: str) -> dict[int, int]:
        """Per job of the batch: how many status events moved it to ``status`` (0 for none)."""
        rows = self.sql("SELECT j.id, count(e.id) FROM jobs j LEFT JOIN events e ON e.job_id = j.id "
                        "AND e.kind = 'status' AND e.status = :s WHERE j.batch_id = :b GROUP BY j.id",
                        b=batch, s=status)
        return {jid: n for jid, n in rows}

    def events_count(self, batch: int, where: str, **params: Any) -> int:
        return int(self.sql(f"SELECT count(*) FROM events e JOIN jobs j ON j.id = e.job_id "
                            f"WHERE j.batch_id = :b AND ({where})", b=batch, **params)[0][0])

    def standard_figures(self, batch: int) -> dict[str, Any]:
        """What every chaos test reports: outcomes, claims, and what the reaper and the workers did about faults."""
        succeeded = self.status_events(batch, "succeeded")
        counts = self.counts(batch)
        return {
            "jobs": len(succeeded),
            "succeeded": counts.get("succeeded", 0),
            "statuses": counts,
            "claims": sum(self.status_events(batch, "running").values()),
            "requeued_by_reaper": self.events_count(batch, "e.kind = 'status' AND e.status = 'queued' "
                                                           "AND e.worker = 'reaper'"),
            "transient_retries": self.events_count(batch, "e.kind = 'status' AND e.status = 'queued' "
                                                          "AND e.message LIKE 'transient error%'"),
            "messages_resent": self.events_count(batch, "e.kind = 'message' AND e.message LIKE 'message re-sent%'"),
            "duplicates_dropped": self.events_count(batch, "e.kind = 'message' "
                                                           "AND e.message LIKE 'message dropped%'"),
            "max_attempts_used": int(self.sql("SELECT coalesce(max(attempts), 0) FROM jobs WHERE batch_id = :b",
                                              b=batch)[0][0]),
            "lost": sum(1 for n in succeeded.values() if n == 0),
            "duplicated": sum(1 for n in succeeded.values() if n > 1),
        }

    def successes_after(self, batch: int, since: datetime) -> int:
        return self.events_count(batch, "e.kind = 'status' AND e.status = 'succeeded' AND e.time > :t", t=since)

    def first_success_after(self, batch: int, since: datetime) -> datetime | None:
        return self.sql("SELECT min(e.time) FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.batch_id = :b "
                        "AND e.kind = 'status' AND e.status = 'succeeded' AND e.time > :t", b=batch, t=since)[0][0]

    def children_started_after_parents(self, batch: int) -> list[tuple[int, int]]:
        """(parent, child) edges where the child was claimed before its parent's (last) success: must be none."""
        return [tuple(r) for r in self.sql(
            "SELECT d.parent_id, d.child_id FROM job_deps d JOIN jobs c ON c.id = d.child_id "
            "WHERE c.batch_id = :b AND (SELECT min(e.time) FROM events e WHERE e.job_id = d.child_id "
            "AND e.kind = 'status' AND e.status = 'running') < (SELECT max(e.time) FROM events e "
            "WHERE e.job_id = d.parent_id AND e.kind = 'status' AND e.status = 'succeeded')", b=batch)]


# -- figures ------------------------------------------------------------------------------------------------------


def report(test: str, figures: dict[str, Any], tmp: Path) -> Path:
    """Print the figures (``pytest -s`` shows them), write them as JSON under the test's tmp dir, and append them to
    ``$LATENTFARM_CHAOS_REPORT_DIR/chaos-report.json`` (a JSON list, one entry per test run) when that is set."""
    entry = {"test": test, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **figures}
    print(f"\nchaos figures [{test}]: " + json.dumps(figures, sort_keys=False, default=str))
    path = tmp / f"{test}-figures.json"
    path.write_text(json.dumps(entry, indent=2, default=str))
    out_dir = os.environ.get("LATENTFARM_CHAOS_REPORT_DIR")
    if out_dir:
        target = Path(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        with open(target / REPORT_FILE, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # tests of parallel runs append one at a time
            f.seek(0)
            text = f.read().strip()
            try:
                entries = json.loads(text) if text else []
            except json.JSONDecodeError:
                entries = []
            if not isinstance(entries, list):
                entries = [entries]
            entries.append(entry)
            f.seek(0)
            f.truncate()
            f.write(json.dumps(entries, indent=2, default=str) + "\n")
    return path


def summarize_timeline(samples: Iterable[tuple[float, int]]) -> str:
    return " ".join(f"{t:.1f}s:{n}" for t, n in samples)
