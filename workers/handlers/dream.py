"""The dream kinds: ``dream_tile`` (one tile of one level through the cnn) and ``dream_merge`` (one level's tiles
written back into the image, standardized). A spec's ``dream`` entry makes them; see ``core.kinds.dream``.

A tile job reads the image the merge before it made (``image.npy``) and writes its tile (``tile.npy``), with the
activation gain as the metric ``gain`` and the seconds the algorithm took as ``seconds``. A merge job reads its
tiles and writes ``image.npy``. The last merge of an iteration keeps ``image.png``; the last merge of the dream
keeps ``final.npy``, ``final.png`` and ``iterations.png`` (the input, then every iteration's image, side by side).
"""

from __future__ import annotations

import time

import numpy as np

from core.kinds.dream import DreamMergeParams, DreamTileParams
from storage.records import Job
from workers import framework
from workers.context import JobContext
from workers.datasets import local_data


def _same_size(image: np.ndarray, size: int, source: str) -> np.ndarray:
    if image.shape != (size, size):
        raise ValueError(f"{source} has shape {image.shape}, not the dream's working size ({size}, {size})")
    return image


def run_dream_tile(ctx: JobContext, params: DreamTileParams) -> None:
    framework.load()  # Keras, once per process, before the imports below need it
    from core.dream import features_model, load_image, process_tile, tiles

    parents = ctx.parents()
    cnn = ctx.parent("train", models=("cnn",))
    assert cnn is not None
    model = ctx.load_model(cnn, view=features_model)  # cached per process: the tiles of a batch share it
    if params.image is not None:  # the first tile of a dream reads the input file
        image = load_image(local_data(ctx, params.image), params.size)  # a registered image: from the store
    else:
        before = next((p for p in parents if p.kind == "dream_merge"), None)
        if before is None:
            raise LookupError(f"tile job {ctx.job.name!r} has neither an image file nor a dream_merge parent")
        image = _same_size(ctx.load_npy(before, "image.npy"), params.size, f"the image of {before.name!r}")
    row0, col0, side = tiles(params.level, params.size)[params.tile]
    started = time.perf_counter()
    new_tile, gain = process_tile(model, image[row0:row0 + side, col0:col0 + side], params.map, params.epochs,
                                  params.epsilon, params.threshold, on_step=ctx.check)
    seconds = time.perf_counter() - started
    with ctx.results():  # recorded with the job's success: tile jobs are short
        if params.image is not None:
            ctx.artifact_npy("input.npy", image)  # the first panel of the dream's iterations.png
        ctx.artifact_npy("tile.npy", new_tile, {"row0": row0, "col0": col0, "gain": gain})
        ctx.metrics({"gain": gain, "seconds": seconds})


def run_dream_merge(ctx: JobContext, params: DreamMergeParams) -> None:
    from core.dream import merge, tiles, to_png_array
    from core.images import grey_png, grey_row_png

    parts_of = [p for p in ctx.parents() if p.kind == "dream_tile"]
    layout = tiles(params.level, params.size)
    indices = sorted(int(p.params["tile"]) for p in parts_of)
    if indices != list(range(len(layout))):
        raise ValueError(f"level {params.level} has {len(layout)} tiles; this merge got tiles {indices}")
    arts = ctx.artifacts(parts_of, "tile.npy")
    parts = []
    for job, art in zip(parts_of, arts, strict=True):
        row0, col0, side = layout[int(job.params["tile"])]
        tile = ctx.load_npy(job, "tile.npy", art)
        if tile.shape != (side, side):
            raise ValueError(f"tile {job.name!r} has shape {tile.shape}, expected ({side}, {side})")
        parts.append((row0, col0, tile))
    # The tiles cover the image, so the image they were cut from is not needed: every pixel is overwritten.
    image = merge(np.zeros((params.size, params.size), np.float32), parts)
    gains = [float(a.meta["gain"]) for a in arts]
    history = _history(ctx) if params.final else []
    with ctx.results():
        ctx.artifact_npy("image.npy", image, {"iteration": params.iteration, "level": params.level})
        ctx.metrics({"gain_mean": float(np.mean(gains)), "gain_min": min(gains), "gain_max": max(gains)})
        if params.last_level:
            png = grey_png(to_png_array(image, params.clip))
            ctx.artifact_bytes("image.png", png, "image/png", {"iteration": params.iteration, "clip": params.clip})
        if params.final:
            ctx.artifact_npy("final.npy", image)
            ctx.artifact_bytes("final.png", png, "image/png", {"iterations": params.iteration + 1, "clip": params.clip})
            strip = [to_png_array(x, params.clip) for x in [*history, image]]
            ctx.artifact_bytes("iterations.png", grey_row_png(strip), "image/png",
                               {"panels": ["input"] + [f"iteration {i}" for i in range(params.iteration + 1)]})


def _history(ctx: JobContext) -> list[np.ndarray]:
    """The dream's input and the images of every iteration before this (the last) merge's, walking back
    through the DAG."""
    images: list[np.ndarray] = []
    job: Job = ctx.job
    while True:
        if job.id != ctx.job.id and job.params["last_level"]:
            images.append(ctx.load_npy(job, "image.npy"))
        tile = next(p for p in ctx.parents(job if job.id != ctx.job.id else None) if p.kind == "dream_tile")
        before = next((p for p in ctx.parents(tile) if p.kind == "dream_merge"), None)
        if before is None:  # the first tile: it kept the input
            images.append(ctx.load_npy(tile, "input.npy"))
            return images[::-1]
        job = before
