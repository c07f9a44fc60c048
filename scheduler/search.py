"""Searches on the control plane: a search's trials asked as slots free up, written as jobs of its batch, settled
from their jobs, and the search ended with its best trial handed to the jobs that wait for it.

- **Submit** (``open_searches``, in the batch's transaction): a search row per search, and its ``study`` job moved to
  ``running``: it is never sent to a worker. The jobs that need the search wait for it like for any parent.
- **Advance** (``advance``): settle the trials whose jobs ended (complete with the metric's last value, pruned, or
  failed), tell the study the results of earlier jobs of the same space (once), and ask new trials while fewer than
  ``parallel`` run and fewer than ``trials`` were made. A trial's jobs (the trial and its chain made ``foreach`` it)
  are written, their edges and cache hits with them, in one transaction guarded by the search's ``asked`` count:
  of several processes asking at once one writes, the others read again. A trial whose fingerprint already
  succeeded (in this batch or another) is served from the cache and told to the study as complete: it spends
  nothing and frees its slot at once. Whoever ends a trial advances its search (the worker, after recording the
  outcome); every reaper pass advances every running search too, so a crash between the two loses nothing.
- **End**: when every trial has ended and none may be asked, one guarded UPDATE ends the search. In that
  transaction the jobs that wait for it get their parents (every complete trial's job, or the best one's), their
  real fingerprints (and cache hits), and the study job succeeds, which queues them by the usual fan-in. No
  complete trial: the study job fails and what waits for it is cancelled with the reason. A cancelled study job
  (``latentfarm cancel``) cancels the search and its unfinished trials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from core.kinds import KINDS
from core.kinds.search import SearchParams
from core.params import parse_config
from scheduler import broker, lifecycle
from scheduler import study as studies
from scheduler.errors import LatentfarmError
from scheduler.plan import BatchPlan, fingerprint, job_data_identity
from scheduler.spec import BatchSpec
from scheduler.spec_search import ALL, STUDY, SearchSpec, instance_name
from storage import batches, graph, queries
from storage import cancel as cancelling
from storage import search as store_search
from storage.records import Job, NewJob
from storage.search import Search, Trial
from storage.status import TERMINAL, JobStatus
from storage.store import Store
from storage.transitions import INCREMENT, transition

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING)
EARLIER_LIMIT = 2000  # earlier jobs of the trial's kind looked at for results of the same space
ROUNDS = 5  # times an ask is tried again after another process asked first


# -- at submit --


def plan_searches(plan: BatchPlan, spec: BatchSpec) -> BatchPlan:
    """``plan`` with its searches' plans: the per-trial templates (with the identity of the data they read), the
    jobs each search gates, and every job downstream of a study job in dependency order (their fingerprints are
    computed again, with their real parents, when the search ends)."""
    if not spec.searches:
        return plan
    return dataclasses.replace(plan, searches=tuple(_plan(s, spec) for s in spec.searches))


def _plan(search: SearchSpec, spec: BatchSpec) -> dict[str, Any]:
    below = {search.name}
    downstream = []
    for job in spec.jobs:  # parents first: what needs a job below the study is below it
        if any(p in below for p in job.needs):
            below.add(job.name)
            downstream.append({"name": job.name, "data": job_data_identity(job)})
    templates = [{"name": j.name, "kind": j.kind, "params": dict(j.params), "needs": list(j.needs), "queue": j.queue,
                  "priority": j.priority, "max_attempts": j.max_attempts, "timeout": j.timeout,
                  "data": job_data_identity(j)} for j in search.jobs]
    return {"name": search.name, "config": dict(search.config), "templates": templates,
            "gates": {k: [list(g) for g in v] for k, v in search.gates.items()}, "downstream": downstream}


def open_searches(s: Any, plan: BatchPlan, batch_id: int, ids: Mapping[str, int]) -> None:
    """In the submit's transaction, before the ready jobs are queued: each search's row, and its study job moved to
    ``running`` (it is run by the control plane, never sent to a worker)."""
    for p in plan.searches:
        job_id = ids[p["name"]]
        store_search.create_search(s, batch_id, p["name"], job_id, p["config"],
                                   {k: v for k, v in p.items() if k != "config"})
        transition(s, job_id, JobStatus.PENDING, JobStatus.QUEUED, message="search opened")
        transition(s, job_id, JobStatus.QUEUED, JobStatus.RUNNING, by="search", attempts=INCREMENT, progress=0.0,
                   message="search running: trials are asked as slots free up")


# -- advancing --


@dataclass
class _State:
    search: Search
    config: SearchParams
    study_job: Job
    no_cache: bool
    trials: list[Trial]
    series: dict[int, dict[int, float]]

    @property
    def own(self) -> list[Trial]:
        return [t for t in self.trials if t.number is not None]

    @property
    def active(self) -> list[Trial]:
        return [t for t in self.own if t.job_status in ACTIVE]


def advance_batch(store: Store, app: Celery, batch_id: int) -> list[int]:
    """``advance`` every running search of a batch (see ``advance_all``). Returns the jobs sent."""
    return advance_all(store, app, batch_id)


def advance_all(store: Store, app: Celery, batch_id: int | None = None) -> list[int]:
    """``advance`` every running search (of ``batch_id``, or of every batch: a reaper pass). A search that cannot be
    advanced now (the database is away) is logged and left for the next try: this never raises for one search.
    Returns the jobs sent."""
    try:
        with store.session() as s:
            ids = store_search.running_searches(s, batch_id)
    except LatentfarmError as e:
        log.warning("searches: %s; trying again later", e)
        return []
    sent = []
    for i in ids:
        try:
            sent += advance(store, app, i)
        except LatentfarmError as e:
            log.warning("search %s: %s; trying again later", i, e)
        except Exception:
            log.exception("search %s could not be advanced; trying again later", i)
    return sent


def after_trial(store: Store, app: Celery, job_id: int) -> list[int]:
    """A job has ended: if it is a trial of a running search, advance that search (a freed slot is refilled at
    once). Never raises: what fails here is left to the next advance (a reaper pass). Returns the jobs sent."""
    try:
        with store.session() as s:
            found = store_search.search_of_trial_job(s, job_id)
        if found is None or found[0].status != store_search.RUNNING:
            return []
        return advance(store, app, found[0].id)
    except Exception as e:
        log.warning("the search of job %s could not be advanced (%s); the next reaper pass will", job_id, e,
                    exc_info=not isinstance(e, LatentfarmError))
        return []


def advance(store: Store, app: Celery, search_id: int) -> list[int]:
    """Settle, seed, ask or end one search (see the module's docstring). Returns the ids of the jobs it sent."""
    for _ in range(ROUNDS):
        state = _read(store, search_id)
        if state is None:
            return []
        if state.study_job.status is not JobStatus.RUNNING or state.study_job.cancel_requested:
            _cancel(store, state)
            return []
        if _settle(store, state) or (not state.search.seeded and _seed(store, state)):
            continue  # read again what was written
        done = _ask(store, app, state)
        if done is not None:
            return done
    log.info("search %s: other processes kept asking first; leaving it to them", search_id)
    return []


def _read(store: Store, search_id: int) -> _State | None:
    with store.session() as s:
        search = store_search.get_search(s, search_id)
        if search.status != store_search.RUNNING:
            return None
        study_job = queries.require_job(s, search.job_id)
        no_cache = queries.get_batch(s, search.batch_id).no_cache
        trials = store_search.trials(s, search_id)
        series = store_search.metric_series(s, [t.job_id for t in trials if t.job_id], search.config["metric"])
    return _State(search, parse_config(SearchParams, search.config), study_job, no_cache, trials, series)


def _settle(store: Store, state: _State) -> bool:
    """Settle the running trials whose jobs ended. Returns whether any was settled."""
    ends = []
    for t in state.own:
        if t.state != store_search.RUNNING or t.job_status in ACTIVE:
            continue
        if t.job_status is JobStatus.SUCCEEDED:
            value = studies.objective(state.series.get(t.job_id or -1))
            ends.append((t.id, "complete" if value is not None else "failed", value))
        elif t.job_status is JobStatus.PRUNED:
            ends.append((t.id, "pruned", None))
        else:
            ends.append((t.id, "failed", None))
    if not ends:
        return False
    with store.session() as s:
        for trial_id, trial_state, value in ends:
            store_search.settle_trial(s, trial_id, trial_state, value)
        done = sum(1 for t in state.own if t.job_status not in ACTIVE)
        store_search.set_progress(s, state.study_job.id, min(1.0, done / state.config.budget))
    return True


def _template(state: _State) -> dict[str, Any]:
    return dict(state.search.plan["templates"][0])


def _seed(store: Store, state: _State) -> bool:
    """Tell the study what earlier jobs (other batches) found at points of this space: the jobs whose fingerprint
    is the one this search's trial would have with their values. Once per search. Returns True (read again)."""
    template = _template(state)
    dims = state.config.dimensions()
    with store.session() as s:
        parents = _parent_fingerprints(s, state.search.batch_id, template["needs"], {})
        earlier = [] if state.no_cache else store_search.earlier_jobs(s, template["kind"], state.search.batch_id,
                                                                      EARLIER_LIMIT)
        seen: set[str] = set()
        found: list[tuple[int, dict[str, Any], JobStatus]] = []
        for job_id, params, fp, status in earlier:
            values = {k: params.get(k) for k in dims}
            if fp in seen or not all(k in params and d.contains(params[k]) for k, d in dims.items()):
                continue
            if fingerprint(template["kind"], {**template["params"], **values}, parents, template["data"]) == fp:
                seen.add(fp)
                found.append((job_id, values, status))
        series = store_search.metric_series(s, [j for j, _, _ in found], state.config.metric)
        if store_search.mark_seeded(s, state.search.id):
            rows = []
            for job_id, values, status in found:
                value = studies.objective(series.get(job_id))
                trial_state = "pruned" if status is JobStatus.PRUNED else "complete" if value is not None else "failed"
                rows.append({"number": None, "job_id": job_id, "values": values, "state": trial_state,
                             "value": value if trial_state == "complete" else None})
            store_search.add_trials(s, state.search.id, rows)
            if rows:
                log.info("search %s: %d earlier results of its space told to the study", state.search.id, len(rows))
    return True


def _parent_fingerprints(s: Any, batch_id: int, needs: Sequence[str], made: Mapping[str, str]) -> list[str]:
    """The fingerprints of the parents named ``needs``: made with the trial (``made``), or jobs of the batch."""
    outside = [n for n in needs if n not in made]
    ids = store_search.job_ids_by_name(s, batch_id, outside)
    fps = store_search.fingerprints(s, ids.values())
    return [made[n] if n in made else fps[ids[n]] for n in needs]


@dataclass
class _Asked:
    number: int
    values: dict[str, Any]
    attrs: dict[str, Any]
    jobs: list[NewJob]
    needs: dict[str, list[str]]  # job name -> the names of its parents
    hit: int | None  # the job whose result the trial reuses (a cache hit), if any
    value: float | None


def _ask(store: Store, app: Celery, state: _State) -> list[int] | None:
    """Ask (and write) the trials the free slots allow, or end the search. None: another process asked first."""
    config, search = state.config, state.search
    budget = config.budget
    slots = min(config.parallel - len(state.active), budget - search.asked)
    templates = state.search.plan["templates"]
    with store.session() as s:
        outside = {n for t in templates for n in t["needs"] if n not in {u["name"] for u in templates}}
        statuses = {j.name: j.status for j in queries.jobs_by_ids(
            s, store_search.job_ids_by_name(s, search.batch_id, outside).values())}
    broken = sorted(n for n, st in statuses.items() if st in (JobStatus.FAILED, JobStatus.CANCELLED))
    if broken:
        return _end(store, app, state, f"the job {broken[0]!r} its trials need ended {statuses[broken[0]].value}")
    if slots <= 0:
        if not state.active and search.asked >= budget:
            return _end(store, app, state, None)
        return []
    study = _study(state, search.asked)
    if study.exhausted():
        return _end(store, app, state, None) if not state.active else []
    asked: list[_Asked] = []
    running = 0
    number = search.asked
    with store.session() as s:
        while running < slots and number < budget:
            if number > search.asked:
                study = _study(state, number, asked)
                if study.exhausted():
                    break
            values, attrs, trial = study.ask()
            one = _instantiate(s, state, number, values, attrs)
            if one.hit is not None and not state.no_cache:
                one.value = studies.objective(store_search.metric_series(s, [one.hit], config.metric).get(one.hit))
            else:
                one.hit = None
                running += 1
            asked.append(one)
            number += 1
    if not asked:
        return _end(store, app, state, None) if not state.active else []
    return _write(store, app, state, asked)


def _study(state: _State, number: int, asked: Sequence[_Asked] = ()) -> studies.Study:
    """The study of the search's trials, those just asked (not yet written) included."""
    now = list(state.trials)
    for a in asked:
        done = a.hit is not None
        now.append(Trial(id=-1 - a.number, search_id=state.search.id, number=a.number, job_id=a.hit, values=a.values,
                         state="complete" if done and a.value is not None else "failed" if done else "running",
                         value=a.value, attrs=a.attrs, created_at=state.search.created_at, finished_at=None))
    series = dict(state.series)
    return studies.build(state.config, _study_name(state.search), now, series, number, _max_steps(state))


def _study_name(search: Search) -> str:
    return f"latentfarm-{search.batch_id}-{search.name}"


def _max_steps(state: _State) -> int | None:
    template = _template(state)
    steps = KINDS[template["kind"]].search_steps
    value = template["params"].get(steps) if steps else None
    return value if isinstance(value, int) else None


def _instantiate(s: Any, state: _State, number: int, values: dict[str, Any], attrs: dict[str, Any]) -> _Asked:
    """Trial ``number``'s jobs, from the search's templates: names, params, parents, fingerprints; and whether the
    trial's own job is a cache hit."""
    templates = state.search.plan["templates"]
    names = {t["name"]: instance_name(t["name"], number, values) for t in templates}
    made: dict[str, str] = {}  # template name -> the fingerprint of its instance
    jobs, needs = [], {}
    for i, t in enumerate(templates):
        params = {**t["params"], **values} if i == 0 else dict(t["params"])
        parents = _parent_fingerprints(s, state.search.batch_id, t["needs"], made)
        made[t["name"]] = fingerprint(t["kind"], params, parents, t["data"])
        jobs.append(NewJob(name=names[t["name"]], kind=t["kind"], params=params, fingerprint=made[t["name"]],
                           queue=t["queue"], priority=t["priority"], max_attempts=t["max_attempts"],
                           timeout=t["timeout"]))
        needs[names[t["name"]]] = [names.get(n, n) for n in t["needs"]]
    hit = batches.succeeded_by_fingerprint(s, [jobs[0].fingerprint]).get(jobs[0].fingerprint)
    return _Asked(number, values, attrs, jobs, needs, hit, None)


def _write(store: Store, app: Celery, state: _State, asked: list[_Asked]) -> list[int] | None:
    """Write the asked trials with their jobs, edges and cache hits, and queue what is ready: one transaction,
    guarded by the search's ``asked`` count. None if another process asked first."""
    search = state.search
    with store.session() as s:
        if not store_search.claim_asks(s, search.id, search.asked, len(asked)):
            return None
        ids = store_search.add_jobs(s, search.batch_id, [j for a in asked for j in a.jobs],
                                    f"asked by search {search.name!r}")
        outside = store_search.job_ids_by_name(s, search.batch_id,
                                               {p for a in asked for ps in a.needs.values() for p in ps} - set(ids))
        known = {**outside, **ids}
        store_search.add_edges(s, [(known[p], ids[child]) for a in asked for child, ps in a.needs.items()
                                   for p in ps])
        cached: set[int] = set()
        if not state.no_cache:
            fps = [j.fingerprint for a in asked for j in a.jobs]
            hits = batches.succeeded_by_fingerprint(s, fps)
            cached = set(batches.mark_cached(s, {ids[j.name]: hits[j.fingerprint] for a in asked for j in a.jobs
                                                 if j.fingerprint in hits}))
        rows = []
        for a in asked:
            job_id = ids[a.jobs[0].name]
            if job_id in cached and a.hit is not None:
                trial_state, value = ("complete", a.value) if a.value is not None else ("failed", None)
            else:
                trial_state, value = "running", None
            rows.append({"number": a.number, "job_id": job_id, "values": a.values, "state": trial_state,
                         "value": value, "attrs": a.attrs})
        store_search.add_trials(s, search.id, rows)
        queued = batches.queue_roots(s, search.batch_id)
    broker.send_or_leave(app, queued)
    served = sum(1 for r in rows if r["state"] != "running")
    log.info("search %s: asked trials %s (%d from the cache)", search.id, [a.number for a in asked], served)
    if served:  # their slots are free again: ask on
        return [j.id for j in queued] + advance(store, app, search.id)
    return [j.id for j in queued]


# -- the end --


def best_trial(trials: Sequence[Trial], maximize: bool) -> Trial | None:
    """The best complete trial of the search's own (the lowest number among equals)."""
    complete = [t for t in trials if t.number is not None and t.state == "complete" and t.value is not None]
    if not complete:
        return None
    sign = -1.0 if maximize else 1.0
    return min(complete, key=lambda t: (sign * (t.value or 0.0), t.number))


def _end(store: Store, app: Celery, state: _State, failure: str | None) -> list[int]:
    """End the search: the jobs that wait for it get their parents and the study job succeeds; or, with no
    complete trial (or ``failure``), the study job fails and they are cancelled."""
    search, config = state.search, state.config
    own = state.own
    best = None if failure else best_trial(own, config.maximize)
    with store.session() as s:
        if not store_search.finish(s, search.id, "succeeded" if best else "failed", best.job_id if best else None):
            return []
        if best is None:
            counts = {k: sum(1 for t in own if t.state == k) for k in ("pruned", "failed")}
            why = failure or (f"no trial completed ({counts['pruned']} pruned, {counts['failed']} failed, "
                              f"of {len(own)})")
            for t in state.active:  # a failure with trials still running: they are of no use now
                if t.job_id:
                    cancelling.request_cancel(s, [t.job_id, *graph.descendants(s, t.job_id)], f"search ended: {why}")
            lifecycle.end_in(s, search.job_id, JobStatus.FAILED, f"search failed: {why}", None, "search", None)
            return []
        _gate(s, state, best)
        unique = hashlib.sha256(f"search:{search.batch_id}:{search.id}".encode()).hexdigest()
        transition(s, search.job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED, by="search", progress=1.0,
                   lease_until=None, fingerprint=unique,
                   message=f"best trial {best.number} (job {best.job_id}): {config.metric} {best.value:.6g}")
        queued = batches.queue_roots(s, search.batch_id)
    broker.send_or_leave(app, queued)
    sent = [j.id for j in queued]
    # A parent of a gated job that succeeded while this transaction ran (PostgreSQL: it could not see the new edge,
    # and this one could not see its success) left its child pending: queue what is ready now that both are seen.
    with store.session() as s:
        again = batches.queue_roots(s, search.batch_id)
    broker.send_or_leave(app, again)
    log.info("search %s ended: best trial %s", search.id, best.number)
    return sent + [j.id for j in again]


def _gate(s: Any, state: _State, best: Trial) -> None:
    """Give the jobs that wait for the search their parents: each template they need, made for the best trial or
    for every complete trial; then their real fingerprints (and cache hits), and those of the jobs below them."""
    search = state.search
    complete = [t for t in state.own if t.state == "complete"]
    gates: dict[str, list[list[str]]] = search.plan["gates"]
    wanted: dict[str, list[str]] = {}
    for job, pairs in gates.items():
        for template, mode in pairs:
            for t in ([best] if mode != ALL else complete):
                wanted.setdefault(job, []).append(instance_name(template, t.number or 0, t.values))
    ids = store_search.job_ids_by_name(s, search.batch_id, {n for v in wanted.values() for n in v} | set(wanted))
    statuses = {j.id: j for j in queries.jobs_by_ids(s, [ids[n] for v in wanted.values() for n in v if n in ids])}
    edges, doomed = [], []
    for job, parents in wanted.items():
        for p in parents:
            parent = statuses.get(ids.get(p, -1))
            if parent is None:
                continue
            edges.append((parent.id, ids[job]))
            if parent.status in TERMINAL and parent.status is not JobStatus.SUCCEEDED:
                doomed.append((ids[job], f"parent job {parent.name!r} (#{parent.id}) {parent.status.value}"))
    store_search.add_edges(s, edges)
    for job_id, why in doomed:
        cancelling.request_cancel(s, [job_id, *graph.descendants(s, job_id)], why)
    _refingerprint(s, state)


def _refingerprint(s: Any, state: _State) -> None:
    """The jobs below the study job had fingerprints for show: give them the real ones, from their parents (the
    study job not counted), and serve the cache hits among them."""
    search = state.search
    downstream = search.plan["downstream"]
    ids = store_search.job_ids_by_name(s, search.batch_id, [d["name"] for d in downstream])
    fps: dict[int, str] = {}
    for d in downstream:
        job_id = ids.get(d["name"])
        job = queries.get_job(s, job_id) if job_id else None
        if job is None or job.status is not JobStatus.PENDING:
            continue
        parents = [p for p in queries.parent_jobs(s, job.id) if p.kind != STUDY.name]
        parent_fps = [fps.get(p.id, p.fingerprint) for p in parents]
        fps[job.id] = fingerprint(job.kind, job.params, parent_fps, d["data"])
    store_search.set_fingerprints(s, fps)
    if fps and not state.no_cache:
        hits = batches.succeeded_by_fingerprint(s, fps.values())
        batches.mark_cached(s, {job_id: hits[fp] for job_id, fp in fps.items() if fp in hits})


def _cancel(store: Store, state: _State) -> None:
    """The study job was cancelled (or asked to be): the search ends cancelled with its unfinished trials."""
    search = state.search
    with store.session() as s:
        if not store_search.finish(s, search.id, "cancelled"):
            return
        active = [t.job_id for t in state.active if t.job_id]
        reason = f"search {search.name!r} cancelled"
        if active:
            cancelling.request_cancel(s, active + graph.descendants(s, active), reason)
        if state.study_job.status is JobStatus.RUNNING:
            lifecycle.end_in(s, search.job_id, JobStatus.CANCELLED, "cancelled by user", None, "search", None)
    log.info("search %s cancelled", search.id)
