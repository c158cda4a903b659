"""The incremental accounts map hashes exactly what the plain-dict digest hashes.

``Accounts`` keeps sorted records so a block's state root does not re-sort
and re-encode every account. Its digest is consensus: it must equal the
plain-mapping digest (sorted addresses, ``address || u64 balance || u64
nonce``) after any sequence of inserts, updates and removals.
"""

from __future__ import annotations

import hashlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.state import Account, Accounts, accounts_digest

ADDRESS_SIZE = 21
U64_MAX = 2**64 - 1

addresses = st.binary(min_size=ADDRESS_SIZE, max_size=ADDRESS_SIZE)
accounts = st.builds(Account, st.integers(0, U64_MAX), st.integers(0, U64_MAX))
account_maps = st.dictionaries(addresses, accounts, max_size=20)
changes = st.dictionaries(addresses, st.none() | accounts, max_size=10)


def spec_digest(items: dict[bytes, Account]) -> bytes:
    """The digest written out from its definition."""
    body = b"".join(a + struct.pack("<QQ", items[a].balance, items[a].nonce) for a in sorted(items))
    return hashlib.sha256(body).digest()


def apply(items: dict[bytes, Account], delta: dict[bytes, Account | None]) -> dict[bytes, Account]:
    out = dict(items)
    for address, account in delta.items():
        if account is None:
            out.pop(address, None)
        else:
            out[address] = account
    return out


@settings(max_examples=200, deadline=None)
@given(account_maps, st.lists(changes, max_size=5))
def test_digest_after_updates_equals_the_plain_digest(start: dict[bytes, Account],
                                                      steps: list[dict[bytes, Account | None]]) -> None:
    fast = Accounts(start)
    plain = dict(start)
    assert fast.digest() == accounts_digest(plain) == spec_digest(plain)
    for delta in steps:
        fast = fast.updated(delta)
        plain = apply(plain, delta)
        assert fast.digest() == accounts_digest(plain) == spec_digest(plain)
        assert dict(fast) == plain
        assert list(fast) == sorted(plain)


def test_updated_leaves_the_parent_unchanged() -> None:
    a, b = bytes(ADDRESS_SIZE), b"\x01" * ADDRESS_SIZE
    parent = Accounts({a: Account(5, 1)})
    before = parent.digest()
    child = parent.updated({a: None, b: Account(7, 0)})
    assert dict(parent) == {a: Account(5, 1)} and parent.digest() == before
    assert dict(child) == {b: Account(7, 0)}
    assert a not in child and b in child and len(child) == 1


def test_an_empty_map_hashes_like_an_empty_dict() -> None:
    assert Accounts().digest() == accounts_digest({}) == hashlib.sha256(b"").digest()
