"""Hosts that really are apart, on one machine: Linux network namespaces joined by veth pairs.

``hosts_apart`` makes a "control" namespace with a bridge, and one namespace per worker host, each joined to the
bridge by a veth pair: the hosts reach each other only on the addresses of that network (10.<n>.0.0/24), never this
machine's own services on 127.0.0.1 nor anything beyond. Each host gets its own working directory, HOME and cache
(no directory is shared between hosts). ``start_redis``, ``start_postgres`` and ``start_s3`` run the farm's
services inside the control namespace, on its bridge address. Everything the context made (processes in its
namespaces, the namespaces, and so the veth pairs) is removed when it ends, even on failure.

Needs root and iproute2 (``ip netns``): locally a test without them skips; under CI=true it fails
(``tests.services.unavailable``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests import services

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/usr/lib/postgresql"))


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Host:
    """One "machine": a network namespace, its address on the farm's network and its own directories."""

    name: str  # what the test calls it: control, h1, h2
    netns: str
    address: str
    root: Path  # its working directory; HOME and the cache lie inside
    link: str | None = None  # its end of the veth pair (None for control, which holds the bridge)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # directories outside ``root``, removed with the network

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        """``base`` with this host's HOME, cache and working directory variables."""
        return {**base, "HOME": str(self.home), "LATENTFARM_CACHE_DIR": str(self.root / "cache"),
                "TMPDIR": str(self.root / "tmp"), **extra}

    def argv(self, cmd: Sequence[str], user: str | None = None) -> list[str]:
        """``cmd`` run in this host's network namespace, and in a UTS namespace of its own named after the host (so
        ``socket.gethostname()`` there says ``h1``), as ``user`` if given."""
        as_user = ["runuser", "-u", user, "--"] if user else []
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.name, *as_user, *cmd]

    def run(self, cmd: Sequence[str], env: dict[str, str], timeout: float = 120, check: bool = True,
            user: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(cmd, user), cwd=cwd or self.root, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n"
                                 f"{proc.stderr}")
        return proc

    def start(self, cmd: Sequence[str], env: dict[str, str], log: str, user: str | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` on this host, its output in ``<root>/<log>``; stopped when the network goes."""
        out: IO[bytes] = open(self.root / log, "ab")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(self.argv(cmd, user), cwd=cwd or self.root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace") if path.exists() else ""

    def set_link(self, up: bool) -> None:
        """Plug this host's cable in or out (its veth end up or down): a partition, not a crash."""
        assert self.link is not None, "the control host holds the bridge"
        _ip("link", "set", self.link, "up" if up else "down", ns=self.netns)


@dataclass
class Network:
    control: Host
    hosts: list[Host]

    def __getitem__(self, name: str) -> Host:
        return next(h for h in [self.control, *self.hosts] if h.name == name)


def _check_privileges() -> None:
    services.require(sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("ip") is not None,
                     "network namespaces need root and iproute2 (ip netns)")
    probe = f"lfprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    services.require(made.returncode == 0, f"cannot make a network namespace: {made.stderr.strip()}")


def _stop_all(host: Host) -> None:
    for proc in host.procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for proc in host.procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    pids = _ip("netns", "pids", host.netns, check=False).stdout.split()  # anything else left in it
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@contextmanager
def hosts_apart(names: Sequence[str], tmp: Path) -> Iterator[Network]:
    """A control host and ``names`` worker hosts on a private network (see the module)."""
    _check_privileges()
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    made: list[Host] = []
    try:
        control = Host("control", f"lf{tag}c", f"{subnet}.1", tmp / "control")
        _ip("netns", "add", control.netns)
        made.append(control)
        _ip("link", "add", "br0", "type", "bridge", ns=control.netns)
        _ip("addr", "add", f"{control.address}/24", "dev", "br0", ns=control.netns)
        _ip("link", "set", "br0", "up", ns=control.netns)
        _ip("link", "set", "lo", "up", ns=control.netns)
        hosts = []
        for i, name in enumerate(names, start=2):
            host = Host(name, f"lf{tag}{name}", f"{subnet}.{i}", tmp / name, link="eth0")
            _ip("netns", "add", host.netns)
            made.append(host)
            outer, inner = f"lf{tag}{name}o", f"lf{tag}{name}i"
            _ip("link", "add", outer, "netns", control.netns, "type", "veth", "peer", "name", inner, "netns",
                host.netns)
            _ip("link", "set", outer, "master", "br0", ns=control.netns)
            _ip("link", "set", outer, "up", ns=control.netns)
            _ip("link", "set", inner, "name", "eth0", ns=host.netns)
            _ip("addr", "add", f"{host.address}/24", "dev", "eth0", ns=host.netns)
            _ip("link", "set", "eth0", "up", ns=host.netns)
            _ip("link", "set", "lo", "up", ns=host.netns)
            hosts.append(host)
        for host in made:
            for d in (host.root, host.home, host.root / "cache", host.root / "tmp"):
                d.mkdir(parents=True, exist_ok=True)
        yield Network(control, hosts)
    finally:
        for host in reversed(made):
            _stop_all(host)
            _ip("netns", "del", host.netns, check=False)
            for d in host.scratch:
                shutil.rmtree(d, ignore_errors=True)


def wait_port(host: Host, port: int, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None,
              log: str = "") -> None:
    """Wait until something listens on ``host.address:port``, asked from inside the host's namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{host.name}: the server on port {port} exited: {host.log(log)[-2000:]}")
        if reachable(host, host.address, port):
            return
        time.sleep(0.2)
    raise AssertionError(f"{host.name}: nothing listens on {host.address}:{port} after {timeout} s: "
                         f"{host.log(log)[-2000:]}")


def start_redis(host: Host, port: int = 6379) -> str:
    """A Redis server of its own on the host (nothing on disk); returns its URL."""
    services.require(shutil.which("redis-server") is not None, "redis-server is not installed")
    proc = host.start(["redis-server", "--bind", host.address, "--port", str(port), "--save", "", "--appendonly",
                       "no", "--protected-mode", "no", "--dir", str(host.root)], os.environ.copy(), "redis.log")
    wait_port(host, port, proc=proc, log="redis.log")
    return f"redis://{host.address}:{port}/0"


def start_postgres(host: Host, port: int = 5432) -> str:
    """A PostgreSQL cluster of its own on the host (trust auth on the farm's network); returns its URL."""
    initdb = PG_BIN / "initdb"
    services.require(initdb.is_file(), f"PostgreSQL's server programs are not installed ({initdb})")
    # The server refuses to run as root: it runs as the postgres user, in a directory that user can reach (the
    # test's own tmp directories are private to root).
    data = Path(tempfile.mkdtemp(prefix="lf-pg-"))
    host.scratch.append(data)
    shutil.chown(data, "postgres")
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    host.run([str(initdb), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync"], env, user="postgres",
             cwd=data)
    subnet = host.address.rsplit(".", 1)[0] + ".0/24"
    with open(data / "pg_hba.conf", "a") as f:
        f.write(f"host all all {subnet} trust\n")
    proc = host.start([str(PG_BIN / "postgres"), "-D", str(data), "-c", f"listen_addresses={host.address}", "-p",
                       str(port), "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c",
                       "synchronous_commit=off", "-c", "full_page_writes=off"], env, "postgres.log",
                      user="postgres", cwd=data)
    wait_port(host, port, proc=proc, log="postgres.log")
    return f"postgresql+psycopg://postgres@{host.address}:{port}/postgres"


def start_s3(host: Host, port: int = 9000) -> str:
    """An S3 endpoint (moto's server) on the host; returns its URL."""
    proc = host.start([sys.executable, "-m", "moto.server", "-H", host.address, "-p", str(port)],
                      os.environ.copy(), "s3.log")
    wait_port(host, port, proc=proc, log="s3.log")
    return f"http://{host.address}:{port}"


_PROBE = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()\n"
          "except OSError:\n    sys.exit(1)\n")


def reachable(host: Host, address: str, port: int) -> bool:
    """Whether ``address:port`` answers a TCP connection from inside ``host``."""
    return subprocess.run(host.argv([sys.executable, "-c", _PROBE, address, str(port)]), timeout=10).returncode == 0
