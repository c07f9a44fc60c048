"""A job's results: its metrics and artifacts (the rows; the blobs are in ``storage.artifacts``), and the copy of
another job's results that a cache hit gets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from storage import sql
from storage.models import utcnow
from storage.sql import ARTIFACTS, DATASETS, JOBS, METRICS, chunks, upsert

_ARTIFACT_KEYS = ["job_id", "name"]
_ARTIFACT_VALUES = ["uri", "sha256", "bytes", "media_type", "meta", "created_at"]


def put_metric(session: Session, job_id: int, key: str, value: float, step: int = 0,
               time: datetime | None = None) -> None:
    """Record a metric; a second value for the same (job, key, step) replaces the first (a resumed job)."""
    put_metrics(session, job_id, {key: value}, step, time)


def put_metrics(session: Session, job_id: int, values: Mapping[str, float], step: int = 0,
                time: datetime | None = None) -> None:
    """Record several metrics at one step in one statement, each replacing an earlier value of its key."""
    if not values:
        return
    at = time or utcnow()
    upsert(session, METRICS, [{"job_id": job_id, "key": k, "step": step, "value": float(v), "time": at}
                              for k, v in values.items()], ["job_id", "key", "step"], ["value", "time"])


def put_artifact(session: Session, job_id: int, name: str, uri: str, sha256: str, size: int, media_type: str,
                 meta: dict[str, Any] | None = None) -> None:
    """Record an artifact of a job; an artifact of the same name (from an earlier attempt) is replaced."""
    upsert(session, ARTIFACTS, [{"job_id": job_id, "name": name, "uri": uri, "sha256": sha256, "bytes": size,
                                 "media_type": media_type, "meta": meta or {}, "created_at": utcnow()}],
           _ARTIFACT_KEYS, _ARTIFACT_VALUES)


def replace_artifact(session: Session, job_id: int, name: str, uri: str, sha256: str, size: int, media_type: str,
                     meta: dict[str, Any] | None = None, attempt: int | None = None) -> tuple[bool, str | None]:
    """``put_artifact``, and the uri of the blob it replaced if no artifact refers to that blob any more (the
    caller may then delete it: a checkpoint rewritten every epoch must not pile up blobs). With ``attempt``, only
    while that attempt of the job is running: an attempt the reaper took back (its worker was cut off) records
    nothing. Returns (recorded, the replaced blob's uri or None)."""
    if attempt is not None and session.scalar(select(func.count()).select_from(JOBS).where(
            JOBS.c.id == job_id, JOBS.c.status == "running", JOBS.c.attempts == attempt)) == 0:
        return False, None
    old = session.execute(select(ARTIFACTS.c.uri, ARTIFACTS.c.sha256)
                          .where(ARTIFACTS.c.job_id == job_id, ARTIFACTS.c.name == name)).first()
    put_artifact(session, job_id, name, uri, sha256, size, media_type, meta)
    if old is None or old.sha256 == sha256:
        return True, None
    return True, None if _referenced(session, old.sha256) else str(old.uri)


def drop_artifact(session: Session, job_id: int, name: str) -> str | None:
    """Remove the artifact ``name`` of a job (a finished training's checkpoint); returns its blob's uri if nothing
    refers to that blob any more (no artifact, no registered dataset), for the caller to delete after commit."""
    old = session.execute(select(ARTIFACTS.c.uri, ARTIFACTS.c.sha256)
                          .where(ARTIFACTS.c.job_id == job_id, ARTIFACTS.c.name == name)).first()
    if old is None:
        return None
    session.execute(delete(ARTIFACTS).where(ARTIFACTS.c.job_id == job_id, ARTIFACTS.c.name == name))
    return None if _referenced(session, old.sha256) else str(old.uri)


def _referenced(session: Session, sha256: str) -> bool:
    if session.scalar(select(func.count()).select_from(ARTIFACTS).where(ARTIFACTS.c.sha256 == sha256)):
        return True
    return bool(session.scalar(select(func.count()).select_from(DATASETS).where(DATASETS.c.sha256 == sha256)))


def copy_results(session: Session, pairs: Iterable[tuple[int, int]]) -> None:
    """Give each target the artifacts (the same blobs) and metrics of its source, for (source, target) pairs:
    read and written in a few statements per thousand jobs (a cache hit shares its source's results)."""
    targets: dict[int, list[int]] = {}
    for source_id, target_id in pairs:
        targets.setdefault(source_id, []).append(target_id)
    now = utcnow()
    artifacts: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for chunk in chunks(sorted(targets)):
        for a in session.execute(select(ARTIFACTS).where(ARTIFACTS.c.job_id.in_(chunk))):
            artifacts += [{"job_id": t, "name": a.name, "uri": a.uri, "sha256": a.sha256, "bytes": a.bytes,
                           "media_type": a.media_type, "meta": dict(a.meta or {}), "created_at": now}
                          for t in targets[a.job_id]]
        for m in session.execute(select(METRICS).where(METRICS.c.job_id.in_(chunk))):
            metrics += [{"job_id": t, "key": m.key, "step": m.step, "value": m.value, "time": m.time}
                        for t in targets[m.job_id]]
    for rows in chunks(artifacts, max(sql.CHUNK // 2, 1)):  # as put_artifact: one of the same name is replaced
        upsert(session, ARTIFACTS, rows, _ARTIFACT_KEYS, _ARTIFACT_VALUES)
    if metrics:
        session.execute(insert(METRICS), metrics)
