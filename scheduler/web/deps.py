"""What every route of the API depends on: the control plane, the bearer token for writes, a check that every
query parameter is one the route takes, and the types of its path and query parameters."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.control import ControlPlane
from storage.queries import MAX_ID

Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many items.")]
Name = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


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
