"""Reads for the dashboard's views of a sweep, paged and sorted in SQL so that a 10,000-job batch answers as fast
as a small one: a batch's jobs filtered by kind, status and final metrics and sorted by a column or a final
metric; the jobs ranked by the last value of a per-step metric (the curves); the jobs that have a given image
(the gallery); and what a batch offers to choose from (its kinds, params, metric names, image names).

A job's *final* value of a metric is its value at the last step it recorded (the last epoch; step 0 for a metric
recorded once), as ``scheduler.filters.final_metrics`` reads it in Python: in SQL, a correlated subquery that
seeks the metrics' unique index (job, key, step) once per job.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from storage.models import ArtifactRow, JobRow, MetricRow
from storage.records import Artifact, Job, from_row
from storage.sql import chunks
from storage.status import JobStatus

# the columns a jobs table sorts by, besides its final metrics; ties (and the rest) by id
SORT_COLUMNS: dict[str, Any] = {
    "id": JobRow.id, "name": JobRow.name, "kind": JobRow.kind, "status": JobRow.status,
    "attempts": JobRow.attempts, "started": JobRow.started_at, "finished": JobRow.finished_at,
}
NULLABLE = ("started", "finished")
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq,
    "==": operator.eq, "!=": operator.ne,
}


def _batch_jobs(batch_id: int, kind: str | None = None, status: str | None = None) -> list[ColumnElement[bool]]:
    conditions = [JobRow.batch_id == batch_id]
    if kind is not None:
        conditions.append(JobRow.kind == kind)
    if status is not None:
        conditions.append(JobRow.status == JobStatus(status).value)
    return conditions


def final_value(key: str, first_step: int = 0) -> Any:
    """A job's final value of ``key`` as a column of a select of ``JobRow``: its value at its last step, counting
    steps from ``first_step`` (1: per-step metrics only); NULL without one. One seek in the metrics' unique index
    (job, key, step) per job."""
    return (select(MetricRow.value)
            .where(MetricRow.job_id == JobRow.id, MetricRow.key == key, MetricRow.step >= first_step)
            .order_by(MetricRow.step.desc()).limit(1).correlate(JobRow).scalar_subquery())


def final_values(session: Session, batch_id: int, key: str, kind: str | None = None, first_step: int = 0
                 ) -> dict[int, float]:
    """Each job's final value of ``key`` (see ``final_value``), by job id; jobs without one are left out."""
    q = select(JobRow.id, final_value(key, first_step)).where(*_batch_jobs(batch_id, kind))
    return {int(i): float(v) for i, v in session.execute(q) if v is not None}


def job_page(session: Session, batch_id: int, *, kind: str | None = None, status: str | None = None,
             where: Sequence[tuple[str, str, float]] = (), sort: str = "id", sort_metric: str | None = None,
             descending: bool = False, limit: int = 200, offset: int = 0) -> tuple[list[Job], int]:
    """A page of the batch's jobs and how many pass in all: of ``kind`` and ``status``, whose final metrics pass
    every ``(key, op, value)`` of ``where``, ordered by ``sort_metric``'s final value when given (jobs without it
    last), else by the column ``sort`` (one of ``SORT_COLUMNS``; empty values last), then by id."""
    conditions = _batch_jobs(batch_id, kind, status) + [OPS[op](final_value(key), value) for key, op, value in where]
    column: Any = final_value(sort_metric) if sort_metric is not None else SORT_COLUMNS[sort]
    order = [column.desc() if descending else column.asc()]
    if sort_metric is not None or sort in NULLABLE:  # empty values last, either way
        order.insert(0, column.is_(None))
    if column is not JobRow.id:
        order.append(JobRow.id.desc() if descending else JobRow.id.asc())
    q = select(JobRow).where(*conditions).order_by(*order).limit(limit).offset(offset)
    jobs = [from_row(Job, r) for r in session.scalars(q)]
    return jobs, int(session.scalar(select(func.count()).select_from(JobRow).where(*conditions)) or 0)


def job_params(session: Session, batch_id: int, kind: str | None = None, status: str | None = None,
               column: str = "id") -> list[tuple[int, dict[str, Any], Any]]:
    """(id, params, the value of ``column``, one of ``SORT_COLUMNS``) of every job of the batch (of ``kind``,
    ``status``), in id order, and nothing else of their rows: what a filter or an order on params, which follow the
    lineage in Python, reads."""
    q = (select(JobRow.id, JobRow.params, SORT_COLUMNS[column])
         .where(*_batch_jobs(batch_id, kind, status)).order_by(JobRow.id))
    return [(int(i), p or {}, v) for i, p, v in session.execute(q)]


def ranked(session: Session, batch_id: int, key: str, kind: str | None = None, *, first_step: int = 1,
           descending: bool = False, limit: int = 50, offset: int = 0) -> tuple[list[tuple[int, float]], int]:
    """A page of (job id, final value) of the batch's jobs that recorded ``key`` from ``first_step`` on, best
    first (lowest, or highest when ``descending``), and how many such jobs there are."""
    final = (select(JobRow.id.label("job_id"), final_value(key, first_step).label("value"))
             .where(*_batch_jobs(batch_id, kind)).subquery())
    having = final.c.value.is_not(None)
    order = final.c.value.desc() if descending else final.c.value.asc()
    page = session.execute(select(final.c.job_id, final.c.value).where(having).order_by(order, final.c.job_id)
                           .limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(final).where(having)) or 0
    return [(int(i), float(v)) for i, v in page], int(total)


def gallery_page(session: Session, batch_id: int, name: str, kind: str | None = None, *,
                 sort_metric: str | None = None, descending: bool = False, limit: int = 48, offset: int = 0
                 ) -> tuple[list[tuple[Job, Artifact]], int]:
    """A page of the batch's jobs (of ``kind``) that have the image artifact ``name``, each with it, in id order
    or by ``sort_metric``'s final value (jobs without it last), and how many there are in all."""
    has = [*_batch_jobs(batch_id, kind), ArtifactRow.name == name, ArtifactRow.media_type.startswith("image/")]
    q = select(JobRow, ArtifactRow).join(ArtifactRow, ArtifactRow.job_id == JobRow.id).where(*has)
    if sort_metric is not None:
        final = final_value(sort_metric)
        q = q.order_by(final.is_(None), final.desc() if descending else final.asc(), JobRow.id)
    else:
        q = q.order_by(JobRow.id)
    rows = session.execute(q.limit(limit).offset(offset)).all()
    total = session.scalar(select(func.count()).select_from(JobRow)
                           .join(ArtifactRow, ArtifactRow.job_id == JobRow.id).where(*has)) or 0
    return [(from_row(Job, j), from_row(Artifact, a)) for j, a in rows], int(total)


def image_names(session: Session, batch_id: int) -> list[tuple[str, str, int]]:
    """(kind, artifact name, how many jobs have it) of the batch's image artifacts, by kind and name. The media
    type is grouped on, not filtered in SQL: a filter that PostgreSQL's estimates (stale right after a big batch
    has written its artifacts) take for nearly empty makes it compare every job with every artifact."""
    q = (select(JobRow.kind, ArtifactRow.name, ArtifactRow.media_type, func.count())
         .join(ArtifactRow, ArtifactRow.job_id == JobRow.id).where(JobRow.batch_id == batch_id)
         .group_by(JobRow.kind, ArtifactRow.name, ArtifactRow.media_type))
    counts: dict[tuple[str, str], int] = {}
    for kind, name, media_type, n in session.execute(q):
        if media_type.startswith("image/"):
            counts[(kind, name)] = counts.get((kind, name), 0) + int(n)
    return [(k, n, c) for (k, n), c in sorted(counts.items())]


def metric_names(session: Session, batch_id: int) -> list[tuple[str, str, bool]]:
    """(kind, metric name, whether it was recorded per step) of the batch's metrics, by kind and name. Per step:
    at steps from 1 (epochs, the k of a cluster sweep), which curves can draw."""
    q = (select(JobRow.kind, MetricRow.key, func.max(MetricRow.step))
         .join(JobRow, JobRow.id == MetricRow.job_id).where(JobRow.batch_id == batch_id)
         .group_by(JobRow.kind, MetricRow.key).order_by(JobRow.kind, MetricRow.key))
    return [(k, key, int(step) >= 1) for k, key, step in session.execute(q)]


def kinds_and_params(session: Session, batch_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The (kind, params) of each of the batch's jobs, nothing else: what tells the params it sweeps."""
    q = select(JobRow.kind, JobRow.params).where(JobRow.batch_id == batch_id)
    return [(k, p or {}) for k, p in session.execute(q)]


def version(session: Session, batch_id: int) -> tuple[int, int, int]:
    """What changes whenever the batch's choices may have: its newest job, and the newest metric and artifact
    anywhere (each a seek in a primary key or the batch's index)."""
    return (int(session.scalar(select(func.max(JobRow.id)).where(JobRow.batch_id == batch_id)) or 0),
            int(session.scalar(select(func.max(MetricRow.id))) or 0),
            int(session.scalar(select(func.max(ArtifactRow.id))) or 0))


def last_values(session: Session, job_ids: Sequence[int], keys: Sequence[str] | None = None
                ) -> dict[int, dict[str, float]]:
    """Each job's final value of each of its metrics (only ``keys``, when given), by job id: plain rows, no ORM
    objects, for a page of jobs."""
    out: dict[int, dict[str, float]] = {}
    for ids in chunks(sorted(set(job_ids))):
        q = (select(MetricRow.job_id, MetricRow.key, MetricRow.value).where(MetricRow.job_id.in_(ids))
             .order_by(MetricRow.job_id, MetricRow.key, MetricRow.step))
        if keys is not None:
            q = q.where(MetricRow.key.in_(list(keys)))
        for job_id, key, value in session.execute(q):
            out.setdefault(int(job_id), {})[key] = float(value)  # the last step's comes last
    return out


def series(session: Session, job_ids: Sequence[int], key: str, first_step: int = 1
           ) -> dict[int, list[tuple[int, float]]]:
    """Each job's (step, value) of ``key`` from ``first_step`` on, in step order, by job id: a page's curves."""
    out: dict[int, list[tuple[int, float]]] = {}
    for ids in chunks(sorted(set(job_ids))):
        q = (select(MetricRow.job_id, MetricRow.step, MetricRow.value)
             .where(MetricRow.job_id.in_(ids), MetricRow.key == key, MetricRow.step >= first_step)
             .order_by(MetricRow.job_id, MetricRow.step))
        for job_id, step, value in session.execute(q):
            out.setdefault(int(job_id), []).append((int(step), float(value)))
    return out
