"""Every job kind through a real Celery worker (in-process, memory:// broker, SQLite), on small slices of real data."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scheduler.settings import Settings
from storage import queries
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def settings(tmp_path: Path, shared_data: Path) -> Settings:
    return make_settings(tmp_path, data_dir=shared_data)  # olivetti and wifi are found in the data dir


def _results(cp, job_id: int) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    with cp.store.session() as s:
        final = {m.key: m.value for m in queries.job_metrics(s, [job_id]) if m.step == 0}
        arts = {a.name: a for a in queries.job_artifacts(s, job_id)}
    return final, arts


def _run_batch(settings: Settings, tmp_path: Path, spec: dict, timeout: float = 400):  # type: ignore[no-untyped-def]
    """The batch ``spec`` run to its end by an in-process worker: (the control plane, its jobs by name); every
    job succeeded."""
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=timeout)
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "succeeded", {n: j.error for n, j in jobs.items() if j.error}
    return cp, jobs


def _png_size(cp, artifact) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with Image.open(io.BytesIO(cp.store.artifacts.get_bytes(artifact.uri, artifact.sha256))) as im:
        return im.size


def test_train_encode_sample_cluster_chain_on_digits(settings: Settings, tmp_path: Path) -> None:
    spec = {
        "batch": "chain",
        "defaults": {"params": {"epochs": 2, "batch_size": 64}},
        "jobs": [
            {"name": "ae", "kind": "train", "params": {"model": "conv_ae", "z_dim": 4, "dataset": "digits",
                                                       "limit": 400}},
            {"name": "cnn", "kind": "train", "params": {"model": "cnn", "dataset": "digits", "limit": 400}},
            {"name": "enc", "kind": "encode", "needs": ["ae"]},
            {"name": "sample", "kind": "sample", "needs": ["enc", "cnn"], "params": {"n": 60, "grid": 16},
             "sweep": {"sampler": ["uniform_box", "fitted_normal", "pca_ellipsoid", "interpolate"]}},
            {"name": "clu", "kind": "cluster", "needs": ["enc"], "params": {"k": [2, 5, 10], "n_init": 2}},
        ],
    }
    from workers import models

    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    assert len(result.job_ids) == 8
    loads_before = models.loads
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=500)
    # encode + 4 sample jobs read the autoencoder, 4 sample jobs read the cnn: each is loaded once per process
    assert models.loads - loads_before == 2
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "succeeded", {n: j.error for n, j in jobs.items() if j.error}

    cnn, cnn_arts = _results(cp, jobs["cnn"].id)
    assert 0.3 < cnn["test_accuracy"] <= 1.0 and "reconstructions.png" not in cnn_arts

    enc, enc_arts = _results(cp, jobs["enc"].id)
    z_train = np.load(cp.store.artifacts.path_of(enc_arts["latents_train.npy"].uri))
    z_test = np.load(cp.store.artifacts.path_of(enc_arts["latents_test.npy"].uri))
    labels = np.load(cp.store.artifacts.path_of(enc_arts["labels_train.npy"].uri))
    assert z_train.shape == (400, 4) and z_test.shape[1] == 4 and labels.shape == (400,)
    stats = json.loads(cp.store.artifacts.get_bytes(enc_arts["latent_stats.json"].uri))
    assert stats["d"] == 4 and len(stats["mean"]) == 4 and len(stats["pca"]["explained_variance_ratio"]) == 4
    assert enc["latent_dim"] == 4

    for sampler in ("uniform_box", "fitted_normal", "pca_ellipsoid", "interpolate"):
        final, arts = _results(cp, jobs[f"sample[sampler={sampler}]"].id)
        for prefix in ("", "ref_test_", "ref_recon_"):
            for key in ("nn_dist", "fid_latent", "confident_frac", "class_entropy", "fid_cnn"):
                assert np.isfinite(final[prefix + key]), (sampler, prefix + key)
        assert 0 <= final["confident_frac"] <= 1 and 0 <= final["class_entropy"] <= np.log2(10) + 1e-9
        samples = np.load(cp.store.artifacts.path_of(arts["samples.npy"].uri))
        assert samples.shape[1:] == (28, 28, 1) and 0 <= samples.min() and samples.max() <= 1
        assert _png_size(cp, arts["samples.png"])[0] > 28
    fitted, _ = _results(cp, jobs["sample[sampler=fitted_normal]"].id)
    assert fitted["ref_test_nn_dist"] > 0 and fitted["ref_recon_fid_latent"] < fitted["fid_latent"] * 10
    # the reference scores are the same for every sampler: the worker computed them once, under the training's
    # model files, for the 60 images each of the three sets held
    refs = {s: {k: v for k, v in _results(cp, jobs[f"sample[sampler={s}]"].id)[0].items() if k.startswith("ref_")}
            for s in ("uniform_box", "fitted_normal", "pca_ellipsoid")}
    assert refs["uniform_box"] == refs["fitted_normal"] == refs["pca_ellipsoid"] and len(refs["uniform_box"]) == 16
    from workers.handlers import sample as sample_handler

    held = [by_n for key, by_n in sample_handler.REFERENCES.items() if key[2] == jobs["ae"].fingerprint]
    assert len(held) == 1 and held[0][60] == refs["uniform_box"]

    clu, clu_arts = _results(cp, jobs["clu"].id)
    with cp.store.session() as s:
        per_k = {(m.key, m.step): m.value for m in queries.job_metrics(s, [jobs["clu"].id]) if m.step}
    assert {k for _, k in per_k} == {2, 5, 10}
    assert per_k[("inertia", 2)] > per_k[("inertia", 5)] > per_k[("inertia", 10)]
    assert 0 < clu["test_accuracy"] <= 1 and clu["best_k"] in (2, 5, 10)
    assert {"sweep.png", "clusters_2d.png", "confusion.json", "clusters_train.npy"} <= set(clu_arts)


def test_cluster_wifi_raw_features(settings: Settings, tmp_path: Path) -> None:
    spec = {"batch": "wifi", "jobs": [{"name": "km", "kind": "cluster", "params": {
        "dataset": "wifi", "test_size": 0.25, "k": [3, 4, 5, 10], "n_init": 4}}]}
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with worker(cp):
        assert wait_done(cp, result.batch_id).status == "succeeded"
    final, arts = _results(cp, result.job_ids["km"])
    assert final["test_accuracy"] >= 0.9 and final["silhouette_k"] in (4, 5)
    confusion = json.loads(cp.store.artifacts.get_bytes(arts["confusion.json"].uri))["matrix"]
    assert np.asarray(confusion).sum() == 500  # the 500 test rows


def test_pool_ae_and_face_ae_train_on_real_images(settings: Settings, tmp_path: Path) -> None:
    spec = {"batch": "models", "jobs": [
        {"name": "pool", "kind": "train", "params": {"model": "pool_ae", "dataset": "digits", "limit": 300,
                                                     "epochs": 1, "optimizer": "adadelta", "learning_rate": 1.0}},
        {"name": "face", "kind": "train", "params": {"model": "face_ae", "dataset": "olivetti", "limit": 60,
                                                     "epochs": 1, "z_dim": 32, "batch_size": 16}},
        {"name": "enc", "kind": "encode", "needs": ["pool"]},
        {"name": "smp", "kind": "sample", "needs": ["enc"], "params": {"n": 20, "sampler": "normal"}},
    ]}
    cp, jobs = _run_batch(settings, tmp_path, spec)
    face, face_arts = _results(cp, jobs["face"].id)
    assert 0 < face["test_mse"] < 0.2
    assert _png_size(cp, face_arts["reconstructions.png"])[1] > 64  # 64x64 faces, two rows
    enc, enc_arts = _results(cp, jobs["enc"].id)
    assert enc_arts["latents_train.npy"].meta["latent_shape"] == [7, 7, 2] and enc["latent_dim"] == 98
    smp, _ = _results(cp, jobs["smp"].id)
    assert "confident_frac" not in smp and np.isfinite(smp["fid_latent"])  # no cnn: no classifier scores


def test_sample_without_its_encode_parent_is_refused_at_submit(settings: Settings, tmp_path: Path) -> None:
    from scheduler.errors import SpecError

    spec = {"batch": "bad", "jobs": [{"name": "ae", "kind": "train"},
                                     {"name": "smp", "kind": "sample", "needs": ["ae"]}]}
    cp = open_farm(settings)
    with pytest.raises(SpecError, match="needs an encode job"):
        cp.load(write_spec(tmp_path, spec))


def test_new_faces_from_a_folder_of_colour_photos_at_96_pixels(settings: Settings, tmp_path: Path,
                                                               shared_data: Path) -> None:
    """The faces recipe on any folder of face images (CelebA-style crops, here Olivetti faces saved as colour
    photos 120x100): face_ae trains on them at 96x96 in colour, the encode job analyses the codes and a sampler
    decodes new faces of that size, scored without a classifier."""
    faces = np.load(shared_data / "olivetti_faces.npz")["images"][:48]
    folder = tmp_path / "celeb"
    folder.mkdir()
    for i, face in enumerate(faces):
        grey = Image.fromarray((np.clip(face, 0, 1) * 255).astype(np.uint8)).resize((100, 120))
        Image.merge("RGB", (grey, grey, grey)).save(folder / f"{i:03d}.jpg", quality=90)
    spec = {"batch": "faces", "jobs": [
        {"name": "face", "kind": "train", "params": {"model": "face_ae", "dataset": "images",
                                                     "data_path": str(folder), "image_size": 96, "color": "rgb",
                                                     "z_dim": 16, "epochs": 1, "batch_size": 16}},
        {"name": "codes", "kind": "encode", "needs": ["face"]},
        {"name": "new", "kind": "sample", "needs": ["codes"], "params": {"n": 8, "sampler": "fitted_normal"}},
    ]}
    cp, jobs = _run_batch(settings, tmp_path, spec)
    _, codes_arts = _results(cp, jobs["codes"].id)
    assert {"latents.png", "latent_stats.png"} <= set(codes_arts)
    new, new_arts = _results(cp, jobs["new"].id)
    samples = np.load(cp.store.artifacts.path_of(new_arts["samples.npy"].uri))
    assert samples.shape == (8, 96, 96, 3)
    assert np.isfinite(new["pca_residual"]) and np.isfinite(new["ref_test_pca_residual"])
