"""ChainState.screen: what a block's header alone decides, before its body is read or stored.

The anti-DoS threshold is cut to ``THRESHOLD`` blocks here so short regtest
branches show each case (every regtest block has the same work)::

    genesis - a1 - ... - a8                      the tip; the threshold is a5's work
          \\ d1 - ... - d12                       deep: more work in the end, but d1 alone is too little
                          a6 \\ s7 - s8 - s9     a minority fork within the threshold
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

import node.chainstate as chainstate
from consensus.errors import Reject
from consensus.genesis import GENESIS_TIME
from consensus.params import REGTEST
from node.chainstate import LOW_WORK, ChainState
from tests.chainbuilder import ChainBuilder, key, rejection
from tests.node.test_block_relay import failing_pow

NOW = GENESIS_TIME + 10**6
THRESHOLD = 3
TIP = 8


@pytest.fixture(scope="module")
def chains() -> tuple[ChainBuilder, ChainBuilder, ChainBuilder]:
    a = ChainBuilder()
    a.extend(TIP)
    deep = a.fork(0)
    deep.miner = key(7)
    deep.extend(TIP + 4)
    side = a.fork(TIP - 2)
    side.miner = key(8)
    side.extend(3)
    return a, deep, side


@pytest.fixture
def node(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, chains: tuple[ChainBuilder, ChainBuilder, ChainBuilder]
) -> Iterator[ChainState]:
    monkeypatch.setattr(chainstate, "ANTI_DOS_WORK_BLOCKS", THRESHOLD)
    a = chains[0]
    chain = ChainState.create(tmp_path / "node", REGTEST.name, a.task)
    for block in a.blocks[1:]:
        chain.accept_block(block, NOW)
    assert chain.height == TIP
    yield chain
    chain.close()


def test_a_block_deep_below_the_tip_is_neither_stored_nor_an_error(
    node: ChainState, chains: tuple[ChainBuilder, ChainBuilder, ChainBuilder]
) -> None:
    _, deep, _ = chains
    rows = len(node.index)
    result = node.accept_block(deep.blocks[1], NOW)
    assert result.status == LOW_WORK
    assert len(node.index) == rows and not node.has_block(deep.blocks[1].hash)
    # Its child is then an orphan: refused by its header, as any block on an unknown parent.
    assert rejection(lambda: node.accept_block(deep.blocks[2], NOW)) is Reject.UNKNOWN_PARENT


def test_a_minority_fork_within_the_threshold_is_stored_and_wins_when_heavier(
    node: ChainState, chains: tuple[ChainBuilder, ChainBuilder, ChainBuilder]
) -> None:
    _, _, side = chains
    assert [node.accept_block(b, NOW).status for b in side.blocks[TIP - 1 :]] == ["side", "side", "reorg"]
    assert node.tip.hash == side.tip.hash


def test_a_deep_branch_whose_headers_proved_its_work_is_stored_and_connects(
    node: ChainState, chains: tuple[ChainBuilder, ChainBuilder, ChainBuilder]
) -> None:
    """Headers-first sync stores a deep branch's headers once its total work is enough; then its bodies pass."""
    _, deep, _ = chains
    for block in deep.blocks[1:]:
        node.accept_header(block.header, NOW)
    statuses = [node.accept_block(b, NOW).status for b in deep.blocks[1:]]
    assert "reorg" in statuses and LOW_WORK not in statuses
    assert node.tip.hash == deep.tip.hash


def test_the_header_alone_refuses_a_block_without_its_proof_of_work(
    node: ChainState, chains: tuple[ChainBuilder, ChainBuilder, ChainBuilder]
) -> None:
    a, _, _ = chains
    child = a.template(miner=key(9))
    no_work = failing_pow(child)
    assert rejection(lambda: node.screen(no_work.header)) is Reject.BAD_POW
    held = node.screen(a.blocks[3].header)
    assert held is not None and held.status == "duplicate"  # a block we hold: its body is not needed
    assert node.screen(child.header) is None  # a valid header on the tip: the body is needed
