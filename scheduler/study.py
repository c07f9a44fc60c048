"""A search's study, rebuilt in memory from the store whenever it is asked something: Optuna's samplers and pruners
over the trials that ``storage.search`` holds. The database is the truth; no Optuna storage is kept.

Optuna's RDB storage would need tables of its own (``studies``, ``trials``, ... and its own ``alembic_version``,
which is the farm's), and its trials would be apart from the jobs they are: a trial asked, its job written, its
cached result told, would be several transactions in two schemas. Here a trial and its job are written together,
guarded by the search's ``asked`` count, and each question rebuilds the study: its trials (earlier results first,
then the search's own by number, so each has the same Optuna number in every process), their values, their
per-step values (the ``metrics`` table), and what the sampler and pruner noted on them (``attrs``: a grid point,
the rungs a trial reached). The sampler is seeded per trial number, so the same history asks the same trial.

Choices are categories named by their JSON text (Optuna's categories are scalars; a choice may be a list). CMA-ES
keeps its state as a pickle in Optuna's trial notes: that pickle is never stored; its state is rebuilt from the
trials of each generation instead (``_ReplayCmaEs``), so nothing read from the database is unpickled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.kinds.search import Dimension, SearchParams
from storage.search import Trial

log = logging.getLogger(__name__)
STATES = {"running": "RUNNING", "complete": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL"}
_NO_PICKLE = "cma:optimizer"  # the prefix of CMA-ES's pickled state in a trial's notes: never stored


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def category(value: Any) -> str:
    """A choice as an Optuna category: its JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def distributions(dims: Mapping[str, Dimension]) -> dict[str, Any]:
    """Optuna's distribution of each searched parameter."""
    d = _optuna().distributions
    out: dict[str, Any] = {}
    for name, dim in dims.items():
        if dim.type == "choice":
            out[name] = d.CategoricalDistribution([category(c) for c in dim.choices])
        elif dim.type == "int":
            out[name] = d.IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1))
        else:
            out[name] = d.FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    return out


def to_optuna(dims: Mapping[str, Dimension], values: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's values as Optuna's params (choices as categories)."""
    return {name: category(values[name]) if dim.type == "choice" else values[name] for name, dim in dims.items()}


def from_optuna(dims: Mapping[str, Dimension], params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's params as a job's values: ints as ints, choices as the values they name."""
    out: dict[str, Any] = {}
    for name, dim in dims.items():
        v = params[name]
        if dim.type == "choice":
            out[name] = next(c for c in dim.choices if category(c) == v)
        elif dim.type == "int":
            out[name] = int(v)
        else:
            out[name] = float(v)
    return out


def objective(series: Mapping[int, float] | None) -> float | None:
    """A trial's value: its metric at its last step (a metric recorded per epoch: the last epoch's)."""
    if not series:
        return None
    value = series[max(series)]
    return value if math.isfinite(value) else None


def _sampler(config: SearchParams, dims: Mapping[str, Dimension], number: int) -> Any:
    samplers = _optuna().samplers
    seed = (config.seed * 1_000_003 + number) % 2**32  # per trial: the same history asks the same trial again
    startup = {} if config.startup is None else {"n_startup_trials": config.startup}
    if config.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":
        grid = {name: [category(v) if dim.type == "choice" else v for v in dim.values()]
                for name, dim in dims.items()}
        return samplers.GridSampler(grid, seed=config.seed)
    if config.sampler == "cmaes":
        return _replay_cmaes()(seed=seed, **startup)
    return samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, **startup)


def _pruner(config: SearchParams, max_steps: int | None) -> Any:
    pruners = _optuna().pruners
    if config.pruner == "median":
        return pruners.MedianPruner(**({} if config.startup is None else {"n_startup_trials": config.startup}))
    if config.pruner == "hyperband":
        return pruners.HyperbandPruner(min_resource=1, max_resource=max_steps or "auto", reduction_factor=3)
    if config.pruner == "asha":
        return pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return pruners.NopPruner()


@dataclass
class Study:
    """A search's study as Optuna sees it, and which of its trials is which of the store's."""

    study: Any  # optuna.Study, in memory
    dims: dict[str, Dimension]
    config: SearchParams
    ids: dict[int, int]  # the store's trial id -> the Optuna trial's id

    def ask(self) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """A new trial (added to the study as running): its values, its notes, the Optuna trial."""
        trial = self.study.ask(fixed_distributions=distributions(self.dims))
        frozen = self.study._storage.get_trial(trial._trial_id)
        return from_optuna(self.dims, frozen.params), storable(frozen.system_attrs), trial

    def tell(self, trial: Any, value: float | None) -> None:
        """A trial asked by ``ask`` already has its result (a cache hit)."""
        state = _optuna().trial.TrialState
        if value is None:
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, value)

    def exhausted(self) -> bool:
        """Whether the sampler has nothing new to ask (a grid whose every point was asked)."""
        sampler = self.study.sampler
        return bool(getattr(sampler, "is_exhausted", lambda s: False)(self.study))

    def should_prune(self, trial_id: int) -> tuple[bool, dict[str, Any]]:
        """The pruner's word on a running trial (the store's id), and the trial's notes as it left them."""
        tid = self.ids[trial_id]
        frozen = self.study._storage.get_trial(tid)
        prune = bool(self.study.pruner.prune(self.study, frozen))
        return prune, storable(self.study._storage.get_trial(tid).system_attrs)

    def importance(self) -> dict[str, float]:
        """Optuna's parameter importance (fANOVA, seeded) over the complete trials; {} with fewer than two, or
        when every value is the same."""
        optuna = _optuna()
        complete = [t for t in self.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 2 or len({t.value for t in complete}) < 2:
            return {}
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            found = optuna.importance.get_param_importances(self.study, evaluator=evaluator)
        except (RuntimeError, ValueError) as e:  # a space it cannot fit (one value per parameter)
            log.info("no parameter importance: %s", e)
            return {}
        return {k: float(v) for k, v in found.items()}


def storable(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's notes as they are kept: JSON values, without CMA-ES's pickled state."""
    return {k: v for k, v in attrs.items() if not k.startswith(_NO_PICKLE)}


def build(config: SearchParams, name: str, trials: Sequence[Trial], series: Mapping[int, Mapping[int, float]],
          number: int, max_steps: int | None) -> Study:
    """The study of ``trials`` (earlier results first, then by number: as ``storage.search.trials`` lists them),
    with each one's per-step ``series`` of the metric (by job id); its sampler seeded for trial ``number``."""
    optuna = _optuna()
    dims = config.dimensions()
    dists = distributions(dims)
    study = optuna.create_study(study_name=name, direction="maximize" if config.maximize else "minimize",
                                sampler=_sampler(config, dims, number), pruner=_pruner(config, max_steps))
    ids: dict[int, int] = {}
    state = optuna.trial.TrialState
    for t in trials:
        steps = {int(k): v for k, v in (series.get(t.job_id, {}) if t.job_id else {}).items()
                 if int(k) >= 1 and math.isfinite(v)}
        status = state[STATES[t.state]]
        value = t.value if status == state.COMPLETE else None
        if status == state.COMPLETE and value is None:
            status = state.FAIL
        try:
            frozen = optuna.trial.create_trial(state=status, value=value, params=to_optuna(dims, t.values),
                                               distributions=dists, intermediate_values=steps,
                                               system_attrs=dict(t.attrs))
        except (ValueError, KeyError, StopIteration) as e:  # a value outside this space: not this study's
            log.info("trial %s left out of the study: %s", t.id, e)
            continue
        study.add_trial(frozen)
        ids[t.id] = study.trials[-1]._trial_id
    return Study(study, dims, config, ids)


def _replay_cmaes() -> type:
    """Optuna's CmaEsSampler whose state is rebuilt from the trials of each generation, never unpickled."""
    from optuna.samplers import CmaEsSampler

    class _ReplayCmaEs(CmaEsSampler):  # type: ignore[misc]
        def _restore_optimizer(self, completed_trials: list[Any]) -> Any:
            self._completed = completed_trials
            return None

        def _init_optimizer(self, trans: Any, direction: Any) -> Any:
            import numpy as np
            from optuna.study import StudyDirection

            optimizer = super()._init_optimizer(trans, direction)
            key = self._attr_key_generation
            completed = getattr(self, "_completed", [])
            while True:
                generation = [t for t in completed if t.system_attrs.get(key, -1) == optimizer.generation]
                if len(generation) < optimizer.population_size:
                    return optimizer
                solutions = []
                for t in generation[: optimizer.population_size]:
                    x = np.array(t.system_attrs["x_for_tell"]) if "x_for_tell" in t.system_attrs \
                        else trans.transform(t.params)
                    solutions.append((x, t.value if direction == StudyDirection.MINIMIZE else -t.value))
                optimizer.tell(solutions)

    return _ReplayCmaEs
