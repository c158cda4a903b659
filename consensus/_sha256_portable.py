"""Portable SHA-256d nonce scan: :data:`LANES` nonces in SIMD lanes, emitted as LLVM IR for numba.

Every working variable and message word is a ``<LANES x i32>`` vector, one
nonce per lane, and the whole double hash is one unrolled basic block in SSA
form: the values live in vector registers, never in a scratch array.  Nothing
in it is specific to a CPU: LLVM lowers the vector operations to the SIMD
numba's target has (AVX-512 ``vprord``/``vpternlogd`` where present, AVX2
shifts and ors otherwise, SSE2 on the oldest x86-64), with the rotates written
as the funnel-shift intrinsic so every backend sees a rotate.  :data:`LANES`
follows the register file numba compiles for: eight lanes (one AVX2 register;
the working variables and the schedule window fill the sixteen registers) or,
with AVX-512's 32 registers, two 512-bit registers' worth.

Work per nonce is cut the way the SHA-NI kernel cuts it, without writing any
of it by hand:

* the words of block two that do not depend on the nonce are loop invariants
  (header words) or constants (padding): LLVM folds the constants and hoists
  the invariant part of the first rounds and of the schedule out of the loop;
* only the top limb of the digest is used in the loop (``H7 = IV7 + e`` after
  round 60), so dead-code elimination drops rounds 61..63 of the second hash
  and the schedule words only they read.

The loop returns the first group holding a nonce whose top limb is at most
the target's; :func:`scan` rechecks that group nonce by nonce with the full
digest (the same generator with one lane and all outputs live).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir

from consensus import _sha256_jit as _jit
from consensus._sha256_common import (
    DIGEST_BITS,
    DIGEST_WORDS,
    HEADER_BITS,
    IV,
    PAD_BIT,
    TAIL_WORDS,
    K,
)

AVX2_LANES = 8  # one AVX2 register: with 16 of them, more lanes spill (8: 15.5, 16: 13.9 MH/s here)
AVX512_LANES = 32  # two AVX-512 registers: 32 of them, and a rotate (8: 24, 16: 29, 32: 34, 64: 32 MH/s)
ROUNDS = 64


def _numba_target_has_avx512() -> bool:
    """Whether numba compiles for AVX-512 (its CPU features, as numba itself picks them)."""
    features: Any = getattr(numba.config, "CPU_FEATURES", None)  # NUMBA_CPU_FEATURES, if set
    if features is None:
        from numba.core.codegen import get_host_cpu_features

        features = get_host_cpu_features()  # type: ignore[no-untyped-call]
    return "+avx512f" in str(features).split(",")


LANES = AVX512_LANES if _numba_target_has_avx512() else AVX2_LANES  # nonces per loop iteration
SCAN_NAME = f"gradchain_sha256d_portable_scan_x{LANES}"
FULL_NAME = "gradchain_sha256d_portable_full"
NO_HIT = -1
FIRST_BLOCK_TAIL = (PAD_BIT, *([0] * 10), HEADER_BITS)  # block two, words 4..15
SECOND_BLOCK_TAIL = (PAD_BIT, *([0] * 6), DIGEST_BITS)  # second hash, words 8..15

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


class _Lanes:
    """SHA-256's word operations on ``<width x i32>`` vectors, emitted by one builder."""

    def __init__(self, module: ir.Module, b: ir.IRBuilder, width: int) -> None:
        self.b = b
        self.width = width
        self.ty = ir.VectorType(_I32, width)
        suffix = f"v{width}i32"
        self.fshr = _jit.declare(module, f"llvm.fshr.{suffix}", ir.FunctionType(self.ty, [self.ty] * 3))
        self.bswap = _jit.declare(module, f"llvm.bswap.{suffix}", ir.FunctionType(self.ty, [self.ty]))

    def const(self, value: int) -> ir.Value:
        return ir.Constant(self.ty, [ir.Constant(_I32, value & 0xFFFFFFFF)] * self.width)

    def splat(self, scalar: ir.Value) -> ir.Value:
        b = self.b
        one = b.insert_element(ir.Constant(self.ty, ir.Undefined), scalar, ir.Constant(_I32, 0))
        mask = ir.Constant(ir.VectorType(_I32, self.width), [0] * self.width)
        return b.shuffle_vector(one, ir.Constant(self.ty, ir.Undefined), mask)

    def rotr(self, x: ir.Value, n: int) -> ir.Value:
        return self.b.call(self.fshr, [x, x, self.const(n)])

    def add(self, *values: ir.Value) -> ir.Value:
        total = values[0]
        for value in values[1:]:
            total = self.b.add(total, value)
        return total

    def xor3(self, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
        return self.b.xor(self.b.xor(x, y), z)

    def big_sigma0(self, a: ir.Value) -> ir.Value:
        return self.xor3(self.rotr(a, 2), self.rotr(a, 13), self.rotr(a, 22))

    def big_sigma1(self, e: ir.Value) -> ir.Value:
        return self.xor3(self.rotr(e, 6), self.rotr(e, 11), self.rotr(e, 25))

    def small_sigma0(self, w: ir.Value) -> ir.Value:
        return self.xor3(self.rotr(w, 7), self.rotr(w, 18), self.b.lshr(w, self.const(3)))

    def small_sigma1(self, w: ir.Value) -> ir.Value:
        return self.xor3(self.rotr(w, 17), self.rotr(w, 19), self.b.lshr(w, self.const(10)))

    def choose(self, e: ir.Value, f: ir.Value, g: ir.Value) -> ir.Value:
        # (e & f) ^ (~e & g), written as g ^ (e & (f ^ g)).
        b = self.b
        return b.xor(g, b.and_(e, b.xor(f, g)))

    def majority(self, a: ir.Value, bb: ir.Value, c: ir.Value) -> ir.Value:
        # (a & b) ^ (a & c) ^ (b & c), written as (a & b) | (c & (a | b)).
        b = self.b
        return b.or_(b.and_(a, bb), b.and_(c, b.or_(a, bb)))


def _compress(ops: _Lanes, state: list[ir.Value], block: list[ir.Value]) -> list[ir.Value]:
    """One SHA-256 compression (FIPS 180-4, 6.2.2) of 16 vector words into 8; input state added."""
    w = list(block)
    for t in range(16, ROUNDS):
        w.append(ops.add(ops.small_sigma1(w[t - 2]), w[t - 7], ops.small_sigma0(w[t - 15]), w[t - 16]))
    a, b, c, d, e, f, g, h = state
    for t in range(ROUNDS):
        t1 = ops.add(h, ops.big_sigma1(e), ops.choose(e, f, g), ops.add(ops.const(K[t]), w[t]))
        t2 = ops.add(ops.big_sigma0(a), ops.majority(a, b, c))
        a, b, c, d, e, f, g, h = ops.add(t1, t2), a, b, c, ops.add(d, t1), e, f, g
    return [ops.add(x, y) for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True)]


def _sha256d(ops: _Lanes, mid: list[ir.Value], tail: list[ir.Value], nonce: ir.Value) -> list[ir.Value]:
    """The 8 digest words of sha256d for the nonces in ``nonce`` (a vector of u32)."""
    first_block = [*tail, ops.b.call(ops.bswap, [nonce]), *(ops.const(v) for v in FIRST_BLOCK_TAIL)]
    digest = _compress(ops, mid, first_block)
    second_block = [*digest, *(ops.const(v) for v in SECOND_BLOCK_TAIL)]
    return _compress(ops, [ops.const(v) for v in IV], second_block)


def _load_words(ops: _Lanes, ptr: ir.Value, count: int) -> list[ir.Value]:
    b = ops.b
    return [ops.splat(b.load(b.gep(ptr, [ir.Constant(_I32, i)]))) for i in range(count)]


def _new_function(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn


def _define_scan(module: ir.Module) -> ir.Function:
    """Define (once per module) ``i64 scan(i32* mid, i32* tail, i64 first, i64 end, i32 top)``.

    The same contract as the SHA-NI kernel's loop: the first nonce of the first
    group of LANES (from ``first``, groups starting below ``end``) holding a
    nonce whose top limb is <= ``top``, or ``end``.  Nonces are taken mod 2**32.
    """
    existing = module.globals.get(SCAN_NAME)
    if existing is not None:
        return existing
    ptr = _I32.as_pointer()
    fn = _new_function(module, SCAN_NAME, ir.FunctionType(_I64, [ptr, ptr, _I64, _I64, _I32]))
    mid_ptr, tail_ptr, start, end, top = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ops = _Lanes(module, b, LANES)
    mid = _load_words(ops, mid_ptr, DIGEST_WORDS)
    tail = _load_words(ops, tail_ptr, TAIL_WORDS)
    top_vec = ops.splat(top)
    offsets = ir.Constant(ops.ty, [ir.Constant(_I32, lane) for lane in range(LANES)])

    def hash_group(b: ir.IRBuilder, group: ir.Value) -> ir.Value:
        nonce = b.add(ops.splat(b.trunc(group, _I32)), offsets)
        digest = _sha256d(ops, mid, tail, nonce)
        limbs = b.call(ops.bswap, [digest[DIGEST_WORDS - 1]])
        below = b.icmp_unsigned("<=", limbs, top_vec)
        return b.icmp_unsigned("!=", b.bitcast(below, ir.IntType(LANES)), ir.Constant(ir.IntType(LANES), 0))

    _jit.emit_group_loop(fn, b, start, end, LANES, hash_group)
    return fn


def _define_full(module: ir.Module) -> ir.Function:
    """Define (once per module) ``void full(i32* mid, i32* tail, i32 nonce, i32* out)``: 8 limbs."""
    existing = module.globals.get(FULL_NAME)
    if existing is not None:
        return existing
    ptr = _I32.as_pointer()
    fn = _new_function(module, FULL_NAME, ir.FunctionType(ir.VoidType(), [ptr, ptr, _I32, ptr]))
    mid_ptr, tail_ptr, nonce, out_ptr = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ops = _Lanes(module, b, 1)
    digest = _sha256d(ops, _load_words(ops, mid_ptr, DIGEST_WORDS),
                      _load_words(ops, tail_ptr, TAIL_WORDS), ops.splat(nonce))
    for j, word in enumerate(digest):
        limb = b.extract_element(b.call(ops.bswap, [word]), ir.Constant(_I32, 0))
        b.store(limb, b.gep(out_ptr, [ir.Constant(_I32, j)]))
    b.ret_void()
    return fn


_scan_groups = _jit.scan_intrinsic(_define_scan)
_full_limbs = _jit.full_intrinsic(_define_full)


@numba.njit(nogil=True, cache=True)
def full_digest(mid: npt.NDArray[np.uint32], tail: npt.NDArray[np.uint32], nonce: int,
                out: npt.NDArray[np.uint32]) -> None:
    """The sha256d of one nonce as eight little-endian limbs (tests, and :func:`scan`'s recheck)."""
    _full_limbs(mid, tail, np.uint32(nonce & 0xFFFFFFFF), out)


@numba.njit(nogil=True, cache=True)
def scan(
    mid: npt.NDArray[np.uint32],
    tail: npt.NDArray[np.uint32],
    target: npt.NDArray[np.uint32],
    start: int,
    count: int,
) -> int:
    """Lowest nonce in ``[start, start + count)`` whose sha256d is <= target, or NO_HIT.

    Same contract as the SHA-NI scan: the compiled loop filters on the most
    significant limb, each group it stops at is rechecked in full, nonce by
    nonce in increasing order.
    """
    out = np.empty(DIGEST_WORDS, dtype=np.uint32)
    top = np.uint32(target[DIGEST_WORDS - 1])
    end = start + count
    position = start
    while position < end:
        group: int = _scan_groups(mid, tail, position, end, top)
        if group >= end:
            return NO_HIT
        for lane in range(LANES):
            nonce = group + lane
            if nonce >= end:
                return NO_HIT
            full_digest(mid, tail, nonce, out)
            if _jit.at_most(out, target):
                return nonce
        position = group + LANES
    return NO_HIT
