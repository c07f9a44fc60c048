"""The artifact store on an S3-compatible bucket (AWS S3, MinIO, Ceph...), so that the machines of a farm share
nothing but the network.

Why boto3, and not fsspec/s3fs: boto3 is the AWS-maintained client; its TransferManager (s3transfer) uploads
large files in multipart, parts in parallel, and aborts the upload on error; it downloads in parallel ranged GETs;
and it reads endpoint and credentials the way every AWS tool does (the ``AWS_*`` variables, ``~/.aws`` config and
credentials files, instance and container roles). s3fs sits on aiobotocore, which pins botocore to a narrow range
of versions: every upgrade of one waits on the other, and a farm that also uses boto3 gets conflicts.

- **Keys** are ``<prefix>/sha256/<2 hex>/<64 hex>``: the ``artifacts`` rows keep the same relative uri as with a
  directory. With ``LATENTFARM_S3_ENDPOINT`` (a MinIO-style server) addressing is path-style.
- **Writes are atomic.** A single PUT is, and a multipart upload (files from ``MULTIPART_THRESHOLD`` on, in parts
  of ``PART_SIZE``) is invisible until it is completed: an upload that fails is aborted, and one killed midway
  leaves an incomplete upload that ``drop_incomplete`` (``latentfarm gc``) aborts. A blob smaller than
  ``PUT_WITHOUT_LOOKUP`` (and than the multipart threshold) is PUT without asking first whether it is there: the
  lookup would cost a request of its own, and blobs are seldom stored twice (new outputs are new bytes, a cached
  job stores nothing); a PUT over an existing blob writes the same bytes and makes its time now. A larger blob
  already there is not uploaded again; if it is older than ``REFRESH_AFTER`` its time is refreshed (a copy onto
  itself). Either way gc's grace period protects a blob a running job has just stored again.
- **Reads** go through the host's ``BlobCache``: ``verified_path`` downloads a blob once per host, streamed to disk
  and hashed on the way (a large one in parallel ranged GETs, written in order).
- **Errors** are translated here, once: an endpoint that does not answer, a server error or throttling is
  StorageUnavailable (transient: a job is retried), a missing bucket or refused credentials StorageMisconfigured,
  a missing blob NotFound. Messages are one line and carry no secret.
- **Processes.** A boto3 client is made lazily in each process (a forked worker must not share its parent's
  connection pool); it is thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

from storage.artifacts import (
    BLOCK,
    ArtifactStore,
    BlobInfo,
    HashingWriter,
    StoredBlob,
    blob_uri,
    hash_file,
    sha_of,
    write_atomically,
)
from storage.blobcache import BlobCache
from storage.errors import ArtifactCorrupt, LatentfarmError, NotFound, StorageMisconfigured, StorageUnavailable

MULTIPART_THRESHOLD = 64 << 20  # bytes: larger files are uploaded (and downloaded) in parts, in parallel
PART_SIZE = 16 << 20  # bytes per part (S3 wants at least 5 MiB, and at most 10,000 parts: 160 GiB here)
CONCURRENCY = 8  # parts in flight at once, per transfer
CONNECT_TIMEOUT = 5.0  # seconds
READ_TIMEOUT = 60.0  # seconds without a byte
ATTEMPTS = 3  # tries of one request (boto3's standard retry mode, with backoff) before it is an error
REFRESH_AFTER = 600.0  # seconds: a blob stored again that is older than this gets its time refreshed
PUT_WITHOUT_LOOKUP = 8 << 20  # bytes: a smaller blob is PUT without a HEAD first (one request instead of two)
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's maximum)
COPY_LIMIT = 5 << 30  # bytes: CopyObject's limit; a larger blob is not refreshed
_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
            "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403", "Forbidden"}
_PASSING = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException",
            "RequestTimeTooSkewed", "503", "500"}


class S3Store(ArtifactStore):
    """Blobs as objects of ``bucket`` under ``prefix``, read through ``cache`` (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str, cache: BlobCache, endpoint: str | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE,
                 attempts: int = ATTEMPTS) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = cache
        self.endpoint = endpoint or None
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.attempts = attempts
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    # -- the interface --

    def location(self, uri: str) -> str:
        return f"s3://{self.bucket}/{self.key(uri)}"

    def put_bytes(self, data: bytes) -> StoredBlob:
        sha = hashlib.sha256(data).hexdigest()
        uri = blob_uri(sha)
        if self._without_lookup(len(data)) or not self._present(uri):
            with self._errors(f"storing {uri}"):
                if len(data) >= self.multipart_threshold:
                    self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.key(uri), Config=self._transfer())
                else:
                    self.client.put_object(Bucket=self.bucket, Key=self.key(uri), Body=data)
        return StoredBlob(uri, sha, len(data))

    def put_file(self, path: str | os.PathLike[str]) -> StoredBlob:
        sha, size = hash_file(path)
        uri = blob_uri(sha)
        if self._without_lookup(size) or not self._present(uri):
            with self._errors(f"storing {uri}"):
                self.client.upload_file(os.fspath(path), self.bucket, self.key(uri), Config=self._transfer())
        return StoredBlob(uri, sha, size)

    def get_bytes(self, uri: str, sha256: str | None = None) -> bytes:
        buf = io.BytesIO()
        self._download(uri, buf, lambda: NotFound(f"artifact blob missing: {self.location(uri)}"))
        data = buf.getvalue()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupt(f"artifact blob {self.location(uri)} does not match its sha256 {sha256}")
        return data

    def copy_out(self, uri: str, sha256: str, dest: Path) -> None:
        def copy(out: BinaryIO) -> None:
            hashing = HashingWriter(out)
            self._download(uri, hashing, lambda: NotFound(f"artifact blob missing: {self.location(uri)}"))
            if hashing.hexdigest() != sha256:
                raise ArtifactCorrupt(f"artifact blob {self.location(uri)} does not match its sha256 {sha256}")

        write_atomically(dest, copy)

    def verified_path(self, uri: str, sha256: str, what: str) -> Path:
        """The blob's copy in the host's cache, downloaded once per host (see ``storage.blobcache``)."""
        return self.cache.fetch(sha256, what, lambda out: self._download(uri, out, lambda: NotFound(
            f"{what}: its blob is missing from the artifact store ({self.location(uri)})")))

    def stat(self, uri: str) -> BlobInfo | None:
        head = self._head(uri)
        return None if head is None else BlobInfo(uri, int(head["ContentLength"]), head["LastModified"])

    def delete(self, uri: str) -> None:
        with self._errors(f"deleting {uri}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(uri))

    def delete_many(self, uris: Iterable[str]) -> None:
        batch: list[str] = []
        for uri in uris:
            batch.append(uri)
            if len(batch) == DELETE_BATCH:
                self._delete_objects(batch)
                batch = []
        if batch:
            self._delete_objects(batch)

    def blobs(self) -> Iterator[BlobInfo]:
        with self._errors("listing the blobs"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.key("sha256/"))
            for page in pages:
                for obj in page.get("Contents", []):
                    uri = self._uri(obj["Key"])
                    if uri is not None:
                        yield BlobInfo(uri, int(obj["Size"]), obj["LastModified"])

    def drop_incomplete(self, older_than: float, dry_run: bool = False) -> int:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        dropped = 0
        with self._errors("listing incomplete uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=self.key("sha256/"))
            stale = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])
                     if u["Initiated"] < cutoff]
        for key, upload_id in stale:
            if not dry_run:
                with contextlib.suppress(_Missing), self._errors(f"aborting an upload of {key}"):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            dropped += 1
        return dropped

    # -- the client --

    @property
    def client(self) -> Any:
        """This process's boto3 client (made on first use; again in a forked child)."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = self._make_client()
                self._client_pid = os.getpid()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {}
        if self.endpoint:
            # servers other than AWS: path-style addresses (no bucket subdomains), and no checksums beyond those
            # S3 requires (boto3 adds CRC trailers by default, which some servers refuse); sha256 checks the bytes
            options = {"s3": {"addressing_style": "path"}, "request_checksum_calculation": "when_required",
                       "response_checksum_validation": "when_required"}
        config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                        retries={"max_attempts": self.attempts, "mode": "standard"},
                        max_pool_connections=CONCURRENCY + 4, user_agent_extra="latentfarm", **options)
        with self._errors("connecting"):
            return boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=self.part_size,
                                max_concurrency=CONCURRENCY, use_threads=True, preferred_transfer_client="classic")
        # parts of a download waiting to be written in order (to a file that cannot seek): a few, not the 1000
        # s3transfer allows by default
        config.max_in_memory_download_chunks = 4 * CONCURRENCY
        return config

    # -- helpers --

    def key(self, uri: str) -> str:
        """The object key of a blob's uri: under the prefix."""
        return f"{self.prefix}/{uri}" if self.prefix else uri

    def _uri(self, key: str) -> str | None:
        uri = key[len(self.prefix) + 1:] if self.prefix else key
        return uri if sha_of(uri) is not None else None

    def _head(self, uri: str) -> dict[str, Any] | None:
        try:
            with self._errors(f"looking up {uri}"):
                head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(uri))
                return head
        except _Missing:
            return None

    def _without_lookup(self, size: int) -> bool:
        """Whether a blob of ``size`` bytes is PUT without looking it up first (see the module docstring)."""
        return size < min(PUT_WITHOUT_LOOKUP, self.multipart_threshold)

    def _present(self, uri: str) -> bool:
        """Whether the blob is stored already; if so and it is older than REFRESH_AFTER, its time is made now."""
        head = self._head(uri)
        if head is None:
            return False
        age = (datetime.now(timezone.utc) - head["LastModified"]).total_seconds()
        if age > REFRESH_AFTER and int(head["ContentLength"]) < COPY_LIMIT:
            try:
                with self._errors(f"refreshing {uri}"):
                    key = self.key(uri)
                    self.client.copy_object(Bucket=self.bucket, Key=key, MetadataDirective="REPLACE",
                                            CopySource={"Bucket": self.bucket, "Key": key})
            except _Missing:  # removed meanwhile (gc): store it again
                return False
        return True

    def _download(self, uri: str, out: Any, missing: Callable[[], LatentfarmError]) -> None:
        """Write the blob to ``out``: one streamed GET, or parallel ranged GETs from MULTIPART_THRESHOLD on."""
        key = self.key(uri)
        try:
            with self._errors(f"reading {uri}"):
                response = self.client.get_object(Bucket=self.bucket, Key=key)
                body = response["Body"]
                with contextlib.closing(body):
                    if int(response["ContentLength"]) < self.multipart_threshold:
                        for block in body.iter_chunks(BLOCK):
                            out.write(block)
                        return
                self.client.download_fileobj(self.bucket, key, out, Config=self._transfer())
        except _Missing as e:
            raise missing() from e

    def _delete_objects(self, uris: list[str]) -> None:
        with self._errors(f"deleting {len(uris)} blobs"):
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self.key(u)} for u in uris], "Quiet": True})
        failed = answer.get("Errors") or []
        if failed:
            first = failed[0]
            raise StorageUnavailable(f"the artifact store {self.url} did not delete {len(failed)} blobs "
                                     f"({first.get('Code')}: {first.get('Key')})")

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate boto3's errors (see the module docstring); a missing key is ``_Missing`` for the caller."""
        try:
            yield
        except LatentfarmError:
            raise
        except Exception as e:  # noqa: BLE001 - every boto3 error is translated here, once
            translated = self._translate(e, doing)
            if translated is None:
                raise
            raise translated from e

    def _translate(self, error: BaseException, doing: str) -> Exception | None:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"the artifact store {self.url}" + (f" at {self.endpoint}" if self.endpoint else "")
        seen: BaseException | None = error
        for _ in range(5):  # boto3 wraps transfer errors (S3UploadFailedError, RetriesExceededError)
            if seen is None:
                break
            if isinstance(seen, ClientError):
                code = str(seen.response.get("Error", {}).get("Code", ""))
                status = int(seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if code in _MISSING:
                    return _Missing(code)
                if code == "NoSuchBucket":
                    return StorageMisconfigured(f"{where}: the bucket {self.bucket!r} does not exist")
                if code in _REFUSED:
                    return StorageMisconfigured(
                        f"{where} refused this farm's credentials ({code}, {doing}): check AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, or the AWS profile")
                if code in _PASSING or status >= 500:
                    return StorageUnavailable(f"{where} is unavailable ({code or status}, {doing}): try again later")
                return StorageMisconfigured(f"{where} refused a request ({code or status}, {doing})")
            if isinstance(seen, (NoCredentialsError, PartialCredentialsError)):
                return StorageMisconfigured(
                    f"{where}: no credentials ({doing}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an "
                    "AWS profile or role")
            if isinstance(seen, (ConnectionError, HTTPClientError)):
                return StorageUnavailable(f"{where} does not answer ({type(seen).__name__}, {doing})")
            if isinstance(seen, BotoCoreError):
                return StorageMisconfigured(f"{where}: {_first_line(seen)} ({doing})")
            seen = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
        return None


class _Missing(NotFound):
    """No such key (translated by the caller into the NotFound it means)."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
