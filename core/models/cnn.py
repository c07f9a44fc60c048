"""The classic Keras MNIST convnet, used to score generated images and as a feature extractor.

Two layers are named because other jobs look them up: "features" (the 64 maps of the second conv, which the
dream jobs maximise) and "penultimate" (the Dense 128 activations, the features sample scoring compares).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from core.models.common import Classifier
from core.models.defaults import FEATURES, FILTERS, PENULTIMATE


def build_cnn(n_classes: int, filters: Sequence[int] | None = None,
              input_shape: Sequence[int] = (28, 28, 1)) -> Classifier:
    """Conv 3x3 relu -> Conv 3x3 relu ("features") -> MaxPool 2 -> Dropout 0.25 -> Flatten -> Dense 128 relu
    ("penultimate") -> Dropout 0.5 -> Dense n_classes softmax. Convs are "valid" (28 -> 26 -> 24 -> 12)."""
    filters = tuple(int(f) for f in (filters or FILTERS["cnn"]))
    if len(filters) != 2 or min(filters) < 1:
        raise ValueError(f"cnn takes two positive filter counts, got {list(filters)}")
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    if len(input_shape) != 3 or min(int(d) for d in input_shape[:2]) < 6:
        raise ValueError(f"need a (height, width, channels) input_shape of at least 6x6, got {tuple(input_shape)}")

    inputs = keras.Input(tuple(int(d) for d in input_shape), name="image")
    x = layers.Conv2D(filters[0], 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(filters[1], 3, activation="relu", name=FEATURES)(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name=PENULTIMATE)(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return Classifier(model=keras.Model(inputs, outputs, name="cnn"))


def penultimate_model(cnn: keras.Model) -> keras.Model:
    """A model from the cnn's input to its "penultimate" layer (the features sample scoring compares)."""
    # The single input tensor, not the list: called with one array, a list-input model warns on every call.
    inputs = cnn.inputs[0] if len(cnn.inputs) == 1 else cnn.inputs
    return keras.Model(inputs, cnn.get_layer(PENULTIMATE).output, name="cnn_penultimate")
