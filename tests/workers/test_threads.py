"""Threads honoured: a worker with a thread limit (``latentfarm worker --threads N``, LATENTFARM_THREADS) runs each
job with the BLAS and OpenMP pools capped at N, as threadpoolctl sees them inside the job, and lifts the cap after."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sklearn.cluster  # noqa: F401  (loads scikit-learn's OpenMP runtime, so that threadpoolctl sees its pool)
from threadpoolctl import threadpool_info

from scheduler.supervisor import THREAD_VARS, THREADS_VAR
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec
from workers import execute
from workers.threads import job_threads, process_threads


def pools() -> dict[str, int]:
    """num_threads of each BLAS and OpenMP pool loaded in this process, by library file."""
    return {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] in ("blas", "openmp")}


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a worker started with --threads 1 (the variables restored after the test)."""
    for var in (*THREAD_VARS, THREADS_VAR):
        monkeypatch.setenv(var, "1")


def test_a_cluster_job_runs_with_the_pools_capped_and_the_cap_is_lifted_after(
        limited: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = pools()
    assert any("openmp" in p["user_api"] for p in threadpool_info()) and before
    seen: dict[str, dict[str, int]] = {}
    real = execute.handler_for

    def observed(kind: str) -> Callable[..., None]:
        handler = real(kind)

        def run(ctx: Any, params: Any) -> None:
            seen[f"{ctx.job.name} start"] = pools()
            handler(ctx, params)
            seen[f"{ctx.job.name} end"] = pools()  # after KMeans ran in the pools

        return run

    monkeypatch.setattr(execute, "handler_for", observed)
    cp = open_farm(make_settings(tmp_path))
    spec = {"batch": "threads", "jobs": [{"name": "clu", "kind": "cluster", "params": {
        "dataset": "digits", "k": [2, 4], "n_init": 2, "plot": "none"}}]}
    batch = cp.submit(cp.load(write_spec(tmp_path, spec))).batch_id
    with worker(cp):
        assert wait_done(cp, batch, timeout=120).status == "succeeded"
    assert jobs_by_name(cp, batch)["clu"].status.value == "succeeded"
    assert set(seen) == {"clu start", "clu end"}
    for when, found in seen.items():
        assert found and set(found.values()) == {1}, (when, found)
    assert pools() == before  # lifted when the job ended


def test_without_a_limit_a_job_runs_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_VAR, raising=False)
    before = pools()
    assert process_threads() is None
    with job_threads():
        assert pools() == before


def test_a_bad_limit_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("3", 3), ("0", None), ("two", None), (" ", None)):
        monkeypatch.setenv(THREADS_VAR, value)
        assert process_threads() == expected


def test_jobs_side_by_side_share_one_cap_lifted_by_the_last(limited: None) -> None:
    before = pools()
    first_in, second_in, first_out, second_out = (threading.Event() for _ in range(4))
    during: list[dict[str, int]] = []

    def first() -> None:
        with job_threads():
            first_in.set()
            second_in.wait(10)
        first_out.set()
        second_out.wait(10)  # the thread that capped the pools is still alive when the other lifts the cap

    def second() -> None:
        first_in.wait(10)
        with job_threads():
            second_in.set()
            first_out.wait(10)
            during.append(pools())  # the first job ended: the cap holds for this one
        second_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert during and set(during[0].values()) == {1}
    assert pools() == before
