"""Reclaiming space: ``gc`` (blobs no row references) and ``delete`` (a finished batch). Both are dry runs unless
given ``--yes``; see ``scheduler.reclaim`` for what keeps them safe while jobs run."""

from __future__ import annotations

import dataclasses

import click

from scheduler import reclaim
from scheduler.cli.common import handles_errors, open_plane
from scheduler.cli.render import dumps

GRACE_HELP = ("Keep blobs written less than this many seconds ago (a running job may be about to record them). "
              "Lower it only while no job runs.")


@click.command()
@click.option("--yes", is_flag=True, help="Remove them; without it, only say what would be removed.")
@click.option("--grace", type=click.FloatRange(min=0), default=reclaim.GRACE, show_default=True, help=GRACE_HELP)
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def gc(yes: bool, grace: float, as_json: bool) -> None:
    """Remove the blobs of the artifact store that no artifact or dataset references (with --yes), and what
    uploads killed midway left."""
    cp = open_plane()
    found = reclaim.collect_garbage(cp.store, remove=yes, grace=grace)
    if as_json:
        click.echo(dumps({**dataclasses.asdict(found), "store": cp.store.artifacts.url}))
        return
    what = f"{found.blobs} unreferenced blob(s), {size(found.bytes)}"
    partial = f"{found.incomplete} incomplete upload(s) or temporary file(s)"
    if yes:
        click.echo(f"removed {what}, and {partial}, from {cp.store.artifacts.url}")
    else:
        click.echo(f"{what}, and {partial}, in {cp.store.artifacts.url}: `latentfarm gc --yes` removes them")
    if found.young:
        click.echo(f"kept {found.young} unreferenced blob(s) written in the last {grace:g} s (a running job may be "
                   "about to record them)")


@click.command()
@click.option("--batch", "batch_id", type=int, required=True, help="The batch to delete.")
@click.option("--yes", is_flag=True, help="Delete it; without it, only say what would be deleted.")
@click.option("--grace", type=click.FloatRange(min=0), default=reclaim.GRACE, show_default=True, help=GRACE_HELP)
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def delete(batch_id: int, yes: bool, grace: float, as_json: bool) -> None:
    """Delete a finished batch: its jobs, metrics, events and artifacts (with --yes), and the blobs no other batch's
    job or dataset shares. A batch with pending, queued or running jobs is refused."""
    cp = open_plane()
    done = reclaim.delete_batch(cp.store, batch_id, remove=yes, grace=grace)
    if as_json:
        click.echo(dumps(dataclasses.asdict(done)))
        return
    rows = ", ".join(f"{n} {table}" for table, n in done.rows.items())
    blobs = f"{done.blobs} blob(s) only it referenced, {size(done.bytes)}"
    if yes:
        click.echo(f"deleted batch {batch_id} {done.name!r}: {rows}; removed {blobs}")
    else:
        click.echo(f"batch {batch_id} {done.name!r}: {rows}; {blobs}: `latentfarm delete --batch {batch_id} --yes` "
                   "deletes them")
    if done.young:
        click.echo(f"{'kept' if yes else 'would keep'} {done.young} blob(s) written in the last {grace:g} s: "
                   "`latentfarm gc --yes` removes them later")


def size(n: int) -> str:
    """Bytes for people: 812 B, 4.2 MiB, 1.3 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{n} B" if i == 0 else f"{value:.1f} {units[i]}"


COMMANDS = (gc, delete)
