"""Queries follow the lineage: a job downstream of ``train[z_dim=8]`` (its encode, samples, clusters) matches
``--param z_dim=8`` and is grouped by ``z_dim`` in ``compare``; jobs of different kinds are never ranked together,
and a group with no value is not a winner. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.errors import UserError
from scheduler.filters import JobQuery, ParamFilter, compare
from storage import batches, queries, results
from storage.records import NewJob
from storage.store import Store


def _sweep(store: Store) -> dict[str, int]:
    """Two autoencoders (z_dim 8 and 16) each with an encode and two clusters, a pool_ae (z_dim null) with its
    encode and cluster, and a cnn (z_dim null); every cluster and the cnn record `test_accuracy`."""
    jobs = [NewJob("ae8", "train", {"model": "conv_ae", "z_dim": 8}, "f1", "gpu"),
            NewJob("ae16", "train", {"model": "conv_ae", "z_dim": 16}, "f2", "gpu"),
            NewJob("pool", "train", {"model": "pool_ae", "z_dim": None}, "f3", "gpu"),
            NewJob("cnn", "train", {"model": "cnn", "z_dim": None}, "f4", "gpu"),  # as a cnn stores it
            NewJob("enc8", "encode", {"dataset": None}, "f5", "gpu"),
            NewJob("enc16", "encode", {"dataset": None}, "f6", "gpu"),
            NewJob("encp", "encode", {"dataset": None}, "f7", "gpu"),
            NewJob("km8a", "cluster", {"k": [10]}, "f8", "cpu"), NewJob("km8b", "cluster", {"k": [20]}, "f9", "cpu"),
            NewJob("km16a", "cluster", {"k": [10]}, "f10", "cpu"),
            NewJob("km16b", "cluster", {"k": [20]}, "f11", "cpu"),
            NewJob("kmp", "cluster", {"k": [10]}, "f12", "cpu")]
    edges = [("ae8", "enc8"), ("ae16", "enc16"), ("pool", "encp"), ("enc8", "km8a"), ("enc8", "km8b"),
             ("enc16", "km16a"), ("enc16", "km16b"), ("encp", "kmp")]
    with store.session() as s:
        _, ids = batches.create_batch(s, "lineage", {"batch": "lineage"}, jobs, edges)
    scores = {"km8a": 0.70, "km8b": 0.75, "km16a": 0.80, "km16b": 0.78, "kmp": 0.95, "cnn": 0.99}
    with store.session() as s:
        for name, value in scores.items():
            results.put_metric(s, ids[name], "test_accuracy", value)
    return ids


def test_a_param_filter_matches_the_jobs_downstream(store: Store) -> None:
    ids = _sweep(store)
    with store.session() as s:
        found, _, total = JobQuery(params=[ParamFilter("z_dim", 8)]).run(s)
        clusters, _, _ = JobQuery(kind="cluster", params=[ParamFilter("z_dim", 16)]).run(s)
        inherited = queries.inherited_params(s, [ids["km8a"], ids["cnn"]])
    assert {j.name for j in found} == {"ae8", "enc8", "km8a", "km8b"} and total == 4
    assert {j.name for j in clusters} == {"km16a", "km16b"}
    assert inherited[ids["km8a"]]["z_dim"] == 8 and inherited[ids["km8a"]]["model"] == "conv_ae"
    assert "dataset" not in inherited[ids["km8a"]]  # the encode's null says nothing
    assert inherited[ids["cnn"]] == {}  # it needs nothing


def test_compare_groups_downstream_jobs_by_the_inherited_value_and_never_crowns_null(store: Store) -> None:
    ids = _sweep(store)
    with store.session() as s:
        with pytest.raises(UserError, match="kinds cluster, train .*choose one with --kind"):
            compare(s, 1, "test_accuracy", "z_dim", higher_is_better=True)
        c: dict[str, Any] = compare(s, 1, "test_accuracy", "z_dim", higher_is_better=True, kind="cluster")
    rows = {r["z_dim"]: r for r in c["rows"]}
    assert c["kind"] == "cluster" and list(rows) == [8, 16]  # the pool_ae's null z_dim is no value to inherit
    assert (rows[8]["jobs"], rows[8]["best"], rows[8]["best_job"]) == (2, 0.75, ids["km8b"])
    assert (rows[16]["jobs"], rows[16]["best"]) == (2, 0.80)
    assert all(r["inherited"] for r in c["rows"])
    assert c["rows"][c["best"]]["z_dim"] == 16
    with store.session() as s:
        cnn_only = compare(s, 1, "test_accuracy", "z_dim", higher_is_better=True, kind="train")
    assert [(r["z_dim"], r["inherited"]) for r in cnn_only["rows"]] == [(None, False)] and cnn_only["best"] is None
