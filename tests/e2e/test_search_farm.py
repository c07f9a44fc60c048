"""Acceptance: a search on sklearn's digits through real worker processes (Redis, PostgreSQL, `latentfarm worker`
and `latentfarm scheduler` processes). Its pruner stops the hopeless trials; a trial's worker is killed (`kill -9`)
and the trial resumes from its checkpoint on another worker, the study seeing one result; the job that needs the
search's best trial runs on it; and a second submit of an overlapping search starts warm: it is told the first
one's results and served the points it knew from the cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler import search_report
from scheduler.control import ControlPlane
from scheduler.settings import Settings
from storage import queries
from storage.status import JobStatus
from tests.e2e.test_train_resume_chaos import Processes
from tests.integration.farm import wait_for, write_spec

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow(seconds=50), pytest.mark.timeout(420)]

EPOCHS = 5
GOOD, HOPELESS = 3e-3, 1e-6  # learning rates: the second learns nothing in a few epochs


def spec(name: str, trials: int) -> dict:
    # seed 0 asks (lr, z_dim): (good, 4), (good, 8), (hopeless, 4), (good, 16), (hopeless, 4), (good, 8), ...
    return {"batch": name, "defaults": {"params": {"dataset": "digits", "limit": 600}}, "jobs": [
        {"name": "tune", "kind": "train", "params": {"model": "conv_ae", "epochs": EPOCHS, "batch_size": 16},
         "search": {"space": {"learning_rate": {"choice": [HOPELESS, GOOD]}, "z_dim": {"choice": [4, 8, 16]}},
                    "metric": "val_loss", "trials": trials, "parallel": 2, "sampler": "random",
                    "pruner": "median", "startup": 1, "seed": 0}},
        {"name": "best", "kind": "encode", "needs": "tune.best"},
    ]}


@pytest.fixture
def farm(tmp_path: Path, redis_url: str, pg_url: str) -> Iterator[tuple[ControlPlane, Processes]]:
    env = {**os.environ, "LATENTFARM_DATABASE_URL": pg_url, "LATENTFARM_BROKER_URL": redis_url,
           "LATENTFARM_ARTIFACTS": str(tmp_path / "artifacts"), "LATENTFARM_DATA_DIR": str(tmp_path / "data"),
           "LATENTFARM_LEASE_SECONDS": "3", "LATENTFARM_RESEND_AFTER": "5", "PYTHONUNBUFFERED": "1"}
    cp = ControlPlane.open(Settings.from_env(env), upgrade=True)
    procs = Processes(env, tmp_path)
    yield cp, procs
    procs.stop_all()
    for log in sorted(tmp_path.glob("*.log")):  # shown when the test failed
        print(f"--- {log.name}\n{log.read_text()[-3000:]}")


def report(cp: ControlPlane, batch: int) -> search_report.SearchReport:
    with cp.store.session() as s:
        return search_report.report(s, batch, "tune")


def test_a_search_prunes_resumes_hands_on_its_best_and_starts_warm(farm: tuple[ControlPlane, Processes],
                                                                     tmp_path: Path) -> None:
    cp, procs = farm
    procs.start("scheduler", "scheduler", "--interval", "0.5")
    for w in ("w1", "w2"):
        procs.start(w, "worker", "-Q", "gpu,cpu", "--pool", "solo", "-c", "1", "--name", f"{w}@test", "--threads", "1")
    first = cp.submit(cp.load(write_spec(tmp_path, spec("first", 5), "first.yaml"))).batch_id

    def running_good_trial() -> int | None:
        for t in report(cp, first).trials:
            if t.job_status == "running" and t.values["learning_rate"] == GOOD and 1 <= t.steps < EPOCHS - 1:
                return t.job_id
        return None

    wait_for(lambda: running_good_trial() is not None, timeout=180, interval=0.1)
    victim = running_good_trial()
    assert victim is not None
    with cp.store.session() as s:
        killed_worker = (queries.require_job(s, victim).worker or "").split("@")[0]
    procs.kill(killed_worker)  # kill -9 in the middle of a trial
    procs.start("w3", "worker", "-Q", "gpu,cpu", "--pool", "solo", "-c", "1", "--name", "w3@test", "--threads", "1")

    def settled() -> bool:
        with cp.store.session() as s:
            return queries.batch_summary(s, first).settled
    wait_for(settled, timeout=300, interval=0.5)
    r = report(cp, first)
    with cp.store.session() as s:
        summary = queries.batch_summary(s, first)
        jobs = {j.name: j for j in queries.list_jobs(s, batch_id=first)}
        events = queries.job_events(s, victim)
        best_parents = queries.parent_jobs(s, jobs["best"].id)
    assert summary.status == "succeeded", summary.counts
    assert r.search.status == "succeeded" and len(r.trials) == 5

    # the pruner stopped the hopeless trials: each was asked once a trial had completed (the first two of seed 0
    # are good), and the median pruner compares it with that trial. A good trial may be pruned too, when it runs
    # behind the completed ones at a step (a smaller z_dim): that is the median rule, not a failure.
    pruned = [t for t in r.trials if t.state == "pruned"]
    hopeless = [t for t in r.trials if t.values["learning_rate"] == HOPELESS]
    assert hopeless and all(t.state == "pruned" for t in hopeless), r.trials
    assert all(t.steps < EPOCHS for t in pruned) and jobs[pruned[0].job or ""].status is JobStatus.PRUNED

    # the killed trial resumed from its checkpoint on another worker, and the study counts it once
    killed = next(t for t in r.trials if t.job_id == victim)
    job = next(j for j in jobs.values() if j.id == victim)
    if killed.state == "complete":
        assert killed.steps == EPOCHS and job.status is JobStatus.SUCCEEDED
    else:  # resumed, then behind the completed trials at a step: pruned after its resumption
        assert killed.state == "pruned" and job.status is JobStatus.PRUNED and killed.steps < EPOCHS
    assert job.attempts == 2
    assert any(e.kind == "progress" and (e.message or "").startswith("resuming") for e in events)
    with cp.store.engine.connect() as c:
        per_step = c.execute(text("SELECT step, count(*) FROM metrics WHERE job_id = :j AND key = 'val_loss' "
                                  "GROUP BY step ORDER BY step"), {"j": victim}).all()
        rows = c.execute(text("SELECT count(*) FROM search_trials WHERE job_id = :j"), {"j": victim}).scalar_one()
    assert per_step == [(e, 1) for e in range(1, killed.steps + 1)] and rows == 1

    # the job that needs the best trial ran on it
    complete = [t for t in r.trials if t.state == "complete"]
    best = min(complete, key=lambda t: t.value or 0.0)
    assert r.best is not None and r.best.job_id == best.job_id and best.values["learning_rate"] == GOOD
    assert jobs["best"].status is JobStatus.SUCCEEDED
    assert {p.id for p in best_parents} == {jobs["tune"].id, best.job_id}

    # a second, overlapping search starts warm: told the first's results, served what it knew from the cache
    second = cp.submit(cp.load(write_spec(tmp_path, spec("second", 7), "second.yaml"))).batch_id
    wait_for(lambda: report(cp, second).search.status != "running", timeout=240, interval=0.5)
    warm = report(cp, second)
    assert warm.search.status == "succeeded" and len(warm.trials) == 7
    # one earlier result per point (trials 2 and 4 tried the same point: one fingerprint)
    assert sorted((t.values["learning_rate"], t.values["z_dim"]) for t in warm.earlier) == \
        sorted({(t.values["learning_rate"], t.values["z_dim"]) for t in r.trials})
    assert {t.job_id for t in warm.earlier} <= {t.job_id for t in r.trials}
    served = [t for t in warm.trials if t.cached_from is not None]
    known = {(t.values["learning_rate"], t.values["z_dim"]): t.value for t in complete}
    assert served and all(known[(t.values["learning_rate"], t.values["z_dim"])] == t.value for t in served)
    assert all(t.steps == 0 and t.state == "complete" for t in served)
    assert warm.steps < r.steps
    print(f"search figures [digits]: first {len(r.trials)} trials, {len(pruned)} pruned, {r.steps} epochs, best "
          f"val_loss {best.value:.4f}; killed trial {killed.number} resumed (attempts 2); second {len(warm.trials)} "
          f"trials, {len(served)} from the cache, {len(warm.earlier)} earlier results told, {warm.steps} epochs")
