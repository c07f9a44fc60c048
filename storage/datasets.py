"""The datasets registered in the farm (``latentfarm data add``): one row per name, its bytes one blob of the
artifact store (a folder's: one archive), and ``meta``, what validation reads without the bytes.

A replaced version is not forgotten while jobs submitted before the replacement may still read it: those jobs
name the version they were fingerprinted with (``dataset:<name>@<sha256>`` in their params), so its row is kept,
renamed ``<name>@<sha256>`` (no dataset's name holds an '@'). The jobs find its blob through it, and ``latentfarm
gc``, which keeps every blob a ``datasets`` row references, leaves the blob alone. ``prune_replaced`` (at every
``data add``) drops the kept versions that no unfinished job names any more; their blobs are then gc's to reclaim.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, delete, exists, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from storage.models import DatasetRow, JobRow, utcnow
from storage.records import RegisteredDataset, from_row
from storage.sql import DATASETS, upsert
from storage.status import JobStatus

KEPT = "@"  # the separator of a kept (replaced) version's name: <name>@<sha256>
_UNFINISHED = (JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_VALUES = ("kind", "filename", "uri", "sha256", "bytes", "meta", "created_at")


def kept_name(name: str, sha256: str) -> str:
    """The name a replaced version of ``name`` is kept under."""
    return f"{name}{KEPT}{sha256}"


def get_dataset(session: Session, name: str) -> RegisteredDataset | None:
    """The dataset registered as ``name`` (a kept version by its kept name), or None."""
    row = session.scalars(select(DatasetRow).where(DatasetRow.name == name)).first()
    return None if row is None else from_row(RegisteredDataset, row)


def list_datasets(session: Session, kept: bool = False) -> list[RegisteredDataset]:
    """The registered datasets by name; with ``kept``, the replaced versions still kept as well."""
    q = select(DatasetRow).order_by(DatasetRow.name)
    if not kept:
        q = q.where(DatasetRow.name.not_like(f"%{KEPT}%"))
    return [from_row(RegisteredDataset, r) for r in session.scalars(q)]


def find_version(session: Session, name: str, sha256: str) -> RegisteredDataset | None:
    """Version ``sha256`` of dataset ``name``: the registered one, or a replaced one still kept; None when neither
    (the dataset was deleted, or replaced and that version no longer kept)."""
    q = select(DatasetRow).where(DatasetRow.name.in_([name, kept_name(name, sha256)]),
                                 DatasetRow.sha256 == sha256).order_by(DatasetRow.id)
    row = session.scalars(q).first()
    return None if row is None else from_row(RegisteredDataset, row)


def add_dataset(session: Session, name: str, kind: str, filename: str, uri: str, sha256: str, size: int,
                meta: dict[str, Any]) -> bool:
    """Register ``name`` unless a dataset of that name exists (perhaps added a moment ago by another process):
    True if this call added it. One statement, so two concurrent adds cannot both believe they did."""
    values = _values(kind, filename, uri, sha256, size, meta)
    stmt = (_insert(session).values(name=name, **values).on_conflict_do_nothing(index_elements=["name"])
            .returning(DATASETS.c.id))
    return session.execute(stmt).first() is not None


def replace_dataset(session: Session, current: RegisteredDataset, kind: str, filename: str, uri: str, sha256: str,
                    size: int, meta: dict[str, Any]) -> None:
    """Give ``current``'s name new content (its row updated in place), keeping the old version as
    ``<name>@<old sha256>`` for the jobs that were submitted with it (see the module)."""
    if current.sha256 != sha256:
        old = {"name": kept_name(current.name, current.sha256),
               **_values(current.kind, current.filename, current.uri, current.sha256, current.bytes, current.meta),
               "created_at": current.created_at}
        upsert(session, DATASETS, [old], ["name"], list(_VALUES))
    session.execute(update(DATASETS).where(DATASETS.c.id == current.id)
                    .values(**_values(kind, filename, uri, sha256, size, meta)))
    # the new content may be a version kept earlier (replaced back): the registered row holds it now
    session.execute(delete(DATASETS).where(DATASETS.c.name == kept_name(current.name, sha256)))


def prune_replaced(session: Session) -> list[str]:
    """Drop the kept versions that no unfinished (pending, queued, running) job names; returns their kept names. A
    failed job retried later, whose version was dropped, then fails saying so."""
    kept = session.scalars(select(DatasetRow).where(DatasetRow.name.contains(KEPT))).all()
    dropped = []
    for row in kept:
        # a job's reference to the version, "dataset:<name>@<sha256>", holds its kept name (by design)
        named = exists().where(JobRow.status.in_(_UNFINISHED),
                               sql_cast(JobRow.params, Text).contains(":" + row.name, autoescape=True))
        if not session.scalar(select(named)):
            dropped.append(row.name)
    if dropped:
        session.execute(delete(DATASETS).where(DATASETS.c.name.in_(dropped)))
    return dropped


def _values(kind: str, filename: str, uri: str, sha256: str, size: int, meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "filename": filename, "uri": uri, "sha256": sha256, "bytes": size, "meta": meta,
            "created_at": utcnow()}


def _insert(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(DATASETS)
