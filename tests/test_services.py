"""The rule for tests that need a service: skip on a laptop where it is down, fail in CI."""

from __future__ import annotations

import pytest

from tests import services


def test_unreachable_postgres_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(services, "PG_URL", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    with pytest.raises(pytest.fail.Exception, match="CI must not skip"), services.postgres_schema():
        pass


def test_unreachable_redis_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(services, "REDIS_PORT", 1)
    with pytest.raises(pytest.skip.Exception, match="not reachable"):
        services.redis_url()


def test_unreachable_redis_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(services, "REDIS_PORT", 1)
    with pytest.raises(pytest.fail.Exception, match="Redis"):
        services.redis_url()
