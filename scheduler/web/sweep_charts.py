"""A sweep's charts, server-side SVG like ``charts`` (no JavaScript, no plotting library, no network): learning
curves of many jobs overlaid, a metric against a parameter as a scatter, and parallel coordinates of parameters
against a metric. Each job is a series, a point or a line that links to its page and names itself on hover.

``colour_key`` colours by a value: a few distinct values (or any text) each get a colour of ``charts.PALETTE``
with a swatch in the legend; many numbers get a gradient with its range in the legend (log-scaled when they span
two orders of magnitude or more). Every piece of text is escaped.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from scheduler.web import charts
from scheduler.web.charts import _axes, _Frame, _y_range, _y_ticks, format_number, nice_ticks

NONE_COLOUR = "#9a9a9a"  # a job without the value coloured by
# a sequential gradient that stays readable on white (viridis, its lightest end left out)
GRADIENT = ("#440154", "#3b528b", "#21918c", "#35b779", "#90d743")
WIDE, TALL = 880, 420


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def label(v: Any) -> str:
    """A value as a short label: numbers in 4 digits, lists joined by '-', the rest as text."""
    if v is None:
        return "none"
    if is_number(v):
        return format_number(float(v))
    if isinstance(v, list):
        return "-".join(label(x) for x in v)
    return str(v)


def value_key(v: Any) -> Any:
    """A value as a key: equal for equal values of one type (1 and 1.0 apart, as in a spec), lists included."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return (type(v).__name__, v)
    return ("json", json.dumps(v, sort_keys=True))


def natural(v: Any) -> tuple[int, float, str]:
    """An order for values of any type: numbers by value, then the rest by text, then none."""
    if v is None:
        return (2, 0.0, "")
    return (0, float(v), "") if is_number(v) else (1, 0.0, label(v))


def _mix(t: float) -> str:
    t = min(1.0, max(0.0, t))
    pos = t * (len(GRADIENT) - 1)
    i = min(int(pos), len(GRADIENT) - 2)
    a, b = GRADIENT[i], GRADIENT[i + 1]
    f = pos - i
    return "#" + "".join(f"{round(int(a[k:k + 2], 16) * (1 - f) + int(b[k:k + 2], 16) * f):02x}" for k in (1, 3, 5))


@dataclass(frozen=True)
class ColourKey:
    """Colours for the values of ``name``: ``categories`` (value key → (label, colour)) or, when it is empty, a
    gradient over ``lo``..``hi`` (log-scaled with ``log``)."""

    name: str
    categories: dict[Any, tuple[str, str]] = field(default_factory=dict)
    lo: float = 0.0
    hi: float = 1.0
    log: bool = False
    reverse: bool = False  # the gradient's dark end at ``hi`` (e.g. the best value of a metric to maximise)

    @property
    def gradient(self) -> bool:
        return not self.categories

    def position(self, v: float) -> float:
        lo, hi, v = (math.log10(self.lo), math.log10(self.hi), math.log10(v)) if self.log else (self.lo, self.hi, v)
        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return 1 - t if self.reverse else t

    def colour(self, v: Any) -> str:
        if self.categories:
            found = self.categories.get(value_key(v))
            return found[1] if found else NONE_COLOUR
        if not is_number(v) or (self.log and v <= 0):
            return NONE_COLOUR
        return _mix(self.position(float(v)))


def colour_key(name: str, values: Iterable[Any], most: int = len(charts.PALETTE), reverse: bool = False
               ) -> ColourKey:
    """Categories for at most ``most`` distinct values or any that is not a number (colours cycle beyond the
    palette; none is grey), else a gradient over the numbers."""
    distinct = {value_key(v): v for v in values if v is not None}
    numbers = [float(v) for v in distinct.values() if is_number(v)]
    if len(distinct) > most and len(numbers) == len(distinct):
        lo, hi = min(numbers), max(numbers)
        return ColourKey(name, lo=lo, hi=hi, log=lo > 0 and hi / lo >= 100, reverse=reverse)
    ordered = sorted(distinct.items(), key=lambda kv: natural(kv[1]))
    return ColourKey(name, {k: (label(v), charts.PALETTE[i % len(charts.PALETTE)])
                            for i, (k, v) in enumerate(ordered)})


def _start(key: ColourKey) -> float:
    """Where the swatches begin: after the key's name."""
    return max(64.0, 16.0 + 7 * len(key.name))


def _legend_rows(key: ColourKey | None, width: int) -> int:
    if key is None:
        return 0
    if key.gradient:
        return 1
    start = _start(key)
    x, rows = start, 1
    for text, _ in list(key.categories.values())[:24]:
        span = 28 + 7 * len(text)
        if x + span > width and x > start:
            x, rows = start, rows + 1
        x += span
    return rows


def _legend(key: ColourKey | None, width: int, ident: str) -> list[str]:
    """The key in the top margin: ``name:`` then a swatch per category, or the gradient with its two ends."""
    if key is None:
        return []
    start = _start(key)
    out = ['<g class="legend">', f'<text class="legend-name" x="8" y="36">{escape(key.name)}</text>']
    if key.gradient:
        lo, hi = (key.hi, key.lo) if key.reverse else (key.lo, key.hi)
        out.append(f'<defs><linearGradient id="{ident}" x1="0" x2="1" y1="0" y2="0">'
                   + "".join(f'<stop offset="{i / (len(GRADIENT) - 1):.2f}" stop-color="{c}"/>'
                             for i, c in enumerate(GRADIENT)) + "</linearGradient></defs>")
        left = start + 8 + 7 * len(format_number(lo))
        out.append(f'<text class="tick" x="{left - 4:.1f}" y="36" text-anchor="end">{escape(format_number(lo))}</text>'
                   f'<rect class="gradient" x="{left:.1f}" y="26" width="160" height="12" fill="url(#{ident})"/>'
                   f'<text class="tick" x="{left + 164:.1f}" y="36">{escape(format_number(hi))}'
                   f'{" (log scale)" if key.log else ""}</text>')
    else:
        entries = list(key.categories.values())
        x, row = start, 0
        for text, colour in entries[:24]:
            span = 28 + 7 * len(text)
            if x + span > width and x > start:
                x, row = start, row + 1
            y = 26 + 16 * row
            out.append(f'<rect class="swatch" x="{x:.1f}" y="{y}" width="12" height="12" fill="{colour}"/>'
                       f'<text x="{x + 16:.1f}" y="{y + 10}">{escape(text)}</text>')
            x += span
        if len(entries) > 24:
            out.append(f'<text class="tick" x="{width - 8}" y="{26 + 16 * row + 10}" text-anchor="end">'
                       f"… {len(entries) - 24} more</text>")
    out.append("</g>")
    return out


def _header(width: int, height: int, title: str, kind: str, count: int) -> list[str]:
    text = escape(title)
    return [f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{text}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" data-count="{count}">',
            f"<title>{text}</title>",
            f'<text class="title" x="{width / 2:.1f}" y="18" text-anchor="middle">{text}</text>']


def _ident(title: str) -> str:
    return f"g{zlib.crc32(title.encode()):08x}"


def _empty(width: int, height: int, title: str, kind: str) -> str:
    return "".join(_header(width, height, title, kind, 0) + [
        f'<text class="empty" x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle">no data</text></svg>'])


@dataclass(frozen=True)
class Curve:
    """One job's curve: its points (step, value), colour, hover text and page."""

    points: Sequence[tuple[float, float]]
    colour: str
    text: str
    href: str
    job_id: int


def curves_chart(curves: Sequence[Curve], x_label: str, y_label: str, title: str, key: ColourKey | None = None,
                 *, width: int = WIDE, height: int = TALL) -> str:
    """Every curve as a polyline with a dot at its last point, over whole-number steps."""
    data = [(c, [(float(x), float(y)) for x, y in c.points if math.isfinite(x) and math.isfinite(y)])
            for c in curves]
    data = [(c, sorted(p)) for c, p in data if p]
    if not data:
        return _empty(width, height, title, "curves")
    frame = _Frame(width, height, top=30 + 16 * _legend_rows(key, width))
    xs = [x for _, p in data for x, _ in p]
    ys = [y for _, p in data for _, y in p]
    x_lo, x_hi = min(xs), max(xs)
    xt = [t for t in nice_ticks(x_lo, x_hi) if t == int(t)] if x_hi - x_lo > 12 else \
        [float(t) for t in range(int(x_lo), int(x_hi) + 1)]
    x_lo, x_hi = min([x_lo, *xt]), max([x_hi, *xt])
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    yt = _y_range(ys)

    def x_px(x: float) -> float:
        return frame.x0 + (x - x_lo) / (x_hi - x_lo) * (frame.x1 - frame.x0)

    def y_px(y: float) -> float:
        return frame.y0 - (y - yt[0]) / (yt[-1] - yt[0]) * (frame.y0 - frame.y1)

    out = _header(width, height, title, "curves", len(data)) + _y_ticks(frame, yt, y_px)
    for t in xt:
        out.append(f'<text class="tick" x="{x_px(t):.1f}" y="{frame.y0 + 18}" text-anchor="middle">'
                   f"{escape(format_number(t))}</text>")
    out += _axes(frame, x_label, y_label)
    for c, points in data:
        coords = " ".join(f"{x_px(x):.1f},{y_px(y):.1f}" for x, y in points)
        x, y = points[-1]
        out.append(f'<a href="{escape(c.href)}"><g class="series" data-job-id="{c.job_id}">'
                   f'<polyline points="{coords}" fill="none" stroke="{c.colour}" stroke-width="1.5" '
                   f'stroke-opacity="0.8"><title>{escape(c.text)}</title></polyline>'
                   f'<circle cx="{x_px(x):.1f}" cy="{y_px(y):.1f}" r="3" fill="{c.colour}">'
                   f"<title>{escape(c.text)}</title></circle></g></a>")
    out += _legend(key, width, _ident(title))
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Point:
    """One job in a scatter: x (a number, or a category's label), y, colour, hover text, page."""

    x: Any
    y: float
    colour: str
    text: str
    href: str
    job_id: int


def _jitter(job_id: int) -> float:
    """-1..1, the same for a job every time: points of one category spread out without randomness."""
    return (zlib.crc32(str(job_id).encode()) % 2001) / 1000 - 1


def scatter_chart(points: Sequence[Point], x_label: str, y_label: str, title: str, key: ColourKey | None = None,
                  *, categories: Sequence[str] | None = None, log_x: bool = False, width: int = WIDE,
                  height: int = TALL) -> str:
    """A dot per point: over numeric x (log-scaled with ``log_x``), or over ``categories`` (x is one of them),
    spread sideways within its category."""
    shown = [p for p in points if math.isfinite(p.y) and (
        p.x in categories if categories is not None else is_number(p.x) and (not log_x or p.x > 0))]
    if not shown:
        return _empty(width, height, title, "scatter")
    frame = _Frame(width, height, top=30 + 16 * _legend_rows(key, width))
    yt = _y_range([p.y for p in shown])

    def y_px(y: float) -> float:
        return frame.y0 - (y - yt[0]) / (yt[-1] - yt[0]) * (frame.y0 - frame.y1)

    out = _header(width, height, title, "scatter", len(shown)) + _y_ticks(frame, yt, y_px)
    if categories is not None:
        slot = (frame.x1 - frame.x0) / max(1, len(categories))
        where = {c: frame.x0 + slot * (i + 0.5) for i, c in enumerate(categories)}
        for c, x in where.items():
            out.append(f'<text class="tick" x="{x:.1f}" y="{frame.y0 + 18}" text-anchor="middle">{escape(c)}</text>')

        def x_of(p: Point) -> float:
            return where[p.x] + _jitter(p.job_id) * slot * 0.3
    else:
        fx = math.log10 if log_x else float
        xs = [float(p.x) for p in shown]
        if log_x:
            xt = [10.0 ** e for e in range(math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs))) + 1)]
        else:
            distinct = sorted(set(xs))
            xt = distinct if len(distinct) <= 12 else nice_ticks(min(xs), max(xs))
        lo, hi = min(fx(x) for x in xs + xt), max(fx(x) for x in xs + xt)
        lo, hi = (lo - 1, hi + 1) if hi == lo else (lo - (hi - lo) * 0.03, hi + (hi - lo) * 0.03)

        def x_num(x: float) -> float:
            return frame.x0 + (fx(x) - lo) / (hi - lo) * (frame.x1 - frame.x0)

        for t in xt:
            out.append(f'<text class="tick" x="{x_num(t):.1f}" y="{frame.y0 + 18}" text-anchor="middle">'
                       f"{escape(format_number(t))}</text>")

        def x_of(p: Point) -> float:
            return x_num(float(p.x))
    out += _axes(frame, x_label + (" (log scale)" if log_x else ""), y_label)
    out.append('<g class="points" fill-opacity="0.75">')
    for p in shown:
        out.append(f'<a href="{escape(p.href)}"><circle cx="{x_of(p):.1f}" cy="{y_px(p.y):.1f}" r="4" '
                   f'fill="{p.colour}"><title>{escape(p.text)}</title></circle></a>')
    out.append("</g>")
    out += _legend(key, width, _ident(title))
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Axis:
    """A vertical axis of parallel coordinates: numbers (from ``lo`` to ``hi``, log-scaled with ``log``) or
    ``categories`` (value key → label), evenly spaced. ``flip``: the highest value at the bottom."""

    name: str
    lo: float = 0.0
    hi: float = 1.0
    log: bool = False
    categories: dict[Any, str] = field(default_factory=dict)
    flip: bool = False

    def position(self, v: Any) -> float | None:
        """Where ``v`` sits, 0 (bottom) .. 1 (top); None if it has no place on this axis."""
        if self.categories:
            keys = list(self.categories)
            k = value_key(v)
            if k not in self.categories:
                return None
            t = 0.5 if len(keys) == 1 else keys.index(k) / (len(keys) - 1)
        else:
            if not is_number(v) or (self.log and v <= 0):
                return None
            lo, hi, x = (math.log10(self.lo), math.log10(self.hi), math.log10(v)) if self.log else \
                (self.lo, self.hi, float(v))
            t = 0.5 if hi == lo else (x - lo) / (hi - lo)
        return 1 - t if self.flip else t

    def ticks(self) -> list[tuple[float, str]]:
        if self.categories:
            n = len(self.categories)
            shown = list(self.categories.values())
            every = max(1, math.ceil(n / 12))  # at most about a dozen labels on an axis
            return [((0.5 if n == 1 else i / (n - 1)), text) for i, text in enumerate(shown) if i % every == 0
                    or i == n - 1]
        return [(0.0 if not self.flip else 1.0, format_number(self.lo)),
                (1.0 if not self.flip else 0.0, format_number(self.hi))]


def axis(name: str, values: Iterable[Any], flip: bool = False) -> Axis:
    """Numbers on a linear axis (log when positive over two orders of magnitude or more); anything else, or a
    mix, as categories in natural order."""
    distinct = {value_key(v): v for v in values if v is not None}
    numbers = [float(v) for v in distinct.values() if is_number(v)]
    if distinct and len(numbers) == len(distinct) and len(distinct) > 1:
        lo, hi = min(numbers), max(numbers)
        return Axis(name, lo, hi, lo > 0 and hi / lo >= 100, flip=flip)
    ordered = sorted(distinct.items(), key=lambda kv: natural(kv[1]))
    return Axis(name, categories={k: label(v) for k, v in ordered}, flip=flip)


@dataclass(frozen=True)
class Line:
    """One job across the axes: its values (one per axis), colour, hover text and page."""

    values: Sequence[Any]
    colour: str
    text: str
    href: str
    job_id: int


def parallel_chart(axes: Sequence[Axis], lines: Sequence[Line], title: str, key: ColourKey | None = None, *,
                   width: int = WIDE, height: int = TALL) -> str:
    """One vertical axis each, one polyline per line across them; a line with a value that has no place on its
    axis is left out (the count drawn is in ``data-count``)."""
    top = 30 + 16 * _legend_rows(key, width) + 10
    bottom, side = 40, 80
    step = (width - 2 * side) / max(1, len(axes) - 1)
    xs = [side + i * step for i in range(len(axes))] if len(axes) > 1 else [width / 2]
    y0, y1 = height - bottom, top

    def y(t: float) -> float:
        return y0 - t * (y0 - y1)

    drawn = []
    for line in lines:
        place = [a.position(v) for a, v in zip(axes, line.values, strict=True)]
        if any(p is None for p in place):
            continue
        coords = " ".join(f"{x:.1f},{y(p):.1f}" for x, p in zip(xs, place, strict=True) if p is not None)
        drawn.append(f'<a href="{escape(line.href)}"><polyline points="{coords}" stroke="{line.colour}">'
                     f"<title>{escape(line.text)}</title></polyline></a>")
    if not drawn:
        return _empty(width, height, title, "parallel")
    out = _header(width, height, title, "parallel", len(drawn))
    out += ['<g class="lines" fill="none" stroke-width="1.3" stroke-opacity="0.7">', *drawn, "</g>"]
    for x, a in zip(xs, axes, strict=True):
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y0}" stroke="#444"/>'
                   f'<text class="axis-name" x="{x:.1f}" y="{y0 + 20}" text-anchor="middle">{escape(a.name)}'
                   f'{" (log)" if a.log else ""}</text>')
        for at, text in a.ticks():
            out.append(f'<text class="tick" x="{x - 5:.1f}" y="{y(at) + 4:.1f}" text-anchor="end">{escape(text)}'
                       "</text>")
    out += _legend(key, width, _ident(title))
    out.append("</svg>")
    return "".join(out)
