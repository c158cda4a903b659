"""Header rules: each test builds a header that breaks exactly one rule.

The header rules need only the branch up to the parent (headers-first sync
runs them before a body arrives), so most tests call ``validate_header`` with
the builder's view of its tip; the rules that need the node's block index
(unknown parent, known-invalid parent) go through ``ChainState``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pytest

from consensus import header as header_codec
from consensus.block import Block
from consensus.errors import NOT_PUNISHED, BlockRejected, Reject
from consensus.genesis import GENESIS_TIME
from consensus.header import Header, header_hash
from consensus.params import REGTEST
from consensus.pow import bits_to_target, hash_to_int
from consensus.validation import HEADER_VERSION, median_time_past, validate_header
from node.chainstate import ChainState
from node.storage import BlockStatus
from tests.chainbuilder import BLOCK_SPACING_S, ChainBuilder, covers, mine, recommit, rejection

NOW = GENESIS_TIME + 10**6  # well after every block these tests build
MAX_FUTURE_S = REGTEST.max_future_block_time_s
EASIER_THAN_LIMIT_BITS = 0x2100FFFF  # a target above regtest's pow limit
HARDER_BITS = 0x207FFFFE  # a hair harder than regtest's bits: still a few hashes to mine
NONCE_SEARCH_LIMIT = 1 << 16


def passing_nonce(header: Header, passes: bool) -> Header:
    """``header`` with the first nonce whose hash meets (or misses) its target."""
    target = bits_to_target(header.bits)
    for nonce in range(NONCE_SEARCH_LIMIT):
        candidate = header.with_nonce(nonce)
        if (hash_to_int(header_hash(candidate)) <= target) == passes:
            return candidate
    raise AssertionError("no suitable nonce in the search range")


def next_header(cb: ChainBuilder, **changes: Any) -> Header:
    """A valid, mined header for the next block, with ``changes`` applied and re-mined."""
    header = dataclasses.replace(cb.template().header, **changes)
    return passing_nonce(header, passes=True)


def check(cb: ChainBuilder, header: Header, now: int = NOW) -> None:
    validate_header(cb.view(), header, now)


@pytest.fixture(scope="module")
def cb() -> ChainBuilder:
    builder = ChainBuilder()
    builder.extend(2)
    return builder


def test_valid_next_header_passes(cb: ChainBuilder) -> None:
    check(cb, next_header(cb))


@covers(Reject.BAD_POW)
def test_hash_above_target_is_bad_pow(cb: ChainBuilder) -> None:
    good = next_header(cb)
    bad = passing_nonce(good, passes=False)
    assert rejection(lambda: check(cb, bad)) is Reject.BAD_POW


@covers(Reject.BAD_BITS)
def test_bits_other_than_the_retarget_are_bad_bits(cb: ChainBuilder) -> None:
    """Harder bits with a hash that meets them: only the retarget rule can object."""
    header = next_header(cb, bits=HARDER_BITS)
    assert hash_to_int(header_hash(header)) <= bits_to_target(HARDER_BITS)
    assert rejection(lambda: check(cb, header)) is Reject.BAD_BITS


def test_bits_easier_than_the_pow_limit_are_bad_bits(cb: ChainBuilder) -> None:
    params = dataclasses.replace(cb.params, genesis_bits=EASIER_THAN_LIMIT_BITS)
    view = dataclasses.replace(cb.view(), rules=dataclasses.replace(cb.rules, params=params))
    header = next_header(cb, bits=EASIER_THAN_LIMIT_BITS)
    code = rejection(lambda: validate_header(view, header, NOW))
    assert code is Reject.BAD_BITS


@covers(Reject.BAD_VERSION)
def test_unknown_version_is_rejected(cb: ChainBuilder) -> None:
    assert rejection(lambda: check(cb, next_header(cb, version=HEADER_VERSION + 1))) is Reject.BAD_VERSION
    assert rejection(lambda: check(cb, next_header(cb, version=0))) is Reject.BAD_VERSION


@covers(Reject.BAD_HEADER)
def test_header_of_the_wrong_length_is_bad_header(cb: ChainBuilder) -> None:
    raw = header_codec.encode(cb.tip.header)
    for bad in (raw[:-1], raw + b"\x00", b""):
        with pytest.raises(BlockRejected) as info:
            header_codec.decode(bad)
        assert info.value.code is Reject.BAD_HEADER


@pytest.fixture(scope="module")
def twelve() -> ChainBuilder:
    """genesis - 1 - 2 - ... - 12, block h at GENESIS_TIME + 5 h."""
    builder = ChainBuilder()
    builder.extend(12)
    return builder


@covers(Reject.TIME_TOO_OLD)
def test_time_at_the_median_of_the_last_eleven_is_too_old(twelve: ChainBuilder) -> None:
    """Parent at 12: the window is blocks 2..12, whose median is block 7's time.

    Block 6's time + 1 would pass a median over all 13 blocks (median block 6),
    so it failing shows that only the last 11 count.
    """
    time_of = {h: twelve.blocks[h].header.time for h in range(13)}
    assert median_time_past([time_of[h] for h in range(2, 13)]) == time_of[7]
    at_median = next_header(twelve, time=time_of[7])
    assert rejection(lambda: check(twelve, at_median)) is Reject.TIME_TOO_OLD
    below_all_eleven = next_header(twelve, time=time_of[6] + 1)
    assert rejection(lambda: check(twelve, below_all_eleven)) is Reject.TIME_TOO_OLD
    # One second above the median passes even though it is before the parent's time.
    check(twelve, next_header(twelve, time=time_of[7] + 1))
    assert time_of[7] + 1 < time_of[12]


def test_time_too_old_with_a_short_chain_uses_every_block(cb: ChainBuilder) -> None:
    """genesis - 1 - 2: the median of three times is block 1's."""
    mtp = cb.blocks[1].header.time
    assert rejection(lambda: check(cb, next_header(cb, time=mtp))) is Reject.TIME_TOO_OLD
    check(cb, next_header(cb, time=mtp + 1))


@covers(Reject.TIME_TOO_NEW)
def test_time_beyond_now_plus_max_future_is_too_new(cb: ChainBuilder) -> None:
    now = cb.tip.header.time
    at_limit = next_header(cb, time=now + MAX_FUTURE_S)
    check(cb, at_limit, now=now)
    beyond = next_header(cb, time=now + MAX_FUTURE_S + 1)
    assert rejection(lambda: check(cb, beyond, now=now)) is Reject.TIME_TOO_NEW
    assert Reject.TIME_TOO_NEW in NOT_PUNISHED
    check(cb, beyond, now=now + 1)  # the same header is fine a second later


@covers(Reject.UNKNOWN_PARENT)
def test_header_whose_prev_is_not_the_parent_is_unknown_parent(cb: ChainBuilder) -> None:
    header = next_header(cb, prev=cb.blocks[1].hash)
    assert rejection(lambda: check(cb, header)) is Reject.UNKNOWN_PARENT


# -- through the node's block index ------------------------------------------------------


def fresh_chain(tmp_path: pathlib.Path, cb: ChainBuilder) -> ChainState:
    return ChainState.create(tmp_path / "node", REGTEST.name, cb.task)


def test_block_with_unknown_parent_is_not_stored(tmp_path: pathlib.Path) -> None:
    """genesis - 1 - [2 missing] - 3: block 3 is UNKNOWN_PARENT and leaves no trace."""
    cb = ChainBuilder()
    cb.extend(3)
    chain = fresh_chain(tmp_path, cb)
    chain.accept_block(cb.blocks[1], NOW)
    assert rejection(lambda: chain.accept_block(cb.blocks[3], NOW)) is Reject.UNKNOWN_PARENT
    assert Reject.UNKNOWN_PARENT in NOT_PUNISHED
    assert cb.blocks[3].hash not in chain.index
    chain.accept_block(cb.blocks[2], NOW)
    assert chain.accept_block(cb.blocks[3], NOW).status == "connected"
    assert chain.tip.hash == cb.blocks[3].hash
    chain.close()


def test_block_too_far_in_the_future_is_accepted_later(tmp_path: pathlib.Path) -> None:
    """TIME_TOO_NEW is "not yet": the block is not marked invalid and connects later."""
    cb = ChainBuilder()
    cb.extend(1)
    chain = fresh_chain(tmp_path, cb)
    block = cb.blocks[1]
    early = block.header.time - MAX_FUTURE_S - 1
    assert rejection(lambda: chain.accept_block(block, early)) is Reject.TIME_TOO_NEW
    assert block.hash not in chain.index
    assert chain.accept_block(block, early + 1).status == "connected"
    chain.close()


@covers(Reject.BAD_PREV)
def test_child_of_an_invalid_block_is_bad_prev(tmp_path: pathlib.Path) -> None:
    """genesis - 1 - 2x - 3: 2x breaks the state root, so 3 (valid on its own) is BAD_PREV.

    Re-sending 2x itself is BAD_PREV too: the node remembers it is invalid.
    """
    cb = ChainBuilder()
    cb.extend(1)
    good2 = cb.template()
    bad2 = recommit(good2, good2.txs, state_root=bytes(32))
    chain = fresh_chain(tmp_path, cb)
    chain.accept_block(cb.blocks[1], NOW)
    assert rejection(lambda: chain.accept_block(bad2, NOW)) is Reject.BAD_STATE_ROOT
    assert chain.index[bad2.hash].status == BlockStatus.INVALID
    assert chain.tip.hash == cb.blocks[1].hash

    child = mine(
        Block.build(
            dataclasses.replace(good2.header, prev=bad2.hash, time=good2.header.time + BLOCK_SPACING_S),
            good2.state_root,
            list(good2.txs),
        )
    )
    assert rejection(lambda: chain.accept_block(child, NOW)) is Reject.BAD_PREV
    assert rejection(lambda: chain.accept_block(bad2, NOW)) is Reject.BAD_PREV
    assert child.hash not in chain.index
    chain.close()


def test_rejected_header_raises_block_rejected_only(cb: ChainBuilder) -> None:
    """A header with every field wrong still fails with a code, never another exception."""
    header = Header(version=7, prev=bytes(32), root=bytes(32), time=0, bits=0x01000000, nonce=0)
    with pytest.raises(BlockRejected) as info:
        check(cb, header)
    assert info.value.code is Reject.BAD_VERSION  # the first rule in the fixed order
