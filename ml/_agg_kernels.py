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
  run of pair tiles of the distance matrix, is computed whole by one thread,
  so how numba splits the work never changes a bit;
* the distance kernel's inner loop is LLVM IR built by hand (a numba
  intrinsic): vectors of float64 lanes, plain ``fsub``/``fmul``/``fadd`` with
  no fast-math flags, so it obeys the same two rules above (some subtractions
  are issued as ``fma(u, 1.0, -v)``: exactly ``u - v`` rounded once, the same
  bits, on otherwise idle multiply pipes);
* comparisons are explicit compare-and-select (never ``min``/``max``, which
  LLVM may lower to ``minnum``, free to return either zero on ``+0.0`` vs
  ``-0.0``).

Tile sizes below are speed knobs only: each output element's arithmetic is
the same whatever the tile, so changing them never changes a result.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ml import _agg_strips, _jit

F32Matrix = npt.NDArray[np.float32]
F32Vector = npt.NDArray[np.float32]
F64Matrix = npt.NDArray[np.float64]
F64Vector = npt.NDArray[np.float64]
I64Vector = npt.NDArray[np.int64]
I64Matrix = npt.NDArray[np.int64]
F64Array3 = npt.NDArray[np.float64]

L1_TILE_BYTES = 32 * 1024  # per-core L1d on the machines we target; speed only
MEAN_TILE_COORDS = 65536  # float64 accumulators per mean block (512 KiB, in L2): long row streams; speed only
PARALLEL_MIN_ELEMENTS = 1 << 23  # below this much work (~8M values) one thread is faster
CHUNKS_PER_THREAD = 4  # coordinate chunks per worker thread, to even out load
ROWS_PER_PASS = 4  # rows added per pass over a mean block (fewer accumulator loads)
SIMD_COORDS = 16  # tile widths are a multiple of one AVX-512 float32 vector
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
def _store_means(acc: F64Vector, count: int, out: F32Vector) -> None:
    """``out[t] = float32(acc[t] / count)``: each float64 sum divided and rounded once."""
    for t in range(out.shape[0]):
        out[t] = np.float32(acc[t] / count)


@numba.njit(cache=True, fastmath=False)
def _mean_block(x: F32Matrix, rows: I64Vector, j0: int, out: F32Vector) -> None:
    acc = np.zeros(out.shape[0], dtype=np.float64)
    _accumulate_rows(x, rows, j0, acc)
    _store_means(acc, rows.shape[0], out)


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


# The three rules below share one driver: load a block of coordinates of
# ``x[rows]``, sort it down the rows with a comparator network, then reduce
# the sorted block per coordinate with the rule's own finisher. The rule is
# an integer code tested once per block, not a function argument: a kernel
# taking a function is typed by that function's identity, so numba's on-disk
# cache would miss in every new process.

NETWORK_MEDIAN = 0  # param unused
NETWORK_TRIMMED = 1  # param = values cut from each end
NETWORK_CLOSEST = 2  # param = beta, the values averaged around the median
STRIP_RULES = {NETWORK_MEDIAN: _agg_strips.MEDIAN, NETWORK_TRIMMED: _agg_strips.TRIMMED,
               NETWORK_CLOSEST: _agg_strips.CLOSEST}


@numba.njit(cache=True, fastmath=False)
def _median_of_sorted(buf: F32Matrix, out: F32Vector) -> None:
    n = buf.shape[0]
    half = n // 2
    upper = buf[half]
    if n % 2 == 1:
        for t in range(out.shape[0]):
            out[t] = upper[t]
    else:
        lower = buf[half - 1]
        for t in range(out.shape[0]):
            out[t] = np.float32((np.float64(lower[t]) + np.float64(upper[t])) * 0.5)


@numba.njit(cache=True, fastmath=False)
def _trimmed_of_sorted(buf: F32Matrix, trim: int, out: F32Vector) -> None:
    n, tile = buf.shape
    acc = np.zeros(tile, dtype=np.float64)
    for r in range(trim, n - trim):
        row = buf[r]
        for t in range(tile):
            acc[t] += np.float64(row[t])
    _store_means(acc, n - 2 * trim, out)


@numba.njit(cache=True, fastmath=False)
def _closest_of_sorted(buf: F32Matrix, beta: int, out: F32Vector) -> None:
    theta, tile = buf.shape
    half = theta // 2
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
    _store_means(acc, beta, out)


@numba.njit(cache=True, fastmath=False)
def _network_range(
    x: F32Matrix,
    rows: I64Vector,
    rule: int,
    param: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
    out: F32Vector,
    first: int,
    stop: int,
) -> None:
    """Blocks ``first .. stop-1`` of ``tile`` coordinates: load, sort, reduce by ``rule``."""
    d = out.shape[0]
    buf = np.empty((rows.shape[0], tile), dtype=np.float32)
    for blk in range(first, stop):
        j0 = blk * tile
        width = min(tile, d - j0)
        block_out = out[j0 : j0 + width]
        _load_block(x, rows, j0, width, buf)
        _run_network(buf, lo_wires, hi_wires)
        if rule == NETWORK_MEDIAN:
            _median_of_sorted(buf, block_out)
        elif rule == NETWORK_TRIMMED:
            _trimmed_of_sorted(buf, param, block_out)
        else:
            _closest_of_sorted(buf, param, block_out)


@numba.njit(cache=True, fastmath=False, parallel=True)
def _network_parallel(
    x: F32Matrix,
    rows: I64Vector,
    rule: int,
    param: int,
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
        _network_range(x, rows, rule, param, lo_wires, hi_wires, tile, out, first, stop)


def _network_cols(
    x: F32Matrix,
    rows: I64Vector,
    rule: int,
    param: int,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
    tile: int,
) -> F32Vector:
    """Run a sorting-network rule over every coordinate of ``x[rows]``, in parallel chunks if large.

    Large inputs of at most :data:`ml._agg_strips.MAX_ROWS` rows take the
    register-resident kernel of :mod:`ml._agg_strips` (same operations, same
    bits); the rest the in-memory blocks below.
    """
    d = x.shape[1]
    if _agg_strips.applies(rows.shape[0], d) and x.flags.c_contiguous:
        return _agg_strips.run(STRIP_RULES[rule], param, x, rows, lo_wires, hi_wires)
    out = np.empty(d, dtype=np.float32)
    chunks = _chunks(rows.shape[0] * d)
    if chunks > 1:
        _network_parallel(x, rows, rule, param, lo_wires, hi_wires, tile, out, chunks)
    else:
        last = _blocks(d, tile)
        _network_range(x, rows, rule, param, lo_wires, hi_wires, tile, out, 0, last)
    return out


def median_cols(x: F32Matrix, lo_wires: I64Vector, hi_wires: I64Vector, tile: int) -> F32Vector:
    """Per coordinate median; even n: float64 midpoint of the two middle values, rounded once."""
    rows = np.arange(x.shape[0], dtype=np.int64)
    return _network_cols(x, rows, NETWORK_MEDIAN, 0, lo_wires, hi_wires, tile)


def trimmed_mean_cols(
    x: F32Matrix, trim: int, lo_wires: I64Vector, hi_wires: I64Vector, tile: int
) -> F32Vector:
    """Per coordinate: sort, float64 sum of sorted positions trim..n-trim-1 ascending, / (n-2 trim)."""
    rows = np.arange(x.shape[0], dtype=np.int64)
    return _network_cols(x, rows, NETWORK_TRIMMED, trim, lo_wires, hi_wires, tile)


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
    return _network_cols(x, rows, NETWORK_CLOSEST, beta, lo_wires, hi_wires, tile)


# --------------------------------------------------------------------------
# Distances and Krum scores
# --------------------------------------------------------------------------
#
# The pairwise kernel works on tiles of pairs. Rows are split into blocks of
# TILE_ROWS; a "cross" tile is every pair between two blocks (16 pairs over 8
# rows), a "diagonal" tile every pair inside one block (6 pairs over 4 rows).
# For one run of LANE_VECTOR lanes, the tile's rows are read once per step of
# DIST_LANES coordinates and every pair's partial sums stay in vector
# registers across the steps of a coordinate block: each lane still adds its
# own coordinates q, q + L, q + 2L, ... one at a time in increasing order, so
# the result is the documented order whatever the tile, block or vector width.
#
# Threads split the lanes, not the pairs: a thread owns a contiguous run of
# lanes for every pair, so it reads and widens only its own columns of each
# step (with two threads, each reads half the matrix once), where splitting
# the pairs made every thread read and widen all of it. A lane's additions are
# the same whichever thread makes them, so the split never changes a bit.
#
# Chunks. A thread walks its lanes one LANE_VECTOR at a time, DIST_CHUNK_STEPS
# steps at once: it widens that chunk of every row to float64 (exact), laid
# out step after step (64 contiguous bytes per row and step), and every tile
# runs over the whole chunk before the next one is widened. A tile's run
# therefore reads each of its rows as one contiguous stream, and the chunk
# (all n rows) stays in cache while all n(n-1)/2 pairs use it.
# Measured (n = 32, d = 1e6, one thread, half of the lanes, CPU time; the
# register-only floor of that work is ~14 ms):
#   * before: blocks of 32 steps x all of a thread's lanes, 512 KiB, each step
#     a run of the lanes at a stride of 512 bytes, which maps a tile's rows to
#     8 of L1's 64 sets: 24.8-25.2 ms in three processes of five, 30.2-32.6 ms
#     in the other two (the same code; these chunks: 23.2-25.7 in all five);
#   * these chunks: 23.2-23.6 ms at 24-48 steps (96 KiB at n = 32), 25.0 at
#     16 steps (32 KiB, L1-sized: the accumulators' load and store per run
#     cost more than L1 saves), 26.5 at 64;
#   * the pair loop alone on a chunk already in cache: ~15 ms; the rest is
#     the widening, which waits on memory (x on 4 KiB pages; on 2 MiB pages
#     the same code takes 21.7 ms). Software prefetch of the next chunk's
#     lines (bursts before a tile, one line per step inside the run, whole
#     blocks ahead, with a TLB-warming load per page) never helped on 4 KiB
#     pages (+-0.5 ms) and helped only on 2 MiB pages (21.7 -> 19.3 ms), so
#     none is issued. Widening inside the tile loop itself (one vector per
#     step of the next chunk) starved the loop on misses: 35-55 ms. Other
#     layouts measured and dropped: all of a thread's lanes widened at once,
#     vector after vector (25.5-26.5 ms); that, double-buffered and widened a
#     row at a time between the tiles (25.5-29.7); each diagonal tile widening
#     its own four rows as it runs (24.0-25.3); chunks longer than 48 steps
#     (25.5-29.2 at 64-160, padded or not).
# Threads keep static halves of the lanes. A scheme where a worker done with
# its own lane vectors takes over the others' free ones (atomics, no waiting)
# gave a better best time with a busy thread beside it (33.7-34.4 against
# 38.9-44.8 ms) but a worse median (84-92 against 63-72): a taken-over vector
# drags its sums and its lines of x to the other core.

TILE_ROWS = 4  # rows per block of a pair tile: 4 x 4 cross pairs fill 16 of 32 AVX-512 registers
TILE_SLOTS = 2 * TILE_ROWS  # row slots of a cross tile (a diagonal tile uses the first TILE_ROWS)
TILE_PAIRS = TILE_ROWS * TILE_ROWS  # pairs of a cross tile, the most of any tile
LANE_VECTOR = 8  # float64 lanes per accumulator vector (one AVX-512 register); speed only
LANE_GROUPS_MAX = DIST_LANES // LANE_VECTOR  # the most threads the lanes can be split over
F64_BYTES = 8
DIST_CHUNK_BYTES = 96 * 1024  # one widened chunk (n rows x steps x LANE_VECTOR float64), in L2; speed only
DIST_CHUNK_MIN_STEPS = 8  # shorter runs spend more on their accumulators' load and store than on the pairs
CROSS_TILE, DIAGONAL_TILE = 0, 1
CROSS_SLOT_PAIRS = tuple((a, TILE_ROWS + b) for a in range(TILE_ROWS) for b in range(TILE_ROWS))
DIAGONAL_SLOT_PAIRS = tuple((a, b) for a in range(TILE_ROWS) for b in range(a + 1, TILE_ROWS))
SLOT_PAIRS = np.full((2, TILE_PAIRS, 2), -1, dtype=np.int64)  # [kind, pair] -> (slot, slot)
SLOT_PAIRS[CROSS_TILE, : len(CROSS_SLOT_PAIRS)] = CROSS_SLOT_PAIRS
SLOT_PAIRS[DIAGONAL_TILE, : len(DIAGONAL_SLOT_PAIRS)] = DIAGONAL_SLOT_PAIRS


def _target_has_fma() -> bool:
    """Whether numba compiles for a CPU with FMA (``NUMBA_CPU_FEATURES`` if set, else the host)."""
    _, features = _jit.target()
    return "+fma" in features.split(",")


# Half the pairs' ``u - v`` is issued as ``fma(u, 1.0, -v)``: one rounding of the same exact
# value, so the same bits, but it runs on the multiply units, which the sub, mul, add of a
# term otherwise leave idle half the time (x86 runs adds and multiplies on separate pipes).
# Only where numba's target has FMA (elsewhere LLVM would call libm's fma: right but slow).
EXACT_FMA_SUBTRACT = _target_has_fma()

_item_pointer: Any = cgutils.get_item_pointer  # untyped in numba: typed here as Any for mypy
_get_or_insert_function: Any = cgutils.get_or_insert_function
_unpack_tuple: Any = cgutils.unpack_tuple


def _lane_run_kernel(slot_pairs: tuple[tuple[int, int], ...]) -> Any:
    """Build a numba intrinsic that runs one tile over one run of LANE_VECTOR lanes.

    ``kernel(rows, slots, k, steps, stride, lanes, lane0)``, ``rows`` a
    C-contiguous float64 matrix (a widened chunk of the updates, ``stride``
    values per step): for ``s in range(steps)`` and every pair ``p = (a, b)``
    of ``slot_pairs``, with ``u = rows[slots[a]]``, ``v = rows[slots[b]]``,
    ``c = k + s * stride``::

        lanes[p, lane0 + t] += (u[c + t] - v[c + t]) ** 2,  t < LANE_VECTOR

    written straight in LLVM IR as one subtract, one multiply and one add per
    element (no ``contract`` flag, so a product is never fused into a sum;
    with :data:`EXACT_FMA_SUBTRACT` every second pair's subtract is issued as
    ``fma(u, 1.0, -v)``, the same single rounding of ``u - v``), with every pair's
    accumulator a ``<LANE_VECTOR x double>`` loop-carried value: loaded once,
    stored once, whatever ``steps`` is. The caller guarantees every index is
    in bounds (no checks here).
    """
    rows_used = 1 + max(max(pair) for pair in slot_pairs)

    @intrinsic
    def kernel(
        typingctx: Any, x: Any, slots: Any, k: Any, steps: Any, stride: Any, lanes: Any, lane0: Any
    ) -> Any:
        for array in (x, lanes):
            if not (isinstance(array, types.Array) and array.dtype == types.float64):
                return None  # a typing error at compile time, never a wrong read
        sig = types.void(x, slots, k, steps, stride, lanes, lane0)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            x_ty, slots_ty, _, _, _, lanes_ty, _ = signature.args
            x_val, slots_val, k_val, steps_val, stride_val, lanes_val, lane0_val = args
            x_arr = context.make_array(x_ty)(context, builder, x_val)
            slots_arr = context.make_array(slots_ty)(context, builder, slots_val)
            lanes_arr = context.make_array(lanes_ty)(context, builder, lanes_val)
            i64 = ir.IntType(64)
            f64_vec = ir.VectorType(ir.DoubleType(), LANE_VECTOR)
            row_ptrs = []
            for slot in range(rows_used):
                slot_ptr = _item_pointer(
                    context, builder, slots_ty, slots_arr, [ir.Constant(i64, slot)]
                )
                row = builder.load(slot_ptr)
                row_ptrs.append(_item_pointer(context, builder, x_ty, x_arr, [row, k_val]))
            acc_ptrs = []
            for p in range(len(slot_pairs)):
                acc = _item_pointer(
                    context, builder, lanes_ty, lanes_arr, [ir.Constant(i64, p), lane0_val]
                )
                acc_ptrs.append(builder.bitcast(acc, f64_vec.as_pointer()))
            start = [builder.load(ptr, align=8) for ptr in acc_ptrs]
            one, fma = None, None
            if EXACT_FMA_SUBTRACT:
                fma = _get_or_insert_function(
                    builder.module, ir.FunctionType(f64_vec, [f64_vec] * 3), f"llvm.fma.v{LANE_VECTOR}f64"
                )
                # 1.0 passed through an empty asm: LLVM cannot see it is 1.0, so it cannot fold the
                # fma back into a subtraction (which would put it on the adders again).
                ones = ir.Constant(f64_vec, [ir.Constant(ir.DoubleType(), 1.0)] * LANE_VECTOR)
                one = builder.asm(ir.FunctionType(f64_vec, [f64_vec]), "", "=v,0", [ones], False)
            entry = builder.basic_block
            loop = builder.append_basic_block("lane_run.loop")
            done = builder.append_basic_block("lane_run.done")
            zero = ir.Constant(i64, 0)
            builder.cbranch(builder.icmp_signed(">", steps_val, zero), loop, done)

            builder.position_at_end(loop)
            step = builder.phi(i64)
            sums = [builder.phi(f64_vec) for _ in slot_pairs]
            offset = builder.mul(step, stride_val)
            values = []
            for ptr in row_ptrs:
                vec_ptr = builder.bitcast(builder.gep(ptr, [offset]), f64_vec.as_pointer())
                values.append(builder.load(vec_ptr, align=8))
            updated = []
            for p, ((a, b), total) in enumerate(zip(slot_pairs, sums, strict=True)):
                if one is not None and p % 2 == 1:
                    gap = builder.call(fma, [values[a], one, builder.fneg(values[b])])
                else:
                    gap = builder.fsub(values[a], values[b])
                updated.append(builder.fadd(total, builder.fmul(gap, gap)))
            next_step = builder.add(step, ir.Constant(i64, 1))
            latch = builder.basic_block
            step.add_incoming(zero, entry)
            step.add_incoming(next_step, latch)
            for phi, first, last in zip(sums, start, updated, strict=True):
                phi.add_incoming(first, entry)
                phi.add_incoming(last, latch)
            builder.cbranch(builder.icmp_signed("<", next_step, steps_val), loop, done)

            builder.position_at_end(done)
            finals = []
            for first, last in zip(start, updated, strict=True):
                final = builder.phi(f64_vec)  # every phi before the first store
                final.add_incoming(first, entry)
                final.add_incoming(last, latch)
                finals.append(final)
            for ptr, final in zip(acc_ptrs, finals, strict=True):
                builder.store(final, ptr, align=8)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


def _widen_chunk_typer(typingctx: Any, x: Any, k0: Any, steps: Any, chunk: Any) -> Any:
    """A numba intrinsic ``_widen_chunk(x, k0, steps, chunk)``: one chunk of every row, widened (exact).

    ``chunk[r, s * LANE_VECTOR + t] = float64(x[r, k0 + s * DIST_LANES + t])`` for every row ``r``,
    ``s < steps`` and ``t < LANE_VECTOR``: one vector load, ``fpext`` and store per row and step
    (numba's loop over a LANE_VECTOR-wide slice stays scalar). The caller guarantees the bounds.
    """
    for array, dtype in ((x, types.float32), (chunk, types.float64)):
        if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == dtype):
            return None  # a typing error at compile time, never a wrong read
    sig = types.void(x, k0, steps, chunk)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        x_ty, _, _, chunk_ty = signature.args
        x_val, k0_val, steps_val, chunk_val = args
        x_arr = context.make_array(x_ty)(context, builder, x_val)
        chunk_arr = context.make_array(chunk_ty)(context, builder, chunk_val)
        i64 = ir.IntType(64)
        narrow = ir.VectorType(ir.FloatType(), LANE_VECTOR).as_pointer()
        wide = ir.VectorType(ir.DoubleType(), LANE_VECTOR)
        rows = _unpack_tuple(builder, x_arr.shape, 2)[0]
        with cgutils.for_range(builder, rows) as row_loop:
            src = _item_pointer(context, builder, x_ty, x_arr, [row_loop.index, k0_val])
            dst = _item_pointer(context, builder, chunk_ty, chunk_arr, [row_loop.index, ir.Constant(i64, 0)])
            with cgutils.for_range(builder, steps_val) as step_loop:
                s = step_loop.index
                at = builder.gep(src, [builder.mul(s, ir.Constant(i64, DIST_LANES))])
                value = builder.fpext(builder.load(builder.bitcast(at, narrow), align=4), wide)
                to = builder.gep(dst, [builder.mul(s, ir.Constant(i64, LANE_VECTOR))])
                builder.store(value, builder.bitcast(to, wide.as_pointer()), align=8)
        return context.get_dummy_value()

    return sig, codegen


_widen_chunk: Any = intrinsic(_widen_chunk_typer)
_cross_lane_run = _lane_run_kernel(CROSS_SLOT_PAIRS)
_diagonal_lane_run = _lane_run_kernel(DIAGONAL_SLOT_PAIRS)


def pair_tiles(n: int) -> tuple[I64Matrix, I64Vector]:
    """The tiles covering every pair ``(i < j)`` of ``n`` rows exactly once.

    Returns
    -------
    (slots, kinds)
        ``slots[t]`` holds the tile's TILE_SLOTS row numbers, ``-1`` for a
        slot past the last row (a block of fewer than TILE_ROWS rows);
        ``kinds[t]`` is CROSS_TILE or DIAGONAL_TILE. Ordered block by block,
        each block's diagonal tile first.
    """
    blocks = (n + TILE_ROWS - 1) // TILE_ROWS
    block_rows = [
        [r if r < n else -1 for r in range(b * TILE_ROWS, (b + 1) * TILE_ROWS)]
        for b in range(blocks)
    ]
    slots: list[list[int]] = []
    kinds: list[int] = []
    for b in range(blocks):
        slots.append(block_rows[b] + [-1] * TILE_ROWS)
        kinds.append(DIAGONAL_TILE)
        for c in range(b + 1, blocks):
            slots.append(block_rows[b] + block_rows[c])
            kinds.append(CROSS_TILE)
    return np.array(slots, dtype=np.int64).reshape(-1, TILE_SLOTS), np.array(kinds, dtype=np.int64)


def lane_groups(groups: int) -> I64Vector:
    """Bounds of ``groups`` contiguous runs of lanes, each a multiple of LANE_VECTOR (speed only).

    Each run of lanes is computed whole, for every pair, by whichever thread
    owns it, so how the lanes are split never changes a bit.
    """
    groups = max(1, min(groups, LANE_GROUPS_MAX))
    return np.array([g * LANE_GROUPS_MAX // groups * LANE_VECTOR for g in range(groups + 1)], dtype=np.int64)


@numba.njit(cache=True, fastmath=False)
def _tile_tail(x: F32Matrix, slots: I64Vector, kind: int, k0: int, lanes: F64Matrix) -> None:
    """Add the coordinates ``k0 .. d-1`` (fewer than DIST_LANES) to lanes ``0 .. d-k0-1``.

    They come after every full step, so each lane still adds its coordinates
    in increasing order.
    """
    d = x.shape[1]
    for p in range(TILE_PAIRS):
        a = SLOT_PAIRS[kind, p, 0]
        if a < 0:
            break
        b = SLOT_PAIRS[kind, p, 1]
        u = x[max(slots[a], 0), k0:d]
        v = x[max(slots[b], 0), k0:d]
        acc = lanes[p]
        for t in range(u.shape[0]):
            gap = np.float64(u[t]) - np.float64(v[t])
            acc[t] += gap * gap


@numba.njit(cache=True)
def distance_chunk_steps(n: int) -> int:
    """Steps of DIST_LANES coordinates per chunk: n rows of LANE_VECTOR float64 lanes fill DIST_CHUNK_BYTES."""
    return max(DIST_CHUNK_MIN_STEPS, DIST_CHUNK_BYTES // (n * LANE_VECTOR * F64_BYTES))


@numba.njit(cache=True, fastmath=False)
def _distance_lanes(
    x: F32Matrix, safe: I64Matrix, kinds: I64Vector, lane_lo: int, lane_hi: int, lanes: F64Array3
) -> None:
    """Accumulate lanes ``lane_lo .. lane_hi-1`` of every tile over every full step.

    ``lanes[t]`` holds tile ``t``'s pairs. Coordinates go in chunks (see the
    section comment above): for each run of :func:`distance_chunk_steps`
    steps and each LANE_VECTOR of this run's lanes, the chunk of every row is
    widened once to float64 (exact) and every tile adds it to its lanes, so
    no tile converts a value again and each lane still adds its coordinates
    in increasing order. ``safe`` is the tiles' slots with a slot past the
    last row reading row 0 (its pairs are dropped later).
    """
    n, d = x.shape
    full_steps = d // DIST_LANES
    chunk_steps = distance_chunk_steps(n)
    chunk = np.empty((n, chunk_steps * LANE_VECTOR), dtype=np.float64)
    for s0 in range(0, full_steps, chunk_steps):
        steps = min(chunk_steps, full_steps - s0)
        for lane0 in range(lane_lo, lane_hi, LANE_VECTOR):
            _widen_chunk(x, s0 * DIST_LANES + lane0, steps, chunk)
            for t in range(kinds.shape[0]):
                if kinds[t] == CROSS_TILE:
                    _cross_lane_run(chunk, safe[t], 0, steps, LANE_VECTOR, lanes[t], lane0)
                else:
                    _diagonal_lane_run(chunk, safe[t], 0, steps, LANE_VECTOR, lanes[t], lane0)


@numba.njit(cache=True, fastmath=False, parallel=True)
def _distances_parallel(
    x: F32Matrix, safe: I64Matrix, kinds: I64Vector, bounds: I64Vector, lanes: F64Array3
) -> None:
    for g in prange(bounds.shape[0] - 1):
        _distance_lanes(x, safe, kinds, bounds[g], bounds[g + 1], lanes)


@numba.njit(cache=True, fastmath=False)
def _finish_distances(
    x: F32Matrix, slots: I64Matrix, kinds: I64Vector, lanes: F64Array3, dist: F64Matrix
) -> None:
    """Add the last, partial step to the lanes; ``dist[i, j] = dist[j, i]`` = the lanes summed in order."""
    tail = x.shape[1] // DIST_LANES * DIST_LANES
    for t in range(kinds.shape[0]):
        if tail < x.shape[1]:
            _tile_tail(x, slots[t], kinds[t], tail, lanes[t])
        for p in range(TILE_PAIRS):
            a = SLOT_PAIRS[kinds[t], p, 0]
            if a < 0:
                break
            i = slots[t, a]
            j = slots[t, SLOT_PAIRS[kinds[t], p, 1]]
            if i < 0 or j < 0:
                continue
            total = 0.0
            for q in range(DIST_LANES):
                total += lanes[t, p, q]
            dist[i, j] = total
            dist[j, i] = total


def pairwise_sq_distances(x: F32Matrix, groups: int) -> F64Matrix:
    """Squared Euclidean distances in float64, in a fixed order of additions.

    For a pair (i, j): lane ``q`` (``q = 0 .. L-1``, ``L = DIST_LANES``) sums
    ``(float64(x[i,k]) - float64(x[j,k]))**2`` over ``k = q, q + L, q + 2L, ...``
    in increasing k; then ``dist[i, j] = (((lane_0 + lane_1) + lane_2) + ...)``.
    L independent sums let the compiler run L pairs of coordinates side by
    side in vector registers without reordering any addition; L is part of
    consensus, the tiles, blocks and thread count are not. Symmetric, zero
    diagonal. The lanes are split into ``groups`` runs (:func:`lane_groups`)
    that each run whole, for every pair, in one thread; below
    ``PARALLEL_MIN_ELEMENTS`` of work, one run.
    """
    n, d = x.shape
    dist = np.zeros((n, n), dtype=np.float64)
    slots, kinds = pair_tiles(n)
    safe = np.maximum(slots, 0)
    lanes = np.zeros((kinds.shape[0], TILE_PAIRS, DIST_LANES), dtype=np.float64)
    pairs = n * (n - 1) // 2
    if groups > 1 and pairs * d >= PARALLEL_MIN_ELEMENTS:
        _distances_parallel(x, safe, kinds, lane_groups(groups), lanes)
    else:
        _distance_lanes(x, safe, kinds, 0, DIST_LANES, lanes)
    _finish_distances(x, slots, kinds, lanes, dist)
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
