"""Model builders, one per ``TrainConfig.model``; ``build_model`` picks one from a config.

Autoencoders come back as ``Autoencoder(model, encoder, decoder)``, the cnn as ``Classifier(model)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.config import TrainConfig
from core.models.cnn import build_cnn
from core.models.common import Autoencoder, Classifier, decode, encode, split_autoencoder
from core.models.conv_ae import build_conv_ae
from core.models.face_ae import build_face_ae
from core.models.pool_ae import build_pool_ae

__all__ = ["Autoencoder", "Classifier", "build_model", "decode", "encode", "split_autoencoder"]


def build_model(config: TrainConfig, input_shape: Sequence[int], n_classes: int | None = None
                ) -> Autoencoder | Classifier:
    """The untrained model ``config.model`` for images of ``input_shape`` (h, w, c), with the config's
    z_dim and filters (None: the model's defaults). ``n_classes`` is needed for the cnn only.
    Raises ValueError for an unknown model or sizes it cannot take."""
    if config.model == "conv_ae":
        return build_conv_ae(config.latent_dim or 16, config.filters or (32, 64, 128), input_shape)
    if config.model == "pool_ae":
        return build_pool_ae(config.filters, input_shape)
    if config.model == "face_ae":
        return build_face_ae(config.latent_dim, config.filters, input_shape)
    if config.model == "cnn":
        if n_classes is None:
            raise ValueError("the cnn needs n_classes")
        return build_cnn(n_classes, config.filters, input_shape)
    raise ValueError(f"unknown model {config.model!r}; expected conv_ae, pool_ae, face_ae or cnn")
