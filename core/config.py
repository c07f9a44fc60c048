"""The job kinds and their parameters: one frozen dataclass per kind, one comment per field.

This module is what a batch spec is validated against (on the control plane, without TensorFlow) and what a
worker configures a job with. Add a kind here, then give it a handler in ``workers.handlers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.params import require

DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class NoopConfig:
    """A job that does nothing useful: for tests, benchmarks and checking a farm end to end."""

    seconds: float = 0.0  # sleep this long, in short slices so a cancellation is seen
    fail: bool = False  # raise an error instead of succeeding (exercises the failure path)
    value: float = 1.0  # recorded as the metric `value`; also written to the artifact `out.json`

    def validate(self) -> None:
        require(self.seconds >= 0, "seconds", f"must be >= 0, got {self.seconds}")


@dataclass(frozen=True)
class TrainConfig:
    """Train an autoencoder on an image dataset and save it in Keras' ``.keras`` format."""

    model: Literal["conv_ae"] = "conv_ae"  # strided Conv2D encoder, Dense bottleneck, mirrored decoder
    dataset: str = "digits"  # digits (sklearn, bundled, upscaled to 28x28) | mnist (Keras' mnist.npz layout)
    data_path: str | None = None  # the dataset file (mnist); default: mnist.npz in LATENTFARM_DATA_DIR
    limit: int | None = None  # train on the first N training images only (quick runs, tests)
    epochs: int = 10  # passes over the training images
    batch_size: int = 128  # images per gradient step
    z_dim: int = 16  # size of the Dense bottleneck (the latent code)
    filters: tuple[int, ...] = (32, 64, 128)  # Conv2D filters of the encoder, strides 1, 2, 2
    loss: Literal["bce", "mse"] = "bce"  # reconstruction loss: binary cross-entropy or mean squared error
    optimizer: Literal["adam", "adadelta", "rmsprop", "sgd"] = "adam"
    learning_rate: float = 1e-3  # note: Keras' adadelta default is 0.001 (the old Keras default was 1.0)
    validation_split: float = 0.1  # the last fraction of the training images, held out for val_loss
    seed: int = 0  # seeds weight initialisation and shuffling

    def validate(self) -> None:
        require(self.dataset in DATASETS, "dataset",
                f"unknown dataset {self.dataset!r}; expected one of: {', '.join(DATASETS)}")
        require(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.z_dim >= 1, "z_dim", f"must be >= 1, got {self.z_dim}")
        require(len(self.filters) == 3 and all(f >= 1 for f in self.filters), "filters",
                f"must be three positive integers, got {list(self.filters)}")
        require(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        require(0 <= self.validation_split < 1, "validation_split",
                f"must be in [0, 1), got {self.validation_split}")
        require(self.limit is None or self.limit >= 2, "limit", f"must be >= 2, got {self.limit}")


@dataclass(frozen=True)
class KindInfo:
    """What the control plane needs to know about a job kind."""

    config: type[Any]  # a frozen dataclass of the kind's parameters
    queue: Literal["gpu", "cpu"]  # the Celery queue its jobs go to unless the spec says otherwise
    uses_dataset: bool = False  # its params name a `dataset` (and maybe a `data_path`) whose identity is hashed


KINDS: dict[str, KindInfo] = {
    "noop": KindInfo(NoopConfig, "cpu"),
    "sleep": KindInfo(NoopConfig, "cpu"),
    "train": KindInfo(TrainConfig, "gpu", uses_dataset=True),
}
