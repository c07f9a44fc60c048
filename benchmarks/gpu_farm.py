"""The farm on a GPU machine: dream tiles per second with K = 1, 2, 4 worker processes per GPU, the farm's overhead
per tile, and a conv_ae train job's images per second; the farm part of ``benchmarks/gpu_check.sh``.

    .venv/bin/python benchmarks/gpu_farm.py [--per-gpu 1,2,4] [--cpu-smoke] [--json FILE] [--budget 330]
        [--dreams 8] [--levels 2] [--iterations 2] [--epochs 20] [--train-images 20000] [--train-epochs 3]

The farm is what a GPU machine can run alone: SQLite (a file, WAL) for the store, a Redis server of its own (the
``redis-server`` on PATH, started on a free port without persistence, stopped at the end; or the broker named by
LATENTFARM_CHECK_BROKER_URL), and for each K ``latentfarm worker --gpus all --per-gpu K``: K processes per GPU,
each with its share of the device's memory and of the cores. Without a Redis server nor a broker URL the farm's
worker processes cannot share a queue (the embedded default's broker lives in one process's memory): the figures
are then those of the embedded default with one in-process worker running K jobs at once in threads (mode
``embedded-threads`` in the report), which share one process and its memory rather than the device's.

Per K, after a warm-up that makes every worker import the framework and load the cnn (a small dream, until each
has run a tile), one batch of ``--dreams`` dreams (the photo and its mirror image, times feature maps) is timed
from submit to its last job's end. tiles/s = tile jobs / wall. The farm's overhead per tile = (wall x jobs at
once - the tiles' own time in the algorithm, their ``seconds`` metric) / tile jobs: the worker time per tile
not spent dreaming (claiming, loading, recording, waiting at a level's merge); at K = 1 on one GPU, (wall -
algorithm) / tiles. Each K's batch differs from the others by its step size in the fourth decimal, so none is
served from the cache, with the same work. Then a conv_ae train job (MNIST where ``mnist.npz`` is found, else the
digits) runs on the first K's farm (K = 1 by default), and its per-epoch ``images_per_second`` metric (epoch time
from its metric rows where the metric is missing) is reported. The backend is the workers' LATENTFARM_BACKEND
(``gpu_check.sh`` sets it). ``--cpu-smoke``: a small run on simulated GPUs (LATENTFARM_GPUS=0, the framework on
the CPU) to check the script. The report is written after every phase, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from scheduler.control import ControlPlane  # noqa: E402
from scheduler.settings import EMBEDDED_BROKER, Settings  # noqa: E402
from scheduler.supervisor import discover_gpus  # noqa: E402
from storage import queries, workers  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
CNN = {"model": "cnn", "dataset": "digits", "epochs": 2, "seed": 0}
MAPS = [3, 12, 40, 56]  # the batch's feature maps: each image with each (8 dreams with two images)


def mnist_file() -> Path | None:
    for candidate in (os.environ.get("LATENTFARM_CHECK_MNIST"), SHARED / "mnist.npz",
                      Path.home() / ".keras" / "datasets" / "mnist.npz"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def make_images(folder: Path) -> list[Path]:
    """The dream's two images in ``folder``: the shared photo (scikit-learn's china.jpg where it is missing) and its
    mirror image."""
    from PIL import Image, ImageOps

    photo = folder / "dream_input.png"
    if (SHARED / "dream_input.jpg").is_file():
        with Image.open(SHARED / "dream_input.jpg") as img:
            img.convert("RGB").save(photo)
    else:
        from sklearn.datasets import load_sample_image

        Image.fromarray(load_sample_image("china.jpg")).save(photo)
    mirror = folder / "dream_input_mirror.png"
    with Image.open(photo) as img:
        ImageOps.mirror(img).save(mirror)
    return [photo, mirror]


def dream_spec(name: str, images: list[Path], maps: list[int], **params: Any) -> dict[str, Any]:
    entry = {"name": "dream", "kind": "dream", "needs": "cnn", "params": params,
             "sweep": {"image": [p.name for p in images], "maps": maps}}
    return {"batch": name, "jobs": [{"name": "cnn", "kind": "train", "params": CNN}, entry]}


def submit_and_wait(cp: ControlPlane, spec: dict[str, Any], folder: Path, timeout: float = 1800,
                    no_cache: bool = False) -> tuple[float, int]:
    """Submit ``spec`` (written to ``folder``), wait for it; (seconds from submit to its last job's end, batch id).
    SystemExit if a job did not succeed."""
    path = folder / f"{spec['batch']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = cp.load(path)
    started = datetime.now(timezone.utc)
    batch = cp.submit(loaded, no_cache=no_cache).batch_id
    summary = [snap.summary for snap in cp.follow(batch, interval=0.1, timeout=timeout)][-1]
    with cp.store.session() as s:
        jobs = queries.list_jobs(s, batch_id=batch)
    bad = [j for j in jobs if j.status.value != "succeeded"]
    if not summary.settled or bad:
        raise SystemExit(f"batch {spec['batch']} did not succeed: {summary.counts}; first: "
                         f"{bad[0].name if bad else '-'} {bad[0].error if bad else ''}")
    last = max(j.finished_at for j in jobs if j.finished_at is not None)
    return (last - started).total_seconds(), batch


def job_seconds(job: Any) -> float:
    """A finished job's seconds from its claim to its end."""
    assert job.started_at is not None and job.finished_at is not None
    return float((job.finished_at - job.started_at).total_seconds())


def metric_values(cp: ControlPlane, job_ids: list[int], key: str) -> list[float]:
    with cp.store.session() as s:
        return [m.value for m in queries.job_metrics(s, job_ids, key=key)]


# -- the broker ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker(folder: Path) -> Iterator[str | None]:
    """The farm's broker URL: LATENTFARM_CHECK_BROKER_URL, else a Redis server of its own for the block; None
    without either."""
    given = os.environ.get("LATENTFARM_CHECK_BROKER_URL")
    exe = shutil.which("redis-server")
    if given or exe is None:
        yield given
        return
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"redis-server on port {port} did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# -- the workers -----------------------------------------------------------------------------------------------


@contextmanager
def supervised(cp: ControlPlane, per_gpu: int, processes: int, env: dict[str, str], folder: Path) -> Iterator[None]:
    """``latentfarm worker --gpus all --per-gpu K`` for the block, once its ``processes`` workers are live."""
    exe = Path(sys.executable).parent / "latentfarm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "scheduler.cli"]
    log = open(folder / f"workers-k{per_gpu}.log", "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([*cmd, "worker", "--gpus", "all", "--per-gpu", str(per_gpu), "--loglevel", "WARNING"],
                            env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            with cp.store.session() as s:
                live = [w for w in workers.live_workers(s, cp.settings.worker_lost_after)
                        if w.name.startswith("gpu") and w.pid and _alive(w.pid)]
            if len(live) >= processes:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the workers of --per-gpu {per_gpu} did not start (see {log.name})")
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a warm shutdown
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def warm_up(cp: ControlPlane, folder: Path, images: list[Path], per_gpu: int, slots: int, names: int) -> None:
    """Small dreams until ``names`` workers have run a tile (the framework imported, the cnn loaded), ``slots`` of
    them at once."""
    maps = [0, 1, 2, 5, 6, 8, 9, 10][:max(2, slots)]
    for attempt in range(5):
        _, batch = submit_and_wait(cp, dream_spec(f"warm-k{per_gpu}-{attempt}", images[:1], maps, levels=1,
                                                  iterations=1, size=112, epochs=2, epsilon=0.05 + 0.01 * attempt),
                                   folder)
        with cp.store.session() as s:
            used = {j.worker for j in queries.list_jobs(s, batch_id=batch, kind="dream_tile")}
        if len(used) >= names:
            return
    print(f"  warm-up: {len(used)} of {names} workers ran a tile", flush=True)


def timed_batch(cp: ControlPlane, folder: Path, images: list[Path], args: argparse.Namespace, per_gpu: int,
                slots: int) -> dict[str, Any]:
    """The timed dream batch on a warm farm that runs ``slots`` jobs at once."""
    params = {"levels": args.levels, "iterations": args.iterations, "epochs": args.epochs,
              "epsilon": round(0.05 + 0.0001 * per_gpu, 4)}
    if args.size:
        params["size"] = args.size
    wall, batch = submit_and_wait(cp, dream_spec(f"dreams-k{per_gpu}", images, MAPS[:args.dreams // 2], **params),
                                  folder)
    with cp.store.session() as s:
        jobs = [j for j in queries.list_jobs(s, batch_id=batch) if j.kind.startswith("dream_")]
    tiles = [j for j in jobs if j.kind == "dream_tile"]
    algorithm = sum(metric_values(cp, [j.id for j in tiles], "seconds"))
    inside = sum(job_seconds(j) for j in tiles)
    merges = sum(job_seconds(j) for j in jobs if j.kind == "dream_merge")
    peaks = metric_values(cp, [j.id for j in tiles], "gpu_peak_memory")
    utils = metric_values(cp, [j.id for j in tiles], "gpu_util_mean")
    return {"per_gpu": per_gpu, "jobs_at_once": slots, "wall_s": round(wall, 3), "tiles": len(tiles),
            "tiles_per_s": round(len(tiles) / wall, 2), "algorithm_s": round(algorithm, 3),
            "in_tile_jobs_s": round(inside, 3), "in_merge_jobs_s": round(merges, 3),
            "overhead_ms_per_tile": round((wall * slots - algorithm) / len(tiles) * 1000, 2),
            "workers_used": len({j.worker for j in tiles}),
            "gpu_peak_memory_mib_max": round(max(peaks) / 2**20) if peaks else None,
            "gpu_util_mean": round(statistics.mean(utils), 1) if utils else None}


def train_speed(cp: ControlPlane, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A conv_ae train job on the farm: its images per second per epoch."""
    mnist = mnist_file()
    params: dict[str, Any] = {"model": "conv_ae", "z_dim": 16, "batch_size": 128, "epochs": args.train_epochs}
    if mnist is not None and cp.settings.data_dir == mnist.parent:
        params.update(dataset="mnist", data_path=mnist.name, limit=args.train_images)
    else:
        params.update(dataset="digits")
    _, batch = submit_and_wait(cp, {"batch": "train", "jobs": [{"name": "ae", "kind": "train", "params": params}]},
                               folder, no_cache=True)
    with cp.store.session() as s:
        job = queries.list_jobs(s, batch_id=batch)[0]
        metrics = queries.job_metrics(s, [job.id])
        events = queries.job_events(s, job.id)
    speeds = [m.value for m in sorted(metrics, key=lambda m: m.step) if m.key == "images_per_second" and m.step > 0]
    source = "images_per_second metric"
    if not speeds:  # a farm without the metric: the epochs' ends from the loss rows, after the "training" event
        train_images = int(params.get("limit", 1797 * 0.8) * 0.9)
        start = next(e.time for e in events if (e.message or "").startswith("training "))
        ends = [m.time for m in sorted(metrics, key=lambda m: m.step) if m.key == "loss" and m.step > 0]
        marks = [start, *ends]
        speeds = [train_images / (b - a).total_seconds() for a, b in zip(marks, marks[1:], strict=False)]
        source = "epoch ends of the loss rows"
    steady = speeds[1:] or speeds
    return {"dataset": params["dataset"], "epochs": args.train_epochs, "images_per_s_per_epoch":
            [round(v, 1) for v in speeds], "images_per_s_steady": round(statistics.median(steady), 1),
            "source": source, "wall_s": round(job_seconds(job), 2)}


# -- the run ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-gpu", default="1,2,4", help="the K values, comma-separated")
    ap.add_argument("--dreams", type=int, default=8, help="dreams in the timed batch: 2 images x dreams/2 maps")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--size", type=int, default=None, help="default: the dream's, 28 x 2^levels x 5")
    ap.add_argument("--epochs", type=int, default=20, help="OIP steps per tile")
    ap.add_argument("--train-images", type=int, default=20000)
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--budget", type=float, default=330, help="seconds: a K whose phase would start later is skipped")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="a small run on simulated GPUs (LATENTFARM_GPUS=0), to check the script on a machine "
                         "without one")
    ap.add_argument("--json", type=Path, help="write the report here (after every phase)")
    args = ap.parse_args()
    try:
        ks = [int(k) for k in args.per_gpu.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        ap.error("--per-gpu takes whole numbers >= 1, comma-separated, e.g. 1,2,4")
    if args.dreams < 2 or args.dreams % 2 or args.dreams // 2 > len(MAPS):
        ap.error(f"--dreams must be an even number from 2 to {2 * len(MAPS)}")
    if args.cpu_smoke:
        os.environ["LATENTFARM_GPUS"] = "0"
        args.dreams, args.levels, args.iterations, args.size, args.epochs = 2, 1, 1, 112, 5
        args.train_images, args.train_epochs = 2000, 2
    started = time.monotonic()
    gpus = discover_gpus(Settings.from_env().gpus)
    if not gpus:
        raise SystemExit("no GPU: nvidia-smi lists none (use --cpu-smoke to check the script without one)")

    report: dict[str, Any] = {"mode": None, "gpus": gpus, "backend": os.environ.get("LATENTFARM_BACKEND") or
                              os.environ.get("KERAS_BACKEND") or "tensorflow", "cpu_smoke": args.cpu_smoke,
                              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "dream": [], "train": None}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))

    with tempfile.TemporaryDirectory(prefix="lf-gpu-check-") as tmp_s, broker(Path(tmp_s)) as url:
        tmp = Path(tmp_s)
        images = make_images(tmp)
        mnist = mnist_file()
        data_dir = mnist.parent if mnist is not None else tmp
        db = f"sqlite:///{tmp / 'latentfarm.db'}"
        env = {**os.environ, "LATENTFARM_DATABASE_URL": db, "LATENTFARM_BROKER_URL": url or EMBEDDED_BROKER,
               "LATENTFARM_ARTIFACTS": str(tmp / "artifacts"), "LATENTFARM_DATA_DIR": str(data_dir)}
        settings = Settings.from_env(env)
        cp = ControlPlane.open(settings, upgrade=True)
        report["mode"] = "farm" if url else "embedded-threads"
        report["broker"] = ("LATENTFARM_CHECK_BROKER_URL" if os.environ.get("LATENTFARM_CHECK_BROKER_URL") else
                            "redis-server of its own" if url else "none: the embedded default's memory://")
        print(f"{report['mode']}: GPUs {','.join(gpus)}, backend {report['backend']}, broker {report['broker']}, "
              f"SQLite store", flush=True)
        for k in ks:
            if time.monotonic() - started > args.budget:
                report["dream"].append({"per_gpu": k, "skipped": f"past the budget of {args.budget:g} s"})
                save()
                continue
            slots = names = k * len(gpus)  # worker processes, each with its name
            if url:
                farm = supervised(cp, k, slots, env, tmp)
            else:  # one process: K jobs at once in threads, on the first GPU
                from scheduler.embedded import in_process_worker

                os.environ.update(CUDA_VISIBLE_DEVICES=gpus[0], LATENTFARM_GPU=gpus[0])
                farm = in_process_worker(cp.app, concurrency=k, hostname=f"gpu{gpus[0]}-threads@check")
                slots, names = k, 1
            with farm:
                warm_up(cp, tmp, images, k, slots, names)
                result = timed_batch(cp, tmp, images, args, k, slots)
                report["dream"].append(result)
                print(f"  K = {k}: {result['tiles']} tiles in {result['wall_s']:.2f} s = {result['tiles_per_s']:.1f} "
                      f"tiles/s on {result['workers_used']} of {names} workers, {slots} jobs at once; algorithm "
                      f"{result['algorithm_s']:.2f} s; overhead {result['overhead_ms_per_tile']:.1f} ms per tile",
                      flush=True)
                save()
                if k == ks[0]:
                    report["train"] = train_speed(cp, tmp, args)
                    t = report["train"]
                    print(f"  conv_ae train on {t['dataset']}: {t['images_per_s_steady']:.0f} images/s (per epoch "
                          f"{t['images_per_s_per_epoch']}, {t['source']})", flush=True)
                    save()
        report["seconds"] = round(time.monotonic() - started, 1)
        save()
    one = next((d for d in report["dream"] if d.get("per_gpu") == 1 and "tiles_per_s" in d), None)
    for d in report["dream"]:
        if one and "tiles_per_s" in d:
            d["speedup_over_k1"] = round(d["tiles_per_s"] / one["tiles_per_s"], 2)
    save()
    if not args.json:
        print(json.dumps({"dream": report["dream"], "train": report["train"]}, indent=1))


if __name__ == "__main__":
    main()
