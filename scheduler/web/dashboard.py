"""The web dashboard: server-rendered pages over the same store as the CLI and the API.

``/`` lists the batches, ``/batches/{id}`` one batch and its jobs table (sorted and filtered by status, kind,
param and final metric, with a few chosen metrics; cancel and retry buttons for a browser that may write), and its
searches (``/batches/{id}/search/{name}``, trials, parallel coordinates, best so far, importance). A sweep's views
(``sweep``): ``/batches/{id}/curves`` the learning curves overlaid, coloured by a param; ``/scatter`` a final metric
against a param; ``/parallel`` parallel coordinates of the params against a metric; ``/gallery`` the same image of
every job side by side with its params and scores, a page at a time; ``/compare`` the final metric per parameter
value. ``/jobs/{id}`` one job with its metric curves (SVG drawn by ``charts``) and its images, ``/farm`` the
workers and queues. A banner on the batch and farm pages says when jobs wait on a queue that no live worker
consumes. The pages work without JavaScript, but for the buttons: ``static/dashboard.js`` refreshes the live
numbers from the JSON API and sends cancel and retry to it. No page loads anything from another origin. An error
is a page with the status of the one table in ``scheduler.errors`` (a missing job a 404, a bad query a 400, the
database away a 503), never a 500.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup
from sqlalchemy.orm import Session

from scheduler import search_report
from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, UserError, response_for
from scheduler.filters import compare as compare_sweep
from scheduler.resources import LABELS as RESOURCE_LABELS
from scheduler.resources import format_resource, resources_of, without_resources
from scheduler.web import search_charts, sweep, views
from scheduler.web.deps import Id
from scheduler.web.guard import Credentials
from storage import queries
from storage import search as store_search
from storage.queries import MAX_ID
from storage.status import JobStatus

HERE = Path(__file__).resolve().parent
BATCHES_PER_PAGE = 20
JOBS_PER_PAGE = 200
WORKERS_PER_PAGE = 200

# a view's choices: empty (a form's "any") is none
Choice = Annotated[str | None, Query(max_length=200)]
KindChoice = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_]{0,50}$")]
StatusChoice = Annotated[str | None, Query(pattern="^(|" + "|".join(s.value for s in JobStatus) + ")$")]

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(when=views.when, seconds=views.seconds, number=views.number, size=views.size,
                             value=views.value, age=views.age, resource=lambda v, key: format_resource(key, v))
templates.env.globals.update(STATUSES=[s.value for s in JobStatus], ACTIVE=("pending", "queued", "running"),
                             run_time=views.run_time, RESOURCE_LABELS=RESOURCE_LABELS, url_with=views.url_with)


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


def _own(finals: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """Per job, the final metrics it recorded itself: its resources are on its own page."""
    return {job: without_resources(values) for job, values in finals.items()}


def _may_write(request: Request) -> bool:
    """Whether the page shows cancel and retry: to a browser signed in with the token (or a client sending it), or
    when the server has no token (anyone who reaches it may write). The buttons call the API, which checks again."""
    token: str | None = request.app.state.token
    return token is None or bool(getattr(request.state, "signed_in", False)) or \
        Credentials.of(request.headers).check(token)[0]


def _choices(request: Request, s: Session, batch_id: int) -> sweep.Choices:
    """The batch's choices for its views, kept by the app between requests while they stay the same."""
    cache = getattr(request.app.state, "sweep_choices", None)
    if cache is None:
        cache = request.app.state.sweep_choices = sweep.ChoicesCache()
    return cache.get(s, batch_id)


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
               page: Annotated[int, Query(ge=1, le=MAX_ID // JOBS_PER_PAGE)] = 1,
               kind: KindChoice = None, status: StatusChoice = None,
               param: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
               where: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
               sort: Annotated[str, Query(max_length=200)] = "id", desc: bool = False,
               metric: Annotated[list[str], Query(max_length=200)] = []) -> Response:  # noqa: B006
    """The batch, its jobs table (sorted and filtered; ``metric``: the final metrics shown) and the way to its
    views."""
    offset, error = (page - 1) * JOBS_PER_PAGE, None
    with _plane(request).store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        c = _choices(request, s, batch_id)
        try:
            q = sweep.TableQuery.parse(kind, status, param, where, sort, desc)
            found = sweep.table(s, batch_id, q, metric, JOBS_PER_PAGE, offset, c)
        except UserError as e:  # the page again, with the reason and the form as it was
            error = request.app.state.mask(str(e))
            q = sweep.TableQuery()
            found = {"jobs": [], "total_jobs": 0, "finals": {}, "metric_columns": [], "param_columns": [],
                     "inherited": {}, "query": q}
        searches = store_search.batch_searches(s, batch_id)
    shown = found["total_jobs"]
    response = _render(request, "batch.html", title=f"Batch {batch_id}: {summary.batch.name}", summary=summary,
                       page=page, pages=max(1, math.ceil(shown / JOBS_PER_PAGE)), limit=JOBS_PER_PAGE, offset=offset,
                       choices=c, metrics=list(c.metrics), params=c.params, swept=c.swept, error=error,
                       asked={"kind": kind or "", "status": status or "", "param": param, "where": where,
                              "metric": metric},
                       filtered=bool(kind or status or q.params or q.where), sort=sort, desc=desc,
                       default_metric=views.default_metric(list(c.metrics)),
                       default_by=c.params[0] if c.params else None, searches=searches,
                       may_write=_may_write(request), warnings=_plane(request).warnings(batch_id),
                       **{**found, "finals": _own(found["finals"])})
    if error:
        response.status_code = 400
    return response


@router.get("/batches/{batch_id}/curves")
def curves_page(request: Request, batch_id: Id, metric: Choice = None, kind: KindChoice = None,
                colour: Choice = None, higher_is_better: bool = False,
                page: Annotated[int, Query(ge=1, le=MAX_ID // sweep.CURVES_PER_PAGE)] = 1) -> Response:
    """The learning curves of the batch's jobs overlaid, coloured by a param: a page of the best at a time."""
    return _view(request, batch_id, "curves.html", "curves", lambda s, c: sweep.curves(
        s, batch_id, c, metric or None, kind or None, colour, higher_is_better, page),
        higher_is_better=higher_is_better)


@router.get("/batches/{batch_id}/scatter")
def scatter_page(request: Request, batch_id: Id, metric: Choice = None, by: Choice = None,
                 kind: KindChoice = None, colour: Choice = None) -> Response:
    """Each job's final metric against a param."""
    return _view(request, batch_id, "scatter.html", "scatter", lambda s, c: sweep.scatter(
        s, batch_id, c, metric or None, by or None, kind or None, colour or None))


@router.get("/batches/{batch_id}/parallel")
def parallel_page(request: Request, batch_id: Id, metric: Choice = None, kind: KindChoice = None,
                  higher_is_better: bool = False) -> Response:
    """Parallel coordinates: the params that vary against a metric."""
    return _view(request, batch_id, "parallel.html", "parallel", lambda s, c: sweep.parallel(
        s, batch_id, c, metric or None, kind or None, higher_is_better), higher_is_better=higher_is_better)


@router.get("/batches/{batch_id}/gallery")
def gallery_page(request: Request, batch_id: Id, image: Choice = None, kind: KindChoice = None,
                 sort: Choice = None, desc: bool = False,
                 page: Annotated[int, Query(ge=1, le=MAX_ID // sweep.GALLERY_PER_PAGE)] = 1) -> Response:
    """The same image of every job of a kind side by side, with its params and scores, a page at a time."""
    return _view(request, batch_id, "gallery.html", "gallery", lambda s, c: sweep.gallery(
        s, batch_id, c, image or None, kind or None, sort or None, desc, page))


def _view(request: Request, batch_id: int, template: str, name: str,
          build: Callable[[Session, sweep.Choices], dict[str, Any]], **context: Any) -> Response:
    """A view of a batch: what ``build`` makes of it, or the form again with the reason (400) for a choice that
    cannot be drawn."""
    error = None
    with _plane(request).store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        c = _choices(request, s, batch_id)
        try:
            view = build(s, c)
        except UserError as e:
            error, view = request.app.state.mask(str(e)), {}
    view = {**view, "chart": Markup(view["chart"]) if view.get("chart") else None}
    response = _render(request, template, title=f"Batch {batch_id}: {name}", summary=summary, choices=c,
                       view=view, error=error, **context)
    if error:
        response.status_code = 400
    return response


@router.get("/batches/{batch_id}/search/{name}")
def search_page(request: Request, batch_id: Id, name: Annotated[str, PathParam(min_length=1, max_length=100)]
                ) -> Response:
    with _plane(request).store.session() as s:
        report = search_report.report(s, batch_id, name)
    return _render(request, "search.html", title=f"Batch {batch_id}: search {name}", report=report,
                   names=list(report.config.dimensions()),
                   parallel=Markup(search_charts.parallel_coordinates(report)),
                   curve=Markup(search_charts.best_so_far(report)) if report.best_so_far else None,
                   importance=Markup(search_charts.importance(report)) if report.importance else None)


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
                 higher_is_better: bool = False,
                 kind: Annotated[str | None, Query(max_length=200)] = None) -> Response:
    result, error = None, None
    with _plane(request).store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        c = _choices(request, s, batch_id)
        if metric and by:
            try:
                result = compare_sweep(s, batch_id, metric, by, higher_is_better, kind or None)
            except UserError as e:  # the page again, with the reason, so another choice is one click away
                error = request.app.state.mask(str(e))
        elif metric or by:
            error = "choose both a metric and a parameter to compare by"
    metrics, params, swept = list(c.metrics), c.params, c.swept
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
                   events=events, finals=without_resources(finals), resources=resources_of(finals),
                   charts=[Markup(c) for c in views.metric_charts(job, metrics)],
                   images=images, others=others, gallery_names=views.gallery_names(job))
