"""Writing a batch: its jobs and edges, the cache hits served from earlier results, the ready jobs queued. In bulk:
a few statements per thousand jobs, whatever the batch's size, in the caller's one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import String, any_, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from storage.events import add_status_events
from storage.graph import ready_in_batch
from storage.models import JobRow, utcnow
from storage.records import Job, NewJob, from_row
from storage.results import copy_results
from storage.sql import BATCHES, DEPS, JOBS, chunks
from storage.status import JobStatus, can_move


def create_batch(
    session: Session,
    name: str,
    spec: dict[str, Any],
    jobs: list[NewJob],
    edges: Iterable[tuple[str, str]],
    spec_path: str | None = None,
    no_cache: bool = False,
) -> tuple[int, dict[str, int]]:
    """Insert a batch with its jobs (all ``pending``) and dependency edges (parent name, child name).

    Returns the batch id and the job ids by name. Nothing is committed here: the caller's transaction is the
    unit, so a batch is written whole or not at all.
    """
    # Core bulk statements, not ORM objects: a 10,000-job batch is a few multi-row INSERTs, not 20,000 flushes.
    now = utcnow()
    batch_id = session.execute(
        insert(BATCHES).values(name=name, spec=spec, spec_path=spec_path, no_cache=no_cache, created_at=now)
        .returning(BATCHES.c.id)
    ).scalar_one()
    ids: dict[str, int] = {}
    if jobs:
        pending = JobStatus.PENDING.value
        inserted = session.execute(
            insert(JOBS).returning(JOBS.c.id, JOBS.c.name, sort_by_parameter_order=True),
            [{"batch_id": batch_id, "name": j.name, "kind": j.kind, "params": j.params, "fingerprint": j.fingerprint,
              "status": pending, "queue": j.queue, "priority": j.priority, "max_attempts": j.max_attempts,
              "timeout": j.timeout, "attempts": 0, "progress": 0.0, "cancel_requested": False, "created_at": now}
             for j in jobs],
        )
        ids = {job_name: job_id for job_id, job_name in inserted}
    deps = [{"parent_id": ids[p], "child_id": ids[c]} for p, c in edges]  # KeyError: an edge to no job of the batch
    if deps:
        session.execute(insert(DEPS), deps)
    add_status_events(session, [(job_id, None, "submitted") for job_id in ids.values()], JobStatus.PENDING, now)
    return batch_id, ids


def succeeded_by_fingerprint(session: Session, fingerprints: Iterable[str]) -> dict[str, int]:
    """For each fingerprint that some job has succeeded with, the job that did the work (not a cached copy)."""
    fps = sorted(set(fingerprints))
    out: dict[str, int] = {}
    lookup = select(JobRow.fingerprint, func.min(func.coalesce(JobRow.cached_from, JobRow.id))).group_by(
        JobRow.fingerprint)
    if session.get_bind().dialect.name == "postgresql":
        # One array parameter: PostgreSQL hashes it, where a list of 1000 parameters is compared one by one
        # against every succeeded job (seconds per statement once the table holds a few batches).
        from sqlalchemy.dialects.postgresql import ARRAY

        rows = session.execute(lookup.where(
            JobRow.fingerprint == any_(bindparam("fps", fps, type_=ARRAY(String(64)))),
            JobRow.status == JobStatus.SUCCEEDED.value))
        return {fp: job_id for fp, job_id in rows}
    for chunk in chunks(fps):  # bound the bind parameters of one statement (SQLite caps them)
        rows = session.execute(lookup.where(JobRow.fingerprint.in_(chunk), JobRow.status == JobStatus.SUCCEEDED.value))
        out.update({fp: job_id for fp, job_id in rows})
    return out


def mark_cached(session: Session, sources: Mapping[int, int]) -> list[int]:
    """Mark pending jobs succeeded as cache hits, ``sources`` giving each job id the job whose results it reuses:
    guarded ``pending -> succeeded`` UPDATEs ... RETURNING (``cached_from``, progress 1, ``finished_at``), their
    status events and their sources' results copied. Returns the ids moved (a job no longer pending is left
    alone), in id order."""
    if not can_move(JobStatus.PENDING, JobStatus.SUCCEEDED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> succeeded")
    now = utcnow()
    moved: list[Any] = []
    for chunk in chunks(sorted(sources)):
        moved += session.execute(
            update(JOBS)
            .where(JOBS.c.id.in_(chunk), JOBS.c.status == JobStatus.PENDING.value)
            .values(status=JobStatus.SUCCEEDED.value, progress=1.0, finished_at=now,
                    cached_from=case({job_id: sources[job_id] for job_id in chunk}, value=JOBS.c.id))
            .returning(JOBS.c.id, JOBS.c.attempts)
        ).all()
    moved.sort(key=lambda r: r.id)
    add_status_events(session, [(r.id, r.attempts, f"cached: same fingerprint as job {sources[r.id]}")
                                for r in moved], JobStatus.SUCCEEDED, now)
    copy_results(session, [(sources[r.id], r.id) for r in moved])
    return [r.id for r in moved]


def queue_roots(session: Session, batch_id: int) -> list[Job]:
    """Queue the jobs of a batch that are ready (``graph.roots``): one guarded ``pending -> queued`` UPDATE ...
    RETURNING for all of them and one INSERT of their status events, as ``transition`` writes them one by one.

    Returns the jobs it queued (as they are now: ``queued``), in id order.
    """
    if not can_move(JobStatus.PENDING, JobStatus.QUEUED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> queued")
    now = utcnow()
    rows = sorted(session.execute(
        update(JOBS).where(*ready_in_batch(batch_id)).values(status=JobStatus.QUEUED.value, queued_at=now)
        .returning(*JOBS.c)
    ).all(), key=lambda r: r.id)
    add_status_events(session, [(r.id, r.attempts, None) for r in rows], JobStatus.QUEUED, now)
    return [from_row(Job, r) for r in rows]
