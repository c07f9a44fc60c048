"""Training throughput: a `train` job run through the farm vs the same model in a plain Keras script.

    .venv/bin/python benchmarks/train_throughput.py [--images 20000] [--epochs 3] [--data ../shared/data/mnist.npz]

Both train the conv autoencoder (z_dim 16, batch 128, Adam 1e-3, BCE, 10% validation) on the same MNIST images,
each in a fresh process. Images/second = training images / epoch time, from the end time of each epoch: the
farm's from its per-epoch metric rows in the database, the script's from a callback. Epoch 1 (graph tracing)
is left out of the steady-state figure and reported separately. The two runs alternate (script, farm, script,
farm...) so a slower stretch of the machine hits both. Goal: the farm within 5% of the script. On a shared
2-core machine single epochs vary by more than that: read the per-epoch lines, and use more rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def plain(data: Path, images: int, epochs: int) -> tuple[list[float], int]:
    out = subprocess.run([sys.executable, str(HERE / "plain_keras_train.py"), "--data", str(data), "--images",
                          str(images), "--epochs", str(epochs)], check=True, capture_output=True, text=True,
                         env=_env()).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return _durations(r["start"], r["epoch_ends"]), r["params"]


def farm(data: Path, images: int, epochs: int) -> tuple[list[float], int]:
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(f"batch: bench\njobs:\n  - name: ae\n    kind: train\n    params: {{model: conv_ae, "
                        f"dataset: mnist, data_path: {data}, limit: {images}, epochs: {epochs}, z_dim: 16, "
                        f"batch_size: 128}}\n")
        subprocess.run([str(Path(sys.executable).parent / "latentfarm"), "submit", str(spec), "--no-cache"],
                       cwd=tmp, check=True, capture_output=True, env=_env())
        engine = create_engine(f"sqlite:///{tmp}/latentfarm.db")
        with engine.connect() as c:
            # from the "training ..." event: after data loading and TensorFlow's import, as the script's clock
            started = c.execute(text("SELECT time FROM events WHERE message LIKE 'training %'")).scalar_one()
            ends = [r[0] for r in c.execute(text(
                "SELECT time FROM metrics WHERE key = 'loss' AND step > 0 ORDER BY step"))]
        engine.dispose()
        from datetime import datetime
        t0 = datetime.fromisoformat(str(started)).timestamp()
        return _durations(t0, [datetime.fromisoformat(str(e)).timestamp() for e in ends]), 0


def _durations(start: float, ends: list[float]) -> list[float]:
    marks = [start, *ends]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTFARM_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2")
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist.npz")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating script/farm rounds")
    args = ap.parse_args()
    train_images = int(args.images * 0.9)  # 10% held out for validation in both
    steady: dict[str, list[float]] = {"script": [], "farm": []}
    first: dict[str, list[float]] = {"script": [], "farm": []}
    for r in range(args.rounds):
        for name, fn in (("script", plain), ("farm", farm)):
            durations, _ = fn(args.data.resolve(), args.images, args.epochs)
            first[name].append(durations[0])
            steady[name] += durations[1:]
            print(f"round {r + 1} {name:6s}: epochs " + ", ".join(f"{d:.2f}s" for d in durations), flush=True)
    ips = {k: train_images / statistics.median(v) for k, v in steady.items()}
    ratio = ips["farm"] / ips["script"]
    print(f"\nsteady state (epochs 2..{args.epochs}, median): script {ips['script']:.0f} images/s, "
          f"farm {ips['farm']:.0f} images/s")
    print(f"first epoch (median): script {statistics.median(first['script']):.2f}s, "
          f"farm {statistics.median(first['farm']):.2f}s")
    print(f"farm/script throughput ratio: {ratio:.3f}  (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")


if __name__ == "__main__":
    main()
