"""A job context without a broker or a database: the handler's parents and their artifacts are given in memory,
and what the handler records (metrics, artifacts, progress) is kept for the test to read.

It is the real ``JobContext`` with the methods that touch the store replaced, so the helpers handlers use
(``artifact_npy``, ``artifact_json``, ``load_model``, ``load_npy``, ``parent``...) are the ones a worker runs.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.errors import NotFound
from storage.records import Artifact, Job
from storage.status import JobStatus
from workers.context import JobContext

_ids = itertools.count(1)


def make_job(name: str, kind: str, params: Mapping[str, Any], attempts: int = 1) -> Job:
    now = datetime.now(timezone.utc)
    return Job(id=next(_ids), batch_id=1, name=name, kind=kind, params=dict(params), fingerprint="0" * 64,
               status=JobStatus.RUNNING, queue="cpu", priority=5, attempts=attempts, max_attempts=3, timeout=None,
               worker="stub", host=None, gpu=None, lease_until=None, heartbeat_at=None, progress=0.0, error=None,
               traceback=None, cached_from=None, cancel_requested=False, created_at=now, queued_at=now,
               not_before=None, started_at=now, finished_at=None)


class Blobs:
    """Artifacts of finished jobs, in memory, with a folder for the files a handler reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.by_job: dict[int, dict[str, tuple[Artifact, bytes]]] = {}
        self.parents: dict[int, list[Job]] = {}

    def add(self, job: Job, name: str, data: bytes, media_type: str, meta: dict[str, Any] | None = None) -> Artifact:
        sha = hashlib.sha256(data).hexdigest()
        artifact = Artifact(id=next(_ids), job_id=job.id, name=name, uri=f"sha256/{sha[:2]}/{sha}",
                            media_type=media_type, bytes=len(data), sha256=sha, meta=dict(meta or {}),
                            created_at=datetime.now(timezone.utc))
        self.by_job.setdefault(job.id, {})[name] = (artifact, data)
        return artifact

    def adopt(self, job: Job, ctx: StubContext) -> Job:
        """Keep what ``ctx`` recorded as the finished job ``job``'s artifacts (to give to its children)."""
        for name, (artifact, data) in ctx.recorded.items():
            self.add(job, name, data, artifact.media_type, artifact.meta)
        return job

    def path(self, artifact: Artifact, data: bytes) -> Path:
        path = self.folder / artifact.uri
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return path


class StubContext(JobContext):
    """``JobContext`` for ``job``, whose parents are ``parents`` (their artifacts in ``blobs``)."""

    def __init__(self, job: Job, blobs: Blobs, parents: list[Job] | None = None) -> None:
        super().__init__(store=None, settings=None, job=job, worker="stub")  # type: ignore[arg-type]
        self.blobs = blobs
        blobs.parents[job.id] = list(parents or [])
        self.metric_rows: dict[tuple[str, int], float] = {}
        self.recorded: dict[str, tuple[Artifact, bytes]] = {}
        self.dropped: list[tuple[str, Artifact, bytes]] = []  # what the job recorded, then dropped on success
        self.progress_log: list[tuple[float, str | None]] = []

    # -- what the real context writes to the store --

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        for key, value in values.items():
            assert np.isfinite(value), (key, value)
            self.metric_rows[(key, step)] = float(value)

    def artifact_bytes(self, name: str, data: bytes, media_type: str, meta: dict[str, Any] | None = None) -> None:
        artifact = self.blobs.add(self.job, name, data, media_type, meta)
        self.recorded[name] = (artifact, data)

    def artifact_file(self, name: str, path: str | os.PathLike[str], media_type: str,
                      meta: dict[str, Any] | None = None) -> None:
        self.artifact_bytes(name, Path(path).read_bytes(), media_type, meta)

    def checkpoint_file(self, name: str, path: str | os.PathLike[str], media_type: str,
                        meta: dict[str, Any] | None = None) -> None:
        self.artifact_file(name, path, media_type, meta)

    def drop_artifact(self, name: str) -> None:
        self.dropped.append((name, *self.recorded.pop(name)))
        self.blobs.by_job.get(self.job.id, {}).pop(name, None)

    def trial_reporter(self) -> Any:
        return _NoSearch()

    def own_artifact(self, name: str) -> Artifact | None:
        found = self.blobs.by_job.get(self.job.id, {}).get(name)
        return found[0] if found else None

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.progress_log.append((fraction, message))

    @contextmanager
    def results(self) -> Iterator[None]:
        yield

    # -- what the real context reads from the store --

    def parents(self, of: Job | None = None) -> list[Job]:
        return self.blobs.parents.get((of or self.job).id, [])

    def artifact(self, job: Job, name: str) -> Artifact:
        found = self.blobs.by_job.get(job.id, {}).get(name)
        if found is None:
            raise NotFound(f"job {job.name!r} (#{job.id}) has no artifact {name!r}")
        return found[0]

    def artifacts(self, jobs: list[Job], name: str) -> list[Artifact]:
        return [self.artifact(j, name) for j in jobs]

    def artifact_path(self, job: Job, name: str, artifact: Artifact | None = None) -> Path:
        found = self.blobs.by_job.get(job.id, {}).get(name)
        if found is None:
            raise NotFound(f"artifact {name!r} of job {job.name!r} is missing")
        return self.blobs.path(*found)

    # -- for the tests --

    def npy(self, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.recorded[name][1]), allow_pickle=False)

    def json(self, name: str) -> Any:
        return json.loads(self.recorded[name][1])

    def steps(self, key: str) -> list[int]:
        return sorted(step for k, step in self.metric_rows if k == key)


class _NoSearch:
    """A job of no search: its steps are reported to no pruner."""

    def report(self, step: int) -> None:
        pass
