"""Policy figures for reports and dashboards: accuracy, loss, regression error.

These use numpy with BLAS and are never consensus (DESIGN.md); the chain's
own validation loss, if any, is computed elsewhere in fixed order.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ml.datasets import Dataset, naive_baseline_error, naive_baseline_mae
from ml.models import loss_and_grad, predict
from ml.tasks import TaskSpec


def headline(spec: TaskSpec) -> str:
    """The one figure that says how a task is doing: ``accuracy`` (classify), ``r2``
    (a feature-table regression) or ``mse_ratio`` (a price series, against naive)."""
    if spec.head == "classify":
        return "accuracy"
    return "r2" if spec.window == 0 else "mse_ratio"


def headline_label(spec: TaskSpec, figures: dict[str, float]) -> str:
    """The headline figure as a few words for logs and terminals, e.g. ``acc 0.953``."""
    key = headline(spec)
    if key not in figures:
        return "no figures"
    short = {"accuracy": "acc", "r2": "r2", "mse_ratio": "mse/naive"}[key]
    return f"{short} {figures[key]:.3f}"


def accuracy(
    spec: TaskSpec, params: NDArray[np.floating], X: NDArray[np.floating], y: NDArray[np.generic]
) -> float:
    """Fraction of examples whose predicted class equals the label (classify heads)."""
    if spec.head != "classify":
        raise ValueError(f"accuracy needs a classify task; {spec.name!r} is {spec.head}")
    if X.shape[0] == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(predict(spec, params, X) == y))


def evaluate(spec: TaskSpec, params: NDArray[np.floating], dataset: Dataset) -> dict[str, float]:
    """Test-split figures.

    Classify: ``accuracy`` and ``loss`` (mean cross-entropy). A regression on
    a feature table (``window`` 0): ``mse``, ``mae`` and ``r2`` (1 - mse over
    the variance of the test labels: 0 is the mean label, 1 perfect). A
    price series: ``mse``,
    ``mae``, ``naive_mse``, ``naive_mae`` (the "tomorrow = today" predictor)
    and ``mse_ratio`` = mse / naive_mse (below 1 means the model beats naive);
    when the data's best forecast is known (the synthetic stock series), also
    ``optimum_ratio``, that forecast's mse / naive_mse on the same test days,
    the floor ``mse_ratio`` can reach.
    """
    X, y = dataset.X_test, dataset.y_test
    if spec.head == "classify":
        loss, _ = loss_and_grad(spec, params, X, y)
        return {"accuracy": accuracy(spec, params, X, y), "loss": loss}
    pred = predict(spec, params, X).astype(np.float64)
    resid = pred - np.asarray(y, dtype=np.float64)
    mse = float(np.mean(resid**2))
    if spec.window == 0:
        return _table_regression(mse, resid, np.asarray(y, dtype=np.float64))
    naive = naive_baseline_error(dataset)
    figures = {
        "mse": mse,
        "mae": float(np.mean(np.abs(resid))),
        "naive_mse": naive,
        "naive_mae": naive_baseline_mae(dataset),
        "mse_ratio": _ratio(mse, naive),
    }
    if dataset.optimum_test is not None:
        best = float(np.mean((dataset.optimum_test - np.asarray(y, dtype=np.float64)) ** 2))
        figures["optimum_ratio"] = _ratio(best, naive)
    return figures


def _table_regression(
    mse: float, resid: NDArray[np.float64], y: NDArray[np.float64]
) -> dict[str, float]:
    """A feature-table regression has no "tomorrow = today": its baseline is the mean label."""
    spread = float(np.mean((y - np.mean(y)) ** 2))
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(resid))),
        "r2": 1.0 - mse / spread if spread > 0.0 else float("-inf"),
    }


def _ratio(mse: float, naive: float) -> float:
    return mse / naive if naive > 0.0 else float("inf")
