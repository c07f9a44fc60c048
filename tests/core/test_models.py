"""core.models: each builder's shapes and named layers, the build_model dispatcher, and the latent helpers."""

from __future__ import annotations

import numpy as np
import pytest

from core.kinds.train import TrainParams
from core.models.build import build_model
from core.models.cnn import build_cnn
from core.models.common import Autoencoder, Classifier, decode, encode, split_autoencoder
from core.models.face_ae import build_face_ae
from core.models.pool_ae import build_pool_ae


def test_pool_ae_code_is_7x7x2() -> None:
    ae = build_pool_ae()
    assert ae.model.name == "pool_ae" and ae.encoder.name == "encoder" and ae.decoder.name == "decoder"
    assert ae.encoder.output_shape == (None, 7, 7, 2)
    assert ae.decoder.input_shape == (None, 7, 7, 2)
    assert ae.model.output_shape == (None, 28, 28, 1)
    shapes = {layer.name: tuple(layer.output.shape) for layer in ae.encoder.layers[1:]}
    assert shapes == {"enc_conv1": (None, 28, 28, 16), "enc_pool1": (None, 14, 14, 16),
                      "enc_conv2": (None, 14, 14, 2), "enc_pool2": (None, 7, 7, 2)}
    shapes = {layer.name: tuple(layer.output.shape) for layer in ae.decoder.layers[1:]}
    assert shapes == {"dec_conv1": (None, 7, 7, 2), "dec_up1": (None, 14, 14, 2), "dec_conv2": (None, 14, 14, 16),
                      "dec_up2": (None, 28, 28, 16), "dec_output": (None, 28, 28, 1)}
    assert ae.model.get_layer("encoder").get_layer("enc_conv1").kernel.shape == (3, 3, 1, 16)


def test_pool_ae_other_sizes_and_errors() -> None:
    assert build_pool_ae((8, 4), (32, 32, 3)).encoder.output_shape == (None, 8, 8, 4)
    with pytest.raises(ValueError, match="two positive filter counts"):
        build_pool_ae((8, 4, 2))
    with pytest.raises(ValueError, match="divisible by 4"):
        build_pool_ae(input_shape=(30, 30, 1))


@pytest.mark.parametrize(("side", "channels"), [(64, 1), (96, 3)])
def test_face_ae_shapes(side: int, channels: int) -> None:
    ae = build_face_ae(input_shape=(side, side, channels))
    assert ae.model.name == "face_ae"
    assert ae.encoder.output_shape == (None, 256)
    assert ae.decoder.input_shape == (None, 256)
    assert ae.model.output_shape == (None, side, side, channels)
    convs = [tuple(layer.output.shape) for layer in ae.encoder.layers if layer.name.startswith("enc_conv")]
    s = side
    assert convs == [(None, s // 2, s // 2, 32), (None, s // 4, s // 4, 64), (None, s // 8, s // 8, 128),
                     (None, s // 16, s // 16, 256)]
    deconvs = [layer.output.shape[-1] for layer in ae.decoder.layers if layer.name.startswith("dec_deconv")]
    assert deconvs == [256, 128, 64, 32]
    out = ae.model.predict(np.random.default_rng(0).random((2, side, side, channels), np.float32), verbose=0)
    assert out.shape == (2, side, side, channels) and (out >= 0).all() and (out <= 1).all()


def test_face_ae_options_and_errors() -> None:
    ae = build_face_ae(z_dim=8, filters=(4, 8), input_shape=(12, 12, 1))
    assert ae.encoder.output_shape == (None, 8) and ae.model.output_shape == (None, 12, 12, 1)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_face_ae(input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="positive"):
        build_face_ae(z_dim=0)


def test_cnn_layers() -> None:
    cnn = build_cnn(10)
    model = cnn.model
    assert model.name == "cnn" and model.output_shape == (None, 10)
    assert model.get_layer("features").output.shape == (None, 24, 24, 64)
    assert model.get_layer("penultimate").output.shape == (None, 128)
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    assert model.get_layer("dropout1").rate == 0.25 and model.get_layer("dropout2").rate == 0.5
    probs = model.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # softmax
    assert build_cnn(4, input_shape=(28, 28, 3)).model.input_shape == (None, 28, 28, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_cnn(1)


@pytest.mark.parametrize(("model", "shape", "latent", "kind"), [
    ("conv_ae", (28, 28, 1), (None, 16), Autoencoder),
    ("pool_ae", (28, 28, 1), (None, 7, 7, 2), Autoencoder),
    ("face_ae", (64, 64, 1), (None, 256), Autoencoder),
    ("cnn", (28, 28, 1), None, Classifier),
])
def test_build_model_defaults(model: str, shape: tuple[int, int, int], latent: tuple | None, kind: type) -> None:
    built = build_model(TrainParams(model=model), shape, n_classes=10)
    assert isinstance(built, kind) and built.model.name == model
    assert built.model.input_shape == (None, *shape)
    if latent is not None:
        assert built.encoder.output_shape == latent


def test_build_model_passes_z_dim_and_filters() -> None:
    built = build_model(TrainParams(model="conv_ae", z_dim=5, filters=(4, 8, 16)), (28, 28, 1))
    assert built.encoder.output_shape == (None, 5)
    assert built.encoder.get_layer("enc_conv3").filters == 16
    built = build_model(TrainParams(model="face_ae", z_dim=7, filters=(4, 8, 8, 8)), (32, 32, 3))
    assert built.encoder.output_shape == (None, 7)
    with pytest.raises(ValueError, match="n_classes"):
        build_model(TrainParams(model="cnn"), (28, 28, 1))


def test_split_encode_decode_on_fresh_models() -> None:
    ae = build_pool_ae()
    encoder, decoder = split_autoencoder(ae.model)
    assert encoder is ae.encoder and decoder is ae.decoder
    x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
    z = encode(encoder, x)
    assert z.shape == (3, 98) and z.dtype == np.float32  # pool_ae's 7x7x2 code, flattened for downstream use
    np.testing.assert_allclose(decode(decoder, z), ae.model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="codes of shape"):
        decode(decoder, np.zeros((2, 97), np.float32))
    with pytest.raises(ValueError, match="not an autoencoder"):
        split_autoencoder(build_cnn(10).model)
