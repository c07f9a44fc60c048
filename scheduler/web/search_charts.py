"""A search's charts, server-side SVG like ``charts``: parallel coordinates of the searched space against the
metric (one polyline per trial, coloured by its value; pruned and failed trials grey), and the best value so far
against the epochs spent (``charts.line_chart``)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any

from core.kinds.search import Dimension
from scheduler.search_report import SearchReport
from scheduler.web import charts

WIDTH, HEIGHT = 720, 320
TOP, BOTTOM, SIDE = 40, 40, 70


def _position(dim: Dimension, value: Any) -> float | None:
    """Where ``value`` sits on its axis, 0 (bottom) .. 1 (top)."""
    if dim.type == "choice":
        keys = [json.dumps(c, sort_keys=True) for c in dim.choices]
        key = json.dumps(value, sort_keys=True)
        if key not in keys:
            return None
        return 0.5 if len(keys) == 1 else keys.index(key) / (len(keys) - 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    lo, hi, v = dim.low, dim.high, float(value)
    if dim.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, dim.low))
    return 0.5 if hi == lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))


def _labels(dim: Dimension) -> list[tuple[float, str]]:
    if dim.type == "choice":
        n = len(dim.choices)
        return [(0.5 if n == 1 else i / (n - 1), "-".join(map(str, c)) if isinstance(c, list) else str(c))
                for i, c in enumerate(dim.choices)]
    return [(0.0, charts.format_number(dim.low)), (1.0, charts.format_number(dim.high))]


def _colour(t: float) -> str:
    """Good (t = 0) blue to bad (t = 1) orange."""
    a, b = (0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


def parallel_coordinates(r: SearchReport) -> str:
    """One axis per searched parameter and one for the metric; one polyline per trial."""
    dims = list(r.config.dimensions().values())
    metric = r.config.metric
    title = f"{len(r.trials)} trials: the space against {metric}"
    axes = len(dims) + 1
    step = (WIDTH - 2 * SIDE) / max(1, axes - 1)
    xs = [SIDE + i * step for i in range(axes)]
    y0, y1 = HEIGHT - BOTTOM, TOP

    def y(pos: float) -> float:
        return y0 - pos * (y0 - y1)

    values = [t.value if t.value is not None else t.last for t in r.trials]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    out = [f'<svg class="chart parallel" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>",
           f'<text class="title" x="{WIDTH / 2:.1f}" y="16" text-anchor="middle">{escape(title)}</text>']
    lines = []
    for t, v in zip(r.trials, values, strict=True):
        points = [_position(d, t.values.get(d.name)) for d in dims]
        if v is None or not math.isfinite(v) or any(p is None for p in points):
            continue
        m = 0.5 if hi == lo else (v - lo) / (hi - lo)
        place = [*(p for p in points if p is not None), (1 - m) if not r.config.maximize else m]
        good = 1 - place[-1]
        colour = _colour(good) if t.state == "complete" else "#b0b0b0"
        path = " ".join(f"{x:.1f},{y(p):.1f}" for x, p in zip(xs, place, strict=True))
        label = f"trial {t.number}: {t.state}, {metric} {v:.4g}; " + ", ".join(
            f"{d.name}={_short(t.values.get(d.name))}" for d in dims)
        dash = "" if t.state == "complete" else ' stroke-dasharray="4 3"'
        lines.append((t.state == "complete", f'<polyline class="trial trial-{escape(t.state)}" fill="none" '
                      f'stroke="{colour}" stroke-width="1.6" stroke-opacity="0.85"{dash} points="{path}">'
                      f"<title>{escape(label)}</title></polyline>"))
    out += [svg for _, svg in sorted(lines, key=lambda x: x[0])]  # the complete trials drawn on top
    names = [d.name for d in dims] + [metric]
    for i, (x, name) in enumerate(zip(xs, names, strict=True)):
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y0}" stroke="#444"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 18}" text-anchor="middle">{escape(name)}</text>')
        ticks = _labels(dims[i]) if i < len(dims) else _metric_ticks(lo, hi, r.config.maximize)
        for at, text in ticks:
            out.append(f'<text class="tick" x="{x - 4:.1f}" y="{y(at) + 4:.1f}" text-anchor="end">{escape(text)}'
                       "</text>")
    out.append("</svg>")
    return "\n".join(out)


def _metric_ticks(lo: float, hi: float, maximize: bool) -> list[tuple[float, str]]:
    """The metric's axis: the best value at the top."""
    top, bottom = (hi, lo) if maximize else (lo, hi)
    return [(1.0, charts.format_number(top)), (0.0, charts.format_number(bottom))]


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-".join(map(str, v)) if isinstance(v, list) else str(v)


def best_so_far(r: SearchReport) -> str:
    """The best value so far against the epochs all trials had trained when each complete trial ended."""
    points: Sequence[tuple[float, float]] = [(float(p.steps), p.best) for p in r.best_so_far]
    return charts.line_chart({f"best {r.config.metric}": points}, "epochs spent", r.config.metric,
                             f"best {r.config.metric} so far")


def importance(r: SearchReport) -> str:
    names = sorted(r.importance, key=lambda k: -r.importance[k])
    return charts.bar_chart(names, {"importance": [r.importance[n] for n in names]}, "parameter", "importance",
                            "parameter importance (Optuna, fANOVA)")
