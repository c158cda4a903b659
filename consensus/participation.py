"""Who gets paid: the miner, and the contributors whose updates the rules counted.

A block's coinbase lists exactly :func:`payouts`: first the miner (the
task's block reward plus every fee in the block), then, in a round's last
block only, the task's contributor reward to the sender of each update
counted twice over: by its block's rule (below) and, through its block's
vote, by the round's vote rule (:mod:`consensus.rounds`). A block whose
coinbase says otherwise is ``BAD_COINBASE``.

Which updates count is a fact of the task's rule, read from its record in
the registry (:data:`ml.aggregation.RULES`, :class:`ml.aggregation.Pays`):

* ``SELECTED`` (Krum, Multi-Krum, Bulyan): the updates the rule picked.
* ``INLIERS`` (median, trimmed mean): these use some value of every update
  somewhere, so their own mask is all True, which would pay an attacker
  whose pull the rule cancelled. An update counts only if it is not an
  outlier: its L2 distance to the block's aggregate is at most
  ``OUTLIER_FACTOR`` times the typical distance (the lower median over the
  block's updates).
* ``ALL`` (mean, geometric median, centered clipping): every update has a
  weighted share in the result, and every sender is paid.

A composed rule pays as its final rule does, judged on the original updates:
``nnm+median`` filters outliers among the updates as sent, against the
aggregate of the mixes; ``nnm+krum`` pays the updates whose mix Krum picked.
When the block's updates are too few for the rule to run with the task's
Byzantine bound, the model stays and no update counts.

Measured on testnets for ``OUTLIER_FACTOR`` (distance over the typical one):
digits with one sign-flip attacker among four nodes, honest p99 1.42 / max
1.52, attacker min 1.47 / p10 1.91; the noisier stock regression with three
honest nodes, p99 1.89. At 1.75 no honest digits update and 1.6 % of honest
stock updates were left unpaid, while 97 % of the attacker's updates were.

Bit-reproducible: the differences are elementwise float32, the norms are
``ml.checks.l2_norm`` (float64, fixed order), the median is a selection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from consensus.tx import Payout
from ml.aggregation import Pays, Pipeline
from ml.checks import l2_norm
from ml.tasks import TaskSpec

# An update farther from the aggregate than this many typical distances is
# not counted (not paid, shown as rejected): above nearly all of the honest
# spread, below nearly all of a sign-flip attacker's (see the module docstring).
OUTLIER_FACTOR = 1.75


def counted_as_inliers(updates: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
    """Mask of the updates within ``OUTLIER_FACTOR`` typical distances of ``aggregate``."""
    distances = [l2_norm((row - aggregate).astype(np.float32)) for row in updates]
    typical = sorted(distances)[(len(distances) - 1) // 2]
    return np.array([d <= OUTLIER_FACTOR * typical for d in distances], dtype=bool)


def counted(pipeline: Pipeline, updates: np.ndarray, aggregate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Which of ``updates`` (as sent, one row each) the rule counted, given its result and own mask."""
    if pipeline.pays is Pays.SELECTED:
        return np.asarray(mask, dtype=bool)
    if pipeline.pays is Pays.INLIERS:
        return counted_as_inliers(updates, aggregate)
    return np.ones(updates.shape[0], dtype=bool)


def payouts(task: TaskSpec, miner: bytes, fees: int, contributors: Sequence[bytes]) -> list[Payout]:
    """The coinbase's payouts: the miner first (reward and fees), then each paid contributor.

    ``contributors`` is empty except in a round's last block, where it lists,
    block by block of the round and in each block's order, the senders of the
    updates their block's rule counted in the blocks whose vote the round
    counted, of a round whose step was applied (:mod:`consensus.rounds`).
    """
    paid = [Payout(miner, task.block_reward + fees)]
    paid += [Payout(sender, task.contributor_reward) for sender in contributors]
    return paid


def verdict(pipeline: Pipeline, f: int, accepted: bool | None) -> str:
    """One line for people (API, dashboard): why an update of a connected block was or was not paid."""
    if accepted is None:
        return f"not applied: too few updates for {pipeline.name} to run with f={f}; the model stayed"
    if accepted:
        return f"counted by {pipeline.name} and paid"
    if pipeline.pays is Pays.SELECTED:
        return f"not selected by {pipeline.name}; not paid"
    return f"an outlier: farther than {OUTLIER_FACTOR} typical distances from the aggregate; not paid"
