"""ChainState scenarios on a real datadir: fork choice, reorgs, invalid branches, reopening.

Blocks come from ``ChainBuilder`` branches; each node is a ``ChainState`` on
its own directory under ``tmp_path``. "The same state" always means bit for
bit: state root, every balance and nonce, the parameter bytes and version.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable

import pytest

from consensus.block import Block
from consensus.errors import Reject
from consensus.genesis import GENESIS_TIME
from consensus.header import Header
from consensus.params import REGTEST
from consensus.state import State
from consensus.tx import Tx
from ml.tasks import TaskSpec
from node.chainstate import MAX_LOCATOR_HASHES, ChainState, Connected
from node.storage import BlockStatus
from tests.chainbuilder import (
    BLOCK_SPACING_S,
    ChainBuilder,
    addr,
    assert_same_state,
    key,
    mine,
    quick_task,
    recommit,
    rejection,
)

NOW = GENESIS_TIME + 10**6  # later than every block here, by far less than it matters
MINER_A = key(0)
MINER_B = key(5)
ALICE = key(1)
BOB = key(2)
CAROL = key(3)
DAVE = key(4)
AMOUNT = 4_321
FEE = 9
LONG_CHAIN = 30  # enough blocks for the locator to thin out past its dense first ten
DENSE_LOCATOR_HASHES = 10


def new_node(tmp_path: pathlib.Path, name: str, cb: ChainBuilder) -> ChainState:
    return ChainState.create(tmp_path / name, REGTEST.name, cb.task)


def feed(chain: ChainState, blocks: Iterable[Block]) -> list[Connected]:
    return [chain.accept_block(block, NOW) for block in blocks]


def stored(chain: ChainState) -> State:
    """The state as written in the datadir (not the node's in-memory copy)."""
    state = chain.storage.load_state()
    assert state is not None
    return state


def assert_node_has(chain: ChainState, cb: ChainBuilder) -> None:
    """``chain``'s main chain and state are the builder's branch."""
    assert chain.main == [b.hash for b in cb.blocks]
    assert_same_state(chain.state, cb.state)


def reorg_task() -> TaskSpec:
    """Rounds of two blocks, free bonds that mature at once, f=0: a few blocks see every kind of tx."""
    return quick_task(round_blocks=2, f=0)


def branch_a(base: ChainBuilder) -> ChainBuilder:
    """a1: Alice and Bob bond, Alice commits; a2: a transfer from a1's reward, Bob commits (round 0 ends)."""
    cb = base.fork(0)
    cb.miner = MINER_A
    cb.add(cb.template([cb.bond(ALICE), cb.bond(BOB), cb.commit(ALICE, seeds=(1, 2))]))
    cb.add(cb.template([cb.transfer(MINER_A, BOB, AMOUNT, fee=FEE), cb.commit(BOB, seeds=(3, 4))]))
    return cb


def branch_b(base: ChainBuilder) -> ChainBuilder:
    """b1: Carol and Alice bond and commit; b2: a transfer; b3: both reveal (another miner throughout)."""
    cb = base.fork(0)
    cb.miner = MINER_B
    cb.add(cb.template([cb.bond(CAROL), cb.bond(ALICE), cb.commit(CAROL, seeds=(10,)), cb.commit(ALICE, seeds=(11,))]))
    cb.add(cb.template([cb.transfer(MINER_B, DAVE, AMOUNT, fee=FEE)]))
    cb.add(cb.template([cb.update(CAROL), cb.update(ALICE)]))
    return cb


@pytest.fixture(scope="module")
def branches() -> tuple[ChainBuilder, ChainBuilder]:
    base = ChainBuilder(reorg_task())
    return branch_a(base), branch_b(base)


def test_reorg_to_a_heavier_branch_equals_a_node_that_only_saw_it(
    tmp_path: pathlib.Path, branches: tuple[ChainBuilder, ChainBuilder]
) -> None:
    """
    genesis - a1 - a2            (first seen)
            \\ b1 - b2 - b3       (more work: reorg)

    Then A grows to a4 and wins back:

    genesis - a1 - a2 - a3 - a4  (more work again: reorg back)
            \\ b1 - b2 - b3
    """
    a, b = branches
    node = new_node(tmp_path, "node", a)
    assert [c.status for c in feed(node, a.blocks[1:])] == ["connected", "connected"]
    assert_node_has(node, a)

    assert [c.status for c in feed(node, b.blocks[1:3])] == ["side", "side"]  # equal work: first seen stays
    assert node.tip.hash == a.tip.hash
    switch = node.accept_block(b.blocks[3], NOW)
    assert switch.status == "reorg"
    assert [blk.hash for blk in switch.disconnected] == [blk.hash for blk in a.blocks[1:]]
    assert [blk.hash for blk in switch.connected] == [blk.hash for blk in b.blocks[1:]]
    assert_node_has(node, b)
    assert node.state.account(addr(BOB)) == b.state.account(addr(BOB))  # A's transfer is gone

    only_b = new_node(tmp_path, "only_b", b)
    feed(only_b, b.blocks[1:])
    assert_same_state(node.state, only_b.state)
    assert_same_state(stored(node), stored(only_b))

    a_long = a.fork(len(a.blocks) - 1)
    a_long.add(a_long.template([a_long.update(ALICE), a_long.update(BOB)]))
    a_long.add(a_long.template([
        a_long.transfer(BOB, CAROL, AMOUNT // 2), a_long.update(ALICE, index=1), a_long.update(BOB, index=1)
    ]))  # round 1 ends: the model moves, Alice and Bob are paid
    assert a_long.state.model_version == 1 and len(a_long.tip.txs[0].payouts) == 5  # type: ignore[union-attr]
    assert node.accept_block(a_long.blocks[3], NOW).status == "side"
    back = node.accept_block(a_long.blocks[4], NOW)
    assert back.status == "reorg"
    assert [blk.hash for blk in back.connected] == [blk.hash for blk in a_long.blocks[1:]]
    assert_node_has(node, a_long)

    only_a = new_node(tmp_path, "only_a", a_long)
    feed(only_a, a_long.blocks[1:])
    assert_same_state(node.state, only_a.state)
    for chain in (node, only_b, only_a):
        chain.close()

    reopened = ChainState.open(tmp_path / "node")
    assert_node_has(reopened, a_long)
    reopened.close()


def test_invalid_block_inside_a_heavier_branch_leaves_the_old_tip(
    tmp_path: pathlib.Path, branches: tuple[ChainBuilder, ChainBuilder]
) -> None:
    """
    genesis - a1 - a2                 (tip)
            \\ b1 - b2x - b3 - b4      (b2x: wrong state root; b3 makes B heavier)
                         \\ b3'         (only its header is known when b3 fails)

    b2x passes the body checks and is stored as a side block; b3 triggers the
    switch, which fails at b2x: the old tip, state and stored state are
    untouched, b2x and b3 are marked invalid, and b4 and b3' are BAD_PREV.
    """
    a, b = branches
    node = new_node(tmp_path, "node", a)
    feed(node, a.blocks[1:])
    tip, state = node.tip.hash, node.state

    b2x = recommit(b.blocks[2], b.blocks[2].txs, state_root=bytes(32))
    b3 = child_of(b2x, b.blocks[3])
    b4 = child_of(b3, b.blocks[3])
    assert node.accept_block(b.blocks[1], NOW).status == "side"
    assert node.accept_block(b2x, NOW).status == "side"
    b3_sibling = child_of(b2x, b.blocks[3], later_s=1)
    node.accept_header(b3_sibling.header, NOW)  # headers-first: its body comes later
    assert rejection(lambda: node.accept_block(b3, NOW)) is Reject.BAD_STATE_ROOT

    assert node.tip.hash == tip
    assert_same_state(node.state, state)
    assert_same_state(stored(node), state)
    assert node.index[b2x.hash].status == BlockStatus.INVALID
    assert node.index[b3.hash].status == BlockStatus.INVALID
    assert node.index[b.blocks[1].hash].status != BlockStatus.INVALID  # b1 itself was fine
    assert rejection(lambda: node.accept_block(b4, NOW)) is Reject.BAD_PREV
    # The sibling was only a header when b2x failed; its body is refused for its ancestor.
    assert rejection(lambda: node.accept_block(b3_sibling, NOW)) is Reject.BAD_PREV
    assert node.index[b3_sibling.hash].status == BlockStatus.INVALID
    node.close()

    reopened = ChainState.open(tmp_path / "node")
    assert reopened.tip.hash == tip
    assert_same_state(reopened.state, state)
    assert reopened.index[b2x.hash].status == BlockStatus.INVALID
    assert rejection(lambda: reopened.accept_block(b4, NOW)) is Reject.BAD_PREV
    # The valid B branch still wins when it arrives.
    assert [c.status for c in feed(reopened, b.blocks[2:])][-1] == "reorg"
    assert_node_has(reopened, b)
    reopened.close()


def child_of(parent: Block, like: Block, later_s: int = 0) -> Block:
    """A mined block on ``parent`` with ``like``'s body (its rules fail only at connect time)."""
    time = parent.header.time + BLOCK_SPACING_S + later_s
    header = dataclasses.replace(like.header, prev=parent.hash, time=time)
    return mine(Block.build(header, like.state_root, list(like.txs)))


def test_duplicate_and_side_blocks_do_not_move_the_tip(
    tmp_path: pathlib.Path, branches: tuple[ChainBuilder, ChainBuilder]
) -> None:
    a, b = branches
    node = new_node(tmp_path, "node", a)
    feed(node, a.blocks[1:])
    assert node.accept_block(a.blocks[2], NOW).status == "duplicate"
    assert node.accept_block(b.blocks[1], NOW).status == "side"
    assert node.has_block(b.blocks[1].hash)
    assert not node.is_main(b.blocks[1].hash)
    assert_node_has(node, a)
    node.close()


@pytest.fixture(scope="module")
def long_chain() -> ChainBuilder:
    """``LONG_CHAIN`` blocks in rounds of three: Alice commits three updates in each round's first
    block and reveals one in every block of the next, so the model moves every third block."""
    cb = ChainBuilder(quick_task(round_blocks=3, f=0))
    for height in range(1, LONG_CHAIN + 1):
        position = (height - 1) % 3
        txs: list[Tx] = [cb.bond(ALICE)] if height == 1 else []
        if position == 0:
            txs.append(cb.commit(ALICE, seeds=(height, height + 100, height + 200)))
        if height > 3:
            txs.append(cb.update(ALICE, index=position))
        cb.add(cb.template(txs))
    assert cb.state.model_version > 5
    return cb


@pytest.fixture(scope="module")
def long_node(tmp_path_factory: pytest.TempPathFactory, long_chain: ChainBuilder) -> ChainState:
    node = new_node(tmp_path_factory.mktemp("long"), "node", long_chain)
    feed(node, long_chain.blocks[1:])
    return node


def test_model_at_gives_the_parameters_committed_at_each_height(
    long_node: ChainState, long_chain: ChainBuilder
) -> None:
    for height, state in enumerate(long_chain.states):
        params, version = long_node.model_at(height)
        assert params.tobytes() == state.params.tobytes()
        assert version == state.model_version
    with pytest.raises(ValueError):
        long_node.model_at(LONG_CHAIN + 1)
    with pytest.raises(ValueError):
        long_node.model_at(-1)


def test_reopening_the_datadir_gives_the_same_tip_and_state(
    tmp_path: pathlib.Path, long_chain: ChainBuilder
) -> None:
    node = new_node(tmp_path, "node", long_chain)
    feed(node, long_chain.blocks[1:11])
    node.close()
    reopened = ChainState.open(tmp_path / "node")
    assert reopened.main == [b.hash for b in long_chain.blocks[:11]]
    assert_same_state(reopened.state, long_chain.states[10])
    feed(reopened, long_chain.blocks[11:])
    assert_node_has(reopened, long_chain)
    assert reopened.model_at(5)[0].tobytes() == long_chain.states[5].params.tobytes()
    reopened.close()


def test_locator_is_dense_near_the_tip_then_sparse_then_genesis(long_node: ChainState) -> None:
    locator = long_node.locator()
    heights = [long_node.index[h].height for h in locator]
    assert heights[:DENSE_LOCATOR_HASHES] == list(range(LONG_CHAIN, LONG_CHAIN - DENSE_LOCATOR_HASHES, -1))
    steps = [x - y for x, y in zip(heights, heights[1:], strict=False)][DENSE_LOCATOR_HASHES - 1 : -1]
    assert all(later >= earlier for earlier, later in zip(steps, steps[1:], strict=False))
    assert steps[-1] > 1
    assert heights[-1] == 0 and locator[-1] == long_node.genesis_hash
    assert len(locator) <= MAX_LOCATOR_HASHES
    assert all(long_node.is_main(h) for h in locator)


def headers(cb: ChainBuilder, lo: int, hi: int) -> list[Header]:
    return [b.header for b in cb.blocks[lo:hi]]


def test_headers_after_start_at_the_first_locator_hash_on_the_main_chain(
    tmp_path: pathlib.Path, long_node: ChainState, long_chain: ChainBuilder
) -> None:
    """A peer that has the first 10 blocks, then a peer on a fork from height 4.

    genesis - ... - 4 - 5 - ... - 30      (long_node)
                     \\ 5' - 6'           (the forked peer)
    """
    behind = new_node(tmp_path, "behind", long_chain)
    feed(behind, long_chain.blocks[1:11])
    assert long_node.headers_after(behind.locator(), limit=100) == headers(long_chain, 11, LONG_CHAIN + 1)
    assert long_node.headers_after(behind.locator(), limit=5) == headers(long_chain, 11, 16)
    behind.close()

    fork = long_chain.fork(4)
    fork.miner = MINER_B
    fork.extend(2)
    forked = new_node(tmp_path, "forked", fork)
    feed(forked, fork.blocks[1:])
    assert long_node.headers_after(forked.locator(), limit=3) == headers(long_chain, 5, 8)
    forked.close()

    assert long_node.headers_after([bytes(32)], limit=2) == headers(long_chain, 1, 3)  # unknown: from genesis
    assert long_node.headers_after(long_node.locator(), limit=10) == []  # already at our tip


def test_coins_an_unbond_returns_are_stored_with_the_block_that_returns_them(tmp_path: pathlib.Path) -> None:
    """The block at the end of the unbonding delay credits Alice without a transaction of hers:
    the datadir must hold that balance too (it is written per account the block changed)."""
    cb = ChainBuilder(quick_task(bond_amount=AMOUNT, unbond_delay=3))
    cb.join(ALICE)
    cb.add(cb.template([cb.unbond(ALICE)]))
    before = cb.state.account(addr(ALICE)).balance
    cb.extend(cb.task.unbond_delay)
    assert cb.state.account(addr(ALICE)).balance == before + AMOUNT
    node = new_node(tmp_path, "node", cb)
    feed(node, cb.blocks[1:])
    assert stored(node).account(addr(ALICE)).balance == before + AMOUNT
    assert_same_state(stored(node), cb.state)
    node.close()
