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
* Bulyan's second step, and meamed: like the trimmed mean, over the run of
  ``beta`` sorted values nearest the median, ascending.
* geomed, centered_clip, nnm, bucket (:mod:`ml._agg_robust`): float64
  throughout, every sum over rows in increasing row index (or bucket order),
  every norm a sum over coordinates in increasing index, one rounding to
  float32 at the end; each function below gives its exact steps.

Pre-aggregation composes with any rule by name: ``nnm+krum`` mixes the
updates with :func:`nnm`, then runs ``krum`` on the mixed rows;
``bucket+median`` averages buckets (:func:`bucket`) and takes their median;
``bucket+nnm+geomed`` chains both, left to right. The chain passes what a
rule needs besides the task's parameters: ``reference`` (the previous
block's applied aggregate) to ``centered_clip`` and ``seed``
(:func:`bucket_seed` of the parent block's hash) to ``bucket``.

The registry (:data:`RULES`, :data:`STAGES`) holds one record per rule:
its function, its Byzantine bound (:class:`Bound`), whose updates the chain
pays when it ran (:class:`Pays`) and its paper. Task validation, the chain's
"run or leave the model unchanged" decision, payouts, the API and the docs
all read it; :func:`parse_rule` turns a composed name into a
:class:`Pipeline` once. A new rule is one function, one record and one
oracle test.

Compared with Flower (``flwr.server.strategy.aggregate``) on equal weights,
each rule gives Flower's result up to float32 rounding (Flower sums in
float32); Flower's ``aggregate_trimmed_avg`` takes a proportion ``p`` and cuts
``int(p * n)`` from each end, where ours takes that count ``f`` directly.
Ties, which Flower leaves to ``np.argsort``/``np.argpartition``, are broken
here by a fixed rule that each function documents.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from ml import _agg_kernels as kernels
from ml import _agg_robust as robust

__all__ = [
    "PRE_AGGREGATORS",
    "RULES",
    "STAGES",
    "AggregationError",
    "Bound",
    "Pays",
    "Pipeline",
    "RuleRecord",
    "Stage",
    "aggregate",
    "bucket",
    "bucket_order",
    "bucket_seed",
    "bulyan",
    "centered_clip",
    "geomed",
    "inner_count",
    "is_rule",
    "krum",
    "mean",
    "meamed",
    "median",
    "multi_krum",
    "nnm",
    "parse_rule",
    "trimmed_mean",
]

Updates = npt.NDArray[np.float32]
Aggregate = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Result = tuple[Aggregate, Mask]
Rule = Callable[..., Result]

UPDATE_DTYPE = np.dtype(np.float32)
GEOMED_DEFAULT_ITERS = 32  # Weiszfeld steps from the mean: enough to leave far outliers behind
GEOMED_DEFAULT_NU = 1e-6  # smoothing: distances below this (L2, update units) count as this
CCLIP_DEFAULT_TAU = 1.0  # clipping radius in L2 update units; a task sets its own
CCLIP_DEFAULT_ITERS = 3  # clipping steps per aggregation (the paper uses 1 with momentum)
MAX_ITERS = 1000  # more iterations than this is a mistaken task, not a tighter fixed point
BUCKET_DEFAULT_SIZE = 2  # updates per bucket (s = 2 in Karimireddy et al. 2022's experiments)
BUCKET_SEED_BYTES = 8  # the seed is the first 8 bytes of the parent hash, little-endian
U64_MAX = 2**64 - 1


class AggregationError(ValueError):
    """Bad input to an aggregation rule: unknown rule, wrong array, ``f`` or parameter."""


@dataclass(frozen=True)
class Bound:
    """A Byzantine bound: a rule runs with ``f`` faulty inputs among ``n`` iff ``n >= factor * f + extra``.

    ``f_cap`` caps ``f`` whatever ``n`` is (plain mean tolerates none).
    """

    factor: int
    extra: int
    f_cap: int | None = None

    def max_f(self, n: int) -> int:
        """The largest ``f`` the rule runs with on ``n`` inputs; -1 if it cannot run at all."""
        if n < self.extra:
            return -1
        f = (n - self.extra) // self.factor
        return f if self.f_cap is None else min(f, self.f_cap)

    def needs(self, f: int) -> int:
        """The fewest inputs the rule needs for ``f``."""
        return self.factor * f + self.extra

    def __str__(self) -> str:
        if self.f_cap == 0:
            return f"f = 0 (n >= {self.extra})"
        text = f"n >= {self.factor}f + {self.extra}"
        return text if self.f_cap is None else f"{text}, f <= {self.f_cap}"


MAJORITY = Bound(2, 1)  # an honest majority: median, trimmed mean, meamed, geomed, centered clipping, nnm
KRUM_BOUND = Bound(2, 3)  # Blanchard et al. 2017, Prop. 1: n >= 2f + 3
BULYAN_BOUND = Bound(4, 3)  # El Mhamdi et al. 2018: n >= 4f + 3
NO_BYZANTINE = Bound(1, 1, f_cap=0)  # plain mean: any one input moves it arbitrarily far


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


def _check_f(rule: str, f: object, n: int, bound: Bound) -> int:
    """Check ``0 <= f`` and that ``n`` inputs meet the rule's Byzantine ``bound`` for ``f``."""
    f = _check_int("f", f)
    if f < 0:
        raise AggregationError(f"f must be >= 0, got {f}")
    if bound.f_cap is not None and f > bound.f_cap:
        raise AggregationError(f"{rule} tolerates at most f = {bound.f_cap} Byzantine updates, got f={f}")
    needed = bound.needs(f)
    if n < needed:
        raise AggregationError(
            f"{rule} needs n >= {bound.factor}f+{bound.extra} = {needed} updates for f={f}, got n={n}"
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
    _check_f("mean", f, n, NO_BYZANTINE)
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
        The mask is all True: which value is the median depends on every
        update. The chain does not pay by this mask: the record says
        ``Pays.INLIERS`` (see :mod:`consensus.participation`).
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    _check_f("median", f, n, MAJORITY)
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
        excluded as a whole (the chain pays ``Pays.INLIERS``, as for the median).
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("trimmed_mean", f, n, MAJORITY)
    lo, hi = kernels.sorting_network(n, f, n - f)
    tile = kernels.network_tile_coords(n)
    return kernels.trimmed_mean_cols(updates, f, lo, hi, tile), _all_counted(n)


def meamed(updates: Updates, *, f: int) -> Result:
    """Mean around the median: per coordinate, the mean of the n - f values nearest the median.

    Xie, Koyejo and Gupta 2018, "Generalized Byzantine-tolerant SGD",
    https://arxiv.org/abs/1802.10116 ("mean-around-median"). Tolerates f
    Byzantine updates with n >= 2f + 1.

    Why the chain has it: under fair inclusion a participant with free keys
    gets the update slots honest contributors leave free, e.g. one of four
    next to three honest updates. A value at either extreme pulls the median
    of four (the midpoint of the two middle values) towards it, by half the
    gap between two honest values, in every coordinate and every block alike,
    a bias no rule over the blocks' votes can remove. Here an extreme value
    is simply left out (the n - f nearest the median are the honest ones),
    so the block aggregates to the honest mean; a value inside the honest
    range moves it by at most its share of that range.

    Same steps as Bulyan's second step (:func:`ml._agg_kernels.closest_to_median_cols`
    over every row, beta = n - f): sort; the median in float64 (midpoint of
    the two middle values for even n); the run of n - f sorted values
    nearest it (a tie in distance keeps the smaller value), summed in
    float64 ascending, divided by n - f, rounded once.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 result and an all-True mask: which values are left
        out differs per coordinate (the chain pays ``Pays.INLIERS``, as for
        the median).
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("meamed", f, n, MAJORITY)
    rows = np.arange(n, dtype=np.int64)
    lo, hi = _full_network(n)
    tile = kernels.network_tile_coords(n)
    return kernels.closest_to_median_cols(updates, rows, n - f, lo, hi, tile), _all_counted(n)


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
    f = _check_f("krum", f, n, KRUM_BOUND)
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
    f = _check_f("multi_krum", f, n, KRUM_BOUND)
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
    f = _check_f("bulyan", f, n, BULYAN_BOUND)
    theta = n - 2 * f
    beta = theta - 2 * f
    picked = _bulyan_picks(updates, f, theta)
    lo, hi = _full_network(theta)
    tile = kernels.network_tile_coords(theta)
    result = kernels.closest_to_median_cols(updates, picked, beta, lo, hi, tile)
    return result, _mask_of(picked, n)


def _check_iters(rule: str, iters: object) -> int:
    iters = _check_int("iters", iters)
    if not 1 <= iters <= MAX_ITERS:
        raise AggregationError(f"{rule} needs 1 <= iters <= {MAX_ITERS}, got {iters}")
    return iters


def _check_positive(rule: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AggregationError(f"{rule} {name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise AggregationError(f"{rule} {name} must be finite and > 0, got {value!r}")
    return number


def geomed(
    updates: Updates,
    *,
    f: int = 0,
    iters: int = GEOMED_DEFAULT_ITERS,
    nu: float = GEOMED_DEFAULT_NU,
) -> Result:
    """Geometric median by smoothed Weiszfeld iterations (robust federated aggregation, RFA).

    Pillutla, Kakade and Harchaoui 2022, "Robust Aggregation for Federated
    Learning", IEEE Trans. Signal Processing, https://arxiv.org/abs/1912.13445.
    The geometric median has breakdown point 1/2: it tolerates f Byzantine
    updates with n >= 2f + 1. A fixed iteration count (not a tolerance) keeps
    the work, and so the bits, the same on every node.

    Starting from the float64 mean, each iteration reweights every update by
    ``1 / max(nu, ||z - x_i||)`` and takes the weighted mean (the exact order
    is in :func:`ml._agg_robust.weiszfeld`).

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound, only checked against n.
    iters
        Weiszfeld iterations, 1 .. 1000.
    nu
        Smoothing, > 0: an update nearer than ``nu`` weighs as if at ``nu``,
        so the step is defined when ``z`` lands on an update.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 approximate geometric median and an all-True mask
        (every update has a weight in it).
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    _check_f("geomed", f, n, MAJORITY)
    iters = _check_iters("geomed", iters)
    smoothing = _check_positive("geomed", "nu", nu)
    return robust.weiszfeld(updates, iters, smoothing), _all_counted(n)


def _check_reference(reference: object, d: int) -> Aggregate:
    if reference is None:
        return np.zeros(d, dtype=np.float32)
    if not isinstance(reference, np.ndarray) or reference.dtype != UPDATE_DTYPE:
        raise AggregationError("centered_clip reference must be a float32 numpy array")
    if reference.shape != (d,):
        raise AggregationError(f"centered_clip reference must have shape ({d},), got {reference.shape}")
    if not np.all(np.isfinite(reference)):
        raise AggregationError("centered_clip reference must be finite")
    return np.ascontiguousarray(reference)


def centered_clip(
    updates: Updates,
    *,
    f: int = 0,
    tau: float = CCLIP_DEFAULT_TAU,
    iters: int = CCLIP_DEFAULT_ITERS,
    reference: Aggregate | None = None,
) -> Result:
    """Centered clipping around a reference point.

    Karimireddy, He and Jaggi 2021, "Learning from History for Byzantine
    Robust Optimization", ICML 2021, https://arxiv.org/abs/2012.10333.
    ``v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||)``, ``iters``
    times from ``v = reference``: an update at any distance moves the result
    by at most ``tau / n``, so f attackers move it by at most ``f tau / n``
    per step. The paper's guarantee holds for a Byzantine fraction
    ``delta = f / n`` below 1/2 (the error grows with ``delta``); we accept
    n >= 2f + 1. On the chain the reference is the previous block's applied
    aggregate (``State.last_aggregate``), the paper's momentum-like history
    point, which every node already holds.

    Parameters
    ----------
    updates
        (n, d) float32, one update per row.
    f
        Byzantine bound, only checked against n.
    tau
        Clipping radius (L2, in update units), > 0.
    iters
        Clipping steps, 1 .. 1000.
    reference
        (d,) float32 starting point; None: the zero vector.

    Returns
    -------
    (aggregate, mask)
        The (d,) float32 result and an all-True mask (every update pulls,
        clipped or not).
    """
    updates = _check_updates(updates)
    n, d = updates.shape
    _check_f("centered_clip", f, n, MAJORITY)
    radius = _check_positive("centered_clip", "tau", tau)
    iters = _check_iters("centered_clip", iters)
    start = _check_reference(reference, d)
    return robust.centered_clip(updates, start, radius, iters), _all_counted(n)


# --------------------------------------------------------------------------
# Pre-aggregation: nearest-neighbour mixing and bucketing
# --------------------------------------------------------------------------


def nnm(updates: Updates, *, f: int) -> Updates:
    """Nearest-neighbour mixing: replace each update by the mean of its n - f nearest.

    Allouah et al. 2023, "Fixing by Mixing: A Recipe for Optimal Byzantine ML
    under Heterogeneity", AISTATS 2023, https://arxiv.org/abs/2302.01772.
    Composed with a robust rule (``nnm+krum``, ``nnm+median``, ...) it brings
    that rule to the optimal error under heterogeneity for f < n/2; needs
    n >= 2f + 1. Nearness uses the Krum distances (same lane order, module
    docstring); ties go to the lower index; each mean sums the chosen rows in
    float64 in increasing index, rounded once.

    Returns
    -------
    numpy.ndarray
        (n, d) float32: row i is the mix around update i.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    f = _check_f("nnm", f, n, MAJORITY)
    dist = kernels.pairwise_sq_distances(updates, numba.get_num_threads())
    return robust.nearest_neighbour_mix(updates, dist, n - f)


def bucket_seed(block_hash: bytes) -> int:
    """The bucketing seed for a block: its parent's hash, first 8 bytes, little-endian."""
    if not isinstance(block_hash, bytes) or len(block_hash) < BUCKET_SEED_BYTES:
        raise AggregationError(f"a bucket seed needs a hash of >= {BUCKET_SEED_BYTES} bytes")
    return int.from_bytes(block_hash[:BUCKET_SEED_BYTES], "little")


def bucket_order(n: int, seed: int) -> npt.NDArray[np.int64]:
    """The deterministic shuffle of rows 0..n-1 for ``seed``.

    Rows sorted by ``sha256(seed as 8 bytes LE || row as 4 bytes LE)``: a
    permutation fixed by the seed alone, independent of numpy's generators
    (whose streams may change between releases).
    """
    seed_bytes = seed.to_bytes(BUCKET_SEED_BYTES, "little")
    keys = [hashlib.sha256(seed_bytes + i.to_bytes(4, "little")).digest() for i in range(n)]
    return np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)


def bucket(
    updates: Updates, *, seed: int, bucket_size: int = BUCKET_DEFAULT_SIZE
) -> tuple[Updates, npt.NDArray[np.int64]]:
    """Bucketing: shuffle the updates, average them in buckets of ``bucket_size``.

    Karimireddy, He and Jaggi 2022, "Byzantine-Robust Learning on
    Heterogeneous Datasets via Bucketing", ICLR 2022,
    https://arxiv.org/abs/2006.09365. Averaging s updates shrinks the honest
    buckets' spread (heterogeneity) while f Byzantine updates spoil at most f
    of the ceil(n / s) buckets; the rule after it then needs its own bound on
    the bucket count (``bucket+median``: ceil(n / s) >= 2f + 1). The shuffle
    is :func:`bucket_order` of ``seed``, which the chain derives from the
    parent block's hash (:func:`bucket_seed`): unpredictable to a submitter
    before the parent is mined, identical on every node.

    Returns
    -------
    (buckets, owner)
        (ceil(n / s), d) float32 bucket means (float64 sums in bucket order,
        rounded once) and, for each update, the bucket it went to.
    """
    updates = _check_updates(updates)
    n = updates.shape[0]
    seed = _check_int("seed", seed)
    if not 0 <= seed <= U64_MAX:
        raise AggregationError(f"bucket seed must be a u64, got {seed}")
    size = _check_int("bucket_size", bucket_size)
    if size < 1:
        raise AggregationError(f"bucket_size must be >= 1, got {size}")
    order = bucket_order(n, seed)
    owner = np.empty(n, dtype=np.int64)
    owner[order] = np.arange(n, dtype=np.int64) // size
    return robust.bucket_means(updates, order, size), owner


# --------------------------------------------------------------------------
# The registry: one record per rule, composed rules parsed into a pipeline
# --------------------------------------------------------------------------


class Pays(enum.Enum):
    """Whose update the chain counts, and pays, when a rule has run (:mod:`consensus.participation`)."""

    SELECTED = "selected"  # the updates the rule picked: its own mask
    INLIERS = "inliers"  # every update that is not an outlier to the aggregate (the chain's distance filter)
    ALL = "all"  # every update: each has a weighted share in the result


@dataclass(frozen=True)
class RuleRecord:
    """Everything the project knows about one aggregation rule, in one place.

    ``fn`` computes it; ``bound`` is the Byzantine bound it keeps (task
    validation and the chain's "run or leave the model" decision read it);
    ``pays`` says whose updates count when it ran; ``paper`` is the source;
    ``supplied`` names the parameters the chain fills in per block rather
    than the task (``reference`` for centered clipping).
    """

    name: str
    fn: Rule
    bound: Bound
    pays: Pays
    paper: str
    supplied: tuple[str, ...] = ()
    signature: inspect.Signature = field(init=False, repr=False, compare=False)
    params: tuple[str, ...] = field(init=False, repr=False, compare=False)  # keywords besides updates and f

    def __post_init__(self) -> None:
        # inspect.signature costs 15-30 us a call: bind against one built here, once.
        signature = inspect.signature(self.fn)
        object.__setattr__(self, "signature", signature)
        object.__setattr__(self, "params", tuple(p for p in list(signature.parameters)[1:] if p != "f"))

    def run(self, updates: Updates, f: int, params: dict[str, Any]) -> Result:
        try:
            self.signature.bind(updates, f=f, **params)
        except TypeError as exc:
            raise AggregationError(f"bad parameters for {self.name}: {exc}") from None
        return self.fn(updates, f=f, **params)


@dataclass(frozen=True)
class Stage:
    """A pre-aggregation step that may precede any rule (``nnm+median``, ``bucket+geomed``)."""

    name: str
    bound: Bound | None  # the bound its own input count must meet for f; None: any f
    paper: str
    params: tuple[str, ...] = ()
    supplied: tuple[str, ...] = ()


RULES: dict[str, RuleRecord] = {
    record.name: record
    for record in (
        RuleRecord("mean", mean, NO_BYZANTINE, Pays.ALL,
                   "McMahan et al. 2017, https://arxiv.org/abs/1602.05629"),
        RuleRecord("median", median, MAJORITY, Pays.INLIERS,
                   "Yin et al. 2018, https://arxiv.org/abs/1803.01498"),
        RuleRecord("trimmed_mean", trimmed_mean, MAJORITY, Pays.INLIERS,
                   "Yin et al. 2018, https://arxiv.org/abs/1803.01498"),
        RuleRecord("meamed", meamed, MAJORITY, Pays.INLIERS,
                   "Xie, Koyejo and Gupta 2018, https://arxiv.org/abs/1802.10116"),
        RuleRecord("krum", krum, KRUM_BOUND, Pays.SELECTED,
                   "Blanchard et al. 2017, https://arxiv.org/abs/1703.02757"),
        RuleRecord("multi_krum", multi_krum, KRUM_BOUND, Pays.SELECTED,
                   "Blanchard et al. 2017, https://arxiv.org/abs/1703.02757"),
        RuleRecord("bulyan", bulyan, BULYAN_BOUND, Pays.SELECTED,
                   "El Mhamdi et al. 2018, https://arxiv.org/abs/1802.07927"),
        RuleRecord("geomed", geomed, MAJORITY, Pays.ALL,
                   "Pillutla et al. 2022, https://arxiv.org/abs/1912.13445"),
        RuleRecord("centered_clip", centered_clip, MAJORITY, Pays.ALL,
                   "Karimireddy et al. 2021, https://arxiv.org/abs/2012.10333", supplied=("reference",)),
    )
}
STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("nnm", MAJORITY, "Allouah et al. 2023, https://arxiv.org/abs/2302.01772"),
        Stage("bucket", None, "Karimireddy et al. 2022, https://arxiv.org/abs/2006.09365",
              params=("seed", "bucket_size"), supplied=("seed",)),
    )
}
PRE_AGGREGATORS: tuple[str, ...] = tuple(STAGES)


@dataclass(frozen=True)
class Pipeline:
    """A rule name parsed once: the pre-aggregation stages left to right, then the rule.

    ``"bucket+nnm+krum"`` buckets the updates, mixes the bucket means with
    their nearest neighbours, and runs Krum on the mixes. Who is paid is the
    final rule's :class:`Pays`, applied to the original updates.
    """

    name: str
    stages: tuple[Stage, ...]
    rule: RuleRecord

    @property
    def pays(self) -> Pays:
        return self.rule.pays

    @cached_property
    def params(self) -> tuple[str, ...]:
        """Every parameter the pipeline takes (its stages' and its rule's)."""
        return (*(p for stage in self.stages for p in stage.params), *self.rule.params)

    @property
    def task_params(self) -> tuple[str, ...]:
        """The parameters a task may set: all but those the chain supplies per block."""
        supplied = {*self.rule.supplied, *(p for stage in self.stages for p in stage.supplied)}
        return tuple(p for p in self.params if p not in supplied)

    def f_for(self, f: int) -> int:
        """The ``f`` the rule runs with for a task's ``f``: capped where the rule tolerates fewer."""
        cap = self.rule.bound.f_cap
        return f if cap is None else min(f, cap)

    def inner_count(self, n: int, **params: Any) -> int:
        """How many vectors the rule itself sees for ``n`` updates (fewer after bucketing)."""
        size = _bucket_size(params)
        for stage in self.stages:
            if stage.name == "bucket":
                n = (n + size - 1) // size
        return n

    def max_f(self, n: int, **params: Any) -> int:
        """The largest ``f`` the pipeline runs with on ``n`` updates; -1 if it cannot run."""
        if n <= 0:
            return -1
        size = _bucket_size(params) if any(stage.name == "bucket" for stage in self.stages) else 0
        best = n
        for stage in self.stages:
            if stage.name == "bucket":
                n = (n + size - 1) // size
            if stage.bound is not None:
                best = min(best, stage.bound.max_f(n))
        return min(best, self.rule.bound.max_f(n))

    def run(self, updates: Updates, f: int, **params: Any) -> Result:
        """Run the stages, then the rule; the mask marks an update whose row counted in the rule.

        An update's row is its own mix after nnm and its bucket after bucketing.
        """
        if not self.stages:
            return self.rule.run(updates, f, dict(params))
        updates = _check_updates(updates)
        f = _check_int("f", f)
        n = updates.shape[0]
        owner = np.arange(n, dtype=np.int64)  # which current row each original update feeds
        bucket_params = {k: v for k, v in params.items() if k in STAGES["bucket"].params}
        rule_params = {k: v for k, v in params.items() if k not in bucket_params}
        bucketed = any(stage.name == "bucket" for stage in self.stages)
        if bucketed and "seed" not in bucket_params:
            raise AggregationError("bucket needs a seed (the chain derives it from the parent hash)")
        if not bucketed and bucket_params:
            raise AggregationError(f"{sorted(bucket_params)} only apply to a bucket+ rule")
        rows = updates
        for stage in self.stages:
            if stage.name == "nnm":
                rows = nnm(rows, f=f)
            else:
                rows, step = bucket(rows, **bucket_params)
                owner = step[owner]
        result, mask = self.rule.run(rows, f, rule_params)
        return result, np.asarray(mask[owner], dtype=np.bool_)


def _bucket_size(params: dict[str, Any]) -> int:
    size = _check_int("bucket_size", params.get("bucket_size", BUCKET_DEFAULT_SIZE))
    if size < 1:
        raise AggregationError(f"bucket_size must be >= 1, got {size}")
    return size


def parse_rule(name: object) -> Pipeline:
    """``"bucket+nnm+krum"`` as a :class:`Pipeline`, or AggregationError naming the valid choices."""
    if not isinstance(name, str):
        raise AggregationError(f"a rule is a name, got {name!r}")
    *stages, base = name.split("+")
    if base not in RULES or any(stage not in STAGES for stage in stages):
        raise AggregationError(
            f"unknown aggregation rule {name!r}; valid rules: {', '.join(sorted(RULES))}, "
            f"each optionally after one or more of {', '.join(p + '+' for p in PRE_AGGREGATORS)}"
        )
    return Pipeline(name, tuple(STAGES[stage] for stage in stages), RULES[base])


def is_rule(name: str) -> bool:
    """True for a rule :func:`aggregate` runs: a key of RULES, optionally with ``+`` stages."""
    try:
        parse_rule(name)
    except AggregationError:
        return False
    return True


def inner_count(rule: str, n: int, **params: Any) -> int:
    """How many vectors the base rule of ``rule`` sees for ``n`` updates (see :meth:`Pipeline.inner_count`)."""
    return parse_rule(rule).inner_count(n, **params)


def aggregate(rule: str, updates: Updates, *, f: int = 0, **params: Any) -> Result:
    """Aggregate ``updates`` with the named rule.

    Parameters
    ----------
    rule
        A key of :data:`RULES` (the task's aggregation rule), optionally after
        pre-aggregation stages from :data:`PRE_AGGREGATORS` joined by ``+``
        (``nnm+krum``, ``bucket+median``).
    updates
        (n, d) float32 C-contiguous array, one update per row.
    f
        The task's Byzantine bound; each rule checks n against its own bound.
    **params
        Rule-specific parameters (``m`` for ``multi_krum``; ``iters``, ``nu``
        for ``geomed``; ``tau``, ``iters``, ``reference`` for
        ``centered_clip``; ``seed``, ``bucket_size`` for ``bucket+``).

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
    return parse_rule(rule).run(updates, f, **params)
