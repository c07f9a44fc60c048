"""The API's artifact routes: metadata (of a job, of several jobs or a batch, one) and downloads, served with
their media type, byte ranges and ETag from a blob checked against its sha256. On a bucket, a download is served
from the server's read cache (the blob is fetched into it once), so ranges and ETag work the same."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from scheduler.filters import job_ids
from scheduler.web.deps import Id, Limit, Name, Offset, Plane, authorized, known_query
from scheduler.web.schemas import API, ERRORS, ArtifactOut, Page, Problem, artifact_out, page
from storage import queries
from storage.queries import MAX_ID
from storage.records import Artifact

# An artifact opened on its own (an SVG, an HTML report a job wrote) is an inert document: no script, no framing.
ARTIFACT_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"

router = APIRouter(prefix=API, dependencies=[Depends(authorized), Depends(known_query)])


@router.get("/jobs/{job_id}/artifacts", response_model=Page[ArtifactOut], responses=ERRORS, tags=["artifacts"])
def job_artifacts(job_id: Id, cp: Plane, name: Name = None,
                  type: Annotated[str | None, Query(max_length=200, description="a media type")] = None,  # noqa: A002
                  limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """The job's artifacts (metadata; ``url`` downloads one)."""
    with cp.store.session() as s:
        queries.require_job(s, job_id)
        found = _keep(queries.job_artifacts(s, job_id), name, type)
    return page([artifact_out(a) for a in found[offset:offset + limit]], len(found), limit, offset)


@router.get("/artifacts", response_model=Page[ArtifactOut], responses=ERRORS, tags=["artifacts"])
def artifacts(cp: Plane, job: Annotated[list[int], Query(description="a job id (repeatable)")] = [],  # noqa: B006
              batch: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None, name: Name = None,
              type: Annotated[str | None, Query(max_length=200, description="a media type")] = None,  # noqa: A002
              limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Artifacts of several jobs or of a batch, as ``latentfarm artifacts``."""
    with cp.store.session() as s:
        found = _keep(queries.artifacts_of(s, job_ids(s, job, batch, "job=ID, repeatable", "batch=ID")), name, type)
    return page([artifact_out(a) for a in found[offset:offset + limit]], len(found), limit, offset)


@router.get("/artifacts/{artifact_id}", response_model=ArtifactOut, responses=ERRORS, tags=["artifacts"])
def artifact(artifact_id: Id, cp: Plane) -> dict[str, Any]:
    with cp.store.session() as s:
        return artifact_out(queries.get_artifact(s, artifact_id))


@router.get("/artifacts/{artifact_id}/content", response_class=FileResponse, tags=["artifacts"], responses={
    **ERRORS,
    200: {"description": "the artifact, with its own media type (image/png, application/json...)",
          "content": {"*/*": {}}},
    206: {"description": "the bytes asked for with Range", "content": {"*/*": {}}},
    416: {"description": "the Range asked for lies outside the artifact"},
    500: {"model": Problem, "description": "the blob no longer matches its sha256 (the store is damaged)"},
})
def artifact_content(artifact_id: Id, cp: Plane) -> FileResponse:
    """Download an artifact: its media type, ``Range: bytes=a-b`` for a part, ``ETag`` its sha256. The blob is
    checked against its stored sha256 before any of it is served (on a bucket: fetched into this host's cache)."""
    with cp.store.session() as s:
        a = queries.get_artifact(s, artifact_id)
    path = cp.store.artifacts.verified_path(a.uri, a.sha256, f"artifact {a.id} ({a.name} of job {a.job_id})")
    digest = base64.b64encode(bytes.fromhex(a.sha256)).decode()
    return FileResponse(path, media_type=a.media_type, filename=a.name.rsplit("/", 1)[-1],
                        content_disposition_type="inline",
                        headers={"ETag": f'"{a.sha256}"', "Repr-Digest": f"sha-256=:{digest}:",
                                 "Cache-Control": "private, max-age=3600", "Content-Security-Policy": ARTIFACT_CSP})


def _keep(found: list[Artifact], name: str | None, media_type: str | None) -> list[Artifact]:
    return [a for a in found if (name is None or a.name == name) and (media_type is None or a.media_type == media_type)]
