"""The ``sample`` kind: draw z-points, decode them, and score the images beside real and reconstructed ones.

Scores (metrics), for the samples and, as the reference, for real test images (``ref_test_*``) and for their
reconstructions (``ref_recon_*``). The test split is halved: half A is the reference set whose statistics
every set is compared with, half B supplies the real and reconstructed images, so no set is compared with
itself.
- ``nn_dist``: mean L2 distance of each image to its nearest training image (memorisation check);
- ``fid_latent``: Fréchet distance between the set's encodings and the encodings of A;
- with a cnn parent: ``confident_frac`` (max class probability > 0.9), ``class_entropy`` (bits, of the histogram
  of predicted classes) and ``fid_cnn`` (Fréchet distance of the CNN's penultimate-layer features to A's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.config import AUTOENCODERS, SampleConfig
from workers.context import JobContext
from workers.handlers.data import data_params, load_data

NN_TRAIN_IMAGES = 20000  # nearest-neighbour search against at most this many training images


def run_sample(ctx: JobContext, config: SampleConfig) -> None:
    from core.images import image_grid_png
    from core.latent import draw
    from core.train import split_autoencoder

    encoded = ctx.parent("encode")
    assert encoded is not None
    trained = ctx.parent("train", of=encoded, models=AUTOENCODERS)
    assert trained is not None
    cnn_job = ctx.parent("train", models=("cnn",), required=False)
    autoencoder = ctx.load_model(trained)
    encoder, decoder = split_autoencoder(autoencoder)
    z_train = ctx.load_npy(encoded, "latents_train.npy")
    z_test = ctx.load_npy(encoded, "latents_test.npy")
    latent_shape = tuple(ctx.artifact(encoded, "latents_train.npy").meta.get("latent_shape", [z_train.shape[1]]))

    ctx.progress(0.05, f"drawing {config.n} z-points with {config.sampler}")
    z = draw(config, z_train, z_test).astype(np.float32)
    samples = decoder.predict(z.reshape((len(z), *latent_shape)), batch_size=256, verbose=0)
    ctx.artifact_npy("samples.npy", samples.astype(np.float32), {"sampler": config.sampler})
    ctx.artifact_npy("z.npy", z)
    ctx.artifact_bytes("samples.png", image_grid_png(samples[: config.grid]), "image/png",
                       {"sampler": config.sampler, "images": min(config.grid, len(samples))})

    ctx.progress(0.3, "scoring samples against real test images and reconstructions")
    data = load_data(ctx, data_params(None, fallback=trained))
    half = len(data.x_test) // 2
    ref, real = data.x_test[:half], data.x_test[half:]
    n = min(len(samples), len(real))
    recon = autoencoder.predict(real[:n], batch_size=256, verbose=0)
    sets = {"": samples[:n], "ref_test_": real[:n], "ref_recon_": recon}
    cnn = ctx.load_model(cnn_job) if cnn_job is not None else None
    scores = _score_sets(sets, ref, data.x_train[:NN_TRAIN_IMAGES], encoder, cnn)
    ctx.metrics(scores)
    ctx.artifact_json("scores.json", {"sampler": config.sampler, "n": n, "scores": scores})


def _score_sets(sets: dict[str, np.ndarray], ref: np.ndarray, train: np.ndarray, encoder: Any,
                cnn: Any) -> dict[str, float]:
    from core.scores import classifier_scores, frechet_distance, nearest_train_distance

    def encode(x: np.ndarray) -> np.ndarray:
        z = encoder.predict(x, batch_size=256, verbose=0)
        return z.reshape(len(z), -1)

    ref_latent = encode(ref)
    features = _penultimate(cnn) if cnn is not None else None
    ref_features = features.predict(ref, batch_size=256, verbose=0) if features is not None else None
    out: dict[str, float] = {}
    for prefix, images in sets.items():
        out[prefix + "nn_dist"] = nearest_train_distance(images, train)
        out[prefix + "fid_latent"] = frechet_distance(encode(images), ref_latent)
        if cnn is not None and features is not None and ref_features is not None:
            probs = cnn.predict(images, batch_size=256, verbose=0)
            cs = classifier_scores(probs)
            out[prefix + "confident_frac"] = cs["confident_frac"]
            out[prefix + "class_entropy"] = cs["class_entropy"]
            out[prefix + "fid_cnn"] = frechet_distance(features.predict(images, batch_size=256, verbose=0),
                                                       ref_features)
    return {k: float(v) for k, v in out.items()}


def _penultimate(cnn: Any) -> Any:
    import keras

    return keras.Model(cnn.inputs, cnn.get_layer("penultimate").output)
