"""latentfarm's REST API (``/api/v1``) and, from the same app, the dashboard: what ``latentfarm serve`` runs.

Everything reads the same store as the CLI and plain SQL. Reads are open; writes (submit, cancel, retry) need
``Authorization: Bearer <LATENTFARM_API_TOKEN>``. With no token configured the server listens on 127.0.0.1 only.
Every list is paged (``limit``, ``offset``; the answer says the ``total``). Bad input is a 4xx with a one-line
``detail``: an unknown query parameter, a filter that does not parse, a spec that does not validate, a job that
does not exist. Artifacts are served with their media type and byte ranges, from a blob checked against its
stored sha256.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, response_for
from scheduler.web import api_artifacts, api_batches, api_jobs, dashboard


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error answer: ``{"detail": "<one line>"}``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(LatentfarmError)
    def farm_error(request: Request, e: LatentfarmError) -> JSONResponse:
        response = response_for(e)  # the one table: scheduler.errors
        return problem(response.http_status, str(e), {"Retry-After": "5"} if response.retry_after else None)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body", "header")]
            where = {"query": "query parameter", "path": "path parameter"}.get(str(err.get("loc", ("",))[0]), "")
            parts.append(f"{where} {'.'.join(loc)}: {err.get('msg')}".strip())
        return problem(422, "; ".join(parts) or "invalid request")


def create_app(cp: ControlPlane, token: str | None = None) -> FastAPI:
    """The API under /api/v1 (OpenAPI at /openapi.json) and the dashboard at /. ``token``: writes need it."""
    app = FastAPI(title="latentfarm", version=version("latentfarm"), docs_url=None, redoc_url=None,
                  description=__doc__)
    app.state.plane = cp
    app.state.token = token or None
    app.state.verified = api_artifacts.Verified()
    _install_errors(app)
    for module in (api_batches, api_jobs, api_artifacts):
        app.include_router(module.router)
    dashboard.install(app)
    return app
