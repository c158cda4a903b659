"""Targets, proof of work and the per-block ASERT retarget.

Compact targets ("bits") use Bitcoin's encoding (arith_uint256
SetCompact/GetCompact): one size byte, then a 3-byte mantissa whose top bit is
a sign. A block hash, read as a little-endian 256-bit number, must not exceed
the target its bits encode.

The retarget is aserti3-2d, the absolutely scheduled exponential rule Bitcoin
Cash adopted in November 2020 (spec: "ASERT Difficulty Adjustment Algorithm",
bitcoincash.org/spec/2020-11-15-asert.md, after Mark Lundeberg's ASERT). Every
block's target is the genesis target times ``2**(drift / half_life)``, where
``drift`` is how far the parent's time runs ahead of the ideal schedule.
Because it is anchored at a fixed block and never accumulates per-block
rounding, it computes the same bits on every machine from three integers, and
it has no oscillation or retarget window a miner could game. Only integer
arithmetic is used: ``2**x`` for the fractional part of ``x`` is a cubic
polynomial in 16-bit fixed point, exactly as the spec prescribes, so our bits
match the spec's published test vectors.
"""

from __future__ import annotations

from consensus.errors import BlockRejected, Reject
from consensus.header import is_u32
from consensus.params import ChainParams

HASH_SIZE = 32  # bytes of a sha256d digest
TARGET_SPACE = 1 << 256  # targets and hashes are 256-bit numbers

# Compact ("bits") encoding.
BITS_SIZE_SHIFT = 24  # the size byte sits above the 3-byte mantissa
BITS_MANTISSA_BYTES = 3
BITS_SIGN_BIT = 0x00800000
BITS_MANTISSA_MASK = 0x007FFFFF
BITS_PER_BYTE = 8

# aserti3-2d fixed point: exponents carry 16 fractional bits.
ASERT_RADIX_BITS = 16
ASERT_RADIX = 1 << ASERT_RADIX_BITS
ASERT_FRAC_MASK = ASERT_RADIX - 1
# 2**x ~= 1 + 0.695502049 x + 0.2262698 x**2 + 0.0782318 x**3 on [0, 1)
# (error < 0.013 %), coefficients scaled so that for x = frac / 2**16 the sum
# lands in units of 2**-16 after a 48-bit shift; 2**47 rounds to nearest.
ASERT_POLY_C1 = 195_766_423_245_049
ASERT_POLY_C2 = 971_821_376
ASERT_POLY_C3 = 5_127
ASERT_POLY_SHIFT = 48
ASERT_POLY_ROUND = 1 << (ASERT_POLY_SHIFT - 1)


def bits_to_target(bits: int) -> int:
    """Decode compact ``bits`` into a target.

    Follows Bitcoin Core's ``SetCompact``; a negative, overflowing (>= 2**256)
    or zero result is not a usable target.

    Raises
    ------
    BlockRejected
        ``Reject.BAD_BITS`` if ``bits`` is not a u32 or decodes to a
        negative, overflowing or zero target.
    """
    if not is_u32(bits):
        raise BlockRejected(Reject.BAD_BITS, f"bits {bits!r} is not a u32")
    size = bits >> BITS_SIZE_SHIFT
    mantissa = bits & BITS_MANTISSA_MASK
    if size <= BITS_MANTISSA_BYTES:
        mantissa >>= BITS_PER_BYTE * (BITS_MANTISSA_BYTES - size)
        target = mantissa
    else:
        target = mantissa << (BITS_PER_BYTE * (size - BITS_MANTISSA_BYTES))
    if mantissa != 0 and bits & BITS_SIGN_BIT:
        raise BlockRejected(Reject.BAD_BITS, f"bits {bits:#010x} encode a negative target")
    if target >= TARGET_SPACE:
        raise BlockRejected(Reject.BAD_BITS, f"bits {bits:#010x} overflow 256 bits")
    if target == 0:
        raise BlockRejected(Reject.BAD_BITS, f"bits {bits:#010x} encode a zero target")
    return target


def target_to_bits(target: int) -> int:
    """Encode ``target`` in compact form, truncating to a 3-byte mantissa.

    Follows Bitcoin Core's ``GetCompact``: the result is the canonical
    encoding, and ``bits_to_target(target_to_bits(t)) <= t`` (equal when
    ``t`` has at most 23 significant bits below its top byte boundary).

    Raises
    ------
    BlockRejected
        ``Reject.BAD_BITS`` if ``target`` is not in ``[1, 2**256)``.
    """
    if isinstance(target, bool) or not isinstance(target, int) or not 0 < target < TARGET_SPACE:
        raise BlockRejected(Reject.BAD_BITS, f"target {target!r} is not in [1, 2**256)")
    size = (target.bit_length() + BITS_PER_BYTE - 1) // BITS_PER_BYTE
    if size <= BITS_MANTISSA_BYTES:
        mantissa = target << (BITS_PER_BYTE * (BITS_MANTISSA_BYTES - size))
    else:
        mantissa = target >> (BITS_PER_BYTE * (size - BITS_MANTISSA_BYTES))
    if mantissa & BITS_SIGN_BIT:
        # The top mantissa bit would read as a sign: move one byte into size.
        mantissa >>= BITS_PER_BYTE
        size += 1
    return (size << BITS_SIZE_SHIFT) | mantissa


def work(bits: int) -> int:
    """Expected number of hashes to find a block with ``bits``.

    ``2**256 // (target + 1)``, Bitcoin's ``GetBlockProof``: fork choice sums
    it over a chain, so the chain that cost the most hashing wins.
    """
    return TARGET_SPACE // (bits_to_target(bits) + 1)


def hash_to_int(h: bytes) -> int:
    """Read a 32-byte hash as the little-endian number compared to targets.

    Raises
    ------
    ValueError
        If ``h`` is not 32 bytes (a programming error: hashes come from
        sha256d).
    """
    if len(h) != HASH_SIZE:
        raise ValueError(f"a hash is {HASH_SIZE} bytes, got {len(h)}")
    return int.from_bytes(h, "little")


def check_proof_of_work(header_hash: bytes, bits: int, params: ChainParams) -> None:
    """Check that ``header_hash`` meets the target ``bits`` encodes.

    Raises
    ------
    BlockRejected
        ``Reject.BAD_BITS`` if ``bits`` is invalid or easier than
        ``params.pow_limit``; ``Reject.BAD_POW`` if the hash exceeds the target.
    """
    target = bits_to_target(bits)
    if target > params.pow_limit:
        raise BlockRejected(
            Reject.BAD_BITS, f"bits {bits:#010x} easier than the {params.name} pow limit"
        )
    value = hash_to_int(header_hash)
    if value > target:
        raise BlockRejected(
            Reject.BAD_POW, f"hash {value:#066x} above target {target:#066x} (bits {bits:#010x})"
        )


def _div_trunc(numerator: int, denominator: int) -> int:
    """Integer division rounding toward zero, like C's ``/`` (the spec's)."""
    quotient = abs(numerator) // abs(denominator)
    return quotient if (numerator < 0) == (denominator < 0) else -quotient


def _pow2_frac(frac: int) -> int:
    """``2**(frac / 2**16) * 2**16`` for ``0 <= frac < 2**16``, integer only."""
    poly = (
        ASERT_POLY_C1 * frac
        + ASERT_POLY_C2 * frac * frac
        + ASERT_POLY_C3 * frac * frac * frac
        + ASERT_POLY_ROUND
    )
    return ASERT_RADIX + (poly >> ASERT_POLY_SHIFT)


def asert_target(
    anchor_target: int,
    *,
    time_delta_s: int,
    height_delta: int,
    target_block_time_s: int,
    half_life_s: int,
    pow_limit: int,
) -> int:
    """aserti3-2d: the target after ``height_delta`` blocks past the anchor.

    Parameters
    ----------
    anchor_target:
        Target of the anchor block, in ``[1, pow_limit]``.
    time_delta_s:
        Parent's time minus the anchor's parent's time, in seconds.
    height_delta:
        Parent's height minus the anchor's height (>= 0).
    target_block_time_s, half_life_s:
        The ideal block spacing and the drift that doubles the target.
    pow_limit:
        Cap on the result.

    Returns
    -------
    int
        ``anchor_target * 2**((time_delta_s - spacing * (height_delta + 1))
        / half_life_s)`` in 16-bit fixed point, clamped to ``[1, pow_limit]``.
    """
    if not 0 < anchor_target <= pow_limit:
        raise ValueError(f"anchor target {anchor_target:#x} not in [1, pow_limit]")
    if height_delta < 0:
        raise ValueError(f"height_delta must be >= 0, got {height_delta}")
    drift_s = time_delta_s - target_block_time_s * (height_delta + 1)
    exponent = _div_trunc(drift_s * ASERT_RADIX, half_life_s)
    shifts = (exponent >> ASERT_RADIX_BITS) - ASERT_RADIX_BITS  # floor, then undo the radix
    target = anchor_target * _pow2_frac(exponent & ASERT_FRAC_MASK)
    if shifts <= 0:
        target >>= -shifts
    elif target.bit_length() + shifts > pow_limit.bit_length():
        return pow_limit  # surely above the limit; skip building a huge int
    else:
        target <<= shifts
    if target == 0:
        return 1  # 0 is not a valid target, 1 is
    return min(target, pow_limit)


def asert_max_drift_s(params: ChainParams) -> int:
    """The schedule drift at which ASERT reaches the pow limit: whole half-lives, genesis bits to limit.

    A chain further behind schedule than this already mines at the limit;
    :func:`next_anchor_time` forgets the excess, so it is never banked.
    """
    target, halvings = bits_to_target(params.genesis_bits), 0
    while target << halvings < params.pow_limit:
        halvings += 1
    return halvings * params.asert_half_life_s


def next_anchor_time(params: ChainParams, anchor_time: int | None, height: int, time: int) -> int | None:
    """The ASERT anchor time of a branch after its block at ``height``, stamped ``time``.

    Block 1 sets it (None before). Each later block slides it forward, if
    needed, so that the schedule is never more than
    :func:`asert_max_drift_s` behind: ``max(anchor, time - spacing *
    (height - 1) - max_drift)``. Without the slide, drift is banked: a miner
    who stamps block 1 early (any time after the fixed genesis time passes
    the median-time rule), or a network that pauses for a day, leaves a
    backlog the chain then works off with free blocks at the pow limit, one
    per ``spacing`` of backlog. With it, the first block after the gap is at
    the limit and the next ones climb back at once. Bitcoin Cash never
    needed this (its anchor is a block of a running chain); a chain that
    starts from a genesis fixed in the past does.
    """
    if height == 0:
        return None
    if anchor_time is None or height == 1:
        return time
    if not params.retarget:
        return anchor_time
    lag = params.target_block_time_s * (height - 1) + asert_max_drift_s(params)
    return max(anchor_time, time - lag)


def next_bits(
    params: ChainParams, *, anchor_time: int, parent_height: int, parent_time: int
) -> int:
    """The bits the block at ``parent_height + 1`` must carry.

    The ASERT anchor is genesis (height 0, bits ``params.genesis_bits``, time
    ``anchor_time``); its parent's time is taken as ``anchor_time -
    target_block_time_s``, so genesis' child carries ``genesis_bits``. With
    ``params.retarget`` off (regtest) every block carries ``genesis_bits``.

    Raises
    ------
    ValueError
        If ``parent_height`` is negative.
    """
    if parent_height < 0:
        raise ValueError(f"parent_height must be >= 0, got {parent_height}")
    if not params.retarget:
        return params.genesis_bits
    anchor_parent_time = anchor_time - params.target_block_time_s
    target = asert_target(
        bits_to_target(params.genesis_bits),
        time_delta_s=parent_time - anchor_parent_time,
        height_delta=parent_height,
        target_block_time_s=params.target_block_time_s,
        half_life_s=params.asert_half_life_s,
        pow_limit=params.pow_limit,
    )
    return target_to_bits(target)
