"""An autoencoder for face images (Olivetti 64x64, image folders at 96x96), grey or RGB: strided convs down
to (h/16, w/16), a Dense bottleneck, and the mirror image back up."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from core.models.common import Autoencoder, image_shape
from core.models.defaults import FILTERS, Z_DIM


def build_face_ae(z_dim: int | None = None, filters: Sequence[int] | None = None,
                  input_shape: Sequence[int] = (64, 64, 1)) -> Autoencoder:
    """Encoder: one stride-2 Conv2D + LeakyReLU per filter count, Flatten, Dense(z_dim). Decoder: Dense,
    Reshape, the Conv2DTranspose mirror (stride 2, filters reversed), a sigmoid Conv2D to the channels.

    Sides must be divisible by 2 ** len(filters) (16 by default: 64 -> 4, 96 -> 6).
    """
    z_dim = Z_DIM["face_ae"] if z_dim is None else int(z_dim)
    filters = tuple(int(f) for f in (filters or FILTERS["face_ae"]))
    if z_dim < 1 or min(filters) < 1:
        raise ValueError(f"z_dim and filters must be positive, got z_dim={z_dim}, filters={list(filters)}")
    height, width, channels = image_shape(input_shape, 2 ** len(filters))
    small_h, small_w = height // 2 ** len(filters), width // 2 ** len(filters)

    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    # 4x4 kernels with stride 2 (here and in the decoder) cover every output pixel equally often, which
    # avoids the checkerboard pattern 3x3 transposed convolutions leave in smooth regions like skin.
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 4, strides=2, padding="same", name=f"enc_conv{i}")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"enc_act{i}")(x)
    x = layers.Flatten(name="enc_flatten")(x)
    latent = layers.Dense(z_dim, name="latent")(x)
    encoder = keras.Model(inputs, latent, name="encoder")

    code = keras.Input((z_dim,), name="code")
    y = layers.Dense(small_h * small_w * filters[-1], name="dec_dense")(code)
    y = layers.Reshape((small_h, small_w, filters[-1]), name="dec_reshape")(y)
    y = layers.LeakyReLU(negative_slope=0.2, name="dec_act0")(y)
    for i, f in enumerate(reversed(filters), start=1):
        y = layers.Conv2DTranspose(f, 4, strides=2, padding="same", name=f"dec_deconv{i}")(y)
        y = layers.LeakyReLU(negative_slope=0.2, name=f"dec_act{i}")(y)
    outputs = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="dec_output")(y)
    decoder = keras.Model(code, outputs, name="decoder")

    model = keras.Model(inputs, decoder(encoder(inputs)), name="face_ae")
    assert tuple(encoder.output_shape) == (None, z_dim), encoder.output_shape
    assert tuple(model.output_shape) == (None, height, width, channels), model.output_shape
    return Autoencoder(model=model, encoder=encoder, decoder=decoder)
