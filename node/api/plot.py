"""The dashboard's plots as geometry: series of numbers in, a :class:`Figure` of shapes out.

No markup is built here. ``templates/figure.svg`` draws a Figure through the
same autoescaping environment as every page, so the plotter can be tested as
numbers (where a point lands, how many are drawn) and a label can never
become markup. Coordinates are SVG user units; the SVG scales to its card.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

MAX_PLOT_POINTS = 600  # about one per pixel column of a plot; more only grows every refresh
MAX_DETAILED_MARKS = 100  # rejection marks drawn with their own tooltip (the newest)
DOT_POINTS_MAX = 80  # series with at most this many points also get a dot per point

PLOT_W, PLOT_H = 760, 260  # a plot in a two-thirds card
WIDE_PLOT_W = 1240  # a plot across the page: wider, not taller, so its text keeps its size
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 56, 34, 30
Y_TICKS = 5
X_TICKS = 7
TICK_SLACK = 1e-9  # relative tolerance when comparing tick values with a range's ends
TICK_GAP = 6  # between an axis and its tick labels
X_TICK_DROP = 16  # x tick labels sit this far below the x axis
LEGEND_SWATCH_W, LEGEND_CHAR_W = 18, 7  # a legend line's length; the width of a label character (estimate)
LEGEND_TEXT_GAP = 6  # between a legend swatch and its label
TRIANGLE_W = 12  # the legend's rejection triangle (figure.svg draws it this wide)


@dataclass(frozen=True)
class Palette:
    """Every colour the plots use, in one place (the templates read it too)."""

    accuracy: str = "#2563eb"
    loss: str = "#f59e0b"
    naive: str = "#6b7280"
    actual: str = "#9ca3af"
    reject: str = "#dc2626"
    grid: str = "#e5e7eb"
    axis_text: str = "#6b7280"
    axis_line: str = "#9ca3af"
    legend_text: str = "#374151"


PALETTE = Palette()


# -- scales -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """A linear map from data values [lo, hi] to pixels [p0, p1]."""

    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        frac = (value - self.lo) / span if span else 0.5
        return self.p0 + frac * (self.p1 - self.p0)


def nice_ticks(lo: float, hi: float, count: int = Y_TICKS) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + TICK_SLACK) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * TICK_SLACK:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def thin(values: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` evenly spaced items of ``values``, always keeping the first and last."""
    n = len(values)
    if n <= limit:
        return list(values)
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [values[i] for i in picks]


def _inside(ticks: Iterable[float], axis: Axis) -> list[float]:
    """The ticks an axis can draw: those within its data range."""
    slack = (axis.hi - axis.lo) * TICK_SLACK
    return [t for t in ticks if axis.lo - slack <= t <= axis.hi + slack]


def _upper_bound(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=1.0)
    return nice_ticks(0.0, top)[-1] if top > 0 else 1.0


def _x_axis(lo: float, hi: float, width: int) -> Axis:
    if hi <= lo:  # one height (or none): centre it in a range of two
        lo, hi = lo - 1, hi + 1
    return Axis(lo, hi, PAD_LEFT, width - PAD_RIGHT)


def _y_axis(lo: float, hi: float) -> Axis:
    return Axis(lo, hi, PLOT_H - PAD_BOTTOM, PAD_TOP)


def _x_ticks(lo: float, hi: float) -> list[float]:
    ticks = [t for t in nice_ticks(lo, hi, X_TICKS) if lo <= t <= hi and float(t).is_integer()]
    return ticks or [lo]


def tick_label(value: float, percent: bool = False) -> str:
    return f"{value * 100:.0f}%" if percent else f"{value:.3g}"


def x_label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def number(value: float, digits: int = 4) -> str:
    """A figure for people: four significant digits, a dash for NaN or infinity."""
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


# -- what a figure is made of -----------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    """A label at (x, y); ``anchor`` is SVG's text-anchor."""

    x: float
    y: float
    text: str
    colour: str
    anchor: Literal["start", "middle", "end"] = "start"
    size: int = 11


@dataclass(frozen=True)
class Dot:
    """A data point drawn as a dot, with its value as a tooltip."""

    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    """One series: a polyline through its finite points (NaN leaves a point out)."""

    label: str
    points: tuple[tuple[float, float], ...]  # pixels
    colour: str
    width: float
    dashed: bool
    dots: tuple[Dot, ...]  # only for short series (DOT_POINTS_MAX)


@dataclass(frozen=True)
class Mark:
    """A height where the aggregation rule rejected updates: a red line and triangle."""

    height: int
    x: float
    count: int


@dataclass(frozen=True)
class Key:
    """A legend entry: a line swatch for a series, a triangle for the rejection marks."""

    x: float  # where the swatch starts
    swatch_end: float
    text_x: float  # where the label starts
    label: str
    colour: str
    shape: Literal["line", "triangle"]
    dashed: bool = False


@dataclass(frozen=True)
class Figure:
    """Everything ``figure.svg`` draws, in paint order: frame, marks, lines, legend, message."""

    css_class: str
    label: str  # the SVG's aria-label
    width: int
    grid: tuple[float, ...]  # y of each horizontal grid line
    ticks: tuple[Text, ...]  # tick labels of both y axes and the x axis
    x_name: Text  # what the x axis counts
    x_end: float  # where the x axis, the grid and the zero line end
    zero_y: float | None = None  # a line at y = 0 (plots with negative values)
    marks: tuple[Mark, ...] = ()
    older_marks: tuple[float, ...] = ()  # x of rejection lines older than the detailed ones
    lines: tuple[Line, ...] = ()
    legend: tuple[Key, ...] = ()
    message: Text | None = None  # said in the middle when there is nothing to draw
    height: int = PLOT_H
    left: float = PAD_LEFT
    top: float = PAD_TOP
    bottom: float = PLOT_H - PAD_BOTTOM


@dataclass(frozen=True)
class Series:
    """Data points of one series and how to draw them."""

    label: str
    points: Sequence[tuple[float, float]]
    colour: str
    axis: Literal["left", "right"] = "left"
    dashed: bool = False
    stroke_width: float = 2.0


# -- building figures -------------------------------------------------------------------------------
def _line(series: Series, x: Axis, y: Axis) -> Line:
    finite = [(px, py) for px, py in series.points if math.isfinite(py)]
    dots: tuple[Dot, ...] = ()
    if len(series.points) <= DOT_POINTS_MAX:
        dots = tuple(Dot(x(px), y(py), f"{series.label} at {x_label(px)}: {number(py)}") for px, py in finite)
    return Line(
        series.label, tuple((x(px), y(py)) for px, py in finite), series.colour, series.stroke_width, series.dashed,
        dots,
    )


def _legend(series: Sequence[Series], with_marks: bool) -> tuple[Key, ...]:
    keys, cursor = [], float(PAD_LEFT)
    for s in series:
        end = cursor + LEGEND_SWATCH_W
        keys.append(Key(cursor, end, end + LEGEND_TEXT_GAP, s.label, s.colour, "line", s.dashed))
        cursor += 2 * LEGEND_SWATCH_W + LEGEND_CHAR_W * len(s.label)
    if with_marks:
        end = cursor + TRIANGLE_W
        keys.append(Key(cursor, end, end + LEGEND_TEXT_GAP, "rejected update(s)", PALETTE.reject, "triangle"))
    return tuple(keys)


def _ticks(
    x: Axis, left: Axis, right: Axis | None, left_percent: bool, colours: tuple[str, str]
) -> tuple[tuple[float, ...], tuple[Text, ...]]:
    """Grid lines and tick labels of a plot.

    A right axis labels the same grid lines as the left one (its values at
    those heights), so every line reads on both scales; ``colours`` tints each
    side's labels like its series.
    """
    left_ticks = _inside(nice_ticks(left.lo, left.hi), left)
    labels = [Text(PAD_LEFT - TICK_GAP, left(t) + 4, tick_label(t, left_percent), colours[0], "end")
              for t in left_ticks]
    if right is not None:
        for t in left_ticks:
            frac = (t - left.lo) / (left.hi - left.lo) if left.hi > left.lo else 0.0
            value = right.lo + frac * (right.hi - right.lo)
            labels.append(Text(x.p1 + TICK_GAP, left(t) + 4, tick_label(value), colours[1]))
    below = PLOT_H - PAD_BOTTOM + X_TICK_DROP
    labels += [Text(x(t), below, x_label(t), PALETTE.axis_text, "middle") for t in _x_ticks(x.lo, x.hi)]
    return tuple(left(t) for t in left_ticks), tuple(labels)


def _marks(rejected: Mapping[int, int], x: Axis) -> tuple[tuple[Mark, ...], tuple[float, ...]]:
    """A mark per height in range where the rule rejected updates.

    The newest :data:`MAX_DETAILED_MARKS` are drawn one by one with a tooltip;
    older ones are returned as bare x positions and drawn as one path, so a
    long attack cannot bloat every refresh.
    """
    marked = [(h, c) for h, c in sorted(rejected.items()) if c > 0 and x.lo <= h <= x.hi]
    older, detailed = marked[:-MAX_DETAILED_MARKS], marked[-MAX_DETAILED_MARKS:]
    return tuple(Mark(h, x(h), c) for h, c in detailed), tuple(x(h) for h, _ in older)


def history_figure(
    history: Mapping[int, Mapping[str, float]],
    rejected: Mapping[int, int],
    head: str,
    tip: int,
    width: int = PLOT_W,
) -> Figure:
    """Model quality per height, with the heights where the rule rejected updates marked.

    Classify: accuracy (left axis, percent) and loss (right axis). Regress:
    test MSE against the "tomorrow = today" baseline, one axis. The x axis runs
    from the oldest evaluated height (or rejection) to the tip.
    """
    heights = thin(sorted(history), MAX_PLOT_POINTS)
    lo = float(min(heights[0] if heights else tip, min(rejected, default=tip)))
    x = _x_axis(lo, float(max(tip, heights[-1] if heights else tip)), width)
    right: Axis | None
    if head == "classify":
        series = [
            Series("accuracy", [(h, history[h].get("accuracy", math.nan)) for h in heights], PALETTE.accuracy),
            Series("loss", [(h, history[h].get("loss", math.nan)) for h in heights], PALETTE.loss, "right"),
        ]
        left = _y_axis(0.0, 1.0)
        right = _y_axis(0.0, _upper_bound(v for _, v in series[1].points))
        grid, ticks = _ticks(x, left, right, True, (PALETTE.accuracy, PALETTE.loss))
    else:
        naive = [(h, history[h].get("naive_mse", math.nan)) for h in heights]
        mse = [(h, history[h].get("mse", math.nan)) for h in heights]
        series = [
            Series("naive MSE (tomorrow = today)", naive, PALETTE.naive, dashed=True),
            Series("test MSE", mse, PALETTE.accuracy),
        ]
        if any("optimum_ratio" in history[h] for h in heights):  # a series whose best forecast is known
            best = [(h, history[h].get("optimum_ratio", math.nan) * history[h].get("naive_mse", math.nan))
                    for h in heights]
            series.append(Series("best possible MSE", best, PALETTE.axis_text, dashed=True))
        left = _y_axis(0.0, _upper_bound(v for _, v in mse + naive))
        right = None
        grid, ticks = _ticks(x, left, None, False, (PALETTE.axis_text, PALETTE.axis_text))
    axes = {"left": left, "right": right or left}
    marks, older = _marks(rejected, x)
    message = None
    if not heights:
        message = Text(width / 2, PLOT_H / 2, "waiting for the first evaluation of the model…", PALETTE.axis_text,
                       "middle", 13)
    return Figure(
        css_class="plot history-plot",
        label="model quality per height",
        width=width,
        grid=grid,
        ticks=ticks,
        x_name=Text(x.p1, PLOT_H - 2, "height", PALETTE.axis_text, "end"),
        x_end=x.p1,
        marks=marks,
        older_marks=older,
        lines=tuple(_line(s, x, axes[s.axis]) for s in series),
        legend=_legend(series, any(c > 0 for c in rejected.values())),
        message=message,
    )


def prediction_figure(actual: Sequence[float], predicted: Sequence[float], width: int = WIDE_PLOT_W) -> Figure:
    """Predicted against actual values per test day, on one axis symmetric about zero."""
    n = len(actual)
    x = _x_axis(0.0, float(max(1, n - 1)), width)
    top = _upper_bound(abs(v) for v in [*actual, *predicted] if math.isfinite(v))
    y = _y_axis(-top, top)
    series = [
        Series("actual return %", [(float(i), v) for i, v in enumerate(actual)], PALETTE.actual, stroke_width=1.5),
        Series("predicted return %", [(float(i), v) for i, v in enumerate(predicted)], PALETTE.accuracy),
    ]
    grid, ticks = _ticks(x, y, None, False, (PALETTE.axis_text, PALETTE.axis_text))
    return Figure(
        css_class="plot prediction-plot",
        label="predicted against actual returns",
        width=width,
        grid=grid,
        ticks=ticks,
        x_name=Text(x.p1, PLOT_H - 2, "test day", PALETTE.axis_text, "end"),
        x_end=x.p1,
        zero_y=y(0.0),
        lines=tuple(_line(s, x, y) for s in series),
        legend=_legend(series, False),
    )
