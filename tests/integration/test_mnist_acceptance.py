"""Acceptance on MNIST, through the farm: training quality, scored samplers, and KMeans on the latents.

One batch, run by a real Celery worker (in-process, SQLite), on the first LIMIT training images (and LIMIT test
images): conv_ae z16 and pool_ae 3 epochs each, a CNN to score samples, encode, four samplers, and KMeans k = 10 on
the latents. The figures are printed (pytest -s) and asserted against targets for this size. The same batch on
the whole of MNIST, with the seed's targets, is ``benchmarks/mnist_findings.py`` (about 9 minutes of CPU: too
long for the suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mnist_findings import SAMPLERS, mnist_spec, report
from scheduler.settings import Settings
from storage import queries
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec

LIMIT = 12000


@pytest.mark.slow(seconds=150)  # alone, on 2 cores: the longest start first
@pytest.mark.timeout(900)
def test_mnist_training_sampling_and_latent_clustering(tmp_path: Path, shared_data: Path) -> None:
    settings: Settings = make_settings(tmp_path, data_dir=shared_data)  # mnist.npz is found in the data dir
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, mnist_spec(LIMIT))))
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=840)
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "succeeded", {n: j.error for n, j in jobs.items() if j.error}
    with cp.store.session() as s:
        final = {name: {m.key: m.value for m in queries.job_metrics(s, [j.id]) if m.step == 0}
                 for name, j in jobs.items()}
    took = {name: (j.finished_at - j.started_at).total_seconds() for name, j in jobs.items()}

    print("\n" + "\n".join(report(final, took)))
    conv, pool = final["conv_ae"], final["pool_ae"]
    scores = {smp: final[f"sample[sampler={smp}]"] for smp in SAMPLERS}
    ref = scores["fitted_normal"]

    # On 12,000 images (measured: conv_ae BCE 0.109, MSE 0.0156; pool_ae 0.114); the whole of MNIST reaches the
    # seed's 0.10 (benchmarks/mnist_findings.py: 0.088 and 0.094)
    assert conv["test_bce"] <= 0.115 and conv["test_mse"] <= 0.017
    assert pool["test_bce"] <= 0.12
    # The seed experiment's finding, measured. Against the standard normal (which ignores the latents' scale),
    # the fitted normal wins on every score. Against the uniform box it wins on both Fréchet distances and on
    # class balance, but not on the confident fraction: the box's sharp stroke fragments and frames are
    # classified as confidently as the fitted normal's blurrier, digit-shaped samples (measured on the whole of MNIST
    # 0.376 vs 0.373; on 12,000 images 0.285 vs 0.251).
    fitted, box, normal = scores["fitted_normal"], scores["uniform_box"], scores["normal"]
    assert fitted["confident_frac"] >= normal["confident_frac"] + 0.2
    assert fitted["fid_cnn"] <= 0.5 * normal["fid_cnn"] and fitted["fid_latent"] <= 0.5 * normal["fid_latent"]
    assert fitted["fid_cnn"] < box["fid_cnn"] and fitted["fid_latent"] <= 0.5 * box["fid_latent"]
    assert fitted["class_entropy"] > box["class_entropy"]
    assert ref["ref_test_confident_frac"] > max(s["confident_frac"] for s in scores.values())  # real images: the bar
    # Why the box ties on confidence: its corners decode to stroke fragments and frames the CNN is sure of (its
    # per-sample class entropy is the lowest of the samplers). Scores that need no classifier catch them: the
    # autoencoder moves them (recon_drift, measured 3.4x the fitted normal's) and they stick out of the training
    # digits' principal subspace (pca_residual, 7.7x).
    assert box["sample_entropy"] < fitted["sample_entropy"]
    assert box["recon_drift"] > 2 * fitted["recon_drift"] and box["pca_residual"] > 2 * fitted["pca_residual"]
    # A fair box, bounded by each component's 2.5% and 97.5% quantiles (as +-2 sigma of the fitted normal) rather
    # than by its extremes, loses to the fitted normal on each of these (and, measured, on every score)
    fair = final["box95"]
    for key in ("fid_cnn", "fid_latent", "recon_drift", "pca_residual"):
        assert fitted[key] < fair[key], key
    assert 0.3 < final["kmeans"]["test_accuracy"] <= 1.0
