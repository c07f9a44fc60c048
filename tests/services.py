"""Real services for tests: Redis on a dedicated database number, PostgreSQL in a throwaway schema.

A test that needs a service which cannot be reached, or a program that is not installed (Chromium, redis-server,
check-jsonschema), is skipped locally and FAILS in CI (CI=true): a CI run must never pass by silently skipping what
it was meant to check. ``unavailable`` and ``require`` are that rule, for every test.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

REDIS_HOST = os.environ.get("LATENTFARM_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("LATENTFARM_TEST_REDIS_PORT", "6379"))
# Dedicated to the tests, flushed by them: one per pytest-xdist worker (gw0: 13, gw1: 14, gw2: 15, gw3: 11), so
# tests running side by side never flush each other's queues; LATENTFARM_TEST_REDIS_DB=N: N, N + 1, ... instead.
# The chaos tests use their own (10, tests/chaos), the benchmarks theirs (12).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_DBS = (13, 14, 15, 11)
if "LATENTFARM_TEST_REDIS_DB" in os.environ:
    REDIS_DB = int(os.environ["LATENTFARM_TEST_REDIS_DB"]) + _WORKER
elif _WORKER < len(_DBS):
    REDIS_DB = _DBS[_WORKER]
else:
    raise RuntimeError(f"pytest-xdist worker {_WORKER}: no Redis database left for it; run at most {len(_DBS)} workers")
if REDIS_DB > 15:
    raise RuntimeError(f"pytest-xdist worker {_WORKER} would use Redis database {REDIS_DB} (0-15 exist)")
PG_URL = os.environ.get("LATENTFARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI: ``reason`` says what is missing (a service down, a program not installed)."""
    if in_ci():
        pytest.fail(f"{reason}, and CI must not skip tests that need it")
    pytest.skip(reason)


def require(ok: bool, reason: str) -> None:
    """``unavailable(reason)`` unless ``ok``."""
    if not ok:
        unavailable(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_url() -> str:
    """The URL of the test Redis database, flushed. Skips (locally) or fails (CI) if Redis is down."""
    import redis

    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.exceptions.ConnectionError:
        unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable")
    return url


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema, dropped afterwards."""
    import sqlalchemy as sa

    base = sa.make_url(PG_URL)
    if not _port_open(base.host or "127.0.0.1", base.port or 5432):
        unavailable(f"PostgreSQL at {base.host}:{base.port} is not reachable")
    schema = "lf_test_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.OperationalError as e:
        admin.dispose()
        unavailable(f"PostgreSQL is not reachable ({e.orig})")
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        from storage.db import dispose_engines

        dispose_engines()  # close pools onto the schema before dropping it
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
