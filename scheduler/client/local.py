"""The client's backend on this process's settings (``latentfarm.connect()``): the store and the broker the
environment names, as the CLI opens them. On the embedded default (no broker configured) a followed batch runs in
this process, in an in-process worker, as ``latentfarm submit`` runs it; with a broker, a farm's workers run it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from scheduler.client.backend import SPEC_LABEL, BatchState, SpecSource, Submission, spec_dict
from scheduler.control import ControlPlane, Snapshot
from scheduler.datasets import registered
from scheduler.embedded import settle_interrupted_worker
from scheduler.errors import LatentfarmError
from scheduler.filters import JobQuery, ParamFilter, compare, final_metrics, job_ids
from scheduler.search_report import SearchReport, report
from scheduler.settings import Settings
from scheduler.spec import parse_spec
from storage import queries
from storage.queries import BatchSummary
from storage.records import Job


class LocalBackend:
    """The farm of ``settings`` (default: the environment's), read and written through its store."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.cp = ControlPlane.open(settings)
        self.interrupted = False  # a followed run was left before its end
        self.where = self.cp.store.engine.url.render_as_string(hide_password=True)

    def submit(self, spec: SpecSource, no_cache: bool) -> Submission:
        """Validate the spec (a file: relative paths from its folder; a dict: from the working directory) and
        write the batch, queueing its ready jobs."""
        if isinstance(spec, Mapping):
            settings = self.cp.settings
            batch_spec = parse_spec(spec_dict(spec), SPEC_LABEL, Path.cwd(), settings.data_dir, settings.job_memory,
                                    registered(self.cp.store))
        else:
            batch_spec = self.cp.load(spec)
        result = self.cp.submit(batch_spec, no_cache=no_cache)
        return Submission(result.batch_id, dict(result.job_ids), list(result.cached), list(result.queued))

    def batch(self, batch_id: int) -> BatchState:
        with self.cp.store.session() as s:
            summary = queries.batch_summary(s, batch_id)
        return _state(summary, self.cp.warnings(batch_id))

    def batches(self, limit: int) -> list[BatchState]:
        with self.cp.store.session() as s:
            return [_state(b) for b in queries.list_batches(s, limit)]

    def follow(self, batch_id: int) -> Iterator[BatchState]:
        with self.cp.store.session() as s:
            queries.get_batch(s, batch_id)  # NotFound before a worker starts
        if self.interrupted and self.cp.settings.embedded:
            # What an interrupted run handed back is queued without a message in this process's broker: once its
            # worker has ended, every queued job is sent again (a duplicate is dropped by the guarded claim).
            settle_interrupted_worker()
            self.cp.sent.clear()
        self.interrupted = True  # until the run ends by itself (a timeout or Ctrl-C leaves it early)
        for snap in self.cp.run(batch_id):
            yield _snapshot_state(snap)
            if snap.worker_stopped:
                raise LatentfarmError(f"the in-process worker stopped before batch {batch_id} finished")
        self.interrupted = False

    def jobs(self, batch: int | None, kind: str | None, status: str | None, params: list[str],
             inherited: bool) -> list[dict[str, Any]]:
        query = JobQuery(batch, kind, status, params=[ParamFilter.parse(p, "param") for p in params])
        with self.cp.store.session() as s:
            found, _, _ = query.run(s)
            return _with_results(s, found, inherited)

    def job(self, job_id: int) -> dict[str, Any]:
        with self.cp.store.session() as s:
            return _with_results(s, [queries.require_job(s, job_id)], True)[0]

    def metrics(self, job_ids_: list[int], batch: int | None, key: str | None) -> list[dict[str, Any]]:
        with self.cp.store.session() as s:
            ids = job_ids(s, job_ids_, batch, "job", "batch")
            return [vars(m) for m in queries.job_metrics(s, ids, key)]

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        with self.cp.store.session() as s:
            queries.require_job(s, job_id)
            return [vars(a) for a in queries.job_artifacts(s, job_id)]

    def content(self, artifact: Mapping[str, Any]) -> bytes:
        what = f"artifact {artifact['id']} ({artifact['name']} of job {artifact['job_id']})"
        return self.cp.store.artifacts.verified_path(artifact["uri"], artifact["sha256"], what).read_bytes()

    def compare(self, batch: int, metric: str, by: str, higher_is_better: bool, kind: str | None) -> dict[str, Any]:
        with self.cp.store.session() as s:
            result = compare(s, batch, metric, by, higher_is_better, kind)
        result["rows"] = [{"value": r.pop(by), **r} for r in result["rows"]]  # as the API answers it
        return result

    def search(self, batch: int, name: str) -> dict[str, Any]:
        with self.cp.store.session() as s:
            return search_dict(report(s, batch, name))

    def close(self) -> None:
        self.cp.store.engine.dispose()


def _with_results(s: Any, jobs: list[Job], inherited: bool) -> list[dict[str, Any]]:
    """The jobs as the API's ``JobOut`` with every final metric and, if asked, the params they inherit."""
    ids = [j.id for j in jobs]
    finals = final_metrics(queries.job_metrics(s, ids)) if ids else {}
    lineage = queries.inherited_params(s, ids) if inherited and ids else {}
    return [{**vars(j), "status": j.status.value, "metrics": finals.get(j.id, {}),
             "inherited": lineage.get(j.id, {}) if inherited else None} for j in jobs]


def _state(summary: BatchSummary, warnings: list[str] | tuple[str, ...] = ()) -> BatchState:
    b = summary.batch
    return BatchState(b.id, b.name, summary.status, dict(summary.counts), summary.total, summary.progress,
                      b.created_at, tuple(warnings))


def _snapshot_state(snap: Snapshot) -> BatchState:
    return _state(snap.summary, snap.warnings)


def search_dict(r: SearchReport) -> dict[str, Any]:
    """A search report as the API's ``SearchOut``."""
    s = r.search
    return {"batch": s.batch_id, "name": s.name, "job_id": s.job_id, "status": s.status, "config": s.config,
            "budget": r.config.budget, "counts": r.counts, "steps": r.steps,
            "best": dataclasses.asdict(r.best) if r.best else None, "best_job_id": r.best.job_id if r.best else None,
            "trials": [dataclasses.asdict(t) for t in r.trials], "earlier": [dataclasses.asdict(t) for t in r.earlier],
            "best_so_far": [dataclasses.asdict(p) for p in r.best_so_far], "importance": r.importance}
