"""``latentfarm demo``: the main job on the embedded default, on data that ships with scikit-learn."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from scheduler.errors import LatentfarmError
from scheduler.service import ControlPlane
from scheduler.settings import EMBEDDED_BROKER, Settings
from scheduler.spec import parse_spec
from storage import queries


def demo_spec(epochs: int) -> dict[str, object]:
    return {
        "batch": "demo",
        "jobs": [
            {"name": "train-conv-ae", "kind": "train",
             "params": {"model": "conv_ae", "dataset": "digits", "z_dim": 16, "epochs": epochs, "batch_size": 64}},
        ],
    }


def run_demo(out: str, epochs: int) -> None:
    """Train the conv AE on digits with an in-process worker; export the reconstructions PNG to ``out``."""
    settings = dataclasses.replace(Settings.from_env(), broker_url=EMBEDDED_BROKER)
    cp = ControlPlane.open(settings)
    spec = parse_spec(demo_spec(epochs), "<demo>", Path.cwd(), settings.data_dir)
    result = cp.submit(spec)
    click.echo(f"demo: batch {result.batch_id}, training a conv autoencoder (z_dim 16) on sklearn's digits for "
               f"{epochs} epochs with an in-process Celery worker")
    summary = cp.wait(result.batch_id, out=sys.stderr)
    job_id = result.job_ids["train-conv-ae"]
    with cp.store.session() as s:
        job = queries.require_job(s, job_id)
        artifacts = {a.name: a for a in queries.job_artifacts(s, job_id)}
        final = {m.key: m.value for m in queries.job_metrics(s, [job_id]) if m.step == 0}
    if summary.status != "succeeded":
        raise LatentfarmError(f"demo job {job_id} {job.status.value}: {job.error}  (latentfarm show {job_id})")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "reconstructions.png"
    recon = artifacts["reconstructions.png"]
    png.write_bytes(cp.store.artifacts.get_bytes(recon.uri, recon.sha256))
    click.echo(f"test BCE {final.get('test_bce', float('nan')):.4f}, test MSE {final.get('test_mse', float('nan')):.4f}"
               + (" (cached from an earlier run; --no-cache is not offered here: delete the database to redo)"
                  if job.cached_from else ""))
    click.echo(f"images:    {png.resolve()}  (top: test digits, bottom: reconstructions)")
    click.echo(f"database:  {settings.database_url}")
    click.echo(f"artifacts: {settings.artifacts_dir}")
    click.echo(f"next:      latentfarm status {result.batch_id}   |   latentfarm show {job_id}   |   "
               f"latentfarm metrics {job_id}")
