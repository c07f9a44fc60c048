"""The farm: ``workers`` lists every worker with its state and every queue with its jobs and consumers."""

from __future__ import annotations

import click

from scheduler.cli.common import handles_errors, open_plane
from scheduler.cli.render import ago, dumps, table
from scheduler.control import Farm


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="List at most this many workers (by name).")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def workers(limit: int, as_json: bool) -> None:
    """Every worker with its state (running, idle, lost: no heartbeat for 3 of them, or stopped), its queues,
    current job, last heartbeat and jobs done and failed; then per queue the jobs queued and running in the
    database, the messages on the broker and the live workers that consume it; then what keeps jobs waiting."""
    cp = open_plane()
    farm = cp.farm(limit=limit)
    if as_json:
        click.echo(dumps(farm_json(farm)))
        return
    if farm.workers:
        click.echo(table(["worker", "host", "state", "queues", "gpu", "job", "last seen", "done", "failed",
                          "started"],
                         [(w.worker.name, w.worker.host, w.state, ",".join(w.worker.queues), w.worker.gpu,
                           w.worker.job_id, ago(w.worker.last_seen), w.worker.jobs_done, w.worker.jobs_failed,
                           ago(w.worker.started_at)) for w in farm.workers]))
        if farm.total > len(farm.workers):
            click.echo(f"(and {farm.total - len(farm.workers)} more: --limit)")
    else:
        click.echo(f"no worker has registered in {cp.store.engine.url.render_as_string(hide_password=True)}")
    click.echo()
    on_broker = farm.on_broker
    click.echo(table(["queue", "queued", "running", "on broker", "consumers"],
                     [(q.queue, q.queued, q.running, None if on_broker is None else on_broker.get(q.queue),
                       q.consumers) for q in farm.queues]))
    for line in farm.warnings:
        click.echo(f"warning: {line}", err=True)


def farm_json(farm: Farm) -> dict[str, object]:
    """The farm as ``workers --json`` prints it."""
    return {
        "workers": [{**vars(w.worker), "state": w.state} for w in farm.workers],
        "total": farm.total,
        "queues": [{**vars(q), "on_broker": None if farm.on_broker is None else farm.on_broker.get(q.queue)}
                   for q in farm.queues],
        "warnings": farm.warnings,
    }


COMMANDS = (workers,)
