"""The dashboard's SVG charts: well-formed, escaped, and with points where the values say."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from scheduler.web.charts import bar_chart, format_number, line_chart, nice_ticks

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "chart" in root.attrib["class"].split()
    return root


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in polyline.attrib["points"].split())]


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_line_chart_has_a_polyline_per_series_with_its_points_in_order() -> None:
    root = parse(line_chart({"loss": [(3, 0.4), (1, 0.9), (2, 0.5)], "val_loss": [(1, 0.8), (2, 0.6), (3, 0.55)]},
                            "epoch", "loss", "loss per epoch"))
    lines = root.findall(".//svg:g[@class='series']/svg:polyline", NS)
    assert [g.attrib["data-series"] for g in root.findall(".//svg:g[@class='series']", NS)] == ["loss", "val_loss"]
    loss = points(lines[0])
    assert len(loss) == 3
    assert [x for x, _ in loss] == sorted(x for x, _ in loss)  # sorted by step
    ys = [y for _, y in loss]
    assert ys[0] < ys[1] < ys[2]  # a falling loss goes down the page: SVG y grows as the value shrinks
    width, height = (float(v) for v in root.attrib["viewBox"].split()[2:])
    assert all(0 <= x <= width and 0 <= y <= height for x, y in loss + points(lines[1]))
    labels = texts(root)
    assert {"loss per epoch", "epoch", "loss", "val_loss"} <= set(labels)  # title, axes and the legend
    assert {"1", "2", "3"} <= set(labels)  # x ticks


def test_equal_values_are_at_equal_heights_and_the_extremes_span_the_plot() -> None:
    root = parse(line_chart({"a": [(0, 2.0), (1, 2.0), (2, 5.0)]}))
    (a,) = (points(p) for p in root.findall(".//svg:polyline", NS))
    assert a[0][1] == a[1][1] > a[2][1]
    assert a[0][0] < a[1][0] < a[2][0]
    assert a[2][0] - a[0][0] > 300  # x from the first to the last point spans most of the 560 px


def test_text_is_escaped() -> None:
    nasty = '<script>alert("x")</script> & co'
    svg = line_chart({nasty: [(1, 1.0), (2, 2.0)], "b": [(1, 2.0)]}, x_label=nasty, y_label=nasty, title=nasty)
    assert "<script>" not in svg
    root = parse(svg)
    assert texts(root).count(nasty) == 4  # the title, both axis labels and the legend, read back intact
    assert root.attrib["aria-label"] == nasty


def test_non_finite_values_are_left_out_and_no_data_is_said() -> None:
    root = parse(line_chart({"a": [(1, 1.0), (2, math.nan), (3, math.inf), (4, 2.0)]}))
    (line,) = root.findall(".//svg:polyline", NS)
    assert len(points(line)) == 2
    empty = parse(line_chart({"a": [(1, math.nan)], "b": []}, title="nothing"))
    assert empty.findall(".//svg:polyline", NS) == []
    assert "no data" in texts(empty)
    assert "no data" in texts(parse(bar_chart([], {})))


def test_a_single_point_still_draws() -> None:
    root = parse(line_chart({"a": [(5, 0.25)]}))
    (line,) = root.findall(".//svg:polyline", NS)
    ((x, y),) = points(line)
    assert math.isfinite(x) and math.isfinite(y)


def test_log_x_spaces_doublings_evenly_and_ticks_can_be_the_values() -> None:
    root = parse(line_chart({"m": [(2, 1.0), (4, 1.0), (8, 1.0), (32, 1.0)]}, log_x=True, x_ticks=[2, 4, 8, 32]))
    (line,) = root.findall(".//svg:polyline", NS)
    xs = [x for x, _ in points(line)]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)
    assert xs[3] - xs[2] == pytest.approx(2 * (xs[1] - xs[0]), abs=0.2)
    assert {"2", "4", "8", "32"} <= set(texts(root))


def test_bar_chart_bars_grow_from_zero_in_both_directions() -> None:
    root = parse(bar_chart(["bce", "mse"], {"best": [0.5, -0.25], "mean": [1.0, None]}, "loss", "value", "by loss"))
    bars = {(r.attrib["data-series"], "".join(r.itertext()).split(":")[1].split("→")[0].strip()): r
            for r in root.findall(".//svg:rect[@class='bar']", NS)}
    assert set(bars) == {("best", "bce"), ("best", "mse"), ("mean", "bce")}  # None draws no bar
    top = {k: float(r.attrib["y"]) for k, r in bars.items()}
    bottom = {k: float(r.attrib["y"]) + float(r.attrib["height"]) for k, r in bars.items()}
    zero = bottom[("best", "bce")]
    assert bottom[("mean", "bce")] == pytest.approx(zero)
    assert top[("best", "mse")] == pytest.approx(zero)  # a negative bar hangs below the zero line
    height = {k: float(r.attrib["height"]) for k, r in bars.items()}
    assert height[("mean", "bce")] == pytest.approx(2 * height[("best", "bce")], rel=0.02)
    assert {"bce", "mse", "best", "mean", "by loss"} <= set(texts(root))


@pytest.mark.parametrize("lo, hi", [(0.45, 0.66), (0, 1), (-3, 1e6), (14142.2, 20308.8), (1, 1), (-5, -5),
                                    (1e-9, 3e-9), (0.1, 0.1000001)])
def test_nice_ticks_cover_the_range_with_round_even_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 12
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert all(s > 0 for s in steps)
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert any(mantissa == pytest.approx(m) for m in (1, 2, 2.5, 5, 10))


def test_nice_ticks_survive_extremes() -> None:
    assert nice_ticks(-1e308, 1e308) == [-1e308, 1e308]
    assert nice_ticks(math.nan, 1) == []


@pytest.mark.parametrize("value, text", [(3.0, "3"), (0.06095, "0.06095"), (14142.198, "1.414e+04"), (-2, "-2"),
                                         (1e-5, "1e-05")])
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
