"""A real S3 endpoint for tests: moto's server, on a free port of 127.0.0.1, started once per test process, and a
fresh bucket per test with dummy credentials set in the environment for that test only.

Import the fixtures into a test module (``from tests.s3 import s3_bucket, s3_server  # noqa: F401``). Without moto
installed a test that needs it is skipped locally and fails in CI (``tests.services.unavailable``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import services

# Credentials the test processes present (moto accepts any unless authentication is on)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lf-test-access-key", "AWS_SECRET_ACCESS_KEY": "lf-test-secret-4c1d9e",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Bucket:
    """A bucket of the test's own on the moto server."""

    name: str
    endpoint: str

    @property
    def url(self) -> str:
        """The bucket with a prefix, as LATENTFARM_ARTIFACTS names it."""
        return f"s3://{self.name}/farm"

    def env(self) -> dict[str, str]:
        """What a process of the farm needs in its environment to use the bucket."""
        return {**isolated_aws_env(), **CREDENTIALS, "LATENTFARM_ARTIFACTS": self.url,
                "LATENTFARM_S3_ENDPOINT": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def keys(self) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def isolated_aws_env() -> dict[str, str]:
    """No AWS config of this machine's user, and no instance-metadata lookups: a test sees only what it sets."""
    return {"AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-creds",
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of moto's S3 server, in this test process."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        services.unavailable("moto[server] is not installed (pip install -e .[dev])")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(port=0, ip_address="127.0.0.1", verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh bucket (a unique name), with dummy credentials in this test's environment; emptied and removed after."""
    for name, value in {**isolated_aws_env(), **CREDENTIALS}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    bucket = Bucket(f"lf-test-{uuid.uuid4().hex[:16]}", s3_server)
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    yield bucket
    for upload in client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"])
    for key in bucket.keys():
        client.delete_object(Bucket=bucket.name, Key=key)
    client.delete_bucket(Bucket=bucket.name)


@contextmanager
def authenticating_server(log_dir: Path) -> Iterator[str]:
    """A second moto server, in a process of its own, that checks credentials (it knows none: every request is
    refused as a user with wrong credentials would be). Yields its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with open(log_dir / "moto-auth.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (log_dir / "moto-auth.log").read_text()
                    raise RuntimeError(f"moto's server did not start: {log_text}") from e
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)
