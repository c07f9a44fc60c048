"""Schema 0005 on SQLite and PostgreSQL: the status `pruned` (the jobs' check widened in place, no row lost), and
the guarded writes of a search: asks under its count, a trial settled once, a search ended once."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from storage import batches, migrate, results, transitions
from storage import search as store_search
from storage.db import engine_for
from storage.records import NewJob
from storage.status import JobStatus, can_move
from storage.store import Store


def test_upgrading_to_0005_keeps_every_row_and_admits_pruned(db_url: str) -> None:
    engine = engine_for(db_url)
    migrate.upgrade(engine, "0004")
    with engine.begin() as c:
        c.execute(text("INSERT INTO batches (name, spec, created_at, no_cache) VALUES ('b', '{}', '2026-01-01', "
                       "false)"))
        c.execute(text("INSERT INTO jobs (batch_id, name, kind, params, fingerprint, status, queue, priority, "
                       "attempts, max_attempts, progress, cancel_requested, created_at) VALUES (1, 'a', 'train', '{}',"
                       " 'f', 'running', 'gpu', 5, 1, 3, 0, false, '2026-01-01')"))
        c.execute(text("INSERT INTO metrics (job_id, key, step, value, time) VALUES (1, 'loss', 1, 0.5, "
                       "'2026-01-01')"))
    assert migrate.upgrade(engine) == "0005"
    with engine.begin() as c:
        assert c.execute(text("SELECT count(*) FROM metrics")).scalar_one() == 1  # nothing cascaded away
        c.execute(text("UPDATE jobs SET status = 'pruned' WHERE id = 1"))
    with pytest.raises(Exception, match="(?i)check|constraint"), engine.begin() as c:
        c.execute(text("UPDATE jobs SET status = 'exploded' WHERE id = 1"))


def test_pruned_is_a_terminal_status_reached_from_running_only() -> None:
    assert can_move(JobStatus.RUNNING, JobStatus.PRUNED)
    assert not any(can_move(s, JobStatus.PRUNED) for s in JobStatus if s is not JobStatus.RUNNING)
    assert not any(can_move(JobStatus.PRUNED, s) for s in JobStatus)


def test_asks_trials_and_the_end_are_guarded(store: Store) -> None:
    with store.session() as s:
        batch, ids = batches.create_batch(s, "b", {}, [NewJob("tune", "study", {}, "f0", "cpu"),
                                                       NewJob("t0", "train", {}, "f1", "gpu")], [])
        search_id = store_search.create_search(s, batch, "tune", ids["tune"], {"metric": "loss"}, {"templates": []})
    with store.session() as s:
        assert store_search.claim_asks(s, search_id, 0, 1)
        assert not store_search.claim_asks(s, search_id, 0, 1)  # another process read 0 too: it reads again
        store_search.add_trials(s, search_id, [{"number": 0, "job_id": ids["t0"], "values": {"z": 1},
                                                "state": "running"}])
    with pytest.raises(Exception, match="(?i)unique|duplicate"), store.session() as s:
        store_search.add_trials(s, search_id, [{"number": 0, "job_id": None, "values": {}, "state": "running"}])
    with store.session() as s:
        transitions.transition(s, ids["t0"], JobStatus.PENDING, JobStatus.QUEUED)
        transitions.claim(s, ids["t0"], "w", 30)
        results.put_metrics(s, ids["t0"], {"loss": 0.3}, 1)
        (trial,) = store_search.trials(s, search_id)
        assert trial.job_status is JobStatus.RUNNING and trial.job_name == "t0"
        assert store_search.settle_trial(s, trial.id, "complete", 0.3)
        assert not store_search.settle_trial(s, trial.id, "failed", None)
        assert store_search.metric_series(s, [ids["t0"]], "loss") == {ids["t0"]: {1: 0.3}}
        assert store_search.finish(s, search_id, "succeeded", ids["t0"])
        assert not store_search.finish(s, search_id, "cancelled")
        assert store_search.get_search(s, search_id).best_job_id == ids["t0"]
        assert store_search.running_searches(s) == []
