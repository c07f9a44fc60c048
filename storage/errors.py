"""latentfarm's error tree: one root, split into errors worth trying again later and errors that are not.

Whether a job is retried, what exit code the CLI gives and what HTTP status the API answers are properties of the
error (``transient`` here; the exit codes and statuses in ``scheduler.errors``' one table). The root lives here, in
the lowest layer the control plane and the workers share: the store's own errors are the first of the tree, the
control plane adds its own in ``scheduler.errors``. core, which imports nothing of latentfarm, raises errors of its
own (``core.errors``), translated where core is called; database driver errors are translated at the session
boundary (``storage.db``), once.

    LatentfarmError
    ├── TransientError            trying again later may succeed (a job is retried)
    │   ├── DatabaseUnavailable
    │   └── StorageUnavailable
    └── PermanentError            the same request fails the same way
        ├── UserError             the user asked for something impossible (exit 2, a 4xx)
        │   ├── NotFound
        │   └── InvalidValue
        ├── ArtifactCorrupt
        └── StorageMisconfigured
"""

from __future__ import annotations

from typing import ClassVar


class LatentfarmError(Exception):
    """Root of latentfarm's errors. Its message is one line, fit to show a user without a traceback."""

    transient: ClassVar[bool] = False  # whether the same operation may succeed if tried again later


class TransientError(LatentfarmError):
    """A service is away or busy: trying again later may succeed."""

    transient = True


class PermanentError(LatentfarmError):
    """Trying again will fail the same way: the request, the spec or the data must change."""


class UserError(PermanentError):
    """The user asked for something impossible: a bad spec or argument, a job that does not exist."""


class NotFound(UserError):
    """A batch, job or artifact does not exist."""


class InvalidValue(UserError):
    """A value the database cannot hold (a NUL byte on PostgreSQL, an integer beyond its range)."""


class ArtifactCorrupt(PermanentError):
    """An artifact's bytes no longer match the sha256 recorded for it."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached or is locked: retry later."""


class StorageUnavailable(TransientError):
    """The artifact store could not be reached (an endpoint that does not answer, a server error, throttling):
    retry later. A job whose upload failed so is retried."""


class StorageMisconfigured(PermanentError):
    """The artifact store refuses this farm's settings: its bucket does not exist, or its credentials are refused.
    Retrying fails the same way until the settings change."""
