"""The statements behind reclaiming space (``scheduler.reclaim``): which blobs rows still reference, and removing a
finished batch's rows. A blob is referenced by an ``artifacts`` row or a ``datasets`` row with its sha256 (the
artifacts' column is indexed). The blobs themselves are the artifact store's; the order (rows, then blobs) and the
grace period are the control plane's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import DatasetRow
from storage.sql import ARTIFACTS, BATCHES, DEPS, EVENTS, JOBS, METRICS, chunks
from storage.status import JobStatus

DATASETS = cast(Table, DatasetRow.__table__)
UNFINISHED = (JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def referenced(session: Session, shas: Iterable[str], except_batch: int | None = None) -> set[str]:
    """Of the blobs ``shas``, those an artifact (of a job outside ``except_batch``) or a dataset references."""
    found: set[str] = set()
    for part in chunks(sorted(set(shas))):
        by_artifacts = select(ARTIFACTS.c.sha256).where(ARTIFACTS.c.sha256.in_(part))
        if except_batch is not None:
            by_artifacts = by_artifacts.where(ARTIFACTS.c.job_id.not_in(_jobs_of(except_batch)))
        found.update(session.scalars(by_artifacts.distinct()))
        found.update(session.scalars(select(DATASETS.c.sha256).where(DATASETS.c.sha256.in_(part)).distinct()))
    return found


def unfinished(session: Session, batch_id: int, lock: bool = False) -> dict[str, int]:
    """The batch's jobs that are not finished (pending, queued, running), by status. With ``lock`` the batch's
    jobs are locked first (PostgreSQL; SQLite's write transaction holds the database), so none changes status
    before the transaction ends: a retry cannot slip in between this check and a delete."""
    if lock:
        session.execute(select(JOBS.c.id).where(JOBS.c.batch_id == batch_id).order_by(JOBS.c.id).with_for_update())
    rows = session.execute(select(JOBS.c.status, func.count()).where(JOBS.c.batch_id == batch_id,
                                                                     JOBS.c.status.in_(UNFINISHED))
                           .group_by(JOBS.c.status))
    return {status: int(n) for status, n in rows}


def batch_blobs(session: Session, batch_id: int) -> dict[str, str]:
    """The blobs the batch's artifacts reference: uri by sha256."""
    rows = session.execute(select(ARTIFACTS.c.sha256, ARTIFACTS.c.uri)
                           .where(ARTIFACTS.c.job_id.in_(_jobs_of(batch_id))).distinct())
    return {sha: uri for sha, uri in rows}


def batch_rows(session: Session, batch_id: int) -> dict[str, int]:
    """How many rows of each table the batch has: jobs, artifacts, metrics, events."""
    jobs = _jobs_of(batch_id)
    count = {name: session.scalar(select(func.count()).select_from(table).where(table.c.job_id.in_(jobs))) or 0
             for name, table in (("artifacts", ARTIFACTS), ("metrics", METRICS), ("events", EVENTS))}
    return {"jobs": session.scalar(select(func.count()).select_from(JOBS).where(JOBS.c.batch_id == batch_id)) or 0,
            **count}


def delete_batch(session: Session, batch_id: int) -> dict[str, int]:
    """Delete the batch, its jobs and their edges, events, metrics and artifacts (rows, not blobs), in the caller's
    transaction. A job of another batch cached from one of them keeps its own copies of the results and loses only
    its ``cached_from``. Returns the rows deleted per table."""
    jobs = _jobs_of(batch_id)
    deleted = {name: _count(session.execute(delete(table).where(table.c.job_id.in_(jobs))))
               for name, table in (("events", EVENTS), ("metrics", METRICS), ("artifacts", ARTIFACTS))}
    session.execute(delete(DEPS).where(or_(DEPS.c.child_id.in_(jobs), DEPS.c.parent_id.in_(jobs))))
    session.execute(update(JOBS).where(JOBS.c.cached_from.in_(jobs), JOBS.c.batch_id != batch_id)
                    .values(cached_from=None))
    session.execute(update(JOBS).where(JOBS.c.batch_id == batch_id).values(cached_from=None))
    deleted["jobs"] = _count(session.execute(delete(JOBS).where(JOBS.c.batch_id == batch_id)))
    session.execute(delete(BATCHES).where(BATCHES.c.id == batch_id))
    return deleted


def _jobs_of(batch_id: int) -> Any:
    return select(JOBS.c.id).where(JOBS.c.batch_id == batch_id)


def _count(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)
