"""Which updates a coordinate-wise rule counted: the contributors the chain pays.

Krum, Multi-Krum and Bulyan select whole updates, so their own mask says who
counted. The coordinate-wise rules (median, trimmed mean) use some value of
every update somewhere, so their own mask is all True, which would pay an
attacker whose pull the rule cancelled. The chain therefore counts an update
of such a rule only if it is not an outlier: its L2 distance to the block's
aggregate is at most ``OUTLIER_FACTOR`` times the typical distance (the
lower median over the block's updates). A sign-flipped update lands about
twice as far as an honest one; honest non-IID updates stay within ~1.2×
(measured on the digits testnet with one sign-flip attacker among four).

Bit-reproducible: the differences are elementwise float32, the norms are
``ml.checks.l2_norm`` (float64, fixed order), the median is a selection.
"""

from __future__ import annotations

import numpy as np

from ml.checks import l2_norm

COORDINATE_WISE = frozenset({"median", "trimmed_mean"})
# An update farther from the aggregate than this many typical distances is
# not counted (not paid, shown as rejected). Above the honest spread seen on
# non-IID shards (<= 1.2), below a sign-flip attacker's (~2).
OUTLIER_FACTOR = 1.5


def counted_as_inliers(updates: np.ndarray, aggregate: np.ndarray) -> np.ndarray:
    """Mask of the updates within ``OUTLIER_FACTOR`` typical distances of ``aggregate``."""
    distances = [l2_norm((row - aggregate).astype(np.float32)) for row in updates]
    typical = sorted(distances)[(len(distances) - 1) // 2]
    return np.array([d <= OUTLIER_FACTOR * typical for d in distances], dtype=bool)
