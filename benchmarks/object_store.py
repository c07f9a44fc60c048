"""The artifact store's two backends side by side: a directory, and a bucket on moto's S3 server (loopback).

    .venv/bin/python benchmarks/object_store.py [--mib 128] [--small 500]

For each backend: storing one large file (``--mib``; multipart on the bucket, 16 MiB parts in parallel), reading it
back as a local verified file the first time (the bucket: a download into the host's read cache, parallel ranged
GETs) and again (a cache hit: no request), and storing and reading ``--small`` small blobs (4 KiB). moto's server
runs in a process of its own (``python -m moto.server``: not sharing this process's GIL) and keeps objects in its
memory, on loopback: the figures measure the client's and the server's work (hashing, requests, copies), not a
network; a real bucket adds its latency per request and its bandwidth. The CPU time moto's server used is printed
per backend (its process shares this machine's cores with the client).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.artifacts import ArtifactStore, DirectoryStore  # noqa: E402
from storage.blobcache import BlobCache, read_downloads  # noqa: E402
from storage.s3store import S3Store  # noqa: E402

# Dummy credentials: moto accepts any. No AWS config of this machine's user, no instance-metadata lookups.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "lf-bench", "AWS_SECRET_ACCESS_KEY": "lf-bench-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-creds", "AWS_EC2_METADATA_DISABLED": "true"}


@contextmanager
def moto_server(log: Path) -> Iterator[tuple[str, int]]:
    """moto's S3 server in a process of its own on a free port of 127.0.0.1; yields its endpoint and pid."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise SystemExit("moto's server is not installed: pip install -e .[dev]") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"moto's server did not start: {log.read_text()[-2000:]}") from e
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time a process has used so far (Linux: /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(store: ArtifactStore, big: Path, small: list[bytes]) -> dict[str, float]:
    out: dict[str, float] = {}
    t = time.perf_counter()
    blob = store.put_file(big)
    out["put large (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    store.verified_path(blob.uri, blob.sha256, "large")
    out["first read (s)"] = time.perf_counter() - t
    t = time.perf_counter()
    store.verified_path(blob.uri, blob.sha256, "large")
    out["second read (ms)"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    stored = [store.put_bytes(data) for data in small]
    out["put small (ms each)"] = (time.perf_counter() - t) * 1000 / len(small)
    t = time.perf_counter()
    for b in stored:
        store.verified_path(b.uri, b.sha256, "small")
    out["first read small (ms each)"] = (time.perf_counter() - t) * 1000 / len(small)
    t = time.perf_counter()
    for b in stored:
        store.verified_path(b.uri, b.sha256, "small")
    out["cached read small (ms each)"] = (time.perf_counter() - t) * 1000 / len(small)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--small", type=int, default=500)
    args = parser.parse_args()
    os.environ.update(AWS_ENV)
    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        work = Path(tmp)
        with moto_server(work / "moto.log") as (endpoint, pid):
            big = work / "big.bin"
            with open(big, "wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(1 << 20))
            small = [os.urandom(4096) for _ in range(args.small)]
            bucket = S3Store("bench-bucket", "farm", BlobCache(work / "cache"), endpoint)
            bucket.client.create_bucket(Bucket="bench-bucket")
            rows, moto_cpu = {}, {}
            for name, store in (("directory", DirectoryStore(work / "dir")), ("bucket (moto)", bucket)):
                before = cpu_seconds(pid)
                rows[name] = measure(store, big, small)
                moto_cpu[name] = cpu_seconds(pid) - before
            downloads = read_downloads(work / "cache")
    for key in rows["directory"]:
        print(f"{key:<28} " + "  ".join(f"{name}: {r[key]:8.3f}" for name, r in rows.items()))
    print(f"{'moto server CPU (s)':<28} " + "  ".join(f"{name}: {t:8.3f}" for name, t in moto_cpu.items()))
    print(f"downloads recorded by the cache: {len(downloads)} (1 large + {args.small} small, each once)")


if __name__ == "__main__":
    main()
