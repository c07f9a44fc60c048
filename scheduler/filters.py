"""Queries on jobs by parameter value and by final metric, and the comparison of a sweep: shared by the CLI and
the API.

``--param z_dim=16`` keeps jobs whose parameter equals the value (a plain scalar: ``16``, ``0.5``, ``bce``,
``true``, or a JSON list ``[32, 64]``; never YAML, so a value cannot expand into more than it says);
``--where "test_loss<0.1"`` keeps jobs whose final value of the metric (its last step: the last epoch) passes the
comparison; ``--sort test_loss`` orders by a final metric.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from scheduler.errors import UserError
from storage import queries
from storage.errors import NotFound
from storage.queries import MAX_ID
from storage.records import Job, Metric


class HasParams(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def params(self) -> dict[str, Any]: ...


J = TypeVar("J", bound=HasParams)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
    "<": operator.lt, ">": operator.gt,
}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|!=|==|=|<|>)\s*(\S+)\s*$")


MAX_VALUE = 200  # characters of a filter's value: values in specs are short; anything longer is a mistake
_INT = re.compile(r"[-+]?\d{1,30}")  # more digits than any parameter takes: a string, not a huge integer


def plain_value(text: str, option: str = "--param") -> Any:
    """A filter's value as a plain scalar, never YAML (no aliases, no tags, no nesting to expand): ``true``/
    ``false``, ``null``, an integer, a finite number, a JSON list of such scalars (``[32, 64, 128]``, for list
    params such as filters), else the text itself. At most MAX_VALUE characters."""
    text = text.strip()
    if len(text) > MAX_VALUE:
        raise UserError(f"{option}: the value is over {MAX_VALUE} characters")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    if _INT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    if text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
        except ValueError:
            return text
        if isinstance(items, list) and all(isinstance(i, (int, float, str, bool)) or i is None for i in items):
            return items
    return text


@dataclass(frozen=True)
class ParamFilter:
    name: str
    value: Any

    @classmethod
    def parse(cls, text: str, option: str = "--param") -> ParamFilter:
        name, sep, raw = text.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{option}: expected NAME=VALUE, e.g. z_dim=16, got {text[:MAX_VALUE]!r}")
        if len(name.strip()) > MAX_VALUE or not name.strip().isprintable():
            raise UserError(f"{option}: {name[:MAX_VALUE]!r} is not a parameter name")
        return cls(name.strip(), plain_value(raw, option))

    def keeps(self, job: HasParams) -> bool:
        if self.name not in job.params:
            return False
        have = job.params[self.name]
        if isinstance(have, (int, float)) and isinstance(self.value, (int, float)) \
                and not isinstance(have, bool) and not isinstance(self.value, bool):
            return float(have) == float(self.value)
        if have == self.value:
            return True
        # a string against a stored value of another type: compare as text, without building a huge string
        return isinstance(self.value, str) and not isinstance(have, (dict, list)) and str(have) == self.value


@dataclass(frozen=True)
class MetricFilter:
    key: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str, option: str = "--where") -> MetricFilter:
        m = _WHERE.match(text)
        if m is None:
            raise UserError(f"{option}: expected METRIC OP NUMBER with OP one of < <= > >= = !=, e.g. "
                            f"'test_loss<0.1', got {text!r}")
        try:
            value = float(m.group(3))
        except ValueError as e:
            raise UserError(f"{option} {text!r}: {m.group(3)!r} is not a number") from e
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


def select_jobs(jobs: Sequence[J], finals: dict[int, dict[str, float]], params: Sequence[ParamFilter] = (),
                where: Sequence[MetricFilter] = (), sort: str | None = None, descending: bool = False) -> list[J]:
    """``jobs`` kept by every filter, ordered by the final metric ``sort`` (jobs without it last)."""
    kept = [j for j in jobs if all(p.keeps(j) for p in params) and all(w.keeps(finals.get(j.id, {})) for w in where)]
    if sort is None:
        return kept
    have = [j for j in kept if sort in finals.get(j.id, {})]
    lacking = [j for j in kept if sort not in finals.get(j.id, {})]
    return sorted(have, key=lambda j: finals[j.id][sort], reverse=descending) + lacking


def parse_since(value: str | None, option: str = "--since") -> datetime | None:
    """``30m``, ``2h``, ``1d`` ago, or an ISO date (UTC unless it says otherwise)."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units and value[:-1].isdigit():
            return datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
        t = datetime.fromisoformat(value)
        # in UTC now, as the database compares it: a date that leaves the calendar there is refused here
        return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError) as e:
        raise UserError(f"{option}: expected e.g. 30m, 2h, 1d or an ISO date, got {value[:64]!r}") from e


@dataclass
class JobQuery:
    """A search for jobs: the SQL filters (batch, kind, status, since), then parameter values and final metrics,
    then the order by a final metric. ``run`` answers with the jobs and the final metrics filtered or sorted on."""

    batch: int | None = None
    kind: str | None = None
    status: str | None = None
    since: datetime | None = None
    params: list[ParamFilter] = field(default_factory=list)
    where: list[MetricFilter] = field(default_factory=list)
    sort: str | None = None
    descending: bool = False

    @property
    def keys(self) -> list[str]:
        """The metrics this query reads: those filtered on, then the one sorted on."""
        return list(dict.fromkeys([w.key for w in self.where] + ([self.sort] if self.sort else [])))

    def run(self, session: Session, limit: int | None = None, offset: int = 0
            ) -> tuple[list[Job], dict[int, dict[str, float]], int]:
        """The page of jobs from ``offset`` (at most ``limit``), their final metrics, and how many match in all."""
        if self.batch is not None:
            queries.get_batch(session, self.batch)
        if self.sort is not None:
            _printable(self.sort, "sort")
        sql = (self.batch, self.kind, self.status, self.since)
        keys = self.keys
        if not self.params and not keys:  # SQL alone answers: page there
            page = queries.list_jobs(session, *sql, limit=limit, offset=offset)
            total = queries.count_jobs(session, *sql) if limit is not None else offset + len(page)
            return page, {j.id: {} for j in page}, total
        # Filter on ids, params and the metrics filtered on; read whole rows for the page only.
        light = queries.jobs_params(session, *sql)
        if self.params:  # a job downstream of train[z_dim=8] matches z_dim=8 too
            light = with_lineage(session, light, [p.name for p in self.params])
        finals = final_metrics(queries.metrics_of_jobs(session, keys, *sql)) if keys and light else {}
        kept = select_jobs(light, finals, self.params, self.where, self.sort, self.descending)
        ids = [j.id for j in (kept[offset:] if limit is None else kept[offset:offset + limit])]
        rows = {j.id: j for j in queries.jobs_by_ids(session, ids)}
        page = [rows[i] for i in ids if i in rows]
        return page, {j.id: finals.get(j.id, {}) for j in page}, len(kept)


def job_ids(session: Session, jobs: Sequence[int], batch: int | None, jobs_how: str = "JOB...",
            batch_how: str = "--batch") -> list[int]:
    """The jobs named (each must exist: NotFound names the first that does not) and those of ``batch``."""
    ids = list(jobs)
    if batch is not None:
        queries.get_batch(session, batch)
        ids += queries.batch_job_ids(session, batch)
    if not ids:
        raise UserError(f"name one or more jobs ({jobs_how}) or a batch ({batch_how})")
    found = queries.existing_job_ids(session, [i for i in jobs if 1 <= i <= MAX_ID])
    missing = [i for i in jobs if i not in found]
    if missing:
        raise NotFound(f"no job {missing[0]}")
    return ids


def with_lineage(session: Session, jobs: Sequence[queries.JobParams], names: Sequence[str]
                 ) -> list[queries.JobParams]:
    """``jobs`` with the params ``names`` they inherit from their ancestors added where they lack them (their own
    win): what a parameter filter and ``compare`` read."""
    lacking = [j.id for j in jobs if any(n not in j.params for n in names)]
    if not lacking:
        return list(jobs)
    inherited = queries.inherited_params(session, lacking, names)
    return [queries.JobParams(j.id, {**inherited.get(j.id, {}), **j.params}) if j.id in inherited else j
            for j in jobs]


def compare(session: Session, batch: int, metric: str, by: str, higher_is_better: bool = False,
            kind: str | None = None) -> dict[str, Any]:
    """The final ``metric`` of ``batch``'s jobs (of ``kind``) per value of the parameter ``by``, their own or
    inherited from an ancestor (an encode of train[z_dim=8] counts for z_dim 8): a row per value with the number of
    jobs, the best, mean and worst value and the best job; ``best`` is the index of the overall best row, never a
    row without a value (null). Jobs of different kinds are never ranked together: a metric several kinds record
    needs ``kind``."""
    queries.get_batch(session, batch)
    _printable(metric, "metric")
    own = queries.jobs_params(session, batch, kind)
    owned = {j.id for j in own if by in j.params}
    jobs = [j for j in with_lineage(session, own, [by]) if by in j.params]
    if not jobs:
        raise UserError(f"no job of batch {batch}{_of(kind)} has a parameter {by!r}, of its own or from the jobs "
                        "it needs")
    values = final_metrics(queries.metrics_of_jobs(session, [metric], batch, kind))
    final = {j.id: values[j.id][metric] for j in jobs if metric in values.get(j.id, {})}
    if not final:
        known = ", ".join(queries.metric_keys(session, batch)) or "none yet"
        raise UserError(f"no job of batch {batch}{_of(kind)} with a parameter {by!r} has the metric {metric!r} "
                        f"(metrics there: {known})")
    rows_of = {j.id: j for j in queries.jobs_by_ids(session, list(final))}
    kinds = sorted({rows_of[i].kind for i in final})
    if len(kinds) > 1:
        raise UserError(f"{metric!r} is recorded by jobs of kinds {', '.join(kinds)} in batch {batch}: they are not "
                        f"ranked together; choose one with --kind")
    groups: dict[str, list[tuple[float, int]]] = {}
    for j in jobs:
        if j.id in final:
            groups.setdefault(json.dumps(j.params[by], sort_keys=True), []).append((final[j.id], j.id))
    pick = max if higher_is_better else min
    best = {value: pick(members, key=lambda vj: vj[0]) for value, members in groups.items()}
    rows = []
    for value in sorted(groups, key=_natural):
        scores = [v for v, _ in groups[value]]
        best_value, best_job = best[value]
        rows.append({by: json.loads(value), "jobs": len(scores), "best": best_value,
                     "mean": sum(scores) / len(scores), "worst": (min if higher_is_better else max)(scores),
                     "best_job": best_job, "best_name": rows_of[best_job].name,
                     "inherited": any(job_id not in owned for _, job_id in groups[value])})
    valued = [i for i in range(len(rows)) if rows[i][by] is not None]  # a group with no value is not a winner
    winner = pick(valued, key=lambda i: rows[i]["best"]) if valued else None
    return {"batch": batch, "metric": metric, "by": by, "higher_is_better": higher_is_better, "kind": kinds[0],
            "rows": rows, "best": winner}


def _of(kind: str | None) -> str:
    return f" of kind {kind!r}" if kind else ""


def _printable(name: str, what: str) -> None:
    """A metric's name goes into SQL: one no metric has (a NUL byte, which PostgreSQL refuses) is a user error."""
    if not name.isprintable():
        raise UserError(f"{what}: {name!r} is not a metric name")


def _natural(value: str) -> tuple[int, Any]:
    """Numbers in numeric order, then everything else as text."""
    parsed = json.loads(value)
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return (0, parsed)
    return (1, value)
