"""core.backend on this process's Keras backend (TensorFlow here; JAX in the child run of test_jax_backend.py): the
backend is the one asked for, the dream's compiled gradient is the true gradient, a short training learns, and a
JAX process holds no TensorFlow."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from core import backend
from core.datasets import Dataset
from core.kinds.train import TrainParams
from core.train import train_model

EXPECTED = os.environ.get("LATENTFARM_BACKEND") or "tensorflow"
# Where a parent test (test_jax_backend.py) wants this run's training losses, to compare backends.
LOSSES_REPORT = "LATENTFARM_TEST_LOSSES"


def test_keras_runs_on_the_backend_asked_for() -> None:
    assert keras.backend.backend() == EXPECTED == backend.current()
    assert backend.on_accelerator() is False  # the tests run on the CPU
    assert backend.train_options() == {}  # one step per execution on the CPU


def _tanh_conv(seed: int = 0) -> keras.Model:
    """(8, 8, 1) -> 3x3 conv, 3 maps, tanh: small enough for finite differences at every pixel."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(inputs))


def test_map_gradient_is_the_gradient_of_the_map_mean() -> None:
    model = _tanh_conv()
    x = np.random.default_rng(0).standard_normal((1, 8, 8, 1)).astype(np.float32)
    for index in (0, 2):
        grad, value = backend.map_gradient(model, x, index)
        out = np.asarray(model(x, training=False), dtype=np.float64)
        assert value == pytest.approx(out[..., index].mean(), abs=1e-6)
        assert grad.shape == x.shape and grad.dtype == np.float32
        # central differences in float64 through the float32 model: its round-off bounds the tolerance
        h, numeric = 1e-2, np.zeros(x.shape)
        for i in np.ndindex(x.shape):
            step = np.zeros(x.shape, np.float32)
            step[i] = h
            up = np.asarray(model(x + step, training=False), np.float64)[..., index].mean()
            down = np.asarray(model(x - step, training=False), np.float64)[..., index].mean()
            numeric[i] = (up - down) / (2 * h)
        assert np.allclose(grad, numeric, rtol=1e-2, atol=1e-5), np.abs(grad - numeric).max()
        assert np.abs(numeric).max() > 1e-3  # not a vacuous comparison of two zeros
    first, _ = backend.map_gradient(model, x, 0)
    other, _ = backend.map_gradient(model, x, 1)
    assert not np.allclose(first, other)  # the map index is an argument of the one compiled function
    assert len([m for m in backend._compiled if m is model]) == 1


def test_a_map_the_input_does_not_reach_has_a_zero_gradient() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    dead = keras.layers.Conv2D(2, 1, kernel_initializer="zeros", bias_initializer="ones")(inputs)  # constant maps
    grad, value = backend.map_gradient(keras.Model(inputs, dead), np.ones((1, 4, 4, 1), np.float32), 1)
    assert value == pytest.approx(1.0) and not grad.any()


def short_training(digits: Dataset) -> tuple[dict[str, list[float]], keras.Model]:
    """Three epochs of pool_ae and of a small cnn on 300 digits: their losses, test loss and test accuracy; the cnn."""
    ae = train_model(TrainParams(model="pool_ae", epochs=3, batch_size=32), digits)
    cnn = train_model(TrainParams(model="cnn", epochs=3, batch_size=32, filters=(8, 16)), digits)
    losses = {"pool_ae": [h["loss"] for h in ae.history], "cnn": [h["loss"] for h in cnn.history],
              "pool_ae_test_loss": [ae.test_metrics["test_loss"]],
              "cnn_test_accuracy": [cnn.test_metrics["test_accuracy"]]}
    return losses, cnn.model


def test_a_short_training_learns(digits_300: Dataset) -> None:
    """The losses fall. In a child run of test_jax_backend.py they go to the parent, to be compared with the other
    backend's, with the cnn (a .keras file) and its probabilities for the first test images, which the parent's
    backend must reproduce from the file."""
    losses, cnn = short_training(digits_300)
    assert losses["pool_ae"][-1] < losses["pool_ae"][0] and losses["cnn"][-1] < losses["cnn"][0]
    assert losses["cnn_test_accuracy"][0] > 0.3  # ten classes: chance is 0.1
    if os.environ.get(LOSSES_REPORT):
        report = Path(os.environ[LOSSES_REPORT])
        cnn.save(report.with_suffix(".keras"))
        probabilities = np.asarray(cnn.predict(digits_300.x_test[:8], verbose=0)).tolist()
        report.write_text(json.dumps({"backend": keras.backend.backend(), **losses,
                                      "cnn_probabilities": probabilities}))


def test_a_jax_process_holds_no_tensorflow() -> None:
    """Run last in the JAX child, after models were trained, saved and loaded: TensorFlow was never imported there."""
    assert ("tensorflow" in sys.modules) == (EXPECTED == "tensorflow")
