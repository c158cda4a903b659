"""Compiled kernels behind :mod:`ml.aggregation` (private).

Every kernel here runs inside the state transition, so its output must be the
same bits on every machine and for every thread count. The rules that keep it
so (see ``docs`` of :mod:`ml.aggregation` for the exact summation orders):

* ``fastmath=False`` everywhere: LLVM may neither reassociate a sum nor fuse a
  multiply and an add into an FMA (an FMA rounds once, a mul+add twice, and
  only some CPUs have one).
* no BLAS, no ``np.sum``/``np.mean`` of floats: every sum is an explicit loop
  whose order is written down here;
* ``prange`` only over independent outputs: a block of coordinates, or a
  group of rows of the distance matrix, is computed whole by one thread, so
  how numba splits the work never changes a bit;
* comparisons are explicit compare-and-select (never ``min``/``max``, which
  LLVM may lower to ``minnum``, free to return either zero on ``+0.0`` vs
  ``-0.0``).

Tile sizes below are speed knobs only: each output element's arithmetic is
the same whatever the tile, so changing them never changes a result.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import numpy.typing as npt
from numba import prange

F32Matrix = npt.NDArray[np.float32]
F32Vector = npt.NDArray[np.float32]
F64Matrix = npt.NDArray[np.float64]
F64Vector = npt.NDArray[np.float64]
I64Vector = npt.NDArray[np.int64]

L1_TILE_BYTES = 32 * 1024  # per-core L1d on the machines we target; speed only
MEAN_TILE_COORDS = 4096  # float64 accumulators per mean block (32 KiB)
SIMD_COORDS = 16  # tile widths are a multiple of one AVX-512 float32 vector
DIST_TILE_COORDS = 512  # coordinates per transposed distance tile (speed only)
DIST_LANE_PAD = 8  # distance rows padded to whole float64 vectors


def network_tile_coords(n: int) -> int:
    """Coordinates per sorting-network block so an (n, tile) float32 block fits L1."""
    tile = L1_TILE_BYTES // (4 * max(n, 1))
    return max(SIMD_COORDS, tile // SIMD_COORDS * SIMD_COORDS)


# --------------------------------------------------------------------------
# Sorting networks
# --------------------------------------------------------------------------


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for ``n`` inputs.

    Built for the next power of two and restricted to wires below ``n``: the
    missing wires act as ``+inf`` inputs, which no comparator ever moves, so
    dropping every comparator that touches them leaves a valid network.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=256)
def sorting_network(n: int, keep_lo: int, keep_hi: int) -> tuple[I64Vector, I64Vector]:
    """Comparators that put the sorted values of positions ``keep_lo..keep_hi-1`` in place.

    The full Batcher network, pruned backwards: a comparator is kept only if
    one of its outputs feeds, directly or later, a wanted position. The median
    needs one or two positions, so about a third of the comparators go.

    Returns
    -------
    (lo_wires, hi_wires)
        Comparator ``c`` puts the smaller of wires ``lo_wires[c]`` and
        ``hi_wires[c]`` on ``lo_wires[c]``.
    """
    needed = set(range(keep_lo, keep_hi))
    kept: list[tuple[int, int]] = []
    for a, b in reversed(_batcher_pairs(n)):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.add(a)
            needed.add(b)
    kept.reverse()
    lo = np.array([a for a, _ in kept], dtype=np.int64)
    hi = np.array([b for _, b in kept], dtype=np.int64)
    return lo, hi


@numba.njit(cache=True, fastmath=False)
def _load_block(x: F32Matrix, rows: I64Vector, j0: int, width: int, buf: F32Matrix) -> None:
    """Copy ``x[rows, j0:j0+width]`` into the top-left of ``buf``; zero the rest of each row."""
    tile = buf.shape[1]
    for r in range(rows.shape[0]):
        src = rows[r]
        for t in range(width):
            buf[r, t] = x[src, j0 + t]
        for t in range(width, tile):
            buf[r, t] = np.float32(0.0)


@numba.njit(cache=True, fastmath=False)
def _run_network(buf: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector) -> None:
    """Apply a comparator network down the rows of ``buf``, every column at once."""
    tile = buf.shape[1]
    for c in range(lo_wires.shape[0]):
        a = lo_wires[c]
        b = hi_wires[c]
        for t in range(tile):
            u = buf[a, t]
            v = buf[b, t]
            swap = v < u  # equal values (and +0.0 / -0.0) never swap
            buf[a, t] = v if swap else u
            buf[b, t] = u if swap else v


# --------------------------------------------------------------------------
# Per-coordinate rules
# --------------------------------------------------------------------------


@numba.njit(cache=True, fastmath=False, parallel=True)
def mean_rows(x: F32Matrix, rows: I64Vector) -> F32Vector:
    """Per coordinate: float64 sum of ``x[rows[0]], x[rows[1]], ...`` in that order, / len(rows)."""
    d = x.shape[1]
    count = rows.shape[0]
    out = np.empty(d, dtype=np.float32)
    n_blocks = (d + MEAN_TILE_COORDS - 1) // MEAN_TILE_COORDS
    for blk in prange(n_blocks):
        j0 = blk * MEAN_TILE_COORDS
        width = min(MEAN_TILE_COORDS, d - j0)
        acc = np.zeros(width, dtype=np.float64)
        for r in range(count):
            src = rows[r]
            for t in range(width):
                acc[t] += np.float64(x[src, j0 + t])
        for t in range(width):
            out[j0 + t] = np.float32(acc[t] / count)
    return out


@numba.njit(cache=True, fastmath=False, parallel=True)
def median_cols(x: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector, tile: int) -> F32Vector:
    """Per coordinate median; even n: float64 midpoint of the two middle values, rounded once."""
    n, d = x.shape
    out = np.empty(d, dtype=np.float32)
    rows = np.arange(n)
    half = n // 2
    n_blocks = (d + tile - 1) // tile
    for blk in prange(n_blocks):
        j0 = blk * tile
        width = min(tile, d - j0)
        buf = np.empty((n, tile), dtype=np.float32)
        _load_block(x, rows, j0, width, buf)
        _run_network(buf, lo_wires, hi_wires)
        if n % 2 == 1:
            for t in range(width):
                out[j0 + t] = buf[half, t]
        else:
            for t in range(width):
                mid = (np.float64(buf[half - 1, t]) + np.float64(buf[half, t])) * 0.5
                out[j0 + t] = np.float32(mid)
    return out


@numba.njit(cache=True, fastmath=False, parallel=True)
def trimmed_mean_cols(
    x: F32Matrix, trim: int, lo_wires: I64Vector, hi_wires: I64Vector, tile: int
) -> F32Vector:
    """Per coordinate: sort, float64 sum of sorted positions trim..n-trim-1 ascending, / (n-2 trim)."""
    n, d = x.shape
    out = np.empty(d, dtype=np.float32)
    rows = np.arange(n)
    kept = n - 2 * trim
    n_blocks = (d + tile - 1) // tile
    for blk in prange(n_blocks):
        j0 = blk * tile
        width = min(tile, d - j0)
        buf = np.empty((n, tile), dtype=np.float32)
        acc = np.zeros(tile, dtype=np.float64)
        _load_block(x, rows, j0, width, buf)
        _run_network(buf, lo_wires, hi_wires)
        for r in range(trim, n - trim):
            for t in range(tile):
                acc[t] += np.float64(buf[r, t])
        for t in range(width):
            out[j0 + t] = np.float32(acc[t] / kept)
    return out


@numba.njit(cache=True, fastmath=False, parallel=True)
def closest_to_median_cols(
    x: F32Matrix,
    rows: I64Vector,
    beta: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
) -> F32Vector:
    """Bulyan's second step: per coordinate, mean of the ``beta`` values nearest the median.

    Over the values ``x[rows, j]`` (theta of them): sort; median ``m`` as in
    :func:`median_cols` but kept in float64; the ``beta`` values nearest ``m``
    are a run ``s[start:start+beta]`` of the sorted values, where ``start``
    counts the shifts ``s[k+beta] - m < m - s[k]`` (a value to the right of
    the run strictly nearer than its left end), so a tie in distance keeps
    the smaller value. The run is summed in float64 ascending, / beta.
    """
    d = x.shape[1]
    theta = rows.shape[0]
    out = np.empty(d, dtype=np.float32)
    half = theta // 2
    n_blocks = (d + tile - 1) // tile
    for blk in prange(n_blocks):
        j0 = blk * tile
        width = min(tile, d - j0)
        buf = np.empty((theta, tile), dtype=np.float32)
        med = np.empty(tile, dtype=np.float64)
        start = np.zeros(tile, dtype=np.int64)
        acc = np.zeros(tile, dtype=np.float64)
        _load_block(x, rows, j0, width, buf)
        _run_network(buf, lo_wires, hi_wires)
        if theta % 2 == 1:
            for t in range(tile):
                med[t] = np.float64(buf[half, t])
        else:
            for t in range(tile):
                med[t] = (np.float64(buf[half - 1, t]) + np.float64(buf[half, t])) * 0.5
        for k in range(theta - beta):
            for t in range(tile):
                right_gap = np.float64(buf[k + beta, t]) - med[t]
                left_gap = med[t] - np.float64(buf[k, t])
                start[t] += 1 if right_gap < left_gap else 0
        for r in range(theta):
            for t in range(tile):
                inside = start[t] <= r and r < start[t] + beta
                value = acc[t] + np.float64(buf[r, t])
                acc[t] = value if inside else acc[t]
        for t in range(width):
            out[j0 + t] = np.float32(acc[t] / beta)
    return out


# --------------------------------------------------------------------------
# Distances and Krum scores
# --------------------------------------------------------------------------


def row_groups(n: int, groups: int) -> I64Vector:
    """Split rows 0..n-1 into ``groups`` runs with about equal upper-triangle pair counts.

    Row ``i`` owns the pairs ``(i, j > i)``; a speed knob only, since each
    pair is summed whole by whichever group owns it.
    """
    groups = max(1, min(groups, n))
    total = n * (n - 1) // 2
    bounds = [0]
    owned = 0
    for i in range(n):
        owned += n - 1 - i
        if len(bounds) < groups and owned * groups >= total * len(bounds):
            bounds.append(i + 1)
    while len(bounds) < groups + 1:
        bounds.append(n)
    bounds[-1] = n
    return np.array(bounds, dtype=np.int64)


@numba.njit(cache=True, fastmath=False, parallel=True)
def pairwise_sq_distances(x: F32Matrix, bounds: I64Vector) -> F64Matrix:
    """Squared Euclidean distances, each summed in float64 sequentially over coordinates.

    ``dist[i, j] = sum over k = 0, 1, ..., d-1 of (float64(x[i,k]) - float64(x[j,k]))**2``,
    added in that order, one rounding per step; the matrix is symmetric with
    a zero diagonal. Each group of rows (``bounds``) runs in one thread and
    walks the coordinates in tiles, transposing each tile so the inner loop
    runs across ``j`` (many pairs side by side, each still in increasing k).
    """
    n, d = x.shape
    padded = (n + DIST_LANE_PAD - 1) // DIST_LANE_PAD * DIST_LANE_PAD
    dist = np.zeros((n, n), dtype=np.float64)
    n_groups = bounds.shape[0] - 1
    for g in prange(n_groups):
        i0 = bounds[g]
        i1 = bounds[g + 1]
        if i1 <= i0:
            continue
        tile = np.zeros((DIST_TILE_COORDS, padded), dtype=np.float64)
        acc = np.zeros((i1 - i0, padded), dtype=np.float64)
        for k0 in range(0, d, DIST_TILE_COORDS):
            width = min(DIST_TILE_COORDS, d - k0)
            for j in range(i0, n):
                for k in range(width):
                    tile[k, j] = np.float64(x[j, k0 + k])
            for i in range(i0, i1):
                first = (i + 1) // DIST_LANE_PAD * DIST_LANE_PAD
                for k in range(width):
                    xi = tile[k, i]
                    for j in range(first, padded):
                        delta = xi - tile[k, j]
                        acc[i - i0, j] += delta * delta
        for i in range(i0, i1):
            for j in range(i + 1, n):
                dist[i, j] = acc[i - i0, j]
                dist[j, i] = acc[i - i0, j]
    return dist


@numba.njit(cache=True, fastmath=False)
def krum_scores(dist: F64Matrix, alive: npt.NDArray[np.bool_], f: int) -> F64Vector:
    """Krum score of every alive row among the alive rows (dead rows score +inf).

    With ``r`` rows alive, a row's score is the float64 sum, ascending, of its
    ``max(1, r - f - 2)`` smallest squared distances to the other alive rows
    (fewer if fewer exist).
    """
    n = dist.shape[0]
    alive_count = 0
    for i in range(n):
        if alive[i]:
            alive_count += 1
    neighbours = max(1, alive_count - f - 2)
    scores = np.full(n, np.inf, dtype=np.float64)
    others = np.empty(n, dtype=np.float64)
    for i in range(n):
        if not alive[i]:
            continue
        m = 0
        for j in range(n):
            if alive[j] and j != i:
                others[m] = dist[i, j]
                m += 1
        ordered = np.sort(others[:m])
        total = 0.0
        for q in range(min(neighbours, m)):
            total += ordered[q]
        scores[i] = total
    return scores
