"""Fixtures of the chaos tests: real PostgreSQL (a fresh schema), real Redis (the system one on a database number
of their own, or a redis-server of the test's own), and real worker and scheduler processes, every one of which
is killed (its process group) when the test ends, before the schema is dropped."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import services
from tests.chaos.harness import Farm, Processes, RedisServer, TcpProxy

# The system Redis database the chaos tests use (flushed by them); other tests use LATENTFARM_TEST_REDIS_DB (13).
CHAOS_REDIS_DB = int(os.environ.get("LATENTFARM_CHAOS_REDIS_DB", "10"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: kills worker processes, restarts Redis, cuts PostgreSQL away in the middle of a batch "
                   "(real services and processes; about a minute each)")


@pytest.fixture
def procs(tmp_path: Path, pg_url: str) -> Iterator[Processes]:
    """The test's processes. Requests ``pg_url`` so that they are all killed before its schema is dropped."""
    registry = Processes(tmp_path / "logs")
    try:
        yield registry
    finally:
        registry.kill_all()


@pytest.fixture
def system_redis_url() -> Iterator[str]:
    """The system Redis, on database CHAOS_REDIS_DB, flushed before and after."""
    import redis

    url = f"redis://{services.REDIS_HOST}:{services.REDIS_PORT}/{CHAOS_REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.exceptions.ConnectionError:
        services.unavailable(f"Redis at {services.REDIS_HOST}:{services.REDIS_PORT} is not reachable")
    yield url
    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()


@pytest.fixture
def own_redis(procs: Processes, tmp_path: Path) -> RedisServer:
    """A redis-server of the test's own on a free port, without persistence, started."""
    if shutil.which("redis-server") is None:
        services.unavailable("the redis-server program is not installed")
    server = RedisServer(procs, tmp_path)
    server.start()
    return server


@pytest.fixture
def make_farm(tmp_path: Path, pg_url: str, procs: Processes) -> Iterator[Callable[..., Farm]]:
    """``make_farm(broker_url, lease=..., worker_db_url=...)``: a farm on the test's PostgreSQL schema."""
    farms: list[Farm] = []

    def make(broker_url: str, lease: float, worker_db_url: str | None = None) -> Farm:
        farm = Farm(tmp_path, pg_url, broker_url, lease, procs, worker_db_url=worker_db_url)
        farms.append(farm)
        return farm

    yield make
    procs.kill_all()
    for farm in farms:
        farm.close()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the test's PostgreSQL, and the test schema's URL through it (for the workers)."""
    import sqlalchemy as sa

    url = sa.make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.close()
