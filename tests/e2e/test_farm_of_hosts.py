"""A farm whose machines share only the network, proven with hosts that really are apart (``tests/hosts.py``).

A "control" host runs PostgreSQL, Redis and an S3 endpoint (moto's server), each of its own, and the scheduler; two
worker hosts (``h1``, ``h2``) each run ``latentfarm worker --cpu 1`` with their own working directory, HOME, read
cache and an empty data directory. The three reach each other only over the test's own network. Datasets come
from the farm's registry (``latentfarm data add`` on the control host), artifacts go to the object store only.

- Every job kind runs to success on the two hosts (train, encode, scored samples, cluster, a small dream), and each
  host that ran dream tiles downloaded the cnn once.
- A partition: the host running a multi-epoch training is cut off the network (its link down). Its lease runs
  out, the other host resumes the training from the checkpoint in the object store, and when the link comes back
  the cut-off worker's late result is refused: the job succeeded once, with every epoch recorded once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from tests.e2e.cli import clean_env, latentfarm_bin
from tests.hosts import Host, Network, hosts_apart, start_postgres, start_redis, start_s3

pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("hosts")]

BUCKET = "farm"
LEASE = 4  # seconds: a cut-off worker's job is taken over this long after its last renewal (plus a reaper pass)


@dataclass
class Farm:
    net: Network
    env: dict[str, dict[str, str]]  # per host

    def latentfarm(self, host: str, *args: str, timeout: float = 180, check: bool = True) -> Any:
        h = self.net[host]
        proc = h.run([latentfarm_bin(), *args], self.env[host], timeout=timeout, check=check)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.latentfarm("control", *args, "--json").stdout)

    def wait_batch(self, batch: int, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.json("status", str(batch))
            if status["status"] in ("succeeded", "failed", "cancelled"):
                return status  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch} not done after {timeout} s: {status['counts']}\n"
                                     + "\n".join(h.log("worker.log")[-3000:] for h in self.net.hosts))
            time.sleep(1)


def _env(host: Host, urls: dict[str, str]) -> dict[str, str]:
    return host.env(clean_env(), LATENTFARM_DATABASE_URL=urls["db"], LATENTFARM_BROKER_URL=urls["broker"],
                    LATENTFARM_ARTIFACTS=f"s3://{BUCKET}/artifacts", LATENTFARM_S3_ENDPOINT=urls["s3"],
                    AWS_ACCESS_KEY_ID="farm", AWS_SECRET_ACCESS_KEY="farm-secret", AWS_DEFAULT_REGION="us-east-1",
                    LATENTFARM_DATA_DIR=str(host.root / "data"), LATENTFARM_LEASE_SECONDS=str(LEASE),
                    LATENTFARM_RESEND_AFTER="5")


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    with hosts_apart(["h1", "h2"], tmp_path_factory.mktemp("hosts")) as net:
        control = net.control
        urls = {"db": start_postgres(control), "broker": start_redis(control), "s3": start_s3(control)}
        env = {h.name: _env(h, urls) for h in [control, *net.hosts]}
        for h in [control, *net.hosts]:
            (h.root / "data").mkdir()
        f = Farm(net, env)
        control.run([sys.executable, "-c", "import boto3, os; boto3.client('s3', endpoint_url=os.environ["
                     "'LATENTFARM_S3_ENDPOINT']).create_bucket(Bucket='farm')"], env["control"])
        f.latentfarm("control", "db", "upgrade")
        # The datasets, registered from the control host's data directory: the worker hosts have none.
        for name, given in (("mnist", "mnist.npz"), ("wifi", "wifi_localization.txt"), ("photo", "photo.jpg")):
            (control.root / "data" / given).symlink_to(SHARED_DATA / _shared(given))
            f.latentfarm("control", "data", "add", name, str(control.root / "data" / given))
        control.start([latentfarm_bin(), "scheduler", "--interval", "0.5"], env["control"], "scheduler.log")
        for h in net.hosts:
            h.start([latentfarm_bin(), "worker", "--cpu", "1"], env[h.name], "worker.log")
        yield f


def _shared(name: str) -> str:
    """The shared data's file for a name the tests give it."""
    if name == "photo.jpg":
        return next(p.name for p in SHARED_DATA.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    return name


EVERY_KIND = """\
batch: apart
defaults: {params: {batch_size: 64}}
jobs:
  - {name: ae, kind: train, params: {model: conv_ae, dataset: mnist, limit: 2000, z_dim: 8, epochs: 1}}
  - {name: cnn, kind: train, params: {model: cnn, dataset: mnist, limit: 2000, epochs: 1}}
  - {name: latents, kind: encode, needs: [ae]}
  - {name: samples, kind: sample, needs: [latents, cnn], params: {sampler: fitted_normal, n: 100, grid: 16}}
  - {name: kmeans, kind: cluster, needs: [latents], params: {k: 10}}
  - {name: rooms, kind: cluster, params: {dataset: wifi, k: 4}}
  - name: dream
    kind: dream
    needs: [cnn]
    params: {image: photo, levels: 1, iterations: 1, size: 112, maps: 4, epochs: {0: 2, 1: 2}}
"""


def downloads(host: Host) -> list[dict[str, Any]]:
    """The blobs ``host``'s read cache downloaded (its ``downloads.log``)."""
    log = host.root / "cache" / "downloads.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def test_every_kind_runs_on_hosts_that_share_only_the_network(farm: Farm) -> None:
    (farm.net.control.root / "apart.yaml").write_text(EVERY_KIND)
    batch = json.loads(farm.latentfarm("control", "submit", "apart.yaml", "--json").stdout)["batch_id"]
    status = farm.wait_batch(batch)
    assert status["status"] == "succeeded", status
    jobs = {j["name"]: j for j in status["jobs"]}
    hosts = {j["host"] for j in jobs.values() if j.get("host")}
    assert hosts == {"h1", "h2"}, hosts  # both hosts took part

    # The artifacts are in the object store only: no host has an artifact directory.
    for h in [farm.net.control, *farm.net.hosts]:
        assert not (h.root / "latentfarm-artifacts").exists()
    cnn = farm.json("artifacts", str(jobs["cnn"]["id"]))
    model = next(a for a in cnn if a["name"].endswith(".keras") and "checkpoint" not in a["name"])
    assert model["path"].startswith(f"s3://{BUCKET}/artifacts/sha256/"), model
    # Each host that ran dream tiles downloaded the cnn once, however many tiles it ran.
    tiles = [j for j in jobs.values() if j["kind"] == "dream_tile"]
    for h in farm.net.hosts:
        ran = [t for t in tiles if t["host"] == h.name]
        got = [d for d in downloads(h) if d["sha256"] == model["sha256"]]
        if ran:
            assert len(got) == 1, (h.name, len(ran), got)
    # Nothing was read from a local copy of a dataset: the worker hosts' data directories stayed empty.
    for h in farm.net.hosts:
        assert list((h.root / "data").iterdir()) == []


def test_a_partitioned_host_loses_its_job_to_the_other_and_its_late_result_is_refused(farm: Farm) -> None:
    epochs = 6
    spec = ("batch: partition\njobs:\n  - {name: long, kind: train, params: {model: conv_ae, dataset: mnist, "
            f"limit: 3000, z_dim: 8, epochs: {epochs}, batch_size: 32}}}}\n")
    (farm.net.control.root / "partition.yaml").write_text(spec)
    batch = json.loads(farm.latentfarm("control", "submit", "partition.yaml", "--json").stdout)
    job_id = batch["jobs"]["long"]

    def show() -> dict[str, Any]:
        """The job's record, with its events and metrics."""
        out = farm.json("show", str(job_id))
        return {**out["job"], "events": out["events"], "metrics": out["metrics"]}

    deadline = time.monotonic() + 180
    while True:  # wait for two epochs' checkpoints
        job = show()
        done = {m["step"] for m in job["metrics"] if m["key"] == "loss"}
        if job["status"] == "running" and len(done) >= 2:
            break
        assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
        time.sleep(0.5)
    cut = farm.net[job["host"]]
    other = next(h for h in farm.net.hosts if h is not cut)
    cut.set_link(False)
    t_cut = time.time()
    try:
        deadline = time.monotonic() + 120
        while True:  # the other host takes it over
            job = show()
            if job["attempts"] == 2 and job["status"] in ("running", "succeeded"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        status = farm.wait_batch(batch["batch_id"], timeout=240)
    finally:
        cut.set_link(True)
    assert status["status"] == "succeeded"
    job = show()
    assert job["attempts"] == 2 and job["host"] == other.name
    events = job["events"]
    claims = [e for e in events if e.get("status") == "running"]
    assert len(claims) == 2
    resumed_after = _epoch(claims[1]["time"]) - t_cut
    succeeded = sum(1 for e in events if e.get("status") == "succeeded")
    assert succeeded == 1
    losses = [m for m in job["metrics"] if m["key"] == "loss"]
    assert sorted(m["step"] for m in losses) == list(range(1, epochs + 1))  # each epoch recorded once
    assert any("resuming" in (e.get("message") or "") for e in events)  # from the checkpoint, not epoch 1
    # The cut-off worker, back on the network, finds its attempt handed on and records nothing.
    deadline = time.monotonic() + 120
    while "results are dropped" not in cut.log("worker.log") and "no longer holds it" not in cut.log("worker.log"):
        assert time.monotonic() < deadline, cut.log("worker.log")[-3000:]
        time.sleep(1)
    again = show()
    assert again["status"] == "succeeded" and again["attempts"] == 2 and again["host"] == other.name
    assert [m["step"] for m in again["metrics"] if m["key"] == "loss"] == [m["step"] for m in losses]
    assert sum(1 for e in again["events"] if e.get("status") == "succeeded") == 1
    print(f"\nchaos figures [partition]: 1 job ({epochs} epochs), 1 partition ({cut.name} cut off after "
          f"{len(done)} epochs), lost 0, completed twice 0, resumed on {other.name} {resumed_after:.1f} s after the "
          f"cut (lease {LEASE} s), the cut-off attempt's result refused")


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_the_hosts_share_nothing_but_the_network(farm: Farm) -> None:
    """What the proof rests on: the worker hosts reach the control host's services, not this machine's, and no
    directory is shared."""
    from tests.hosts import reachable

    for h in farm.net.hosts:
        assert reachable(h, farm.net.control.address, 5432) and reachable(h, farm.net.control.address, 6379)
        assert not reachable(h, "127.0.0.1", 5432) and not reachable(h, "127.0.0.1", 6379)
    roots = [h.root for h in [farm.net.control, *farm.net.hosts]]
    assert len({os.path.realpath(r) for r in roots}) == len(roots)
    assert all(not r.is_relative_to(o) for r in roots for o in roots if r != o)
