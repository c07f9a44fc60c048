"""The job status machine. Every change of status is a guarded UPDATE checked against this table."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    PENDING = "pending"  # waiting for its parents
    QUEUED = "queued"  # a message is (or is about to be) on the broker
    RUNNING = "running"  # claimed by a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a search's trial its pruner stopped early (``scheduler.search``): done, not failed

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED})

# from -> the statuses it may move to
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.SUCCEEDED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED,
                                  JobStatus.PRUNED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.PENDING}),  # retry
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.PENDING}),  # retry
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.PRUNED: frozenset(),  # the pruner's decision is final: a search asks a new trial instead
}


def can_move(src: JobStatus, dst: JobStatus) -> bool:
    """Whether the status machine allows ``src -> dst``."""
    return dst in TRANSITIONS[src]
