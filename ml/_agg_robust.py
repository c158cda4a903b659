"""Compiled kernels of the newer robust rules behind :mod:`ml.aggregation` (private).

Geometric median (smoothed Weiszfeld), centered clipping, nearest-neighbour
mixing and bucketing. The rules that keep the classic kernels bit-exact
(:mod:`ml._agg_kernels`) hold here too:

* ``fastmath=False``: no reassociation, no fused multiply-add;
* no BLAS, no ``np.sum``/``np.mean``/``np.linalg.norm`` of floats: every sum is
  an explicit loop in the order its docstring gives;
* everything is float64 inside and rounded to float32 once, at the end.

These kernels are serial: the rules run on a block's few updates (n is tens
at most, d a few thousand), where waking worker threads costs more than the
arithmetic, and a serial loop has one summation order by construction.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import numpy.typing as npt

F32Matrix = npt.NDArray[np.float32]
F32Vector = npt.NDArray[np.float32]
F64Matrix = npt.NDArray[np.float64]
F64Vector = npt.NDArray[np.float64]
I64Vector = npt.NDArray[np.int64]


@numba.njit(cache=True, fastmath=False)
def _distance_to(x: F32Matrix, i: int, z: F64Vector) -> float:
    """``sqrt(sum_k (float64(x[i, k]) - z[k])**2)``, summed in increasing ``k``."""
    row = x[i]
    total = 0.0
    for k in range(z.shape[0]):
        gap = np.float64(row[k]) - z[k]
        total += gap * gap
    return math.sqrt(total)


@numba.njit(cache=True, fastmath=False)
def _mean64(x: F32Matrix) -> F64Vector:
    """Per coordinate float64 sum of the rows in index order, divided by n (not rounded)."""
    n, d = x.shape
    acc = np.zeros(d, dtype=np.float64)
    for i in range(n):
        row = x[i]
        for k in range(d):
            acc[k] += np.float64(row[k])
    for k in range(d):
        acc[k] = acc[k] / n
    return acc


@numba.njit(cache=True, fastmath=False)
def weiszfeld(x: F32Matrix, iters: int, nu: float) -> F32Vector:
    """Smoothed Weiszfeld iterations for the geometric median, from the mean.

    ``z_0`` is the float64 mean (rows in index order). Each iteration:
    ``beta_i = 1 / max(nu, ||z - x_i||)`` (distances as :func:`_distance_to`,
    the max an explicit compare), then per coordinate
    ``z_k = (sum_i beta_i * x_ik) / (sum_i beta_i)`` with both sums in float64
    in increasing ``i``. ``z`` stays float64 and is rounded to float32 once.
    """
    n, d = x.shape
    z = _mean64(x)
    beta = np.empty(n, dtype=np.float64)
    for _ in range(iters):
        weight_total = 0.0
        for i in range(n):
            dist = _distance_to(x, i, z)
            smoothed = dist if dist > nu else nu
            beta[i] = 1.0 / smoothed
            weight_total += beta[i]
        acc = np.zeros(d, dtype=np.float64)
        for i in range(n):
            row = x[i]
            w = beta[i]
            for k in range(d):
                acc[k] += w * np.float64(row[k])
        for k in range(d):
            z[k] = acc[k] / weight_total
    out = np.empty(d, dtype=np.float32)
    for k in range(d):
        out[k] = np.float32(z[k])
    return out


@numba.njit(cache=True, fastmath=False)
def centered_clip(x: F32Matrix, reference: F32Vector, tau: float, iters: int) -> F32Vector:
    """Centered clipping from ``reference``: ``iters`` steps of clipped averaging.

    ``v_0 = float64(reference)``. Each step: ``c_i = min(1, tau / ||x_i - v||)``
    (1 when the distance is 0 or at most ``tau``; else the one float64 division),
    then per coordinate ``v_k += (sum_i c_i * (x_ik - v_k)) / n`` with the sum in
    float64 in increasing ``i`` (``x_ik - v_k`` in float64). ``v`` is rounded to
    float32 once at the end.
    """
    n, d = x.shape
    v = np.empty(d, dtype=np.float64)
    for k in range(d):
        v[k] = np.float64(reference[k])
    scale = np.empty(n, dtype=np.float64)
    for _ in range(iters):
        for i in range(n):
            dist = _distance_to(x, i, v)
            scale[i] = tau / dist if dist > tau else 1.0
        acc = np.zeros(d, dtype=np.float64)
        for i in range(n):
            row = x[i]
            c = scale[i]
            for k in range(d):
                acc[k] += c * (np.float64(row[k]) - v[k])
        for k in range(d):
            v[k] = v[k] + acc[k] / n
    out = np.empty(d, dtype=np.float32)
    for k in range(d):
        out[k] = np.float32(v[k])
    return out


@numba.njit(cache=True, fastmath=False)
def nearest_neighbour_mix(x: F32Matrix, dist: F64Matrix, keep: int) -> F32Matrix:
    """Row ``i`` of the result: the mean of the ``keep`` rows nearest ``x[i]`` (itself included).

    Nearness is ``dist[i, j]`` (squared distances, zero diagonal), ties broken
    by the lower index ``j`` (a stable sort of the row). The chosen rows are
    summed in float64 in increasing index order, divided by ``keep``, rounded
    to float32 once.
    """
    n, d = x.shape
    out = np.empty((n, d), dtype=np.float32)
    chosen = np.zeros(n, dtype=np.bool_)
    acc = np.empty(d, dtype=np.float64)
    for i in range(n):
        order = np.argsort(dist[i], kind="mergesort")
        for j in range(n):
            chosen[j] = False
        for q in range(keep):
            chosen[order[q]] = True
        for k in range(d):
            acc[k] = 0.0
        for j in range(n):
            if chosen[j]:
                row = x[j]
                for k in range(d):
                    acc[k] += np.float64(row[k])
        for k in range(d):
            out[i, k] = np.float32(acc[k] / keep)
    return out


@numba.njit(cache=True, fastmath=False)
def bucket_means(x: F32Matrix, order: I64Vector, size: int) -> F32Matrix:
    """Bucket ``b`` holds rows ``order[b*size : (b+1)*size]`` (the last may be short).

    Each bucket's mean: float64 sum of its rows in bucket order, divided by
    its count, rounded to float32 once.
    """
    n, d = x.shape
    buckets = (n + size - 1) // size
    out = np.empty((buckets, d), dtype=np.float32)
    acc = np.empty(d, dtype=np.float64)
    for b in range(buckets):
        first = b * size
        stop = first + size if first + size < n else n
        for k in range(d):
            acc[k] = 0.0
        for r in range(first, stop):
            row = x[order[r]]
            for k in range(d):
                acc[k] += np.float64(row[k])
        count = stop - first
        for k in range(d):
            out[b, k] = np.float32(acc[k] / count)
    return out
