"""The web dashboard: server-rendered pages over the same store as the CLI and the API.

``/`` lists the batches, ``/batches/{id}`` one batch and its jobs, ``/jobs/{id}`` one job with its metric curves
(SVG drawn here, by ``scheduler.charts``) and its images, ``/batches/{id}/compare`` a sweep's final metric per
parameter value. The pages work without JavaScript; ``static/dashboard.js`` only refreshes the live numbers from
the JSON API. No page loads anything from another origin. A missing batch or job is a 404 page, a bad query a
400 page, never a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.orm import Session

from scheduler import charts
from scheduler.errors import UserError
from scheduler.filters import MAX_ID, final_metrics
from scheduler.filters import compare as compare_sweep
from scheduler.service import ControlPlane
from storage import queries
from storage.errors import DatabaseUnavailable, NotFound
from storage.records import Artifact, Job, Metric
from storage.status import JobStatus

HERE = Path(__file__).resolve().parent
BATCHES_PER_PAGE = 20
JOBS_PER_PAGE = 200
GALLERY_JOBS = 24  # sample jobs whose images the batch page shows side by side
STATUSES = [s.value for s in JobStatus]
ACTIVE = ("pending", "queued", "running")

Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
templates = Jinja2Templates(directory=str(HERE / "templates"))


# ---- formatting, as template filters -----------------------------------------------------------------------------

def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def when(t: datetime | None) -> str:
    """A stored time (UTC; SQLite keeps it without a zone) to the second."""
    return _utc(t).strftime("%Y-%m-%d %H:%M:%S") if t else "—"


def seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def run_time(job: Job) -> float | None:
    """Seconds from start to finish, or so far while running."""
    if job.started_at is None:
        return None
    end = _utc(job.finished_at) if job.finished_at else datetime.now(timezone.utc)
    return max(0.0, (end - _utc(job.started_at)).total_seconds())


def number(v: Any) -> str:
    return charts.format_number(float(v)) if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def size(n: int) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def value(v: Any) -> str:
    """A parameter's value as written in a spec: text as is, the rest as JSON."""
    return v if isinstance(v, str) else json.dumps(v)


templates.env.filters.update(when=when, seconds=seconds, number=number, size=size, value=value)
templates.env.globals.update(STATUSES=STATUSES, ACTIVE=ACTIVE, run_time=run_time)


# ---- errors as pages ---------------------------------------------------------------------------------------------

def _error(request: Request, status: int, message: str) -> Response:
    titles = {400: "Bad request", 404: "Not found", 503: "Database unavailable"}
    return templates.TemplateResponse(request, "error.html", {"title": titles.get(status, "Error"),
                                                              "status": status, "message": message},
                                      status_code=status)


def _invalid(e: RequestValidationError) -> tuple[int, str]:
    """A bad path parameter names nothing that exists (404: ``/jobs/abc``); a bad query parameter is a 400."""
    parts = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        if loc[:1] == ["path"] and len(loc) > 1:
            return 404, f"no {loc[1].removesuffix('_id')} {err.get('input')!r}"
        parts.append(f"query parameter {'.'.join(loc[1:])}: {err.get('msg')}")
    return 400, "; ".join(parts) or "invalid request"


class _PageRoute(APIRoute):
    """A dashboard route: what the API answers as JSON problems, a page answers as an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except NotFound as e:
                return _error(request, 404, str(e))
            except UserError as e:
                return _error(request, 400, str(e))
            except RequestValidationError as e:
                return _error(request, *_invalid(e))
            except DatabaseUnavailable as e:
                response = _error(request, 503, str(e))
                response.headers["Retry-After"] = "5"
                return response

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


# ---- pages -------------------------------------------------------------------------------------------------------

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
        samplers = queries.list_jobs(s, batch_id=batch_id, kind="sample", limit=GALLERY_JOBS)
        ids = sorted({j.id for j in shown} | {j.id for j in samplers})
        finals = final_metrics(queries.job_metrics(s, ids)) if ids else {}
        gallery = _gallery(s, samplers, finals)
    metrics, params, swept = _compare_choices(shown, finals)
    return _render(request, "batch.html", title=f"Batch {batch_id}: {summary.batch.name}", summary=summary,
                   jobs=shown, total_jobs=summary.total, finals=finals, page=page,
                   pages=max(1, math.ceil(summary.total / JOBS_PER_PAGE)), limit=JOBS_PER_PAGE, offset=offset,
                   metrics=metrics, params=params, swept=swept, default_metric=_default_metric(metrics),
                   default_by=params[0] if params else None, gallery=gallery)


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
                error = str(e)
        elif metric or by:
            error = "choose both a metric and a parameter to compare by"
    metrics, params, swept = _compare_choices(jobs, finals)
    title = f"Batch {batch_id}: {metric} by {by}" if result else f"Batch {batch_id}: compare"
    return templates.TemplateResponse(request, "compare.html", {
        "title": title, "summary": summary, "result": result, "error": error,
        "chart": Markup(_compare_chart(result)) if result else None, "metrics": metrics, "params": params,
        "swept": swept, "default_metric": metric or _default_metric(metrics),
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
                   events=events, finals=finals, charts=[Markup(c) for c in metric_charts(job, metrics)],
                   images=images, others=others)


# ---- what the pages show -----------------------------------------------------------------------------------------

def _group(key: str) -> str:
    """Curves drawn together: ``loss`` with ``val_loss``, ``train_accuracy`` with ``test_accuracy``."""
    for prefix in ("val_", "train_", "test_"):
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix):]
    return key


def metric_charts(job: Job, metrics: Iterable[Metric]) -> list[str]:
    """One SVG chart per group of metrics recorded at steps >= 1 (epochs; the k of a cluster sweep)."""
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for m in metrics:
        if m.step >= 1:
            groups.setdefault(_group(m.key), {}).setdefault(m.key, []).append((float(m.step), m.value))
    x_label = {"train": "epoch", "cluster": "k"}.get(job.kind, "step")
    out = []
    for name in sorted(groups):
        series = dict(sorted(groups[name].items(), key=lambda kv: (kv[0] != name, kv[0])))
        steps = sorted({x for points in series.values() for x, _ in points})
        # steps are whole numbers: label the steps themselves, or whole round values when there are many
        ticks = steps if len(steps) <= 12 else [t for t in charts.nice_ticks(steps[0], steps[-1]) if t == int(t)]
        out.append(charts.line_chart(series, x_label, name, f"{name} per {x_label}", x_ticks=ticks))
    return out


def _gallery(s: Session, jobs: list[Job], finals: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """The image artifacts of a batch's sample jobs, each with its job's sampler and scores."""
    by_job: dict[int, list[Artifact]] = {}
    for a in queries.artifacts_of(s, [j.id for j in jobs]):
        if a.media_type.startswith("image/"):
            by_job.setdefault(a.job_id, []).append(a)
    return [{"job": j, "sampler": j.params.get("sampler"), "images": by_job[j.id], "scores": finals.get(j.id, {})}
            for j in jobs if j.id in by_job]


def _compare_choices(jobs: list[Job], finals: dict[int, dict[str, float]]
                     ) -> tuple[list[str], list[str], set[str]]:
    """The metrics and parameters a comparison can use. Parameters that take more than one value among jobs of
    the same kind (swept) come first: a train's batch_size differing from an encode's is no sweep."""
    metrics = sorted({k for values in finals.values() for k in values})
    seen: dict[tuple[str, str], set[str]] = {}
    for j in jobs:
        for name, v in j.params.items():
            seen.setdefault((j.kind, name), set()).add(json.dumps(v, sort_keys=True))
    swept = {name for (_, name), vs in seen.items() if len(vs) > 1}
    names = {name for _, name in seen}
    return metrics, sorted(names, key=lambda n: (n not in swept, n)), swept


def _default_metric(metrics: list[str]) -> str | None:
    for preferred in ("test_loss", "val_loss", "loss", "fid_cnn", "fid_latent", "test_accuracy", "value"):
        if preferred in metrics:
            return preferred
    return metrics[0] if metrics else None


def _compare_chart(result: dict[str, Any]) -> str:
    """Best and mean per parameter value: a line over the value when every value is a number, else bars."""
    by, metric, rows = result["by"], result["metric"], result["rows"]
    keys = [r[by] for r in rows]
    title = f"{metric} by {by} ({'higher' if result['higher_is_better'] else 'lower'} is better)"
    # one job per value: best and mean are the same line, so draw it once
    shown = ("best",) if all(r["jobs"] == 1 for r in rows) else ("best", "mean")
    names = {"best": metric if len(shown) == 1 else "best", "mean": "mean"}
    if keys and all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in keys):
        series = {names[c]: [(float(r[by]), r[c]) for r in rows] for c in shown}
        log_x = min(keys) > 0 and max(keys) / min(keys) >= 8
        return charts.line_chart(series, by, metric, title, log_x=log_x, x_ticks=keys if len(keys) <= 12 else None)
    return charts.bar_chart([value(k) for k in keys], {names[c]: [r[c] for r in rows] for c in shown},
                            by, metric, title)
