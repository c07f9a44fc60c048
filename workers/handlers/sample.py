"""``sample``: draw z-points, decode them and score the images (``core.sampling``); save the images, the points,
a PNG grid and the scores.

The reference scores (real test images and their reconstructions) do not depend on the sampler: a sweep over
samplers computes them once per worker process and reuses them (``REFERENCES``), keyed by what they depend on (the
autoencoder's and the cnn's model files, the training's data and the number of images scored)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from core.kinds.sample import SampleParams
from core.models.defaults import AUTOENCODERS
from workers import framework
from workers.context import JobContext
from workers.handlers.data import load_data, params_of

# (autoencoder file, cnn file, training's fingerprint) -> {images scored: reference scores}
REFERENCES: OrderedDict[tuple[str, str, str], dict[int, dict[str, float]]] = OrderedDict()
KEEP_REFERENCES = 16  # trainings whose reference scores a worker process keeps (a few hundred bytes each)
_lock = threading.Lock()


def run_sample(ctx: JobContext, params: SampleParams) -> None:
    framework.load()  # Keras, once per process, before the imports below need it
    from core.images import image_grid_png
    from core.sampling import sample_and_score

    encoded = ctx.parent("encode")
    assert encoded is not None
    trained = ctx.parent("train", of=encoded, models=AUTOENCODERS)
    assert trained is not None
    cnn_job = ctx.parent("train", models=("cnn",), required=False)
    data = load_data(ctx, params_of(None, fallback=trained))
    key = (ctx.artifact(trained, "model.keras").sha256,
           ctx.artifact(cnn_job, "model.keras").sha256 if cnn_job is not None else "", trained.fingerprint)
    with _lock:
        known = dict(REFERENCES.get(key, {}))
    result = sample_and_score(params, ctx.load_model(trained), ctx.load_npy(encoded, "latents_train.npy"),
                              ctx.load_npy(encoded, "latents_test.npy"), data.x_train, data.x_test,
                              cnn=ctx.load_model(cnn_job) if cnn_job is not None else None, on_progress=ctx.progress,
                              references=known)
    if result.scored not in known:
        with _lock:
            REFERENCES.setdefault(key, {})[result.scored] = {
                k: v for k, v in result.scores.items() if k.startswith(("ref_test_", "ref_recon_"))}
            REFERENCES.move_to_end(key)
            while len(REFERENCES) > KEEP_REFERENCES:
                REFERENCES.popitem(last=False)
    ctx.artifact_npy("samples.npy", result.samples, {"sampler": params.sampler})
    ctx.artifact_npy("z.npy", result.z)
    ctx.artifact_bytes("samples.png", image_grid_png(result.samples[: params.grid]), "image/png",
                       {"sampler": params.sampler, "images": min(params.grid, len(result.samples))})
    ctx.metrics(result.scores)
    ctx.artifact_json("scores.json", {"sampler": params.sampler, "n": result.scored, "scores": result.scores})
