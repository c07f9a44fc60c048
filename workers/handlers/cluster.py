"""The ``cluster`` kind: KMeans on raw features, PCA components or an encode job's latents; a k sweep with
inertia and silhouette per k (metrics at step k); KMeans as a classifier; PNG pictures."""

from __future__ import annotations

import numpy as np

from core.config import ClusterConfig
from workers.context import JobContext
from workers.handlers.data import load_data


def run_cluster(ctx: JobContext, config: ClusterConfig) -> None:
    from core.cluster import run_clustering
    from core.plots import embed_2d, scatter_2d_png, sweep_png

    encoded = ctx.parent("encode", required=False)
    if encoded is not None and config.dataset is None:
        source = f"latents of {encoded.name}"
        x_train, x_test = ctx.load_npy(encoded, "latents_train.npy"), ctx.load_npy(encoded, "latents_test.npy")
        y_train, y_test = ctx.load_npy(encoded, "labels_train.npy"), ctx.load_npy(encoded, "labels_test.npy")
    else:
        source = f"dataset {config.dataset}"
        data = load_data(ctx, config)
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    ks = ", ".join(map(str, config.k))
    ctx.progress(0.05, f"clustering {len(x_train)} points of {source} ({x_train.shape[1]} features), k = {ks}")
    result = run_clustering(config, x_train, y_train, x_test, y_test)
    for r in result.per_k:
        values = {"inertia": r.inertia}
        if np.isfinite(r.silhouette):  # undefined (NaN) when a clustering has a single populated cluster
            values["silhouette"] = r.silhouette
        if r.test_accuracy is not None:
            values["test_accuracy"] = r.test_accuracy
        if r.train_accuracy is not None:
            values["train_accuracy"] = r.train_accuracy
        ctx.metrics(values, step=r.k)
    final = {"best_k": float(result.best.k), "silhouette_k": float(result.silhouette_k)}
    if result.elbow_k is not None:
        final["elbow_k"] = float(result.elbow_k)
    if result.best.test_accuracy is not None:
        final["test_accuracy"] = result.best.test_accuracy
    ctx.metrics(final)
    if result.best.confusion is not None:
        labels = [int(v) for v in result.labels] if result.labels is not None else None
        ctx.artifact_json("confusion.json", {"k": result.best.k, "rows": "true label", "cols": "predicted label",
                                             "labels": labels, "matrix": np.asarray(result.best.confusion).tolist()})
    ctx.artifact_npy("clusters_train.npy", np.asarray(result.train_clusters, dtype=np.int64), {"k": result.best.k})
    if len(config.k) > 1:
        ctx.artifact_bytes("sweep.png", sweep_png([r.k for r in result.per_k], [r.inertia for r in result.per_k],
                                                  [r.silhouette for r in result.per_k], result.elbow_k,
                                                  result.silhouette_k), "image/png")
    if config.plot != "none":
        ctx.progress(0.8, f"2-D picture ({config.plot})")
        points, idx = embed_2d(x_train, config.plot, config.plot_sample, config.seed)
        png = scatter_2d_png(points, np.asarray(result.train_clusters)[idx], y_train[idx] if y_train is not None
                             else None, f"{source}, k = {result.best.k} ({config.plot})")
        ctx.artifact_bytes("clusters_2d.png", png, "image/png", {"method": config.plot, "k": result.best.k})
