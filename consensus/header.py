"""The 80-byte block header, laid out exactly like Bitcoin's.

| bytes | field   | encoding                                   |
|-------|---------|--------------------------------------------|
| 0-3   | version | u32 little-endian                          |
| 4-35  | prev    | hash of the parent header (internal order) |
| 36-67 | root    | sha256d(tx_root || state_root)             |
| 68-71 | time    | u32 seconds                                |
| 72-75 | bits    | u32 compact target                         |
| 76-79 | nonce   | u32                                        |

Keeping Bitcoin's layout lets the hashing core be checked against real Bitcoin
headers. Hashes are kept in internal byte order and shown reversed
(:func:`hash_hex`), so a mined hash's leading zeros show first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
import struct
from dataclasses import dataclass

from consensus.errors import BlockRejected, Reject

HEADER_SIZE = 80  # bytes
HASH_SIZE = 32  # bytes of prev, root and of a header hash
HASH_HEX_SIZE = 2 * HASH_SIZE  # hex characters of a displayed hash
U32_MAX = 0xFFFFFFFF  # the largest u32, for every u32 field of consensus
_LAYOUT = struct.Struct("<I32s32sIII")
_HEX_DIGITS = frozenset(string.hexdigits)
assert _LAYOUT.size == HEADER_SIZE


def is_u32(value: object) -> bool:
    """True for an ``int`` in ``[0, U32_MAX]``; ``bool`` is refused although it subclasses ``int``."""
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= U32_MAX


@dataclass(frozen=True, slots=True)
class Header:
    """A block header; construction checks every field's range and length.

    Raises
    ------
    BlockRejected
        ``Reject.BAD_HEADER`` if an integer field is not a u32 or ``prev`` /
        ``root`` is not 32 bytes, so no out-of-range header can exist.
    """

    version: int
    prev: bytes
    root: bytes
    time: int
    bits: int
    nonce: int

    def __post_init__(self) -> None:
        for name in ("version", "time", "bits", "nonce"):
            value = getattr(self, name)
            if not is_u32(value):
                raise BlockRejected(Reject.BAD_HEADER, f"{name} {value!r} is not a u32")
        for name in ("prev", "root"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise BlockRejected(Reject.BAD_HEADER, f"{name} must be {HASH_SIZE} bytes")

    def with_nonce(self, nonce: int) -> Header:
        """This header with another nonce (the miner's inner loop, in Python)."""
        return dataclasses.replace(self, nonce=nonce)

    def with_time(self, time: int) -> Header:
        """This header with another time (the miner rolls it when nonces run out)."""
        return dataclasses.replace(self, time=time)


def encode(h: Header) -> bytes:
    """The 80 wire bytes of ``h``."""
    return _LAYOUT.pack(h.version, h.prev, h.root, h.time, h.bits, h.nonce)


def decode(raw: bytes) -> Header:
    """Parse 80 header bytes.

    Raises
    ------
    BlockRejected
        ``Reject.BAD_HEADER`` if ``raw`` is not exactly 80 bytes.
    """
    if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) != HEADER_SIZE:
        size = len(raw) if isinstance(raw, bytes | bytearray | memoryview) else type(raw).__name__
        raise BlockRejected(Reject.BAD_HEADER, f"header must be {HEADER_SIZE} bytes, got {size}")
    version, prev, root, time, bits, nonce = _LAYOUT.unpack(bytes(raw))
    return Header(version, prev, root, time, bits, nonce)


def header_hash(h: Header | bytes) -> bytes:
    """sha256d of the header (or of its 80 encoded bytes), internal byte order.

    Raises
    ------
    BlockRejected
        ``Reject.BAD_HEADER`` if raw bytes are given that are not 80 long.
    """
    raw = encode(h) if isinstance(h, Header) else h
    if len(raw) != HEADER_SIZE:
        raise BlockRejected(
            Reject.BAD_HEADER, f"header must be {HEADER_SIZE} bytes, got {len(raw)}"
        )
    return hashlib.sha256(hashlib.sha256(raw).digest()).digest()


def hash_hex(h: bytes) -> str:
    """Display form of a hash: hex of the reversed bytes, Bitcoin's order."""
    return h[::-1].hex()


def hex_to_hash(s: str) -> bytes:
    """Parse a displayed hash back into internal byte order.

    Raises
    ------
    ValueError
        If ``s`` is not exactly 64 hex digits (no prefix, no whitespace).
    """
    if not isinstance(s, str) or len(s) != HASH_HEX_SIZE or not _HEX_DIGITS.issuperset(s):
        raise ValueError(f"a hash is {HASH_HEX_SIZE} hex digits, got {s!r:.80}")
    return bytes.fromhex(s)[::-1]
