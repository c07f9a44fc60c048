"""KMeans as an experiment: a k sweep (inertia, silhouette, the elbow) and KMeans as a classifier.

Arrays in, a ``ClusterResult`` out: no file I/O, no TensorFlow. A cluster becomes a classifier by labelling
it with the majority label of its training points; the test split is classified through the same mapping.
The pictures are drawn by ``core.plots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix, silhouette_score
from threadpoolctl import threadpool_limits

from core.kinds.cluster import ClusterParams

# MiniBatchKMeans' batch size. scikit-learn's default (1024) is tuned for memory; 4096 converges in fewer
# steps and gave steadier accuracy on MNIST (PCA 30, k 100 and 250) at the same speed.
MINIBATCH_SIZE = 4096


@dataclass(frozen=True)
class KResult:
    """One k of a sweep. The accuracies and the confusion matrix are None without the labels they need."""

    k: int
    inertia: float  # the sum of squared distances of the training points to their centres
    silhouette: float  # on a seeded sample of the training points; NaN where undefined (see run_clustering)
    train_accuracy: float | None  # each training point classified by its cluster's majority label
    test_accuracy: float | None  # the test points, through the same cluster -> label mapping
    confusion: np.ndarray | None  # (n_labels, n_labels) on the test split: rows true, columns predicted


@dataclass(frozen=True)
class ClusterResult:
    """What ``run_clustering`` found."""

    per_k: list[KResult]  # one per k, in ascending k
    elbow_k: int | None  # the knee of inertia against k; None with fewer than 3 ks
    silhouette_k: int  # the k with the highest silhouette
    best: KResult  # the k with the best test accuracy (train accuracy without test labels); else silhouette_k's
    train_clusters: np.ndarray  # (n_train,) the cluster id of each training point, for ``best``'s k
    pca_explained: np.ndarray | None  # the explained variance ratio of each PCA component; None without PCA
    labels: np.ndarray | None = None  # the label values that index the confusion matrices' rows and columns

    def metrics_per_k(self) -> list[tuple[int, dict[str, float]]]:
        """Each k's metrics (recorded at step k): inertia, the silhouette where defined (NaN when a clustering has
        a single populated cluster), and the accuracies the labels allowed."""
        out = []
        for r in self.per_k:
            values = {"inertia": r.inertia}
            if np.isfinite(r.silhouette):
                values["silhouette"] = r.silhouette
            if r.test_accuracy is not None:
                values["test_accuracy"] = r.test_accuracy
            if r.train_accuracy is not None:
                values["train_accuracy"] = r.train_accuracy
            out.append((r.k, values))
        return out

    def final_metrics(self) -> dict[str, float]:
        """The sweep's picks: ``best_k``, ``silhouette_k``, ``elbow_k`` (with 3 ks or more) and the best k's test
        accuracy (with test labels)."""
        final = {"best_k": float(self.best.k), "silhouette_k": float(self.silhouette_k)}
        if self.elbow_k is not None:
            final["elbow_k"] = float(self.elbow_k)
        if self.best.test_accuracy is not None:
            final["test_accuracy"] = self.best.test_accuracy
        return final

    def confusion_record(self) -> dict[str, Any] | None:
        """The best k's test confusion matrix as a JSON-ready dict (rows true labels, columns predicted), or None
        without test labels."""
        if self.best.confusion is None:
            return None
        labels = [int(v) for v in self.labels] if self.labels is not None else None
        return {"k": self.best.k, "rows": "true label", "cols": "predicted label", "labels": labels,
                "matrix": np.asarray(self.best.confusion).tolist()}


def flatten(x: np.ndarray) -> np.ndarray:
    """``x`` as a 2-D (n, features) float array: images are flattened. float32 stays float32 (half the
    memory, and scikit-learn's KMeans runs natively on it); other dtypes become float64."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"expected (n, features...) data, got shape {x.shape}")
    x = x.reshape(len(x), -1)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def prepare_features(config: ClusterParams, x_train: np.ndarray, x_test: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The features ``run_clustering`` clusters: flattened, then projected on ``config.pca`` components
    when set, then scaled as ``config.scale`` says: "standardize" each feature to mean 0 and variance 1 (a feature
    that does not vary is left at 0), "whiten" the principal components (all of them, or the ``pca`` first) to
    variance 1. Everything is fitted on the training split only, so nothing is learnt from the test split.

    Returns (train, test or None, the explained variance ratio of each component or None).
    """
    train = flatten(x_train)
    test = None if x_test is None else flatten(x_test)
    if test is not None and test.shape[1] != train.shape[1]:
        raise ValueError(f"x_test has {test.shape[1]} features, x_train {train.shape[1]}")
    explained = None
    if config.pca is not None or config.scale == "whiten":
        if config.pca is not None and config.pca > min(train.shape):
            raise ValueError(f"pca: {config.pca} components from {train.shape[0]} points of {train.shape[1]} "
                             "features; at most the smaller of the two")
        pca = PCA(n_components=config.pca, whiten=config.scale == "whiten", random_state=config.seed).fit(train)
        train, test = pca.transform(train), None if test is None else pca.transform(test)
        explained = pca.explained_variance_ratio_ if config.pca is not None else None
    if config.scale == "standardize":
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        train, test = (train - mean) / std, None if test is None else (test - mean) / std
    return train, test, explained


def fit_kmeans_classifier(kmeans: KMeans | MiniBatchKMeans, x_train: np.ndarray,
                          y_train: np.ndarray) -> np.ndarray:
    """The cluster -> label mapping: ``mapping[c]`` is the majority label of the training points that
    ``kmeans`` puts in cluster ``c`` (ties go to the smallest label). A cluster that holds no training
    point gets the majority label of all of them, so every cluster predicts something.

    ``x_train`` must be in the space ``kmeans`` was fitted in. Classify with ``mapping[kmeans.predict(x)]``.
    """
    y_train = np.asarray(y_train)
    if len(y_train) != len(x_train):
        raise ValueError(f"x_train has {len(x_train)} points, y_train {len(y_train)} labels")
    return _majority_mapping(kmeans.predict(x_train), y_train, kmeans.cluster_centers_.shape[0])


def _majority_mapping(clusters: np.ndarray, y_train: np.ndarray, n_clusters: int) -> np.ndarray:
    """``fit_kmeans_classifier`` from the training points' cluster ids (saves predicting them again)."""
    classes, y_index = np.unique(y_train, return_inverse=True)
    # counts[c, j]: how many training points of label classes[j] fall in cluster c.
    counts = np.zeros((n_clusters, len(classes)), dtype=np.int64)
    np.add.at(counts, (clusters, y_index), 1)
    majority = counts.argmax(axis=1)
    majority[counts.sum(axis=1) == 0] = np.bincount(y_index).argmax()
    return classes[majority]


def elbow_k(ks: np.ndarray | list[int], inertias: np.ndarray | list[float]) -> int:
    """The knee of an inertia curve: the k whose point is farthest from the straight line through the first
    and the last point, once both axes are scaled to [0, 1] (so the units of k and of inertia don't matter).

    The points are taken in ascending k. A flat curve gives the smallest k. On a very sharp curve (clusters
    so far apart that nearly all the inertia is gone one k before the true one) the chord can favour that
    earlier k: there, trust the silhouette. Raises ValueError with fewer than
    3 points (two points have no knee) or lengths that differ.
    """
    ks = np.asarray(ks, dtype=np.float64)
    inertias = np.asarray(inertias, dtype=np.float64)
    if ks.shape != inertias.shape or ks.ndim != 1:
        raise ValueError(f"ks and inertias must be 1-D of one length, got {ks.shape} and {inertias.shape}")
    if len(ks) < 3:
        raise ValueError(f"the elbow needs at least 3 ks, got {len(ks)}")
    order = np.argsort(ks, kind="stable")
    ks, inertias = ks[order], inertias[order]

    def unit(v: np.ndarray) -> np.ndarray:
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    x, y = unit(ks), unit(inertias)
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    norm = np.hypot(dx, dy)
    # The perpendicular distance of each point from the chord (a cross product over the chord's length).
    distance = np.abs(dx * (y - y[0]) - dy * (x - x[0])) / norm if norm > 0 else np.zeros_like(x)
    return int(ks[int(np.argmax(distance))])


def _make_kmeans(config: ClusterParams, k: int) -> KMeans | MiniBatchKMeans:
    if config.algorithm == "minibatch":
        # n_init here only re-runs the cheap initialisation (on a subsample) and keeps the best one.
        return MiniBatchKMeans(n_clusters=k, batch_size=MINIBATCH_SIZE, n_init=config.n_init,
                               random_state=config.seed)
    return KMeans(n_clusters=k, n_init=config.n_init, random_state=config.seed)


def _silhouette(x_sample: np.ndarray, clusters: np.ndarray) -> float:
    """The mean silhouette, or NaN where it is undefined: fewer than 2 clusters in the sample, or as many
    clusters as sampled points."""
    n_found = len(np.unique(clusters))
    if not 2 <= n_found <= len(x_sample) - 1:
        return float("nan")
    return float(silhouette_score(x_sample, clusters))


def _check_labels(name: str, y: np.ndarray | None, x: np.ndarray | None) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or x is None or len(y) != len(x):
        raise ValueError(f"{name} must be 1-D with one label per point, got shape {y.shape}"
                         f"{'' if x is None else f' for {len(x)} points'}")
    return y


def run_clustering(config: ClusterParams, x_train: np.ndarray, y_train: np.ndarray | None = None,
                   x_test: np.ndarray | None = None, y_test: np.ndarray | None = None, *,
                   threads: int | None = None) -> ClusterResult:
    """Cluster ``x_train`` with each k of ``config.k``; score each k; pick the elbow, the silhouette's k and
    the best k.

    - The data are flattened to (n, features); with ``config.pca`` they are projected on that many PCA
      components fitted on the training split. Features are clustered as given, without standardisation:
      scale them first if their units differ (on the WiFi data, whose signal strengths share one scale,
      standardising lowered k = 10 accuracy from 0.99 to 0.96 and moved the silhouette's pick to k = 2).
    - ``config.algorithm``: "kmeans" is ``KMeans(k, n_init, random_state=seed)``; "minibatch" is
      ``MiniBatchKMeans`` with batches of ``MINIBATCH_SIZE`` and the same n_init and seed.
    - The silhouette is computed on ``config.silhouette_sample`` training points drawn without replacement
      (all of them if fewer) with ``seed``, the same points for every k; NaN where undefined (the sample
      holds one cluster only, or as many clusters as points). ``silhouette_k`` ignores NaNs (the smallest k
      if every one is NaN); ties go to the smaller k.
    - With ``y_train``, each cluster is labelled by ``fit_kmeans_classifier``; with ``x_test`` and ``y_test``
      too, the test points are classified through that mapping, giving the test accuracy and the confusion
      matrix, whose rows and columns follow ``ClusterResult.labels`` (the sorted labels of both splits).
    - ``best``: the k with the best test accuracy; without test labels, the best train accuracy; without
      labels, ``silhouette_k``. Ties go to the smaller k.
    - ``threads`` caps the OpenMP and BLAS threads of the whole run (None: scikit-learn's default, one per
      core). It changes the speed, not the results (beyond float rounding). Pass 1, or the job's share of
      the cores, where other work competes for them: OpenMP's spin-waiting then costs far more than the
      threads gain (on 2 busy cores a WiFi sweep took 10 s with 2 threads, 0.25 s with 1; MNIST PCA 30 with
      k = 100 and 250 took 11 s and 1.7 s). The cap is process-wide while the run lasts (threadpoolctl).

    Raises ValueError on inconsistent shapes, a k larger than the number of training points, or more PCA
    components than the data allow.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    with threadpool_limits(limits=threads):
        return _run(config, x_train, y_train, x_test, y_test)


def _run(config: ClusterParams, x_train: np.ndarray, y_train: np.ndarray | None, x_test: np.ndarray | None,
         y_test: np.ndarray | None) -> ClusterResult:
    """``run_clustering`` within its thread limit."""
    train, test, explained = prepare_features(config, x_train, x_test)
    y_train = _check_labels("y_train", y_train, train)
    y_test = _check_labels("y_test", y_test, test)
    ks = sorted(config.k)
    if ks[-1] > len(train):
        raise ValueError(f"k: {ks[-1]} clusters from {len(train)} training points")
    labelled_test = y_train is not None and y_test is not None
    labels = None
    if y_train is not None:
        labels = np.unique(np.concatenate([y_train, y_test])) if labelled_test else np.unique(y_train)

    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(train), size=min(config.silhouette_sample, len(train)), replace=False))
    per_k: list[KResult] = []
    clusters_by_k: dict[int, np.ndarray] = {}
    for k in ks:
        model = _make_kmeans(config, k).fit(train)
        clusters = model.labels_  # both estimators assign the training points to the final centres
        clusters_by_k[k] = clusters
        train_acc = test_acc = confusion = None
        if y_train is not None:
            mapping = _majority_mapping(clusters, y_train, k)
            train_acc = float(np.mean(mapping[clusters] == y_train))
            if labelled_test:
                predicted = mapping[model.predict(test)]
                test_acc = float(np.mean(predicted == y_test))
                confusion = confusion_matrix(y_test, predicted, labels=labels)
        per_k.append(KResult(k=k, inertia=float(model.inertia_), silhouette=_silhouette(train[sample],
                             clusters[sample]), train_accuracy=train_acc, test_accuracy=test_acc,
                             confusion=confusion))

    silhouettes = np.array([r.silhouette for r in per_k])
    # np.argmax returns the first maximum, so ties go to the smaller k; NaNs are pushed below every score.
    silhouette_k = ks[int(np.argmax(np.where(np.isnan(silhouettes), -np.inf, silhouettes)))]
    if labelled_test:
        best = per_k[int(np.argmax(np.array([r.test_accuracy for r in per_k], dtype=np.float64)))]
    elif y_train is not None:
        best = per_k[int(np.argmax(np.array([r.train_accuracy for r in per_k], dtype=np.float64)))]
    else:
        best = per_k[ks.index(silhouette_k)]
    return ClusterResult(
        per_k=per_k,
        elbow_k=elbow_k(ks, [r.inertia for r in per_k]) if len(ks) >= 3 else None,
        silhouette_k=silhouette_k,
        best=best,
        train_clusters=clusters_by_k[best.k],
        pca_explained=explained,
        labels=labels,
    )
