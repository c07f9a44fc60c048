"""The one error tree: which errors are worth another attempt (lost connections, a device out of memory, never the
user's errors), and the one table of exit codes and HTTP statuses."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from core.errors import ConfigError, DataError
from scheduler.errors import (
    ArtifactCorrupt,
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    InvalidValue,
    LatentfarmError,
    NotFound,
    PermanentError,
    SpecError,
    TransientError,
    UserError,
    is_transient,
    mask_secrets,
    out_of_memory,
    response_for,
)
from scheduler.lifecycle import backoff


class ResourceExhaustedError(Exception):
    """Named as TensorFlow's device out-of-memory error (the worker matches such errors by class name)."""


class XlaRuntimeError(Exception):
    """Named as JAX's runtime error: out of memory only when it says RESOURCE_EXHAUSTED."""


def _caused_by(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as e:
            raise RuntimeError("while writing the results") from e
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("error", [
    DatabaseUnavailable("database unavailable: connection refused"),
    OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    ConnectionRefusedError(111, "Connection refused"),
    KombuOperationalError("Error 111 connecting to localhost:6379"),
    RedisConnectionError("Connection closed by server."),
    _caused_by(DatabaseUnavailable("database connection lost")),
], ids=lambda e: type(e).__name__)
def test_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    ValueError("model conv_ae needs images (n, h, w, c)"),
    DataError("data file not found: /data/mnist.npz"),
    ConfigError("epochs", "must be >= 1, got 0"),
    FloatingPointError("loss became NaN at epoch 3"),
    NotFound("job 'train' has no artifact 'model.keras'"),
    XlaRuntimeError("INVALID_ARGUMENT: shapes do not match"),
    _caused_by(KeyError("z_dim")),
    MemoryError(),  # running out of memory is out_of_memory's to tell: never retried as passing
    ResourceExhaustedError("OOM when allocating tensor with shape[4096,4096] on device:GPU:0"),
], ids=lambda e: type(e).__name__)
def test_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize("error,where", [
    (MemoryError("Unable to allocate 1.49 GiB"), "host"),
    (ResourceExhaustedError("OOM when allocating tensor with shape[400000000] and type float on /job:localhost/"
                            "replica:0/task:0/device:CPU:0 by allocator mklcpu"), "host"),
    (ResourceExhaustedError("OOM when allocating tensor with shape[4096,4096] on /job:localhost/replica:0/task:0/"
                            "device:GPU:0 by allocator GPU_0_bfc"), "device"),
    (XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."), "device"),
    (_caused_by(MemoryError()), "host"),
    (XlaRuntimeError("INVALID_ARGUMENT: shapes do not match"), None),
    (ValueError("no"), None),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_out_of_memory_tells_the_host_from_a_device(error: BaseException, where: str | None) -> None:
    assert out_of_memory(error) == where


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [backoff(5.0, attempt) for attempt in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff(5.0, 20) == 300.0


@pytest.mark.parametrize("error,exit_code,http_status", [
    (SpecError("spec.yaml", "bad", job="a", field="kind"), 2, 422),
    (NotFound("no job 3"), 2, 404),
    (Conflict("job 3 is running"), 2, 409),
    (InvalidValue("the database refused a value"), 2, 400),
    (UserError("name one or more jobs"), 2, 400),
    (ArtifactCorrupt("blob damaged"), 1, 500),
    (DatabaseUnavailable("database unavailable"), 1, 503),
    (BrokerUnavailable("cannot reach the broker"), 1, 503),
    (LatentfarmError("something else"), 1, 500),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_one_table_gives_the_exit_code_and_http_status(error: LatentfarmError, exit_code: int,
                                                       http_status: int) -> None:
    response = response_for(error)
    assert (response.exit_code, response.http_status) == (exit_code, http_status)
    assert response.retry_after == (http_status == 503)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(c) for c in found)) if found else found


def test_every_error_of_the_tree_is_transient_or_permanent() -> None:
    import workers.context  # noqa: F401  (its JobStopped errors are part of the tree)

    errors = _subclasses(LatentfarmError) - {TransientError, PermanentError}
    assert {DatabaseUnavailable, BrokerUnavailable, SpecError, NotFound} <= errors
    for cls in errors:
        assert issubclass(cls, TransientError) != issubclass(cls, PermanentError), cls
        assert cls.transient == issubclass(cls, TransientError), cls
        assert response_for(cls.__new__(cls)).exit_code in (1, 2)


def test_secrets_are_masked_in_urls_and_by_value() -> None:
    from scheduler.settings import Settings

    assert mask_secrets("redis://:pw@h:6379/0 and postgresql+psycopg://u:p%40ss@db/x") == \
        "redis://:***@h:6379/0 and postgresql+psycopg://u:***@db/x"
    settings = Settings.from_env({"LATENTFARM_BROKER_URL": "redis://:brokerpw@h/0", "LATENTFARM_API_TOKEN": "tok-42x"})
    assert settings.mask("token tok-42x, password brokerpw") == "token ***, password ***"
