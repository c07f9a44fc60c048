"""Train an autoencoder from a ``TrainConfig`` and an ``ImageDataset``; report epoch logs and test metrics.

No I/O here: the caller saves the model and stores metrics. ``on_epoch`` is how a worker reports progress and
how a cancelled job stops between epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from core.config import TrainConfig
from core.datasets import ImageDataset
from core.models.conv_ae import build_conv_ae

EpochCallback = Callable[[int, dict[str, float]], bool]
N_SAMPLES = 10  # test images returned with their reconstructions for the comparison grid
_EPS = 1e-7  # same clipping as Keras' binary cross-entropy, so test_bce matches what the loss would say

_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adadelta": keras.optimizers.Adadelta,
    "rmsprop": keras.optimizers.RMSprop,
    "sgd": keras.optimizers.SGD,
}
_LOSSES = {"bce": "binary_crossentropy", "mse": "mean_squared_error"}


@dataclass
class TrainResult:
    """What one training run produced."""

    model: Any  # the trained keras autoencoder (keras.Model)
    history: list[dict[str, float]]  # one dict per completed epoch: loss, mse (+ val_loss, val_mse if split)
    test_metrics: dict[str, float]  # test_loss, test_bce, test_mse on the test split
    originals: np.ndarray  # the first N_SAMPLES test images
    reconstructions: np.ndarray  # their reconstructions
    stopped_early: bool  # True when on_epoch asked to stop


class _EpochReporter(keras.callbacks.Callback):
    """Records each epoch's logs as floats, forwards them to ``on_epoch``, and stops on a NaN/inf loss.

    The loss is checked once per epoch, not per batch: a batch hook would make Keras wait for every step's
    loss (no async dispatch), slowing GPU training; a diverged run wastes at most one epoch.
    """

    def __init__(self, on_epoch: EpochCallback | None) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self.stopped_early = False
        self.bad_loss: tuple[int, float] | None = None  # (epoch counted from 1, the loss) once it diverged

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        record = {k: float(v) for k, v in (logs or {}).items()}
        loss = record.get("loss", math.nan)
        if not math.isfinite(loss):
            # Not reported to on_epoch: train_autoencoder raises instead, once fit() has returned.
            self.bad_loss = (epoch + 1, loss)
            self.model.stop_training = True
            return
        self.history.append(record)
        if self.on_epoch is not None and self.on_epoch(epoch + 1, dict(record)):
            self.stopped_early = True
            self.model.stop_training = True


def train_autoencoder(
    config: TrainConfig, data: ImageDataset, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Build, compile and fit the configured autoencoder on ``data.x_train``; evaluate on ``data.x_test``.

    ``on_epoch(epoch, logs)`` is called after every epoch (epoch counts from 1, logs are floats); returning
    True stops training after that epoch. Raises FloatingPointError if the loss becomes NaN or infinite.
    """
    if len(data.x_train) == 0 or len(data.x_test) == 0:
        raise ValueError(f"dataset {data.name!r} needs training and test images, got "
                         f"{len(data.x_train)} and {len(data.x_test)}")
    # Seeds Python, numpy and the backend, so weight init and the shuffling order repeat for the same seed.
    keras.utils.set_random_seed(config.seed)
    model = build_conv_ae(config.z_dim, config.filters, data.x_train.shape[1:]).autoencoder
    model.compile(
        optimizer=_OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate),
        loss=_LOSSES[config.loss],
        metrics=["mse"],
    )
    reporter = _EpochReporter(on_epoch)
    model.fit(
        data.x_train,
        data.x_train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        shuffle=True,
        verbose=0,
        callbacks=[reporter],
    )
    if reporter.bad_loss is not None:
        epoch, loss = reporter.bad_loss
        kind = "NaN" if math.isnan(loss) else "infinite"
        raise FloatingPointError(f"loss became {kind} at epoch {epoch}")

    preds = model.predict(data.x_test, batch_size=256, verbose=0)
    test_metrics = reconstruction_metrics(data.x_test, preds, config.loss)
    return TrainResult(
        model=model,
        history=reporter.history,
        test_metrics=test_metrics,
        originals=data.x_test[:N_SAMPLES].copy(),
        reconstructions=np.asarray(preds[:N_SAMPLES], dtype=np.float32),
        stopped_early=reporter.stopped_early,
    )


def reconstruction_metrics(x: np.ndarray, preds: np.ndarray, loss: str) -> dict[str, float]:
    """Mean BCE and MSE of ``preds`` against ``x`` in float64; ``test_loss`` is the one named by ``loss``."""
    x64 = np.asarray(x, dtype=np.float64)
    p64 = np.clip(np.asarray(preds, dtype=np.float64), _EPS, 1.0 - _EPS)
    bce = float(np.mean(-(x64 * np.log(p64) + (1.0 - x64) * np.log(1.0 - p64))))
    mse = float(np.mean((x64 - np.asarray(preds, dtype=np.float64)) ** 2))
    return {"test_loss": bce if loss == "bce" else mse, "test_bce": bce, "test_mse": mse}
