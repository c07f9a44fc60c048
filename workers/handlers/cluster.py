"""``cluster``: KMeans on raw features, PCA components or an encode job's latents (``core.cluster``); the metrics
per k (at step k) and the sweep's picks, the confusion matrix, the cluster of each training point, PNG pictures."""

from __future__ import annotations

import numpy as np

from core.kinds.cluster import ClusterParams
from workers.context import JobContext
from workers.handlers.data import load_data


def run_cluster(ctx: JobContext, params: ClusterParams) -> None:
    from core.cluster import run_clustering
    from core.plots import embed_2d, scatter_2d_png, sweep_png

    encoded = ctx.parent("encode", required=False)
    if encoded is not None and params.dataset is None:
        source = f"latents of {encoded.name}"
        x_train, x_test = ctx.load_npy(encoded, "latents_train.npy"), ctx.load_npy(encoded, "latents_test.npy")
        y_train, y_test = ctx.load_npy(encoded, "labels_train.npy"), ctx.load_npy(encoded, "labels_test.npy")
    else:
        source = f"dataset {params.dataset}"
        data = load_data(ctx, params)
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    x_train = x_train.reshape(len(x_train), -1)
    x_test = x_test.reshape(len(x_test), -1)
    ks = ", ".join(map(str, params.k))
    ctx.progress(0.05, f"clustering {len(x_train)} points of {source} ({x_train.shape[1]} features), k = {ks}")
    result = run_clustering(params, x_train, y_train, x_test, y_test)
    for k, values in result.metrics_per_k():
        ctx.metrics(values, step=k)
    ctx.metrics(result.final_metrics())
    confusion = result.confusion_record()
    if confusion is not None:
        ctx.artifact_json("confusion.json", confusion)
    ctx.artifact_npy("clusters_train.npy", np.asarray(result.train_clusters, dtype=np.int64), {"k": result.best.k})
    if len(params.k) > 1:
        ctx.artifact_bytes("sweep.png", sweep_png([r.k for r in result.per_k], [r.inertia for r in result.per_k],
                                                  [r.silhouette for r in result.per_k], result.elbow_k,
                                                  result.silhouette_k), "image/png")
    if params.plot != "none":
        ctx.progress(0.8, f"2-D picture ({params.plot})")
        points, idx = embed_2d(x_train, params.plot, params.plot_sample, params.seed)
        png = scatter_2d_png(points, np.asarray(result.train_clusters)[idx], y_train[idx] if y_train is not None
                             else None, f"{source}, k = {result.best.k} ({params.plot})")
        ctx.artifact_bytes("clusters_2d.png", png, "image/png", {"method": params.plot, "k": result.best.k})
