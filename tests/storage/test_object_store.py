"""The artifact store's interface on both backends: a directory, and an S3 bucket on a real endpoint (moto's server).

Every operation runs on both (``artifacts`` is parametrized); what only one backend has (a multipart upload, a
bucket that does not exist, a writer killed midway, each in its own way) has tests of its own.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.settings import Settings, SettingsError
from storage import s3store
from storage.artifacts import ArtifactStore, DirectoryStore, blob_uri, open_artifacts, parse_bucket, sha_of
from storage.blobcache import BlobCache, read_downloads
from storage.errors import ArtifactCorrupt, NotFound, StorageMisconfigured, StorageUnavailable
from storage.s3store import S3Store
from tests.conftest import REPO
from tests.s3 import CREDENTIALS, Bucket, authenticating_server, isolated_aws_env, s3_bucket, s3_server  # noqa: F401

PART = 5 << 20  # the smallest part S3 (and moto) accepts: the tests' multipart threshold and part size
BIG = bytes(range(256)) * ((2 * PART + 12345) // 256)  # three parts


def s3_store(bucket: Bucket, cache: Path, attempts: int = 3) -> S3Store:
    return S3Store(bucket.name, "farm", BlobCache(cache), bucket.endpoint, multipart_threshold=PART, part_size=PART,
                   attempts=attempts)


@pytest.fixture(params=["directory", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "directory":
        return DirectoryStore(tmp_path / "store")
    return s3_store(request.getfixturevalue("s3_bucket"), tmp_path / "cache")


def overwrite(store: ArtifactStore, uri: str, data: bytes) -> None:
    """Damage a stored blob behind the store's back (bit rot, a careless hand)."""
    if isinstance(store, DirectoryStore):
        store.path_of(uri).write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store.key(uri), Body=data)


def test_bytes_are_content_addressed_and_stored_once(artifacts: ArtifactStore) -> None:
    one = artifacts.put_bytes(b"hello")
    assert one.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" and one.bytes == 5
    assert one.uri == f"sha256/2c/{one.sha256}" and sha_of(one.uri) == one.sha256
    assert artifacts.put_bytes(b"hello") == one  # idempotent
    assert artifacts.get_bytes(one.uri) == b"hello" and artifacts.get_bytes(one.uri, one.sha256) == b"hello"
    assert artifacts.exists(one.uri) and not artifacts.exists(blob_uri("0" * 64))
    info = artifacts.stat(one.uri)
    assert info is not None and info.bytes == 5 and info.sha256 == one.sha256
    assert [b.uri for b in artifacts.blobs()] == [one.uri]
    where = artifacts.location(one.uri)
    assert where.endswith(one.uri) and where.startswith(artifacts.url)
    if isinstance(artifacts, S3Store):
        assert where == f"s3://{artifacts.bucket}/farm/{one.uri}"


def test_files_verified_paths_and_copies(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    blob = artifacts.put_file(src)
    assert blob.bytes == 300_000 and blob.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert artifacts.put_file(src) == blob
    local = artifacts.verified_path(blob.uri, blob.sha256, "artifact 'model.bin' of job 'train'")
    assert local.read_bytes() == src.read_bytes()
    out = tmp_path / "out" / "model.bin"
    artifacts.copy_out(blob.uri, blob.sha256, out)
    assert out.read_bytes() == src.read_bytes()
    assert not list(out.parent.glob(".tmp-*"))


def test_a_large_file_goes_up_in_parts(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(BIG)
    blob = artifacts.put_file(src)
    assert artifacts.verified_path(blob.uri, blob.sha256, "big").read_bytes() == BIG  # parallel ranged GETs
    assert artifacts.get_bytes(blob.uri, blob.sha256) == BIG
    from_bytes = artifacts.put_bytes(BIG[:-1])
    assert artifacts.get_bytes(from_bytes.uri, from_bytes.sha256) == BIG[:-1]
    if isinstance(artifacts, S3Store):  # a multipart object's ETag ends in -<parts>
        for uri in (blob.uri, from_bytes.uri):
            head = artifacts.client.head_object(Bucket=artifacts.bucket, Key=artifacts.key(uri))
            assert head["ETag"].strip('"').endswith("-3")


def test_two_writers_of_one_blob_at_once(artifacts: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(BIG)
    start = threading.Barrier(2)
    results: list[object] = []

    def write() -> None:
        start.wait()
        try:
            results.append(artifacts.put_file(src))
        except Exception as e:  # noqa: BLE001 - the test reports it
            results.append(e)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1], results
    blob = results[0]
    assert [b.uri for b in artifacts.blobs()] == [blob.uri]  # type: ignore[union-attr]
    assert artifacts.get_bytes(blob.uri, blob.sha256) == BIG  # type: ignore[union-attr]


def test_a_blob_stored_again_is_made_young_again(artifacts: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc's grace period protects a blob a job has just stored again, even if it was written long ago."""
    blob = artifacts.put_bytes(b"an old blob")
    if isinstance(artifacts, DirectoryStore):
        os.utime(artifacts.path_of(blob.uri), (time.time() - 86400, time.time() - 86400))
    else:
        monkeypatch.setattr(s3store, "REFRESH_AFTER", 0.0)  # moto's times are whole seconds: refresh one 1 s old
        time.sleep(1.1)
    before = artifacts.stat(blob.uri)
    artifacts.put_bytes(b"an old blob")
    after = artifacts.stat(blob.uri)
    assert before is not None and after is not None and after.modified > before.modified
    assert artifacts.get_bytes(blob.uri, blob.sha256) == b"an old blob"


def test_delete_and_blobs(artifacts: ArtifactStore) -> None:
    blobs = [artifacts.put_bytes(f"blob {i}".encode()) for i in range(5)]
    assert sorted(b.uri for b in artifacts.blobs()) == sorted(b.uri for b in blobs)
    assert {b.uri: b.bytes for b in artifacts.blobs()} == {b.uri: b.bytes for b in blobs}
    artifacts.delete(blobs[0].uri)
    artifacts.delete(blobs[0].uri)  # missing is fine
    artifacts.delete_many([b.uri for b in blobs[1:3]])
    assert sorted(b.uri for b in artifacts.blobs()) == sorted(b.uri for b in blobs[3:])
    with pytest.raises(NotFound):
        artifacts.get_bytes(blobs[0].uri)


def test_damaged_blobs_are_refused(artifacts: ArtifactStore, tmp_path: Path) -> None:
    blob = artifacts.put_bytes(b"the real bytes")
    overwrite(artifacts, blob.uri, b"tampered bytes")
    with pytest.raises(ArtifactCorrupt):
        artifacts.get_bytes(blob.uri, blob.sha256)
    with pytest.raises(ArtifactCorrupt, match="artifact 'z.npy' of job 'encode'"):
        artifacts.verified_path(blob.uri, blob.sha256, "artifact 'z.npy' of job 'encode'")
    with pytest.raises(ArtifactCorrupt):
        artifacts.copy_out(blob.uri, blob.sha256, tmp_path / "out" / "z.npy")
    assert not (tmp_path / "out" / "z.npy").exists() and not list((tmp_path / "out").glob(".tmp-*"))
    if isinstance(artifacts, S3Store):  # nothing damaged is kept in the cache
        assert list(artifacts.cache.entries()) == []


def test_missing_blobs_are_not_found(artifacts: ArtifactStore, tmp_path: Path) -> None:
    uri, sha = blob_uri("ab" * 32), "ab" * 32
    with pytest.raises(NotFound):
        artifacts.get_bytes(uri)
    with pytest.raises(NotFound, match="artifact 'x' of job 'y'"):
        artifacts.verified_path(uri, sha, "artifact 'x' of job 'y'")
    with pytest.raises(NotFound):
        artifacts.copy_out(uri, sha, tmp_path / "x")
    assert artifacts.stat(uri) is None and not (tmp_path / "x").exists()


KILLED_S3 = """
import sys
from storage.blobcache import BlobCache
from storage.s3store import S3Store


class Slow(S3Store):
    def _transfer(self):
        config = super()._transfer()
        config.max_bandwidth = 8 << 20  # bytes per second: the upload takes a few seconds
        config.max_concurrency = 1
        return config


bucket, cache, endpoint, path = sys.argv[1:]
Slow(bucket, "farm", BlobCache(cache), endpoint, multipart_threshold=5 << 20, part_size=5 << 20).put_file(path)
"""


def test_an_upload_killed_midway_leaves_nothing_under_the_key(s3_bucket: Bucket, tmp_path: Path) -> None:  # noqa: F811
    store = s3_store(s3_bucket, tmp_path / "cache")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * PART))
    uri = blob_uri(hashlib.sha256(src.read_bytes()).hexdigest())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_S3, s3_bucket.name, str(tmp_path / "c2"),
                             s3_bucket.endpoint, str(src)], env=env)
    client = store.client
    deadline = time.monotonic() + 30
    try:
        while True:  # until the first part is up
            uploads = client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
            if uploads and client.list_parts(Bucket=s3_bucket.name, Key=uploads[0]["Key"],
                                             UploadId=uploads[0]["UploadId"]).get("Parts"):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the upload ended before it could be killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert uploads[0]["Key"] == store.key(uri)
    assert not store.exists(uri) and list(store.blobs()) == []
    # (a young upload, which may be live, is kept: moto reports every upload as begun in 2010, so not checked here)
    assert store.drop_incomplete(0, dry_run=True) == 1
    assert store.drop_incomplete(0) == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []
    assert store.put_file(src).uri == uri and store.exists(uri)


KILLED_DIRECTORY = """
import sys
from storage.artifacts import DirectoryStore

DirectoryStore(sys.argv[1]).put_file(sys.argv[2])
"""


def test_a_write_killed_midway_leaves_nothing_in_the_directory(tmp_path: Path) -> None:
    """The writer hashes its source (a FIFO the test feeds), then blocks reading it again while its temporary file
    is open: killed there, it leaves only that temporary file, which ``drop_incomplete`` removes."""
    root, fifo = tmp_path / "store", tmp_path / "source"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DIRECTORY, str(root), str(fifo)], env=env)
    try:
        with open(fifo, "wb") as f:
            f.write(b"x" * 100_000)
        deadline = time.monotonic() + 30
        while not list(root.rglob(".tmp-*")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    store = DirectoryStore(root)
    assert list(store.blobs()) == [] and not store.exists(blob_uri(hashlib.sha256(b"x" * 100_000).hexdigest()))
    assert store.drop_incomplete(3600) == 0 and store.drop_incomplete(0) == 1
    assert not list(root.rglob(".tmp-*"))


def test_a_bucket_that_does_not_exist_and_an_endpoint_that_does_not_answer(s3_bucket: Bucket,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    missing = S3Store("lf-no-such-bucket", "", BlobCache(tmp_path / "c1"), s3_bucket.endpoint)
    for call in (lambda: missing.put_bytes(b"x"), lambda: list(missing.blobs()),
                 lambda: missing.verified_path(blob_uri("ab" * 32), "ab" * 32, "w")):
        with pytest.raises(StorageMisconfigured, match="the bucket 'lf-no-such-bucket' does not exist") as e:
            call()
        assert "\n" not in str(e.value) and not StorageMisconfigured.transient
    with socket_closed() as port:
        away = S3Store(s3_bucket.name, "", BlobCache(tmp_path / "c2"), f"http://127.0.0.1:{port}", attempts=1)
        with pytest.raises(StorageUnavailable, match="does not answer") as e:
            away.put_bytes(b"x")
    assert "\n" not in str(e.value) and StorageUnavailable.transient  # a job whose upload failed so is retried


def test_credentials_missing_or_refused(s3_bucket: Bucket, tmp_path: Path,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    nobody = S3Store(s3_bucket.name, "", BlobCache(tmp_path / "c1"), s3_bucket.endpoint)
    with pytest.raises(StorageMisconfigured, match="no credentials"):
        nobody.put_bytes(b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-d00d")
    with authenticating_server(tmp_path) as endpoint:
        refused = S3Store(s3_bucket.name, "", BlobCache(tmp_path / "c2"), endpoint)
        with pytest.raises(StorageMisconfigured, match="refused this farm's credentials") as e:
            refused.put_bytes(b"x")
    assert "wrong-secret-d00d" not in str(e.value) and "\n" not in str(e.value)


def test_commands_say_what_is_wrong_with_the_bucket_in_one_line(s3_bucket: Bucket, tmp_path: Path) -> None:  # noqa: F811
    from scheduler.cli import cli

    env = {**s3_bucket.env(), "LATENTFARM_DATABASE_URL": f"sqlite:///{tmp_path / 'lf.db'}",
           "LATENTFARM_CACHE_DIR": str(tmp_path / "cache"), "LATENTFARM_ARTIFACTS": "s3://lf-no-such-bucket/farm"}
    result = CliRunner().invoke(cli, ["gc"], env=env)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"error: the artifact store s3://lf-no-such-bucket/farm at {s3_bucket.endpoint}: the bucket "
        "'lf-no-such-bucket' does not exist"]
    with socket_closed() as port:
        result = CliRunner().invoke(cli, ["gc"], env={**env, "LATENTFARM_ARTIFACTS": s3_bucket.url,
                                                      "LATENTFARM_S3_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "does not answer" in result.output
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.output


def test_settings_choose_the_backend_and_mask_the_secrets(tmp_path: Path) -> None:
    env = {**isolated_aws_env(), **CREDENTIALS, "LATENTFARM_ARTIFACTS": "s3://my-bucket/runs/2026/",
           "LATENTFARM_S3_ENDPOINT": "http://minio.local:9000", "LATENTFARM_CACHE_DIR": str(tmp_path / "cache"),
           "LATENTFARM_CACHE_SIZE": "512M"}
    settings = Settings.from_env(env)
    store = settings.artifact_store()
    assert isinstance(store, S3Store) and settings.artifacts_dir is None
    assert (store.bucket, store.prefix, store.endpoint) == ("my-bucket", "runs/2026", "http://minio.local:9000")
    assert store.cache.root == tmp_path / "cache" and store.cache.max_bytes == 512 << 20
    assert settings.mask(f"boto said {CREDENTIALS['AWS_SECRET_ACCESS_KEY']}") == "boto said ***"
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in repr(settings)
    local = Settings.from_env({"LATENTFARM_ARTIFACTS": str(tmp_path / "a")})
    assert isinstance(local.artifact_store(), DirectoryStore) and local.artifacts_dir == tmp_path / "a"
    assert local.artifacts == str(tmp_path / "a")
    old = Settings(database_url="sqlite://", broker_url="memory://", artifacts_dir=tmp_path / "b", data_dir=tmp_path)
    assert old.artifacts == str(tmp_path / "b") and isinstance(open_artifacts(old.artifacts), DirectoryStore)
    for name, value in (("LATENTFARM_ARTIFACTS", "s3://"), ("LATENTFARM_ARTIFACTS", "s3://Bad_Bucket/x"),
                        ("LATENTFARM_S3_ENDPOINT", "minio:9000"), ("LATENTFARM_CACHE_SIZE", "lots")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**env, name: value})
    assert parse_bucket("s3://my-bucket") == ("my-bucket", "")


def test_downloads_stream_through_the_cache_once(s3_bucket: Bucket, tmp_path: Path) -> None:  # noqa: F811
    store = s3_store(s3_bucket, tmp_path / "cache")
    blob = store.put_bytes(os.urandom(200_000))
    for _ in range(3):
        path = store.verified_path(blob.uri, blob.sha256, "x")
    assert path.parent.parent == tmp_path / "cache"
    assert [(d["sha256"], d["bytes"]) for d in read_downloads(tmp_path / "cache")] == [(blob.sha256, 200_000)]


class socket_closed:  # noqa: N801 - used as a context manager
    """A port of 127.0.0.1 that nothing listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
