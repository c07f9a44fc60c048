"""latentfarm's settings: every environment variable latentfarm reads is read here, once, into one frozen object.
Each default is documented where it is defined; the README's settings table says the same.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import URL_PASSWORD, UserError, mask_secrets

EMBEDDED_BROKER = "memory://localhost/"
MAX_RENEW_EVERY = 5.0  # seconds between lease renewals at most, whatever the lease length
MAX_REAP_EVERY = 10.0  # seconds between reaper passes at most


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
    # LATENTFARM_ARTIFACTS: the artifact store's directory (shared by all machines of a farm, e.g. NFS).
    # Default: ./latentfarm-artifacts
    artifacts_dir: Path
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

    def __post_init__(self) -> None:
        if self.job_memory <= 0:
            object.__setattr__(self, "job_memory", default_job_memory())

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: submit runs an in-process worker on memory://."""
        return self.broker_url.startswith("memory://")

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error, a log line or an answer: the token and the URLs' passwords."""
        found = [self.api_token or ""]
        for url in (self.database_url, self.broker_url):
            match = URL_PASSWORD.search(url)
            if match:
                found.append(match["password"])
        return tuple(s for s in found if s)

    def mask(self, text: str) -> str:
        """``mask_secrets`` with this farm's secrets."""
        return mask_secrets(text, self.secrets)

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
            artifacts_dir=Path(env.get("LATENTFARM_ARTIFACTS", "latentfarm-artifacts")).resolve(),
            data_dir=Path(env.get("LATENTFARM_DATA_DIR", str(default_data))).expanduser().resolve(),
            lease_seconds=number("LATENTFARM_LEASE_SECONDS", 60),
            retry_backoff=number("LATENTFARM_RETRY_BACKOFF", 5),
            resend_after=number("LATENTFARM_RESEND_AFTER", 30),
            worker_name=env.get("LATENTFARM_WORKER_NAME", f"latentfarm@{socket.gethostname()}"),
            api_token=env.get("LATENTFARM_API_TOKEN", "").strip() or None,
            gpus=_gpu_list(env.get("LATENTFARM_GPUS")),
            gpu=env.get("LATENTFARM_GPU") or None,
            allowed_hosts=None if hosts is None else tuple(h.strip().lower() for h in hosts.split(",") if h.strip()),
            job_memory=job_memory,
        )


class SettingsError(UserError):
    """An environment variable's value does not parse."""
