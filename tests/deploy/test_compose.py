"""The deployment files: docker-compose.yml is a valid Compose file and wires the farm as the code expects.

Validation uses the Compose specification's JSON schema vendored in ``check-jsonschema`` (offline, no Docker
engine needed); the structural checks read the file with PyYAML, anchors and merge keys resolved. Each
service's command line is parsed by the real CLI (``scheduler.cli.cli``), so an option the CLI does not have
fails here rather than in a container.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose_helpers import (
    COMPOSE,
    REPO,
    argv,
    check_jsonschema,
    dockerfile_of,
    environment,
    instructions,
    invocation,
    mounts,
    option,
)

LATENTFARM_SERVICES = ("migrate", "scheduler", "api", "worker-gpu", "worker-cpu")
WORKERS = ("worker-gpu", "worker-cpu")
EXPECTED_ENV = {
    "LATENTFARM_DATABASE_URL": "postgresql+psycopg://latentfarm:latentfarm@postgres:5432/latentfarm",
    "LATENTFARM_BROKER_URL": "redis://redis:6379/0",
    "LATENTFARM_ARTIFACTS": "/srv/latentfarm/artifacts",
    "LATENTFARM_DATA_DIR": "/srv/latentfarm/data",
    "LATENTFARM_LEASE_SECONDS": "60",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# --- schema ------------------------------------------------------------------------------------------------


def test_check_jsonschema_is_a_dev_dependency() -> None:
    text = (REPO / "pyproject.toml").read_text()
    dev = re.search(r"^dev\s*=\s*\[(.*?)\]", text, re.S | re.M)
    assert dev and "check-jsonschema" in dev.group(1)


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
    assert set(services) >= {"redis", "postgres", "migrate", "scheduler", "worker-gpu", "worker-cpu", "flower"}
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


def test_the_settings_read_that_environment() -> None:
    from scheduler.settings import Settings

    s = Settings.from_env(EXPECTED_ENV)
    assert not s.embedded
    assert (s.database_url, s.broker_url) == (EXPECTED_ENV["LATENTFARM_DATABASE_URL"],
                                              EXPECTED_ENV["LATENTFARM_BROKER_URL"])
    assert str(s.artifacts_dir) == EXPECTED_ENV["LATENTFARM_ARTIFACTS"]
    assert str(s.data_dir) == EXPECTED_ENV["LATENTFARM_DATA_DIR"]
    assert s.lease_seconds == float(EXPECTED_ENV["LATENTFARM_LEASE_SECONDS"])


def test_broker_and_database_hosts_are_services(services: dict[str, dict[str, Any]]) -> None:
    assert "@postgres:5432/" in EXPECTED_ENV["LATENTFARM_DATABASE_URL"] and "postgres" in services
    assert EXPECTED_ENV["LATENTFARM_BROKER_URL"].startswith("redis://redis:") and "redis" in services
    assert f"--broker={EXPECTED_ENV['LATENTFARM_BROKER_URL']}" in argv(services["flower"]["command"])


def test_redis_persists_its_queues(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    redis = services["redis"]
    args = argv(redis["command"])
    assert args[0] == "redis-server"
    assert option(args, "--appendonly") == "yes"
    assert mounts(redis).get("/data") in compose["volumes"]
    assert "redis-cli" in argv(redis["healthcheck"]["test"])


def test_postgres_has_a_volume_a_healthcheck_and_the_credentials(services: dict[str, dict[str, Any]],
                                                                   compose: dict[str, Any]) -> None:
    pg = services["postgres"]
    assert mounts(pg).get("/var/lib/postgresql/data") in compose["volumes"]
    assert "pg_isready" in argv(pg["healthcheck"]["test"])
    env = environment(pg)
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == ("latentfarm",) * 3


def test_migrate_runs_db_upgrade_once_after_postgres(services: dict[str, dict[str, Any]]) -> None:
    m = services["migrate"]
    assert argv(m["command"]) == ["db", "upgrade"]
    assert "entrypoint" not in m  # the image's ENTRYPOINT: latentfarm
    assert str(m["restart"]) == "no"
    assert m["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["scheduler", *WORKERS])
def test_depends_on_a_successful_migration(services: dict[str, dict[str, Any]], name: str) -> None:
    deps = services[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["redis"]["condition"] == "service_healthy"


def test_scheduler(services: dict[str, dict[str, Any]]) -> None:
    s = services["scheduler"]
    assert argv(s["command"])[0] == "scheduler"
    assert "entrypoint" not in s  # `docker compose exec scheduler latentfarm ...` runs any CLI command
    assert str(s["restart"]) == "unless-stopped"
    assert mounts(s).get("/srv/latentfarm/examples") == "./examples"


def test_gpu_worker(services: dict[str, dict[str, Any]]) -> None:
    w = services["worker-gpu"]
    args = argv(w["command"])
    assert args[0] == "worker"
    assert option(args, "--gpus") == "all"  # one pinned solo-pool process per GPU the container has
    assert option(args, "--cpu") is None
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert len(nvidia) == 1
    assert str(nvidia[0].get("count")) == "all" and "device_ids" not in nvidia[0]  # every GPU of the host
    env = environment(w)
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # CUDA's numbering is nvidia-smi's
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"]  # nvidia-smi, which lists the GPUs
    build_args = w["build"]["args"]
    assert build_args["EXTRAS"] == "gpu"
    assert re.fullmatch(r"tensorflow/tensorflow:2\.\d+\.\d+-gpu", build_args["BASE_IMAGE"])


def test_cpu_worker(services: dict[str, dict[str, Any]]) -> None:
    w = services["worker-cpu"]
    args = argv(w["command"])
    assert args[0] == "worker"
    assert int(option(args, "--cpu") or 0) >= 1
    assert option(args, "--gpus") is None
    assert "deploy" not in w
    build_args = w["build"]["args"]
    assert build_args["EXTRAS"] == "cpu"
    assert build_args["BASE_IMAGE"].startswith("python:3.11")


def seconds(duration: str) -> float:
    """A Compose duration such as ``1m30s`` in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(a + u for a, u in parts) == duration, duration
    return sum(float(a) * units[u] for a, u in parts)


@pytest.mark.parametrize("name", WORKERS)
def test_workers_stop_gracefully_but_not_forever(services: dict[str, dict[str, Any]], name: str) -> None:
    # Jobs are acked late and resume from checkpoints: a stop need not wait for a whole job.
    assert 10 <= seconds(services[name]["stop_grace_period"]) <= 600
    assert services[name]["init"] is True  # signals reach latentfarm, not a shell


def test_flower_sees_task_events(services: dict[str, dict[str, Any]]) -> None:
    from scheduler.celery_app import make_celery
    from scheduler.settings import Settings

    assert "flower" in argv(services["flower"]["command"])
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]  # no authentication: localhost only
    conf = make_celery(Settings.from_env(EXPECTED_ENV)).conf
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True


def test_workers_and_scheduler_use_their_images(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        assert dockerfile_of(services[name]).name == "worker.Dockerfile"
    for name in ("migrate", "scheduler", "api"):
        assert dockerfile_of(services[name]).name == "control.Dockerfile"
    assert services["worker-gpu"]["image"] != services["worker-cpu"]["image"]
    assert services["migrate"]["image"] == services["scheduler"]["image"]


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


# --- the command lines against the real CLI ----------------------------------------------------------------


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_every_command_is_one_the_cli_accepts(services: dict[str, dict[str, Any]], name: str) -> None:
    invocation(argv(services[name]["command"]))


def test_the_cli_reads_the_migration_command(services: dict[str, dict[str, Any]]) -> None:
    assert invocation(argv(services["migrate"]["command"]))[0] == ["db", "upgrade"]


def test_the_cli_reads_the_scheduler_command(services: dict[str, dict[str, Any]]) -> None:
    assert invocation(argv(services["scheduler"]["command"]))[0] == ["scheduler"]


def test_the_cli_reads_the_gpu_worker_command(services: dict[str, dict[str, Any]]) -> None:
    path, params = invocation(argv(services["worker-gpu"]["command"]))
    assert path == ["worker"] and params["--gpus"] == "all"
    assert not params["--cpu"]


def test_the_cli_reads_the_cpu_worker_command(services: dict[str, dict[str, Any]]) -> None:
    path, params = invocation(argv(services["worker-cpu"]["command"]))
    assert path == ["worker"] and int(params["--cpu"]) == 2
    assert params["--gpus"] is None


def test_api(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    path, params = invocation(argv(api["command"]))
    assert path == ["serve"] and params["--host"] == "0.0.0.0"
    # listening beyond loopback needs a token (`latentfarm serve` refuses otherwise); published on loopback only
    assert environment(api).get("LATENTFARM_API_TOKEN")
    assert api["ports"] == [f"127.0.0.1:{params['--port']}:{params['--port']}"]
    assert "/api/v1/health" in " ".join(api["healthcheck"]["test"])


def test_the_cli_refuses_an_unknown_option() -> None:
    # the check above is real: a made-up option is refused by the same parse
    with pytest.raises(pytest.fail.Exception, match="--no-such-option"):
        invocation(["worker", "--no-such-option"])
    with pytest.raises(pytest.fail.Exception, match="no-such-command"):
        invocation(["no-such-command"])


@pytest.mark.parametrize("name", ["worker.Dockerfile", "control.Dockerfile"])
def test_the_images_default_command_is_one_the_cli_accepts(name: str) -> None:
    cmd = [line for line in instructions(REPO / "docker" / name) if line.startswith("CMD ")][-1]
    invocation(yaml.safe_load(cmd[len("CMD "):]))  # a JSON array


# --- Dockerfiles -------------------------------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "USER", "ENTRYPOINT", "CMD", "LABEL",
                "EXPOSE", "VOLUME", "HEALTHCHECK", "SHELL", "STOPSIGNAL", "ONBUILD"}


@pytest.mark.parametrize("name", ["worker.Dockerfile", "control.Dockerfile"])
def test_dockerfiles_are_plausible(name: str) -> None:
    lines = instructions(REPO / "docker" / name)
    keywords = [line.split(None, 1)[0].upper() for line in lines]
    assert set(keywords) <= INSTRUCTIONS, set(keywords) - INSTRUCTIONS
    assert "FROM" in keywords and set(keywords[:keywords.index("FROM")]) <= {"ARG"}  # only ARGs before FROM
    assert keywords.count("ENTRYPOINT") == 1 and keywords.count("CMD") == 1
    for line in lines:
        if line.split(None, 1)[0] in ("ENTRYPOINT", "CMD"):  # exec form: signals reach latentfarm
            assert isinstance(yaml.safe_load(line.split(None, 1)[1]), list), line
    copied = [line.split()[1] for line in lines if line.startswith("COPY ")]
    for source in copied:
        assert (REPO / source).exists(), f"{name}: COPY {source}: not in the build context"


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


def test_the_control_plane_needs_no_tensorflow() -> None:
    # the project's own dependencies (what the control image installs) leave TensorFlow to the extras
    text = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    assert deps and "tensorflow" not in deps.group(1).lower() and "keras" not in deps.group(1).lower()


def test_worker_dockerfile_defaults_to_the_gpu_image() -> None:
    lines = instructions(REPO / "docker" / "worker.Dockerfile")
    assert "ARG BASE_IMAGE=tensorflow/tensorflow:2." in lines[0] and lines[0].endswith("-gpu")
    assert "FROM ${BASE_IMAGE}" in lines
    assert "ARG EXTRAS=gpu" in lines
    assert 'CMD ["worker", "--gpus", "all"]' in lines


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
    assert {".venv", ".git", "*.db", ".env"} <= patterns
    assert not patterns & {"core", "scheduler", "workers", "storage", "pyproject.toml", "README.md", "docker"}
