"""Bech32m (BIP-350) and gradchain addresses: the BIP's vectors, strict decoding,
and a checksum that catches every single-character typo."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet import (
    ADDRESS_SIZE,
    AddressError,
    address_bytes,
    address_of,
    bech32m,
    decode_address,
    encode_address,
    keypair_from_seed,
)

# BIP-350 "Test vectors for Bech32m": valid strings.
BECH32M_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]

# BIP-350 invalid strings, with the reason the BIP gives.
BECH32M_INVALID = [
    ("\x201xj0phk", "HRP character out of range"),
    ("\x7f1g6xzxy", "HRP character out of range"),
    ("\x801vctc34", "HRP character out of range"),
    (
        "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
        "overall max length exceeded",
    ),
    ("qyrz8wqd2c9m", "no separator character"),
    ("1qyrz8wqd2c9m", "empty HRP"),
    ("y1b0jsk6g", "invalid data character"),
    ("lt1igcx5c0", "invalid data character"),
    ("in1muywd", "too short checksum"),
    ("mm1crxm3i", "invalid character in checksum"),
    ("au1s5cgom", "invalid character in checksum"),
    ("M1VUXWEZ", "checksum calculated with uppercase form of HRP"),
    ("16plkw9", "empty HRP"),
    ("1p2gdwpf", "empty HRP"),
]

# BIP-173 valid *bech32* strings: a bech32m decoder must reject each one.
BECH32_ONLY = [
    "A12UEL5L",
    "a12uel5l",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

# BIP-350 valid segwit v1+ addresses (bech32m) and their scriptPubKeys: checks
# convertbits against known programs.
SEGWIT_V1_PLUS = [
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]

# BIP-350 invalid addresses whose 5-to-8 conversion has bad padding.
BAD_PADDING = [
    "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf",  # > 4 zero bits
    "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j",  # non-zero padding
]

SEED = bytes(range(32))
# Golden vector: the address of the key with seed 00 01 .. 1f. Changing it
# changes every address on the chain.
GOLDEN_ADDRESS = "gc1qy32apzrznvjykmxzl3g70l8ew2p048hufhq07y"
ADDRESS = address_of(keypair_from_seed(SEED).public)


@pytest.mark.parametrize("text", BECH32M_VALID)
def test_bip350_valid_strings_decode_and_reencode(text: str) -> None:
    hrp, data = bech32m.decode(text)
    assert bech32m.encode(hrp, data) == text.lower()


@pytest.mark.parametrize(("text", "reason"), BECH32M_INVALID)
def test_bip350_invalid_strings_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(bech32m.Bech32mError):
        bech32m.decode(text)


@pytest.mark.parametrize("text", BECH32_ONLY)
def test_bech32_checksums_are_not_bech32m(text: str) -> None:
    with pytest.raises(bech32m.ChecksumError):
        bech32m.decode(text)


@pytest.mark.parametrize(("text", "script_hex"), SEGWIT_V1_PLUS)
def test_segwit_v1_programs_convert_back(text: str, script_hex: str) -> None:
    _, data = bech32m.decode(text)
    program = bytes(bech32m.convertbits(data[1:], 5, 8, pad=False))
    script = bytes.fromhex(script_hex)
    assert script[0] == 0x50 + data[0]  # OP_1 .. OP_16
    assert program == script[2:] and len(program) == script[1]
    assert bech32m.encode(text[:2], [data[0], *bech32m.convertbits(program, 8, 5, pad=True)]) == (
        text.lower()
    )


@pytest.mark.parametrize("text", BAD_PADDING)
def test_bad_padding_is_rejected(text: str) -> None:
    _, data = bech32m.decode(text)
    with pytest.raises(bech32m.Bech32mError, match="padding"):
        bech32m.convertbits(data[1:], 5, 8, pad=False)


def test_address_bytes_is_version_zero_and_a_tagged_sha256() -> None:
    public = keypair_from_seed(SEED).public
    raw = address_bytes(public)
    assert len(raw) == ADDRESS_SIZE == 21
    assert raw[0] == 0
    assert raw[1:] == hashlib.sha256(b"gradchain/address" + public).digest()[:20]


def test_golden_address() -> None:
    assert ADDRESS == GOLDEN_ADDRESS
    assert len(ADDRESS) == 42 and ADDRESS.startswith("gc1q")
    assert decode_address(ADDRESS) == address_bytes(keypair_from_seed(SEED).public)


@settings(max_examples=200)
@given(digest=st.binary(min_size=20, max_size=20))
def test_encode_decode_roundtrip(digest: bytes) -> None:
    raw = b"\x00" + digest
    text = encode_address(raw)
    assert decode_address(text) == raw
    assert decode_address(text.upper()) == raw  # QR codes use upper case


def test_mixed_case_is_rejected() -> None:
    mixed = ADDRESS[:10] + ADDRESS[10:].upper()
    with pytest.raises(AddressError, match="mixes upper and lower case"):
        decode_address(mixed)


def test_wrong_hrp_is_rejected() -> None:
    foreign = bech32m.encode("bc", bech32m.decode(ADDRESS)[1])
    with pytest.raises(AddressError, match="gc1"):
        decode_address(foreign)


@pytest.mark.parametrize("digest_symbols", [31, 33, 0])
def test_wrong_length_is_rejected(digest_symbols: int) -> None:
    text = bech32m.encode("gc", [0] + [3] * digest_symbols)
    with pytest.raises(AddressError):
        decode_address(text)


def test_wrong_length_says_so() -> None:
    text = bech32m.encode("gc", [0, *bech32m.convertbits(bytes(24), 8, 5, pad=True)])
    with pytest.raises(AddressError, match="wrong length"):
        decode_address(text)


def test_unknown_version_is_rejected() -> None:
    _, data = bech32m.decode(ADDRESS)
    with pytest.raises(AddressError, match="version 1"):
        decode_address(bech32m.encode("gc", [1, *data[1:]]))
    with pytest.raises(AddressError, match="version"):
        encode_address(b"\x01" + bytes(20))


def test_bad_checksum_says_typo() -> None:
    last = ADDRESS[-1]
    typo = ADDRESS[:-1] + ("q" if last != "q" else "p")
    with pytest.raises(AddressError, match="typo"):
        decode_address(typo)


def test_surrounding_whitespace_is_tolerated() -> None:
    assert decode_address(f"  {ADDRESS}\n") == decode_address(ADDRESS)


@pytest.mark.parametrize("size", [0, 20, 22])
def test_raw_address_must_be_21_bytes(size: int) -> None:
    with pytest.raises(AddressError, match="21 bytes"):
        encode_address(bytes(size))


@pytest.mark.parametrize("size", [0, 31, 33])
def test_public_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(AddressError, match="32 bytes"):
        address_bytes(bytes(size))


def test_every_single_substitution_is_caught() -> None:
    """Exhaustive over one address: each position, each other charset character."""
    for position, original in enumerate(ADDRESS):
        for replacement in bech32m.CHARSET + "1":
            if replacement == original:
                continue
            typo = ADDRESS[:position] + replacement + ADDRESS[position + 1 :]
            with pytest.raises(AddressError):
                decode_address(typo)


def test_every_adjacent_swap_is_caught() -> None:
    for position in range(len(ADDRESS) - 1):
        a, b = ADDRESS[position], ADDRESS[position + 1]
        if a == b:
            continue
        swapped = ADDRESS[:position] + b + a + ADDRESS[position + 2 :]
        with pytest.raises(AddressError):
            decode_address(swapped)


@settings(max_examples=300)
@given(
    digest=st.binary(min_size=20, max_size=20),
    position=st.integers(0, 41),
    replacement=st.characters(min_codepoint=0, max_codepoint=0x2FF),
)
def test_any_one_substitution_fails_to_decode(
    digest: bytes, position: int, replacement: str
) -> None:
    text = encode_address(b"\x00" + digest)
    if replacement == text[position]:
        return
    typo = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(AddressError):
        decode_address(typo)
