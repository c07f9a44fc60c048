"""The control plane's errors: a root, user errors (bad spec, bad arguments) and service errors."""

from __future__ import annotations


class LatentfarmError(Exception):
    """Root of latentfarm's errors. The CLI prints these as one line, without a traceback."""

    exit_code = 1


class UserError(LatentfarmError):
    """The user asked for something impossible: a bad spec, an unknown job. Retrying will not help."""

    exit_code = 2


class SpecError(UserError):
    """A batch spec is invalid. The message names the file, the job and the field."""

    def __init__(self, path: str, message: str, job: str | None = None, field: str | None = None) -> None:
        where = [path]
        if job is not None:
            where.append(f"job {job!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {message}")
        self.path = path
        self.job = job
        self.field = field
        self.message = message


class BrokerUnavailable(LatentfarmError):
    """The Celery broker cannot be reached."""
