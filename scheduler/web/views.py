"""What the dashboard's pages show, apart from the routes: template filters, links that keep a page's query, a
job's metric curves, the chart of a comparison (a sweep's views: ``sweep``). Kinds are told apart only by their
hints in ``core.kinds``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from core.kinds import KINDS
from scheduler.resources import RESOURCE_METRICS
from scheduler.web import charts
from storage.records import Job, Metric


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def when(t: datetime | None) -> str:
    """A stored time (UTC; SQLite keeps it without a zone) to the second."""
    return _utc(t).strftime("%Y-%m-%d %H:%M:%S") if t else "—"


def age(t: datetime) -> str:
    """How long ago ``t`` was, by this machine's clock."""
    return seconds(max(0.0, (datetime.now(timezone.utc) - _utc(t)).total_seconds()))


def seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def run_time(job: Job) -> float | None:
    """Seconds from start to finish, or so far while running."""
    if job.started_at is None:
        return None
    end = _utc(job.finished_at) if job.finished_at else datetime.now(timezone.utc)
    return max(0.0, (end - _utc(job.started_at)).total_seconds())


def number(v: Any) -> str:
    return charts.format_number(float(v)) if isinstance(v, (int, float)) and math.isfinite(v) else str(v)


def size(n: int) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def url_with(request: Request, path: str | None = None, **changes: Any) -> str:
    """This page's URL (or ``path``) with its query, but for ``changes``: a value replaces the parameter's (a list:
    one each), None or False removes it, True is ``1``."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for k, v in changes.items():
        for item in v if isinstance(v, (list, tuple)) else [v]:
            if item is not None and item is not False:
                kept.append((k, "1" if item is True else str(item)))
    return (path or request.url.path) + (f"?{urlencode(kept)}" if kept else "")


def value(v: Any) -> str:
    """A parameter's value as written in a spec: text as is, the rest as JSON."""
    return v if isinstance(v, str) else json.dumps(v)


def _group(key: str) -> str:
    """Curves drawn together: ``loss`` with ``val_loss``, ``train_accuracy`` with ``test_accuracy``."""
    for prefix in ("val_", "train_", "test_"):
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix):]
    return key


def metric_charts(job: Job, metrics: Iterable[Metric]) -> list[str]:
    """One SVG chart per group of metrics recorded at steps >= 1 (epochs; the k of a cluster sweep)."""
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for m in metrics:
        if m.step >= 1:
            groups.setdefault(_group(m.key), {}).setdefault(m.key, []).append((float(m.step), m.value))
    x_label = KINDS[job.kind].x_axis if job.kind in KINDS else "step"
    out = []
    for name in sorted(groups):
        series = dict(sorted(groups[name].items(), key=lambda kv: (kv[0] != name, kv[0])))
        steps = sorted({x for points in series.values() for x, _ in points})
        # steps are whole numbers: label the steps themselves, or whole round values when there are many
        ticks = steps if len(steps) <= 12 else [t for t in charts.nice_ticks(steps[0], steps[-1]) if t == int(t)]
        out.append(charts.line_chart(series, x_label, name, f"{name} per {x_label}", x_ticks=ticks))
    return out


def gallery_names(job: Job) -> tuple[str, ...]:
    """The image artifacts a job's kind shows in galleries (its scores go with them)."""
    return KINDS[job.kind].gallery if job.kind in KINDS else ()


def default_metric(metrics: list[str]) -> str | None:
    for preferred in ("test_loss", "val_loss", "loss", "fid_cnn", "fid_latent", "test_accuracy", "value"):
        if preferred in metrics:
            return preferred
    own = [m for m in metrics if m not in RESOURCE_METRICS]  # a job's own metric before what it used
    return (own or metrics)[0] if metrics else None


def compare_chart(result: dict[str, Any]) -> str:
    """Best and mean per parameter value: a line over the value when every value is a number, else bars."""
    by, metric, rows = result["by"], result["metric"], result["rows"]
    keys = [r[by] for r in rows]
    title = f"{metric} by {by} ({'higher' if result['higher_is_better'] else 'lower'} is better)"
    # one job per value: best and mean are the same line, so draw it once
    shown = ("best",) if all(r["jobs"] == 1 for r in rows) else ("best", "mean")
    names = {"best": metric if len(shown) == 1 else "best", "mean": "mean"}
    if keys and all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in keys):
        series = {names[c]: [(float(r[by]), r[c]) for r in rows] for c in shown}
        log_x = min(keys) > 0 and max(keys) / min(keys) >= 8
        return charts.line_chart(series, by, metric, title, log_x=log_x, x_ticks=keys if len(keys) <= 12 else None)
    return charts.bar_chart([value(k) for k in keys], {names[c]: [r[c] for r in rows] for c in shown},
                            by, metric, title)
