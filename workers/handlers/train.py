"""The ``train`` kind: train a model, record per-epoch metrics, save it (``.keras``) and, for an autoencoder,
a PNG of test images above their reconstructions.

Every epoch is checkpointed to the artifact store (``checkpoint.keras``: the model with its optimizer state, and
the epoch in its meta). A later attempt of the job (the reaper requeued it after its worker died, or it was
retried) resumes from there: it trains the remaining epochs only, and rewrites no earlier epoch's metrics.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from storage.records import Artifact
from workers.context import JobContext
from workers.handlers.data import load_data

KERAS_MEDIA_TYPE = "application/x-keras"
CHECKPOINT = "checkpoint.keras"
log = logging.getLogger(__name__)


def run_train(ctx: JobContext, config: TrainConfig) -> None:
    from core.images import comparison_grid_png  # TensorFlow only when a job runs, never at import
    from core.train import train_model

    data = load_data(ctx, config)
    resume = _resume_point(ctx, config)
    if resume is None:
        ctx.progress(0.0, f"training {config.model} on {len(data.x_train)} images of shape {data.x_train.shape[1:]}")
    else:
        ctx.progress(resume[1] / config.epochs, f"resuming {config.model} from its checkpoint after epoch {resume[1]}")

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        ctx.metrics(logs, step=epoch)
        ctx.progress(epoch / config.epochs, f"epoch {epoch}/{config.epochs}: loss {logs['loss']:.4f}")
        return False  # a cancelled job stops here: progress() raises

    def checkpoint(epoch: int, model: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="latentfarm-") as tmp:
            path = Path(tmp) / CHECKPOINT
            model.save(path)
            ctx.checkpoint_file(CHECKPOINT, path, KERAS_MEDIA_TYPE, {"epoch": epoch, "model": config.model})

    at = None
    if resume is not None:
        from workers.models import keras_path

        ckpt, done = resume
        at = (str(keras_path(ctx.store.artifacts.path_of(ckpt.uri), ckpt.sha256)), done)
    result = train_model(config, data, on_epoch, checkpoint, resume=at)
    ctx.check()
    with tempfile.TemporaryDirectory(prefix="latentfarm-") as tmp, ctx.results():
        # the final metrics and the model are recorded with the job's success
        ctx.metrics(result.test_metrics)
        path = Path(tmp) / "model.keras"
        result.model.save(path)
        ctx.artifact_file("model.keras", path, KERAS_MEDIA_TYPE,
                          {"model": config.model, "z_dim": config.latent_dim,
                           "input_shape": list(data.x_train.shape[1:])})
        if result.originals is not None and result.reconstructions is not None:
            png = comparison_grid_png(result.originals, result.reconstructions)
            ctx.artifact_bytes("reconstructions.png", png, "image/png", {"rows": ["test images", "reconstructions"]})


def _resume_point(ctx: JobContext, config: TrainConfig) -> tuple[Artifact, int] | None:
    """(the checkpoint, its epoch) if an earlier attempt left one, else None."""
    ckpt = ctx.own_artifact(CHECKPOINT)
    if ckpt is None:
        return None
    epoch = int(ckpt.meta.get("epoch", 0))
    if not 1 <= epoch <= config.epochs or not ctx.store.artifacts.path_of(ckpt.uri).is_file():
        log.warning("job %s: checkpoint %s (epoch %s) unusable; training from the start", ctx.job.id, ckpt.uri, epoch)
        return None
    return ckpt, epoch
