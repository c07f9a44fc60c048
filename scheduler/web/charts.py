"""Server-side SVG charts for the dashboard, in plain Python: no JavaScript, no plotting library, no network.

``line_chart`` draws one polyline per series over numeric x (optionally on a log scale); ``bar_chart`` draws
grouped bars over categories. Both return a standalone ``<svg class="chart">`` string with axes, ticks, a legend
and a ``<title>`` per point for hovering; every piece of text is escaped. Non-finite values are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

# Colours that stay apart for the colour-blind (Okabe-Ito), cycled over the series.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
WIDTH, HEIGHT = 560, 300


@dataclass(frozen=True)
class _Frame:
    """The plot area inside the SVG, in pixels: room on the left for y tick labels, below for x, above for a title."""

    width: int
    height: int
    left: int = 64
    right: int = 16
    top: int = 30
    bottom: int = 46

    @property
    def x0(self) -> float:
        return float(self.left)

    @property
    def x1(self) -> float:
        return float(self.width - self.right)

    @property
    def y0(self) -> float:  # the bottom of the plot area (SVG y grows downwards)
        return float(self.height - self.bottom)

    @property
    def y1(self) -> float:
        return float(self.top)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten apart) covering ``lo``..``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count)
    if not math.isfinite(raw) or raw <= abs(hi) * 1e-12:
        return [lo, hi]  # a span beyond floats, or too thin for round steps
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    n = max(2, math.ceil((hi - first) / step - 1e-9) + 1)
    return [0.0 if abs(first + i * step) < step * 1e-9 else float(f"{first + i * step:.12g}") for i in range(n)]


def format_number(v: float) -> str:
    """A short label: integers without a point, others with 4 significant digits."""
    if v == int(v) and abs(v) < 1e7:
        return str(int(v))
    return f"{v:.4g}"


def _finite(points: Sequence[tuple[float, float]], log_x: bool) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points
            if math.isfinite(x) and math.isfinite(y) and (not log_x or x > 0)]


def _header(frame: _Frame, title: str, kind: str) -> list[str]:
    label = escape(title or "chart")
    out = [f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" '
           f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" height="{frame.height}">',
           f"<title>{label}</title>"]
    if title:
        out.append(f'<text class="title" x="{frame.width / 2:.1f}" y="18" text-anchor="middle">{escape(title)}</text>')
    return out


def _axes(frame: _Frame, x_label: str, y_label: str) -> list[str]:
    out = [f'<line class="axis" x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x1}" y2="{frame.y0}" stroke="#444"/>',
           f'<line class="axis" x1="{frame.x0}" y1="{frame.y0}" x2="{frame.x0}" y2="{frame.y1}" stroke="#444"/>']
    if x_label:
        out.append(f'<text class="x-label" x="{(frame.x0 + frame.x1) / 2:.1f}" y="{frame.height - 8}" '
                   f'text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        cy = (frame.y0 + frame.y1) / 2
        out.append(f'<text class="y-label" x="14" y="{cy:.1f}" text-anchor="middle" '
                   f'transform="rotate(-90 14 {cy:.1f})">{escape(y_label)}</text>')
    return out


def _y_ticks(frame: _Frame, ticks: list[float], y_px: Callable[[float], float]) -> list[str]:
    out = []
    for t in ticks:
        y = y_px(t)
        out.append(f'<line class="grid" x1="{frame.x0}" y1="{y:.1f}" x2="{frame.x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text class="tick" x="{frame.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(format_number(t))}</text>")
    return out


def _legend_layout(names: Sequence[str], width: int) -> list[tuple[float, int]]:
    """Where each legend entry goes, (x, row), in the top margin; wrapped at the chart's width. None for one series."""
    if len(names) < 2:
        return []
    out, x, row = [], 64.0, 0
    for name in names:
        span = 28 + 7 * len(name)
        if x + span > width and x > 64:
            x, row = 64.0, row + 1
        out.append((x, row))
        x += span
    return out


def _frame(width: int, height: int, names: Sequence[str]) -> _Frame:
    rows = 1 + max((row for _, row in _legend_layout(names, width)), default=-1)
    return _Frame(width, height, top=30 + 16 * rows)


def _legend(frame: _Frame, names: Sequence[str]) -> list[str]:
    layout = _legend_layout(names, frame.width)
    if not layout:
        return []
    out = ['<g class="legend">']
    for i, (name, (x, row)) in enumerate(zip(names, layout, strict=True)):
        y = 26 + 16 * row
        out.append(f'<rect x="{x:.1f}" y="{y}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 16:.1f}" y="{y + 10}">{escape(name)}</text>')
    out.append("</g>")
    return out


def _empty(frame: _Frame, title: str, kind: str) -> str:
    return "".join(_header(frame, title, kind) + [
        f'<text class="empty" x="{frame.width / 2:.1f}" y="{frame.height / 2:.1f}" text-anchor="middle">'
        "no data</text></svg>"])


def _y_range(values: list[float], zero: bool = False) -> list[float]:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return nice_ticks(lo, hi)


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], x_label: str = "", y_label: str = "",
               title: str = "", *, log_x: bool = False, x_ticks: Sequence[float] | None = None,
               width: int = WIDTH, height: int = HEIGHT) -> str:
    """One polyline (and a dot per point) per series of (x, y) points, sorted by x.

    ``log_x``: a log-scale x axis (points at x <= 0 are left out). ``x_ticks``: the x ticks to label (default:
    round values); e.g. the swept values themselves."""
    data = {name: sorted(_finite(points, log_x)) for name, points in series.items()}
    data = {name: points for name, points in data.items() if points}
    frame = _frame(width, height, list(data))
    if not data:
        return _empty(frame, title, "line")
    xs = [x for points in data.values() for x, _ in points]
    ys = [y for points in data.values() for _, y in points]
    fx = math.log10 if log_x else float
    if x_ticks is not None:
        xt = [float(t) for t in x_ticks if math.isfinite(t) and (not log_x or t > 0)]
    elif log_x:
        xt = [10.0 ** e for e in range(math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs))) + 1)]
    else:
        xt = nice_ticks(min(xs), max(xs))
    x_lo, x_hi = min([fx(x) for x in xs + xt]), max([fx(x) for x in xs + xt])
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    yt = _y_range(ys)
    y_lo, y_hi = yt[0], yt[-1]

    def x_px(x: float) -> float:
        return frame.x0 + (fx(x) - x_lo) / (x_hi - x_lo) * (frame.x1 - frame.x0)

    def y_px(y: float) -> float:
        return frame.y0 - (y - y_lo) / (y_hi - y_lo) * (frame.y0 - frame.y1)

    out = _header(frame, title, "line") + _y_ticks(frame, yt, y_px)
    for t in xt:
        x = x_px(t)
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" y2="{frame.y0 + 5}" stroke="#444"/>'
                   f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 18}" text-anchor="middle">'
                   f"{escape(format_number(t))}</text>")
    out += _axes(frame, x_label, y_label)
    for i, (name, points) in enumerate(data.items()):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x_px(x):.1f},{y_px(y):.1f}" for x, y in points)
        out.append(f'<g class="series" data-series="{escape(name)}">')
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in points:
            out.append(f'<circle cx="{x_px(x):.1f}" cy="{y_px(y):.1f}" r="3" fill="{colour}">'
                       f"<title>{escape(name)}: {escape(format_number(x))} → {escape(format_number(y))}</title>"
                       "</circle>")
        out.append("</g>")
    out += _legend(frame, list(data))
    out.append("</svg>")
    return "".join(out)


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], x_label: str = "",
              y_label: str = "", title: str = "", *, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Grouped bars: for each category, one bar per series (``series[name][i]`` belongs to ``categories[i]``;
    None or a non-finite value leaves its bar out). The y axis always includes 0."""
    frame = _frame(width, height, list(series))
    values = [float(v) for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    if not categories or not values:
        return _empty(frame, title, "bars")
    yt = _y_range(values, zero=True)
    y_lo, y_hi = yt[0], yt[-1]

    def y_px(y: float) -> float:
        return frame.y0 - (y - y_lo) / (y_hi - y_lo) * (frame.y0 - frame.y1)

    out = _header(frame, title, "bars") + _y_ticks(frame, yt, y_px)
    slot = (frame.x1 - frame.x0) / len(categories)
    names = list(series)
    bar = slot * 0.8 / max(1, len(names))
    for c, category in enumerate(categories):
        cx = frame.x0 + slot * (c + 0.5)
        out.append(f'<text class="tick" x="{cx:.1f}" y="{frame.y0 + 18}" text-anchor="middle">'
                   f"{escape(category)}</text>")
        for s, name in enumerate(names):
            v = series[name][c] if c < len(series[name]) else None
            if v is None or not math.isfinite(v):
                continue
            top, base = y_px(max(float(v), 0.0)), y_px(min(float(v), 0.0))
            x, colour = cx - slot * 0.4 + s * bar, PALETTE[s % len(PALETTE)]
            out.append(f'<rect class="bar" data-series="{escape(name)}" x="{x:.1f}" y="{top:.1f}" '
                       f'width="{bar * 0.9:.1f}" height="{max(base - top, 0.5):.1f}" fill="{colour}">'
                       f"<title>{escape(name)}: {escape(category)} → {escape(format_number(float(v)))}</title></rect>")
    out += _axes(frame, x_label, y_label)
    out += _legend(frame, names)
    out.append("</svg>")
    return "".join(out)
