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
PARALLEL_MIN_ELEMENTS = 1 << 23  # below this much work (~8M values) one thread is faster
CHUNKS_PER_THREAD = 4  # coordinate chunks per worker thread, to even out load
ROWS_PER_PASS = 4  # rows added per pass over a mean block (fewer accumulator loads)
SIMD_COORDS = 16  # tile widths are a multiple of one AVX-512 float32 vector
DIST_TILE_COORDS = 4096  # coordinates per distance tile, a multiple of DIST_LANES (speed only)
DIST_LANES = 128  # independent partial sums per distance: PART OF CONSENSUS (see below)


def _blocks(d: int, tile: int) -> int:
    return (d + tile - 1) // tile


def _chunks(elements: int) -> int:
    """Work chunks for a per-coordinate kernel: 1 (run serially) below ``PARALLEL_MIN_ELEMENTS``.

    Waking numba's worker threads costs a scheduler time slice when the
    machine is busy, far more than small inputs take serially. Speed only:
    every output element is computed the same way in either path.
    """
    threads = numba.get_num_threads()
    if threads <= 1 or elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return threads * CHUNKS_PER_THREAD


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
    """Copy ``x[rows, j0:j0+width]`` into the left of ``buf``; zero the rest of each row.

    Row slices (not ``x[i, j0 + t]``) keep the inner loops contiguous: numba
    cannot prove ``j0 + t >= 0``, and its negative-index fix-up turns a
    vector load into a gather.
    """
    tile = buf.shape[1]
    for r in range(rows.shape[0]):
        src = x[rows[r], j0 : j0 + width]
        dst = buf[r]
        for t in range(width):
            dst[t] = src[t]
        for t in range(width, tile):
            dst[t] = np.float32(0.0)


@numba.njit(cache=True, fastmath=False)
def _run_network(buf: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector) -> None:
    """Apply a comparator network down the rows of ``buf``, every column at once."""
    tile = buf.shape[1]
    for c in range(lo_wires.shape[0]):
        low = buf[lo_wires[c]]
        high = buf[hi_wires[c]]
        for t in range(tile):
            u = low[t]
            v = high[t]
            swap = v < u  # equal values (and +0.0 / -0.0) never swap
            low[t] = v if swap else u
            high[t] = u if swap else v


@numba.njit(cache=True, fastmath=False)
def _accumulate_rows(x: F32Matrix, rows: I64Vector, j0: int, acc: F64Vector) -> None:
    """``acc[t] += float64(x[rows[r], j0 + t])`` for r = 0, 1, ... in order.

    Four rows per pass, written as ``(((acc + a) + b) + c) + e``: the same
    additions in the same order as one row per pass, with a quarter of the
    loads and stores of ``acc``.
    """
    width = acc.shape[0]
    count = rows.shape[0]
    r = 0
    while r + ROWS_PER_PASS <= count:
        a = x[rows[r], j0 : j0 + width]
        b = x[rows[r + 1], j0 : j0 + width]
        c = x[rows[r + 2], j0 : j0 + width]
        e = x[rows[r + 3], j0 : j0 + width]
        for t in range(width):
            total = acc[t] + np.float64(a[t])
            total = total + np.float64(b[t])
            total = total + np.float64(c[t])
            acc[t] = total + np.float64(e[t])
        r += ROWS_PER_PASS
    while r < count:
        a = x[rows[r], j0 : j0 + width]
        for t in range(width):
            acc[t] += np.float64(a[t])
        r += 1


# --------------------------------------------------------------------------
# Per-coordinate rules
# --------------------------------------------------------------------------


@numba.njit(cache=True, fastmath=False)
def _mean_block(x: F32Matrix, rows: I64Vector, j0: int, out: F32Vector) -> None:
    acc = np.zeros(out.shape[0], dtype=np.float64)
    _accumulate_rows(x, rows, j0, acc)
    count = rows.shape[0]
    for t in range(out.shape[0]):
        out[t] = np.float32(acc[t] / count)


@numba.njit(cache=True, fastmath=False)
def _mean_range(x: F32Matrix, rows: I64Vector, out: F32Vector, first: int, stop: int) -> None:
    d = out.shape[0]
    for blk in range(first, stop):
        j0 = blk * MEAN_TILE_COORDS
        width = min(MEAN_TILE_COORDS, d - j0)
        _mean_block(x, rows, j0, out[j0 : j0 + width])


@numba.njit(cache=True, fastmath=False, parallel=True)
def _mean_parallel(x: F32Matrix, rows: I64Vector, out: F32Vector, n_chunks: int) -> None:
    n_blocks = (out.shape[0] + MEAN_TILE_COORDS - 1) // MEAN_TILE_COORDS
    for c in prange(n_chunks):
        _mean_range(x, rows, out, c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks)


def mean_rows(x: F32Matrix, rows: I64Vector) -> F32Vector:
    """Per coordinate: float64 sum of ``x[rows[0]], x[rows[1]], ...`` in that order, / len(rows)."""
    d = x.shape[1]
    out = np.empty(d, dtype=np.float32)
    chunks = _chunks(rows.shape[0] * d)
    if chunks > 1:
        _mean_parallel(x, rows, out, chunks)
    else:
        _mean_range(x, rows, out, 0, _blocks(d, MEAN_TILE_COORDS))
    return out


@numba.njit(cache=True, fastmath=False)
def _median_block(
    x: F32Matrix, j0: int, lo_wires: I64Vector, hi_wires: I64Vector, buf: F32Matrix, out: F32Vector
) -> None:
    n = buf.shape[0]
    half = n // 2
    _load_block(x, np.arange(n), j0, out.shape[0], buf)
    _run_network(buf, lo_wires, hi_wires)
    upper = buf[half]
    if n % 2 == 1:
        for t in range(out.shape[0]):
            out[t] = upper[t]
    else:
        lower = buf[half - 1]
        for t in range(out.shape[0]):
            out[t] = np.float32((np.float64(lower[t]) + np.float64(upper[t])) * 0.5)


@numba.njit(cache=True, fastmath=False)
def _median_range(
    x: F32Matrix,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    first: int,
    stop: int,
) -> None:
    d = out.shape[0]
    buf = np.empty((x.shape[0], tile), dtype=np.float32)
    for blk in range(first, stop):
        j0 = blk * tile
        width = min(tile, d - j0)
        _median_block(x, j0, lo_wires, hi_wires, buf, out[j0 : j0 + width])


@numba.njit(cache=True, fastmath=False, parallel=True)
def _median_parallel(
    x: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector, tile: int, out: F32Vector, n_chunks: int
) -> None:
    n_blocks = (out.shape[0] + tile - 1) // tile
    for c in prange(n_chunks):
        first = c * n_blocks // n_chunks
        _median_range(x, lo_wires, hi_wires, tile, out, first, (c + 1) * n_blocks // n_chunks)


def median_cols(x: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector, tile: int) -> F32Vector:
    """Per coordinate median; even n: float64 midpoint of the two middle values, rounded once."""
    n, d = x.shape
    out = np.empty(d, dtype=np.float32)
    chunks = _chunks(n * d)
    if chunks > 1:
        _median_parallel(x, lo_wires, hi_wires, tile, out, chunks)
    else:
        _median_range(x, lo_wires, hi_wires, tile, out, 0, _blocks(d, tile))
    return out


@numba.njit(cache=True, fastmath=False)
def _trimmed_block(
    x: F32Matrix,
    j0: int,
    trim: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    buf: F32Matrix,
    out: F32Vector,
) -> None:
    n, tile = buf.shape
    _load_block(x, np.arange(n), j0, out.shape[0], buf)
    _run_network(buf, lo_wires, hi_wires)
    acc = np.zeros(tile, dtype=np.float64)
    for r in range(trim, n - trim):
        row = buf[r]
        for t in range(tile):
            acc[t] += np.float64(row[t])
    kept = n - 2 * trim
    for t in range(out.shape[0]):
        out[t] = np.float32(acc[t] / kept)


@numba.njit(cache=True, fastmath=False)
def _trimmed_range(
    x: F32Matrix,
    trim: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    first: int,
    stop: int,
) -> None:
    d = out.shape[0]
    buf = np.empty((x.shape[0], tile), dtype=np.float32)
    for blk in range(first, stop):
        j0 = blk * tile
        width = min(tile, d - j0)
        _trimmed_block(x, j0, trim, lo_wires, hi_wires, buf, out[j0 : j0 + width])


@numba.njit(cache=True, fastmath=False, parallel=True)
def _trimmed_parallel(
    x: F32Matrix,
    trim: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    n_chunks: int,
) -> None:
    n_blocks = (out.shape[0] + tile - 1) // tile
    for c in prange(n_chunks):
        first = c * n_blocks // n_chunks
        stop = (c + 1) * n_blocks // n_chunks
        _trimmed_range(x, trim, lo_wires, hi_wires, tile, out, first, stop)


def trimmed_mean_cols(
    x: F32Matrix, trim: int, lo_wires: I64Vector, hi_wires: I64Vector, tile: int
) -> F32Vector:
    """Per coordinate: sort, float64 sum of sorted positions trim..n-trim-1 ascending, / (n-2 trim)."""
    n, d = x.shape
    out = np.empty(d, dtype=np.float32)
    chunks = _chunks(n * d)
    if chunks > 1:
        _trimmed_parallel(x, trim, lo_wires, hi_wires, tile, out, chunks)
    else:
        _trimmed_range(x, trim, lo_wires, hi_wires, tile, out, 0, _blocks(d, tile))
    return out


@numba.njit(cache=True, fastmath=False)
def _closest_block(
    x: F32Matrix,
    rows: I64Vector,
    j0: int,
    beta: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    buf: F32Matrix,
    out: F32Vector,
) -> None:
    theta, tile = buf.shape
    half = theta // 2
    _load_block(x, rows, j0, out.shape[0], buf)
    _run_network(buf, lo_wires, hi_wires)
    med = np.empty(tile, dtype=np.float64)
    upper = buf[half]
    if theta % 2 == 1:
        for t in range(tile):
            med[t] = np.float64(upper[t])
    else:
        lower = buf[half - 1]
        for t in range(tile):
            med[t] = (np.float64(lower[t]) + np.float64(upper[t])) * 0.5
    start = np.zeros(tile, dtype=np.int64)
    for k in range(theta - beta):
        left = buf[k]
        right = buf[k + beta]
        for t in range(tile):
            right_gap = np.float64(right[t]) - med[t]
            left_gap = med[t] - np.float64(left[t])
            start[t] += 1 if right_gap < left_gap else 0
    acc = np.zeros(tile, dtype=np.float64)
    for r in range(theta):
        row = buf[r]
        for t in range(tile):
            inside = start[t] <= r and r < start[t] + beta
            total = acc[t] + np.float64(row[t])
            acc[t] = total if inside else acc[t]
    for t in range(out.shape[0]):
        out[t] = np.float32(acc[t] / beta)


@numba.njit(cache=True, fastmath=False)
def _closest_range(
    x: F32Matrix,
    rows: I64Vector,
    beta: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    first: int,
    stop: int,
) -> None:
    d = out.shape[0]
    buf = np.empty((rows.shape[0], tile), dtype=np.float32)
    for blk in range(first, stop):
        j0 = blk * tile
        width = min(tile, d - j0)
        _closest_block(x, rows, j0, beta, lo_wires, hi_wires, buf, out[j0 : j0 + width])


@numba.njit(cache=True, fastmath=False, parallel=True)
def _closest_parallel(
    x: F32Matrix,
    rows: I64Vector,
    beta: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    n_chunks: int,
) -> None:
    n_blocks = (out.shape[0] + tile - 1) // tile
    for c in prange(n_chunks):
        first = c * n_blocks // n_chunks
        stop = (c + 1) * n_blocks // n_chunks
        _closest_range(x, rows, beta, lo_wires, hi_wires, tile, out, first, stop)


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
    out = np.empty(d, dtype=np.float32)
    chunks = _chunks(rows.shape[0] * d)
    if chunks > 1:
        _closest_parallel(x, rows, beta, lo_wires, hi_wires, tile, out, chunks)
    else:
        _closest_range(x, rows, beta, lo_wires, hi_wires, tile, out, 0, _blocks(d, tile))
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


@numba.njit(cache=True, fastmath=False)
def _add_squared_gaps(a: F32Vector, b: F32Vector, lanes: F64Vector) -> None:
    """``lanes[q] += (float64(a[k]) - float64(b[k]))**2`` for every k with k % L == q.

    ``a`` and ``b`` start at a multiple of ``L = lanes.shape[0]`` of the full
    vectors, so lane ``q`` always holds coordinates ``q, q + L, q + 2L, ...``
    in increasing order, whatever the tiling.
    """
    width = a.shape[0]
    n_lanes = lanes.shape[0]
    for kb in range(0, width, n_lanes):
        left = a[kb : kb + n_lanes]
        right = b[kb : kb + n_lanes]
        for q in range(left.shape[0]):
            delta = np.float64(left[q]) - np.float64(right[q])
            lanes[q] += delta * delta


@numba.njit(cache=True, fastmath=False)
def _distance_rows(x: F32Matrix, i0: int, i1: int, lanes: F64Matrix) -> None:
    """Accumulate the lanes of every pair ``(i, j > i)`` with ``i0 <= i < i1``.

    ``lanes`` is (i1 - i0, n, L). Coordinates are walked in tiles so the rows
    of a tile stay in cache while every pair of the group uses them.
    """
    n, d = x.shape
    for k0 in range(0, d, DIST_TILE_COORDS):
        width = min(DIST_TILE_COORDS, d - k0)
        for i in range(i0, i1):
            a = x[i, k0 : k0 + width]
            for j in range(i + 1, n):
                _add_squared_gaps(a, x[j, k0 : k0 + width], lanes[i - i0, j])


@numba.njit(cache=True, fastmath=False)
def _distance_group(x: F32Matrix, i0: int, i1: int, dist: F64Matrix) -> None:
    """Fill ``dist[i, j]`` and ``dist[j, i]`` for ``i0 <= i < i1``, ``j > i``."""
    n = x.shape[0]
    if i1 <= i0:
        return
    lanes = np.zeros((i1 - i0, n, DIST_LANES), dtype=np.float64)
    _distance_rows(x, i0, i1, lanes)
    for i in range(i0, i1):
        for j in range(i + 1, n):
            total = 0.0
            for q in range(DIST_LANES):
                total += lanes[i - i0, j, q]
            dist[i, j] = total
            dist[j, i] = total


@numba.njit(cache=True, fastmath=False, parallel=True)
def _distances_parallel(x: F32Matrix, bounds: I64Vector, dist: F64Matrix) -> None:
    for g in prange(bounds.shape[0] - 1):
        _distance_group(x, bounds[g], bounds[g + 1], dist)


def pairwise_sq_distances(x: F32Matrix, groups: int) -> F64Matrix:
    """Squared Euclidean distances in float64, in a fixed order of additions.

    For a pair (i, j): lane ``q`` (``q = 0 .. L-1``, ``L = DIST_LANES``) sums
    ``(float64(x[i,k]) - float64(x[j,k]))**2`` over ``k = q, q + L, q + 2L, ...``
    in increasing k; then ``dist[i, j] = (((lane_0 + lane_1) + lane_2) + ...)``.
    L independent sums let the compiler run L pairs of coordinates side by
    side in vector registers without reordering any addition; L is part of
    consensus, the tile size and thread count are not. Symmetric, zero
    diagonal. ``groups`` row groups (balanced by pair count, :func:`row_groups`) each run
    whole in one thread; below ``PARALLEL_MIN_ELEMENTS`` of work, one group.
    """
    n, d = x.shape
    dist = np.zeros((n, n), dtype=np.float64)
    pairs = n * (n - 1) // 2
    if groups > 1 and pairs * d >= PARALLEL_MIN_ELEMENTS:
        _distances_parallel(x, row_groups(n, groups), dist)
    else:
        _distance_group(x, 0, n, dist)
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
