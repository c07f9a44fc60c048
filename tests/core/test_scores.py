"""core.scores against closed forms and brute force; core.images.image_grid_png (the sample job's grid)."""

from __future__ import annotations

import io
from math import log2

import numpy as np
import pytest
from PIL import Image
from scipy import linalg

import core.scores
from core.images import GAP_VALUE, image_grid_png
from core.scores import (
    classifier_scores,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    nearest_train_distance,
    nearest_train_distances,
    pca_residual,
    principal_subspace,
)


def _features(n: int = 2000, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)


# --- Fréchet distance -----------------------------------------------------------------------------------------

def test_frechet_of_identical_sets_is_zero() -> None:
    a = _features()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_shifted_set_is_squared_shift() -> None:
    a = _features()
    m = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.5])
    assert frechet_distance(a, a + m) == pytest.approx(m @ m, rel=1e-8)  # same covariance: only the mean counts
    assert frechet_distance(a + m, a) == pytest.approx(m @ m, rel=1e-8)


def test_frechet_1d_closed_form() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 3.0, (500, 1)), rng.normal(-1.0, 0.5, (300, 1))
    # In 1-D: (mu_a - mu_b)^2 + s_a^2 + s_b^2 - 2 s_a s_b = (mu_a - mu_b)^2 + (s_a - s_b)^2 (sample std, ddof=1).
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert expected > 10  # a case that actually exercises both terms


def test_frechet_from_stats_closed_forms() -> None:
    # Diagonal covariances commute: the distance is |dmu|^2 + sum (sqrt(va) - sqrt(vb))^2.
    va, vb = np.array([4.0, 1.0, 9.0]), np.array([1.0, 1.0, 0.25])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    got = frechet_distance_from_stats(mu_a, np.diag(va), mu_b, np.diag(vb))
    assert got == pytest.approx(5.0 + 1.0 + 0.0 + 2.5**2, rel=1e-12)
    # Non-commuting covariances: tr sqrtm(Sa Sb) equals the symmetric tr (Sa^1/2 Sb Sa^1/2)^1/2.
    sa, sb = np.cov(_features(seed=2), rowvar=False), np.cov(_features(seed=3), rowvar=False)
    root_a = linalg.sqrtm(sa).real
    inner = np.linalg.eigvalsh(root_a @ sb @ root_a)
    expected = np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    assert frechet_distance_from_stats(np.zeros(6), sa, np.zeros(6), sb) == pytest.approx(expected, rel=1e-8)


def test_gaussian_stats() -> None:
    a = _features()
    mu, sigma = gaussian_stats(a)
    np.testing.assert_allclose(mu, a.mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(a, rowvar=False))
    assert gaussian_stats(a[:, :1])[1].shape == (1, 1)


def test_frechet_with_fewer_samples_than_dimensions() -> None:
    # Singular covariances (rank 9 in 20-D): still finite, non-negative, and ~0 for identical sets.
    a, b = _features(10, 20, seed=4), _features(10, 20, seed=5)
    distance = frechet_distance(a, b)
    assert np.isfinite(distance) and distance > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)


def test_frechet_regularises_a_failed_sqrtm(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[np.ndarray] = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        return np.full_like(x, np.nan) if len(calls) == 1 else real_sqrtm(x)

    monkeypatch.setattr(core.scores.linalg, "sqrtm", flaky_sqrtm)
    a, b = _features(seed=6), _features(seed=7)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eye = 1e-6 * np.eye(6)
    distance = frechet_distance(a, b)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (sa + eye) @ (sb + eye))  # the documented retry
    monkeypatch.setattr(core.scores.linalg, "sqrtm", real_sqrtm)
    assert distance == pytest.approx(frechet_distance(a, b), abs=1e-4)  # eps shifts it by O(eps * d)


def test_frechet_raises_when_sqrtm_keeps_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A root with a large imaginary diagonal is not rounding noise; neither attempt is usable.
    monkeypatch.setattr(core.scores.linalg, "sqrtm", lambda x: np.eye(len(x)) * (1 + 1j))
    with pytest.raises(ValueError, match="square root"):
        frechet_distance(_features(), _features(seed=1))


def test_frechet_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="feature sizes"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# --- classifier scores ----------------------------------------------------------------------------------------

def test_classifier_scores_balanced_and_collapsed() -> None:
    balanced = np.eye(10)[np.arange(50) % 10]  # one-hot, every class 5 times
    scores = classifier_scores(balanced)
    assert scores == {"confident_frac": 1.0, "class_entropy": pytest.approx(log2(10)), "mean_confidence": 1.0,
                      "sample_entropy": 0.0}  # each image sure of its class
    collapsed = np.tile([0.05, 0.9, 0.05], (20, 1))  # all class 1, confidence exactly at the threshold
    scores = classifier_scores(collapsed)
    assert scores["class_entropy"] == 0.0
    assert scores["confident_frac"] == 0.0  # "more than the threshold": 0.9 itself is not confident
    assert scores["mean_confidence"] == pytest.approx(0.9)
    assert scores["sample_entropy"] == pytest.approx(-(0.9 * log2(0.9) + 2 * 0.05 * log2(0.05)))
    unsure = classifier_scores(np.full((4, 8), 1 / 8))
    assert unsure["sample_entropy"] == pytest.approx(3.0) and unsure["class_entropy"] == 0.0  # argmax: class 0


def test_classifier_scores_mixed() -> None:
    probs = np.array([[0.95, 0.05, 0.0, 0.0],
                      [0.6, 0.4, 0.0, 0.0],
                      [0.1, 0.0, 0.85, 0.05],
                      [0.0, 0.02, 0.0, 0.98]])
    scores = classifier_scores(probs, threshold=0.9)
    assert scores["confident_frac"] == 0.5
    assert scores["mean_confidence"] == pytest.approx((0.95 + 0.6 + 0.85 + 0.98) / 4)
    assert scores["class_entropy"] == pytest.approx(1.5)  # classes 0, 0, 2, 3: -(1/2 log 1/2 + 2 * 1/4 log 1/4)
    assert classifier_scores(probs, threshold=0.5)["confident_frac"] == 1.0


@pytest.mark.parametrize("bad", [np.array([[2.0, -1.0]]), np.array([[0.5, 0.2]]), np.zeros((0, 3)), np.ones(3)])
def test_classifier_scores_rejects_non_probabilities(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        classifier_scores(bad)


# --- nearest training image -----------------------------------------------------------------------------------

def _brute_force(samples: np.ndarray, train: np.ndarray) -> np.ndarray:
    s, t = samples.reshape(len(samples), -1), train.reshape(len(train), -1)
    return np.sqrt(((s[:, None, :].astype(np.float64) - t[None, :, :]) ** 2).sum(-1)).min(axis=1)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_nearest_train_distance_matches_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(0)
    samples, train = rng.random((37, 6, 5, 1)), rng.random((53, 6, 5, 1))
    expected = _brute_force(samples, train)
    np.testing.assert_allclose(nearest_train_distances(samples, train, chunk), expected, rtol=1e-6)
    assert nearest_train_distance(samples, train, chunk) == pytest.approx(expected.mean(), rel=1e-6)


def test_nearest_train_distance_of_copies_and_near_copies() -> None:
    rng = np.random.default_rng(1)
    train = rng.random((200, 28, 28, 1)).astype(np.float32)
    # Exact copies are at distance exactly 0 (the float32 expansion alone would leave ~1e-2 of rounding).
    assert nearest_train_distance(train[50:80], train, chunk=8) == 0.0
    # Near-copies: 1e-4 per pixel is hidden by float32 cancellation in |s|^2 - 2 s.t + |t|^2 (|s|^2 ~ 260),
    # but the neighbour's distance is recomputed in float64.
    near = train[:20] + np.float32(1e-4)
    np.testing.assert_allclose(nearest_train_distances(near, train), _brute_force(near, train), rtol=1e-6)


def test_nearest_train_distance_rejects_mismatched_items() -> None:
    with pytest.raises(ValueError, match="same item shape"):
        nearest_train_distance(np.zeros((3, 28, 28, 1)), np.zeros((3, 28, 27, 1)))


# --- image_grid_png -------------------------------------------------------------------------------------------

def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image)


def test_image_grid_layout_and_content() -> None:
    images = np.zeros((5, 3, 4, 1))
    images[1] = 1.0
    images[4] = 0.5
    pixels = _decode(image_grid_png(images, scale=2))  # cols ceil(sqrt 5) = 3, rows 2
    assert pixels.shape == (2 * 6 + 1, 3 * 8 + 2)  # grey: (height, width)
    assert (pixels[:6, :8] == 0).all()  # image 0
    assert (pixels[:6, 9:17] == 255).all()  # image 1, after a 1px gap
    assert (pixels[7:, 9:17] == 128).all()  # image 4: second row, second column
    assert (pixels[6, :] == GAP_VALUE).all() and (pixels[:, 8] == GAP_VALUE).all()
    assert (pixels[7:, 18:] == GAP_VALUE).all()  # the unused sixth cell


def test_image_grid_columns_and_rgb() -> None:
    images = np.random.default_rng(0).random((4, 5, 5, 3))
    pixels = _decode(image_grid_png(images, cols=10, scale=1))  # cols clipped to n: one row
    assert pixels.shape == (5, 4 * 5 + 3, 3)
    np.testing.assert_array_equal(pixels[:, 6:11], np.rint(images[1] * 255).astype(np.uint8))
    assert _decode(image_grid_png(images, cols=1, scale=1)).shape == (4 * 5 + 3, 5, 3)


@pytest.mark.parametrize(("shape", "kwargs"), [((4, 5, 5), {}), ((0, 5, 5, 1), {}), ((4, 5, 5, 2), {}),
                                               ((4, 5, 5, 1), {"cols": 0}), ((4, 5, 5, 1), {"scale": 0})])
def test_image_grid_rejects_bad_input(shape: tuple[int, ...], kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        image_grid_png(np.zeros(shape), **kwargs)


# --- distance from the training images' principal subspace ----------------------------------------------------

def test_pca_residual_is_zero_inside_the_subspace_and_large_for_noise() -> None:
    rng = np.random.default_rng(0)
    # "faces": 200 images (8 x 8) made of 3 fixed patterns with random weights, plus a little noise
    patterns = rng.standard_normal((3, 64))
    train = (rng.standard_normal((200, 3)) @ patterns + 0.01 * rng.standard_normal((200, 64))).reshape(200, 8, 8, 1)
    mean, basis = principal_subspace(train, share=0.99)
    assert basis.shape == (64, 3) and np.allclose(basis.T @ basis, np.eye(3), atol=1e-9)  # the 3 patterns
    inside = (rng.standard_normal((20, 3)) @ patterns).reshape(20, 8, 8, 1)
    noise = rng.standard_normal((20, 8, 8, 1))
    assert pca_residual(inside, mean, basis) < 1e-3 < 0.5 < pca_residual(noise, mean, basis)
    assert principal_subspace(train, share=0.5)[1].shape[1] < 3  # a smaller share needs fewer components
    with pytest.raises(ValueError, match="pixels"):
        pca_residual(np.zeros((2, 4, 4, 1)), mean, basis)
    with pytest.raises(ValueError):
        principal_subspace(train[:1])
