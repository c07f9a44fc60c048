"""The dependency graph: which jobs are ready (every parent succeeded), and what lies downstream of a job. Fan-in
is counted in SQL, in the transaction that finishes a parent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, aliased

from storage.models import JobDepRow, JobRow
from storage.sql import chunks
from storage.status import JobStatus

_parent = aliased(JobRow)
# Built once: statement construction costs more than running these on a small job's path.
_PENDING_CHILDREN = (
    select(JobRow.id)
    .join(JobDepRow, JobDepRow.child_id == JobRow.id)
    .where(JobDepRow.parent_id == bindparam("job_id"), JobRow.status == JobStatus.PENDING.value)
    .order_by(JobRow.id)
    .with_for_update(of=JobRow)
)
_READY = (
    select(JobRow.id)
    .where(JobRow.id.in_(bindparam("ids", expanding=True)), JobRow.status == JobStatus.PENDING.value,
           ~select(JobDepRow.parent_id)
           .join(_parent, _parent.id == JobDepRow.parent_id)
           .where(JobDepRow.child_id == JobRow.id, _parent.status != JobStatus.SUCCEEDED.value)
           .exists())
    .order_by(JobRow.id)
)


def ready_children(session: Session, job_id: int) -> list[int]:
    """Children of ``job_id`` that are pending and whose parents have all succeeded (fan-in counted in SQL).

    Call it in the transaction that marked ``job_id`` succeeded. Two parents of one child finishing at once
    must not both miss the other's success (each transaction sees only its own): the pending children are
    locked first (``FOR UPDATE``, in id order, so two finishers cannot deadlock), which makes the second
    finisher wait for the first to commit; its count then sees both parents succeeded. SQLite needs no lock:
    its write transactions run one at a time.
    """
    children = list(session.scalars(_PENDING_CHILDREN, {"job_id": job_id}))
    if not children:
        return []
    return list(session.scalars(_READY, {"ids": children}))


def ready_in_batch(batch_id: Any) -> list[Any]:
    """The WHERE clauses of a batch's jobs that are ready to queue: pending, with no parent that has not succeeded."""
    return [JobRow.batch_id == batch_id, *ready()]


def ready() -> list[Any]:
    """The WHERE clauses of jobs that are ready to queue: pending, with no parent that has not succeeded."""
    parent = aliased(JobRow)
    unfinished_parent = (
        select(JobDepRow.parent_id)
        .join(parent, parent.id == JobDepRow.parent_id)
        .where(JobDepRow.child_id == JobRow.id, parent.status != JobStatus.SUCCEEDED.value)
        .exists()
    )
    return [JobRow.status == JobStatus.PENDING.value, ~unfinished_parent]


def roots(session: Session, batch_id: int) -> list[int]:
    """Pending jobs of a batch with no unfinished parents (those ready to queue)."""
    return list(session.scalars(select(JobRow.id).where(*ready_in_batch(batch_id)).order_by(JobRow.id)))


def descendants(session: Session, job_ids: int | Iterable[int]) -> list[int]:
    """All jobs downstream of ``job_ids`` (one id or several; breadth first, each once)."""
    seen: dict[int, None] = {}
    frontier = [job_ids] if isinstance(job_ids, int) else list(dict.fromkeys(job_ids))
    while frontier:
        children = [c for part in chunks(frontier)
                    for c in session.scalars(select(JobDepRow.child_id).where(JobDepRow.parent_id.in_(part)))]
        frontier = list(dict.fromkeys(c for c in children if c not in seen))
        seen.update(dict.fromkeys(frontier))
    return list(seen)
