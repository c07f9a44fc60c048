"""The cluster job's pictures as PNG bytes: a 2-D scatter (by cluster, and by label) and the k sweep; the encode
job's scatter of the codes by class.

Drawn with matplotlib's object API on an Agg canvas: no pyplot, so no global figure state and no GUI
backend, which matters in worker processes that draw concurrently. No TensorFlow.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

DPI = 100
PANEL_SIZE = (5.0, 5.0)  # inches per scatter panel: a scatter PNG is 500 px high, 500 px wide per panel
SWEEP_PANEL_SIZE = (5.0, 4.0)  # inches per sweep panel: the sweep PNG is 1000 x 400 px
TSNE_PCA_DIMS = 50  # t-SNE runs on this many PCA components of wider data: much faster, same picture
LEGEND_MAX = 20  # more categories than this get a colour bar instead of a legend


def embed_2d(x: np.ndarray, method: Literal["pca", "tsne"], sample: int, seed: int = 0, *,
             threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates for a picture of ``x`` (flattened to (n, features)), on at most ``sample`` points.

    The points are drawn without replacement with ``seed`` (all of them if fewer) and returned as sorted
    ``indices`` into ``x``, so the caller can pick their clusters and labels. "pca": the first two principal
    components of the sample. "tsne": t-SNE of the sample (seeded; PCA-initialised given 2 features or more),
    after a PCA to ``TSNE_PCA_DIMS`` dimensions when the data are wider; perplexity 30, less for small samples.
    ``threads`` caps the OpenMP and BLAS threads as in ``core.cluster.run_clustering`` (t-SNE of 2000 MNIST
    digits on 2 busy cores: 28 s with 2 threads, 7 s with 1).
    Returns (points (m, 2), indices (m,)). Raises ValueError for fewer than 3 points or an unknown method.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown method {method!r}; expected 'pca' or 'tsne'")
    with threadpool_limits(limits=threads):
        return _embed(x, method, sample, seed)


def _embed(x: np.ndarray, method: str, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``embed_2d`` within its thread limit."""
    x = np.asarray(x)
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to embed, got {len(x)}")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))
    # Only the sample is converted: all of MNIST in float64 would be 376 MB for a 2000-point picture.
    chosen = x[indices].reshape(len(indices), -1).astype(np.float64)
    if method == "pca":
        # With a single feature there is one component; pad with zeros so the result is always (m, 2).
        n_comp = min(2, chosen.shape[1])
        points = PCA(n_components=n_comp, random_state=seed).fit_transform(chosen)
        if n_comp < 2:
            points = np.hstack([points, np.zeros((len(points), 1))])
        return points, indices
    if not np.ptp(chosen, axis=0).any():  # one point repeated (a code whose units all died): nothing to spread,
        return np.zeros((len(chosen), 2)), indices  # and scikit-learn's Barnes-Hut t-SNE crashes the process on it
    if chosen.shape[1] > TSNE_PCA_DIMS and len(chosen) > TSNE_PCA_DIMS:
        chosen = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(chosen)
    perplexity = min(30.0, (len(chosen) - 1) / 3)  # scikit-learn requires perplexity < n_samples
    # PCA initialisation keeps the global layout stable across seeds; it needs 2 features at least.
    init = "pca" if chosen.shape[1] >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed)
    return tsne.fit_transform(chosen), indices


def _png(figure: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches the Agg canvas the PNG is rendered with
    # No bbox_inches="tight": the PNG's size stays exactly figsize * DPI, as documented.
    figure.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _colour_panel(figure: Figure, ax: Axes, points: np.ndarray, values: np.ndarray, name: str) -> None:
    """Scatter ``points`` coloured by the categories in ``values`` (any sortable labels): a legend for a few
    categories, a colour bar (of the categories' rank) for many."""
    categories, codes = np.unique(values, return_inverse=True)
    n = len(categories)
    ax.set_title(f"by {name}")
    ax.set_xticks([])
    ax.set_yticks([])
    if n <= LEGEND_MAX:
        # A qualitative palette, category i in colour i, so neighbouring categories never look alike.
        # (Integers index a colormap's colour table directly.)
        palette = colormaps["tab10" if n <= 10 else "tab20"](np.arange(n))
        ax.scatter(points[:, 0], points[:, 1], c=palette[codes], s=6, alpha=0.8, linewidths=0)
        handles = [ax.scatter([], [], color=colour, s=20) for colour in palette]
        ax.legend(handles, [str(c) for c in categories], fontsize=7, loc="best", framealpha=0.6)
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=codes, cmap="turbo", s=6, alpha=0.8, linewidths=0)
        figure.colorbar(scatter, ax=ax, label=f"{name} (rank)")


def scatter_2d_png(points_2d: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None,
                   title: str) -> bytes:
    """PNG bytes of ``points_2d`` (n, 2): one panel coloured by cluster and, when ``labels`` are given, a
    second coloured by label. The PNG is 500 px high and 500 px wide per panel (1000 px with labels).
    Raises ValueError if the lengths differ or the points are not (n, 2).
    """
    points_2d = np.asarray(points_2d)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2:
        raise ValueError(f"expected (n, 2) points, got shape {points_2d.shape}")
    panels = [(np.asarray(clusters), "cluster")]
    if labels is not None:
        panels.append((np.asarray(labels), "label"))
    for values, name in panels:
        if values.shape != (len(points_2d),):
            raise ValueError(f"{name}: expected {len(points_2d)} values, got shape {values.shape}")

    figure = Figure(figsize=(PANEL_SIZE[0] * len(panels), PANEL_SIZE[1]), dpi=DPI, layout="constrained")
    figure.suptitle(title)
    for ax, (values, name) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _colour_panel(figure, ax, points_2d, values, name)
    return _png(figure)


def latent_scatter_png(points_2d: np.ndarray, labels: np.ndarray, title: str, xlabel: str, ylabel: str) -> bytes:
    """PNG bytes, 500 x 500 px: ``points_2d`` (n, 2) coloured by ``labels`` (n,), with the axes named (the codes'
    components, or t-SNE's axes). Raises ValueError on shapes that do not match."""
    points_2d = np.asarray(points_2d)
    labels = np.asarray(labels)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2 or labels.shape != (len(points_2d),):
        raise ValueError(f"expected (n, 2) points and n labels, got {points_2d.shape} and {labels.shape}")
    figure = Figure(figsize=PANEL_SIZE, dpi=DPI, layout="constrained")
    figure.suptitle(title)
    ax = figure.subplots()
    _colour_panel(figure, ax, points_2d, labels, "class")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(figure)


def latent_analysis_png(z: np.ndarray, title: str, components: int = 32,
                        variance_ratio: list[float] | np.ndarray | None = None) -> bytes:
    """PNG bytes, 1500 x 400 px, of codes ``z`` (n, d): the distribution of each of the first ``components``
    components (box plots: where the encoder puts the data, and which units are dead), the histogram of the
    codes' radii (their L2 norms: how far from the origin the data live, against the sqrt(d) of a standard
    normal's), and the PCA spectrum (each principal component's share of the variance, on a log scale, and
    the cumulative share; ``variance_ratio`` when the caller has it, as ``core.latent.latent_stats`` gives it, else
    computed here). Raises ValueError for a non-(n, d) array or n < 2."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"expected (n, d) codes with n >= 2, got shape {z.shape}")
    d = z.shape[1]
    figure = Figure(figsize=(15.0, 4.0), dpi=DPI, layout="constrained")
    figure.suptitle(title)
    boxes, radii, spectrum = figure.subplots(1, 3)
    shown = min(d, components)
    boxes.boxplot(z[:, :shown], showfliers=False)
    boxes.set_title(f"components 1-{shown} of {d}" if shown < d else f"the {d} components")
    boxes.set_xticks(range(1, shown + 1), [str(i + 1) if shown <= 16 or i % 4 == 0 else "" for i in range(shown)])
    radius = np.linalg.norm(z, axis=1)
    radii.hist(radius, bins=40, color="#4c72b0")
    radii.axvline(np.sqrt(d), color="#c44e52", linestyle="--", label=f"sqrt(d) = {np.sqrt(d):.1f}: N(0, I)'s")
    radii.set_title("radius |z|")
    radii.legend(fontsize=8)
    if variance_ratio is not None:
        share = np.asarray(variance_ratio, dtype=np.float64)
    else:
        variances = np.clip(np.linalg.svd(z - z.mean(axis=0), compute_uv=False) ** 2, 0.0, None)
        share = variances / variances.sum() if variances.sum() > 0 else variances
    idx = np.arange(1, len(share) + 1)
    spectrum.semilogy(idx, np.clip(share, 1e-12, None), "o-", markersize=3)
    spectrum.set_xlabel("principal component")
    spectrum.set_title("PCA spectrum")
    cumulative = spectrum.twinx()
    cumulative.plot(idx, np.cumsum(share), color="#55a868", label="cumulative")
    cumulative.set_ylim(0, 1.02)
    cumulative.set_ylabel("cumulative share (green)")
    spectrum.set_ylabel("share of the variance (blue)")
    return _png(figure)


def sweep_png(ks: np.ndarray | list[int], inertias: np.ndarray | list[float],
              silhouettes: np.ndarray | list[float], elbow_k: int | None, silhouette_k: int | None) -> bytes:
    """PNG bytes, 1000 x 400 px: inertia against k (the elbow marked) and silhouette against k (its best k
    marked). A mark that is None is left out; NaN silhouettes leave gaps. Raises ValueError on lengths that
    differ."""
    ks = np.asarray(ks)
    inertias = np.asarray(inertias, dtype=np.float64)
    silhouettes = np.asarray(silhouettes, dtype=np.float64)
    if not (ks.ndim == 1 and ks.shape == inertias.shape == silhouettes.shape and len(ks) >= 1):
        raise ValueError(f"ks, inertias and silhouettes must be 1-D of one length, got {ks.shape}, "
                         f"{inertias.shape} and {silhouettes.shape}")
    order = np.argsort(ks, kind="stable")  # draw the curves left to right whatever order the ks came in
    ks, inertias, silhouettes = ks[order], inertias[order], silhouettes[order]

    figure = Figure(figsize=(SWEEP_PANEL_SIZE[0] * 2, SWEEP_PANEL_SIZE[1]), dpi=DPI, layout="constrained")
    left, right = figure.subplots(1, 2)
    for ax, values, name, mark, mark_name in ((left, inertias, "inertia", elbow_k, "elbow"),
                                              (right, silhouettes, "silhouette", silhouette_k, "best")):
        ax.plot(ks, values, marker="o", markersize=4)
        ax.set_xlabel("k")
        ax.set_ylabel(name)
        ax.set_title(f"{name} against k")
        ax.grid(alpha=0.3)
        if mark is not None:
            ax.axvline(mark, color="tab:red", linestyle="--", label=f"{mark_name}: k = {mark}")
            ax.legend(loc="best", fontsize=8)
    return _png(figure)
