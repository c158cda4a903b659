"""Merkle root of a block's transactions, RFC 6962 style.

Leaves and inner nodes hash under different one-byte prefixes and an odd
node is never duplicated, so two different transaction lists can't share a
root (Bitcoin's duplicate-last-leaf ambiguity, CVE-2012-2459, can't happen).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over ``leaves`` (the txids, in block order)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = [_leaf(x) for x in leaves]
    return _root_of(level)


def _root_of(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split_point(len(hashes))
    return _node(_root_of(hashes[:k]), _root_of(hashes[k:]))
