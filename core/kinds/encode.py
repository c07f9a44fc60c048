"""``encode``: a dataset's train and test splits through a trained autoencoder's encoder, and their statistics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.data_files import IMAGE_DATASETS
from core.kinds.base import Input, Kind, Parent
from core.kinds.data import DataParams
from core.memory import data_shape, encode_bytes
from core.models.defaults import AUTOENCODERS
from core.params import require


@dataclass(frozen=True)
class EncodeParams(DataParams):
    """Encode a dataset's train and test splits with a trained autoencoder (the train job it needs)."""

    dataset: str | None = None  # default: the dataset the autoencoder was trained on (with its data_path)
    batch_size: int = 256  # images per forward pass
    plot: Literal["auto", "scatter", "tsne", "none"] = "auto"  # latents.png, the test codes coloured by class (auto:
    # the codes themselves for a 2-D code, else a t-SNE), and latent_stats.png (the codes per component, their
    # radii, the PCA spectrum); none: neither
    plot_sample: int = 1000  # test codes in the picture (t-SNE of 1000 codes: a few seconds)

    def validate(self) -> None:
        self.validate_data(required=False)
        require(self.dataset is None or self.dataset in IMAGE_DATASETS, "dataset",
                f"encode needs an image dataset, not {self.dataset!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.plot_sample >= 10, "plot_sample", f"must be >= 10, got {self.plot_sample}")


def memory(params: Mapping[str, Any], parents: Sequence[Parent], lookup: Callable[[str], Parent]) -> int | None:
    trained = next((p for p in parents if p.kind == "train"), None)
    if trained is None:
        return None
    shape = data_shape(params if params.get("dataset") is not None else trained.params)
    return None if shape is None else encode_bytes(shape, trained.params)


KINDS = (
    Kind("encode", EncodeParams, "gpu", "encodes the train and test splits with an autoencoder; latent statistics",
         handler="workers.handlers.encode:run_encode",
         inputs=(Input("train", "the autoencoder to encode with", models=AUTOENCODERS),), memory=memory,
         late_params=("plot", "plot_sample")),
)
