"""The farm is visible, against real processes on Redis and PostgreSQL: ``latentfarm worker`` processes answer
Celery's own clients (``celery inspect``, Flower, started with a plain broker URL as a user starts them), show in
``latentfarm workers``, the API and the dashboard with their states, and a queue with waiting jobs that no live
worker consumes is reported everywhere within 30 s; a farm of CPU workers alone runs a batch of every job kind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from scheduler.control import ControlPlane
from scheduler.settings import Settings
from tests.e2e.cli import clean_env, run, run_json
from tests.e2e.test_hostile_input import start, stop, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(300)]
HOST = socket.gethostname()


@pytest.fixture
def farm(tmp_path: Path, redis_url: str, pg_url: str) -> dict[str, Any]:
    env = clean_env(LATENTFARM_DATABASE_URL=pg_url, LATENTFARM_BROKER_URL=redis_url,
                    LATENTFARM_ARTIFACTS=str(tmp_path / "art"), LATENTFARM_DATA_DIR=str(tmp_path))
    run(["db", "upgrade"], tmp_path, env)
    return {"env": env, "dir": tmp_path, "redis": redis_url}


def _workers(farm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in run_json(["workers"], farm["dir"], farm["env"])["workers"]}


def _wait_states(farm: dict[str, Any], expected: dict[str, str], timeout: float = 60) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def reached() -> bool:
        found.update(_workers(farm))
        return all(found.get(name, {}).get("state") == state for name, state in expected.items())

    wait_until(reached, timeout, f"workers in states {expected}")
    return found


def _celery(farm: dict[str, Any], *args: str) -> Any:
    """Celery's own CLI with nothing but the broker URL: kombu's stock Redis transport, as a user runs it."""
    proc = subprocess.run([str(Path(sys.executable).parent / "celery"), "-b", farm["redis"], *args, "--json",
                           "--timeout", "5"], capture_output=True, text=True, timeout=60, cwd=farm["dir"],
                          env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_celery_inspect_and_flower_see_every_worker(farm: dict[str, Any]) -> None:
    names = {f"w1@{HOST}", f"w2@{HOST}"}
    procs = [start(["worker", "-Q", "cpu", "--pool", "solo", "--name", f"{n.split('@')[0]}@%h"], farm["dir"],
                   farm["env"], f"{n.split('@')[0]}.log") for n in sorted(names)]
    flower = None
    try:
        _wait_states(farm, dict.fromkeys(names, "idle"))
        assert set(_celery(farm, "inspect", "ping")) == names
        cpu_queue = ControlPlane.open(Settings.from_env(farm["env"])).app.broker_queue("cpu")
        queues = _celery(farm, "inspect", "active_queues")
        assert {name: [q["name"] for q in qs] for name, qs in queues.items()} == dict.fromkeys(names, [cpu_queue])
        assert _celery(farm, "inspect", "active") == dict.fromkeys(names, [])

        port = _free_port()
        flower = subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-b", farm["redis"], "flower",
                                   f"--port={port}", "--address=127.0.0.1", "--basic-auth=farm:secret"],
                                  cwd=farm["dir"], env=clean_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/workers?refresh=1", headers={
            "Authorization": "Basic " + b64encode(b"farm:secret").decode()})
        seen: set[str] = set()

        def flower_lists_them() -> bool:
            try:
                with urllib.request.urlopen(request, timeout=15) as answer:
                    seen.update(json.load(answer))
            except OSError:  # not listening yet
                return False
            return names <= seen

        wait_until(flower_lists_them, 60, "Flower listing every worker")
        assert seen == names
    finally:
        if flower is not None:
            flower.terminate()
            flower.wait(10)
        for p in procs:
            stop(p)


def test_lost_and_stopped_workers_and_a_queue_nobody_consumes(farm: dict[str, Any]) -> None:
    """With the default heartbeat (5 s): a worker killed is lost, and the jobs left on its queue are reported
    within 30 s by ``status``, ``submit --wait``, the API and the dashboard; a worker stopped is stopped."""
    keep, doomed = f"keep@{HOST}", f"doomed@{HOST}"
    procs = {keep: start(["worker", "-Q", "cpu", "--pool", "solo", "--name", "keep@%h"], farm["dir"], farm["env"],
                         "keep.log"),
             doomed: start(["worker", "-Q", "special", "--pool", "solo", "--name", "doomed@%h"], farm["dir"],
                           farm["env"], "doomed.log")}
    waiting = None
    try:
        _wait_states(farm, {keep: "idle", doomed: "idle"})
        spec = ("batch: {name}\njobs:\n  - {{name: s, kind: noop, queue: special, params: {{value: {value}}}}}\n"
                "  - {{name: c, kind: noop, params: {{value: {value}}}}}\n")
        (farm["dir"] / "a.yaml").write_text(spec.format(name="a", value=1))
        first = run_json(["submit", "a.yaml", "--wait"], farm["dir"], farm["env"])
        assert first["status"] == "succeeded"
        found = _wait_states(farm, {keep: "idle", doomed: "idle"})
        assert (found[doomed]["jobs_done"], found[doomed]["queues"], found[keep]["queues"]) == (1, ["special"],
                                                                                                 ["cpu"])
        assert run(["status"], farm["dir"], farm["env"]).stderr == ""  # nothing waits: no warning

        procs[doomed].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        (farm["dir"] / "b.yaml").write_text(spec.format(name="b", value=2))  # not served from the cache
        waiting = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "submit", "b.yaml", "--wait"],
                                   cwd=farm["dir"], env=farm["env"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        warning = "1 job waits on queue 'special' and no live worker consumes it"
        assert waiting.stderr is not None
        shown = []
        for line in waiting.stderr:  # its progress output, line by line
            shown.append(line)
            if warning in line:
                break
        assert warning in shown[-1] and time.monotonic() - killed < 30, shown
        assert f"warning: {warning}" in run(["status"], farm["dir"], farm["env"]).stderr
        batch = run_json(["status", "2"], farm["dir"], farm["env"])
        assert batch["warnings"] == [warning] and batch["counts"] == {"queued": 1, "succeeded": 1}
        assert _workers(farm)[doomed]["state"] == "lost"

        from fastapi.testclient import TestClient

        from scheduler.web.app import create_app

        app = create_app(ControlPlane.open(Settings.from_env(farm["env"])), "t0ken")
        client = TestClient(app, headers={"Authorization": "Bearer t0ken"})
        answer = client.get("/api/v1/workers").json()
        assert {w["name"]: w["state"] for w in answer["items"]} == {doomed: "lost", keep: "idle"}
        assert answer["total"] == 2 and answer["warnings"] == [warning]
        queues = {q["queue"]: q for q in answer["queues"]}
        assert queues["special"] == {"queue": "special", "queued": 1, "running": 0, "consumers": 0, "on_broker": 1}
        assert queues["cpu"]["consumers"] == 1
        assert client.get("/api/v1/batches/2").json()["warnings"] == [warning]
        assert client.get("/api/v1/batches/1").json()["warnings"] == []
        farm_page, batch_page = client.get("/farm").text, client.get("/batches/2").text
        assert str(escape(warning)) in farm_page and f'data-worker="{doomed}" data-state="lost"' in farm_page
        assert 'id="warnings"' in batch_page and str(escape(warning)) in batch_page
        assert 'id="warnings"' not in client.get("/batches/1").text

        stop(procs[keep])  # a clean shutdown
        assert _workers(farm)[keep]["state"] == "stopped"
    finally:
        if waiting is not None:
            waiting.kill()
            waiting.wait()
        for p in procs.values():
            stop(p)


def test_a_cpu_only_farm_runs_every_kind_and_leaves_the_gpu_queue_to_a_gpu_worker(farm: dict[str, Any]) -> None:
    """``latentfarm worker --cpu 2`` and nothing else: its workers take the gpu queue too, and run a batch of every
    kind; when a GPU worker registers, they leave the gpu queue to it."""
    from PIL import Image

    Image.new("L", (56, 56), 128).save(farm["dir"] / "in.png")
    (farm["dir"] / "all.yaml").write_text("""\
batch: every-kind
defaults:
  params: {batch_size: 64}
jobs:
  - {name: ae, kind: train, params: {model: conv_ae, dataset: digits, z_dim: 4, epochs: 1, limit: 300}}
  - {name: cnn, kind: train, params: {model: cnn, dataset: digits, epochs: 1, limit: 300}}
  - {name: latents, kind: encode, needs: [ae]}
  - {name: samples, kind: sample, needs: [latents, cnn], params: {sampler: fitted_normal, n: 64, grid: 16}}
  - {name: kmeans, kind: cluster, needs: [latents], params: {k: [3, 5], plot: none}}
  - name: dream
    kind: dream
    needs: [cnn]
    params: {image: in.png, levels: 1, iterations: 1, size: 56, maps: 3, epochs: 2}
""")
    env = {**farm["env"], "LATENTFARM_HEARTBEAT_SECONDS": "1"}
    cpus = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "--cpu", "2", "--loglevel", "WARNING"],
                            cwd=farm["dir"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    gpus = None
    try:
        started = time.monotonic()
        batch = json.loads(run(["submit", "all.yaml", "--wait", "--json"], farm["dir"], env, timeout=150).stdout)
        took = time.monotonic() - started
        assert batch["status"] == "succeeded", batch
        jobs = run_json(["jobs", "--batch", str(batch["batch_id"])], farm["dir"], env)
        assert {j["kind"] for j in jobs} == {"train", "encode", "sample", "cluster", "dream_tile", "dream_merge"}
        gpu_jobs = [j for j in jobs if j["queue"] == "gpu"]
        assert gpu_jobs and {j["worker"] for j in jobs} <= {f"cpu0@{HOST}", f"cpu1@{HOST}"}
        assert all(w["queues"] == ["cpu", "gpu"] for w in _workers(farm).values())
        print(f"\nthe batch of every kind ({len(jobs)} jobs) on 2 CPU workers: {took:.1f} s")

        gpus = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "worker", "--gpus", "0", "--loglevel",
                                 "WARNING"], cwd=farm["dir"], env={**env, "LATENTFARM_GPUS": "0"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def gpu_queue_left_to_it() -> bool:
            found = _workers(farm)
            return (found.get(f"gpu0@{HOST}", {}).get("queues") == ["gpu"]
                    and all(found[f"cpu{i}@{HOST}"]["queues"] == ["cpu"] for i in (0, 1)))

        wait_until(gpu_queue_left_to_it, 60, "the CPU workers leaving the gpu queue to the GPU worker")
        consumed = {name: [q["name"].rsplit(".", 1)[-1] for q in qs]
                    for name, qs in _celery(farm, "inspect", "active_queues").items()}
        assert consumed == {f"cpu0@{HOST}": ["cpu"], f"cpu1@{HOST}": ["cpu"], f"gpu0@{HOST}": ["gpu"]}
    finally:
        for proc in (gpus, cpus):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
