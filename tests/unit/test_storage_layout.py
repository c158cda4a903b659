"""The datadir's state layout (schema 3): per-key task rows and undo records of only what a block changed.

A chain that exercises every kind of task state (bonds, an unbond that comes
due, commitments, reveals, votes, round ends that move the model, a deployed
task whose contract pays from its bounty) is connected into a real datadir;
what is stored must give back, bit for bit, every state the builder computed:
after each block, after a reorg that disconnects all of it, and after a
restart. An old datadir is refused with the command that rebuilds it.
"""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

import consensus.contracts
from consensus.params import REGTEST
from consensus.state import CLOSED
from consensus.transition import state_transition, undo_block
from consensus.tx import Tx
from node.chainstate import DB_NAME, ChainState
from node.reindex import reindex
from node.storage import SCHEMA_VERSION, StorageError, decode_undo, encode_undo
from tests.chainbuilder import (
    ChainBuilder,
    addr,
    assert_same_state,
    det_vector,
    key,
    quick_task,
    recommit,
)
from tests.unit.test_contracts import deploy

NOW = 2**40  # later than every block
ALICE, BOB, CAROL = key(1), key(2), key(3)
ROUND = 3
IDLE_BLOCKS = 5  # the deployed task nobody trains closes after these, in the middle of the chain


@pytest.fixture(scope="module", autouse=True)
def quick_close():  # type: ignore[no-untyped-def]
    """Close idle deployed tasks soon (the chain's own figure is far longer), for every block here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(consensus.contracts, "MAX_IDLE_BLOCKS", IDLE_BLOCKS)
        yield


def busy_chain() -> ChainBuilder:
    """Rounds of three blocks: Alice and Carol commit and reveal, Bob bonds and unbonds, a task is deployed and closes."""
    cb = ChainBuilder(quick_task(round_blocks=ROUND, f=0, unbond_delay=2))
    cb.extend(1)  # the miner earns the coins it deploys with
    cb.join(ALICE, BOB, CAROL)
    task_id = deploy(cb)
    contract = cb.state.tasks[task_id].contract
    assert contract is not None
    need = contract.spec.bond_amount  # Alice's coins went into her first bond
    while cb.state.account(addr(cb.miner)).balance < need:
        cb.extend(1)
    cb.add(cb.template([cb.transfer(cb.miner, ALICE, need)]))
    cb.add(cb.template([cb.bond(ALICE, task_id=task_id)]))
    while (cb.next_height - 1) % ROUND:
        cb.extend(1)
    for r in range(4):
        for position in range(ROUND):
            txs: list[Tx] = []
            if position == 0:
                txs += [cb.commit(k, [det_vector(10 * r + i + j, cb.task.param_count) for j in range(ROUND)])
                        for i, k in enumerate((ALICE, CAROL))]
            if r > 0:
                txs += [cb.update(ALICE, index=position), cb.update(CAROL, index=position)]
            if r == 1 and position == 1:
                txs.append(cb.unbond(BOB))
            cb.add(cb.template(txs))
    contract = cb.state.tasks[task_id].contract
    assert cb.state.model_version >= 2 and contract is not None and contract.status == CLOSED
    assert addr(BOB) not in cb.state.task.stakes and any(s.task.unbonding for s in cb.states)  # paid back
    return cb


@pytest.fixture(scope="module")
def chain(quick_close: None) -> ChainBuilder:
    return busy_chain()


def undo_of(cb: ChainBuilder, height: int):  # type: ignore[no-untyped-def]
    parent = cb.fork(height - 1)
    return state_transition(parent.view(), parent.state, cb.blocks[height], NOW)


def test_each_undo_record_gives_back_the_parent_state_from_the_state_after(chain: ChainBuilder) -> None:
    smaller = 0
    for height in range(1, len(chain.blocks)):
        after, undo = undo_of(chain, height)
        raw = encode_undo(undo, after)
        decoded = decode_undo(raw, after)
        for task_id, task in undo.tasks_before.items():
            assert decoded.tasks_before[task_id].digest == task.digest, (height, task_id)
        assert undo_block(after, decoded).root == chain.states[height - 1].root
        assert decoded.outcome == undo.outcome and decoded.created == undo.created
        full = encode_undo(undo)  # without the state after: every task whole, as schema 2 kept it
        assert undo_block(after, decode_undo(full)).root == chain.states[height - 1].root
        smaller += len(raw) < len(full) // 2
        if undo.tasks_before:
            with pytest.raises(ValueError, match="needs the state after the block"):
                decode_undo(raw)
    assert smaller > len(chain.blocks) // 2  # most blocks change a few keys, not the whole task


def test_the_stored_state_follows_every_block_a_reorg_and_a_restart(tmp_path: pathlib.Path, chain: ChainBuilder) -> None:
    node = ChainState.create(tmp_path / "node", REGTEST.name, chain.task)
    for height, block in enumerate(chain.blocks[1:], 1):
        assert node.accept_block(block, NOW).status == "connected"
        stored = node.storage.load_state()  # raises when the rows do not hash to the block's root
        assert stored is not None
        assert_same_state(stored, chain.states[height])
    # A heavier branch from just after genesis disconnects every block (the deploy included)...
    other = chain.fork(1)
    other.miner = key(7)
    other.extend(len(chain.blocks))
    switch = [node.accept_block(block, NOW) for block in other.blocks[2:]]
    (reorg,) = [s for s in switch if s.status == "reorg"]
    assert [b.hash for b in reorg.disconnected] == [b.hash for b in chain.blocks[2:]]
    assert node.tip.hash == other.tip.hash
    assert_same_state(node.storage.load_state(), other.state)  # type: ignore[arg-type]
    assert list(node.state.tasks) == list(other.state.tasks)
    # ... and the first branch, grown by one block, wins back: every task row is written again.
    longer = chain.fork(len(chain.blocks) - 1)
    longer.extend(len(other.blocks) - len(chain.blocks) + 1)
    for block in longer.blocks[len(chain.blocks):]:
        node.accept_block(block, NOW)
    assert node.tip.hash == longer.tip.hash
    for height, state in enumerate(longer.states):
        params, version = node.model_at(height)
        assert params.tobytes() == state.params.tobytes() and version == state.model_version
    node.close()
    reopened = ChainState.open(tmp_path / "node")
    assert_same_state(reopened.state, longer.state)
    assert list(reopened.state.tasks) == list(longer.state.tasks)  # the genesis task first
    reopened.close()


def test_a_block_that_leaves_the_model_does_not_rewrite_it(tmp_path: pathlib.Path, chain: ChainBuilder) -> None:
    node = ChainState.create(tmp_path / "node", REGTEST.name, chain.task)
    statements: list[str] = []
    node.storage.db.set_trace_callback(statements.append)
    moved = 0
    for height, block in enumerate(chain.blocks[1:], 1):
        statements.clear()
        node.accept_block(block, NOW)
        models = [s for s in statements if "INTO task_model" in s]
        changed = [tid for tid, t in chain.states[height].tasks.items()
                   if tid not in chain.states[height - 1].tasks
                   or t.params_digest != chain.states[height - 1].tasks[tid].params_digest
                   or t.contract != chain.states[height - 1].tasks[tid].contract]
        assert len(models) == len(changed), height
        moved += bool(changed)
    assert 0 < moved < len(chain.blocks) // 2
    node.close()


def test_an_older_layout_is_refused_with_the_command_that_rebuilds_it(
    tmp_path: pathlib.Path, chain: ChainBuilder
) -> None:
    datadir = tmp_path / "node"
    node = ChainState.create(datadir, REGTEST.name, chain.task)
    for block in chain.blocks[1:]:
        node.accept_block(block, NOW)
    node.close()
    with sqlite3.connect(datadir / DB_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION - 1).encode(),))
    db.close()
    with pytest.raises(StorageError, match=f"gradchain chain reindex --datadir {datadir}"):
        ChainState.open(datadir)
    report = reindex(datadir, DB_NAME, ["an older storage layout"])
    assert report.height == len(chain.blocks) - 1
    rebuilt = ChainState.open(datadir)
    assert_same_state(rebuilt.state, chain.state)
    rebuilt.close()


def test_a_branch_that_fails_on_the_tip_leaves_the_main_chain_as_it_was(
    tmp_path: pathlib.Path, chain: ChainBuilder
) -> None:
    """Connecting on the tip appends to the main chain in place: when the second block of a two-block
    extension fails, the first, already appended, is cut back off with it."""
    node = ChainState.create(tmp_path / "node", REGTEST.name, chain.task)
    for block in chain.blocks[1:-2]:
        node.accept_block(block, NOW)
    main, root = list(node.main), node.state.root
    first, last = chain.blocks[-2], chain.blocks[-1]
    bad = recommit(last, last.txs, state_root=bytes(32))
    node.accept_header(first.header, NOW)
    assert node.accept_block(bad, NOW).status == "side"  # its parent's body is not here yet
    assert node.accept_block(first, NOW).status == "side"  # connects ``first``, then ``bad`` fails
    assert node.main == main and node.state.root == root and node.height == len(main) - 1
    assert node.storage.load_state().root == root  # type: ignore[union-attr]
    node.close()
    reopened = ChainState.open(tmp_path / "node")
    assert reopened.main == main
    reopened.close()
