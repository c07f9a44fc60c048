"""``encode``: a dataset's train and test splits through a trained autoencoder's encoder, and their statistics."""

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
