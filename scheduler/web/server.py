"""``latentfarm serve``: the API and the dashboard on uvicorn; on the embedded default, with a worker and the reaper
in the same process, so batches submitted to it run and what an interrupted ``latentfarm submit`` left is picked
up."""

from __future__ import annotations

import copy
import sys
from datetime import datetime
from typing import Any, TextIO

from scheduler.control import ControlPlane
from scheduler.embedded import in_process_worker
from scheduler.errors import SecretsFilter, UserError
from scheduler.reaper import Reaper, ReapReport
from scheduler.web.app import create_app
from scheduler.web.guard import allowed_hosts

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serve(cp: ControlPlane, host: str | None, port: int, out: TextIO = sys.stderr) -> None:
    """Run the API and dashboard until interrupted. Without a token (``Settings.api_token``) only this machine may
    connect. On the embedded default the server also runs a worker, so batches submitted to it run."""
    import uvicorn

    token = cp.settings.api_token
    if token is None:
        if host is not None and host not in LOOPBACK:
            raise UserError(f"LATENTFARM_API_TOKEN is not set: refusing to listen on {host}. Set a token to serve "
                            "other machines, or leave --host out to listen on 127.0.0.1")
        host = "127.0.0.1"
        print("no LATENTFARM_API_TOKEN set: listening on 127.0.0.1 only; anyone on this machine may submit, cancel "
              "and retry", file=out)
    else:
        host = host or "0.0.0.0"
        print("every route needs the token: send 'Authorization: Bearer <LATENTFARM_API_TOKEN>', or sign in at /login",
              file=out)
    shown = f"[{host}]" if ":" in host else host
    print(f"latentfarm serving {cp.store.engine.url.render_as_string(hide_password=True)} on http://{shown}:{port}/ "
          f"(API: /api/v1, OpenAPI: /openapi.json)", file=out, flush=True)
    hosts = allowed_hosts(cp.settings.allowed_hosts, token)
    print("answering the host names " + (", ".join(sorted(hosts)) if hosts is not None else "any")
          + " (LATENTFARM_ALLOWED_HOSTS)", file=out)
    app = create_app(cp, token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           log_config=log_config(cp.settings.secrets)))
    if not cp.settings.embedded:
        server.run()
        return

    def on_pass(report: ReapReport | None, error: Exception | None) -> None:
        if report or error:
            what = f"reaped: {report.describe()}" if report else f"reaper: {error}"
            print(f"{datetime.now():%H:%M:%S} {what}", file=out, flush=True)

    # The reaper in a thread: no `latentfarm scheduler` runs on the embedded default. A job whose process died (its
    # lease ran out) is requeued onto this process's broker, and a queued job whose message was in another
    # process's memory is sent again, so this process's worker runs them.
    reaper = Reaper(cp.store, cp.app, cp.settings, on_pass)
    print(f"embedded default: batches submitted here run in this process; every {reaper.every:g} s it also picks "
          "up the jobs an interrupted `latentfarm submit` left running or queued", file=out, flush=True)
    with in_process_worker(cp.app), reaper.in_thread():
        server.run()


def log_config(secrets: tuple[str, ...]) -> dict[str, Any]:
    """uvicorn's logging set-up, with passwords and the token masked in its error log (tracebacks included)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["secrets"] = {"()": SecretsFilter, "secrets": secrets}
    config["handlers"]["default"]["filters"] = ["secrets"]
    return config
