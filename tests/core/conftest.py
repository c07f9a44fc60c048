"""Shared fixtures for the core tests: the small digits dataset and the shared MNIST file; the Keras backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets import Dataset, load_dataset
from workers.framework import choose_backend

# Keras' backend is fixed when Keras is first imported, which no core test module has done yet: these tests run on
# LATENTFARM_BACKEND's backend (tensorflow by default; tests/core/test_jax_backend.py runs a subset on jax).
if choose_backend() != "tensorflow":
    from core.backend import keep_tensorflow_out

    keep_tensorflow_out()  # as a worker does: a JAX process never imports TensorFlow

# The data lives outside the project (next to the repository) and is never copied into it.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MNIST_PATH = SHARED_DATA / "mnist.npz"


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    if not MNIST_PATH.is_file():  # fail, not skip: a missing data file must not pass silently
        pytest.fail(f"shared MNIST file not found at {MNIST_PATH}")
    return MNIST_PATH


@pytest.fixture(scope="session")
def digits_300() -> Dataset:
    """The first 300 training (and 300 test) digits: big enough to learn from, small enough to be quick."""
    return load_dataset("digits", limit=300)
