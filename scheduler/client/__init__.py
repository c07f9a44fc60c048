"""latentfarm's Python client, for notebooks and scripts (``import latentfarm as lf``).

    farm = lf.connect()                                   # the environment's settings, as the CLI: embedded SQLite
    farm = lf.connect(url="http://farm:8080", token=...)  # a farm's REST API (``latentfarm serve``)
    batch = farm.submit("examples/digits-zdim-chain.yaml")   # or a dict; waits with a progress bar
    batch.jobs()                        # a DataFrame: a row per job, its params, inherited params, final metrics
    batch.compare("test_mse", by="z_dim", kind="train")
    job = batch.job("train[z_dim=8]")
    job.metrics(wide=True)              # a row per epoch
    job.artifact("reconstructions.png") # a PIL image (numpy arrays for .npy, parsed JSON, else bytes)

Both ways of reaching a farm give the same objects and the same tables; errors are ``scheduler.errors``' one-line
exceptions (``SpecError``, ``NotFound``, ...) either way. The module's functions (``lf.submit``, ``lf.jobs``,
``lf.job``, ``lf.batch``, ``lf.batches``, ``lf.compare``, ``lf.search``) use the client that ``connect`` made last, and
``connect()`` first if none was made.
"""

from __future__ import annotations

import pandas as pd

from scheduler.client.backend import BatchState, SpecSource
from scheduler.client.objects import Batch, Client, Job, Params, SearchResult
from scheduler.settings import Settings

__all__ = ["Batch", "BatchState", "Client", "Job", "SearchResult", "batch", "batches", "compare", "connect", "job",
           "jobs", "search", "submit"]

_current: Client | None = None


def connect(url: str | None = None, token: str | None = None, settings: Settings | None = None,
            timeout: float = 60.0) -> Client:
    """A client of the farm: with ``url``, the REST API served there (``token``: default LATENTFARM_API_TOKEN;
    ``timeout``: seconds per request), checked at once (a wrong URL or token is an error now); without, the
    database, broker and artifact store of ``settings`` (default: the environment's, as the CLI reads them; on the
    embedded default, SQLite in the working directory, migrated on first use). It becomes the module's client."""
    global _current
    if url is not None:
        from scheduler.client.remote import RemoteBackend

        if token is None:
            token = Settings.from_env().api_token
        _current = Client(RemoteBackend(url, token, timeout))
    else:
        from scheduler.client.local import LocalBackend

        _current = Client(LocalBackend(settings))
    return _current


def _client() -> Client:
    return _current if _current is not None else connect()


def submit(spec: SpecSource, wait: bool = True, no_cache: bool = False, progress: bool = True,
           timeout: float | None = None) -> Batch:
    """``Client.submit`` on the module's client."""
    return _client().submit(spec, wait, no_cache, progress, timeout)


def batch(batch_id: int) -> Batch:
    """``Client.batch`` on the module's client."""
    return _client().batch(batch_id)


def batches(limit: int = 20) -> pd.DataFrame:
    """``Client.batches`` on the module's client."""
    return _client().batches(limit)


def jobs(batch: int | None = None, kind: str | None = None, status: str | None = None, param: Params = None,
         inherited: bool = True) -> pd.DataFrame:
    """``Client.jobs`` on the module's client."""
    return _client().jobs(batch, kind, status, param, inherited)


def job(job_id: int) -> Job:
    """``Client.job`` on the module's client."""
    return _client().job(job_id)


def search(batch: int, name: str) -> SearchResult:
    """``Client.search`` on the module's client."""
    return _client().search(batch, name)


def compare(batch: int, metric: str, by: str, kind: str | None = None, higher_is_better: bool = False
            ) -> pd.DataFrame:
    """``Client.compare`` on the module's client."""
    return _client().compare(batch, metric, by, kind, higher_is_better)
