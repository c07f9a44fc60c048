"""One handler per job kind: ``handler(ctx, config)``. Handlers import TensorFlow lazily, when a job runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.context import JobContext
from workers.handlers.cluster import run_cluster
from workers.handlers.dream import run_dream_merge, run_dream_tile
from workers.handlers.encode import run_encode
from workers.handlers.noop import run_noop
from workers.handlers.sample import run_sample
from workers.handlers.train import run_train

Handler = Callable[[JobContext, Any], None]

HANDLERS: dict[str, Handler] = {
    "noop": run_noop,
    "sleep": run_noop,
    "train": run_train,
    "encode": run_encode,
    "sample": run_sample,
    "cluster": run_cluster,
    "dream_tile": run_dream_tile,
    "dream_merge": run_dream_merge,
}
