"""Fixtures shared by every layer of tests: settings on temporary paths, a store on SQLite or PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scheduler.settings import EMBEDDED_BROKER, Settings  # noqa: E402
from storage.store import Store  # noqa: E402
from tests import services  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # the real data files; never copied into the project


_LAYERS_FIRST = {"e2e": 0, "chaos": 1, "integration": 2, "client": 3, "api": 4}  # the rest after them


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For running side by side (``make test`` runs pytest-xdist with ``--dist loadgroup``): the ``slow`` acceptance
    tests first, each on its own, so the longest work starts at once on every worker; the chaos tests in one group
    (they share a Redis database and kill processes on a clock); every other module's tests together, so that
    module-scoped fixtures (a populated farm, a served dashboard) are made once. After the slow tests, the layers
    whose tests run processes (e2e, chaos, integration, client, api) go before the unit tests, which fill the gaps
    at the end (the longest work first: the run ends when its last long test does)."""
    def order(item: pytest.Item) -> tuple[bool, float, int]:
        slow = item.get_closest_marker("slow")
        layer = item.nodeid.split("/")[1] if item.nodeid.count("/") >= 2 else ""
        # the slow tests by the seconds they say they take alone (pytest.mark.slow(seconds=...)), longest first
        return slow is None, -float(slow.kwargs.get("seconds", 0)) if slow else 0.0, _LAYERS_FIRST.get(layer, 99)

    items.sort(key=order)  # stable: otherwise in collection order
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if item.get_closest_marker("slow") is not None:
            group = item.nodeid  # a group of its own
        else:
            group = "chaos" if item.nodeid.startswith("tests/chaos/") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.fail(f"the shared data files are missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite (a file, WAL) and on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lf.db'}"
    else:
        with services.postgres_schema() as url:
            yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    with services.postgres_schema() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = services.redis_url()
    yield url
    services.flush_redis(url)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Store:
    return Store.open(db_url, tmp_path / "artifacts", upgrade=True)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'lf.db'}", tmp_path / "artifacts", upgrade=True)


def make_settings(tmp_path: Path, database_url: str | None = None, broker_url: str = EMBEDDED_BROKER,
                  data_dir: Path | None = None) -> Settings:
    return Settings(
        database_url=database_url or f"sqlite:///{tmp_path / 'lf.db'}",
        broker_url=broker_url,
        artifacts_dir=tmp_path / "artifacts",
        data_dir=data_dir or tmp_path / "data",
        lease_seconds=30.0,
        worker_name="test-worker",
    )
