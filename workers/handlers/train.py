"""``train``: train a model (``core.train``), record per-epoch metrics (with ``images_per_second``: the epoch's
training images over its wall time), save it (``.keras``) and, for an autoencoder, a PNG of test images above
their reconstructions.

Every epoch is checkpointed to the artifact store (``checkpoint.keras``: the model with its optimizer state, and
the epoch in its meta). A later attempt of the job (the reaper requeued it after its worker died, or it was
retried) resumes from there: it trains the remaining epochs only, and rewrites no earlier epoch's metrics. An
attempt that lost the job records no checkpoint. The checkpoint is dropped with the job's success unless the job
says ``keep_checkpoint: true`` (to train it further later).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from core.kinds.train import TrainParams
from scheduler.errors import ArtifactCorrupt, NotFound
from workers import framework
from workers.context import JobContext
from workers.handlers.data import load_data

KERAS_MEDIA_TYPE = "application/x-keras"
CHECKPOINT = "checkpoint.keras"
log = logging.getLogger(__name__)


def run_train(ctx: JobContext, params: TrainParams) -> None:
    framework.load()  # Keras, once per process, before the imports below need it
    from core.images import comparison_grid_png  # TensorFlow only when a job runs, never at import
    from core.train import train_model

    data = load_data(ctx, params)
    resume = _resume_point(ctx, params)
    if resume is None:
        ctx.progress(0.0, f"training {params.model} on {len(data.x_train)} images of shape {data.x_train.shape[1:]}")
    else:
        ctx.progress(resume[1] / params.epochs, f"resuming {params.model} from its checkpoint after epoch {resume[1]}")

    speeds: dict[int, float] = {}
    trial = ctx.trial_reporter()  # reports each epoch to its search's pruner, if the job is a trial

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        # the epoch's training images per second go with its losses: one write
        ctx.metrics({**logs, "images_per_second": speeds.pop(epoch)} if epoch in speeds else logs, step=epoch)
        ctx.progress(epoch / params.epochs, f"epoch {epoch}/{params.epochs}: loss {logs['loss']:.4f}")
        trial.report(epoch)  # a search's trial stops here when its pruner says so: JobPruned
        return False  # a cancelled job stops here: progress() raises

    def checkpoint(epoch: int, model: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="latentfarm-") as tmp:
            path = Path(tmp) / CHECKPOINT
            model.save(path)
            ctx.checkpoint_file(CHECKPOINT, path, KERAS_MEDIA_TYPE, {"epoch": epoch, "model": params.model})

    result = train_model(params, data, on_epoch, checkpoint, resume=resume, on_speed=speeds.__setitem__)
    ctx.check()
    with tempfile.TemporaryDirectory(prefix="latentfarm-") as tmp, ctx.results():
        # the final metrics and the model are recorded with the job's success
        ctx.metrics(result.test_metrics)
        path = Path(tmp) / "model.keras"
        result.model.save(path)
        ctx.artifact_file("model.keras", path, KERAS_MEDIA_TYPE,
                          {"model": params.model, "z_dim": params.z_dim, "input_shape": list(data.x_train.shape[1:])})
        if result.originals is not None and result.reconstructions is not None:
            png = comparison_grid_png(result.originals, result.reconstructions)
            ctx.artifact_bytes("reconstructions.png", png, "image/png", {"rows": ["test images", "reconstructions"]})
        if not params.keep_checkpoint:  # the model plus its optimizer state: about twice model.keras
            ctx.drop_artifact(CHECKPOINT)


def _resume_point(ctx: JobContext, params: TrainParams) -> tuple[str, int] | None:
    """(the checkpoint's file, its epoch) if an earlier attempt left a usable one, else None."""
    from workers.models import keras_path

    ckpt = ctx.own_artifact(CHECKPOINT)
    if ckpt is None:
        return None
    epoch = int(ckpt.meta.get("epoch", 0))
    try:
        path = ctx.artifact_path(ctx.job, CHECKPOINT, ckpt)
    except (NotFound, ArtifactCorrupt):  # only this job's own progress is lost: it starts over
        path = None
    if not 1 <= epoch <= params.epochs or path is None:
        log.warning("job %s: checkpoint %s (epoch %s) unusable; training from the start", ctx.job.id, ckpt.uri, epoch)
        return None
    return str(keras_path(path, ckpt.sha256)), epoch
