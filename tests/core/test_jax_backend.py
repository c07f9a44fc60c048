"""core on Keras' JAX backend: the tests that exercise the backend (models, training, saving and loading, encoding,
the dream's gradient) run again in a child pytest on JAX, since a process's backend is fixed when it first imports
Keras; their training losses are compared with TensorFlow's in this process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from core.datasets import Dataset
from tests import services
from tests.core.test_backends import short_training

REPO = Path(__file__).resolve().parents[2]
# Chosen for what differs between backends, at small sizes (JAX compiles each model's steps on the CPU, and XLA's
# CPU gradient of a transposed convolution is slow): test_backends.py goes last, its last test checking that
# TensorFlow was never imported into the process.
ON_JAX = [
    "tests/core/test_dream.py",
    *(f"tests/core/test_train_models.py::{t}" for t in ("test_autoencoder_results", "test_cnn_results",
                                                         "test_saved_model_splits_into_working_halves",
                                                         "test_saved_cnn_keeps_its_named_layers")),
    "tests/core/test_models.py::test_cnn_layers",
    "tests/core/test_models.py::test_split_encode_decode_on_fresh_models",
    "tests/core/test_conv_ae.py::test_nan_in_data_raises",
    "tests/core/test_backends.py",
]

pytestmark = pytest.mark.slow(seconds=120)  # started among the first when the suite runs side by side


def test_core_tests_pass_on_jax_with_comparable_losses(tmp_path: Path, digits_300: Dataset) -> None:
    services.require(importlib.util.find_spec("jax") is not None, "JAX is not installed (pip install -e '.[jax]')")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("this process runs on JAX already: nothing to compare with")
    report = tmp_path / "losses.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LATENTFARM_", "KERAS_"))}
    env.update(LATENTFARM_BACKEND="jax", LATENTFARM_TEST_LOSSES=str(report), TF_CPP_MIN_LOG_LEVEL="2",
               # XLA compiles every model's steps on the CPU: without LLVM's optimisations that takes half the CPU
               # time, more than the tiny models' slower steps cost (the same float operations: no fast math)
               XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rfEs", *ON_JAX], cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in summary and not any(w in summary for w in ("failed", "error", "skipped")), summary

    on_jax = json.loads(report.read_text())
    on_tf, _ = short_training(digits_300)
    assert on_jax["backend"] == "jax"
    for name in ("pool_ae", "cnn"):
        for first_or_last in (0, -1):  # the same order of magnitude: initialisations differ between backends
            ratio = on_jax[name][first_or_last] / on_tf[name][first_or_last]
            assert 0.5 < ratio < 2.0, (name, on_jax[name], on_tf[name])
    assert abs(on_jax["cnn_test_accuracy"][0] - on_tf["cnn_test_accuracy"][0]) < 0.3, (on_jax, on_tf)
    # a model trained on JAX is a .keras file that TensorFlow runs to the same outputs: a farm may mix backends
    cnn = keras.saving.load_model(report.with_suffix(".keras"), compile=False)
    again = cnn.predict(digits_300.x_test[:8], verbose=0)
    assert np.allclose(again, on_jax["cnn_probabilities"], atol=1e-5)
