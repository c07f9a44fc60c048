"""core.cluster and core.plots on small synthetic data: the sweep finds a known k, KMeans classifies separated
blobs perfectly, the majority mapping and the elbow behave as documented, and the PNGs decode at their size."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from core.cluster import ClusterResult, elbow_k, fit_kmeans_classifier, prepare_features, run_clustering
from core.errors import ConfigError
from core.kinds.cluster import ClusterParams
from core.params import parse_config
from core.plots import embed_2d, scatter_2d_png, sweep_png

REPO = Path(__file__).resolve().parents[2]


def _blobs(n: int, centers: int, seed: int = 0, std: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Blobs whose centres are at least ~10 standard deviations apart (the box is wide), so KMeans can't miss."""
    return make_blobs(n_samples=n, centers=centers, n_features=4, cluster_std=std, center_box=(-20, 20),
                      random_state=seed)


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


@pytest.mark.parametrize("true_k", [3, 4, 5])
def test_sweep_picks_the_true_k(true_k: int) -> None:
    # Centres evenly spaced on a circle of radius 10, so no two blobs overlap by chance and k is unambiguous.
    angles = np.arange(true_k) * 2 * np.pi / true_k
    x, _ = make_blobs(n_samples=600, centers=10 * np.c_[np.cos(angles), np.sin(angles)], cluster_std=1.0,
                      random_state=true_k)
    result = run_clustering(ClusterParams(k=(8, 2, 3, 4, 5, 6, 7), n_init=3), x)
    assert [r.k for r in result.per_k] == [2, 3, 4, 5, 6, 7, 8]  # ascending, whatever the config's order
    assert result.silhouette_k == true_k
    assert result.elbow_k == true_k
    inertias = [r.inertia for r in result.per_k]
    assert all(a >= b for a, b in zip(inertias, inertias[1:], strict=False))  # more clusters, less inertia
    # Without labels: no accuracies, and the best k is the silhouette's.
    assert result.best.k == true_k and result.labels is None and result.pca_explained is None
    assert all(r.train_accuracy is None and r.test_accuracy is None and r.confusion is None for r in result.per_k)
    assert result.train_clusters.shape == (600,) and set(result.train_clusters) == set(range(true_k))


def test_separated_blobs_are_classified_perfectly() -> None:
    x, y = _blobs(800, centers=4, seed=1)
    y = y + 10  # labels need not be 0..n-1
    config = ClusterParams(k=(2, 4, 6), n_init=3)
    result = run_clustering(config, x[:600], y[:600], x[600:], y[600:])
    assert result.best.k == 4
    assert result.best.train_accuracy == 1.0 and result.best.test_accuracy == 1.0
    np.testing.assert_array_equal(result.labels, [10, 11, 12, 13])
    confusion = result.best.confusion
    assert confusion is not None and confusion.shape == (4, 4)
    np.testing.assert_array_equal(confusion, np.diag(np.bincount(y[600:] - 10)))  # all on the diagonal
    # k = 2 merges blobs: half the labels are lost; k = 6 splits some, which costs nothing.
    by_k = {r.k: r for r in result.per_k}
    assert by_k[2].test_accuracy is not None and by_k[2].test_accuracy < 0.6
    assert by_k[6].test_accuracy == 1.0
    assert result.elbow_k == 4 and result.silhouette_k == 4


def test_train_labels_without_a_test_split() -> None:
    x, y = _blobs(300, centers=3)
    result = run_clustering(ClusterParams(k=(2, 3), n_init=2), x, y)
    assert result.elbow_k is None  # fewer than 3 ks
    assert result.best.k == 3 and result.best.train_accuracy == 1.0  # best by train accuracy
    assert result.best.test_accuracy is None and result.best.confusion is None


def test_pca_and_minibatch() -> None:
    x, y = _blobs(1000, centers=3, seed=2)
    x = x @ np.random.default_rng(0).normal(size=(4, 12))  # 12 features spanning a 4-D subspace
    config = ClusterParams(k=(3,), pca=4, algorithm="minibatch", n_init=3)
    result = run_clustering(config, x[:800], y[:800], x[800:], y[800:])
    explained = result.pca_explained
    assert explained is not None and explained.shape == (4,)
    assert np.all(np.diff(explained) <= 0) and explained.sum() == pytest.approx(1.0)  # the subspace is 4-D
    assert result.best.test_accuracy == 1.0
    assert result.silhouette_k == 3 and result.best.silhouette > 0.5


def test_images_are_flattened_and_runs_are_deterministic() -> None:
    x, y = _blobs(200, centers=2, seed=3)
    images = np.repeat(x, 4, axis=1).reshape(200, 4, 4)  # (n, h, w) like greyscale images
    config = ClusterParams(k=(2, 3), silhouette_sample=50, seed=7)
    first, second = (run_clustering(config, images, y) for _ in range(2))
    assert [r.silhouette for r in first.per_k] == [r.silhouette for r in second.per_k]
    np.testing.assert_array_equal(first.train_clusters, second.train_clusters)
    assert isinstance(first, ClusterResult) and first.best.train_accuracy == 1.0


def test_threads_change_nothing_but_the_speed() -> None:
    x, y = _blobs(400, centers=3, seed=6)
    config = ClusterParams(k=(2, 3, 4), n_init=2)
    capped, default = run_clustering(config, x, y, threads=1), run_clustering(config, x, y)
    np.testing.assert_array_equal(capped.train_clusters, default.train_clusters)
    for a, b in zip(capped.per_k, default.per_k, strict=True):
        assert a.train_accuracy == b.train_accuracy and a.inertia == pytest.approx(b.inertia, rel=1e-9)
    with pytest.raises(ValueError, match="threads"):
        run_clustering(config, x, y, threads=0)


def test_majority_mapping_with_a_cluster_without_training_points() -> None:
    x, _ = _blobs(300, centers=3, seed=4)
    kmeans = KMeans(n_clusters=3, n_init=3, random_state=0).fit(x)
    clusters = kmeans.predict(x)
    # The classifier's training points come from clusters 0 and 1 only; mostly label 7, so 7 is the global
    # majority, and cluster 1 is mostly label 5.
    in_0, in_1 = np.flatnonzero(clusters == 0)[:30], np.flatnonzero(clusters == 1)[:20]
    x_train = x[np.concatenate([in_0, in_1])]
    y_train = np.array([7] * 30 + [5] * 15 + [7] * 5)
    mapping = fit_kmeans_classifier(kmeans, x_train, y_train)
    np.testing.assert_array_equal(mapping, [7, 5, 7])  # cluster 2 holds no training point: the global majority
    assert mapping.dtype == y_train.dtype


def test_majority_ties_go_to_the_smallest_label() -> None:
    x, _ = _blobs(100, centers=2, seed=5)
    kmeans = KMeans(n_clusters=2, n_init=2, random_state=0).fit(x)
    x_train = x[np.flatnonzero(kmeans.labels_ == 0)[:4]]
    np.testing.assert_array_equal(fit_kmeans_classifier(kmeans, x_train, np.array(["b", "a", "b", "a"])),
                                  ["a", "a"])
    with pytest.raises(ValueError, match="labels"):
        fit_kmeans_classifier(kmeans, x_train, np.array(["a"]))


def test_elbow_on_a_hand_made_curve() -> None:
    # Steep to k = 4, then nearly flat: the knee is 4. Scaled: the chord runs from (0, 1) to (1, 0).
    ks = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    inertias = [1000, 600, 250, 220, 200, 185, 175, 168, 160]
    assert elbow_k(ks, inertias) == 4
    # Order doesn't matter, nor units; a flat curve gives the smallest k.
    assert elbow_k(ks[::-1], [i * 1e6 for i in inertias[::-1]]) == 4
    assert elbow_k([3, 4, 5], [1.0, 1.0, 1.0]) == 3
    # A straight line plus one dip: the dip is the point farthest from the chord.
    assert elbow_k([1, 2, 3, 4, 5], [4.0, 3.0, 0.5, 1.0, 0.0]) == 3
    with pytest.raises(ValueError, match="at least 3"):
        elbow_k([2, 3], [5.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        elbow_k([2, 3, 4], [5.0, 1.0])


def test_bad_inputs_are_rejected() -> None:
    x, y = _blobs(20, centers=2)
    with pytest.raises(ValueError, match="clusters from 20"):
        run_clustering(ClusterParams(k=(21,)), x)
    with pytest.raises(ValueError, match="pca"):
        run_clustering(ClusterParams(k=(2,), pca=5), x)  # 4 features
    with pytest.raises(ValueError, match="y_train"):
        run_clustering(ClusterParams(k=(2,)), x, y[:10])
    with pytest.raises(ValueError, match="features"):
        run_clustering(ClusterParams(k=(2,)), x, y, x[:, :3], y)


@pytest.mark.parametrize("labelled", [True, False])
def test_scatter_png_decodes_at_its_size(labelled: bool) -> None:
    points = np.random.default_rng(0).normal(size=(50, 2))
    clusters = np.arange(50) % 3
    png = scatter_2d_png(points, clusters, np.arange(50) % 2 if labelled else None, "title")
    assert _decode(png).size == ((1000 if labelled else 500), 500)  # (width, height): 500 px per panel


def test_scatter_png_with_many_clusters_and_string_labels() -> None:
    points = np.random.default_rng(1).normal(size=(300, 2))
    png = scatter_2d_png(points, np.arange(300) % 250, np.array(["a", "b", "c"])[np.arange(300) % 3], "k=250")
    assert _decode(png).size == (1000, 500)
    with pytest.raises(ValueError, match="expected 300 values"):
        scatter_2d_png(points, np.zeros(299), None, "short")
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        scatter_2d_png(np.zeros((5, 3)), np.zeros(5), None, "3-D")


def test_sweep_png_decodes_at_its_size() -> None:
    ks = [2, 3, 4, 5]
    png = sweep_png(ks, [10.0, 5.0, 3.0, 2.5], [0.3, 0.5, float("nan"), 0.4], elbow_k=3, silhouette_k=3)
    assert _decode(png).size == (1000, 400)
    assert _decode(sweep_png([4], [1.0], [0.2], None, 4)).size == (1000, 400)  # one k, no elbow
    with pytest.raises(ValueError, match="one length"):
        sweep_png(ks, [1.0], [0.1], None, None)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_2d(method: str) -> None:
    x, _ = _blobs(120, centers=3)
    images = np.repeat(x, 20, axis=1).reshape(120, 8, 10)  # 80 features: t-SNE goes through PCA first
    points, indices = embed_2d(images, method, sample=60, seed=3)  # type: ignore[arg-type]
    assert points.shape == (60, 2) and np.isfinite(points).all()
    assert len(set(indices)) == 60 and np.all(np.diff(indices) > 0) and indices.max() < 120
    again, same = embed_2d(images, method, sample=60, seed=3)  # type: ignore[arg-type]
    np.testing.assert_array_equal(indices, same)
    np.testing.assert_allclose(points, again)


def test_embed_2d_small_inputs() -> None:
    points, indices = embed_2d(np.arange(12.0).reshape(12, 1), "tsne", sample=100, seed=0)  # sample > n
    assert points.shape == (12, 2) and list(indices) == list(range(12))
    points, _ = embed_2d(np.arange(12.0).reshape(12, 1), "pca", sample=5, seed=0, threads=1)  # padded
    assert points.shape == (5, 2) and (points[:, 1] == 0).all()
    with pytest.raises(ValueError, match="unknown method"):
        embed_2d(np.zeros((10, 2)), "umap", sample=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_2d_of_one_point_repeated_is_that_point(method: str) -> None:
    """Codes whose units all died are one point: drawn as one, where scikit-learn's t-SNE would crash the
    process (its PCA initialisation divides by a zero spread and its Barnes-Hut tree gets NaN)."""
    points, indices = embed_2d(np.full((40, 16), 0.3, dtype=np.float32), method, sample=30, seed=0)  # type: ignore[arg-type]
    assert points.shape == (30, 2) and len(indices) == 30 and np.isfinite(points).all()
    assert np.ptp(points, axis=0).max() < 1e-9


def test_importing_the_modules_does_not_import_tensorflow() -> None:
    code = ("import sys, core.cluster, core.plots; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') or m == 'matplotlib.pyplot']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_the_result_as_metrics_and_a_confusion_record() -> None:
    x, y = _blobs(400, centers=3, seed=2)
    labelled = run_clustering(ClusterParams(k=(2, 3, 4), n_init=2), x[:300], y[:300], x[300:], y[300:])
    per_k = labelled.metrics_per_k()
    assert [k for k, _ in per_k] == [2, 3, 4]
    assert all(set(values) == {"inertia", "silhouette", "test_accuracy", "train_accuracy"} for _, values in per_k)
    assert labelled.final_metrics() == {"best_k": 3.0, "silhouette_k": 3.0, "elbow_k": 3.0, "test_accuracy": 1.0}
    record = labelled.confusion_record()
    assert record is not None and record["k"] == 3 and record["labels"] == [0, 1, 2]
    assert np.trace(np.asarray(record["matrix"])) == 100
    bare = run_clustering(ClusterParams(k=(3,), n_init=2), x)
    assert bare.metrics_per_k() == [(3, {"inertia": bare.per_k[0].inertia, "silhouette": bare.per_k[0].silhouette})]
    assert bare.final_metrics() == {"best_k": 3.0, "silhouette_k": 3.0} and bare.confusion_record() is None


def test_scaling_is_fitted_on_the_training_split() -> None:
    rng = np.random.default_rng(0)
    # correlated features of very different scales, one of them constant
    mix = np.array([[3.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 0.0]])
    train = rng.standard_normal((500, 3)) @ mix + np.array([5.0, -2.0, 7.0])
    test = rng.standard_normal((50, 3)) @ mix + 100.0  # far away: a scaling fitted on it would centre it
    std_train, std_test, explained = prepare_features(ClusterParams(scale="standardize"), train, test)
    assert explained is None
    assert np.allclose(std_train.mean(axis=0), 0) and np.allclose(std_train.std(axis=0), [1, 1, 0])
    assert std_test is not None and std_test[:, 0].mean() > 20  # the test split moved by the training's scaling
    white, white_test, _ = prepare_features(ClusterParams(scale="whiten", pca=2), train, test)
    assert white.shape == (500, 2) and white_test is not None and white_test.shape == (50, 2)
    assert np.allclose(np.cov(white, rowvar=False, ddof=1), np.eye(2), atol=1e-6)
    with pytest.raises(ConfigError, match="scale"):
        parse_config(ClusterParams, {"scale": "minmax"})
