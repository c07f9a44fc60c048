"""The dashboard's sign-in: with ``LATENTFARM_API_TOKEN`` set, a browser gives the token once on ``/login`` and
gets a session cookie; every page and the API (which the pages' script polls) then accept the cookie.

The cookie holds ``guard.session_value(token)`` (an HMAC keyed by the token), never the token. It is HttpOnly
(no script reads it), SameSite=Strict (no other site's page sends it), Path=/, Secure when the request came over
https, and lasts as long as the browser session. ``next`` is where the user was going: a path on this server only.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse

from scheduler.web.dashboard import templates
from scheduler.web.guard import SESSION_COOKIE, Credentials, session_value

MAX_FORM = 8192  # bytes of the sign-in form's body
Next = Annotated[str, Query(alias="next", description="where to go once signed in")]

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server (not ``//host``, not a scheme, not the sign-in page), else /."""
    if (not target or not target.startswith("/") or target.startswith(("//", "/\\")) or len(target) > 2000
            or not target.isprintable() or target.split("?")[0] in ("/login", "/logout")):
        return "/"
    return target


def _form(request: Request, status: int, next_path: str, message: str | None = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"title": "Sign in", "next": next_path,
                                                              "message": message}, status_code=status)


@router.get("/login")
def login_page(request: Request, next_path: Next = "/") -> Response:
    """The sign-in form; straight on to ``next`` when there is no token or the browser is signed in."""
    token: str | None = request.app.state.token
    target = safe_next(next_path)
    if token is None or Credentials.of(request.headers).check(token)[1]:
        return RedirectResponse(target, status_code=303)
    return _form(request, 200, target)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token of the form (``token``, ``next``); right: the cookie, and on to ``next``; wrong: the form
    again, saying so (401)."""
    token: str | None = request.app.state.token
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise HTTPException(413, f"the sign-in form is over {MAX_FORM} bytes")
    fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=10)
    target = safe_next((fields.get("next") or ["/"])[0])
    if token is None:
        return RedirectResponse(target, status_code=303)
    given = (fields.get("token") or [""])[0].strip()
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        return _form(request, 401, target, "wrong token" if given else "enter the token")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Forget the cookie in this browser."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


def install(app: FastAPI) -> None:
    """Add ``/login`` and ``/logout`` to ``app``."""
    app.include_router(router)
