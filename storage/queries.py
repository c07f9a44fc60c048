"""Reads for the CLI, the API and the dashboard. Every function returns plain records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Select, bindparam, func, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import ArtifactRow, BatchRow, EventRow, FarmRow, JobDepRow, JobRow, MetricRow
from storage.records import Artifact, Batch, Event, Job, Metric, from_row
from storage.sql import chunks
from storage.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11


MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database
# the reason of a job cancelled below a pruned trial (scheduler.lifecycle.end_in writes it)
PRUNED_BELOW = "parent job % pruned: %"

Q = TypeVar("Q", bound="Select[Unpack[tuple[Any, ...]]]")  # a select of any columns


@dataclass(frozen=True)
class BatchSummary:
    batch: Batch
    counts: dict[str, int]  # jobs by status
    total: int
    running_progress: float = 0.0  # the sum of the running jobs' progress (each 0..1)
    pruned_below: int = 0  # cancelled jobs downstream of a pruned trial: they do not make the batch cancelled

    @property
    def progress(self) -> float:
        """How far the batch is, 0..1: each finished job counts 1, each running job its own progress."""
        if not self.total:
            return 1.0
        finished = sum(self.counts.get(s.value, 0) for s in TERMINAL)
        return min(1.0, (finished + self.running_progress) / self.total)

    @property
    def done(self) -> bool:
        """Every job has finished."""
        return sum(self.counts.get(s.value, 0) for s in TERMINAL) == self.total

    @property
    def settled(self) -> bool:
        """Nothing is queued or running: without a retry or a new submission, nothing will change.

        A job's end and the queueing of its children are one transaction, so this is never seen in between.
        """
        return not (self.counts.get("queued") or self.counts.get("running"))

    @property
    def status(self) -> str:
        """One word for the batch: pending, running, succeeded, failed (a job failed) or cancelled; ``blocked``
        when it is settled with jobs still pending (they wait on parents that failed and were retried). Pruned
        trials, and the jobs cancelled below them, are a search's normal end: succeeded."""
        if not self.settled:
            return "running"
        if self.counts.get("failed"):
            return "failed"
        if self.counts.get("cancelled", 0) > self.pruned_below:
            return "cancelled"
        if self.counts.get("pending"):
            return "blocked"
        return "succeeded"


def farm_id(session: Session) -> str | None:
    """This store's identity (the ``farm`` table's one row, written by the migrations); None in a database not yet
    upgraded to it."""
    if not sa_inspect(session.connection()).has_table(FarmRow.__tablename__):
        return None
    found = session.scalar(select(FarmRow.id).order_by(FarmRow.created_at).limit(1))
    return None if found is None else str(found)


def ping(session: Session) -> None:
    """One round trip to the database (a health check); DatabaseUnavailable when it does not answer."""
    session.execute(text("SELECT 1"))


def get_batch(session: Session, batch_id: int) -> Batch:
    row = session.get(BatchRow, batch_id)
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    return from_row(Batch, row)


def batch_summary(session: Session, batch_id: int) -> BatchSummary:
    batch = get_batch(session, batch_id)
    rows = session.execute(
        select(JobRow.status, func.count(), func.sum(JobRow.progress))
        .where(JobRow.batch_id == batch_id).group_by(JobRow.status)
    ).all()
    counts = {status: n for status, n, _ in rows}
    running = sum(float(p or 0.0) for status, _, p in rows if status == JobStatus.RUNNING.value)
    below = 0
    if counts.get(JobStatus.PRUNED.value) and counts.get(JobStatus.CANCELLED.value):
        below = session.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.batch_id == batch_id, JobRow.status == JobStatus.CANCELLED.value,
            JobRow.error.like(PRUNED_BELOW))) or 0
    return BatchSummary(batch, counts, sum(counts.values()), running, below)


def queued_job_ids(session: Session) -> list[int]:
    """Every queued job's id, over every batch, in id order."""
    return list(session.scalars(select(JobRow.id).where(JobRow.status == JobStatus.QUEUED.value).order_by(JobRow.id)))


def running_jobs_of(session: Session, worker_prefix: str) -> list[Job]:
    """The running jobs whose worker's name starts with ``worker_prefix``, in id order."""
    q = (select(JobRow).where(JobRow.status == JobStatus.RUNNING.value, JobRow.worker.startswith(worker_prefix))
         .order_by(JobRow.id))
    return [from_row(Job, r) for r in session.scalars(q)]


def unsettled_count(session: Session, job_ids: Iterable[int]) -> int:
    """How many of ``job_ids`` are queued or running."""
    active = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    return sum(session.scalar(select(func.count()).select_from(JobRow).where(JobRow.id.in_(ids),
                                                                              JobRow.status.in_(active))) or 0
               for ids in _id_slices(job_ids))


def active_job_counts(session: Session) -> dict[str, int]:
    """How many jobs are pending, queued and running, over every batch."""
    active = [JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    return dict(session.execute(  # type: ignore[arg-type]
        select(JobRow.status, func.count()).where(JobRow.status.in_(active)).group_by(JobRow.status)
    ).all())


def list_batches(session: Session, limit: int = 20, offset: int = 0) -> list[BatchSummary]:
    """The most recent batches first."""
    ids = session.scalars(select(BatchRow.id).order_by(BatchRow.id.desc()).limit(limit).offset(offset)).all()
    return [batch_summary(session, i) for i in ids]


def count_batches(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(BatchRow)) or 0


def _jobs_where(q: Q, batch_id: int | None, kind: str | None, status: str | None, since: datetime | None) -> Q:
    """``q`` with the jobs filters of ``list_jobs`` (on ``JobRow``'s columns)."""
    if batch_id is not None:
        q = q.where(JobRow.batch_id == batch_id)
    if kind is not None:
        q = q.where(JobRow.kind == kind)
    if status is not None:
        q = q.where(JobRow.status == JobStatus(status).value)
    if since is not None:
        q = q.where(JobRow.created_at >= since)
    return q


def list_jobs(
    session: Session,
    batch_id: int | None = None,
    kind: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Job]:
    q = _jobs_where(select(JobRow).order_by(JobRow.id), batch_id, kind, status, since)
    if limit is not None:
        q = q.limit(limit)
    if offset:
        q = q.offset(offset)
    return [from_row(Job, r) for r in session.scalars(q)]


@dataclass(frozen=True)
class JobParams:
    """A job's id and parameters: all a parameter filter reads."""

    id: int
    params: dict[str, Any]


def inherited_params(session: Session, job_ids: Iterable[int], names: Iterable[str] | None = None
                     ) -> dict[int, dict[str, Any]]:
    """The params each job inherits from its ancestors (a sample of an encode of ``train[z_dim=8]`` inherits
    ``z_dim: 8``): of each name, the value of the nearest ancestor that has it (a null value counts as none: a
    sample of an encode and a cnn inherits the autoencoder's z_dim, not the cnn's null); a name on which ancestors
    equally near disagree is not inherited. With ``names``, only those. The job's own params are not included (they
    win)."""
    wanted = None if names is None else set(names)
    parents: dict[int, list[int]] = {}
    params: dict[int, dict[str, Any]] = {}
    frontier = sorted(set(job_ids))
    seen = set(frontier)
    while frontier:  # up the graph, a generation of ids at a time, in slices
        # the params of this generation: the jobs asked about too, each of which may be another's ancestor
        for chunk in chunks(frontier):
            for i, p in session.execute(select(JobRow.id, JobRow.params).where(JobRow.id.in_(chunk))):
                params[i] = {k: v for k, v in (p or {}).items() if wanted is None or k in wanted}
        found: list[tuple[int, int]] = []
        for chunk in chunks(frontier):
            found += [(int(c), int(p)) for c, p in session.execute(
                select(JobDepRow.child_id, JobDepRow.parent_id).where(JobDepRow.child_id.in_(chunk)))]
        for child, parent in found:
            parents.setdefault(child, []).append(parent)
        frontier = sorted({p for _, p in found} - seen)
        seen.update(frontier)
    out: dict[int, dict[str, Any]] = {}
    for job in set(job_ids):
        inherited: dict[str, Any] = {}
        level, visited = sorted(parents.get(job, [])), {job}
        while level:
            near: dict[str, list[Any]] = {}
            for a in level:
                for k, v in params.get(a, {}).items():
                    if v is not None:  # a null says nothing: a cnn's z_dim must not hide its sibling's train's
                        near.setdefault(k, []).append(v)
            for k, values in near.items():
                if k not in inherited and all(v == values[0] for v in values):
                    inherited[k] = values[0]
                elif k not in inherited:
                    inherited[k] = _AMBIGUOUS
            visited.update(level)
            level = sorted({p for a in level for p in parents.get(a, [])} - visited)
        out[job] = {k: v for k, v in inherited.items() if v is not _AMBIGUOUS}
    return out


_AMBIGUOUS = object()  # ancestors equally near disagree on the value


def jobs_params(session: Session, batch_id: int | None = None, kind: str | None = None, status: str | None = None,
                since: datetime | None = None) -> list[JobParams]:
    """The ids and params of the jobs ``list_jobs`` would return, without the rest of their rows."""
    q = _jobs_where(select(JobRow.id, JobRow.params).order_by(JobRow.id), batch_id, kind, status, since)
    return [JobParams(i, p) for i, p in session.execute(q)]


def metrics_of_jobs(session: Session, keys: list[str], batch_id: int | None = None, kind: str | None = None,
                    status: str | None = None, since: datetime | None = None) -> list[Metric]:
    """The metrics named ``keys`` of the jobs ``list_jobs`` would return (a join, not a list of ids)."""
    q = _jobs_where(select(MetricRow.job_id, MetricRow.key, MetricRow.step, MetricRow.value, MetricRow.time)
                    .join(JobRow, JobRow.id == MetricRow.job_id).where(MetricRow.key.in_(keys)),
                    batch_id, kind, status, since)
    return [Metric(*row) for row in session.execute(q)]


def metric_keys(session: Session, batch_id: int) -> list[str]:
    """The names of the metrics the batch's jobs have recorded."""
    q = (select(MetricRow.key).distinct().join(JobRow, JobRow.id == MetricRow.job_id)
         .where(JobRow.batch_id == batch_id).order_by(MetricRow.key))
    return list(session.scalars(q))


def count_jobs(session: Session, batch_id: int | None = None, kind: str | None = None, status: str | None = None,
               since: datetime | None = None) -> int:
    return session.scalar(_jobs_where(select(func.count()).select_from(JobRow), batch_id, kind, status, since)) or 0


def get_job(session: Session, job_id: int) -> Job | None:
    """The job, as it is now; None if there is no such job."""
    row = session.get(JobRow, job_id, populate_existing=True)
    return from_row(Job, row) if row is not None else None


def require_job(session: Session, job_id: int) -> Job:
    """The job, as it is now; NotFound if there is no such job."""
    job = get_job(session, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def job_parents(session: Session, job_id: int) -> list[int]:
    return list(session.scalars(select(JobDepRow.parent_id).where(JobDepRow.child_id == job_id)))


_JOBS_BY_IDS = select(JobRow).where(JobRow.id.in_(bindparam("ids", expanding=True))).order_by(JobRow.id)
_JOB_IDS = select(JobRow.id).where(JobRow.id.in_(bindparam("ids", expanding=True)))
_PARENT_JOBS = (select(JobRow).join(JobDepRow, JobDepRow.parent_id == JobRow.id)
                .where(JobDepRow.child_id == bindparam("job_id")).order_by(JobRow.id))
_ARTIFACTS_OF = (select(ArtifactRow).where(ArtifactRow.job_id.in_(bindparam("ids", expanding=True)))
                 .order_by(ArtifactRow.job_id, ArtifactRow.name))


def _id_slices(ids: Iterable[int]) -> Iterable[list[int]]:
    """``ids`` in order, without repeats, a slice per statement (PostgreSQL takes at most 65535 parameters in one)."""
    return chunks(sorted(set(ids)))


def jobs_by_ids(session: Session, job_ids: Iterable[int]) -> list[Job]:
    """The jobs with these ids, in id order; ids of no job are left out."""
    return [from_row(Job, r) for ids in _id_slices(job_ids) for r in session.scalars(_JOBS_BY_IDS, {"ids": ids})]


def existing_job_ids(session: Session, job_ids: Iterable[int]) -> set[int]:
    """Those of ``job_ids`` that are jobs (ids only: no rows read)."""
    return {i for ids in _id_slices(job_ids) for i in session.scalars(_JOB_IDS, {"ids": ids})}


def batch_job_ids(session: Session, batch_id: int) -> list[int]:
    """The ids of a batch's jobs, in id order."""
    return list(session.scalars(select(JobRow.id).where(JobRow.batch_id == batch_id).order_by(JobRow.id)))


def parent_jobs(session: Session, job_id: int) -> list[Job]:
    """The jobs ``job_id`` needs, in id order (one query)."""
    return [from_row(Job, r) for r in session.scalars(_PARENT_JOBS, {"job_id": job_id})]


def artifacts_of(session: Session, job_ids: Iterable[int]) -> list[Artifact]:
    """Every artifact of these jobs, by job id and name."""
    return [from_row(Artifact, r) for ids in _id_slices(job_ids) for r in session.scalars(_ARTIFACTS_OF, {"ids": ids})]


def job_metrics(session: Session, job_ids: Iterable[int], key: str | None = None) -> list[Metric]:
    """The metrics of these jobs, by job id, key and step."""
    q = (select(MetricRow).where(MetricRow.job_id.in_(bindparam("ids", expanding=True)))
         .order_by(MetricRow.job_id, MetricRow.key, MetricRow.step))
    if key is not None:
        q = q.where(MetricRow.key == key)
    return [from_row(Metric, r) for ids in _id_slices(job_ids) for r in session.scalars(q, {"ids": ids})]


def get_artifact(session: Session, artifact_id: int) -> Artifact:
    row = session.get(ArtifactRow, artifact_id)
    if row is None:
        raise NotFound(f"no artifact {artifact_id}")
    return from_row(Artifact, row)


def job_artifacts(session: Session, job_id: int) -> list[Artifact]:
    q = select(ArtifactRow).where(ArtifactRow.job_id == job_id).order_by(ArtifactRow.name)
    return [from_row(Artifact, r) for r in session.scalars(q)]


def job_events(session: Session, job_id: int) -> list[Event]:
    q = select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.time, EventRow.id)
    return [from_row(Event, r) for r in session.scalars(q)]
