"""Plain records returned by the store: ORM rows never leave ``storage``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from storage.status import JobStatus

R = TypeVar("R")


@dataclass(frozen=True)
class Batch:
    id: int
    name: str
    spec_path: str | None
    spec: dict[str, Any]
    created_at: datetime
    no_cache: bool


@dataclass(frozen=True)
class Job:
    id: int
    batch_id: int
    name: str
    kind: str
    params: dict[str, Any]
    fingerprint: str
    status: JobStatus
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


@dataclass(frozen=True)
class Metric:
    job_id: int
    key: str
    step: int
    value: float
    time: datetime


@dataclass(frozen=True)
class Artifact:
    id: int
    job_id: int
    name: str
    uri: str
    media_type: str
    bytes: int
    sha256: str
    meta: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset registered in the farm (``latentfarm data add``): a blob of the artifact store and what validation
    reads without its bytes (``meta``)."""

    id: int
    name: str  # what specs name it by; a replaced version kept for unfinished jobs: "<name>@<sha256>"
    kind: str  # file | folder (a folder is stored as one archive)
    filename: str  # the name of the file or folder it was added from
    uri: str
    sha256: str
    bytes: int
    meta: dict[str, Any]
    created_at: datetime

    @property
    def is_folder(self) -> bool:
        """Added from a folder (stored as one archive), not from a single file."""
        return self.kind == "folder"


@dataclass(frozen=True)
class Event:
    job_id: int
    time: datetime
    kind: str
    status: str | None
    message: str | None
    worker: str | None
    attempt: int | None


@dataclass(frozen=True)
class Worker:
    """A worker process as it last said (the ``workers`` table): see ``storage.workers`` for its state."""

    id: int
    name: str
    host: str
    pid: int
    queues: list[str]
    gpu: str | None
    version: str
    job_id: int | None
    started_at: datetime
    last_seen: datetime
    stopped_at: datetime | None
    jobs_done: int
    jobs_failed: int


@dataclass(frozen=True)
class NewJob:
    """A job as planned, before it has an id."""

    name: str
    kind: str
    params: dict[str, Any]
    fingerprint: str
    queue: str
    priority: int = 5
    max_attempts: int = 1
    timeout: float | None = None


def from_row(cls: type[R], row: Any) -> R:
    """Copy the columns named by ``cls``'s fields out of an ORM row."""
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if cls is Job:
        values["status"] = JobStatus(values["status"])
    return cls(**values)
