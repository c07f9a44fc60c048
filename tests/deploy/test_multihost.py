"""docker/compose.multihost.yml: the override that spreads docker-compose.yml over several machines.

Every latentfarm service, on whichever machine it runs, must reach the same database and broker (on the
control machine, with passwords) and read artifacts and datasets from the same shared directory.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.compose_helpers import (
    COMPOSE,
    MULTIHOST,
    argv,
    check_jsonschema,
    environment,
    interpolate,
    merged,
    mounts,
    option,
    variables,
)

LATENTFARM_SERVICES = ("migrate", "scheduler", "api", "worker-gpu", "worker-cpu")
SETTINGS = {  # what the override's header asks for, the same on every machine
    "LATENTFARM_CONTROL_HOST": "control.example",
    "LATENTFARM_POSTGRES_PASSWORD": "pgsecret",
    "LATENTFARM_REDIS_PASSWORD": "redissecret",
    "LATENTFARM_SHARED_DIR": "/mnt/latentfarm",
    "LATENTFARM_API_TOKEN": "s3cret",
}


def resolved(value: Any) -> Any:
    """``value`` with SETTINGS interpolated into every string in it."""
    if isinstance(value, str):
        return interpolate(value, SETTINGS)
    if isinstance(value, list):
        return [resolved(v) for v in value]
    if isinstance(value, dict):
        return {k: resolved(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services on a machine of the farm: each file interpolated with SETTINGS, then merged, as Compose does."""
    return merged(resolved(yaml.safe_load(COMPOSE.read_text())), resolved(yaml.safe_load(MULTIHOST.read_text())))


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
    # the paths inside the containers, and the lease, stay those of the single-machine file
    assert env["LATENTFARM_ARTIFACTS"] == "/srv/latentfarm/artifacts"
    assert env["LATENTFARM_DATA_DIR"] == "/srv/latentfarm/data"
    assert env["LATENTFARM_LEASE_SECONDS"] == "60"


@pytest.mark.parametrize("name", LATENTFARM_SERVICES)
def test_every_latentfarm_service_mounts_the_shared_directory(services: dict[str, dict[str, Any]],
                                                              name: str) -> None:
    m = mounts(services[name])
    assert m["/srv/latentfarm/artifacts"] == "/mnt/latentfarm/artifacts"
    assert m["/srv/latentfarm/data"] == "/mnt/latentfarm/data"


def test_the_rest_of_each_service_is_kept(services: dict[str, dict[str, Any]]) -> None:
    assert mounts(services["scheduler"])["/srv/latentfarm/examples"] == "./examples"
    assert argv(services["worker-gpu"]["command"]) == ["worker", "--gpus", "all"]
    assert "devices" in services["worker-gpu"]["deploy"]["resources"]["reservations"]
    assert environment(services["worker-gpu"])["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


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


@pytest.mark.parametrize("missing", sorted(SETTINGS))
def test_each_setting_is_required(missing: str) -> None:
    # Compose stops with the message of a `${VAR:?message}` that is unset, before it starts anything
    text = MULTIHOST.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert f"${{{missing}:?" in body
    with pytest.raises(KeyError, match=missing):
        interpolate(body, {k: v for k, v in SETTINGS.items() if k != missing})


def test_no_other_variable_is_used() -> None:
    body = "\n".join(line for line in MULTIHOST.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert variables(body) == set(SETTINGS)
    assert variables(COMPOSE.read_text()) == set()  # the single-machine file runs as it is
