"""The JAX worker image (docker/worker-jax.Dockerfile) beside the TensorFlow one: it runs the worker on JAX with
CUDA, installs the project's jax extra and no TensorFlow, and its default command is one the CLI accepts."""

from __future__ import annotations

import re

import yaml

from tests.deploy.compose_helpers import REPO, instructions, invocation

DOCKERFILE = REPO / "docker" / "worker-jax.Dockerfile"


def test_the_jax_image_runs_the_worker_on_jax_without_tensorflow() -> None:
    lines = instructions(DOCKERFILE)
    assert lines[0] == "FROM python:3.11-slim" and "ARG JAX=jax[cuda12]" in lines
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert "LATENTFARM_BACKEND=jax" in env.split()
    installs = [cmd.strip() for line in lines for cmd in re.split(r";|&&", line) if "pip install" in cmd]
    assert installs == ['python3 -m pip install --no-cache-dir ".[jax]" "${JAX}"']
    text = "\n".join(lines).lower()
    guard = "find_spec('tensorflow') is not none"  # the build fails if TensorFlow came in
    assert guard in text and "tensorflow" not in text.replace(guard, "")
    # the copied sources exist, and the image runs latentfarm as its user on the TensorFlow image's command
    for source in (line.split()[1] for line in lines if line.startswith("COPY ")):
        assert (REPO / source).exists(), source
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and 'ENTRYPOINT ["latentfarm"]' in lines
    cmd = [line for line in lines if line.startswith("CMD ")]
    assert cmd == [line for line in instructions(REPO / "docker" / "worker.Dockerfile") if line.startswith("CMD ")]
    invocation(yaml.safe_load(cmd[0][len("CMD "):]))


def test_the_jax_extra_brings_jax_and_keras_only() -> None:
    text = (REPO / "pyproject.toml").read_text()
    extra = re.search(r"^jax\s*=\s*\[(.*?)\]", text, re.M)
    assert extra is not None
    names = {re.split(r"[<>=\[]", item.strip().strip('"'))[0] for item in extra.group(1).split(",") if item.strip()}
    assert names == {"jax", "keras"}
