"""The API's job routes: jobs (filtered as ``latentfarm jobs``), one job, its events and metrics, metrics across
jobs, cancel and retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from scheduler import lifecycle
from scheduler.filters import JobQuery, MetricFilter, ParamFilter, final_metrics, job_ids, parse_since
from scheduler.resources import resources_of
from scheduler.web.deps import Id, Limit, Mask, Name, Offset, Plane, authorized, known_query, writer
from scheduler.web.schemas import (
    API,
    ERRORS,
    WRITE_ERRORS,
    Cancelled,
    EventOut,
    JobOut,
    MetricOut,
    Page,
    Problem,
    Retried,
    Status,
    job_out,
    page,
)
from storage import queries
from storage.queries import MAX_ID
from storage.status import JobStatus

router = APIRouter(prefix=API, dependencies=[Depends(authorized), Depends(known_query)])


@router.get("/jobs", response_model=Page[JobOut], responses=ERRORS, tags=["jobs"])
def list_jobs(
    cp: Plane,
    mask: Mask,
    batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_]{1,50}$")] = None,
    status: Status | None = None,
    since: Annotated[str | None, Query(max_length=64, description="30m, 2h, 1d or an ISO date")] = None,
    param: Annotated[list[str], Query(max_length=50, description="NAME=VALUE, e.g. z_dim=16 (repeatable)")] = [],  # noqa: B006
    where: Annotated[list[str], Query(max_length=50, description="a final metric, e.g. val_loss<0.1")] = [],  # noqa: B006
    sort: Annotated[str | None, Query(max_length=200, description="order by this final metric")] = None,
    desc: Annotated[bool, Query(description="with sort: largest first")] = False,
    finals: Annotated[bool, Query(description="every final metric of each job in `metrics`, not only those "
                                              "filtered or sorted on")] = False,
    inherited: Annotated[bool, Query(description="the params each job inherits from its ancestors, in "
                                                 "`inherited`")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Jobs filtered as by ``latentfarm jobs``: batch, kind, status, since, parameter values, final metrics; with
    every final metric of each (``finals``) and the params it inherits (``inherited``), a sweep's table."""
    query = JobQuery(batch, kind, status, parse_since(since, "since"), [ParamFilter.parse(p, "param") for p in param],
                     [MetricFilter.parse(w, "where") for w in where], sort, desc)
    with cp.store.session() as s:
        found, shown, total = query.run(s, limit, offset)
        ids = [j.id for j in found]
        if finals:
            shown = final_metrics(queries.job_metrics(s, ids))
        lineage = queries.inherited_params(s, ids) if inherited else {}
    keys = set(query.keys)
    return page([job_out(j, mask, metrics={k: v for k, v in shown.get(j.id, {}).items() if finals or k in keys},
                         **({"inherited": lineage.get(j.id, {})} if inherited else {})) for j in found],
                total, limit, offset)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS, tags=["jobs"])
def get_job(job_id: Id, cp: Plane, mask: Mask) -> dict[str, Any]:
    """A job: its params, the params it inherits from its ancestors, status, progress, attempts, where it ran, its
    error, the resources it used."""
    with cp.store.session() as s:
        job = queries.require_job(s, job_id)
        used = resources_of({m.key: m.value for m in queries.job_metrics(s, [job_id]) if m.step == 0}
                            ) if job.status is JobStatus.SUCCEEDED else {}
        return job_out(job, mask, parents=queries.job_parents(s, job_id), resources=used or None,
                       inherited=queries.inherited_params(s, [job_id]).get(job_id, {}))


@router.get("/jobs/{job_id}/events", response_model=Page[EventOut], responses=ERRORS, tags=["jobs"])
def job_events(job_id: Id, cp: Plane, mask: Mask, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """What happened to the job, oldest first: status changes, retries, cancels."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        events = queries.job_events(s, job_id)
    shown = [{**vars(e), "message": mask(e.message) if e.message else e.message} for e in events[offset:offset + limit]]
    return page(shown, len(events), limit, offset)


@router.get("/jobs/{job_id}/metrics", response_model=Page[MetricOut], responses=ERRORS, tags=["jobs"])
def job_metrics(job_id: Id, cp: Plane, key: Name = None, limit: Limit = 1000, offset: Offset = 0) -> dict[str, Any]:
    """The job's metric series, by key then step (an epoch, a k; 0 for final values)."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        found = queries.job_metrics(s, [job_id], key)
    return page(found[offset:offset + limit], len(found), limit, offset)


@router.get("/metrics", response_model=Page[MetricOut], responses=ERRORS, tags=["jobs"])
def metrics(cp: Plane, job: Annotated[list[int], Query(description="a job id (repeatable)")] = [],  # noqa: B006
            batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, key: Name = None,
            limit: Limit = 1000, offset: Offset = 0) -> dict[str, Any]:
    """Metrics of several jobs (``job``, repeatable) or of a whole ``batch``, as ``latentfarm metrics``."""
    with cp.store.session() as s:
        found = queries.job_metrics(s, job_ids(s, job, batch, "job=ID, repeatable", "batch=ID"), key)
    return page(found[offset:offset + limit], len(found), limit, offset)


@router.post("/jobs/{job_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS,
             dependencies=[Depends(writer)], tags=["jobs"])
def cancel_job(job_id: Id, cp: Plane) -> dict[str, list[int]]:
    """Cancel the job and what depends on it; a running job stops at its next check."""
    return lifecycle.cancel(cp.store, [job_id])


@router.post("/jobs/{job_id}/retry", response_model=Retried, responses={**WRITE_ERRORS, 409: {"model": Problem}},
             dependencies=[Depends(writer)], tags=["jobs"])
def retry_job(job_id: Id, cp: Plane) -> dict[str, Any]:
    """Run a failed or cancelled job again; its cancelled descendants run after it. 409 for other jobs."""
    return {"job": job_id, "queued": lifecycle.retry(cp.store, cp.app, job_id)}
