"""core.latent: statistics of known latents, and each sampler's distribution on synthetic correlated latents."""

from __future__ import annotations

import json
import subprocess
import sys
from math import gamma, sqrt
from pathlib import Path

import numpy as np
import pytest

from core.kinds.sample import SampleParams
from core.latent import (
    dead_units,
    draw,
    interpolate,
    latent_stats,
    latent_summary_metrics,
    sample_fitted_normal,
    sample_normal,
    sample_pca_ellipsoid,
    sample_uniform_box,
)

D = 4
MEAN = np.array([1.0, -2.0, 0.5, 3.0])
# A correlated covariance with well separated principal variances (16, 4, 1, 0.25) along rotated axes.
_Q, _ = np.linalg.qr(np.random.default_rng(42).standard_normal((D, D)))
COV = _Q @ np.diag([16.0, 4.0, 1.0, 0.25]) @ _Q.T


@pytest.fixture(scope="module")
def z_train() -> np.ndarray:
    """(20000, 4) correlated gaussian latents: enough that their sample mean and cov are close to MEAN, COV."""
    return np.random.default_rng(0).multivariate_normal(MEAN, COV, size=20000)


def _mahalanobis(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    centred = points - reference.mean(axis=0)
    inverse = np.linalg.inv(np.cov(reference, rowvar=False))
    return np.sqrt(np.einsum("ij,jk,ik->i", centred, inverse, centred))


# --- latent_stats ---------------------------------------------------------------------------------------------

def test_stats_of_isotropic_gaussian() -> None:
    d = 8
    stats = latent_stats(np.random.default_rng(1).standard_normal((20000, d)))
    json.dumps(stats, allow_nan=False)  # JSON-ready: only python types, no NaN
    assert stats["n"] == 20000 and stats["d"] == d
    np.testing.assert_allclose(stats["mean"], 0.0, atol=0.03)
    np.testing.assert_allclose(stats["std"], 1.0, atol=0.02)
    np.testing.assert_allclose(stats["pca"]["explained_variance_ratio"], 1 / d, atol=0.01)
    # No direction is special, so 90% needs all 8 (7 explain only ~7/8) and so does 99%.
    assert stats["pca"]["n_components_90"] == 8 and stats["pca"]["n_components_99"] == 8
    # |z| follows the chi distribution with d degrees of freedom: mean sqrt(2) G((d+1)/2) / G(d/2) ~ sqrt(d).
    chi_mean = sqrt(2) * gamma((d + 1) / 2) / gamma(d / 2)
    assert stats["radius"]["mean"] == pytest.approx(chi_mean, abs=0.02)
    assert stats["radius"]["mean"] == pytest.approx(sqrt(d), rel=0.04)
    assert stats["radius"]["std"] == pytest.approx(sqrt(d - chi_mean**2), abs=0.02)
    histogram = stats["radius"]["histogram"]
    assert len(histogram["counts"]) == 20 and len(histogram["edges"]) == 21 and sum(histogram["counts"]) == 20000
    quantiles = stats["radius"]["quantiles"]
    assert list(quantiles) == ["p0", "p5", "p25", "p50", "p75", "p95", "p100"]
    assert histogram["edges"][0] == quantiles["p0"] and histogram["edges"][-1] == quantiles["p100"]
    assert list(quantiles.values()) == sorted(quantiles.values())


def test_stats_of_exact_small_set() -> None:
    # Variance 4.5 along x, 0.5 along y, none along z: ratios exactly 0.9, 0.1, 0.
    z = np.array([[3.0, 0, 0], [-3, 0, 0], [0, 1, 0], [0, -1, 0]])
    stats = latent_stats(z)
    assert stats["mean"] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(stats["std"], [sqrt(4.5), sqrt(0.5), 0.0])
    np.testing.assert_allclose(stats["pca"]["explained_variance_ratio"], [0.9, 0.1, 0.0], atol=1e-12)
    assert stats["pca"]["n_components_90"] == 1  # exactly 90%: rounding must not cost a second component
    assert stats["pca"]["n_components_99"] == 2
    assert stats["radius"]["mean"] == pytest.approx(2.0) and stats["radius"]["std"] == pytest.approx(1.0)
    assert stats["radius"]["quantiles"]["p0"] == 1.0 and stats["radius"]["quantiles"]["p100"] == 3.0
    assert stats["radius"]["quantiles"]["p50"] == pytest.approx(2.0)
    assert stats["radius"]["histogram"]["counts"][0] == 2 and stats["radius"]["histogram"]["counts"][-1] == 2


def test_stats_of_constant_latents() -> None:
    stats = latent_stats(np.full((5, 3), 2.0))
    json.dumps(stats, allow_nan=False)
    assert stats["pca"]["explained_variance_ratio"] == [0.0, 0.0, 0.0]
    assert stats["pca"]["n_components_90"] == 0 and stats["pca"]["n_components_99"] == 0
    assert stats["radius"]["std"] == 0.0 and stats["radius"]["mean"] == pytest.approx(sqrt(12))


def test_summary_metrics(z_train: np.ndarray) -> None:
    stats = latent_stats(z_train)
    metrics = latent_summary_metrics(stats)
    assert all(type(v) is float for v in metrics.values())
    assert metrics["latent_dim"] == 4.0
    assert metrics["radius_mean"] == stats["radius"]["mean"]
    assert metrics["radius_median"] == stats["radius"]["quantiles"]["p50"]
    # Principal variances 16, 4, 1, 0.25: the first holds 16 / 21.25 of the total; 90% needs 2, 99% needs 4.
    assert metrics["pca_top1"] == pytest.approx(16 / 21.25, abs=0.01)
    assert metrics["n_components_90"] == 2.0 and metrics["n_components_99"] == 4.0
    assert metrics["std_min"] <= metrics["std_mean"] <= metrics["std_max"]
    assert metrics["std_max"] == pytest.approx(np.sqrt(COV.diagonal()).max(), rel=0.02)
    assert metrics["dead_units"] == 0.0


def test_dead_units_are_the_codes_that_do_not_vary() -> None:
    rng = np.random.default_rng(0)
    # pool_ae's (7, 7, 2) code with its second ReLU channel dead: 49 units always 0
    codes = np.maximum(rng.standard_normal((200, 7, 7, 2)), 0.0)
    codes[..., 1] = 0.0
    assert dead_units(codes) == 49
    codes[..., 1] = 1e-6 * rng.standard_normal((200, 7, 7))  # a whisper beside units of spread ~0.6: dead
    assert dead_units(codes) == 49
    assert dead_units(np.maximum(rng.standard_normal((200, 7, 7, 2)), 0.0)) == 0
    assert dead_units(np.ones((10, 4))) == 4  # nothing varies: every unit is dead
    assert latent_summary_metrics(latent_stats(codes.reshape(200, -1)))["dead_units"] == 49.0


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 3)), np.array([[1.0, np.nan]])])
def test_stats_rejects_bad_latents(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        latent_stats(bad)


# --- samplers -------------------------------------------------------------------------------------------------

def test_fitted_normal_reproduces_mean_and_cov(z_train: np.ndarray) -> None:
    z = sample_fitted_normal(z_train, 50000, np.random.default_rng(3))
    assert z.shape == (50000, D)
    np.testing.assert_allclose(z.mean(axis=0), z_train.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.cov(z_train, rowvar=False), atol=0.3)  # of 16
    np.testing.assert_array_equal(z, sample_fitted_normal(z_train, 50000, np.random.default_rng(3)))


def test_fitted_normal_of_rank_deficient_latents() -> None:
    # Latents on a line in 3-D: a singular covariance, so the samples stay on the same line.
    t = np.random.default_rng(4).standard_normal((200, 1))
    z_train = t * np.array([[1.0, 2.0, -1.0]]) + np.array([5.0, 0.0, 1.0])
    z = sample_fitted_normal(z_train, 1000, np.random.default_rng(5))
    offsets = z - np.array([5.0, 0.0, 1.0])
    # (within rounding: eigh leaves the flat variances at ~1e-16, not 0, so ~1e-8 of spread off the line)
    np.testing.assert_allclose(np.cross(offsets, [1.0, 2.0, -1.0]), 0.0, atol=1e-6)


def test_uniform_box_stays_in_and_fills_the_box(z_train: np.ndarray) -> None:
    lo, hi = z_train.min(axis=0), z_train.max(axis=0)
    z = sample_uniform_box(z_train, 20000, np.random.default_rng(6))
    assert z.shape == (20000, D)
    assert (z >= lo).all() and (z <= hi).all()
    width = hi - lo
    np.testing.assert_allclose(z.min(axis=0), lo, atol=0.002 * width.max())  # reaches every face
    np.testing.assert_allclose(z.max(axis=0), hi, atol=0.002 * width.max())
    np.testing.assert_allclose(z.mean(axis=0), (lo + hi) / 2, atol=0.01 * width.max())
    np.testing.assert_allclose(z.var(axis=0), width**2 / 12, rtol=0.03)  # a uniform's variance
    # Naive by design: the training latents' correlation is gone.
    np.testing.assert_allclose(np.corrcoef(z, rowvar=False), np.eye(D), atol=0.03)


def test_a_quantile_box_is_bounded_by_the_latents_quantiles(z_train: np.ndarray) -> None:
    lo, hi = np.quantile(z_train, [0.05, 0.95], axis=0)
    z = sample_uniform_box(z_train, 20000, np.random.default_rng(6), quantile=0.05)
    assert (z >= lo).all() and (z <= hi).all()
    np.testing.assert_allclose(z.min(axis=0), lo, atol=0.002 * (hi - lo).max())
    assert ((hi - lo) < z_train.max(axis=0) - z_train.min(axis=0)).all()  # inside the min-max box
    with pytest.raises(ValueError, match="quantile"):
        sample_uniform_box(z_train, 10, np.random.default_rng(0), quantile=0.5)


def test_normal_is_standard() -> None:
    z = sample_normal(5, 20000, np.random.default_rng(7))
    assert z.shape == (20000, 5)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(5), atol=0.03)


@pytest.mark.parametrize("k_sigma", [1.0, 2.5])
def test_pca_ellipsoid_is_bounded_and_filled(z_train: np.ndarray, k_sigma: float) -> None:
    z = sample_pca_ellipsoid(z_train, 40000, k_sigma, np.random.default_rng(8))
    assert z.shape == (40000, D)
    radius = _mahalanobis(z, z_train)
    assert radius.max() <= k_sigma * (1 + 1e-9)
    assert radius.max() >= 0.99 * k_sigma  # reaches the surface
    # Uniform in volume: the share within a fraction f of the radius is f^d (1/16 at half, 0.656 at 0.9).
    assert (radius <= k_sigma / 2).mean() == pytest.approx(0.5**D, abs=0.006)
    assert (radius <= 0.9 * k_sigma).mean() == pytest.approx(0.9**D, abs=0.01)
    # A uniform unit d-ball has covariance I / (d + 2); scaled and rotated onto the PCA axes that is
    # k^2 cov / (d + 2): the ellipsoid has the training latents' centre, orientation and shape.
    np.testing.assert_allclose(z.mean(axis=0), z_train.mean(axis=0), atol=0.03 * k_sigma)
    expected = k_sigma**2 * np.cov(z_train, rowvar=False) / (D + 2)
    np.testing.assert_allclose(np.cov(z, rowvar=False), expected, atol=0.03 * np.abs(expected).max())


def test_interpolate_endpoints_and_linearity() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    z = interpolate(a, b, 7)
    assert z.shape == (21, 5)
    lines = z.reshape(3, 7, 5)
    np.testing.assert_array_equal(lines[:, 0], a)  # exactly the inputs, not just close
    np.testing.assert_array_equal(lines[:, -1], b)
    np.testing.assert_allclose(np.diff(lines, 2, axis=1), 0.0, atol=1e-12)  # evenly spaced on a line
    np.testing.assert_allclose(lines[:, 3], (a + b) / 2, atol=1e-12)
    with pytest.raises(ValueError, match="steps"):
        interpolate(a, b, 1)
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate(a, b[:2], 5)


# --- draw -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["uniform_box", "normal", "fitted_normal", "pca_ellipsoid"])
def test_draw_seeds_each_sampler(z_train: np.ndarray, sampler: str) -> None:
    config = SampleParams(sampler=sampler, n=300, k_sigma=1.5, seed=11)  # type: ignore[arg-type]
    z = draw(config, z_train, z_train[:50])
    assert z.shape == (300, D) and z.dtype == np.float32
    np.testing.assert_array_equal(z, draw(config, z_train, z_train[:50]))
    assert not np.array_equal(z, draw(SampleParams(sampler=sampler, n=300, k_sigma=1.5, seed=12),  # type: ignore[arg-type]
                                      z_train, z_train[:50]))
    # draw is exactly the sampler with default_rng(seed).
    rng = np.random.default_rng(11)
    direct = {"uniform_box": lambda: sample_uniform_box(z_train, 300, rng),
              "normal": lambda: sample_normal(D, 300, rng),
              "fitted_normal": lambda: sample_fitted_normal(z_train, 300, rng),
              "pca_ellipsoid": lambda: sample_pca_ellipsoid(z_train, 300, 1.5, rng)}[sampler]()
    np.testing.assert_array_equal(z, direct.astype(np.float32))


@pytest.mark.parametrize(("n", "steps", "rows"), [(1000, 10, 1000), (15, 10, 20), (14, 10, 10), (3, 10, 10),
                                                  (25, 2, 26)])
def test_draw_interpolate_rounds_to_whole_lines(z_train: np.ndarray, n: int, steps: int, rows: int) -> None:
    z_test = z_train[:30].astype(np.float32)
    z = draw(SampleParams(sampler="interpolate", n=n, steps=steps, seed=1), z_train, z_test)
    assert z.shape == (rows, D)
    lines = z.reshape(-1, steps, D)
    # Every line runs between two different test latents.
    for line in lines:
        start = np.flatnonzero((z_test == line[0]).all(axis=1))
        end = np.flatnonzero((z_test == line[-1]).all(axis=1))
        assert start.size == 1 and end.size == 1 and start[0] != end[0]
    np.testing.assert_allclose(np.diff(lines, 2, axis=1), 0.0, atol=1e-4)


def test_draw_interpolate_needs_two_test_latents(z_train: np.ndarray) -> None:
    with pytest.raises(ValueError, match="z_test"):
        draw(SampleParams(sampler="interpolate"), z_train, z_train[:1])


def test_no_tensorflow_import() -> None:
    code = ("import sys, core.latent, core.scores, core.images; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
