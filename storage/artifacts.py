"""A content-addressed artifact store on a directory (local disk or a shared NFS mount).

A blob lives at ``<root>/sha256/<first 2 hex>/<64 hex>``; the ``artifacts`` table maps (job, name) to it with
its media type, size and sha256. Identical outputs are stored once, and a cached job shares its source's blobs.
Writes go to a temporary file in the same directory and are renamed into place, so a reader never sees half a
blob and a crash leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.errors import ArtifactCorrupt, NotFound


@dataclass(frozen=True)
class StoredBlob:
    uri: str  # relative to the store's root
    sha256: str
    bytes: int


class ArtifactStore:
    """Put and get blobs by content."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._verified = _Verified()

    def path_of(self, uri: str) -> Path:
        """The local file of a stored blob."""
        return self.root / uri

    def verified_path(self, uri: str, sha256: str, what: str) -> Path:
        """The local file of a blob, checked against its sha256 (once per version of the file: its inode, size,
        modification and change times). NotFound if it is missing, ArtifactCorrupt if its bytes changed; ``what``
        names the artifact in the message."""
        path = self.path_of(uri)
        self._verified.check(path, sha256, what)
        return path

    def put_bytes(self, data: bytes) -> StoredBlob:
        """Store ``data``; returns where, its sha256 and its size."""
        sha = hashlib.sha256(data).hexdigest()
        target = self._target(sha)
        if not target.exists():
            self._write_atomically(target, lambda f: f.write(data))
        return StoredBlob(self._uri(sha), sha, len(data))

    def put_file(self, path: str | os.PathLike[str]) -> StoredBlob:
        """Store a file's content (streamed: large models never sit in memory twice)."""
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        sha = h.hexdigest()
        target = self._target(sha)
        if not target.exists():
            def copy(out: BinaryIO) -> None:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            self._write_atomically(target, copy)
        return StoredBlob(self._uri(sha), sha, size)

    def get_bytes(self, uri: str, sha256: str | None = None) -> bytes:
        """A blob's bytes; with ``sha256`` given, checked against it."""
        path = self.path_of(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"artifact blob missing: {path}") from e
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupt(f"artifact blob {path} does not match its sha256 {sha256}")
        return data

    def copy_out(self, uri: str, sha256: str, dest: Path) -> None:
        """Copy a blob to ``dest`` (written whole or not at all), checking it against its sha256 on the way."""
        src = self.path_of(uri)
        if not src.is_file():
            raise NotFound(f"artifact blob missing: {src}")
        h = hashlib.sha256()

        def copy(out: BinaryIO) -> None:
            with open(src, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != sha256:
                raise ArtifactCorrupt(f"artifact blob {src} does not match its sha256 {sha256}")

        self._write_atomically(dest, copy)

    def delete(self, uri: str) -> None:
        """Remove a blob that no artifact refers to any more (missing is fine)."""
        self.path_of(uri).unlink(missing_ok=True)

    def _uri(self, sha: str) -> str:
        return f"sha256/{sha[:2]}/{sha}"

    def _target(self, sha: str) -> Path:
        return self.root / self._uri(sha)

    def _write_atomically(self, target: Path, write) -> None:  # type: ignore[no-untyped-def]
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


class _Verified:
    """Blobs already checked against their sha256, by path, inode, size, mtime and ctime: a blob is hashed once per
    version, not per read. (Bits rotting in place change none of those: a new process checks every blob again.)"""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[tuple[str, int, int, int, int, str], None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def check(self, path: Path, sha256: str, what: str) -> None:
        try:
            st = path.stat()
        except FileNotFoundError as e:
            raise NotFound(f"{what}: its blob is missing from the artifact store") from e
        # a blob replaced by another file (even with the same size and mtime) has another inode or ctime
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, sha256)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sha256:
            raise ArtifactCorrupt(f"{what}: its blob no longer matches its sha256 {sha256}")
        with self._lock:
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
