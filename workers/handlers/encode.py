"""The ``encode`` kind: a dataset's train and test splits through a trained autoencoder's encoder."""

from __future__ import annotations

import numpy as np

from core.config import AUTOENCODERS, EncodeConfig
from workers.context import JobContext
from workers.handlers.data import data_params, load_data


def run_encode(ctx: JobContext, config: EncodeConfig) -> None:
    from core.latent import latent_stats, latent_summary_metrics
    from core.train import split_autoencoder

    trained = ctx.parent("train", models=AUTOENCODERS)
    assert trained is not None
    params = data_params(config, fallback=trained)
    data = load_data(ctx, params)
    encoder, _ = split_autoencoder(ctx.load_model(trained))
    ctx.progress(0.1, f"encoding {len(data.x_train)} + {len(data.x_test)} images with {trained.name}")
    z_train = encoder.predict(data.x_train, batch_size=config.batch_size, verbose=0)
    ctx.progress(0.7, "encoding the test split")
    z_test = encoder.predict(data.x_test, batch_size=config.batch_size, verbose=0)
    latent_shape = list(z_train.shape[1:])  # pool_ae's code is (7, 7, 2): flattened here, reshaped to decode
    z_train = z_train.reshape(len(z_train), -1).astype(np.float32)
    z_test = z_test.reshape(len(z_test), -1).astype(np.float32)
    meta = {"latent_shape": latent_shape, "dataset": params.dataset, "model_job": trained.id}
    ctx.artifact_npy("latents_train.npy", z_train, meta)
    ctx.artifact_npy("latents_test.npy", z_test, meta)
    ctx.artifact_npy("labels_train.npy", data.y_train.astype(np.int64))
    ctx.artifact_npy("labels_test.npy", data.y_test.astype(np.int64))
    stats = latent_stats(z_train)
    ctx.artifact_json("latent_stats.json", stats)
    ctx.metrics(latent_summary_metrics(stats))
