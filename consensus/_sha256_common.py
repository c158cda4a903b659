"""SHA-256 constants and a pure-Python compression function shared by the kernels.

The pure-Python :func:`compress` is slow (tens of microseconds per block) but
obviously correct; it computes the midstate of a header's first 64 bytes once
per search and is checked against the NIST vectors in the tests.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

WORD_MASK = 0xFFFFFFFF
BLOCK_SIZE = 64  # bytes in one SHA-256 message block
DIGEST_WORDS = 8  # 32-bit words in a SHA-256 state / digest
HEADER_SIZE = 80  # bytes in a block header
TAIL_WORDS = 3  # big-endian words of header bytes 64..75 (merkle tail, time, bits)
PAD_BIT = 0x80000000  # the single 1 bit that starts SHA-256 padding, as a word
HEADER_BITS = HEADER_SIZE * 8  # message length in bits for the first hash
DIGEST_BITS = 256  # message length in bits for the second hash

# Round constants: first 32 bits of the fractional parts of the cube roots of
# the first 64 primes (FIPS 180-4, 4.2.2).
K: tuple[int, ...] = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip

# Initial hash value: fractional parts of the square roots of the first 8 primes (FIPS 180-4, 5.3.3).
IV: tuple[int, ...] = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip

K_ARRAY: npt.NDArray[np.uint32] = np.array(K, dtype=np.uint32)
IV_ARRAY: npt.NDArray[np.uint32] = np.array(IV, dtype=np.uint32)


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & WORD_MASK


def compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte ``block`` into ``state`` (FIPS 180-4, 6.2.2)."""
    if len(state) != DIGEST_WORDS or len(block) != BLOCK_SIZE:
        raise ValueError(
            f"compress needs 8 state words and a 64-byte block, got {len(state)} and {len(block)}"
        )
    w = list(struct.unpack(">16I", block))
    for t in range(16, 64):
        s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
        s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & WORD_MASK)
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t]
        t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
        a, b, c, d, e, f, g, h = (t1 + t2) & WORD_MASK, a, b, c, (d + t1) & WORD_MASK, e, f, g
    return tuple((x + y) & WORD_MASK for x, y in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def sha256_pure(data: bytes) -> bytes:
    """SHA-256 of ``data`` with :func:`compress`: the tests' check that compress is right."""
    bit_length = len(data) * 8
    padded = (
        data + b"\x80" + b"\x00" * ((55 - len(data)) % BLOCK_SIZE) + struct.pack(">Q", bit_length)
    )
    state = IV
    for offset in range(0, len(padded), BLOCK_SIZE):
        state = compress(state, padded[offset : offset + BLOCK_SIZE])
    return struct.pack(">8I", *state)


def midstate(header: bytes) -> npt.NDArray[np.uint32]:
    """SHA-256 state after the first 64 header bytes: the part every nonce shares."""
    return np.array(compress(IV, header[:BLOCK_SIZE]), dtype=np.uint32)


def tail_words(header: bytes) -> npt.NDArray[np.uint32]:
    """Header bytes 64..75 as the first three big-endian message words of block two."""
    return np.array(
        struct.unpack(">3I", header[BLOCK_SIZE : BLOCK_SIZE + 4 * TAIL_WORDS]), dtype=np.uint32
    )


def target_limbs(target: int) -> npt.NDArray[np.uint32]:
    """``target`` as eight little-endian u32 limbs; limb 7 is the most significant."""
    return np.frombuffer(target.to_bytes(32, "little"), dtype="<u4").astype(np.uint32)
