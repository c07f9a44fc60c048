"""A sample job's work: draw z-points, decode them, and score the images beside real and reconstructed ones.

Every set is scored: the samples, and as the reference real test images (``ref_test_*``) and their
reconstructions (``ref_recon_*``). The test split is halved: half A is the reference set whose statistics every
set is compared with, half B supplies the real and reconstructed images, so no set is compared with itself.

- ``nn_dist``: mean L2 distance of each image to its nearest training image (a memorisation check);
- ``pca_residual``: mean squared distance per pixel from the principal subspace of the training images (90% of
  their variance: ``core.scores.pca_residual``, the eigenfaces' "distance from face space"): how much of an image
  is not made of what the training images are made of. Needs no model, so it scores faces as well as digits;
- ``fid_latent``: Fréchet distance between the set's encodings and the encodings of A;
- ``recon_drift``: the mean squared change of an image's pixels when it goes through the autoencoder once more
  (encode, decode). Images the autoencoder holds as they are (digits it has learnt) barely move; images off what
  it learnt (stroke fragments, frames) are pulled towards it and move: a score that catches fragments a
  classifier may be confident about;
- with a cnn: ``confident_frac`` (max class probability > 0.9), ``class_entropy`` (bits, of the histogram of
  predicted classes), ``sample_entropy`` (bits, the mean of each image's own class entropy) and ``fid_cnn``
  (Fréchet distance of the cnn's penultimate-layer features to A's).

``score_sets`` is arrays and callables only; ``sample_and_score`` runs the Keras models (imported when called).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.kinds.sample import SampleParams
from core.latent import draw
from core.scores import classifier_scores, frechet_distance, nearest_train_distance, pca_residual, principal_subspace

NN_TRAIN_IMAGES = 20000  # nearest-neighbour search against at most this many training images
PREDICT_BATCH = 256

Images = Callable[[np.ndarray], np.ndarray]  # images (n, h, w, c) -> an array per image (codes, probabilities...)
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class SampleResult:
    z: np.ndarray  # (n, d) float32: the drawn z-points
    samples: np.ndarray  # (n, h, w, c) float32: their decoded images
    scored: int  # how many images of each set the scores are over (the samples and half the test split)
    scores: dict[str, float]  # the set's scores, unprefixed for the samples; ref_test_*, ref_recon_* for the rest


def score_sets(sets: Mapping[str, np.ndarray], reference: np.ndarray, train: np.ndarray, encode: Images,
               classify: Images | None = None, features: Images | None = None,
               reconstruct: Images | None = None) -> dict[str, float]:
    """Each set's scores, keyed ``<set's prefix><score>``: ``nn_dist`` against ``train``, ``fid_latent`` of
    ``encode(images)`` against ``encode(reference)``, ``pca_residual`` from ``train``'s principal subspace; with
    ``reconstruct`` (the autoencoder) ``recon_drift``; with ``classify`` (class probabilities) and ``features``
    (a cnn's features) also ``confident_frac``, ``class_entropy``, ``sample_entropy`` and ``fid_cnn`` against
    ``reference``."""
    ref_latent = encode(reference)
    ref_features = features(reference) if features is not None and classify is not None else None
    subspace = principal_subspace(train)
    out: dict[str, float] = {}
    for prefix, images in sets.items():
        out[prefix + "nn_dist"] = nearest_train_distance(images, train)
        out[prefix + "pca_residual"] = pca_residual(images, *subspace)
        out[prefix + "fid_latent"] = frechet_distance(encode(images), ref_latent)
        if reconstruct is not None:
            again = np.asarray(reconstruct(images), dtype=np.float64)
            out[prefix + "recon_drift"] = float(np.mean((again - np.asarray(images, dtype=np.float64)) ** 2))
        if classify is not None and features is not None and ref_features is not None:
            cs = classifier_scores(classify(images))
            for key in ("confident_frac", "class_entropy", "sample_entropy"):
                out[prefix + key] = cs[key]
            out[prefix + "fid_cnn"] = frechet_distance(features(images), ref_features)
    return {k: float(v) for k, v in out.items()}


def sample_and_score(params: SampleParams, autoencoder: Any, z_train: np.ndarray, z_test: np.ndarray,
                     x_train: np.ndarray, x_test: np.ndarray, cnn: Any | None = None,
                     on_progress: Progress | None = None,
                     references: Mapping[int, Mapping[str, float]] | None = None) -> SampleResult:
    """Draw ``params.n`` z-points from the latents ``z_train`` (``z_test`` for interpolation), decode them with
    ``autoencoder``'s decoder and score them against ``x_test`` (halved, see the module docstring) and
    ``x_train``'s first ``NN_TRAIN_IMAGES``; ``cnn`` (a classifier) adds the classifier's scores.
    ``references``: the ``ref_test_*`` and ``ref_recon_*`` scores of earlier calls with the same models and data,
    by the number of images scored (they do not depend on the sampler); where they hold that number, only the
    samples are scored (about a third of the work)."""
    from core.models.cnn import penultimate_model
    from core.models.common import decode, encode, split_autoencoder

    def report(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(fraction, message)

    encoder, decoder = split_autoencoder(autoencoder)
    report(0.05, f"drawing {params.n} z-points with {params.sampler}")
    z = draw(params, z_train, z_test)
    samples = decode(decoder, z, PREDICT_BATCH).astype(np.float32)

    report(0.3, "scoring samples against real test images and reconstructions")
    half = len(x_test) // 2
    reference, real = x_test[:half], x_test[half:]
    n = min(len(samples), len(real))
    sets = {"": samples[:n]}
    known = (references or {}).get(n)
    if known is None:
        sets.update({"ref_test_": real[:n],
                     "ref_recon_": autoencoder.predict(real[:n], batch_size=PREDICT_BATCH, verbose=0)})
    classify = features = None
    if cnn is not None:
        penultimate = penultimate_model(cnn)
        classify = lambda x: cnn.predict(x, batch_size=PREDICT_BATCH, verbose=0)  # noqa: E731
        features = lambda x: penultimate.predict(x, batch_size=PREDICT_BATCH, verbose=0)  # noqa: E731
    scores = score_sets(sets, reference, x_train[:NN_TRAIN_IMAGES], lambda x: encode(encoder, x, PREDICT_BATCH),
                        classify, features,
                        lambda x: autoencoder.predict(x, batch_size=PREDICT_BATCH, verbose=0))
    return SampleResult(z=z, samples=samples, scored=n, scores={**scores, **(known or {})})
