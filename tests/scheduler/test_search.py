"""Searches on the control plane, on SQLite and PostgreSQL: trials asked as slots free up (never more than
``parallel`` running, numbers unique even when processes race), settled from their jobs, served from the cache and
told to the study, warm-started by earlier batches, and the search's end handing its best trial (or every complete
one) to the jobs that wait for it. The trials' jobs are run here by a stand-in worker that records a metric per
epoch through the store, as the train handler does."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.kinds.search import SearchParams
from core.params import parse_config
from scheduler import lifecycle, search, search_report
from scheduler import study as studies
from scheduler.control import ControlPlane
from storage import queries, results, transitions
from storage import search as store_search
from storage.search import Trial
from storage.status import JobStatus
from tests.conftest import make_settings

SPACE = {"z_dim": {"int": [2, 32], "log": True}, "learning_rate": {"float": [1e-4, 1e-2], "log": True},
         "filters": {"choice": [[8, 16, 32], [16, 32, 64]]}}


def spec(trials: int = 5, parallel: int = 2, sampler: str = "random", pruner: str = "none", **extra: Any) -> dict:
    block = {"space": SPACE, "metric": "val_loss", "trials": trials, "parallel": parallel, "sampler": sampler,
             "pruner": pruner, "seed": 3, **extra}
    return {"batch": "s", "defaults": {"params": {"dataset": "digits"}}, "jobs": [
        {"name": "tune", "kind": "train", "params": {"model": "conv_ae", "epochs": 3}, "search": block},
        {"name": "enc", "kind": "encode", "foreach": "tune"},
        {"name": "best_enc", "kind": "encode", "needs": "tune.best"},
        {"name": "report", "kind": "noop", "needs": ["tune", "enc"]},
    ]}


@pytest.fixture
def cp(tmp_path: Path, db_url: str) -> ControlPlane:
    return ControlPlane.open(make_settings(tmp_path, database_url=db_url), upgrade=True)


def submit(cp: ControlPlane, tmp_path: Path, body: dict, no_cache: bool = False) -> int:
    path = tmp_path / f"spec-{body['batch']}-{id(body)}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return cp.submit(cp.load(path), no_cache=no_cache).batch_id


def loss(values: dict[str, Any], epoch: int) -> float:
    """A made-up learning curve: best near learning_rate 3e-3, better with a larger z_dim, falling per epoch."""
    return abs(math.log10(values["learning_rate"]) + 2.5) + 1.0 / values["z_dim"] + 0.1 / epoch


def jobs(cp: ControlPlane, batch: int) -> dict[str, Any]:
    with cp.store.session() as s:
        return {j.name: j for j in queries.list_jobs(s, batch_id=batch)}


def queued_trials(cp: ControlPlane, batch: int) -> list[Any]:
    return [j for n, j in jobs(cp, batch).items() if j.kind == "train" and j.status is JobStatus.QUEUED]


def run(cp: ControlPlane, job_id: int, epochs: int = 3, prune_after: int | None = None) -> None:
    """What a worker does with a trial's job: claim it, record val_loss per epoch, end it (pruned or succeeded)."""
    with cp.store.session() as s:
        job = transitions.claim(s, job_id, "stand-in@test", 30)
        assert job is not None
        found = store_search.search_of_trial_job(s, job_id)
    values = found[1].values if found else {"learning_rate": 1e-3, "z_dim": 8}
    for epoch in range(1, (prune_after or epochs) + 1):
        with cp.store.session() as s:
            results.put_metrics(s, job_id, {"val_loss": loss(values, epoch)}, epoch)
    if prune_after is not None:
        lifecycle.end_job(cp.store, job_id, JobStatus.PRUNED, f"pruned after step {prune_after}", None,
                          "stand-in@test", attempt=job.attempts)
    else:
        assert lifecycle.complete_job(cp.store, cp.app, job_id, "stand-in@test", attempt=job.attempts)
    search.after_trial(cp.store, cp.app, job_id)


def drain(cp: ControlPlane, batch: int, prune: set[int] | None = None) -> None:
    """Run every queued trial until none is left (the trials numbered in ``prune`` are pruned after epoch 1)."""
    while True:
        ready = queued_trials(cp, batch)
        if not ready:
            return
        for job in ready:
            with cp.store.session() as s:
                number = store_search.search_of_trial_job(s, job.id)[1].number
            run(cp, job.id, prune_after=1 if prune and number in prune else None)


def the_search(cp: ControlPlane, batch: int) -> search_report.SearchReport:
    with cp.store.session() as s:
        return search_report.report(s, batch, "tune")


def test_submit_opens_the_search_and_asks_parallel_trials(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=5, parallel=2))
    found = jobs(cp, batch)
    assert found["tune"].kind == "study" and found["tune"].status is JobStatus.RUNNING
    assert found["best_enc"].status is JobStatus.PENDING and found["report"].status is JobStatus.PENDING
    trials = sorted((j for j in found.values() if j.kind == "train"), key=lambda j: j.id)
    assert [j.status for j in trials] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert trials[0].name.startswith("tune[trial=0,z_dim=") and "learning_rate=" in trials[0].name
    chains = [j for j in found.values() if j.kind == "encode" and j.name.startswith("enc[trial=")]
    assert len(chains) == 2 and all(j.status is JobStatus.PENDING for j in chains)
    with cp.store.session() as s:
        parents = {c.name: [p.name for p in queries.parent_jobs(s, c.id)] for c in chains}
    for child, ps in parents.items():  # each chain needs its own trial
        assert ps == [child.replace("enc[", "tune[", 1)]
    r = the_search(cp, batch)
    assert [t.number for t in r.trials] == [0, 1] and r.counts == {"running": 2}


def test_a_search_runs_to_its_end_and_hands_its_best_trial_on(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=5, parallel=2))
    drain(cp, batch, prune={3})
    r = the_search(cp, batch)
    assert r.search.status == "succeeded"
    assert [t.number for t in r.trials] == [0, 1, 2, 3, 4]
    assert r.counts == {"complete": 4, "pruned": 1}
    complete = [t for t in r.trials if t.state == "complete"]
    best = min(complete, key=lambda t: t.value or 0)
    assert r.best is not None and r.best.number == best.number and r.search.best_job_id == best.job_id
    assert best.value == pytest.approx(loss(best.values, 3))  # the metric's last epoch
    assert r.steps == 4 * 3 + 1 and [p.best for p in r.best_so_far] == sorted((p.best for p in r.best_so_far),
                                                                            reverse=True)
    assert set(r.importance) == set(SPACE)
    found = jobs(cp, batch)
    assert found["tune"].status is JobStatus.SUCCEEDED
    pruned = next(t for t in r.trials if t.state == "pruned")
    assert found[pruned.job.replace("tune[", "enc[", 1)].status is JobStatus.CANCELLED  # below a pruned trial
    with cp.store.session() as s:
        best_parents = [p.id for p in queries.parent_jobs(s, found["best_enc"].id)]
        report_parents = {p.name for p in queries.parent_jobs(s, found["report"].id)}
        summary = queries.batch_summary(s, batch)
    assert best_parents == sorted([found["tune"].id, best.job_id])
    assert report_parents == {"tune"} | {t.job for t in complete} | {t.job.replace("tune[", "enc[", 1)
                                                                     for t in complete}
    assert found["best_enc"].status is JobStatus.QUEUED  # its parents (the study, the best trial) succeeded
    assert found["report"].status is JobStatus.PENDING  # it waits for the complete trials' encodes
    assert found["best_enc"].fingerprint != found["report"].fingerprint
    assert summary.status == "running"


def test_the_study_counts_one_result_per_trial_and_values_lie_in_the_space(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=6, parallel=3, sampler="tpe", startup=2))
    drain(cp, batch)
    r = the_search(cp, batch)
    dims = r.config.dimensions()
    assert len(r.trials) == 6 and r.counts == {"complete": 6}
    for t in r.trials:
        assert all(dims[k].contains(v) for k, v in t.values.items()), t.values
        assert isinstance(t.values["z_dim"], int) and t.values["filters"] in ([8, 16, 32], [16, 32, 64])


def test_racing_processes_never_run_more_than_parallel_trials(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=8, parallel=3))
    for _ in range(3):
        for job in queued_trials(cp, batch):
            with cp.store.session() as s:
                claimed = transitions.claim(s, job.id, "w@test", 30)
                results.put_metrics(s, job.id, {"val_loss": 1.0}, 1)
            assert lifecycle.complete_job(cp.store, cp.app, job.id, "w@test", attempt=claimed.attempts)
        barrier = threading.Barrier(4)

        def advance(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            search.advance_batch(cp.store, cp.app, batch)

        threads = [threading.Thread(target=advance) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        r = the_search(cp, batch)
        numbers = [t.number for t in r.trials]
        assert numbers == list(range(len(numbers)))  # unique, none skipped
        assert r.counts.get("running", 0) <= 3
        assert len(queued_trials(cp, batch)) == r.counts.get("running", 0)
    assert len(the_search(cp, batch).trials) == 8


def test_a_second_search_is_served_from_the_cache_and_warm_started(cp: ControlPlane, tmp_path: Path) -> None:
    first = submit(cp, tmp_path, spec(trials=4, parallel=2))
    drain(cp, first, prune={1})
    earlier = the_search(cp, first)
    second_spec = spec(trials=6, parallel=2)
    second_spec["batch"] = "again"
    second = submit(cp, tmp_path, second_spec)
    r = the_search(cp, second)
    # the earlier batch's finished trials were told to the study before its first ask
    assert sorted(t.job_id for t in r.earlier) == sorted(t.job_id for t in earlier.trials)
    assert {t.state for t in r.earlier} == {"complete", "pruned"}
    # the same sampler and seed ask the same points: those that completed before come from the cache at once
    served = [t for t in r.trials if t.cached_from is not None]
    assert sorted(t.number for t in served) == [0, 2, 3]
    for t in served:
        before = earlier.trials[t.number]
        assert t.values == before.values and t.value == before.value and t.steps == 0 and t.state == "complete"
    assert r.counts == {"complete": 3, "running": 2}  # slots are taken only by trials that run
    drain(cp, second)
    done = the_search(cp, second)
    assert done.search.status == "succeeded" and len(done.trials) == 6
    assert done.steps == 3 * 3  # trials 1 (pruned before, runs again), 4 and 5; nothing for the three it knew


def test_no_cache_runs_every_trial(cp: ControlPlane, tmp_path: Path) -> None:
    first = submit(cp, tmp_path, spec(trials=2, parallel=2))
    drain(cp, first)
    second = submit(cp, tmp_path, spec(trials=2, parallel=2), no_cache=True)
    r = the_search(cp, second)
    assert r.earlier == [] and r.counts == {"running": 2}


def test_a_search_whose_trials_are_all_pruned_fails_and_cancels_what_waits(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=2, parallel=2))
    drain(cp, batch, prune={0, 1})
    found = jobs(cp, batch)
    assert found["tune"].status is JobStatus.FAILED and "no trial completed (2 pruned" in (found["tune"].error or "")
    assert found["best_enc"].status is JobStatus.CANCELLED and found["report"].status is JobStatus.CANCELLED
    assert the_search(cp, batch).search.status == "failed"


def test_cancelling_the_study_job_cancels_the_search(cp: ControlPlane, tmp_path: Path) -> None:
    batch = submit(cp, tmp_path, spec(trials=5, parallel=2))
    found = jobs(cp, batch)
    lifecycle.cancel(cp.store, [found["tune"].id])
    search.advance_batch(cp.store, cp.app, batch)
    found = jobs(cp, batch)
    assert found["tune"].status is JobStatus.CANCELLED
    assert all(j.status is JobStatus.CANCELLED for j in found.values() if j.kind == "train")
    assert the_search(cp, batch).search.status == "cancelled"
    with cp.store.session() as s:
        assert queries.batch_summary(s, batch).status == "cancelled"


def test_a_pruned_batch_is_succeeded(cp: ControlPlane, tmp_path: Path) -> None:
    body = spec(trials=3, parallel=1)
    body["jobs"] = body["jobs"][:2]  # the search and its chain
    batch = submit(cp, tmp_path, body)
    drain(cp, batch, prune={1})
    for job in jobs(cp, batch).values():
        if job.kind == "encode" and job.status is JobStatus.QUEUED:  # the complete trials' chains
            with cp.store.session() as s:
                claimed = transitions.claim(s, job.id, "w@test", 30)
            lifecycle.complete_job(cp.store, cp.app, job.id, "w@test", attempt=claimed.attempts)
    with cp.store.session() as s:
        summary = queries.batch_summary(s, batch)
    assert summary.counts.get("pruned") == 1 and summary.counts.get("cancelled") == 1
    assert summary.status == "succeeded"


def test_a_grid_search_asks_each_point_once_and_stops_when_exhausted(cp: ControlPlane, tmp_path: Path) -> None:
    body = spec(trials=None, parallel=2, sampler="grid")
    body["jobs"][0]["search"]["space"] = {"z_dim": {"choice": [4, 8]}, "learning_rate": {"choice": [1e-3, 1e-2]}}
    body["jobs"][0]["search"].pop("trials")
    batch = submit(cp, tmp_path, body)
    drain(cp, batch)
    r = the_search(cp, batch)
    points = sorted((t.values["z_dim"], t.values["learning_rate"]) for t in r.trials)
    assert points == [(4, 1e-3), (4, 1e-2), (8, 1e-3), (8, 1e-2)] and r.search.status == "succeeded"


def _trial(number: int, state: str, values: dict[str, Any], value: float | None, job_id: int) -> Trial:
    return Trial(id=number + 1, search_id=1, number=number, job_id=job_id, values=values, state=state, value=value,
                 attrs={}, created_at=None, finished_at=None)  # type: ignore[arg-type]


def test_the_median_pruner_stops_a_trial_worse_than_the_others() -> None:
    config = parse_config(SearchParams, {"space": SPACE, "metric": "val_loss", "trials": 9, "pruner": "median",
                                         "startup": 2})
    values = {"z_dim": 8, "learning_rate": 1e-3, "filters": [8, 16, 32]}
    done = [_trial(i, "complete", values, 0.1, 100 + i) for i in range(3)]
    good, bad = _trial(3, "running", values, None, 200), _trial(4, "running", values, None, 201)
    series = {100 + i: {1: 0.3, 2: 0.2, 3: 0.1} for i in range(3)}
    series.update({200: {1: 0.25}, 201: {1: 0.9}})
    study = studies.build(config, "t", [*done, good, bad], series, 5, 3)
    assert study.should_prune(good.id)[0] is False
    assert study.should_prune(bad.id)[0] is True


def test_hyperband_notes_what_it_judged_on_the_trial() -> None:
    config = parse_config(SearchParams, {"space": SPACE, "metric": "val_loss", "trials": 9, "pruner": "hyperband"})
    values = {"z_dim": 8, "learning_rate": 1e-3, "filters": [8, 16, 32]}
    trials = [_trial(i, "complete", values, 0.1 * (i + 1), 100 + i) for i in range(6)]
    trials.append(_trial(6, "running", values, None, 300))
    series = {100 + i: {s: 0.1 * (i + 1) + 0.1 / s for s in range(1, 10)} for i in range(6)}
    series[300] = {1: 5.0, 2: 5.0, 3: 5.0}
    study = studies.build(config, "t", trials, series, 7, 9)
    prune, attrs = study.should_prune(7)
    assert any(k.startswith("completed_rung") for k in attrs)
    assert all(not k.startswith("cma:optimizer") for k in attrs)
