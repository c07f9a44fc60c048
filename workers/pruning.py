"""A trial's reports to its search's pruner: after each step (an epoch) a job of a search asks whether to go on.

The pruner is asked here, in the worker, right after the step's metric is recorded: the search's study is rebuilt
from the store (``scheduler.study``: every trial's per-step values, those of this one's step included) and Optuna's
pruner judges this trial. A few queries and milliseconds per epoch of seconds; the decision is taken at once, with
no round trip through the control plane. What the pruner notes on the trial (the rungs it reached) is stored with
it, so the next question, here or in another process, sees it. When the pruner says stop, ``JobPruned`` ends the
job with the status ``pruned`` (``workers.execute``): its worker is free at once, its downstream jobs are cancelled
with the reason, and its search asks another trial.
"""

from __future__ import annotations

import logging

from core.kinds import KINDS
from core.kinds.search import SearchParams
from core.params import parse_config
from scheduler import study as studies
from storage import search as store_search
from storage.search import Search, Trial
from workers.context import JobContext, JobStopped

log = logging.getLogger(__name__)


class JobPruned(JobStopped):
    """The search's pruner stopped this trial: the job ends ``pruned``."""


class TrialReporter:
    """Reports a running job's steps to its search's pruner, if the job is a trial of a search that prunes."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._found: tuple[Search, Trial, SearchParams] | None = None
        self._looked = False

    def _trial(self) -> tuple[Search, Trial, SearchParams] | None:
        if not self._looked:
            self._looked = True
            with self.ctx.store.session() as s:
                found = store_search.search_of_trial_job(s, self.ctx.job.id)
            if found is not None:
                config = parse_config(SearchParams, found[0].config)
                if config.pruner != "none":
                    self._found = (found[0], found[1], config)
        return self._found

    def report(self, step: int) -> None:
        """After ``step`` was recorded: raise JobPruned if the pruner stops the trial here."""
        found = self._trial()
        if found is None:
            return
        search, trial, config = found
        with self.ctx.store.session() as s:
            trials = store_search.trials(s, search.id)
            series = store_search.metric_series(s, [t.job_id for t in trials if t.job_id], config.metric)
        own = series.get(self.ctx.job.id, {})
        if step not in own:  # the metric is not recorded at this step: nothing to judge
            return
        steps_param = KINDS[self.ctx.job.kind].search_steps
        max_steps = self.ctx.job.params.get(steps_param) if steps_param else None
        study = studies.build(config, f"latentfarm-{search.batch_id}-{search.name}", trials, series,
                              trial.number or 0, max_steps if isinstance(max_steps, int) else None)
        current = next(t for t in trials if t.id == trial.id)
        prune, attrs = study.should_prune(current.id)
        if attrs != current.attrs:
            with self.ctx.store.session() as s:
                store_search.save_attrs(s, trial.id, attrs)
        if prune:
            raise JobPruned(f"pruned by the search's {config.pruner} pruner after step {step}: {config.metric} "
                            f"{own[step]:.6g}")


def reporter(ctx: JobContext) -> TrialReporter:
    """The reporter of the job ``ctx`` runs (it looks its search up at the first report)."""
    return TrialReporter(ctx)
