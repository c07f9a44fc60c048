"""Each handler against a stub context (no broker, no database): what it reads from its parents and what it records.

A small chain on 120 of sklearn's digits: a tiny conv autoencoder and cnn, encode, sample, cluster, and a one-level
dream. The handlers are thin: the numbers are core's (tested in tests/core); here the wiring is checked.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.kinds import KINDS
from core.params import parse_config
from tests.workers.stub import Blobs, StubContext, make_job
from workers.handlers import handler_for

DIGITS = {"dataset": "digits", "limit": 120, "batch_size": 32}


def run(blobs: Blobs, name: str, kind: str, params: dict[str, Any], parents: list | None = None,
        attempts: int = 1) -> tuple[StubContext, Any]:
    """Run ``kind``'s handler as job ``name``; returns its context and the job (with its artifacts kept)."""
    job = make_job(name, kind, params, attempts)
    ctx = StubContext(job, blobs, parents)
    handler_for(kind)(ctx, parse_config(KINDS[kind].params, params))
    return ctx, blobs.adopt(job, ctx)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The trained models and the encoded latents, shared by the tests of this module."""
    blobs = Blobs(tmp_path_factory.mktemp("blobs"))
    ae_ctx, ae = run(blobs, "ae", "train", {**DIGITS, "model": "conv_ae", "z_dim": 3, "filters": [4, 8, 8],
                                            "epochs": 2, "keep_checkpoint": True})
    cnn_ctx, cnn = run(blobs, "cnn", "train", {**DIGITS, "model": "cnn", "filters": [4, 8], "epochs": 1})
    enc_ctx, enc = run(blobs, "enc", "encode", {}, parents=[ae])
    return {"blobs": blobs, "ae": ae, "ae_ctx": ae_ctx, "cnn": cnn, "cnn_ctx": cnn_ctx, "enc": enc, "enc_ctx": enc_ctx}


def test_noop_records_its_value_and_fails_as_asked(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    ctx, _ = run(blobs, "n", "noop", {"value": 2.5})
    assert ctx.metric_rows == {("value", 0): 2.5}
    assert ctx.json("out.json") == {"job": "n", "value": 2.5}
    with pytest.raises(RuntimeError, match="was asked to fail"):
        run(blobs, "f", "noop", {"fail": True})
    with pytest.raises(ConnectionError, match="transient failure on attempt 1"):
        run(blobs, "t", "noop", {"transient_failures": 1}, attempts=1)
    ctx, _ = run(blobs, "t", "noop", {"transient_failures": 1}, attempts=2)
    assert ("value", 0) in ctx.metric_rows


def test_train_records_epochs_the_model_reconstructions_and_a_checkpoint_if_asked(chain: dict[str, Any]) -> None:
    ae = chain["ae_ctx"]
    assert ae.steps("loss") == ae.steps("val_loss") == [1, 2]
    assert {"test_bce", "test_mse", "test_loss"} <= {k for k, step in ae.metric_rows if step == 0}
    assert 0 <= ae.metric_rows[("dead_code_units", 0)] <= 3  # z_dim 3
    assert set(ae.recorded) == {"model.keras", "checkpoint.keras", "reconstructions.png"}
    assert ae.recorded["checkpoint.keras"][0].meta == {"epoch": 2, "model": "conv_ae"}
    assert ae.recorded["model.keras"][0].meta["input_shape"] == [28, 28, 1]
    with Image.open(ae.blobs.path(*ae.recorded["reconstructions.png"])) as png:
        assert png.height > 2 * 28
    cnn = chain["cnn_ctx"]
    assert 0 <= cnn.metric_rows[("test_accuracy", 0)] <= 1
    assert set(cnn.recorded) == {"model.keras"}  # no reconstructions; its checkpoint dropped with its success
    assert [(name, a.meta) for name, a, _ in cnn.dropped] == [("checkpoint.keras", {"epoch": 1, "model": "cnn"})]
    assert not ae.dropped  # keep_checkpoint: true


def test_train_resumes_from_its_checkpoint(chain: dict[str, Any]) -> None:
    blobs: Blobs = chain["blobs"]
    params = {**DIGITS, "model": "conv_ae", "z_dim": 3, "filters": [4, 8, 8], "epochs": 3}
    job = make_job("ae-resumed", "train", params, attempts=2)
    ckpt, data = chain["ae_ctx"].recorded["checkpoint.keras"]
    blobs.add(job, "checkpoint.keras", data, ckpt.media_type, ckpt.meta)  # an earlier attempt's, after epoch 2
    ctx = StubContext(job, blobs)
    handler_for("train")(ctx, parse_config(KINDS["train"].params, params))
    assert ctx.steps("loss") == [3]  # only the epoch left
    assert ctx.progress_log[1][1] == "resuming conv_ae from its checkpoint after epoch 2"


def test_encode_writes_latents_labels_and_their_statistics(chain: dict[str, Any]) -> None:
    enc = chain["enc_ctx"]
    z_train, z_test = enc.npy("latents_train.npy"), enc.npy("latents_test.npy")
    assert z_train.shape[1] == z_test.shape[1] == 3 and z_train.dtype == np.float32
    assert len(enc.npy("labels_train.npy")) == len(z_train)
    assert enc.recorded["latents_train.npy"][0].meta["latent_shape"] == [3]
    assert enc.json("latent_stats.json")["d"] == 3
    assert enc.metric_rows[("latent_dim", 0)] == 3.0
    # a 3-D code: a t-SNE of the test codes, coloured by class
    assert enc.recorded["latents.png"][0].media_type == "image/png"
    with Image.open(enc.blobs.path(*enc.recorded["latents.png"])) as im:
        assert im.size == (500, 500)
    with Image.open(enc.blobs.path(*enc.recorded["latent_stats.png"])) as im:  # components, radii, PCA spectrum
        assert im.size == (1500, 400)


def test_sample_decodes_and_scores_with_the_cnn(chain: dict[str, Any]) -> None:
    ctx, _ = run(chain["blobs"], "smp", "sample", {"sampler": "fitted_normal", "n": 40, "grid": 16},
                 parents=[chain["enc"], chain["cnn"]])
    assert ctx.npy("samples.npy").shape == (40, 28, 28, 1)
    assert ctx.npy("z.npy").shape == (40, 3)
    scores = ctx.json("scores.json")
    assert scores["sampler"] == "fitted_normal" and scores["n"] == 40  # half the 120 test digits: as many
    for key in ("nn_dist", "fid_latent", "pca_residual", "recon_drift", "confident_frac", "class_entropy",
                "sample_entropy", "fid_cnn"):
        assert (key, 0) in ctx.metric_rows and ("ref_test_" + key, 0) in ctx.metric_rows
    assert ctx.recorded["samples.png"][0].meta == {"sampler": "fitted_normal", "images": 16}


def test_sample_without_a_cnn_scores_without_the_classifier(chain: dict[str, Any]) -> None:
    ctx, _ = run(chain["blobs"], "smp2", "sample", {"sampler": "interpolate", "n": 20, "steps": 5},
                 parents=[chain["enc"]])
    assert ctx.npy("z.npy").shape == (20, 3)
    assert {k for k, _ in ctx.metric_rows} == {prefix + key for prefix in ("", "ref_test_", "ref_recon_")
                                               for key in ("nn_dist", "fid_latent", "pca_residual", "recon_drift")}


def test_cluster_the_latents_of_an_encode_job(chain: dict[str, Any]) -> None:
    ctx, _ = run(chain["blobs"], "km", "cluster", {"k": [2, 3, 4], "n_init": 2, "plot_sample": 50},
                 parents=[chain["enc"]])
    assert ctx.steps("inertia") == [2, 3, 4]
    assert ctx.metric_rows[("best_k", 0)] in (2, 3, 4) and ("elbow_k", 0) in ctx.metric_rows
    assert set(ctx.recorded) == {"confusion.json", "clusters_train.npy", "sweep.png", "clusters_2d.png"}
    assert len(ctx.npy("clusters_train.npy")) == len(chain["enc_ctx"].npy("latents_train.npy"))


def test_a_dream_level_through_its_tile_and_merge_jobs(chain: dict[str, Any], tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)).save(image)
    blobs = chain["blobs"]
    tile_ctx, tile = run(blobs, "d/i0/L0/t0", "dream_tile", {"size": 28, "level": 0, "tile": 0, "map": 1,
                                                             "epochs": 2, "image": str(image)}, parents=[chain["cnn"]])
    assert tile_ctx.npy("tile.npy").shape == (28, 28) and tile_ctx.npy("input.npy").shape == (28, 28)
    assert ("gain", 0) in tile_ctx.metric_rows and ("seconds", 0) in tile_ctx.metric_rows
    merge_ctx, _ = run(blobs, "d/i0/L0/merge", "dream_merge", {"size": 28, "level": 0, "final": True},
                       parents=[tile])
    merged = merge_ctx.npy("final.npy")
    assert merged.shape == (28, 28) and abs(float(merged.mean())) < 1e-5 and abs(float(merged.std()) - 1) < 1e-4
    assert {"image.npy", "image.png", "final.npy", "final.png", "iterations.png"} <= set(merge_ctx.recorded)
    assert merge_ctx.recorded["iterations.png"][0].meta == {"panels": ["input", "iteration 0"]}


def test_latent_picture_of_a_2d_code_is_the_codes_themselves_by_class() -> None:
    from workers.handlers.encode import latent_picture

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    z = rng.standard_normal((300, 2)) + labels[:, None]  # ten clusters along the diagonal
    with Image.open(io.BytesIO(latent_picture(z, labels, "scatter", 200, "codes"))) as im:
        assert im.size == (500, 500)
        # ten classes, ten colours of tab10: the picture holds many distinct colours, not one
        assert len(set(im.convert("RGB").getdata())) > 50
    with pytest.raises(ValueError, match="expected"):
        from core.plots import latent_scatter_png

        latent_scatter_png(z, labels[:-1], "codes", "x", "y")
