"""Batches: ``submit``, ``validate``, ``status``, ``cancel``, ``retry``."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import click

from scheduler import lifecycle
from scheduler.cli.common import handles_errors, open_plane
from scheduler.cli.render import ProgressPrinter, ago, dumps, jobs_table, table
from scheduler.control import ControlPlane, DryRun
from scheduler.filters import job_ids
from scheduler.settings import Settings
from storage import queries
from storage.queries import BatchSummary
from storage.status import JobStatus


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Follow the batch until it is done (always so on the embedded default).")
@click.option("--no-cache", is_flag=True, help="Run every job even if an identical job already succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--dry-run", is_flag=True, help="Only validate and show the jobs it would write (`latentfarm validate`).")
@handles_errors
def submit(spec: str, wait: bool, no_cache: bool, as_json: bool, dry_run: bool) -> None:
    """Validate SPEC (a batch YAML file), write the batch and queue its ready jobs."""
    if dry_run:
        validate.callback(spec, no_cache, as_json)  # type: ignore[misc]
        return
    cp = open_plane()
    batch_spec = cp.load(spec)
    result = cp.submit(batch_spec, no_cache=no_cache)
    if not as_json:
        click.echo(f"batch {result.batch_id} {batch_spec.name!r}: {len(result.job_ids)} jobs "
                   f"({len(result.cached)} cached, {len(result.queued)} queued)")
    summary = None
    if cp.settings.embedded or wait:
        summary = _wait(cp, result.batch_id, show=not as_json)
    if as_json:
        click.echo(dumps({"batch_id": result.batch_id, "jobs": result.job_ids, "cached": result.cached,
                          "queued": result.queued, "status": summary.status if summary else "submitted",
                          "counts": summary.counts if summary else None}))
        return
    if summary is not None:
        print_batch(cp, result.batch_id)
        if summary.status != "succeeded":
            raise click.exceptions.Exit(1)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--no-cache", is_flag=True, help="Count no job as cached (as `submit --no-cache` would run them all).")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@handles_errors
def validate(spec: str, no_cache: bool, as_json: bool) -> None:
    """Check SPEC and show the jobs `submit` would write: names, needs, queues, and which the cache already holds.
    Writes nothing. Every error of the spec is told, each on its own line (at most 20)."""
    settings = Settings.from_env()
    if settings.embedded and not _sqlite_exists(settings.database_url):  # nothing to read: create no database file
        settings = dataclasses.replace(settings, database_url="sqlite://")
    cp = ControlPlane.open(settings)
    print_dry_run(cp.dry_run(cp.load(spec), no_cache=no_cache), as_json)


def _sqlite_exists(url: str) -> bool:
    path = url.removeprefix("sqlite:///")
    return not url.startswith("sqlite:///") or Path(path).exists()


def print_dry_run(run: DryRun, as_json: bool) -> None:
    if as_json:
        click.echo(dumps({"batch": run.batch, "jobs": [dataclasses.asdict(j) for j in run.jobs],
                          "cached": run.cached, "to_run": len(run.jobs) - run.cached, "searches": run.searches}))
        return
    click.echo(table(["job", "kind", "queue", "needs", "cached"],
                     [(j.name, j.kind, j.queue, ", ".join(j.needs) or "-",
                       f"from job {j.cached_from}" if j.cached_from is not None else "-") for j in run.jobs]))
    searches = f"; and the trials of search {', '.join(run.searches)}" if run.searches else ""
    click.echo(f"batch {run.batch!r}: {len(run.jobs)} jobs, {run.cached} of them cached, "
               f"{len(run.jobs) - run.cached} to run{searches}. Nothing was written.")


def _wait(cp: ControlPlane, batch_id: int, show: bool = True) -> BatchSummary:
    """Run or follow the batch to its end, with a live progress line on stderr."""
    return cp.wait(batch_id, ProgressPrinter(sys.stderr) if show else None)


@click.command()
@click.argument("batch", type=int, required=False)
@click.option("--limit", default=20, show_default=True, help="How many recent batches to list.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def status(batch: int | None, limit: int, as_json: bool) -> None:
    """Recent batches with their job counts, or one BATCH with its jobs."""
    cp = open_plane()
    if batch is not None:
        if as_json:
            with cp.store.session() as s:
                summary = queries.batch_summary(s, batch)
                jobs = queries.list_jobs(s, batch_id=batch)
            click.echo(dumps({"batch": summary.batch, "status": summary.status, "counts": summary.counts,
                              "jobs": jobs, "warnings": cp.warnings(batch)}))
        else:
            print_batch(cp, batch)
            _waiting_hint(cp)
            _warn(cp.warnings(batch))
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
    rows = [(b.batch.id, b.batch.name, b.status, f"{b.counts.get('succeeded', 0)}/{b.total}",
             b.counts.get("running", 0), b.counts.get("failed", 0), ago(b.batch.created_at)) for b in batches]
    click.echo(table(["batch", "name", "status", "succeeded", "running", "failed", "created"], rows))
    _waiting_hint(cp)
    _warn(cp.warnings())


def _warn(warnings: list[str]) -> None:
    """Jobs that wait on a queue no live worker consumes (``ControlPlane.warnings``), one line each on stderr."""
    for line in warnings:
        click.echo(f"warning: {line}", err=True)


def _waiting_hint(cp: ControlPlane) -> None:
    """On the embedded default, queued jobs run only while a latentfarm process runs a worker: say which does."""
    if not cp.settings.embedded:
        return
    with cp.store.session() as s:
        queued = len(queries.queued_job_ids(s))
    if queued:
        click.echo(f"{queued} job(s) wait in the queue: on the embedded default they run while `latentfarm serve` "
                   "runs, or with the next `latentfarm submit`")


def print_batch(cp: ControlPlane, batch_id: int) -> None:
    with cp.store.session() as s:
        summary = queries.batch_summary(s, batch_id)
        jobs = queries.list_jobs(s, batch_id=batch_id)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.counts.items()))
    click.echo(f"batch {batch_id} {summary.batch.name!r}: {summary.status} ({counts})")
    click.echo(jobs_table(jobs))
    for j in jobs:
        if j.status is JobStatus.FAILED and j.error:
            click.echo(f"job {j.id} {j.name} failed: {j.error}  (latentfarm show {j.id})")


@click.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="Cancel every unfinished job of this batch.")
@handles_errors
def cancel(jobs: tuple[int, ...], batch: int | None) -> None:
    """Cancel JOBS (and what depends on them), or a whole --batch. Running jobs stop at their next check."""
    cp = open_plane()
    with cp.store.session() as s:
        ids = job_ids(s, jobs, batch)
    out = lifecycle.cancel(cp.store, ids)
    if not out["cancelled"] and not out["flagged"]:  # every one had ended already: say how
        with cp.store.session() as s:
            ended = Counter(j.status.value for j in queries.jobs_by_ids(s, ids))
        what = ", ".join(f"{n} {status}" for status, n in sorted(ended.items())) or "no jobs"
        whose = f"batch {batch}'s jobs" if batch is not None else "the jobs"
        click.echo(f"nothing to cancel: {whose} had ended already ({what})")
        return
    click.echo(f"cancelled {len(out['cancelled'])} jobs; {len(out['flagged'])} running jobs will stop at their "
               "next check")


@click.command()
@click.argument("job", type=int)
@click.option("--wait", is_flag=True, help="Follow the batch until it is done (always so on the embedded default).")
@handles_errors
def retry(job: int, wait: bool) -> None:
    """Run a failed or cancelled JOB again; its cancelled descendants run after it."""
    cp = open_plane()
    queued = cp.retry(job)
    with cp.store.session() as s:
        batch_id = queries.require_job(s, job).batch_id
    click.echo(f"job {job} " + ("queued" if queued else "waits for its parents"))
    if cp.settings.embedded or wait:
        _wait(cp, batch_id)
        print_batch(cp, batch_id)


COMMANDS = (submit, validate, status, cancel, retry)
