"""The ``train`` kind: train a model, record per-epoch metrics, save it (``.keras``) and, for an autoencoder,
a PNG of test images above their reconstructions."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.config import TrainConfig
from workers.context import JobCancelled, JobContext
from workers.handlers.data import load_data

KERAS_MEDIA_TYPE = "application/x-keras"


def run_train(ctx: JobContext, config: TrainConfig) -> None:
    from core.images import comparison_grid_png  # TensorFlow only when a job runs, never at import
    from core.train import train_model

    data = load_data(ctx, config)
    ctx.progress(0.0, f"training {config.model} on {len(data.x_train)} images of shape {data.x_train.shape[1:]}")

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        ctx.metrics(logs, step=epoch)
        return ctx.progress(epoch / config.epochs, f"epoch {epoch}/{config.epochs}: loss {logs['loss']:.4f}")

    result = train_model(config, data, on_epoch)
    if result.stopped_early:
        raise JobCancelled(f"cancelled by user after epoch {len(result.history)}")
    ctx.metrics(result.test_metrics)
    with tempfile.TemporaryDirectory(prefix="latentfarm-") as tmp:
        path = Path(tmp) / "model.keras"
        result.model.save(path)
        ctx.artifact_file("model.keras", path, KERAS_MEDIA_TYPE,
                          {"model": config.model, "z_dim": config.latent_dim,
                           "input_shape": list(data.x_train.shape[1:])})
    if result.originals is not None and result.reconstructions is not None:
        png = comparison_grid_png(result.originals, result.reconstructions)
        ctx.artifact_bytes("reconstructions.png", png, "image/png", {"rows": ["test images", "reconstructions"]})
