"""What a search reads and writes: its row, its trials, the jobs it adds to its batch as it asks them, and the
results of earlier jobs of the same space. Every change that several processes may race on is guarded: a search's
trials are asked under its ``asked`` count (``claim_asks``), its end is one guarded UPDATE from ``running``, and a
trial is settled only from ``running``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.events import add_status_events
from storage.models import SearchRow, SearchTrialRow, utcnow
from storage.records import NewJob, from_row
from storage.sql import DEPS, JOBS, METRICS, chunks
from storage.status import JobStatus

SEARCHES = cast(Table, SearchRow.__table__)
TRIALS = cast(Table, SearchTrialRow.__table__)
RUNNING = "running"
TRIAL_STATES = ("running", "complete", "pruned", "failed")  # Optuna's TrialState names, lower-cased


@dataclass(frozen=True)
class Search:
    id: int
    batch_id: int
    name: str
    job_id: int  # its study job: running while the search runs; the jobs that need the search wait for it
    config: dict[str, Any]
    plan: dict[str, Any]
    status: str  # running | succeeded | failed | cancelled
    asked: int
    seeded: bool
    best_job_id: int | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Trial:
    id: int
    search_id: int
    number: int | None  # None: an earlier job's result of the same space, told to the study
    job_id: int | None
    values: dict[str, Any]
    state: str  # running | complete | pruned | failed
    value: float | None
    attrs: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    job_status: JobStatus | None = None  # its job's status now (None if the job is gone)
    job_name: str | None = None


def create_search(session: Session, batch_id: int, name: str, job_id: int, config: Mapping[str, Any],
                  plan: Mapping[str, Any]) -> int:
    """Insert a running search of ``batch_id`` (in the batch's own transaction). Returns its id."""
    return int(session.execute(insert(SEARCHES).values(
        batch_id=batch_id, name=name, job_id=job_id, config=dict(config), plan=dict(plan), status=RUNNING, asked=0,
        seeded=False, created_at=utcnow()).returning(SEARCHES.c.id)).scalar_one())


def get_search(session: Session, search_id: int) -> Search:
    row = session.execute(select(SEARCHES).where(SEARCHES.c.id == search_id)).first()
    if row is None:
        raise NotFound(f"no search {search_id}")
    return from_row(Search, row)


def find_search(session: Session, batch_id: int, name: str) -> Search:
    """The search ``name`` of a batch; NotFound naming the batch's searches when there is none."""
    row = session.execute(select(SEARCHES).where(SEARCHES.c.batch_id == batch_id, SEARCHES.c.name == name)).first()
    if row is None:
        names = [s.name for s in batch_searches(session, batch_id)]
        known = f": it has {', '.join(names)}" if names else ": it has none"
        raise NotFound(f"batch {batch_id} has no search {name!r}{known}")
    return from_row(Search, row)


def batch_searches(session: Session, batch_id: int) -> list[Search]:
    rows = session.execute(select(SEARCHES).where(SEARCHES.c.batch_id == batch_id).order_by(SEARCHES.c.id))
    return [from_row(Search, r) for r in rows]


def running_searches(session: Session, batch_id: int | None = None) -> list[int]:
    """The ids of the searches still running (of one batch, or of every batch)."""
    q = select(SEARCHES.c.id).where(SEARCHES.c.status == RUNNING).order_by(SEARCHES.c.id)
    if batch_id is not None:
        q = q.where(SEARCHES.c.batch_id == batch_id)
    return list(session.scalars(q))


def search_of_trial_job(session: Session, job_id: int) -> tuple[Search, Trial] | None:
    """The search and trial whose job is ``job_id`` (a trial of this batch, not an earlier result), or None."""
    row = session.execute(select(TRIALS).where(TRIALS.c.job_id == job_id, TRIALS.c.number.is_not(None))).first()
    if row is None:
        return None
    return get_search(session, row.search_id), _trial(row)


def trials(session: Session, search_id: int) -> list[Trial]:
    """Every trial of a search with its job's status and name: earlier results first (as told to the study), then
    the search's own by number."""
    rows = session.execute(
        select(TRIALS, JOBS.c.status.label("job_status"), JOBS.c.name.label("job_name"))
        .outerjoin(JOBS, JOBS.c.id == TRIALS.c.job_id)
        .where(TRIALS.c.search_id == search_id)
        .order_by(TRIALS.c.number.is_not(None), TRIALS.c.number, TRIALS.c.id))
    return [_trial(r) for r in rows]


def _trial(row: Any) -> Trial:
    values = {k: getattr(row, k) for k in Trial.__dataclass_fields__ if k not in ("job_status", "job_name")}
    status = getattr(row, "job_status", None)
    return Trial(**values, job_status=JobStatus(status) if status else None, job_name=getattr(row, "job_name", None))


def claim_asks(session: Session, search_id: int, seen: int, count: int) -> bool:
    """Take the next ``count`` trial numbers (``seen`` .. ``seen + count - 1``) of a running search, if no other
    process asked since it read ``seen``: of two processes asking at once, one gets True, the other reads again."""
    done = session.execute(update(SEARCHES).where(SEARCHES.c.id == search_id, SEARCHES.c.status == RUNNING,
                                                  SEARCHES.c.asked == seen)
                           .values(asked=seen + count).returning(SEARCHES.c.id)).first()
    return done is not None


def mark_seeded(session: Session, search_id: int) -> bool:
    """Note that earlier results were told to the search (once: False for the second process to try)."""
    return session.execute(update(SEARCHES).where(SEARCHES.c.id == search_id, SEARCHES.c.seeded.is_(False))
                           .values(seeded=True).returning(SEARCHES.c.id)).first() is not None


def add_trials(session: Session, search_id: int, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert trials: each a mapping of number, job_id, values, state, value and attrs."""
    now = utcnow()
    items = [{"search_id": search_id, "number": r.get("number"), "job_id": r.get("job_id"), "values": r["values"],
              "state": r["state"], "value": r.get("value"), "attrs": r.get("attrs") or {}, "created_at": now,
              "finished_at": None if r["state"] == RUNNING else now} for r in rows]
    if items:
        session.execute(insert(TRIALS), items)


def settle_trial(session: Session, trial_id: int, state: str, value: float | None) -> bool:
    """A running trial's end (complete with its value, pruned or failed): guarded, once."""
    if state not in TRIAL_STATES or state == RUNNING:
        raise ValueError(f"a trial ends complete, pruned or failed, not {state!r}")
    return session.execute(update(TRIALS).where(TRIALS.c.id == trial_id, TRIALS.c.state == RUNNING)
                           .values(state=state, value=value, finished_at=utcnow())
                           .returning(TRIALS.c.id)).first() is not None


def save_attrs(session: Session, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Replace a trial's notes (what the pruner wrote of it: the rungs it reached)."""
    session.execute(update(TRIALS).where(TRIALS.c.id == trial_id).values(attrs=dict(attrs)))


def finish(session: Session, search_id: int, status: str, best_job_id: int | None = None) -> bool:
    """End a running search (succeeded, failed or cancelled): guarded, so exactly one process ends it."""
    return session.execute(update(SEARCHES).where(SEARCHES.c.id == search_id, SEARCHES.c.status == RUNNING)
                           .values(status=status, best_job_id=best_job_id, finished_at=utcnow())
                           .returning(SEARCHES.c.id)).first() is not None


def add_jobs(session: Session, batch_id: int, jobs: list[NewJob], message: str) -> dict[str, int]:
    """Insert jobs into a batch, all ``pending``, with a status event each. Returns their ids by name."""
    if not jobs:
        return {}
    now = utcnow()
    inserted = session.execute(
        insert(JOBS).returning(JOBS.c.id, JOBS.c.name, sort_by_parameter_order=True),
        [{"batch_id": batch_id, "name": j.name, "kind": j.kind, "params": j.params, "fingerprint": j.fingerprint,
          "status": JobStatus.PENDING.value, "queue": j.queue, "priority": j.priority, "max_attempts": j.max_attempts,
          "timeout": j.timeout, "attempts": 0, "progress": 0.0, "cancel_requested": False, "created_at": now}
         for j in jobs])
    ids = {name: job_id for job_id, name in inserted}
    add_status_events(session, [(i, None, message) for i in ids.values()], JobStatus.PENDING, now)
    return ids


def add_edges(session: Session, edges: Iterable[tuple[int, int]]) -> None:
    """Dependency edges (parent id, child id) between existing jobs."""
    rows = [{"parent_id": p, "child_id": c} for p, c in dict.fromkeys(edges)]
    if rows:
        session.execute(insert(DEPS), rows)


def job_ids_by_name(session: Session, batch_id: int, names: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(names))
    out: dict[str, int] = {}
    for part in chunks(wanted):
        out.update({n: i for i, n in session.execute(
            select(JOBS.c.id, JOBS.c.name).where(JOBS.c.batch_id == batch_id, JOBS.c.name.in_(part)))})
    return out


def fingerprints(session: Session, job_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in chunks(sorted(set(job_ids))):
        out.update({i: fp for i, fp in session.execute(
            select(JOBS.c.id, JOBS.c.fingerprint).where(JOBS.c.id.in_(part)))})
    return out


def set_fingerprints(session: Session, by_job: Mapping[int, str]) -> None:
    """Give pending jobs the fingerprints they have now that their parents are known (a search ended)."""
    for job_id, fp in by_job.items():
        session.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.PENDING.value)
                        .values(fingerprint=fp))


def metric_series(session: Session, job_ids: Iterable[int], key: str) -> dict[int, dict[int, float]]:
    """The metric ``key`` of each job, by step (an epoch; 0 for a value recorded once, at the end)."""
    out: dict[int, dict[int, float]] = {}
    for part in chunks(sorted(set(job_ids))):
        for job_id, step, value in session.execute(
                select(METRICS.c.job_id, METRICS.c.step, METRICS.c.value)
                .where(METRICS.c.job_id.in_(part), METRICS.c.key == key)):
            out.setdefault(job_id, {})[step] = value
    return out


def earlier_jobs(session: Session, kind: str, exclude_batch: int, limit: int) -> list[tuple[int, dict[str, Any], str,
                                                                                              JobStatus]]:
    """The most recent jobs of ``kind`` of other batches that ran to success or were pruned (not cache hits):
    (id, params, fingerprint, status) each, newest first, at most ``limit``."""
    rows = session.execute(
        select(JOBS.c.id, JOBS.c.params, JOBS.c.fingerprint, JOBS.c.status)
        .where(JOBS.c.kind == kind, JOBS.c.batch_id != exclude_batch, JOBS.c.cached_from.is_(None),
               JOBS.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.PRUNED.value]))
        .order_by(JOBS.c.id.desc()).limit(limit))
    return [(r.id, r.params, r.fingerprint, JobStatus(r.status)) for r in rows]


def set_progress(session: Session, job_id: int, fraction: float) -> None:
    """A running study job's progress: the share of its search's trials that have ended."""
    session.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.RUNNING.value)
                    .values(progress=fraction))
