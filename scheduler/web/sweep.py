"""What the dashboard's views of a sweep show, apart from the routes: the jobs table (sorted and filtered, a few
chosen metrics), the learning curves overlaid, a metric against a parameter, parallel coordinates and the gallery.

Everything a page shows of a big batch is paged or drawn from light reads: the table and the gallery are pages in
SQL (``storage.sweeps``) unless a parameter filters or sorts them (parameters follow the lineage, as the CLI's
``--param``: then ids and params are read, filtered in Python, and only the page's rows are read whole); the
curves draw a page of the best jobs; the scatter and the parallel coordinates read (id, params) and one final
metric per job. Kinds are told apart only by their hints in ``core.kinds``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from core.kinds import KINDS
from scheduler.errors import UserError
from scheduler.filters import MetricFilter, ParamFilter, with_lineage
from scheduler.resources import RESOURCE_METRICS, without_resources
from scheduler.web import sweep_charts as sc
from scheduler.web import views
from storage import queries, sweeps
from storage.records import Artifact, Job

CURVES_PER_PAGE = 50  # curves overlaid on one chart: more is a tangle; the next page has the next best
GALLERY_PER_PAGE = 48
TABLE_METRICS = 3  # metric columns of the jobs table when none are chosen
PARAM_COLUMNS = 6  # swept params shown as columns of the jobs table


@dataclass(frozen=True)
class Choices:
    """What a batch offers its views: kinds, params (swept first), metrics (by name: the kinds that record it;
    per step: those recorded at steps from 1) and image artifacts (kind, name, jobs)."""

    kinds: list[str]
    params: list[str]
    swept: set[str]
    swept_of: dict[str, list[str]]  # kind → the params swept among its jobs
    metrics: dict[str, list[str]]
    per_step: dict[str, list[str]]
    images: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def own_metrics(self) -> list[str]:
        """The metrics the jobs recorded themselves (not the resources they used)."""
        return [m for m in self.metrics if m not in RESOURCE_METRICS]


@dataclass(frozen=True)
class _Params:
    kinds: list[str]
    params: list[str]
    swept: set[str]
    swept_of: dict[str, list[str]]


def _params(s: Session, batch_id: int) -> _Params:
    """What a batch's params offer: read every job's (kind, params), the costliest part of its choices."""
    seen: dict[tuple[str, str], set[Any]] = {}
    kinds: set[str] = set()
    for kind, params in sweeps.kinds_and_params(s, batch_id):
        kinds.add(kind)
        for name, v in params.items():
            seen.setdefault((kind, name), set()).add(sc.value_key(v))
    swept_of: dict[str, list[str]] = {}
    for (kind, name), values in sorted(seen.items()):
        if len(values) > 1:
            swept_of.setdefault(kind, []).append(name)
    swept = {n for names in swept_of.values() for n in names}
    return _Params(sorted(kinds), sorted({n for _, n in seen}, key=lambda n: (n not in swept, n)), swept, swept_of)


def _with_names(s: Session, batch_id: int, p: _Params) -> Choices:
    """``p`` with the batch's metric and image names: the part of its choices that grows as its jobs run."""
    metrics: dict[str, list[str]] = {}
    per_step: dict[str, list[str]] = {}
    for kind, key, stepped in sweeps.metric_names(s, batch_id):
        metrics.setdefault(key, []).append(kind)
        if stepped:
            per_step.setdefault(key, []).append(kind)
    return Choices(p.kinds, p.params, p.swept, p.swept_of, dict(sorted(metrics.items())),
                   dict(sorted(per_step.items())), sweeps.image_names(s, batch_id))


def choices(s: Session, batch_id: int) -> Choices:
    return _with_names(s, batch_id, _params(s, batch_id))


class ChoicesCache:
    """The choices of the batches last asked about, kept while ``storage.sweeps.version`` says nothing that could
    change them was added (a batch's jobs, params and names change only by additions): its params while it has
    the same jobs, its metric and image names while no metric or artifact was recorded. The views of a big batch
    read its params once, not on every click."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._params: dict[tuple[int, int], _Params] = {}
        self._names: dict[tuple[int, ...], Choices] = {}
        self._lock = threading.Lock()

    def get(self, s: Session, batch_id: int) -> Choices:
        version = sweeps.version(s, batch_id)
        key = (batch_id, *version)
        with self._lock:
            found = self._names.get(key)
            params = self._params.get((batch_id, version[0]))
        if found is not None:
            return found
        if params is None:
            params = _params(s, batch_id)
            self._keep(self._params, (batch_id, version[0]), params)
        found = _with_names(s, batch_id, params)
        self._keep(self._names, key, found)
        return found

    def _keep(self, kept: dict[Any, Any], key: tuple[int, ...], value: Any) -> None:
        """``value`` under ``key``, instead of any older one of the batch; the oldest go beyond ``size``."""
        with self._lock:
            for old in [k for k in kept if k[0] == key[0]] + list(kept)[:-self.size + 1]:
                kept.pop(old, None)
            kept[key] = value


def _kind_of(metric: str, kinds_of: dict[str, list[str]], kind: str | None) -> str | None:
    """The kind whose jobs a metric is read from: the one asked for, else the one (or the first) recording it."""
    if kind:
        return kind
    found = kinds_of.get(metric) or []
    return found[0] if found else None


def _pick(wanted: str | None, offered: Sequence[str], preferred: Sequence[str] = ()) -> str | None:
    if wanted:
        return wanted
    for p in preferred:
        if p in offered:
            return p
    return offered[0] if offered else None


def default_metric(names: Sequence[str]) -> str | None:
    return views.default_metric(sorted(names))


# ---- the jobs table --------------------------------------------------------------------------------------------

SORTS = tuple(sweeps.SORT_COLUMNS)


@dataclass(frozen=True)
class TableQuery:
    """A jobs table's filters and order: ``sort`` is a column of ``SORTS``, ``m:<metric>`` (its final value) or
    ``p:<param>`` (its value, own or inherited)."""

    kind: str | None = None
    status: str | None = None
    params: tuple[ParamFilter, ...] = ()
    where: tuple[MetricFilter, ...] = ()
    sort: str = "id"
    desc: bool = False

    @classmethod
    def parse(cls, kind: str | None, status: str | None, params: Sequence[str], where: Sequence[str], sort: str,
              desc: bool) -> TableQuery:
        if not (sort in SORTS or (sort[:2] in ("m:", "p:") and len(sort) > 2)):
            raise UserError(f"sort: expected one of {', '.join(SORTS)}, m:METRIC or p:PARAM, got {sort[:100]!r}")
        return cls(kind or None, status or None, tuple(ParamFilter.parse(p, "param") for p in params if p.strip()),
                   tuple(MetricFilter.parse(w, "where") for w in where if w.strip()), sort, desc)

    @property
    def sort_param(self) -> str | None:
        return self.sort[2:] if self.sort.startswith("p:") else None

    @property
    def sort_metric(self) -> str | None:
        return self.sort[2:] if self.sort.startswith("m:") else None


def table_page(s: Session, batch_id: int, q: TableQuery, limit: int, offset: int) -> tuple[list[Job], int]:
    """The page of the batch's jobs that ``q`` keeps, in its order, and how many it keeps in all."""
    where = [(w.key, w.op, w.value) for w in q.where]
    if not q.params and q.sort_param is None:  # SQL alone answers
        return sweeps.job_page(s, batch_id, kind=q.kind, status=q.status, where=where, sort=q.sort
                               if q.sort in SORTS else "id", sort_metric=q.sort_metric, descending=q.desc,
                               limit=limit, offset=offset)
    column = q.sort if q.sort in SORTS else "id"
    lines = sweeps.job_params(s, batch_id, q.kind, q.status, column)
    names = [p.name for p in q.params] + ([q.sort_param] if q.sort_param else [])
    params = {j.id: j.params for j in with_lineage(s, [queries.JobParams(i, p) for i, p, _ in lines], names)}
    kept = [(i, v) for i, _, v in lines if all(p.keeps(queries.JobParams(i, params[i])) for p in q.params)]
    for w in q.where:
        values = sweeps.final_values(s, batch_id, w.key, q.kind)
        kept = [(i, v) for i, v in kept if w.keeps({w.key: values[i]} if i in values else {})]
    if q.sort_metric is not None:
        values = sweeps.final_values(s, batch_id, q.sort_metric, q.kind)
        kept = [(i, values.get(i)) for i, _ in kept]
    elif q.sort_param is not None:
        kept = [(i, params[i].get(q.sort_param)) for i, _ in kept]
    have = sorted(((i, v) for i, v in kept if v is not None), key=lambda iv: (_order(iv[1]), iv[0]), reverse=q.desc)
    ordered = [i for i, _ in have] + [i for i, v in kept if v is None]  # without a value: last, either way
    ids = ordered[offset:offset + limit]
    rows = {j.id: j for j in queries.jobs_by_ids(s, ids)}
    return [rows[i] for i in ids if i in rows], len(ordered)


def _order(v: Any) -> Any:
    """Values of one column in one order: numbers by value, before text; times and text as they compare."""
    if sc.is_number(v):
        return (0, float(v), "")
    if isinstance(v, str):
        return (1, 0.0, v)
    return (1, 0.0, sc.label(v)) if not hasattr(v, "isoformat") else (0, v.timestamp(), "")


def table(s: Session, batch_id: int, q: TableQuery, shown: Sequence[str], limit: int, offset: int,
          c: Choices) -> dict[str, Any]:
    """The jobs table's context: the page, its params (own, or inherited: ``inherited``) and the chosen final
    metrics of each job."""
    jobs, total = table_page(s, batch_id, q, limit, offset)
    metric_columns = list(shown) or _default_columns(c)
    param_columns = [p for p in c.params if p in c.swept][:PARAM_COLUMNS]
    ids = [j.id for j in jobs]
    finals = sweeps.last_values(s, ids, metric_columns)
    lacking = [j.id for j in jobs if any(p not in j.params for p in param_columns)]
    inherited = queries.inherited_params(s, lacking, param_columns) if lacking and param_columns else {}
    return {"jobs": jobs, "total_jobs": total, "finals": finals, "metric_columns": metric_columns,
            "param_columns": param_columns, "inherited": inherited, "query": q}


def _default_columns(c: Choices) -> list[str]:
    """The metric a batch is best judged by, then each kind's (a mixed batch shows one of each), then others: at
    most ``TABLE_METRICS``."""
    own = c.own_metrics
    per_kind = [default_metric([m for m in own if kind in c.metrics[m]]) for kind in c.kinds]
    picked = list(dict.fromkeys(m for m in [default_metric(own), *per_kind, *own] if m is not None))
    return picked[:TABLE_METRICS]


# ---- learning curves -------------------------------------------------------------------------------------------

def curves(s: Session, batch_id: int, c: Choices, metric: str | None, kind: str | None, colour: str | None,
           higher_is_better: bool, page: int) -> dict[str, Any]:
    """The page's best ``CURVES_PER_PAGE`` jobs by the last value of the per-step ``metric``, each a curve
    coloured by its value of ``colour`` (own or inherited)."""
    offered = list(c.per_step)
    metric = _pick(metric, offered, ("val_loss", "loss", "test_loss"))
    if metric is None:
        return {"metric": None, "chart": None, "total": 0}
    if metric not in c.per_step:
        raise UserError(f"no job of this batch recorded {metric!r} per step (per step: {', '.join(offered) or 'none'})")
    kind = _kind_of(metric, c.per_step, kind)
    colour = colour if colour is not None else next(iter(c.swept_of.get(kind or "", [])), None) or \
        next(iter(sorted(c.swept)), None)
    offset = (page - 1) * CURVES_PER_PAGE
    best, total = sweeps.ranked(s, batch_id, metric, kind, descending=higher_is_better, limit=CURVES_PER_PAGE,
                                offset=offset)
    ids = [i for i, _ in best]
    jobs = {j.id: j for j in queries.jobs_by_ids(s, ids)}
    values = _values_of(s, jobs, colour)
    key = sc.colour_key(colour, values.values()) if colour else None
    series = sweeps.series(s, ids, metric)
    x_label = KINDS[kind].x_axis if kind in KINDS else "step"
    drawn = [sc.Curve(series[i], key.colour(values.get(i)) if key else sc.charts.PALETTE[0],
                      _hover(jobs[i], metric, final, colour, values.get(i)), f"/jobs/{i}", i)
             for i, final in best if i in series and i in jobs]
    last = min(offset + len(best), total)
    which = "best" if page == 1 else f"{offset + 1}–{last} best"
    title = f"{metric} per {x_label}: the {which} {len(drawn)} of {total} {kind or ''} jobs".replace("  ", " ")
    chart = sc.curves_chart(drawn, x_label, metric, title, key)
    return {"metric": metric, "kind": kind, "colour": colour, "chart": chart, "total": total, "drawn": len(drawn),
            "offset": offset, "page": page, "pages": max(1, -(-total // CURVES_PER_PAGE)), "per_page": CURVES_PER_PAGE,
            "best": [(jobs[i], v, values.get(i)) for i, v in best if i in jobs]}


def _values_of(s: Session, jobs: dict[int, Job], name: str | None) -> dict[int, Any]:
    """Each job's value of the param ``name``: its own, else inherited from its ancestors (absent: none)."""
    if not name:
        return {}
    own = {i: j.params[name] for i, j in jobs.items() if name in j.params}
    lacking = [i for i in jobs if i not in own]
    inherited = queries.inherited_params(s, lacking, [name]) if lacking else {}
    return {**{i: v[name] for i, v in inherited.items() if name in v}, **own}


def _hover(job: Job, metric: str, value: float, colour: str | None, colour_value: Any) -> str:
    said = f", {colour}={sc.label(colour_value)}" if colour else ""
    return f"job {job.id} {job.name}: {metric} {sc.label(value)}{said}"


# ---- a metric against a param, and parallel coordinates ---------------------------------------------------------

@dataclass(frozen=True)
class Swept:
    """The jobs of one kind with a final metric: id → (params, own and inherited, final value)."""

    kind: str | None
    jobs: dict[int, tuple[dict[str, Any], float]]
    varied: list[str]  # params that take more than one value among them


def _swept(s: Session, batch_id: int, c: Choices, metric: str, kind: str | None, names: Sequence[str]) -> Swept:
    finals = sweeps.final_values(s, batch_id, metric, kind)
    light = [j for j in queries.jobs_params(s, batch_id, kind) if j.id in finals]
    light = with_lineage(s, light, [n for n in names if n])
    jobs = {j.id: (j.params, finals[j.id]) for j in light}
    wanted = sorted(c.swept | {n for n in names if n})  # what may vary: the params swept, and those asked for
    seen: dict[str, set[Any]] = {}
    for params, _ in jobs.values():
        for n in wanted:
            if n in params:
                seen.setdefault(n, set()).add(sc.value_key(params[n]))
    varied = sorted((n for n, vs in seen.items() if len(vs) > 1), key=lambda n: (n not in c.swept, n))
    return Swept(kind, jobs, varied)


def _metric_and_kind(c: Choices, metric: str | None, kind: str | None) -> tuple[str | None, str | None]:
    offered = c.own_metrics or list(c.metrics)
    metric = _pick(metric, offered, ("test_loss", "val_loss", "loss", "fid_cnn", "fid_latent", "test_accuracy"))
    if metric is not None and metric not in c.metrics:
        raise UserError(f"no job of this batch recorded {metric!r} (metrics: {', '.join(c.metrics) or 'none'})")
    return metric, (_kind_of(metric, c.metrics, kind) if metric else None)


def scatter(s: Session, batch_id: int, c: Choices, metric: str | None, by: str | None, kind: str | None,
            colour: str | None) -> dict[str, Any]:
    """Each job's final ``metric`` against its value of ``by`` (own or inherited), coloured by ``colour``."""
    metric, kind = _metric_and_kind(c, metric, kind)
    if metric is None:
        return {"metric": None, "chart": None}
    by = by or next(iter(c.swept_of.get(kind or "", [])), None) or next(iter(sorted(c.swept)), None) or \
        next(iter(c.params), None)
    if by is None:
        return {"metric": metric, "kind": kind, "by": None, "chart": None}
    data = _swept(s, batch_id, c, metric, kind, [by, colour or ""])
    having = {i: (p, v) for i, (p, v) in data.jobs.items() if by in p}
    if not having:
        raise UserError(f"no job{f' of kind {kind!r}' if kind else ''} with {metric!r} has a parameter {by!r}, of "
                        "its own or from the jobs it needs")
    xs = [p[by] for p, _ in having.values()]
    numeric = all(sc.is_number(x) for x in xs)
    categories = None if numeric else [sc.label(v) for v in sorted({sc.value_key(x): x for x in xs}.values(),
                                                                     key=sc.natural)]
    positive = numeric and min(float(x) for x in xs) > 0
    log_x = positive and max(float(x) for x in xs) / min(float(x) for x in xs) >= 100
    key = sc.colour_key(colour, (p.get(colour) for p, _ in having.values())) if colour else None
    points = [sc.Point(p[by] if numeric else sc.label(p[by]), v,
                       key.colour(p.get(colour)) if key and colour else sc.charts.PALETTE[0],
                       f"job {i}: {by}={sc.label(p[by])}" + (f", {colour}={sc.label(p.get(colour))}" if colour else "")
                       + f" → {metric} {sc.label(v)}", f"/jobs/{i}", i)
              for i, (p, v) in sorted(having.items())]
    title = f"final {metric} against {by}: {len(points)} {kind or ''} jobs".replace("  ", " ")
    chart = sc.scatter_chart(points, by, metric, title, key, categories=categories, log_x=log_x)
    return {"metric": metric, "kind": kind, "by": by, "colour": colour, "chart": chart, "count": len(points),
            "varied": data.varied}


def parallel(s: Session, batch_id: int, c: Choices, metric: str | None, kind: str | None,
             higher_is_better: bool) -> dict[str, Any]:
    """One axis per param that varies among the jobs of ``kind`` with ``metric`` (own or inherited), then the
    metric's axis (the best value at the top); one line per job, coloured by its value (dark is best)."""
    metric, kind = _metric_and_kind(c, metric, kind)
    if metric is None:
        return {"metric": None, "chart": None}
    data = _swept(s, batch_id, c, metric, kind, sorted(c.swept))
    names = [n for n in data.varied if n in c.swept] or data.varied
    values = [v for _, v in data.jobs.values()]
    axes = [sc.axis(n, (p.get(n) for p, _ in data.jobs.values())) for n in names]
    axes.append(sc.axis(metric, values, flip=not higher_is_better))
    key = sc.colour_key(metric, values, most=0, reverse=higher_is_better) if values else None
    lines = [sc.Line([*(p.get(n) for n in names), v], key.colour(v) if key else sc.charts.PALETTE[0],
                     f"job {i}: " + ", ".join(f"{n}={sc.label(p.get(n))}" for n in names) + f" → {metric} "
                     f"{sc.label(v)}", f"/jobs/{i}", i)
             for i, (p, v) in sorted(data.jobs.items(), key=lambda kv: kv[1][1], reverse=not higher_is_better)]
    title = f"{len(lines)} {kind or ''} jobs: their params against {metric}".replace("  ", " ")
    chart = sc.parallel_chart(axes, lines, title, key)
    return {"metric": metric, "kind": kind, "chart": chart, "count": len(lines), "axes": names}


# ---- the gallery -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    job: Job
    image: Artifact
    params: dict[str, Any]  # the swept params: own, or inherited (named in ``inherited``)
    inherited: set[str]
    scores: dict[str, float]


def gallery(s: Session, batch_id: int, c: Choices, name: str | None, kind: str | None, sort_metric: str | None,
            desc: bool, page: int) -> dict[str, Any]:
    """A page of ``GALLERY_PER_PAGE`` jobs with the image ``name`` (of ``kind``), each with its swept params and
    its own final metrics; by default the image a kind's gallery hint names first."""
    offered = [(k, n) for k, n, _ in c.images]
    hinted = [(k, n) for k, n in offered if k in KINDS and n in KINDS[k].gallery]
    if name is None:
        pick = next(iter(hinted or offered), None)
        if pick is None:
            return {"name": None, "figures": [], "total": 0}
        kind, name = kind or pick[0], pick[1]
    elif kind is None:
        kind = next((k for k, n in offered if n == name), None)
    if (kind, name) not in offered:
        raise UserError(f"no job{f' of kind {kind!r}' if kind else ''} of this batch has an image {name!r}")
    offset = (page - 1) * GALLERY_PER_PAGE
    found, total = sweeps.gallery_page(s, batch_id, name, kind, sort_metric=sort_metric or None, descending=desc,
                                       limit=GALLERY_PER_PAGE, offset=offset)
    ids = [j.id for j, _ in found]
    finals = sweeps.last_values(s, ids)
    names = [p for p in c.params if p in c.swept]
    lacking = [j.id for j, _ in found if any(n not in j.params for n in names)]
    inherited = queries.inherited_params(s, lacking, names) if lacking and names else {}
    figures = []
    for job, image in found:
        up = {n: v for n, v in inherited.get(job.id, {}).items() if n not in job.params}
        own = {n: job.params[n] for n in names if n in job.params}
        figures.append(Figure(job, image, {**own, **up}, set(up), without_resources(finals.get(job.id, {}))))
    return {"name": name, "kind": kind, "figures": figures, "total": total, "offset": offset, "page": page,
            "pages": max(1, -(-total // GALLERY_PER_PAGE)), "sort_metric": sort_metric, "desc": desc,
            "offered": offered}
