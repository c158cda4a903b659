"""A block's vote and a round's rule over its votes (ml/rounds.py).

The numpy versions here are the oracles: short, obviously correct, compared
bit for bit with what the chain computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.aggregation import AggregationError
from ml.checks import l2_norm
from ml.rounds import (
    VOTE_OUTLIER_FACTOR,
    VOTE_RULES,
    aggregate_votes,
    block_vote,
    clip_to_median_norm,
    inliers,
    vote_rule,
)

D = 40


def _honest_votes(rng: np.random.Generator, w: int, d: int = D) -> np.ndarray:
    """W votes computed on one model: a shared direction plus a little per-block noise."""
    centre = rng.normal(0.0, 1.0, size=d)
    return (centre + rng.normal(0.0, 0.1, size=(w, d))).astype(np.float32)


def test_a_block_with_too_few_updates_votes_zero() -> None:
    """median with f = 1 needs 3 updates: one or two could be a single attacker's."""
    rng = np.random.default_rng(0)
    two = rng.normal(size=(2, D)).astype(np.float32)
    vote = block_vote("median", two, f=1, size=D)
    assert not vote.ran and not vote.vote.any() and vote.vote.shape == (D,)
    assert not vote.counted.any() and vote.counted.shape == (2,)
    empty = block_vote("median", None, f=1, size=D)
    assert not empty.ran and not empty.vote.any()


def test_a_block_with_enough_updates_votes_its_rule() -> None:
    rng = np.random.default_rng(1)
    three = rng.normal(size=(3, D)).astype(np.float32)
    vote = block_vote("median", three, f=1, size=D)
    assert vote.ran
    np.testing.assert_array_equal(vote.vote, np.median(three, axis=0).astype(np.float32))
    # plain mean tolerates no attacker whatever f says, so it always runs with f = 0
    alone = block_vote("mean", three[:1], f=1, size=D)
    assert alone.ran and np.array_equal(alone.vote, three[0])


def test_a_block_vote_reports_the_mask_the_chain_counts() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(4, D)).astype(np.float32)

    def only_first(rule: str, updates: np.ndarray, agg: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.arange(updates.shape[0]) == 0

    vote = block_vote("median", rows, f=1, size=D, counted=only_first)
    assert vote.counted.tolist() == [True, False, False, False]


def test_a_real_mistake_in_a_full_block_is_not_a_zero_vote() -> None:
    rows = np.zeros((8, D), dtype=np.float32)
    with pytest.raises(AggregationError):
        block_vote("median", rows, f=1, size=D, bogus=3)


def test_clipping_scales_down_to_the_lower_median_norm_and_never_up() -> None:
    rng = np.random.default_rng(3)
    votes = (rng.normal(size=(5, D)) * np.array([[1.0], [2.0], [3.0], [4.0], [50.0]])).astype(
        np.float32
    )
    clipped, radius = clip_to_median_norm(votes)
    norms = sorted(l2_norm(v) for v in votes)
    assert radius == norms[2]
    for before, after in zip(votes, clipped, strict=True):
        norm = l2_norm(before)
        if norm <= radius:
            assert np.array_equal(before, after)  # untouched, bit for bit
        else:
            oracle = before * np.float32(radius / norm)
            assert np.array_equal(after, oracle)
            assert l2_norm(after) == pytest.approx(radius, rel=1e-6)


def test_zero_votes_count_in_the_clip_radius() -> None:
    """A round where most blocks voted zero (censored, starved) moves nothing."""
    votes = np.zeros((5, D), dtype=np.float32)
    votes[0] = 1.0
    votes[1] = 2.0
    clipped, radius = clip_to_median_norm(votes)
    assert radius == 0.0
    assert not clipped.any()
    assert not aggregate_votes("clip+median", votes).aggregate.any()


@pytest.mark.parametrize("name", ["clip+median", "clip+geomed", "clip+trimmed_mean"])
def test_a_minority_of_poisoned_votes_does_not_steer_the_round(name: str) -> None:
    """7 of 16 blocks vote the reversed direction at the norm bound: the step stays honest."""
    rng = np.random.default_rng(4)
    honest = _honest_votes(rng, 9)
    centre = np.median(honest, axis=0)
    poison = (-centre * (20.0 / np.linalg.norm(centre))).astype(np.float32)
    votes = np.vstack([honest, np.repeat(poison[None, :], 7, axis=0)])
    result = aggregate_votes(name, votes)
    agreement = float(result.aggregate @ centre) / (
        np.linalg.norm(result.aggregate) * np.linalg.norm(centre)
    )
    assert agreement > 0.5
    assert np.linalg.norm(result.aggregate) <= 1.01 * result.radius
    assert result.counted.tolist() == [True] * 9 + [False] * 7


def test_without_clipping_the_median_is_dragged_by_far_votes() -> None:
    """Why clip: unclipped, 7 of 16 far votes pull the median's norm towards them."""
    rng = np.random.default_rng(5)
    honest = _honest_votes(rng, 9)
    centre = np.median(honest, axis=0)
    poison = (-centre * (20.0 / np.linalg.norm(centre))).astype(np.float32)
    votes = np.vstack([honest, np.repeat(poison[None, :], 7, axis=0)])
    clipped = aggregate_votes("clip+median", votes).aggregate
    plain = aggregate_votes("median", votes).aggregate
    assert np.linalg.norm(plain - centre) > np.linalg.norm(clipped - centre)


def test_a_majority_of_poisoned_votes_wins_the_round() -> None:
    """The claim's limit: a vote rule over blocks gives the round to whoever mined most."""
    rng = np.random.default_rng(6)
    honest = _honest_votes(rng, 7)
    centre = np.median(honest, axis=0)
    poison = (-centre).astype(np.float32)
    votes = np.vstack([honest, np.repeat(poison[None, :], 9, axis=0)])
    result = aggregate_votes("clip+median", votes)
    assert float(result.aggregate @ centre) < 0.0


def test_inliers_never_count_a_zero_row() -> None:
    rows = np.array([[1.0, 0.0], [1.1, 0.0], [0.0, 0.0], [-5.0, 0.0]], dtype=np.float32)
    centre = np.array([1.05, 0.0], dtype=np.float32)
    assert inliers(rows, centre).tolist() == [True, True, False, False]
    assert not inliers(np.zeros((3, 2), dtype=np.float32), centre).any()
    assert VOTE_OUTLIER_FACTOR > 1.0


def test_centered_clipping_starts_from_the_previous_round() -> None:
    rng = np.random.default_rng(7)
    votes = _honest_votes(rng, 8)
    previous = np.median(votes, axis=0).astype(np.float32)
    a = aggregate_votes("clip+centered_clip", votes, previous=previous).aggregate
    b = aggregate_votes("clip+centered_clip", votes, previous=-previous).aggregate
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", sorted(VOTE_RULES))
def test_every_vote_rule_is_deterministic_to_the_bit(name: str) -> None:
    rng = np.random.default_rng(8)
    votes = _honest_votes(rng, 8)
    a = aggregate_votes(name, votes).aggregate
    b = aggregate_votes(name, votes.copy()).aggregate
    assert a.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_unknown_rule_and_bad_votes_are_refused() -> None:
    with pytest.raises(ValueError, match="clip\\+median"):
        vote_rule("krum-ish")
    with pytest.raises(ValueError, match="non-empty"):
        aggregate_votes("clip+median", np.zeros((0, D), dtype=np.float32))
