"""Datasets registered in the farm: ``data add`` and ``data list`` (``scheduler.datasets``)."""

from __future__ import annotations

import click

from scheduler.cli.common import check_schema, handles_errors, open_plane
from scheduler.cli.render import dumps, table
from scheduler.datasets import add_dataset, describe
from storage import datasets as registry


@click.group()
def data() -> None:
    """Datasets registered in the farm: workers and submitting machines need no copy of them.

    A spec names a registered dataset as `dataset: NAME` (mnist, olivetti, wifi) or `data_path: NAME`, and a
    dream's input as `image: NAME`.
    """


@data.command("add")
@click.argument("name")
@click.argument("path")
@click.option("--replace", is_flag=True, help="Give NAME new content; jobs submitted before keep the old version.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def add(name: str, path: str, replace: bool, as_json: bool) -> None:
    """Register the file or folder PATH (in LATENTFARM_DATA_DIR or the current directory) as dataset NAME.

    PATH is an .npz of image arrays, a jpg or png image, the WiFi table or a folder of images (stored as one
    archive). The same content again is a no-op; other content under a registered NAME needs --replace.
    """
    cp = open_plane()
    check_schema(cp)  # a farm's database at an older schema has no datasets table: say so in one line
    done = add_dataset(cp.store, name, path, cp.settings.data_dir, replace=replace)
    d = done.dataset
    if as_json:
        click.echo(dumps({"outcome": done.outcome, "previous": done.previous, "dataset": d}))
    elif done.outcome == "unchanged":
        click.echo(f"dataset {d.name!r} is registered with this content already (sha256 {d.sha256[:12]}): "
                   "nothing to do")
    else:
        what = f"{d.kind} {d.filename}, {_size(d.bytes)}, {describe(d.meta)}, sha256 {d.sha256[:12]}"
        if done.outcome == "replaced":
            assert done.previous is not None
            click.echo(f"replaced dataset {d.name!r} ({done.previous[:12]} -> {d.sha256[:12]}): {what}; jobs "
                       "submitted before read the version they were submitted with")
        else:
            click.echo(f"added dataset {d.name!r}: {what}")


@data.command("list")
@click.option("--all", "kept", is_flag=True, help="Also the replaced versions kept for unfinished jobs.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def list_(kept: bool, as_json: bool) -> None:
    """The registered datasets: name, kind, size, sha256, content and when each was added."""
    cp = open_plane()
    check_schema(cp)
    with cp.store.session() as s:
        found = registry.list_datasets(s, kept=kept)
    if as_json:
        click.echo(dumps(found))
    elif not found:
        click.echo("no datasets registered: add one with `latentfarm data add NAME PATH`")
    else:
        click.echo(table(["name", "kind", "size", "sha256", "content", "added"],
                         [(d.name, d.kind, _size(d.bytes), d.sha256[:12], describe(d.meta), d.created_at)
                          for d in found]))


def _size(n: int) -> str:
    """Bytes for people: 950 B, 11.0 MiB."""
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


COMMANDS = (data,)
