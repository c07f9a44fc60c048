"""Scores for generated images, as arrays: no model runs here.

The caller runs its classifier and passes the results in: features (e.g. a CNN's penultimate layer) for the
Fréchet distance, softmax probabilities for ``classifier_scores``; ``nearest_train_distance`` works on the
pixels themselves.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

SQRTM_EPS = 1e-6  # added to both covariances' diagonals when the plain matrix square root fails
IMAG_TOL = 1e-3  # relative size of an imaginary part of sqrtm's diagonal that is still "rounding noise"
PROB_TOL = 1e-3  # how far a row of probabilities may be from summing to 1 (float32 softmax is well within it)


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name}: expected features of shape (n, d) with n >= 2, d >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and sample covariance (d, d) (ddof=1, as in the reference FID code) of features (n >= 2, d).

    Worth keeping for a fixed reference set (the training images' features) and reusing with
    ``frechet_distance_from_stats``.
    """
    x = _features(x, "x")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrtm_trace(product: np.ndarray) -> float | None:
    """tr(sqrtm(product)), or None when the square root is not finite or clearly complex."""
    root = linalg.sqrtm(product)  # (d, d); complex when rounding puts an eigenvalue just below 0
    diag = np.diagonal(root)
    if not np.isfinite(diag).all():
        return None
    if np.iscomplexobj(diag):
        # sigma_a @ sigma_b is similar to a PSD matrix, so its true root has real eigenvalues: a small imaginary
        # part is rounding and is dropped; a large one means the result cannot be trusted.
        if np.abs(diag.imag).max() > IMAG_TOL * max(1.0, np.abs(diag.real).max()):
            return None
        diag = diag.real
    return float(diag.sum())


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                                sigma_b: np.ndarray, eps: float = SQRTM_EPS) -> float:
    """The Fréchet (2-Wasserstein squared) distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

    ``|mu_a - mu_b|^2 + tr(sigma_a) + tr(sigma_b) - 2 tr(sqrtm(sigma_a @ sigma_b))``. When the square root
    fails (not finite, or an imaginary part larger than rounding: typical of singular covariances, i.e. fewer
    samples than feature dimensions) it is retried on ``(sigma_a + eps I) @ (sigma_b + eps I)``, which shifts
    the result by O(eps * d). Raises ValueError if that fails too. Clamped at 0 (rounding can give -1e-12).
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.size
    if mu_a.shape != (d,) or mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(f"mismatched shapes: mu_a {mu_a.shape}, sigma_a {sigma_a.shape}, mu_b {mu_b.shape}, "
                         f"sigma_b {sigma_b.shape}")
    trace_root = _sqrtm_trace(sigma_a @ sigma_b)
    if trace_root is None:
        offset = eps * np.eye(d)
        trace_root = _sqrtm_trace((sigma_a + offset) @ (sigma_b + offset))
        if trace_root is None:
            raise ValueError("the matrix square root of sigma_a @ sigma_b failed, even regularised with "
                             f"eps={eps}")
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_root
    return max(0.0, float(distance))


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = SQRTM_EPS) -> float:
    """The Fréchet distance between the Gaussians fitted to feature sets ``a`` (n_a, d) and ``b`` (n_b, d).

    With a CNN's features this is the FID recipe (with the project's own classifier, not Inception, so the
    numbers compare only with each other). Both sets need n >= 2; for a stable estimate n should well exceed
    d. See ``frechet_distance_from_stats`` for the square root's regularisation.
    """
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different feature sizes: {a.shape[1]} vs {b.shape[1]}")
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b), eps=eps)


def classifier_scores(probs: np.ndarray, threshold: float = 0.9) -> dict[str, float]:
    """How a classifier sees generated images, from its probabilities ``probs`` (n, n_classes).

    ``confident_frac``: the fraction of images whose top probability exceeds ``threshold`` (recognisable
    images); ``mean_confidence``: the mean top probability; ``class_entropy``: the entropy, in bits, of the
    histogram of predicted (argmax) classes: log2(n_classes) when every class is predicted equally often, 0
    when all are one class (mode collapse); ``sample_entropy``: the mean entropy, in bits, of each image's own
    probabilities (0 for an image the classifier is sure of, log2(n_classes) for one it cannot place). Raises
    ValueError unless each row is a probability vector (values in [0, 1], summing to 1 within 1e-3): logits passed
    by mistake would otherwise give meaningless scores.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or 0 in probs.shape:
        raise ValueError(f"expected probabilities of shape (n, n_classes), n >= 1, got shape {probs.shape}")
    if (not np.isfinite(probs).all() or probs.min() < -PROB_TOL or probs.max() > 1 + PROB_TOL
            or np.abs(probs.sum(axis=1) - 1.0).max() > PROB_TOL):
        raise ValueError("expected rows of probabilities in [0, 1] summing to 1 (softmax outputs, not logits)")
    top = probs.max(axis=1)  # (n,)
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])  # (n_classes,)
    shares = counts[counts > 0] / probs.shape[0]
    return {
        "confident_frac": float((top > threshold).mean()),
        # max(0, ...) turns the -0.0 of a single class into 0.0.
        "class_entropy": max(0.0, float(-(shares * np.log2(shares)).sum())),
        "mean_confidence": float(top.mean()),
        "sample_entropy": max(0.0, float(-(probs * np.log2(np.clip(probs, 1e-12, 1.0))).sum(axis=1).mean())),
    }


def nearest_train_distances(samples: np.ndarray, train: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each sample, the L2 distance (flattened pixels) to its nearest training image: float64 (n,).

    ``samples`` (n, ...) and ``train`` (m, ...) must have the same item shape. Samples are taken ``chunk``
    at a time against the whole training set, so memory is O(chunk * m) (1024 x 60000 float32: 250 MB), not
    O(n * m). The nearest neighbour is found with ``|s|^2 - 2 s.t + |t|^2`` in float32 (one matrix product);
    that loses precision exactly where it matters for memorisation (near-copies, where the terms cancel), so
    the distance to the neighbour found is then recomputed directly in float64: an exact copy gives 0.
    """
    samples, train = np.asarray(samples), np.asarray(train)
    if samples.ndim < 2 or train.ndim < 2 or samples.shape[1:] != train.shape[1:] or train.shape[0] < 1:
        raise ValueError(f"expected samples (n, ...) and train (m >= 1, ...) with the same item shape, got "
                         f"{samples.shape} and {train.shape}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    flat_train = train.reshape(train.shape[0], -1).astype(np.float32, copy=False)  # (m, D)
    train_sq = np.einsum("ij,ij->i", flat_train, flat_train)  # (m,)
    out = np.empty(samples.shape[0], dtype=np.float64)
    for start in range(0, samples.shape[0], int(chunk)):
        block = samples[start:start + int(chunk)].reshape(-1, flat_train.shape[1]).astype(np.float32)  # (c, D)
        # |s|^2 - 2 s.t + |t|^2 without |s|^2, constant along a row so it cannot change the argmin; in place,
        # so one (c, m) float32 array is all the extra memory.
        d2 = block @ flat_train.T  # (c, m)
        d2 *= -2.0
        d2 += train_sq[None, :]
        nearest = d2.argmin(axis=1)  # (c,)
        diff = block.astype(np.float64) - flat_train[nearest].astype(np.float64)  # (c, D)
        out[start:start + block.shape[0]] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return out


def nearest_train_distance(samples: np.ndarray, train: np.ndarray, chunk: int = 1024) -> float:
    """The mean over ``samples`` of ``nearest_train_distances``: a memorisation check (0 = copies)."""
    distances = nearest_train_distances(samples, train, chunk)
    if distances.size == 0:
        raise ValueError("no samples")
    return float(distances.mean())


PCA_RESIDUAL_SHARE = 0.9  # the principal subspace of the training images holds this share of their variance
PCA_RESIDUAL_IMAGES = 5000  # training images the subspace is fitted on (an SVD of 5000 x 784 pixels: ~1 s)


def principal_subspace(train: np.ndarray, share: float = PCA_RESIDUAL_SHARE,
                       limit: int = PCA_RESIDUAL_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """The mean (D,) and an orthonormal basis (D, k) of the fewest principal components of the first ``limit``
    training images (flattened to D pixels) that hold ``share`` of their variance: the eigenfaces of a face
    dataset. Raises ValueError for fewer than 2 images or a share outside (0, 1]."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    x = np.asarray(train[:limit], dtype=np.float64).reshape(min(len(train), limit), -1)
    if len(x) < 2:
        raise ValueError(f"need at least 2 training images, got {len(x)}")
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    variances = singular ** 2
    total = variances.sum()
    k = 1 if total <= 0 else int(np.searchsorted(np.cumsum(variances) / total, share - 1e-12) + 1)
    return mean, vt[:k].T


def pca_residual(images: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> float:
    """The mean squared distance per pixel of ``images`` from the training images' principal subspace
    (``principal_subspace``): Turk and Pentland's "distance from face space" (1991), by which eigenfaces told faces
    from other images. An image made of what the training images vary by lies close to it (a face, a digit);
    noise, fragments and artefacts stick out of it. 0 for an image inside the subspace."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if x.shape[1] != basis.shape[0]:
        raise ValueError(f"images have {x.shape[1]} pixels, the subspace {basis.shape[0]}")
    x = x - mean
    residual = x - (x @ basis) @ basis.T
    return float(np.mean(residual ** 2))
