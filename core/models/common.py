"""What every model builder returns, and the helpers that take a saved autoencoder apart again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np


@dataclass
class Autoencoder:
    """The trainable autoencoder and its two halves, which share weights with it.

    ``model`` chains two nested sub-models named "encoder" and "decoder", so a saved ``.keras`` file of
    ``model`` alone is enough to get both halves back (``split_autoencoder``).
    """

    model: keras.Model  # image -> reconstruction; what is compiled, trained and saved
    encoder: keras.Model  # image -> code (a vector, or pool_ae's (h/4, w/4, 2) maps)
    decoder: keras.Model  # code -> image


@dataclass
class Classifier:
    """A trained classifier; ``model`` outputs class probabilities."""

    model: keras.Model


def image_shape(input_shape: Sequence[int], multiple: int) -> tuple[int, int, int]:
    """``input_shape`` as (height, width, channels), checking the sides halve cleanly ``log2(multiple)`` times
    (the decoder doubles them back, so anything else would not come back to the input size)."""
    if len(input_shape) != 3 or min(int(d) for d in input_shape) < 1:
        raise ValueError(f"need a (height, width, channels) input_shape, got {tuple(input_shape)}")
    height, width, channels = (int(d) for d in input_shape)
    if height % multiple or width % multiple:
        raise ValueError(f"input height and width must be divisible by {multiple}, got {height}x{width}")
    return height, width, channels


def split_autoencoder(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The (encoder, decoder) sub-models of an autoencoder, e.g. one read back with keras.saving.load_model.

    Raises ValueError if ``model`` has no sub-models named "encoder" and "decoder" (a cnn, say).
    """
    halves = []
    for name in ("encoder", "decoder"):
        layer = next((layer for layer in model.layers if layer.name == name), None)
        if not isinstance(layer, keras.Model):
            raise ValueError(f"model {model.name!r} is not an autoencoder: it has no {name!r} sub-model")
        halves.append(layer)
    return halves[0], halves[1]


def encode(encoder: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Latent vectors (n, d) float32: the encoder's output flattened (pool_ae's 7x7x2 maps become 98 numbers),
    so samplers and clustering always see vectors."""
    codes = encoder.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(codes, dtype=np.float32).reshape(len(x), -1)


def decode(decoder: keras.Model, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Images from latent vectors (n, d), reshaped to whatever code shape the decoder takes."""
    code_shape = tuple(decoder.input_shape[1:])
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != int(np.prod(code_shape)):
        raise ValueError(f"decoder takes codes of shape {code_shape} ({int(np.prod(code_shape))} numbers), "
                         f"got an array of shape {z.shape}")
    return np.asarray(decoder.predict(z.reshape((len(z),) + code_shape), batch_size=batch_size, verbose=0))
