"""The 80-byte header encodes, decodes and hashes exactly like Bitcoin's.

Real Bitcoin headers (genesis and block 1) pin the layout and the hash byte
order: if any field moved or an endianness flipped, their known hashes break.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.errors import BlockRejected, Reject
from consensus.header import (
    HEADER_SIZE,
    Header,
    decode,
    encode,
    hash_hex,
    header_hash,
    hex_to_hash,
)

U32 = st.integers(min_value=0, max_value=2**32 - 1)
HASH32 = st.binary(min_size=32, max_size=32)
HEADERS = st.builds(Header, U32, HASH32, HASH32, U32, U32, U32)

# Bitcoin block 0, as in every Bitcoin implementation.
GENESIS_RAW = bytes.fromhex(
    "01000000"
    + "00" * 32
    + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    + "29ab5f49"
    + "ffff001d"
    + "1dac2b7c"
)
GENESIS = Header(
    version=1,
    prev=bytes(32),
    root=hex_to_hash("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"),
    time=1231006505,
    bits=0x1D00FFFF,
    nonce=2083236893,
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
BLOCK1 = Header(
    version=1,
    prev=hex_to_hash(GENESIS_HASH),
    root=hex_to_hash("0e3e2357e806b6cdb1f70b54c3a3a17b6714ee1f0e68bebb44a74b1efd512098"),
    time=1231469665,
    bits=0x1D00FFFF,
    nonce=2573394689,
)
BLOCK1_HASH = "00000000839a8e6886ab5951d76f411475428afc90947ee320161bbf18eb6048"


def test_bitcoin_genesis_encodes_to_its_known_bytes() -> None:
    assert encode(GENESIS) == GENESIS_RAW
    assert decode(GENESIS_RAW) == GENESIS


def test_bitcoin_genesis_hash() -> None:
    assert hash_hex(header_hash(GENESIS)) == GENESIS_HASH
    assert header_hash(GENESIS_RAW) == header_hash(GENESIS)


def test_bitcoin_block1_links_to_genesis_and_hashes_right() -> None:
    assert BLOCK1.prev == header_hash(GENESIS)
    assert hash_hex(header_hash(BLOCK1)) == BLOCK1_HASH


def test_internal_order_is_reversed_display_order() -> None:
    digest = header_hash(GENESIS)
    assert digest[-4:] == bytes(4)  # the leading zeros of the display form sit at the end
    assert hex_to_hash(GENESIS_HASH) == digest


@given(HEADERS)
def test_encode_decode_round_trip(h: Header) -> None:
    raw = encode(h)
    assert len(raw) == HEADER_SIZE
    assert decode(raw) == h
    assert header_hash(raw) == header_hash(h)


@given(HASH32)
def test_hash_hex_round_trip(digest: bytes) -> None:
    assert hex_to_hash(hash_hex(digest)) == digest


def test_hex_to_hash_accepts_uppercase() -> None:
    assert hex_to_hash(GENESIS_HASH.upper()) == hex_to_hash(GENESIS_HASH)


@pytest.mark.parametrize(
    "text",
    [
        "",
        GENESIS_HASH[:-2],
        GENESIS_HASH + "00",
        "0x" + GENESIS_HASH[2:],
        GENESIS_HASH[:-1] + "g",
        " " + GENESIS_HASH[1:],
        GENESIS_HASH[:30] + " " + GENESIS_HASH[31:],
    ],
)
def test_hex_to_hash_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        hex_to_hash(text)


@pytest.mark.parametrize("size", [0, 79, 81, 160])
def test_decode_rejects_wrong_length(size: int) -> None:
    with pytest.raises(BlockRejected) as info:
        decode(bytes(size))
    assert info.value.code is Reject.BAD_HEADER


def test_header_hash_rejects_wrong_length_bytes() -> None:
    with pytest.raises(BlockRejected) as info:
        header_hash(GENESIS_RAW[:-1])
    assert info.value.code is Reject.BAD_HEADER


@pytest.mark.parametrize(
    "change",
    [
        {"version": -1},
        {"version": 2**32},
        {"time": 2**32},
        {"bits": -1},
        {"nonce": 2**32},
        {"nonce": True},
        {"time": 1.5},
        {"prev": bytes(31)},
        {"root": bytes(33)},
        {"prev": "00" * 32},
    ],
)
def test_out_of_range_fields_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(BlockRejected) as info:
        dataclasses.replace(GENESIS, **change)  # type: ignore[arg-type]
    assert info.value.code is Reject.BAD_HEADER


def test_u32_bounds_are_accepted() -> None:
    h = Header(2**32 - 1, bytes(32), b"\xff" * 32, 2**32 - 1, 2**32 - 1, 0)
    assert decode(encode(h)) == h


def test_with_nonce_and_with_time_change_one_field() -> None:
    h = GENESIS.with_nonce(7).with_time(1234)
    assert (h.nonce, h.time) == (7, 1234)
    assert dataclasses.replace(h, nonce=GENESIS.nonce, time=GENESIS.time) == GENESIS
    with pytest.raises(BlockRejected):
        GENESIS.with_nonce(2**32)


def test_nonce_sits_in_the_last_four_bytes() -> None:
    """The mining core rewrites bytes 76-79 in place; the layout must put the nonce there."""
    raw = encode(GENESIS.with_nonce(0x01020304))
    assert raw[:76] == GENESIS_RAW[:76]
    assert raw[76:] == bytes([4, 3, 2, 1])


def test_header_is_frozen_and_slotted() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GENESIS.nonce = 1  # type: ignore[misc]
    assert not hasattr(GENESIS, "__dict__")
