"""Errors raised by the store. Database driver errors are translated at the session boundary."""


class StorageError(Exception):
    """Root of the store's errors."""


class DatabaseUnavailable(StorageError):
    """The database could not be reached (a transient condition: retry later)."""


class NotFound(StorageError):
    """A batch, job or artifact does not exist."""


class ArtifactCorrupt(StorageError):
    """An artifact's bytes no longer match the sha256 recorded for it."""
