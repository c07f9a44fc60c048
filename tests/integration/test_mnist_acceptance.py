"""Acceptance on MNIST, through the farm: training quality, scored samplers, and KMeans on the latents.

One batch, run by a real Celery worker (in-process, SQLite): conv_ae z16 and pool_ae 3 epochs each, a CNN to score
samples, encode, four samplers, and KMeans k = 10 on the latents. The figures are printed (pytest -s) and
asserted against the targets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.settings import Settings
from storage import queries
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec

SAMPLERS = ["uniform_box", "normal", "fitted_normal", "pca_ellipsoid"]
KEYS = ["confident_frac", "class_entropy", "fid_cnn", "fid_latent", "nn_dist"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mnist_training_sampling_and_latent_clustering(tmp_path: Path, shared_data: Path) -> None:
    settings: Settings = make_settings(tmp_path, data_dir=shared_data)  # mnist.npz is found in the data dir
    spec = {
        "batch": "mnist-acceptance",
        "defaults": {"params": {"batch_size": 128}},
        "jobs": [
            {"name": "conv_ae", "kind": "train", "params": {"model": "conv_ae", "dataset": "mnist", "z_dim": 16,
                                                            "epochs": 3, "loss": "bce"}},
            # pool_ae reaches BCE 0.112 in 3 epochs at Adam's default 1e-3; 1e-2 gets 0.094 (1e-3 needs more epochs)
            {"name": "pool_ae", "kind": "train", "params": {"model": "pool_ae", "dataset": "mnist", "epochs": 3,
                                                            "learning_rate": 0.01}},
            {"name": "cnn", "kind": "train", "params": {"model": "cnn", "dataset": "mnist", "epochs": 1}},
            {"name": "enc", "kind": "encode", "needs": ["conv_ae"]},
            {"name": "sample", "kind": "sample", "needs": ["enc", "cnn"], "params": {"n": 2000},
             "sweep": {"sampler": SAMPLERS}},
            {"name": "kmeans", "kind": "cluster", "needs": ["enc"], "params": {"k": 10, "n_init": 3}},
        ],
    }
    cp = open_farm(settings)
    result = cp.submit(cp.load(write_spec(tmp_path, spec)))
    with worker(cp):
        summary = wait_done(cp, result.batch_id, timeout=1700)
    jobs = jobs_by_name(cp, result.batch_id)
    assert summary.status == "succeeded", {n: j.error for n, j in jobs.items() if j.error}
    with cp.store.session() as s:
        final = {name: {m.key: m.value for m in queries.job_metrics(s, [j.id]) if m.step == 0}
                 for name, j in jobs.items()}
    took = {name: (j.finished_at - j.started_at).total_seconds() for name, j in jobs.items()}

    conv, pool, cnn = final["conv_ae"], final["pool_ae"], final["cnn"]
    print(f"\nconv_ae z16, 3 epochs: test BCE {conv['test_bce']:.4f}, MSE {conv['test_mse']:.4f} "
          f"({took['conv_ae']:.0f} s)")
    print(f"pool_ae, 3 epochs:     test BCE {pool['test_bce']:.4f}, MSE {pool['test_mse']:.4f} "
          f"({took['pool_ae']:.0f} s)")
    print(f"cnn, 1 epoch:          test accuracy {cnn['test_accuracy']:.4f} ({took['cnn']:.0f} s)")
    scores = {smp: final[f"sample[sampler={smp}]"] for smp in SAMPLERS}
    ref = scores["fitted_normal"]
    print(f"{'set':<16}" + "".join(f"{k:>16}" for k in KEYS))
    for label, prefix, row in [("real test", "ref_test_", ref), ("reconstructed", "ref_recon_", ref)]:
        print(f"{label:<16}" + "".join(f"{row[prefix + k]:>16.4f}" for k in KEYS))
    for smp, row in scores.items():
        print(f"{smp:<16}" + "".join(f"{row[k]:>16.4f}" for k in KEYS))
    print(f"KMeans k=10 on conv_ae z16 latents: test accuracy {final['kmeans']['test_accuracy']:.4f}")
    print("wall time per job: " + ", ".join(f"{n} {t:.0f}s" for n, t in took.items()))

    assert conv["test_bce"] <= 0.10 and conv["test_mse"] <= 0.012
    assert pool["test_bce"] <= 0.10
    # The seed experiment's finding, measured. Against the standard normal (which ignores the latents' scale),
    # the fitted normal wins on every score. Against the uniform box it wins on both Fréchet distances and on
    # class balance, but not on the confident fraction: the box's sharp stroke fragments and frames are
    # classified as confidently as the fitted normal's blurrier, digit-shaped samples (measured 0.376 vs 0.373).
    fitted, box, normal = scores["fitted_normal"], scores["uniform_box"], scores["normal"]
    assert fitted["confident_frac"] >= normal["confident_frac"] + 0.2
    assert fitted["fid_cnn"] <= 0.5 * normal["fid_cnn"] and fitted["fid_latent"] <= 0.5 * normal["fid_latent"]
    assert fitted["fid_cnn"] < box["fid_cnn"] and fitted["fid_latent"] <= 0.5 * box["fid_latent"]
    assert fitted["class_entropy"] > box["class_entropy"]
    assert ref["ref_test_confident_frac"] > max(s["confident_frac"] for s in scores.values())  # real images: the bar
    assert 0.3 < final["kmeans"]["test_accuracy"] <= 1.0
