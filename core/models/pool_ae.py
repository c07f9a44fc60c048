"""A tiny convolutional autoencoder with max-pooling: its code is a (h/4, w/4, 2) stack of feature maps.

For 28x28 images the code is 7x7x2. The ``encoder`` model outputs that (7, 7, 2) tensor and the ``decoder``
model takes it; downstream jobs (encode, sample, cluster) use it flattened to a 98-vector
(``core.models.encode`` flattens, ``core.models.decode`` reshapes back).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from core.models.common import Autoencoder, image_shape
from core.models.defaults import FILTERS


def build_pool_ae(filters: Sequence[int] | None = None, input_shape: Sequence[int] = (28, 28, 1)) -> Autoencoder:
    """Conv(16) -> pool -> Conv(2) -> pool is the encoder; Conv(2) -> upsample -> Conv(16) -> upsample ->
    Conv(channels, sigmoid) the decoder. All convs 3x3, "same" padding, ReLU. Sides must be divisible by 4."""
    filters = tuple(int(f) for f in (filters or FILTERS["pool_ae"]))
    if len(filters) != 2 or min(filters) < 1:
        raise ValueError(f"pool_ae takes two positive filter counts, got {list(filters)}")
    f1, f2 = filters
    height, width, channels = image_shape(input_shape, 4)

    inputs = keras.Input((height, width, channels), name="image")
    x = layers.Conv2D(f1, 3, activation="relu", padding="same", name="enc_conv1")(inputs)
    x = layers.MaxPooling2D(2, name="enc_pool1")(x)
    x = layers.Conv2D(f2, 3, activation="relu", padding="same", name="enc_conv2")(x)
    code = layers.MaxPooling2D(2, name="enc_pool2")(x)
    encoder = keras.Model(inputs, code, name="encoder")

    code_in = keras.Input((height // 4, width // 4, f2), name="code")
    y = layers.Conv2D(f2, 3, activation="relu", padding="same", name="dec_conv1")(code_in)
    y = layers.UpSampling2D(2, name="dec_up1")(y)
    y = layers.Conv2D(f1, 3, activation="relu", padding="same", name="dec_conv2")(y)
    y = layers.UpSampling2D(2, name="dec_up2")(y)
    # Sigmoid keeps pixels in [0, 1], which binary cross-entropy needs.
    outputs = layers.Conv2D(channels, 3, activation="sigmoid", padding="same", name="dec_output")(y)
    decoder = keras.Model(code_in, outputs, name="decoder")

    model = keras.Model(inputs, decoder(encoder(inputs)), name="pool_ae")
    assert tuple(model.output_shape) == (None, height, width, channels), model.output_shape
    return Autoencoder(model=model, encoder=encoder, decoder=decoder)
