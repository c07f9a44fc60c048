"""The deployment files: docker-compose.yml is a valid Compose file and wires the farm as the code expects: the
services share nothing but the network (artifacts and datasets in MinIO's bucket, a read cache per service).

Validation uses the Compose specification's JSON schema vendored in ``check-jsonschema`` (offline, no Docker
engine needed); the structural checks read the file with PyYAML, anchors and merge keys resolved. Each
service's command line is parsed by the real CLI (``scheduler.cli.cli``), so an option the CLI does not have
fails here rather than in a container.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.compose_helpers import (
    COMPOSE,
    REPO,
    argv,
    bind_mounts,
    body,
    check_jsonschema,
    dockerfile_of,
    documented_data_add,
    environment,
    instructions,
    invocation,
    mounts,
    named_volume_users,
    option,
    variables,
)

LATENTFARM_SERVICES = ("migrate", "scheduler", "api", "worker-gpu", "worker-cpu")
WORKERS = ("worker-gpu", "worker-cpu")
CACHED = (*WORKERS, "api")  # the services that read blobs through a cache volume of their own
EXPECTED_ENV = {
    "LATENTFARM_DATABASE_URL": "postgresql+psycopg://latentfarm:latentfarm@postgres:5432/latentfarm",
    "LATENTFARM_BROKER_URL": "redis://redis:6379/0",
    "LATENTFARM_ARTIFACTS": "s3://latentfarm/artifacts",
    "LATENTFARM_S3_ENDPOINT": "http://minio:9000",
    "AWS_ACCESS_KEY_ID": "latentfarm",
    "AWS_SECRET_ACCESS_KEY": "latentfarm-dev",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LATENTFARM_CACHE_DIR": "/srv/latentfarm/cache/blobs",
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
    assert set(services) >= {"redis", "postgres", "minio", "bucket", "migrate", "scheduler", "worker-gpu",
                             "worker-cpu", "flower"}
    assert services["redis"]["image"].startswith("redis:7")
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["flower"]["image"].startswith("mher/flower")


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_every_latentfarm_service_shares_the_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    assert {k: env.get(k) for k in EXPECTED_ENV} == EXPECTED_ENV
    assert env.get("TF_CPP_MIN_LOG_LEVEL") == "2"
    assert env["LATENTFARM_ARTIFACTS"].startswith("s3://")
    # the bucket is reached over the compose network: nothing of the store is mounted
    assert not set(mounts(services[name])) & {"/srv/latentfarm/artifacts", EXPECTED_ENV["LATENTFARM_DATA_DIR"]}


def test_no_artifact_or_data_volume_anywhere(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    assert not {"artifacts", "data"} & set(compose["volumes"])
    for name, svc in services.items():
        for target, source in mounts(svc).items():
            assert "artifacts" not in target and not target.startswith(EXPECTED_ENV["LATENTFARM_DATA_DIR"]), \
                f"{name} mounts {source} at {target}"


def test_no_volume_is_shared_between_services(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    users = named_volume_users(services, compose["volumes"])
    assert all(len(names) == 1 for names in users.values()), users  # and none is declared and left unused


def test_the_only_bind_mount_is_the_schedulers_examples(services: dict[str, dict[str, Any]]) -> None:
    binds = {name: bind_mounts(svc) for name, svc in services.items() if bind_mounts(svc)}
    assert binds == {"scheduler": {"/srv/latentfarm/examples": "./examples"}}
    assert "./examples:/srv/latentfarm/examples:ro" in services["scheduler"]["volumes"]  # read-only


@pytest.mark.parametrize("name", CACHED)
def test_each_reader_of_blobs_keeps_its_own_cache(services: dict[str, dict[str, Any]], compose: dict[str, Any],
                                                  name: str) -> None:
    cache = Path(environment(services[name])["LATENTFARM_CACHE_DIR"])
    # the cache and the registered folders extracted beside it (datasets/, in the cache dir's parent)
    source = mounts(services[name]).get(str(cache.parent), "")
    assert source in compose["volumes"], f"{name}: {cache.parent} is not on a named volume"
    assert named_volume_users(services, compose["volumes"])[source] == [name]


def test_minio(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    minio = services["minio"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"])  # pinned
    args = argv(minio["command"])
    assert args[:2] == ["server", "/data"] and option(args, "--console-address") == ":9001"
    assert mounts(minio).get("/data") in compose["volumes"]
    assert argv(minio["healthcheck"]["test"]) == ["CMD", "mc", "ready", "local"]
    assert str(minio["restart"]) == "unless-stopped"
    env = environment(minio)
    # the root credentials are the ones every latentfarm service signs its requests with
    assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == \
        (EXPECTED_ENV["AWS_ACCESS_KEY_ID"], EXPECTED_ENV["AWS_SECRET_ACCESS_KEY"])
    assert len(env["MINIO_ROOT_USER"]) >= 3 and len(env["MINIO_ROOT_PASSWORD"]) >= 8  # or MinIO refuses to start
    # the S3 API on the compose network only, like PostgreSQL and Redis; the console on loopback
    assert minio["ports"] == ["127.0.0.1:9001:9001"]


def test_the_endpoint_is_the_minio_service(services: dict[str, dict[str, Any]]) -> None:
    endpoint = urlsplit(EXPECTED_ENV["LATENTFARM_S3_ENDPOINT"])
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", "minio", 9000)
    assert endpoint.hostname in services


def test_the_bucket_service_creates_the_artifact_stores_bucket(services: dict[str, dict[str, Any]]) -> None:
    from storage.artifacts import parse_bucket

    bucket = services["bucket"]
    assert re.fullmatch(r"quay\.io/minio/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", bucket["image"])  # pinned
    assert "entrypoint" not in bucket  # the image's: mc
    args = argv(bucket["command"])
    assert args[0] == "mb" and "--ignore-existing" in args  # a second `up` finds it there and succeeds
    alias, name = args[-1].split("/", 1)
    assert name == parse_bucket(EXPECTED_ENV["LATENTFARM_ARTIFACTS"])[0]
    # mc reads the server and the credentials of ALIAS from MC_HOST_<ALIAS>
    url = urlsplit(environment(bucket)[f"MC_HOST_{alias}"])
    endpoint = urlsplit(EXPECTED_ENV["LATENTFARM_S3_ENDPOINT"])
    assert (url.scheme, url.hostname, url.port) == (endpoint.scheme, endpoint.hostname, endpoint.port)
    assert (url.username, url.password) == (EXPECTED_ENV["AWS_ACCESS_KEY_ID"], EXPECTED_ENV["AWS_SECRET_ACCESS_KEY"])
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert str(bucket["restart"]) == "no"


def test_the_env_anchor_matches_the_services(compose: dict[str, Any]) -> None:
    anchor = {k: str(v) for k, v in compose["x-latentfarm-env"].items()}
    assert {k: anchor.get(k) for k in EXPECTED_ENV} == EXPECTED_ENV


def test_the_settings_read_that_environment() -> None:
    from scheduler.settings import Settings
    from storage.s3store import S3Store

    s = Settings.from_env(EXPECTED_ENV)
    assert not s.embedded
    assert (s.database_url, s.broker_url) == (EXPECTED_ENV["LATENTFARM_DATABASE_URL"],
                                              EXPECTED_ENV["LATENTFARM_BROKER_URL"])
    assert s.artifacts == EXPECTED_ENV["LATENTFARM_ARTIFACTS"] and s.artifacts_dir is None  # a bucket
    assert s.s3_endpoint == EXPECTED_ENV["LATENTFARM_S3_ENDPOINT"]
    assert str(s.cache_dir) == EXPECTED_ENV["LATENTFARM_CACHE_DIR"]
    assert str(s.data_dir) == EXPECTED_ENV["LATENTFARM_DATA_DIR"]
    assert s.lease_seconds == float(EXPECTED_ENV["LATENTFARM_LEASE_SECONDS"])
    assert EXPECTED_ENV["AWS_SECRET_ACCESS_KEY"] in s.secrets  # masked in errors and logs
    store = s.artifact_store()  # its client is made on first use: nothing is sent here
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint) == ("latentfarm", "artifacts", "http://minio:9000")


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


@pytest.mark.parametrize("name", ["scheduler", "api", *WORKERS])
def test_depends_on_a_successful_migration_and_the_bucket(services: dict[str, dict[str, Any]], name: str) -> None:
    deps = services[name]["depends_on"]
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert deps["redis"]["condition"] == "service_healthy"
    assert deps["bucket"]["condition"] == "service_completed_successfully"  # which waits for MinIO's health


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


def test_the_documented_data_add_registers_a_dataset(services: dict[str, dict[str, Any]]) -> None:
    # the header's `docker compose run ... scheduler data add NAME PATH`: the CLI accepts it, and PATH is the
    # mounted file, inside LATENTFARM_DATA_DIR (`data add` reads files there or in the working directory only)
    target, args = documented_data_add(COMPOSE)
    path, params = invocation(args)
    assert path == ["data", "add"] and params["path"] == target
    assert Path(target).parent == Path(environment(services["scheduler"])["LATENTFARM_DATA_DIR"])


def test_the_file_needs_no_variable() -> None:
    assert variables(body(COMPOSE)) == set()  # the single-machine file runs as it is


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


@pytest.mark.parametrize("name", CACHED)
def test_the_cache_volume_starts_owned_by_the_user(services: dict[str, dict[str, Any]], name: str) -> None:
    # an empty named volume takes the ownership of the image's directory it is mounted on: the image must create
    # that directory and hand it to its user, or the cache is root's and every download fails
    target = next(t for t, source in mounts(services[name]).items() if source.endswith("-cache"))
    lines = instructions(dockerfile_of(services[name]))
    made = [line for line in lines if line.startswith("RUN ") and "mkdir -p" in line]
    assert any(target in re.split(r"[\s;]+", line) and "chown -R latentfarm:latentfarm /srv/latentfarm" in line
               for line in made), f"{dockerfile_of(services[name]).name} does not create {target} for its user"
    assert target == str(Path(EXPECTED_ENV["LATENTFARM_CACHE_DIR"]).parent)
    env = [line for line in lines if line.startswith("ENV ")]
    assert any(f"LATENTFARM_CACHE_DIR={EXPECTED_ENV['LATENTFARM_CACHE_DIR']}" in line for line in env)


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "*.db", ".env"} <= patterns
    assert not patterns & {"core", "scheduler", "workers", "storage", "pyproject.toml", "README.md", "docker"}
