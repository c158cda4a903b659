"""A damaged database is detected when it is opened and rebuilt from its own blocks, never served.

    genesis - 1 - ... - 6 - [7: body overwritten] - 8 - ... - 12      (stored, then damaged)
    reopen: reindex -> tip 6, bodies 8..12 kept; block 7 fetched again -> tip 12

Also: a WAL torn at any point (a crash image) opens on a consistent earlier
chain, and pages overwritten in the file itself are caught by SQLite's
quick_check and repaired the same way.
"""

from __future__ import annotations

import pathlib
import shutil
import sqlite3

import pytest

from consensus.block import decode_block
from consensus.params import REGTEST
from consensus.tx import Tx
from node.chainstate import DB_NAME, ChainState
from node.storage import StorageError
from node.verify import verify_chain
from tests.chainbuilder import ChainBuilder, addr, key, solo_task
from tests.reliability import sized

BLOCKS = 12
DAMAGED = 7
CHECKPOINTED = 4
WAL_CUTS = sized(12, 200)  # places the WAL is torn at


@pytest.fixture(scope="module")
def builder() -> ChainBuilder:
    """Key 1 bonds (free, mature at once), then commits an update in every block and reveals it in the next."""
    cb = ChainBuilder(solo_task())
    cb.join(key(1))

    def txs(b: ChainBuilder) -> list[Tx]:
        out: list[Tx] = [b.commit(key(1), seeds=(len(b.blocks),))]
        if (b.round - 1, addr(key(1))) in b.plans:
            out.append(b.update(key(1)))
        return out

    cb.extend(BLOCKS + 1 - len(cb.blocks), txs)
    return cb


def stored_chain(directory: pathlib.Path, cb: ChainBuilder) -> ChainState:
    chain = ChainState.create(directory, REGTEST.name, cb.task)
    for block in cb.blocks[1:]:
        chain.accept_block(decode_block(block.encode()), block.header.time)
    return chain


def damaged_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.glob(f"{DB_NAME}.damaged-*") if not p.name.endswith(("-wal", "-shm")))


def test_a_corrupted_block_row_is_dropped_and_fetched_again(tmp_path: pathlib.Path, builder: ChainBuilder) -> None:
    chain = stored_chain(tmp_path, builder)
    victim = chain.main[DAMAGED]
    chain.close()
    raw = bytearray(builder.blocks[DAMAGED].encode())
    raw[-20] ^= 0x01  # one bit in the last transaction: the body no longer matches its header
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE blocks SET body = ? WHERE hash = ?", (bytes(raw), victim))

    chain = ChainState.open(tmp_path)
    try:
        assert chain.height == DAMAGED - 1, "the chain stops below the damaged block"
        assert chain.get_raw_block(victim) is None, "the damaged body is never served"
        assert all(chain.has_block(b.hash) for b in builder.blocks[DAMAGED + 1 :]), "blocks above it are kept"
        assert verify_chain(chain).error == ""
        assert len(damaged_files(tmp_path)) == 1, "the damaged file is kept for a post-mortem"
        # Sync brings the block again: it and the bodies waiting above it connect.
        chain.accept_block(decode_block(builder.blocks[DAMAGED].encode()), builder.tip.header.time)
        assert chain.height == BLOCKS and chain.tip.hash == builder.tip.hash
        assert chain.state.root == builder.state.root
    finally:
        chain.close()
    reopened = ChainState.open(tmp_path)  # intact now: no second reindex
    assert reopened.height == BLOCKS
    reopened.close()
    assert len(damaged_files(tmp_path)) == 1


def crash_image(tmp_path: pathlib.Path, builder: ChainBuilder) -> pathlib.Path:
    """The files a node killed after block 12 leaves: blocks 1..4 checkpointed into the database
    (it stopped cleanly once), 5..12 in its WAL."""
    live = tmp_path / "live"
    chain = ChainState.create(live, REGTEST.name, builder.task)
    for i, block in enumerate(builder.blocks[1:], 1):
        chain.accept_block(decode_block(block.encode()), block.header.time)
        if i == CHECKPOINTED:
            chain.close()
            chain = ChainState.open(live)
    image = tmp_path / "image"
    image.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(live / (DB_NAME + suffix), image / (DB_NAME + suffix))
    chain.close()
    assert (image / (DB_NAME + "-wal")).stat().st_size > 0
    return image


def test_a_torn_wal_opens_on_a_consistent_earlier_chain(tmp_path: pathlib.Path, builder: ChainBuilder) -> None:
    image = crash_image(tmp_path, builder)
    wal_size = (image / (DB_NAME + "-wal")).stat().st_size
    heights = []
    for i in range(WAL_CUTS):
        copy = tmp_path / f"cut{i}"
        shutil.copytree(image, copy)
        cut = wal_size * i // WAL_CUTS + 13  # mid-frame, not on a frame boundary
        with open(copy / (DB_NAME + "-wal"), "r+b") as wal:
            wal.truncate(cut)
        chain = ChainState.open(copy)
        try:
            report = verify_chain(chain)
            assert report.error == "", f"cut at {cut}: {report.error}"
            assert chain.main == [b.hash for b in builder.blocks[: chain.height + 1]]
            heights.append(chain.height)
        finally:
            chain.close()
        shutil.rmtree(copy)
    assert heights == sorted(heights), "a longer WAL never gives a shorter chain"
    assert heights[0] == CHECKPOINTED, "what was checkpointed survives any tear"
    assert heights[-1] < BLOCKS, "the torn tail lost the last commits, and only them"


def test_overwritten_pages_are_caught_and_rebuilt(tmp_path: pathlib.Path, builder: ChainBuilder) -> None:
    chain = stored_chain(tmp_path, builder)
    chain.close()  # checkpointed: everything is in the main file now
    path = tmp_path / DB_NAME
    data = bytearray(path.read_bytes())
    page = 4096
    damaged = 0
    for offset in range(len(data) - 3 * page, len(data) - page, 97):
        data[offset] ^= 0xFF  # garbage over the last pages (bodies and undo of the newest blocks)
        damaged += 1
    path.write_bytes(bytes(data))
    try:
        chain = ChainState.open(tmp_path)
    except StorageError as exc:  # the damage reached what a rebuild needs: it says so, serves nothing
        assert "sync again from peers" in str(exc)
        return
    try:
        assert verify_chain(chain).error == ""
        assert chain.main == [b.hash for b in builder.blocks[: chain.height + 1]]
        assert len(damaged_files(tmp_path)) == 1
    finally:
        chain.close()
