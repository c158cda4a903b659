"""Consensus checks on decoded updates: each failure, its code, and its exact boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ml.checks import (
    UpdateCheckError,
    UpdateProblem,
    check_finite,
    check_norm,
    check_shape,
    check_staleness,
    check_update,
    l2_norm,
)

finite_f32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# ---------------------------------------------------------------- shape


def test_shape_accepts_flat_float32_of_the_task_size() -> None:
    check_shape(np.zeros(7, np.float32), 7)


@pytest.mark.parametrize(
    ("update", "problem"),
    [
        (np.zeros(6, np.float32), UpdateProblem.SHAPE),
        (np.zeros(8, np.float32), UpdateProblem.SHAPE),
        (np.zeros((7, 1), np.float32), UpdateProblem.SHAPE),
        (np.zeros(7, np.float64), UpdateProblem.ENCODING),
        ([0.0] * 7, UpdateProblem.SHAPE),
    ],
)
def test_shape_rejects(update: object, problem: UpdateProblem) -> None:
    with pytest.raises(UpdateCheckError) as exc:
        check_shape(update, 7)  # type: ignore[arg-type]
    assert exc.value.problem is problem


# ---------------------------------------------------------------- finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_rejects_nan_and_inf_anywhere(bad: float) -> None:
    for where in (0, 3, 9):
        x = np.ones(10, np.float32)
        x[where] = bad
        with pytest.raises(UpdateCheckError) as exc:
            check_finite(x)
        assert exc.value.problem is UpdateProblem.NOT_FINITE
        assert str(where) in exc.value.detail


def test_finite_accepts_extremes() -> None:
    check_finite(vec(np.finfo(np.float32).max, -np.finfo(np.float32).max, 0.0, -0.0, 1e-45))


# ---------------------------------------------------------------- norm


def test_l2_norm_of_known_vectors() -> None:
    assert l2_norm(vec(3.0, 4.0)) == 5.0
    assert l2_norm(np.zeros(0, np.float32)) == 0.0
    # float64 accumulation: float32 squares of 1e30 would overflow
    assert l2_norm(vec(1e30, 1e30)) == pytest.approx(math.sqrt(2) * 1e30, rel=1e-7)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(0, 300), elements=finite_f32))
def test_l2_norm_equals_the_sequential_float64_oracle(x: np.ndarray) -> None:
    """The kernel is exactly a left-to-right float64 sum of squares, then sqrt."""
    total = 0.0
    for v in x.tolist():
        total += v * v
    assert l2_norm(x) == math.sqrt(total)


def test_l2_norm_does_not_depend_on_memory_layout() -> None:
    x = np.random.default_rng(1).standard_normal(1001).astype(np.float32)
    strided = np.zeros(2002, np.float32)
    strided[::2] = x
    assert l2_norm(strided[::2]) == l2_norm(x)


def test_norm_exactly_at_the_bound_passes_one_ulp_below_fails() -> None:
    x = np.random.default_rng(2).standard_normal(500).astype(np.float32)
    norm = l2_norm(x)
    check_norm(x, norm)
    with pytest.raises(UpdateCheckError) as exc:
        check_norm(x, math.nextafter(norm, 0.0))
    assert exc.value.problem is UpdateProblem.NORM


def test_norm_rejects_what_would_compare_false_against_the_bound() -> None:
    with pytest.raises(UpdateCheckError) as exc:
        check_norm(vec(1.0, np.nan), 10.0)
    assert exc.value.problem is UpdateProblem.NOT_FINITE


@pytest.mark.parametrize("bound", [-1.0, math.nan, math.inf])
def test_norm_bound_itself_must_be_sane(bound: float) -> None:
    with pytest.raises(ValueError):
        check_norm(vec(1.0), bound)


# ---------------------------------------------------------------- staleness


@pytest.mark.parametrize(
    ("base", "block", "window"),
    [(9, 10, 1), (5, 10, 5), (0, 1, 1), (0, 3, 3)],
)
def test_staleness_accepts_bases_inside_the_window(base: int, block: int, window: int) -> None:
    check_staleness(base, block, window)


@pytest.mark.parametrize(
    ("base", "block", "window", "problem"),
    [
        (8, 10, 1, UpdateProblem.STALE),  # one past the window
        (4, 10, 5, UpdateProblem.STALE),
        (10, 10, 5, UpdateProblem.BAD_BASE),  # the block's own height: not yet computed
        (11, 10, 5, UpdateProblem.BAD_BASE),  # from the future
        (-1, 1, 5, UpdateProblem.BAD_BASE),  # below genesis
    ],
)
def test_staleness_rejects(base: int, block: int, window: int, problem: UpdateProblem) -> None:
    with pytest.raises(UpdateCheckError) as exc:
        check_staleness(base, block, window)
    assert exc.value.problem is problem


def test_a_zero_window_admits_nothing_and_a_negative_one_is_a_bug() -> None:
    with pytest.raises(UpdateCheckError) as exc:
        check_staleness(9, 10, 0)
    assert exc.value.problem is UpdateProblem.STALE
    with pytest.raises(ValueError) as bug:
        check_staleness(9, 10, -1)
    assert not isinstance(bug.value, UpdateCheckError)


# ---------------------------------------------------------------- all together


def _check(update: np.ndarray, **over: int | float) -> None:
    kw: dict[str, int | float] = dict(
        expected_size=4, norm_bound=10.0, base_height=9, block_height=10, window=2
    )
    kw.update(over)
    check_update(update, **kw)  # type: ignore[arg-type]


def test_check_update_accepts_a_good_update() -> None:
    _check(vec(1, 2, 3, 4))


def test_check_update_reports_the_first_failure_in_fixed_order() -> None:
    """Shape, then finite, then norm, then staleness: every node picks the same code."""
    bad_everything = vec(np.nan, 1e9, 0)
    with pytest.raises(UpdateCheckError) as exc:
        _check(bad_everything, base_height=0)
    assert exc.value.problem is UpdateProblem.SHAPE

    with pytest.raises(UpdateCheckError) as exc:
        _check(vec(np.nan, 1e9, 0, 0), base_height=0)
    assert exc.value.problem is UpdateProblem.NOT_FINITE

    with pytest.raises(UpdateCheckError) as exc:
        _check(vec(1e9, 0, 0, 0), base_height=0)
    assert exc.value.problem is UpdateProblem.NORM

    with pytest.raises(UpdateCheckError) as exc:
        _check(vec(1, 0, 0, 0), base_height=0)
    assert exc.value.problem is UpdateProblem.STALE


def test_error_carries_code_and_detail() -> None:
    err = UpdateCheckError(UpdateProblem.NORM, "norm 3 exceeds 2")
    assert isinstance(err, ValueError)
    assert err.problem is UpdateProblem.NORM
    assert err.detail == "norm 3 exceeds 2"
    assert str(err) == "norm: norm 3 exceeds 2"
