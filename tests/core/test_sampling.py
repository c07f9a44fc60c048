"""``core.sampling.score_sets`` on tiny arrays, with plain functions standing in for the encoder and the cnn; and
``sample_and_score`` with reference scores it was given, on small Keras models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.datasets import Dataset
from core.sampling import score_sets


def _images(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return np.clip(rng.random((n, 4, 4, 1)) * 0.5 + shift, 0, 1).astype(np.float32)


def encode(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)[:, :3].astype(np.float64)  # the first three pixels as a "code"


def classify(x: np.ndarray) -> np.ndarray:
    bright = x.reshape(len(x), -1).mean(axis=1)
    probs = np.stack([bright, 1 - bright], axis=1)
    return probs / probs.sum(axis=1, keepdims=True)


def test_every_set_gets_every_score_under_its_prefix() -> None:
    rng = np.random.default_rng(0)
    reference, train = _images(rng, 50), _images(rng, 80)
    sets = {"": _images(rng, 30, 0.5), "ref_test_": _images(rng, 30)}
    scores = score_sets(sets, reference, train, encode, classify, features=encode, reconstruct=blur)
    keys = {"nn_dist", "fid_latent", "pca_residual", "recon_drift", "confident_frac", "class_entropy", "sample_entropy",
            "fid_cnn"}
    assert set(scores) == keys | {"ref_test_" + k for k in keys}
    # a set drawn like the reference is closer to it than one shifted away from it
    assert scores["ref_test_fid_latent"] < scores["fid_latent"] and scores["ref_test_fid_cnn"] < scores["fid_cnn"]
    assert all(isinstance(v, float) for v in scores.values())


def blur(x: np.ndarray) -> np.ndarray:
    """An "autoencoder" that keeps flat images as they are and pulls every pixel half-way to its image's mean."""
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x + mean) / 2


def test_recon_drift_is_how_far_the_autoencoder_moves_an_image() -> None:
    flat = np.full((6, 4, 4, 1), 0.3, dtype=np.float32)  # held as it is
    noisy = np.tile(np.array([0.0, 1.0], dtype=np.float32), (6, 8)).reshape(6, 4, 4, 1)  # pulled to 0.5: 0.25 each
    scores = score_sets({"": noisy, "ref_test_": flat}, flat, flat, encode, reconstruct=blur)
    assert scores["ref_test_recon_drift"] == pytest.approx(0.0, abs=1e-12)
    assert scores["recon_drift"] == pytest.approx(0.0625)


def test_a_training_image_itself_is_at_distance_zero() -> None:
    rng = np.random.default_rng(1)
    train = _images(rng, 20)
    scores = score_sets({"": train[:5]}, _images(rng, 10), train, encode)
    assert scores["nn_dist"] == pytest.approx(0.0, abs=1e-9)
    assert set(scores) == {"nn_dist", "fid_latent", "pca_residual"}  # no classifier, no autoencoder: no more


def test_reference_scores_given_again_are_the_ones_computed(digits_300: Dataset) -> None:
    """A sample job reuses the reference scores (real test images and their reconstructions) of an earlier one with
    the same models and data: the scores it reports are those it would have computed, and its samples' own scores
    do not change."""
    from core.kinds.sample import SampleParams
    from core.models.cnn import build_cnn
    from core.models.common import encode as encode_with
    from core.models.conv_ae import build_conv_ae
    from core.params import parse_config
    from core.sampling import sample_and_score

    ae, cnn = build_conv_ae(z_dim=4, filters=[4, 8, 8]), build_cnn(10, filters=[4, 8]).model
    x_train, x_test = digits_300.x_train, digits_300.x_test
    z_train, z_test = (encode_with(ae.encoder, x, 64) for x in (x_train, x_test))

    def run(sampler: str, references: dict | None = None) -> Any:
        params = parse_config(SampleParams, {"n": 40, "sampler": sampler, "seed": 3})
        return sample_and_score(params, ae.model, z_train, z_test, x_train, x_test, cnn=cnn, references=references)

    first = run("uniform_box")
    refs = {k: v for k, v in first.scores.items() if k.startswith(("ref_test_", "ref_recon_"))}
    assert first.scored == 40 and len(refs) == 16
    fresh = run("fitted_normal")
    assert {k: fresh.scores[k] for k in refs} == pytest.approx(refs, rel=1e-6)  # they do not depend on the sampler
    marked = {k: v + 1000.0 for k, v in refs.items()}  # not what it would compute: shows they were not recomputed
    reused = run("fitted_normal", {40: marked})
    assert {k: reused.scores[k] for k in refs} == marked
    assert {k: v for k, v in reused.scores.items() if k not in refs} == pytest.approx(
        {k: v for k, v in fresh.scores.items() if k not in refs}, rel=1e-6)
    other_size = run("fitted_normal", {39: {k: -1.0 for k in refs}})  # held for another number of images: not used
    assert other_size.scores == pytest.approx(fresh.scores, rel=1e-6)
