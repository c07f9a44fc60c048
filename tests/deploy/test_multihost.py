"""docker/compose.multihost.yml: the override that spreads docker-compose.yml over several machines.

The machines share nothing but the network: every latentfarm service, on whichever machine it runs, reaches the
same database, broker and S3-compatible bucket (MinIO on the control machine, or the user's own S3), with
passwords, and no directory is shared between machines.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.compose_helpers import (
    COMPOSE,
    MULTIHOST,
    argv,
    bind_mounts,
    body,
    check_jsonschema,
    documented_data_add,
    environment,
    header,
    interpolate,
    invocation,
    merged,
    mounts,
    named_volume_users,
    option,
    variables,
)

LATENTFARM_SERVICES = ("migrate", "scheduler", "api", "worker-gpu", "worker-cpu")
WORKERS = ("worker-gpu", "worker-cpu")
SETTINGS = {  # what the override's header asks for, the same on every machine: each one required
    "LATENTFARM_CONTROL_HOST": "control.example",
    "LATENTFARM_POSTGRES_PASSWORD": "pgsecret",
    "LATENTFARM_REDIS_PASSWORD": "redissecret",
    "LATENTFARM_API_TOKEN": "s3cret",
    "LATENTFARM_S3_ACCESS_KEY": "farmkey",
    "LATENTFARM_S3_SECRET_KEY": "farmsecret42",
}
OWN_S3 = {  # the header's other choice: the user's own bucket, instead of MinIO on the control machine
    "LATENTFARM_ARTIFACTS": "s3://their-bucket/farm",
    "LATENTFARM_S3_ENDPOINT": "https://s3.example.net",
    "LATENTFARM_S3_REGION": "eu-west-3",
}


def resolved(value: Any, env: dict[str, str]) -> Any:
    """``value`` with ``env`` interpolated into every string in it."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [resolved(v, env) for v in value]
    if isinstance(value, dict):
        return {k: resolved(v, env) for k, v in value.items()}
    return value


def farm(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The services on a machine of the farm: each file interpolated with ``env``, then merged, as Compose does."""
    return merged(resolved(yaml.safe_load(COMPOSE.read_text()), env),
                  resolved(yaml.safe_load(MULTIHOST.read_text()), env))


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return farm(SETTINGS)


def test_override_is_valid_against_the_compose_spec() -> None:
    result = check_jsonschema(MULTIHOST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_override_names_only_services_of_the_farm() -> None:
    base = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(yaml.safe_load(MULTIHOST.read_text())["services"]) <= set(base)


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_every_latentfarm_service_reaches_the_control_machine(services: dict[str, dict[str, Any]],
                                                               name: str) -> None:
    env = environment(services[name])
    assert env["LATENTFARM_DATABASE_URL"] == \
        "postgresql+psycopg://latentfarm:pgsecret@control.example:5432/latentfarm"
    assert env["LATENTFARM_BROKER_URL"] == "redis://:redissecret@control.example:6379/0"
    # MinIO on the control machine, by default
    assert env["LATENTFARM_ARTIFACTS"] == "s3://latentfarm/artifacts"
    assert env["LATENTFARM_S3_ENDPOINT"] == "http://control.example:9000"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("farmkey", "farmsecret42")
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    # the paths inside the containers, and the lease, stay those of the single-machine file
    assert env["LATENTFARM_CACHE_DIR"] == "/srv/latentfarm/cache/blobs"
    assert env["LATENTFARM_DATA_DIR"] == "/srv/latentfarm/data"
    assert env["LATENTFARM_LEASE_SECONDS"] == "60"


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_the_settings_read_that_environment(services: dict[str, dict[str, Any]], name: str) -> None:
    from scheduler.settings import Settings

    s = Settings.from_env(environment(services[name]))
    assert s.artifacts == "s3://latentfarm/artifacts" and s.artifacts_dir is None
    assert s.s3_endpoint == "http://control.example:9000"
    assert "farmsecret42" in s.secrets and "pgsecret" in s.secrets and "redissecret" in s.secrets


def test_nothing_is_shared_between_machines(services: dict[str, dict[str, Any]]) -> None:
    assert "LATENTFARM_SHARED_DIR" not in MULTIHOST.read_text()
    assert "volumes" not in yaml.safe_load(MULTIHOST.read_text())  # no volume of its own either
    for name, svc in services.items():
        assert not set(mounts(svc)) & {"/srv/latentfarm/artifacts", "/srv/latentfarm/data"}, name
    # the only path of a machine that a service mounts is the scheduler's ./examples, from the repository
    assert {name: bind_mounts(svc) for name, svc in services.items() if bind_mounts(svc)} == \
        {"scheduler": {"/srv/latentfarm/examples": "./examples"}}


@pytest.mark.parametrize("name", WORKERS)
def test_each_worker_machine_keeps_its_own_cache(services: dict[str, dict[str, Any]], name: str) -> None:
    volumes = yaml.safe_load(COMPOSE.read_text())["volumes"]
    source = mounts(services[name])["/srv/latentfarm/cache"]
    assert named_volume_users(services, volumes)[source] == [name]  # a local volume of the machine it runs on


def test_minio_is_published_with_the_farms_credentials(services: dict[str, dict[str, Any]]) -> None:
    minio = services["minio"]
    assert "9000:9000" in minio["ports"]  # the S3 API, for the workers of the other machines
    assert "127.0.0.1:9001:9001" in minio["ports"]  # the console stays on the control machine's loopback
    env = environment(minio)
    assert (env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]) == ("farmkey", "farmsecret42")
    assert mounts(minio)["/data"] == "minio"


def test_the_bucket_service_logs_in_with_them(services: dict[str, dict[str, Any]]) -> None:
    args = argv(services["bucket"]["command"])
    alias = args[-1].split("/", 1)[0]
    assert environment(services["bucket"])[f"MC_HOST_{alias}"] == "http://farmkey:farmsecret42@minio:9000"


def test_your_own_s3_instead_of_minio() -> None:
    from scheduler.settings import Settings

    for name in LATENTFARM_SERVICES:
        env = environment(farm({**SETTINGS, **OWN_S3})[name])
        assert env["LATENTFARM_ARTIFACTS"] == "s3://their-bucket/farm"
        assert env["LATENTFARM_S3_ENDPOINT"] == "https://s3.example.net"
        assert env["AWS_DEFAULT_REGION"] == "eu-west-3"
        assert Settings.from_env(env).s3_endpoint == "https://s3.example.net"
    # AWS itself: the endpoint set to nothing, so boto3 takes the region's
    env = environment(farm({**SETTINGS, **OWN_S3, "LATENTFARM_S3_ENDPOINT": ""})["worker-gpu"])
    assert env["LATENTFARM_S3_ENDPOINT"] == ""
    assert Settings.from_env(env).s3_endpoint is None
    # and the header says how to start the control machine without MinIO
    assert "--scale minio=0 --scale bucket=0" in " ".join(header(MULTIHOST).split())


def test_the_rest_of_each_service_is_kept(services: dict[str, dict[str, Any]]) -> None:
    assert mounts(services["scheduler"])["/srv/latentfarm/examples"] == "./examples"
    assert argv(services["worker-gpu"]["command"]) == ["worker", "--gpus", "all"]
    assert "devices" in services["worker-gpu"]["deploy"]["resources"]["reservations"]
    assert environment(services["worker-gpu"])["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert services["bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("scheduler", "api", *WORKERS):
        assert services[name]["depends_on"]["bucket"]["condition"] == "service_completed_successfully"


def test_the_api_needs_a_token_of_your_own(services: dict[str, dict[str, Any]]) -> None:
    assert environment(services["api"])["LATENTFARM_API_TOKEN"] == "s3cret"
    assert argv(services["api"]["command"]) == ["serve", "--host", "0.0.0.0", "--port", "8080"]


def test_redis_is_published_with_a_password_and_persistence(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    args = argv(redis["command"])
    assert option(args, "--requirepass") == "redissecret"
    assert option(args, "--appendonly") == "yes"
    assert environment(redis)["REDISCLI_AUTH"] == "redissecret"  # the healthcheck's redis-cli logs in
    assert "6379:6379" in redis["ports"]


def test_postgres_is_published_with_the_password_of_the_url(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert environment(pg)["POSTGRES_PASSWORD"] == "pgsecret"
    assert "5432:5432" in pg["ports"]
    assert mounts(pg)["/var/lib/postgresql/data"] == "postgres"


def test_flower_logs_in_to_the_broker(services: dict[str, dict[str, Any]]) -> None:
    args = argv(services["flower"]["command"])
    assert "--broker=redis://:redissecret@redis:6379/0" in args
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_the_documented_data_add_works_from_any_machine() -> None:
    target, args = documented_data_add(MULTIHOST)
    path, params = invocation(args)
    assert path == ["data", "add"] and params["path"] == target
    assert "--no-deps" in header(MULTIHOST).split("scheduler data add")[0].rsplit("run", 1)[1]  # starts nothing else


@pytest.mark.parametrize("missing", sorted(SETTINGS))
def test_each_setting_is_required(missing: str) -> None:
    # Compose stops with the message of a `${VAR:?message}` that is unset, before it starts anything
    text = body(MULTIHOST)
    assert f"${{{missing}:?" in text
    with pytest.raises(KeyError, match=missing):
        interpolate(text, {k: v for k, v in SETTINGS.items() if k != missing})
    with pytest.raises(KeyError, match=missing):  # set to nothing is missing too
        interpolate(text, {**SETTINGS, missing: ""})


def test_no_other_variable_is_used() -> None:
    assert variables(body(MULTIHOST)) == set(SETTINGS) | set(OWN_S3)
    assert variables(body(COMPOSE)) == set()  # the single-machine file runs as it is
