"""The chain pays contributors whose values a coordinate-wise rule kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.participation import counted_by_share, kept_range
from tests.chainbuilder import ChainBuilder, key


def oracle(rule: str, updates: np.ndarray, f: int) -> np.ndarray:
    """Per coordinate: sort, take the kept order statistics, count who lies in their range."""
    n, d = updates.shape
    lo_rank, hi_rank = kept_range(rule, n, f)
    kept = np.zeros(n, dtype=int)
    for j in range(d):
        column = sorted(updates[:, j].tolist())
        lo, hi = column[lo_rank], column[hi_rank]
        for i in range(n):
            kept[i] += lo <= updates[i, j] <= hi
    return 2 * n * kept >= d * (hi_rank - lo_rank + 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 9), d=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_matches_the_per_coordinate_oracle(n: int, d: int, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    updates = rng.standard_normal((n, d)).astype(np.float32)
    if ties:
        updates = np.round(updates).astype(np.float32)  # many equal values
    for rule, f in (("median", 1), ("trimmed_mean", (n - 1) // 2)):
        assert np.array_equal(counted_by_share(rule, updates, f), oracle(rule, updates, f))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_a_sign_flipped_update_is_not_counted_and_honest_ones_are(rule: str) -> None:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(650).astype(np.float32)
    honest = [direction + 0.3 * rng.standard_normal(650).astype(np.float32) for _ in range(3)]
    updates = np.stack([*honest, -direction]).astype(np.float32)
    assert counted_by_share(rule, updates, 1).tolist() == [True, True, True, False]


def test_the_chain_pays_only_counted_contributors() -> None:
    """genesis - 1 - 2: block 2 holds 3 honest updates and a sign-flipped one (median, f=1)."""
    cb = ChainBuilder()
    cb.extend(1)
    rng = np.random.default_rng(1)
    direction = (0.05 * rng.standard_normal(cb.task.param_count)).astype(np.float32)
    honest = [(direction + 0.01 * rng.standard_normal(direction.size)).astype(np.float32) for _ in range(3)]
    txs = [cb.update(key(i + 1), vector) for i, vector in enumerate(honest)]
    txs.append(cb.update(key(9), (-direction).astype(np.float32)))
    cb.add(cb.template(txs))
    paid = {p.address for p in cb.tip.txs[0].payouts[1:]}  # type: ignore[union-attr]
    from wallet import address_bytes

    assert paid == {address_bytes(key(i + 1).public) for i in range(3)}
    assert cb.state.model_version == 1
