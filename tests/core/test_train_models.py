"""core.train.train_model with every model on tiny slices: history and metric keys, the cnn's metrics, config
defaults, data checks, and the save -> load_model -> split_autoencoder round trip a later job relies on."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from core.datasets import Dataset, load_dataset
from core.kinds.train import TrainParams
from core.models.common import split_autoencoder
from core.train import TrainResult, train_model

AE_KEYS = {"loss", "val_loss", "mse", "val_mse"}
CNN_KEYS = {"loss", "val_loss", "accuracy", "val_accuracy"}


@pytest.fixture(scope="module")
def faces(request: pytest.FixtureRequest) -> Dataset:
    shared = Path(request.config.rootpath).parent / "shared" / "data"
    return load_dataset("olivetti", shared / "olivetti_faces.npz", limit=40)


@pytest.fixture(scope="module")
def trained(digits_300: Dataset, faces: Dataset) -> dict[str, TrainResult]:
    """One epoch of each model: face_ae on 40 Olivetti faces, the others on 300 digits."""
    return {
        "conv_ae": train_model(TrainParams(model="conv_ae", epochs=1, filters=(8, 16, 32)), digits_300),
        "pool_ae": train_model(TrainParams(model="pool_ae", epochs=1), digits_300),
        "face_ae": train_model(TrainParams(model="face_ae", epochs=1, batch_size=8, z_dim=32,
                                           filters=(8, 16, 32, 64)), faces),
        "cnn": train_model(TrainParams(model="cnn", epochs=1, batch_size=32), digits_300),
    }


@pytest.mark.parametrize("model", ["conv_ae", "pool_ae", "face_ae"])
def test_autoencoder_results(trained: dict[str, TrainResult], model: str, digits_300: Dataset,
                             faces: Dataset) -> None:
    result = trained[model]
    data = faces if model == "face_ae" else digits_300
    assert result.model.name == model and not result.stopped_early
    assert result.encoder.name == "encoder" and result.decoder.name == "decoder"
    assert len(result.history) == 1 and set(result.history[0]) == AE_KEYS
    assert set(result.test_metrics) == {"test_loss", "test_bce", "test_mse", "dead_code_units"}
    assert 0 <= result.test_metrics["dead_code_units"] <= np.prod(result.encoder.output_shape[1:])  # of the units
    assert all(np.isfinite(v) for v in result.test_metrics.values())
    np.testing.assert_array_equal(result.originals, data.x_test[:10])
    assert result.reconstructions.shape == result.originals.shape
    assert result.reconstructions.dtype == np.float32


def test_cnn_results(trained: dict[str, TrainResult], digits_300: Dataset) -> None:
    result = trained["cnn"]
    assert result.model.name == "cnn"
    assert result.encoder is None and result.decoder is None
    assert result.originals is None and result.reconstructions is None
    assert len(result.history) == 1 and set(result.history[0]) == CNN_KEYS
    assert set(result.test_metrics) == {"test_loss", "test_accuracy"}
    # The numpy metrics agree with Keras' own evaluation (cross-entropy in float32 there).
    keras_loss, keras_accuracy = result.model.evaluate(digits_300.x_test, digits_300.y_test, verbose=0)
    assert result.test_metrics["test_loss"] == pytest.approx(keras_loss, rel=1e-4)
    assert result.test_metrics["test_accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert result.test_metrics["test_accuracy"] > 0.3  # one epoch on 270 digits (0.45 seen): well above chance (0.1)
    assert result.model.output_shape == (None, 10)  # classes counted from the labels


@pytest.mark.parametrize("model", ["conv_ae", "pool_ae", "face_ae"])
def test_saved_model_splits_into_working_halves(trained: dict[str, TrainResult], model: str, tmp_path: Path,
                                                digits_300: Dataset, faces: Dataset) -> None:
    result = trained[model]
    x = (faces if model == "face_ae" else digits_300).x_test[:8]
    path = tmp_path / "model.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path, compile=False)  # how a later job reads it back
    encoder, decoder = split_autoencoder(loaded)
    codes = encoder.predict(x, verbose=0)
    np.testing.assert_allclose(codes, result.encoder.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(decoder.predict(codes, verbose=0), result.decoder.predict(codes, verbose=0),
                               atol=1e-5)
    np.testing.assert_allclose(decoder.predict(codes, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)


def test_saved_cnn_keeps_its_named_layers(trained: dict[str, TrainResult], tmp_path: Path) -> None:
    path = tmp_path / "cnn.keras"
    trained["cnn"].model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.get_layer("features").output.shape == (None, 24, 24, 64)
    assert loaded.get_layer("penultimate").output.shape == (None, 128)
    with pytest.raises(ValueError, match="not an autoencoder"):
        split_autoencoder(loaded)


def test_config_defaults_reach_the_model(digits_300: Dataset) -> None:
    small = Dataset("digits", digits_300.x_train[:64], digits_300.y_train[:64], digits_300.x_test[:16],
                    digits_300.y_test[:16])
    result = train_model(TrainParams(epochs=1, filters=(4, 8, 8), validation_split=0.0), small)
    assert result.encoder.output_shape == (None, 16)  # z_dim None: conv_ae's default
    assert float(result.model.optimizer.learning_rate) == pytest.approx(1e-3)  # learning_rate None: 1e-3
    result = train_model(TrainParams(epochs=1, z_dim=3, filters=(4, 8, 8), learning_rate=0.01,
                                           optimizer="rmsprop", validation_split=0.0), small)
    assert result.encoder.output_shape == (None, 3)
    assert float(result.model.optimizer.learning_rate) == pytest.approx(0.01)
    assert isinstance(result.model.optimizer, keras.optimizers.RMSprop)


def test_tabular_data_is_refused(shared_data: Path) -> None:
    wifi = load_dataset("wifi", shared_data / "wifi_localization.txt", limit=20)
    with pytest.raises(ValueError, match=r"needs images \(n, h, w, c\); dataset 'wifi' has items of shape"):
        train_model(TrainParams(model="cnn", epochs=1), wifi)


def test_cnn_needs_two_classes(digits_300: Dataset) -> None:
    one_class = Dataset("x", digits_300.x_train[:20], np.zeros(20, np.int64), digits_300.x_test[:5],
                        np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_model(TrainParams(model="cnn", epochs=1), one_class)
