"""A small per-process cache of loaded Keras models, keyed by the model file's sha256.

Jobs of one batch often read the same model (the encode and sample jobs of one autoencoder, the tiles of one
dream); loading a ``.keras`` file costs far more than running a small model once.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_MODELS = 8  # models and views of them (a dream's feature model counts as one)

_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (sha256, view) -> model
loads = 0  # how many times a model was read from disk (tests check the cache works)
_link_dir: str | None = None


def keras_path(path: Path, sha256: str) -> Path:
    """Keras loads only files named ``*.keras``; stored blobs are named by their hash: link one under that name."""
    global _link_dir
    if path.suffix == ".keras":
        return path
    if _link_dir is None:
        _link_dir = tempfile.mkdtemp(prefix="latentfarm-models-")
    link = Path(_link_dir) / f"{sha256}.keras"
    if not link.exists():
        link.symlink_to(path.resolve())
    return link


def load_model(path: Path, sha256: str, view: Callable[[Any], Any] | None = None) -> Any:
    """The Keras model stored at ``path`` (whose content has ``sha256``), loaded once per process.

    With ``view``, ``view(model)`` instead (a model derived from it, e.g. up to one layer), made once too.
    """
    global loads
    key = (sha256, "" if view is None else f"{view.__module__}.{view.__qualname__}")
    with _lock:
        model = _cache.get(key)
        if model is not None:
            _cache.move_to_end(key)
            return model
    if view is not None:
        model = view(load_model(path, sha256))
    else:
        import keras  # TensorFlow only when a job runs

        model = keras.saving.load_model(keras_path(path, sha256), compile=False)
        log.info("loaded model %s into this process's cache", sha256[:12])
    with _lock:
        if view is None:
            loads += 1
        _cache[key] = model
        while len(_cache) > MAX_MODELS:
            _cache.popitem(last=False)
    return model
