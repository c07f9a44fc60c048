"""A bounded read cache of blobs on this host, keyed by sha256 and shared by every process of the host.

A worker reads a bucket's blobs through it: the cnn that 500 dream tiles use is downloaded once per host, not once
per tile, even with several worker processes on the host asking for it at once.

- **Once per host.** A process that misses takes a lock on the blob (``flock`` on a lock file in the cache dir),
  looks again, and only then downloads: to a temporary file in the cache dir, hashed on the way, renamed into
  place only when its sha256 matches. A process waiting on the lock finds the file there and uses it. A lock held
  past ``WAIT_FOR_OTHER`` (a stalled download) is not waited for: the blob is then downloaded twice, never torn.
- **Verified.** An entry is checked against its sha256 once per version of the file in each process, as the
  directory store does; an entry whose bytes no longer match is removed and downloaded again. A blob whose
  *stored* bytes do not match is ArtifactCorrupt, naming the artifact, and nothing is cached.
- **Bounded.** After a download that may have filled the cache (by this process's count: the cache as it last
  counted it, plus what it downloaded since), and at least every ``SCAN_EVERY`` seconds of downloads, the cache is
  counted and least recently used entries (by access time, which each use sets) are removed until it holds at most
  its size, except the entry just fetched and entries used in the last ``RECENT`` seconds (another process may be
  about to open one). So it exceeds its size by at most what other processes of the host downloaded since their
  last count; counting thousands of entries on every download of a small blob would cost more than the download.
  A single blob larger than the cache stays until the next count. An entry removed while a process has it open
  stays readable by that process (POSIX unlink).
- **Counted.** Each download appends a JSON line (sha256, bytes, seconds, pid, time) to ``downloads.log`` in the
  cache dir, rotated to ``downloads.log.1`` past ``LOG_MAX`` bytes: what a test or a benchmark counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from storage.artifacts import HashingWriter, Verified, sha_of
from storage.errors import ArtifactCorrupt, NotFound

DEFAULT_SIZE = 10 << 30  # bytes (LATENTFARM_CACHE_SIZE)
RECENT = 60.0  # seconds: an entry used this recently is not evicted
TOUCH_EVERY = 10.0  # seconds: a use of an entry sets its access time at most this often
SCAN_EVERY = 10.0  # seconds: the cache is counted after a download at least this often, and whenever it may be full
WAIT_FOR_OTHER = 300.0  # seconds to wait for another process's download of the same blob
STALE = 3600.0  # seconds: a temporary or lock file this old was left by a process that died
LOG_NAME = "downloads.log"
LOG_MAX = 1 << 20  # bytes of downloads.log before it is rotated


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/latentfarm/blobs``, ``~/.cache/latentfarm/blobs`` by default (``env``: this process's)."""
    env = os.environ if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "latentfarm" / "blobs"


class BlobCache:
    """Verified copies of blobs in ``root``, at most ``max_bytes`` in all (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = DEFAULT_SIZE if max_bytes is None else max_bytes
        # no ctime: setting an entry's access time (its last use) changes its ctime, not its bytes
        self._verified = Verified(with_ctime=False)
        self._total = 0  # the bytes cached, as this process last counted them plus what it downloaded since
        self._scanned = -SCAN_EVERY  # when it last counted (time.monotonic())

    @classmethod
    def default(cls) -> BlobCache:
        return cls(default_cache_dir())

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def get(self, sha256: str, what: str) -> Path | None:
        """The cached file of the blob, checked against its sha256, or None if it is not cached (or was damaged:
        then it is removed)."""
        path = self.path(sha256)
        try:
            self._verified.check(path, sha256, what)
        except NotFound:
            return None
        except ArtifactCorrupt:
            path.unlink(missing_ok=True)
            return None
        self._touch(path)
        return path

    def fetch(self, sha256: str, what: str, download: Callable[[BinaryIO], object]) -> Path:
        """The cached file of the blob; on a miss ``download`` writes it (to a file object that hashes on the way)
        and the cache keeps it if its sha256 matches (ArtifactCorrupt naming ``what`` otherwise)."""
        found = self.get(sha256, what)
        if found is not None:
            return found
        target = self.path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f".lock-{sha256}"):
            found = self.get(sha256, what)  # another process fetched it while this one waited
            if found is not None:
                return found
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            start = time.monotonic()
            try:
                with os.fdopen(fd, "wb") as f:
                    out = HashingWriter(f)
                    download(out)  # type: ignore[arg-type]  # a writer, as s3transfer wants: no seek
                if out.hexdigest() != sha256:
                    raise ArtifactCorrupt(f"{what}: its blob in the artifact store does not match its sha256 "
                                          f"{sha256}")
                os.replace(tmp, target)
                self._verified.remember(target, sha256)  # hashed on the way in: not again on its next use
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._log(sha256, out.size, time.monotonic() - start)
        self._total += out.size
        if self._total > self.max_bytes or time.monotonic() - self._scanned > SCAN_EVERY:
            self.evict(keep=sha256)
        return target

    def entries(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every cached blob with its stat (size, access time)."""
        for head in _scan(self.root):
            if not head.is_dir(follow_symlinks=False):
                continue
            for entry in _scan(Path(head.path)):
                if sha_of(f"sha256/{head.name}/{entry.name}") is None:
                    if entry.name.startswith((".tmp-", ".lock-")):
                        _drop_if_stale(entry)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    yield Path(entry.path), entry.stat(follow_symlinks=False)

    def evict(self, keep: str | None = None) -> int:
        """Remove least recently used entries until the cache holds at most ``max_bytes`` (sparing ``keep`` and
        the entries used in the last RECENT seconds). Returns the bytes removed."""
        found = list(self.entries())
        total = sum(st.st_size for _, st in found)
        self._scanned = time.monotonic()
        self._total = total
        if total <= self.max_bytes:
            return 0
        recent = time.time() - RECENT
        removed = 0
        for path, st in sorted(found, key=lambda e: e[1].st_atime):
            if total - removed <= self.max_bytes:
                break
            if path.name == keep or st.st_atime > recent:
                continue
            path.unlink(missing_ok=True)
            removed += st.st_size
        self._total = total - removed
        return removed

    def _touch(self, path: Path) -> None:
        """Record a use: the entry's access time (for LRU eviction), at most every TOUCH_EVERY seconds."""
        try:
            st = path.stat()
            now = time.time_ns()
            if now - st.st_atime_ns > TOUCH_EVERY * 1e9:
                os.utime(path, ns=(now, st.st_mtime_ns))
        except OSError:  # evicted meanwhile: the caller still has its path, and will open it or miss
            pass

    def _log(self, sha256: str, size: int, seconds: float) -> None:
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(), "sha256": sha256, "bytes": size,
                           "seconds": round(seconds, 4), "pid": os.getpid()}) + "\n"
        log = self.root / LOG_NAME
        try:
            if log.stat().st_size > LOG_MAX:
                os.replace(log, self.root / f"{LOG_NAME}.1")
        except FileNotFoundError:
            pass
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: lines of processes never interleave
        finally:
            os.close(fd)


def read_downloads(cache_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The downloads a cache recorded (the rotated log, then the current one), oldest first."""
    root = Path(cache_dir)
    found: list[dict[str, Any]] = []
    for path in (root / f"{LOG_NAME}.1", root / LOG_NAME):
        with contextlib.suppress(FileNotFoundError):
            found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting at most WAIT_FOR_OTHER seconds, then going on without it); the
    lock file is removed on the way out."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + WAIT_FOR_OTHER
        pause = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # a process that waits on it then finds the blob cached
    finally:
        os.close(fd)


def _scan(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _drop_if_stale(entry: os.DirEntry[str]) -> None:
    with contextlib.suppress(OSError):
        if entry.stat(follow_symlinks=False).st_mtime < time.time() - STALE:
            os.unlink(entry.path)
