"""What the Python client reads from a farm, whichever way it reaches it: the ``Backend`` protocol. Its answers are
shaped as the REST API's (plain dicts of JSON values), so the embedded store (``local.LocalBackend``) and a served
farm (``remote.RemoteBackend``) hand the client the same things, and the client builds its DataFrames once.

A job, as ``Backend.jobs`` and ``Backend.job`` answer it: the API's ``JobOut`` fields (``id``, ``batch_id``,
``name``, ``kind``, ``status``, ``params``, ``error``, ...), ``metrics`` with every final metric of the job (each
metric's value at its last step), and ``inherited`` with the params it inherits from its ancestors (None unless
asked for). A metric: ``job_id``, ``key``, ``step``, ``value``, ``time``. An artifact: the API's ``ArtifactOut``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from scheduler.errors import SpecError
from storage.status import TERMINAL

SpecSource = str | Path | Mapping[str, Any]  # a spec file's path, or the spec itself as a dict
SPEC_LABEL = "<spec>"  # how errors name a spec given as a dict
POLL_EVERY = 0.5  # seconds between two looks at a batch that is followed
TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class BatchState:
    """A batch as it stands: its jobs counted by status and its progress (0..1, running jobs by their own)."""

    id: int
    name: str
    status: str  # running while jobs are queued or running; else succeeded, failed, cancelled or blocked
    counts: dict[str, int]
    total: int
    progress: float
    created_at: datetime | None = None
    warnings: tuple[str, ...] = ()  # why some of its jobs may wait for good (a queue no live worker consumes)

    @property
    def settled(self) -> bool:
        """Nothing is queued or running: without a retry, nothing will change."""
        return self.status != "running"

    @property
    def finished(self) -> int:
        """Jobs that have ended (succeeded, failed, cancelled, pruned)."""
        return sum(n for status, n in self.counts.items() if status in TERMINAL_NAMES)


@dataclass(frozen=True)
class Submission:
    batch: int
    jobs: dict[str, int]  # job name -> id
    cached: list[int]  # jobs that an identical earlier job answered
    queued: list[int]  # jobs queued at once (their parents, if any, had succeeded)


class Backend(Protocol):
    """A farm as the client reads it: the embedded store of this process's settings, or a farm's REST API."""

    where: str  # the database or the URL, credentials masked

    def submit(self, spec: SpecSource, no_cache: bool) -> Submission: ...

    def batch(self, batch_id: int) -> BatchState: ...

    def batches(self, limit: int) -> list[BatchState]: ...

    def follow(self, batch_id: int) -> Iterator[BatchState]:
        """The batch every moment until it is settled, the last one settled. On the embedded default this runs the
        batch's jobs (an in-process worker, stopped at the end)."""
        ...

    def jobs(self, batch: int | None, kind: str | None, status: str | None, params: list[str],
             inherited: bool) -> list[dict[str, Any]]: ...

    def job(self, job_id: int) -> dict[str, Any]: ...

    def metrics(self, job_ids: list[int], batch: int | None, key: str | None) -> list[dict[str, Any]]: ...

    def artifacts(self, job_id: int) -> list[dict[str, Any]]: ...

    def content(self, artifact: Mapping[str, Any]) -> bytes:
        """An artifact's bytes, checked against its sha256."""
        ...

    def compare(self, batch: int, metric: str, by: str, higher_is_better: bool, kind: str | None) -> dict[str, Any]:
        """The API's ``Comparison``: rows with ``value`` (of ``by``), ``jobs``, ``best``, ``mean``, ``worst``,
        ``best_job``, ``best_name``, ``inherited``; ``best`` the index of the best row."""
        ...

    def search(self, batch: int, name: str) -> dict[str, Any]:
        """The API's ``SearchOut``."""
        ...

    def close(self) -> None: ...


def spec_dict(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec given as a dict, as JSON would carry it (tuples as lists): both backends validate the same thing."""
    try:
        out = json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SpecError(SPEC_LABEL, f"not plain JSON values: {e}") from e
    if not isinstance(out, dict):
        raise SpecError(SPEC_LABEL, "a spec must be a mapping with 'batch' and 'jobs'")
    return out
