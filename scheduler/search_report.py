"""What the interfaces show of a search (``latentfarm search``, ``GET /api/v1/batches/{id}/search/{name}``, the
dashboard's search page): its trials with their values, state, metric and the steps they trained; the best trial
and its job; the best value so far as trials ended; the earlier results told to it; Optuna's parameter
importance once two trials are complete."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.kinds.search import SearchParams
from core.params import parse_config
from scheduler import study as studies
from scheduler.search import best_trial
from storage import queries
from storage import search as store_search
from storage.search import Search


@dataclass(frozen=True)
class TrialLine:
    number: int | None  # None: an earlier job's result of the same space
    job_id: int | None
    job: str | None  # its job's name
    job_status: str | None
    state: str  # running | complete | pruned | failed
    values: dict[str, Any]
    value: float | None  # the metric's final value (complete trials)
    last: float | None  # the metric at its last step so far (any trial)
    steps: int  # the steps (epochs) it trained here: 0 for a cache hit or an earlier result
    cached_from: int | None
    finished_at: datetime | None


@dataclass(frozen=True)
class BestSoFar:
    trial: int
    value: float  # the trial's value
    best: float  # the best value of the trials ended so far
    steps: int  # the steps all trials had trained when it ended
    at: datetime


@dataclass(frozen=True)
class SearchReport:
    search: Search
    config: SearchParams
    trials: list[TrialLine]  # the search's own, by number
    earlier: list[TrialLine]  # results of earlier jobs told to the study
    best: TrialLine | None
    best_so_far: list[BestSoFar]
    importance: dict[str, float]
    steps: int  # steps (epochs) trained by all its trials
    counts: dict[str, int] = field(default_factory=dict)  # trials by state

    @property
    def running(self) -> int:
        return self.counts.get("running", 0)


def report(session: Session, batch_id: int, name: str) -> SearchReport:
    """The search ``name`` of a batch; NotFound for none."""
    search = store_search.find_search(session, batch_id, name)
    config = parse_config(SearchParams, search.config)
    trials = store_search.trials(session, search.id)
    series = store_search.metric_series(session, [t.job_id for t in trials if t.job_id], config.metric)
    jobs = {j.id: j for j in queries.jobs_by_ids(session, [t.job_id for t in trials if t.job_id])}
    lines = []
    for t in trials:
        job = jobs.get(t.job_id or -1)
        steps_seen = {k: v for k, v in series.get(t.job_id or -1, {}).items() if k >= 1}
        cached = job.cached_from if job else None
        own = t.number is not None and cached is None
        lines.append(TrialLine(t.number, t.job_id, t.job_name, t.job_status.value if t.job_status else None, t.state,
                               t.values, t.value, studies.objective(series.get(t.job_id or -1)),
                               max(steps_seen, default=0) if own else 0, cached, t.finished_at))
    own_lines = [x for x in lines if x.number is not None]
    best = best_trial(trials, config.maximize)
    best_line = next((x for x in own_lines if best is not None and x.number == best.number), None)
    curve, best_value, spent = [], None, 0
    sign = -1.0 if config.maximize else 1.0
    for x in sorted((x for x in own_lines if x.finished_at is not None), key=lambda x: (x.finished_at, x.number)):
        spent += x.steps
        if x.state == "complete" and x.value is not None:
            if best_value is None or sign * x.value < sign * best_value:
                best_value = x.value
            curve.append(BestSoFar(x.number or 0, x.value, best_value, spent, x.finished_at))  # type: ignore[arg-type]
    counts: dict[str, int] = {}
    for x in own_lines:
        counts[x.state] = counts.get(x.state, 0) + 1
    importance: dict[str, float] = {}
    if sum(1 for t in trials if t.state == "complete") >= 2:
        importance = studies.build(config, f"latentfarm-{batch_id}-{name}", trials, series, len(trials),
                                   None).importance()
    return SearchReport(search, config, own_lines, [x for x in lines if x.number is None], best_line, curve,
                        importance, sum(x.steps for x in own_lines), counts)
