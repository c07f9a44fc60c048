"""The seed experiments' MNIST findings on the whole of MNIST, through the farm (the embedded default).

    .venv/bin/python benchmarks/mnist_findings.py [--data ../shared/data/mnist.npz] [--limit N] [--json FILE]

One batch: conv_ae z16 and pool_ae 3 epochs each (BCE), a CNN (1 epoch) to score samples, encode, four samplers
(2000 samples each) and KMeans k = 10 on the latents. Prints the trainings' test losses, the samplers' scores
beside the real and reconstructed test images, KMeans' test accuracy and each job's wall time, and checks the
seed's targets (conv_ae test BCE <= 0.10 and MSE <= 0.012, pool_ae BCE <= 0.10). About 9 minutes of CPU on two
cores: too long for the test suite, which runs the same batch on 12,000 images
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
KEYS = ["confident_frac", "class_entropy", "fid_cnn", "fid_latent", "nn_dist"]
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
            {"name": "kmeans", "kind": "cluster", "needs": ["enc"], "params": {"k": 10, "n_init": 3}},
        ],
    }


def report(final: dict[str, dict[str, float]], took: dict[str, float]) -> list[str]:
    """The figures as printed lines: losses, the samplers' table, KMeans, wall times."""
    conv, pool, cnn = final["conv_ae"], final["pool_ae"], final["cnn"]
    lines = [f"conv_ae z16, 3 epochs: test BCE {conv['test_bce']:.4f}, MSE {conv['test_mse']:.4f} "
             f"({took['conv_ae']:.0f} s)",
             f"pool_ae, 3 epochs:     test BCE {pool['test_bce']:.4f}, MSE {pool['test_mse']:.4f} "
             f"({took['pool_ae']:.0f} s)",
             f"cnn, 1 epoch:          test accuracy {cnn['test_accuracy']:.4f} ({took['cnn']:.0f} s)"]
    scores = {smp: final[f"sample[sampler={smp}]"] for smp in SAMPLERS}
    ref = scores["fitted_normal"]
    lines.append(f"{'set':<16}" + "".join(f"{k:>16}" for k in KEYS))
    for label, prefix in (("real test", "ref_test_"), ("reconstructed", "ref_recon_")):
        lines.append(f"{label:<16}" + "".join(f"{ref[prefix + k]:>16.4f}" for k in KEYS))
    for smp, row in scores.items():
        lines.append(f"{smp:<16}" + "".join(f"{row[k]:>16.4f}" for k in KEYS))
    lines.append(f"KMeans k=10 on conv_ae z16 latents: test accuracy {final['kmeans']['test_accuracy']:.4f}")
    lines.append("wall time per job: " + ", ".join(f"{n} {t:.0f}s" for n, t in took.items()))
    return lines


def run(data: Path, limit: int | None) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Submit the batch with the embedded default in a fresh folder; (final metrics by job, seconds by job, wall)."""
    import yaml
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="lf-mnist-") as tmp:
        (Path(tmp) / "mnist.yaml").write_text(yaml.safe_dump(mnist_spec(limit), sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTFARM_")}
        env.update(LATENTFARM_DATA_DIR=str(data.parent), TF_CPP_MIN_LOG_LEVEL="2")
        started = time.monotonic()
        proc = subprocess.run([str(Path(sys.executable).parent / "latentfarm"), "submit", "mnist.yaml", "--wait",
                               "--no-cache"], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"error: the batch failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        engine = create_engine(f"sqlite:///{tmp}/latentfarm.db")
        with engine.connect() as c:
            rows = c.execute(text("SELECT j.name, m.key, m.value FROM metrics m JOIN jobs j ON j.id = m.job_id "
                                  "WHERE m.step = 0 OR m.step IS NULL")).all()
            times = c.execute(text("SELECT name, started_at, finished_at FROM jobs")).all()
        engine.dispose()
    final: dict[str, dict[str, float]] = {}
    for name, key, value in rows:
        final.setdefault(name, {})[key] = value
    took = {name: _seconds(end) - _seconds(start) for name, start, end in times if start and end}
    return final, took, wall


def _seconds(stamp: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(stamp)).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist.npz")
    ap.add_argument("--limit", type=int, default=None, help="the first N training and test images only")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not args.data.is_file():
        ap.error(f"--data: no MNIST file at {args.data}")
    if args.data.name != "mnist.npz":
        ap.error("--data: the file must be named mnist.npz (the dataset's usual name in its folder)")
    final, took, wall = run(args.data.resolve(), args.limit)
    for line in report(final, took):
        print(line)
    print(f"the whole batch: {wall:.0f} s wall")
    verdicts = {f"{job} {key}": final[job][key] <= bound for (job, key), bound in TARGETS.items()}
    for (job, key), bound in TARGETS.items():
        print(f"target {job} {key} <= {bound}: {final[job][key]:.4f} "
              f"({'met' if verdicts[f'{job} {key}'] else 'NOT met'})")
    if args.json is not None:
        args.json.write_text(json.dumps({"final": final, "seconds": took, "wall": wall, "targets": verdicts},
                                        indent=2))


if __name__ == "__main__":
    main()
