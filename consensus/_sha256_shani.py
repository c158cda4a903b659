"""SHA-256d nonce scan on the x86 SHA extensions (SHA-NI), emitted as LLVM IR for numba.

Layout.  SHA-NI keeps the eight working variables in two 128-bit registers,
ABEF = <F, E, B, A> and CDGH = <H, G, D, C> (element 0 first).  ``sha256rnds2``
does two rounds: it takes CDGH, ABEF and a vector whose low two lanes hold
``W[t] + K[t]`` and ``W[t+1] + K[t+1]``, and returns the new ABEF; the old ABEF
is, after two rounds, exactly the new CDGH.  So four rounds are two calls with
the two registers swapping roles, the second call fed the high half of the
message vector.  The message schedule runs four words at a time:
``X[q] = msg2(msg1(X[q-4], X[q-3]) + X[q-2:q-1 words 1..4], X[q-1])`` where the
middle term is the byte-align of the previous two vectors (``W[t-7]``).

Kernel.  :func:`sha256d_limbs` is an LLVM function (built once per numba module
by :func:`_define_helper`) that hashes ``WAYS`` consecutive nonces at once.  The
instruction latency of ``sha256rnds2`` is higher than its issue interval, so
independent chains interleaved in one basic block keep the unit busy.  It takes
the midstate, the three tail words and a first nonce, runs the second block of
the first hash and the one-block second hash, and stores each digest as eight
little-endian limbs (limb 7 most significant), ready to compare to a target.

The function carries ``"target-features"="+sha,+sse4.1,+ssse3"`` so LLVM can
select the instructions whatever CPU numba targets (without it, a non-SHA target
aborts the process with "Cannot select").  When numba's target has SHA, LLVM
inlines the function into the scan loop; otherwise it stays a call.  Nothing
here runs or compiles at import: the caller only calls :func:`scan` after it
has checked that the CPU has SHA-NI.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from consensus._sha256_common import (
    DIGEST_BITS,
    DIGEST_WORDS,
    HEADER_BITS,
    IV,
    PAD_BIT,
    TAIL_WORDS,
    K,
)

WAYS = 4  # nonces per helper call: independent SHA-NI chains (1: 17, 2: 27, 3: 33, 4: 34 MH/s here)
TARGET_FEATURES = '"target-features"="+sha,+sse4.1,+ssse3"'
HELPER_NAME = f"gradchain_sha256d_shani_x{WAYS}"
NO_HIT = -1  # returned by scan when no nonce in the range meets the target

_I32 = ir.IntType(32)
_V4 = ir.VectorType(_I32, 4)
_ALIGN_W7 = (1, 2, 3, 4)  # shuffle of (X[q-2], X[q-1]) giving W[t-7 .. t-4]
_HIGH_PAIR = (2, 3, 2, 3)  # moves the message vector's high two lanes down for the second rnds2


def _vec(values: tuple[int, ...]) -> ir.Constant:
    return ir.Constant(_V4, [ir.Constant(_I32, v) for v in values])


def _shuffle(b: ir.IRBuilder, x: ir.Value, y: ir.Value, lanes: tuple[int, ...]) -> ir.Value:
    return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, len(lanes)), list(lanes)))


def _declare(module: ir.Module, fnty: ir.FunctionType, name: str) -> ir.Function:
    """The declaration of ``name`` in ``module``, added if missing."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name)


class _Intrinsics:
    """Declarations of the LLVM intrinsics the helper calls, in one module."""

    def __init__(self, module: ir.Module) -> None:
        v4_fn2 = ir.FunctionType(_V4, [_V4, _V4])
        self.rnds2 = _declare(module, ir.FunctionType(_V4, [_V4, _V4, _V4]), "llvm.x86.sha256rnds2")
        self.msg1 = _declare(module, v4_fn2, "llvm.x86.sha256msg1")
        self.msg2 = _declare(module, v4_fn2, "llvm.x86.sha256msg2")
        self.bswap_v4 = _declare(module, ir.FunctionType(_V4, [_V4]), "llvm.bswap.v4i32")
        self.bswap_i32 = _declare(module, ir.FunctionType(_I32, [_I32]), "llvm.bswap.i32")


def _compress(
    b: ir.IRBuilder,
    fns: _Intrinsics,
    states: list[tuple[ir.Value, ir.Value]],
    messages: list[list[ir.Value]],
) -> list[tuple[ir.Value, ir.Value]]:
    """64 rounds on each ``(abef, cdgh)`` with its four message vectors, interleaved; adds the input state."""
    work = list(states)
    schedules = [list(m) for m in messages]
    for q in range(16):
        round_k = _vec(K[4 * q : 4 * q + 4])
        for way, (abef, cdgh) in enumerate(work):
            x = schedules[way]
            if q >= 4:
                mixed = b.add(
                    b.call(fns.msg1, [x[q - 4], x[q - 3]]),
                    _shuffle(b, x[q - 2], x[q - 1], _ALIGN_W7),
                )
                x.append(b.call(fns.msg2, [mixed, x[q - 1]]))
            wk = b.add(x[q], round_k)
            cdgh = b.call(fns.rnds2, [cdgh, abef, wk])
            abef = b.call(fns.rnds2, [abef, cdgh, _shuffle(b, wk, wk, _HIGH_PAIR)])
            work[way] = (abef, cdgh)
    return [(b.add(a, s[0]), b.add(c, s[1])) for (a, c), s in zip(work, states, strict=True)]


def _words_of(b: ir.IRBuilder, abef: ir.Value, cdgh: ir.Value) -> tuple[ir.Value, ir.Value]:
    """State registers back to message order: <H0, H1, H2, H3>, <H4, H5, H6, H7>."""
    return _shuffle(b, abef, cdgh, (3, 2, 7, 6)), _shuffle(b, abef, cdgh, (1, 0, 5, 4))


def _define_helper(module: ir.Module) -> ir.Function:
    """Define (once per module) ``void helper(i32* mid, i32* tail, i32 nonce, i32* out)``."""
    existing = module.globals.get(HELPER_NAME)
    if existing is not None:
        return existing
    ptr = _I32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, _I32, ptr]), HELPER_NAME)
    fn.linkage = "internal"
    # llvmlite only knows keyword attributes; a string attribute is printed as written.
    set.add(fn.attributes, TARGET_FEATURES)
    fn.attributes.add("nounwind")
    mid_ptr, tail_ptr, first_nonce, out_ptr = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fns = _Intrinsics(module)

    mid = [b.load(b.gep(mid_ptr, [ir.Constant(_I32, i)])) for i in range(DIGEST_WORDS)]
    tail = [b.load(b.gep(tail_ptr, [ir.Constant(_I32, i)])) for i in range(TAIL_WORDS)]

    def pack(words: list[ir.Value]) -> ir.Value:
        vec: ir.Value = ir.Constant(_V4, ir.Undefined)
        for lane, word in enumerate(words):
            vec = b.insert_element(vec, word, ir.Constant(_I32, lane))
        return vec

    # ABEF = <F, E, B, A>, CDGH = <H, G, D, C>.
    mid_state = (pack([mid[5], mid[4], mid[1], mid[0]]), pack([mid[7], mid[6], mid[3], mid[2]]))
    iv_state = (_vec((IV[5], IV[4], IV[1], IV[0])), _vec((IV[7], IV[6], IV[3], IV[2])))
    first_tail = [_vec((PAD_BIT, 0, 0, 0)), _vec((0, 0, 0, 0)), _vec((0, 0, 0, HEADER_BITS))]
    second_tail = [_vec((PAD_BIT, 0, 0, 0)), _vec((0, 0, 0, DIGEST_BITS))]

    first_messages = []
    for way in range(WAYS):
        nonce = b.add(first_nonce, ir.Constant(_I32, way))
        # The nonce sits little-endian in the header; SHA-256 reads big-endian words.
        x0 = pack([tail[0], tail[1], tail[2], b.call(fns.bswap_i32, [nonce])])
        first_messages.append([x0, *first_tail])
    first = _compress(b, fns, [mid_state] * WAYS, first_messages)
    second_messages = [[*_words_of(b, abef, cdgh), *second_tail] for abef, cdgh in first]
    second = _compress(b, fns, [iv_state] * WAYS, second_messages)

    for way, (abef, cdgh) in enumerate(second):
        low, high = _words_of(b, abef, cdgh)
        for half, vec in enumerate((b.call(fns.bswap_v4, [low]), b.call(fns.bswap_v4, [high]))):
            for lane in range(4):
                slot = ir.Constant(_I32, way * DIGEST_WORDS + half * 4 + lane)
                b.store(b.extract_element(vec, ir.Constant(_I32, lane)), b.gep(out_ptr, [slot]))
    b.ret_void()
    return fn


def _u32_array(ty: Any) -> bool:
    return (
        isinstance(ty, types.Array)
        and ty.dtype == types.uint32
        and ty.ndim == 1
        and ty.layout == "C"
    )


@intrinsic
def _sha256d_limbs(typingctx: Any, mid: Any, tail: Any, nonce: Any, out: Any) -> Any:
    """numba intrinsic: hash ``WAYS`` nonces from ``nonce`` into ``out`` (8 limbs each)."""
    if not (
        _u32_array(mid)
        and _u32_array(tail)
        and _u32_array(out)
        and isinstance(nonce, types.Integer)
    ):
        return None
    sig = types.void(mid, tail, nonce, out)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        ptr = _I32.as_pointer()
        mid_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        tail_data = context.make_array(signature.args[1])(context, builder, args[1]).data
        out_data = context.make_array(signature.args[3])(context, builder, args[3]).data
        nonce32 = context.cast(builder, args[2], signature.args[2], types.uint32)
        helper = _define_helper(builder.module)
        builder.call(
            helper,
            [
                builder.bitcast(mid_data, ptr),
                builder.bitcast(tail_data, ptr),
                nonce32,
                builder.bitcast(out_data, ptr),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def _at_most(limbs: npt.NDArray[np.uint32], base: int, target: npt.NDArray[np.uint32]) -> bool:
    for j in range(DIGEST_WORDS - 1, -1, -1):
        if limbs[base + j] != target[j]:
            return bool(limbs[base + j] < target[j])
    return True


@numba.njit(nogil=True, cache=True)
def scan(
    mid: npt.NDArray[np.uint32],
    tail: npt.NDArray[np.uint32],
    target: npt.NDArray[np.uint32],
    start: int,
    count: int,
) -> int:
    """Lowest nonce in ``[start, start + count)`` whose sha256d is <= target, or NO_HIT.

    ``mid`` is the midstate (8 u32), ``tail`` the big-endian words of header bytes
    64..75, ``target`` eight little-endian limbs.  The most significant limb is
    compared first: it rejects all but about one hash in 2**32 / (limb7 + 1).
    """
    out = np.empty(WAYS * DIGEST_WORDS, dtype=np.uint32)
    top = target[DIGEST_WORDS - 1]
    end = start + count
    for first in range(start, end, WAYS):
        _sha256d_limbs(mid, tail, np.uint32(first & 0xFFFFFFFF), out)  # type: ignore[call-arg]
        for way in range(WAYS):
            nonce = first + way
            if (
                nonce < end
                and out[way * DIGEST_WORDS + DIGEST_WORDS - 1] <= top
                and _at_most(out, way * DIGEST_WORDS, target)
            ):
                return nonce
    return NO_HIT
