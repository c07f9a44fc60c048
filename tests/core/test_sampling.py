"""``core.sampling.score_sets`` on tiny arrays, with plain functions standing in for the encoder and the cnn."""

from __future__ import annotations

import numpy as np
import pytest

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
