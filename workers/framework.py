"""The deep-learning framework of a worker process: Keras and its backend, imported once, by the first job that
needs them (``load``), never when a worker process starts or forks.

TensorFlow's CPU build runs convolutions through oneDNN's kernels, about twice as fast as its own on x86 (a conv
autoencoder on MNIST: 844 against 410 images/s on the CI machine), with float round-off that differs a little. It
says so at import, on stderr, before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence it: ``load``
drops that notice (and absl's line about early log messages) and passes every other line of the import on. With
oneDNN, TensorFlow's graph remapper fails to fuse a Conv2D, its bias and a LeakyReLU in the gradient (conv_ae's
encoder) and logs an error on every training run; it goes on without the fusion, and turning the remapper off costs
about 3% (817 images/s) and keeps the worker's log clean.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Lines the import prints that say nothing a user can act on.
NOTICES = (b"oneDNN custom operations are on", b"All log messages before absl::InitializeLog() is called")

_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Import Keras (and with it its backend) in this process, once; the start-up notices are dropped."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            with _stderr_without(NOTICES):
                import keras
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.optimizer.set_experimental_options({"remapping": False})
            _loaded = True


@contextmanager
def _stderr_without(notices: tuple[bytes, ...]) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file for the block; afterwards its lines, but those containing one of
    ``notices``, are written to the real stderr (nothing is lost: output of other threads meanwhile comes late)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught:
                if not any(n in line for n in notices):
                    os.write(2, line)
