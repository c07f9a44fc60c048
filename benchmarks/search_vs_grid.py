"""A grid sweep against two searches, in trained epochs: how many each spends to get within 1% of the grid's best.

    .venv/bin/python benchmarks/search_vs_grid.py [--epochs 6] [--trials 12] [--limit 600] [--out DIR]

Three batches through the farm (the embedded default: SQLite and an in-process worker, in a fresh directory), each
training the conv autoencoder on sklearn's digits (``limit`` images, BCE, Adam) over the same space:

- the grid: ``z_dim`` in 2, 8, 32 x ``learning_rate`` in 1e-4, 1e-3, 1e-2 x ``filters`` in 8-16-32, 16-32-64:
  18 jobs of ``--epochs`` epochs each (a sweep);
- a search with TPE and Hyperband, and one with random sampling and the median pruner, over ``z_dim`` int 2..32
  (log), ``learning_rate`` 1e-4..1e-2 (log) and the same two ``filters``: ``--trials`` trials each, one at a time;
  both with ``--no-cache``, so neither is served the grid's results.

The budget unit is the trained epoch: a sweep job spends ``--epochs``, a trial the epochs it trained before it
ended (pruned trials fewer). The grid's jobs are counted in the order they ran. Printed: each run's best
``val_loss`` (the last epoch's), its epochs, the epochs it had spent when its best-so-far first came within 1% of
the grid's best (goal: at most 40% of the grid's epochs), and the best-so-far curve against epochs spent.
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

from sqlalchemy import create_engine, text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GRID_Z = [2, 8, 32]
GRID_LR = [1e-4, 1e-3, 1e-2]
FILTERS = [[8, 16, 32], [16, 32, 64]]


def base(epochs: int, limit: int) -> dict:
    return {"model": "conv_ae", "dataset": "digits", "epochs": epochs, "batch_size": 64, "limit": limit}


def grid_spec(epochs: int, limit: int) -> dict:
    return {"batch": "grid", "jobs": [{"name": "grid", "kind": "train", "params": base(epochs, limit),
                                       "sweep": {"z_dim": GRID_Z, "learning_rate": GRID_LR, "filters": FILTERS}}]}


def search_spec(name: str, sampler: str, pruner: str, epochs: int, limit: int, trials: int) -> dict:
    space = {"z_dim": {"int": [2, 32], "log": True}, "learning_rate": {"float": [1e-4, 1e-2], "log": True},
             "filters": {"choice": FILTERS}}
    search = {"space": space, "metric": "val_loss", "trials": trials, "parallel": 1, "sampler": sampler,
              "pruner": pruner, "seed": 0, "startup": 5}
    return {"batch": name, "jobs": [{"name": name, "kind": "train", "params": base(epochs, limit), "search": search}]}


def submit(tmp: Path, spec: dict, env: dict) -> float:
    path = tmp / f"{spec['batch']}.yaml"
    path.write_text(json.dumps(spec))
    start = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "latentfarm"), "submit", str(path), "--no-cache",
                           "--json"], cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{spec['batch']} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.monotonic() - start


def runs(db: Path) -> dict[str, list[tuple[int, float | None]]]:
    """Per batch, its train jobs in the order they ended: (epochs trained, final val_loss or None if pruned)."""
    engine = create_engine(f"sqlite:///{db}")
    out: dict[str, list[tuple[int, float | None]]] = {}
    with engine.connect() as c:
        rows = c.execute(text(
            "SELECT b.name, j.id, j.status, "
            " (SELECT max(step) FROM metrics m WHERE m.job_id = j.id AND m.key = 'val_loss'),"
            " (SELECT value FROM metrics m WHERE m.job_id = j.id AND m.key = 'val_loss' ORDER BY step DESC LIMIT 1)"
            " FROM jobs j JOIN batches b ON b.id = j.batch_id WHERE j.kind = 'train'"
            " AND j.status IN ('succeeded', 'pruned') ORDER BY j.finished_at, j.id")).all()
    for batch, _, status, steps, value in rows:
        out.setdefault(batch, []).append((int(steps or 0), value if status == "succeeded" else None))
    return out


def curve(jobs: list[tuple[int, float | None]]) -> list[tuple[int, float]]:
    """(epochs spent, best so far) after each job that completed."""
    spent, best, points = 0, None, []
    for steps, value in jobs:
        spent += steps
        if value is not None and (best is None or value < best):
            best = value
        if best is not None and value is not None:
            points.append((spent, best))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--limit", type=int, default=600, help="digits images used (train and test)")
    parser.add_argument("--out", type=Path, help="keep the database here (default: a temporary directory)")
    args = parser.parse_args()
    tmp_ctx = tempfile.TemporaryDirectory(prefix="lf-search-")
    tmp = args.out or Path(tmp_ctx.name)
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LATENTFARM_DATABASE_URL": f"sqlite:///{tmp / 'latentfarm.db'}",
           "LATENTFARM_ARTIFACTS": str(tmp / "artifacts"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    env.pop("LATENTFARM_BROKER_URL", None)
    walls = {"grid": submit(tmp, grid_spec(args.epochs, args.limit), env)}
    for name, sampler, pruner in (("tpe_hyperband", "tpe", "hyperband"), ("random_median", "random", "median")):
        walls[name] = submit(tmp, search_spec(name, sampler, pruner, args.epochs, args.limit, args.trials), env)
    found = runs(tmp / "latentfarm.db")
    grid = found["grid"]
    grid_best = min(v for _, v in grid if v is not None)
    grid_epochs = sum(s for s, _ in grid)
    target = grid_best * 1.01
    print(f"digits conv_ae, {args.epochs} epochs per job, {args.limit} images; val_loss at the last epoch")
    print(f"grid: {len(grid)} jobs, {grid_epochs} epochs, best val_loss {grid_best:.5f}; "
          f"within 1%: <= {target:.5f}")
    print()
    print(f"{'run':<15} {'jobs':>5} {'pruned':>6} {'epochs':>7} {'best':>9} {'epochs to 1%':>13} {'of grid':>8} "
          f"{'wall s':>7}")
    for name in ("grid", "tpe_hyperband", "random_median"):
        jobs = found.get(name, [])
        points = curve(jobs)
        reached = next((e for e, b in points if b <= target), None)
        best = min((b for _, b in points), default=float("nan"))
        share = f"{reached / grid_epochs:.0%}" if reached is not None else "never"
        print(f"{name:<15} {len(jobs):>5} {sum(1 for _, v in jobs if v is None):>6} {sum(s for s, _ in jobs):>7} "
              f"{best:>9.5f} {reached if reached is not None else '-':>13} {share:>8} {walls[name]:>7.0f}")
    print()
    print("best val_loss so far vs epochs spent (each job or trial that completed):")
    for name in ("grid", "tpe_hyperband", "random_median"):
        points = curve(found.get(name, []))
        shown = [points[0]] + [p for a, p in zip(points, points[1:], strict=False) if p[1] < a[1]] if points else []
        print(f"  {name}: " + ", ".join(f"{e}:{b:.4f}" for e, b in shown))


if __name__ == "__main__":
    main()
