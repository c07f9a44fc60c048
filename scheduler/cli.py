"""``latentfarm``: submit batches, follow them, query results, run workers.

Human tables by default, ``--json`` for scripts. A user error (bad spec, unknown job) is one line on stderr and
exit code 2; a service error (database or broker down) is one line and exit code 1.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from scheduler import dispatch
from scheduler.demo import run_demo
from scheduler.errors import LatentfarmError, UserError
from scheduler.filters import job_ids
from scheduler.render import ago, dumps, duration, table, to_jsonable
from scheduler.service import ControlPlane
from scheduler.settings import Settings
from storage import migrate, queries
from storage.db import engine_for
from storage.errors import DatabaseUnavailable, NotFound, StorageError
from storage.status import JobStatus

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = [s.value for s in JobStatus]


def _errors(fn: F) -> F:
    """Turn latentfarm's errors into one line and an exit code: no traceback for what the user can fix."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotFound as e:
            raise click.exceptions.Exit(_fail(str(e), 2)) from e
        except (LatentfarmError, DatabaseUnavailable, StorageError) as e:
            raise click.exceptions.Exit(_fail(str(e), getattr(e, "exit_code", 1))) from e

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {message}", err=True)
    return code


def _open() -> ControlPlane:
    return ControlPlane.open()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="latentfarm")
def cli() -> None:
    """latentfarm: batches of deep-learning jobs on Celery workers, results in SQL.

    Settings come from the environment: LATENTFARM_DATABASE_URL (default sqlite:///latentfarm.db),
    LATENTFARM_BROKER_URL (default memory://: embedded, submit runs the batch in-process),
    LATENTFARM_ARTIFACTS (default ./latentfarm-artifacts), LATENTFARM_DATA_DIR (default ~/.keras/datasets).
    """


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the batch until it is done (always so on the embedded default).")
@click.option("--no-cache", is_flag=True, help="Run every job even if an identical job already succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_errors
def submit(spec: str, wait: bool, no_cache: bool, as_json: bool) -> None:
    """Validate SPEC (a batch YAML file), write the batch and queue its ready jobs."""
    cp = _open()
    batch_spec = cp.load(spec)
    result = cp.submit(batch_spec, no_cache=no_cache)
    if not as_json:
        click.echo(f"batch {result.batch_id} {batch_spec.name!r}: {len(result.job_ids)} jobs "
                   f"({len(result.cached)} cached, {len(result.queued)} queued)")
    summary = None
    if cp.settings.embedded or wait:
        summary = cp.wait(result.batch_id, show=not as_json)
    if as_json:
        click.echo(dumps({"batch_id": result.batch_id, "jobs": result.job_ids, "cached": result.cached,
                          "queued": result.queued, "status": summary.status if summary else "submitted",
                          "counts": summary.counts if summary else None}))
        return
    if summary is not None:
        _print_batch(cp, result.batch_id)
        if summary.status != "succeeded":
            raise click.exceptions.Exit(1)


@cli.command()
@click.argument("batch", type=int, required=False)
@click.option("--limit", default=20, show_default=True, help="How many recent batches to list.")
@click.option("--json", "as_json", is_flag=True)
@_errors
def status(batch: int | None, limit: int, as_json: bool) -> None:
    """Recent batches with their job counts, or one BATCH with its jobs."""
    cp = _open()
    if batch is not None:
        if as_json:
            with cp.store.session() as s:
                summary = queries.batch_summary(s, batch)
                jobs = queries.list_jobs(s, batch_id=batch)
            click.echo(dumps({"batch": summary.batch, "status": summary.status, "counts": summary.counts,
                              "jobs": jobs}))
        else:
            _print_batch(cp, batch)
        return
    with cp.store.session() as s:
        batches = queries.list_batches(s, limit)
    if as_json:
        click.echo(dumps([{"batch": b.batch, "status": b.status, "counts": b.counts, "total": b.total}
                          for b in batches]))
        return
    if not batches:
        click.echo(f"no batches yet in {cp.store.engine.url.render_as_string(hide_password=True)}")
        return
    rows = [(b.batch.id, b.batch.name, b.status, f"{sum(b.counts.get(s, 0) for s in ('succeeded',))}/{b.total}",
             b.counts.get("running", 0), b.counts.get("failed", 0), ago(b.batch.created_at)) for b in batches]
    click.echo(table(["batch", "name", "status", "succeeded", "running", "failed", "created"], rows))


def _print_batch(cp: ControlPlane, batch_id: int) -> None:
    with cp.store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        jobs = queries.list_jobs(s, batch_id=batch_id)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.counts.items()))
    click.echo(f"batch {batch_id} {summary.batch.name!r}: {summary.status} ({counts})")
    click.echo(_jobs_table(jobs))
    for j in jobs:
        if j.status is JobStatus.FAILED and j.error:
            click.echo(f"job {j.id} {j.name} failed: {j.error}  (latentfarm show {j.id})")


def _jobs_table(jobs: list[Any], metrics: dict[str, dict[int, float | None]] | None = None) -> str:
    """A row per job; ``metrics``: extra columns, a value per job id."""
    extra = metrics or {}
    rows = [(j.id, j.batch_id, j.name, j.kind, j.status.value + (" (cached)" if j.cached_from else ""),
             f"{j.progress:.0%}", j.attempts, duration(j.started_at, j.finished_at), j.worker,
             *[extra[k].get(j.id) for k in extra]) for j in jobs]
    return table(["job", "batch", "name", "kind", "status", "progress", "tries", "time", "worker", *extra], rows)


@cli.command()
@click.option("--batch", type=int, help="Only jobs of this batch.")
@click.option("--kind", help="Only jobs of this kind.")
@click.option("--status", "status_", type=click.Choice(STATUSES), help="Only jobs in this status.")
@click.option("--since", help="Only jobs created since: 30m, 2h, 1d or an ISO date.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Only jobs with this parameter value, e.g. z_dim=16 (repeatable).")
@click.option("--where", "where", multiple=True, metavar="METRIC<NUMBER",
              help="Only jobs whose final metric passes, e.g. 'test_loss<0.1' (< <= > >= = !=; repeatable).")
@click.option("--sort", "sort_key", metavar="METRIC", help="Order by this final metric (smallest first).")
@click.option("--desc", is_flag=True, help="With --sort: largest first.")
@click.option("--limit", type=int, default=None, help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: a row per job, with the metrics filtered or sorted on.")
@_errors
def jobs(batch: int | None, kind: str | None, status_: str | None, since: str | None, params: tuple[str, ...],
         where: tuple[str, ...], sort_key: str | None, desc: bool, limit: int | None, as_json: bool,
         as_csv: bool) -> None:
    """List jobs, filtered by batch, kind, status, parameter values and final metrics; sorted by a metric."""
    from scheduler.filters import JobQuery, MetricFilter, ParamFilter, parse_since

    query = JobQuery(batch, kind, status_, parse_since(since), [ParamFilter.parse(p) for p in params],
                     [MetricFilter.parse(w) for w in where], sort_key, desc)
    param_filters, keys = query.params, query.keys
    cp = _open()
    with cp.store.session() as s:
        found, finals, _ = query.run(s, limit)
    if as_json:
        click.echo(dumps([{**to_jsonable(j), "metrics": {k: finals.get(j.id, {}).get(k) for k in keys}}
                          for j in found] if keys else found))
    elif as_csv:
        names = [p.name for p in param_filters]
        click.echo(_csv(
            ["job", "batch", "name", "kind", "status", "attempts", "worker", "started_at", "finished_at", *names,
             *keys],
            [[j.id, j.batch_id, j.name, j.kind, j.status.value, j.attempts, j.worker or "",
              j.started_at.isoformat() if j.started_at else "", j.finished_at.isoformat() if j.finished_at else "",
              *[j.params.get(n) for n in names], *[finals.get(j.id, {}).get(k, "") for k in keys]] for j in found]),
            nl=False)
    else:
        click.echo(_jobs_table(found, {k: {j.id: finals.get(j.id, {}).get(k) for j in found} for k in keys}))


@cli.command()
@click.argument("job", type=int)
@click.option("--json", "as_json", is_flag=True)
@_errors
def show(job: int, as_json: bool) -> None:
    """One JOB: params, events, metrics, artifacts and error."""
    cp = _open()
    with cp.store.session() as s:
        j = queries.require_job(s, job)
        parents = queries.job_parents(s, job)
        events = queries.job_events(s, job)
        metrics = queries.job_metrics(s, [job])
        artifacts = queries.job_artifacts(s, job)
    if as_json:
        click.echo(dumps({"job": j, "parents": parents, "events": events, "metrics": metrics,
                          "artifacts": artifacts}))
        return
    click.echo(f"job {j.id} {j.name!r} (batch {j.batch_id}, kind {j.kind}): {j.status.value}"
               + (f", cached from job {j.cached_from}" if j.cached_from else ""))
    where = (f" on {j.host}" if j.host else "") + (f", GPU {j.gpu}" if j.gpu else "")
    click.echo(f"  queue {j.queue}, priority {j.priority}, attempts {j.attempts}/{j.max_attempts}, "
               f"worker {j.worker or '-'}{where}, time {duration(j.started_at, j.finished_at) or '-'}")
    click.echo(f"  needs {', '.join(map(str, parents)) or '-'}; fingerprint {j.fingerprint[:16]}")
    click.echo("params:")
    for k, v in j.params.items():
        click.echo(f"  {k}: {v}")
    click.echo("events:")
    for e in events:
        what = e.status or e.kind
        click.echo(f"  {e.time:%Y-%m-%d %H:%M:%S}  {what:<10} {e.message or ''}")
    if metrics:
        click.echo("metrics:")
        click.echo(_metrics_table(metrics, indent="  "))
    if artifacts:
        click.echo("artifacts:")
        click.echo(table(["name", "type", "bytes", "sha256", "path"],
                         [(a.name, a.media_type, a.bytes, a.sha256[:12], cp.store.artifacts.path_of(a.uri))
                          for a in artifacts]))
    if j.error:
        click.echo(f"error: {j.error}")
    if j.traceback:
        click.echo(j.traceback.rstrip())


def _metrics_table(metrics: list[Any], indent: str = "") -> str:
    """One row per (job, step), one column per metric key."""
    keys = sorted({m.key for m in metrics})
    grid: dict[tuple[int, int], dict[str, float]] = {}
    for m in metrics:
        grid.setdefault((m.job_id, m.step), {})[m.key] = m.value
    rows = [(job, step, *[vals.get(k) for k in keys]) for (job, step), vals in sorted(grid.items())]
    return "\n".join(indent + line for line in table(["job", "step", *keys], rows).splitlines())


@cli.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="All jobs of this batch.")
@click.option("--key", help="Only this metric.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: job, key, step, value, time.")
@_errors
def metrics(jobs: tuple[int, ...], batch: int | None, key: str | None, as_json: bool, as_csv: bool) -> None:
    """Metrics of JOBS (or of a --batch): one row per job and step (epoch)."""
    cp = _open()
    with cp.store.session() as s:
        ids = job_ids(s, list(jobs), batch)
        found = queries.job_metrics(s, ids, key)
    if as_csv:
        click.echo(_csv(["job", "key", "step", "value", "time"],
                        [(m.job_id, m.key, m.step, m.value, m.time.isoformat()) for m in found]), nl=False)
        return
    click.echo(dumps(found) if as_json else _metrics_table(found))


@cli.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="All jobs of this batch.")
@click.option("--name", help="Only artifacts of this name, e.g. samples.png.")
@click.option("--type", "media_type", help="Only artifacts of this media type, e.g. image/png.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: job, name, media type, bytes, sha256, path.")
@_errors
def artifacts(jobs: tuple[int, ...], batch: int | None, name: str | None, media_type: str | None, as_json: bool,
              as_csv: bool) -> None:
    """Artifacts of JOBS (or of a --batch), with their files in the artifact store."""
    cp = _open()
    with cp.store.session() as s:
        found = [a for a in queries.artifacts_of(s, job_ids(s, list(jobs), batch))
                 if (name is None or a.name == name) and (media_type is None or a.media_type == media_type)]
    rows = [(a.job_id, a.name, a.media_type, a.bytes, a.sha256, str(cp.store.artifacts.path_of(a.uri)))
            for a in found]
    if as_json:
        click.echo(dumps([{**to_jsonable(a), "path": row[-1]} for a, row in zip(found, rows, strict=True)]))
    elif as_csv:
        click.echo(_csv(["job", "name", "media_type", "bytes", "sha256", "path"], rows), nl=False)
    else:
        click.echo(table(["job", "name", "type", "bytes", "sha256", "path"],
                         [(*r[:4], r[4][:12], r[5]) for r in rows]))


def _csv(header: list[str], rows: list[Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@cli.command()
@click.argument("batch", type=int)
@click.option("--metric", required=True, help="The metric to compare, e.g. val_loss (its last epoch's value).")
@click.option("--by", "by", required=True, help="The parameter whose values are compared, e.g. z_dim.")
@click.option("--higher-is-better", is_flag=True, help="For accuracies and the like: the best is the largest.")
@click.option("--json", "as_json", is_flag=True)
@_errors
def compare(batch: int, metric: str, by: str, higher_is_better: bool, as_json: bool) -> None:
    """The final METRIC of BATCH's jobs per value of the parameter BY: one row per value (best, mean, worst)."""
    from scheduler.filters import compare as compare_batch

    cp = _open()
    with cp.store.session() as s:
        result = compare_batch(s, batch, metric, by, higher_is_better)
    if as_json:
        result.pop("best")
        click.echo(dumps(result))
        return
    rows = result["rows"]
    click.echo(table([by, "jobs", f"best {metric}", "mean", "worst", "best job"],
                     [(("* " if i == result["best"] else "  ") + json.dumps(r[by]), r["jobs"], r["best"], r["mean"],
                       r["worst"], f"{r['best_job']} {r['best_name']}") for i, r in enumerate(rows)]))


@cli.command()
@click.argument("job", type=int)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_errors
def export(job: int, directory: Path) -> None:
    """Copy JOB's artifacts into DIRECTORY (each checked against its sha256), with job.json: its record and metrics.

    Written whole or not at all: a missing or corrupt blob leaves DIRECTORY as it was."""
    cp = _open()
    with cp.store.session() as s:
        record = queries.require_job(s, job)
        artifacts = queries.job_artifacts(s, job)
        metrics = queries.job_metrics(s, [job])
    if not artifacts:
        raise UserError(f"job {job} ({record.status.value}) has no artifacts")
    clash = [a.name for a in artifacts if (directory / a.name).exists()] + (
        ["job.json"] if (directory / "job.json").exists() else [])
    if clash:
        raise UserError(f"{directory} already has {', '.join(clash)}: export into an empty directory")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    try:
        for a in artifacts:
            (staging / a.name).parent.mkdir(parents=True, exist_ok=True)
            cp.store.artifacts.copy_out(a.uri, a.sha256, staging / a.name)
        (staging / "job.json").write_text(dumps({"job": record, "metrics": metrics, "artifacts": artifacts}) + "\n")
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = directory / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    click.echo(f"job {job}: {len(artifacts)} artifacts and job.json exported to {directory}")


@cli.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="Cancel every unfinished job of this batch.")
@_errors
def cancel(jobs: tuple[int, ...], batch: int | None) -> None:
    """Cancel JOBS (and what depends on them), or a whole --batch. Running jobs stop at their next check."""
    cp = _open()
    with cp.store.session() as s:
        ids = job_ids(s, jobs, batch)
    out = dispatch.cancel(cp.store, ids)
    click.echo(f"cancelled {len(out['cancelled'])} jobs; {len(out['flagged'])} running jobs will stop at their "
               "next check")


@cli.command()
@click.argument("job", type=int)
@click.option("--wait", is_flag=True, help="Follow the batch until it is done (always so on the embedded default).")
@_errors
def retry(job: int, wait: bool) -> None:
    """Run a failed or cancelled JOB again; its cancelled descendants run after it."""
    cp = _open()
    queued = dispatch.retry(cp.store, cp.app, job)
    with cp.store.session() as s:
        batch_id = queries.require_job(s, job).batch_id
    click.echo(f"job {job} " + ("queued" if queued else "waits for its parents"))
    if cp.settings.embedded or wait:
        cp.wait(batch_id)
        _print_batch(cp, batch_id)


@cli.command()
@click.option("--gpus", default=None, metavar="all|0,1,...",
              help="Start one worker process per GPU (CUDA_VISIBLE_DEVICES set, solo pool, named gpu<i>@<host>, "
                   "queue gpu) and keep them running. Fails if the machine has no GPU.")
@click.option("--cpu", "cpus", type=click.IntRange(min=0), default=0,
              help="Start this many CPU worker processes (cpu<i>@<host>, queue cpu) and keep them running.")
@click.option("--queues", "-Q", default=None, help="Queues to consume, comma-separated (default gpu,cpu; with "
              "--gpus/--cpu: gpu for GPU workers, cpu for CPU workers).")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Jobs run at once.")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True)
@click.option("--name", "-n", default=None, help="Worker node name (default latentfarm@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads TensorFlow may use in each job process (default: all cores; with --cpu N: "
                   "cores / N). Small models (the dream's 28x28 cnn) run fastest on 1.")
@_errors
def worker(gpus: str | None, cpus: int, queues: str | None, concurrency: int, pool: str, name: str | None,
           loglevel: str, threads: int | None) -> None:
    """Run workers that consume jobs from the broker (LATENTFARM_BROKER_URL).

    With --gpus and/or --cpu: one worker process per GPU and CPU slot, restarted when one dies. Without: one
    Celery worker in this process.
    """
    if gpus is not None or cpus:
        from scheduler.supervisor import choose_gpus, discover_gpus, plan_workers, supervise

        chosen = choose_gpus(gpus, discover_gpus()) if gpus is not None else []
        _check_schema(_open_worker_plane(queues or "gpu,cpu"))
        raise click.exceptions.Exit(supervise(plan_workers(chosen, cpus, queues, loglevel, threads)))
    if threads is not None:  # read by TensorFlow when it starts, in this process or its forked children
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    cp = _open_worker_plane(queues or "gpu,cpu")
    _check_schema(cp)
    qs = _queue_names(queues or "gpu,cpu")
    # This process is a worker of its own: a job stuck past its hard time limit may kill it (a supervisor,
    # docker or systemd restarts it). An embedded worker never does that to the process it runs in.
    cp.app.conf.latentfarm_kill_on_hard_limit = True
    argv = ["worker", f"--queues={','.join(qs)}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--loglevel={loglevel}", f"--hostname={name or cp.settings.worker_name}", "--without-gossip",
            "--without-mingle"]
    cp.app.worker_main(argv)


def _queue_names(queues: str) -> tuple[str, ...]:
    return tuple(q.strip() for q in queues.split(",") if q.strip())


def _open_worker_plane(queues: str) -> ControlPlane:
    cp = ControlPlane.open(queues=tuple(dict.fromkeys(("gpu", "cpu") + _queue_names(queues))))
    if cp.settings.embedded:
        raise UserError("no broker configured: set LATENTFARM_BROKER_URL (e.g. redis://localhost:6379/0); "
                        "on the embedded default `latentfarm submit` runs its own worker")
    return cp


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@_errors
def reap(as_json: bool) -> None:
    """Requeue jobs whose worker died (lease expired), fail those out of attempts, re-send lost messages."""
    from scheduler.reaper import reap as reap_once

    cp = _open()
    report = reap_once(cp.store, cp.app, cp.settings)
    if as_json:
        click.echo(dumps(vars(report)))
        return
    click.echo(f"reaped: {report.describe()}")
    for what, ids in vars(report).items():
        if ids:
            click.echo(f"  {what.replace('_', ' ')}: {', '.join(map(str, ids))}")


@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between reaper passes (default: the lease / 6, at most 10).")
@click.option("--status-every", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between status lines.")
@_errors
def scheduler(interval: float | None, status_every: float) -> None:
    """The control plane's loop: reap every few seconds (see `latentfarm reap`) and print the farm's status now
    and then. Several may run at once."""
    import time

    from scheduler.reaper import reap as reap_once

    cp = _open()
    if cp.settings.embedded:
        raise UserError("no broker configured: set LATENTFARM_BROKER_URL; the embedded default needs no scheduler")
    _check_schema(cp)
    every = interval or min(max(cp.settings.lease_seconds / 6, 0.5), 10.0)
    click.echo(f"scheduler: reaping every {every:g} s (lease {cp.settings.lease_seconds:g} s) on "
               f"{cp.store.engine.url.render_as_string(hide_password=True)}", err=True)
    next_status = 0.0
    while True:
        try:
            report = reap_once(cp.store, cp.app, cp.settings)
            if report:
                click.echo(f"{datetime.now():%H:%M:%S} reaped: {report.describe()}", err=True)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + status_every
                with cp.store.session() as s:
                    counts = queries.active_job_counts(s)
                click.echo(f"{datetime.now():%H:%M:%S} jobs: " + (", ".join(f"{n} {k}" for k, n in sorted(
                    counts.items())) or "none pending, queued or running"), err=True)
        except (DatabaseUnavailable, LatentfarmError) as e:  # keep going: the database or broker comes back
            click.echo(f"{datetime.now():%H:%M:%S} scheduler: {e}", err=True)
        time.sleep(every)


def _check_schema(cp: ControlPlane) -> None:
    current, head = migrate.current_revision(cp.store.engine), migrate.head_revision(cp.store.engine)
    if current != head:
        raise UserError(f"the database {cp.settings.database_url} is at schema {current or 'none'}, not {head}: "
                        "run `latentfarm db upgrade`")


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default 0.0.0.0 with LATENTFARM_API_TOKEN set, "
              "else 127.0.0.1, the only one allowed without a token).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@_errors
def serve(host: str | None, port: int) -> None:
    """The REST API (/api/v1, OpenAPI at /openapi.json) and the dashboard (/), over the results database.

    Writes (submit, cancel, retry) need 'Authorization: Bearer <LATENTFARM_API_TOKEN>'. On the embedded default
    the server runs a worker too, so batches submitted to it run."""
    from scheduler.api import api_token
    from scheduler.api import serve as run_server

    token = api_token()
    cp = _open()
    if not cp.settings.embedded:
        _check_schema(cp)
    run_server(cp, host, port, token)


@cli.group()
def db() -> None:
    """The results database."""


@db.command("upgrade")
@_errors
def db_upgrade() -> None:
    """Create or migrate the database's tables (LATENTFARM_DATABASE_URL)."""
    settings = Settings.from_env()
    engine = engine_for(settings.database_url)
    rev = migrate.upgrade(engine)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {rev}")


@cli.command()
@click.option("--out", default="latentfarm-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the demo's images.")
@click.option("--epochs", default=12, show_default=True, help="Training epochs.")
@_errors
def demo(out: str, epochs: int) -> None:
    """A small batch of every job kind on sklearn's digits, in-process; writes reconstructions, samples and
    clusters as PNG files."""
    run_demo(out, epochs)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    cli(prog_name="latentfarm")


if __name__ == "__main__":  # pragma: no cover
    main()
