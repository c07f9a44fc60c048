"""Training throughput: a `train` job run through the farm vs the same model in a plain Keras script, per backend.

    .venv/bin/python benchmarks/train_throughput.py [--backend tensorflow|jax|both] [--images N] [--epochs 3]
        [--rounds 2] [--data ../shared/data/mnist.npz] [--json report.json]

Both train the conv autoencoder (z_dim 16, batch 128, Adam 1e-3, BCE, 10% validation) on the same MNIST images,
each in a fresh process on the backend asked for (the farm: LATENTFARM_BACKEND on the embedded default; the
script: KERAS_BACKEND). Images/second = training images / epoch time, from the end time of each epoch: the farm's
from its per-epoch metric rows in the database (so its checkpoint and metric writes count against it), the
script's from a callback. Epoch 1 (tracing and compiling) is left out of the steady-state figure and reported
separately. The runs alternate (script, farm, script, farm...) so a slower stretch of the machine hits both. Goal:
the farm at least as fast as the script (ratio >= 1.0), aim 1.3. On a shared 2-core machine single epochs vary by
more than that: read the per-epoch lines, and use more rounds.

Default images: 20000; 2000 for JAX on the CPU, where XLA's gradient of a transposed convolution (conv_ae's decoder)
makes an epoch about 40 times longer per image than on TensorFlow's oneDNN kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BACKENDS = ("tensorflow", "jax")
GOAL, AIM = 1.0, 1.3


def plain(backend: str, data: Path, images: int, epochs: int) -> list[float]:
    out = subprocess.run([sys.executable, str(HERE / "plain_keras_train.py"), "--data", str(data), "--images",
                          str(images), "--epochs", str(epochs)], check=True, capture_output=True, text=True,
                         env=_env(KERAS_BACKEND=backend)).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["backend"] != backend:
        raise SystemExit(f"error: the plain script ran on {r['backend']}, not {backend}")
    return _durations(r["start"], r["epoch_ends"])


def farm(backend: str, data: Path, images: int, epochs: int) -> list[float]:
    from sqlalchemy import create_engine, text

    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(f"batch: bench\njobs:\n  - name: ae\n    kind: train\n    params: {{model: conv_ae, "
                        f"dataset: mnist, data_path: {data}, limit: {images}, epochs: {epochs}, z_dim: 16, "
                        f"batch_size: 128}}\n")
        env = _env(LATENTFARM_BACKEND=backend, LATENTFARM_DATA_DIR=str(data.parent))  # the data's folder is a root
        proc = subprocess.run([str(Path(sys.executable).parent / "latentfarm"), "submit", str(spec), "--no-cache"],
                              cwd=tmp, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"error: the farm's batch failed on {backend}:\n{proc.stdout}{proc.stderr}")
        engine = create_engine(f"sqlite:///{tmp}/latentfarm.db")
        with engine.connect() as c:
            # from the "training ..." event: after data loading and the framework's import, as the script's clock
            started = c.execute(text("SELECT time FROM events WHERE message LIKE 'training %'")).scalar_one()
            ends = [r[0] for r in c.execute(text(
                "SELECT time FROM metrics WHERE key = 'loss' AND step > 0 ORDER BY step"))]
        engine.dispose()
        return _durations(_seconds(started), [_seconds(e) for e in ends])


def _seconds(stamp: object) -> float:
    return datetime.fromisoformat(str(stamp)).timestamp()


def _durations(start: float, ends: list[float]) -> list[float]:
    marks = [start, *ends]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATENTFARM_", "KERAS_BACKEND"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _jax_on_cpu() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"], capture_output=True,
                           text=True, env=_env())
    if probe.returncode != 0:
        raise SystemExit("error: JAX is not installed (pip install -e '.[jax]')")
    return probe.stdout.strip() == "cpu"


def measure(backend: str, data: Path, images: int, epochs: int, rounds: int) -> dict:
    """Alternating rounds of script and farm on ``backend``; the per-epoch lines are printed as they come."""
    train_images = int(images * 0.9)  # 10% held out for validation in both
    runs: dict[str, list[list[float]]] = {"script": [], "farm": []}
    for r in range(rounds):
        for name, fn in (("script", plain), ("farm", farm)):
            durations = fn(backend, data, images, epochs)
            runs[name].append(durations)
            print(f"{backend} round {r + 1} {name:6s}: epochs " + ", ".join(
                f"{d:.2f}s ({train_images / d:.0f} images/s)" for d in durations), flush=True)
    steady = {k: [d for run in v for d in run[1:]] for k, v in runs.items()}
    ips = {k: train_images / statistics.median(v) for k, v in steady.items()}
    first = {k: statistics.median(run[0] for run in v) for k, v in runs.items()}
    ratio = ips["farm"] / ips["script"]
    spread = {k: (train_images / max(v), train_images / min(v)) for k, v in steady.items()}
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"{backend}: steady state (epochs 2..{epochs}, median of {len(steady['farm'])}): script "
          f"{ips['script']:.0f} images/s ({spread['script'][0]:.0f}-{spread['script'][1]:.0f}), farm "
          f"{ips['farm']:.0f} images/s ({spread['farm'][0]:.0f}-{spread['farm'][1]:.0f})")
    print(f"{backend}: first epoch (median): script {first['script']:.2f}s, farm {first['farm']:.2f}s")
    print(f"{backend}: farm/script throughput ratio: {ratio:.3f}  (goal >= {GOAL}: {verdict}; aim {AIM})",
          flush=True)
    return {"backend": backend, "images": images, "train_images": train_images, "epochs": epochs,
            "rounds": rounds, "epoch_seconds": runs, "images_per_second": ips, "first_epoch_seconds": first,
            "ratio": ratio, "goal": GOAL, "met": ratio >= GOAL}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mnist.npz")
    ap.add_argument("--images", type=int, default=None,
                    help="MNIST images per run (default 20000; 2000 for JAX on the CPU)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternating script/farm rounds")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if args.epochs < 2 or args.rounds < 1 or (args.images is not None and args.images < 200):
        ap.error("--epochs must be >= 2 (the first is left out), --rounds >= 1, --images >= 200")
    if not args.data.is_file():
        ap.error(f"--data: no MNIST file at {args.data}")
    results = []
    for backend in BACKENDS if args.backend == "both" else (args.backend,):
        images = args.images or (2000 if backend == "jax" and _jax_on_cpu() else 20000)
        results.append(measure(backend, args.data.resolve(), images, args.epochs, args.rounds))
    if args.json is not None:
        args.json.write_text(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
