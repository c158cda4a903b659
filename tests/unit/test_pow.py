"""Compact targets behave exactly like Bitcoin Core's, and proof of work is checked right.

The vectors are the cases Bitcoin Core's arith_uint256 tests pin for
SetCompact/GetCompact: tiny sizes that shift the mantissa away, the sign bit,
sizes that overflow 256 bits.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import BlockRejected, Reject
from consensus.header import hex_to_hash
from consensus.params import MAIN, REGTEST, TESTNET
from consensus.pow import (
    bits_to_target,
    check_proof_of_work,
    hash_to_int,
    target_to_bits,
    work,
)

# (bits, target, canonical bits) for valid encodings.
VALID_BITS = [
    (0x01123456, 0x12, 0x01120000),
    (0x02123456, 0x1234, 0x02123400),
    (0x03123456, 0x123456, 0x03123456),
    (0x04123456, 0x12345600, 0x04123456),
    (0x05009234, 0x92340000, 0x05009234),
    (0x20123456, 0x123456 << (8 * 29), 0x20123456),
    (0x1D00FFFF, 0xFFFF << (8 * 26), 0x1D00FFFF),
    (0x1B0404CB, 0x0404CB << (8 * 24), 0x1B0404CB),
    (0x207FFFFF, 0x7FFFFF << (8 * 29), 0x207FFFFF),
    (0x03000001, 1, 0x01010000),  # non-canonical spelling of 1
    (0x22000001, 1 << 248, 0x20010000),  # size 34 is fine while the mantissa is small
]

# Encodings Bitcoin decodes to zero: not a usable target.
ZERO_BITS = [0, 0x00123456, 0x01003456, 0x02000056, 0x03000000, 0x04000000,
             0x00923456, 0x01803456, 0x02800056, 0x03800000, 0x04800000]  # fmt: skip
NEGATIVE_BITS = [0x04923456, 0x01FEDCBA, 0x1D80FFFF]
OVERFLOW_BITS = [0xFF123456, 0x23000001, 0x22000100, 0x21010000]
NOT_U32 = [-1, 2**32, True]

TARGETS = st.integers(min_value=1, max_value=2**256 - 1)
# Valid bits built directly (most random u32s overflow): size byte, positive mantissa.
VALID_U32_BITS = st.builds(
    lambda size, mantissa: (size << 24) | mantissa,
    st.integers(min_value=1, max_value=32),
    st.integers(min_value=1, max_value=0x7FFFFF),
).filter(lambda b: _decodes(b))


def _decodes(bits: int) -> bool:
    try:
        bits_to_target(bits)
    except BlockRejected:
        return False
    return True


@pytest.mark.parametrize(("bits", "target", "canonical"), VALID_BITS)
def test_known_compact_vectors(bits: int, target: int, canonical: int) -> None:
    assert bits_to_target(bits) == target
    assert target_to_bits(target) == canonical


@pytest.mark.parametrize("bits", ZERO_BITS + NEGATIVE_BITS + OVERFLOW_BITS + NOT_U32)
def test_unusable_bits_are_rejected(bits: int) -> None:
    with pytest.raises(BlockRejected) as info:
        bits_to_target(bits)
    assert info.value.code is Reject.BAD_BITS


@pytest.mark.parametrize("target", [0, -1, 2**256, 2**300])
def test_unencodable_targets_are_rejected(target: int) -> None:
    with pytest.raises(BlockRejected) as info:
        target_to_bits(target)
    assert info.value.code is Reject.BAD_BITS


def test_largest_target_encodes() -> None:
    assert bits_to_target(target_to_bits(2**256 - 1)) == 0xFFFF << 240


@given(TARGETS)
def test_encoding_truncates_but_never_rounds_up(target: int) -> None:
    bits = target_to_bits(target)
    decoded = bits_to_target(bits)
    assert decoded <= target
    # At most the bits below the 2-3 byte mantissa are lost: relative error < 2**-15.
    assert (target - decoded) << 15 < target
    assert target_to_bits(decoded) == bits  # canonical: re-encoding is stable


@given(VALID_U32_BITS)
def test_decoding_then_encoding_keeps_the_target(bits: int) -> None:
    target = bits_to_target(bits)
    canonical = target_to_bits(target)
    assert bits_to_target(canonical) == target


@given(st.integers(min_value=1, max_value=2**256 - 1))
def test_encoded_mantissa_never_has_the_sign_bit(target: int) -> None:
    assert not target_to_bits(target) & 0x00800000


def test_work_is_expected_hashes() -> None:
    assert work(0x1D00FFFF) == 0x100010001  # Bitcoin's difficulty-1 block proof
    assert work(0x207FFFFF) == 2
    assert work(0x1B0404CB) > work(0x1D00FFFF)  # harder bits, more work


@given(VALID_U32_BITS, VALID_U32_BITS)
def test_work_is_monotonic_in_target(a: int, b: int) -> None:
    if bits_to_target(a) <= bits_to_target(b):
        assert work(a) >= work(b)


def test_hash_to_int_is_little_endian() -> None:
    assert hash_to_int(b"\x01" + bytes(31)) == 1
    assert hash_to_int(bytes(31) + b"\x80") == 1 << 255
    genesis = hex_to_hash("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
    assert (
        hash_to_int(genesis) == 0x000000000019D6689C085AE165831E934FF763AE46A2A6C172B3F1B60A8CE26F
    )


@pytest.mark.parametrize("size", [0, 31, 33])
def test_hash_to_int_requires_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        hash_to_int(bytes(size))


BTC_LIKE = dataclasses.replace(MAIN, pow_limit=0xFFFF << 208)  # Bitcoin's limit, bits 0x1d00ffff


def test_bitcoin_genesis_meets_its_target() -> None:
    genesis = hex_to_hash("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
    check_proof_of_work(genesis, 0x1D00FFFF, BTC_LIKE)
    # ...but not a target 2**24 times harder (the genesis hash has 43 leading zero bits).
    with pytest.raises(BlockRejected) as info:
        check_proof_of_work(genesis, 0x1A00FFFF, BTC_LIKE)
    assert info.value.code is Reject.BAD_POW


def test_hash_equal_to_target_passes_and_one_above_fails() -> None:
    bits = 0x1D00FFFF
    target = bits_to_target(bits)
    check_proof_of_work(target.to_bytes(32, "little"), bits, MAIN)
    with pytest.raises(BlockRejected) as info:
        check_proof_of_work((target + 1).to_bytes(32, "little"), bits, MAIN)
    assert info.value.code is Reject.BAD_POW


def test_bits_easier_than_pow_limit_are_bad_bits_even_with_a_tiny_hash() -> None:
    with pytest.raises(BlockRejected) as info:
        check_proof_of_work(bytes(32), REGTEST.genesis_bits, MAIN)
    assert info.value.code is Reject.BAD_BITS
    check_proof_of_work(bytes(32), target_to_bits(MAIN.pow_limit), MAIN)


@pytest.mark.parametrize("bits", [0x04923456, 0xFF123456, 0x01003456])
def test_invalid_bits_are_bad_bits_in_the_pow_check(bits: int) -> None:
    with pytest.raises(BlockRejected) as info:
        check_proof_of_work(bytes(32), bits, TESTNET)
    assert info.value.code is Reject.BAD_BITS


def test_regtest_accepts_about_half_of_all_hashes() -> None:
    """Tests rely on regtest mining instantly: a hash with a clear top bit passes."""
    check_proof_of_work(b"\xff" * 31 + b"\x3f", REGTEST.genesis_bits, REGTEST)
    with pytest.raises(BlockRejected):
        check_proof_of_work(b"\xff" * 32, REGTEST.genesis_bits, REGTEST)
