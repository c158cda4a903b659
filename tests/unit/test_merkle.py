"""Merkle root of a block's transactions: RFC 6962's tree hash.

The oracle here is a literal transcription of RFC 6962 section 2.1
(MTH({d0}) = SHA-256(0x00 || d0); MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) ||
MTH(D[k:n])) with k the largest power of two < n), written independently of
consensus/merkle.py, plus the properties a block commitment relies on.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.merkle import merkle_root

MAX_LEAVES_DRAWN = 40


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc6962(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return sha256(b"\x01" + rfc6962(leaves[:k]) + rfc6962(leaves[k:]))


def leaves_of(n: int) -> list[bytes]:
    return [sha256(b"leaf %d" % i) for i in range(n)]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle_root([]) == sha256(b"")


def test_single_leaf_is_its_leaf_hash_not_the_leaf() -> None:
    (leaf,) = leaves_of(1)
    assert merkle_root([leaf]) == sha256(b"\x00" + leaf)
    assert merkle_root([leaf]) != leaf


def test_power_of_two_tree_is_balanced() -> None:
    a, b, c, d = (sha256(b"\x00" + x) for x in leaves_of(4))
    expected = sha256(b"\x01" + sha256(b"\x01" + a + b) + sha256(b"\x01" + c + d))
    assert merkle_root(leaves_of(4)) == expected


def test_odd_leaf_is_promoted_not_duplicated() -> None:
    """Three leaves: the third is not paired with a copy of itself (CVE-2012-2459)."""
    leaves = leaves_of(3)
    a, b, c = (sha256(b"\x00" + x) for x in leaves)
    assert merkle_root(leaves) == sha256(b"\x01" + sha256(b"\x01" + a + b) + c)
    assert merkle_root(leaves) != merkle_root([*leaves, leaves[-1]])


def test_split_is_at_the_largest_power_of_two_below_n() -> None:
    """Five leaves split 4 + 1, six leaves 4 + 2: not halves."""
    for n, k in ((5, 4), (6, 4), (9, 8), (16, 8)):
        leaves = leaves_of(n)
        assert merkle_root(leaves) == sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=MAX_LEAVES_DRAWN))
def test_matches_rfc6962_for_any_leaves(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == rfc6962(leaves)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """A one-leaf tree whose leaf is two child hashes concatenated is not the two-leaf tree.

    Without the 0x00/0x01 prefixes both would be sha256(h0 || h1).
    """
    x, y = leaves_of(2)
    h0, h1 = sha256(b"\x00" + x), sha256(b"\x00" + y)
    two_leaves = merkle_root([x, y])
    assert two_leaves == sha256(b"\x01" + h0 + h1)
    assert merkle_root([h0 + h1]) != two_leaves
    # Nor does the inner-node preimage of a bigger tree collide with a shorter list.
    four = leaves_of(4)
    left = merkle_root(four[:2])
    right = merkle_root(four[2:])
    assert merkle_root([left + right]) != merkle_root(four)
    assert merkle_root([left, right]) != merkle_root(four)


def test_changing_the_order_changes_the_root() -> None:
    leaves = leaves_of(5)
    root = merkle_root(leaves)
    for i in range(len(leaves) - 1):
        swapped = list(leaves)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        assert merkle_root(swapped) != root


def test_changing_any_leaf_changes_the_root() -> None:
    leaves = leaves_of(7)
    root = merkle_root(leaves)
    for i in range(len(leaves)):
        changed = list(leaves)
        changed[i] = sha256(changed[i])
        assert merkle_root(changed) != root


def test_adding_a_leaf_changes_the_root() -> None:
    roots = {merkle_root(leaves_of(n)) for n in range(0, 18)}
    assert len(roots) == 18
