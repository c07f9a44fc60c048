"""``study``: the job that stands for a search in its batch. The control plane runs it (``scheduler.search``): it
is running from submit to the search's end and is never sent to a worker; one that reaches a worker (a retry of an
ended search) fails with the reason."""

from __future__ import annotations

from core.kinds.search import SearchParams
from scheduler.errors import PermanentError
from workers.context import JobContext


def run_study(ctx: JobContext, params: SearchParams) -> None:
    raise PermanentError(f"the search {ctx.job.name!r} ended; a search is not run again by a worker: submit the "
                         "batch again to search again (its finished trials come from the cache)")
