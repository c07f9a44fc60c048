"""The deployment files: docker-compose.yml is a valid Compose file and wires the farm as the code expects.

Validation uses the Compose specification's JSON schema vendored in ``check-jsonschema`` (offline, no Docker
engine needed); the structural checks read the file with PyYAML, anchors and merge keys resolved.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"

LATENTFARM_SERVICES = ("migrate", "control", "worker-gpu", "worker-cpu")
WORKERS = ("worker-gpu", "worker-cpu")
EXPECTED_ENV = {
    "LATENTFARM_DATABASE_URL": "postgresql+psycopg://latentfarm:latentfarm@postgres:5432/latentfarm",
    "LATENTFARM_BROKER_URL": "redis://redis:6379/0",
    "LATENTFARM_ARTIFACTS": "/srv/latentfarm/artifacts",
    "LATENTFARM_DATA_DIR": "/srv/latentfarm/data",
}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema is in the dev extras")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def argv(value: str | list[Any] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> source (volume name or host path) of a service's volumes, short or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        out[target] = source
    return out


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    return context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- schema ------------------------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_wrong_type(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["flower"]["ports"] = 5
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = check_jsonschema(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ports" in result.stdout + result.stderr


def test_the_validator_rejects_an_unknown_service_key(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["worker-gpu"]["gpu_count"] = 1
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert check_jsonschema(path).returncode == 1


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# --- structure ---------------------------------------------------------------------------------------------


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {"redis", "postgres", "migrate", "control", "worker-gpu", "worker-cpu", "flower"}
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["flower"]["image"].startswith("mher/flower")


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_every_latentfarm_service_shares_env_and_volumes(services: dict[str, dict[str, Any]],
                                                         compose: dict[str, Any], name: str) -> None:
    svc = services[name]
    env = environment(svc)
    assert {k: env.get(k) for k in EXPECTED_ENV} == EXPECTED_ENV
    assert env.get("TF_CPP_MIN_LOG_LEVEL") == "2"
    m = mounts(svc)
    for var in ("LATENTFARM_ARTIFACTS", "LATENTFARM_DATA_DIR"):
        source = m.get(EXPECTED_ENV[var])
        assert source in compose["volumes"], f"{name}: {var} is not on a shared named volume"
    assert m[EXPECTED_ENV["LATENTFARM_ARTIFACTS"]] != m[EXPECTED_ENV["LATENTFARM_DATA_DIR"]]


def test_shared_volumes_are_the_same_everywhere(services: dict[str, dict[str, Any]]) -> None:
    artifacts, data = EXPECTED_ENV["LATENTFARM_ARTIFACTS"], EXPECTED_ENV["LATENTFARM_DATA_DIR"]
    sources = {name: (mounts(services[name])[artifacts], mounts(services[name])[data])
               for name in LATENTFARM_SERVICES}
    assert len(set(sources.values())) == 1, sources


def test_the_env_anchor_matches_the_services(compose: dict[str, Any]) -> None:
    anchor = {k: str(v) for k, v in compose["x-latentfarm-env"].items()}
    assert {k: anchor.get(k) for k in EXPECTED_ENV} == EXPECTED_ENV


def test_broker_and_database_hosts_are_services(services: dict[str, dict[str, Any]]) -> None:
    assert "@postgres:5432/" in EXPECTED_ENV["LATENTFARM_DATABASE_URL"] and "postgres" in services
    assert EXPECTED_ENV["LATENTFARM_BROKER_URL"].startswith("redis://redis:") and "redis" in services
    assert f"--broker={EXPECTED_ENV['LATENTFARM_BROKER_URL']}" in argv(services["flower"]["command"])


def test_postgres_has_a_volume_a_healthcheck_and_the_credentials(services: dict[str, dict[str, Any]],
                                                                   compose: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert mounts(pg).get("/var/lib/postgresql/data") in compose["volumes"]
    assert "pg_isready" in argv(pg["healthcheck"]["test"])
    env = environment(pg)
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == ("latentfarm",) * 3
    assert "redis-cli" in argv(services["redis"]["healthcheck"]["test"])


def test_migrate_runs_db_upgrade_once_after_postgres(services: dict[str, dict[str, Any]]) -> None:
    m = services["migrate"]
    assert argv(m["command"]) == ["db", "upgrade"]
    assert "entrypoint" not in m  # the image's ENTRYPOINT: latentfarm
    assert str(m["restart"]) == "no"
    assert m["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["control", *WORKERS])
def test_depends_on_a_successful_migration(services: dict[str, dict[str, Any]], name: str) -> None:
    deps = services[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["redis"]["condition"] == "service_healthy"


def test_gpu_worker(services: dict[str, dict[str, Any]]) -> None:
    w = services["worker-gpu"]
    args = argv(w["command"])
    assert args[0] == "worker"
    assert option(args, "--pool") == "solo"  # never TensorFlow in a forking parent; one process per GPU
    assert option(args, "--queues") == "gpu"
    assert option(args, "--concurrency") == "1"
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and d["count"] == 1 and "gpu" in d["capabilities"] for d in devices)


def test_cpu_worker(services: dict[str, dict[str, Any]]) -> None:
    w = services["worker-cpu"]
    args = argv(w["command"])
    assert args[0] == "worker"
    assert option(args, "--queues") == "cpu"
    assert "deploy" not in w
    build_args = w["build"]["args"]
    assert build_args["EXTRAS"] == "cpu"
    assert build_args["BASE_IMAGE"].startswith("python:3.11")


def test_workers_and_control_use_their_images(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        assert dockerfile_of(services[name]).name == "worker.Dockerfile"
    for name in ("migrate", "control"):
        assert dockerfile_of(services[name]).name == "control.Dockerfile"
    assert services["worker-gpu"]["image"] != services["worker-cpu"]["image"]
    assert services["migrate"]["image"] == services["control"]["image"]


def test_every_referenced_dockerfile_exists(services: dict[str, dict[str, Any]]) -> None:
    built = [name for name, svc in services.items() if "build" in svc]
    assert set(built) >= set(LATENTFARM_SERVICES)
    for name in built:
        build = services[name]["build"]
        context = REPO / build.get("context", ".")
        assert (context / "pyproject.toml").is_file(), f"{name}: the build context is not the repository"
        assert dockerfile_of(services[name]).is_file(), f"{name}: {dockerfile_of(services[name])} is missing"


def test_bind_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for target, source in mounts(svc).items():
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} (for {target}) is missing"


# --- Dockerfiles -------------------------------------------------------------------------------------------


def test_control_dockerfile_has_no_tensorflow() -> None:
    lines = instructions(REPO / "docker" / "control.Dockerfile")
    assert lines[0] == "FROM python:3.11-slim"
    installs = [cmd.strip() for line in lines for cmd in re.split(r";|&&", line) if "pip install" in cmd]
    assert installs == ["python3 -m pip install --no-cache-dir ."]
    text = "\n".join(lines).lower()
    assert "[cpu]" not in text and "[gpu]" not in text and "extras" not in text
    # the one mention of TensorFlow is the build's check that it is absent
    guard = "find_spec('tensorflow') is not none"
    assert guard in text and "tensorflow" not in text.replace(guard, "")


def test_worker_dockerfile_defaults_to_the_gpu_image() -> None:
    lines = instructions(REPO / "docker" / "worker.Dockerfile")
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:2." in lines[0] and lines[0].endswith("-gpu")
    assert "FROM ${BASE_IMAGE}" in lines
    assert "ARG EXTRAS=gpu" in lines


@pytest.mark.parametrize("name", ["worker.Dockerfile", "control.Dockerfile"])
def test_dockerfiles_run_latentfarm_as_a_user(name: str) -> None:
    lines = instructions(REPO / "docker" / name)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["latentfarm"]' in lines
    text = "\n".join(lines)
    assert "/srv/latentfarm/artifacts" in text and "/srv/latentfarm/data" in text  # owned mount points


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "*.db"} <= patterns
    assert not patterns & {"core", "scheduler", "workers", "storage", "pyproject.toml", "README.md", "docker"}
