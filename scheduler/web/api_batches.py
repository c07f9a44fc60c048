"""The API's batch routes: health, the farm's workers, batches (list, one, submit, compare, cancel)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from core.kinds import KINDS
from scheduler import lifecycle
from scheduler.control import ControlPlane
from scheduler.errors import DatabaseUnavailable, SpecError
from scheduler.filters import compare, job_ids
from scheduler.spec import first_line, parse_spec
from scheduler.web.deps import WRITE_TYPES, Id, Limit, Offset, Plane, authorized, known_query, media_type, writer
from scheduler.web.schemas import (
    API,
    ERRORS,
    WRITE_ERRORS,
    BatchOut,
    Cancelled,
    Comparison,
    Health,
    Page,
    Problem,
    Submitted,
    Workers,
    batch_out,
    page,
    workers_out,
)
from scheduler.web.spec_parser import MAX_BODY  # the bounds on a submitted spec, and their reasons
from storage import queries

# The examples use the first kind a job of which needs nothing but its defaults: a spec that runs anywhere.
_EXAMPLE_KIND = next(name for name, k in KINDS.items() if k.in_specs and not k.inputs and not k.files)

router = APIRouter(prefix=API, dependencies=[Depends(authorized), Depends(known_query)])


def ping(cp: ControlPlane) -> None:
    """One read of the database outside any transaction of the store's. On SQLite every store transaction takes
    the write lock first (BEGIN IMMEDIATE), so a ping inside one would wait for the longest write under way (a
    batch of 14,000 jobs takes seconds); a plain read in WAL mode waits for none. DatabaseUnavailable when the
    database does not answer."""
    engine = cp.store.engine
    try:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT 1 FROM batches WHERE 1 = 0")
            cursor.fetchall()
            cursor.close()
        finally:
            raw.close()  # back to the pool, rolled back
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as e:
        raise DatabaseUnavailable(f"database unavailable: {first_line(e)}") from e


@router.get("/health", response_model=Health, responses=ERRORS, tags=["service"])
def health(request: Request, cp: Plane) -> dict[str, Any]:
    """Whether the server can read the database."""
    ping(cp)
    return {"status": "ok", "version": version("latentfarm"), "embedded": cp.settings.embedded,
            "database": cp.store.engine.dialect.name, "writes_need_token": request.app.state.token is not None}


@router.get("/workers", response_model=Workers, responses=ERRORS, tags=["service"])
def list_workers(cp: Plane, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """The farm's workers by name, each with its state (running, idle, lost, stopped); per queue, its jobs queued
    and running, its live consumers and the messages waiting on the broker; and what keeps jobs waiting."""
    return workers_out(cp.farm(limit, offset), limit, offset)


@router.get("/batches", response_model=Page[BatchOut], responses=ERRORS, tags=["batches"])
def list_batches(cp: Plane, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """Batches, the most recent first, with their jobs counted by status and their progress."""
    with cp.store.session() as s:
        found = queries.list_batches(s, limit, offset)
        total = queries.count_batches(s)
    return page([batch_out(b) for b in found], total, limit, offset)


@router.get("/batches/{batch_id}", response_model=BatchOut, responses=ERRORS, tags=["batches"])
def get_batch(batch_id: Id, cp: Plane) -> dict[str, Any]:
    """A batch with its spec, its jobs counted by status, its progress, and why some may wait for good."""
    with cp.store.session() as s:
        summary = queries.batch_summary(s, batch_id)
    return batch_out(summary, with_spec=True, warnings=cp.warnings(batch_id))


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
                {"name": "a", "kind": _EXAMPLE_KIND}, {"name": "b", "kind": _EXAMPLE_KIND, "needs": ["a"]}]}},
        "application/yaml": {"schema": {"type": "string"},
                             "example": f"batch: example\njobs:\n  - {{name: a, kind: {_EXAMPLE_KIND}}}\n"},
    },
}


@router.post("/batches", status_code=201, response_model=Submitted, responses={
    **WRITE_ERRORS, 413: {"model": Problem}},
    openapi_extra={"requestBody": SPEC_BODY}, tags=["batches"])
async def submit_batch(request: Request, response: Response, cp: Plane,
                       no_cache: Annotated[bool, Query(description="run every job, even cached ones")] = False,
                       ) -> dict[str, Any]:
    """Submit a batch: validated whole before anything is written; its ready jobs are queued at once. The body
    (at most 1 MiB) is parsed in a separate process, bounded in time and memory (``spec_parser``)."""
    media = media_type(request)
    if media is None or media not in WRITE_TYPES:  # text/plain and form data are what a page of another site can send
        raise HTTPException(415, "send the spec as application/json or application/yaml, not "
                                 + (media or "without a Content-Type"))
    body = bytearray()
    async for chunk in request.stream():  # read no more than the limit, whatever the client sends
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the spec is over {MAX_BODY} bytes, the most accepted")
    try:
        source = bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("request body", f"not UTF-8 text (byte {e.start})") from e
    if not source.strip():
        raise SpecError("request body", "empty: send a batch spec")
    raw = await request.app.state.parser.parse(source, media, "request body")

    def run() -> lifecycle.SubmitResult:
        try:  # validating and planning read the data files and images it names (planning hashes them); a spec sent
            # over the network names files in the data directory only, never the server's working directory
            spec = parse_spec(raw, "request body", cp.settings.data_dir, cp.settings.data_dir, cp.settings.job_memory)
            return cp.submit(spec, no_cache=no_cache)
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
                  higher_is_better: bool = False,
                  kind: Annotated[str | None, Query(max_length=200, description="compare jobs of this kind only")]
                  = None) -> dict[str, Any]:
    """The final metric of the batch's jobs (of one kind) per value of a parameter, their own or inherited from the
    jobs they need: best, mean and worst per value."""
    with cp.store.session() as s:
        result = compare(s, batch_id, metric, by, higher_is_better, kind)
    result["rows"] = [{"value": r.pop(by), **r} for r in result["rows"]]
    return result


@router.post("/batches/{batch_id}/cancel", response_model=Cancelled, responses=WRITE_ERRORS,
             dependencies=[Depends(writer)], tags=["batches"])
def cancel_batch(batch_id: Id, cp: Plane) -> dict[str, list[int]]:
    """Cancel every unfinished job of the batch; running jobs stop at their next check."""
    with cp.store.session() as s:
        ids = job_ids(s, [], batch_id)
    return lifecycle.cancel(cp.store, ids)
