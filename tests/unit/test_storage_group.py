"""Storage groups: many transactions, one commit, each still atomic.

``ChainState.accept_block`` writes a block's header, body and connection in
one ``Storage.group()`` to pay one disk sync per block. These tests pin what
that must not change: a transaction that fails inside a group leaves nothing
behind, the ones that completed are kept even when the failure leaves the
group, and nothing is visible to another connection before the group ends.
"""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

from node.storage import Storage


class Boom(Exception):
    pass


def meta_on_disk(path: pathlib.Path, key: str) -> bytes | None:
    """Read a meta row through a second connection: only committed data shows."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return None if row is None else bytes(row[0])


@pytest.fixture
def storage(tmp_path: pathlib.Path) -> Storage:
    return Storage(tmp_path / "chain.sqlite")


def test_completed_transactions_commit_when_a_later_one_fails(storage: Storage) -> None:
    with pytest.raises(Boom), storage.group():
        with storage.transaction():
            storage.set_meta("first", b"1")
        with storage.transaction():
            storage.set_meta("second", b"2")
            raise Boom
    assert meta_on_disk(storage.path, "first") == b"1"
    assert meta_on_disk(storage.path, "second") is None


def test_a_failed_nested_transaction_is_undone_inside_its_parent(storage: Storage) -> None:
    with storage.transaction():
        storage.set_meta("outer", b"o")
        with pytest.raises(Boom), storage.transaction():
            storage.set_meta("inner", b"i")
            raise Boom
    assert meta_on_disk(storage.path, "outer") == b"o"
    assert meta_on_disk(storage.path, "inner") is None


def test_a_failing_outer_transaction_still_rolls_back_everything(storage: Storage) -> None:
    with pytest.raises(Boom), storage.transaction():
        with storage.transaction():
            storage.set_meta("inner", b"i")
        raise Boom
    assert meta_on_disk(storage.path, "inner") is None


def test_nothing_is_visible_before_the_group_ends(storage: Storage) -> None:
    with storage.group():
        with storage.transaction():
            storage.set_meta("pending", b"p")
        assert storage.get_meta("pending") == b"p"  # the writer sees its own writes
        assert meta_on_disk(storage.path, "pending") is None
    assert meta_on_disk(storage.path, "pending") == b"p"


def test_a_group_inside_a_transaction_leaves_the_commit_to_it(storage: Storage) -> None:
    with pytest.raises(Boom), storage.transaction():
        with storage.group(), storage.transaction():
            storage.set_meta("grouped", b"g")
        raise Boom
    assert meta_on_disk(storage.path, "grouped") is None
