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

    Classify: ``accuracy`` and ``loss`` (mean cross-entropy). Regress: ``mse``,
    ``mae``, ``naive_mse``, ``naive_mae`` (the "tomorrow = today" predictor)
    and ``mse_ratio`` = mse / naive_mse (below 1 means the model beats naive).
    """
    X, y = dataset.X_test, dataset.y_test
    if spec.head == "classify":
        loss, _ = loss_and_grad(spec, params, X, y)
        return {"accuracy": accuracy(spec, params, X, y), "loss": loss}
    pred = predict(spec, params, X).astype(np.float64)
    resid = pred - np.asarray(y, dtype=np.float64)
    mse = float(np.mean(resid**2))
    naive = naive_baseline_error(dataset)
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(resid))),
        "naive_mse": naive,
        "naive_mae": naive_baseline_mae(dataset),
        "mse_ratio": mse / naive if naive > 0.0 else float("inf"),
    }
