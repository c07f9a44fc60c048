"""``latentfarm demo``: a small batch of every job kind (``demo.yaml``) on the embedded default, on data that ships
with scikit-learn (the digits, and a sample photo): train a conv autoencoder and a CNN, encode the digits, sample
new ones and score them, cluster the latents, and carve a small dream into the photo with the CNN."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path

import click
import yaml

from scheduler.cli.common import handles_errors
from scheduler.cli.render import ProgressPrinter
from scheduler.control import ControlPlane
from scheduler.errors import LatentfarmError, mask_secrets
from scheduler.settings import EMBEDDED_BROKER, Settings
from scheduler.spec import parse_spec
from storage import queries

SPEC = Path(__file__).with_name("demo.yaml")
# (job, artifact) -> the file name the demo writes it to
EXPORTS = {("ae", "reconstructions.png"): "reconstructions.png", ("samples", "samples.png"): "samples.png",
           ("kmeans", "clusters_2d.png"): "clusters.png", ("dream/i1/L1/merge", "iterations.png"): "dream.png"}


def write_dream_input(out_dir: Path) -> Path:
    """scikit-learn's sample photo of a Chinese temple, as the demo dream's input (no download needed)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dream_input.jpg"
    if not path.exists():
        Image.fromarray(load_sample_image("china.jpg")).save(path, quality=95)
    return path


def demo_spec(epochs: int) -> dict[str, object]:
    """``demo.yaml`` with the autoencoder trained for ``epochs``."""
    spec = yaml.safe_load(SPEC.read_text())
    next(j for j in spec["jobs"] if j["name"] == "ae")["params"]["epochs"] = epochs
    return spec  # type: ignore[no-any-return]


@click.command()
@click.option("--out", default="latentfarm-demo", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the demo's images.")
@click.option("--epochs", default=12, show_default=True, help="Training epochs.")
@handles_errors
def demo(out: str, epochs: int) -> None:
    """A small batch of every job kind on sklearn's digits, in-process; writes reconstructions, samples and
    clusters as PNG files."""
    run_demo(out, epochs)


def run_demo(out: str, epochs: int) -> None:
    """Run the demo batch with an in-process worker; export its pictures to ``out`` and print where things are."""
    settings = dataclasses.replace(Settings.from_env(), broker_url=EMBEDDED_BROKER)
    cp = ControlPlane.open(settings)
    out_dir = Path(out)
    write_dream_input(out_dir)
    spec = parse_spec(demo_spec(epochs), "<demo>", out_dir.resolve(), settings.data_dir, settings.job_memory)
    result = cp.submit(spec)
    click.echo(f"demo: batch {result.batch_id}: a conv autoencoder (z_dim 16, {epochs} epochs) and a CNN on "
               "sklearn's digits, then encode, sample, cluster and dream, with an in-process Celery worker")
    summary = cp.wait(result.batch_id, ProgressPrinter(sys.stderr))
    ids = result.job_ids
    with cp.store.session() as s:
        jobs = {name: queries.require_job(s, i) for name, i in ids.items()}
        final = {name: {m.key: m.value for m in queries.job_metrics(s, [i]) if m.step == 0} for name, i in ids.items()}
        artifacts = {name: {a.name: a for a in queries.job_artifacts(s, i)} for name, i in ids.items()}
    if summary.status != "succeeded":
        failed = next(j for j in jobs.values() if j.error)
        raise LatentfarmError(f"demo job {failed.name} ({failed.id}) {failed.status.value}: {failed.error}  "
                              f"(latentfarm show {failed.id})")
    written = []
    for (job, name), file_name in EXPORTS.items():
        a = artifacts[job][name]
        path = out_dir / file_name
        path.write_bytes(cp.store.artifacts.get_bytes(a.uri, a.sha256))
        written.append(path)
    ae, smp, km = final["ae"], final["samples"], final["kmeans"]
    cached = " (served from the cache of an earlier run)" if jobs["ae"].cached_from else ""
    click.echo(f"autoencoder: test BCE {ae['test_bce']:.4f}, test MSE {ae['test_mse']:.4f}{cached}")
    click.echo(f"cnn: test accuracy {final['cnn']['test_accuracy']:.3f}")
    click.echo(f"samples (fitted normal): {smp['confident_frac']:.0%} classified with confidence > 0.9 "
               f"(real test digits: {smp['ref_test_confident_frac']:.0%}), class entropy "
               f"{smp['class_entropy']:.2f} bits")
    click.echo(f"kmeans on latents: best k {km['best_k']:.0f}, test accuracy {km['test_accuracy']:.3f}")
    gain = final["dream/i1/L1/merge"]["gain_mean"]
    click.echo(f"dream: feature map 12 raised by {gain:.3f} on average per tile in the last pass "
               "(dream.png: the photo, then each iteration)")
    click.echo(f"images:    {written[0].resolve()}  (top: test digits, bottom: reconstructions)")
    for path in written[1:]:
        click.echo(f"           {path.resolve()}")
    click.echo(f"database:  {mask_secrets(settings.database_url)}")
    click.echo(f"artifacts: {cp.store.artifacts.url}")
    lf = command_name()
    click.echo(f"next:      {lf} status {result.batch_id}   |   {lf} show {ids['samples']}   |   "
               f"{lf} metrics --batch {result.batch_id} --key test_accuracy")
    click.echo(f"browse:    {lf} serve   (then http://127.0.0.1:8080/batches/{result.batch_id})")


def command_name(argv0: str | None = None) -> str:
    """How to run latentfarm again from here, as the hints print it: ``latentfarm`` when that name on PATH is this
    program, else the path this one was started by (``.venv/bin/latentfarm`` after ``make demo``)."""
    started = argv0 if argv0 is not None else sys.argv[0]
    on_path = shutil.which("latentfarm")
    if Path(started).name != "latentfarm":  # python -m scheduler.cli
        return "latentfarm" if on_path else f"{shlex.quote(sys.executable)} -m scheduler.cli"
    if on_path and Path(on_path).resolve() == Path(started).resolve():
        return "latentfarm"
    return shlex.quote(os.path.relpath(started) if not os.path.isabs(started) or Path(started).is_relative_to(
        Path.cwd()) else started)


COMMANDS = (demo,)
