"""The API's answers as pydantic models (its published schema: a new storage column does not change it
silently), the answers built from the store's records, and the error answers each route documents."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from scheduler.control import Farm
from storage.queries import BatchSummary
from storage.records import Artifact, Job

API = "/api/v1"
T = TypeVar("T")
Status = Literal["pending", "queued", "running", "succeeded", "failed", "cancelled", "pruned"]  # JobStatus


class Page(BaseModel, Generic[T]):
    """A page of a list: ``items`` from ``offset``, at most ``limit`` of them, out of ``total``."""

    items: list[T]
    total: int
    limit: int
    offset: int


class BatchOut(BaseModel):
    id: int
    name: str
    status: str = Field(description="pending work: running; else succeeded (pruned trials included), failed, "
                                    "cancelled or blocked")
    counts: dict[str, int] = Field(description="jobs by status")
    total: int
    progress: float = Field(description="0..1: finished jobs count 1, running jobs their own progress")
    created_at: datetime
    no_cache: bool
    spec_path: str | None
    spec: dict[str, Any] | None = Field(None, description="the spec as submitted (only on GET /batches/{id})")
    warnings: list[str] = Field(default_factory=list, description="why some of its jobs may wait for good: a "
                                "queue on which they wait that no live worker consumes (only on GET /batches/{id})")


class JobOut(BaseModel):
    id: int
    batch_id: int
    name: str
    kind: str
    params: dict[str, Any]
    fingerprint: str
    status: Status
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    timeout: float | None
    worker: str | None
    host: str | None
    gpu: str | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    progress: float
    error: str | None
    traceback: str | None
    cached_from: int | None
    cancel_requested: bool
    created_at: datetime
    queued_at: datetime | None
    not_before: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    metrics: dict[str, float] = Field(default_factory=dict,
                                      description="final values of the metrics filtered or sorted on (on GET /jobs "
                                                  "with finals=true: of every metric)")
    inherited: dict[str, Any] | None = Field(
        None, description="the params it inherits from its ancestors, each from the nearest that has it (a sample of "
        "an encode of train[z_dim=8] inherits z_dim: 8); its own params win (on GET /jobs/{id}, and on GET /jobs "
        "with inherited=true)")
    parents: list[int] | None = Field(None, description="the jobs it needs (only on GET /jobs/{id})")
    resources: dict[str, float] | None = Field(
        None, description="what it used, as its worker measured it: wall_seconds, cpu_seconds, peak_rss (bytes), "
        "gpu_peak_memory (bytes), gpu_util_mean (%); also among its metrics (only on GET /jobs/{id}, once succeeded)")


class EventOut(BaseModel):
    job_id: int
    time: datetime
    kind: str
    status: str | None
    message: str | None
    worker: str | None
    attempt: int | None


class MetricOut(BaseModel):
    job_id: int
    key: str
    step: int = Field(description="the epoch, the k of a sweep, or 0 for a final value")
    value: float
    time: datetime


class ArtifactOut(BaseModel):
    id: int
    job_id: int
    name: str
    media_type: str
    bytes: int
    sha256: str
    meta: dict[str, Any]
    uri: str = Field(description="the blob's path inside the artifact store")
    created_at: datetime
    url: str = Field(description="where to download it")


class Submitted(BaseModel):
    batch: int
    jobs: dict[str, int]
    cached: list[int]
    queued: list[int]
    url: str


class Cancelled(BaseModel):
    cancelled: list[int] = Field(description="jobs cancelled now")
    flagged: list[int] = Field(description="running jobs that stop at their next check")


class Retried(BaseModel):
    job: int
    queued: list[int] = Field(description="jobs queued now (empty: it waits for its parents)")


class CompareRow(BaseModel):
    value: Any = Field(description="the parameter's value")
    jobs: int
    best: float
    mean: float
    worst: float
    best_job: int
    best_name: str
    inherited: bool = Field(description="the value comes (for some of its jobs) from an ancestor of theirs")


class Comparison(BaseModel):
    batch: int
    metric: str
    by: str
    higher_is_better: bool
    kind: str = Field(description="the kind of the jobs compared (never several)")
    rows: list[CompareRow]
    best: int | None = Field(description="index of the best row; never a row whose value is null (none if only such)")


class WorkerOut(BaseModel):
    id: int
    name: str = Field(description="the Celery node name, e.g. gpu0@host")
    host: str
    pid: int
    queues: list[str] = Field(description="the queues it consumes now, as specs name them; * for every queue")
    gpu: str | None
    version: str
    job_id: int | None = Field(description="the job it runs now")
    started_at: datetime
    last_seen: datetime = Field(description="its last heartbeat")
    stopped_at: datetime | None = Field(description="when it shut down cleanly")
    jobs_done: int
    jobs_failed: int
    state: Literal["running", "idle", "lost", "stopped"] = Field(
        description="lost: no heartbeat for 3 of its intervals (killed, or cut off from the database)")


class QueueOut(BaseModel):
    queue: str
    queued: int = Field(description="jobs queued in the database")
    running: int = Field(description="jobs running in the database")
    consumers: int = Field(description="live workers consuming it")
    on_broker: int | None = Field(description="messages waiting on the broker; null where it cannot say")


class Workers(Page[WorkerOut]):
    """The farm's workers (a page, by name), every queue, and why jobs may wait for good."""

    queues: list[QueueOut]
    warnings: list[str] = Field(description="queues on which jobs wait that no live worker consumes; a broker "
                                            "that cannot be reached")


class Health(BaseModel):
    status: str
    version: str
    embedded: bool
    database: str
    writes_need_token: bool


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "bad input: an unknown or malformed filter"},
    401: {"model": Problem, "description": "a token is set and none or a wrong one was sent"},
    404: {"model": Problem, "description": "no such batch, job or artifact"},
    422: {"model": Problem, "description": "a parameter out of range or of the wrong type"},
    503: {"model": Problem, "description": "the database or broker cannot be reached"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    403: {"model": Problem, "description": "sent by a page of another origin"},
    415: {"model": Problem, "description": "a body other than JSON or YAML"},
}


def batch_out(summary: BatchSummary, with_spec: bool = False, warnings: list[str] | None = None) -> dict[str, Any]:
    b = summary.batch
    return {"id": b.id, "name": b.name, "status": summary.status, "counts": summary.counts, "total": summary.total,
            "progress": summary.progress, "created_at": b.created_at, "no_cache": b.no_cache,
            "spec_path": b.spec_path, "spec": b.spec if with_spec else None, "warnings": warnings or []}


def workers_out(farm: Farm, limit: int, offset: int) -> dict[str, Any]:
    on_broker = farm.on_broker
    return {**page([{**vars(w.worker), "state": w.state} for w in farm.workers], farm.total, limit, offset),
            "queues": [{**vars(q), "on_broker": None if on_broker is None else on_broker.get(q.queue)}
                       for q in farm.queues],
            "warnings": farm.warnings}


def job_out(job: Job, mask: Callable[[str], str], **extra: Any) -> dict[str, Any]:
    """A job as the API answers it; ``mask`` hides credentials in its error and traceback."""
    out = {**vars(job), "status": job.status.value, **extra}
    for key in ("error", "traceback"):
        if out.get(key):
            out[key] = mask(out[key])
    return out


def artifact_out(a: Artifact) -> dict[str, Any]:
    return {**vars(a), "url": f"{API}/artifacts/{a.id}/content"}


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}
