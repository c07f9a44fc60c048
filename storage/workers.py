"""The farm's worker processes (the ``workers`` table): registration, heartbeats, the job each runs, and what the
interfaces read from it: each worker's state and, per queue, its jobs and its live consumers.

A worker writes its row when it starts (``register``), every few seconds while it runs (``heartbeat``: one
UPDATE), when it claims a job and when the job ends (``job_started``, ``job_ended``: a statement in the job's own
transactions), and when it stops cleanly (``stopped``). On PostgreSQL the times are the database's clock, so the
machines of a farm need not agree on the time; on SQLite (one machine) the process's.

A worker's state: ``stopped`` (it shut down cleanly), ``lost`` (no heartbeat for ``lost_after`` seconds: killed,
its machine gone, or cut off from the database), ``running`` (a job), else ``idle``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import JobRow, WorkerRow, utcnow
from storage.records import Worker, from_row
from storage.sql import JOBS
from storage.status import JobStatus

WORKERS = cast(Table, WorkerRow.__table__)
EVERY_QUEUE = "*"  # in ``queues``: a worker that takes every queue (the embedded default's in-process worker)
STATES = ("running", "idle", "lost", "stopped")

# The job a worker runs now, read from the jobs table (the truth): its lowest running job, or NULL. Writing it this
# way, not as a value the worker remembers, also clears a job that ended without telling (a process killed).
_RUNNING_JOB = (select(func.min(JOBS.c.id))
                .where(JOBS.c.status == JobStatus.RUNNING.value, JOBS.c.worker == WORKERS.c.name)
                .scalar_subquery())
_JOB_STARTED = update(WORKERS).where(WORKERS.c.name == bindparam("w_name")).values(job_id=bindparam("w_job"))
_JOB_ENDED = update(WORKERS).where(WORKERS.c.name == bindparam("w_name")).values(
    job_id=_RUNNING_JOB, jobs_done=WORKERS.c.jobs_done + bindparam("w_done", type_=Integer),
    jobs_failed=WORKERS.c.jobs_failed + bindparam("w_failed", type_=Integer))


def _now(session: Session) -> Any:
    """What a write stores as the time: the database's clock on PostgreSQL, this process's on SQLite."""
    return func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()


def database_now(session: Session) -> datetime:
    """The time by the clock ``_now`` writes with: states are judged against it."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(datetime, session.scalar(select(func.now())))
    return utcnow()


def register(session: Session, name: str, host: str, pid: int, queues: list[str], gpu: str | None, version: str,
             stale_before: datetime | None = None) -> bool:
    """Write the row of the worker ``name``, starting afresh (no job, counts at 0). A row of that name is taken
    over: always, or with ``stale_before`` only if that worker stopped or was last seen before then (two live
    processes of one name would take it from each other at every heartbeat). Returns whether the row is this
    worker's now."""
    now = _now(session)
    values = dict(name=name, host=host, pid=pid, queues=list(queues), gpu=gpu, version=version, job_id=None,
                  started_at=now, last_seen=now, stopped_at=None, jobs_done=0, jobs_failed=0)
    stmt = _insert(session)(WORKERS).values(**values)
    where = None if stale_before is None else or_(WORKERS.c.stopped_at.is_not(None),
                                                  WORKERS.c.last_seen < stale_before)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], where=where,
                                      set_={c: stmt.excluded[c] for c in values if c != "name"})
    return session.execute(stmt.returning(WORKERS.c.id)).first() is not None


def _insert(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def heartbeat(session: Session, name: str, host: str, pid: int, queues: list[str]) -> bool:
    """One UPDATE: the worker ``name`` (this process: ``host`` and ``pid``) is alive, consumes ``queues`` now and
    runs the job the jobs table says. False when its row is gone or another process took it over."""
    result = session.execute(
        update(WORKERS)
        .where(WORKERS.c.name == name, WORKERS.c.host == host, WORKERS.c.pid == pid)
        .values(last_seen=_now(session), queues=list(queues), job_id=_RUNNING_JOB, stopped_at=None))
    return bool(getattr(result, "rowcount", 0))


def job_started(session: Session, name: str, job_id: int) -> None:
    """In the transaction that claims the job: the worker ``name`` runs ``job_id`` now."""
    session.execute(_JOB_STARTED, {"w_name": name, "w_job": job_id})


def job_ended(session: Session, name: str, succeeded: bool = False, failed: bool = False) -> None:
    """A job of the worker ``name`` ended (in the transaction that recorded it, when there is one): it runs its
    next running job, if any, and counts the outcome."""
    session.execute(_JOB_ENDED, {"w_name": name, "w_done": int(succeeded), "w_failed": int(failed)})


def stopped(session: Session, name: str, host: str, pid: int) -> None:
    """The worker shut down cleanly."""
    session.execute(update(WORKERS).where(WORKERS.c.name == name, WORKERS.c.host == host, WORKERS.c.pid == pid)
                    .values(stopped_at=_now(session), job_id=None))


def forget(session: Session, before: datetime) -> int:
    """Delete the workers last seen before ``before`` (stopped or lost long ago). Returns how many."""
    return int(getattr(session.execute(delete(WORKERS).where(WORKERS.c.last_seen < before)), "rowcount", 0) or 0)


def state(worker: Worker, now: datetime, lost_after: float) -> str:
    """``stopped``, ``lost``, ``running`` or ``idle`` (see the module's docstring), at ``now``."""
    if worker.stopped_at is not None:
        return "stopped"
    if worker.last_seen < now - timedelta(seconds=lost_after):
        return "lost"
    return "running" if worker.job_id is not None else "idle"


@dataclass(frozen=True)
class WorkerStatus:
    worker: Worker
    state: str


def list_workers(session: Session, lost_after: float, limit: int | None = None, offset: int = 0
                 ) -> list[WorkerStatus]:
    """The farm's workers by name, each with its state."""
    now = database_now(session)
    q = select(WorkerRow).order_by(WorkerRow.name).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    return [WorkerStatus(w, state(w, now, lost_after)) for w in (from_row(Worker, r) for r in session.scalars(q))]


def count_workers(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(WorkerRow)) or 0


def live_workers(session: Session, lost_after: float) -> list[Worker]:
    """The workers that are neither stopped nor lost, by name."""
    cutoff = database_now(session) - timedelta(seconds=lost_after)
    q = (select(WorkerRow).where(WorkerRow.stopped_at.is_(None), WorkerRow.last_seen >= cutoff)
         .order_by(WorkerRow.name))
    return [from_row(Worker, r) for r in session.scalars(q)]


@dataclass(frozen=True)
class QueueLoad:
    """A queue as the store sees it: its jobs waiting and running, and the live workers that consume it."""

    queue: str
    queued: int
    running: int
    consumers: int  # live workers consuming it (one that takes every queue included)

    @property
    def unserved(self) -> bool:
        """Jobs wait on it and no live worker consumes it: they wait until one does."""
        return self.queued > 0 and self.consumers == 0


def queue_loads(session: Session, lost_after: float, batch_id: int | None = None, also: Iterable[str] = ()
                ) -> list[QueueLoad]:
    """Per queue, by name: the jobs queued and running (of ``batch_id``, or of every batch) and its live
    consumers. The queues listed: those with such jobs, those live workers consume, and ``also``."""
    q = (select(JobRow.queue, JobRow.status, func.count())
         .where(JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
         .group_by(JobRow.queue, JobRow.status))
    if batch_id is not None:
        q = q.where(JobRow.batch_id == batch_id)
    counts: dict[str, dict[str, int]] = {}
    for queue, status, n in session.execute(q):
        counts.setdefault(queue, {})[status] = n
    live = live_workers(session, lost_after)
    consumed: dict[str, int] = {}
    everything = sum(1 for w in live if EVERY_QUEUE in w.queues)
    for w in live:
        for name in set(w.queues) - {EVERY_QUEUE}:
            consumed[name] = consumed.get(name, 0) + 1
    names = set(counts) | (set(consumed) if batch_id is None else set()) | set(also)
    return [QueueLoad(name, counts.get(name, {}).get(JobStatus.QUEUED.value, 0),
                      counts.get(name, {}).get(JobStatus.RUNNING.value, 0), consumed.get(name, 0) + everything)
            for name in sorted(names)]
