"""Status changes. Every one is a guarded UPDATE: it happens only from the expected status (and attempt), so two
workers can never both run one job, a redelivered message for a finished job changes nothing, and a worker ends
only the run it claimed. Each change writes its status event in the same statement (PostgreSQL) or transaction.

A worker's two writes per job carry what goes with them: its claim (``claim_job``) the worker's row and whether the
job has children; a success (``succeed``) the job's results, the worker's count and its pending children. On
PostgreSQL each is one statement (data-modifying CTEs), so where nothing else must share its transaction it runs as
a transaction of its own (``one_statement``): one round trip, where BEGIN, the statements and COMMIT took many."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, exists, func, insert, literal, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from storage import workers
from storage.db import session_scope
from storage.models import utcnow
from storage.records import Job, from_row
from storage.results import put_artifact, put_metrics
from storage.sql import ARTIFACTS, DEPS, EVENTS, JOBS, METRICS
from storage.status import JobStatus, can_move
from storage.workers import WORKERS

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
    return _run_move(session, *_change(job_id, src, dst, message, by, values, attempt))


def _run_move(session: Session, shape: Shape, params: dict[str, Any]) -> Any:
    if _postgres(session):  # the UPDATE and its event's INSERT are one statement
        return session.execute(_pg_move(shape), params).first()
    moved, logged = _statements(shape)
    row = session.execute(moved, params).first()
    if row is not None:
        session.execute(logged, {**params, "ev_attempt": row.attempts})
    return row


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# (sources, destination, the columns set, the columns incremented, guarded by the attempt)
Shape = tuple[tuple[str, ...], str, tuple[str, ...], tuple[str, ...], bool]


def _change(job_id: int, src: JobStatus | Iterable[JobStatus], dst: JobStatus, message: str | None, by: str | None,
            values: dict[str, Any], attempt: int | None) -> tuple[Shape, dict[str, Any]]:
    """A status change's shape (what its statements are built from, once) and its parameters: job_id, attempt,
    ev_time, ev_message, ev_worker, v_<column>."""
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
        JobStatus.PRUNED: "finished_at",
    }.get(dst)
    if stamp and stamp not in values:
        values[stamp] = now
    increments = tuple(sorted(k for k, v in values.items() if v is INCREMENT))
    bound = {k: v for k, v in values.items() if v is not INCREMENT}
    shape = (tuple(s.value for s in sources), dst.value, tuple(sorted(bound)), increments, attempt is not None)
    params = {"job_id": job_id, "attempt": attempt, "ev_time": now, "ev_message": message, "ev_worker": by,
              **{f"v_{k}": v for k, v in bound.items()}}
    return shape, params


# Statements are built once per shape (building one costs more than running it on a small job's path).
@functools.lru_cache(maxsize=256)
def _statements(shape: Shape) -> tuple[Any, Any]:
    """The guarded UPDATE ... RETURNING every column, and its status event's INSERT (``ev_attempt``: the attempt
    the UPDATE returned)."""
    sources, dst, bound, increments, guarded = shape
    status = JOBS.c.status == sources[0] if len(sources) == 1 else JOBS.c.status.in_(sources)
    where = [JOBS.c.id == bindparam("job_id"), status]
    if guarded:
        where.append(JOBS.c.attempts == bindparam("attempt"))
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=JOBS.c[k].type) for k in bound}
    values.update({k: JOBS.c[k] + 1 for k in increments})
    moved = update(JOBS).where(*where).values(status=dst, **values).returning(*JOBS.c)
    return moved, insert(EVENTS).values(**_event(dst), attempt=bindparam("ev_attempt"))


def _event(dst: str) -> dict[str, Any]:
    return {"job_id": bindparam("job_id"), "time": bindparam("ev_time", type_=EVENTS.c.time.type),
            "kind": literal("status"), "status": literal(dst),
            "message": bindparam("ev_message", type_=EVENTS.c.message.type),
            "worker": bindparam("ev_worker", type_=EVENTS.c.worker.type)}


@functools.lru_cache(maxsize=256)
def _ctes(shape: Shape) -> tuple[Any, Any]:
    """PostgreSQL: the UPDATE ... RETURNING as the CTE ``moved``, and its event's INSERT ... SELECT from it as the
    CTE ``logged``. A statement that selects from ``moved`` and adds ``logged`` changes the status and writes the
    event at once; other CTEs may join them (what the worker's row shows, the job's results)."""
    moved, _ = _statements(shape)
    moved_cte = moved.cte("moved")
    event = _event(shape[1])
    logged = insert(EVENTS).from_select(
        [*event, "attempt"], select(*(v.label(k) if k != "job_id" else moved_cte.c.id for k, v in event.items()),
                                    moved_cte.c.attempts)).cte("logged")
    return moved_cte, logged


@functools.lru_cache(maxsize=256)
def _pg_move(shape: Shape) -> Any:
    moved, logged = _ctes(shape)
    return select(moved).add_cte(logged)


def claim(session: Session, job_id: int, worker: str, lease_seconds: float, gpu: str | None = None,
          host: str | None = None) -> Job | None:
    """Take a queued job for ``worker``: ``queued -> running``, one more attempt, a lease. None if not queued."""
    row = _run_move(session, *_claim_change(job_id, worker, lease_seconds, gpu, host))
    return from_row(Job, row) if row is not None else None


def _claim_change(job_id: int, worker: str, lease_seconds: float, gpu: str | None,
                  host: str | None) -> tuple[Shape, dict[str, Any]]:
    now = utcnow()
    return _change(job_id, JobStatus.QUEUED, JobStatus.RUNNING, f"claimed by {worker}", worker, dict(
        worker=worker, host=host, gpu=gpu, attempts=INCREMENT, started_at=now, heartbeat_at=now,
        lease_until=now + timedelta(seconds=lease_seconds), error=None, traceback=None, progress=0.0,
        not_before=None), None)


@dataclass(frozen=True)
class Claimed:
    job: Job  # as the claim left it: running, its attempt counted
    has_children: bool  # whether some job needs it (its success then queues those whose parents all succeeded)


def claim_job(session: Session, job_id: int, worker: str, lease_seconds: float, gpu: str | None = None,
              host: str | None = None) -> Claimed | None:
    """A worker's claim: ``claim``, the worker's row showing the job (``storage.workers.job_started``), and whether
    the job has children. One statement on PostgreSQL, so it may run as a transaction of its own
    (``one_statement``). None if the job was not queued (nothing is written then)."""
    shape, params = _claim_change(job_id, worker, lease_seconds, gpu, host)
    if _postgres(session):
        row = session.execute(_pg_claim(shape), {**params, "w_name": worker}).first()
        return None if row is None else Claimed(from_row(Job, row), bool(row.has_children))
    row = _run_move(session, shape, params)
    if row is None:
        return None
    workers.job_started(session, worker, job_id)
    has_children = session.scalar(select(exists().where(DEPS.c.parent_id == job_id)))
    return Claimed(from_row(Job, row), bool(has_children))


@functools.lru_cache(maxsize=8)
def _pg_claim(shape: Shape) -> Any:
    moved, logged = _ctes(shape)
    seen = (update(WORKERS).where(WORKERS.c.name == bindparam("w_name"), exists(select(moved.c.id)))
            .values(job_id=select(moved.c.id).scalar_subquery()).cte("seen"))
    has_children = exists().where(DEPS.c.parent_id == moved.c.id).label("has_children")
    return select(moved, has_children).add_cte(logged).add_cte(seen)


@dataclass(frozen=True)
class Results:
    """A job's results as rows, recorded with its success (``succeed``): its metrics by (key, step), and its
    artifacts by name as (uri, sha256, size in bytes, media type, meta). Each replaces an earlier row of its key
    and step, or of its name (an earlier attempt's)."""

    metrics: Mapping[tuple[str, int], float] = field(default_factory=dict)
    artifacts: Mapping[str, tuple[str, str, int, str, dict[str, Any]]] = field(default_factory=dict)


def succeed(session: Session, job_id: int, by: str | None, attempt: int | None = None,
            results: Results | None = None, worker: str | None = None, lock_children: bool = True) -> list[int] | None:
    """``running -> succeeded`` (at ``attempt``; progress 1, the lease dropped) with its status event, its
    ``results``, and ``worker``'s row counting the success (``storage.workers.job_ended``). Returns the job's
    pending children, or None if the job was not running (at ``attempt``): nothing is written then.

    With ``lock_children`` the children are locked (``FOR UPDATE``, in id order) until the transaction ends, as
    ``storage.graph.ready_children`` locks them: the caller then queues those that are ready in the same
    transaction. One statement on PostgreSQL: without children to queue, it may be a transaction of its own
    (``one_statement``)."""
    shape, params = _change(job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED, None, by,
                            dict(progress=1.0, lease_until=None), attempt)
    results = results or Results()
    if not _postgres(session):
        if _run_move(session, shape, params) is None:
            return None
        _put_results(session, job_id, results)
        if worker is not None:
            workers.job_ended(session, worker, succeeded=True)
        return list(session.scalars(_PENDING_CHILDREN, {"job_id": job_id}))
    metrics = list(results.metrics.items())
    artifacts = list(results.artifacts.items())
    params.update(w_name=worker, r_now=utcnow(),
                  m_keys=[k for (k, _), _ in metrics], m_steps=[s for (_, s), _ in metrics],
                  m_values=[float(v) for _, v in metrics], a_names=[n for n, _ in artifacts],
                  a_uris=[a[0] for _, a in artifacts], a_shas=[a[1] for _, a in artifacts],
                  a_sizes=[a[2] for _, a in artifacts], a_types=[a[3] for _, a in artifacts],
                  a_metas=[a[4] or {} for _, a in artifacts])
    row = session.execute(_pg_succeed(shape, bool(metrics), bool(artifacts), worker is not None, lock_children),
                          params).first()
    return None if row is None else sorted(row.children)


def _put_results(session: Session, job_id: int, results: Results) -> None:
    steps: dict[int, dict[str, float]] = {}
    for (key, step), value in results.metrics.items():
        steps.setdefault(step, {})[key] = value
    for step, values in steps.items():
        put_metrics(session, job_id, values, step)
    for name, (uri, sha256, size, media_type, meta) in results.artifacts.items():
        put_artifact(session, job_id, name, uri, sha256, size, media_type, meta)


_PENDING_CHILDREN = (select(DEPS.c.child_id).join(JOBS, JOBS.c.id == DEPS.c.child_id)
                     .where(DEPS.c.parent_id == bindparam("job_id"), JOBS.c.status == JobStatus.PENDING.value)
                     .order_by(DEPS.c.child_id))


@functools.lru_cache(maxsize=64)
def _pg_succeed(shape: Shape, metrics: bool, artifacts: bool, worker: bool, lock_children: bool) -> Any:
    """The success of ``succeed`` as one statement: ``moved`` and ``logged``, the results' upserts from arrays
    (``unnest``) joined to ``moved`` (nothing is written if it moved nothing), the worker's row, and the pending
    children (locked, or only listed)."""
    moved, logged = _ctes(shape)
    ctes = [logged]
    now = bindparam("r_now", type_=METRICS.c.time.type)
    if metrics:
        rows = func.unnest(bindparam("m_keys", type_=ARRAY(METRICS.c.key.type)),
                           bindparam("m_steps", type_=ARRAY(METRICS.c.step.type)),
                           bindparam("m_values", type_=ARRAY(METRICS.c.value.type))
                           ).table_valued("key", "step", "value").render_derived()
        upsert = pg_insert(METRICS).from_select(
            ["job_id", "key", "step", "value", "time"],
            select(moved.c.id, rows.c.key, rows.c.step, rows.c.value, now).select_from(moved.join(rows, true())))
        ctes.append(upsert.on_conflict_do_update(index_elements=["job_id", "key", "step"], set_={
            "value": upsert.excluded.value, "time": upsert.excluded.time}).cte("metrics_put"))
    if artifacts:
        rows = func.unnest(bindparam("a_names", type_=ARRAY(ARTIFACTS.c.name.type)),
                           bindparam("a_uris", type_=ARRAY(ARTIFACTS.c.uri.type)),
                           bindparam("a_shas", type_=ARRAY(ARTIFACTS.c.sha256.type)),
                           bindparam("a_sizes", type_=ARRAY(ARTIFACTS.c.bytes.type)),
                           bindparam("a_types", type_=ARRAY(ARTIFACTS.c.media_type.type)),
                           bindparam("a_metas", type_=ARRAY(JSON))
                           ).table_valued("name", "uri", "sha256", "bytes", "media_type", "meta").render_derived()
        upsert = pg_insert(ARTIFACTS).from_select(
            ["job_id", "name", "uri", "sha256", "bytes", "media_type", "meta", "created_at"],
            select(moved.c.id, rows.c.name, rows.c.uri, rows.c.sha256, rows.c.bytes, rows.c.media_type,
                   rows.c.meta, now).select_from(moved.join(rows, true())))
        ctes.append(upsert.on_conflict_do_update(index_elements=["job_id", "name"], set_={
            c: upsert.excluded[c] for c in ("uri", "sha256", "bytes", "media_type", "meta", "created_at")})
            .cte("artifacts_put"))
    if worker:
        # The worker runs its next running job now, if any (the statement still sees this one running).
        runs = (select(func.min(JOBS.c.id)).where(JOBS.c.status == JobStatus.RUNNING.value,
                                                  JOBS.c.worker == WORKERS.c.name, JOBS.c.id != bindparam("job_id"))
                .scalar_subquery())
        ctes.append(update(WORKERS).where(WORKERS.c.name == bindparam("w_name"), exists(select(moved.c.id)))
                    .values(job_id=runs, jobs_done=WORKERS.c.jobs_done + 1).cte("worker_counted"))
    children = _PENDING_CHILDREN.with_for_update(of=JOBS) if lock_children else _PENDING_CHILDREN
    pending = children.cte("pending")
    ctes.append(pending)
    return select(moved.c.id, moved.c.attempts,
                  func.array(select(pending.c.child_id).scalar_subquery()).label("children")).add_cte(*ctes)


@contextmanager
def one_statement(engine: Engine) -> Iterator[Session]:
    """A session whose statements each commit on their own, on PostgreSQL (autocommit: no BEGIN and COMMIT round
    trips), for a change that is one statement (``claim_job``; ``succeed`` of a job without children) and for
    reads of what no longer changes; elsewhere (SQLite) an ordinary transaction. Errors as ``session_scope``'s."""
    with session_scope(engine) as s:
        if engine.dialect.name == "postgresql":  # for this session's connection only: reset when it is returned
            s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield s


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
