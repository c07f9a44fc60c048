"""Writing a batch: its jobs and edges, the cache hits served from earlier results, the ready jobs queued. In bulk:
a few statements per batch (SQLite: per thousand jobs), whatever its size, in the caller's one transaction.

On PostgreSQL the rows go as arrays (``unnest``): 10,000 jobs are one INSERT of a few parameters, where a multi-row
INSERT has tens of thousands for the driver to parse; a status change of many jobs writes their events in the same
statement, and a cache hit's results are copied by the database."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Float, Integer, String, any_, bindparam, case, func, insert, literal, null, select, update
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from storage.events import add_status_events
from storage.graph import ready, ready_in_batch
from storage.models import JobRow, utcnow
from storage.records import Job, NewJob, from_row
from storage.results import copy_results
from storage.sql import ARTIFACTS, BATCHES, DEPS, EVENTS, JOBS, METRICS, chunks
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
    """Insert a batch with its jobs (all ``pending``, each with its status event) and dependency edges (parent
    name, child name).

    Returns the batch id and the job ids by name (ascending in the order of ``jobs``). Nothing is committed here:
    the caller's transaction is the unit, so a batch is written whole or not at all.
    """
    # Core bulk statements, not ORM objects: a 10,000-job batch is a few statements, not 20,000 flushes.
    now = utcnow()
    postgres = _postgres(session)
    batch_id = session.execute(
        insert(BATCHES).values(name=name, spec=spec, spec_path=spec_path, no_cache=no_cache, created_at=now)
        .returning(BATCHES.c.id)
    ).scalar_one()
    ids: dict[str, int] = {}
    if jobs and postgres:
        inserted = session.execute(_pg_insert_jobs(), {
            "b_id": batch_id, "now": now, "j_names": [j.name for j in jobs], "j_kinds": [j.kind for j in jobs],
            "j_params": [j.params for j in jobs], "j_fingerprints": [j.fingerprint for j in jobs],
            "j_queues": [j.queue for j in jobs], "j_priorities": [j.priority for j in jobs],
            "j_max_attempts": [j.max_attempts for j in jobs], "j_timeouts": [j.timeout for j in jobs]})
        ids = {job_name: job_id for job_id, job_name in inserted}
    elif jobs:
        pending = JobStatus.PENDING.value
        inserted = session.execute(
            insert(JOBS).returning(JOBS.c.id, JOBS.c.name, sort_by_parameter_order=True),
            [{"batch_id": batch_id, "name": j.name, "kind": j.kind, "params": j.params, "fingerprint": j.fingerprint,
              "status": pending, "queue": j.queue, "priority": j.priority, "max_attempts": j.max_attempts,
              "timeout": j.timeout, "attempts": 0, "progress": 0.0, "cancel_requested": False, "created_at": now}
             for j in jobs],
        )
        ids = {job_name: job_id for job_id, job_name in inserted}
    deps = [(ids[p], ids[c]) for p, c in edges]  # KeyError: an edge to no job of the batch
    if deps and postgres:
        session.execute(_pg_insert_deps(), {"parents": [p for p, _ in deps], "children": [c for _, c in deps]})
    elif deps:
        session.execute(insert(DEPS), [{"parent_id": p, "child_id": c} for p, c in deps])
    if ids:  # every job's "submitted" event, written by the database from the jobs table
        session.execute(_submitted_events(), {"b_id": batch_id, "now": now})
    return batch_id, ids


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _unnest(*arrays: tuple[str, Any]) -> Any:
    """``unnest`` of array parameters (name, element type), in their order, as a table whose columns have their
    names (and ``ord``, the position)."""
    return func.unnest(*(bindparam(n, type_=ARRAY(t)) for n, t in arrays)).table_valued(
        *(n for n, _ in arrays), with_ordinality="ord").render_derived()


# Statements are built once (building them costs more than running them on a small job's path).
@functools.cache
def _pg_insert_jobs() -> Any:
    rows = _unnest(("j_names", JOBS.c.name.type), ("j_kinds", JOBS.c.kind.type), ("j_params", JSON),
                   ("j_fingerprints", JOBS.c.fingerprint.type), ("j_queues", JOBS.c.queue.type),
                   ("j_priorities", Integer), ("j_max_attempts", Integer), ("j_timeouts", Float))
    return insert(JOBS).from_select(
        ["batch_id", "name", "kind", "params", "fingerprint", "status", "queue", "priority", "max_attempts",
         "timeout", "attempts", "progress", "cancel_requested", "created_at"],
        select(bindparam("b_id", type_=Integer), rows.c.j_names, rows.c.j_kinds, rows.c.j_params,
               rows.c.j_fingerprints, literal(JobStatus.PENDING.value), rows.c.j_queues, rows.c.j_priorities,
               rows.c.j_max_attempts, rows.c.j_timeouts, literal(0), literal(0.0), literal(False),
               bindparam("now", type_=JOBS.c.created_at.type))
        .order_by(rows.c.ord),  # ids are drawn in this order: parents before children, as planned
    ).returning(JOBS.c.id, JOBS.c.name)


@functools.cache
def _pg_insert_deps() -> Any:
    rows = _unnest(("parents", Integer), ("children", Integer))
    return insert(DEPS).from_select(["parent_id", "child_id"], select(rows.c.parents, rows.c.children))


@functools.cache
def _submitted_events() -> Any:
    return insert(EVENTS).from_select(
        ["job_id", "time", "kind", "status", "message", "worker", "attempt"],
        select(JOBS.c.id, bindparam("now", type_=EVENTS.c.time.type), literal("status"),
               literal(JobStatus.PENDING.value), literal("submitted"), null(), null())
        .where(JOBS.c.batch_id == bindparam("b_id")).order_by(JOBS.c.id))


def succeeded_by_fingerprint(session: Session, fingerprints: Iterable[str]) -> dict[str, int]:
    """For each fingerprint that some job has succeeded with, the job that did the work (not a cached copy)."""
    fps = sorted(set(fingerprints))
    out: dict[str, int] = {}
    lookup = select(JobRow.fingerprint, func.min(func.coalesce(JobRow.cached_from, JobRow.id))).group_by(
        JobRow.fingerprint)
    if _postgres(session):
        # One array parameter: PostgreSQL hashes it, where a list of 1000 parameters is compared one by one
        # against every succeeded job (seconds per statement once the table holds a few batches).
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
    status events and their sources' results copied (``storage.results.copy_results``). Returns the ids moved (a
    job no longer pending is left alone), in id order."""
    if not can_move(JobStatus.PENDING, JobStatus.SUCCEEDED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> succeeded")
    if not sources:
        return []
    now = utcnow()
    if _postgres(session):  # one statement: the jobs, their events, their artifacts and metrics
        pairs = sorted(sources.items())
        return sorted(session.scalars(_pg_mark_cached(), {
            "ids": [t for t, _ in pairs], "sources": [s for _, s in pairs], "now": now}))
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


@functools.cache
def _pg_mark_cached() -> Any:
    """``mark_cached`` as one statement: the guarded UPDATE from the (job, source) arrays, and from what it moved,
    the events, the sources' artifacts (upserted, as ``put_artifact`` does) and metrics."""
    pairs = _unnest(("ids", Integer), ("sources", Integer))
    now = bindparam("now", type_=JOBS.c.finished_at.type)
    moved = (update(JOBS).where(JOBS.c.id == pairs.c.ids, JOBS.c.status == JobStatus.PENDING.value)
             .values(status=JobStatus.SUCCEEDED.value, progress=1.0, finished_at=now, cached_from=pairs.c.sources)
             .returning(JOBS.c.id, JOBS.c.attempts, JOBS.c.cached_from).cte("moved"))
    logged = insert(EVENTS).from_select(
        ["job_id", "time", "kind", "status", "message", "worker", "attempt"],
        select(moved.c.id, now, literal("status"), literal(JobStatus.SUCCEEDED.value),
               literal("cached: same fingerprint as job ") + func.cast(moved.c.cached_from, String),
               null(), moved.c.attempts).order_by(moved.c.id)).cte("logged")
    copied = pg_insert(ARTIFACTS).from_select(
        ["job_id", "name", "uri", "sha256", "bytes", "media_type", "meta", "created_at"],
        select(moved.c.id, ARTIFACTS.c.name, ARTIFACTS.c.uri, ARTIFACTS.c.sha256, ARTIFACTS.c.bytes,
               ARTIFACTS.c.media_type, ARTIFACTS.c.meta, now)
        .select_from(moved.join(ARTIFACTS, ARTIFACTS.c.job_id == moved.c.cached_from)))
    copied = copied.on_conflict_do_update(index_elements=["job_id", "name"], set_={
        c: copied.excluded[c] for c in ("uri", "sha256", "bytes", "media_type", "meta", "created_at")})
    metrics = insert(METRICS).from_select(
        ["job_id", "key", "step", "value", "time"],
        select(moved.c.id, METRICS.c.key, METRICS.c.step, METRICS.c.value, METRICS.c.time)
        .select_from(moved.join(METRICS, METRICS.c.job_id == moved.c.cached_from)))
    return select(moved.c.id).add_cte(logged, copied.cte("artifacts_copied"), metrics.cte("metrics_copied"))


def queue_roots(session: Session, batch_id: int) -> list[Job]:
    """Queue the jobs of a batch that are ready (``graph.roots``): one guarded ``pending -> queued`` UPDATE ...
    RETURNING for all of them and their status events, as ``transition`` writes them one by one.

    Returns the jobs it queued (as they are now: ``queued``), in id order.
    """
    return _queue(session, "batch", {"b_id": batch_id})


def queue_ready(session: Session, job_ids: list[int]) -> list[Job]:
    """``queue_roots`` for the jobs ``job_ids`` (a finished job's pending children): those pending whose parents
    have all succeeded. Returns them (queued), in id order."""
    return _queue(session, "ids", {"ids": list(job_ids)}) if job_ids else []


def _queue(session: Session, which: str, params: dict[str, Any]) -> list[Job]:
    if not can_move(JobStatus.PENDING, JobStatus.QUEUED):  # pragma: no cover - the status graph allows it
        raise ValueError("illegal job transition pending -> queued")
    now = utcnow()
    postgres = _postgres(session)
    rows = session.execute(_queue_statement(which, postgres), {**params, "now": now}).all()
    if not postgres:
        add_status_events(session, [(r.id, r.attempts, None) for r in rows], JobStatus.QUEUED, now)
    return sorted((from_row(Job, r) for r in rows), key=lambda j: j.id)


@functools.cache
def _queue_statement(which: str, postgres: bool) -> Any:
    """The guarded ``pending -> queued`` UPDATE ... RETURNING of the ready jobs of a batch (``batch_id``) or among
    ``ids``; on PostgreSQL with their status events in the same statement (elsewhere the caller writes them)."""
    if which == "batch":
        where = ready_in_batch(bindparam("b_id", type_=Integer))
    elif postgres:
        where = [JOBS.c.id == any_(bindparam("ids", type_=ARRAY(Integer))), *ready()]
    else:
        where = [JOBS.c.id.in_(bindparam("ids", expanding=True)), *ready()]
    now = bindparam("now", type_=JOBS.c.queued_at.type)
    moved = update(JOBS).where(*where).values(status=JobStatus.QUEUED.value, queued_at=now).returning(*JOBS.c)
    if not postgres:
        return moved
    moved_cte = moved.cte("moved")
    logged = insert(EVENTS).from_select(
        ["job_id", "time", "kind", "status", "message", "worker", "attempt"],
        select(moved_cte.c.id, now, literal("status"), literal(JobStatus.QUEUED.value), null(),
               null(), moved_cte.c.attempts).order_by(moved_cte.c.id)).cte("logged")
    return select(moved_cte).add_cte(logged)
