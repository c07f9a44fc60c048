"""``train``: train an autoencoder or a CNN classifier on an image dataset (``core.train``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.data_files import IMAGE_DATASETS
from core.kinds.base import Kind, Parent
from core.kinds.data import DataParams
from core.memory import data_shape, train_bytes
from core.models.defaults import FILTER_COUNTS, FILTERS, FILTERS_IN_PARAMS, LEARNING_RATE, Z_DIM
from core.params import require

_WORDS = {2: "two", 3: "three"}


@dataclass(frozen=True)
class TrainParams(DataParams):
    """Train an autoencoder or a CNN classifier on an image dataset; save it in Keras' ``.keras`` format."""

    model: Literal["conv_ae", "pool_ae", "face_ae", "cnn"] = "conv_ae"  # the autoencoders (README) or the classifier
    epochs: int = 10  # passes over the training images
    batch_size: int = 128  # images per gradient step
    z_dim: int | None = None  # the bottleneck size; default conv_ae 16, face_ae 256 (pool_ae, cnn: none)
    filters: tuple[int, ...] | None = None  # encoder Conv2D filters; default conv_ae 32,64,128, face_ae +256
    loss: Literal["bce", "mse"] = "bce"  # autoencoders' reconstruction loss (a cnn uses cross-entropy)
    optimizer: Literal["adam", "adadelta", "rmsprop", "sgd"] = "adam"  # Keras' optimizer of that name
    learning_rate: float | None = None  # default 1e-3 (for adadelta too: Keras' default is 0.001, not the old 1.0)
    validation_split: float = 0.1  # the last fraction of the training images, held out for val_loss
    seed: int = 0  # seeds weight initialisation and shuffling
    keep_checkpoint: bool = False  # keep checkpoint.keras (model + optimizer state) after success; default: dropped

    def __post_init__(self) -> None:
        # The model's defaults are filled in here, so a default left out and the same value written out are one
        # job (one fingerprint), and the stored params say what was actually used.
        if self.z_dim is None and self.model in Z_DIM:
            object.__setattr__(self, "z_dim", Z_DIM[self.model])
        if self.filters is None and self.model in FILTERS_IN_PARAMS:
            object.__setattr__(self, "filters", FILTERS[self.model])
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", LEARNING_RATE)

    def validate(self) -> None:
        self.validate_data()
        require(self.dataset in IMAGE_DATASETS, "dataset", f"model {self.model} needs an image dataset, "
                f"not {self.dataset!r}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.z_dim is None or self.z_dim >= 1, "z_dim", f"must be >= 1, got {self.z_dim}")
        require(self.filters is None or (len(self.filters) >= 1 and all(f >= 1 for f in self.filters)), "filters",
                f"must be positive integers, got {list(self.filters or ())}")
        count = FILTER_COUNTS.get(self.model)
        require(count is None or self.filters is None or len(self.filters) == count,
                "filters", f"{self.model} takes {_WORDS.get(count or 0)} filter counts")
        if self.model == "face_ae" and self.image_size is not None:
            step = 2 ** len(self.filters or ())
            require(self.image_size % step == 0, "image_size",
                    f"face_ae with {len(self.filters or ())} stride-2 layers needs a multiple of {step}, "
                    f"got {self.image_size}")
        require(self.learning_rate is None or self.learning_rate > 0, "learning_rate",
                f"must be > 0, got {self.learning_rate}")
        require(0 <= self.validation_split < 1, "validation_split",
                f"must be in [0, 1), got {self.validation_split}")


def memory(params: Mapping[str, Any], parents: Sequence[Parent], lookup: Callable[[str], Parent]) -> int | None:
    shape = data_shape(params)
    return None if shape is None else train_bytes(params, shape)


KINDS = (
    Kind("train", TrainParams, "gpu", "trains an autoencoder (conv_ae, pool_ae, face_ae) or the cnn classifier",
         handler="workers.handlers.train:run_train", memory=memory, x_axis="epoch",
         gallery=("reconstructions.png",), late_params=("keep_checkpoint",), search_steps="epochs"),
)
