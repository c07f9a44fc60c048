"""The host's read cache of blobs: bounded (least recently used first, sparing recent entries), shared by processes
(a blob downloaded once per host), verified (a damaged entry is downloaded again), and counted (downloads.log)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import blobcache
from storage.blobcache import BlobCache, read_downloads
from storage.errors import ArtifactCorrupt
from tests.conftest import REPO
from tests.s3 import Bucket, s3_bucket, s3_server  # noqa: F401


def _blob(n: int, size: int = 1000) -> tuple[str, bytes]:
    data = bytes([n]) * size
    return hashlib.sha256(data).hexdigest(), data


def _fetch(cache: BlobCache, data: bytes) -> Path:
    return cache.fetch(hashlib.sha256(data).hexdigest(), "a blob", lambda out: out.write(data))


def _age(path: Path, seconds: float = 3600) -> None:
    """Make the entry look last used ``seconds`` ago."""
    st = path.stat()
    os.utime(path, ns=(time.time_ns() - int(seconds * 1e9), st.st_mtime_ns))


def test_least_recently_used_entries_go_first_but_not_recent_ones(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=2500)
    (a_sha, a), (b_sha, b), (c_sha, c), (d_sha, d), (e_sha, e) = (_blob(i) for i in range(5))
    _age(_fetch(cache, a), 7200)
    _age(_fetch(cache, b), 3600)
    _fetch(cache, c)  # 3000 bytes: a, the least recently used, goes
    assert {p.name for p, _ in cache.entries()} == {b_sha, c_sha}
    _age(cache.path(c_sha), 600)
    assert cache.get(b_sha, "b") is not None  # a use: b is now the most recent
    _fetch(cache, d)  # c goes, although fetched after b: b was used since
    assert {p.name for p, _ in cache.entries()} == {b_sha, d_sha}
    _fetch(cache, e)  # over the bound, but b and d were used within RECENT seconds: another process may open them
    assert {p.name for p, _ in cache.entries()} == {b_sha, d_sha, e_sha}
    stale = cache.path(a_sha).parent / ".tmp-left-by-a-dead-process"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * blobcache.STALE, time.time() - 2 * blobcache.STALE))
    cache.evict()
    assert not stale.exists()
    assert [d["sha256"] for d in read_downloads(cache.root)] == [a_sha, b_sha, c_sha, d_sha, e_sha]


def test_a_blob_larger_than_the_cache_is_kept_until_the_next_fetch(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache", max_bytes=100)
    sha, data = _blob(7)
    assert _fetch(cache, data).read_bytes() == data and cache.get(sha, "x") is not None


def test_a_damaged_entry_is_downloaded_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    sha, data = _blob(1)
    path = _fetch(cache, data)
    path.write_bytes(b"\0" * len(data))  # same size, other bytes
    assert _fetch(cache, data).read_bytes() == data
    path.write_bytes(b"short")
    assert BlobCache(tmp_path / "cache").fetch(sha, "x", lambda out: out.write(data)).read_bytes() == data
    assert [d["sha256"] for d in read_downloads(cache.root)] == [sha] * 3


def test_a_stored_blob_that_does_not_match_is_corrupt_and_not_cached(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "cache")
    sha, _ = _blob(2)
    with pytest.raises(ArtifactCorrupt, match="artifact 'model.keras' of job 'cnn'"):
        cache.fetch(sha, "artifact 'model.keras' of job 'cnn'", lambda out: out.write(b"not the blob"))
    assert cache.get(sha, "x") is None and not list(cache.root.rglob(".tmp-*"))
    assert read_downloads(cache.root) == []


def test_the_downloads_log_records_each_download_and_stays_bounded(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobcache, "LOG_MAX", 400)
    cache = BlobCache(tmp_path / "cache")
    blobs = [_blob(i, 100 + i) for i in range(12)]
    for _, data in blobs:
        _fetch(cache, data)
    logged = read_downloads(cache.root)
    assert 2 <= len(logged) < 12 and logged[-1]["sha256"] == blobs[-1][0] and logged[-1]["bytes"] == 111
    assert all(d["seconds"] >= 0 and d["pid"] == os.getpid() for d in logged)
    assert (cache.root / "downloads.log.1").is_file()
    assert (cache.root / "downloads.log").stat().st_size <= 400 + 200


FETCH = """
import hashlib, sys, time
from pathlib import Path
from storage.blobcache import BlobCache
from storage.s3store import S3Store

bucket, endpoint, cache, uri, sha, go = sys.argv[1:]
store = S3Store(bucket, "farm", BlobCache(cache), endpoint)
store.client  # made before the start, so that both processes ask at once
while not Path(go).exists():
    time.sleep(0.001)
path = store.verified_path(uri, sha, "the cnn")
print(hashlib.sha256(path.read_bytes()).hexdigest())
"""


def test_two_processes_fetching_one_blob_download_it_once(s3_bucket: Bucket, tmp_path: Path) -> None:  # noqa: F811
    from storage.s3store import S3Store

    store = S3Store(s3_bucket.name, "farm", BlobCache(tmp_path / "unused"), s3_bucket.endpoint)
    blob = store.put_bytes(os.urandom(8 << 20))
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", FETCH, s3_bucket.name, s3_bucket.endpoint, str(tmp_path / "cache"),
                               blob.uri, blob.sha256, str(go)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(1.0)  # both started and waiting
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [blob.sha256, blob.sha256]  # never a torn file
    downloads = read_downloads(tmp_path / "cache")
    assert [(d["sha256"], d["bytes"]) for d in downloads] == [(blob.sha256, 8 << 20)]
