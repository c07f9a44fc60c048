"""core's errors: what is wrong with a job's parameters or its data.

core imports nothing of latentfarm, so its errors are ``ValueError``s of its own rather than members of the farm's
error tree (``storage.errors``); the two places that call core translate them: spec validation into a
``SpecError`` naming the file, job and field, a worker into the job's failure. ``transient`` says what it says on
the tree's errors: trying again cannot help, the parameters or the data must change.
"""

from __future__ import annotations

from typing import ClassVar


class CoreError(ValueError):
    """Root of core's errors: a parameter, a dataset or an input that a job cannot use."""

    transient: ClassVar[bool] = False  # the same parameters and data fail the same way every time


class ConfigError(CoreError):
    """A parameter is unknown, of the wrong type, or out of range. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataError(CoreError):
    """A dataset name is unknown, or its file (an input image) is missing, unreadable, corrupt or not in the
    expected layout. The message is one line naming the file."""
