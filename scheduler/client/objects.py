"""The client's objects: ``Client`` (a farm), ``Batch``, ``Job`` and ``SearchResult``. They hold ids and what was
last read; each method reads the farm again through the client's backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from scheduler.client.backend import Backend, BatchState, SpecSource
from scheduler.client.frames import compare_frame, decode, jobs_frame, metrics_frame, search_frames
from scheduler.client.progress import follow
from scheduler.errors import NotFound, UserError
from storage.status import JobStatus

STATUSES = tuple(s.value for s in JobStatus)
Params = str | Sequence[str] | Mapping[str, Any] | None  # "z_dim=8", ["z_dim=8", "loss=bce"] or {"z_dim": 8}


class Client:
    """A farm, read and written through one backend (``latentfarm.connect()`` makes one)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def where(self) -> str:
        """The farm's database URL (embedded, or a farm's own settings) or API URL; credentials masked."""
        return self.backend.where

    def __repr__(self) -> str:
        return f"<latentfarm client of {self.where}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def submit(self, spec: SpecSource, wait: bool = True, no_cache: bool = False, progress: bool = True,
               timeout: float | None = None) -> Batch:
        """Submit a batch: a spec file's path (relative paths in it are taken from its folder, or on a served farm
        from the server's data directory) or the spec as a dict. Nothing is written unless the whole spec is valid
        (SpecError names the spec, the job and the field). With ``wait``, follow it to its end with a progress bar
        (``timeout``: seconds at most). On the embedded default the jobs run in this process while it waits; with
        ``wait=False`` they run at ``batch.wait()``."""
        done = self.backend.submit(spec, no_cache)
        batch = Batch(self, self.backend.batch(done.batch))
        batch.submitted = done.jobs
        if wait:
            batch.wait(progress=progress, timeout=timeout)
        return batch

    def batch(self, batch_id: int) -> Batch:
        """The batch ``batch_id`` (NotFound if there is none)."""
        return Batch(self, self.backend.batch(batch_id))

    def batches(self, limit: int = 20) -> pd.DataFrame:
        """The most recent batches: ``id``, ``name``, ``status``, ``total``, ``progress`` and a column per status."""
        states = self.backend.batches(limit)
        statuses = [s for s in STATUSES if any(b.counts.get(s) for b in states)]
        return pd.DataFrame([[b.id, b.name, b.status, b.total, b.progress, *(b.counts.get(s, 0) for s in statuses)]
                             for b in states], columns=["id", "name", "status", "total", "progress", *statuses])

    def jobs(self, batch: int | None = None, kind: str | None = None, status: str | None = None,
             param: Params = None, inherited: bool = True) -> pd.DataFrame:
        """Jobs as a table, one row per job (``frames.jobs_frame``: params, inherited params, final metrics),
        filtered by batch, kind, status and parameter values (``"z_dim=8"``, a list of such, or ``{"z_dim": 8}``:
        a job matches a value it inherits too). ``inherited=False`` leaves the ancestors' params out."""
        if status is not None and status not in STATUSES:
            raise UserError(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        return jobs_frame(self.backend.jobs(batch, kind, status, param_filters(param), inherited))

    def job(self, job_id: int) -> Job:
        """The job ``job_id`` (NotFound if there is none)."""
        return Job(self, self.backend.job(job_id))

    def compare(self, batch: int, metric: str, by: str, kind: str | None = None,
                higher_is_better: bool = False) -> pd.DataFrame:
        """The final ``metric`` of a batch's jobs per value of the parameter ``by`` (their own or inherited): a row
        per value with the best, mean and worst, the best job and ``winner``. Jobs of different kinds are never
        ranked together: a metric that several kinds record needs ``kind``."""
        return compare_frame(self.backend.compare(batch, metric, by, higher_is_better, kind))

    def search(self, batch: int, name: str) -> SearchResult:
        """The search ``name`` (a spec entry with ``search:``) of a batch: its trials, best trial, importance."""
        return SearchResult.of(self.backend.search(batch, name))


def param_filters(param: Params) -> list[str]:
    """Parameter filters as the CLI's ``--param``: ``NAME=VALUE`` texts (a dict's values written as JSON)."""
    if param is None:
        return []
    if isinstance(param, str):
        return [param]
    if isinstance(param, Mapping):
        import json

        return [f"{k}={v}" if isinstance(v, str) else f"{k}={json.dumps(v)}" for k, v in param.items()]
    return [str(p) for p in param]


class Batch:
    """A batch of the farm: ``id``, ``name``, ``status``, ``counts`` (jobs by status), ``total``, as last read."""

    def __init__(self, client: Client, state: BatchState) -> None:
        self.client = client
        self.state = state
        self.submitted: dict[str, int] = {}  # job name -> id, for a batch this client submitted

    @property
    def id(self) -> int:
        return self.state.id

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def counts(self) -> dict[str, int]:
        return self.state.counts

    @property
    def total(self) -> int:
        return self.state.total

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        return f"<batch {self.id} {self.name!r}: {self.status} ({counts})>"

    def refresh(self) -> Batch:
        """Read the batch again."""
        self.state = self.client.backend.batch(self.id)
        return self

    def wait(self, progress: bool = True, timeout: float | None = None) -> Batch:
        """Follow the batch until nothing is queued or running (on the embedded default: run its jobs here), with
        a progress bar (tqdm: a widget in a notebook). ``timeout``: stop following after this many seconds (a
        batch run in this process hands its running job back to the queue)."""
        self.state = follow(self.client.backend.follow(self.id), progress, timeout)
        return self

    def jobs(self, kind: str | None = None, status: str | None = None, param: Params = None,
             inherited: bool = True) -> pd.DataFrame:
        """The batch's jobs as a table (``Client.jobs``)."""
        return self.client.jobs(self.id, kind, status, param, inherited)

    def job(self, name: str) -> Job:
        """The batch's job called ``name`` (e.g. ``train[z_dim=8]``)."""
        for j in self.client.backend.jobs(self.id, None, None, [], True):
            if j["name"] == name:
                return Job(self.client, j)
        raise NotFound(f"batch {self.id} has no job {name!r}")

    def metrics(self, key: str | None = None, wide: bool = False) -> pd.DataFrame:
        """Every metric of the batch's jobs (or those named ``key``), with each job's name: long (``job``,
        ``name``, ``key``, ``step``, ``value``, ``time``) or wide (a row per job and step, a column per key)."""
        names = {j["id"]: j["name"] for j in self.client.backend.jobs(self.id, None, None, [], False)}
        return metrics_frame(self.client.backend.metrics([], self.id, key), names, wide)

    def compare(self, metric: str, by: str, kind: str | None = None, higher_is_better: bool = False) -> pd.DataFrame:
        """``Client.compare`` on this batch."""
        return self.client.compare(self.id, metric, by, kind, higher_is_better)

    def search(self, name: str) -> SearchResult:
        """``Client.search`` on this batch."""
        return self.client.search(self.id, name)


class Job:
    """A job of the farm, as last read: ``id``, ``batch``, ``name``, ``kind``, ``status``, ``params``, ``inherited``
    (the params it inherits from its ancestors), ``final`` (its final metrics), ``error``, ``info`` (everything
    the API says of it)."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self.client = client
        self.info = info

    @property
    def id(self) -> int:
        return int(self.info["id"])

    @property
    def batch(self) -> int:
        return int(self.info["batch_id"])

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    @property
    def status(self) -> str:
        return str(self.info["status"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.info["params"])

    @property
    def inherited(self) -> dict[str, Any]:
        return dict(self.info.get("inherited") or {})

    @property
    def final(self) -> dict[str, float]:
        return dict(self.info.get("metrics") or {})

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    def __repr__(self) -> str:
        return f"<job {self.id} {self.name!r} ({self.kind}): {self.status}>"

    def refresh(self) -> Job:
        self.info = self.client.backend.job(self.id)
        return self

    def metrics(self, key: str | None = None, wide: bool = False) -> pd.DataFrame:
        """The job's metrics per step (an epoch, a k; 0 for a final value): long (``key``, ``step``, ``value``,
        ``time``) or wide (a row per step, a column per key)."""
        df = metrics_frame(self.client.backend.metrics([self.id], None, key), wide=wide)
        return df if wide else df.drop(columns="job")

    def artifacts(self) -> pd.DataFrame:
        """The job's artifacts: ``name``, ``media_type``, ``bytes``, ``sha256``, ``meta``, ``id``."""
        return pd.DataFrame([[a["name"], a["media_type"], a["bytes"], a["sha256"], a["meta"], a["id"]]
                             for a in self.client.backend.artifacts(self.id)],
                            columns=["name", "media_type", "bytes", "sha256", "meta", "id"])

    def artifact(self, name: str, raw: bool = False) -> Any:
        """The artifact ``name``, checked against its sha256 and decoded by its media type (``frames.decode``): a
        PIL image, a numpy array, parsed JSON, else bytes; ``raw=True``: always the bytes."""
        found = [a for a in self.client.backend.artifacts(self.id) if a["name"] == name]
        if not found:
            names = ", ".join(a["name"] for a in self.client.backend.artifacts(self.id)) or "none"
            raise NotFound(f"job {self.id} has no artifact {name!r} (its artifacts: {names})")
        data = self.client.backend.content(found[0])
        what = f"artifact {name!r} of job {self.id}"
        return data if raw else decode(data, found[0]["media_type"], what)


@dataclass(frozen=True)
class SearchResult:
    """A search of a batch: its ``trials`` (a DataFrame: a row per trial, the searched values as columns), ``best``
    (the best trial, a dict), ``best_so_far`` (a DataFrame), ``importance`` (per parameter), ``status``,
    ``counts`` (trials by state), ``config`` (the search block) and ``info`` (everything the API says of it)."""

    batch: int
    name: str
    status: str
    config: dict[str, Any]
    counts: dict[str, int]
    best: dict[str, Any] | None
    importance: dict[str, float]
    trials: pd.DataFrame
    best_so_far: pd.DataFrame
    info: dict[str, Any]

    @classmethod
    def of(cls, info: dict[str, Any]) -> SearchResult:
        trials, curve = search_frames(info)
        return cls(info["batch"], info["name"], info["status"], info["config"], info["counts"], info["best"],
                   info["importance"], trials, curve, info)

