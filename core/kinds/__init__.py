"""The job kinds: one module per kind declares it (``core.kinds.base.Kind``: its params dataclass, queue, inputs,
handler, hooks and display hints), and ``KINDS`` here is the one registry of them.

Adding a kind: a module here with its params dataclass and ``KINDS = (Kind(...),)``, its name in ``_MODULES``, its
handler in ``workers/handlers/``, and its row in the README's kinds table (a test checks each resolves). Importing
this package imports no TensorFlow: the control plane validates specs with it.
"""

from __future__ import annotations

from core.kinds import cluster, dream, encode, noop, sample, search, train
from core.kinds.base import GeneratedJob, Input, Kind, Parent

__all__ = ["KINDS", "SPEC_KINDS", "GeneratedJob", "Input", "Kind", "Parent", "kind"]

_MODULES = (noop, train, encode, sample, cluster, dream, search)

KINDS: dict[str, Kind] = {k.name: k for module in _MODULES for k in module.KINDS}
SPEC_KINDS = tuple(sorted(name for name, k in KINDS.items() if k.in_specs))  # what a spec's `kind` may be


def kind(name: str) -> Kind:
    """The kind ``name``; KeyError for one that does not exist."""
    return KINDS[name]
