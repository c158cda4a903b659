"""The chain pays contributors a coordinate-wise rule did not treat as outliers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.participation import OUTLIER_FACTOR, counted_as_inliers
from ml.aggregation import aggregate
from tests.chainbuilder import ChainBuilder, det_vector, key, quick_task
from wallet import address_bytes


def oracle(updates: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Plain numpy: distances in float64, lower median, the same factor."""
    distances = np.sqrt(((updates.astype(np.float64) - center.astype(np.float64)) ** 2).sum(axis=1))
    typical = np.sort(distances)[(len(distances) - 1) // 2]
    return distances <= OUTLIER_FACTOR * typical


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 9), d=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_matches_a_numpy_oracle(n: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    updates = rng.standard_normal((n, d)).astype(np.float32)
    center, _ = aggregate("median", updates, f=1)
    got = counted_as_inliers(updates, center)
    want = oracle(updates, center)
    # The two sum in different orders; they may differ only for a distance on the boundary.
    distances = np.sqrt(((updates.astype(np.float64) - center) ** 2).sum(axis=1))
    typical = np.sort(distances)[(n - 1) // 2]
    near = np.isclose(distances, OUTLIER_FACTOR * typical, rtol=1e-9)
    assert np.array_equal(got[~near], want[~near])


def test_same_bits_every_time() -> None:
    rng = np.random.default_rng(5)
    updates = rng.standard_normal((5, 1000)).astype(np.float32)
    center, _ = aggregate("median", updates, f=1)
    assert all(np.array_equal(counted_as_inliers(updates, center), counted_as_inliers(updates, center))
               for _ in range(3))


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_a_sign_flipped_update_is_an_outlier_and_honest_ones_are_not(rule: str) -> None:
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(650).astype(np.float32)
    honest = [direction + 0.3 * rng.standard_normal(650).astype(np.float32) for _ in range(3)]
    updates = np.stack([*honest, -direction]).astype(np.float32)
    center, _ = aggregate(rule, updates, f=1)
    assert counted_as_inliers(updates, center).tolist() == [True, True, True, False]


def test_the_chain_pays_only_counted_contributors() -> None:
    """A block of 3 honest updates and a sign-flipped one (median, f=1; rounds of one block)."""
    cb = ChainBuilder(quick_task())
    senders = [key(i + 1) for i in range(3)] + [key(9)]
    cb.join(*senders)
    rng = np.random.default_rng(1)
    direction = (0.05 * rng.standard_normal(cb.task.param_count)).astype(np.float32)
    honest = [(direction + 0.01 * rng.standard_normal(direction.size)).astype(np.float32) for _ in range(3)]
    cb.contribute({**dict(zip(senders, honest, strict=False)), key(9): (-direction).astype(np.float32)})
    paid = {p.address for p in cb.tip.txs[0].payouts[1:]}  # type: ignore[union-attr]
    assert paid == {address_bytes(key(i + 1).public) for i in range(3)}
    assert cb.state.model_version == 1


def test_a_task_may_name_a_composed_rule() -> None:
    """``nnm+median`` is a valid task rule and the chain runs it."""
    import dataclasses

    from ml.tasks import TaskSpec, builtin_task

    task = dataclasses.replace(builtin_task("digits"), rule="nnm+median")
    assert TaskSpec.from_dict(task.to_dict()) == task
    cb = ChainBuilder(dataclasses.replace(quick_task(), rule="nnm+median"))
    senders = [key(i + 1) for i in range(3)]
    cb.join(*senders)
    cb.contribute({k: det_vector(i, cb.task.param_count) for i, k in enumerate(senders)})
    assert cb.state.model_version == 1
