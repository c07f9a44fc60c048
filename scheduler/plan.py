"""Planning: a validated spec becomes jobs with fingerprints and dependency edges, ready to be written.

fingerprint = sha256(kind, canonical params without file locations, parents' fingerprints, dataset identity).
A registered dataset's reference (``dataset:<name>@<sha256>``) is a location too: its sha256 is the identity.
Two jobs with the same fingerprint compute the same thing, so the second can reuse the first's results.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data_files import dataset_identity, input_sha256
from core.kinds import KINDS
from scheduler.spec import BatchSpec, JobSpec
from storage.records import NewJob

FINGERPRINT_VERSION = 1  # bump when a change of the job code makes old results invalid
# Where a file is does not change what it holds: its sha256 counts (the dataset's, or the files a kind reads).
LOCATION_PARAMS = frozenset({"data_path"}.union(*(k.files for k in KINDS.values())))
# per kind, its late params (core.kinds.base.Kind.late_params) with their defaults
_LATE_DEFAULTS = {k.name: {p: k.params.__dataclass_fields__[p].default for p in k.late_params}
                  for k in KINDS.values() if k.late_params}


@dataclass(frozen=True)
class BatchPlan:
    name: str
    spec_path: str | None
    spec: Mapping[str, Any]
    jobs: tuple[NewJob, ...]  # parents before children
    edges: tuple[tuple[str, str], ...]  # (parent name, child name)
    searches: tuple[Mapping[str, Any], ...] = ()  # its searches' plans (scheduler.search.plan_searches)


def fingerprint(kind: str, params: Mapping[str, Any], parent_fingerprints: list[str], data_identity: str | None) -> str:
    """The identity of a job's result."""
    late = _LATE_DEFAULTS.get(kind, {})
    payload = {
        "v": FINGERPRINT_VERSION,
        "kind": kind,
        "params": {k: v for k, v in params.items()
                   if k not in LOCATION_PARAMS and not (k in late and v == late[k])},
        "parents": sorted(parent_fingerprints),
        "data": data_identity,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def job_data_identity(job: JobSpec) -> str | None:
    """What identifies the data a job reads: its dataset's name and sha256, and its input files' sha256. A registered
    dataset counts by the sha256 it was registered with: nothing is hashed, and the submitting machine needs no
    copy of it."""
    parts = []
    if job.params.get("dataset") is not None:
        data_path = job.params.get("data_path")
        parts.append(dataset_identity(job.params["dataset"], Path(data_path) if data_path else None))
    for name in KINDS[job.kind].files:
        if job.params.get(name):
            parts.append(f"{name}:{input_sha256(job.params[name])}")
    return " ".join(parts) or None


def plan_batch(spec: BatchSpec) -> BatchPlan:
    """Turn a spec into jobs (with fingerprints, computed parents first) and edges."""
    fps: dict[str, str] = {}
    jobs = []
    for j in spec.jobs:
        fps[j.name] = fingerprint(j.kind, j.params, [fps[p] for p in j.needs], job_data_identity(j))
        jobs.append(NewJob(name=j.name, kind=j.kind, params=dict(j.params), fingerprint=fps[j.name], queue=j.queue,
                           priority=j.priority, max_attempts=j.max_attempts, timeout=j.timeout))
    edges = tuple((p, j.name) for j in spec.jobs for p in j.needs)
    return BatchPlan(spec.name, spec.path, spec.raw, tuple(jobs), edges)
