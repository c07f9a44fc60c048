"""``encode``: a dataset's train and test splits through a trained autoencoder's encoder, their statistics (with
``latent_stats.png``: per-component distributions, radii and PCA spectrum), and a picture of the test codes by class
(``latents.png``: the codes themselves when they are 2-D, else a t-SNE)."""

from __future__ import annotations

import numpy as np

from core.kinds.encode import EncodeParams
from core.models.defaults import AUTOENCODERS
from workers import framework
from workers.context import JobContext
from workers.handlers.data import load_data, params_of


def run_encode(ctx: JobContext, params: EncodeParams) -> None:
    framework.load()  # Keras, once per process, before the imports below need it
    from core.latent import latent_stats, latent_summary_metrics
    from core.models.common import encode, split_autoencoder

    trained = ctx.parent("train", models=AUTOENCODERS)
    assert trained is not None
    data_params = params_of(params, fallback=trained)
    data = load_data(ctx, data_params)
    encoder, _ = split_autoencoder(ctx.load_model(trained))
    ctx.progress(0.1, f"encoding {len(data.x_train)} + {len(data.x_test)} images with {trained.name}")
    z_train = encode(encoder, data.x_train, params.batch_size)
    ctx.progress(0.7, "encoding the test split")
    z_test = encode(encoder, data.x_test, params.batch_size)
    # pool_ae's code is (7, 7, 2): flattened here, reshaped to decode
    meta = {"latent_shape": list(encoder.output_shape[1:]), "dataset": data_params.dataset, "model_job": trained.id}
    ctx.artifact_npy("latents_train.npy", z_train, meta)
    ctx.artifact_npy("latents_test.npy", z_test, meta)
    ctx.artifact_npy("labels_train.npy", data.y_train.astype(np.int64))
    ctx.artifact_npy("labels_test.npy", data.y_test.astype(np.int64))
    stats = latent_stats(z_train)
    ctx.artifact_json("latent_stats.json", stats)
    ctx.metrics(latent_summary_metrics(stats))
    method = params.plot if params.plot != "auto" else ("scatter" if z_test.shape[1] == 2 else "tsne")
    if method != "none" and len(z_train) >= 2:
        from core.plots import latent_analysis_png

        ctx.artifact_bytes("latent_stats.png", latent_analysis_png(
            z_train, f"{trained.name}: training codes", variance_ratio=stats["pca"]["explained_variance_ratio"]),
            "image/png")
    if method != "none" and len(z_test) >= 3:
        ctx.progress(0.8, f"drawing the test codes ({method})")
        ctx.artifact_bytes("latents.png", latent_picture(z_test, data.y_test, method, params.plot_sample,
                                                         f"{trained.name}: test codes"), "image/png")


def latent_picture(z: np.ndarray, labels: np.ndarray, method: str, sample: int, title: str) -> bytes:
    """PNG bytes of at most ``sample`` codes ``z`` (n, d) coloured by ``labels``: "scatter" draws the first two
    components (the seed's figure of a 2-D code), "tsne" a t-SNE of the codes (one thread: see ``embed_2d``)."""
    from core.plots import embed_2d, latent_scatter_png

    if method == "scatter":
        idx = np.sort(np.random.default_rng(0).choice(len(z), size=min(sample, len(z)), replace=False))
        points = z[idx, :2] if z.shape[1] >= 2 else np.hstack([z[idx, :1], np.zeros((len(idx), 1))])
        return latent_scatter_png(points, labels[idx], title, "z[0]", "z[1]")
    points, idx = embed_2d(z, "tsne", sample, threads=1)
    return latent_scatter_png(points, labels[idx], f"{title} (t-SNE of {len(idx)})", "t-SNE 1", "t-SNE 2")
