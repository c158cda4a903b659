"""Portable SHA-256d nonce scan: ``LANES`` nonces side by side, for CPUs without SHA-NI.

Every working variable and message word is a row of ``LANES`` u32 values, one
per nonce, in one flat scratch array; each step of SHA-256 is a short loop over
the lanes with no branches, which LLVM turns into SIMD (AVX2 / AVX-512 where
numba's target has them, SSE2 otherwise).  Rows live at constant offsets in a
single array so LLVM can see that they never overlap.

The eight working variables are not shifted after each round: round ``t``
finds variable ``v`` (a = 0 .. h = 7) in slot ``(v - t) mod 8``, so a round
writes two rows (the new ``a`` into the old ``h`` slot, the new ``e`` into the
old ``d`` slot) instead of eight.

Arithmetic: numba widens u32 operands to 64 bits.  Additions, xors, ands and
left shifts give the right low 32 bits regardless, and every stored value is
truncated back to u32; the only operation that would read garbage high bits is
a right shift, and every right shift here is of a value just loaded from the
u32 scratch, so it is clean.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from consensus._sha256_common import (
    DIGEST_BITS,
    DIGEST_WORDS,
    HEADER_BITS,
    IV_ARRAY,
    K_ARRAY,
    PAD_BIT,
    TAIL_WORDS,
)

LANES = 32  # nonces per group: 4 AVX2 / 2 AVX-512 registers of u32 (8: 1.8, 16: 5.9, 32: 7.9, 64: 8.5 MH/s here)
ROUNDS = 64
SCHEDULE_ROWS = 64  # message words W[0..63]
W_BASE = 0  # scratch offset of the schedule rows
S_BASE = SCHEDULE_ROWS * LANES  # scratch offset of the 8 working-variable slots
H_BASE = S_BASE + DIGEST_WORDS * LANES  # scratch offset of the first hash's digest rows
SCRATCH = H_BASE + DIGEST_WORDS * LANES
NO_HIT = -1

_U7 = np.uint32(7)
_U25 = np.uint32(25)
_U18 = np.uint32(18)
_U14 = np.uint32(14)
_U3 = np.uint32(3)
_U29 = np.uint32(29)
_U17 = np.uint32(17)
_U15 = np.uint32(15)
_U19 = np.uint32(19)
_U13 = np.uint32(13)
_U10 = np.uint32(10)
_U22 = np.uint32(22)
_U6 = np.uint32(6)
_U26 = np.uint32(26)
_U11 = np.uint32(11)
_U21 = np.uint32(21)
_U2 = np.uint32(2)
_U30 = np.uint32(30)
_U8 = np.uint32(8)
_U24 = np.uint32(24)
_BYTE = np.uint32(0xFF)
_BYTE1 = np.uint32(0xFF00)
_BYTE2 = np.uint32(0xFF0000)


@numba.njit(nogil=True, cache=True, inline="always")
def _bswap(x: np.uint32) -> np.uint32:
    return ((x & _BYTE) << _U24) | ((x & _BYTE1) << _U8) | ((x >> _U8) & _BYTE1) | (x >> _U24)


@numba.njit(nogil=True, cache=True)
def _expand(s: npt.NDArray[np.uint32]) -> None:
    """Fill W[16..63] from W[0..15] for every lane."""
    for t in range(16, SCHEDULE_ROWS):
        row = W_BASE + t * LANES
        for lane in range(LANES):
            x = s[row - 15 * LANES + lane]
            y = s[row - 2 * LANES + lane]
            s0 = ((x >> _U7) | (x << _U25)) ^ ((x >> _U18) | (x << _U14)) ^ (x >> _U3)
            s1 = ((y >> _U17) | (y << _U15)) ^ ((y >> _U19) | (y << _U13)) ^ (y >> _U10)
            s[row + lane] = s[row - 16 * LANES + lane] + s0 + s[row - 7 * LANES + lane] + s1


@numba.njit(nogil=True, cache=True)
def _rounds(s: npt.NDArray[np.uint32], k: npt.NDArray[np.uint32]) -> None:
    """64 rounds over the working-variable slots, consuming the schedule rows."""
    for t in range(ROUNDS):
        a = S_BASE + ((0 - t) & 7) * LANES
        b = S_BASE + ((1 - t) & 7) * LANES
        c = S_BASE + ((2 - t) & 7) * LANES
        d = S_BASE + ((3 - t) & 7) * LANES
        e = S_BASE + ((4 - t) & 7) * LANES
        f = S_BASE + ((5 - t) & 7) * LANES
        g = S_BASE + ((6 - t) & 7) * LANES
        h = S_BASE + ((7 - t) & 7) * LANES
        w = W_BASE + t * LANES
        kt = k[t]
        for lane in range(LANES):
            ea = s[e + lane]
            aa = s[a + lane]
            ba = s[b + lane]
            ca = s[c + lane]
            big1 = (
                ((ea >> _U6) | (ea << _U26))
                ^ ((ea >> _U11) | (ea << _U21))
                ^ ((ea >> _U25) | (ea << _U7))
            )
            choose = (ea & s[f + lane]) ^ (~ea & s[g + lane])
            t1 = s[h + lane] + big1 + choose + kt + s[w + lane]
            big0 = (
                ((aa >> _U2) | (aa << _U30))
                ^ ((aa >> _U13) | (aa << _U19))
                ^ ((aa >> _U22) | (aa << _U10))
            )
            majority = (aa & ba) ^ (aa & ca) ^ (ba & ca)
            s[d + lane] = s[d + lane] + t1
            s[h + lane] = t1 + big0 + majority


@numba.njit(nogil=True, cache=True)
def _load_state(s: npt.NDArray[np.uint32], state: npt.NDArray[np.uint32]) -> None:
    for v in range(DIGEST_WORDS):
        for lane in range(LANES):
            s[S_BASE + v * LANES + lane] = state[v]


@numba.njit(nogil=True, cache=True)
def _hash_group(
    s: npt.NDArray[np.uint32],
    mid: npt.NDArray[np.uint32],
    tail: npt.NDArray[np.uint32],
    first: int,
    k: npt.NDArray[np.uint32],
) -> None:
    """sha256d of LANES consecutive nonces from ``first``; digest words left in the slot rows.

    After 64 rounds (a multiple of 8) every variable is back in its own slot.
    """
    for i in range(TAIL_WORDS):
        for lane in range(LANES):
            s[W_BASE + i * LANES + lane] = tail[i]
    for lane in range(LANES):
        s[W_BASE + TAIL_WORDS * LANES + lane] = _bswap(np.uint32((first + lane) & 0xFFFFFFFF))
    for i in range(4, 16):
        word = PAD_BIT if i == 4 else (HEADER_BITS if i == 15 else 0)
        for lane in range(LANES):
            s[W_BASE + i * LANES + lane] = word
    _expand(s)
    _load_state(s, mid)
    _rounds(s, k)
    for v in range(DIGEST_WORDS):
        for lane in range(LANES):
            s[W_BASE + v * LANES + lane] = s[S_BASE + v * LANES + lane] + mid[v]
    for i in range(DIGEST_WORDS, 16):
        word = PAD_BIT if i == DIGEST_WORDS else (DIGEST_BITS if i == 15 else 0)
        for lane in range(LANES):
            s[W_BASE + i * LANES + lane] = word
    _expand(s)
    _load_state(s, IV_ARRAY)
    _rounds(s, k)


@numba.njit(nogil=True, cache=True)
def _at_most(s: npt.NDArray[np.uint32], lane: int, target: npt.NDArray[np.uint32]) -> bool:
    """Digest of ``lane`` (as a little-endian integer) <= target, most significant limb first."""
    for j in range(DIGEST_WORDS - 1, -1, -1):
        limb = np.uint32(_bswap(np.uint32(s[S_BASE + j * LANES + lane] + IV_ARRAY[j])))
        if limb != target[j]:
            return bool(limb < target[j])
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

    Same contract as the SHA-NI scan.  The cheap filter is the most significant
    limb: byte-swapped final word H7.
    """
    s = np.zeros(SCRATCH, dtype=np.uint32)
    k = K_ARRAY.copy()
    top = target[DIGEST_WORDS - 1]
    end = start + count
    h7 = S_BASE + (DIGEST_WORDS - 1) * LANES
    for first in range(start, end, LANES):
        _hash_group(s, mid, tail, first, k)
        for lane in range(LANES):
            if first + lane < end:
                limb = np.uint32(_bswap(np.uint32(s[h7 + lane] + IV_ARRAY[DIGEST_WORDS - 1])))
                if limb <= top and _at_most(s, lane, target):
                    return first + lane
    return NO_HIT
