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

Work per nonce.  A nonce costs 62 ``sha256rnds2``, the fewest the instruction
allows (the benchmark's ceiling divides the machine's ``sha256rnds2`` rate by
:data:`RNDS2_PER_NONCE`), and 45 ``sha256msg1``/``sha256msg2`` for the message
schedule (:data:`MSG1_PER_NONCE`, :data:`MSG2_PER_NONCE`; on some CPUs they
share the unit that runs ``sha256rnds2``, so the benchmark also measures the
mix):

* first hash, block two: its words 0..2 (header bytes 64..75) and 4..15
  (padding) are the same for every nonce, so the first two rounds run once per
  batch, and so do the schedule terms built only from constant words; 31 calls;
* second hash: the top 32 bits of the digest (the byte-swapped last word
  ``H7 = IV7 + h``) are known after round 60, because ``h`` after round 63 is
  ``e`` after round 60 (``F`` of the ABEF after rounds 60-61), so the last call
  is never made and the schedule stops at the words round 61 needs; 31 calls.

Scan.  :func:`scan_groups` is one LLVM function holding the whole loop: per
iteration it hashes :data:`WAYS` consecutive nonces, their chains interleaved
in one basic block (``sha256rnds2`` has a latency of several cycles and an
issue interval of about one, so independent chains keep the unit busy), and
compares each top limb to the target's.  Nothing leaves registers until a
group holds a nonce whose top limb is at most the target's (about one in
2**32 / (limb + 1)); the loop then returns the group's first nonce and
:func:`scan` rechecks that group nonce by nonce with the full digest
(:func:`full_digest`, all 64 rounds of both hashes) against all 256 bits.

Registers.  The SHA instructions have only legacy SSE encodings, so they see 16
xmm registers, and ``sha256rnds2`` reads its third operand from xmm0.  A way
keeps two state vectors and a window of four message vectors live, which is
what limits :data:`WAYS`: beyond it the schedule spills to the stack.

Why it stops near 0.6 of the ``sha256rnds2`` ceiling (measured on the AMD
EPYC Zen 4 this was developed on, per-thread CPU time, 3.7 GHz; the
benchmark's ``schedule_overlap`` figure repeats the second point each run):

* ``sha256rnds2`` issues one per cycle with a latency of about four;
  ``sha256msg2`` one per two cycles, ``sha256msg1`` about 1.5 per cycle.
  Besides its 62 + 21 + 24 SHA instructions a nonce costs 51 vector adds
  (W + K, the schedule's middle term, the digest), 50 shuffles (the high
  pair, the schedule's word alignment, the digest to message order) and about
  120 register moves (the SHA instructions are two-operand, read xmm0 and see
  only xmm0-15).  Those counts issued on independent chains, with no data
  flow at all (a hand-written assembly loop), run at 84 cycles per nonce,
  0.74 of the ``sha256rnds2`` ceiling: the most this instruction count can
  reach here.  The kernel runs at about 100 cycles (0.62); the same data flow
  hand-allocated in assembly runs at 103, so LLVM's allocation is not what
  holds it back, and moves or scalar work added to the loop cost cycles
  (about 0.17 per scalar instruction: the front end is shared).
* The vector pipes are shared with ``sha256rnds2``: an AVX-512 schedule
  (16 nonces per register, ``vprord``/``vpternlogd``) interleaved with
  ``sha256rnds2`` chains takes as long as the two one after the other
  (overlap about 0).  Computing W + K for both hashes that way would add
  some 40-50 cycles per nonce to the 62 of the rounds, more than the
  ``sha256msg1``/``sha256msg2`` schedule costs; for the same reason AVX-512
  lanes of the portable kernel mixed into this loop would not come for free.
* Software pipelining (the first hash of the next group interleaved with the
  second hash of this one, digests carried in registers) gave 37.0, 36.3,
  34.0 and 33.1 MH/s for 2+2, 3+3, 4+4 and 5+5 chains against 36.9 for this
  loop in the same runs: the chains' start and end are not what costs.
* Fewer SHA instructions alone do not help either: X[4] of block two as
  X[4](W3 = 0) + <0, 0, sigma0(W3), W3> (one ``sha256msg1`` and one
  ``sha256msg2`` fewer per nonce, the sigma in general registers) ran at 36.9
  against 36.8 MH/s, and the constant ``sha256msg1`` terms folded to constants
  at 37.1 against 36.8 (best of 9, within the noise): the inserts and moves
  they add cost what they save.  Nor does another LLVM CPU model for the
  function (icelake-server, sapphirerapids, x86-64-v4: 36.1; znver3, without
  AVX-512's extra registers: 32.0, against 37.0).

The functions carry ``"target-features"="+sha,+sse4.1,+ssse3"`` so LLVM can
select the instructions whatever CPU numba targets (without it, a non-SHA
target aborts the process with "Cannot select").  Nothing here runs or
compiles at import: the caller only calls :func:`scan` after it has checked
that the CPU has SHA-NI.
"""

from __future__ import annotations

from dataclasses import dataclass

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

WAYS = 4  # chains per iteration (CPU-time MH/s here: 1: 17.6, 2: 27.8, 3: 34.5, 4: 36.3, 5: 34.5, 6: 34.1;
# software-pipelined 2+2: 37.0, 3+3: 36.3, 4+4: 34.0 against 36.9 for 4 in the same run)
QUADS = 16  # four-round steps of one compression
CALLS_PER_COMPRESSION = 2 * QUADS
# The second hash stops after the first call of the last quad (rounds 60-61).
LAST_CALL_SECOND_HASH = CALLS_PER_COMPRESSION - 2
RNDS2_PER_NONCE = (CALLS_PER_COMPRESSION - 1) + (LAST_CALL_SECOND_HASH + 1)  # 31 + 31
# The schedule's SHA instructions a nonce needs besides (the benchmark's instruction-mix ceiling):
# X[4..15] of each hash, less the msg1 whose inputs are the same for every nonce (2 in block
# two of the first hash, words 4..15 constant; 1 in the second, words 8..15 constant).
MSG2_PER_NONCE = 2 * (QUADS - 4)  # 12 + 12
MSG1_PER_NONCE = MSG2_PER_NONCE - 3  # 10 + 11
TARGET_FEATURES = '"target-features"="+sha,+sse4.1,+ssse3"'
SCAN_NAME = f"gradchain_sha256d_scan_x{WAYS}"
FULL_NAME = "gradchain_sha256d_full"
NO_HIT = -1  # returned by scan when no nonce in the range meets the target

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V4 = ir.VectorType(_I32, 4)
_ALIGN_W7 = (1, 2, 3, 4)  # shuffle of (X[q-2], X[q-1]) giving W[t-7 .. t-4]
_HIGH_PAIR = (2, 3, 2, 3)  # moves the message vector's high two lanes down for the second rnds2
_ZERO = (0, 0, 0, 0)
FIRST_TAIL = ((PAD_BIT, 0, 0, 0), _ZERO, (0, 0, 0, HEADER_BITS))  # block two, words 4..15
SECOND_TAIL = ((PAD_BIT, 0, 0, 0), (0, 0, 0, DIGEST_BITS))  # second hash, words 8..15
H7_LANE = 0  # F of an ABEF vector: after rounds 60-61 it is e after round 60


def _vec(values: tuple[int, ...]) -> ir.Constant:
    return ir.Constant(_V4, [ir.Constant(_I32, v) for v in values])


def _shuffle(b: ir.IRBuilder, x: ir.Value, y: ir.Value, lanes: tuple[int, ...]) -> ir.Value:
    return b.shuffle_vector(x, y, ir.Constant(ir.VectorType(_I32, len(lanes)), list(lanes)))


def _new_function(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    fn = ir.Function(module, fnty, name)
    fn.linkage = "internal"
    # llvmlite only knows keyword attributes; a string attribute is printed as written.
    set.add(fn.attributes, TARGET_FEATURES)
    fn.attributes.add("nounwind")
    return fn


class _Intrinsics:
    """Declarations of the LLVM intrinsics the kernels call, in one module."""

    def __init__(self, module: ir.Module) -> None:
        v4_fn2 = ir.FunctionType(_V4, [_V4, _V4])
        self.rnds2 = _jit.declare(module, "llvm.x86.sha256rnds2", ir.FunctionType(_V4, [_V4, _V4, _V4]))
        self.msg1 = _jit.declare(module, "llvm.x86.sha256msg1", v4_fn2)
        self.msg2 = _jit.declare(module, "llvm.x86.sha256msg2", v4_fn2)
        self.bswap_v4 = _jit.declare(module, "llvm.bswap.v4i32", ir.FunctionType(_V4, [_V4]))
        self.bswap_i32 = _jit.declare(module, "llvm.bswap.i32", ir.FunctionType(_I32, [_I32]))


State = tuple[ir.Value, ir.Value]  # (abef, cdgh)


@dataclass
class _Schedule:
    """One way's message vectors X[0..], extended on demand.

    ``constant_msg1[q]`` replaces ``msg1(X[q-4], X[q-3])`` when both are the
    same for every nonce: it was computed once, outside the loop.
    """

    x: list[ir.Value]
    constant_msg1: dict[int, ir.Value]

    def get(self, b: ir.IRBuilder, fns: _Intrinsics, q: int) -> ir.Value:
        while len(self.x) <= q:
            n = len(self.x)
            x = self.x
            first = self.constant_msg1.get(n)
            if first is None:
                first = b.call(fns.msg1, [x[n - 4], x[n - 3]])
            mixed = b.add(first, _shuffle(b, x[n - 2], x[n - 1], _ALIGN_W7))
            x.append(b.call(fns.msg2, [mixed, x[n - 1]]))
        return self.x[q]


def _constant_msg1(b: ir.IRBuilder, fns: _Intrinsics, x: list[ir.Value | None]) -> dict[int, ir.Value]:
    """``msg1(X[q-4], X[q-3])`` for every q whose two inputs are known constants (None: varies)."""
    out = {}
    for q in range(4, len(x) + 3):
        left, right = x[q - 4], x[q - 3]
        if left is not None and right is not None:
            out[q] = b.call(fns.msg1, [left, right])
    return out


def _rounds(
    b: ir.IRBuilder,
    fns: _Intrinsics,
    states: list[State],
    schedules: list[_Schedule],
    first_call: int,
    last_call: int,
) -> list[State]:
    """Calls ``first_call .. last_call`` of a compression on every way, interleaved.

    Call ``c`` does rounds ``2c, 2c + 1`` with the low (c even) or high (c odd)
    pair of ``X[c // 2] + K``.  After an even number of calls a way's state is
    ``(abef, cdgh)`` again; after an odd number the first element holds the old
    ABEF (the new CDGH) and the second the new ABEF.
    """
    work = list(states)
    for c in range(first_call, last_call + 1):
        q = c // 2
        for way, (abef, cdgh) in enumerate(work):
            wk = b.add(schedules[way].get(b, fns, q), _vec(K[4 * q : 4 * q + 4]))
            if c % 2 == 0:
                work[way] = (abef, b.call(fns.rnds2, [cdgh, abef, wk]))
            else:
                work[way] = (b.call(fns.rnds2, [abef, cdgh, _shuffle(b, wk, wk, _HIGH_PAIR)]), cdgh)
    return work


def _words_of(b: ir.IRBuilder, abef: ir.Value, cdgh: ir.Value) -> tuple[ir.Value, ir.Value]:
    """State registers back to message order: <H0, H1, H2, H3>, <H4, H5, H6, H7>."""
    return _shuffle(b, abef, cdgh, (3, 2, 7, 6)), _shuffle(b, abef, cdgh, (1, 0, 5, 4))


def _pack(b: ir.IRBuilder, words: list[ir.Value]) -> ir.Value:
    vec: ir.Value = ir.Constant(_V4, ir.Undefined)
    for lane, word in enumerate(words):
        vec = b.insert_element(vec, word, ir.Constant(_I32, lane))
    return vec


def _state_of(b: ir.IRBuilder, words: list[ir.Value]) -> State:
    """(ABEF, CDGH) = (<F, E, B, A>, <H, G, D, C>) from the words A..H."""
    return (_pack(b, [words[5], words[4], words[1], words[0]]),
            _pack(b, [words[7], words[6], words[3], words[2]]))


def _add_states(b: ir.IRBuilder, x: State, y: State) -> State:
    return b.add(x[0], y[0]), b.add(x[1], y[1])


IV_STATE_WORDS = ((IV[5], IV[4], IV[1], IV[0]), (IV[7], IV[6], IV[3], IV[2]))


@dataclass
class _Header:
    """Per-header values: loaded words, midstate and the constant schedule terms."""

    tail: list[ir.Value]
    mid: State
    first_msg1: dict[int, ir.Value]
    second_msg1: dict[int, ir.Value]


def _load_header(b: ir.IRBuilder, fns: _Intrinsics, mid_ptr: ir.Value, tail_ptr: ir.Value) -> _Header:
    mid = [b.load(b.gep(mid_ptr, [ir.Constant(_I32, i)])) for i in range(DIGEST_WORDS)]
    tail = [b.load(b.gep(tail_ptr, [ir.Constant(_I32, i)])) for i in range(TAIL_WORDS)]
    first_x: list[ir.Value | None] = [None, *(_vec(v) for v in FIRST_TAIL)]
    second_x: list[ir.Value | None] = [None, None, *(_vec(v) for v in SECOND_TAIL)]
    return _Header(tail, _state_of(b, mid), _constant_msg1(b, fns, first_x),
                   _constant_msg1(b, fns, second_x))


def _first_message(b: ir.IRBuilder, fns: _Intrinsics, header: _Header, nonce: ir.Value) -> _Schedule:
    # The nonce sits little-endian in the header; SHA-256 reads big-endian words.
    x0 = _pack(b, [*header.tail, b.call(fns.bswap_i32, [nonce])])
    return _Schedule([x0, *(_vec(v) for v in FIRST_TAIL)], dict(header.first_msg1))


def _second_message(b: ir.IRBuilder, header: _Header, digest: State) -> _Schedule:
    return _Schedule([*_words_of(b, *digest), *(_vec(v) for v in SECOND_TAIL)], dict(header.second_msg1))


def _define_scan(module: ir.Module) -> ir.Function:
    """Define (once per module) ``i64 scan(i32* mid, i32* tail, i64 first, i64 end, i32 top)``.

    Returns the first nonce of the first group of WAYS (from ``first``, groups
    starting below ``end``) in which some nonce's top limb is <= ``top``, or
    ``end``.  Nonces are taken mod 2**32.
    """
    existing = module.globals.get(SCAN_NAME)
    if existing is not None:
        return existing
    ptr = _I32.as_pointer()
    fn = _new_function(module, SCAN_NAME, ir.FunctionType(_I64, [ptr, ptr, _I64, _I64, _I32]))
    mid_ptr, tail_ptr, start, end, top = fn.args
    fns = _Intrinsics(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    header = _load_header(b, fns, mid_ptr, tail_ptr)
    # Call 0 of block two reads words 0..1 only (header bytes 64..71): once per batch.
    shared = _Schedule([_pack(b, [*header.tail, ir.Constant(_I32, 0)])], {})
    after_first = _rounds(b, fns, [header.mid], [shared], 0, 0)[0]

    def hash_group(b: ir.IRBuilder, group: ir.Value) -> ir.Value:
        nonces = [b.trunc(b.add(group, ir.Constant(_I64, way)), _I32) for way in range(WAYS)]
        first = _rounds(b, fns, [after_first] * WAYS,
                        [_first_message(b, fns, header, n) for n in nonces], 1, CALLS_PER_COMPRESSION - 1)
        digests = [_add_states(b, state, header.mid) for state in first]
        iv = (_vec(IV_STATE_WORDS[0]), _vec(IV_STATE_WORDS[1]))
        second = _rounds(b, fns, [iv] * WAYS, [_second_message(b, header, d) for d in digests],
                         0, LAST_CALL_SECOND_HASH)
        hit: ir.Value = ir.Constant(ir.IntType(1), 0)
        for _, new_abef in second:
            h7 = b.add(b.extract_element(new_abef, ir.Constant(_I32, H7_LANE)), ir.Constant(_I32, IV[7]))
            limb = b.call(fns.bswap_i32, [h7])
            hit = b.or_(hit, b.icmp_unsigned("<=", limb, top))
        return hit

    _jit.emit_group_loop(fn, b, start, end, WAYS, hash_group)
    return fn


def _define_full(module: ir.Module) -> ir.Function:
    """Define (once per module) ``void full(i32* mid, i32* tail, i32 nonce, i32* out)``: 8 limbs.

    The plain sha256d of one nonce, all 64 rounds of both hashes, stored as
    eight little-endian limbs (limb 7 most significant) for a full compare.
    """
    existing = module.globals.get(FULL_NAME)
    if existing is not None:
        return existing
    ptr = _I32.as_pointer()
    fn = _new_function(module, FULL_NAME, ir.FunctionType(ir.VoidType(), [ptr, ptr, _I32, ptr]))
    mid_ptr, tail_ptr, nonce, out_ptr = fn.args
    fns = _Intrinsics(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    header = _load_header(b, fns, mid_ptr, tail_ptr)
    last = CALLS_PER_COMPRESSION - 1
    (first,) = _rounds(b, fns, [header.mid], [_first_message(b, fns, header, nonce)], 0, last)
    digest = _add_states(b, first, header.mid)
    iv = (_vec(IV_STATE_WORDS[0]), _vec(IV_STATE_WORDS[1]))
    (second,) = _rounds(b, fns, [iv], [_second_message(b, header, digest)], 0, last)
    low, high = _words_of(b, *_add_states(b, second, iv))
    for half, vec in enumerate((b.call(fns.bswap_v4, [low]), b.call(fns.bswap_v4, [high]))):
        for lane in range(4):
            slot = ir.Constant(_I32, half * 4 + lane)
            b.store(b.extract_element(vec, ir.Constant(_I32, lane)), b.gep(out_ptr, [slot]))
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

    ``mid`` is the midstate (8 u32), ``tail`` the big-endian words of header bytes
    64..75, ``target`` eight little-endian limbs.  The compiled loop filters on
    the most significant limb; each group it stops at is rechecked in full,
    nonce by nonce in increasing order, so the lowest hit is returned.
    """
    out = np.empty(DIGEST_WORDS, dtype=np.uint32)
    top = np.uint32(target[DIGEST_WORDS - 1])
    end = start + count
    position = start
    while position < end:
        group: int = _scan_groups(mid, tail, position, end, top)
        if group >= end:
            return NO_HIT
        for way in range(WAYS):
            nonce = group + way
            if nonce >= end:
                return NO_HIT
            full_digest(mid, tail, nonce, out)
            if _jit.at_most(out, target):
                return nonce
        position = group + WAYS
    return NO_HIT

