"""Status changes. Every one is a guarded UPDATE: it happens only from the expected status (and attempt), so two
workers can never both run one job, a redelivered message for a finished job changes nothing, and a worker ends
only the run it claimed. Each change writes its status event in the same statement (PostgreSQL) or transaction."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, insert, literal, select, update
from sqlalchemy.orm import Session

from storage.models import utcnow
from storage.records import Job, from_row
from storage.sql import EVENTS, JOBS
from storage.status import JobStatus, can_move

INCREMENT = object()  # a column value for ``transition``: the column's value plus one (attempts, on a claim)


def transition(
    session: Session,
    job_id: int,
    src: JobStatus | Iterable[JobStatus],
    dst: JobStatus,
    *,
    message: str | None = None,
    by: str | None = None,
    attempt: int | None = None,
    **values: Any,
) -> bool:
    """Move a job from one of ``src`` to ``dst`` if, and only if, it is in ``src`` now.

    With ``attempt``, only if it is still at that attempt: a worker ends only the run it claimed, never the
    next attempt that the reaper handed to another worker after this one's lease expired.

    Returns whether this call made the change (exactly one of several racing callers gets True). Records a
    status event (by worker ``by``) when it does. Extra column ``values`` are set in the same UPDATE.
    """
    return _move(session, job_id, src, dst, message, by, values, attempt) is not None


def _move(session: Session, job_id: int, src: JobStatus | Iterable[JobStatus], dst: JobStatus,
          message: str | None, by: str | None, values: dict[str, Any], attempt: int | None = None) -> Any:
    """``transition``'s work: one guarded UPDATE ... RETURNING the job's row (None if not moved) + its event."""
    sources = [src] if isinstance(src, JobStatus) else list(src)
    for s in sources:
        if not can_move(s, dst):
            raise ValueError(f"illegal job transition {s} -> {dst}")
    now = utcnow()
    stamp = {
        JobStatus.QUEUED: "queued_at",
        JobStatus.RUNNING: "started_at",
        JobStatus.SUCCEEDED: "finished_at",
        JobStatus.FAILED: "finished_at",
        JobStatus.CANCELLED: "finished_at",
    }.get(dst)
    if stamp and stamp not in values:
        values[stamp] = now
    increments = tuple(sorted(k for k, v in values.items() if v is INCREMENT))
    bound = {k: v for k, v in values.items() if v is not INCREMENT}
    dialect = session.get_bind().dialect.name
    moved, logged = _move_statements(dialect, tuple(s.value for s in sources), dst.value, tuple(sorted(bound)),
                                     increments, attempt is not None)
    params = {"job_id": job_id, "attempt": attempt, "ev_time": now, "ev_message": message, "ev_worker": by,
              **{f"v_{k}": v for k, v in bound.items()}}
    if logged is None:  # PostgreSQL: the UPDATE and its event's INSERT are one statement
        return session.execute(moved, params).first()
    row = session.execute(moved, params).first()
    if row is not None:
        session.execute(logged, {**params, "ev_attempt": row.attempts})
    return row


@functools.lru_cache(maxsize=256)
def _move_statements(dialect: str, sources: tuple[str, ...], dst: str, bound: tuple[str, ...],
                     increments: tuple[str, ...], guarded: bool) -> tuple[Any, Any]:
    """A status change's statements, built once per shape (building them costs more than running them): on
    PostgreSQL one data-modifying CTE (the UPDATE ... RETURNING and the event's INSERT), elsewhere the UPDATE and
    the INSERT. Parameters: job_id, attempt, ev_time, ev_message, ev_worker (and ev_attempt), v_<column>."""
    where = [JOBS.c.id == bindparam("job_id"), JOBS.c.status.in_(sources)]
    if guarded:
        where.append(JOBS.c.attempts == bindparam("attempt"))
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=JOBS.c[k].type) for k in bound}
    values.update({k: JOBS.c[k] + 1 for k in increments})
    moved = update(JOBS).where(*where).values(status=dst, **values).returning(*JOBS.c)
    event = {"job_id": bindparam("job_id"), "time": bindparam("ev_time", type_=EVENTS.c.time.type),
             "kind": literal("status"), "status": literal(dst),
             "message": bindparam("ev_message", type_=EVENTS.c.message.type),
             "worker": bindparam("ev_worker", type_=EVENTS.c.worker.type)}
    if dialect != "postgresql":
        return moved, insert(EVENTS).values(**event, attempt=bindparam("ev_attempt"))
    moved_cte = moved.cte("moved")
    columns = [*event, "attempt"]
    logged = insert(EVENTS).from_select(
        columns, select(*(v.label(k) if k != "job_id" else moved_cte.c.id for k, v in event.items()),
                        moved_cte.c.attempts)).cte("logged")
    return select(moved_cte).add_cte(logged), None


def claim(session: Session, job_id: int, worker: str, lease_seconds: float, gpu: str | None = None,
          host: str | None = None) -> Job | None:
    """Take a queued job for ``worker``: ``queued -> running``, one more attempt, a lease. None if not queued."""
    now = utcnow()
    row = _move(session, job_id, JobStatus.QUEUED, JobStatus.RUNNING, f"claimed by {worker}", worker, dict(
        worker=worker, host=host, gpu=gpu, attempts=INCREMENT, started_at=now, heartbeat_at=now,
        lease_until=now + timedelta(seconds=lease_seconds), error=None, traceback=None, progress=0.0,
        not_before=None))
    return from_row(Job, row) if row is not None else None


def heartbeat(session: Session, job_id: int, attempt: int, lease_seconds: float,
              progress: float | None = None) -> bool | None:
    """Renew the lease of a running job's ``attempt``. Returns whether the user asked to cancel it, or None if
    that attempt is no longer running (it ended, or its lease expired and the reaper took it back)."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "lease_until": now + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["progress"] = progress
    row = session.execute(
        update(JOBS)
        .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.attempts == attempt)
        .values(**values)
        .returning(JOBS.c.cancel_requested)
    ).first()
    return None if row is None else bool(row.cancel_requested)
