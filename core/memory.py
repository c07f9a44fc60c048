"""How much memory a job will need, estimated from its params and the shape of its data, without loading either.

The control plane refuses at submit a job whose estimate exceeds the per-job budget (``LATENTFARM_JOB_MEMORY``), so
that a spec inside the validated ranges (a large ``image_size`` on a small dataset, a huge ``z_dim``, ``filters`` or
sample ``n``) is a clear error rather than a worker killed by the kernel. The figures are deliberately rough upper
bounds (float32 arrays, the copies Keras and numpy make, an optimizer's two moments, a batch's activations and their
gradients); a job that still goes over the budget at run time fails there with "out of memory".
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.models.defaults import FILTERS, Z_DIM

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what an image folder's loader reads (core.datasets)
# The params key under which the control plane hands a kind's memory hook the facts of a registered dataset (the
# ``meta`` that ``latentfarm data add`` recorded: ``data_facts``' keys), in place of the file, which the
# submitting machine need not have. Never stored with a job.
FACTS_KEY = "data_facts"
WIFI_ROWS = 2000  # rows of the UCI wireless localisation file
FLOAT = 4  # bytes of a float32
OVERHEAD = 512 << 20  # the framework, the interpreter and the job's own code, whatever the data
NN_BLOCK = 1024 * 20000 * FLOAT  # the sample scores' nearest-neighbour block (core.scores, core.sampling)


@dataclass(frozen=True)
class DataShape:
    """How many items a job's dataset has and the shape of one: (h, w, c) for images, (d,) for rows."""

    n_train: int
    n_test: int
    item: tuple[int, ...]

    @property
    def values(self) -> int:
        return (self.n_train + self.n_test) * math.prod(self.item)


# Items of the datasets whose size is known without reading them: (all items, train items or None to split).
_KNOWN = {"digits": (1797, None), "mnist": (70000, 60000), "olivetti": (400, None), "wifi": (WIFI_ROWS, None)}
_SIDE = {"digits": 28, "mnist": 28, "olivetti": 64, "images": 96}


def data_facts(path: Path) -> dict[str, Any]:
    """What ``data_shape`` reads of an .npz, as JSON: its arrays' shapes by name (``arrays``); nothing for a file
    that is not one. Recorded when a dataset is registered (with a folder's image count, ``images``, and a table's
    rows, ``rows``), so a machine without the file can estimate a job's memory."""
    shapes = _npz_headers(path)
    return {} if shapes is None else {"arrays": {name: list(shape) for name, shape in shapes.items()}}


def data_shape(params: Mapping[str, Any]) -> DataShape | None:
    """The shape of the data ``params`` (a kind's dataset params, ``data_path`` resolved) name, from what the
    file says of itself (an .npz's array headers, a folder's file count), or for a registered dataset from its
    recorded facts (``params[FACTS_KEY]``, see ``data_facts``); None when it cannot be told cheaply."""
    dataset = params.get("dataset")
    limit, test_size = params.get("limit"), float(params.get("test_size") or 0.2)
    side = int(params.get("image_size") or _SIDE.get(str(dataset), 0))
    channels = 3 if params.get("color") == "rgb" else 1
    facts: Mapping[str, Any] | None = params.get(FACTS_KEY)
    if dataset in _KNOWN:
        total, train = _KNOWN[dataset]
        if dataset == "wifi" and facts and isinstance(facts.get("rows"), int):
            total = facts["rows"]
        n_train = train if train is not None else int(total * (1 - test_size))
        n_test = total - n_train
        item: tuple[int, ...] = (7,) if dataset == "wifi" else (side, side, 1)
    elif dataset == "images" and params.get("data_path"):
        total = int(facts.get("images", 0)) if facts else _count_images(Path(params["data_path"]))
        n_train = int(total * (1 - test_size))
        n_test, item = total - n_train, (side, side, channels)
    elif dataset == "npz" and params.get("data_path"):
        shapes = _recorded_shapes(facts) if facts else _npz_headers(Path(params["data_path"]))
        found = _npz_shape(shapes, test_size) if shapes is not None else None
        if found is None:
            return None
        n_train, n_test, stored = found
        item = (side, side, stored[2]) if params.get("image_size") else stored
    else:
        return None
    if limit:
        n_train, n_test = min(n_train, int(limit)), min(n_test, int(limit))
    return DataShape(n_train, n_test, tuple(int(d) for d in item))


def _count_images(root: Path) -> int:
    count = 0
    for _dir, _subdirs, files in os.walk(root):
        count += sum(1 for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    return count


MAX_NPZ_ARRAYS = 64  # arrays whose headers are read: a dataset has a handful; an archive of thousands is no dataset


def _npz_headers(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Each array's shape, by name (without ``.npy``), from the headers of an .npz, nothing decoded; None for a
    file that is not one."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".npy")][:MAX_NPZ_ARRAYS]
            for name in names:
                with z.open(name) as f:
                    major, _ = np.lib.format.read_magic(f)  # type: ignore[no-untyped-call]
                    read = np.lib.format.read_array_header_1_0 if major == 1 else \
                        np.lib.format.read_array_header_2_0
                    shape, _, _ = read(f)  # type: ignore[no-untyped-call]
                    shapes[name[:-len(".npy")]] = tuple(int(d) for d in shape)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError):
        return None
    return shapes or None


def _recorded_shapes(facts: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    arrays = facts.get("arrays")
    if not isinstance(arrays, Mapping):
        return None
    return {str(k): tuple(int(d) for d in v) for k, v in arrays.items() if isinstance(v, (list, tuple))}


def _npz_shape(shapes: Mapping[str, tuple[int, ...]], test_size: float) -> tuple[int, int, tuple[int, int, int]] | None:
    """(train items, test items, one item's (h, w, c)) from an .npz's array shapes."""
    if "x_train" in shapes and "x_test" in shapes:
        train, test = shapes["x_train"], shapes["x_test"]
    elif "images" in shapes:
        total = shapes["images"][0] if shapes["images"] else 0
        train = shapes["images"]
        n_train = int(total * (1 - test_size))
        return n_train, total - n_train, _hwc(train)
    else:
        return None
    if not train or not test:
        return None
    return train[0], test[0], _hwc(train)


def _hwc(shape: Sequence[int]) -> tuple[int, int, int]:
    return (int(shape[1]), int(shape[2]), int(shape[3]) if len(shape) > 3 else 1) if len(shape) >= 3 else (1, 1, 1)


def _conv_ae(side: int, c: int, f: Sequence[int], z: int) -> tuple[int, int]:
    """(parameters, activations per image) of conv_ae: strides 1, 2, 2 and the mirror."""
    f1, f2, f3 = f
    small = (side // 4) ** 2
    params = 9 * (c * f1 + f1 * f2 + f2 * f3) * 2 + 2 * small * f3 * z
    acts = (side * side * f1 + (side // 2) ** 2 * f2 + small * f3) * 2 + side * side * c
    return params, acts


def _face_ae(side: int, c: int, f: Sequence[int], z: int) -> tuple[int, int]:
    """(parameters, activations per image) of face_ae: one stride-2 conv per filter count and the mirror."""
    sizes = [c, *f]
    params = sum(16 * a * b for a, b in zip(sizes, sizes[1:], strict=False)) * 2
    params += 2 * (side // 2 ** len(f)) ** 2 * f[-1] * z
    acts = sum((side // 2 ** (i + 1)) ** 2 * fi for i, fi in enumerate(f)) * 2 + side * side * c
    return params, acts


def _cnn(side: int, c: int, f: Sequence[int], classes: int = 10) -> tuple[int, int]:
    """(parameters, activations per image) of the cnn: two valid 3x3 convs, a 2x2 pool, Dense 128."""
    f1, f2 = f
    pooled = max((side - 4) // 2, 1) ** 2 * f2
    params = 9 * (c * f1 + f1 * f2) + pooled * 128 + 128 * classes
    acts = (side - 2) ** 2 * f1 + (side - 4) ** 2 * f2 + pooled + 128
    return params, acts


def model_size(params: Mapping[str, Any], shape: DataShape) -> tuple[int, int]:
    """(parameters, activations per image) of the model a train job's ``params`` build for images of ``shape``."""
    side, c = shape.item[0], shape.item[-1]
    model = params.get("model", "conv_ae")
    filters = tuple(params.get("filters") or FILTERS.get(model, ()))
    z = int(params.get("z_dim") or Z_DIM.get(model, 0))
    if model == "conv_ae" and len(filters) == 3:
        return _conv_ae(side, c, filters, z)
    if model == "face_ae" and filters:
        return _face_ae(side, c, filters, z)
    if model == "cnn" and len(filters) == 2:
        return _cnn(side, c, filters)
    f1, f2 = (filters + (16, 2))[:2]  # pool_ae
    return 9 * (c * f1 + f1 * f2) * 2, (side * side * f1 + (side // 2) ** 2 * f2) * 2 + side * side * c


def train_bytes(params: Mapping[str, Any], shape: DataShape) -> int:
    """A training run: the dataset (float32, and the copies fit makes of it), the weights with their gradients and
    an optimizer's two moments, and a batch's activations kept for the backward pass."""
    n_params, acts = model_size(params, shape)
    batch = int(params.get("batch_size") or 128)
    return OVERHEAD + shape.values * FLOAT * 3 + n_params * FLOAT * 4 + batch * acts * FLOAT * 3


def encode_bytes(shape: DataShape, trained: Mapping[str, Any]) -> int:
    """An encode run: the dataset, the model, and a batch through the encoder."""
    n_params, acts = model_size(trained, shape)
    return OVERHEAD + shape.values * FLOAT * 2 + n_params * FLOAT + 256 * acts * FLOAT


def sample_bytes(n: int, shape: DataShape, trained: Mapping[str, Any]) -> int:
    """A sample run: ``n`` decoded images and the real and reconstructed sets beside them, the scores' neighbour
    block over the training images, the dataset, and the model."""
    item = math.prod(shape.item)
    n_params, _ = model_size(trained, shape)
    return OVERHEAD + n * item * FLOAT * 6 + NN_BLOCK + shape.values * FLOAT + n_params * FLOAT


def cluster_bytes(rows: int, features: int, silhouette_sample: int) -> int:
    """A cluster run: the features as float64, KMeans' copies and distances, and the silhouette's sample matrix."""
    return OVERHEAD + rows * features * 8 * 4 + silhouette_sample ** 2 * 8


def dream_bytes(size: int) -> int:
    """A dream tile or merge: a few float arrays of the size x size image."""
    return OVERHEAD + size * size * FLOAT * 8


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
