"""core.datasets: shapes, ranges, determinism, limits, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.datasets import load_dataset
from core.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _check_images(x: np.ndarray, n: int) -> None:
    assert x.shape == (n, 28, 28, 1)
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_digits_shapes_range_and_stratified_split() -> None:
    data = load_dataset("digits")
    assert data.name == "digits"
    _check_images(data.x_train, 1437)
    _check_images(data.x_test, 360)
    assert data.y_train.dtype == np.int64 and data.y_train.shape == (1437,)
    assert data.y_test.dtype == np.int64 and data.y_test.shape == (360,)
    # Strokes reach full intensity and the left edge is background, so the 0..16 -> [0, 1] scaling is right.
    assert data.x_train.max() == pytest.approx(1.0, abs=0.02)
    assert data.x_train[:, :, 0].mean() < 0.01
    assert 0.2 < data.x_train.mean() < 0.4
    # Stratified: every class is in both splits in about the same proportion (20% +- one image).
    train_counts = np.bincount(data.y_train, minlength=10)
    test_counts = np.bincount(data.y_test, minlength=10)
    assert (test_counts > 0).all()
    frac = test_counts / (train_counts + test_counts)
    assert np.all(np.abs(frac - 0.2) < 0.02)


def test_digits_upscaling_keeps_the_image() -> None:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # The same stratified split over indices tells which 8x8 original each training image came from.
    train_idx, _ = train_test_split(np.arange(len(bunch.target)), test_size=0.2, stratify=bunch.target,
                                    random_state=0)
    data = load_dataset("digits")
    np.testing.assert_array_equal(data.y_train, bunch.target[train_idx])
    for i in range(20):
        original = bunch.images[train_idx[i]] / 16.0
        back = np.asarray(Image.fromarray(data.x_train[i, :, :, 0]).resize((8, 8), Image.Resampling.BOX))
        # Shrinking the 28x28 image back to 8x8 gives (nearly) the original digit.
        assert np.abs(back - original).mean() < 0.08
        assert np.corrcoef(back.ravel(), original.ravel())[0, 1] > 0.95


def test_digits_split_is_deterministic() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_digits_limit_keeps_the_first_images() -> None:
    full = load_dataset("digits")
    small = load_dataset("digits", limit=50)
    _check_images(small.x_train, 50)
    _check_images(small.x_test, 50)
    np.testing.assert_array_equal(small.x_train, full.x_train[:50])
    np.testing.assert_array_equal(small.y_test, full.y_test[:50])


def test_mnist_with_limit(mnist_path: Path) -> None:
    data = load_dataset("mnist", mnist_path, limit=100)
    assert data.name == "mnist"
    _check_images(data.x_train, 100)
    _check_images(data.x_test, 100)
    assert data.y_train.dtype == np.int64 and set(np.unique(data.y_train)) <= set(range(10))
    with np.load(mnist_path) as raw:
        np.testing.assert_allclose(data.x_train[..., 0], raw["x_train"][:100] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(data.y_test, raw["y_test"][:100])
    assert data.x_train.max() == 1.0


def test_mnist_needs_a_path() -> None:
    with pytest.raises(DataError, match="path"):
        load_dataset("mnist")


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def _assert_clear_error(exc: pytest.ExceptionInfo[DataError], path: Path, text: str) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}: not an mnist.npz file")
    assert text in message
    assert "\n" not in message


def _small_npz(tmp_path: Path) -> Path:
    """A valid mnist.npz-layout file with 50 random training images."""
    path = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8),
                        y_train=np.zeros(50, np.uint8), x_test=np.zeros((5, 28, 28), np.uint8),
                        y_test=np.zeros(5, np.uint8))
    return path


def test_small_valid_file(tmp_path: Path) -> None:
    data = load_dataset("mnist", _small_npz(tmp_path))
    _check_images(data.x_train, 50)
    _check_images(data.x_test, 5)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"this is not a numpy archive\n" * 50)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "not a zip archive")


def test_truncated_archive(tmp_path: Path) -> None:
    good = _small_npz(tmp_path)
    path = tmp_path / "truncated.npz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "BadZipFile")
    assert isinstance(exc.value.__cause__, zipfile.BadZipFile)  # the original error is chained, not lost


def test_damaged_member(tmp_path: Path) -> None:
    data = bytearray(_small_npz(tmp_path).read_bytes())
    data[200:400] = bytes(200)  # inside the compressed x_train member
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "x_train")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "FileNotFoundError")


def test_npz_missing_a_key(tmp_path: Path) -> None:
    path = tmp_path / "partial.npz"
    np.savez(path, y_train=np.zeros(3, np.uint8), x_test=np.zeros((3, 28, 28), np.uint8),
             y_test=np.zeros(3, np.uint8))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "missing key 'x_train'")


@pytest.mark.parametrize(
    ("x_train", "y_train", "text"),
    [
        (np.zeros((3, 32, 32), np.uint8), np.zeros(3, np.uint8), "x_train has shape (3, 32, 32)"),
        (np.zeros((3, 28, 28), np.float32), np.zeros(3, np.uint8), "x_train has dtype float32"),
        (np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8), "y_train has shape (4,)"),
    ],
)
def test_npz_with_wrong_layout(tmp_path: Path, x_train: np.ndarray, y_train: np.ndarray, text: str) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.zeros(2, np.uint8))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, text)


def test_npy_instead_of_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", path)
    _assert_clear_error(exc, path, "it is a .npy array")


def test_light_modules_do_not_import_tensorflow() -> None:
    # A fresh interpreter: this test process may already have imported Keras for other tests.
    code = ("import core.datasets, core.images, core.kinds, sys; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('tensorflow', 'keras'))][:5]")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
