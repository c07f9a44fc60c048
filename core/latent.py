"""The latent space of an autoencoder, as arrays: describe it, and draw new z-points from it. numpy only.

The caller runs the encoder and decoder; everything here is a pure function of ``(n, d)`` latent arrays (one
row per encoded image). Descriptive statistics use the population std (ddof=0); the samplers fit the sample
covariance (ddof=1, ``np.cov``'s default), which is the usual estimate of the distribution to draw from.

Samplers, from naive to informed:

* ``uniform_box``: uniform in the per-component [min, max] box. Ignores correlation and density, so most of its
  points land in empty corners of the box, far from any encoded image (worse the larger d is).
* ``normal``: N(0, I). Ignores where the latents actually are and how spread they are (a plain autoencoder
  does not regularise its code towards N(0, I), unlike a VAE).
* ``fitted_normal``: N(mean, cov) of the training latents: right location, scale and correlation.
* ``pca_ellipsoid``: uniform inside the k-sigma ellipsoid of the principal axes: the same shape as
  ``fitted_normal`` but without its tails and with the edge as densely covered as the centre.
* ``interpolate``: points on straight lines between pairs of encoded test images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.kinds.sample import SampleParams

RADIUS_QUANTILES = (0, 5, 25, 50, 75, 95, 100)  # percent
RADIUS_BINS = 20
PCA_THRESHOLDS = (90, 99)  # percent of the variance: reported as n_components_90, n_components_99


def _latents(z: np.ndarray, name: str = "z", min_rows: int = 1) -> np.ndarray:
    """``z`` as a finite float64 (n, d) array, or ValueError (a diverged model's NaNs must not go unnoticed)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"{name}: expected latents of shape (n, d) with d >= 1, got shape {z.shape}")
    if z.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} latent vectors, got {z.shape[0]}")
    if not np.isfinite(z).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return z


def _count(n: int) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    return int(n)


def _pca(z: np.ndarray, ddof: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), variances along the principal axes (d,) in decreasing order, and the axes as columns (d, d).

    An eigendecomposition of the d x d covariance rather than an SVD of the data: d (the code size) is small,
    n may be 60000, and it always gives all d axes, even when n < d.
    """
    mean = z.mean(axis=0)  # (d,)
    centred = z - mean  # (n, d)
    cov = centred.T @ centred / max(z.shape[0] - ddof, 1)  # (d, d)
    variances, axes = np.linalg.eigh(cov)  # ascending
    # Rounding can make the variance of a flat direction a tiny negative number; it is 0.
    return mean, np.clip(variances[::-1], 0.0, None), axes[:, ::-1]


def latent_stats(z: np.ndarray) -> dict[str, Any]:
    """Describe latents ``z`` (n, d) in a JSON-ready dict (only python ints, floats, lists and dicts).

    Keys: ``n``, ``d``; ``mean`` and ``std`` (per component, lists of d; population std); ``radius``: the L2
    norms' ``mean``, ``std``, ``quantiles`` (``{"p0": .., "p5": .., ..., "p100": ..}``) and ``histogram``
    (``counts``: 20 ints, ``edges``: 21 floats); ``pca``: ``explained_variance_ratio`` (all d, decreasing) and
    ``n_components_90`` / ``n_components_99``, the fewest components explaining at least that share of the
    variance. Constant latents have no variance to explain: their ratios are all 0 and both counts 0.
    Raises ValueError for a non-(n, d) array, n = 0, or NaN/inf.
    """
    z = _latents(z)
    radius = np.linalg.norm(z, axis=1)  # (n,)
    counts, edges = np.histogram(radius, bins=RADIUS_BINS)
    quantiles = np.percentile(radius, RADIUS_QUANTILES)  # (7,)
    _, variances, _ = _pca(z, ddof=0)
    total = variances.sum()
    ratio = variances / total if total > 0 else np.zeros_like(variances)  # (d,)
    cumulative = np.cumsum(ratio)

    def components_for(percent: int) -> int:
        if total <= 0:
            return 0
        # The tolerance stops rounding (a cumulative sum of 0.8999999999) from costing a component.
        return int(np.searchsorted(cumulative, percent / 100 - 1e-12) + 1)

    return {
        "n": int(z.shape[0]),
        "d": int(z.shape[1]),
        "mean": z.mean(axis=0).tolist(),
        "std": z.std(axis=0).tolist(),
        "radius": {
            "mean": float(radius.mean()),
            "std": float(radius.std()),
            "quantiles": {f"p{q}": float(v) for q, v in zip(RADIUS_QUANTILES, quantiles, strict=True)},
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        },
        "pca": {
            "explained_variance_ratio": ratio.tolist(),
            **{f"n_components_{p}": components_for(p) for p in PCA_THRESHOLDS},
        },
    }


DEAD_FRACTION = 1e-3  # a code unit whose spread is at most this share of the liveliest unit's does not vary


def dead_units(z: np.ndarray) -> int:
    """How many code units (components of the flattened codes ``z``, (n, ...)) do not vary over the inputs: their
    standard deviation is at most ``DEAD_FRACTION`` of the liveliest unit's (all of them when none varies). A ReLU
    unit that died outputs 0 for every input; pool_ae's (7, 7, 2) code loses 49 units when one channel dies."""
    z = np.asarray(z, dtype=np.float64)
    return _dead(z.reshape(len(z), -1).std(axis=0))


def _dead(std: np.ndarray) -> int:
    top = float(std.max()) if std.size else 0.0
    return int(np.sum(std <= DEAD_FRACTION * top)) if top > 0 else int(std.size)


def latent_summary_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """A flat handful of floats from ``latent_stats``' output, for a metrics table.

    ``latent_dim``, ``radius_mean``, ``radius_std``, ``radius_median``, ``std_min`` / ``std_mean`` /
    ``std_max`` (over the components: a near-0 ``std_min`` is a dead code unit), ``dead_units`` (``dead_units``),
    ``pca_top1`` (the first component's share of the variance), ``n_components_90``, ``n_components_99``.
    """
    std = np.asarray(stats["std"], dtype=np.float64)
    ratio = stats["pca"]["explained_variance_ratio"]
    return {
        "latent_dim": float(stats["d"]),
        "radius_mean": float(stats["radius"]["mean"]),
        "radius_std": float(stats["radius"]["std"]),
        "radius_median": float(stats["radius"]["quantiles"]["p50"]),
        "std_min": float(std.min()),
        "std_mean": float(std.mean()),
        "std_max": float(std.max()),
        "dead_units": float(_dead(std)),
        "pca_top1": float(ratio[0]),
        "n_components_90": float(stats["pca"]["n_components_90"]),
        "n_components_99": float(stats["pca"]["n_components_99"]),
    }


def sample_uniform_box(z_train: np.ndarray, n: int, rng: np.random.Generator, quantile: float = 0.0) -> np.ndarray:
    """(n, d) points uniform in the per-component box of ``z_train`` (n_train, d): from each component's
    ``quantile`` to its ``1 - quantile`` quantile (0: its min and max)."""
    z_train = _latents(z_train, "z_train")
    if not 0 <= quantile < 0.5:
        raise ValueError(f"quantile must be from 0 to below 0.5, got {quantile}")
    if quantile == 0:
        low, high = z_train.min(axis=0), z_train.max(axis=0)
    else:
        low, high = np.quantile(z_train, [quantile, 1.0 - quantile], axis=0)
    return rng.uniform(low, high, size=(_count(n), z_train.shape[1]))


def sample_normal(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) points from the standard normal N(0, I)."""
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    return rng.standard_normal((_count(n), int(d)))


def sample_fitted_normal(z_train: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) points from N(mean, cov) of ``z_train`` (n_train >= 2, d); a singular cov is fine (flat axes)."""
    mean, variances, axes = _pca(_latents(z_train, "z_train", min_rows=2), ddof=1)
    # z = mean + A g with A A^T = cov: A = axes * sqrt(variances), so a rank-deficient cov needs no Cholesky.
    g = rng.standard_normal((_count(n), mean.size))  # (n, d)
    return mean + (g * np.sqrt(variances)) @ axes.T


def _uniform_ball(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) points uniform in the unit d-ball."""
    g = rng.standard_normal((n, d))
    norms = np.linalg.norm(g, axis=1, keepdims=True)  # (n, 1)
    # A normalised gaussian is a uniform direction; (an all-zero draw, probability 0, stays at the centre).
    directions = g / np.where(norms > 0, norms, 1.0)
    # The volume within radius r grows as r^d, so r = U^(1/d) spreads the points evenly over the volume.
    radii = rng.random((n, 1)) ** (1.0 / d)
    return directions * radii


def sample_pca_ellipsoid(z_train: np.ndarray, n: int, k_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(n, d) points uniform inside the ``k_sigma`` ellipsoid of ``z_train``'s principal axes (n_train >= 2).

    The semi-axes are ``k_sigma`` standard deviations along each principal axis (the sample covariance), so
    every point's Mahalanobis radius is at most ``k_sigma``.
    """
    if not k_sigma > 0:
        raise ValueError(f"k_sigma must be > 0, got {k_sigma}")
    mean, variances, axes = _pca(_latents(z_train, "z_train", min_rows=2), ddof=1)
    ball = _uniform_ball(_count(n), mean.size, rng)  # (n, d), in principal-axis coordinates
    return mean + (ball * (k_sigma * np.sqrt(variances))) @ axes.T


def interpolate(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
    """Straight lines from each ``z_a[i]`` to ``z_b[i]`` (both (m, d)): (m * steps, d), line by line.

    Row ``i * steps + j`` is ``(1 - t) z_a[i] + t z_b[i]`` with ``t = j / (steps - 1)``: that form (rather than
    ``a + t (b - a)``) makes both endpoints exactly the inputs.
    """
    z_a, z_b = _latents(z_a, "z_a"), _latents(z_b, "z_b")
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b differ in shape: {z_a.shape} vs {z_b.shape}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps}")
    t = np.linspace(0.0, 1.0, int(steps))[None, :, None]  # (1, steps, 1)
    lines = (1.0 - t) * z_a[:, None, :] + t * z_b[:, None, :]  # (m, steps, d)
    return lines.reshape(-1, z_a.shape[1])


def _pairs(m: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` index pairs (a, b) into m items, a != b, each b uniform over the other m - 1 items."""
    first = rng.integers(0, m, size=count)
    second = (first + rng.integers(1, m, size=count)) % m  # a non-zero offset can never land on `first`
    return first, second


def draw(config: SampleParams, z_train: np.ndarray, z_test: np.ndarray) -> np.ndarray:
    """The z-points a sample job decodes: ``config.sampler`` with ``np.random.default_rng(config.seed)``.

    ``z_train`` (n_train, d) is what the samplers fit; ``z_test`` (n_test, d) is only read by ``interpolate``,
    which draws ``round(n / steps)`` (at least 1) random pairs of distinct test latents, so it returns a
    multiple of ``steps`` rows, the one nearest ``config.n``. The others return ``config.n`` rows.
    Returns float32 (n, d): what the latents were stored as and what a decoder takes. Same config, same data:
    same points.
    """
    rng = np.random.default_rng(config.seed)
    z_train = _latents(z_train, "z_train")
    d = z_train.shape[1]
    if config.sampler == "uniform_box":
        z = sample_uniform_box(z_train, config.n, rng, config.box_quantile)
    elif config.sampler == "normal":
        z = sample_normal(d, config.n, rng)
    elif config.sampler == "fitted_normal":
        z = sample_fitted_normal(z_train, config.n, rng)
    elif config.sampler == "pca_ellipsoid":
        z = sample_pca_ellipsoid(z_train, config.n, config.k_sigma, rng)
    elif config.sampler == "interpolate":
        z_test = _latents(z_test, "z_test", min_rows=2)
        if z_test.shape[1] != d:
            raise ValueError(f"z_test has {z_test.shape[1]} components, z_train {d}")
        lines = max(1, int(np.floor(config.n / config.steps + 0.5)))  # round half up, unlike round()
        first, second = _pairs(z_test.shape[0], lines, rng)
        z = interpolate(z_test[first], z_test[second], config.steps)
    else:
        raise ValueError(f"unknown sampler {config.sampler!r}")
    return z.astype(np.float32)
