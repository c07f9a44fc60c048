"""What a job kind declares: its parameters, queue, inputs, handler, optional hooks and display hints.

One ``Kind`` per job kind, written in that kind's module of ``core.kinds``; the package collects them into the one
registry. The control plane validates specs and plans batches from it without TensorFlow (nothing here imports a
model); a worker resolves ``handler``, a ``"module:function"`` reference, when it runs a job of the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class Parent(Protocol):
    """What a parent-check hook sees of a parent job, as the spec planned it."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def needs(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Input:
    """A parent a kind consumes: how many jobs of that kind (and, for train, of which models) it needs."""

    kind: str
    role: str  # what it is used for, for error messages
    min: int = 1
    max: int = 1
    models: tuple[str, ...] | None = None  # for train parents: the models that qualify

    def matches(self, parent: Parent) -> bool:
        return parent.kind == self.kind and (self.models is None or parent.params.get("model") in self.models)


@dataclass(frozen=True)
class GeneratedJob:
    """One job an expanding entry (a dream) makes: its name, kind and params, and the other jobs of the expansion
    it needs. ``exported``: whether ``needs: <entry>`` and ``foreach: <entry>`` mean this job; ``entry_needs``:
    whether the entry's own ``needs`` (and its foreach pairing) apply to it."""

    name: str
    kind: str
    params: dict[str, Any]
    needs: tuple[str, ...] = ()
    exported: bool = False
    entry_needs: bool = True


# expand(entry name, validated params) -> the jobs the entry stands for, parents before children
Expand = Callable[[str, Any], list[GeneratedJob]]
# check_parents(the job's params, its parents) raises core.errors.ConfigError naming a field of the spec's params
CheckParents = Callable[[Mapping[str, Any], Sequence[Parent]], None]
# memory(the job's params, its parents, a lookup of any job of the batch by name) -> the bytes it will need at
# most (core.memory), or None when it cannot be told
Memory = Callable[[Mapping[str, Any], Sequence[Parent], Callable[[str], Parent]], int | None]


@dataclass(frozen=True)
class Kind:
    """A job kind: everything the control plane, the workers and the dashboard need to know about it."""

    name: str
    params: type[Any]  # a frozen dataclass of the kind's parameters, one comment per field (core.params parses it)
    queue: Literal["gpu", "cpu"]  # the Celery queue its jobs go to unless the spec says otherwise
    summary: str  # one line: what a job of the kind does (``latentfarm kinds``, docs)
    handler: str | None = None  # "module:function" run by a worker; None for an entry that only expands
    inputs: tuple[Input, ...] = ()  # the parents it reads results from (other parents only order the jobs)
    files: tuple[str, ...] = ()  # params naming input files: their sha256, not their location, is fingerprinted
    expand: Expand | None = None  # a spec entry of this kind stands for the jobs this returns, never a job itself
    check_parents: CheckParents | None = None  # checks on the planned parents beyond ``inputs``' counts
    memory: Memory | None = None  # its memory estimate, checked at submit against the per-job budget
    made_by: str | None = None  # generated only, by an expanding entry of this kind: never written in a spec
    reads_parents: bool | None = None  # its handler reads its parents' results (default: it has inputs)
    x_axis: str = "step"  # what the step of its per-step metrics counts: the dashboard's x-axis label
    gallery: tuple[str, ...] = ()  # image artifacts the dashboard shows side by side for a batch's jobs of the kind
    # params added after results of the kind were stored: left out of the fingerprint while at their default, so
    # those results stay reusable (a value other than the default is fingerprinted as any param)
    late_params: tuple[str, ...] = ()
    # the param counting the steps its metrics are recorded at (train: epochs), for a kind a spec entry may search
    # over (`search:`, core.kinds.search): its handler reports each step to the search's pruner (workers.pruning),
    # which stops it at most there. None: its entries take no search
    search_steps: str | None = None

    @property
    def searchable(self) -> bool:
        """Whether a spec entry of the kind may take ``search:``."""
        return self.search_steps is not None

    @property
    def reads_results(self) -> bool:
        """Whether a worker reads the parents (and their artifacts) before running the handler."""
        return bool(self.inputs) if self.reads_parents is None else self.reads_parents

    @property
    def in_specs(self) -> bool:
        """Whether a spec's ``kind`` may name it."""
        return self.made_by is None
