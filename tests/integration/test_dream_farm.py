"""Dreams through the farm: tile and merge jobs on real Celery workers give the in-process dream's image.

Embedded (SQLite + an in-process worker on memory://) and production (Redis + PostgreSQL + two
``latentfarm worker`` processes). The cnn is trained on digits for one epoch: any trained map will do.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from scheduler.settings import Settings
from storage import queries
from storage.status import JobStatus
from tests.conftest import make_settings
from tests.e2e.cli import clean_env, latentfarm_bin
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec

pytestmark = pytest.mark.timeout(600)

SIZE = 112  # 28 * 2**2: the smallest working size for levels 0-2
CNN = {"name": "cnn", "kind": "train", "params": {"model": "cnn", "dataset": "digits", "epochs": 1, "seed": 0}}
DREAM = {"levels": 2, "iterations": 2, "size": SIZE, "epochs": {0: 6, 1: 3, 2: 2}, "epsilon": 0.05}


def _spec(name: str, image: Path, maps: Any, **params: Any) -> dict:
    dream = {"name": "dream", "kind": "dream", "needs": "cnn",
             "params": {**DREAM, "image": str(image), "maps": maps, **params}}
    return {"batch": name, "jobs": [CNN, dream]}


def _artifacts(cp, job_id: int) -> dict:  # type: ignore[no-untyped-def]
    with cp.store.session() as s:
        return {a.name: a for a in queries.job_artifacts(s, job_id)}


def _npy(cp, artifact) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.load(io.BytesIO(cp.store.artifacts.get_bytes(artifact.uri, artifact.sha256)), allow_pickle=False)


def _png(cp, artifact) -> Image.Image:  # type: ignore[no-untyped-def]
    return Image.open(io.BytesIO(cp.store.artifacts.get_bytes(artifact.uri, artifact.sha256)))


def _in_process(cp, cnn_job_id: int, image: str, maps: Any, tmp_path: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The same dream by ``core.dream.run_dream`` in this process, with the farm's trained cnn."""
    import keras

    from core.dream import features_model, load_image, run_dream
    from core.kinds.dream import DreamParams

    model_file = tmp_path / f"cnn-{cnn_job_id}.keras"
    shutil.copy(cp.store.artifacts.path_of(_artifacts(cp, cnn_job_id)["model.keras"].uri), model_file)
    model = features_model(keras.saving.load_model(model_file, compile=False))
    config = DreamParams(image=image, maps=maps, **DREAM).dream_config()
    return run_dream(model, load_image(image, SIZE), config).final


def _finals(cp, batch_id: int) -> dict[str, tuple[np.ndarray, Any]]:  # type: ignore[no-untyped-def]
    """Each dream's final image and the params of its first tile, by dream name."""
    jobs = jobs_by_name(cp, batch_id)
    out = {}
    for name, job in jobs.items():
        if name.endswith("/merge") and "final.npy" in _artifacts(cp, job.id):
            dream = name.rsplit("/", 3)[0]
            out[dream] = (_npy(cp, _artifacts(cp, job.id)["final.npy"]), jobs[f"{dream}/i0/L0/t0"].params)
    return out


@pytest.fixture
def settings(tmp_path: Path, shared_data: Path) -> Settings:
    return make_settings(tmp_path, data_dir=shared_data)


def test_dream_on_the_embedded_farm_equals_the_in_process_dream(settings: Settings, tmp_path: Path,
                                                                shared_data: Path) -> None:
    from workers import models

    image = shared_data / "dream_input.jpg"
    maps = {0: 3, 1: [12, 56, 3, 40], 2: 7}
    cp = open_farm(settings)
    submitted = cp.submit(cp.load(write_spec(tmp_path, _spec("dream", image, maps))))
    assert len(submitted.job_ids) == 1 + 2 * (21 + 3)
    loads_before = models.loads
    with worker(cp):
        summary = wait_done(cp, submitted.batch_id, timeout=500)
    assert summary.counts == {"succeeded": 49}
    assert models.loads - loads_before == 1  # 42 tiles, one cnn load: the per-process cache keeps it

    jobs = jobs_by_name(cp, submitted.batch_id)
    final_merge = jobs["dream/i1/L2/merge"]
    arts = _artifacts(cp, final_merge.id)
    assert {"image.npy", "image.png", "final.npy", "final.png", "iterations.png"} <= set(arts)
    final = _npy(cp, arts["final.npy"])
    assert final.shape == (SIZE, SIZE) and final.dtype == np.float32
    assert abs(float(final.mean())) < 1e-4 and abs(float(final.std()) - 1) < 1e-3
    expected = _in_process(cp, jobs["cnn"].id, str(image), maps, tmp_path)
    assert float(np.abs(final - expected).max()) < 1e-4

    for it in range(2):  # every iteration's image as a PNG, on the last merge of that iteration
        with _png(cp, _artifacts(cp, jobs[f"dream/i{it}/L2/merge"].id)["image.png"]) as png:
            assert png.size == (SIZE, SIZE) and png.mode == "L"
            pixels = np.asarray(png)
            assert pixels.min() == 0 and pixels.max() == 255
    with _png(cp, arts["iterations.png"]) as strip:  # input, iteration 0, iteration 1
        assert strip.size == (3 * SIZE + 2 * 4, SIZE)
    first_tile = _artifacts(cp, jobs["dream/i0/L0/t0"].id)
    assert _npy(cp, first_tile["input.npy"]).shape == (SIZE, SIZE)

    tiles = [j for j in jobs.values() if j.kind == "dream_tile"]
    with cp.store.session() as s:
        metrics = queries.job_metrics(s, [t.id for t in tiles])
    gains = [m.value for m in metrics if m.key == "gain"]
    assert len(gains) == 42 and sum(g > 0 for g in gains) >= 30  # most tiles raise their map
    assert len([m for m in metrics if m.key == "seconds" and m.value > 0]) == 42
    level_1 = [jobs[f"dream/i0/L1/t{i}"] for i in range(4)]
    assert [t.params["map"] for t in level_1] == [12, 56, 3, 40]
    meta = _artifacts(cp, level_1[3].id)["tile.npy"].meta
    assert (meta["row0"], meta["col0"]) == (SIZE // 2, SIZE // 2)

    # The same batch again is served whole from the cache; a new level-2 map reuses iteration 0's levels 0-1.
    again = cp.submit(cp.load(write_spec(tmp_path, _spec("again", image, maps), name="again.yaml")))
    assert len(again.cached) == 49 and again.queued == []
    changed = cp.submit(cp.load(write_spec(tmp_path, _spec("changed", image, {**maps, 2: 9}), name="c.yaml")))
    cached = {n for n, i in changed.job_ids.items() if i in changed.cached}
    assert cached == {"cnn", "dream/i0/L0/t0", "dream/i0/L0/merge", *(f"dream/i0/L1/t{i}" for i in range(4)),
                      "dream/i0/L1/merge"}
    with worker(cp):
        assert wait_done(cp, changed.batch_id, timeout=500).counts == {"succeeded": 49}


def test_an_image_gone_after_submit_fails_the_dream_with_the_reason(settings: Settings, tmp_path: Path,
                                                                     shared_data: Path) -> None:
    image = tmp_path / "gone.jpg"
    shutil.copy(shared_data / "dream_input.jpg", image)
    cp = open_farm(settings)
    spec = _spec("gone", image, 3, levels=1, iterations=1, size=56, epochs=1)
    submitted = cp.submit(cp.load(write_spec(tmp_path, spec)))
    image.unlink()  # checked at submit; a worker still finds it missing
    with worker(cp):
        summary = wait_done(cp, submitted.batch_id)
    jobs = jobs_by_name(cp, submitted.batch_id)
    first = jobs["dream/i0/L0/t0"]
    assert first.status is JobStatus.FAILED and first.error == f"DataError: image not found: {image}"
    rest = [j for n, j in jobs.items() if n not in ("cnn", "dream/i0/L0/t0")]
    assert rest and all(j.status is JobStatus.CANCELLED for j in rest)
    assert all("dream/i0/L0/t0" in (j.error or "") for j in rest)
    assert summary.status == "failed"


@pytest.mark.redis
@pytest.mark.postgres
def test_a_batch_of_dreams_spreads_over_two_worker_processes(tmp_path: Path, shared_data: Path, redis_url: str,
                                                             pg_url: str) -> None:
    """Redis + PostgreSQL + two `latentfarm worker --pool solo` processes: tiles run on both, each worker loads
    the cnn once, and every dream's image equals the in-process one."""
    mirror = tmp_path / "mirror.png"
    with Image.open(shared_data / "dream_input.jpg") as img:
        ImageOps.mirror(img.convert("RGB")).save(mirror)
    images = [shared_data / "dream_input.jpg", mirror]
    settings = make_settings(tmp_path, database_url=pg_url, broker_url=redis_url, data_dir=shared_data)
    cp = open_farm(settings)
    env = clean_env(LATENTFARM_DATABASE_URL=pg_url, LATENTFARM_BROKER_URL=redis_url,
                    LATENTFARM_ARTIFACTS=str(settings.artifacts_dir), LATENTFARM_DATA_DIR=str(shared_data))
    logs = [tmp_path / f"w{k}.log" for k in range(2)]
    procs = [subprocess.Popen([latentfarm_bin(), "worker", "--pool", "solo", "--name", f"w{k}@%h", "--loglevel",
                               "INFO"], cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
             for k, log in enumerate(logs)]
    try:
        spec = _spec("many", images[0], 0)
        dream = spec["jobs"][1]
        del dream["params"]["image"], dream["params"]["maps"]
        dream["sweep"] = {"image": [str(p) for p in images], "maps": [3, 12]}  # 4 dreams, 168 tile jobs
        submitted = cp.submit(cp.load(write_spec(tmp_path, spec)))
        summary = wait_done(cp, submitted.batch_id, timeout=500)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    assert summary.counts == {"succeeded": 1 + 4 * 48}, "".join(log.read_text()[-2000:] for log in logs)
    jobs = jobs_by_name(cp, submitted.batch_id)
    host = os.uname().nodename
    workers = {j.worker for j in jobs.values() if j.kind == "dream_tile"}
    assert workers == {f"w0@{host}", f"w1@{host}"}
    for log in logs:  # the tiles of four dreams, one cnn load per worker process
        assert log.read_text().count("loaded model") == 1
    finals = _finals(cp, submitted.batch_id)
    assert len(finals) == 4
    for final, params in finals.values():
        expected = _in_process(cp, jobs["cnn"].id, params["image"], params["map"], tmp_path)
        assert float(np.abs(final - expected).max()) < 1e-4
    with cp.store.session() as s:
        assert {queries.require_job(s, j.id).status for j in jobs.values()} == {JobStatus.SUCCEEDED}
