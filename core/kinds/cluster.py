"""``cluster``: KMeans on raw features, PCA components or an encode job's latents (``core.cluster``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import ConfigError
from core.kinds.base import Input, Kind, Parent
from core.kinds.data import DataParams
from core.memory import cluster_bytes, data_shape
from core.params import require


@dataclass(frozen=True)
class ClusterParams(DataParams):
    """KMeans on raw features, PCA components or latents (from an encode job it needs); a k sweep; KMeans as a
    classifier (each cluster labelled with its training majority); a 2-D picture."""

    dataset: str | None = None  # the features' dataset; leave unset to cluster the latents of an encode job
    pca: int | None = None  # cluster the first N PCA components instead of the raw features
    scale: Literal["none", "standardize", "whiten"] = "none"  # before KMeans, fitted on the training split:
    # standardize = each feature to mean 0 and variance 1; whiten = the PCA components (all, or the first `pca`) to
    # variance 1, so every direction counts alike
    k: tuple[int, ...] = (10,)  # one k, or several for a sweep (inertia and silhouette per k)
    algorithm: Literal["kmeans", "minibatch"] = "kmeans"  # minibatch: MiniBatchKMeans, for large n and k
    n_init: int = 10  # KMeans restarts
    silhouette_sample: int = 5000  # silhouette on a random sample of this many points (it is O(n^2))
    plot: Literal["pca", "tsne", "none"] = "pca"  # the 2-D picture, coloured by cluster and by label
    plot_sample: int = 2000  # points in the picture (t-SNE is slow)
    seed: int = 0  # seeds KMeans, the samples and t-SNE

    def validate(self) -> None:
        self.validate_data(required=False)
        require(self.pca is None or self.pca >= 1, "pca", f"must be >= 1, got {self.pca}")
        require(len(self.k) >= 1 and all(2 <= k <= 10000 for k in self.k), "k",
                f"must be integers from 2 to 10000, got {list(self.k)}")
        require(len(set(self.k)) == len(self.k), "k", f"repeats a value: {list(self.k)}")
        require(self.n_init >= 1, "n_init", f"must be >= 1, got {self.n_init}")
        require(self.silhouette_sample >= 10, "silhouette_sample", f"must be >= 10, got {self.silhouette_sample}")
        require(self.plot_sample >= 10, "plot_sample", f"must be >= 10, got {self.plot_sample}")


def check_parents(params: Mapping[str, Any], parents: Sequence[Parent]) -> None:
    """A cluster job clusters either a dataset or the latents of the encode job it needs: exactly one of them."""
    encodes = any(p.kind == "encode" for p in parents)
    if params.get("dataset") is None and not encodes:
        raise ConfigError("dataset", "required unless the job needs an encode job")
    if params.get("dataset") is not None and encodes:
        raise ConfigError("dataset", "set (here or by defaults.params) while the job also needs an encode job: it "
                          "would cluster the dataset, not that job's output. Remove one")


def memory(params: Mapping[str, Any], parents: Sequence[Parent], lookup: Callable[[str], Parent]) -> int | None:
    """Its own dataset's rows, or the latents of the encode job it needs (one row of z_dim per image)."""
    sample = int(params.get("silhouette_sample") or 5000)
    if params.get("dataset") is not None:
        shape = data_shape(params)
        return None if shape is None else cluster_bytes(shape.n_train + shape.n_test, math.prod(shape.item), sample)
    encoded = next((p for p in parents if p.kind == "encode"), None)
    trained = next((t for t in map(lookup, encoded.needs) if t.kind == "train"), None) if encoded else None
    if trained is None:
        return None
    data = encoded.params if encoded is not None and encoded.params.get("dataset") is not None else trained.params
    shape = data_shape(data)
    width = int(trained.params.get("z_dim") or 0) or (math.prod(shape.item) if shape else 0)
    return None if shape is None else cluster_bytes(shape.n_train + shape.n_test, width, sample)


KINDS = (
    Kind("cluster", ClusterParams, "cpu", "KMeans on features, PCA components or latents; a k sweep; KMeans as a "
         "classifier", handler="workers.handlers.cluster:run_cluster",
         inputs=(Input("encode", "the latents to cluster", min=0),), check_parents=check_parents, memory=memory,
         x_axis="k", gallery=("clusters_2d.png",), late_params=("scale",)),
)
