"""The handle a job handler reports through: metrics, artifacts, progress, cancellation."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from scheduler.errors import LatentfarmError, NotFound, PermanentError
from scheduler.settings import Settings
from storage import queries
from storage.events import add_event
from storage.records import Artifact, Job
from storage.results import drop_artifact, put_artifact, put_metrics, replace_artifact
from storage.store import Store
from storage.transitions import Results
from workers.monitor import Watch

if TYPE_CHECKING:
    from workers.pruning import TrialReporter

log = logging.getLogger(__name__)


class JobStopped(PermanentError):
    """Raised at a job's check when it must stop before its end."""


class JobCancelled(JobStopped):
    """The user cancelled the running job."""


class JobTimedOut(JobStopped):
    """The job ran past its ``timeout`` (its soft time limit)."""


class JobReleased(JobStopped):
    """The worker is shutting down: the job hands itself back, to be queued for another attempt."""


class JobLost(JobStopped):
    """This attempt no longer holds the job (its lease ran out and the reaper took it back): stop, record nothing."""


class JobContext:
    """Given to a handler. Every call writes through to the store in its own short transaction, except inside
    ``results()``, whose writes go into the transaction that marks the job succeeded."""

    def __init__(self, store: Store, settings: Settings, job: Job, worker: str, watch: Watch | None = None) -> None:
        self.store = store
        self.settings = settings
        self.job = job
        self.worker = worker
        self.watch = watch  # the lease keeper's view of this attempt: cancel, timeout, loss
        # This job's parents and their artifacts, read once: finished jobs' results do not change.
        self._parents: list[Job] | None = None
        self._parent_artifacts: dict[tuple[int, str], Artifact] = {}
        self._holding = False  # inside results(): writes wait for the job's completing transaction
        self._results: list[Callable[[Session], None]] = []
        self._held_metrics: dict[int, dict[str, float]] = {}  # by step: the rows a held write will record
        self._held_artifacts: list[tuple[str, tuple[str, str, int, str, dict[str, Any]]]] = []  # likewise, by name
        self._dropped: list[str | None] = []  # blobs to delete once the results that dropped them are committed

    @contextmanager
    def results(self) -> Iterator[None]:
        """Record the metrics and artifacts of the block in the transaction that marks the job succeeded (the
        end of a short job: one transaction less, and no reader sees the job done without them). Use it for a
        handler's last writes; blobs are stored at once, but if the job then fails or was cancelled, no row of
        the block is recorded."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def held_results(self) -> Results | None:
        """The writes ``results()`` held back, as rows that the completing statement records (``storage.transitions
        .succeed``); None if one of them is neither a metric nor an artifact (``write_results`` applies them)."""
        if len(self._results) != len(self._held_metrics) + len(self._held_artifacts):
            return None
        return Results({(k, step): v for step, rows in self._held_metrics.items() for k, v in rows.items()},
                       dict(self._held_artifacts))

    def write_results(self, session: Session) -> None:
        """Apply the writes ``results()`` held back (called by the completing transaction)."""
        for write in self._results:
            write(session)

    def _write(self, write: Callable[[Session], None]) -> None:
        if self._holding:
            self._results.append(write)
            return
        with self.store.session() as s:
            write(s)

    def metric(self, key: str, value: float, step: int = 0) -> None:
        self.metrics({key: value}, step)

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """Record several metrics at one step (an epoch; 0 for final values). NaN is refused: it means a bug."""
        for k, v in values.items():
            if not math.isfinite(float(v)):
                raise FloatingPointError(f"metric {k} is {v} at step {step}")
        rows = {k: float(v) for k, v in values.items()}
        if self._holding:  # held: the step's metrics go into one statement (the job's resources join its finals)
            if step in self._held_metrics:
                self._held_metrics[step].update(rows)
                return
            self._held_metrics[step] = rows
        self._write(lambda s: put_metrics(s, self.job.id, rows, step))

    def artifact_bytes(self, name: str, data: bytes, media_type: str, meta: dict[str, Any] | None = None) -> None:
        blob = self.store.artifacts.put_bytes(data)
        self._record(name, blob.uri, blob.sha256, blob.bytes, media_type, meta)

    def artifact_file(self, name: str, path: str | os.PathLike[str], media_type: str,
                      meta: dict[str, Any] | None = None) -> None:
        blob = self.store.artifacts.put_file(Path(path))
        self._record(name, blob.uri, blob.sha256, blob.bytes, media_type, meta)

    def checkpoint_file(self, name: str, path: str | os.PathLike[str], media_type: str,
                        meta: dict[str, Any] | None = None) -> None:
        """Record (or replace) this job's checkpoint ``name`` now, and delete the blob it replaces: a job that
        checkpoints every epoch keeps one checkpoint in the store, not one per epoch."""
        blob = self.store.artifacts.put_file(Path(path))
        with self.store.session() as s:
            recorded, stale = replace_artifact(s, self.job.id, name, blob.uri, blob.sha256, blob.bytes, media_type,
                                               meta, attempt=self.job.attempts)
        if not recorded:  # the reaper took this attempt back (its lease ran out): another one owns the job now
            raise JobLost(f"attempt {self.job.attempts} no longer holds the job")
        self._delete_blob(stale, "the checkpoint it replaced")

    def drop_artifact(self, name: str) -> None:
        """Remove this job's artifact ``name`` (inside ``results()``: with the job's success) and its blob, unless
        another row refers to that blob. A finished training's checkpoint goes this way."""
        def drop(s: Session) -> None:
            self._dropped.append(drop_artifact(s, self.job.id, name))

        self._write(drop)
        if not self._holding:
            self.after_results()

    def after_results(self) -> None:
        """Delete the blobs that the job's recorded results stopped referring to (after they are committed)."""
        dropped, self._dropped = self._dropped, []
        for uri in dropped:
            self._delete_blob(uri, "an artifact it dropped")

    def _delete_blob(self, uri: str | None, what: str) -> None:
        if uri is None:
            return
        try:
            self.store.artifacts.delete(uri)
        except LatentfarmError as e:  # the store is away: the blob is left for `latentfarm gc`
            log.warning("job %s: could not delete %s (%s): left for gc", self.job.id, what, e)

    def trial_reporter(self) -> TrialReporter:
        """Reports this job's steps to its search's pruner if it is a trial of a search (``workers.pruning``)."""
        from workers.pruning import reporter

        return reporter(self)

    def own_artifact(self, name: str) -> Artifact | None:
        """This job's artifact ``name`` from an earlier attempt (a checkpoint to resume from), or None."""
        with self.store.session() as s:
            return next((a for a in queries.job_artifacts(s, self.job.id) if a.name == name), None)

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
        if of is None and self._parents is not None:
            return self._parents
        with self.store.session() as s:
            if of is None:
                return self.read_parents(s)
            return queries.parent_jobs(s, of.id)

    def read_parents(self, session: Session) -> list[Job]:
        """Read this job's parents and their artifacts (for artifact() and friends) in ``session``, once."""
        self._parents = queries.parent_jobs(session, self.job.id)
        self._parent_artifacts = {(a.job_id, a.name): a
                                  for a in queries.artifacts_of(session, [p.id for p in self._parents])}
        return self._parents

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
        """The artifact ``name`` of ``job`` (of this job's parents: as read with them)."""
        known = self._parent_artifacts.get((job.id, name))
        if known is not None:
            return known
        with self.store.session() as s:
            for a in queries.job_artifacts(s, job.id):
                if a.name == name:
                    return a
        raise NotFound(f"job {job.name!r} (#{job.id}) has no artifact {name!r}")

    def artifacts(self, jobs: list[Job], name: str) -> list[Artifact]:
        """The artifact ``name`` of each of ``jobs``, in their order (one query at most); NotFound if one
        lacks it."""
        unknown = [j.id for j in jobs if (j.id, name) not in self._parent_artifacts]
        found = dict(self._parent_artifacts)
        if unknown:
            with self.store.session() as s:
                found.update({(a.job_id, a.name): a for a in queries.artifacts_of(s, unknown)})
        missing = [j for j in jobs if (j.id, name) not in found]
        if missing:
            raise NotFound(f"job {missing[0].name!r} (#{missing[0].id}) has no artifact {name!r}")
        return [found[(j.id, name)] for j in jobs]

    def artifact_path(self, job: Job, name: str, artifact: Artifact | None = None) -> Path:
        """The local file of another job's artifact, checked against its sha256 (once per version of the file):
        NotFound if the blob is missing, ArtifactCorrupt if its bytes changed. A job never computes on a damaged
        input, and neither error is retried: the blob stays damaged. On a bucket the file is this host's cached
        copy, downloaded once per host; a bucket that does not answer is StorageUnavailable (the job is retried)."""
        a = artifact or self.artifact(job, name)
        return self.store.artifacts.verified_path(a.uri, a.sha256, f"artifact {name!r} of job {job.name!r} "
                                                  f"(#{job.id})")

    def load_model(self, job: Job, name: str = "model.keras", view: Callable[[Any], Any] | None = None) -> Any:
        """Another job's Keras model, from this process's model cache when it was loaded before.

        ``view`` (e.g. ``core.dream.features_model``) derives another model from it; that is cached too.
        """
        from workers.models import load_model

        a = self.artifact(job, name)
        return load_model(self.artifact_path(job, name, a), a.sha256, view)

    def load_npy(self, job: Job, name: str, artifact: Artifact | None = None) -> Any:
        import numpy as np

        return np.load(self.artifact_path(job, name, artifact), allow_pickle=False)

    def _record(self, name: str, uri: str, sha: str, size: int, media_type: str, meta: dict[str, Any] | None) -> None:
        if self._holding:
            self._held_artifacts.append((name, (uri, sha, size, media_type, meta or {})))
        self._write(lambda s: put_artifact(s, self.job.id, name, uri, sha, size, media_type, meta))

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1), with an event when there is a ``message``, and check (see ``check``).

        A message (an epoch's summary) is written at once with a lease renewal, which also picks up a cancel
        request; a bare fraction goes out with the next renewal by the lease keeper."""
        fraction = min(max(fraction, 0.0), 1.0)
        if message:
            with self.store.session() as s:
                add_event(s, self.job.id, "progress", message, worker=self.worker,
                                  attempt=self.job.attempts)
            if self.watch is not None:
                self.watch.renew(fraction)
        elif self.watch is not None:
            self.watch.progress = fraction
        self.check()

    def check(self) -> None:
        """Stop here if the job must stop: raises JobCancelled (the user cancelled it), JobTimedOut (past its
        timeout), JobLost (this attempt's lease ran out and the job was handed on) or JobReleased (its worker is
        shutting down). Costs no database round trip: call it often (every OIP step)."""
        w = self.watch
        if w is None:
            return
        if w.lost:
            raise JobLost(f"attempt {w.attempt} of job {self.job.id} lost its lease")
        if w.released:
            raise JobReleased(w.released)
        if w.cancel_requested:
            raise JobCancelled("cancelled by user")
        if w.timed_out:
            raise JobTimedOut(f"timed out after {w.timeout:g} s (the job's timeout)")
