"""Robust aggregation of gradient updates: one function per rule, one entry point.

Every node runs the task's rule on the updates of every block, inside the
state transition, so a rule's output is part of consensus: it must be the
same bits on every machine, for every thread count. Each rule is therefore a
numba kernel (:mod:`ml._agg_kernels`) with fastmath off and a summation order
written down here, never BLAS, ``np.sum`` or ``np.mean``.

Summation orders (the consensus contract; changing one is a hard fork):

* mean, and Multi-Krum's average: per coordinate, ``acc = 0.0`` (float64),
  then ``acc += float64(x[i, j])`` for the counted rows ``i`` in increasing
  index order, then ``float32(acc / count)`` -- one float64 division, one
  rounding to float32.
* median: the exact middle value; for even ``n``, ``float32((float64(a) +
  float64(b)) * 0.5)`` of the two middle values (as ``np.median`` up to that
  single rounding).
* trimmed mean: per coordinate the values are sorted (a sorting network of
  compare-and-select steps), the kept ones summed in float64 in ascending
  value order, divided by the count, rounded once.
* Krum distances: for a pair (i, j), lane ``q = 0 .. 127`` sums
  ``(float64(x[i,k]) - float64(x[j,k]))**2`` over ``k = q, q + 128, ...`` in
  increasing ``k``; ``dist[i, j]`` adds the 128 lanes in order ``q = 0, 1, ...``
  (:data:`ml._agg_kernels.DIST_LANES`). A score sums the chosen distances in
  float64 in ascending order.
* Bulyan's second step: like the trimmed mean, over the run of ``beta``
  sorted values nearest the median, ascending.

Compared with Flower (``flwr.server.strategy.aggregate``) on equal weights,
each rule gives Flower's result up to float32 rounding (Flower sums in
float32); Flower's ``aggregate_trimmed_avg`` takes a proportion ``p`` and cuts
``int(p * n)`` from each end, where ours takes that count ``f`` directly.
Ties, which Flower leaves to ``np.argsort``/``np.argpartition``, are broken
here by a fixed rule that each function documents.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from ml import _agg_kernels as kernels

__all__ = [
    "RULES",
    "AggregationError",
    "aggregate",
    "bulyan",
    "krum",
    "mean",
    "median",
    "multi_krum",
    "trimmed_mean",
]

Updates = npt.NDArray[np.float32]
Aggregate = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Result = tuple[Aggregate, Mask]
Rule = Callable[..., Result]

UPDATE_DTYPE = np.dtype(np.float32)
KRUM_EXTRA_HONEST = 3  # Krum needs n >= 2f + 3 (Blanchard et al. 2017, Prop. 1)
BULYAN_EXTRA_HONEST = 3  # Bulyan needs n >= 4f + 3 (El Mhamdi et al. 2018)
KRUM_NEIGHBOUR_SLACK = 2  # a Krum score sums the n - f - 2 nearest distances


class AggregationError(ValueError):
    """Bad input to an aggregation rule: unknown rule, wrong array, ``f`` or parameter."""


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def _check_updates(updates: object) -> Updates:
    """Return ``updates`` as a C-contiguous (n, d) float32 array with n >= 1, or raise."""
    if not isinstance(updates, np.ndarray):
        raise AggregationError(f"updates must be a numpy array, got {type(updates).__name__}")
    if updates.dtype != UPDATE_DTYPE:
        raise AggregationError(f"updates must be float32, got {updates.dtype}")
    if updates.ndim != 2:
        raise AggregationError(
            f"updates must be 2-D (n, d), got {updates.ndim}-D shape {updates.shape}"
        )
    if updates.shape[0] == 0:
        raise AggregationError("no updates to aggregate (n == 0)")
    return np.ascontiguousarray(updates)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AggregationError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_f(rule: str, f: object, n: int, *, factor: int, extra: int) -> int:
    """Check ``0 <= f`` and ``n >= factor * f + extra``, the rule's Byzantine bound."""
    f = _check_int("f", f)
    if f < 0:
        raise AggregationError(f"f must be >= 0, got {f}")
    needed = factor * f + extra
    if n < needed:
        raise AggregationError(
            f"{rule} needs n >= {factor}f+{extra} = {needed} updates for f={f}, got n={n}"
        )
    return f


def _all_counted(n: int) -> Mask:
    return np.ones(n, dtype=np.bool_)


def _mask_of(rows: npt.NDArray[np.int64], n: int) -> Mask:
    mask = np.zeros(n, dtype=np.bool_)
    mask[rows] = True
    return mask


def _full_network(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    return kernels.sorting_network(n, 0, n)


# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------


def mean(updates: Updates, *, f: int = 0) -> Result:
    """Plain coordinate-wise mean (FedAvg with equal weights).

    McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
    from Decentralized Data", https://arxiv.org/abs/1602.05629. Not robust: a
    single Byzantine update moves it arbitrarily far, so it tolerates f = 0
    and refuses any other ``f`` rather than pretend.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound; must be 0.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 mean (float64 sum over rows in index order, divided
        by n, rounded once) and an all-True mask.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    if _check_int("f", f) != 0:
        raise AggregationError(f"mean tolerates no Byzantine updates: f must be 0, got {f}")
    rows = np.arange(n, dtype=np.int64)
    return kernels.mean_rows(updates, rows), _all_counted(n)


def median(updates: Updates, *, f: int = 0) -> Result:
    """Coordinate-wise median.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", https://arxiv.org/abs/1803.01498. Tolerates f
    Byzantine updates while they are a minority: n >= 2f + 1.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound, only checked against n (the median needs no count).

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 median; for even n the float64 midpoint of the two
        middle values rounded once to float32 (``np.median`` up to rounding).
        The mask is all True: every update shaped the result, since which
        value is the median depends on all of them, so every contributor is
        counted (and paid) alike.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    _check_f("median", f, n, factor=2, extra=1)
    half = n // 2
    lo, hi = kernels.sorting_network(n, half - 1 + n % 2, half + 1)
    tile = kernels.network_tile_coords(n)
    return kernels.median_cols(updates, lo, hi, tile), _all_counted(n)


def trimmed_mean(updates: Updates, *, f: int) -> Result:
    """Coordinate-wise trimmed mean: drop the f largest and f smallest values, average the rest.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", https://arxiv.org/abs/1803.01498. Tolerates f
    Byzantine updates with n >= 2f + 1.

    Flower's ``aggregate_trimmed_avg(results, proportiontocut)`` cuts
    ``int(proportiontocut * n)`` from each end; pass that count as ``f`` here.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Values cut from each end of every coordinate.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 trimmed mean (kept values summed in float64 in
        ascending order, divided by n - 2f, rounded once) and an all-True
        mask: which values are cut differs per coordinate, so no update is
        excluded as a whole.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("trimmed_mean", f, n, factor=2, extra=1)
    lo, hi = kernels.sorting_network(n, f, n - f)
    tile = kernels.network_tile_coords(n)
    return kernels.trimmed_mean_cols(updates, f, lo, hi, tile), _all_counted(n)


def _krum_order(updates: Updates, f: int) -> npt.NDArray[np.int64]:
    """Row indices sorted by Krum score, ties by lower index."""
    n = updates.shape[0]
    dist = kernels.pairwise_sq_distances(updates, numba.get_num_threads())
    scores = kernels.krum_scores(dist, np.ones(n, dtype=np.bool_), f)
    return np.argsort(scores, kind="stable").astype(np.int64)


def krum(updates: Updates, *, f: int) -> Result:
    """Krum: the one update closest to its n - f - 2 nearest neighbours.

    Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", https://arxiv.org/abs/1703.02757. Tolerates f
    Byzantine updates with n >= 2f + 3.

    Score of update i = sum of its squared distances to its n - f - 2 nearest
    other updates (the same count as Flower's ``aggregate_krum``). Distances
    are float64 sums in the fixed lane order given in the module docstring.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound.

    Returns
    -------
    (aggregate, mask)
        A copy of the lowest-scoring update (ties: lowest index) and a mask
        with only that update set.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("krum", f, n, factor=2, extra=KRUM_EXTRA_HONEST)
    best = _krum_order(updates, f)[:1]
    return updates[best[0]].copy(), _mask_of(best, n)


def multi_krum(updates: Updates, *, f: int, m: int | None = None) -> Result:
    """Multi-Krum: the mean of the m updates with the best Krum scores.

    Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
    Tolerant Gradient Descent", https://arxiv.org/abs/1703.02757. Tolerates f
    Byzantine updates with n >= 2f + 3. Flower's ``aggregate_krum(results,
    num_malicious=f, to_keep=m)`` is the same rule.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound.
    m
        Updates averaged, 1 <= m <= n; default n - f, as in the paper.

    Returns
    -------
    (aggregate, mask)
        The mean of the m lowest scores (ties in score: lower index first),
        summed in float64 in index order, divided by m, rounded once; the
        mask marks those m updates.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("multi_krum", f, n, factor=2, extra=KRUM_EXTRA_HONEST)
    keep = n - f if m is None else _check_int("m", m)
    if not 1 <= keep <= n:
        raise AggregationError(f"multi_krum needs 1 <= m <= n = {n}, got m={keep}")
    chosen = np.sort(_krum_order(updates, f)[:keep])
    return kernels.mean_rows(updates, chosen), _mask_of(chosen, n)


def _bulyan_picks(updates: Updates, f: int, theta: int) -> npt.NDArray[np.int64]:
    """Bulyan's first step: theta successive Krum choices, each among the rows left."""
    n = updates.shape[0]
    dist = kernels.pairwise_sq_distances(updates, numba.get_num_threads())
    alive = np.ones(n, dtype=np.bool_)
    for _ in range(theta):
        scores = kernels.krum_scores(dist, alive, f)
        pick = int(np.argmin(scores))  # argmin returns the first minimum: lowest index
        alive[pick] = False
    return np.flatnonzero(~alive).astype(np.int64)


def bulyan(updates: Updates, *, f: int) -> Result:
    """Bulyan: Krum picks theta = n - 2f updates, then a per-coordinate trimmed mean around the median.

    El Mhamdi, Guerraoui and Rouault 2018, "The Hidden Vulnerability of
    Distributed Learning in Byzantium", https://arxiv.org/abs/1802.07927.
    Tolerates f Byzantine updates with n >= 4f + 3.

    1. theta = n - 2f times: take the Krum choice among the updates not yet
       taken, its score recomputed over those that remain (``max(1, r - f - 2)``
       neighbours when r remain, as Flower's ``aggregate_bulyan`` does; the
       paper leaves the last rounds, where r - f - 2 < 1, open). The squared
       distances are computed once and reused.
    2. Per coordinate, over the theta picked values: the mean of the
       beta = theta - 2f values nearest their median (a tie in distance keeps
       the smaller value).

    Flower's ``aggregate_bulyan`` with ``aggregate_krum`` follows the same
    steps; it computes in float32 and breaks ties through ``np.argpartition``.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 result and a mask of the theta picked updates.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("bulyan", f, n, factor=4, extra=BULYAN_EXTRA_HONEST)
    theta = n - 2 * f
    beta = theta - 2 * f
    picked = _bulyan_picks(updates, f, theta)
    lo, hi = _full_network(theta)
    tile = kernels.network_tile_coords(theta)
    result = kernels.closest_to_median_cols(updates, picked, beta, lo, hi, tile)
    return result, _mask_of(picked, n)


RULES: dict[str, Rule] = {
    "mean": mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "bulyan": bulyan,
}


def aggregate(rule: str, updates: Updates, *, f: int = 0, **params: Any) -> Result:
    """Aggregate ``updates`` with the named rule.

    Parameters
    ----------
    rule
        A key of :data:`RULES`: the task's aggregation rule.
    updates
        (n, d) float32 C-contiguous array, one update per row.
    f
        The task's Byzantine bound; each rule checks n against its own bound.
    **params
        Rule-specific parameters (``m`` for ``multi_krum``).

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 aggregate and an (n,) bool mask of the updates that
        counted (see each rule for what "counted" means).

    Raises
    ------
    AggregationError
        Unknown rule or parameter, wrong dtype or shape, n == 0, or f outside
        the rule's bound.
    """
    try:
        fn = RULES[rule]
    except (KeyError, TypeError):
        raise AggregationError(
            f"unknown aggregation rule {rule!r}; valid rules: {', '.join(sorted(RULES))}"
        ) from None
    try:
        inspect.signature(fn).bind(updates, f=f, **params)
    except TypeError as exc:
        raise AggregationError(f"bad parameters for {rule}: {exc}") from None
    return fn(updates, f=f, **params)
