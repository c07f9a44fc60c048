"""The Python client (``import latentfarm as lf``) as a notebook uses it: on the embedded default (the environment's
settings, SQLite in the working directory, the batch run in this process) and through a real ``latentfarm serve``
process over HTTP with a token, on the same farm, so that every read can be compared between the two.

The farm: a small chain (two trainings of a z_dim sweep on sklearn's digits, an encode of each, a KMeans of each
encode), a noop whose param and metric share a name, and a search of two trials.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import latentfarm as lf
from scheduler.client.remote import RemoteBackend
from scheduler.errors import NotFound, SpecError, TransientError, UserError
from tests.e2e.cli import clean_env
from tests.e2e.test_serve import Server, free_port, serving

pytestmark = pytest.mark.timeout(600)

TOKEN = "client-test-token-3a9e"
TINY = {"dataset": "digits", "limit": 200, "filters": [8, 16, 16], "batch_size": 64}
SPEC: dict[str, Any] = {
    "batch": "client-test",
    "jobs": [
        {"name": "train", "kind": "train", "params": {**TINY, "epochs": 2}, "sweep": {"z_dim": [2, 4]}},
        {"name": "encode", "kind": "encode", "foreach": "train"},
        {"name": "kmeans", "kind": "cluster", "foreach": "encode",
         "params": {"k": [2, 3], "n_init": 2, "plot": "none"}},
        {"name": "n", "kind": "noop", "params": {"value": 3}},
        {"name": "tuned", "kind": "train", "params": {**TINY, "epochs": 1},
         "search": {"space": {"z_dim": {"choice": [2, 3]}}, "metric": "val_loss", "trials": 2, "parallel": 1,
                    "sampler": "grid"}},
    ],
}
NOOPS = "batch: noops\njobs:\n  - {name: a, kind: noop, sweep: {value: [1, 2]}}\n  - {name: b, kind: noop, needs: a}\n"


@dataclass
class Farm:
    dir: Path
    local: lf.Client
    batch: lf.Batch
    bar: str  # what the progress bar wrote


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """The farm of the environment's settings (none set: the embedded default in a fresh working directory), with
    the chain submitted through ``lf.submit`` and run here."""
    work = tmp_path_factory.mktemp("client")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LATENTFARM_")]:
            mp.delenv(name)
        mp.chdir(work)
        client = lf.connect()
        import io
        from contextlib import redirect_stderr

        err = io.StringIO()
        with redirect_stderr(err):
            batch = lf.submit(SPEC)
        yield Farm(work, client, batch, err.getvalue())
        client.close()


@pytest.fixture(scope="module")
def server(farm: Farm) -> Iterator[Server]:
    """``latentfarm serve`` on the same working directory (the same database and artifacts), with a token."""
    with serving(farm.dir, clean_env(LATENTFARM_API_TOKEN=TOKEN)) as s:
        yield s


@pytest.fixture(scope="module")
def remote(server: Server) -> Iterator[lf.Client]:
    client = lf.connect(url=f"http://127.0.0.1:{server.port}", token=TOKEN)
    yield client
    client.close()


@pytest.fixture(params=["embedded", "served"])
def client(request: pytest.FixtureRequest, farm: Farm) -> lf.Client:
    """Each test of a read runs on both backends."""
    return farm.local if request.param == "embedded" else request.getfixturevalue("remote")


# ---- submit -------------------------------------------------------------------------------------------------------

def test_submit_runs_the_batch_here_with_a_progress_bar(farm: Farm) -> None:
    b = farm.batch
    assert (b.status, b.total, b.counts) == ("succeeded", 10, {"succeeded": 10}), b
    assert b.name == "client-test" and set(b.submitted) >= {"train[z_dim=2]", "encode[z_dim=4]", "n", "tuned"}
    assert f"batch {b.id} client-test" in farm.bar and "10/10" in farm.bar and "10 succeeded" in farm.bar
    assert (farm.dir / "latentfarm.db").is_file()  # the embedded default: SQLite in the working directory
    assert lf.batch(b.id).status == "succeeded" and repr(lf.batch(b.id)).startswith(f"<batch {b.id} 'client-test'")


def test_submit_without_waiting_runs_at_wait(farm: Farm) -> None:
    spec = farm.dir / "noops.yaml"
    spec.write_text(NOOPS)
    b = farm.local.submit(spec, wait=False)
    assert b.status == "running" and b.counts == {"queued": 2, "pending": 1}
    assert b.wait(progress=False).status == "succeeded" and b.counts == {"succeeded": 3}
    again = farm.local.submit(str(spec), progress=False)  # a file again: every job answered by the cache
    assert again.status == "succeeded" and again.jobs()["status"].tolist() == ["succeeded"] * 3


def test_a_wait_that_times_out_hands_its_running_job_back(farm: Farm) -> None:
    b = farm.local.submit({"batch": "slow", "jobs": [{"name": "s", "kind": "noop", "params": {"seconds": 4}}]},
                          progress=False, timeout=0.5)
    assert b.status == "running"  # left before its end: the job goes back to the queue (at its next check)
    assert b.jobs()["status"].tolist()[0] in ("running", "queued")
    claimed = b.job("s").info["attempts"]  # 1: claimed and handed back; 0: a busy machine had not claimed it yet
    assert claimed in (0, 1)
    assert b.wait(progress=False).status == "succeeded"  # this process sends it again and runs it
    assert b.job("s").info["attempts"] == claimed + 1


# ---- the jobs table -----------------------------------------------------------------------------------------------

def test_the_jobs_table_has_params_inherited_params_and_final_metrics(client: lf.Client, farm: Farm) -> None:
    df = client.jobs(batch=farm.batch.id)
    assert list(df.columns[:5]) == ["id", "batch", "name", "kind", "status"]
    rows = df.set_index("name")
    assert len(df) == 10 and set(rows["status"]) == {"succeeded"}
    assert rows.loc["train[z_dim=2]", "inherited"] == () and rows.loc["train[z_dim=2]", "z_dim"] == 2
    for z in (2, 4):  # an encode and a KMeans of train[z_dim=z] carry its z_dim, marked as inherited
        for name in (f"encode[z_dim={z}]", f"kmeans[z_dim={z}]"):
            assert rows.loc[name, "z_dim"] == z and "z_dim" in rows.loc[name, "inherited"], name
            assert rows.loc[name, "model"] == "conv_ae"
    assert "z_dim" in df.attrs["inherited"] and "z_dim" in df.attrs["params"]
    assert str(df["z_dim"].dtype) == "Int64" and pd.isna(rows.loc["n", "z_dim"])
    # final metrics: floats, NaN where a job has none; a metric named as a param is metrics.<name>
    assert rows.loc["train[z_dim=4]", "test_mse"] > 0 and np.isnan(rows.loc["n", "test_mse"])
    assert rows.loc["n", "value"] == 3 and rows.loc["n", "metrics.value"] == 3.0
    assert rows.loc["kmeans[z_dim=2]", "best_k"] in (2.0, 3.0)
    assert {"test_mse", "best_k", "metrics.value", "metrics.loss"} <= set(df.attrs["metrics"])
    assert all(df[c].dtype == float for c in df.attrs["metrics"])
    # a training's final val_loss is its last epoch's
    train = client.job(int(rows.loc["train[z_dim=2]", "id"]))
    assert rows.loc["train[z_dim=2]", "val_loss"] == train.metrics(key="val_loss")["value"].iloc[-1]


def test_jobs_filtered_by_kind_status_and_params_inherited_too(client: lf.Client, farm: Farm) -> None:
    batch = client.batch(farm.batch.id)
    assert batch.jobs(kind="cluster")["name"].tolist() == ["kmeans[z_dim=2]", "kmeans[z_dim=4]"]
    assert batch.jobs(status="failed").empty and list(batch.jobs(status="failed").columns)[:5] == [
        "id", "batch", "name", "kind", "status"]
    chain = ["train[z_dim=4]", "encode[z_dim=4]", "kmeans[z_dim=4]"]
    for param in ("z_dim=4", ["z_dim=4"], {"z_dim": 4}):
        assert batch.jobs(param=param)["name"].tolist() == chain, param
    assert batch.jobs(param={"z_dim": 4, "filters": [8, 16, 16]})["name"].tolist() == chain
    assert client.jobs(param="z_dim=4", kind="encode", batch=farm.batch.id)["name"].tolist() == ["encode[z_dim=4]"]
    plain = batch.jobs(inherited=False).set_index("name")
    assert pd.isna(plain.loc["encode[z_dim=4]", "z_dim"]) and plain.loc["encode[z_dim=4]", "inherited"] == ()
    with pytest.raises(UserError, match=r"^status: expected one of pending, .*got 'done'$"):
        client.jobs(status="done")
    with pytest.raises(UserError, match="expected NAME=VALUE"):
        client.jobs(param="z_dim")


def test_a_job_its_metrics_long_and_wide(client: lf.Client, farm: Farm) -> None:
    job = client.batch(farm.batch.id).job("encode[z_dim=4]")
    assert (job.kind, job.status, job.inherited["z_dim"], job.params["dataset"]) == ("encode", "succeeded", 4, None)
    train = client.batch(farm.batch.id).job("train[z_dim=2]")
    assert train.inherited == {} and train.final["test_mse"] > 0 and train.error is None
    long = train.metrics()
    assert list(long.columns) == ["key", "step", "value", "time"]
    assert long[long.key == "loss"]["step"].tolist() == [1, 2]
    wide = train.metrics(wide=True)
    assert wide.index.tolist() == [0, 1, 2] and wide.loc[2, "val_loss"] == train.final["val_loss"]
    curves = client.batch(farm.batch.id).metrics(key="loss", wide=True)
    assert {name for _, name, _ in curves.index} >= {"train[z_dim=2]", "train[z_dim=4]"}
    with pytest.raises(NotFound, match="^no job 999999$"):
        client.job(999999)
    with pytest.raises(NotFound, match=r"has no job 'train\[z_dim=3\]'"):
        client.batch(farm.batch.id).job("train[z_dim=3]")


def test_artifacts_by_media_type(client: lf.Client, farm: Farm) -> None:
    b = client.batch(farm.batch.id)
    train = b.job("train[z_dim=2]")
    listed = train.artifacts().set_index("name")
    assert listed.loc["reconstructions.png", "media_type"] == "image/png"
    image = train.artifact("reconstructions.png")
    assert isinstance(image, Image.Image) and image.size[0] > 0 and image.size[1] > 0
    raw = train.artifact("reconstructions.png", raw=True)
    assert hashlib.sha256(raw).hexdigest() == listed.loc["reconstructions.png", "sha256"]
    model = train.artifact("model.keras")  # a media type the client does not decode: its bytes
    assert isinstance(model, bytes) and len(model) == listed.loc["model.keras", "bytes"]
    latents = b.job("encode[z_dim=4]").artifact("latents_train.npy")
    assert isinstance(latents, np.ndarray) and latents.shape[1] == 4
    assert b.job("n").artifact("out.json") == {"job": "n", "value": 3.0}
    with pytest.raises(NotFound, match=r"has no artifact 'nope.png' \(its artifacts: out.json\)$"):
        b.job("n").artifact("nope.png")


def test_compare_groups_by_inherited_params(client: lf.Client, farm: Farm) -> None:
    df = client.batch(farm.batch.id).compare("best_k", by="z_dim", kind="cluster", higher_is_better=True)
    assert df["z_dim"].tolist() == [2, 4] and df["jobs"].tolist() == [1, 1]
    assert df["inherited"].all() and df["winner"].sum() == 1 and df.attrs["kind"] == "cluster"
    assert df["best_name"].tolist() == ["kmeans[z_dim=2]", "kmeans[z_dim=4]"]
    assert lf.compare(farm.batch.id, "test_mse", "z_dim", kind="train")["jobs"].sum() == 4  # the sweep, the trials
    with pytest.raises(UserError, match="has the metric 'nope'"):
        client.compare(farm.batch.id, "nope", "z_dim")


def test_a_search_and_its_trials(client: lf.Client, farm: Farm) -> None:
    s = client.batch(farm.batch.id).search("tuned")
    assert (s.name, s.status, s.counts) == ("tuned", "succeeded", {"complete": 2})
    assert sorted(s.trials["z_dim"]) == [2, 3] and set(s.trials["state"]) == {"complete"}
    assert s.best is not None and s.best["value"] == s.trials["value"].min()
    with pytest.raises(NotFound):
        client.search(farm.batch.id, "nope")


# ---- the same farm, both ways --------------------------------------------------------------------------------------

def test_both_backends_read_the_same(farm: Farm, remote: lf.Client) -> None:
    local = farm.local
    b = farm.batch.id
    pd.testing.assert_frame_equal(local.jobs(batch=b), remote.jobs(batch=b))
    assert local.jobs(batch=b).attrs == remote.jobs(batch=b).attrs
    pd.testing.assert_frame_equal(local.batch(b).metrics(), remote.batch(b).metrics())
    pd.testing.assert_frame_equal(local.compare(b, "best_k", "z_dim"), remote.compare(b, "best_k", "z_dim"))
    pd.testing.assert_frame_equal(local.search(b, "tuned").trials, remote.search(b, "tuned").trials)
    pd.testing.assert_frame_equal(local.batches(), remote.batches())
    for name in ("encode[z_dim=2]", "kmeans[z_dim=4]", "n"):
        mine, theirs = local.batch(b).job(name), remote.batch(b).job(name)
        assert (mine.params, mine.inherited, mine.final) == (theirs.params, theirs.inherited, theirs.final)
        pd.testing.assert_frame_equal(mine.metrics(wide=True), theirs.metrics(wide=True))
        one = remote.job(mine.id)  # GET /jobs/{id}: inherited params; final metrics from its metrics
        assert (one.inherited, one.final) == (mine.inherited, mine.final)


def test_submit_through_serve(remote: lf.Client, server: Server) -> None:
    b = remote.submit({"batch": "over-http", "jobs": [{"name": "a", "kind": "noop", "sweep": {"value": [1, 2]}},
                                                      {"name": "b", "kind": "noop", "needs": "a"}]}, progress=False)
    assert b.status == "succeeded" and b.counts == {"succeeded": 3}, server.output()[-2000:]
    assert sorted(b.jobs()["metrics.value"]) == [1.0, 1.0, 2.0]
    assert remote.where == f"http://127.0.0.1:{server.port}"


def test_the_same_errors_both_ways(farm: Farm, remote: lf.Client) -> None:
    bad = {"batch": "bad", "jobs": [{"name": "a", "kind": "noop", "params": {"nope": 1}}]}
    said = []
    for c in (farm.local, remote):
        with pytest.raises(SpecError) as e:
            c.submit(bad)
        said.append(str(e.value))
    assert said[0] == said[1] and said[0].startswith("<spec>: job 'a': field 'params.nope': unknown parameter")
    path = farm.dir / "bad.yaml"
    path.write_text("batch: bad\njobs:\n  - {name: a, kind: nope}\n")
    for c in (farm.local, remote):
        with pytest.raises(SpecError, match=f"^{path}: job 'a'"):
            c.submit(path)
    for c in (farm.local, remote):
        with pytest.raises(NotFound, match="^no batch 999999$"):
            c.batch(999999)
        with pytest.raises(SpecError, match="not plain JSON values"):
            c.submit({"batch": "x", "jobs": [{"name": "a", "kind": "noop", "params": {"value": object()}}]})


def test_a_wrong_token_or_address_is_said_at_connect(server: Server) -> None:
    with pytest.raises(UserError, match=r"refused the request: wrong bearer token \(pass token="):
        lf.connect(url=f"http://127.0.0.1:{server.port}", token="wrong")
    port = free_port()  # nothing listens there
    with pytest.raises(TransientError, match=f"^cannot reach the farm at http://127.0.0.1:{port}: .*refused"):
        RemoteBackend(f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match="expected http://host:port"):
        lf.connect(url="farm:8080")


def test_the_api_answers_finals_and_inherited_params_when_asked(farm: Farm, server: Server) -> None:
    """The fields the client reads: GET /jobs?finals=true&inherited=true, and inherited on GET /jobs/{id}."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.base, headers=auth) as http:
        plain = http.get("/jobs", params={"batch": farm.batch.id, "kind": "encode"}).json()["items"]
        assert [(j["metrics"], j["inherited"]) for j in plain] == [({}, None), ({}, None)]
        full = http.get("/jobs", params={"batch": farm.batch.id, "kind": "encode", "finals": "true",
                                         "inherited": "true"}).json()["items"]
        assert [j["inherited"]["z_dim"] for j in full] == [2, 4]
        assert all(j["metrics"]["latent_dim"] == j["inherited"]["z_dim"] for j in full)
        sorted_on = http.get("/jobs", params={"batch": farm.batch.id, "kind": "train", "sort": "test_mse",
                                              "finals": "true"}).json()["items"]
        assert all({"test_mse", "val_loss", "loss"} <= set(j["metrics"]) for j in sorted_on)
        one = http.get(f"/jobs/{full[0]['id']}").json()
        assert one["inherited"] == full[0]["inherited"] and one["metrics"] == {}
        first = http.get("/jobs", params={"batch": farm.batch.id, "kind": "train"}).json()["items"][0]
        assert http.get(f"/jobs/{first['id']}").json()["inherited"] == {}  # a training needs nothing


def test_importing_and_reading_needs_no_tensorflow(farm: Farm) -> None:
    """A notebook that only reads (here: the embedded farm's tables and images) never imports TensorFlow."""
    code = (f"import sys, latentfarm as lf\nc = lf.connect()\nc.batches()\nc.jobs(batch={farm.batch.id})\n"
            f"c.batch({farm.batch.id}).job('train[z_dim=2]').artifact('reconstructions.png')\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=farm.dir, env=clean_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
