"""The register-resident network kernels (ml._agg_strips) give the in-memory kernels' bits.

Both evaluate the same comparators and finishers; these tests run each rule
through both on random, tie-heavy and special-value inputs (signed zeros,
infinities, NaN) for every row count the strips take, on shapes that leave a
partial strip, on any thread count and chunking, and replay the golden
vectors through the strips.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml import _agg_kernels as kernels
from ml import _agg_strips as strips
from ml.aggregation import aggregate
from tests.unit.test_aggregation import GOLDEN_CASES, case_key, golden_entry, load_vectors

NETWORK_RULES = ("median", "trimmed_mean", "bulyan")
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 3.4e38], dtype=np.float32)


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


def network_case(rule: str, n: int) -> tuple[str, int, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(strip rule, param, rows, comparators) of a rule on n rows, as ml.aggregation builds them."""
    rows = np.arange(n, dtype=np.int64)
    half = n // 2
    if rule == "median":
        return strips.MEDIAN, 0, rows, kernels.sorting_network(n, half - 1 + n % 2, half + 1)
    if rule == "trimmed_mean":
        f = (n - 1) // 2
        return strips.TRIMMED, f, rows, kernels.sorting_network(n, f, n - f)
    beta = max(1, n - 2 * ((n - 1) // 4))
    picked = np.random.default_rng(n).permutation(n + 3)[:n].astype(np.int64)  # a subset, any order
    return strips.CLOSEST, beta, picked, kernels.sorting_network(n, 0, n)


def in_memory(rule: str, param: int, x: np.ndarray, rows: np.ndarray,
              wires: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    code = {strips.MEDIAN: kernels.NETWORK_MEDIAN, strips.TRIMMED: kernels.NETWORK_TRIMMED,
            strips.CLOSEST: kernels.NETWORK_CLOSEST}[rule]
    tile = kernels.network_tile_coords(rows.shape[0])
    out = np.empty(x.shape[1], dtype=np.float32)
    kernels._network_range(x, rows, code, param, wires[0], wires[1], tile, out, 0,
                           -(-x.shape[1] // tile))
    return out


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, int, np.ndarray]:
    rule = draw(st.sampled_from(NETWORK_RULES))
    n = draw(st.integers(1, strips.MAX_ROWS))
    d = draw(st.integers(strips.STRIP, 5 * strips.STRIP + 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 3, d)).astype(np.float32)
    style = draw(st.sampled_from(["gauss", "ties", "special"]))
    if style == "ties":
        x = np.round(x * 2).astype(np.float32)  # many equal values, and -0.0 next to 0.0
    elif style == "special":
        mask = rng.random(x.shape) < 0.3
        x[mask] = rng.choice(SPECIAL, size=int(mask.sum()))
    return rule, n, x


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=inputs())
def test_strips_match_the_in_memory_network(case: tuple[str, int, np.ndarray]) -> None:
    rule, n, x = case
    strip_rule, param, rows, wires = network_case(rule, n)
    expected = in_memory(strip_rule, param, x, rows, wires)
    assert bits(strips.run(strip_rule, param, x, rows, *wires)) == bits(expected)


@pytest.mark.parametrize("rule", NETWORK_RULES)
def test_any_thread_count_and_chunking_gives_the_same_bits(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(7).standard_normal((32, 4099)).astype(np.float32)
    strip_rule, param, rows, wires = network_case(rule, 29)
    expected = in_memory(strip_rule, param, x, rows, wires)
    default_threads = numba.get_num_threads()
    try:
        for threads in sorted({1, default_threads}):
            numba.set_num_threads(threads)
            for chunks in (1, 3, 64):
                monkeypatch.setattr(strips, "CHUNKS_PER_THREAD", chunks)
                assert bits(strips.run(strip_rule, param, x, rows, *wires)) == bits(expected)
    finally:
        numba.set_num_threads(default_threads)


def test_aggregate_takes_the_strips_only_where_they_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = strips.run

    def counting(*args: Any) -> np.ndarray:
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(strips, "run", counting)
    monkeypatch.setattr(strips, "MIN_ELEMENTS", 1000)
    small = np.ones((5, 100), dtype=np.float32)  # 500 elements: in memory
    aggregate("median", small, f=1)
    assert not calls
    aggregate("median", np.ones((5, 300), dtype=np.float32), f=1)
    assert len(calls) == 1
    aggregate("median", np.ones((strips.MAX_ROWS + 1, 300), dtype=np.float32), f=1)  # too many rows
    assert len(calls) == 1


@pytest.mark.parametrize("case", [c for c in GOLDEN_CASES if c["rule"] in NETWORK_RULES],
                         ids=lambda c: f"{c['rule']}-{c['seed']}")
def test_golden_vectors_through_the_strips(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strips, "MIN_ELEMENTS", 0)
    stored = {case_key(c): c for c in load_vectors()}
    assert golden_entry(case) == stored[case_key(case)]
