"""Results: ``jobs``, ``show``, ``metrics``, ``artifacts``, ``compare``, ``export``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from scheduler.cli.common import handles_errors, open_plane
from scheduler.cli.render import csv_text, dumps, duration, jobs_table, metrics_table, table, to_jsonable
from scheduler.errors import UserError
from scheduler.filters import JobQuery, MetricFilter, ParamFilter, job_ids, parse_since
from scheduler.filters import compare as compare_batch
from scheduler.resources import LABELS, RESOURCE_METRICS, format_resource, resources_of
from storage import queries
from storage.status import JobStatus

STATUSES = [s.value for s in JobStatus]


@click.command()
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
@handles_errors
def jobs(batch: int | None, kind: str | None, status_: str | None, since: str | None, params: tuple[str, ...],
         where: tuple[str, ...], sort_key: str | None, desc: bool, limit: int | None, as_json: bool,
         as_csv: bool) -> None:
    """List jobs, filtered by batch, kind, status, parameter values and final metrics; sorted by a metric."""
    query = JobQuery(batch, kind, status_, parse_since(since), [ParamFilter.parse(p) for p in params],
                     [MetricFilter.parse(w) for w in where], sort_key, desc)
    param_filters, keys = query.params, query.keys
    cp = open_plane()
    with cp.store.session() as s:
        found, finals, _ = query.run(s, limit)
    if as_json:
        click.echo(dumps([{**to_jsonable(j), "metrics": {k: finals.get(j.id, {}).get(k) for k in keys}}
                          for j in found] if keys else found))
    elif as_csv:
        names = [p.name for p in param_filters]
        click.echo(csv_text(
            ["job", "batch", "name", "kind", "status", "attempts", "worker", "started_at", "finished_at", *names,
             *keys],
            [[j.id, j.batch_id, j.name, j.kind, j.status.value, j.attempts, j.worker or "",
              j.started_at.isoformat() if j.started_at else "", j.finished_at.isoformat() if j.finished_at else "",
              *[j.params.get(n) for n in names], *[finals.get(j.id, {}).get(k, "") for k in keys]] for j in found]),
            nl=False)
    else:
        click.echo(jobs_table(found, {k: {j.id: _readable(k, finals.get(j.id, {}).get(k)) for j in found}
                                      for k in keys}))


def _readable(key: str, value: float | None) -> Any:
    """A resource metric in its unit (``312.4 MiB``), for a person; any other as it is."""
    return format_resource(key, value) if key in RESOURCE_METRICS and value is not None else value


@click.command()
@click.argument("job", type=int)
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def show(job: int, as_json: bool) -> None:
    """One JOB: params, events, metrics, the resources it used, artifacts and error."""
    cp = open_plane()
    with cp.store.session() as s:
        j = queries.require_job(s, job)
        parents = queries.job_parents(s, job)
        events = queries.job_events(s, job)
        metrics = queries.job_metrics(s, [job])
        artifacts = queries.job_artifacts(s, job)
        inherited = {k: v for k, v in queries.inherited_params(s, [job]).get(job, {}).items() if k not in j.params}
    if as_json:
        click.echo(dumps({"job": j, "parents": parents, "inherited_params": inherited, "events": events,
                          "metrics": metrics, "artifacts": artifacts}))
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
    if inherited:
        click.echo("inherited from the jobs it needs: " + ", ".join(f"{k}={v}" for k, v in inherited.items()))
    click.echo("events:")
    for e in events:
        what = e.status or e.kind
        click.echo(f"  {e.time:%Y-%m-%d %H:%M:%S}  {what:<10} {e.message or ''}")
    own = [m for m in metrics if m.key not in RESOURCE_METRICS]
    if own:
        click.echo("metrics:")
        click.echo(metrics_table(own, indent="  "))
    used = resources_of({m.key: m.value for m in metrics if m.step == 0})
    if used:
        click.echo("resources: " + ", ".join(f"{LABELS[k]} {format_resource(k, v)}" for k, v in used.items()))
    if artifacts:
        click.echo("artifacts:")
        click.echo(table(["name", "type", "bytes", "sha256", "path"],
                         [(a.name, a.media_type, a.bytes, a.sha256[:12], cp.store.artifacts.location(a.uri))
                          for a in artifacts]))
    if j.error:
        click.echo(f"error: {j.error}")
    if j.traceback:
        click.echo(j.traceback.rstrip())


@click.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="All jobs of this batch.")
@click.option("--key", help="Only this metric.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: job, key, step, value, time.")
@handles_errors
def metrics(jobs: tuple[int, ...], batch: int | None, key: str | None, as_json: bool, as_csv: bool) -> None:
    """Metrics of JOBS (or of a --batch): one row per job and step (epoch)."""
    cp = open_plane()
    with cp.store.session() as s:
        ids = job_ids(s, list(jobs), batch)
        found = queries.job_metrics(s, ids, key)
    if as_csv:
        click.echo(csv_text(["job", "key", "step", "value", "time"],
                        [(m.job_id, m.key, m.step, m.value, m.time.isoformat()) for m in found]), nl=False)
        return
    click.echo(dumps(found) if as_json else metrics_table(found))


@click.command()
@click.argument("jobs", type=int, nargs=-1)
@click.option("--batch", type=int, help="All jobs of this batch.")
@click.option("--name", help="Only artifacts of this name, e.g. samples.png.")
@click.option("--type", "media_type", help="Only artifacts of this media type, e.g. image/png.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: job, name, media type, bytes, sha256, path.")
@handles_errors
def artifacts(jobs: tuple[int, ...], batch: int | None, name: str | None, media_type: str | None, as_json: bool,
              as_csv: bool) -> None:
    """Artifacts of JOBS (or of a --batch), with where they are: a file, or an s3:// URL on a bucket."""
    cp = open_plane()
    with cp.store.session() as s:
        found = [a for a in queries.artifacts_of(s, job_ids(s, list(jobs), batch))
                 if (name is None or a.name == name) and (media_type is None or a.media_type == media_type)]
    rows = [(a.job_id, a.name, a.media_type, a.bytes, a.sha256, cp.store.artifacts.location(a.uri)) for a in found]
    if as_json:
        click.echo(dumps([{**to_jsonable(a), "path": row[-1]} for a, row in zip(found, rows, strict=True)]))
    elif as_csv:
        click.echo(csv_text(["job", "name", "media_type", "bytes", "sha256", "path"], rows), nl=False)
    else:
        click.echo(table(["job", "name", "type", "bytes", "sha256", "path"],
                         [(*r[:4], r[4][:12], r[5]) for r in rows]))


@click.command()
@click.argument("batch", type=int)
@click.option("--metric", required=True, help="The metric to compare, e.g. val_loss (its last epoch's value).")
@click.option("--by", "by", required=True, help="The parameter whose values are compared, e.g. z_dim.")
@click.option("--higher-is-better", is_flag=True, help="For accuracies and the like: the best is the largest.")
@click.option("--kind", default=None, help="Compare jobs of this kind only (needed when several kinds record METRIC).")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def compare(batch: int, metric: str, by: str, higher_is_better: bool, kind: str | None, as_json: bool) -> None:
    """The final METRIC of BATCH's jobs per value of the parameter BY, their own or inherited from the jobs they
    need (an encode of train[z_dim=8] counts for z_dim 8): one row per value (best, mean, worst); * marks the best
    value, ^ a value inherited from an ancestor."""
    cp = open_plane()
    with cp.store.session() as s:
        result = compare_batch(s, batch, metric, by, higher_is_better, kind)
    if as_json:
        result.pop("best")
        click.echo(dumps(result))
        return
    rows = result["rows"]
    click.echo(table([by, "jobs", f"best {metric}", "mean", "worst", "best job"],
                     [(("* " if i == result["best"] else "  ") + json.dumps(r[by]) + (" ^" if r["inherited"] else ""),
                       r["jobs"], r["best"], r["mean"], r["worst"], f"{r['best_job']} {r['best_name']}")
                      for i, r in enumerate(rows)]))
    if any(r["inherited"] for r in rows):
        click.echo(f"^ {by} inherited from the jobs they need ({result['kind']} jobs compared)")


@click.command()
@click.argument("job", type=int)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@handles_errors
def export(job: int, directory: Path) -> None:
    """Copy JOB's artifacts into DIRECTORY (each checked against its sha256), with job.json: its record and metrics.

    Written whole or not at all: a missing or corrupt blob leaves DIRECTORY as it was."""
    cp = open_plane()
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
    if directory.is_symlink() and not directory.exists():
        raise UserError(f"{directory} is a link to nothing: export into a directory")
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
    except OSError as e:
        raise UserError(f"cannot export into {directory}: {e.strerror or type(e).__name__}") from e
    mode = 0o666 & ~_umask()  # as any file the user writes, not the 0600 of a temporary file
    try:
        for a in artifacts:
            (staging / a.name).parent.mkdir(parents=True, exist_ok=True)
            cp.store.artifacts.copy_out(a.uri, a.sha256, staging / a.name)
        (staging / "job.json").write_text(dumps({"job": record, "metrics": metrics, "artifacts": artifacts}) + "\n")
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = directory / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.chmod(mode)
                path.replace(target)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot export into {directory}: {e.strerror or type(e).__name__}") from e
        raise
    shutil.rmtree(staging, ignore_errors=True)
    click.echo(f"job {job}: {len(artifacts)} artifacts and job.json exported to {directory}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


COMMANDS = (jobs, show, metrics, artifacts, compare, export)
