"""latentfarm's Python client: ``import latentfarm as lf``, then ``lf.connect()`` (the environment's farm, as the
CLI) or ``lf.connect(url=..., token=...)`` (a farm's REST API). It lives in ``scheduler.client``; this package only
gives it its name."""

from scheduler.client import (
    Batch,
    BatchState,
    Client,
    Job,
    SearchResult,
    batch,
    batches,
    compare,
    connect,
    job,
    jobs,
    search,
    submit,
)

__all__ = ["Batch", "BatchState", "Client", "Job", "SearchResult", "batch", "batches", "compare", "connect", "job",
           "jobs", "search", "submit"]
