"""The farm's job throughput against bare Celery, and the time to submit a large batch.

    .venv/bin/python benchmarks/farm_vs_celery.py [--jobs 2000] [--rounds 2] [--submit-jobs 10000]
        [--submit-dbs postgresql,sqlite] [--parts throughput,submit] [--quick] [--json FILE]

Throughput, on Redis + PostgreSQL, ``--rounds`` times, farm and bare Celery taking turns (the machine's speed
drifts, so each pair of rounds sees about the same machine):
  farm:  ``--jobs`` noop jobs (``seconds: 0``) in one batch, submitted through ``ControlPlane.submit``, run by one
         ``latentfarm worker -Q cpu --pool solo -c 1`` process;
  bare:  ``--jobs`` messages of a trivial task on the same broker and queue, with the same app configuration
         (``scheduler.celery_app.make_celery``: acks_late, prefetch 1, task events, JSON), run by one
         ``celery worker -Q cpu --pool solo -c 1`` process started the same way.
Each worker is started (and warmed up with a few jobs) before its round and stopped after it: both consume the
``cpu`` queue. Two rates per round:
  processing: jobs / (last job finished - first job started): the worker's rate. For the farm from the jobs
              table's ``started_at`` (the claim) and ``finished_at`` (the completing transaction); for bare
              Celery from the task's first and last run, recorded by the worker process.
  end-to-end: jobs / (last job finished - just before submit): includes writing the batch and sending it.
Goal: the farm keeps at least 50% of bare Celery's throughput.

Submission, per database (``--submit-dbs``, each a fresh store; Redis as the broker, no worker consuming): the
time of ``ControlPlane.submit`` from a loaded spec to its return (goal < 10 s for 10,000 jobs), and separately
loading the spec (YAML, validation, sweep expansion) and planning (fingerprints, edges), for three batches:
  flat:   ``--submit-jobs`` independent noop jobs (one sweep): all queued and sent;
  chains: ``--submit-jobs`` / 2 chains of a parent and its child (``foreach``): the parents queued;
  cached: the flat batch again after its jobs succeeded (marked in SQL, with a metric and an artifact each): all
          cache hits, marked succeeded with their results copied, nothing sent.

Needs Redis and PostgreSQL (LATENTFARM_TEST_REDIS_HOST/PORT, LATENTFARM_BENCH_REDIS_DB (default 12, flushed at
the start and the end), LATENTFARM_TEST_PG_URL): the PostgreSQL store lives in a fresh schema, dropped after.
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.services import pg_schema  # noqa: E402

REDIS_HOST = os.environ.get("LATENTFARM_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("LATENTFARM_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("LATENTFARM_BENCH_REDIS_DB", "12"))
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
BARE_TASK = "bench.bare_noop"
WARMUP = 10  # jobs each worker runs before its timed round

# -- the bare Celery app, for `celery -A benchmarks.farm_vs_celery:bare_app worker` ----------------------------

_runs: dict[str, int] = {}  # in the bare worker process: tasks of each run seen so far
_times: Any = None  # the bare worker's Redis client, to report its first and last task's times


def _make_bare_app() -> Any:
    """The farm's Celery app (same broker, queues and settings), with a trivial task registered."""
    from scheduler.celery_app import make_celery
    from scheduler.settings import Settings

    app = make_celery(Settings.from_env())

    @app.task(name=BARE_TASK, ignore_result=True)
    def bare_noop(run: str, n: int) -> None:
        """Nothing, but the first and the last of ``n`` tasks of ``run`` record when they ran."""
        global _times
        now = time.time()
        count = _runs[run] = _runs.get(run, 0) + 1
        if count == 1 or count == n:
            if _times is None:
                import redis

                _times = redis.Redis.from_url(app.conf.broker_url)
            if count == 1:
                _times.set(f"bench:{run}:first", repr(now))
            if count == n:
                _times.set(f"bench:{run}:last", repr(time.time()))

    return app


def __getattr__(name: str) -> Any:  # PEP 562: the app is made only when the bare worker asks for it
    if name == "bare_app":
        app = _make_bare_app()
        globals()["bare_app"] = app
        return app
    raise AttributeError(name)


# -- services --------------------------------------------------------------------------------------------------

def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(BROKER)


def open_plane(db_url: str, work: Path) -> Any:
    from scheduler.control import ControlPlane
    from scheduler.settings import Settings

    settings = Settings(database_url=db_url, broker_url=BROKER, artifacts_dir=work / "artifacts", data_dir=work)
    return ControlPlane.open(settings, upgrade=True)


def worker_env(cp: Any) -> dict[str, str]:
    return {**os.environ, "LATENTFARM_DATABASE_URL": cp.settings.database_url, "LATENTFARM_BROKER_URL": BROKER,
            "LATENTFARM_ARTIFACTS": str(cp.settings.artifacts_dir), "LATENTFARM_DATA_DIR": str(cp.settings.data_dir),
            "PYTHONPATH": str(REPO)}


# The same worker options for both: one process, solo pool, the cpu queue, no gossip or mingle (as
# `latentfarm worker` passes them to Celery), warnings only.
WORKER_OPTS = ["-Q", "cpu", "--pool", "solo", "-c", "1", "--loglevel", "WARNING"]


@contextmanager
def worker_process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def farm_worker(cp: Any, work: Path) -> Any:
    exe = str(Path(sys.executable).parent / "latentfarm")
    return worker_process([exe, "worker", *WORKER_OPTS, "--name", "farm@%h"], worker_env(cp), work / "farm.log")


def bare_worker(cp: Any, work: Path) -> Any:
    argv = [sys.executable, "-m", "celery", "-A", "benchmarks.farm_vs_celery:bare_app", "worker", *WORKER_OPTS,
            "--hostname", "bare@%h", "--without-gossip", "--without-mingle"]
    return worker_process(argv, worker_env(cp), work / "bare.log")


# -- specs -----------------------------------------------------------------------------------------------------

def write_spec(spec: dict[str, Any], work: Path) -> Path:
    import yaml

    path = work / f"{spec['batch']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def flat_spec(name: str, n: int, base: int) -> dict[str, Any]:
    """``n`` independent noop jobs; ``base`` makes their values (and so their fingerprints) new."""
    return {"batch": name, "jobs": [{"name": "noop", "kind": "noop", "params": {"seconds": 0},
                                     "sweep": {"value": list(range(base, base + n))}}]}


def chains_spec(name: str, n: int, base: int) -> dict[str, Any]:
    """``n`` // 2 chains of a parent and its child."""
    half = n // 2
    return {"batch": name, "jobs": [
        {"name": "parent", "kind": "noop", "params": {"seconds": 0},
         "sweep": {"value": list(range(base, base + half))}},
        {"name": "child", "kind": "noop", "params": {"seconds": 0, "fail": False}, "foreach": "parent"},
    ]}


# -- throughput ------------------------------------------------------------------------------------------------

def wait_batch(cp: Any, batch_id: int, total: int, timeout: float, interval: float = 0.25) -> None:
    from sqlalchemy import func, select

    from storage.models import JobRow

    done_q = (select(func.count()).select_from(JobRow)
              .where(JobRow.batch_id == batch_id, JobRow.status.in_(["succeeded", "failed", "cancelled"])))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cp.store.session() as s:
            if s.scalar(done_q) == total:
                return
        time.sleep(interval)
    raise SystemExit(f"batch {batch_id}: not done within {timeout:.0f} s (see the worker's log)")


def farm_round(cp: Any, work: Path, n: int, base: int, label: str) -> dict[str, Any]:
    from storage import queries

    warm = cp.submit(cp.load(write_spec(flat_spec(f"warm-{label}", WARMUP, base + n), work)))
    with farm_worker(cp, work):
        wait_batch(cp, warm.batch_id, WARMUP, timeout=180)
        loaded = cp.load(write_spec(flat_spec(f"farm-{label}", n, base), work))
        t0 = datetime.now(timezone.utc)
        batch = cp.submit(loaded).batch_id
        submitted = datetime.now(timezone.utc)
        wait_batch(cp, batch, n, timeout=max(300, n))
    with cp.store.session() as s:
        jobs = queries.list_jobs(s, batch_id=batch)
    first = min(j.started_at for j in jobs)
    last = max(j.finished_at for j in jobs)
    statuses: dict[str, int] = {}
    for j in jobs:
        statuses[j.status.value] = statuses.get(j.status.value, 0) + 1
    return _rates("farm", n, t0, submitted, first, last) | {"batch": batch, "statuses": statuses}


def bare_round(cp: Any, work: Path, n: int, label: str) -> dict[str, Any]:
    from scheduler.broker import broker_priority

    r = redis_client()
    app = cp.app
    priority = broker_priority(app, 5)  # what a farm job of the default priority gets

    def send(run: str, count: int) -> None:
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task(BARE_TASK, args=[run, count], queue="cpu", routing_key="cpu", priority=priority,
                              producer=producer)

    def wait(run: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = r.get(f"bench:{run}:last")
            if last is not None:
                return float(last)
            time.sleep(0.05)
        raise SystemExit(f"bare Celery run {run}: not done within {timeout:.0f} s (see the worker's log)")

    with bare_worker(cp, work):
        send(f"warm-{label}", WARMUP)
        wait(f"warm-{label}", timeout=120)
        run = f"bare-{label}"
        t0 = datetime.now(timezone.utc)
        send(run, n)
        sent = datetime.now(timezone.utc)
        last = wait(run, timeout=max(300, n))
    first = float(r.get(f"bench:{run}:first"))
    return _rates("celery", n, t0, sent, datetime.fromtimestamp(first, timezone.utc),
                  datetime.fromtimestamp(last, timezone.utc))


def _rates(who: str, n: int, t0: datetime, submitted: datetime, first: datetime, last: datetime) -> dict[str, Any]:
    processing = (last - first).total_seconds()
    end_to_end = (last - t0).total_seconds()
    return {"who": who, "jobs": n, "submit_s": round((submitted - t0).total_seconds(), 4),
            "processing_s": round(processing, 4), "end_to_end_s": round(end_to_end, 4),
            "processing_jobs_per_s": round(n / processing, 2), "end_to_end_jobs_per_s": round(n / end_to_end, 2)}


def durable_writes(cp: Any, n: int = 50) -> dict[str, float]:
    """What a farm job waits for that a bare Celery task does not, on this machine now: the median time of a
    durable commit of a one-row UPDATE (PostgreSQL flushing its log; a noop job makes two: its claim and its
    success) and of a small blob written to the artifact store (synced before it is renamed into place; a noop job
    writes one, ``out.json``), in ms."""
    from statistics import median

    from sqlalchemy import text

    commits, blobs = [], []
    with cp.store.engine.connect() as conn:
        conn.execute(text("CREATE TABLE bench_commit (id integer PRIMARY KEY, n integer)"))
        conn.execute(text("INSERT INTO bench_commit VALUES (1, 0)"))
        conn.commit()
        for _ in range(n):
            t = time.perf_counter()
            conn.execute(text("UPDATE bench_commit SET n = n + 1 WHERE id = 1"))
            conn.commit()
            commits.append(time.perf_counter() - t)
        conn.execute(text("DROP TABLE bench_commit"))
        conn.commit()
    for k in range(n):
        t = time.perf_counter()
        cp.store.artifacts.put_bytes(f"durable write {k} {time.time()}".encode())
        blobs.append(time.perf_counter() - t)
    return {"commit_ms": round(median(commits) * 1000, 2), "blob_ms": round(median(blobs) * 1000, 2)}


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    work = tmp / "throughput"
    work.mkdir()
    rounds: list[dict[str, Any]] = []
    disk: list[dict[str, float]] = []
    with pg_schema() as db:
        cp = open_plane(db, work)
        for k in range(args.rounds):
            order = ("farm", "celery") if k % 2 == 0 else ("celery", "farm")
            for who in order:
                redis_client().flushdb()
                if who == "farm":
                    disk.append(durable_writes(cp))
                    r = farm_round(cp, work, args.jobs, base=1_000_000 * (k + 1), label=str(k))
                    r["durable_writes"] = disk[-1]
                else:
                    r = bare_round(cp, work, args.jobs, label=str(k))
                r["round"] = k
                rounds.append(r)
                print(f"  round {k} {who:6}: {r['processing_jobs_per_s']:8.1f} jobs/s processing "
                      f"({r['processing_s']:.2f} s), {r['end_to_end_jobs_per_s']:8.1f} jobs/s end-to-end "
                      f"({r['end_to_end_s']:.2f} s, of which submit {r['submit_s']:.2f} s)"
                      + (f"; statuses {r['statuses']}; just before: a durable commit "
                         f"{r['durable_writes']['commit_ms']:.2f} ms, a blob {r['durable_writes']['blob_ms']:.2f} ms"
                         if who == "farm" else ""), flush=True)
    redis_client().flushdb()

    def total(who: str, key: str) -> float:  # all rounds pooled: jobs / summed seconds
        mine = [r for r in rounds if r["who"] == who]
        return sum(r["jobs"] for r in mine) / sum(r[key] for r in mine)

    summary = {}
    for measure, key in (("processing", "processing_s"), ("end_to_end", "end_to_end_s")):
        farm, bare = total("farm", key), total("celery", key)
        summary[measure] = {"farm_jobs_per_s": round(farm, 2), "celery_jobs_per_s": round(bare, 2),
                            "ratio": round(farm / bare, 4)}
    farm_ok = all(r["statuses"] == {"succeeded": r["jobs"]} for r in rounds if r["who"] == "farm")
    summary["durable_writes"] = {key: round(sum(d[key] for d in disk) / len(disk), 2) for key in disk[0]}
    return {"rounds": rounds, "summary": summary, "farm_all_succeeded": farm_ok}


# -- submission ------------------------------------------------------------------------------------------------

def mark_succeeded(cp: Any, batch_id: int) -> None:
    """Make a batch look finished, with a metric and an artifact per job: the source of cache hits."""
    from sqlalchemy import text

    with cp.store.session() as s:
        s.execute(text("UPDATE jobs SET status = 'succeeded', finished_at = CURRENT_TIMESTAMP WHERE batch_id = :b"),
                  {"b": batch_id})
        s.execute(text("INSERT INTO metrics (job_id, key, step, value, time) SELECT id, 'value', 0, 1.0, "
                       "CURRENT_TIMESTAMP FROM jobs WHERE batch_id = :b"), {"b": batch_id})
        s.execute(text("INSERT INTO artifacts (job_id, name, uri, media_type, bytes, sha256, meta, created_at) "
                       "SELECT id, 'out.json', 'sha256/00/' || fingerprint, 'application/json', 10, fingerprint, "
                       "'{}', CURRENT_TIMESTAMP FROM jobs WHERE batch_id = :b"), {"b": batch_id})


def timed_submit(cp: Any, spec: dict[str, Any], work: Path, expect_queued: int, expect_cached: int) -> dict[str, Any]:
    from scheduler.plan import plan_batch

    path = write_spec(spec, work)
    t = time.perf_counter()
    loaded = cp.load(path)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    plan = plan_batch(loaded)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    result = cp.submit(loaded)
    submit_s = time.perf_counter() - t
    r = redis_client()
    queue = cp.app.broker_queue("cpu")  # the farm's own name for its cpu queue
    sent = sum(r.llen(k) for k in r.keys(f"{queue}*") if r.type(k) == b"list")  # one list per priority step
    ok = (len(result.job_ids) == len(plan.jobs) and len(result.queued) == expect_queued
          and len(result.cached) == expect_cached)
    if not ok:
        raise SystemExit(f"{spec['batch']}: unexpected submit result: {len(result.job_ids)} jobs, "
                         f"{len(result.queued)} queued (expected {expect_queued}), {len(result.cached)} cached "
                         f"(expected {expect_cached})")
    redis_client().flushdb()  # no worker consumes them
    return {"jobs": len(plan.jobs), "edges": len(plan.edges), "queued": len(result.queued),
            "cached": len(result.cached), "messages_in_redis": sent, "load_s": round(load_s, 4),
            "plan_s": round(plan_s, 4), "submit_s": round(submit_s, 4), "batch": result.batch_id}


def submission(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = args.submit_jobs
    for db in args.submit_dbs:
        work = tmp / f"submit-{db}"
        work.mkdir()
        with pg_schema() if db == "postgresql" else _sqlite(work) as url:
            cp = open_plane(url, work)
            runs: list[dict[str, Any]] = []
            for k in range(args.submit_repeat):
                base = 10_000_000 * (k + 1)
                redis_client().flushdb()
                flat = timed_submit(cp, flat_spec(f"flat-{k}", n, base), work, expect_queued=n, expect_cached=0)
                chains = timed_submit(cp, chains_spec(f"chains-{k}", n, base + n), work, expect_queued=n // 2,
                                      expect_cached=0)
                mark_succeeded(cp, flat["batch"])
                cached = timed_submit(cp, flat_spec(f"cached-{k}", n, base), work, expect_queued=0, expect_cached=n)
                for label, r in (("flat", flat), ("chains", chains), ("cached", cached)):
                    r.update(variant=label, repeat=k)
                    runs.append(r)
                    print(f"  {db:10} {label:6} {r['jobs']:6} jobs ({r['edges']} edges): submit {r['submit_s']:7.3f} s "
                          f"(plan {r['plan_s']:.3f} s inside it); spec load {r['load_s']:.3f} s; "
                          f"{r['queued']} queued, {r['cached']} cached", flush=True)
            out[db] = runs
    redis_client().flushdb()
    return out


@contextmanager
def _sqlite(work: Path) -> Iterator[str]:
    yield f"sqlite:///{work / 'latentfarm.db'}"
    from storage.db import dispose_engines

    dispose_engines()


# -- main ------------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000, help="jobs per throughput round, farm and bare Celery")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (farm and bare take turns)")
    ap.add_argument("--submit-jobs", type=int, default=10_000, help="jobs in each submitted batch")
    ap.add_argument("--submit-repeat", type=int, default=3, help="times each submission is measured")
    ap.add_argument("--submit-dbs", default="postgresql,sqlite", help="comma-separated: postgresql, sqlite")
    ap.add_argument("--parts", default="throughput,submit", help="comma-separated: throughput, submit")
    ap.add_argument("--quick", action="store_true", help="small numbers, to check that the benchmark works")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.rounds, args.submit_jobs, args.submit_repeat = 40, 1, 200, 1
    args.submit_dbs = [d.strip() for d in args.submit_dbs.split(",") if d.strip()]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not set(args.submit_dbs) <= {"postgresql", "sqlite"}:
        ap.error("--submit-dbs takes postgresql and/or sqlite")
    if not parts or not parts <= {"throughput", "submit"}:
        ap.error("--parts takes throughput and/or submit")
    if args.jobs < 1 or args.submit_jobs < 2 or args.rounds < 1 or args.submit_repeat < 1:
        ap.error("--jobs, --rounds and --submit-repeat must be >= 1, --submit-jobs >= 2")

    redis_client().flushdb()
    report: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "json"} | {"broker": BROKER}}
    with tempfile.TemporaryDirectory(prefix="lf-farm-bench-") as tmp_s:
        tmp = Path(tmp_s)
        if "throughput" in parts:
            print(f"throughput: {args.jobs} noop jobs per round, {args.rounds} round(s), one solo worker process, "
                  f"Redis + PostgreSQL", flush=True)
            report["throughput"] = throughput(args, tmp)
        if "submit" in parts:
            print(f"submission: {args.submit_jobs}-job batches, no worker consuming", flush=True)
            report["submit"] = submission(args, tmp)

    print("\nresults")
    if "throughput" in report:
        t = report["throughput"]
        for measure, label in (("processing", "processing (first job started -> last finished)"),
                               ("end_to_end", "end-to-end (before submit -> last finished)")):
            s = t["summary"][measure]
            goal = " (goal >= 0.50)" if measure == "processing" else ""
            print(f"  {label}: farm {s['farm_jobs_per_s']:.1f} jobs/s, bare Celery {s['celery_jobs_per_s']:.1f} "
                  f"jobs/s, ratio {s['ratio']:.2f}{goal}")
        d, p = t["summary"]["durable_writes"], t["summary"]["processing"]
        waits = 2 * d["commit_ms"] + d["blob_ms"]
        print(f"  per job: farm {1000 / p['farm_jobs_per_s']:.2f} ms, bare Celery "
              f"{1000 / p['celery_jobs_per_s']:.2f} ms; of the farm's, its durable writes (2 commits of "
              f"{d['commit_ms']:.2f} ms and a blob of {d['blob_ms']:.2f} ms, medians measured before each farm "
              f"round) take about {waits:.2f} ms")
        print(f"  every farm job succeeded: {t['farm_all_succeeded']}")
    if "submit" in report:
        for db, runs in report["submit"].items():
            for variant in ("flat", "chains", "cached"):
                mine = [r for r in runs if r["variant"] == variant]
                best, worst = min(r["submit_s"] for r in mine), max(r["submit_s"] for r in mine)
                # the worst matters too: each repeat submits into a database that already holds the earlier batches
                print(f"  submit {db:10} {variant:6} {mine[0]['jobs']} jobs: ControlPlane.submit {best:.3f} s best, "
                      f"{worst:.3f} s worst of {len(mine)} (goal < 10 s), of which planning "
                      f"{min(r['plan_s'] for r in mine):.3f} s; spec load {min(r['load_s'] for r in mine):.3f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
