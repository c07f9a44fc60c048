"""What every route of the API depends on: the control plane, the token (every route, when one is set), the body's
media type for writes, a check that every query parameter is one the route takes, and the types of its path and
query parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.control import ControlPlane
from scheduler.web.guard import Credentials
from storage.queries import MAX_ID

Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many items.")]
Name = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


def plane(request: Request) -> ControlPlane:
    return request.app.state.plane  # type: ignore[no-any-return]


Plane = Annotated[ControlPlane, Depends(plane)]


def masker(request: Request) -> Callable[[str], str]:
    """The app's ``mask``: credentials (the token, the URLs' passwords) in a text replaced by ``***``."""
    return request.app.state.mask  # type: ignore[no-any-return]


Mask = Annotated[Callable[[str], str], Depends(masker)]

_bearer = HTTPBearer(auto_error=False, description="LATENTFARM_API_TOKEN: when it is set, every route needs it "
                     "(or the dashboard's session cookie)")
WRITE_TYPES = frozenset({"application/json", "application/yaml", "application/x-yaml"})


def authorized(request: Request,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """With a token configured, every route needs it. ``guard.Guard`` checks it before any route runs (for every
    path, with the session cookie too); this dependency puts the requirement into the OpenAPI schema and checks
    it again, so a route reached some other way is not left open."""
    token: str | None = request.app.state.token
    if token is None:
        return
    given = Credentials.of(request.headers)
    if not any(given.check(token)):
        raise HTTPException(401, given.refusal(), headers={"WWW-Authenticate": "Bearer"})


def media_type(request: Request) -> str | None:
    """The request body's media type, lower case, without parameters; None without a Content-Type."""
    value = request.headers.get("content-type")
    return value.split(";")[0].strip().lower() if value is not None else None


def writer(request: Request) -> None:
    """A write without a body (cancel, retry) takes none, or a JSON or YAML one: what a plain HTML form sends (form
    data, text/plain) is refused with a 415, whatever the origin check found."""
    media = media_type(request)
    if media is not None and media not in WRITE_TYPES:
        raise HTTPException(415, f"send no body, or application/json or application/yaml, not {media!r}")


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
