"""`latentfarm serve` as a user runs it: a process of its own, answering HTTP on a real port.

Without LATENTFARM_API_TOKEN it listens on 127.0.0.1 only and refuses any other address; with one, every route
needs it. On the embedded default the server runs a worker itself, so a batch submitted over HTTP runs to its end; in
production (Redis + PostgreSQL) a separate `latentfarm worker` process runs it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import clean_env, latentfarm_bin, run

pytestmark = pytest.mark.timeout(300)

TOKEN = "serve-test-token-81d2"
SPEC = ("batch: over-http\njobs:\n  - {name: a, kind: noop, sweep: {value: [1, 2]}}\n"
        "  - {name: b, kind: noop, needs: a}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_on(port: int) -> set[str]:
    """The addresses on which a TCP socket of this machine listens on ``port`` (Linux: /proc/net/tcp)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    token: str | None = None  # sent with every call unless it says otherwise

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def call(self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None,
             auth: bool = True) -> tuple[int, dict[str, str], Any]:
        """One request to the API; with ``auth`` (and a token) it carries ``Authorization: Bearer <token>``."""
        sent = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        req = urllib.request.Request(self.base + path, data=body.encode() if body is not None else None,
                                     method=method, headers={**sent, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (a local test server)
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def wait_batch(self, batch: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            _, _, b = self.call("GET", f"/batches/{batch}")
            if b["status"] not in ("running", "pending"):
                return b  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch} not done within {timeout} s: {b}\n{self.output()[-3000:]}")
            time.sleep(0.2)


@contextmanager
def serving(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """`latentfarm serve` on a free port, up (its health answers) within 60 s; terminated at the end."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([latentfarm_bin(), "serve", "--port", str(port), *args], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log, env.get("LATENTFARM_API_TOKEN"))
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"latentfarm serve exited {proc.returncode}:\n{server.output()}")
            try:
                if server.call("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"latentfarm serve not up within 60 s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_without_a_token_it_serves_this_machine_only(tmp_path: Path) -> None:
    with serving(tmp_path, clean_env()) as server:
        status, _, health = server.call("GET", "/health")
        assert health["writes_need_token"] is False and health["embedded"] is True
        assert health["database"] == "sqlite"
        said = server.output()
        assert "no LATENTFARM_API_TOKEN set: listening on 127.0.0.1 only" in said
        assert "answering the host names 127.0.0.1, ::1, localhost (LATENTFARM_ALLOWED_HOSTS)" in said
        assert f"on http://127.0.0.1:{server.port}/" in said
        if Path("/proc/net/tcp").exists():
            assert listening_on(server.port) == {"127.0.0.1"}
        # local writes need no token
        status, _, out = server.call("POST", "/batches", SPEC, {"Content-Type": "application/yaml"})
        assert status == 201, out
    assert (tmp_path / "latentfarm.db").is_file()  # the embedded default, in the working directory


def test_it_answers_only_the_host_names_it_is_told(tmp_path: Path) -> None:
    with serving(tmp_path, clean_env(LATENTFARM_ALLOWED_HOSTS="farm.example, 127.0.0.1")) as server:
        assert "answering the host names 127.0.0.1, farm.example (LATENTFARM_ALLOWED_HOSTS)" in server.output()
        assert server.call("GET", "/health", headers={"Host": f"farm.example:{server.port}"})[0] == 200
        status, headers, out = server.call("GET", "/health", headers={"Host": f"localhost:{server.port}"})
        assert status == 400 and out == {"detail": f"host 'localhost:{server.port}' is not served here: add it to "
                                                   "LATENTFARM_ALLOWED_HOSTS to reach this server by that name"}
        assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.1", "::"])
def test_without_a_token_it_refuses_other_addresses(tmp_path: Path, host: str) -> None:
    proc = run(["serve", "--host", host, "--port", str(free_port())], tmp_path, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: LATENTFARM_API_TOKEN is not set: refusing to listen on {host}. Set a "
                                   "token to serve other machines, or leave --host out to listen on 127.0.0.1")
    assert proc.stdout == ""


def test_with_a_token_every_route_needs_it_and_a_batch_runs_in_the_server(tmp_path: Path) -> None:
    with serving(tmp_path, clean_env(LATENTFARM_API_TOKEN=TOKEN)) as server:
        said = server.output()
        assert ("every route needs the token: send 'Authorization: Bearer <LATENTFARM_API_TOKEN>', or sign in at "
                "/login") in said
        assert "answering the host names any (LATENTFARM_ALLOWED_HOSTS)" in said
        assert f"on http://0.0.0.0:{server.port}/" in said  # with a token: every address by default
        if Path("/proc/net/tcp").exists():
            assert listening_on(server.port) == {"0.0.0.0"}
        assert "embedded default: batches submitted here run in this process" in said
        assert server.call("GET", "/health")[2]["writes_need_token"] is True

        status, headers, out = server.call("POST", "/batches", SPEC, {"Content-Type": "application/yaml"},
                                           auth=False)
        assert status == 401 and headers["www-authenticate"] == "Bearer", out
        status, _, out = server.call("POST", "/batches", SPEC, {"Content-Type": "application/yaml",
                                                                "Authorization": "Bearer wrong"})
        assert (status, out) == (401, {"detail": "wrong bearer token"})
        for path in ("/health", "/batches", "/jobs/1"):  # reads too
            status, headers, out = server.call("GET", path, auth=False)
            assert status == 401 and headers["www-authenticate"] == "Bearer", (path, out)
        assert server.call("GET", "/batches")[2]["total"] == 0  # refused writes wrote nothing

        status, headers, out = server.call("POST", "/batches", SPEC, {"Content-Type": "application/yaml",
                                                                      "Authorization": f"Bearer {TOKEN}"})
        assert status == 201 and headers["location"] == out["url"], out
        batch = server.wait_batch(out["batch"])
        assert batch["status"] == "succeeded" and batch["counts"] == {"succeeded": 3}, server.output()[-3000:]
        _, _, metrics = server.call("GET", f"/metrics?batch={out['batch']}&key=value")
        assert sorted(m["value"] for m in metrics["items"]) == [1.0, 1.0, 2.0]


def test_on_the_embedded_default_it_runs_what_an_interrupted_submit_left(tmp_path: Path) -> None:
    import sqlite3

    env = clean_env(LATENTFARM_LEASE_SECONDS="3", LATENTFARM_RESEND_AFTER="1")
    spec = tmp_path / "b.yaml"
    spec.write_text("batch: cut\njobs:\n  - {name: a, kind: noop, params: {seconds: 4}}\n"
                    "  - {name: b, kind: noop, needs: a}\n")
    submit = subprocess.Popen([latentfarm_bin(), "submit", str(spec)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status(name: str) -> tuple[str, int] | None:
        try:
            with sqlite3.connect(tmp_path / "latentfarm.db") as db:
                return db.execute("SELECT status, attempts FROM jobs WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError:  # not created yet
            return None

    deadline = time.monotonic() + 60
    while status("a") != ("running", 1):
        assert time.monotonic() < deadline and submit.poll() is None, "job a never ran"
        time.sleep(0.05)
    submit.kill()  # a user's kill -9 (or a laptop's sleep): job a stays `running`, job b `pending`
    submit.wait()
    assert (status("a"), status("b")) == (("running", 1), ("pending", 0))
    with serving(tmp_path, env) as server:
        batch = server.wait_batch(1, timeout=60)
        assert batch["status"] == "succeeded", server.output()
        assert status("a") == ("succeeded", 2) and status("b") == ("succeeded", 1)
        # the server finds job a's process gone as it starts, and the reaper sends a's message again
        assert "queued again 1 job(s) an interrupted run left running (job ids 1)" in server.output()
        assert "reaped: 1 resent" in server.output()


@pytest.mark.redis
@pytest.mark.postgres
def test_production_a_worker_process_runs_what_is_submitted_over_http(tmp_path: Path, redis_url: str,
                                                                      pg_url: str) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=pg_url, LATENTFARM_BROKER_URL=redis_url, LATENTFARM_API_TOKEN=TOKEN,
                    LATENTFARM_ARTIFACTS=str(tmp_path / "artifacts"), LATENTFARM_DATA_DIR=str(tmp_path / "data"))
    refused = run(["serve", "--port", str(free_port())], tmp_path, env, check=False, timeout=60)
    assert refused.returncode == 2 and "run `latentfarm db upgrade`" in refused.stderr  # production: no migrations
    run(["db", "upgrade"], tmp_path, env)
    with serving(tmp_path, env, "--host", "127.0.0.1") as server:
        assert "embedded default" not in server.output()
        health = server.call("GET", "/health")[2]
        assert health["embedded"] is False and health["database"] == "postgresql"
        status, _, out = server.call("POST", "/batches", SPEC, {"Content-Type": "application/yaml",
                                                                "Authorization": f"Bearer {TOKEN}"})
        assert status == 201, out
        assert server.call("GET", f"/batches/{out['batch']}")[2]["counts"] == {"queued": 2, "pending": 1}
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen([latentfarm_bin(), "worker", "--pool", "solo", "--name", "w@%h"],
                                      cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            batch = server.wait_batch(out["batch"])
        finally:
            stop(worker)
        assert batch["status"] == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
        _, _, jobs = server.call("GET", f"/jobs?batch={out['batch']}")
        assert {j["worker"].split("@")[0] for j in jobs["items"]} == {"w"}
