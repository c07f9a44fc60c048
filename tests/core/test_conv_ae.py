"""core.models.conv_ae and core.train: shapes, learning, early stop, determinism, NaN, test metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.datasets import Dataset
from core.kinds.train import TrainParams
from core.models.conv_ae import build_conv_ae
from core.train import TrainResult, train_model


def test_layer_shapes() -> None:
    ae = build_conv_ae(z_dim=16)
    assert ae.model.name == "conv_ae"
    assert ae.encoder.name == "encoder" and ae.decoder.name == "decoder"
    assert ae.encoder.output_shape == (None, 16)
    assert ae.decoder.input_shape == (None, 16)
    assert ae.decoder.output_shape == (None, 28, 28, 1)
    assert ae.model.output_shape == (None, 28, 28, 1)
    # Strides 1, 2, 2: 28 -> 28 -> 14 -> 7, with the configured filters.
    convs = [layer.output.shape for layer in ae.encoder.layers if layer.name.startswith("enc_conv")]
    assert [tuple(s) for s in convs] == [(None, 28, 28, 32), (None, 14, 14, 64), (None, 7, 7, 128)]
    # The autoencoder is the two halves chained, so training it trains them (shared weights).
    assert [layer.name for layer in ae.model.layers[1:]] == ["encoder", "decoder"]


def test_other_sizes() -> None:
    ae = build_conv_ae(z_dim=3, filters=(4, 8, 16), input_shape=(32, 32, 3))
    assert ae.encoder.output_shape == (None, 3)
    assert ae.decoder.output_shape == (None, 32, 32, 3)
    out = ae.model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert out.shape == (2, 32, 32, 3) and (out >= 0).all() and (out <= 1).all()  # sigmoid output


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"filters": (8, 16)}, "need 3 filters"),
    ({"input_shape": (30, 30, 1)}, "divisible by 4"),
    ({"z_dim": 0}, "positive"),
])
def test_bad_arguments(kwargs: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        build_conv_ae(**kwargs)


class Recorder:
    """An on_epoch callback that records its calls and never asks to stop."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        self.calls.append((epoch, logs))
        return False


@pytest.fixture(scope="module")
def two_epochs(digits_300: Dataset) -> tuple[TrainResult, list[tuple[int, dict[str, float]]]]:
    recorder = Recorder()
    result = train_model(TrainParams(epochs=2, limit=300), digits_300, recorder)
    return result, recorder.calls


def test_training_lowers_the_loss(two_epochs: tuple[TrainResult, list]) -> None:
    result, calls = two_epochs
    assert len(result.history) == 2
    for record in result.history:
        assert set(record) == {"loss", "val_loss", "mse", "val_mse"}
        assert all(isinstance(v, float) for v in record.values())
    assert result.history[1]["loss"] < result.history[0]["loss"]
    assert result.history[1]["val_loss"] < result.history[0]["val_loss"]
    assert not result.stopped_early
    # on_epoch saw every epoch, counted from 1, with the same numbers as the history.
    assert [epoch for epoch, _ in calls] == [1, 2]
    assert [logs for _, logs in calls] == result.history


def test_test_metrics_and_samples(two_epochs: tuple[TrainResult, list], digits_300: Dataset) -> None:
    result, _ = two_epochs
    metrics = result.test_metrics
    assert set(metrics) == {"test_loss", "test_bce", "test_mse", "dead_code_units"}
    assert 0 <= metrics["dead_code_units"] < 16  # z_dim 16: a unit or two may die, not the whole code
    assert metrics["test_loss"] == metrics["test_bce"]  # the config's loss is bce
    # The numpy metrics agree with Keras' own evaluation of the same model (float32 there, float64 here).
    keras_bce, keras_mse = result.model.evaluate(digits_300.x_test, digits_300.x_test, batch_size=256,
                                                 verbose=0)
    assert metrics["test_bce"] == pytest.approx(keras_bce, rel=1e-4)
    assert metrics["test_mse"] == pytest.approx(keras_mse, rel=1e-4)
    np.testing.assert_array_equal(result.originals, digits_300.x_test[:10])
    assert result.reconstructions.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(result.reconstructions,
                               result.model.predict(digits_300.x_test[:10], verbose=0), atol=1e-5)


def test_on_epoch_can_stop_training(digits_300: Dataset) -> None:
    seen: list[int] = []

    def stop(epoch: int, logs: dict[str, float]) -> bool:
        seen.append(epoch)
        return True

    result = train_model(TrainParams(epochs=5, filters=(8, 16, 32)), digits_300, stop)
    assert seen == [1]
    assert len(result.history) == 1
    assert result.stopped_early
    assert set(result.test_metrics) == {"test_loss", "test_bce", "test_mse", "dead_code_units"}


def test_same_seed_same_loss(digits_300: Dataset) -> None:
    config = TrainParams(epochs=1, filters=(8, 16, 32), loss="mse", validation_split=0.0)
    first = train_model(config, digits_300)
    second = train_model(config, digits_300)
    other_seed = train_model(dataclasses.replace(config, seed=1), digits_300)
    # On CPU, TensorFlow gave bit-identical losses for the same seed; 1e-5 leaves room for thread timing.
    assert first.history[0]["loss"] == pytest.approx(second.history[0]["loss"], abs=1e-5)
    assert first.history[0]["loss"] != pytest.approx(other_seed.history[0]["loss"], abs=1e-5)
    assert set(first.history[0]) == {"loss", "mse"}  # no validation split, no val_* keys
    assert first.test_metrics["test_loss"] == first.test_metrics["test_mse"]


def test_diverging_loss_raises(digits_300: Dataset) -> None:
    # SGD with an absurd learning rate blows BCE up to NaN within the first epoch.
    config = TrainParams(epochs=3, filters=(8, 16, 32), optimizer="sgd", learning_rate=1e6)
    recorder = Recorder()
    with pytest.raises(FloatingPointError, match="loss became NaN at epoch 1"):
        train_model(config, digits_300, recorder)
    assert recorder.calls == []  # the diverged epoch is not reported as a normal one


def test_nan_in_data_raises(digits_300: Dataset) -> None:
    x = digits_300.x_train.copy()
    x[5, 10, 10, 0] = np.nan
    data = dataclasses.replace(digits_300, x_train=x)
    with pytest.raises(FloatingPointError, match="loss became NaN at epoch 1"):
        train_model(TrainParams(epochs=2, filters=(8, 16, 32)), data)
