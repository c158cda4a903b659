"""Canonical msgpack: one byte string per object, and nothing else accepted.

Objects travel as msgpack arrays (positional fields), never maps, so there is
no key order to agree on. Decoding is strict: size is checked first, msgpack
runs with tight limits and no ext types, and the result is re-encoded and
compared with the input, which rejects every non-minimal integer, float-for-int
or str-for-bin variant of the same value.
"""

from __future__ import annotations

from typing import Any

import msgpack

from consensus.caps import MAX_ARRAY_LEN, MAX_MAP_LEN, MAX_STR_BYTES
from consensus.errors import BlockRejected, Reject


def pack(obj: Any) -> bytes:
    """Encode ``obj`` canonically (bin for bytes, str for text, minimal ints)."""
    packed: bytes = msgpack.packb(obj, use_bin_type=True, use_single_float=False, strict_types=True)
    return packed


def _no_ext(code: int, data: bytes) -> Any:
    raise BlockRejected(Reject.BAD_ENCODING, f"msgpack ext type {code} is not allowed")


def unpack(raw: bytes, *, max_bytes: int, what: str = "object") -> Any:
    """Decode canonical msgpack of at most ``max_bytes`` or raise ``BlockRejected`` (OVERSIZE, BAD_ENCODING)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: expected bytes")
    raw = bytes(raw)
    if len(raw) > max_bytes:
        raise BlockRejected(Reject.OVERSIZE, f"{what}: {len(raw)} bytes > limit {max_bytes}")
    try:
        obj = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_bin_len=max_bytes,
            max_str_len=MAX_STR_BYTES,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
        )
    except BlockRejected:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: not msgpack ({exc})") from None
    if pack(obj) != raw:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: not in canonical form")
    return obj


def expect_list(obj: Any, length: int, what: str) -> list[Any]:
    if not isinstance(obj, list) or len(obj) != length:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: expected an array of {length} fields")
    return obj


def expect_int(value: Any, what: str, *, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: expected an integer in [{lo}, {hi}]")
    return value


def expect_bytes(value: Any, what: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: expected bytes")
    if size is not None and len(value) != size:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: expected {size} bytes, got {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise BlockRejected(Reject.BAD_ENCODING, f"{what}: {len(value)} bytes > limit {max_size}")
    return value
