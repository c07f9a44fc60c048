"""Load a dataset as numpy arrays: images (n, h, w, c) float32 in [0, 1] or tabular rows (n, d) float32, with
int64 labels. No TensorFlow or Keras here (the control plane and CPU workers import this module).

``digits`` ships with scikit-learn; every other dataset is read from a file (a folder for ``images``) whose
path the caller passes in: no env vars are read here. Datasets without a split of their own are split
stratified by label with ``test_size`` and ``seed``, so a split repeats on every machine.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.data_files import DATASETS, check_pixels, resolve_data_file
from core.errors import DataError

if TYPE_CHECKING:
    from core.kinds.data import DataParams

SIDE = 28  # digits and mnist default to MNIST's size, so one architecture fits both
FOLDER_SIDE = 96  # the default side of images read from a folder
WIFI_COLUMNS, WIFI_ROOMS = 8, 4  # seven signal strengths, then the room (1..4)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip: a local file header, or an empty archive


@dataclass(frozen=True)
class Dataset:
    """Train and test items with int64 labels (n,): images (n, h, w, c) float32 in [0, 1], or tabular rows
    (n, d) float32 (wifi: the raw signal strengths)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_dataset(name: str, path: Path | None = None, limit: int | None = None, image_size: int | None = None,
                 color: str = "grey", test_size: float = 0.2, seed: int = 0) -> Dataset:
    """Load dataset ``name``, keeping only the first ``limit`` training and first ``limit`` test items.

    ``path``: the dataset's file (its folder for ``images``); ignored for digits. ``image_size``: resize
    images to this square (default: digits and mnist 28, olivetti 64, folders 96, npz as stored). ``color``
    (grey | rgb) applies to image folders. ``test_size``, ``seed``: split datasets that ship without a split.
    Raises DataError (one line, naming the file) for an unknown name, a missing path or a bad file.
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if color not in ("grey", "rgb"):
        raise DataError(f"color must be 'grey' or 'rgb', got {color!r}")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    if name == "digits":
        data = _load_digits(image_size or SIDE, test_size, seed)
    elif path is None:
        raise DataError(f"{name}: a path to its {'folder' if name == 'images' else 'file'} is required")
    elif name == "mnist":
        data = _load_mnist(Path(path), limit, image_size or SIDE)
    elif name == "npz":
        data = _load_npz(Path(path), limit, image_size, test_size, seed)
    elif name == "olivetti":
        data = _load_olivetti(Path(path), image_size, test_size, seed)
    elif name == "wifi":
        data = _load_wifi(Path(path), test_size, seed)
    else:
        data = _load_image_folder(Path(path), limit, image_size or FOLDER_SIDE, color, test_size, seed)
    return Dataset(data.name, data.x_train[:limit], data.y_train[:limit], data.x_test[:limit], data.y_test[:limit])


def load_for(params: DataParams, data_dir: Path | None = None) -> Dataset:
    """Load the dataset a job's parameters name. The file is ``params.data_path`` if set; otherwise, given a
    ``data_dir`` (the worker's data directory), the dataset's usual file name in it (see ``core.data_files``).

    The split seed is always 0, never a train job's ``seed``: encode, sample and cluster jobs see only the
    DataParams, and must get the same test split the model was trained without.
    """
    if params.dataset is None:
        raise DataError("no dataset named in the parameters")
    path = Path(params.data_path) if params.data_path else None
    if data_dir is not None:
        path = resolve_data_file(params.dataset, params.data_path, data_dir)
    return load_dataset(params.dataset, path, params.limit, params.image_size, params.color, params.test_size)


def _split(name: str, x: np.ndarray, y: np.ndarray, test_size: float, seed: int) -> Dataset:
    """A stratified train/test split; unstratified when some class is too small to appear in both parts."""
    from sklearn.model_selection import train_test_split

    if len(x) < 2:
        raise DataError(f"{name}: need at least 2 items to split, got {len(x)}")
    try:
        parts = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    except ValueError:  # a class with one member, or fewer test items than classes
        parts = train_test_split(x, y, test_size=test_size, random_state=seed)
    x_train, x_test, y_train, y_test = parts
    return Dataset(name, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))


def _load_digits(side: int, test_size: float, seed: int) -> Dataset:
    """sklearn's 8x8 digits, scaled from 0..16 to [0, 1] and upscaled (bicubic) to ``side`` x ``side``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _resize(bunch.images.astype(np.float32)[..., np.newaxis] / 16.0, side, bicubic=True)
    return _split("digits", images, bunch.target.astype(np.int64), test_size, seed)


def _resize(images: np.ndarray, side: int, bicubic: bool = False) -> np.ndarray:
    """(n, h, w, c) float images in [0, 1] -> (n, side, side, c), clipped back to [0, 1] (both filters
    overshoot at edges). Lanczos by default, as for image folders; digits keep their historical bicubic."""
    if images.shape[1:3] == (side, side):
        return images
    from PIL import Image

    method = Image.Resampling.BICUBIC if bicubic else Image.Resampling.LANCZOS
    out = np.empty((len(images), side, side, images.shape[3]), dtype=np.float32)
    for i, img in enumerate(images):
        for c in range(images.shape[3]):  # mode "F" (float32, full precision) holds one channel
            plane = Image.fromarray(np.ascontiguousarray(img[:, :, c], dtype=np.float32))
            out[i, :, :, c] = np.asarray(plane.resize((side, side), method))
    return np.clip(out, 0.0, 1.0, out=out)


def _read_npz(path: Path, what: str, layouts: tuple[tuple[str, ...], ...]) -> dict[str, np.ndarray]:
    """The arrays of the first of ``layouts`` (tuples of keys) the .npz holds; any failure is a one-line
    DataError starting with "<path>: not <what>"."""
    bad = f"{path}: not {what}"
    try:
        # Check the zip signature first: for other files np.load's error talks about pickles, which misleads.
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith(_ZIP_MAGIC):
            what = "it is a .npy array" if head == b"\x93NUMPY" else "not a zip archive"
            raise DataError(f"{bad}: {what}")
        with np.load(path, allow_pickle=False) as npz:
            for keys in layouts:
                if all(k in npz.files for k in keys):
                    return {k: npz[k] for k in keys}  # decompresses; a damaged member fails here
            missing = next(k for k in layouts[0] if k not in npz.files)
            alternatives = " or ".join("(" + ", ".join(keys) + ")" for keys in layouts[1:])
            raise DataError(f"{bad}: missing key {missing!r}" + (f"; nor has it {alternatives}"
                                                                     if alternatives else ""))
    except DataError:
        raise
    # Damage inside the archive surfaces as zip/zlib/EOF errors, a bad member as ValueError, I/O as OSError.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise DataError(f"{bad}: {type(e).__name__}: {' '.join(str(e).split())}") from e


def _check_images(bad: str, key: str, x: np.ndarray, shape: tuple[int, int] | None = None) -> None:
    """Raise DataError unless x is (n, h, w) or (n, h, w, 1|3) uint8, or float in [0, 1]."""
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise DataError(f"{bad}: {key} has shape {x.shape}, expected (n, h, w) or (n, h, w, 1|3)")
    if shape is not None and x.shape[1:3] != shape:
        raise DataError(f"{bad}: {key} has shape {x.shape}, expected (n, {shape[0]}, {shape[1]})")
    if x.dtype == np.uint8:
        return
    if shape is not None or not np.issubdtype(x.dtype, np.floating):  # mnist and olivetti are uint8
        raise DataError(f"{bad}: {key} has dtype {x.dtype}, expected uint8" + ("" if shape else " or float"))
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise DataError(f"{bad}: {key} has float values outside [0, 1] (or NaN)")


def _check_labels(bad: str, key: str, y: np.ndarray, n: int) -> None:
    if y.shape != (n,):
        raise DataError(f"{bad}: {key} has shape {y.shape}, expected ({n},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{bad}: {key} has dtype {y.dtype}, expected integers")
    if n and y.min() < 0:
        raise DataError(f"{bad}: {key} has negative labels")


def _as_images(x: np.ndarray, side: int | None) -> np.ndarray:
    """uint8 or [0, 1] float (n, h, w[, c]) -> float32 (n, h, w, c) in [0, 1], resized to ``side`` if given."""
    images = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    return images if side is None else _resize(images, side)


def _keras_layout(bad: str, name: str, arrays: dict[str, np.ndarray], limit: int | None,
                  side: int | None, shape: tuple[int, int] | None = None) -> Dataset:
    """Check and convert Keras-layout arrays; slices before converting, so ``limit`` saves memory and time."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_images(bad, f"x_{split}", x, shape)
        _check_labels(bad, f"y_{split}", y, len(x))
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{bad}: x_train and x_test differ in image shape")
    return Dataset(name, _as_images(arrays["x_train"][:limit], side), arrays["y_train"][:limit].astype(np.int64),
                   _as_images(arrays["x_test"][:limit], side), arrays["y_test"][:limit].astype(np.int64))


def _load_mnist(path: Path, limit: int | None, side: int) -> Dataset:
    """Keras' mnist.npz: 28x28 uint8 images with their own train/test split."""
    arrays = _read_npz(path, "an mnist.npz file", (_KERAS_KEYS,))
    return _keras_layout(f"{path}: not an mnist.npz file", "mnist", arrays, limit, side, (SIDE, SIDE))


def _load_npz(path: Path, limit: int | None, side: int | None, test_size: float, seed: int) -> Dataset:
    """Keras layout (x_train, y_train, x_test, y_test), or (images, target), which is split here."""
    bad = f"{path}: not an image .npz file"
    arrays = _read_npz(path, "an image .npz file", (_KERAS_KEYS, ("images", "target")))
    if "x_train" in arrays:
        return _keras_layout(bad, "npz", arrays, limit, side)
    _check_images(bad, "images", arrays["images"])
    _check_labels(bad, "target", arrays["target"], len(arrays["images"]))
    return _split("npz", _as_images(arrays["images"], side), arrays["target"], test_size, seed)


def _load_olivetti(path: Path, side: int | None, test_size: float, seed: int) -> Dataset:
    """The 400 Olivetti faces (40 subjects x 10), scaled like sklearn's fetch_olivetti_faces (minus the
    minimum, over the maximum, of the whole set), split stratified by subject."""
    bad = f"{path}: not an olivetti_faces.npz file"
    arrays = _read_npz(path, "an olivetti_faces.npz file", (("images", "target"),))
    images, target = arrays["images"], arrays["target"]
    _check_images(bad, "images", images, (64, 64))
    _check_labels(bad, "target", target, len(images))
    x = images.astype(np.float32).reshape(images.shape[:3] + (-1,))  # (n, 64, 64) -> (n, 64, 64, 1)
    x -= x.min()
    x /= max(float(x.max()), 1e-12)  # an all-black file stays black instead of dividing by zero
    return _split("olivetti", x if side is None else _resize(x, side), target, test_size, seed)


def _load_wifi(path: Path, test_size: float, seed: int) -> Dataset:
    """UCI wireless indoor localisation: rows of 7 signal strengths and the room (1..4); y is room - 1."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the wifi file: {e.strerror or type(e).__name__}") from e
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # a trailing newline or blank separator line is not a bad row
        fields = line.split()
        not_int = next((k for k, f in enumerate(fields, start=1) if not f.lstrip("+-").isdigit()), None)
        row = [] if not_int else [int(f) for f in fields]
        if len(row) != WIFI_COLUMNS or not 1 <= row[-1] <= WIFI_ROOMS:  # the line itself is not quoted: a
            # file named by mistake (or by malice) must not end up in a job's error
            what = (f"field {not_int} not an integer" if not_int else f"{len(fields)} fields"
                    if len(row) != WIFI_COLUMNS else f"room {row[-1]}")
            raise DataError(f"{path}: line {number}: expected {WIFI_COLUMNS} tab-separated integers ending "
                            f"with a room 1..{WIFI_ROOMS}, got {what}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows in the wifi file")
    table = np.asarray(rows, dtype=np.int64)
    return _split("wifi", table[:, :-1].astype(np.float32), table[:, -1] - 1, test_size, seed)


def _load_image_folder(root: Path, limit: int | None, side: int, color: str, test_size: float,
                       seed: int) -> Dataset:
    """jpg/jpeg/png files under ``root`` (recursively; hidden files and folders skipped), labelled by their
    first-level subfolder (sorted names -> 0..k-1), or all 0 when every image lies directly in ``root``.
    The split is made on file names first, so ``limit`` decodes only the images it keeps."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no {', '.join(IMAGE_SUFFIXES)} images in the folder")
    nested = [len(p.relative_to(root).parts) > 1 for p in files]
    if any(nested) and not all(nested):
        loose = files[nested.index(False)]
        raise DataError(f"{loose}: an image directly in {root} while others are in class subfolders")
    classes = sorted({p.relative_to(root).parts[0] for p in files}) if all(nested) else []
    labels = np.asarray([classes.index(p.relative_to(root).parts[0]) if classes else 0 for p in files], np.int64)
    names = _split("images", np.asarray([str(p) for p in files]), labels, test_size, seed)
    mode = "L" if color == "grey" else "RGB"

    def read(paths: np.ndarray) -> np.ndarray:
        return np.stack([_read_image(Path(p), mode, side) for p in paths[:limit]]).astype(np.float32) / 255.0

    return Dataset("images", read(names.x_train), names.y_train[:limit], read(names.x_test), names.y_test[:limit])


def _read_image(path: Path, mode: str, side: int) -> np.ndarray:
    """One image as uint8 (side, side, 1|3): upright per EXIF, converted to ``mode``, centre-cropped to a
    square, resized with Lanczos."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as raw:
            check_pixels(raw.size, path)  # from the header, before a byte of it is decoded
            img = ImageOps.exif_transpose(raw).convert(mode)  # decodes the pixels: truncation fails here
        w, h = img.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        img = img.resize((side, side), Image.Resampling.LANCZOS, box=box)  # the crop and resize in one step
    # Pillow reports damage variously: OSError (incl. UnidentifiedImageError), SyntaxError and ValueError
    # from its parsers, DecompressionBombError for absurd sizes.
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image: {type(e).__name__}: {' '.join(str(e).split())}") from e
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
