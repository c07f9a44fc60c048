"""What differs between the Keras backends core runs on: TensorFlow (the default) and JAX.

Everything else in core is written against Keras 3 and ``keras.ops`` and runs unchanged on either; the backend is
fixed per process, before Keras is imported (``KERAS_BACKEND``; a worker sets it from LATENTFARM_BACKEND:
``workers.framework``). Three things are per backend, all here:

- ``map_gradient``: the dream's gradient of one feature map's mean activation with respect to the model's input.
  Each backend has its own autodiff (``tf.GradientTape``, ``jax.grad``); both are compiled once per model (a
  ``tf.function``; ``jax.jit`` over the model's stateless call), with the map index an argument, so the steps of
  every tile of a dream reuse one compiled function.
- ``train_options``: what ``model.compile`` gets on top of the optimizer and the loss (measured by
  ``benchmarks/train_throughput.py``).
- ``keep_tensorflow_out``: Keras imports TensorFlow wherever it is installed, whatever the backend (to seed it, to
  recognise its types when saving); a JAX process need not pay for that import nor hold a second CUDA runtime.

Keras is imported inside the functions: importing this module imports no framework (control-plane nodes import
core).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "current", "keep_tensorflow_out", "map_gradient", "on_accelerator", "train_options"]

BACKENDS = ("tensorflow", "jax")  # the Keras backends core runs on and is tested on
STEPS_PER_EXECUTION = 8  # training batches per compiled call on a GPU: fewer returns to Python between them

# A compiled gradient function per features model (weakly held: it goes with the model out of a worker's cache).
_compiled: weakref.WeakKeyDictionary[Any, Callable[[np.ndarray, int], tuple[Any, Any]]] = (
    weakref.WeakKeyDictionary())


def current() -> str:
    """The Keras backend of this process; raises ValueError for one core does not run on (e.g. torch)."""
    import keras

    backend = str(keras.backend.backend())
    if backend not in BACKENDS:
        raise ValueError(f"Keras runs on {backend!r}; core runs on {' or '.join(BACKENDS)} (set KERAS_BACKEND)")
    return backend


def keep_tensorflow_out() -> None:
    """On a backend other than TensorFlow, have Keras treat TensorFlow as not installed, unless it is imported
    already: ``keras.utils.set_random_seed`` and saving a model would otherwise import it (seconds, hundreds of MB).
    A Keras without that switch (a private lazy module) is left as it is."""
    import sys

    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:  # pragma: no cover - another Keras layout
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "module", None) is None and hasattr(lazy, "_available"):
        lazy._available = False


def train_options() -> dict[str, Any]:
    """Keyword arguments for ``model.compile`` beyond the optimizer, the loss and the metrics.

    On a GPU, ``STEPS_PER_EXECUTION`` training steps per call of the compiled function (TensorFlow runs them in one
    graph loop; Keras on JAX calls its batch hooks once per group): Keras' advice for small models, whose steps on
    a GPU are short beside the return to Python between them; ``benchmarks/gpu_check.sh`` measures it on a GPU. On
    the CPU a step is long and 8 steps per call used the same CPU seconds per epoch as 1, on both backends, so it is
    left at 1. XLA stays as Keras chooses it ("auto": always on JAX; on TensorFlow only with a GPU, as oneDNN's CPU
    convolutions beat XLA's).
    """
    return {"steps_per_execution": STEPS_PER_EXECUTION} if on_accelerator() else {}


def on_accelerator() -> bool:
    """Whether this process's backend computes on a GPU (or another accelerator) rather than the CPU."""
    if current() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    import jax

    return str(jax.default_backend()) != "cpu"


def map_gradient(model: Any, x: np.ndarray, map_index: int) -> tuple[np.ndarray, float]:
    """``(d m / dx, m)`` for m = the mean of channel ``map_index`` of ``model(x)`` (inference mode, so dropout and
    the like do not make it random), as a float32 array of ``x``'s shape and a float.

    ``x`` is the model input as the model takes it (batch axis included). The first call for a model compiles its
    gradient function; later calls, for any map, reuse it.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    step = _compiled.get(model)
    if step is None:
        step = _compile_map_gradient(model)
        _compiled[model] = step
    grad, value = step(x, int(map_index))
    return np.asarray(grad, dtype=np.float32).reshape(x.shape), float(np.asarray(value))


def _mean_of_map(out: Any, index: Any) -> Any:
    """The objective both backends differentiate: the mean activation of channel ``index``."""
    import keras

    return keras.ops.mean(keras.ops.take(out, index, axis=-1))


def _compile_map_gradient(model: Any) -> Callable[[np.ndarray, int], tuple[Any, Any]]:
    backend = current()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tf_step(x: Any, index: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(x)  # a constant input is not watched by default
                value = _mean_of_map(model(x, training=False), index)
            # a map the input does not reach has a zero gradient, not None
            return tape.gradient(value, x, unconnected_gradients=tf.UnconnectedGradients.ZERO), value

        return lambda x, index: tf_step(tf.constant(x), tf.constant(index, tf.int32))

    import jax

    def objective(trainable: Any, non_trainable: Any, x: Any, index: Any) -> Any:
        out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return _mean_of_map(out, index)

    value_and_grad = jax.jit(jax.value_and_grad(objective, argnums=2))

    def jax_step(x: np.ndarray, index: int) -> tuple[Any, Any]:
        value, grad = value_and_grad([v.value for v in model.trainable_variables],
                                     [v.value for v in model.non_trainable_variables], x, np.int32(index))
        return grad, value

    return jax_step
