"""Hardware ceilings measured in the same run as the kernels they bound (not a benchmark itself).

A kernel's speed on a shared machine says little alone; its distance from what
this CPU can do at that moment says a lot.  Each probe here is a loop of
independent operations, written in LLVM IR and compiled with llvmlite's JIT
for this CPU (no C toolchain is needed), timed on one thread or on several at
once (a ctypes call releases the GIL, so the threads really run in parallel):

* ``sha256rnds2``: chains of ``sha256rnds2`` (two SHA-256 rounds each), enough
  of them side by side to cover the instruction's latency.  With the nonce-
  independent work hoisted and the second hash stopped at round 60, a nonce
  needs 62 of them, so ``rate / 62`` is the SHA-NI scan's ceiling in nonces/s.
* SHA instruction mix: one iteration issues what one nonce needs, the 62
  ``sha256rnds2`` on independent chains and the 45 ``sha256msg1``/``msg2`` of
  the message schedule on chains of their own.  Where the schedule
  instructions share the unit that runs ``sha256rnds2``, this, not the
  ``sha256rnds2`` rate alone, is the most a SHA-NI scan can reach.
* schedule overlap (a figure beside the ceiling, never a denominator): the
  ``sha256rnds2`` chains alone, a stream of AVX-512 message-schedule steps
  alone (sigma0 on 16 nonces per vector: two rotates, a shift, the xors and an
  add) and the two interleaved one step per ``sha256rnds2``.  It says whether
  the vector pipes the SHA unit leaves idle can take the schedule off the
  ``sha256rnds2`` chains: 1 means the shorter stream is hidden entirely, 0
  that the two run one after the other.
* compare-exchange: ``(min, max)`` of two vectors of float32 as a compare
  and two selects (what a sorting network does per comparator), on chains
  held in registers: comparators per second, each on one coordinate.
* distance term: ``acc + (u - v) * (u - v)`` in float64 without fast-math
  (a subtract, a multiply and an add, never fused: the order Krum's
  distances are defined in), on independent accumulators: terms per second.
  Where the CPU has FMA, every second subtract is ``fma(u, 1.0, -v)`` (the
  same rounding, on the multiply pipes), as the distance kernel issues it:
  the floor is the best the CPU can do for this arithmetic, not for one
  spelling of it.
* streaming read: one pass over a matrix by a numba sum on every thread,
  the least time any aggregation of that matrix can take.

Each figure is the best of a few repeats: interference from other processes
only ever makes a probe slower, so the fastest repeat is the closest to the
hardware.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir

from consensus._sha256_shani import MSG1_PER_NONCE, MSG2_PER_NONCE, RNDS2_PER_NONCE
from ml._agg_kernels import EXACT_FMA_SUBTRACT

REPEATS = 7
SHA_CHAINS = (4, 8, 12)  # the probe uses the fastest of these (latency x issue rate chains saturate)
MSG_CHAINS = 8  # independent message-schedule chains in the instruction-mix probe
OVERLAP_CHAINS = 8  # sha256rnds2 chains (and schedule-vector chains) in the overlap probe
OVERLAP_CALLS = 4  # sha256rnds2 calls per chain per iteration of the overlap probe
SCHEDULE_LANES = 16  # nonces per schedule vector in the overlap probe (one AVX-512 register)
F32_LANES = (8, 16)  # float32 lanes per probe vector (AVX2, AVX-512): the faster counts
F64_LANES = (4, 8)  # float64 lanes per probe vector
MINMAX_CHAINS = 12  # independent compare-exchanges in flight per iteration
DISTANCE_ACCUMULATORS = 12  # independent distance sums in flight per iteration
PROBE_SECONDS = 0.01  # length of one timed probe call: short, so some repeats run undisturbed

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_KEEP: list[Any] = []  # JIT engines must outlive the function pointers taken from them


@dataclass(frozen=True)
class Rate:
    """Operations per second on ``threads`` threads at once (best repeat), and how it was measured."""

    per_second: float
    threads: int
    what: str

    def as_dict(self) -> dict[str, Any]:
        return {"per_second": self.per_second, "threads": self.threads, "what": self.what}


@cache
def _target_machine_args() -> tuple[str, str]:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def _jit(module: ir.Module, name: str) -> Callable[[int], int]:
    """Compile ``module`` for this CPU and return ``name(i64 iterations) -> i64`` as a ctypes function."""
    cpu, features = _target_machine_args()
    module.triple = llvm.get_process_triple()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    machine = llvm.Target.from_default_triple().create_target_machine(cpu=cpu, features=features, opt=3)
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    _KEEP.append(engine)
    address = engine.get_function_address(name)
    return ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(address)


def _loop_function(
    name: str,
    ty: ir.Type | list[ir.Type],
    chains: int,
    seed: Callable[[int], ir.Constant],
    step: Callable[[ir.IRBuilder, list[ir.Value]], list[ir.Value]],
    module: ir.Module,
    attributes: tuple[str, ...] = (),
) -> None:
    """``i64 name(i64 n)``: ``n`` times ``values = step(values)`` over ``chains`` loop-carried values.

    ``ty`` is every value's type, or a list of one type per value.
    """
    fn = ir.Function(module, ir.FunctionType(_I64, [_I64]), name)
    for attribute in attributes:
        set.add(fn.attributes, attribute)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    entry = b.block
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    counter = b.phi(_I64)
    types = ty if isinstance(ty, list) else [ty] * chains
    values = [b.phi(t) for t in types]
    updated = step(b, list(values))
    following = b.add(counter, ir.Constant(_I64, 1))
    counter.add_incoming(ir.Constant(_I64, 0), entry)
    counter.add_incoming(following, loop)
    for k, (phi, new) in enumerate(zip(values, updated, strict=True)):
        phi.add_incoming(seed(k), entry)
        phi.add_incoming(new, loop)
    b.cbranch(b.icmp_signed("<", following, fn.args[0]), loop, done)
    b.position_at_end(done)
    # Fold every chain into the result so no chain is dead code.
    total: ir.Value = ir.Constant(_I64, 0)
    for value in updated:
        lane = b.extract_element(value, ir.Constant(_I32, 0))
        if isinstance(lane.type, ir.IntType):
            total = b.xor(total, b.zext(lane, _I64))
        else:
            total = b.xor(total, b.fptosi(lane, _I64))
    b.ret(total)


def _time_threads(fn: Callable[[int], int], iterations: int, threads: int) -> float:
    """Wall seconds for ``threads`` threads each calling ``fn(iterations)`` at once."""
    if threads == 1:
        start = time.perf_counter()
        fn(iterations)
        return time.perf_counter() - start
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        fn(iterations)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start


_CALIBRATED: dict[int, int] = {}  # id(probe function) -> iterations per call


def _iterations(fn: Callable[[int], int]) -> int:
    """Loop iterations for one call of about PROBE_SECONDS (at most: a busy machine only adds time)."""
    if id(fn) not in _CALIBRATED:
        iterations = 1000
        while (seconds := _time_threads(fn, iterations, 1)) < PROBE_SECONDS / 4:
            iterations *= 4
        _CALIBRATED[id(fn)] = max(iterations, int(iterations * PROBE_SECONDS / seconds))
    return _CALIBRATED[id(fn)]


def _best_rate(fn: Callable[[int], int], ops_per_iteration: int, threads: int, repeats: int) -> float:
    """Best ops/s over ``repeats`` timed calls on ``threads`` threads, each about PROBE_SECONDS."""
    iterations = _iterations(fn)
    fastest = min(_time_threads(fn, iterations, threads) for _ in range(repeats))
    return iterations * ops_per_iteration * threads / fastest


# --------------------------------------------------------------------------- SHA-256


@cache
def _rnds2_probe(chains: int) -> Callable[[int], int]:
    v4 = ir.VectorType(_I32, 4)
    module = ir.Module(name=f"rnds2_probe_{chains}")
    rnds2 = ir.Function(module, ir.FunctionType(v4, [v4, v4, v4]), "llvm.x86.sha256rnds2")

    def vec(values: tuple[int, ...]) -> ir.Constant:
        return ir.Constant(v4, [ir.Constant(_I32, v) for v in values])

    low, high = vec((0x428A2F98, 0x71374491, 0, 0)), vec((0xB5C0FBCF, 0xE9B5DBA5, 0, 0))

    def step(b: ir.IRBuilder, values: list[ir.Value]) -> list[ir.Value]:
        # Each chain is an (ABEF, CDGH) pair: two calls per iteration, roles swapping, as in SHA-256.
        out = []
        for abef, cdgh in zip(values[0::2], values[1::2], strict=True):
            after_two = b.call(rnds2, [cdgh, abef, low])
            out += [b.call(rnds2, [abef, after_two, high]), after_two]
        return out

    _loop_function("probe", v4, 2 * chains, lambda k: vec((k, k + 1, k + 2, k + 3)), step, module,
                   ('"target-features"="+sha,+sse4.1,+ssse3"',))
    return _jit(module, "probe")


@cache
def _sha_mix_probe(chains: int) -> Callable[[int], int]:
    """One iteration = one nonce's SHA instructions (see the module docstring), nothing else."""
    v4 = ir.VectorType(_I32, 4)
    module = ir.Module(name=f"sha_mix_probe_{chains}")
    rnds2 = ir.Function(module, ir.FunctionType(v4, [v4, v4, v4]), "llvm.x86.sha256rnds2")
    msg1 = ir.Function(module, ir.FunctionType(v4, [v4, v4]), "llvm.x86.sha256msg1")
    msg2 = ir.Function(module, ir.FunctionType(v4, [v4, v4]), "llvm.x86.sha256msg2")

    def vec(values: tuple[int, ...]) -> ir.Constant:
        return ir.Constant(v4, [ir.Constant(_I32, v) for v in values])

    low, high = vec((0x428A2F98, 0x71374491, 0, 0)), vec((0xB5C0FBCF, 0xE9B5DBA5, 0, 0))
    schedule = [msg1] * MSG1_PER_NONCE + [msg2] * MSG2_PER_NONCE

    def step(b: ir.IRBuilder, values: list[ir.Value]) -> list[ir.Value]:
        states, words = values[: 2 * chains], values[2 * chains :]
        for call in range(RNDS2_PER_NONCE // 2):  # two calls per step, the chains in turn
            way = call % chains
            abef, cdgh = states[2 * way], states[2 * way + 1]
            after_two = b.call(rnds2, [cdgh, abef, low])
            states[2 * way], states[2 * way + 1] = b.call(rnds2, [abef, after_two, high]), after_two
            # interleave the schedule's instructions as the kernel does, about one per rnds2
            for k in range(2 * call, min(2 * call + 2, len(schedule))):
                words[k % MSG_CHAINS] = b.call(schedule[k], [words[k % MSG_CHAINS], high])
        for k in range(2 * (RNDS2_PER_NONCE // 2), len(schedule)):
            words[k % MSG_CHAINS] = b.call(schedule[k], [words[k % MSG_CHAINS], high])
        return states + words

    _loop_function("probe", v4, 2 * chains + MSG_CHAINS, lambda k: vec((k, k + 1, k + 2, k + 3)), step,
                   module, ('"target-features"="+sha,+sse4.1,+ssse3"',))
    return _jit(module, "probe")


@cache
def _saturating_mix_chains() -> int:
    """The chain count of SHA_CHAINS that runs the instruction mix fastest on one thread."""
    return max(SHA_CHAINS, key=lambda chains: _best_rate(_sha_mix_probe(chains), 1, 1, REPEATS))


def sha256d_mix_rate(threads: int = 1, repeats: int = REPEATS) -> Rate:
    """Nonces per second on ``threads`` threads if a nonce cost only its SHA instructions (best repeat)."""
    chains = _saturating_mix_chains()
    rate = _best_rate(_sha_mix_probe(chains), 1, threads, repeats)
    return Rate(rate, threads, f"{RNDS2_PER_NONCE} sha256rnds2 on {chains} chains + {MSG1_PER_NONCE} sha256msg1 "
                f"+ {MSG2_PER_NONCE} sha256msg2 per nonce")


@cache
def _saturating_chains() -> int:
    """The chain count of SHA_CHAINS that issues ``sha256rnds2`` fastest on one thread."""
    return max(SHA_CHAINS, key=lambda chains: _best_rate(_rnds2_probe(chains), 2 * chains, 1, REPEATS))


def sha256rnds2_rate(threads: int = 1, repeats: int = REPEATS) -> Rate:
    """``sha256rnds2`` per second on ``threads`` threads at once (the best of ``repeats``)."""
    chains = _saturating_chains()
    rate = _best_rate(_rnds2_probe(chains), 2 * chains, threads, repeats)
    return Rate(rate, threads, f"{chains} independent sha256rnds2 chains per thread")


def sha256d_ceiling_mhs(rate: Rate) -> float:
    """The SHA-NI scan's ceiling in MH/s: ``sha256rnds2`` rate / the 62 a nonce needs at least."""
    return rate.per_second / RNDS2_PER_NONCE / 1e6


@dataclass(frozen=True)
class Overlap:
    """Seconds per probe iteration: ``sha256rnds2`` chains, schedule steps, and both interleaved."""

    rnds2_s: float
    schedule_s: float
    together_s: float
    what: str

    @property
    def fraction(self) -> float:
        """Share of the shorter stream hidden under the longer: 1 fully, 0 not at all."""
        hidden = self.rnds2_s + self.schedule_s - self.together_s
        return hidden / min(self.rnds2_s, self.schedule_s)

    def as_dict(self) -> dict[str, Any]:
        return {"rnds2_s": self.rnds2_s, "schedule_s": self.schedule_s, "together_s": self.together_s,
                "fraction": self.fraction, "what": self.what}


@cache
def _overlap_probe(rounds: bool, schedule: bool) -> Callable[[int], int]:
    """Per iteration: OVERLAP_CALLS calls on each ``sha256rnds2`` chain and/or as many schedule steps."""
    v4 = ir.VectorType(_I32, 4)
    vz = ir.VectorType(_I32, SCHEDULE_LANES)
    module = ir.Module(name=f"overlap_probe_{int(rounds)}{int(schedule)}")
    rnds2 = ir.Function(module, ir.FunctionType(v4, [v4, v4, v4]), "llvm.x86.sha256rnds2")
    fshr = ir.Function(module, ir.FunctionType(vz, [vz] * 3), f"llvm.fshr.v{SCHEDULE_LANES}i32")

    def splat(value: int) -> ir.Constant:
        return ir.Constant(vz, [ir.Constant(_I32, value)] * SCHEDULE_LANES)

    def rotr(b: ir.IRBuilder, x: ir.Value, n: int) -> ir.Value:
        return b.call(fshr, [x, x, splat(n)])

    message = ir.Constant(v4, [ir.Constant(_I32, v) for v in (0x428A2F98, 0x71374491, 0, 0)])
    states, words = (2 * OVERLAP_CHAINS if rounds else 0), (OVERLAP_CHAINS if schedule else 0)

    def step(b: ir.IRBuilder, values: list[ir.Value]) -> list[ir.Value]:
        state, word = values[:states], values[states:]
        for k in range(OVERLAP_CALLS * OVERLAP_CHAINS):
            if rounds:
                way = 2 * (k % OVERLAP_CHAINS)
                abef, cdgh = state[way], state[way + 1]
                state[way], state[way + 1] = b.call(rnds2, [cdgh, abef, message]), abef
            if schedule:  # w[t] = sigma0(w[t-15]) + w[t-16], as in the schedule, on its own chain
                x, y = word[k % OVERLAP_CHAINS], word[(k + 1) % OVERLAP_CHAINS]
                sigma = b.xor(b.xor(rotr(b, x, 7), rotr(b, x, 18)), b.lshr(x, splat(3)))
                word[k % OVERLAP_CHAINS] = b.add(sigma, y)
        return state + word

    def seed(k: int) -> ir.Constant:
        if k < states:
            return ir.Constant(v4, [ir.Constant(_I32, k + j) for j in range(4)])
        return ir.Constant(vz, [ir.Constant(_I32, 977 * k + j) for j in range(SCHEDULE_LANES)])

    _loop_function("probe", [v4] * states + [vz] * words, states + words, seed, step, module,
                   ('"target-features"="+sha,+sse4.1,+ssse3"',))
    return _jit(module, "probe")


def sha_schedule_overlap(repeats: int = REPEATS) -> Overlap:
    """One thread: how much of an AVX-512 schedule stream hides under ``sha256rnds2`` chains (best repeats)."""
    alone, stream, both = (_overlap_probe(True, False), _overlap_probe(False, True), _overlap_probe(True, True))
    iterations = _iterations(both)  # one iteration count for all three: seconds per iteration compare

    def seconds(fn: Callable[[int], int]) -> float:
        return min(_time_threads(fn, iterations, 1) for _ in range(repeats)) / iterations

    steps = OVERLAP_CALLS * OVERLAP_CHAINS
    return Overlap(seconds(alone), seconds(stream), seconds(both),
                   f"{steps} sha256rnds2 on {OVERLAP_CHAINS} chains and {steps} sigma0+add steps on "
                   f"{SCHEDULE_LANES} x u32 per iteration")


# --------------------------------------------------------------------------- aggregation


@cache
def _compare_exchange_probe(lanes: int) -> Callable[[int], int]:
    vec = ir.VectorType(ir.FloatType(), lanes)
    module = ir.Module(name="compare_exchange_probe")

    def step(b: ir.IRBuilder, values: list[ir.Value]) -> list[ir.Value]:
        out = []
        for low, high in zip(values[0::2], values[1::2], strict=True):
            swap = b.fcmp_ordered("<", high, low)
            # Crossed so the pair keeps changing: (max, min) feeds the next comparator.
            out += [b.select(swap, low, high), b.select(swap, high, low)]
        return out

    def seed(k: int) -> ir.Constant:
        return ir.Constant(vec, [ir.Constant(ir.FloatType(), float((k * 7 + j) % 13)) for j in range(lanes)])

    _loop_function("probe", vec, 2 * MINMAX_CHAINS, seed, step, module)
    return _jit(module, "probe")


def compare_exchange_rate(threads: int) -> Rate:
    """float32 compare-exchanges per second (one coordinate each), in registers, on ``threads`` threads."""
    rate, lanes = max((_best_rate(_compare_exchange_probe(lanes), MINMAX_CHAINS * lanes, threads, REPEATS), lanes)
                      for lanes in F32_LANES)
    return Rate(rate, threads, f"compare + 2 selects on {lanes} x float32, {MINMAX_CHAINS} in flight")


@cache
def _distance_term_probe(lanes: int) -> Callable[[int], int]:
    vec = ir.VectorType(ir.DoubleType(), lanes)
    module = ir.Module(name="distance_term_probe")

    fma = ir.Function(module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{lanes}f64")
    ones = ir.Constant(vec, [ir.Constant(ir.DoubleType(), 1.0)] * lanes)

    def step(b: ir.IRBuilder, values: list[ir.Value]) -> list[ir.Value]:
        out = []
        # 1.0 through an empty asm, as in the kernel: LLVM cannot fold the fma back into a subtract
        one = b.asm(ir.FunctionType(vec, [vec]), "", "=v,0", [ones], False) if EXACT_FMA_SUBTRACT else None
        for k, acc in enumerate(values):
            v = ir.Constant(vec, [ir.Constant(ir.DoubleType(), 0.5 + (k + j) / 32) for j in range(lanes)])
            # reads the accumulator, so nothing can be hoisted out of the loop
            gap = b.call(fma, [acc, one, b.fneg(v)]) if one is not None and k % 2 else b.fsub(acc, v)
            out.append(b.fadd(acc, b.fmul(gap, gap)))
        return out

    def seed(k: int) -> ir.Constant:
        return ir.Constant(vec, [ir.Constant(ir.DoubleType(), 0.0)] * lanes)

    _loop_function("probe", vec, DISTANCE_ACCUMULATORS, seed, step, module)
    return _jit(module, "probe")


def distance_term_rate(threads: int) -> Rate:
    """float64 ``acc += (u - v)**2`` terms per second (sub, mul, add; a product never fused) on ``threads`` threads."""
    rate, lanes = max((_best_rate(_distance_term_probe(lanes), DISTANCE_ACCUMULATORS * lanes, threads, REPEATS),
                       lanes) for lanes in F64_LANES)
    subtract = "sub (every second as fma(u, 1, -v))" if EXACT_FMA_SUBTRACT else "sub"
    return Rate(rate, threads, f"float64 {subtract}, mul, add on {lanes} lanes, {DISTANCE_ACCUMULATORS} in flight")


# --------------------------------------------------------------------------- memory


@numba.njit(fastmath=True, nogil=True, cache=True)
def _row_sum(row: Any) -> float:
    """Sum of a float32 row with 64 independent partial sums (any order: this is a probe)."""
    partial = np.zeros(64, dtype=np.float32)
    d = row.shape[0]
    j = 0
    while j + 64 <= d:
        for k in range(64):
            partial[k] += row[j + k]
        j += 64
    total = np.float32(0.0)
    for k in range(64):
        total += partial[k]
    while j < d:
        total += row[j]
        j += 1
    return float(total)


@numba.njit(fastmath=True, nogil=True, cache=True)
def _rows_sum(x: Any, first: int, stop: int) -> float:
    total = 0.0
    for i in range(first, stop):
        total += _row_sum(x[i])
    return total


def stream_read_seconds(x: Any, threads: int, repeats: int = REPEATS) -> float:
    """Best seconds for one summing pass over ``x`` (2-D float32), its rows split among ``threads``.

    Python threads call a GIL-free numba sum, as the register-resident
    aggregation kernels run: no worker pool to wake, so the figure is the
    memory's, not the scheduler's.
    """
    n = x.shape[0]
    parts = max(1, min(threads, n))
    bounds = [p * n // parts for p in range(parts + 1)]
    _rows_sum(x, 0, 1)  # compile, or load the cached machine code

    def one_pass() -> None:
        if parts == 1:
            _rows_sum(x, 0, n)
            return
        pool = [threading.Thread(target=_rows_sum, args=(x, bounds[p], bounds[p + 1])) for p in range(parts)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - start)
    return best
