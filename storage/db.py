"""Engines and sessions: SQLite (WAL, busy timeout, foreign keys) by default, PostgreSQL by URL."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseUnavailable, InvalidValue

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (the CLI, the API) go on while a worker writes; the busy timeout makes writers queue
    # behind each other instead of failing at once with "database is locked".
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock when a transaction starts, so two writers never deadlock upgrading read locks.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings the store relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself

        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    # No pre-ping (a round trip per checkout): a connection the server dropped fails its statement, SQLAlchemy then
    # discards the whole pool, and the caller's retry (a worker's outcome write, the reaper's next pass) reconnects.
    return create_engine(url, **kwargs)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process (engines own connection pools: make them once)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = make_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pool this process opened (tests that drop a database or schema call this first)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _forget_inherited_connections() -> None:
    # A forked child (a Celery prefork worker) must not use the parent's pooled connections: two processes on one
    # socket corrupt each other's sessions ("prepared statement already exists"). close=False leaves the parent's
    # connections open for the parent.
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


@lru_cache(maxsize=16)
def _sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error. The database's errors are translated here, once: a
    lost connection or a locked SQLite file becomes DatabaseUnavailable, a value the database cannot hold (a NUL
    byte on PostgreSQL, an integer out of range) InvalidValue."""
    session = _sessionmaker(engine)()
    try:
        yield session
        session.commit()
    except OperationalError as e:
        session.rollback()
        if engine.dialect.name == "sqlite" and "locked" not in str(e.orig):
            raise
        raise DatabaseUnavailable(f"database unavailable: {_first_line(e.orig)}") from e
    except DataError as e:
        session.rollback()
        raise InvalidValue(f"the database refused a value: {_first_line(e.orig)}") from e
    except DBAPIError as e:
        session.rollback()
        if e.connection_invalidated:
            raise DatabaseUnavailable(f"database connection lost: {_first_line(e.orig)}") from e
        raise
    except StatementError as e:
        session.rollback()
        if isinstance(e.orig, (ValueError, OverflowError)):  # a parameter the driver cannot send
            raise InvalidValue(f"the database refused a value: {_first_line(e.orig)}") from e
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _first_line(e: BaseException | None) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
