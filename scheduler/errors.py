"""The control plane's errors, added to the one tree rooted in ``storage.errors``, and the one table that maps an
error to the CLI's exit code and the API's HTTP status (the CLI, the API and the dashboard all read it).

    LatentfarmError                                   exit  HTTP
    ├── TransientError                                  1   503   (Retry-After)
    │   ├── DatabaseUnavailable
    │   ├── StorageUnavailable                          (the artifact store: an endpoint that does not answer)
    │   └── BrokerUnavailable
    └── PermanentError                                  1   500
        ├── UserError                                   2   400
        │   ├── SpecError                               2   422
        │   │   └── SpecErrors                          (several, one per line)
        │   ├── NotFound                                2   404
        │   ├── Conflict                                2   409
        │   └── InvalidValue                            2   400
        ├── ArtifactCorrupt                             1   500
        └── StorageMisconfigured                        1   500   (no such bucket, credentials refused)

Whether a job is retried is a property of its error (``transient``); ``is_transient`` adds the short list of
third-party errors the farm knows to be passing (a lost connection); ``out_of_memory`` tells running out of the
host's memory (not retried: the job's own size) from a device's (retried once: a neighbour may have filled it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from storage.errors import (
    ArtifactCorrupt,
    DatabaseUnavailable,
    InvalidValue,
    LatentfarmError,
    NotFound,
    PermanentError,
    StorageMisconfigured,
    StorageUnavailable,
    TransientError,
    UserError,
)

__all__ = ["ArtifactCorrupt", "BrokerUnavailable", "Conflict", "DatabaseUnavailable", "InvalidValue",
           "LatentfarmError", "NotFound", "PermanentError", "SpecError", "SpecErrors", "StorageMisconfigured",
           "StorageUnavailable", "TransientError", "UserError",
           "Response", "SecretsFilter", "is_transient", "mask_secrets", "out_of_memory", "response_for"]


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


class SpecErrors(SpecError):
    """Several errors of one spec, each on its own line (at most MAX_ERRORS: a spec that bad is rewritten, not
    read further). Gather them with ``collect`` and end with ``raise_any``."""

    MAX_ERRORS = 20

    def __init__(self, path: str) -> None:
        self.errors: list[SpecError] = []
        self.path = path
        Exception.__init__(self, path)

    def __str__(self) -> str:
        more = ["... more errors left out (fix these first)"] if self.full else []
        return "\n".join([str(e) for e in self.errors] + more)

    @property
    def full(self) -> bool:
        return len(self.errors) >= self.MAX_ERRORS

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Keep a SpecError the block raises, and go on."""
        try:
            yield
        except SpecErrors as e:
            for one in e.errors:
                self._add(one)
        except SpecError as e:
            self._add(e)

    def _add(self, error: SpecError) -> None:
        # the jobs an entry expands into (a sweep, a dream's tiles) often fail alike: each message once
        if not self.full and all(str(error) != str(e) for e in self.errors):
            self.errors.append(error)

    def raise_any(self) -> None:
        """Raise the one error gathered as itself, several as this; nothing if none."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            first = self.errors[0]
            self.job, self.field, self.message = first.job, first.field, first.message
            raise self


class Conflict(UserError):
    """The request does not fit the state of what it names (retrying a job that neither failed nor was
    cancelled)."""


class BrokerUnavailable(TransientError):
    """The Celery broker cannot be reached."""


@dataclass(frozen=True)
class Response:
    """How an interface reports an error: the CLI's exit code, the API's status, the page's title."""

    exit_code: int
    http_status: int
    title: str
    retry_after: bool = False  # the API adds ``Retry-After``: the condition is expected to pass


# The one table, most specific first: the first class an error is an instance of decides.
RESPONSES: tuple[tuple[type[LatentfarmError], Response], ...] = (
    (SpecError, Response(2, 422, "Invalid spec")),
    (NotFound, Response(2, 404, "Not found")),
    (Conflict, Response(2, 409, "Conflict")),
    (UserError, Response(2, 400, "Bad request")),
    (ArtifactCorrupt, Response(1, 500, "Damaged artifact")),
    (TransientError, Response(1, 503, "Service unavailable", retry_after=True)),
    (LatentfarmError, Response(1, 500, "Error")),
)


def response_for(error: LatentfarmError) -> Response:
    """The exit code, HTTP status and title of ``error`` (see the module docstring)."""
    return next(response for cls, response in RESPONSES if isinstance(error, cls))


# Out-of-memory errors by class name (TensorFlow, PyTorch, JAX): the control plane never imports them.
_OOM_NAMES = frozenset({"ResourceExhaustedError", "OutOfMemoryError"})


def out_of_memory(error: BaseException) -> str | None:
    """``"host"`` when ``error`` (or what caused it) is running out of the machine's memory (MemoryError; a
    TensorFlow OOM on the CPU), ``"device"`` when out of a GPU's memory, None otherwise. Running out of host memory
    repeats itself (the job's own size, within its budget); a device may have been full of a neighbour's work."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        name = type(seen).__name__
        if isinstance(seen, MemoryError):
            return "host"
        if name in _OOM_NAMES or (name == "XlaRuntimeError" and "RESOURCE_EXHAUSTED" in str(seen)):
            return "host" if "device:CPU" in str(seen) else "device"  # TensorFlow names the device it ran out on
        seen = seen.__cause__ or seen.__context__
    return None


def is_transient(error: BaseException) -> bool:
    """Whether another attempt of a job that raised ``error`` may succeed.

    An error of the tree (and of core) says so itself (``transient``). Of the others, only a lost connection is
    passing (``ConnectionError``, SQLAlchemy's and kombu's operational errors, Redis' connection and timeout
    errors); what the error was caused by counts too (a few levels). Running out of memory is ``out_of_memory``'s
    to tell. Anything else is an error in the spec, the data or the code: retrying only repeats it.
    """
    seen: BaseException | None = error
    for _ in range(5):  # the error and what caused it
        if seen is None:
            return False
        declared = getattr(type(seen), "transient", None)
        if isinstance(declared, bool):
            return declared
        if _third_party_transient(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _third_party_transient(error: BaseException) -> bool:
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DisconnectionError, OperationalError

    return isinstance(error, (ConnectionError, OperationalError, DisconnectionError, KombuOperationalError,
                              RedisConnectionError, RedisTimeoutError))


URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)


def mask_secrets(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every password in a URL (``redis://:pw@host``, ``postgresql://u:pw@host``) and each of
    ``secrets`` (a token) replaced by ``***``: errors, log lines and answers must never carry them."""
    text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class SecretsFilter(logging.Filter):
    """A logging filter (for handlers) that masks passwords in URLs and the given ``secrets`` in every record."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = mask_secrets(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info, record.exc_text = None, text
        return True
