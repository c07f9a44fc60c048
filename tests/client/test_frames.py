"""The client's tables and decoding on their own (no farm): the jobs table's columns, types and attrs, artifacts by
media type, and the API's error answers as the exceptions of ``scheduler.errors``."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scheduler.client.frames import compare_frame, decode, jobs_frame, metrics_frame
from scheduler.client.objects import param_filters
from scheduler.client.remote import error_for, final_values
from scheduler.errors import (
    ArtifactCorrupt,
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    LatentfarmError,
    NotFound,
    SpecError,
    TransientError,
    UserError,
)


def job(id_: int, name: str, kind: str, params: dict[str, Any], inherited: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None) -> dict[str, Any]:
    return {"id": id_, "batch_id": 1, "name": name, "kind": kind, "status": "succeeded", "params": params,
            "inherited": inherited, "metrics": metrics or {}}


def test_the_jobs_table() -> None:
    df = jobs_frame([
        job(1, "train[z_dim=8]", "train", {"z_dim": 8, "loss": "bce", "filters": [8, 16], "keep": False},
            {}, {"test_mse": 0.01, "loss": 0.2}),
        job(2, "encode", "encode", {"dataset": None}, {"z_dim": 8, "loss": "bce", "dataset": "digits"},
            {"radius_mean": 3.0}),
        job(3, "n", "noop", {"value": 3}, None, {"value": 3.0}),
    ])
    assert list(df.columns) == ["id", "batch", "name", "kind", "status", "z_dim", "loss", "filters", "keep",
                                "dataset", "value", "inherited", "metrics.loss", "radius_mean", "test_mse",
                                "metrics.value"]
    assert df.attrs == {"params": ["z_dim", "loss", "filters", "keep", "dataset", "value"],
                        "inherited": ["z_dim", "loss"], "metrics": ["metrics.loss", "radius_mean", "test_mse",
                                                                    "metrics.value"]}
    rows = df.set_index("name")
    assert rows.loc["encode", "z_dim"] == 8 and rows.loc["encode", "inherited"] == ("z_dim", "loss")
    assert rows.loc["encode", "dataset"] is None  # its own value wins over its ancestor's, even null
    assert rows.loc["train[z_dim=8]", "filters"] == [8, 16] and rows.loc["train[z_dim=8]", "inherited"] == ()
    assert str(df["z_dim"].dtype) == "Int64" and pd.isna(rows.loc["n", "z_dim"])
    assert str(df["keep"].dtype) == "boolean" and str(df["value"].dtype) == "Int64"
    assert df["test_mse"].dtype == float and np.isnan(rows.loc["n", "test_mse"])
    assert rows.loc["n", "metrics.value"] == 3.0
    empty = jobs_frame([])
    assert list(empty.columns) == ["id", "batch", "name", "kind", "status", "inherited"] and empty.empty


def test_metrics_long_and_wide() -> None:
    rows = [{"job_id": j, "key": k, "step": s, "value": v, "time": "2026-01-01T00:00:00+00:00"}
            for j, k, s, v in [(1, "loss", 1, 0.5), (1, "loss", 2, 0.4), (1, "test_mse", 0, 0.1), (2, "loss", 1, 0.7)]]
    long = metrics_frame(rows, {1: "a", 2: "b"})
    assert list(long.columns) == ["job", "name", "key", "step", "value", "time"]
    assert str(long["time"].dtype).startswith("datetime64") and long["time"].dt.tz is not None
    wide = metrics_frame(rows, {1: "a", 2: "b"}, wide=True)
    assert wide.loc[(1, "a", 2), "loss"] == 0.4 and wide.loc[(1, "a", 0), "test_mse"] == 0.1
    assert np.isnan(wide.loc[(2, "b", 1), "test_mse"])
    assert list(metrics_frame(rows[:3], wide=True).index) == [0, 1, 2]


def test_compare_marks_the_winner_and_never_a_null_row() -> None:
    result = {"batch": 1, "metric": "m", "by": "z_dim", "higher_is_better": False, "kind": "cluster", "best": 1,
              "rows": [{"value": v, "jobs": 1, "best": b, "mean": b, "worst": b, "best_job": i, "best_name": f"j{i}",
                        "inherited": True} for i, (v, b) in enumerate([(2, 0.5), (8, 0.3), (None, 0.1)])]}
    df = compare_frame(result)
    assert df["z_dim"].tolist()[:2] == [2, 8] and df["winner"].tolist() == [False, True, False]
    assert df.attrs["best"] == 1 and df.attrs["kind"] == "cluster"
    assert not compare_frame({**result, "best": None})["winner"].any()


def test_artifacts_by_media_type() -> None:
    png = io.BytesIO()
    Image.new("L", (5, 3)).save(png, "PNG")
    assert decode(png.getvalue(), "image/png", "a").size == (5, 3)
    npy = io.BytesIO()
    np.save(npy, np.arange(6).reshape(2, 3))
    assert decode(npy.getvalue(), "application/x-npy", "a").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert decode(b'{"a": [1]}', "application/json", "a") == {"a": [1]}
    assert decode(b"<svg/>", "image/svg+xml", "a") == b"<svg/>"  # not a raster: its bytes
    assert decode(b"PK..", "application/x-keras", "a") == b"PK.."
    with pytest.raises(ArtifactCorrupt, match=r"^artifact 'x' of job 1: not readable as image/png: not an image"):
        decode(b"nope", "image/png", "artifact 'x' of job 1")
    with pytest.raises(ArtifactCorrupt, match="not readable as application/json"):
        decode(b"{", "application/json", "a")
    with pytest.raises(ArtifactCorrupt, match="not readable as application/x-npy"):
        decode(b"\x93NUMPY nope", "application/x-npy", "a")


def test_param_filters_as_the_cli_writes_them() -> None:
    assert param_filters(None) == [] and param_filters("z_dim=8") == ["z_dim=8"]
    assert param_filters(["z_dim=8", "loss=bce"]) == ["z_dim=8", "loss=bce"]
    assert param_filters({"z_dim": 8, "loss": "bce", "keep": True, "filters": [8, 16], "d": None}) == [
        "z_dim=8", "loss=bce", "keep=true", "filters=[8, 16]", "d=null"]


def answer(status: int, detail: str | None) -> httpx.Response:
    body = json.dumps({"detail": detail}).encode() if detail is not None else b"<html>oops</html>"
    return httpx.Response(status, content=body, request=httpx.Request("GET", "http://farm/api/v1/x"))


@pytest.mark.parametrize(("status", "detail", "cls", "said"), [
    (404, "no batch 9", NotFound, "no batch 9"),
    (409, "job 3 is running", Conflict, "job 3 is running"),
    (400, "param: expected NAME=VALUE", UserError, "param: expected NAME=VALUE"),
    (422, "query parameter limit: too big", UserError, "query parameter limit: too big"),
    (422, "request body: job 'a': field 'kind': unknown", SpecError, "s.yaml: job 'a': field 'kind': unknown"),
    (422, "request body: job 'a': x\nrequest body: job 'b': y", SpecError, "s.yaml: job 'a': x\ns.yaml: job 'b': y"),
    (401, "wrong bearer token", UserError, "http://farm refused the request: wrong bearer token (pass token= "
                                           "to connect(), or set LATENTFARM_API_TOKEN)"),
    (503, "database unavailable: gone", DatabaseUnavailable, "database unavailable: gone"),
    (503, "broker unavailable: gone", BrokerUnavailable, "broker unavailable: gone"),
    (503, "too many specs are being parsed", TransientError, "too many specs are being parsed"),
    (500, "artifact 3 (a.png of job 1): its blob no longer matches its sha256", ArtifactCorrupt,
     "artifact 3 (a.png of job 1): its blob no longer matches its sha256"),
    (500, "internal error", LatentfarmError, "internal error"),
    (502, None, LatentfarmError, "502 Bad Gateway"),
])
def test_error_answers_are_the_same_exceptions(status: int, detail: str | None, cls: type[Exception],
                                               said: str) -> None:
    error = error_for(answer(status, detail), "http://farm", "s.yaml")
    assert type(error) is cls and str(error) == said


def test_final_values_are_each_metrics_last_step() -> None:
    rows = [{"key": "loss", "step": 2, "value": 0.4}, {"key": "loss", "step": 1, "value": 0.5},
            {"key": "test_mse", "step": 0, "value": 0.1}]
    assert final_values(rows) == {"loss": 0.4, "test_mse": 0.1}
