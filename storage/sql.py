"""Helpers every statement module of the store shares: the tables as Core objects, slices of ids, the upsert."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from storage.models import ArtifactRow, BatchRow, DatasetRow, EventRow, JobDepRow, JobRow, MetricRow

# Core statements, not ORM objects, on the hot paths: no ORM bookkeeping per job.
BATCHES = cast(Table, BatchRow.__table__)
JOBS = cast(Table, JobRow.__table__)
DEPS = cast(Table, JobDepRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
METRICS = cast(Table, MetricRow.__table__)
ARTIFACTS = cast(Table, ArtifactRow.__table__)
DATASETS = cast(Table, DatasetRow.__table__)

CHUNK = 1000  # ids per statement: SQLite and PostgreSQL both cap the bind parameters of one statement


def chunks(items: list[Any], size: int | None = None) -> Iterable[list[Any]]:
    """``items`` in slices of ``size`` (default ``CHUNK``): one statement's worth of bind parameters each."""
    step = size or CHUNK
    for k in range(0, len(items), step):
        yield items[k:k + step]


def upsert(session: Session, table: Table, rows: list[dict[str, Any]], keys: list[str],
           update_cols: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: one round trip where a delete and an insert took two. The
    statement is built once per table and dialect and given the rows as parameters (compiled once, cached)."""
    if rows:
        stmt = _upsert_statement(session.get_bind().dialect.name, table, tuple(keys), tuple(update_cols))
        session.execute(stmt, rows)


@functools.lru_cache(maxsize=32)
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...]) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect_insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if dialect_insert is None:  # pragma: no cover - the store supports SQLite and PostgreSQL
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    stmt = dialect_insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: getattr(stmt.excluded, c) for c in update_cols})
