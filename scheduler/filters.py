"""Filters on jobs by parameter value and by final metric, shared by the CLI's queries.

``--param z_dim=16`` keeps jobs whose parameter equals the value (read as YAML: ``16``, ``0.5``, ``bce``,
``true``); ``--where "test_loss<0.1"`` keeps jobs whose final value of the metric (its last step: the last epoch)
passes the comparison; ``--sort test_loss`` orders by a final metric.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from scheduler.errors import UserError
from storage.records import Job, Metric

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
    "<": operator.lt, ">": operator.gt,
}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|==|=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class ParamFilter:
    name: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> ParamFilter:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--param: expected NAME=VALUE, e.g. z_dim=16, got {text!r}")
        return cls(name.strip(), yaml.safe_load(raw) if raw.strip() else "")

    def keeps(self, job: Job) -> bool:
        if self.name not in job.params:
            return False
        have = job.params[self.name]
        if isinstance(have, (int, float)) and isinstance(self.value, (int, float)) \
                and not isinstance(have, bool) and not isinstance(self.value, bool):
            return float(have) == float(self.value)
        return bool(have == self.value or str(have) == str(self.value))


@dataclass(frozen=True)
class MetricFilter:
    key: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> MetricFilter:
        m = _WHERE.match(text)
        if m is None:
            raise UserError(f"--where: expected METRIC OP NUMBER with OP one of < <= > >= = !=, e.g. "
                            f"'test_loss<0.1', got {text!r}")
        try:
            value = float(m.group(3))
        except ValueError as e:
            raise UserError(f"--where {text!r}: {m.group(3)!r} is not a number") from e
        return cls(m.group(1), m.group(2), value)

    def keeps(self, finals: dict[str, float]) -> bool:
        return self.key in finals and _OPS[self.op](finals[self.key], self.value)


def final_metrics(metrics: Iterable[Metric]) -> dict[int, dict[str, float]]:
    """Per job, each metric's value at its last step (the last epoch; the value itself for a final metric)."""
    steps: dict[tuple[int, str], int] = {}
    out: dict[int, dict[str, float]] = {}
    for m in metrics:
        if steps.get((m.job_id, m.key), -1) <= m.step:
            steps[(m.job_id, m.key)] = m.step
            out.setdefault(m.job_id, {})[m.key] = m.value
    return out


def select_jobs(jobs: Sequence[Job], finals: dict[int, dict[str, float]], params: Sequence[ParamFilter] = (),
                where: Sequence[MetricFilter] = (), sort: str | None = None, descending: bool = False) -> list[Job]:
    """``jobs`` kept by every filter, ordered by the final metric ``sort`` (jobs without it last)."""
    kept = [j for j in jobs if all(p.keeps(j) for p in params) and all(w.keeps(finals.get(j.id, {})) for w in where)]
    if sort is None:
        return kept
    have = [j for j in kept if sort in finals.get(j.id, {})]
    lacking = [j for j in kept if sort not in finals.get(j.id, {})]
    return sorted(have, key=lambda j: finals[j.id][sort], reverse=descending) + lacking
