"""Per-coordinate rules with a strip of coordinates held in vector registers (private).

The sorting-network rules of :mod:`ml._agg_kernels` (median, trimmed mean,
Bulyan's closest-to-median mean) spend their time on comparators. Run over a
block in memory, each comparator loads and stores two rows of the block; here
a strip of :data:`STRIP` coordinates of every row is loaded into registers
once, the whole network runs on the registers (one ``min`` and one ``max``
instruction per comparator and strip), and the rule's finisher writes the
strip's results. The code is unrolled for one network, so it is generated
and compiled per (rule, network) with :mod:`ml._jit`, once per process.

The arithmetic is exactly that of :mod:`ml._agg_kernels`, operation for
operation, so the bits are the same (the tests compare both on random and
tie-heavy inputs):

* a comparator is ``swap = v < u; low = swap ? v : u; high = swap ? u : v``
  (equal values, and +0.0 / -0.0, never swap; a NaN never swaps);
* median: the middle value, or ``float32((float64(a) + float64(b)) * 0.5)``;
* trimmed mean: ``acc = 0.0`` then ``acc += float64(s[r])`` for the kept
  sorted positions in ascending order, ``float32(acc / count)``;
* closest to the median (Bulyan): the float64 median ``m``, the start of the
  run of ``beta`` nearest values counted by ``s[k + beta] - m < m - s[k]``,
  the run summed in float64 ascending, ``float32(acc / beta)``.

No fast-math flag appears in the IR, and the JIT never contracts a multiply
and an add. Each coordinate is computed whole by one call, so splitting the
strips among threads never changes a bit.

Rows are all in registers at once, so this suits up to :data:`MAX_ROWS`
rows; larger inputs use the in-memory kernels.

Memory.  Each iteration reads half a cache line from every row: up to 32
streams at once, more than the hardware prefetcher follows, so without help
the loop waits on memory whatever the network's size. Each row's line
:data:`PREFETCH_AHEAD` coordinates ahead is prefetched (``llvm.prefetch``, a
hint that reads nothing into a value), which took the median at n = 32,
d = 1e6 from 8.6 to 5.6 ms of CPU on one thread, about one read of the matrix.

Trimmed mean cost (n = 32, f = 6, d = 1e6, one-thread CPU, best of 7, same
process). The trimmed mean runs 8.4 ms against the median's 5.3, and the
serial chain of 20 float64 adds is NOT the reason: its network alone (185
comparators against 157, the kept values xor-ed) runs 6.5 ms; widening the 20
kept values to float64 adds 0.9 ms and the adds 0.95 ms. Summing them as a
tree (other bits, timing only) saves 0.45 ms; software-pipelining the chain
into the next strip's network through a stack buffer (same bits) saved 2-3 % on
medians of 7 (8.3-8.6 vs 8.4-8.8 ms) with the adds one per comparator, and lost
8-14 % with one add every 4 or 8 comparators; splitting the widening into two
4-lane halves lost 6 %. The loop is bound by FP-pipe throughput (about two
min/max per cycle), not by the chain's latency, so none was kept.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir

from ml import _jit

STRIP = 8  # coordinates per strip: one AVX2 register of float32 (16 per register measured slower)
MAX_ROWS = 32  # rows held in registers at once; 32 vector registers on AVX-512, spills beyond
MIN_ELEMENTS = 1 << 20  # below this (rows x coordinates) the in-memory kernels win: no compile
CHUNKS_PER_THREAD = 4  # strip ranges per worker thread, to even out load on a shared machine

MEDIAN, TRIMMED, CLOSEST = "median", "trimmed", "closest"

F32Matrix = npt.NDArray[np.float32]
F32Vector = npt.NDArray[np.float32]
I64Vector = npt.NDArray[np.int64]

_F32 = ir.FloatType()
_F64 = ir.DoubleType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V32 = ir.VectorType(_F32, STRIP)
_V64 = ir.VectorType(_F64, STRIP)
_VI32 = ir.VectorType(_I32, STRIP)
FUNCTION = "strips"
_I8_PTR = ir.IntType(8).as_pointer()
PREFETCH_AHEAD = 256  # float32 coordinates ahead of the strip each row's prefetch reads: speed only
_PREFETCH_READ_L1 = (ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1))  # read, keep, data
# void strips(float* x, i64 row_stride, i64* rows, i64 first, i64 stop, float* out)
_PROTOTYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_int64, ctypes.c_void_p)


def applies(rows: int, coords: int) -> bool:
    """Whether :func:`run` should take these sizes (few enough rows, enough work to repay a compile)."""
    return 1 <= rows <= MAX_ROWS and rows * coords >= MIN_ELEMENTS and coords >= STRIP


def _splat_f64(value: float) -> ir.Constant:
    return ir.Constant(_V64, [ir.Constant(_F64, value)] * STRIP)


def _midpoint(b: ir.IRBuilder, lower: ir.Value, upper: ir.Value) -> ir.Value:
    """``(float64(lower) + float64(upper)) * 0.5`` as float64."""
    return b.fmul(b.fadd(b.fpext(lower, _V64), b.fpext(upper, _V64)), _splat_f64(0.5))


def _mean_of(b: ir.IRBuilder, values: Sequence[ir.Value], count: int) -> ir.Value:
    """``float32(acc / count)`` with ``acc = 0.0 + float64(v0) + float64(v1) + ...`` in order."""
    acc: ir.Value = _splat_f64(0.0)
    for value in values:
        acc = b.fadd(acc, b.fpext(value, _V64))
    return b.fptrunc(b.fdiv(acc, _splat_f64(float(count))), _V32)


def _finish(b: ir.IRBuilder, rule: str, param: int, s: list[ir.Value]) -> ir.Value:
    """The rule's result for one strip from the (partly) sorted values ``s``."""
    n = len(s)
    half = n // 2
    if rule == MEDIAN:
        return s[half] if n % 2 else b.fptrunc(_midpoint(b, s[half - 1], s[half]), _V32)
    if rule == TRIMMED:
        return _mean_of(b, s[param : n - param], n - 2 * param)
    beta = param
    med = b.fpext(s[half], _V64) if n % 2 else _midpoint(b, s[half - 1], s[half])
    start: ir.Value = ir.Constant(_VI32, [ir.Constant(_I32, 0)] * STRIP)
    for k in range(n - beta):
        right_gap = b.fsub(b.fpext(s[k + beta], _V64), med)
        left_gap = b.fsub(med, b.fpext(s[k], _V64))
        start = b.add(start, b.zext(b.fcmp_ordered("<", right_gap, left_gap), _VI32))
    acc: ir.Value = _splat_f64(0.0)
    end = b.add(start, ir.Constant(_VI32, [ir.Constant(_I32, beta)] * STRIP))
    for r, value in enumerate(s):
        position = ir.Constant(_VI32, [ir.Constant(_I32, r)] * STRIP)
        inside = b.and_(b.icmp_signed("<=", start, position), b.icmp_signed("<", position, end))
        acc = b.select(inside, b.fadd(acc, b.fpext(value, _V64)), acc)
    return b.fptrunc(b.fdiv(acc, _splat_f64(float(beta))), _V32)


def _build(rule: str, param: int, rows: int, comparators: tuple[tuple[int, int], ...]) -> ir.Module:
    """The IR of ``strips`` for one rule and network (see ``_PROTOTYPE``)."""
    module = ir.Module(name=f"agg_{rule}_{rows}")
    f32_ptr = _F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32_ptr, _I64, _I64.as_pointer(), _I64, _I64,
                                                               f32_ptr]), FUNCTION)
    x, stride, row_ids, first, stop, out = fn.args
    prefetch = ir.Function(module, ir.FunctionType(ir.VoidType(), [_I8_PTR, _I32, _I32, _I32]), "llvm.prefetch.p0")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    bases = []
    for r in range(rows):
        row = b.load(b.gep(row_ids, [ir.Constant(_I64, r)]))
        bases.append(b.gep(x, [b.mul(row, stride)]))
    entry = b.block
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("<", first, stop), loop, done)

    b.position_at_end(loop)
    j = b.phi(_I64)
    j.add_incoming(first, entry)
    ahead = b.add(j, ir.Constant(_I64, PREFETCH_AHEAD))
    for base in bases:
        b.call(prefetch, [b.bitcast(b.gep(base, [ahead]), _I8_PTR), *_PREFETCH_READ_L1])
    s = [b.load(b.bitcast(b.gep(base, [j]), _V32.as_pointer()), align=4) for base in bases]
    for lo, hi in comparators:
        u, v = s[lo], s[hi]
        swap = b.fcmp_ordered("<", v, u)
        s[lo], s[hi] = b.select(swap, v, u), b.select(swap, u, v)
    result = _finish(b, rule, param, s)
    b.store(result, b.bitcast(b.gep(out, [j]), _V32.as_pointer()), align=4)
    following = b.add(j, ir.Constant(_I64, STRIP))
    j.add_incoming(following, loop)
    b.cbranch(b.icmp_signed("<", following, stop), loop, done)

    b.position_at_end(done)
    b.ret_void()
    return module


@functools.lru_cache(maxsize=128)
def _compiled(rule: str, param: int, rows: int, comparators: tuple[tuple[int, int], ...]) -> Any:
    return _jit.compile_function(_build(rule, param, rows, comparators), FUNCTION, _PROTOTYPE)


@functools.lru_cache(maxsize=1)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradchain-agg")


def run(
    rule: str,
    param: int,
    x: F32Matrix,
    rows: I64Vector,
    lo_wires: I64Vector,
    hi_wires: I64Vector,
) -> F32Vector:
    """The rule over every coordinate of ``x[rows]`` (C-contiguous float32), comparators ``lo/hi_wires``.

    Full strips are split into ranges run by numba's thread count of Python
    threads (ctypes releases the GIL); the last ``d % STRIP`` coordinates go
    through the same code on a zero-padded copy.
    """
    n = rows.shape[0]
    d = x.shape[1]
    kernel = _compiled(rule, param, n, tuple(zip(lo_wires.tolist(), hi_wires.tolist(), strict=True)))
    out = np.empty(d, dtype=np.float32)
    full = d - d % STRIP
    row_ids = np.ascontiguousarray(rows, dtype=np.int64)
    threads = numba.get_num_threads()
    strips = full // STRIP
    chunks = min(strips, threads * CHUNKS_PER_THREAD) if threads > 1 else 1
    bounds = [c * strips // chunks * STRIP for c in range(chunks + 1)]
    args = (_jit.pointer(x), x.shape[1], _jit.pointer(row_ids))
    if chunks == 1:
        kernel(*args, 0, full, _jit.pointer(out))
    else:
        jobs = [_pool(threads).submit(functools.partial(kernel, *args, bounds[c], bounds[c + 1],
                                                        _jit.pointer(out))) for c in range(chunks)]
        for job in jobs:
            job.result()
    if full < d:
        padded = np.zeros((n, STRIP), dtype=np.float32)
        padded[:, : d - full] = x[rows, full:]
        tail = np.empty(STRIP, dtype=np.float32)
        kernel(_jit.pointer(padded), STRIP, _jit.pointer(np.arange(n, dtype=np.int64)), 0, STRIP,
               _jit.pointer(tail))
        out[full:] = tail[: d - full]
    return out

