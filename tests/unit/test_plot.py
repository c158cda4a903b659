"""The dashboard's plotter as geometry: where points land for empty, one-point and long series.

node/api/plot.py builds a Figure of numbers; these tests read those numbers
(and parse the SVG the template draws from them) instead of matching markup.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from node.api import plot
from node.api.dashboard_render import render_figure

SVG = "{http://www.w3.org/2000/svg}"
LEFT_X, RIGHT_X = plot.PAD_LEFT, plot.PLOT_W - plot.PAD_RIGHT
TOP_Y, BOTTOM_Y = plot.PAD_TOP, plot.PLOT_H - plot.PAD_BOTTOM


def line(figure: plot.Figure, label: str) -> plot.Line:
    [found] = [ln for ln in figure.lines if ln.label == label]
    return found


def classify(heights: range | list[int], accuracy: float = 0.5, loss: float = 1.0) -> dict[int, dict[str, float]]:
    return {h: {"accuracy": accuracy, "loss": loss} for h in heights}


def parsed(figure: plot.Figure) -> ET.Element:
    """The figure drawn by its template, parsed as XML (fails on malformed SVG)."""
    return ET.fromstring(render_figure(figure))


def test_an_empty_history_draws_axes_no_points_and_says_it_waits() -> None:
    figure = plot.history_figure({}, {}, "classify", 0)
    assert [ln.points for ln in figure.lines] == [(), ()]
    assert figure.message is not None and "waiting for the first evaluation" in figure.message.text
    assert figure.grid and figure.ticks, "the frame is drawn even without data"
    svg = parsed(figure)
    assert svg.tag == f"{SVG}svg" and svg.find(f"{SVG}circle") is None


def test_one_point_sits_in_the_middle_of_a_widened_x_axis_with_a_dot() -> None:
    figure = plot.history_figure(classify([3], accuracy=1.0, loss=0.0), {}, "classify", 3)
    accuracy = line(figure, "accuracy")
    [(x, y)] = accuracy.points
    assert x == pytest.approx((LEFT_X + RIGHT_X) / 2) and y == pytest.approx(TOP_Y)
    assert len(accuracy.dots) == 1 and accuracy.dots[0].title == "accuracy at 3: 1"
    loss = line(figure, "loss")
    assert loss.points[0][1] == pytest.approx(BOTTOM_Y), "a loss of 0 sits on the x axis"
    assert [t.text for t in figure.ticks if t.anchor == "middle"] == ["2", "3", "4"], "x widened to 2..4"
    assert figure.message is None
    assert len(parsed(figure).findall(f"{SVG}circle")) == 2


def test_many_points_are_thinned_to_the_plot_width_and_span_the_axis() -> None:
    figure = plot.history_figure(classify(range(5000)), {}, "classify", 4999)
    accuracy = line(figure, "accuracy")
    assert len(accuracy.points) == plot.MAX_PLOT_POINTS
    xs = [x for x, _ in accuracy.points]
    assert xs == sorted(xs) and len(set(xs)) == len(xs), "left to right, one point per x"
    assert xs[0] == pytest.approx(LEFT_X) and xs[-1] == pytest.approx(RIGHT_X)
    assert accuracy.dots == (), "a long series gets no dot per point"
    assert len(parsed(figure).findall(f"{SVG}polyline")) == 2


def test_a_missing_figure_leaves_its_point_out_of_the_line() -> None:
    history = classify(range(1, 6))
    del history[3]["loss"]
    figure = plot.history_figure(history, {}, "classify", 5)
    assert len(line(figure, "accuracy").points) == 5
    assert len(line(figure, "loss").points) == 4 and len(line(figure, "loss").dots) == 4


def test_the_right_axis_labels_the_left_axis_grid_lines_at_its_own_scale() -> None:
    figure = plot.history_figure(classify(range(1, 4), loss=2.0), {}, "classify", 3)
    left = [t for t in figure.ticks if t.anchor == "end"]
    right = [t for t in figure.ticks if t.anchor == "start"]
    assert [t.text for t in left] == ["0%", "25%", "50%", "75%", "100%"]
    assert [t.text for t in right] == ["0", "0.5", "1", "1.5", "2"]
    assert [t.y for t in left] == [t.y for t in right]
    assert line(figure, "loss").points[0][1] == pytest.approx(TOP_Y), "the largest loss at the top"


def test_rejections_outside_the_history_widen_the_axis_and_old_ones_merge() -> None:
    figure = plot.history_figure(classify(range(50, 60)), {10: 1, 55: 2, 56: 0}, "classify", 59)
    assert [(m.height, m.count) for m in figure.marks] == [(10, 1), (55, 2)]
    assert figure.marks[0].x == pytest.approx(LEFT_X), "the oldest rejection starts the axis"
    assert figure.legend[-1].shape == "triangle"
    many = plot.history_figure(classify(range(1000)), dict.fromkeys(range(1000), 1), "classify", 999)
    assert len(many.marks) == plot.MAX_DETAILED_MARKS
    assert len(many.older_marks) == 1000 - plot.MAX_DETAILED_MARKS
    assert many.marks[-1].height == 999


def test_regress_plots_mse_against_the_naive_baseline_on_one_axis() -> None:
    history = {h: {"mse": 1.0, "naive_mse": 2.0} for h in range(1, 4)}
    figure = plot.history_figure(history, {}, "regress", 3)
    assert [ln.label for ln in figure.lines] == ["naive MSE (tomorrow = today)", "test MSE"]
    assert line(figure, "naive MSE (tomorrow = today)").dashed
    assert line(figure, "test MSE").points[0][1] == pytest.approx((TOP_Y + BOTTOM_Y) / 2)
    assert not [t for t in figure.ticks if t.anchor == "start"], "no right axis"


def test_the_legend_keys_do_not_overlap() -> None:
    figure = plot.history_figure(classify(range(3)), {1: 1}, "classify", 2)
    keys = figure.legend
    assert [k.label for k in keys] == ["accuracy", "loss", "rejected update(s)"]
    for key, following in zip(keys, keys[1:], strict=False):
        assert key.x < key.swatch_end < key.text_x < following.x


@pytest.mark.parametrize("days", [0, 1, 120])
def test_the_prediction_plot_is_symmetric_about_a_zero_line(days: int) -> None:
    actual = [math.sin(i) * 2 for i in range(days)]
    predicted = [math.cos(i) for i in range(days)]
    figure = plot.prediction_figure(actual, predicted)
    assert figure.zero_y == pytest.approx((TOP_Y + BOTTOM_Y) / 2)
    assert len(line(figure, "actual return %").points) == days
    labels = [float(t.text) for t in figure.ticks if t.anchor == "end"]
    assert labels == [-v for v in reversed(labels)], "tick values mirror about zero"
    assert parsed(figure).get("class") == "plot prediction-plot"


def test_nan_and_infinity_never_reach_a_coordinate() -> None:
    history = {1: {"accuracy": math.nan, "loss": math.inf}, 2: {"accuracy": 0.5, "loss": 1.0}}
    figure = plot.history_figure(history, {}, "classify", 2)
    coordinates = [c for ln in figure.lines for point in ln.points for c in point]
    assert coordinates and all(math.isfinite(c) for c in coordinates)
    assert plot.number(math.nan) == plot.number(math.inf) == "—"
