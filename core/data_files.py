"""The datasets by name, where a dataset's file is and what identifies its content, and whether an input image can
be read. Path logic, hashing and Pillow: no numpy, no TensorFlow (the control plane checks specs with it).

The identity (name + file sha256) goes into a job's fingerprint, so a job is rerun when its data changes.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from core.errors import DataError

IMAGE_DATASETS = ("digits", "mnist", "olivetti", "npz", "images")
DATASETS = IMAGE_DATASETS + ("wifi",)  # wifi: tabular rows (for cluster)
# The file each file-backed dataset is looked up as in the data directory.
DATA_FILES = {"mnist": "mnist.npz", "olivetti": "olivetti_faces.npz", "wifi": "wifi_localization.txt"}
FOLDER_DATASETS = ("images",)  # datasets whose data_path is a directory of files
PATH_REQUIRED = ("npz", "images")  # datasets with no usual file name: data_path names it
# A registered dataset (``latentfarm data add``) as a job's params name it, in place of a path: its name and the
# sha256 it was fingerprinted with, e.g. ``dataset:mnist@06af5d...``. A worker reads that version from the artifact
# store, whatever the registry holds by then.
REGISTERED_PREFIX = "dataset:"
_REGISTERED_RE = re.compile(r"dataset:(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})@(?P<sha>[0-9a-f]{64})")
# The largest image (width x height) a job decodes: 40 megapixels (a 7300 x 5500 photo) take 120 MB as RGB and five
# times that as the float arrays a dream makes of them; a few hundred bytes of PNG can claim far more.
MAX_IMAGE_PIXELS = 40_000_000


def registered_ref(name: str, sha256: str) -> str:
    """How a job's params name the registered dataset ``name`` at version ``sha256``."""
    return f"{REGISTERED_PREFIX}{name}@{sha256}"


def parse_registered(value: object) -> tuple[str, str] | None:
    """(name, sha256) of a registered dataset's reference (``registered_ref``); None for anything else (a path)."""
    if not isinstance(value, str) or not value.startswith(REGISTERED_PREFIX):
        return None
    match = _REGISTERED_RE.fullmatch(value)
    return (match["name"], match["sha"]) if match else None


def within_roots(given: str, base_dir: Path, roots: tuple[Path, ...]) -> Path:
    """The absolute path of a file a spec names (``given``; relative: from ``base_dir``, the spec's folder), if it
    lies inside one of ``roots`` (the data directory; the spec's folder for a spec read from a file).

    Inside means: below a root once ``..`` is resolved (a symlink placed in a root is the administrator's and
    trusted), or below a root's real path once every symlink is resolved (a root may be a symlink). Anything else
    is a DataError that says nothing of whether the file exists: a spec cannot probe the machine's files.
    """
    path = Path(os.path.normpath(base_dir / given))  # absolute given: base_dir / given is given
    real = Path(os.path.realpath(path))
    for root in roots:
        if path.is_relative_to(os.path.normpath(root)) or real.is_relative_to(os.path.realpath(root)):
            return path
    raise DataError(f"{given}: outside the data roots (LATENTFARM_DATA_DIR, and the spec's folder for a spec "
                    "submitted from a file): files elsewhere cannot be read")


def resolve_data_file(dataset: str, data_path: str | None, data_dir: str | os.PathLike[str]) -> Path | None:
    """The file backing ``dataset``: ``data_path`` if given, else its usual name in ``data_dir``.

    Returns None for datasets that ship with a package (digits). Raises DataError if the file
    cannot be read.
    """
    if data_path is None:
        if dataset not in DATA_FILES:
            return None
        path = Path(data_dir) / DATA_FILES[dataset]
    else:
        path = Path(data_path)
    if dataset in FOLDER_DATASETS:
        if path.is_file():
            raise DataError(f"{dataset} data_path must be a folder of images, not a file: {path}")
        if not path.is_dir():
            raise DataError(f"{dataset} folder not found: {path}")
        return path.resolve()
    if not path.is_file():
        raise DataError(f"{dataset} data file not found: {path}")
    if not os.access(path, os.R_OK):
        raise DataError(f"{dataset} data file is not readable: {path}")
    return path.resolve()


def input_sha256(value: str) -> str:
    """sha256 of an input file a job names (a dream's image): a registered dataset's own, else the file's."""
    registered = parse_registered(value)
    return registered[1] if registered is not None else file_sha256(value)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, cached by (path, size, mtime) so a sweep hashes each file once."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digest(path: Path) -> str:
    """sha256 over a folder's files' relative names, sizes and modification times (not their bytes: an image
    folder can hold hundreds of thousands of files; a file replaced in place still changes its mtime)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dataset_identity(dataset: str, path: Path | None) -> str:
    """``name:sha256`` for a file-backed dataset, ``name:bundled`` for one that ships with a package; a registered
    one (``path`` its reference) by its registered sha256: the same as a local copy of the same file, so the cache
    holds across machines and across a local and a registered copy (a folder by its archive's sha256)."""
    if path is None:
        return f"{dataset}:bundled"
    registered = parse_registered(str(path))
    if registered is not None:
        return f"{dataset}:archive:{registered[1]}" if dataset in FOLDER_DATASETS else f"{dataset}:{registered[1]}"
    if path.is_dir():
        return f"{dataset}:folder:{folder_digest(path)}"
    return f"{dataset}:{file_sha256(path)}"


def table_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(rows, columns) of a text table of whitespace-separated integers (the WiFi file), every row checked; a
    DataError naming the first bad line (never quoting it: the file may be anything) for any other file."""
    rows, columns = 0, 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue  # a blank line, or the trailing newline
                if not all(x.lstrip("+-").isdigit() for x in fields) or (columns and len(fields) != columns):
                    raise DataError(f"{path}: line {number}: expected {columns or 'whitespace-separated'} integers")
                rows, columns = rows + 1, len(fields)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read it: {e.strerror or type(e).__name__}") from e
    if not rows:
        raise DataError(f"{path}: no rows in the table")
    return rows, columns


def check_image_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of a readable image file (a dream's input), or DataError saying why it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            check_pixels(img.size, path)  # from the header, before a byte of it is decoded
            img.load()  # decode now: a truncated file fails here, not in a job
            return img.size
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except IsADirectoryError as e:
        raise DataError(f"image is a directory, not a file: {path}") from e
    except PermissionError as e:
        raise DataError(f"image is not readable: {path}") from e
    except UnidentifiedImageError as e:
        raise DataError(f"not an image Pillow can read (jpg, png...): {path}") from e
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # Pillow's ways to say "corrupt"
        raise DataError(f"cannot decode image {path}: {' '.join(str(e).split()) or type(e).__name__}") from e


def check_pixels(size: tuple[int, int], path: str | os.PathLike[str]) -> None:
    """DataError if an image of ``size`` (width, height) is over MAX_IMAGE_PIXELS."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"image {path} is {width} x {height} pixels: over the {MAX_IMAGE_PIXELS // 10**6} "
                        "megapixels a job decodes")
