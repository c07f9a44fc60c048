"""Per-tile dream jobs: the in-process dream vs the farm's tile jobs, with 1 and with 2 workers.

    .venv/bin/python benchmarks/dream_tiles.py [--backends embedded,redis] [--dreams 8] [--iterations 4]
        [--levels 2] [--size 560] [--epochs 20] [--quick] [--json FILE]

In one run, for one dream and for a batch of ``--dreams`` dreams (two images, the dream input and its mirror
image, times feature maps):
  (a) the in-process sequential dream (``core.dream.run_dream``, the model already loaded),
  (b) the farm with 1 worker: the embedded default (SQLite + an in-process worker on memory://), and Redis +
      PostgreSQL with one ``latentfarm worker --pool solo`` process,
  (c) the farm with 2 worker processes (Redis + PostgreSQL; the embedded default has one in-process worker).
Per-tile overhead = (wall of (b) - wall of (a)) / tile jobs; speed-up = wall of (b) / wall of (c). Goals:
overhead under 20 ms per tile job, speed-up of 2 workers at least 1.6x on the batch.

TensorFlow runs one thread per process in every path (TF_NUM_INTRAOP_THREADS=1 unless set; workers get
``--threads``): the 28x28 cnn runs fastest so, and two workers on two cores do not oversubscribe them.
A farm's wall is measured from just before ``submit`` to the last job's ``finished_at`` in the store, with the
workers started and warmed up (TensorFlow imported, the cnn loaded) before: what a long-running farm does. Each
farm phase gets a fresh store and trains the cnn (seeded, so every phase has the same weights) in its warm-up
batch; the timed batches get the cnn as a cache hit. Every farm dream's final image is compared with the
in-process one (max abs difference). Needs Redis and PostgreSQL for the ``redis`` backend
(LATENTFARM_TEST_REDIS_HOST/PORT/DB, LATENTFARM_TEST_PG_URL as in the tests; the Redis database, 13 unless
LATENTFARM_TEST_REDIS_DB names another, is flushed). ``benchmarks/dream_stores.py`` runs the batch on the same
Redis + PostgreSQL farm (``redis_farm``) with its artifacts in a directory and in an S3 bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
# One TensorFlow thread per process everywhere (the in-process run, the embedded worker, `latentfarm worker
# --threads 1`): the dream's 28x28 cnn runs fastest that way, and two workers on two cores do not fight.
THREADS = os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", THREADS)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from benchmarks.services import pg_schema  # noqa: E402
from scheduler.control import ControlPlane  # noqa: E402
from scheduler.embedded import in_process_worker  # noqa: E402
from scheduler.settings import EMBEDDED_BROKER, Settings  # noqa: E402
from storage import queries  # noqa: E402

IMAGE = REPO.parent / "shared" / "data" / "dream_input.jpg"
BATCH_MAPS = [3, 12, 40, 56]  # the batch: each image with each of these maps (8 dreams with two images)
SINGLE_MAP = 7  # the single dream's map: not in the batch, so the batch is not served from the cache
CNN = {"model": "cnn", "dataset": "digits", "epochs": 2, "seed": 0}
REDIS_HOST = os.environ.get("LATENTFARM_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("LATENTFARM_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("LATENTFARM_TEST_REDIS_DB", "13"))


def dream_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"levels": args.levels, "iterations": args.iterations, "size": args.size, "epochs": args.epochs,
            "epsilon": 0.05}


def spec(name: str, args: argparse.Namespace, images: list[Path], maps: list[int], **dream: Any) -> dict[str, Any]:
    params = {**dream_params(args), **dream}
    sweep: dict[str, Any] = {}
    if len(images) > 1:
        sweep["image"] = [str(p) for p in images]
    else:
        params["image"] = str(images[0])
    if len(maps) > 1:
        sweep["maps"] = maps
    else:
        params["maps"] = maps[0]
    entry: dict[str, Any] = {"name": "dream", "kind": "dream", "needs": "cnn", "params": params}
    if sweep:
        entry["sweep"] = sweep
    return {"batch": name, "jobs": [{"name": "cnn", "kind": "train", "params": CNN}, entry]}


def dreams_of(s: dict[str, Any]) -> list[tuple[str, int]]:
    """(image, map) of every dream in a spec made by ``spec``."""
    entry = s["jobs"][1]
    images = entry.get("sweep", {}).get("image") or [entry["params"]["image"]]
    maps = entry.get("sweep", {}).get("maps") or [entry["params"]["maps"]]
    return [(i, m) for i in images for m in maps]


def make_images(tmp: Path) -> list[Path]:
    """The shared photo (linked into ``tmp``, where the specs are: a data root) and its mirror image."""
    from PIL import Image, ImageOps

    mirror = tmp / "dream_input_mirror.png"
    with Image.open(IMAGE) as img:
        ImageOps.mirror(img.convert("RGB")).save(mirror)
    photo = tmp / IMAGE.name
    if not photo.exists():
        photo.symlink_to(IMAGE)
    return [photo, mirror]


def submit_and_wait(cp: ControlPlane, s: dict[str, Any], tmp: Path, timeout: float = 3600) -> tuple[float, int]:
    """Submit a spec, wait for it; returns (wall seconds from submit to the last finished job, batch id)."""
    path = tmp / f"{s['batch']}.yaml"
    path.write_text(yaml.safe_dump(s, sort_keys=False))
    loaded = cp.load(path)
    started = datetime.now(timezone.utc)
    batch = cp.submit(loaded).batch_id
    summary = [snap.summary for snap in cp.follow(batch, interval=0.1, timeout=timeout)][-1]
    with cp.store.session() as session:
        jobs = queries.list_jobs(session, batch_id=batch)
    bad = [j for j in jobs if j.status.value != "succeeded"]
    if not summary.settled or bad:
        raise SystemExit(f"batch {s['batch']} did not succeed: {summary.counts}; first: "
                         f"{bad[0].name if bad else '-'} {bad[0].error if bad else ''}")
    last = max(j.finished_at for j in jobs if j.finished_at is not None)
    return (last - started).total_seconds(), batch


def time_in_jobs(cp: ControlPlane, batch: int) -> dict[str, float]:
    """Seconds spent inside jobs (claim to finish), for tiles and merges: the rest of the wall is between jobs;
    and the longest a worker waited between finishing one job and starting its next."""
    with cp.store.session() as s:
        jobs = [j for j in queries.list_jobs(s, batch_id=batch) if j.kind.startswith("dream_")]
    out = {"tile_s": 0.0, "merge_s": 0.0, "max_gap_s": 0.0}
    for j in jobs:
        out["tile_s" if j.kind == "dream_tile" else "merge_s"] += (j.finished_at - j.started_at).total_seconds()
    for worker in {j.worker for j in jobs}:
        mine = sorted((j for j in jobs if j.worker == worker), key=lambda j: j.started_at)
        for before, after in zip(mine, mine[1:], strict=False):
            out["max_gap_s"] = max(out["max_gap_s"], (after.started_at - before.finished_at).total_seconds())
    return out


def algorithm_seconds(cp: ControlPlane, batch: int) -> float:
    """The time tile jobs spent in the algorithm itself (their ``seconds`` metric)."""
    with cp.store.session() as s:
        ids = [j.id for j in queries.list_jobs(s, batch_id=batch, kind="dream_tile")]
        return sum(m.value for m in queries.job_metrics(s, ids, key="seconds"))


def tile_jobs(cp: ControlPlane, batch: int) -> list[Any]:
    with cp.store.session() as s:
        return [j for j in queries.list_jobs(s, batch_id=batch) if j.kind == "dream_tile"]


def finals(cp: ControlPlane, batch: int) -> dict[tuple[str, int], np.ndarray]:
    """Each dream's final image by (image, map of its first tile)."""
    out = {}
    with cp.store.session() as s:
        jobs = queries.list_jobs(s, batch_id=batch)
        for j in jobs:
            if j.kind == "dream_merge":
                arts = {a.name: a for a in queries.job_artifacts(s, j.id)}
                if "final.npy" in arts:
                    dream = j.name.rsplit("/", 3)[0]  # <dream>/i<it>/L<level>/merge
                    first = next(t for t in jobs if t.name == f"{dream}/i0/L0/t0")
                    key = (first.params["image"], int(first.params["map"]))
                    final = arts["final.npy"]
                    out[key] = np.load(cp.store.artifacts.verified_path(final.uri, final.sha256, "final.npy"))
    return out


def cnn_path(cp: ControlPlane, batch: int) -> Path:
    with cp.store.session() as s:
        cnn = next(j for j in queries.list_jobs(s, batch_id=batch) if j.kind == "train")
        art = next(a for a in queries.job_artifacts(s, cnn.id) if a.name == "model.keras")
    return cp.store.artifacts.verified_path(art.uri, art.sha256, "model.keras")


def in_process(model_file: Path, args: argparse.Namespace, dreams: list[tuple[str, int]]) -> tuple[float, dict]:
    """(a): every dream one after the other in this process, the model loaded once before the clock starts."""
    import shutil

    import keras

    from core.dream import DreamConfig, features_model, load_image, run_dream

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "cnn.keras"
        shutil.copy(model_file, local)
        model = features_model(keras.saving.load_model(local, compile=False))
    out = {}
    started = time.perf_counter()
    for image, m in dreams:
        config = DreamConfig(maps=m, **dream_params(args))
        out[(str(Path(image).resolve()), m)] = run_dream(model, load_image(image, args.size), config).final
    return time.perf_counter() - started, out


def max_diff(farm: dict, reference: dict) -> float:
    assert set(farm) == set(reference), (sorted(farm), sorted(reference))
    return max(float(np.abs(farm[k] - reference[k]).max()) for k in farm)


# -- Redis + PostgreSQL ----------------------------------------------------------------------------------------


def start_workers(n: int, env: dict[str, str], tmp: Path) -> list[subprocess.Popen[bytes]]:
    exe = str(Path(sys.executable).parent / "latentfarm")
    procs = []
    for k in range(n):
        log = open(tmp / f"worker{k}.log", "ab")  # noqa: SIM115 (closed with the process)
        procs.append(subprocess.Popen([exe, "worker", "--pool", "solo", "--concurrency", "1", "--threads", THREADS,
                                       "--name", f"bench{k}@%h", "--loglevel", "WARNING"], cwd=tmp, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def redis_farm(workers: int, work: Path, warm: dict[str, Any],
               store_env: dict[str, str] | None = None) -> Iterator[tuple[ControlPlane, int]]:
    """A Redis + PostgreSQL farm (a fresh schema, the Redis database flushed) with ``workers`` `latentfarm worker`
    processes started in ``work`` and warmed up on the spec ``warm`` until each has run a tile (TensorFlow
    imported, the cnn loaded). Yields the control plane and the warm-up batch's id. The artifacts go to
    ``work/artifacts`` unless ``store_env`` (added to the workers' environment) names another store with
    LATENTFARM_ARTIFACTS (and LATENTFARM_S3_ENDPOINT); the control plane reads a bucket through a cache of its own
    in ``work``, so that the workers' LATENTFARM_CACHE_DIR counts only their downloads."""
    import redis

    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    with pg_schema() as db:
        env = {**os.environ, "LATENTFARM_DATABASE_URL": db, "LATENTFARM_BROKER_URL": broker,
               "LATENTFARM_ARTIFACTS": str(work / "artifacts"), "LATENTFARM_DATA_DIR": str(work.parent),
               **(store_env or {})}
        settings = Settings(database_url=db, broker_url=broker, artifacts=env["LATENTFARM_ARTIFACTS"],
                            s3_endpoint=env.get("LATENTFARM_S3_ENDPOINT"), cache_dir=work / "control-plane-cache",
                            data_dir=work.parent)
        cp = ControlPlane.open(settings, upgrade=True)
        procs = start_workers(workers, env, work)
        try:
            for attempt in range(5):  # until every worker has run a tile (TensorFlow imported, the cnn loaded)
                _, warm_batch = submit_and_wait(cp, {**warm, "batch": f"{warm['batch']}-{attempt}"} if attempt
                                                else warm, work)
                if len({j.worker for j in tile_jobs(cp, warm_batch)}) == workers:
                    break
                warm = {**warm, "jobs": [warm["jobs"][0], {**warm["jobs"][1], "params": {
                    **warm["jobs"][1]["params"], "epsilon": 0.05 + 0.01 * (attempt + 1)}}]}
            yield cp, warm_batch
        finally:
            stop_workers(procs)
            redis.Redis.from_url(broker).flushdb()


def warm_spec(name: str, workers: int, args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    """The warm-up batch: a small dream with at least two tiles per worker, and the cnn's training."""
    return spec(name, args, [images[0]], [0, 1, 2, 5][:max(2, workers * 2)], levels=1, iterations=1, size=112,
                epochs=2)


def phase(backend: str, workers: int, args: argparse.Namespace, tmp: Path, images: list[Path],
          runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Warm up a farm, then time the single dream and the batch on it."""
    work = tmp / f"{backend}-{workers}"
    work.mkdir()
    warm = warm_spec(f"warm-{backend}-{workers}", workers, args, images)
    result: dict[str, Any] = {"backend": backend, "workers": workers}

    def timed(cp: ControlPlane) -> None:
        for label, s in runs.items():
            wall, batch = submit_and_wait(cp, s, work)
            tiles = tile_jobs(cp, batch)
            inside = time_in_jobs(cp, batch)
            # (a) right after (b), with this farm's cnn: a slower or faster stretch of the machine hits both
            a_wall, a_finals = in_process(result["cnn"], args, dreams_of(s))
            result[label] = {"wall_s": wall, "tiles": len(tiles), "batch": batch, **inside,
                             "algorithm_s": algorithm_seconds(cp, batch), "in_process_s": a_wall,
                             "max_abs_diff": max_diff(finals(cp, batch), a_finals),
                             "workers_used": sorted({j.worker for j in tiles})}
            print(f"  {backend:8} {workers} worker(s) {label:6}: {wall:7.2f} s for {len(tiles)} tile jobs on "
                  f"{len(result[label]['workers_used'])} worker(s) (inside tile jobs {inside['tile_s']:.2f} s, of "
                  f"which the algorithm {result[label]['algorithm_s']:.2f} s; inside merge jobs "
                  f"{inside['merge_s']:.2f} s; longest wait between jobs {inside['max_gap_s'] * 1000:.0f} ms); "
                  f"in-process {a_wall:7.2f} s", flush=True)

    if backend == "embedded":
        settings = Settings(database_url=f"sqlite:///{work / 'latentfarm.db'}", broker_url=EMBEDDED_BROKER,
                            artifacts=str(work / "artifacts"), data_dir=work.parent)
        cp = ControlPlane.open(settings, upgrade=True)
        with in_process_worker(cp.app, hostname="embedded@bench"):
            _, warm_batch = submit_and_wait(cp, warm, work)
            result["cnn"] = cnn_path(cp, warm_batch)
            timed(cp)
        return result

    with redis_farm(workers, work, warm) as (cp, warm_batch):
        result["cnn"] = cnn_path(cp, warm_batch)
        timed(cp)
    return result


def add_dream_arguments(ap: argparse.ArgumentParser) -> None:
    """The dream's and the batch's sizes, ``--quick`` and ``--json``: what the dream benchmarks share."""
    ap.add_argument("--dreams", type=int, default=8, help="dreams in the batch: 2 images x dreams/2 maps")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--size", type=int, default=560)
    ap.add_argument("--epochs", type=int, default=20, help="OIP steps per tile")
    ap.add_argument("--quick", action="store_true", help="a small run to check the benchmark works (~1 min)")
    ap.add_argument("--json", type=Path, help="write the figures here")


def dream_arguments(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed arguments, with ``--quick``'s small sizes applied; a bad ``--dreams`` is a usage error."""
    args = ap.parse_args()
    if args.quick:
        args.dreams, args.iterations, args.levels, args.size, args.epochs = 4, 2, 1, 112, 5
    if args.dreams < 2 or args.dreams % 2 or args.dreams // 2 > len(BATCH_MAPS):
        ap.error(f"--dreams must be an even number from 2 to {2 * len(BATCH_MAPS)}")
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="embedded,redis", help="comma-separated: embedded, redis")
    add_dream_arguments(ap)
    args = dream_arguments(ap)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"embedded", "redis"}:
        ap.error("--backends takes embedded and/or redis")

    with tempfile.TemporaryDirectory(prefix="lf-dream-bench-") as tmp_s:
        tmp = Path(tmp_s)
        images = make_images(tmp)
        runs = {"single": spec("single", args, [images[0]], [SINGLE_MAP]),
                "batch": spec("batch", args, images, BATCH_MAPS[:args.dreams // 2])}
        tiles_per_dream = args.iterations * sum(4 ** level for level in range(args.levels + 1))
        print(f"dream: {args.iterations} iterations x levels 0-{args.levels} = {tiles_per_dream} tile jobs, "
              f"size {args.size}, {args.epochs} OIP steps per tile; batch: {args.dreams} dreams", flush=True)
        phases = [phase(b, w, args, tmp, images, runs)
                  for b, w in [("embedded", 1), ("redis", 1), ("redis", 2)] if b in backends]

    report: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"} | {
        "tiles_per_dream": tiles_per_dream}, "farm": []}
    print("\nresults: overhead per tile job = (farm wall - in-process wall) / tile jobs (goal < 20 ms); the same "
          "with the\nalgorithm's own time inside the tile jobs in place of the in-process run (1 worker only)")
    for p in phases:
        for label in runs:
            r = p[label]
            overhead_ms = (r["wall_s"] - r["in_process_s"]) / r["tiles"] * 1000
            within_ms = (r["wall_s"] - r["algorithm_s"]) / r["tiles"] * 1000 if p["workers"] == 1 else None
            line = {"backend": p["backend"], "workers": p["workers"], "run": label, "wall_s": round(r["wall_s"], 3),
                    "in_process_s": round(r["in_process_s"], 3), "algorithm_s": round(r["algorithm_s"], 3),
                    "tiles": r["tiles"], "workers_used": len(r["workers_used"]),
                    "overhead_ms_per_tile": round(overhead_ms, 2),
                    "overhead_ms_per_tile_vs_algorithm": None if within_ms is None else round(within_ms, 2),
                    "max_abs_diff_vs_in_process": r["max_abs_diff"]}
            report["farm"].append(line)
            within = f", {within_ms:6.2f} ms vs the algorithm's time" if within_ms is not None else ""
            print(f"  {p['backend']:8} {p['workers']} worker(s) {label:6}: farm {r['wall_s']:7.2f} s, in-process "
                  f"{r['in_process_s']:7.2f} s: overhead {overhead_ms:6.2f} ms per tile job{within}; final images "
                  f"differ from in-process by at most {r['max_abs_diff']:.1e} (goal < 1e-4)")
    by = {(p["backend"], p["workers"]): p for p in phases}
    if ("redis", 1) in by and ("redis", 2) in by:
        for label in runs:
            speedup = by[("redis", 1)][label]["wall_s"] / by[("redis", 2)][label]["wall_s"]
            report.setdefault("speedup_2_workers", {})[label] = round(speedup, 3)
            goal = " (goal >= 1.6)" if label == "batch" else ""
            print(f"  speed-up of 2 workers over 1, {label}: {speedup:.2f}x{goal}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
