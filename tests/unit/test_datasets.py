"""Datasets: the shared digits split, the synthetic stock series, CSV input, naive baseline."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest

from ml.datasets import (
    AR_PHI,
    AR_SIGMA_PERCENT,
    load_dataset,
    naive_baseline_error,
    naive_baseline_mae,
    optimum_mse_ratio,
    optimum_predictions,
    parse_price_csv,
    price_dataset,
    synthetic_prices,
    synthetic_returns,
)
from ml.evaluate import evaluate
from ml.models import init_params
from ml.tasks import builtin_task

DIGITS_TOTAL = 1797


def test_digits_split_is_the_shared_stratified_split() -> None:
    spec = builtin_task("digits")
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.X_train.shape == (1347, 64) and a.X_test.shape == (450, 64)
    assert a.X_train.shape[0] + a.X_test.shape[0] == DIGITS_TOTAL
    assert a.X_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert 0.0 <= a.X_train.min() and a.X_train.max() <= 1.0
    assert np.array_equal(a.X_test, b.X_test) and np.array_equal(a.y_test, b.y_test)
    # Stratified: every class keeps about a quarter of its examples in test.
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46


def test_stock_series_is_seeded_windowed_and_chronological() -> None:
    spec = builtin_task("stock")
    d = load_dataset(spec)
    assert np.array_equal(d.X_train, load_dataset(spec).X_train)
    assert d.X_train.shape[1] == spec.window and d.y_train.dtype == np.float32
    n = d.X_train.shape[0] + d.X_test.shape[0]
    assert d.X_test.shape[0] == int(np.ceil(n * 0.25))
    # No look-ahead: each target is the newest return of the next example's window,
    # and each window is the previous one shifted by a day.
    X = np.concatenate([d.X_train, d.X_test])
    y = np.concatenate([d.y_train, d.y_test])
    assert np.array_equal(X[1:, -1], y[:-1])
    assert np.array_equal(X[1:, :-1], X[:-1, 1:])


def test_synthetic_returns_are_ar1_with_the_documented_coefficient() -> None:
    returns = synthetic_returns(seed=3, days=200_000)
    phi_hat = float(np.dot(returns[1:], returns[:-1]) / np.dot(returns[:-1], returns[:-1]))
    assert phi_hat == pytest.approx(AR_PHI, abs=0.01)
    innovations = returns[1:] - AR_PHI * returns[:-1]
    assert float(np.std(innovations)) == pytest.approx(AR_SIGMA_PERCENT, rel=0.01)
    # Stationary from day one: the variance is sigma^2 / (1 - phi^2) throughout.
    assert float(np.var(returns)) == pytest.approx(AR_SIGMA_PERCENT**2 / (1 - AR_PHI**2), rel=0.02)


def test_prices_compound_the_synthetic_returns() -> None:
    closes = synthetic_prices(seed=5, days=50)
    returns = synthetic_returns(seed=5, days=49)
    assert closes[0] == 100.0
    np.testing.assert_allclose((closes[1:] / closes[:-1] - 1) * 100, returns, rtol=1e-9)


def test_the_known_optimum_beats_naive_by_the_closed_form_ratio() -> None:
    """On the synthetic series, phi * last return is the best forecast: ratio ~ 1 - phi^2."""
    spec = builtin_task("stock")
    d = load_dataset(spec)
    assert d.optimum_test is not None
    np.testing.assert_array_equal(d.optimum_test, optimum_predictions(d.X_test))
    assert optimum_mse_ratio() == pytest.approx(1 - AR_PHI**2)
    figures = evaluate(spec, init_params(spec), d)
    # ~1000 test days: the empirical ratio lies within sampling noise of the closed form.
    assert figures["optimum_ratio"] == pytest.approx(optimum_mse_ratio(), abs=0.06)
    # A user's CSV has no known optimum.
    closes = list(100.0 + np.cumsum(np.random.default_rng(0).normal(size=120)))
    assert load_dataset(spec, csv_text=make_csv(closes)).optimum_test is None


def test_a_feature_table_regression_has_no_builtin_data() -> None:
    spec = dataclasses.replace(builtin_task("stock"), window=0, input_dim=3, name="houses")
    with pytest.raises(ValueError, match="own files"):
        load_dataset(spec)


def test_stock_seed_changes_the_series() -> None:
    spec = builtin_task("stock")
    other = dataclasses.replace(spec, data_seed=spec.data_seed + 1)
    assert not np.array_equal(load_dataset(spec).y_train, load_dataset(other).y_train)


def make_csv(closes: list[float], header: bool = True) -> str:
    start = datetime.date(2020, 1, 1)
    lines = ["date,close"] if header else []
    lines += [f"{start + datetime.timedelta(days=i)},{c}" for i, c in enumerate(closes)]
    return "\n".join(lines) + "\n"


def test_csv_text_replaces_the_synthetic_series() -> None:
    spec = builtin_task("stock")
    closes = list(100.0 + np.cumsum(np.random.default_rng(0).normal(size=120)))
    with_header = load_dataset(spec, csv_text=make_csv(closes))
    without = load_dataset(spec, csv_text=make_csv(closes, header=False))
    assert np.array_equal(with_header.y_test, without.y_test)
    assert with_header.X_train.shape[0] + with_header.X_test.shape[0] == 120 - 1 - spec.window
    assert with_header.y_test[-1] == pytest.approx((closes[-1] / closes[-2] - 1) * 100, rel=1e-5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date,close\n2020-01-01,100\n2020-01-02,abc\n", "line 3"),
        ("2020-01-01,100,7\n", "line 1"),
        ("2020-01-01,100\n2020-13-02,101\n", "YYYY-MM-DD"),
        ("2020-01-02,100\n2020-01-01,101\n", "oldest first"),
        ("2020-01-01,-5\n", "> 0"),
        ("2020-01-01,nan\n", "> 0"),
    ],
)
def test_malformed_csv_rows_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_price_csv(text)


def test_too_short_series_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least"):
        price_dataset("s", np.linspace(100, 110, 30), window=20)


def test_csv_is_refused_for_digits() -> None:
    with pytest.raises(ValueError, match="regress"):
        load_dataset(builtin_task("digits"), csv_text="2020-01-01,1\n")


def test_naive_baseline_is_the_error_of_predicting_zero_return() -> None:
    d = price_dataset("s", np.array([100.0 * 1.01**i for i in range(80)]), window=5)
    assert naive_baseline_error(d) == pytest.approx(1.0, rel=1e-4)  # every return is 1 %
    assert naive_baseline_mae(d) == pytest.approx(1.0, rel=1e-4)
