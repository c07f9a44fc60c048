"""Train a model from a ``TrainParams`` and a ``Dataset``: any autoencoder, or the cnn classifier; report epoch
logs and test metrics.

No I/O here: the caller saves ``result.model`` (one ``.keras`` file; ``split_autoencoder`` gets an
autoencoder's halves back from it) and stores the metrics. ``on_epoch`` is how a worker reports progress and
how a cancelled job stops between epochs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from core.backend import train_options
from core.datasets import Dataset
from core.kinds.train import TrainParams
from core.latent import dead_units
from core.models.build import build_model
from core.models.common import Autoencoder, split_autoencoder
from core.models.defaults import AUTOENCODERS, LEARNING_RATE

__all__ = ["TrainResult", "classification_metrics", "reconstruction_metrics", "train_model"]

EpochCallback = Callable[[int, dict[str, float]], bool]
CheckpointCallback = Callable[[int, Any], None]  # (epochs done, the model): save it to resume from
SpeedCallback = Callable[[int, float], None]  # (epoch, its training images per second)
N_SAMPLES = 10  # test images returned with their reconstructions for the comparison grid
DEAD_UNITS_IMAGES = 2000  # test images whose codes show the dead code units (``core.latent.dead_units``)
_EPS = 1e-7  # the clipping Keras' cross-entropies use, so the numpy test metrics match what the loss would say

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

    model: Any  # the trained keras.Model: the whole autoencoder, or the cnn
    encoder: Any | None  # an autoencoder's halves (sharing weights with model); None for the cnn
    decoder: Any | None
    history: list[dict[str, float]]  # per completed epoch: loss, mse (autoencoders) or accuracy (cnn), + val_*
    # autoencoders: test_loss, test_bce, test_mse, dead_code_units (of the test codes); cnn: test_loss, test_accuracy
    test_metrics: dict[str, float]
    originals: np.ndarray | None  # autoencoders: the first N_SAMPLES test images; cnn: None
    reconstructions: np.ndarray | None  # their reconstructions
    stopped_early: bool  # True when on_epoch asked to stop
    images_per_second: list[float] = field(default_factory=list)  # per completed epoch, as ``on_speed`` is told


class _EpochReporter(keras.callbacks.Callback):
    """Records each epoch's logs as floats, forwards them to ``on_epoch``, and stops on a NaN/inf loss.

    The loss is checked once per epoch, not per batch: a batch hook would make Keras wait for every step's
    loss (no async dispatch), slowing GPU training; a diverged run wastes at most one epoch.
    """

    def __init__(self, on_epoch: EpochCallback | None, checkpoint: CheckpointCallback | None = None,
                 on_speed: SpeedCallback | None = None, images: int = 0) -> None:
        super().__init__()
        self.on_epoch = on_epoch
        self.checkpoint = checkpoint
        self.on_speed = on_speed
        self.images = images  # training images per epoch (the validation split's excluded)
        self.started = 0.0
        self.history: list[dict[str, float]] = []
        self.images_per_second: list[float] = []
        self.stopped_early = False
        self.bad_loss: tuple[int, float] | None = None  # (epoch counted from 1, the loss) once it diverged

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        record = {k: float(v) for k, v in (logs or {}).items()}  # its values are ready: the epoch's steps ran
        speed = self.images / max(time.perf_counter() - self.started, 1e-9)
        loss = record.get("loss", math.nan)
        if not math.isfinite(loss):
            # Not reported to on_epoch: train_model raises instead, once fit() has returned.
            self.bad_loss = (epoch + 1, loss)
            self.model.stop_training = True
            return
        self.history.append(record)
        self.images_per_second.append(speed)
        if self.on_speed is not None:
            self.on_speed(epoch + 1, speed)
        if self.checkpoint is not None:
            self.checkpoint(epoch + 1, self.model)
        if self.on_epoch is not None and self.on_epoch(epoch + 1, dict(record)):
            self.stopped_early = True
            self.model.stop_training = True


def train_model(config: TrainParams, data: Dataset, on_epoch: EpochCallback | None = None,
                checkpoint: CheckpointCallback | None = None, resume: tuple[Any, int] | None = None,
                on_speed: SpeedCallback | None = None) -> TrainResult:
    """Build, compile and fit ``config.model`` on ``data``'s training images; evaluate on its test images.

    Autoencoders learn to reconstruct their input with ``config.loss``; the cnn learns the labels with
    cross-entropy. ``on_epoch(epoch, logs)`` is called after every epoch (epoch counts from 1, logs are
    floats); returning True stops training after that epoch. ``checkpoint(epoch, model)`` is called after every
    epoch, before ``on_epoch``, to save the model (a ``.keras`` file keeps the optimizer's state too).
    ``resume=(path, epochs_done)`` continues from such a file: training runs the remaining epochs only, and
    ``history`` holds those. ``on_speed(epoch, images_per_second)`` is called after every epoch, before the
    other two: the epoch's training images over its wall time (its validation included). Raises
    FloatingPointError if the loss becomes NaN or infinite, ValueError if the data does not fit the model.
    """
    autoencoder = config.model in AUTOENCODERS
    if len(data.x_train) == 0 or len(data.x_test) == 0:
        raise ValueError(f"dataset {data.name!r} needs training and test images, got "
                         f"{len(data.x_train)} and {len(data.x_test)}")
    if data.x_train.ndim != 4:
        raise ValueError(f"model {config.model} needs images (n, h, w, c); dataset {data.name!r} has items of "
                         f"shape {data.x_train.shape[1:]}")
    n_classes = None if autoencoder else int(max(data.y_train.max(), data.y_test.max())) + 1
    # Seeds Python, numpy and the backend, so weight init, dropout and shuffling repeat for the same seed.
    keras.utils.set_random_seed(config.seed)
    initial_epoch = 0
    built: Any
    if resume is not None:
        path, initial_epoch = resume
        model = keras.saving.load_model(path)  # compiled, with the optimizer's state
        built = Autoencoder(model, *split_autoencoder(model)) if autoencoder else None
        keras.utils.set_random_seed(config.seed + initial_epoch)  # the remaining epochs shuffle afresh
    else:
        built = build_model(config, data.x_train.shape[1:], n_classes)
        model = built.model
        model.compile(
            optimizer=_OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate or LEARNING_RATE),
            loss=_LOSSES[config.loss] if autoencoder else "sparse_categorical_crossentropy",
            metrics=["mse"] if autoencoder else ["accuracy"],
            **train_options(),
        )
    fitted = len(data.x_train)  # the images an epoch trains on: Keras keeps the last validation_split apart
    if config.validation_split:
        fitted = math.floor(fitted * (1.0 - config.validation_split))
    reporter = _EpochReporter(on_epoch, checkpoint, on_speed, fitted)
    model.fit(
        data.x_train,
        data.x_train if autoencoder else data.y_train,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
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
    if not isinstance(built, Autoencoder):
        return TrainResult(model, None, None, reporter.history, classification_metrics(data.y_test, preds),
                           None, None, reporter.stopped_early, reporter.images_per_second)
    return TrainResult(
        model=model,
        encoder=built.encoder,
        decoder=built.decoder,
        history=reporter.history,
        test_metrics={**reconstruction_metrics(data.x_test, preds, config.loss),
                      "dead_code_units": float(dead_units(built.encoder.predict(
                          data.x_test[:DEAD_UNITS_IMAGES], batch_size=256, verbose=0)))},
        originals=data.x_test[:N_SAMPLES].copy(),
        reconstructions=np.asarray(preds[:N_SAMPLES], dtype=np.float32),
        stopped_early=reporter.stopped_early,
        images_per_second=reporter.images_per_second,
    )



def reconstruction_metrics(x: np.ndarray, preds: np.ndarray, loss: str) -> dict[str, float]:
    """Mean BCE and MSE of ``preds`` against ``x`` in float64; ``test_loss`` is the one named by ``loss``."""
    x64 = np.asarray(x, dtype=np.float64)
    p64 = np.clip(np.asarray(preds, dtype=np.float64), _EPS, 1.0 - _EPS)
    bce = float(np.mean(-(x64 * np.log(p64) + (1.0 - x64) * np.log(1.0 - p64))))
    mse = float(np.mean((x64 - np.asarray(preds, dtype=np.float64)) ** 2))
    return {"test_loss": bce if loss == "bce" else mse, "test_bce": bce, "test_mse": mse}


def classification_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy (``test_loss``) and accuracy of class probabilities ``probs`` (n, k) for labels ``y``."""
    p64 = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0 - _EPS)
    labels = np.asarray(y, dtype=np.int64)
    cross_entropy = float(np.mean(-np.log(p64[np.arange(len(labels)), labels])))
    accuracy = float(np.mean(np.argmax(p64, axis=1) == labels))
    return {"test_loss": cross_entropy, "test_accuracy": accuracy}
