"""The chain's second level: a block's vote, and a round's robust rule over its blocks' votes.

Why two levels. A rule over a block's own updates (the task's rule with its
Byzantine bound ``f``) protects the model against dishonest *participants*
inside an honest miner's block. It cannot protect against the miner: a miner
fills its own blocks with its own updates under as many keys as the rule
needs. So no block moves the model alone. Each block's robust aggregate is
one *vote*, and the model moves once per round of ``W`` blocks by a robust
rule over the round's ``W`` votes, so a miner's weight is its share of the
blocks, which is its share of the hashrate.

- :func:`block_vote`: the task's rule over one block's counted updates, with
  the task's ``f`` or not at all. A block with too few updates for that
  ``f`` votes **zero** (no movement): if it did not vote, a miner could win
  rounds by starving honest blocks of updates (or by censoring).
- :func:`aggregate_votes`: a rule of :data:`VOTE_RULES` over the ``(W, d)``
  votes. ``clip+`` rules first clip every vote to the round's median vote
  norm (:func:`clip_to_median_norm`), so the attacker's blocks, however far
  they point, weigh no more than a typical honest vote; then the base rule
  (coordinate-wise median, geometric median, trimmed mean, centered
  clipping) combines them. Which rule the chain uses was measured, not
  assumed (:mod:`ml.chainsim`, docs/DESIGN-NOTES.md).
- :func:`inliers`: which votes the round counted (an honest vote lies
  near the aggregate; an attacker's does not). The chain pays a block's
  contributors only if its vote counted, and the API shows the rest as
  rejected.

Everything here is consensus arithmetic: norms are :func:`ml.checks.l2_norm`
(float64, fixed order), medians are selections, scaling is one float32
multiply per coordinate, the base rules are :mod:`ml.aggregation`'s
bit-reproducible kernels. No BLAS, no ``np.sum`` of floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.aggregation import AggregationError, aggregate
from ml.checks import l2_norm

# An exact copy of an update revealed in round v is a clone (kept, never counted
# or paid) when it is revealed in round v .. v + CLONE_WINDOW_ROUNDS: commit-reveal
# lets a copier commit no earlier than the round it saw the reveal, and no
# later than the next if the reveal was in a round's last block.
CLONE_WINDOW_ROUNDS = 2

__all__ = [
    "VOTE_RULES",
    "BlockVote",
    "RoundResult",
    "VoteRule",
    "aggregate_votes",
    "block_vote",
    "clip_to_median_norm",
    "inliers",
    "vote_rule",
]

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

# A vote farther from the round's aggregate than this many typical (lower-median)
# distances is not counted: its block's contributors are unpaid and the API shows
# it rejected. Same reasoning and factor as a block's own outliers
# (consensus/participation.py); measured on votes in ml.chainsim.
VOTE_OUTLIER_FACTOR = 1.75
# centered clipping over votes: radius as a share of the round's clip radius,
# starting from the previous round's aggregate.
CCLIP_RADIUS_SHARE = 0.5
CCLIP_ITERS = 3
# geometric median over votes: Weiszfeld steps (votes are few: W of them).
GEOMED_ITERS = 32


@dataclass(frozen=True)
class BlockVote:
    """One block's vote: the task's rule over its updates, or zero.

    ``counted`` marks the updates the block rule counted (all False for a
    zero vote); ``ran`` is False when the block had too few updates for the
    task's ``f`` and votes zero.
    """

    vote: F32
    counted: Mask
    ran: bool


def block_vote(
    rule: str,
    updates: F32 | None,
    *,
    f: int,
    size: int,
    counted: Callable[[str, F32, F32, Mask], Mask] | None = None,
    **params: Any,
) -> BlockVote:
    """The block's vote: ``rule`` over its ``(n, size)`` updates with bound ``f``, or zero.

    Parameters
    ----------
    rule
        The task's aggregation rule (a name :func:`ml.aggregation.aggregate` knows).
    updates
        The block's counted updates, one per row, or None for a block without any.
    f
        The task's Byzantine bound; plain ``mean`` always runs with ``f = 0``.
    size
        The model's parameter count (the length of a zero vote).
    counted
        Maps ``(rule, updates, aggregate, mask)`` to the mask of updates the
        chain counts (e.g. outliers removed for coordinate-wise rules);
        default: the rule's own mask.
    **params
        Rule parameters (the task's, plus what the chain adds).
    """
    zero = np.zeros(size, dtype=np.float32)
    if updates is None or updates.shape[0] == 0:
        return BlockVote(zero, np.zeros(0, dtype=np.bool_), ran=False)
    f_rule = 0 if rule.split("+")[-1] == "mean" else f
    try:
        agg, mask = aggregate(rule, updates, f=f_rule, **params)
    except AggregationError:
        if updates.shape[0] > 2 * f_rule + 3:  # enough rows: the error is a real mistake
            raise
        return BlockVote(zero, np.zeros(updates.shape[0], dtype=np.bool_), ran=False)
    if counted is not None:
        mask = counted(rule, updates, agg, mask)
    return BlockVote(agg, np.asarray(mask, dtype=np.bool_), ran=True)


def _lower_median(values: list[float]) -> float:
    """The lower median: a selection, the same number on every machine."""
    return sorted(values)[(len(values) - 1) // 2]


def clip_to_median_norm(
    votes: F32, *, quantile: float = 0.5, live_only: bool = False
) -> tuple[F32, float]:
    """Every vote scaled down (never up) to the round's lower-median vote norm.

    Returns the clipped ``(W, d)`` votes and the radius. A vote with norm
    ``r > radius`` becomes ``vote * float32(radius / r)`` (one float64
    division, one rounding, one float32 multiply per coordinate). Zero votes
    count in the median: a round where most blocks vote zero moves little.
    ``quantile`` picks another order statistic (element
    ``floor(quantile * (n - 1))`` of the sorted norms); ``live_only`` leaves
    zero votes out of the ranking.
    """
    norms = [l2_norm(row) for row in votes]
    ranked = sorted(n for n in norms if n > 0.0) if live_only else sorted(norms)
    radius = ranked[int(quantile * (len(ranked) - 1))] if ranked else 0.0
    out = np.array(votes, dtype=np.float32, copy=True)
    for i, norm in enumerate(norms):
        if norm > radius:
            out[i] = out[i] * np.float32(radius / norm)
    return out, radius


@dataclass(frozen=True)
class VoteRule:
    """One rule over a round's votes: its name, whether it clips first, the base rule.

    ``base`` is a rule of :mod:`ml.aggregation`; ``f_share`` the Byzantine
    bound it is given as a share of W (trimmed mean trims that many from each
    end); ``paper`` where the base rule comes from.
    """

    name: str
    clip: bool
    base: str
    paper: str
    f_share: float = 0.0
    clip_quantile: float = 0.5
    clip_live_only: bool = False

    def run(self, votes: F32, radius: float, previous: F32 | None) -> F32:
        """The base rule over the (clipped) votes."""
        w = votes.shape[0]
        f = min(int(self.f_share * w), (w - 1) // 2)
        params: dict[str, Any] = {}
        if self.base == "geomed":
            params["iters"] = GEOMED_ITERS
        if self.base == "centered_clip":
            # a round of zero votes has radius 0: nothing to clip towards, stay put
            if radius <= 0.0:
                return np.zeros(votes.shape[1], dtype=np.float32)
            params.update(
                tau=CCLIP_RADIUS_SHARE * radius, iters=CCLIP_ITERS, reference=previous
            )
        agg, _ = aggregate(self.base, votes, f=f, **params)
        return agg


VOTE_RULES: dict[str, VoteRule] = {
    rule.name: rule
    for rule in (
        VoteRule("mean", clip=False, base="mean", paper="McMahan et al. 2017 (not robust)"),
        VoteRule("median", clip=False, base="median", paper="Yin et al. 2018"),
        VoteRule("clip+mean", clip=True, base="mean", paper="norm clipping alone"),
        VoteRule("clip+median", clip=True, base="median", paper="Yin et al. 2018"),
        VoteRule(
            "clip+trimmed_mean",
            clip=True,
            base="trimmed_mean",
            paper="Yin et al. 2018",
            f_share=0.25,
        ),
        VoteRule(
            "lowclip+median",
            clip=True,
            base="median",
            paper="Yin et al. 2018",
            clip_quantile=0.25,
            clip_live_only=True,
        ),
        VoteRule("clip+geomed", clip=True, base="geomed", paper="Pillutla et al. 2022"),
        VoteRule(
            "clip+centered_clip",
            clip=True,
            base="centered_clip",
            paper="Karimireddy et al. 2021",
        ),
    )
}


def vote_rule(name: str) -> VoteRule:
    """The rule of :data:`VOTE_RULES` called ``name``, or a ValueError naming the choices."""
    rule = VOTE_RULES.get(name)
    if rule is None:
        raise ValueError(f"unknown vote rule {name!r}; choose from {', '.join(VOTE_RULES)}")
    return rule


@dataclass(frozen=True)
class RoundResult:
    """What a round's rule made of its votes: the aggregate, the votes counted, the clip radius."""

    aggregate: F32
    counted: Mask
    radius: float


def inliers(rows: F32, center: F32, *, factor: float = VOTE_OUTLIER_FACTOR) -> Mask:
    """Rows within ``factor`` typical distances of ``center``; zero rows never count.

    The typical distance is the lower median over the non-zero rows. Used on
    a round's votes (a zero vote carries no contributor to pay) and, in the
    simulation, on a block's updates (consensus/participation.py's test).
    """
    distances = [l2_norm((row - center).astype(np.float32)) for row in rows]
    live = [l2_norm(row) > 0.0 for row in rows]
    kept = [d for d, keep in zip(distances, live, strict=True) if keep]
    if not kept:
        return np.zeros(rows.shape[0], dtype=np.bool_)
    typical = _lower_median(kept)
    return np.array(
        [keep and d <= factor * typical for d, keep in zip(distances, live, strict=True)],
        dtype=np.bool_,
    )


def aggregate_votes(name: str, votes: F32, *, previous: F32 | None = None) -> RoundResult:
    """The round's step: rule ``name`` of :data:`VOTE_RULES` over the ``(W, d)`` votes.

    Parameters
    ----------
    name
        A key of :data:`VOTE_RULES`.
    votes
        One row per block of the round, zero rows for blocks that voted zero.
    previous
        The previous round's aggregate (``centered_clip`` starts there; zero
        before the first round).
    """
    rule = vote_rule(name)
    votes = np.ascontiguousarray(votes, dtype=np.float32)
    if votes.ndim != 2 or votes.shape[0] == 0:
        raise ValueError(f"votes must be a non-empty (W, d) array, got shape {votes.shape}")
    if rule.clip:
        clipped, radius = clip_to_median_norm(
            votes, quantile=rule.clip_quantile, live_only=rule.clip_live_only
        )
    else:
        clipped, radius = votes, _lower_median([l2_norm(row) for row in votes])
    agg = rule.run(clipped, radius, previous)
    return RoundResult(aggregate=agg, counted=inliers(votes, agg), radius=radius)
