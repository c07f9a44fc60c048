"""Load an image dataset as float32 arrays of shape (n, 28, 28, 1) in [0, 1]. No TensorFlow or Keras here.

``digits`` ships with scikit-learn (8x8 images, upscaled so the same model fits both datasets); ``mnist`` is
read from a file in Keras' ``mnist.npz`` layout whose path the caller passes in (no env vars are read here).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDE = 28  # every dataset is served at MNIST's size so one model architecture fits all of them
_MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip: a local file header, or an empty archive


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images (n, 28, 28, 1) float32 in [0, 1] with their int64 labels (n,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class DatasetError(ValueError):
    """A dataset name is unknown or its file is corrupt or not in the expected layout."""


def load_dataset(name: str, path: Path | None = None, limit: int | None = None) -> ImageDataset:
    """Load dataset ``name``; keep only the first ``limit`` training and first ``limit`` test images.

    ``path`` is the file of a file-backed dataset (mnist) and is ignored for bundled ones (digits).
    Raises DatasetError for an unknown name, a missing path, or a file that is not in the expected layout.
    """
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1, got {limit}")
    if name == "digits":
        data = _load_digits()
    elif name == "mnist":
        if path is None:
            raise DatasetError("mnist: a path to an mnist.npz file is required")
        data = _load_mnist(Path(path), limit)
    else:
        raise DatasetError(f"unknown dataset {name!r}; expected one of: digits, mnist")
    if limit is None:
        return data
    return ImageDataset(data.name, data.x_train[:limit], data.y_train[:limit], data.x_test[:limit],
                        data.y_test[:limit])


def _load_digits() -> ImageDataset:
    """sklearn's 8x8 digits, scaled from 0..16 to [0, 1], upscaled to 28x28, split 80/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = _upscale(bunch.images.astype(np.float32) / 16.0, SIDE)
    labels = bunch.target.astype(np.int64)
    # A fixed random_state and stratification make the split identical on every machine and balanced by class.
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return ImageDataset("digits", x_train, y_train, x_test, y_test)


def _upscale(images: np.ndarray, side: int) -> np.ndarray:
    """Resize each (h, w) float image to (side, side, 1) with bicubic interpolation, clipped to [0, 1]."""
    from PIL import Image

    out = np.empty((len(images), side, side, 1), dtype=np.float32)
    for i, img in enumerate(images):
        # A float32 array becomes a mode "F" image (full precision); bicubic overshoots, hence the clip.
        resized = Image.fromarray(img.astype(np.float32)).resize(
            (side, side), Image.Resampling.BICUBIC
        )
        out[i, :, :, 0] = np.asarray(resized)
    return np.clip(out, 0.0, 1.0, out=out)


def _load_mnist(path: Path, limit: int | None) -> ImageDataset:
    """Read and validate a Keras-layout mnist.npz; slice before converting so ``limit`` saves memory."""
    arrays = _read_npz(path, _MNIST_KEYS)
    for split in ("train", "test"):
        _check_split(path, split, arrays[f"x_{split}"], arrays[f"y_{split}"])

    def images(x: np.ndarray) -> np.ndarray:
        return (x[:limit].astype(np.float32) / 255.0)[..., np.newaxis]

    return ImageDataset(
        "mnist",
        images(arrays["x_train"]),
        arrays["y_train"][:limit].astype(np.int64),
        images(arrays["x_test"]),
        arrays["y_test"][:limit].astype(np.int64),
    )


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the .npz at ``path``; any failure becomes a one-line DatasetError."""
    bad = f"{path}: not an mnist.npz file"
    try:
        # Check the zip signature first: for other files np.load's error talks about pickles, which misleads.
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith(_ZIP_MAGIC):
            what = "it is a .npy array" if head == b"\x93NUMPY" else "not a zip archive"
            raise DatasetError(f"{bad}: {what}")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DatasetError(f"{bad}: missing key {missing[0]!r}")
            return {k: npz[k] for k in keys}  # decompresses; a damaged member fails here
    except DatasetError:
        raise
    # Damage inside the archive surfaces as zip/zlib/EOF errors, a bad member as ValueError, I/O as OSError.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())  # one line, for logs and the results store
        raise DatasetError(f"{bad}: {type(e).__name__}: {reason}") from e


def _check_split(path: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Raise DatasetError unless x is (n, 28, 28) uint8 and y is (n,) integers."""
    bad = f"{path}: not an mnist.npz file"
    if x.ndim != 3 or x.shape[1:] != (SIDE, SIDE):
        raise DatasetError(f"{bad}: x_{split} has shape {x.shape}, expected (n, {SIDE}, {SIDE})")
    if x.dtype != np.uint8:
        raise DatasetError(f"{bad}: x_{split} has dtype {x.dtype}, expected uint8")
    if y.shape != (len(x),):
        raise DatasetError(f"{bad}: y_{split} has shape {y.shape}, expected ({len(x)},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{bad}: y_{split} has dtype {y.dtype}, expected integers")
