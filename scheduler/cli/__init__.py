"""``latentfarm``: submit batches, follow them, query results, run workers and the server.

Human tables by default, ``--json`` (and ``--csv``) for scripts. An error is one line on stderr and an exit code
from the one table in ``scheduler.errors``: 2 for what the user can fix (a bad spec, an unknown job), 1 for a
service that is away. The commands live by concern: ``batches`` (submit, status, cancel, retry), ``results``
(jobs, show, metrics, artifacts, compare, export), ``farm`` (worker, reap, scheduler, serve, db), ``workers``,
``reclaim`` (gc, delete), ``kinds`` and ``demo``.
"""

from __future__ import annotations

import os

import click

from scheduler.cli import batches, data, demo, farm, kinds, reclaim, results, search, workers


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="latentfarm")
def cli() -> None:
    """latentfarm: batches of deep-learning jobs on Celery workers, results in SQL.

    Settings come from the environment: LATENTFARM_DATABASE_URL (default sqlite:///latentfarm.db),
    LATENTFARM_BROKER_URL (default memory://: embedded, submit runs the batch in-process),
    LATENTFARM_ARTIFACTS (default ./latentfarm-artifacts; or s3://bucket/prefix), LATENTFARM_DATA_DIR (default
    ~/.keras/datasets).
    """


for _module in (batches, results, farm, workers, demo, data, reclaim, kinds, search):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="latentfarm")
