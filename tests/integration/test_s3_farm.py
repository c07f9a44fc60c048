"""A farm whose artifacts live only in an S3 bucket (moto's server): a real Celery worker trains on the digits and
encodes with the model it loads through the host's read cache; ``latentfarm export`` and the API's download (with a
byte range) read the bucket."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from storage import queries
from storage.blobcache import read_downloads
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec
from tests.s3 import Bucket, s3_bucket, s3_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

SPEC = {"batch": "s3-chain", "jobs": [
    {"name": "ae", "kind": "train", "params": {"model": "conv_ae", "z_dim": 4, "dataset": "digits", "limit": 200,
                                               "epochs": 1, "batch_size": 64}},
    {"name": "enc", "kind": "encode", "needs": ["ae"]},
]}


def test_train_then_encode_with_artifacts_only_in_the_bucket(s3_bucket: Bucket, tmp_path: Path,  # noqa: F811
                                                             shared_data: Path) -> None:
    from fastapi.testclient import TestClient

    from scheduler.cli import cli
    from scheduler.web.app import create_app

    settings = dataclasses.replace(make_settings(tmp_path, data_dir=shared_data), artifacts=s3_bucket.url,
                                   s3_endpoint=s3_bucket.endpoint, cache_dir=tmp_path / "cache")
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, SPEC)))
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=240)
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "succeeded", {n: j.error for n, j in jobs.items() if j.error}

    with cp.store.session() as s:
        arts = {a.name: a for a in queries.artifacts_of(s, [jobs["ae"].id, jobs["enc"].id])}
    assert {"model.keras", "latents_train.npy", "latent_stats.json"} <= set(arts)
    # every blob in the bucket under the prefix, as the rows name it; nothing on the local disk
    assert set(s3_bucket.keys()) == {f"farm/{a.uri}" for a in arts.values()}
    assert not (tmp_path / "artifacts").exists()
    # the encode job loaded the model through this host's cache: downloaded once
    model = arts["model.keras"]
    assert [d["sha256"] for d in read_downloads(tmp_path / "cache")].count(model.sha256) == 1
    assert cp.store.artifacts.location(model.uri) == f"{s3_bucket.url}/{model.uri}"

    env = {**s3_bucket.env(), "LATENTFARM_DATABASE_URL": settings.database_url,
           "LATENTFARM_CACHE_DIR": str(tmp_path / "cache")}
    out = CliRunner().invoke(cli, ["export", str(jobs["enc"].id), str(tmp_path / "export")], env=env)
    assert out.exit_code == 0, out.output
    latents = (tmp_path / "export" / "latents_train.npy").read_bytes()
    assert hashlib.sha256(latents).hexdigest() == arts["latents_train.npy"].sha256
    out = CliRunner().invoke(cli, ["artifacts", str(jobs["ae"].id), "--name", "model.keras", "--csv"], env=env)
    assert f"{s3_bucket.url}/{model.uri}" in out.output

    app = create_app(cp, "s3-test-token")
    with TestClient(app, headers={"Authorization": "Bearer s3-test-token"}) as client:
        r = client.get(f"/api/v1/artifacts/{arts['latents_train.npy'].id}/content", headers={"Range": "bytes=0-99"})
        assert r.status_code == 206 and r.content == latents[:100], r.text
        assert r.headers["etag"] == f'"{arts["latents_train.npy"].sha256}"'
        assert r.headers["content-range"] == f"bytes 0-99/{len(latents)}"
    app.state.parser.close()
