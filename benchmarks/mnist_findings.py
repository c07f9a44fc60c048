"""The seed experiments' MNIST findings on the whole of MNIST, through the farm (the embedded default).

    .venv/bin/python benchmarks/mnist_findings.py [--data ../shared/data/mnist.npz] [--limit N] [--json FILE]
                                                  [--only pool_ae]

Two batches in one fresh folder, one after the other:
  findings: conv_ae z16 and pool_ae 3 epochs each (BCE), a CNN (1 epoch) to score samples, encode, four samplers
            (2000 samples each; the uniform box also bounded by the codes' 2.5% and 97.5% quantiles) and KMeans k = 10
            on the codes. Prints the trainings' test losses and dead code
            units, the samplers' scores beside the real and reconstructed test images, KMeans' test accuracy and
            each job's wall time, and checks the seed's targets (conv_ae test BCE <= 0.10 and MSE <= 0.012, pool_ae
            BCE <= 0.10).
  kmeans:   examples/mnist-ae-kmeans.yaml (its conv_ae served from the cache: the findings' one): KMeans on the
            codes, raw, standardised or whitened, with and without PCA, k = 10, 20, 50, 100; prints the test
            accuracy of each, against the goal of 0.85.
  pool_ae:  examples/pool-ae-seeds.yaml: the seed's pooling autoencoder with adadelta at learning rate 1.0 over
            5 seeds; prints each seed's val and test BCE and dead code units, and their mean and spread.
About 16 minutes on two cores: too long for the test suite, which runs the findings batch on 12,000 images
(tests/integration/test_mnist_acceptance.py, with targets for that size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLERS = ["uniform_box", "normal", "fitted_normal", "pca_ellipsoid"]
KEYS = ["confident_frac", "class_entropy", "sample_entropy", "recon_drift", "pca_residual", "fid_cnn", "fid_latent",
        "nn_dist"]
KMEANS_SPEC = REPO / "examples" / "mnist-ae-kmeans.yaml"
POOL_SPEC = REPO / "examples" / "pool-ae-seeds.yaml"
SEED_BCE = 0.0926  # the seed's pool_ae: val BCE after 3 epochs of adadelta at learning rate 1.0
KMEANS_GOAL = 0.85  # AE + KMeans in the DEC/IDEC papers: about 0.82
TARGETS = {("conv_ae", "test_bce"): 0.10, ("conv_ae", "test_mse"): 0.012, ("pool_ae", "test_bce"): 0.10}


def mnist_spec(limit: int | None = None) -> dict[str, Any]:
    """The batch; ``limit``: the first N training (and N test) images only."""
    data = {"limit": limit} if limit else {}
    return {
        "batch": "mnist-findings",
        "defaults": {"params": {"batch_size": 128}},
        "jobs": [
            {"name": "conv_ae", "kind": "train", "params": {"model": "conv_ae", "dataset": "mnist", "z_dim": 16,
                                                            "epochs": 3, "loss": "bce", **data}},
            # pool_ae reaches BCE 0.112 in 3 epochs at Adam's default 1e-3; 1e-2 gets 0.094 (1e-3 needs more epochs)
            {"name": "pool_ae", "kind": "train", "params": {"model": "pool_ae", "dataset": "mnist", "epochs": 3,
                                                            "learning_rate": 0.01, **data}},
            {"name": "cnn", "kind": "train", "params": {"model": "cnn", "dataset": "mnist", "epochs": 1, **data}},
            {"name": "enc", "kind": "encode", "needs": ["conv_ae"]},
            {"name": "sample", "kind": "sample", "needs": ["enc", "cnn"], "params": {"n": 2000},
             "sweep": {"sampler": SAMPLERS}},
            # the uniform box made fair: bounded by each component's 2.5% and 97.5% quantiles (as the fitted
            # normal's +-2 sigma holds 95% of each component), not by its extremes
            {"name": "box95", "kind": "sample", "needs": ["enc", "cnn"],
             "params": {"n": 2000, "sampler": "uniform_box", "box_quantile": 0.025}},
            {"name": "kmeans", "kind": "cluster", "needs": ["enc"], "params": {"k": 10, "n_init": 3}},
        ],
    }


def kmeans_spec(limit: int | None = None) -> dict[str, Any]:
    """``examples/mnist-ae-kmeans.yaml`` (its conv_ae is the findings batch's: served from the cache)."""
    return example_spec(KMEANS_SPEC, limit)


def example_spec(path: Path, limit: int | None = None) -> dict[str, Any]:
    """An example batch, its trainings limited to ``limit`` images."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load(path.read_text())
    if limit:
        for job in spec["jobs"]:
            if job["kind"] == "train":
                job["params"]["limit"] = limit
    return spec


def report(final: dict[str, dict[str, float]], took: dict[str, float]) -> list[str]:
    """The figures as printed lines: losses, the samplers' table, KMeans, wall times."""
    conv, pool, cnn = final["conv_ae"], final["pool_ae"], final["cnn"]
    lines = [f"conv_ae z16, 3 epochs: test BCE {conv['test_bce']:.4f}, MSE {conv['test_mse']:.4f}, dead code units "
             f"{conv['dead_code_units']:.0f} of 16 ({took['conv_ae']:.0f} s)",
             f"pool_ae, 3 epochs:     test BCE {pool['test_bce']:.4f}, MSE {pool['test_mse']:.4f}, dead code units "
             f"{pool['dead_code_units']:.0f} of 98 ({took['pool_ae']:.0f} s)",
             f"cnn, 1 epoch:          test accuracy {cnn['test_accuracy']:.4f} ({took['cnn']:.0f} s)"]
    scores = {**{smp: final[f"sample[sampler={smp}]"] for smp in SAMPLERS}, "box 2.5-97.5%": final["box95"]}
    ref = scores["fitted_normal"]
    lines.append(f"{'set':<16}" + "".join(f"{k:>15}" for k in KEYS))
    for label, prefix in (("real test", "ref_test_"), ("reconstructed", "ref_recon_")):
        lines.append(f"{label:<16}" + "".join(f"{ref[prefix + k]:>15.4f}" for k in KEYS))
    for smp, row in scores.items():
        lines.append(f"{smp:<16}" + "".join(f"{row[k]:>15.4f}" for k in KEYS))
    lines.append(f"KMeans k=10 on conv_ae z16 latents: test accuracy {final['kmeans']['test_accuracy']:.4f}")
    lines.append("wall time per job: " + ", ".join(f"{n} {t:.0f}s" for n, t in took.items()))
    return lines


def run(data: Path, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit each batch in turn with the embedded default in one fresh folder (so a later batch is served what an
    earlier one trained, from the cache). Per batch: ``final`` metrics by job, ``steps`` (per-step metrics by job:
    a cluster job's per k), ``seconds`` by job and the batch's ``wall``."""
    import yaml
    from sqlalchemy import create_engine, text

    out = []
    with tempfile.TemporaryDirectory(prefix="lf-mnist-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTFARM_")}
        env.update(LATENTFARM_DATA_DIR=str(data.parent), TF_CPP_MIN_LOG_LEVEL="2")
        for batch_id, spec in enumerate(specs, start=1):
            (Path(tmp) / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            started = time.monotonic()
            proc = subprocess.run([str(Path(sys.executable).parent / "latentfarm"), "submit", "spec.yaml", "--wait"],
                                  cwd=tmp, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            if proc.returncode != 0:
                raise SystemExit(f"error: batch {spec['batch']} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            engine = create_engine(f"sqlite:///{tmp}/latentfarm.db")
            with engine.connect() as c:
                rows = c.execute(text("SELECT j.name, m.key, m.step, m.value FROM metrics m JOIN jobs j ON "
                                      "j.id = m.job_id WHERE j.batch_id = :b"), {"b": batch_id}).all()
                times = c.execute(text("SELECT name, started_at, finished_at FROM jobs WHERE batch_id = :b"),
                                  {"b": batch_id}).all()
            engine.dispose()
            final: dict[str, dict[str, float]] = {}
            steps: dict[str, dict[int, dict[str, float]]] = {}
            for name, key, step, value in rows:
                if not step:
                    final.setdefault(name, {})[key] = value
                else:
                    steps.setdefault(name, {}).setdefault(step, {})[key] = value
            seconds = {name: _seconds(end) - _seconds(start) for name, start, end in times if start and end}
            out.append({"final": final, "steps": steps, "seconds": seconds, "wall": wall})
    return out


def pool_table(batch: dict[str, Any]) -> list[str]:
    """pool_ae with the seed's adadelta at 1.0, per seed: the last epoch's val BCE, test BCE, dead code units."""
    import statistics

    lines = [f"pool_ae, adadelta lr 1.0, 3 epochs (the seed: val BCE {SEED_BCE}):"]
    vals, tests = [], []
    for name in sorted(batch["final"]):
        final, last = batch["final"][name], batch["steps"][name][max(batch["steps"][name])]
        vals.append(last["val_loss"])
        tests.append(final["test_bce"])
        lines.append(f"  {name:<18} val BCE {last['val_loss']:.4f}  test BCE {final['test_bce']:.4f}  dead code units "
                     f"{final['dead_code_units']:.0f} of 98  ({batch['seconds'][name]:.0f} s)")
    lines.append(f"  over {len(vals)} seeds: val BCE {statistics.mean(vals):.4f} +- {statistics.stdev(vals):.4f}, "
                 f"test BCE {statistics.mean(tests):.4f} +- {statistics.stdev(tests):.4f}")
    return lines


def kmeans_table(steps: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """KMeans' test accuracy per cluster job (its scaling and PCA) and per k, as printed lines."""
    jobs = sorted(name for name in steps if name.startswith("kmeans"))
    ks = sorted({k for name in jobs for k in steps[name]})
    lines = [f"{'KMeans on conv_ae z16 codes':<38}" + "".join(f"{'k=' + str(k):>9}" for k in ks)]
    for name in jobs:
        lines.append(f"{name:<38}" + "".join(f"{steps[name][k]['test_accuracy']:>9.4f}" for k in ks))
    return lines


def _seconds(stamp: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(stamp)).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist.npz")
    ap.add_argument("--limit", type=int, default=None, help="the first N training and test images only")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--only", choices=["pool_ae"], default=None, help="run only the pool_ae seeds' batch")
    args = ap.parse_args()
    if not args.data.is_file():
        ap.error(f"--data: no MNIST file at {args.data}")
    if args.data.name != "mnist.npz":
        ap.error("--data: the file must be named mnist.npz (the dataset's usual name in its folder)")
    if args.only == "pool_ae":  # the seeds' batch alone (about 3 minutes)
        pool, = run(args.data.resolve(), [example_spec(POOL_SPEC, args.limit)])
        for line in pool_table(pool):
            print(line)
        if args.json is not None:
            args.json.write_text(json.dumps({"pool_ae_seeds": pool}, indent=2))
        return
    findings, kmeans, pool = run(args.data.resolve(), [mnist_spec(args.limit), kmeans_spec(args.limit),
                                                      example_spec(POOL_SPEC, args.limit)])
    final, took = findings["final"], findings["seconds"]
    for line in report(final, took):
        print(line)
    print(f"the whole batch: {findings['wall']:.0f} s wall")
    verdicts = {f"{job} {key}": final[job][key] <= bound for (job, key), bound in TARGETS.items()}
    for (job, key), bound in TARGETS.items():
        print(f"target {job} {key} <= {bound}: {final[job][key]:.4f} "
              f"({'met' if verdicts[f'{job} {key}'] else 'NOT met'})")
    for line in kmeans_table(kmeans["steps"]):
        print(line)
    best = max(v["test_accuracy"] for per_k in kmeans["steps"].values() for v in per_k.values()
               if "test_accuracy" in v)
    print(f"KMeans on the codes: best test accuracy {best:.4f} (goal >= {KMEANS_GOAL}: "
          f"{'met' if best >= KMEANS_GOAL else 'NOT met'}); {KMEANS_SPEC.name}: {kmeans['wall']:.0f} s wall")
    for line in pool_table(pool):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({"findings": findings, "kmeans": kmeans, "pool_ae_seeds": pool,
                                         "targets": verdicts}, indent=2))

if __name__ == "__main__":
    main()
