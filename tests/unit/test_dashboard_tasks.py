"""The dashboard's task list and the figures of the tasks issue 19 adds (a table
regression's R², a price series against its best possible forecast)."""

from __future__ import annotations

from node.api import dashboard_render as render
from node.api import dashboard_views as views
from node.api import plot
from tests.unit.test_dashboard_render import page, section, status

TASK_ID = "5f" * 32


def row(**overrides: str) -> views.TaskRow:
    base = {"id": TASK_ID, "name": "wine", "status": "training", "model": "softmax", "head": "classify",
            "inputs": "13 features → 3 classes", "rule": "median f=1", "label": "acc 0.978"}
    return views.TaskRow(**{**base, **overrides})


def test_the_task_list_shows_each_task_with_its_id_and_headline() -> None:
    html = render.render_live(page(tasks=[row(), row(id="a1" * 32, name="stock", label="mse/naive 0.802")]))
    tasks = section(html, "tasks")
    assert f'href="/api/tasks/{TASK_ID}"' in tasks and f'title="{TASK_ID}"' in tasks
    assert "<td>wine</td>" in tasks and "acc 0.978" in tasks and "13 features → 3 classes" in tasks
    assert "<td>stock</td>" in tasks and "mse/naive 0.802" in tasks
    assert "no task" in section(render.render_live(page()), "tasks")


def test_a_table_regression_shows_r2_and_a_price_series_its_best_possible_ratio() -> None:
    table = page(status=status(head="regress"), history={4: {"mse": 2.5, "mae": 1.0, "r2": 0.8125}})
    html = render.render_live(table)
    assert "R² on the evaluation set" in html and "0.812" in html and "MSE 2.5" in html
    series = page(status=status(head="regress"),
                  history={4: {"mse": 0.99, "naive_mse": 1.24, "mse_ratio": 0.80, "optimum_ratio": 0.789}})
    html = render.render_live(series)
    assert "MSE / naive" in html and "best possible 0.789" in html


def test_the_history_plot_draws_the_best_possible_mse_when_it_is_known() -> None:
    history = {h: {"mse": 1.0, "naive_mse": 1.25, "optimum_ratio": 0.8} for h in (1, 2, 3)}
    svg = render.render_figure(plot.history_figure(history, {}, "regress", 3))
    assert 'data-series="best possible MSE"' in svg
    plain = {h: {"mse": 1.0, "naive_mse": 1.25} for h in (1, 2, 3)}
    assert "best possible" not in render.render_figure(plot.history_figure(plain, {}, "regress", 3))
