"""The content-addressed artifact store: one interface, two backends.

A blob lives at ``sha256/<first 2 hex>/<64 hex>`` under the store's root: a directory (local disk, or a mount every
machine of the farm shares) or an S3-compatible bucket and prefix (``storage.s3store``), chosen by the location
string (``s3://bucket/prefix`` or a path; ``open_artifacts``). The ``artifacts`` table maps (job, name) to that
relative uri with its media type, size and sha256, so a farm moves between backends by copying the blobs.
Identical outputs are stored once, and a cached job shares its source's blobs.

What every backend guarantees:

- a write is atomic: a reader never sees part of a blob under its final name, and a writer killed midway leaves
  nothing there (the directory writes a temporary file and renames it; a bucket's PUT, and a multipart upload
  until it is completed, are invisible);
- two writers of one blob are safe (same bytes); a blob already there is not written again, but its time is
  refreshed, so that ``latentfarm gc``'s grace period protects a blob a running job has just stored again before
  its row is committed;
- a reader gets only bytes that match their sha256: ``verified_path`` is a local file checked against it (for a
  bucket, a copy in the host's read cache, ``storage.blobcache``), ``get_bytes`` and ``copy_out`` check on the
  way; a mismatch is ArtifactCorrupt, a missing blob NotFound.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from storage.errors import ArtifactCorrupt, NotFound

BLOCK = 1 << 20  # bytes read or written at a time: a blob never sits in memory whole unless asked for (get_bytes)
BLOB_URI = re.compile(r"sha256/(?P<head>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})")
BUCKET_SCHEME = "s3://"
# a name S3 accepts for a bucket (3-63 lower-case letters, digits, dots and hyphens)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def blob_uri(sha256: str) -> str:
    """The uri of the blob with this sha256, relative to the store's root."""
    return f"sha256/{sha256[:2]}/{sha256}"


def sha_of(uri: str) -> str | None:
    """The sha256 a blob's uri names, or None for a uri that is not a blob's."""
    match = BLOB_URI.fullmatch(uri)
    return match["sha"] if match and match["head"] == match["sha"][:2] else None


def is_bucket(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a bucket (``s3://bucket/prefix``) rather than a directory."""
    return isinstance(location, str) and location.startswith(BUCKET_SCHEME)


def parse_bucket(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` as (bucket, prefix without slashes at its ends); ValueError if it is not one."""
    bucket, _, prefix = location[len(BUCKET_SCHEME):].partition("/")
    if not is_bucket(location) or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"expected s3://bucket/prefix with a valid bucket name, got {location!r}")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"the prefix of {location!r} has an empty, '.' or '..' part")
    return bucket, prefix


@dataclass(frozen=True)
class StoredBlob:
    uri: str  # relative to the store's root
    sha256: str
    bytes: int


@dataclass(frozen=True)
class BlobInfo:
    """A blob as the store lists it (for ``latentfarm gc``)."""

    uri: str  # relative to the store's root
    bytes: int
    modified: datetime  # UTC: when it was last written, or refreshed by a writer that found it there

    @property
    def sha256(self) -> str:
        return self.uri.rsplit("/", 1)[-1]


class ArtifactStore(ABC):
    """Put and get blobs by content. ``url``: where the store is, as shown to a user."""

    url: str

    @abstractmethod
    def put_bytes(self, data: bytes) -> StoredBlob:
        """Store ``data``; returns where, its sha256 and its size."""

    @abstractmethod
    def put_file(self, path: str | os.PathLike[str]) -> StoredBlob:
        """Store a file's content, streamed (large models never sit in memory). The file must not change meanwhile."""

    @abstractmethod
    def get_bytes(self, uri: str, sha256: str | None = None) -> bytes:
        """A blob's bytes; with ``sha256`` given, checked against it. NotFound if it is missing."""

    @abstractmethod
    def copy_out(self, uri: str, sha256: str, dest: Path) -> None:
        """Copy a blob to ``dest`` (written whole or not at all), checking it against its sha256 on the way."""

    @abstractmethod
    def verified_path(self, uri: str, sha256: str, what: str) -> Path:
        """A local file with the blob's bytes, checked against its sha256: NotFound if the blob is missing,
        ArtifactCorrupt if its bytes do not match; ``what`` names the artifact in the message."""

    @abstractmethod
    def stat(self, uri: str) -> BlobInfo | None:
        """The blob's size and time, or None if there is no such blob."""

    def exists(self, uri: str) -> bool:
        return self.stat(uri) is not None

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove a blob that no row refers to any more (missing is fine)."""

    def delete_many(self, uris: Iterable[str]) -> None:
        """``delete`` each of ``uris`` (a bucket removes a thousand per request)."""
        for uri in uris:
            self.delete(uri)

    @abstractmethod
    def blobs(self) -> Iterator[BlobInfo]:
        """Every blob stored (in no particular order); what is not a blob's name is left out."""

    @abstractmethod
    def drop_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        """Remove what writers killed midway left behind (temporary files; a bucket's incomplete multipart
        uploads) begun more than ``older_than`` seconds ago; returns how many (with ``dry_run``: would remove)."""

    @abstractmethod
    def location(self, uri: str) -> str:
        """Where a blob is, to show a user: a path, or an ``s3://bucket/key`` URL."""


def open_artifacts(location: str | os.PathLike[str], endpoint: str | None = None, cache_dir: Path | None = None,
                   cache_size: int | None = None) -> ArtifactStore:
    """The store at ``location``: ``s3://bucket/prefix`` (with ``endpoint`` for a server other than AWS; blobs read
    through the host's cache at ``cache_dir``, at most ``cache_size`` bytes), or a directory."""
    if is_bucket(location):
        from storage.blobcache import BlobCache
        from storage.s3store import S3Store

        bucket, prefix = parse_bucket(str(location))
        return S3Store(bucket, prefix, BlobCache.default() if cache_dir is None else BlobCache(cache_dir, cache_size),
                       endpoint)
    return DirectoryStore(location)


class DirectoryStore(ArtifactStore):
    """Blobs as files under a directory. Writes go to a temporary file in the blob's directory and are renamed into
    place, so a reader never sees half a blob and a crash leaves nothing half-written."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self._verified = Verified()

    def path_of(self, uri: str) -> Path:
        """The local file of a stored blob."""
        return self.root / uri

    def location(self, uri: str) -> str:
        return str(self.path_of(uri))

    def verified_path(self, uri: str, sha256: str, what: str) -> Path:
        """The blob's own file, checked once per version of it (its inode, size, modification and change times)."""
        path = self.path_of(uri)
        self._verified.check(path, sha256, what)
        return path

    def put_bytes(self, data: bytes) -> StoredBlob:
        sha = hashlib.sha256(data).hexdigest()
        if not self._refresh(sha):
            write_atomically(self.root / blob_uri(sha), lambda f: f.write(data))
        return StoredBlob(blob_uri(sha), sha, len(data))

    def put_file(self, path: str | os.PathLike[str]) -> StoredBlob:
        sha, size = hash_file(path)
        if not self._refresh(sha):
            def copy(out: BinaryIO) -> None:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, BLOCK)
            write_atomically(self.root / blob_uri(sha), copy)
        return StoredBlob(blob_uri(sha), sha, size)

    def _refresh(self, sha: str) -> bool:
        """Whether the blob is there already; if so, its time is made now (gc's grace then protects it)."""
        try:
            os.utime(self.root / blob_uri(sha))
        except FileNotFoundError:
            return False
        except OSError:  # a store this process may read but not write: it is there all the same
            pass
        return True

    def get_bytes(self, uri: str, sha256: str | None = None) -> bytes:
        path = self.path_of(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"artifact blob missing: {path}") from e
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupt(f"artifact blob {path} does not match its sha256 {sha256}")
        return data

    def copy_out(self, uri: str, sha256: str, dest: Path) -> None:
        src = self.path_of(uri)
        if not src.is_file():
            raise NotFound(f"artifact blob missing: {src}")

        def copy(out: BinaryIO) -> None:
            with open(src, "rb") as f:
                copy_hashed(f, out, sha256, lambda: ArtifactCorrupt(
                    f"artifact blob {src} does not match its sha256 {sha256}"))

        write_atomically(dest, copy)

    def stat(self, uri: str) -> BlobInfo | None:
        try:
            st = self.path_of(uri).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(uri, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def delete(self, uri: str) -> None:
        self.path_of(uri).unlink(missing_ok=True)

    def blobs(self) -> Iterator[BlobInfo]:
        for head in _subdirs(self.root / "sha256"):
            for entry in _entries(head):
                uri = f"sha256/{head.name}/{entry.name}"
                if sha_of(uri) is None:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield BlobInfo(uri, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def drop_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        cutoff = time.time() - older_than
        dropped = 0
        for head in _subdirs(self.root / "sha256"):
            for entry in _entries(head):
                try:
                    if entry.name.startswith(".tmp-") and entry.stat().st_mtime < cutoff:
                        if not dry_run:
                            Path(entry.path).unlink(missing_ok=True)
                        dropped += 1
                except FileNotFoundError:
                    continue
        return dropped


def _subdirs(path: Path) -> Iterator[Path]:
    for entry in _entries(path):
        if entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def _entries(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """A file's sha256 and size, read in blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def copy_hashed(src: BinaryIO, out: BinaryIO, sha256: str, corrupt: Callable[[], Exception]) -> int:
    """Copy ``src`` to ``out`` in blocks, hashing on the way; raises ``corrupt()`` if the sha256 differs. Returns
    the bytes copied."""
    h = hashlib.sha256()
    size = 0
    for block in iter(lambda: src.read(BLOCK), b""):
        h.update(block)
        out.write(block)
        size += len(block)
    if h.hexdigest() != sha256:
        raise corrupt()
    return size


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``target`` through a temporary file beside it, synced and renamed into place: whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class HashingWriter:
    """A file that hashes what is written to it. It has no ``seek``: s3transfer then writes the parts of a parallel
    download in order."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self.size += len(data)
        return self._f.write(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Verified:
    """Files already checked against their sha256, by path, inode, size, mtime and (``with_ctime``) ctime: a blob
    is hashed once per version, not per read. (Bits rotting in place change none of those: a new process checks
    every blob again.)"""

    def __init__(self, size: int = 4096, with_ctime: bool = True) -> None:
        self._seen: OrderedDict[tuple[str, int, int, int, int, str], None] = OrderedDict()
        self._size = size
        self._with_ctime = with_ctime
        self._lock = threading.Lock()

    def check(self, path: Path, sha256: str, what: str) -> None:
        """NotFound if ``path`` is missing, ArtifactCorrupt if its bytes do not match ``sha256``."""
        try:
            st = path.stat()
        except FileNotFoundError as e:
            raise NotFound(f"{what}: its blob is missing from the artifact store") from e
        # a blob replaced by another file (even with the same size and mtime) has another inode or ctime
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns if self._with_ctime else 0, sha256)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
        try:
            actual = hash_file(path)[0]
        except FileNotFoundError as e:  # removed since
            raise NotFound(f"{what}: its blob is missing from the artifact store") from e
        if actual != sha256:
            raise ArtifactCorrupt(f"{what}: its blob no longer matches its sha256 {sha256}")
        self._add(key)

    def remember(self, path: Path, sha256: str) -> None:
        """Record ``path`` as checked: its bytes were hashed as they were written (a download)."""
        st = path.stat()
        self._add((str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns if self._with_ctime else 0,
                   sha256))

    def _add(self, key: tuple[str, int, int, int, int, str]) -> None:
        with self._lock:
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
