"""``search:`` on a spec entry, and the ``study`` job that stands for a search in its batch.

A spec entry of a searchable kind (``Kind.searchable``: ``train``) may take a ``search:`` block instead of a sweep:

    search:
      space: {z_dim: {int: [2, 64], log: true}, learning_rate: {float: [1e-4, 1e-2], log: true},
              filters: {choice: [[16, 32, 64], [32, 64, 128]]}}
      metric: val_loss     # minimised (maximize: true for accuracy-like metrics)
      trials: 40
      parallel: 4          # trials running at once
      sampler: tpe         # tpe | random | grid | cmaes
      pruner: hyperband    # none | median | hyperband | asha; its steps are the metric's steps (epochs)

Its trials are jobs of the batch, asked (Optuna) as slots free up; the entry itself becomes one ``study`` job,
running while the search runs, that the jobs needing the whole search (or its best trial) wait for. This module
holds only the declarations: the block's dataclass (validated on the control plane) and the study kind.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import ConfigError
from core.kinds.base import Kind
from core.params import require

MAX_TRIALS = 10_000  # trials of one search
MAX_GRID = 10_000  # points of a grid search
DIMENSION_KEYS = {"int", "float", "choice", "log", "step"}


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: an int or float range (on a log scale, or in steps), or a list of choices."""

    name: str
    type: Literal["int", "float", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def values(self) -> list[Any]:
        """Every value of a grid: the choices, or each integer (step) of an int range."""
        if self.type == "choice":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(f"space.{self.name}", "a grid search takes choices or int ranges, not a float range")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this dimension (an earlier job's value, to reuse it)."""
        if self.type == "choice":
            return any(_same(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (a tuple and a list of the same items are one value)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(field, f"expected a number, got {value!r}")
    return float(value)


def dimension(name: str, spec: Any) -> Dimension:
    """Parse one entry of ``space``; ConfigError naming ``space.<name>``."""
    field = f"space.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(field, "expected {int: [low, high]}, {float: [low, high]} or {choice: [values]}, "
                                 f"got {spec!r}")
    unknown = sorted(set(spec) - DIMENSION_KEYS, key=str)
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"unknown key; expected one of: {', '.join(sorted(DIMENSION_KEYS))}")
    kinds: list[Literal["int", "float", "choice"]] = [k for k in ("int", "float", "choice") if k in spec]
    if len(kinds) != 1:
        raise ConfigError(field, "needs exactly one of int, float or choice")
    kind = kinds[0]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{field}.log", f"expected true or false, got {log!r}")
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{field}.choice", "expected a non-empty list of values")
        if log or "step" in spec:
            raise ConfigError(field, "log and step apply to int and float ranges, not to choices")
        for i, c in enumerate(choices):
            if any(_same(c, d) for d in choices[:i]):
                raise ConfigError(f"{field}.choice", f"repeats the value {c!r}")
        return Dimension(name, "choice", choices=tuple(choices))
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{field}.{kind}", f"expected [low, high], got {bounds!r}")
    low, high = (_number(f"{field}.{kind}", b) for b in bounds)
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{field}.int", f"expected integer bounds, got {bounds!r}")
    require(low <= high, f"{field}.{kind}", f"low must be <= high, got {bounds!r}")
    require(not log or low > 0, f"{field}.log", f"a log scale needs low > 0, got {low:g}")
    step = spec.get("step")
    if step is not None:
        step = _number(f"{field}.step", step)
        require(step > 0, f"{field}.step", f"must be > 0, got {step:g}")
        require(not log, f"{field}.step", "a range takes log or step, not both")
        require(kind == "float" or step.is_integer(), f"{field}.step", f"an int range's step is an integer, got {step}")
    return Dimension(name, kind, low, high, log, step)


def parse_space(space: Any) -> dict[str, Dimension]:
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("space", "required: a mapping of parameter -> {int: [low, high]}, {float: [low, high]} "
                                   "or {choice: [values]}")
    return {str(name): dimension(str(name), spec) for name, spec in space.items()}


@dataclass(frozen=True)
class SearchParams:
    """A search over some of an entry's parameters: trials asked by a sampler as slots free up, stopped early by a
    pruner. Optuna's samplers and pruners, by name."""

    space: Any = None  # required: parameter -> {int: [lo, hi]} | {float: [lo, hi]} (log or step) | {choice: [...]}
    metric: str = ""  # required: what the trials record per step (val_loss per epoch); its last step's value counts
    maximize: bool = False  # maximise the metric (accuracy); by default it is minimised (a loss)
    trials: int | None = None  # how many trials to run; a grid's default: every point of it
    parallel: int = 1  # trials running at once
    sampler: Literal["tpe", "random", "grid", "cmaes"] = "tpe"  # Optuna's: what proposes each next trial
    pruner: Literal["none", "median", "hyperband", "asha"] = "none"  # Optuna's; its steps are the metric's (epochs)
    seed: int = 0  # seeds the sampler: the same search over the same results asks the same trials
    startup: int | None = None  # trials before tpe/cmaes model the results and the median pruner prunes (Optuna's)

    def dimensions(self) -> dict[str, Dimension]:
        return parse_space(self.space)

    def grid(self) -> dict[str, list[Any]]:
        """The grid's values per parameter (a grid search)."""
        return {name: d.values() for name, d in self.dimensions().items()}

    def validate(self) -> None:
        dims = self.dimensions()
        require(bool(self.metric), "metric", "required: the metric to optimise, e.g. val_loss")
        if self.sampler == "grid":
            size = math.prod(len(v) for v in self.grid().values())
            require(size <= MAX_GRID, "space", f"the grid has {size} points, more than {MAX_GRID}")
            require(self.trials is None or 1 <= self.trials <= size, "trials",
                    f"must be from 1 to the grid's {size} points, got {self.trials}")
        else:
            require(self.trials is not None, "trials", "required: how many trials to run")
        require(self.trials is None or 1 <= self.trials <= MAX_TRIALS, "trials",
                f"must be from 1 to {MAX_TRIALS}, got {self.trials}")
        require(self.parallel >= 1, "parallel", f"must be >= 1, got {self.parallel}")
        require(self.startup is None or self.startup >= 0, "startup", f"must be >= 0, got {self.startup}")
        require(self.sampler != "cmaes" or any(d.type != "choice" for d in dims.values()), "sampler",
                "cmaes searches int and float ranges: this space has only choices")

    @property
    def budget(self) -> int:
        """How many trials the search runs."""
        if self.trials is not None:
            return self.trials
        return math.prod(len(v) for v in self.grid().values())


def grid_points(params: SearchParams) -> list[dict[str, Any]]:
    """Every point of a grid search's space, in the grid's order."""
    grid = params.grid()
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


KINDS = (
    Kind("study", SearchParams, "cpu", "a search's study (made by an entry with search:): running while its trials "
         "run; the jobs that need the search wait for it. Never sent to a worker",
         handler="workers.handlers.search:run_study", made_by="train"),
)
