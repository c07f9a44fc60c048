"""One batch of every kind through the CLI's embedded worker on Keras' JAX backend, where TensorFlow cannot be
imported at all: what a GPU machine with JAX and no TensorFlow runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests import services
from tests.conftest import SHARED_DATA
from tests.e2e.cli import clean_env, run, run_json

pytestmark = pytest.mark.timeout(600)

SPEC = """\
batch: on-jax
defaults: {max_attempts: 1, params: {batch_size: 64}}
jobs:
  - {name: ae, kind: train, params: {model: conv_ae, dataset: digits, limit: 300, z_dim: 8, epochs: 2,
                                     filters: [8, 16, 32]}}
  - {name: cnn, kind: train, params: {model: cnn, dataset: digits, limit: 300, epochs: 2, filters: [8, 16]}}
  - {name: latents, kind: encode, needs: [ae]}
  - {name: samples, kind: sample, needs: [latents, cnn], params: {sampler: fitted_normal, n: 64, grid: 16}}
  - {name: kmeans, kind: cluster, needs: [latents], params: {k: 10}}
  - name: dream
    kind: dream
    needs: [cnn]
    params: {image: dream_input.jpg, levels: 1, iterations: 1, size: 56, maps: 4, epochs: {0: 3, 1: 2}}
"""


def test_a_batch_of_every_kind_runs_on_jax_without_tensorflow(tmp_path: Path) -> None:
    services.require(importlib.util.find_spec("jax") is not None, "JAX is not installed (pip install -e '.[jax]')")
    # A "tensorflow" that fails to import, ahead of the installed one: the run must not need it.
    stub = tmp_path / "no-tensorflow" / "tensorflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("TensorFlow is not installed on this machine")\n')
    env = clean_env(LATENTFARM_BACKEND="jax", LATENTFARM_DATA_DIR=str(SHARED_DATA),
                    PYTHONPATH=str(stub.parent))
    (tmp_path / "jax.yaml").write_text(SPEC)

    proc = run(["submit", "jax.yaml", "--wait"], tmp_path, env=env, timeout=540)
    assert "batch 1 'on-jax': succeeded" in proc.stdout, proc.stdout + proc.stderr
    assert "TensorFlow" not in proc.stderr  # nothing tried to import it
    jobs = {j["name"]: j for j in run_json(["status", "1"], tmp_path, env)["jobs"]}
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    assert {"ae", "cnn", "latents", "samples", "kmeans"} <= set(jobs)
    assert any(name.startswith("dream") and j["kind"] == "dream_tile" for name, j in jobs.items())

    def metrics(name: str) -> dict[tuple[str, int], float]:
        shown = run_json(["show", str(jobs[name]["id"])], tmp_path, env)
        return {(m["key"], m["step"] or 0): m["value"] for m in shown["metrics"]}

    ae, cnn = metrics("ae"), metrics("cnn")
    assert ae[("loss", 2)] < ae[("loss", 1)] < 1.0  # BCE of pixels in [0, 1] from ln 2 ~ 0.69 down
    assert cnn[("loss", 2)] < cnn[("loss", 1)] and cnn[("test_accuracy", 0)] > 0.2  # ten classes: chance 0.1
    tiles = [j for j in jobs.values() if j["kind"] == "dream_tile"]
    assert len(tiles) == 1 + 4
    assert all(metrics(t["name"])[("gain", 0)] >= 0 for t in tiles)  # OIP undoes a step that lowers the map
