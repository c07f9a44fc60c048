"""The API's artifact routes: metadata (of a job, of several jobs or a batch, one) and downloads, served with
their media type, byte ranges and ETag from a blob checked against its sha256."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from scheduler.errors import ArtifactCorrupt, NotFound
from scheduler.filters import job_ids
from scheduler.web.deps import Id, Limit, Name, Offset, Plane, known_query
from scheduler.web.schemas import API, ERRORS, ArtifactOut, Page, Problem, artifact_out, page
from storage import queries
from storage.queries import MAX_ID
from storage.records import Artifact

router = APIRouter(prefix=API, dependencies=[Depends(known_query)])


class Verified:
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


def _keep(found: list[Artifact], name: str | None, media_type: str | None) -> list[Artifact]:
    return [a for a in found if (name is None or a.name == name) and (media_type is None or a.media_type == media_type)]
