"""Hostile input and careless hands, against real processes: a real ``latentfarm serve``, real ``latentfarm worker``
processes on Redis and PostgreSQL, the real CLI. Every process a test starts is bounded in memory (``ulimit -v``,
``RLIMIT_AS``) and in time.

Each case is one an attacker or a careless user tried: a filter value built to expand, a spec naming any file of
the machine, a job too big for the machine, a damaged blob, messages that are not messages, secrets in errors,
Ctrl-C at the wrong moment, two farms on one broker, values built to overflow. (The server's own defences, tokens,
origins, headers and the parsing of large bodies, are tested in test_web_security.py and test_responsiveness.py.)
"""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from scheduler.celery_app import TASK_NAME
from scheduler.control import ControlPlane
from scheduler.settings import Settings
from tests.conftest import SHARED_DATA
from tests.e2e.cli import clean_env, latentfarm_bin, run, run_json

pytestmark = pytest.mark.timeout(300)
PROCESS_MEMORY = 6 << 30  # the address space every process started here may use (TensorFlow maps ~1.5 GB)


def _bounded() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (PROCESS_MEMORY, PROCESS_MEMORY))
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a child of a non-interactive shell would ignore Ctrl-C


def start(args: list[str], cwd: Path, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    out = open(cwd / log, "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([latentfarm_bin(), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=_bounded)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def job(cwd: Path, env: dict[str, str], job_id: int) -> dict[str, Any]:
    return run_json(["show", str(job_id)], cwd, env)["job"]  # type: ignore[no-any-return]


# -- the server ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``latentfarm serve`` on the embedded default (no token: loopback), with a small data directory."""
    home = tmp_path_factory.mktemp("serve")
    data = home / "data"
    data.mkdir()
    (data / "wifi_localization.txt").symlink_to(SHARED_DATA / "wifi_localization.txt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{home / 'lf.db'}", LATENTFARM_ARTIFACTS=str(home / "art"),
                    LATENTFARM_DATA_DIR=str(data), LATENTFARM_JOB_MEMORY="2G")
    proc = start(["serve", "--port", str(port)], home, env, "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 60, "latentfarm serve answering")
        yield {"url": url, "home": home, "env": env, "data": data}
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/v1/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def http(url: str, path: str, body: str | None = None) -> tuple[int, Any, float]:
    """(status, JSON answer, seconds) of a GET, or of a POST of a YAML body."""
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/yaml"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), time.monotonic() - started


def test_a_filter_value_is_a_plain_scalar_never_yaml(server: dict[str, Any]) -> None:
    bomb = ("[&a [1,1,1,1,1,1,1,1,1],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],"
            "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c],&e [*d,*d,*d,*d,*d,*d,*d,*d,*d]]")  # 9^5 values, were it YAML
    status, body, took = http(server["url"], "/api/v1/jobs?param=" + urllib.request.quote("z_dim=" + bomb))
    assert status == 200 and body["items"] == [] and took < 2, body  # a string compared as a string, quickly
    status, body, _ = http(server["url"], "/api/v1/jobs?param=" + urllib.request.quote("z_dim=" + "9" * 300))
    assert status == 400 and "over 200 characters" in body["detail"]


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/environ", "../../../../etc/hostname",
                                  "/etc/does-not-exist", "wifi_localization.txt/../../../../etc/passwd"])
def test_a_spec_cannot_read_a_file_outside_the_data_roots(server: dict[str, Any], path: str) -> None:
    spec = f"batch: x\njobs:\n  - {{name: a, kind: cluster, params: {{dataset: wifi, data_path: '{path}'}}}}\n"
    status, body, _ = http(server["url"], "/api/v1/batches", spec)
    assert status == 422, body
    assert body["detail"] == (f"request body: job 'a': field 'params.data_path': {path}: outside the data roots "
                              "(LATENTFARM_DATA_DIR, and the spec's folder for a spec submitted from a file): files "
                              "elsewhere cannot be read")  # the same words whether the file exists or not
    assert "root:" not in body["detail"]


def test_a_file_in_the_data_directory_is_read_relative_to_it(server: dict[str, Any]) -> None:
    spec = ("batch: wifi\njobs:\n  - {name: a, kind: cluster, params: {dataset: wifi, "
            "data_path: wifi_localization.txt, k: 4, plot: none}}\n")
    status, body, _ = http(server["url"], "/api/v1/batches", spec)
    assert status == 201, body
    batch = body["batch"]
    wait_until(lambda: http(server["url"], f"/api/v1/batches/{batch}")[1]["status"] == "succeeded", 120,
               "the wifi batch")


def test_a_bad_data_file_is_not_quoted_in_the_jobs_error(server: dict[str, Any]) -> None:
    secret = "password=hunter2"
    (server["data"] / "notes.txt").write_text(f"{secret}\n")
    spec = "batch: leak\njobs:\n  - {name: a, kind: cluster, params: {dataset: wifi, data_path: notes.txt}}\n"
    status, body, _ = http(server["url"], "/api/v1/batches", spec)
    assert status == 201, body
    jid = body["jobs"]["a"]
    wait_until(lambda: http(server["url"], f"/api/v1/jobs/{jid}")[1]["status"] == "failed", 60, "the job failing")
    error = http(server["url"], f"/api/v1/jobs/{jid}")[1]
    assert "line 1: expected 8 tab-separated integers" in error["error"]
    assert "hunter2" not in json.dumps(error)


@pytest.mark.parametrize("params,field", [
    ("{dataset: digits, image_size: 1024}", "params"),  # a small dataset blown up to 1024 x 1024
    ("{dataset: digits, z_dim: 100000000}", "params"),  # a dense layer of 10^8 x 6272 weights
    ("{dataset: digits, filters: [4096, 4096, 4096]}", "params"),
    ("{dataset: digits, learning_rate: " + "9" * 400 + "}", "params.learning_rate"),  # an integer of 400 digits
    ("{dataset: digits, epochs: " + "9" * 40 + "}", "params.epochs"),
])
def test_a_job_too_big_for_its_budget_or_a_number_too_big_is_refused_at_submit(server: dict[str, Any], params: str,
                                                                               field: str) -> None:
    spec = f"batch: big\njobs:\n  - {{name: t, kind: train, params: {params}}}\n"
    status, body, took = http(server["url"], "/api/v1/batches", spec)
    assert status == 422 and f"field '{field}'" in body["detail"] and took < 10, body
    if field == "params":
        assert "of memory, more than the 2.0 GiB a job may use (LATENTFARM_JOB_MEMORY)" in body["detail"]
    assert "big" not in {b["name"] for b in http(server["url"], "/api/v1/batches?limit=1000")[1]["items"]}


def test_a_decompression_bomb_is_refused_without_decoding_it(server: dict[str, Any]) -> None:
    bomb = server["data"] / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)  # 100 megapixels in a few kilobytes
    assert bomb.stat().st_size < 100_000
    spec = ("batch: bomb\njobs:\n  - {name: c, kind: train, params: {model: cnn, epochs: 1}}\n"
            "  - {name: d, kind: dream, needs: c, params: {image: bomb.png, levels: 0, iterations: 1, size: 28}}\n")
    status, body, took = http(server["url"], "/api/v1/batches", spec)
    assert status == 422 and "is 10000 x 10000 pixels: over the 40 megapixels a job decodes" in body["detail"]
    assert took < 5


def test_impossible_dates_in_filters_are_user_errors(server: dict[str, Any], tmp_path: Path) -> None:
    for since in ("2024-02-30", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "99999999999d"):
        status, body, _ = http(server["url"], "/api/v1/jobs?since=" + urllib.request.quote(since))
        assert status in (400, 422) and "since" in body["detail"], (since, body)
        proc = run(["jobs", "--since", since], tmp_path, server["env"], check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, since


def test_an_embedded_spec_naming_its_own_queue_runs(tmp_path: Path) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"))
    (tmp_path / "q.yaml").write_text("batch: q\njobs:\n  - {name: a, kind: noop, queue: special}\n")
    proc = run(["submit", "q.yaml"], tmp_path, env, timeout=120)
    assert "succeeded" in proc.stdout


def test_export_into_a_dangling_link_is_a_user_error(tmp_path: Path) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"))
    (tmp_path / "q.yaml").write_text("batch: q\njobs:\n  - {name: a, kind: noop}\n")
    run(["submit", "q.yaml"], tmp_path, env, timeout=120)
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    proc = run(["export", "1", "out"], tmp_path, env, check=False)
    assert proc.returncode == 2 and proc.stderr == "error: out is a link to nothing: export into a directory\n"
    run(["export", "1", "fresh"], tmp_path, env)
    assert (tmp_path / "fresh" / "out.json").stat().st_mode & 0o777 == 0o644  # as the user's files, not 0600


# -- workers ------------------------------------------------------------------------------------------------------

@pytest.fixture
def farm(tmp_path: Path, redis_url: str, pg_url: str) -> dict[str, Any]:
    env = clean_env(LATENTFARM_DATABASE_URL=pg_url, LATENTFARM_BROKER_URL=redis_url,
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"), LATENTFARM_DATA_DIR=str(tmp_path),
                    LATENTFARM_LEASE_SECONDS="6")
    run(["db", "upgrade"], tmp_path, env)
    return {"env": env, "dir": tmp_path, "redis": redis_url}


def farm_app(farm: dict[str, Any]) -> Any:
    """The farm's own Celery app (its queues are named after its farm id), to send messages by hand."""
    return ControlPlane.open(Settings.from_env(farm["env"])).app


def submit(farm: dict[str, Any], spec: str, name: str = "s.yaml", env: dict[str, str] | None = None) -> dict:
    (farm["dir"] / name).write_text(spec)
    return run_json(["submit", name], farm["dir"], env or farm["env"])  # type: ignore[no-any-return]


def settled(farm: dict[str, Any], batch: int, env: dict[str, str] | None = None) -> dict:
    out: dict = {}

    def done() -> bool:
        out.update(run_json(["status", str(batch)], farm["dir"], env or farm["env"]))
        return not (out["counts"].get("queued") or out["counts"].get("running"))

    wait_until(done, 180, f"batch {batch} settling")
    return out


def test_a_job_over_its_memory_budget_fails_and_its_worker_goes_on(farm: dict[str, Any]) -> None:
    # 1000 small images, each resized to 1024 x 1024 floats when loaded: 4 GiB. The submitter allows a job 1 TiB
    # and the worker 1 GiB: the job passes at submit, then an allocation fails inside it.
    import numpy as np

    np.savez(farm["dir"] / "small.npz", x_train=np.zeros((1000, 32, 32), np.uint8), y_train=np.zeros(1000, np.int64),
             x_test=np.zeros((10, 32, 32), np.uint8), y_test=np.zeros(10, np.int64))
    worker = start(["worker", "-Q", "cpu,gpu", "--pool", "solo", "--name", "small@%h"], farm["dir"],
                   {**farm["env"], "LATENTFARM_JOB_MEMORY": "1G"}, "small.log")
    try:
        batch = submit(farm, "batch: big\njobs:\n  - {name: c, kind: cluster, params: {dataset: npz, "
                             "data_path: small.npz, image_size: 1024, plot: none}}\n  - {name: after, kind: noop}\n",
                       env={**farm["env"], "LATENTFARM_JOB_MEMORY": "1T"})
        status = settled(farm, batch["batch_id"])
        by_name = {j["name"]: j for j in status["jobs"]}
        assert by_name["after"]["status"] == "succeeded"  # the same worker process ran it afterwards
        c = by_name["c"]
        assert c["status"] == "failed" and c["attempts"] == 1, c  # not retried: it would fail the same way
        assert c["error"].startswith("out of memory: ") and "(a job may use 1.0 GiB" in c["error"], c["error"]
        assert worker.poll() is None
    finally:
        stop(worker)


def test_a_worker_refuses_a_parent_blob_that_changed(farm: dict[str, Any]) -> None:
    worker = start(["worker", "-Q", "cpu,gpu", "--pool", "solo", "--name", "w@%h"], farm["dir"], farm["env"],
                   "w.log")
    try:
        train = ("batch: a\njobs:\n  - {name: ae, kind: train, params: {dataset: digits, limit: 64, epochs: 1, "
                 "z_dim: 2}}\n")
        first = submit(farm, train)
        settled(farm, first["batch_id"])
        model = next(a for a in run_json(["artifacts", str(first["jobs"]["ae"])], farm["dir"], farm["env"])
                     if a["name"] == "model.keras")
        blob = Path(model["path"])
        blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")  # the same size, other bytes
        second = submit(farm, train + "  - {name: enc, kind: encode, needs: ae}\n", "b.yaml")
        status = settled(farm, second["batch_id"])
        enc = next(j for j in status["jobs"] if j["name"] == "enc")
        assert enc["status"] == "failed" and enc["attempts"] == 1, enc
        assert enc["error"] == (f"ArtifactCorrupt: artifact 'model.keras' of job 'ae' (#{second['jobs']['ae']}): "
                                f"its blob no longer matches its sha256 {model['sha256']}")
    finally:
        stop(worker)


def test_messages_that_are_not_messages_are_dropped_and_the_worker_goes_on(farm: dict[str, Any]) -> None:
    import redis

    worker = start(["worker", "-Q", "cpu", "--pool", "solo", "--name", "p@%h"], farm["dir"], farm["env"], "p.log")
    try:
        wait_until(lambda: "ready" in (farm["dir"] / "p.log").read_text(), 60, "the worker starting")
        batch = submit(farm, "batch: first\njobs:\n  - {name: a, kind: noop}\n")
        settled(farm, batch["batch_id"])
        app = farm_app(farm)
        queue = app.broker_queue("cpu")  # the Redis list of its most urgent messages
        client = redis.Redis.from_url(farm["redis"])
        for junk in (b"not json at all", b"123", b'{"a": 1}', b"\xff\xfe"):
            client.lpush(queue, junk)
        for bad_id in (2**70, -1, "7", 1.5):
            app.send_task(TASK_NAME, args=[bad_id], queue=app.broker_queue("cpu"))
        after = submit(farm, "batch: after\njobs:\n  - {name: b, kind: noop}\n", "b.yaml")
        assert settled(farm, after["batch_id"])["status"] == "succeeded"
        log = (farm["dir"] / "p.log").read_text()
        assert worker.poll() is None, log[-2000:]
        assert log.count("dropped an item of queue") == 1 and "Unrecoverable" not in log
        assert log.count("dropped a message whose job id") == 1 and "Traceback" not in log, log[-3000:]
    finally:
        stop(worker)


def test_secrets_are_masked_in_cli_errors(tmp_path: Path) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_BROKER_URL="redis://:s3cretpw@127.0.0.1:1/0")
    run(["db", "upgrade"], tmp_path, env)
    (tmp_path / "q.yaml").write_text("batch: q\njobs:\n  - {name: a, kind: noop}\n")
    proc = run(["submit", "q.yaml"], tmp_path, env, check=False)
    assert proc.returncode == 1 and "cannot reach the broker redis://:***@127.0.0.1:1/0" in proc.stderr
    assert "s3cretpw" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
                         ids=["ctrl-c-twice", "sigterm"])
def test_ctrl_c_on_a_worker_releases_its_job_for_another_attempt(farm: dict[str, Any],
                                                                 signals: tuple[signal.Signals, ...]) -> None:
    """A cold shutdown (Ctrl-C twice) or a warm one (SIGTERM, as systemd and Docker send) does not wait for the
    job's 20 s, nor fail it: the job goes back to the queue for its next attempt."""
    worker = start(["worker", "-Q", "cpu", "--pool", "solo", "--name", "c@%h"], farm["dir"], farm["env"], "c.log")
    batch = submit(farm, "batch: long\njobs:\n  - {name: a, kind: noop, params: {seconds: 20}}\n")
    jid = batch["jobs"]["a"]
    wait_until(lambda: job(farm["dir"], farm["env"], jid)["status"] == "running", 60, "the job running")
    stopping = time.monotonic()
    for sig in signals:
        worker.send_signal(sig)
        time.sleep(0.3)
    worker.wait(30)
    assert time.monotonic() - stopping < 10
    released = job(farm["dir"], farm["env"], jid)
    assert released["status"] == "queued" and released["error"] is None, released
    second = start(["worker", "-Q", "cpu", "--pool", "solo", "--name", "d@%h"], farm["dir"], farm["env"], "d.log")
    try:
        status = settled(farm, batch["batch_id"])
        assert status["status"] == "succeeded" and status["jobs"][0]["attempts"] == 2
        assert status["jobs"][0]["worker"].startswith("d@")
    finally:
        stop(second)


def test_ctrl_c_on_an_embedded_submit_stops_at_once_and_the_next_submit_reruns_what_was_left(tmp_path: Path) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"))
    (tmp_path / "long.yaml").write_text("batch: long\njobs:\n  - {name: a, kind: noop, params: {seconds: 20}}\n"
                                        "  - {name: b, kind: noop, needs: a}\n")
    proc = start(["submit", "long.yaml"], tmp_path, env, "submit.log")
    wait_until(lambda: "| a " in (tmp_path / "submit.log").read_text(), 60, "job a running")
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    assert time.monotonic() - interrupted < 5.0  # not the 20 s the job had left (2.2 s seen on a loaded 2-core machine)
    left = run_json(["status", "1"], tmp_path, env)
    assert left["counts"] == {"queued": 1, "pending": 1}, left
    assert "wait in the queue" in run(["status"], tmp_path, env).stdout
    (tmp_path / "q.yaml").write_text("batch: quick\njobs:\n  - {name: q, kind: noop}\n")
    run(["submit", "q.yaml"], tmp_path, env, timeout=120)
    assert run_json(["status", "1"], tmp_path, env)["status"] == "succeeded"  # run with the next batch


def test_a_killed_embedded_run_is_found_by_the_next_command(tmp_path: Path) -> None:
    env = clean_env(LATENTFARM_DATABASE_URL=f"sqlite:///{tmp_path / 'lf.db'}",
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"))
    (tmp_path / "long.yaml").write_text("batch: long\njobs:\n  - {name: a, kind: noop, params: {seconds: 20}}\n")
    proc = start(["submit", "long.yaml"], tmp_path, env, "submit.log")
    wait_until(lambda: "| a " in (tmp_path / "submit.log").read_text(), 60, "job a running")
    proc.kill()  # no cleanup at all: the job stays running in SQL
    proc.wait()
    status = run(["status", "1"], tmp_path, env)
    assert "queued again 1 job(s) an interrupted run left running (job ids 1)" in status.stderr
    assert run_json(["status", "1"], tmp_path, env)["counts"] == {"queued": 1}


def test_two_farms_on_one_broker_never_run_each_others_jobs(farm: dict[str, Any], tmp_path_factory: Any,
                                                             pg_url: str) -> None:
    other_dir = tmp_path_factory.mktemp("other-farm")
    other = {**farm["env"], "LATENTFARM_DATABASE_URL": f"sqlite:///{other_dir / 'lf.db'}",
             "LATENTFARM_ARTIFACTS": str(other_dir / "art")}
    run(["db", "upgrade"], other_dir, other)
    mine = start(["worker", "-Q", "cpu", "--pool", "solo", "--name", "mine@%h"], farm["dir"], farm["env"], "m.log")
    try:
        theirs = submit({"dir": other_dir, "env": other}, "batch: theirs\njobs:\n  - {name: a, kind: noop}\n")
        ours = submit(farm, "batch: ours\njobs:\n  - {name: a, kind: noop}\n")
        assert settled(farm, ours["batch_id"])["status"] == "succeeded"
        time.sleep(2)
        assert run_json(["status", str(theirs["batch_id"])], other_dir, other)["counts"] == {"queued": 1}
        # a message of the other farm pushed onto this farm's queue by hand is left for its owner, loudly, once
        app = farm_app(farm)
        app.send_task(TASK_NAME, args=[theirs["jobs"]["a"]], kwargs={"farm": "f" * 32},
                      queue=app.broker_queue("cpu"))
        wait_until(lambda: "another store shares this broker" in (farm["dir"] / "m.log").read_text(), 30,
                   "the foreign message noticed")
        time.sleep(3)
        assert (farm["dir"] / "m.log").read_text().count("another store shares this broker") == 1
        assert run_json(["status", str(theirs["batch_id"])], other_dir, other)["counts"] == {"queued": 1}
    finally:
        stop(mine)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
