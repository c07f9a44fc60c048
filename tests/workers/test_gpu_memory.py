"""A worker sharing its GPU (``--per-gpu K``) keeps to its share of the device's memory, set before the framework
is imported: JAX through its memory fraction, TensorFlow through a logical device's limit (where it sees a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workers import framework

REPO = Path(__file__).resolve().parents[2]
XLA = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (*XLA, "LATENTFARM_GPU_MEMORY_FRACTION", "LATENTFARM_GPU_MEMORY", "LATENTFARM_BACKEND",
                "KERAS_BACKEND"):
        monkeypatch.setenv(var, "")  # recorded, so that what the code under test sets is undone after
        monkeypatch.delenv(var)
    return monkeypatch


def test_jax_gets_the_share_as_its_memory_fraction(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("LATENTFARM_BACKEND", "jax")
    clean.setenv("LATENTFARM_GPU_MEMORY_FRACTION", "0.3000")
    framework._limit_gpu_memory()
    assert [os.environ.get(v) for v in XLA] == ["0.3000", "0.3000", "false"]
    clean.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.2")  # the supervisor's own value is kept
    framework._limit_gpu_memory()
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2"


def test_no_share_no_change(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("LATENTFARM_BACKEND", "jax")
    framework._limit_gpu_memory()
    assert not any(v in os.environ for v in XLA)


def test_tensorflow_without_a_gpu_runs_as_it_is() -> None:
    code = textwrap.dedent("""
        import os
        os.environ.update(LATENTFARM_GPU_MEMORY_FRACTION="0.45", CUDA_VISIBLE_DEVICES="")
        from workers import framework
        framework.load()
        import tensorflow as tf
        print(len(tf.config.list_logical_devices("GPU")), len(tf.config.list_logical_devices("CPU")))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "LATENTFARM_BACKEND")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "1"]


def test_the_device_total_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert framework._device_memory_mib("0") is None  # no NVML here, no nvidia-smi
    fake = tmp_path / "nvidia-smi"  # answers for the GPU it is asked about (-i INDEX)
    fake.write_text('#!/bin/sh\n[ "$2" = 1 ] && echo 40960 || echo 81559\n')
    fake.chmod(0o755)
    assert framework._device_memory_mib("1") == 40960 and framework._device_memory_mib("0") == 81559
