"""``encode``: a dataset's train and test splits through a trained autoencoder's encoder, and their statistics."""

from __future__ import annotations

from dataclasses import dataclass

from core.data_files import IMAGE_DATASETS
from core.kinds.base import Input, Kind
from core.kinds.data import DataParams
from core.models.defaults import AUTOENCODERS
from core.params import require


@dataclass(frozen=True)
class EncodeParams(DataParams):
    """Encode a dataset's train and test splits with a trained autoencoder (the train job it needs)."""

    dataset: str | None = None  # default: the dataset the autoencoder was trained on (with its data_path)
    batch_size: int = 256  # images per forward pass

    def validate(self) -> None:
        self.validate_data(required=False)
        require(self.dataset is None or self.dataset in IMAGE_DATASETS, "dataset",
                f"encode needs an image dataset, not {self.dataset!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


KINDS = (
    Kind("encode", EncodeParams, "gpu", "encodes the train and test splits with an autoencoder; latent statistics",
         handler="workers.handlers.encode:run_encode",
         inputs=(Input("train", "the autoencoder to encode with", models=AUTOENCODERS),)),
)
