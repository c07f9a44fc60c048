"""The seed experiment's convolutional autoencoder: strided Conv2D encoder, Dense latent, mirror decoder."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from core.models.common import Autoencoder
from core.models.defaults import FILTERS, Z_DIM


def build_conv_ae(
    z_dim: int | None = None,
    filters: Sequence[int] | None = None,
    input_shape: Sequence[int] = (28, 28, 1),
) -> Autoencoder:
    """Build the encoder (strides 1, 2, 2), the decoder (its mirror) and the two chained as ``conv_ae``.

    ``input_shape`` is (height, width, channels); height and width must be divisible by 4 because the
    encoder halves them twice and the decoder doubles them back. ``z_dim`` and ``filters`` default to
    ``core.models.defaults``' (16; 32, 64, 128).
    """
    z_dim = Z_DIM["conv_ae"] if z_dim is None else int(z_dim)
    filters = FILTERS["conv_ae"] if filters is None else filters
    if len(filters) != 3 or len(input_shape) != 3:
        raise ValueError(f"need 3 filters and a (height, width, channels) input_shape, got "
                         f"filters={list(filters)}, input_shape={tuple(input_shape)}")
    f1, f2, f3 = (int(f) for f in filters)
    height, width, channels = (int(d) for d in input_shape)
    if z_dim < 1 or min(f1, f2, f3) < 1:
        raise ValueError(f"z_dim and filters must be positive, got z_dim={z_dim}, filters={list(filters)}")
    if height % 4 or width % 4:
        raise ValueError(f"input height and width must be divisible by 4, got {height}x{width}")

    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    for i, (f, stride) in enumerate(((f1, 1), (f2, 2), (f3, 2)), start=1):
        x = layers.Conv2D(f, 3, strides=stride, padding="same", name=f"enc_conv{i}")(x)
        x = layers.LeakyReLU(name=f"enc_act{i}")(x)
    x = layers.Flatten(name="enc_flatten")(x)
    latent = layers.Dense(z_dim, name="latent")(x)
    encoder = keras.Model(inputs, latent, name="encoder")

    code = keras.Input((z_dim,), name="code")
    y = layers.Dense((height // 4) * (width // 4) * f3, name="dec_dense")(code)
    y = layers.Reshape((height // 4, width // 4, f3), name="dec_reshape")(y)
    for i, (f, stride) in enumerate(((f3, 2), (f2, 2), (f1, 1)), start=1):
        y = layers.Conv2DTranspose(f, 3, strides=stride, padding="same", name=f"dec_deconv{i}")(y)
        y = layers.LeakyReLU(name=f"dec_act{i}")(y)
    # Sigmoid keeps pixels in [0, 1], which binary cross-entropy needs.
    outputs = layers.Conv2DTranspose(channels, 3, strides=1, padding="same", activation="sigmoid",
                                     name="dec_output")(y)
    decoder = keras.Model(code, outputs, name="decoder")

    autoencoder = keras.Model(inputs, decoder(encoder(inputs)), name="conv_ae")

    # Catch a wiring mistake at build time rather than as a confusing shape error deep inside fit().
    assert tuple(encoder.output_shape) == (None, z_dim), encoder.output_shape
    assert tuple(decoder.output_shape) == (None, height, width, channels), decoder.output_shape
    assert tuple(autoencoder.output_shape) == (None, height, width, channels), autoencoder.output_shape
    return Autoencoder(model=autoencoder, encoder=encoder, decoder=decoder)
