"""Addresses: a versioned 160-bit hash of an Ed25519 public key, shown as bech32m.

Raw form (21 bytes): one version byte (0) followed by the first 20 bytes of
``sha256(b"gradchain/address" + public)``.

Why SHA-256 and not BLAKE2b-160: the chain already hashes everything else
with SHA-256 (headers, roots), so one primitive is audited and accelerated
(SHA-NI on x86, the ARMv8 crypto extensions) in one place, and every other
implementation needs only that. The ``gradchain/address`` prefix is a domain
tag: an address can never equal some other SHA-256 the chain computes over
the same 32 bytes. 160 bits keep second preimages out of reach (2**160)
and collisions at 2**80, the same margin as Bitcoin's P2PKH, in a shorter
string.

Text form: bech32m (BIP-350) with human-readable part ``gc``. The version
travels as the first 5-bit symbol, so version 0 addresses all start with
``gc1q``, and the 20-byte hash fills exactly 32 symbols with no padding
bits. A version 0 address is 42 characters long: ``gc`` + ``1`` + 33 data
symbols + 6 checksum symbols.
"""

from __future__ import annotations

import hashlib

from wallet import bech32m

HRP = "gc"
"""Human-readable part of every gradchain address."""

ADDRESS_VERSION = 0
"""The only address version defined so far: Ed25519 key, SHA-256/160 hash."""

KNOWN_VERSIONS = frozenset({ADDRESS_VERSION})

ADDRESS_DOMAIN = b"gradchain/address"
"""Domain-separation tag hashed in front of the public key."""

PUBLIC_KEY_SIZE = 32
HASH_SIZE = 20
"""160-bit key hash: collision resistance 2**80, like Bitcoin's P2PKH."""

ADDRESS_SIZE = 1 + HASH_SIZE
"""Raw address: version byte + key hash."""

_BYTE_BITS = 8
_SYMBOL_BITS = 5


class AddressError(ValueError):
    """A text or raw address is invalid; the message says what is wrong."""


def address_bytes(public: bytes) -> bytes:
    """The 21-byte raw address of an Ed25519 public key.

    Parameters
    ----------
    public : bytes
        The 32-byte raw public key.

    Raises
    ------
    AddressError
        If ``public`` is not 32 bytes.
    """
    if len(public) != PUBLIC_KEY_SIZE:
        raise AddressError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(public)}")
    digest = hashlib.sha256(ADDRESS_DOMAIN + bytes(public)).digest()
    return bytes([ADDRESS_VERSION]) + digest[:HASH_SIZE]


def _check_raw(raw: bytes) -> None:
    if len(raw) != ADDRESS_SIZE:
        raise AddressError(f"a raw address is {ADDRESS_SIZE} bytes, got {len(raw)}")
    if raw[0] not in KNOWN_VERSIONS:
        raise AddressError(
            f"unsupported address version {raw[0]}; this gradchain knows {sorted(KNOWN_VERSIONS)}"
        )


def encode_address(raw: bytes) -> str:
    """Bech32m text of a 21-byte raw address (``gc1q...``).

    Raises
    ------
    AddressError
        If ``raw`` is not 21 bytes or has an unknown version.
    """
    _check_raw(raw)
    symbols = [raw[0], *bech32m.convertbits(raw[1:], _BYTE_BITS, _SYMBOL_BITS, pad=True)]
    return bech32m.encode(HRP, symbols)


def decode_address(text: str) -> bytes:
    """The 21-byte raw address a bech32m address string names.

    Accepts all-lowercase or all-uppercase (for QR codes), nothing else.

    Raises
    ------
    AddressError
        Saying what is wrong: a typo (checksum), a foreign prefix, a wrong
        length or an unknown version.
    """
    text = text.strip()
    try:
        hrp, symbols = bech32m.decode(text)
    except bech32m.ChecksumError as exc:
        raise AddressError(f"address {text!r} fails its checksum: typo?") from exc
    except bech32m.Bech32mError as exc:
        raise AddressError(f"address {text!r} is not valid bech32m: {exc}") from exc
    if hrp != HRP:
        raise AddressError(
            f"address {text!r} starts with {hrp!r}, a gradchain address starts with {HRP + '1'!r}"
        )
    if not symbols:
        raise AddressError(f"address {text!r} has no data")
    version = symbols[0]
    if version not in KNOWN_VERSIONS:
        raise AddressError(
            f"address {text!r} has version {version}; this gradchain knows {sorted(KNOWN_VERSIONS)}"
        )
    try:
        digest = bytes(bech32m.convertbits(symbols[1:], _SYMBOL_BITS, _BYTE_BITS, pad=False))
    except bech32m.Bech32mError as exc:
        raise AddressError(f"address {text!r} has malformed data: {exc}") from exc
    if len(digest) != HASH_SIZE:
        raise AddressError(
            f"address {text!r} holds {len(digest)} bytes, expected {HASH_SIZE}: wrong length"
        )
    return bytes([version]) + digest


def address_of(public: bytes) -> str:
    """The text address of an Ed25519 public key: ``encode_address(address_bytes(public))``."""
    return encode_address(address_bytes(public))
