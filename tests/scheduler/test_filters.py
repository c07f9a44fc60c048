"""Job filters by parameter value and final metric, as ``latentfarm jobs --param/--where/--sort`` use them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from scheduler.errors import UserError
from scheduler.filters import MetricFilter, ParamFilter, final_metrics, plain_value, select_jobs
from storage.records import Job, Metric
from storage.status import JobStatus

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = Job(id=0, batch_id=1, name="", kind="train", params={}, fingerprint="", status=JobStatus.SUCCEEDED,
           queue="gpu", priority=5, attempts=1, max_attempts=3, timeout=None, worker=None, host=None, gpu=None,
           lease_until=None, heartbeat_at=None, progress=1.0, error=None, traceback=None, cached_from=None,
           cancel_requested=False, created_at=T, queued_at=None, not_before=None, started_at=None, finished_at=None)


def job(i: int, **params: object) -> Job:
    return replace(BASE, id=i, name=f"j{i}", params=params)


def test_final_metrics_take_the_last_step() -> None:
    ms = [Metric(1, "loss", 1, 0.5, T), Metric(1, "loss", 3, 0.2, T), Metric(1, "loss", 2, 0.3, T),
          Metric(1, "test_loss", 0, 0.25, T), Metric(2, "loss", 1, 0.9, T)]
    assert final_metrics(ms) == {1: {"loss": 0.2, "test_loss": 0.25}, 2: {"loss": 0.9}}


def test_param_filter_compares_numbers_as_numbers_and_reads_yaml() -> None:
    jobs = [job(1, z_dim=16, loss="bce"), job(2, z_dim=8, loss="mse"), job(3, z_dim=16.0, loss="mse"), job(4)]
    keep = ParamFilter.parse("z_dim=16")
    assert [j.id for j in jobs if keep.keeps(j)] == [1, 3]
    assert [j.id for j in jobs if ParamFilter.parse("loss = mse").keeps(j)] == [2, 3]


def test_select_filters_and_sorts_with_jobs_lacking_the_metric_last() -> None:
    jobs = [job(1, z_dim=4), job(2, z_dim=8), job(3, z_dim=16), job(4, z_dim=32)]
    finals = {1: {"test_loss": 0.3}, 2: {"test_loss": 0.1}, 3: {"test_loss": 0.2}}
    assert [j.id for j in select_jobs(jobs, finals, sort="test_loss")] == [2, 3, 1, 4]
    assert [j.id for j in select_jobs(jobs, finals, sort="test_loss", descending=True)] == [1, 3, 2, 4]
    assert [j.id for j in select_jobs(jobs, finals, where=[MetricFilter.parse("test_loss<0.25")])] == [2, 3]
    assert [j.id for j in select_jobs(jobs, finals, [ParamFilter.parse("z_dim=16")],
                                      [MetricFilter.parse("test_loss >= 0.2")])] == [3]


@pytest.mark.parametrize("text,message", [
    ("z_dim", "--param: expected NAME=VALUE, e.g. z_dim=16, got 'z_dim'"),
    ("=3", "--param: expected NAME=VALUE, e.g. z_dim=16, got '=3'"),
])
def test_bad_param_filters(text: str, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        ParamFilter.parse(text)


@pytest.mark.parametrize("text,message", [
    ("test_loss", "--where: expected METRIC OP NUMBER"),
    ("test_loss~1", "--where: expected METRIC OP NUMBER"),
    ("test_loss<low", "--where 'test_loss<low': 'low' is not a number"),
])
def test_bad_metric_filters(text: str, message: str) -> None:
    with pytest.raises(UserError, match="^" + message):
        MetricFilter.parse(text)


@pytest.mark.parametrize("text,value", [
    ("16", 16), ("-3", -3), ("0.5", 0.5), ("1e-3", 0.001), ("true", True), ("False", False), ("null", None),
    ("bce", "bce"), ("[32, 64, 128]", [32, 64, 128]), ("[1, [2]]", "[1, [2]]"), ("nan", "nan"),
    ("9" * 40, 1e40), ("&a [*a]", "&a [*a]"), ("!!python/object:os.system x", "!!python/object:os.system x"),
])
def test_a_filter_value_is_a_plain_scalar(text: str, value: object) -> None:
    assert plain_value(text) == value


def test_a_filter_value_is_bounded() -> None:
    with pytest.raises(UserError, match="over 200 characters"):
        ParamFilter.parse("z_dim=" + "1" * 201)
