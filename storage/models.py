"""The results schema. Querying these tables directly is a supported use: see docs/schema.md."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.status import JobStatus

STATUS_CHECK = "status IN (" + ", ".join(f"'{s.value}'" for s in JobStatus) + ")"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores none: it is added back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class FarmRow(Base):
    """The one row that identifies this store: every job message carries its id, so a worker never runs a job of
    another store that shares its broker."""

    __tablename__ = "farm"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4, hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec_path: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the spec as submitted (after YAML parsing)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    no_cache: Mapped[bool] = mapped_column(default=False)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("batch_id", "name", name="uq_jobs_batch_name"),
        CheckConstraint(STATUS_CHECK, name="ck_jobs_status"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="ck_jobs_attempts"),
        Index("ix_jobs_fingerprint_status", "fingerprint", "status"),
        Index("ix_jobs_batch_status", "batch_id", "status"),
        # the reaper's scan for expired leases (see migration 0002 for why it is partial)
        Index("ix_jobs_running_lease", "lease_until", postgresql_where=text("status = 'running'"),
              sqlite_where=text("status = 'running'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING.value)
    queue: Mapped[str] = mapped_column(String(50))
    priority: Mapped[int] = mapped_column(default=5)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=1)
    timeout: Mapped[float | None] = mapped_column(Float)  # seconds
    worker: Mapped[str | None] = mapped_column(String(200))  # the Celery node name, e.g. gpu0@host
    host: Mapped[str | None] = mapped_column(String(200))
    gpu: Mapped[str | None] = mapped_column(String(50))  # the GPU index the job ran on; NULL on a CPU worker
    lease_until: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    cached_from: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # a job retried after a transient error waits until then
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobDepRow(Base):
    __tablename__ = "job_deps"

    parent_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True)


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "key", "step", name="uq_metrics_job_key_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(100))
    step: Mapped[int] = mapped_column(default=0)  # epoch for per-epoch metrics, 0 for final ones
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(Text)  # relative to the artifact store root: sha256/<2 hex>/<64 hex>
    media_type: Mapped[str] = mapped_column(String(100))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerRow(Base):
    """A worker process of the farm, as it last said (it registers when it starts and heartbeats while it runs).
    One row per node name: a worker restarted under the same name takes its row over."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)  # the Celery node name, e.g. gpu0@host
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)  # the queues it consumes, as specs name them
    gpu: Mapped[str | None] = mapped_column(String(50))  # the GPU it is pinned to; None for a CPU worker
    version: Mapped[str] = mapped_column(String(50))  # latentfarm's version
    job_id: Mapped[int | None]  # the job it runs now (no foreign key: a deleted batch must not block a heartbeat)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    stopped_at: Mapped[datetime | None]  # set when it shut down cleanly; None while it runs (or was lost)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)


class DatasetRow(Base):
    """A dataset registered in the farm (``latentfarm data add``): its bytes are a blob of the artifact store, so a
    worker needs no local copy. A folder is stored as one archive."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # file | folder
    filename: Mapped[str] = mapped_column(String(255))  # the name it was added from (its suffix: the format)
    uri: Mapped[str] = mapped_column(Text)  # the blob, relative to the artifact store: sha256/<2 hex>/<64 hex>
    sha256: Mapped[str] = mapped_column(String(64))  # of the file; of a folder's archive
    bytes: Mapped[int] = mapped_column(BigInteger)  # of the file; of a folder's archive
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what validation reads without the bytes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))  # status | progress | message
    status: Mapped[str | None] = mapped_column(String(16))  # the new status, for kind == status
    message: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int | None]


SEARCH_STATUS_CHECK = "status IN ('running', 'succeeded', 'failed', 'cancelled')"
TRIAL_STATE_CHECK = "state IN ('running', 'complete', 'pruned', 'failed')"


class SearchRow(Base):
    """A search of a batch (a spec entry with ``search:``): its study's settings and the templates its trials' jobs
    are made from. Its trials are ``search_trials`` rows; the study (Optuna's) is rebuilt from them when asked."""

    __tablename__ = "searches"
    __table_args__ = (
        UniqueConstraint("batch_id", "name", name="uq_searches_batch_name"),
        CheckConstraint(SEARCH_STATUS_CHECK, name="ck_searches_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))  # the spec entry's name
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)  # its study job
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated `search:` block
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)  # the per-trial jobs' templates and the jobs it gates
    status: Mapped[str] = mapped_column(String(16), default="running")
    asked: Mapped[int] = mapped_column(Integer, default=0)  # trials made so far: every ask is guarded by it
    seeded: Mapped[bool] = mapped_column(default=False)  # earlier results of the same space were told to it
    best_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class SearchTrialRow(Base):
    """A trial of a search: its job (one of the batch's), the values it tries, its state and its objective value.
    A row without a number is an earlier result of the same space (another batch's job) told to the study."""

    __tablename__ = "search_trials"
    __table_args__ = (
        UniqueConstraint("search_id", "number", name="uq_search_trials_number"),
        CheckConstraint(TRIAL_STATE_CHECK, name="ck_search_trials_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    number: Mapped[int | None]  # 0, 1, ... in the order asked; NULL for an earlier result
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)  # the searched parameters' values
    state: Mapped[str] = mapped_column(String(16), default="running")
    value: Mapped[float | None] = mapped_column(Float)  # the metric's final value (complete trials)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the sampler's and pruner's notes (Optuna's)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
