"""The models' names and their defaults, each defined once: the train kind's parameters fill them in, the builders
use them. No Keras here (the control plane validates specs with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

AUTOENCODERS = ("conv_ae", "pool_ae", "face_ae")
MODELS = AUTOENCODERS + ("cnn",)

# The bottleneck size where a model has one (pool_ae's code is its (h/4, w/4, filters[1]) maps; a cnn has none).
Z_DIM = {"conv_ae": 16, "face_ae": 256}
# Encoder Conv2D filters. conv_ae: strides 1, 2, 2; pool_ae: the first conv's maps, then the code's channels;
# face_ae: one stride-2 conv each (any count); cnn: its two convs, the second the "features" layer a dream raises.
FILTERS: dict[str, tuple[int, ...]] = {"conv_ae": (32, 64, 128), "pool_ae": (16, 2), "face_ae": (32, 64, 128, 256),
                                       "cnn": (32, 64)}
FILTER_COUNTS = {"conv_ae": 3, "pool_ae": 2, "cnn": 2}  # how many filters a model takes (face_ae: any number)
# The models whose default filters a train job's params spell out (and so its fingerprint); pool_ae's and the cnn's
# are left unset there, as they always were, so the fingerprints of jobs already run stay the same.
FILTERS_IN_PARAMS = ("conv_ae", "face_ae")
LEARNING_RATE = 1e-3  # for every optimizer (Keras' adadelta default is 0.001 too, not the old 1.0)

# Layers of the cnn that other jobs look up by name.
FEATURES = "features"  # the second conv's maps: what a dream raises
PENULTIMATE = "penultimate"  # the Dense 128 activations: the features sample scoring compares


def cnn_feature_maps(train_params: Mapping[str, Any]) -> int:
    """How many maps the "features" layer of a cnn trained with these params has."""
    filters: Sequence[int] = train_params.get("filters") or FILTERS["cnn"]
    return int(filters[-1])
