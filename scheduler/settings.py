"""latentfarm's settings: every environment variable latentfarm reads is read here, once, into one frozen object.
Each default is documented where it is defined; the README's settings table says the same.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from scheduler.errors import URL_PASSWORD, UserError, mask_secrets
from storage.artifacts import ArtifactStore, is_bucket, open_artifacts, parse_bucket
from storage.blobcache import DEFAULT_SIZE, default_cache_dir

EMBEDDED_BROKER = "memory://localhost/"
MAX_RENEW_EVERY = 5.0  # seconds between lease renewals at most, whatever the lease length
MAX_REAP_EVERY = 10.0  # seconds between reaper passes at most
LOST_AFTER_BEATS = 3  # heartbeats a worker may miss before it counts as lost


def _abs_sqlite(url: str) -> str:
    """Make a relative SQLite path absolute, so workers started elsewhere find the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def renew_interval(lease_seconds: float) -> float:
    """Seconds between renewals of a running job's lease: a sixth of the lease, at most MAX_RENEW_EVERY."""
    return min(max(lease_seconds / 6, 0.05), MAX_RENEW_EVERY)


def reap_interval(lease_seconds: float) -> float:
    """Seconds between reaper passes: a sixth of the lease (a dead worker's job waits at most a lease and a
    sixth), from 0.5 s to MAX_REAP_EVERY."""
    return min(max(lease_seconds / 6, 0.5), MAX_REAP_EVERY)


def _gpu_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(g.strip() for g in value.split(",") if g.strip())


def default_job_memory() -> int:
    """Half of this machine's physical memory (a job shares the machine with its worker and the system)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - a system without sysconf
        return 4 << 30


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``512M``, ``8G``, ``8GiB``, ``1.5g`` or a number of bytes, as bytes; ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a size such as 512M or 8G, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Settings:
    # LATENTFARM_DATABASE_URL: the results database. Default: SQLite file latentfarm.db in the working dir.
    # Production: postgresql+psycopg://user@host/db
    database_url: str
    # LATENTFARM_BROKER_URL: the Celery broker. Default memory:// = the embedded mode, where `submit` runs a
    # worker in-process until the batch is done. Production: redis://host:6379/0
    broker_url: str
    _: KW_ONLY  # the fields below are given by name
    # LATENTFARM_ARTIFACTS: the artifact store: a directory (every machine of a farm mounts the same, e.g. NFS), or an
    # S3-compatible bucket, s3://bucket/prefix (credentials from the AWS defaults). Default: ./latentfarm-artifacts
    artifacts: str = ""
    # LATENTFARM_DATA_DIR: where dataset files (mnist.npz) are looked up. Default: Keras' cache dir,
    # $KERAS_HOME/datasets (~/.keras/datasets).
    data_dir: Path
    # LATENTFARM_LEASE_SECONDS: how long a running job's lease lasts without a renewal. A worker renews it every
    # lease / 6 seconds (at most every 5 s); the reaper requeues a job whose lease ran out (its worker died).
    lease_seconds: float = 60.0
    # LATENTFARM_RETRY_BACKOFF: seconds before the first retry of a job that failed with a transient error
    # (connection lost, device out of memory); doubled on each further attempt, at most 300 s.
    retry_backoff: float = 5.0
    # LATENTFARM_RESEND_AFTER: the reaper re-sends the message of a job queued this many seconds ago if its
    # queue on the broker is empty (the broker lost it: a restart without persistence, a send that failed).
    resend_after: float = 30.0
    # LATENTFARM_HEARTBEAT_SECONDS: seconds between a worker's heartbeats in the `workers` table. A worker unseen
    # for LOST_AFTER_BEATS of them is lost (its queues count as unserved). The same on every machine of a farm.
    heartbeat_seconds: float = 5.0
    # LATENTFARM_WORKER_NAME: the name a worker records on the jobs it runs (default: latentfarm@<host>).
    worker_name: str = f"latentfarm@{socket.gethostname()}"
    # LATENTFARM_API_TOKEN: the bearer token `latentfarm serve` asks of every route; unset or empty: none, and the
    # server listens on 127.0.0.1 only.
    api_token: str | None = None
    # LATENTFARM_GPUS: this machine's GPU indices, e.g. "0,1", where nvidia-smi cannot list them (or to simulate
    # GPUs in tests). Default: unset, ask nvidia-smi.
    gpus: tuple[str, ...] | None = None
    # LATENTFARM_GPU: the GPU this worker process is pinned to, recorded on the jobs it runs. Set by
    # `latentfarm worker --gpus` for each process it starts; unset on CPU workers.
    gpu: str | None = None
    # LATENTFARM_ALLOWED_HOSTS: the host names (comma-separated, "*" for any) `latentfarm serve` answers: a request
    # for another Host is refused (DNS rebinding). Default: without a token, the loopback names only (127.0.0.1,
    # localhost, ::1); with a token, any (every route then needs the token anyway).
    allowed_hosts: tuple[str, ...] | None = None
    # LATENTFARM_JOB_MEMORY: the memory one job may use, as bytes or with a unit (512M, 8G). A spec whose job
    # would need more, by the estimate of its kind, is refused at submit; a job that allocates more at run time
    # fails with "out of memory: ..." and its worker goes on. Default: half of this machine's memory.
    job_memory: int = 0
    # Not from the environment: whether this process is a worker of its own (`latentfarm worker`), which a job
    # stuck past its hard time limit may kill (its supervisor restarts it). An embedded worker never is.
    owns_process: bool = False
    # The former name of ``artifacts``, kept for callers that give a directory: given alone, it becomes
    # ``artifacts``; read, it is the store's directory (None for a bucket).
    artifacts_dir: Path | None = None
    # LATENTFARM_S3_ENDPOINT: the URL of an S3-compatible server other than AWS (MinIO: http://host:9000); addressing
    # is then path-style. Default: unset, AWS (the endpoint of the AWS config's region).
    s3_endpoint: str | None = None
    # LATENTFARM_CACHE_DIR: this host's read cache of a bucket's blobs (shared by its processes).
    # Default: ~/.cache/latentfarm/blobs ($XDG_CACHE_HOME/latentfarm/blobs)
    cache_dir: Path = field(default_factory=default_cache_dir)
    # LATENTFARM_CACHE_SIZE: the most that cache holds, as bytes or with a unit (512M, 10G); least recently used blobs
    # go first. Default: 10G
    cache_size: int = DEFAULT_SIZE
    # Not set by a variable of latentfarm: the artifact store's credentials found in the environment
    # (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), masked like the other secrets.
    storage_secrets: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.job_memory <= 0:
            object.__setattr__(self, "job_memory", default_job_memory())
        if not self.artifacts:
            object.__setattr__(self, "artifacts", str(self.artifacts_dir or Path("latentfarm-artifacts").resolve()))
        object.__setattr__(self, "artifacts_dir", None if is_bucket(self.artifacts) else Path(self.artifacts))

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: submit runs an in-process worker on memory://."""
        return self.broker_url.startswith("memory://")

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error, a log line or an answer: the token and the URLs' passwords."""
        found = [self.api_token or "", *self.storage_secrets]
        for url in (self.database_url, self.broker_url, self.s3_endpoint or ""):
            match = URL_PASSWORD.search(url)
            if match:
                found.append(match["password"])
        return tuple(s for s in found if s)

    def mask(self, text: str) -> str:
        """``mask_secrets`` with this farm's secrets."""
        return mask_secrets(text, self.secrets)

    @property
    def worker_lost_after(self) -> float:
        """Seconds without a heartbeat after which a worker is lost."""
        return LOST_AFTER_BEATS * self.heartbeat_seconds

    def artifact_store(self) -> ArtifactStore:
        """The artifact store these settings name, with the farm's endpoint and this host's cache (a bucket's client
        is made on first use: nothing is sent here)."""
        return open_artifacts(self.artifacts, self.s3_endpoint, self.cache_dir, self.cache_size)

    @property
    def reap_every(self) -> float:
        """Seconds between reaper passes for this lease (``reap_interval``)."""
        return reap_interval(self.lease_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of the environment ``env`` (default: this process's). A value that does not parse is a
        SettingsError naming the variable."""
        env = os.environ if env is None else env
        default_data = Path(env.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"

        def number(name: str, default: float) -> float:
            value = env.get(name)
            if value is None:
                return default
            try:
                parsed = float(value)
            except ValueError:
                parsed = float("nan")
            if not 0 < parsed < float("inf"):
                raise SettingsError(f"{name}: expected a number of seconds > 0, got {value!r}")
            return parsed

        memory = env.get("LATENTFARM_JOB_MEMORY")
        try:
            job_memory = parse_bytes(memory) if memory else 0
        except ValueError as e:
            raise SettingsError(f"LATENTFARM_JOB_MEMORY: {e}") from e
        hosts = env.get("LATENTFARM_ALLOWED_HOSTS")
        return cls(
            database_url=_abs_sqlite(env.get("LATENTFARM_DATABASE_URL", "sqlite:///latentfarm.db")),
            broker_url=env.get("LATENTFARM_BROKER_URL", EMBEDDED_BROKER),
            artifacts=_artifacts_location(env.get("LATENTFARM_ARTIFACTS", "latentfarm-artifacts")),
            data_dir=Path(env.get("LATENTFARM_DATA_DIR", str(default_data))).expanduser().resolve(),
            lease_seconds=number("LATENTFARM_LEASE_SECONDS", 60),
            retry_backoff=number("LATENTFARM_RETRY_BACKOFF", 5),
            resend_after=number("LATENTFARM_RESEND_AFTER", 30),
            heartbeat_seconds=number("LATENTFARM_HEARTBEAT_SECONDS", 5),
            worker_name=env.get("LATENTFARM_WORKER_NAME", f"latentfarm@{socket.gethostname()}"),
            api_token=env.get("LATENTFARM_API_TOKEN", "").strip() or None,
            gpus=_gpu_list(env.get("LATENTFARM_GPUS")),
            gpu=env.get("LATENTFARM_GPU") or None,
            allowed_hosts=None if hosts is None else tuple(h.strip().lower() for h in hosts.split(",") if h.strip()),
            job_memory=job_memory,
            s3_endpoint=_endpoint(env.get("LATENTFARM_S3_ENDPOINT")),
            cache_dir=Path(env["LATENTFARM_CACHE_DIR"]).expanduser().resolve() if env.get("LATENTFARM_CACHE_DIR")
            else default_cache_dir(env),
            cache_size=_size("LATENTFARM_CACHE_SIZE", env.get("LATENTFARM_CACHE_SIZE"), DEFAULT_SIZE),
            storage_secrets=tuple(v for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if (v := env.get(k))),
        )


def _artifacts_location(value: str) -> str:
    """LATENTFARM_ARTIFACTS checked: a bucket's URL as it is, a directory made absolute (workers started elsewhere
    find the same one)."""
    if not is_bucket(value):
        return str(Path(value).expanduser().resolve())
    try:
        parse_bucket(value)
    except ValueError as e:
        raise SettingsError(f"LATENTFARM_ARTIFACTS: {e}") from e
    return value


def _endpoint(value: str | None) -> str | None:
    if not value:
        return None
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value.strip()):
        raise SettingsError(f"LATENTFARM_S3_ENDPOINT: expected an http:// or https:// URL, got {mask_secrets(value)!r}")
    return value.strip()


def _size(name: str, value: str | None, default: int) -> int:
    try:
        return parse_bytes(value) if value else default
    except ValueError as e:
        raise SettingsError(f"{name}: {e}") from e


class SettingsError(UserError):
    """An environment variable's value does not parse."""
