"""Which updates a coordinate-wise rule counted: the contributors the chain pays.

Krum, Multi-Krum and Bulyan select whole updates, so their mask says who
counted. The coordinate-wise rules (median, trimmed mean) use some value of
every update somewhere, so their own mask is all True, which would pay an
attacker whose values the rule threw away almost everywhere. The chain
therefore asks, per update, how many coordinates the rule actually kept its
value at — the values between the rule's lowest and highest kept order
statistic — and counts the update if that is at least half of its fair
share (each coordinate keeps ``k`` of ``n`` values, so a fair share is
``d * k / n`` coordinates). A sign-flipped update is extreme nearly
everywhere and falls far below that; an honest one sits near its share.

Bit-reproducible: order statistics are selections (no arithmetic) and the
counts are integers.
"""

from __future__ import annotations

import numpy as np

COORDINATE_WISE = frozenset({"median", "trimmed_mean"})


def kept_range(rule: str, n: int, f: int) -> tuple[int, int]:
    """0-based order statistics ``(lo, hi)`` the rule keeps at every coordinate."""
    if rule == "median":
        return ((n - 1) // 2, n // 2)
    if rule == "trimmed_mean":
        return (f, n - f - 1)
    raise ValueError(f"{rule} is not a coordinate-wise rule")


def counted_by_share(rule: str, updates: np.ndarray, f: int) -> np.ndarray:
    """Mask of the updates whose values the rule kept at >= half their fair share of coordinates."""
    n, d = updates.shape
    lo_rank, hi_rank = kept_range(rule, n, f)
    ordered = np.partition(updates, (lo_rank, hi_rank), axis=0)
    lo, hi = ordered[lo_rank], ordered[hi_rank]
    kept_at = np.count_nonzero((updates >= lo) & (updates <= hi), axis=1)
    k = hi_rank - lo_rank + 1
    return np.asarray(2 * n * kept_at >= d * k, dtype=bool)
