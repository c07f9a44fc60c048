"""The web dashboard: server-rendered pages over the same store as the CLI and the API.

``/`` lists the batches, ``/batches/{id}`` one batch, its jobs and the gallery of its images, ``/jobs/{id}`` one job
with its metric curves (SVG drawn by ``charts``) and its images, ``/batches/{id}/compare`` a sweep's final metric per
parameter value, ``/farm`` the workers and queues. A banner on the batch and farm pages says when jobs wait on a
queue that no live worker consumes. The pages work without JavaScript; ``static/dashboard.js`` only refreshes the
live numbers from the JSON API. No page loads anything from another origin. An error is a page with the status of
the one table in ``scheduler.errors`` (a missing job a 404, a bad query a 400, the database away a 503), never a
500.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup

from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, UserError, response_for
from scheduler.filters import compare as compare_sweep
from scheduler.filters import final_metrics
from scheduler.web import views
from scheduler.web.deps import Id
from storage import queries
from storage.queries import MAX_ID
from storage.status import JobStatus

HERE = Path(__file__).resolve().parent
BATCHES_PER_PAGE = 20
JOBS_PER_PAGE = 200
WORKERS_PER_PAGE = 200

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(when=views.when, seconds=views.seconds, number=views.number, size=views.size,
                             value=views.value, age=views.age)
templates.env.globals.update(STATUSES=[s.value for s in JobStatus], ACTIVE=("pending", "queued", "running"),
                             run_time=views.run_time)


@pass_context
def _masked(context: Any, text: str | None) -> str | None:
    """A stored text (a job's error, traceback, event) with credentials masked by the app's ``mask``."""
    return context["request"].app.state.mask(text) if text else text


templates.env.filters["masked"] = _masked


def _error(request: Request, status: int, title: str, message: str) -> Response:
    message = request.app.state.mask(message)
    return templates.TemplateResponse(request, "error.html", {"title": title, "status": status, "message": message},
                                      status_code=status)


def _invalid(e: RequestValidationError) -> tuple[int, str, str]:
    """A bad path parameter names nothing that exists (404: ``/jobs/abc``); a bad query parameter is a 400."""
    parts = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        if loc[:1] == ["path"] and len(loc) > 1:
            return 404, "Not found", f"no {loc[1].removesuffix('_id')} {err.get('input')!r}"
        parts.append(f"query parameter {'.'.join(loc[1:])}: {err.get('msg')}")
    return 400, "Bad request", "; ".join(parts) or "invalid request"


class _PageRoute(APIRoute):
    """A dashboard route: what the API answers as JSON problems, a page answers as an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except LatentfarmError as e:
                answer = response_for(e)  # the one table: scheduler.errors
                response = _error(request, answer.http_status, answer.title, str(e))
                if answer.retry_after:
                    response.headers["Retry-After"] = "5"
                return response
            except RequestValidationError as e:
                return _error(request, *_invalid(e))

        return page


router = APIRouter(route_class=_PageRoute, include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add the dashboard's pages and its static files (``/static``) to ``app``; reads ``app.state.plane``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


def _plane(request: Request) -> ControlPlane:
    return request.app.state.plane  # type: ignore[no-any-return]


def _render(request: Request, name: str, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, context)


@router.get("/")
def batches_page(request: Request, page: Annotated[int, Query(ge=1, le=MAX_ID // BATCHES_PER_PAGE)] = 1
                 ) -> Response:
    offset = (page - 1) * BATCHES_PER_PAGE
    with _plane(request).store.session() as s:
        found = queries.list_batches(s, BATCHES_PER_PAGE, offset)
        total = queries.count_batches(s)
    pages = max(1, math.ceil(total / BATCHES_PER_PAGE))
    return _render(request, "batches.html", title="Batches", batches=found, total=total, page=page, pages=pages,
                   limit=BATCHES_PER_PAGE, offset=offset)


@router.get("/batches/{batch_id}")
def batch_page(request: Request, batch_id: Id,
               page: Annotated[int, Query(ge=1, le=MAX_ID // JOBS_PER_PAGE)] = 1) -> Response:
    offset = (page - 1) * JOBS_PER_PAGE
    with _plane(request).store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        shown = queries.list_jobs(s, batch_id=batch_id, limit=JOBS_PER_PAGE, offset=offset)
        finals = final_metrics(queries.job_metrics(s, [j.id for j in shown])) if shown else {}
        gallery = views.gallery(s, batch_id, lambda ids: final_metrics(queries.job_metrics(s, ids)))
    metrics, params, swept = views.compare_choices(shown, finals)
    return _render(request, "batch.html", title=f"Batch {batch_id}: {summary.batch.name}", summary=summary,
                   jobs=shown, total_jobs=summary.total, finals=finals, page=page,
                   pages=max(1, math.ceil(summary.total / JOBS_PER_PAGE)), limit=JOBS_PER_PAGE, offset=offset,
                   metrics=metrics, params=params, swept=swept, default_metric=views.default_metric(metrics),
                   default_by=params[0] if params else None, gallery=gallery,
                   warnings=_plane(request).warnings(batch_id))


@router.get("/farm")
def farm_page(request: Request, page: Annotated[int, Query(ge=1, le=MAX_ID // WORKERS_PER_PAGE)] = 1) -> Response:
    offset = (page - 1) * WORKERS_PER_PAGE
    farm = _plane(request).farm(WORKERS_PER_PAGE, offset)
    return _render(request, "farm.html", title="Farm", farm=farm, page=page, offset=offset,
                   pages=max(1, math.ceil(farm.total / WORKERS_PER_PAGE)))


@router.get("/batches/{batch_id}/compare")
def compare_page(request: Request, batch_id: Id,
                 metric: Annotated[str | None, Query(max_length=200)] = None,
                 by: Annotated[str | None, Query(max_length=200)] = None,
                 higher_is_better: bool = False) -> Response:
    result, error = None, None
    with _plane(request).store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        jobs = queries.list_jobs(s, batch_id=batch_id)
        finals = final_metrics(queries.job_metrics(s, [j.id for j in jobs])) if jobs else {}
        if metric and by:
            try:
                result = compare_sweep(s, batch_id, metric, by, higher_is_better)
            except UserError as e:  # the page again, with the reason, so another choice is one click away
                error = request.app.state.mask(str(e))
        elif metric or by:
            error = "choose both a metric and a parameter to compare by"
    metrics, params, swept = views.compare_choices(jobs, finals)
    title = f"Batch {batch_id}: {metric} by {by}" if result else f"Batch {batch_id}: compare"
    return templates.TemplateResponse(request, "compare.html", {
        "title": title, "summary": summary, "result": result, "error": error,
        "chart": Markup(views.compare_chart(result)) if result else None, "metrics": metrics, "params": params,
        "swept": swept, "default_metric": metric or views.default_metric(metrics),
        "default_by": by or (params[0] if params else None), "higher_is_better": higher_is_better,
    }, status_code=400 if error else 200)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: Id) -> Response:
    with _plane(request).store.session() as s:
        job = queries.require_job(s, job_id)
        batch = queries.get_batch(s, job.batch_id)
        parents = queries.parent_jobs(s, job_id)
        events = queries.job_events(s, job_id)
        metrics = queries.job_metrics(s, [job_id])
        artifacts = queries.job_artifacts(s, job_id)
    finals = {m.key: m.value for m in metrics if m.step == 0}
    images = [a for a in artifacts if a.media_type.startswith("image/")]
    others = [a for a in artifacts if not a.media_type.startswith("image/")]
    return _render(request, "job.html", title=f"Job {job.id}: {job.name}", job=job, batch=batch, parents=parents,
                   events=events, finals=finals, charts=[Markup(c) for c in views.metric_charts(job, metrics)],
                   images=images, others=others, gallery_names=views.gallery_names(job))
