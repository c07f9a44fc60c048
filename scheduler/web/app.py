"""latentfarm's REST API (``/api/v1``) and, from the same app, the dashboard: what ``latentfarm serve`` runs.

Everything reads the same store as the CLI and plain SQL. With ``LATENTFARM_API_TOKEN`` set every route needs it
(``Authorization: Bearer <token>``, or the dashboard's session cookie from ``/login``); with none the server
listens on 127.0.0.1 only and answers only loopback host names. Writes from pages of another origin are refused,
and a spec is parsed in a separate process, bounded in time and memory. Every list is paged (``limit``,
``offset``; the answer says the ``total``). Bad input is a 4xx with a one-line ``detail``, credentials masked: an
unknown query parameter, a filter that does not parse, a spec that does not validate, a job that does not exist.
Artifacts are served with their media type and byte ranges, from a blob checked against its stored sha256.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, mask_secrets, response_for
from scheduler.web import api_artifacts, api_batches, api_jobs, api_search, dashboard, login
from scheduler.web.guard import Guard, allowed_hosts, problem
from scheduler.web.spec_parser import SpecParser

__all__ = ["create_app", "problem"]


def masker(cp: ControlPlane | None, token: str | None) -> Callable[[str], str]:
    """What hides credentials in every answer: the control plane's settings' ``mask`` (its token and its URLs'
    passwords) and the token the app was given. Without a control plane (an app that only serves its schema),
    the passwords of URLs in the text."""
    extra = (token,) if token else ()
    if cp is None:
        return lambda text: mask_secrets(text, extra)
    settings = cp.settings
    return lambda text: mask_secrets(settings.mask(text), extra)


def _install_errors(app: FastAPI, mask: Callable[[str], str]) -> None:
    @app.exception_handler(LatentfarmError)
    def farm_error(request: Request, e: LatentfarmError) -> JSONResponse:
        response = response_for(e)  # the one table: scheduler.errors
        return problem(response.http_status, mask(str(e)), {"Retry-After": "5"} if response.retry_after else None)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return problem(e.status_code, mask(str(e.detail)), dict(e.headers) if e.headers else None)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header")]
            where = {"query": "query parameter", "path": "path parameter"}.get(str(err.get("loc", ("",))[0]), "")
            parts.append(f"{where} {'.'.join(loc)}: {err.get('msg')}".strip())
        return problem(422, mask("; ".join(parts) or "invalid request"))


def create_app(cp: ControlPlane, token: str | None = None, parser: SpecParser | None = None) -> FastAPI:
    """The API under /api/v1 (OpenAPI at /openapi.json) and the dashboard at /. ``token``: every route needs it.
    The host names answered are ``cp.settings.allowed_hosts`` (see ``guard.allowed_hosts`` for the default).
    ``parser``: where submitted specs are parsed (default: a pool of two processes, started when first needed)."""
    token = token or None
    specs = parser or SpecParser()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        specs.open()  # an app started again after a shutdown (each ASGI test client does) keeps its workers
        yield
        specs.close()

    app = FastAPI(title="latentfarm", version=version("latentfarm"), docs_url=None, redoc_url=None,
                  description=__doc__, lifespan=lifespan)
    app.state.plane = cp
    app.state.token = token
    app.state.mask = mask = masker(cp, token)
    app.state.parser = specs
    _install_errors(app, mask)
    for module in (api_batches, api_jobs, api_artifacts, api_search):
        app.include_router(module.router)
    dashboard.install(app)
    login.install(app)
    configured = cp.settings.allowed_hosts if cp is not None else None
    app.add_middleware(Guard, token=token, hosts=allowed_hosts(configured, token))
    return app
