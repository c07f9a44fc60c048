"""Carving deep dream: raise one CNN feature map on a large image through a 28x28 classifier, tile by tile.

One iteration, for level L = 0..levels: cut the image into 2^L x 2^L disjoint tiles (level 0: the whole
image); each tile is downscaled to 28x28, its input is pushed up the gradient of the mean activation of one
map of the CNN's "features" layer (``oip``), upscaled back, and the detail the down/up-scaling lost from the
*original* tile (``correction``) is added again (``process_tile``). ``merge`` writes a level's tiles back and
standardizes the whole image once, and that image feeds the next level (and the last level's, the next
iteration). Finer levels carve smaller detail into what the coarser ones shaped.

Standardization points, on purpose: the input (``prepare_image``) and each level's merged image, never a
single tile, since per-tile standardization would leave visible seams between tiles of different contrast.

Farm shape: ``process_tile`` is one job (a tile in, a tile and its gain out) and ``merge`` one job per level,
so a farmed run makes the same float operations as ``run_dream`` and gives the same images. Keras is imported
inside the functions that need it: importing this module never imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.backend import map_gradient
from core.data_files import check_image_file
from core.errors import ConfigError
from core.models.defaults import FEATURES

__all__ = ["BASE", "MAX_LEVELS", "DreamConfig", "DreamResult", "check_geometry", "correction", "dream_level",
           "features_model", "load_image", "merge", "oip", "prepare_image", "process_tile", "resize", "run_dream",
           "standardize", "tiles", "to_png_array"]

BASE = 28  # the CNN's input side: every tile is seen at 28x28
MAX_LEVELS = 5  # level 5 cuts the image into 32x32 = 1024 tiles (a job each on a farm)
MAX_SIZE = 8192  # the largest working side (a float32 image of 256 MiB)
_GRAD_EPS = 1e-8  # keeps the gradient normalisation finite when the gradient is (nearly) zero
_STD_EPS = 1e-12  # below this an image is flat; standardizing it gives zeros, not NaN
_GREY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, what Pillow's convert("L") uses

MapSpec = int | Sequence[int]


def check_geometry(level: int, size: int, level_field: str = "levels") -> None:
    """Raise ConfigError unless ``level`` is from 0 to MAX_LEVELS and a ``size`` x ``size`` image cuts into
    2^level x 2^level tiles of at least BASE pixels that downscale to BASE evenly (and every coarser level too)."""
    if not 0 <= level <= MAX_LEVELS:
        raise ConfigError(level_field, f"must be from 0 to {MAX_LEVELS}, got {level}")
    multiple = BASE * 2 ** level
    if size < multiple or size % multiple or size > MAX_SIZE:
        raise ConfigError("size", f"must be a multiple of {multiple} (= {BASE} * 2**{level_field}, to tile every "
                          f"level) up to {MAX_SIZE}, got {size}")


@dataclass(frozen=True)
class DreamConfig:
    """How to dream. Per-level values are a single value for all levels or a dict level -> value.

    ``maps``: a feature map index, or per level an index or a list of indices (one per tile, cycling over the
    tiles in ``tiles`` order). ``threshold``: OIP stops once one step raises the activation by less than this;
    the default 0.0 stops on the first step that does not raise it (and undoes that step).
    """

    levels: int = 2
    iterations: int = 1
    size: int | None = None  # working side; None -> BASE * 2**levels * 5 (560 for 2 levels)
    maps: int | Mapping[int, MapSpec] = 0
    epochs: int | Mapping[int, int] = 20
    epsilon: float | Mapping[int, float] = 0.05
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.size is None:  # frozen: the default depends on levels, so set it the one allowed way
            object.__setattr__(self, "size", BASE * 2 ** int(self.levels) * 5)

    @property
    def side(self) -> int:
        """The working side as an int (``size`` is never None after construction)."""
        return int(self.size or 0)

    def validate(self, n_maps: int | None = None) -> DreamConfig:
        """Return self, or raise ConfigError (a ValueError) naming the bad field; ``n_maps`` (the features
        layer's depth) also bounds the map indices."""
        check_geometry(self.levels, self.side)
        if self.iterations < 1:
            raise ConfigError("iterations", f"must be >= 1, got {self.iterations}")
        for name, value in (("maps", self.maps), ("epochs", self.epochs), ("epsilon", self.epsilon)):
            extra = sorted(k for k in value if k > self.levels) if isinstance(value, Mapping) else []
            if extra:
                raise ConfigError(name, f"gives a value for level {extra[0]}, but levels is {self.levels}")
        for level in range(self.levels + 1):
            if self.epochs_for(level) < 0:
                raise ConfigError("epochs", f"must be >= 0 (level {level}), got {self.epochs_for(level)}")
            if not self.epsilon_for(level) > 0:
                raise ConfigError("epsilon", f"must be > 0 (level {level}), got {self.epsilon_for(level)}")
            for index in _as_list(_per_level(self.maps, level, "maps")):
                if index < 0 or (n_maps is not None and index >= n_maps):
                    bound = f"0 to {n_maps - 1}: the features layer has {n_maps} maps" if n_maps else ">= 0"
                    raise ConfigError("maps", f"index {index} at level {level} is out of range (must be {bound})")
        return self

    def map_for(self, level: int, tile_index: int) -> int:
        """The feature map tile ``tile_index`` (``tiles`` order) of ``level`` maximises."""
        choices = _as_list(_per_level(self.maps, level, "maps"))
        return choices[tile_index % len(choices)]

    def epochs_for(self, level: int) -> int:
        return int(_per_level(self.epochs, level, "epochs"))

    def epsilon_for(self, level: int) -> float:
        return float(_per_level(self.epsilon, level, "epsilon"))


def _per_level(value: Any, level: int, name: str) -> Any:
    if isinstance(value, Mapping):
        if level not in value:
            raise ConfigError(name, f"gives no value for level {level}")
        return value[level]
    return value


def _as_list(spec: MapSpec) -> list[int]:
    choices = [int(spec)] if isinstance(spec, (int, np.integer)) else [int(m) for m in spec]
    if not choices:
        raise ConfigError("maps", "an empty list of maps")
    return choices


@dataclass
class DreamResult:
    """``iterations``: the image after each iteration (standardized float32); ``final`` is the last;
    ``gains``: per iteration, {"level_L": [activation gain per tile, in ``tiles`` order]}."""

    iterations: list[np.ndarray]
    final: np.ndarray
    gains: list[dict[str, list[float]]]


def standardize(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std as float32 (statistics in float64); a flat image gives zeros."""
    x64 = np.asarray(x, dtype=np.float64)
    std = x64.std()
    if std < _STD_EPS:
        return np.zeros(x64.shape, dtype=np.float32)
    return ((x64 - x64.mean()) / std).astype(np.float32)


def resize(x: np.ndarray, side: int) -> np.ndarray:
    """A 2-D float image resized to side x side, bicubic (Pillow antialiases when reducing), float32."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(x, dtype=np.float32))  # 2-D float32 -> mode "F"
    return np.asarray(image.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)


def correction(x: np.ndarray, side: int = BASE) -> np.ndarray:
    """The detail a down- then up-scaling through side x side loses: x - resize(resize(x, side), len(x))."""
    x = np.asarray(x, dtype=np.float32)
    return x - resize(resize(x, side), x.shape[0])


def prepare_image(img: np.ndarray, size: int) -> np.ndarray:
    """An (h, w) or (h, w, c) uint8 or float image -> grey, centre-cropped square, size x size, standardized."""
    img = np.asarray(img)
    if img.ndim == 3:
        grey = img[..., 0] if img.shape[-1] < 3 else img[..., :3].astype(np.float64) @ _GREY  # alpha ignored
    elif img.ndim == 2:
        grey = img
    else:
        raise ValueError(f"expected an (h, w) or (h, w, c) image, got shape {img.shape}")
    h, w = grey.shape
    side = min(h, w)
    if side < 1 or size < 1:
        raise ValueError(f"cannot make a {size}x{size} image out of shape {img.shape}")
    top, left = (h - side) // 2, (w - side) // 2
    square = grey[top:top + side, left:left + side].astype(np.float32)
    return standardize(resize(square, size))


def load_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as the dream's input: grey, centre-cropped, size x size, standardized (``prepare_image``)."""
    from PIL import Image

    check_image_file(path)
    with Image.open(path) as img:
        # Pillow's own luma conversion in 8 bits would round; convert to RGB and weigh in float instead.
        pixels = np.asarray(img.convert("RGB") if img.mode not in ("L", "I", "F", "I;16") else img)
    return prepare_image(pixels, size)


def tiles(level: int, size: int) -> list[tuple[int, int, int]]:
    """The 2^level x 2^level disjoint tiles of a size x size image as (row0, col0, side), row-major."""
    n = 2 ** level
    if level < 0 or size % n or size // n < 1:
        raise ValueError(f"size {size} does not split into {n}x{n} tiles")
    side = size // n
    return [(r * side, c * side, side) for r in range(n) for c in range(n)]


def features_model(cnn: Any) -> Any:
    """A keras.Model from the cnn's input to its "features" layer (a Classifier or its keras.Model)."""
    import keras

    model = getattr(cnn, "model", cnn)
    # The single input tensor, not the list: called with one array, a list-input model warns on every call.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.get_layer(FEATURES).output, name="dream_features")


def _n_maps(model: Any) -> int:
    return int(model.output.shape[-1])


def oip(model: Any, x28: np.ndarray, map_index: int, epochs: int, epsilon: float,
        threshold: float, on_step: Callable[[], None] | None = None) -> tuple[np.ndarray, float]:
    """Gradient ascent on a 28x28 input to raise the mean activation of map ``map_index`` of ``model``.

    Each step: g = grad / (std(grad) + 1e-8); x += epsilon * g. Normalising makes epsilon a step size in
    input std units whatever the activation scale. A step that raised the activation by less than
    ``threshold`` ends the ascent and is undone (it overshot or stalled). Returns (new x28, activation gain).
    ``on_step()`` is called before each step (a worker's check: it raises to stop a cancelled job).
    """
    if not 0 <= map_index < _n_maps(model):
        raise ValueError(f"map index {map_index} out of range: the features layer has {_n_maps(model)} maps")
    x = np.asarray(x28, dtype=np.float32)[None, :, :, None]
    grad, start = map_gradient(model, x, map_index)
    value = start
    for _ in range(epochs):
        if on_step is not None:
            on_step()
        step = (epsilon * grad / (grad.std() + _GRAD_EPS)).astype(np.float32)
        new_grad, new_value = map_gradient(model, x + step, map_index)
        if new_value - value < threshold:
            break  # keep x as it was before this step
        x, grad, value = x + step, new_grad, new_value
    return x[0, :, :, 0], value - start


def process_tile(model: Any, tile: np.ndarray, map_index: int, epochs: int, epsilon: float,
                 threshold: float, on_step: Callable[[], None] | None = None) -> tuple[np.ndarray, float]:
    """One tile job: downscale to 28x28 -> ``oip`` -> upscale -> + the tile's own ``correction``.

    Not standardized: that happens once per level in ``merge``. Returns (new tile float32, activation gain).
    """
    tile = np.asarray(tile, dtype=np.float32)
    if tile.ndim != 2 or tile.shape[0] != tile.shape[1]:
        raise ValueError(f"a tile must be a square 2-D array, got shape {tile.shape}")
    small = resize(tile, BASE)
    dreamed, gain = oip(model, small, map_index, epochs, epsilon, threshold, on_step)
    lost = tile - resize(small, tile.shape[0])  # == correction(tile), reusing the downscale already made
    return resize(dreamed, tile.shape[0]) + lost, gain


def merge(image: np.ndarray, parts: Sequence[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """One level's merge job: a copy of ``image`` with each (row0, col0, tile) written in, then standardized.

    The whole image is standardized once after all tiles are in (see the module docstring), so a level's
    tiles must be merged in one call. ``image`` itself is not modified.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    for row0, col0, tile in parts:
        h, w = np.shape(tile)
        if row0 < 0 or col0 < 0 or row0 + h > out.shape[0] or col0 + w > out.shape[1]:
            raise ValueError(f"tile at ({row0}, {col0}) of shape {(h, w)} does not fit in {out.shape}")
        out[row0:row0 + h, col0:col0 + w] = tile
    return standardize(out)


def dream_level(model: Any, image: np.ndarray, level: int,
                config: DreamConfig) -> tuple[np.ndarray, list[float]]:
    """Every tile of ``level`` through ``process_tile`` (all cut from the same input image), then ``merge``."""
    parts, gains = [], []
    for index, (row0, col0, side) in enumerate(tiles(level, image.shape[0])):
        new_tile, gain = process_tile(model, image[row0:row0 + side, col0:col0 + side],
                                      config.map_for(level, index), config.epochs_for(level),
                                      config.epsilon_for(level), config.threshold)
        parts.append((row0, col0, new_tile))
        gains.append(gain)
    return merge(image, parts), gains


def run_dream(model: Any, image: np.ndarray, config: DreamConfig) -> DreamResult:
    """The whole dream in this process: ``config.iterations`` times levels 0..levels via ``dream_level``.

    ``model`` is a ``features_model``; ``image`` a size x size array (e.g. from ``prepare_image``).
    """
    config.validate(_n_maps(model))
    image = np.asarray(image, dtype=np.float32)
    if image.shape != (config.side, config.side):
        raise ValueError(f"image shape {image.shape} is not the working size ({config.side}, {config.side})")
    snapshots, all_gains = [], []
    for _ in range(config.iterations):
        gains: dict[str, list[float]] = {}
        for level in range(config.levels + 1):
            image, gains[f"level_{level}"] = dream_level(model, image, level, config)
        snapshots.append(image)
        all_gains.append(gains)
    return DreamResult(iterations=snapshots, final=snapshots[-1], gains=all_gains)


def to_png_array(x: np.ndarray, clip: float = 0.98) -> np.ndarray:
    """uint8 for a PNG: values outside the central ``clip`` fraction (0.98: the 1% / 99% quantiles) are
    clipped, so a few extreme pixels do not wash the contrast out, and the rest spans 0..255."""
    if not 0 < clip <= 1:
        raise ValueError(f"clip must be in (0, 1], got {clip}")
    x = np.asarray(x, dtype=np.float64)
    tail = (1.0 - clip) / 2
    lo, hi = np.quantile(x, [tail, 1.0 - tail])
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.rint((np.clip(x, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
