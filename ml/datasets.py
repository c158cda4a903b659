"""The data behind the built-in tasks, with the one train/test split everyone uses.

``digits``
    sklearn's shipped copy of the 8x8 handwritten digits (no download), pixels
    scaled to [0, 1] by dividing by 16, split with
    ``train_test_split(test_size=0.25, stratify=y, random_state=0)``. Every
    part of the project (trainer, simulator, benchmarks, dashboard) uses this
    split so accuracy figures are comparable.

``stock``
    A daily closing-price series: by default synthetic, generated from
    ``spec.data_seed`` so it runs offline and every node sees the same series;
    or the user's own ``date,close`` CSV text, used as it is. One example is
    the ``spec.window`` most recent daily returns (in percent); its target is
    the next day's return in percent. The split is chronological (first 75 %
    train, last 25 % test) so no test day ever informs training (no
    look-ahead).

    The synthetic series has structure a model can learn and whose optimum
    is known in closed form: daily returns follow an AR(1) process,
    ``r_t = AR_PHI * r_{t-1} + AR_SIGMA_PERCENT * e_t`` with ``e_t`` standard
    normal (mean zero), and ``close_t = close_{t-1} * (1 + r_t / 100)``. The
    naive forecast "tomorrow = today" predicts a zero return, so its mean
    squared error is the variance of the returns, ``sigma^2 / (1 - phi^2)``;
    the best predictor of ``r_{t+1}`` given the past is ``phi * r_t``, whose
    error is the innovation variance ``sigma^2``. The best achievable MSE
    ratio (model / naive) is therefore ``1 - phi^2`` (0.75 for phi 0.5).
    :func:`optimum_predictions` gives that predictor on the test days, so a
    report compares the model with the optimum on the same days as well as
    with the closed form.

Percent units keep features and targets near 1 so the same SGD learning
rates work for both tasks; :func:`naive_baseline_error` reports the
"tomorrow = today" predictor in the same units. Tasks other than these two
have no built-in data: their participants train on their own files
(:mod:`ml.datafile`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ml.gate import GateSet, committed_gate_set
from ml.tasks import TaskSpec

TEST_FRACTION = 0.25
SPLIT_RANDOM_STATE = 0
DIGITS_PIXEL_MAX = 16.0
PERCENT = 100.0

# Synthetic stock series: sixteen years of trading days, so the chronological
# test split (a quarter) holds a thousand days and its error ratio is measured
# to about +-0.03 (the ratio's sampling spread at 1000 days).
SYNTHETIC_DAYS = 4000
SYNTHETIC_START_PRICE = 100.0
# AR(1) daily returns in percent: r_t = phi * r_{t-1} + sigma * N(0, 1). phi 0.5
# leaves a learnable quarter of the variance (best MSE ratio 1 - phi^2 = 0.75);
# sigma 1 % a day is a typical single stock's daily volatility.
AR_PHI = 0.5
AR_SIGMA_PERCENT = 1.0
# Too few examples and a chronological 75/25 split leaves no test set worth the name.
MIN_STOCK_EXAMPLES = 40


@dataclass(frozen=True)
class Dataset:
    """A task's examples, already split: X float32; y int64 (classify) or float32 (regress)."""

    name: str
    X_train: NDArray[np.float32]
    y_train: NDArray[np.generic]
    X_test: NDArray[np.float32]
    y_test: NDArray[np.generic]
    # The best possible forecast of each test example, when the data is synthetic
    # and that optimum is known (the AR(1) stock series); None otherwise.
    optimum_test: NDArray[np.float64] | None = None


def load_dataset(spec: TaskSpec, *, csv_text: str | None = None) -> Dataset:
    """The built-in data for ``spec``: digits for the classify task, prices for price-series tasks.

    Parameters
    ----------
    spec
        The task; ``spec.head`` and ``spec.window`` pick the data,
        ``spec.data_seed`` seeds the synthetic stock series.
    csv_text
        Optional ``date,close`` rows (header optional) replacing the synthetic
        series of a price-series task.

    Raises
    ------
    ValueError
        If the task has no built-in data (a feature table: its participants
        bring their own files), or ``csv_text`` is given for a classify task,
        malformed, or too short.
    """
    if spec.head == "classify":
        if csv_text is not None:
            raise ValueError("csv_text only applies to regress (price series) tasks")
        return _load_digits(spec)
    if spec.window == 0:
        raise ValueError(
            f"task {spec.name!r} is a regression on a feature table and has no built-in data; "
            "its participants train on their own files (--data FILE)"
        )
    if csv_text is not None:
        return price_dataset(spec.name, parse_price_csv(csv_text), spec.window)
    data = price_dataset(spec.name, synthetic_prices(spec.data_seed), spec.window)
    return dataclasses.replace(data, optimum_test=optimum_predictions(data.X_test))


def load_gate_set(spec: TaskSpec) -> GateSet:
    """The task's committed useful-update validation set, from its training split.

    The node loads it once per chain and hands it to consensus
    (:class:`consensus.view.ChainRules`), which reads no file itself.

    Raises
    ------
    ValueError
        If the task has no gate, or this copy of the data does not hash to the
        task's commitment (:func:`ml.gate.committed_gate_set`).
    """
    dataset = load_dataset(spec)
    return committed_gate_set(spec, dataset.X_train, dataset.y_train)


def _load_digits(spec: TaskSpec) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / DIGITS_PIXEL_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    if X.shape[1] != spec.input_dim or int(y.max()) + 1 != spec.output_dim:
        raise ValueError(
            f"digits has {X.shape[1]} inputs and {int(y.max()) + 1} classes; "
            f"task {spec.name!r} expects {spec.input_dim} and {spec.output_dim}"
        )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_RANDOM_STATE
    )
    return Dataset(spec.name, X_train, y_train, X_test, y_test)


def synthetic_returns(seed: int, days: int = SYNTHETIC_DAYS) -> NDArray[np.float64]:
    """Daily returns in percent from the AR(1) process of the module docstring.

    The first return is drawn from the stationary distribution (variance
    ``sigma^2 / (1 - phi^2)``), so the series has no warm-up transient.
    """
    rng = np.random.default_rng(seed)
    shocks = AR_SIGMA_PERCENT * rng.standard_normal(days)
    returns = np.empty(days)
    returns[0] = shocks[0] / math.sqrt(1.0 - AR_PHI**2)
    for t in range(1, days):
        returns[t] = AR_PHI * returns[t - 1] + shocks[t]
    return returns


def synthetic_prices(seed: int, days: int = SYNTHETIC_DAYS) -> NDArray[np.float64]:
    """Daily closes whose returns are :func:`synthetic_returns` (the first close is the start price)."""
    returns = synthetic_returns(seed, days - 1)
    growth = np.concatenate([[1.0], 1.0 + returns / PERCENT])
    return SYNTHETIC_START_PRICE * np.cumprod(growth)


def optimum_mse_ratio(phi: float = AR_PHI) -> float:
    """The closed-form best MSE ratio (model / naive) on an AR(1) return series: ``1 - phi^2``."""
    return 1.0 - phi * phi


def optimum_predictions(X: NDArray[np.floating]) -> NDArray[np.float64]:
    """The best forecast of the synthetic series for each example: ``AR_PHI`` times its last return."""
    return AR_PHI * np.asarray(X, dtype=np.float64)[:, -1]


def parse_price_csv(text: str) -> NDArray[np.float64]:
    """Closing prices from ``date,close`` CSV text, oldest row first (see :func:`parse_price_rows`)."""
    return parse_price_rows(text)[1]


def parse_price_rows(text: str) -> tuple[list[datetime.date], NDArray[np.float64]]:
    """Dates and closing prices from ``date,close`` CSV text, oldest row first.

    The first row may be a header (a row whose close is not a number). Dates
    must be ISO ``YYYY-MM-DD`` and strictly increasing; closes finite and > 0.

    Raises
    ------
    ValueError
        Naming the line of the first malformed row.
    """
    closes: list[float] = []
    dates: list[datetime.date] = []
    previous: datetime.date | None = None
    first_row = True
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        is_first, first_row = first_row, False
        if len(cells) != 2:
            raise ValueError(f"CSV line {lineno}: expected 'date,close', got {line!r}")
        try:
            close = float(cells[1])
        except ValueError:
            if is_first:
                continue  # header row
            raise ValueError(f"CSV line {lineno}: close {cells[1]!r} is not a number") from None
        try:
            date = datetime.date.fromisoformat(cells[0])
        except ValueError:
            raise ValueError(f"CSV line {lineno}: date {cells[0]!r} is not YYYY-MM-DD") from None
        if not math.isfinite(close) or close <= 0.0:
            raise ValueError(
                f"CSV line {lineno}: close must be a finite price > 0, got {cells[1]!r}"
            )
        if previous is not None and date <= previous:
            raise ValueError(f"CSV line {lineno}: dates must increase (sort rows oldest first)")
        previous = date
        dates.append(date)
        closes.append(close)
    return dates, np.asarray(closes, dtype=np.float64)


def price_examples(
    closes: NDArray[np.float64], window: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Every windowed example of a price series, oldest first.

    Example ``t`` holds the ``window`` daily returns (percent) up to day
    ``t + window`` and its target is the return of the day after.
    """
    returns = (closes[1:] / closes[:-1] - 1.0) * PERCENT
    n_examples = returns.shape[0] - window
    if n_examples < 1:
        return np.empty((0, window), dtype=np.float32), np.empty(0, dtype=np.float32)
    idx = np.arange(n_examples)[:, None] + np.arange(window)[None, :]
    return returns[idx].astype(np.float32), returns[window:].astype(np.float32)


def latest_returns(closes: NDArray[np.float64], window: int) -> NDArray[np.float32]:
    """The ``window`` most recent daily returns (percent, oldest first): the input of tomorrow's forecast.

    Raises
    ------
    ValueError
        If the series holds fewer than ``window + 1`` closes.
    """
    if closes.shape[0] < window + 1:
        raise ValueError(f"a forecast needs at least {window + 1} closes, the series has {closes.shape[0]}")
    recent = np.asarray(closes[-(window + 1) :], dtype=np.float64)
    out: NDArray[np.float32] = ((recent[1:] / recent[:-1] - 1.0) * PERCENT).astype(np.float32)
    return out


def price_dataset(name: str, closes: NDArray[np.float64], window: int) -> Dataset:
    """Windowed examples from a price series (:func:`price_examples`), split chronologically."""
    X, y = price_examples(closes, window)
    n_examples = X.shape[0]
    if n_examples < MIN_STOCK_EXAMPLES:
        raise ValueError(
            f"need at least {window + 1 + MIN_STOCK_EXAMPLES} closes for window {window}, "
            f"got {closes.shape[0]}"
        )
    cut = n_examples - int(math.ceil(n_examples * TEST_FRACTION))
    return Dataset(name, X[:cut], y[:cut], X[cut:], y[cut:])


def naive_baseline_error(dataset: Dataset) -> float:
    """Test MSE of "tomorrow's close = today's close", in the model's units.

    That predictor's return is zero, so its error is the mean squared test
    target. Compare with the model's test MSE (``ml.evaluate.evaluate``).
    """
    y = np.asarray(dataset.y_test, dtype=np.float64)
    return float(np.mean(y**2))


def naive_baseline_mae(dataset: Dataset) -> float:
    """Test MAE of the "tomorrow = today" predictor, in the model's units."""
    y = np.asarray(dataset.y_test, dtype=np.float64)
    return float(np.mean(np.abs(y)))
