"""latentfarm's REST API (``/api/v1``) and, from the same process, the dashboard: ``latentfarm serve``.

Everything reads the same store as the CLI and plain SQL. Reads are open; writes (submit, cancel, retry) need
``Authorization: Bearer <LATENTFARM_API_TOKEN>``. With no token configured the server listens on 127.0.0.1 only.
Every list is paged (``limit``, ``offset``; the answer says the ``total``). Bad input is a 4xx with a one-line
``detail``: an unknown query parameter, a filter that does not parse, a spec that does not validate, a job that
does not exist. Artifacts are served with their media type and byte ranges, from a blob checked against its
stored sha256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TextIO, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DataError, StatementError
from starlette.concurrency import run_in_threadpool

from scheduler import dispatch
from scheduler.errors import BrokerUnavailable, SpecError, UserError
from scheduler.filters import MAX_ID, JobQuery, MetricFilter, ParamFilter, compare, job_ids, parse_since
from scheduler.service import ControlPlane
from scheduler.spec import first_line, parse_spec, read_spec_text
from storage import queries
from storage.errors import ArtifactCorrupt, DatabaseUnavailable, NotFound
from storage.queries import BatchSummary
from storage.records import Artifact, Job
from storage.status import JobStatus

API = "/api/v1"
MAX_BODY = 10 * 1024 * 1024  # bytes of a submitted spec
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}

T = TypeVar("T")
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many items.")]
Name = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
Status = Literal["pending", "queued", "running", "succeeded", "failed", "cancelled"]


# ---- answers -----------------------------------------------------------------------------------------------------

class Page(BaseModel, Generic[T]):
    """A page of a list: ``items`` from ``offset``, at most ``limit`` of them, out of ``total``."""

    items: list[T]
    total: int
    limit: int
    offset: int


class BatchOut(BaseModel):
    id: int
    name: str
    status: str = Field(description="pending work: running; else succeeded, failed, cancelled or blocked")
    counts: dict[str, int] = Field(description="jobs by status")
    total: int
    progress: float = Field(description="0..1: finished jobs count 1, running jobs their own progress")
    created_at: datetime
    no_cache: bool
    spec_path: str | None
    spec: dict[str, Any] | None = Field(None, description="the spec as submitted (only on GET /batches/{id})")


class JobOut(BaseModel):
    id: int
    batch_id: int
    name: str
    kind: str
    params: dict[str, Any]
    fingerprint: str
    status: Status
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    timeout: float | None
    worker: str | None
    host: str | None
    gpu: str | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    progress: float
    error: str | None
    traceback: str | None
    cached_from: int | None
    cancel_requested: bool
    created_at: datetime
    queued_at: datetime | None
    not_before: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    metrics: dict[str, float] = Field(default_factory=dict,
                                      description="final values of the metrics filtered or sorted on")
    parents: list[int] | None = Field(None, description="the jobs it needs (only on GET /jobs/{id})")


class EventOut(BaseModel):
    job_id: int
    time: datetime
    kind: str
    status: str | None
    message: str | None
    worker: str | None
    attempt: int | None


class MetricOut(BaseModel):
    job_id: int
    key: str
    step: int = Field(description="the epoch, the k of a sweep, or 0 for a final value")
    value: float
    time: datetime


class ArtifactOut(BaseModel):
    id: int
    job_id: int
    name: str
    media_type: str
    bytes: int
    sha256: str
    meta: dict[str, Any]
    uri: str = Field(description="the blob's path inside the artifact store")
    created_at: datetime
    url: str = Field(description="where to download it")


class Submitted(BaseModel):
    batch: int
    jobs: dict[str, int]
    cached: list[int]
    queued: list[int]
    url: str


class Cancelled(BaseModel):
    cancelled: list[int] = Field(description="jobs cancelled now")
    flagged: list[int] = Field(description="running jobs that stop at their next check")


class Retried(BaseModel):
    job: int
    queued: list[int] = Field(description="jobs queued now (empty: it waits for its parents)")


class CompareRow(BaseModel):
    value: Any = Field(description="the parameter's value")
    jobs: int
    best: float
    mean: float
    worst: float
    best_job: int
    best_name: str


class Comparison(BaseModel):
    batch: int
    metric: str
    by: str
    higher_is_better: bool
    rows: list[CompareRow]
    best: int = Field(description="index of the best row")


class Health(BaseModel):
    status: str
    version: str
    embedded: bool
    database: str
    writes_need_token: bool


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "bad input: an unknown or malformed filter"},
    404: {"model": Problem, "description": "no such batch, job or artifact"},
    422: {"model": Problem, "description": "a parameter out of range or of the wrong type"},
    503: {"model": Problem, "description": "the database or broker cannot be reached"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS, 401: {"model": Problem, "description": "no or wrong bearer token"}}


def _batch_out(summary: BatchSummary, with_spec: bool = False) -> dict[str, Any]:
    b = summary.batch
    return {"id": b.id, "name": b.name, "status": summary.status, "counts": summary.counts, "total": summary.total,
            "progress": summary.progress, "created_at": b.created_at, "no_cache": b.no_cache,
            "spec_path": b.spec_path, "spec": b.spec if with_spec else None}


def _job_out(job: Job, **extra: Any) -> dict[str, Any]:
    return {**vars(job), "status": job.status.value, **extra}


def _artifact_out(a: Artifact) -> dict[str, Any]:
    return {**vars(a), "url": f"{API}/artifacts/{a.id}/content"}


def _page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": limit, "offset": offset}


# ---- plumbing ----------------------------------------------------------------------------------------------------

def plane(request: Request) -> ControlPlane:
    return request.app.state.plane  # type: ignore[no-any-return]


Plane = Annotated[ControlPlane, Depends(plane)]


_bearer = HTTPBearer(auto_error=False, description="LATENTFARM_API_TOKEN, needed for writes when it is set")


def writer(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Writes need the bearer token when one is configured (the server then may listen beyond this machine)."""
    token: str | None = request.app.state.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "this needs a bearer token: send 'Authorization: Bearer <LATENTFARM_API_TOKEN>'"
                            if not given else "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


_known: dict[int, frozenset[str]] = {}


def known_query(request: Request) -> None:
    """An unknown query parameter is a mistake (a misspelt filter would silently match everything): 400."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _known.get(id(route))
    if known is None:
        known = _known[id(route)] = frozenset(_query_names(route.dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise HTTPException(400, f"unknown query parameter {unknown[0]!r}: this endpoint takes {takes}")


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


class _Verified:
    """Blobs already checked against their sha256, by path, inode, size, mtime and ctime: a blob is hashed once,
    not per range request. (Bits rotting in place change none of those: a restart checks every blob again.)"""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[tuple[str, int, int, int, int, str], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def check(self, path: Path, sha256: str, what: str) -> None:
        try:
            st = path.stat()
        except FileNotFoundError as e:
            raise NotFound(f"{what}: its blob is missing from the artifact store") from e
        # a blob replaced by another file (even with the same size and mtime) has another inode or ctime
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha256:
            raise ArtifactCorrupt(f"{what}: its blob no longer matches its sha256 {sha256}; not served")
        with self._lock:
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    def not_found(request: Request, e: NotFound) -> JSONResponse:
        return _problem(404, str(e))

    @app.exception_handler(UserError)
    def user_error(request: Request, e: UserError) -> JSONResponse:
        return _problem(422 if isinstance(e, SpecError) else 400, str(e))

    @app.exception_handler(DatabaseUnavailable)
    def db_down(request: Request, e: DatabaseUnavailable) -> JSONResponse:
        return _problem(503, str(e), {"Retry-After": "5"})

    @app.exception_handler(BrokerUnavailable)
    def broker_down(request: Request, e: BrokerUnavailable) -> JSONResponse:
        return _problem(503, str(e), {"Retry-After": "5"})

    @app.exception_handler(ArtifactCorrupt)
    def corrupt(request: Request, e: ArtifactCorrupt) -> JSONResponse:
        return _problem(500, str(e))

    @app.exception_handler(StatementError)
    def refused(request: Request, e: StatementError) -> JSONResponse:
        # A value the database cannot hold (e.g. a NUL byte on PostgreSQL) is the request's fault, not a crash.
        if isinstance(e, DataError) or isinstance(e.orig, (ValueError, OverflowError)):
            return _problem(400, f"the database refused a value of the request: {str(e.orig).splitlines()[0]}")
        raise e

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header")]
            where = {"query": "query parameter", "path": "path parameter"}.get(str(err.get("loc", ("",))[0]), "")
            parts.append(f"{where} {'.'.join(loc)}: {err.get('msg')}".strip())
        return _problem(422, "; ".join(parts) or "invalid request")


# ---- the API -----------------------------------------------------------------------------------------------------

router = APIRouter(prefix=API, dependencies=[Depends(known_query)])


@router.get("/health", response_model=Health, tags=["service"])
def health(request: Request, cp: Plane) -> dict[str, Any]:
    """Whether the server can read the database."""
    with cp.store.session() as s:
        s.execute(text("SELECT 1"))
    from importlib.metadata import version

    return {"status": "ok", "version": version("latentfarm"), "embedded": cp.settings.embedded,
            "database": cp.store.engine.dialect.name, "writes_need_token": request.app.state.token is not None}


@router.get("/batches", response_model=Page[BatchOut], responses=ERRORS, tags=["batches"])
def list_batches(cp: Plane, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """Batches, the most recent first, with their jobs counted by status and their progress."""
    with cp.store.session() as s:
        found = queries.list_batches(s, limit, offset)
        total = queries.count_batches(s)
    return _page([_batch_out(b) for b in found], total, limit, offset)


@router.get("/batches/{batch_id}", response_model=BatchOut, responses=ERRORS, tags=["batches"])
def get_batch(batch_id: Id, cp: Plane) -> dict[str, Any]:
    """A batch with its spec, its jobs counted by status and its progress."""
    with cp.store.session() as s:
        return _batch_out(queries.batch_summary(s, batch_id), with_spec=True)


SPEC_BODY = {
    "required": True,
    "description": "A batch spec, as in a spec file: YAML (application/yaml) or JSON (application/json). "
                   "Relative paths in it are taken from the server's working directory.",
    "content": {
        "application/json": {"schema": {"type": "object", "required": ["batch", "jobs"], "properties": {
            "batch": {"type": "string"}, "defaults": {"type": "object"},
            "jobs": {"type": "array", "items": {"type": "object", "required": ["name", "kind"], "properties": {
                "name": {"type": "string"}, "kind": {"type": "string"}, "params": {"type": "object"},
                "needs": {"type": "array", "items": {"type": "string"}}}}}}},
            "example": {"batch": "example", "jobs": [
                {"name": "a", "kind": "noop", "sweep": {"value": [1, 2]}},
                {"name": "b", "kind": "noop", "needs": ["a"]}]}},
        "application/yaml": {"schema": {"type": "string"},
                             "example": "batch: example\njobs:\n  - {name: a, kind: noop, params: {value: 3}}\n"},
    },
}


@router.post("/batches", status_code=201, response_model=Submitted, responses={
    **WRITE_ERRORS, 413: {"model": Problem}, 415: {"model": Problem}}, dependencies=[Depends(writer)],
    openapi_extra={"requestBody": SPEC_BODY}, tags=["batches"])
async def submit_batch(request: Request, response: Response, cp: Plane,
                       no_cache: Annotated[bool, Query(description="run every job, even cached ones")] = False,
                       ) -> dict[str, Any]:
    """Submit a batch: validated whole before anything is written; its ready jobs are queued at once."""
    body = bytearray()
    async for chunk in request.stream():  # read no more than the limit, whatever the client sends
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the spec is over {MAX_BODY} bytes, the most accepted")
    media = request.headers.get("content-type", "application/yaml").split(";")[0].strip().lower()
    if media != "application/json" and media not in YAML_TYPES:
        raise HTTPException(415, f"send the spec as application/json or application/yaml, not {media}")
    try:
        source = bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("request body", f"not UTF-8 text (byte {e.start})") from e
    if not source.strip():
        raise SpecError("request body", "empty: send a batch spec")
    if media == "application/json":
        try:
            raw = json.loads(source)
        except (ValueError, RecursionError) as e:
            raise SpecError("request body", f"malformed JSON: {first_line(e)}") from e
    else:
        raw = read_spec_text(source, "request body")

    def run() -> dispatch.SubmitResult:
        try:  # validating and planning read the data files and images it names (planning hashes them)
            return cp.submit(parse_spec(raw, "request body", Path.cwd(), cp.settings.data_dir), no_cache=no_cache)
        except OSError as e:  # one exists but cannot be read here (the broker's and database's errors are others)
            raise SpecError("request body", f"cannot read a file it names: {first_line(e)}") from e

    result = await run_in_threadpool(run)
    url = f"{API}/batches/{result.batch_id}"
    response.headers["Location"] = url
    return {"batch": result.batch_id, "jobs": result.job_ids, "cached": result.cached, "queued": result.queued,
            "url": url}


@router.get("/batches/{batch_id}/compare", response_model=Comparison, responses=ERRORS, tags=["batches"])
def compare_batch(batch_id: Id, cp: Plane,
                  metric: Annotated[str, Query(min_length=1, max_length=200, description="e.g. val_loss")],
                  by: Annotated[str, Query(min_length=1, max_length=200, description="a parameter, e.g. z_dim")],
                  higher_is_better: bool = False) -> dict[str, Any]:
    """The final metric of the batch's jobs per value of a parameter: best, mean and worst per value."""
    with cp.store.session() as s:
        result = compare(s, batch_id, metric, by, higher_is_better)
    result["rows"] = [{"value": r.pop(by), **r} for r in result["rows"]]
    return result


@router.post("/batches/{batch_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS,
             dependencies=[Depends(writer)], tags=["batches"])
def cancel_batch(batch_id: Id, cp: Plane) -> dict[str, list[int]]:
    """Cancel every unfinished job of the batch; running jobs stop at their next check."""
    with cp.store.session() as s:
        ids = job_ids(s, [], batch_id)
    return dispatch.cancel(cp.store, ids)


@router.get("/jobs", response_model=Page[JobOut], responses=ERRORS, tags=["jobs"])
def list_jobs(
    cp: Plane,
    batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_]{1,50}$")] = None,
    status: Status | None = None,
    since: Annotated[str | None, Query(max_length=64, description="30m, 2h, 1d or an ISO date")] = None,
    param: Annotated[list[str], Query(max_length=50, description="NAME=VALUE, e.g. z_dim=16 (repeatable)")] = [],  # noqa: B006
    where: Annotated[list[str], Query(max_length=50, description="a final metric, e.g. val_loss<0.1")] = [],  # noqa: B006
    sort: Annotated[str | None, Query(max_length=200, description="order by this final metric")] = None,
    desc: Annotated[bool, Query(description="with sort: largest first")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Jobs filtered as by ``latentfarm jobs``: batch, kind, status, since, parameter values, final metrics."""
    query = JobQuery(batch, kind, status, parse_since(since, "since"), [ParamFilter.parse(p, "param") for p in param],
                     [MetricFilter.parse(w, "where") for w in where], sort, desc)
    with cp.store.session() as s:
        found, finals, total = query.run(s, limit, offset)
    keys = set(query.keys)
    return _page([_job_out(j, metrics={k: v for k, v in finals.get(j.id, {}).items() if k in keys}) for j in found],
                 total, limit, offset)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS, tags=["jobs"])
def get_job(job_id: Id, cp: Plane) -> dict[str, Any]:
    """A job: its params, status, progress, attempts, where it ran, its error."""
    with cp.store.session() as s:
        return _job_out(queries.require_job(s, job_id), parents=queries.job_parents(s, job_id))


@router.get("/jobs/{job_id}/events", response_model=Page[EventOut], responses=ERRORS, tags=["jobs"])
def job_events(job_id: Id, cp: Plane, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """What happened to the job, oldest first: status changes, retries, cancels."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        events = queries.job_events(s, job_id)
    return _page(events[offset:offset + limit], len(events), limit, offset)


@router.get("/jobs/{job_id}/metrics", response_model=Page[MetricOut], responses=ERRORS, tags=["jobs"])
def job_metrics(job_id: Id, cp: Plane, key: Name = None, limit: Limit = 1000, offset: Offset = 0) -> dict[str, Any]:
    """The job's metric series, by key then step (an epoch, a k; 0 for final values)."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        found = queries.job_metrics(s, [job_id], key)
    return _page(found[offset:offset + limit], len(found), limit, offset)


@router.get("/metrics", response_model=Page[MetricOut], responses=ERRORS, tags=["jobs"])
def metrics(cp: Plane, job: Annotated[list[int], Query(description="a job id (repeatable)")] = [],  # noqa: B006
            batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, key: Name = None,
            limit: Limit = 1000, offset: Offset = 0) -> dict[str, Any]:
    """Metrics of several jobs (``job``, repeatable) or of a whole ``batch``, as ``latentfarm metrics``."""
    with cp.store.session() as s:
        found = queries.job_metrics(s, job_ids(s, job, batch, "job=ID, repeatable", "batch=ID"), key)
    return _page(found[offset:offset + limit], len(found), limit, offset)


@router.get("/jobs/{job_id}/artifacts", response_model=Page[ArtifactOut], responses=ERRORS, tags=["artifacts"])
def job_artifacts(job_id: Id, cp: Plane, name: Name = None,
                  type: Annotated[str | None, Query(max_length=200, description="a media type")] = None,  # noqa: A002
                  limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """The job's artifacts (metadata; ``url`` downloads one)."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        found = _keep(queries.job_artifacts(s, job_id), name, type)
    return _page([_artifact_out(a) for a in found[offset:offset + limit]], len(found), limit, offset)


@router.get("/artifacts", response_model=Page[ArtifactOut], responses=ERRORS, tags=["artifacts"])
def artifacts(cp: Plane, job: Annotated[list[int], Query(description="a job id (repeatable)")] = [],  # noqa: B006
              batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, name: Name = None,
              type: Annotated[str | None, Query(max_length=200, description="a media type")] = None,  # noqa: A002
              limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Artifacts of several jobs or of a batch, as ``latentfarm artifacts``."""
    with cp.store.session() as s:
        found = _keep(queries.artifacts_of(s, job_ids(s, job, batch, "job=ID, repeatable", "batch=ID")), name, type)
    return _page([_artifact_out(a) for a in found[offset:offset + limit]], len(found), limit, offset)


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut, responses=ERRORS, tags=["artifacts"])
def artifact(artifact_id: Id, cp: Plane) -> dict[str, Any]:
    with cp.store.session() as s:
        return _artifact_out(queries.get_artifact(s, artifact_id))


@router.get("/artifacts/{artifact_id}/content", response_class=FileResponse, tags=["artifacts"], responses={
    **ERRORS,
    200: {"description": "the artifact, with its own media type (image/png, application/json...)",
          "content": {"*/*": {}}},
    206: {"description": "the bytes asked for with Range", "content": {"*/*": {}}},
    416: {"description": "the Range asked for lies outside the artifact"},
    500: {"model": Problem, "description": "the blob no longer matches its sha256 (the store is damaged)"},
})
def artifact_content(artifact_id: Id, request: Request, cp: Plane) -> FileResponse:
    """Download an artifact: its media type, ``Range: bytes=a-b`` for a part, ``ETag`` its sha256. The blob is
    checked against its stored sha256 before any of it is served."""
    with cp.store.session() as s:
        a = queries.get_artifact(s, artifact_id)
    path = cp.store.artifacts.path_of(a.uri)
    request.app.state.verified.check(path, a.sha256, f"artifact {a.id} ({a.name} of job {a.job_id})")
    digest = base64.b64encode(bytes.fromhex(a.sha256)).decode()
    return FileResponse(path, media_type=a.media_type, filename=a.name.rsplit("/", 1)[-1],
                        content_disposition_type="inline",
                        headers={"ETag": f'"{a.sha256}"', "Repr-Digest": f"sha-256=:{digest}:",
                                 "Cache-Control": "private, max-age=3600"})


@router.post("/jobs/{job_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS,
             dependencies=[Depends(writer)], tags=["jobs"])
def cancel_job(job_id: Id, cp: Plane) -> dict[str, list[int]]:
    """Cancel the job and what depends on it; a running job stops at its next check."""
    return dispatch.cancel(cp.store, [job_id])


@router.post("/jobs/{job_id}/retry", response_model=Retried, responses={**WRITE_ERRORS, 409: {"model": Problem}},
             dependencies=[Depends(writer)], tags=["jobs"])
def retry_job(job_id: Id, cp: Plane) -> dict[str, Any]:
    """Run a failed or cancelled job again; its cancelled descendants run after it. 409 for other jobs."""
    with cp.store.session() as s:
        job = queries.require_job(s, job_id)
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise HTTPException(409, f"job {job_id} is {job.status.value}: only failed or cancelled jobs can be retried")
    try:
        queued = dispatch.retry(cp.store, cp.app, job_id)
    except UserError as e:  # it changed status in between
        raise HTTPException(409, str(e)) from e
    return {"job": job_id, "queued": queued}


def _keep(found: list[Artifact], name: str | None, media_type: str | None) -> list[Artifact]:
    return [a for a in found if (name is None or a.name == name) and (media_type is None or a.media_type == media_type)]


# ---- the app and the server --------------------------------------------------------------------------------------

def create_app(cp: ControlPlane, token: str | None = None) -> FastAPI:
    """The API under /api/v1 (OpenAPI at /openapi.json) and the dashboard at /. ``token``: writes need it."""
    from importlib.metadata import version

    app = FastAPI(title="latentfarm", version=version("latentfarm"), docs_url=None, redoc_url=None,
                  description=__doc__)
    app.state.plane = cp
    app.state.token = token or None
    app.state.verified = _Verified()
    _install_errors(app)
    app.include_router(router)
    from scheduler import dashboard

    dashboard.install(app)
    return app


def serve(cp: ControlPlane, host: str | None, port: int, token: str | None, out: TextIO = sys.stderr) -> None:
    """Run the API and dashboard until interrupted. Without a token only this machine may connect. On the embedded
    default the server also runs a worker, so batches submitted to it run."""
    import uvicorn

    if token is None:
        if host is not None and host not in LOOPBACK:
            raise UserError(f"LATENTFARM_API_TOKEN is not set: refusing to listen on {host}. Set a token to serve "
                            "other machines, or leave --host out to listen on 127.0.0.1")
        host = "127.0.0.1"
        print("no LATENTFARM_API_TOKEN set: listening on 127.0.0.1 only; anyone on this machine may submit, cancel "
              "and retry", file=out)
    else:
        host = host or "0.0.0.0"
        print("writes need 'Authorization: Bearer <LATENTFARM_API_TOKEN>'", file=out)
    shown = f"[{host}]" if ":" in host else host
    print(f"latentfarm serving {cp.store.engine.url.render_as_string(hide_password=True)} on http://{shown}:{port}/ "
          f"(API: /api/v1, OpenAPI: /openapi.json)", file=out, flush=True)
    app = create_app(cp, token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    if not cp.settings.embedded:
        server.run()
        return
    from scheduler.embedded import in_process_worker

    every = min(max(cp.settings.lease_seconds / 6, 0.5), 10.0)
    print(f"embedded default: batches submitted here run in this process; every {every:g} s it also picks up "
          "the jobs an interrupted `latentfarm submit` left running or queued", file=out, flush=True)
    with in_process_worker(cp.app), _reaping(cp, every, out):
        server.run()


@contextmanager
def _reaping(cp: ControlPlane, every: float, out: TextIO) -> Iterator[None]:
    """The reaper in a thread, for the embedded default, where no `latentfarm scheduler` runs: a job whose
    process died (its lease ran out) is requeued onto this process's broker, and a queued job whose message was
    in another process's memory is sent again, so this process's worker runs them."""
    from scheduler.reaper import reap

    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                report = reap(cp.store, cp.app, cp.settings)
                if report:
                    print(f"{datetime.now():%H:%M:%S} reaped: {report.describe()}", file=out, flush=True)
            except Exception as e:  # the database is busy or away: the next pass tries again
                print(f"{datetime.now():%H:%M:%S} reaper: {e}", file=out, flush=True)
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name="latentfarm-reaper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def api_token(env: dict[str, str] | None = None) -> str | None:
    """LATENTFARM_API_TOKEN, or None when unset or empty."""
    value = (os.environ if env is None else env).get("LATENTFARM_API_TOKEN", "").strip()
    return value or None

