"""Which errors are worth another attempt: lost connections and a device out of memory, never the user's errors."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from core.data_files import DataFileError
from core.params import ConfigError
from scheduler.dispatch import backoff
from storage.errors import DatabaseUnavailable, NotFound
from workers.execute import is_transient


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
    ResourceExhaustedError("OOM when allocating tensor with shape[4096,4096]"),
    XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes."),
    MemoryError(),
    _caused_by(DatabaseUnavailable("database connection lost")),
], ids=lambda e: type(e).__name__)
def test_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    ValueError("model conv_ae needs images (n, h, w, c)"),
    DataFileError("data file not found: /data/mnist.npz"),
    ConfigError("epochs", "must be >= 1, got 0"),
    FloatingPointError("loss became NaN at epoch 3"),
    NotFound("job 'train' has no artifact 'model.keras'"),
    XlaRuntimeError("INVALID_ARGUMENT: shapes do not match"),
    _caused_by(KeyError("z_dim")),
], ids=lambda e: type(e).__name__)
def test_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [backoff(5.0, attempt) for attempt in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff(5.0, 20) == 300.0
