"""The worker's Keras backend: LATENTFARM_BACKEND (else KERAS_BACKEND, else tensorflow), set before Keras is
imported; a bad value or a Keras already imported on another backend is a clear error."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import services
from workers import framework

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "tensorflow"),
    ({"LATENTFARM_BACKEND": "jax"}, "jax"),
    ({"LATENTFARM_BACKEND": " JAX "}, "jax"),
    ({"KERAS_BACKEND": "jax"}, "jax"),
    ({"LATENTFARM_BACKEND": "tensorflow", "KERAS_BACKEND": "jax"}, "tensorflow"),
])
def test_backend_name(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name in ("LATENTFARM_BACKEND", "KERAS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert framework.backend_name() == expected


@pytest.mark.parametrize("bad", ["torch", "tf"])
def test_a_backend_core_does_not_run_on_is_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("LATENTFARM_BACKEND", bad)
    with pytest.raises(ValueError, match=f"^LATENTFARM_BACKEND must be tensorflow or jax, got '{bad}'$"):
        framework.backend_name()


def test_load_imports_keras_on_the_chosen_backend_and_no_tensorflow_on_jax() -> None:
    services.require(importlib.util.find_spec("jax") is not None, "JAX is not installed (pip install -e '.[jax]')")
    code = textwrap.dedent("""
        import os, sys
        os.environ["LATENTFARM_BACKEND"] = "jax"
        os.environ.pop("KERAS_BACKEND", None)
        from workers import framework
        framework.load()
        import keras
        assert keras.backend.backend() == "jax" and os.environ["KERAS_BACKEND"] == "jax"
        keras.utils.set_random_seed(1)  # would import TensorFlow to seed it, were it not kept out
        assert "tensorflow" not in sys.modules
        os.environ["LATENTFARM_BACKEND"] = "tensorflow"
        try:
            framework.choose_backend()
        except RuntimeError as e:
            print(e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "LATENTFARM_BACKEND is tensorflow, but this process imported Keras on jax before"
