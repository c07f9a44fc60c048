"""One thin handler per job kind, ``handler(ctx, params)``: load the inputs, call ``core``, save the outputs.

A kind's declaration in ``core.kinds`` names its handler as ``"module:function"``; ``handler_for`` resolves it when
a job of the kind runs, so a process imports (and pays for) only the handlers it uses, and TensorFlow is imported
inside handlers, when a job runs, never when a worker process starts or forks.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from core.kinds import KINDS

Handler = Callable[[Any, Any], None]  # (workers.context.JobContext, the kind's params) -> None


@functools.cache
def handler_for(kind: str) -> Handler:
    """The handler of ``kind``: LookupError for an unknown kind or one that has none (a spec entry that only
    expands into other jobs), ImportError or AttributeError for a reference that does not resolve."""
    if kind not in KINDS:
        raise LookupError(f"no job kind {kind!r}")
    ref = KINDS[kind].handler
    if ref is None:
        raise LookupError(f"kind {kind!r} has no handler: a spec entry of it expands into jobs of other kinds")
    module, _, name = ref.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler
