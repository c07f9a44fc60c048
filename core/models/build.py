"""``build_model``: the untrained model a ``TrainParams`` names."""

from __future__ import annotations

from collections.abc import Sequence

from core.kinds.train import TrainParams
from core.models.cnn import build_cnn
from core.models.common import Autoencoder, Classifier
from core.models.conv_ae import build_conv_ae
from core.models.face_ae import build_face_ae
from core.models.pool_ae import build_pool_ae


def build_model(params: TrainParams, input_shape: Sequence[int], n_classes: int | None = None
                ) -> Autoencoder | Classifier:
    """The untrained model ``params.model`` for images of ``input_shape`` (h, w, c), with the params' z_dim and
    filters (filled in with the model's defaults). ``n_classes`` is needed for the cnn only.
    Raises ValueError for an unknown model or sizes it cannot take."""
    if params.model == "conv_ae":
        return build_conv_ae(params.z_dim, params.filters, input_shape)
    if params.model == "pool_ae":
        return build_pool_ae(params.filters, input_shape)
    if params.model == "face_ae":
        return build_face_ae(params.z_dim, params.filters, input_shape)
    if params.model == "cnn":
        if n_classes is None:
            raise ValueError("the cnn needs n_classes")
        return build_cnn(n_classes, params.filters, input_shape)
    raise ValueError(f"unknown model {params.model!r}; expected conv_ae, pool_ae, face_ae or cnn")
