"""Running the farm: ``worker``, ``reap``, ``scheduler``, ``serve`` and ``db upgrade``."""

from __future__ import annotations

import os
import time
from datetime import datetime

import click

from scheduler.celery_app import FarmApp
from scheduler.cli.common import check_schema, handles_errors, open_farm_plane, open_plane, queue_names
from scheduler.cli.render import dumps
from scheduler.errors import UserError
from scheduler.reaper import Reaper, ReapReport, reap
from scheduler.settings import Settings
from storage import migrate, queries
from storage.db import engine_for


@click.command()
@click.option("--gpus", default=None, metavar="all|0,1,...",
              help="Start one worker process per GPU (CUDA_VISIBLE_DEVICES set, solo pool, named gpu<i>@<host>, "
                   "queue gpu) and keep them running. Fails if the machine has no GPU.")
@click.option("--per-gpu", default=None, metavar="K",
              help="With --gpus: K worker processes per GPU (named gpu<i>.<k>@<host>), each with 1/K of 90% of the "
                   "device's memory, so K small jobs run on it side by side (default 1).")
@click.option("--cpu", "cpus", type=click.IntRange(min=0), default=0,
              help="Start this many CPU worker processes (cpu<i>@<host>, queue cpu) and keep them running.")
@click.option("--queues", "-Q", default=None, help="Queues to consume, comma-separated (default gpu,cpu; with "
              "--gpus/--cpu: gpu for GPU workers, cpu for CPU workers).")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Jobs run at once.")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True)
@click.option("--name", "-n", default=None, help="Worker node name (default latentfarm@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads a job may use: TensorFlow's, OpenMP's and the BLAS libraries' (scikit-learn's "
                   "KMeans too). Default: all cores; with --gpus/--cpu, each process's share, cores / processes. "
                   "Small models (the dream's 28x28 cnn) and clustering on busy cores run fastest on 1.")
@click.option("--gpu-standby", is_flag=True,
              help="Also take the gpu queue's jobs while no live GPU worker consumes it, and leave it when one "
                   "does (set for --cpu workers unless --queues is given).")
@handles_errors
def worker(gpus: str | None, per_gpu: str | None, cpus: int, queues: str | None, concurrency: int, pool: str,
           name: str | None, loglevel: str, threads: int | None, gpu_standby: bool) -> None:
    """Run workers that consume jobs from the broker (LATENTFARM_BROKER_URL).

    With --gpus and/or --cpu: K worker processes per GPU (--per-gpu, default 1) and one per CPU slot, restarted
    when one dies. Without: one Celery worker in this process.
    """
    from scheduler import supervisor

    k = supervisor.parse_per_gpu(per_gpu, gpus)
    qs = queue_names(queues or "gpu,cpu")
    if gpus is not None or cpus:
        cp = open_farm_plane(qs)
        chosen = supervisor.choose_gpus(gpus, supervisor.discover_gpus(cp.settings.gpus)) if gpus is not None else []
        check_schema(cp)
        memory = supervisor.gpu_memory_totals() if k > 1 else {}  # none for simulated GPUs
        raise click.exceptions.Exit(supervisor.supervise(supervisor.plan_workers(
            chosen, cpus, queues, loglevel, threads, per_gpu=k, gpu_memory=memory)))
    if threads is not None:  # read by each library when it loads, in this process or its forked children; the
        os.environ.update(supervisor.thread_env(threads))  # BLAS already loaded is capped per job (workers.threads)
    # This process is a worker of its own: a job stuck past its hard time limit may kill it (a supervisor,
    # docker or systemd restarts it). An embedded worker never does that to the process it runs in.
    cp = open_farm_plane(qs, owns_process=True)
    check_schema(cp)
    if isinstance(cp.app, FarmApp):
        cp.app.gpu_standby = gpu_standby  # read by the worker's heartbeat thread (workers.monitor.Beacon)
    consumed = ",".join(dict.fromkeys(cp.app.broker_queue(q) for q in qs))  # the farm's own names for them
    argv = ["worker", f"--queues={consumed}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--loglevel={loglevel}", f"--hostname={name or cp.settings.worker_name}", "--without-gossip",
            "--without-mingle"]
    cp.app.worker_main(argv)


@click.command("reap")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def reap_command(as_json: bool) -> None:
    """Requeue jobs whose worker died (lease expired), fail those out of attempts, re-send lost messages."""
    cp = open_plane()
    report = reap(cp.store, cp.app, cp.settings)
    if as_json:
        click.echo(dumps(vars(report)))
        return
    click.echo(f"reaped: {report.describe()}")
    for what, ids in vars(report).items():
        if ids:
            click.echo(f"  {what.replace('_', ' ')}: {', '.join(map(str, ids))}")


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between reaper passes (default: the lease / 6, from 0.5 to 10).")
@click.option("--status-every", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between status lines.")
@handles_errors
def scheduler(interval: float | None, status_every: float) -> None:
    """The control plane's loop: reap every few seconds (see `latentfarm reap`) and print the farm's status now
    and then. Several may run at once."""
    if Settings.from_env().embedded:  # before anything is opened: no stray latentfarm.db
        raise UserError("no broker configured: set LATENTFARM_BROKER_URL and LATENTFARM_DATABASE_URL (a farm's); the "
                        "embedded default needs no scheduler: `latentfarm submit` runs the batch itself")
    cp = open_plane()
    check_schema(cp)
    next_status = 0.0

    def on_pass(report: ReapReport | None, error: Exception | None) -> None:
        nonlocal next_status
        stamp = f"{datetime.now():%H:%M:%S}"
        if error is not None:  # keep going: the database or broker comes back
            click.echo(f"{stamp} scheduler: {error}", err=True)
            return
        if report:
            click.echo(f"{stamp} reaped: {report.describe()}", err=True)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + status_every
            try:
                with cp.store.session() as s:
                    counts = queries.active_job_counts(s)
            except Exception as e:  # the database went away between the pass and this line
                click.echo(f"{stamp} scheduler: {e}", err=True)
                return
            click.echo(f"{stamp} jobs: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                                            or "none pending, queued or running"), err=True)

    reaper = Reaper(cp.store, cp.app, cp.settings, on_pass, every=interval)
    click.echo(f"scheduler: reaping every {reaper.every:g} s (lease {cp.settings.lease_seconds:g} s) on "
               f"{cp.store.engine.url.render_as_string(hide_password=True)}", err=True)
    reaper.run()


@click.command()
@click.option("--host", default=None, help="Address to listen on (default 0.0.0.0 with LATENTFARM_API_TOKEN set, "
              "else 127.0.0.1, the only one allowed without a token).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@handles_errors
def serve(host: str | None, port: int) -> None:
    """The REST API (/api/v1, OpenAPI at /openapi.json) and the dashboard (/), over the results database.

    Writes (submit, cancel, retry) need 'Authorization: Bearer <LATENTFARM_API_TOKEN>'. On the embedded default
    the server runs a worker too, so batches submitted to it run."""
    from scheduler.web.server import serve as run_server  # the one way the CLI reaches the web interface: start it

    cp = open_plane()
    if not cp.settings.embedded:
        check_schema(cp)
    run_server(cp, host, port)


@click.group()
def db() -> None:
    """The results database."""


@db.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or migrate the database's tables (LATENTFARM_DATABASE_URL)."""
    settings = Settings.from_env()
    engine = engine_for(settings.database_url)
    rev = migrate.upgrade(engine)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {rev}")


COMMANDS = (worker, reap_command, scheduler, serve, db)
