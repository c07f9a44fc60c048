"""Writes to the job tables. Every status change is a guarded UPDATE: it happens only from the expected status,
so two workers can never both run one job and a redelivered message for a finished job changes nothing."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, any_, bindparam, func, insert, literal, select, update
from sqlalchemy.orm import Session, aliased

from storage.models import ArtifactRow, BatchRow, EventRow, JobDepRow, JobRow, MetricRow, utcnow
from storage.records import Job, NewJob, from_row
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
        insert(cast(Table, BatchRow.__table__))
        .values(name=name, spec=spec, spec_path=spec_path, no_cache=no_cache, created_at=now)
        .returning(BatchRow.id)
    ).scalar_one()
    ids: dict[str, int] = {}
    if jobs:
        pending = JobStatus.PENDING.value
        inserted = session.execute(
            insert(_JOBS).returning(_JOBS.c.id, _JOBS.c.name, sort_by_parameter_order=True),
            [{"batch_id": batch_id, "name": j.name, "kind": j.kind, "params": j.params, "fingerprint": j.fingerprint,
              "status": pending, "queue": j.queue, "priority": j.priority, "max_attempts": j.max_attempts,
              "timeout": j.timeout, "attempts": 0, "progress": 0.0, "cancel_requested": False, "created_at": now}
             for j in jobs],
        )
        ids = {job_name: job_id for job_id, job_name in inserted}
    deps = [{"parent_id": ids[p], "child_id": ids[c]} for p, c in edges]  # KeyError: an edge to no job of the batch
    if deps:
        session.execute(insert(cast(Table, JobDepRow.__table__)), deps)
    _insert_status_events(session, [(job_id, None, "submitted") for job_id in ids.values()], JobStatus.PENDING, now)
    return batch_id, ids


_JOBS = cast(Table, JobRow.__table__)  # Core statements: no ORM bookkeeping on the hot path of every job
_EVENTS = cast(Table, EventRow.__table__)


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


INCREMENT = object()  # a value for ``_move``: the column's value plus one (attempts, on a claim)


@functools.lru_cache(maxsize=256)
def _move_statements(dialect: str, sources: tuple[str, ...], dst: str, bound: tuple[str, ...],
                     increments: tuple[str, ...], guarded: bool) -> tuple[Any, Any]:
    """A status change's statements, built once per shape (building them costs more than running them): on
    PostgreSQL one data-modifying CTE (the UPDATE ... RETURNING and the event's INSERT), elsewhere the UPDATE and
    the INSERT. Parameters: job_id, attempt, ev_time, ev_message, ev_worker (and ev_attempt), v_<column>."""
    where = [_JOBS.c.id == bindparam("job_id"), _JOBS.c.status.in_(sources)]
    if guarded:
        where.append(_JOBS.c.attempts == bindparam("attempt"))
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=_JOBS.c[k].type) for k in bound}
    values.update({k: _JOBS.c[k] + 1 for k in increments})
    moved = update(_JOBS).where(*where).values(status=dst, **values).returning(*_JOBS.c)
    event = {"job_id": bindparam("job_id"), "time": bindparam("ev_time", type_=_EVENTS.c.time.type),
             "kind": literal("status"), "status": literal(dst),
             "message": bindparam("ev_message", type_=_EVENTS.c.message.type),
             "worker": bindparam("ev_worker", type_=_EVENTS.c.worker.type)}
    if dialect != "postgresql":
        return moved, insert(_EVENTS).values(**event, attempt=bindparam("ev_attempt"))
    moved_cte = moved.cte("moved")
    columns = [*event, "attempt"]
    logged = insert(_EVENTS).from_select(
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
        update(_JOBS)
        .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value, JobRow.attempts == attempt)
        .values(**values)
        .returning(JobRow.cancel_requested)
    ).first()
    return None if row is None else bool(row.cancel_requested)


def get_job(session: Session, job_id: int) -> Job | None:
    row = session.get(JobRow, job_id, populate_existing=True)
    return from_row(Job, row) if row is not None else None


def add_event(session: Session, job_id: int, kind: str, message: str, worker: str | None = None,
              attempt: int | None = None) -> None:
    session.execute(insert(_EVENTS).values(job_id=job_id, time=utcnow(), kind=kind, message=message,
                                                     worker=worker, attempt=attempt))


def put_metric(session: Session, job_id: int, key: str, value: float, step: int = 0,
               time: datetime | None = None) -> None:
    """Record a metric; a second value for the same (job, key, step) replaces the first (a resumed job)."""
    put_metrics(session, job_id, {key: value}, step, time)


def put_metrics(session: Session, job_id: int, values: Mapping[str, float], step: int = 0,
                time: datetime | None = None) -> None:
    """Record several metrics at one step in one statement, each replacing an earlier value of its key."""
    if not values:
        return
    at = time or utcnow()
    _upsert(session, MetricRow, [{"job_id": job_id, "key": k, "step": step, "value": float(v), "time": at}
                                 for k, v in values.items()], ["job_id", "key", "step"], ["value", "time"])


def put_artifact(session: Session, job_id: int, name: str, uri: str, sha256: str, size: int, media_type: str,
                 meta: dict[str, Any] | None = None) -> None:
    """Record an artifact of a job; an artifact of the same name (from an earlier attempt) is replaced."""
    _upsert(session, ArtifactRow, [{"job_id": job_id, "name": name, "uri": uri, "sha256": sha256, "bytes": size,
                                    "media_type": media_type, "meta": meta or {}, "created_at": utcnow()}],
            ["job_id", "name"], ["uri", "sha256", "bytes", "media_type", "meta", "created_at"])


def _upsert(session: Session, model: Any, rows: list[dict[str, Any]], keys: list[str], update_cols: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: one round trip where a delete and an insert took two. The
    statement is built once per table and dialect and given the rows as parameters (compiled once, cached)."""
    if rows:
        stmt = _upsert_statement(session.get_bind().dialect.name, model.__table__, tuple(keys), tuple(update_cols))
        session.execute(stmt, rows)


@functools.lru_cache(maxsize=32)
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...]) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if dialect_insert is None:  # pragma: no cover - the store supports SQLite and PostgreSQL
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    stmt = dialect_insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: getattr(stmt.excluded, c) for c in update_cols})


def replace_artifact(session: Session, job_id: int, name: str, uri: str, sha256: str, size: int, media_type: str,
                     meta: dict[str, Any] | None = None) -> str | None:
    """``put_artifact``, returning the uri of the blob it replaced if no artifact refers to that blob any more
    (the caller may then delete it: a checkpoint rewritten every epoch must not pile up blobs)."""
    old = session.execute(select(ArtifactRow.uri, ArtifactRow.sha256)
                          .where(ArtifactRow.job_id == job_id, ArtifactRow.name == name)).first()
    put_artifact(session, job_id, name, uri, sha256, size, media_type, meta)
    if old is None or old.sha256 == sha256:
        return None
    still_used = session.scalar(select(func.count()).select_from(ArtifactRow).where(ArtifactRow.sha256 == old.sha256))
    return None if still_used else str(old.uri)


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


def copy_results(session: Session, source_id: int, target_id: int) -> None:
    """Give ``target`` the artifacts (same blobs) and metrics of ``source``: used for cache hits."""
    copy_results_many(session, [(source_id, target_id)])


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


def roots(session: Session, batch_id: int) -> list[int]:
    """Pending jobs of a batch with no unfinished parents (those ready to queue)."""
    return list(session.scalars(
        select(JobRow.id).where(*_ready_in_batch(batch_id)).order_by(JobRow.id)
    ))


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


def request_cancel(session: Session, job_ids: Iterable[int], reason: str) -> dict[str, list[int]]:
    """Cancel jobs: pending/queued ones at once, running ones by flag (the worker stops at its next check).

    A few statements per thousand jobs: guarded ``pending/queued -> cancelled`` UPDATEs ... RETURNING with their
    status events, as ``transition`` writes them, and the cancel flag with a message event on running ones. Rows
    are locked in id order first, as ``ready_children`` locks them, so a cancel and a finishing parent on
    PostgreSQL cannot deadlock. Returns the ids ``cancelled`` now and those ``flagged``, in id order.
    """
    for src in (JobStatus.PENDING, JobStatus.QUEUED):
        if not can_move(src, JobStatus.CANCELLED):  # pragma: no cover - the status graph allows it
            raise ValueError(f"illegal job transition {src} -> cancelled")
    now = utcnow()
    cancelled: list[Any] = []
    flagged: list[int] = []
    for part in chunks(sorted(set(job_ids))):
        session.execute(select(_JOBS.c.id).where(_JOBS.c.id.in_(part)).order_by(_JOBS.c.id).with_for_update())
        cancelled += session.execute(
            update(_JOBS)
            .where(_JOBS.c.id.in_(part), _JOBS.c.status.in_([JobStatus.PENDING.value, JobStatus.QUEUED.value]))
            .values(status=JobStatus.CANCELLED.value, error=reason, finished_at=now)
            .returning(_JOBS.c.id, _JOBS.c.attempts)
        ).all()
        flagged += session.scalars(
            update(_JOBS).where(_JOBS.c.id.in_(part), _JOBS.c.status == JobStatus.RUNNING.value)
            .values(cancel_requested=True).returning(_JOBS.c.id)
        ).all()
    cancelled.sort(key=lambda r: r.id)
    flagged.sort()
    _insert_status_events(session, [(r.id, r.attempts, reason) for r in cancelled], JobStatus.CANCELLED, now)
    if flagged:
        session.execute(insert(_EVENTS), [{"job_id": job_id, "time": now, "kind": "message", "worker": None,
                                           "message": f"cancel requested: {reason}", "attempt": None}
                                          for job_id in flagged])
    return {"cancelled": [r.id for r in cancelled], "flagged": flagged}


# -- Bulk writes for submitting a batch: a few statements per thousand jobs, whatever the batch's size. ----------

_CHUNK = 1000  # ids per statement: SQLite and PostgreSQL both cap the bind parameters of one statement


def chunks(items: list[Any], size: int | None = None) -> Iterable[list[Any]]:
    """``items`` in slices of ``size`` (default ``_CHUNK``): one statement's worth of bind parameters each."""
    step = size or _CHUNK
    for k in range(0, len(items), step):
        yield items[k:k + step]


def _ready_in_batch(batch_id: int) -> list[Any]:
    """The WHERE clauses of a batch's jobs that are ready to queue: pending, with no parent that has not succeeded."""
    parent = aliased(JobRow)
    unfinished_parent = (
        select(JobDepRow.parent_id)
        .join(parent, parent.id == JobDepRow.parent_id)
        .where(JobDepRow.child_id == JobRow.id, parent.status != JobStatus.SUCCEEDED.value)
        .exists()
    )
    return [JobRow.batch_id == batch_id, JobRow.status == JobStatus.PENDING.value, ~unfinished_parent]


def _insert_status_events(session: Session, rows: list[tuple[int, int | None, str | None]], status: JobStatus,
                          time: datetime) -> None:
    """The status events of many jobs that moved to ``status`` at ``time``: (job id, attempt, message) each."""
    if rows:
        session.execute(insert(_EVENTS), [{"job_id": job_id, "time": time, "kind": "status", "status": status.value,
                                           "message": message, "worker": None, "attempt": attempt}
                                          for job_id, attempt, message in rows])


def queue_roots(session: Session, batch_id: int) -> list[Job]:
    """Queue the jobs of a batch that are ready (those ``roots`` lists): one guarded ``pending -> queued`` UPDATE
    ... RETURNING for all of them and one INSERT of their status events, as ``transition`` writes them one by one.

    Returns the jobs it queued (as they are now: ``queued``), in id order.
    """
    if not can_move(JobStatus.PENDING, JobStatus.QUEUED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> queued")
    now = utcnow()
    rows = sorted(session.execute(
        update(_JOBS).where(*_ready_in_batch(batch_id)).values(status=JobStatus.QUEUED.value, queued_at=now)
        .returning(*_JOBS.c)
    ).all(), key=lambda r: r.id)
    _insert_status_events(session, [(r.id, r.attempts, None) for r in rows], JobStatus.QUEUED, now)
    return [from_row(Job, r) for r in rows]


def mark_cached(session: Session, sources: Mapping[int, int]) -> list[int]:
    """Mark pending jobs succeeded as cache hits, ``sources`` giving each job id the job whose results it reuses:
    guarded ``pending -> succeeded`` UPDATEs ... RETURNING (``cached_from``, progress 1, ``finished_at``), their
    status events and their sources' results copied, a few statements per thousand jobs. Returns the ids moved
    (a job no longer pending is left alone), in id order."""
    from sqlalchemy import case

    if not can_move(JobStatus.PENDING, JobStatus.SUCCEEDED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> succeeded")
    now = utcnow()
    moved: list[Any] = []
    for chunk in chunks(sorted(sources)):
        moved += session.execute(
            update(_JOBS)
            .where(_JOBS.c.id.in_(chunk), _JOBS.c.status == JobStatus.PENDING.value)
            .values(status=JobStatus.SUCCEEDED.value, progress=1.0, finished_at=now,
                    cached_from=case({job_id: sources[job_id] for job_id in chunk}, value=_JOBS.c.id))
            .returning(_JOBS.c.id, _JOBS.c.attempts)
        ).all()
    moved.sort(key=lambda r: r.id)
    _insert_status_events(session, [(r.id, r.attempts, f"cached: same fingerprint as job {sources[r.id]}")
                                    for r in moved], JobStatus.SUCCEEDED, now)
    copy_results_many(session, [(sources[r.id], r.id) for r in moved])
    return [r.id for r in moved]


def copy_results_many(session: Session, pairs: Iterable[tuple[int, int]]) -> None:
    """``copy_results`` for many (source, target) pairs: the sources' artifacts and metrics read, and written for
    their targets, in a few statements per thousand jobs."""
    targets: dict[int, list[int]] = {}
    for source_id, target_id in pairs:
        targets.setdefault(source_id, []).append(target_id)
    now = utcnow()
    artifacts: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for chunk in chunks(sorted(targets)):
        for a in session.execute(select(ArtifactRow.__table__).where(ArtifactRow.job_id.in_(chunk))):
            artifacts += [{"job_id": t, "name": a.name, "uri": a.uri, "sha256": a.sha256, "bytes": a.bytes,
                           "media_type": a.media_type, "meta": dict(a.meta or {}), "created_at": now}
                          for t in targets[a.job_id]]
        for m in session.execute(select(MetricRow.__table__).where(MetricRow.job_id.in_(chunk))):
            metrics += [{"job_id": t, "key": m.key, "step": m.step, "value": m.value, "time": m.time}
                        for t in targets[m.job_id]]
    for rows in chunks(artifacts, max(_CHUNK // 2, 1)):  # as put_artifact: one of the same name is replaced
        _upsert(session, ArtifactRow, rows, ["job_id", "name"],
                ["uri", "sha256", "bytes", "media_type", "meta", "created_at"])
    if metrics:
        session.execute(insert(cast(Table, MetricRow.__table__)), metrics)
