"""core.memory: the shape of a dataset told without loading it, and estimates that grow with what makes a job big."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.memory import DataShape, data_shape, model_size, sample_bytes, train_bytes


def test_shapes_of_the_known_datasets_and_of_an_npz_header(tmp_path: Path) -> None:
    assert data_shape({"dataset": "mnist"}) == DataShape(60000, 10000, (28, 28, 1))
    assert data_shape({"dataset": "mnist", "limit": 600, "image_size": 56}) == DataShape(600, 600, (56, 56, 1))
    assert data_shape({"dataset": "digits", "test_size": 0.5}).n_train == 898  # type: ignore[union-attr]
    assert data_shape({"dataset": "olivetti"}).item == (64, 64, 1)  # type: ignore[union-attr]
    np.savez(tmp_path / "x.npz", x_train=np.zeros((30, 20, 24, 3), np.uint8), y_train=np.zeros(30, np.int64),
             x_test=np.zeros((5, 20, 24, 3), np.uint8), y_test=np.zeros(5, np.int64))
    assert data_shape({"dataset": "npz", "data_path": str(tmp_path / "x.npz")}) == DataShape(30, 5, (20, 24, 3))
    (tmp_path / "bad.npz").write_bytes(b"no zip")
    assert data_shape({"dataset": "npz", "data_path": str(tmp_path / "bad.npz")}) is None


def test_an_image_folder_is_counted_not_read(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(b"not even an image: only the names count")
    shape = data_shape({"dataset": "images", "data_path": str(tmp_path), "color": "rgb", "test_size": 0.2})
    assert shape == DataShape(8, 2, (96, 96, 3))


@pytest.mark.parametrize("bigger", [{"image_size": 112}, {"z_dim": 4096}, {"filters": [64, 128, 256]},
                                    {"batch_size": 1024}])
def test_a_train_estimate_grows_with_what_makes_a_job_big(bigger: dict) -> None:
    base = {"dataset": "digits", "model": "conv_ae", "z_dim": 16, "filters": [32, 64, 128], "batch_size": 128}
    params = {**base, **bigger}
    assert train_bytes(params, data_shape(params)) > train_bytes(base, data_shape(base))  # type: ignore[arg-type]


def test_model_size_counts_the_dense_layers_of_a_large_code() -> None:
    shape = DataShape(1, 1, (28, 28, 1))
    small, _ = model_size({"model": "conv_ae", "z_dim": 16}, shape)
    large, _ = model_size({"model": "conv_ae", "z_dim": 16000}, shape)
    assert large - small == 2 * 7 * 7 * 128 * (16000 - 16)  # the encoder's Dense and the decoder's


def test_sample_estimate_grows_with_n() -> None:
    shape, trained = DataShape(1000, 200, (28, 28, 1)), {"model": "conv_ae"}
    assert sample_bytes(10**7, shape, trained) - sample_bytes(10**6, shape, trained) == 9 * 10**6 * 784 * 4 * 6
