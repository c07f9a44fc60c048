"""Reclaiming the artifact store's space: ``latentfarm gc`` removes the blobs no row references, ``latentfarm
delete`` a finished batch and then the blobs only it referenced. Both list what they would remove unless told to
remove it.

**Running jobs.** A worker stores a blob before the row that references it is committed (a job's last results are
recorded with its completion), so a blob no row references may be about to be referenced. Neither command removes
a blob written less than ``GRACE`` seconds ago, and a writer that finds its blob already stored refreshes the
blob's time (``storage.artifacts``), so an old blob stored again is young again. ``GRACE`` is an hour: what must
fit in it is the time from a job's upload to the commit of its row, that is the rest of its handler after the
upload (its last writes) plus its completion, which waits out a database that is away for up to a lease (60 s by
default). The lease alone would not do: it bounds the wait for the database, not the handler's own time between
an upload and its end; an hour bounds both with a wide margin, and costs only an hour's delay in reclaiming.

**Order.** ``delete`` removes the rows first, in one transaction, and the blobs after: a crash in between leaves
only blobs no row references, which the next ``gc`` removes. A blob that another batch's job (a cache hit shares
its source's blobs) or a registered dataset references is kept.

**Incomplete writes.** ``gc`` also aborts the multipart uploads (on a bucket) and removes the temporary files (in
a directory) that writers killed midway left, once they are older than the grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice

from scheduler.errors import Conflict
from storage import queries, reclaim
from storage.artifacts import BlobInfo
from storage.store import Store

GRACE = 3600.0  # seconds: a blob written (or stored again) more recently is never removed
CHECK_BATCH = 1000  # blobs looked up in the database at a time


@dataclass(frozen=True)
class Garbage:
    """What ``collect_garbage`` found (and, with ``removed``, removed)."""

    blobs: int  # blobs no row references, older than the grace period
    bytes: int
    young: int  # blobs no row references, written within the grace period: kept
    incomplete: int  # incomplete uploads or temporary files older than the grace period
    removed: bool


@dataclass(frozen=True)
class DeletedBatch:
    """What ``delete_batch`` found (and, with ``removed``, deleted)."""

    batch_id: int
    name: str
    rows: dict[str, int]  # per table: jobs, artifacts, metrics, events
    blobs: int  # blobs only this batch referenced, older than the grace period
    bytes: int
    young: int  # blobs only this batch referenced, written within the grace period: left for gc
    removed: bool
    shared: int = 0  # blobs of the batch that other rows reference: kept
    missing: list[str] = field(default_factory=list)  # blobs of the batch already gone from the store


def collect_garbage(store: Store, remove: bool = False, grace: float = GRACE) -> Garbage:
    """Find the blobs no artifact or dataset row references and that are older than ``grace`` seconds; with
    ``remove``, remove them (each slice right after it was checked) and the stale incomplete writes."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace)
    found = size = young = 0
    listing = store.artifacts.blobs()
    while chunk := list(islice(listing, CHECK_BATCH)):
        with store.session() as s:
            used = reclaim.referenced(s, [b.sha256 for b in chunk])
        garbage: list[BlobInfo] = []
        for blob in chunk:
            if blob.sha256 in used:
                continue
            if blob.modified > cutoff:
                young += 1
            else:
                garbage.append(blob)
        if remove and garbage:
            store.artifacts.delete_many(b.uri for b in garbage)
        found += len(garbage)
        size += sum(b.bytes for b in garbage)
    incomplete = store.artifacts.drop_incomplete(grace, dry_run=not remove)
    return Garbage(found, size, young, incomplete, remove)


def delete_batch(store: Store, batch_id: int, remove: bool = False, grace: float = GRACE) -> DeletedBatch:
    """Find what deleting the finished batch ``batch_id`` removes: its rows, and the blobs no other row references
    (older than ``grace``); with ``remove``, delete the rows in one transaction, then those blobs. Conflict (and
    nothing changed) if the batch has jobs that are pending, queued or running; NotFound if there is no such
    batch."""
    with store.session() as s:
        batch = queries.get_batch(s, batch_id)
        waiting = reclaim.unfinished(s, batch_id, lock=remove)
        if waiting:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(waiting.items()))
            raise Conflict(f"batch {batch_id} is not finished ({counts}): cancel it first "
                           f"(latentfarm cancel --batch {batch_id}) and wait for its running jobs to stop")
        blobs = reclaim.batch_blobs(s, batch_id)
        if remove:
            rows = reclaim.delete_batch(s, batch_id)
            used = reclaim.referenced(s, blobs)  # after the delete, in its transaction: by other rows only
        else:
            rows = reclaim.batch_rows(s, batch_id)
            used = reclaim.referenced(s, blobs, except_batch=batch_id)
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace)
    old: list[BlobInfo] = []
    missing: list[str] = []
    young = 0
    for sha, uri in sorted(blobs.items()):
        if sha in used:
            continue
        info = store.artifacts.stat(uri)
        if info is None:
            missing.append(uri)
        elif info.modified > cutoff:
            young += 1
        else:
            old.append(info)
    if remove and old:
        store.artifacts.delete_many(b.uri for b in old)
    return DeletedBatch(batch_id, batch.name, rows, len(old), sum(b.bytes for b in old), young, remove,
                        shared=len(used), missing=missing)
