"""The resources every job used, recorded by a real Celery worker (in-process, memory:// broker, SQLite): wall and
CPU seconds, peak resident memory, images per second per training epoch; no GPU metrics where NVML has no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.resources import RESOURCE_METRICS
from scheduler.settings import Settings
from storage import queries
from tests.conftest import make_settings
from tests.integration.farm import jobs_by_name, open_farm, wait_done, worker, write_spec
from workers.resources import Gpu

pytestmark = pytest.mark.timeout(300)
MIB = 1 << 20
BASIC = {"wall_seconds", "cpu_seconds", "peak_rss"}


@pytest.fixture
def settings(tmp_path: Path, shared_data: Path) -> Settings:
    return make_settings(tmp_path, data_dir=shared_data)


def _metrics(cp, job_id: int) -> tuple[dict[str, float], dict[int, dict[str, float]]]:  # type: ignore[no-untyped-def]
    """(final metrics, per-epoch metrics by epoch)."""
    finals: dict[str, float] = {}
    epochs: dict[int, dict[str, float]] = {}
    with cp.store.session() as s:
        for m in queries.job_metrics(s, [job_id]):
            (finals if m.step == 0 else epochs.setdefault(m.step, {}))[m.key] = m.value
    return finals, epochs


def test_a_worker_records_each_jobs_resources(settings: Settings, tmp_path: Path) -> None:
    noops = {"batch": "noops", "jobs": [
        {"name": "plain", "kind": "noop", "params": {"seconds": 0.4, "value": 1}},
        {"name": "hungry", "kind": "noop", "params": {"seconds": 0.4, "value": 2, "allocate_mb": 200}},
        {"name": "bad", "kind": "noop", "params": {"fail": True}},
    ]}
    train = {"batch": "train", "jobs": [
        {"name": "ae", "kind": "train", "params": {"model": "conv_ae", "z_dim": 2, "dataset": "digits", "limit": 300,
                                                   "epochs": 2, "batch_size": 64}},
    ]}
    gpu_present = Gpu.open(settings.gpu) is not None  # NVML with a driver and a GPU: only on a GPU machine
    cp = open_farm(settings)
    with worker(cp):
        first = cp.submit(cp.load(write_spec(tmp_path, noops, "noops.yaml")))
        wait_done(cp, first.batch_id)
        second = cp.submit(cp.load(write_spec(tmp_path, train, "train.yaml")))
        summary = wait_done(cp, second.batch_id, timeout=240)
    jobs = {**jobs_by_name(cp, first.batch_id), **jobs_by_name(cp, second.batch_id)}
    assert summary.status == "succeeded", jobs["ae"].error

    plain, _ = _metrics(cp, jobs["plain"].id)
    hungry, _ = _metrics(cp, jobs["hungry"].id)
    for final in (plain, hungry):
        assert BASIC <= set(final) and (set(final) - {"value"}) <= set(RESOURCE_METRICS)
        assert ("gpu_peak_memory" in final) == ("gpu_util_mean" in final) == gpu_present
        assert 0.4 <= final["wall_seconds"] < 10
        assert 0 <= final["cpu_seconds"] <= final["wall_seconds"] + 0.05  # it sleeps: little CPU
        assert final["peak_rss"] > 50 * MIB  # a Python process with Celery, SQLAlchemy, numpy loaded
    assert plain["value"] == 1.0 and hungry["value"] == 2.0  # the job's own final metric, beside its resources
    # the peak is the job's: the high-water mark starts again at each job
    assert hungry["peak_rss"] - plain["peak_rss"] >= 190 * MIB, (hungry, plain)

    bad, _ = _metrics(cp, jobs["bad"].id)
    assert bad == {}  # a failed job records none

    final, epochs = _metrics(cp, jobs["ae"].id)
    assert BASIC <= set(final) and "test_loss" in final
    assert final["cpu_seconds"] > 0 and final["wall_seconds"] > 0
    # a process already holding TensorFlow (this test's, when other tests loaded it) may peak no higher than a noop
    assert final["peak_rss"] > 50 * MIB
    assert sorted(epochs) == [1, 2]
    for epoch in epochs.values():
        # training images (300 less the 10% validation split) over the epoch's wall time
        assert 0 < epoch["images_per_second"] < 1e7 and "loss" in epoch
    assert "images_per_second" not in final  # per epoch only: no final value of its own
