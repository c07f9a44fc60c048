"""The handle a job handler reports through: metrics, artifacts, progress, cancellation."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scheduler.settings import Settings
from storage import jobs as jobrepo
from storage import queries
from storage.errors import NotFound
from storage.records import Artifact, Job
from storage.store import Store


class JobCancelled(Exception):
    """Raised (or returned as a stop request) when a user cancelled the running job."""


class JobContext:
    """Given to a handler. Every call writes through to the store in its own short transaction."""

    def __init__(self, store: Store, settings: Settings, job: Job, worker: str) -> None:
        self.store = store
        self.settings = settings
        self.job = job
        self.worker = worker

    def metric(self, key: str, value: float, step: int = 0) -> None:
        self.metrics({key: value}, step)

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """Record several metrics at one step (an epoch; 0 for final values). NaN is refused: it means a bug."""
        for k, v in values.items():
            if not math.isfinite(float(v)):
                raise FloatingPointError(f"metric {k} is {v} at step {step}")
        with self.store.session() as s:
            for k, v in values.items():
                jobrepo.put_metric(s, self.job.id, k, float(v), step)

    def artifact_bytes(self, name: str, data: bytes, media_type: str, meta: dict[str, Any] | None = None) -> None:
        blob = self.store.artifacts.put_bytes(data)
        self._record(name, blob.uri, blob.sha256, blob.bytes, media_type, meta)

    def artifact_file(self, name: str, path: str | os.PathLike[str], media_type: str,
                      meta: dict[str, Any] | None = None) -> None:
        blob = self.store.artifacts.put_file(Path(path))
        self._record(name, blob.uri, blob.sha256, blob.bytes, media_type, meta)

    def artifact_json(self, name: str, value: Any) -> None:
        self.artifact_bytes(name, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    def artifact_npy(self, name: str, array: Any, meta: dict[str, Any] | None = None) -> None:
        """Store a numpy array in ``.npy`` format (shape and dtype go into the artifact's meta)."""
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        info = {"shape": list(array.shape), "dtype": str(array.dtype), **(meta or {})}
        self.artifact_bytes(name, buf.getvalue(), "application/x-npy", info)

    # -- the jobs this one needs, and their results --

    def parents(self, of: Job | None = None) -> list[Job]:
        """The jobs ``of`` (default: this job) needs, in id order."""
        job = of or self.job
        with self.store.session() as s:
            return [queries.require_job(s, p) for p in sorted(queries.job_parents(s, job.id))]

    def parent(self, kind: str, of: Job | None = None, models: tuple[str, ...] | None = None,
               required: bool = True) -> Job | None:
        """The one parent of ``kind`` (for train: of one of ``models``). The spec guaranteed how many there are."""
        found = [p for p in self.parents(of) if p.kind == kind and (models is None or p.params.get("model") in models)]
        if not found:
            if required:
                raise LookupError(f"job {(of or self.job).name!r} has no {kind} parent")
            return None
        return found[0]

    def artifact(self, job: Job, name: str) -> Artifact:
        with self.store.session() as s:
            for a in queries.job_artifacts(s, job.id):
                if a.name == name:
                    return a
        raise NotFound(f"job {job.name!r} (#{job.id}) has no artifact {name!r}")

    def artifact_path(self, job: Job, name: str, artifact: Artifact | None = None) -> Path:
        """The local file of another job's artifact (the artifact store is shared by every worker)."""
        path = self.store.artifacts.path_of((artifact or self.artifact(job, name)).uri)
        if not path.is_file():
            raise NotFound(f"artifact {name!r} of job {job.name!r} is missing from the store: {path}")
        return path

    def load_model(self, job: Job, name: str = "model.keras") -> Any:
        """Another job's Keras model, from this process's model cache when it was loaded before."""
        from workers.models import load_model

        a = self.artifact(job, name)
        return load_model(self.artifact_path(job, name, a), a.sha256)

    def load_npy(self, job: Job, name: str) -> Any:
        import numpy as np

        return np.load(self.artifact_path(job, name), allow_pickle=False)

    def _record(self, name: str, uri: str, sha: str, size: int, media_type: str, meta: dict[str, Any] | None) -> None:
        with self.store.session() as s:
            jobrepo.put_artifact(s, self.job.id, name, uri, sha, size, media_type, meta)

    def progress(self, fraction: float, message: str | None = None) -> bool:
        """Report progress (0..1) and renew the lease. Returns True if the user asked to cancel the job."""
        with self.store.session() as s:
            jobrepo.heartbeat(s, self.job.id, self.worker, self.settings.lease_seconds,
                              progress=min(max(fraction, 0.0), 1.0))
            if message:
                jobrepo.add_event(s, self.job.id, "progress", message, worker=self.worker,
                                  attempt=self.job.attempts)
            return jobrepo.is_cancel_requested(s, self.job.id)
