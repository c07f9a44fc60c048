"""The gradient of a scalar objective of a Keras model's output with respect to the model's input.

This is the only backend-specific code of the dream algorithm: Keras 3 runs on TensorFlow, JAX or PyTorch and
each has its own autodiff, so ``input_gradient`` branches on ``keras.backend.backend()``. Keras is imported
inside the function so that importing this module stays free of TensorFlow (control-plane nodes import core).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["input_gradient"]

# objective(model_output) -> a scalar backend tensor (e.g. keras.ops.mean over one feature map).
Objective = Callable[[Any], Any]


def input_gradient(model: Any, x: np.ndarray, objective: Objective) -> tuple[np.ndarray, float]:
    """``(d objective(model(x)) / dx, objective(model(x)))`` as a float32 array of ``x``'s shape and a float.

    ``x`` is the model input as the model takes it (batch axis included). The model runs in inference mode
    (``training=False``) so dropout and the like do not make the gradient random. Raises ValueError for a
    Keras backend other than tensorflow, jax or torch.
    """
    import keras

    x = np.ascontiguousarray(x, dtype=np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)  # a constant input is not watched by default
            value = objective(model(tensor, training=False))
        grad = tape.gradient(value, tensor)
        # A disconnected objective gives None, not zeros; report it as a zero gradient.
        grad_np = np.zeros_like(x) if grad is None else grad.numpy()
        return grad_np.astype(np.float32, copy=False), float(value.numpy())

    # The two branches below are not exercised by the tests (the CI runs TensorFlow only).
    if backend == "jax":
        import jax

        def scalar(inp: Any) -> Any:
            return objective(model(inp, training=False))

        value, grad = jax.value_and_grad(scalar)(jax.numpy.asarray(x))
        return np.asarray(grad, dtype=np.float32), float(value)

    if backend == "torch":
        import torch

        device = next((v.value.device for v in model.weights), torch.device("cpu"))
        tensor = torch.tensor(x, device=device, requires_grad=True)
        value = objective(model(tensor, training=False))
        value.backward()
        grad_t = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
        return grad_t.detach().cpu().numpy().astype(np.float32, copy=False), float(value.detach().cpu())

    raise ValueError(f"no input gradient for the Keras backend {backend!r} (tensorflow, jax or torch)")
