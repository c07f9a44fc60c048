"""What every command shares: errors as one line and an exit code, opening the control plane, the schema check."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, UserError, mask_secrets, response_for
from scheduler.settings import Settings, SettingsError
from storage import migrate

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    """Turn latentfarm's errors into one line on stderr and the exit code of ``scheduler.errors``' table: no
    traceback for what the user can fix or for a service that is away."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatentfarmError as e:
            for line in _masked(str(e)).splitlines() or [""]:  # several errors of a spec: one line each
                click.echo(f"error: {line}", err=True)
            raise click.exceptions.Exit(response_for(e).exit_code) from e

    return wrapper  # type: ignore[return-value]


def _masked(text: str) -> str:
    """``text`` without the farm's secrets (passwords in URLs, the API token)."""
    try:
        secrets = Settings.from_env().secrets
    except SettingsError:
        secrets = ()
    return mask_secrets(text, secrets)


def open_plane() -> ControlPlane:
    """The control plane of the environment's settings; on the embedded default, it says which jobs it queued
    again because the process that ran them is gone."""
    cp = ControlPlane.open()
    if cp.recovered:
        click.echo(f"queued again {len(cp.recovered)} job(s) an interrupted run left running "
                   f"(job ids {', '.join(map(str, cp.recovered))})", err=True)
    return cp


def queue_names(queues: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in queues.split(",") if q.strip())


def open_farm_plane(queues: tuple[str, ...] = ("gpu", "cpu"), owns_process: bool = False) -> ControlPlane:
    """The control plane of a farm (a broker configured), for commands that make no sense embedded; its app knows
    ``queues`` besides gpu and cpu. ``owns_process``: this process is a worker of its own (``Settings``)."""
    settings = dataclasses.replace(Settings.from_env(), owns_process=owns_process)
    cp = ControlPlane.open(settings, queues=tuple(dict.fromkeys(("gpu", "cpu") + queues)))
    if cp.settings.embedded:
        raise UserError("no broker configured: set LATENTFARM_BROKER_URL (e.g. redis://localhost:6379/0); "
                        "on the embedded default `latentfarm submit` runs its own worker")
    return cp


def check_schema(cp: ControlPlane) -> None:
    """UserError unless the database is at the schema this version writes (`latentfarm db upgrade`)."""
    current, head = migrate.current_revision(cp.store.engine), migrate.head_revision(cp.store.engine)
    if current != head:
        raise UserError(f"the database {mask_secrets(cp.settings.database_url)} is at schema {current or 'none'}, "
                        f"not {head}: run `latentfarm db upgrade`")
