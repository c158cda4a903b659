"""The data behind the built-in tasks, with the one train/test split everyone uses.

``digits``
    sklearn's shipped copy of the 8x8 handwritten digits (no download), pixels
    scaled to [0, 1] by dividing by 16, split with
    ``train_test_split(test_size=0.25, stratify=y, random_state=0)``. Every
    part of the project (trainer, simulator, benchmarks, dashboard) uses this
    split so accuracy figures are comparable.

``stock``
    A daily closing-price series: by default synthetic (geometric Brownian
    motion whose drift and volatility switch between regimes at seeded random
    times), generated from ``spec.data_seed`` so it runs offline and every
    node sees the same series; or the user's own ``date,close`` CSV text.
    One example is ``spec.window`` consecutive closes divided by the last of
    them, minus one, in percent; its target is the next day's return in
    percent. The split is chronological (first 75 % train, last 25 % test) so
    no test day ever informs training (no look-ahead).

Percent units keep features and targets near 1 so the same SGD learning
rates work for both tasks; :func:`naive_baseline_error` reports the
"tomorrow = today" predictor in the same units.
"""

from __future__ import annotations

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

# Synthetic stock series: about eight years of trading days.
SYNTHETIC_DAYS = 2000
SYNTHETIC_START_PRICE = 100.0
# Mean regime length in trading days (durations are exponential).
MEAN_REGIME_DAYS = 120.0
# (daily drift, daily volatility) of the regimes a series switches between:
# calm bull, volatile bear, sideways chop.
REGIMES: tuple[tuple[float, float], ...] = ((0.0006, 0.008), (-0.0008, 0.022), (0.0, 0.013))
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


def load_dataset(spec: TaskSpec, *, csv_text: str | None = None) -> Dataset:
    """The dataset for ``spec``: digits for classify tasks, prices for regress tasks.

    Parameters
    ----------
    spec
        The task; ``spec.head`` picks the data, ``spec.window`` and
        ``spec.data_seed`` shape the stock series.
    csv_text
        Optional ``date,close`` rows (header optional) replacing the synthetic
        series of a regress task.

    Raises
    ------
    ValueError
        If ``csv_text`` is given for a classify task, malformed, or too short.
    """
    if spec.head == "classify":
        if csv_text is not None:
            raise ValueError("csv_text only applies to regress (price series) tasks")
        return _load_digits(spec)
    closes = parse_price_csv(csv_text) if csv_text is not None else synthetic_prices(spec.data_seed)
    return price_dataset(spec.name, closes, spec.window)


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


def synthetic_prices(seed: int, days: int = SYNTHETIC_DAYS) -> NDArray[np.float64]:
    """Daily closes from regime-switching geometric Brownian motion.

    Regimes last an exponential number of days (mean ``MEAN_REGIME_DAYS``);
    each picks a (drift, volatility) pair from ``REGIMES``. Log returns are
    ``mu - sigma^2 / 2 + sigma * N(0, 1)``, the exact GBM step over one day.
    """
    rng = np.random.default_rng(seed)
    mu = np.empty(days)
    sigma = np.empty(days)
    day = 0
    while day < days:
        length = max(1, int(rng.exponential(MEAN_REGIME_DAYS)))
        drift, vol = REGIMES[int(rng.integers(len(REGIMES)))]
        mu[day : day + length] = drift
        sigma[day : day + length] = vol
        day += length
    log_returns = mu - 0.5 * sigma**2 + sigma * rng.standard_normal(days)
    log_returns[0] = 0.0
    return SYNTHETIC_START_PRICE * np.exp(np.cumsum(log_returns))


def parse_price_csv(text: str) -> NDArray[np.float64]:
    """Closing prices from ``date,close`` CSV text, oldest row first.

    The first row may be a header (a row whose close is not a number). Dates
    must be ISO ``YYYY-MM-DD`` and strictly increasing; closes finite and > 0.

    Raises
    ------
    ValueError
        Naming the line of the first malformed row.
    """
    closes: list[float] = []
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
        closes.append(close)
    return np.asarray(closes, dtype=np.float64)


def price_dataset(name: str, closes: NDArray[np.float64], window: int) -> Dataset:
    """Windowed examples from a price series, split chronologically.

    Example ``t`` holds closes ``t .. t+window-1`` divided by close
    ``t+window-1``, minus one, in percent; its target is the return from that
    close to the next one, in percent.
    """
    n_examples = closes.shape[0] - window
    if n_examples < MIN_STOCK_EXAMPLES:
        raise ValueError(
            f"need at least {window + MIN_STOCK_EXAMPLES} closes for window {window}, "
            f"got {closes.shape[0]}"
        )
    idx = np.arange(n_examples)[:, None] + np.arange(window)[None, :]
    windows = closes[idx]
    last = windows[:, -1]
    X = ((windows / last[:, None] - 1.0) * PERCENT).astype(np.float32)
    y = ((closes[window:] / last - 1.0) * PERCENT).astype(np.float32)
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
