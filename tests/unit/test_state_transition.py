"""The state transition: who is paid, when the model moves, and undo.

Each test states a fact about ``state_transition`` / ``undo_block`` that a
regression in consensus/transition.py or consensus/rounds.py would break:
the miner earns the reward plus every fee; the model moves only at a round's
last block, by the vote rule over the round's block votes; a contributor is
paid there only when its block's rule counted its update, the round counted
its block's vote and the step was applied; a clone is never paid; and
disconnecting a block gives back the parent's state bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from consensus.transition import state_transition, undo_block
from consensus.tx import Coinbase, Tx
from ml.rounds import aggregate_votes
from ml.tasks import TaskSpec
from tests.chainbuilder import (
    ChainBuilder,
    addr,
    assert_same_state,
    det_vector,
    key,
    quick_task,
    solo_task,
)
from wallet import KeyPair

MINER = key(0)
HONEST = [key(i) for i in range(1, 5)]
OUTLIER = key(9)
FEE = 11
AMOUNT = 12_345
OUTLIER_VALUE = 0.3  # every coordinate 0.3: norm 7.6 < 20, far from every honest delta
KRUM_UPDATES = 5  # Krum with f = 1 needs n >= 2f + 3
WIDTH = 4  # blocks per round in the round tests


def balance(cb: ChainBuilder, kp: KeyPair) -> int:
    return cb.state.account(addr(kp)).balance


def krum_task() -> TaskSpec:
    return quick_task(rule="krum", f=1, max_updates_per_block=KRUM_UPDATES)


@pytest.fixture
def cb() -> ChainBuilder:
    """genesis - 1 - 2: the miner holds rewards; the honest keys are bonded (rounds of one block, f=0)."""
    builder = ChainBuilder(solo_task())
    builder.extend(1)
    builder.join(*HONEST)
    return builder


def test_miner_earns_reward_plus_every_fee() -> None:
    builder = ChainBuilder(quick_task(bond_amount=AMOUNT))
    builder.extend(1)
    before = balance(builder, MINER)
    builder.add(builder.template([builder.transfer(MINER, HONEST[0], 2 * AMOUNT, fee=FEE)]))
    reward = builder.task.block_reward
    assert balance(builder, MINER) == before - 2 * AMOUNT - FEE + reward + FEE
    miner_before = balance(builder, MINER)
    builder.add(builder.template([builder.bond(HONEST[0], fee=FEE)], miner=HONEST[2]))
    coinbase = builder.tip.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert coinbase.payouts == (coinbase.payouts[0],) and coinbase.payouts[0].address == addr(HONEST[2])
    assert coinbase.payouts[0].amount == reward + FEE
    assert balance(builder, HONEST[0]) == AMOUNT - FEE  # the bond is locked, the fee paid
    assert balance(builder, MINER) == miner_before  # the old miner earns nothing from this block


def test_nonces_advance_for_spends_only(cb: ChainBuilder) -> None:
    """Transfers and bonds use the account nonce; commitments and updates do not."""
    before = cb.state.account(addr(HONEST[0])).nonce
    assert before == 1  # its bond
    txs = [cb.transfer(MINER, HONEST[0], AMOUNT, nonce=cb.nonce_of(MINER) + i) for i in range(2)]
    cb.add(cb.template([*txs, cb.commit(HONEST[1])]))
    cb.add(cb.template([cb.update(HONEST[1])]))
    assert cb.state.account(addr(HONEST[1])).nonce == before
    assert cb.state.account(addr(HONEST[0])).nonce == before  # receiving does not use a nonce


def test_transfer_to_self_costs_only_the_fee(cb: ChainBuilder) -> None:
    before = balance(cb, MINER)
    cb.add(cb.template([cb.transfer(MINER, MINER, AMOUNT, fee=FEE)], miner=HONEST[3]))
    assert balance(cb, MINER) == before - FEE


def test_krum_pays_only_the_update_it_selects_and_never_the_outlier() -> None:
    """Four honest deltas and one far outlier under Krum (f = 1): one honest delta is the vote."""
    cb = ChainBuilder(krum_task())
    cb.join(*HONEST, OUTLIER)
    size = cb.task.param_count
    updates = {kp: det_vector(i, size) for i, kp in enumerate(HONEST)}
    updates[OUTLIER] = np.full(size, OUTLIER_VALUE, dtype=np.float32)
    params_before = cb.state.params
    cb.contribute(updates)

    assert balance(cb, OUTLIER) == 0
    paid = [kp for kp in HONEST if balance(cb, kp) == cb.task.contributor_reward]
    assert len(paid) == 1  # Krum selects exactly one update
    assert all(balance(cb, kp) == 0 for kp in HONEST if kp not in paid)
    coinbase = cb.tip.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert [p.address for p in coinbase.payouts] == [addr(MINER), addr(paid[0])]

    chosen = updates[paid[0]]  # a round of one vote: clipped to its own norm, its median is itself
    expected = (params_before - np.float32(cb.task.server_lr) * chosen).astype(np.float32)
    assert cb.state.params.tobytes() == expected.tobytes()
    assert cb.state.last_aggregate.tobytes() == chosen.tobytes()
    assert cb.state.model_version == 1


def test_median_counts_and_pays_every_contributor(cb: ChainBuilder) -> None:
    cb.contribute({kp: det_vector(i, cb.task.param_count) for i, kp in enumerate(HONEST[:3])})
    assert all(balance(cb, kp) == cb.task.contributor_reward for kp in HONEST[:3])
    assert cb.state.model_version == 1


def test_the_rule_runs_only_with_the_tasks_byzantine_bound() -> None:
    """The task's rule (meamed) with f=1 needs 2f+1 = 3 updates: with one or two, a lone
    attacker could steer the block, so it votes zero and nobody is paid; with three it moves."""
    cb = ChainBuilder(quick_task())
    assert cb.task.rule == "meamed" and cb.task.f == 1
    cb.join(*HONEST)
    size = cb.task.param_count
    before = cb.state
    cb.contribute({HONEST[0]: det_vector(0, size), HONEST[1]: det_vector(1, size)})
    assert cb.state.model_version == before.model_version
    assert cb.state.params.tobytes() == before.params.tobytes()
    assert balance(cb, HONEST[0]) == 0
    cb.contribute({HONEST[i]: det_vector(10 + i, size) for i in range(3)})
    assert cb.state.model_version == before.model_version + 1
    assert all(balance(cb, HONEST[i]) == cb.task.contributor_reward for i in range(3))


# -- rounds ---------------------------------------------------------------------------------


@pytest.fixture
def rb() -> ChainBuilder:
    """Rounds of four blocks, f = 0, four bonded keys; the next block opens a round."""
    builder = ChainBuilder(quick_task(f=0, round_blocks=WIDTH))
    builder.join(*HONEST, OUTLIER)
    while (builder.next_height - 1) % WIDTH:
        builder.extend(1)
    return builder


def commit_round(rb: ChainBuilder, keys: list[KeyPair], seed: int) -> dict[KeyPair, list[np.ndarray]]:
    """Each key commits a round's worth of updates; mine to the next round's first block."""
    size = rb.task.param_count
    plans = {kp: [det_vector(seed + 10 * i + j, size) for j in range(WIDTH)] for i, kp in enumerate(keys)}
    rb.add(rb.template([rb.commit(kp, vectors) for kp, vectors in plans.items()]))
    while (rb.next_height - 1) % WIDTH:
        rb.extend(1)
    return plans


def test_the_model_moves_once_per_round_by_the_vote_rule_over_its_blocks(rb: ChainBuilder) -> None:
    """Four blocks, each revealing one update of each of two keys: the model stays for three
    blocks and moves at the fourth by clip+median over the four block votes (f = 0, median
    of two updates per block)."""
    keys = HONEST[:2]
    plans = commit_round(rb, keys, seed=0)
    params = rb.state.params
    votes = []
    for position in range(WIDTH):
        rb.add(rb.template([rb.update(kp, index=position) for kp in keys]))
        pair = np.stack([plans[kp][position] for kp in keys])
        votes.append(((pair[0].astype(np.float64) + pair[1]) * 0.5).astype(np.float32))
        if position < WIDTH - 1:
            assert rb.state.params.tobytes() == params.tobytes()
            assert len(rb.state.task.votes) == position + 1
    step = aggregate_votes(rb.task.vote_rule, np.stack(votes)).aggregate
    assert rb.state.params.tobytes() == (params - np.float32(rb.task.server_lr) * step).astype(np.float32).tobytes()
    assert rb.state.task.votes == ()
    coinbase = rb.tip.txs[0]
    assert isinstance(coinbase, Coinbase)
    # the last block pays every update the round counted: two keys, four blocks
    assert len(coinbase.payouts) == 1 + 2 * WIDTH
    assert all(balance(rb, kp) == WIDTH * rb.task.contributor_reward for kp in keys)


def test_a_minority_of_poisoned_blocks_is_outvoted_and_unpaid(rb: ChainBuilder) -> None:
    """Three blocks of four carry an honest update (close to one direction), one carries the
    attacker's alone, reversed and 40 times longer (f = 0: its block votes the poison). The
    round clips it to the median vote norm, rejects the vote, pays the honest sender for three
    blocks and the attacker for none, and steps along the honest direction."""
    size = rb.task.param_count
    direction = det_vector(3, size)
    honest = [(direction + np.float32(0.1) * det_vector(10 + j, size)).astype(np.float32) for j in range(WIDTH)]
    poison = [(np.float32(-40.0) * direction + np.float32(j) * det_vector(20, size)).astype(np.float32)
              for j in range(WIDTH)]
    rb.add(rb.template([rb.commit(HONEST[0], honest), rb.commit(OUTLIER, poison)]))
    while (rb.next_height - 1) % WIDTH:
        rb.extend(1)
    params = rb.state.params
    for position in range(WIDTH):
        who = OUTLIER if position == 1 else HONEST[0]
        rb.add(rb.template([rb.update(who, index=position)]))
    assert balance(rb, HONEST[0]) == (WIDTH - 1) * rb.task.contributor_reward
    assert balance(rb, OUTLIER) == 0
    moved = (params.astype(np.float64) - rb.state.params) @ direction
    assert moved > 0  # along the honest direction, not the attacker's


def test_a_clone_of_another_senders_update_is_kept_but_never_counted(rb: ChainBuilder) -> None:
    """Bob commits to a copy of what Alice committed; both reveal: Alice is paid, Bob never."""
    alice, bob = HONEST[0], HONEST[1]
    size = rb.task.param_count
    vectors = [det_vector(50 + j, size) for j in range(WIDTH)]
    rb.add(rb.template([rb.commit(alice, vectors), rb.commit(bob, vectors)]))
    while (rb.next_height - 1) % WIDTH:
        rb.extend(1)
    for position in range(WIDTH):
        block = rb.template([rb.update(alice, index=position), rb.update(bob, index=position)])
        rb.add(block)
    assert balance(rb, alice) == WIDTH * rb.task.contributor_reward
    assert balance(rb, bob) == 0


@pytest.mark.parametrize("wait", [0, 1], ids=["same-round", "next-round"])
def test_a_copier_of_revealed_updates_is_never_paid(rb: ChainBuilder, wait: int) -> None:
    """Alice reveals in round v; Bob commits to copies of her reveals in round v (its last block) or,
    having waited, v + 1, and reveals them a round later beside honest Carol: only Carol is paid.

    The copies are exact clones of updates revealed one or two rounds before
    (``CLONE_WINDOW_ROUNDS``); the round after the reveal is the latest a
    copier of a reveal in a round's last block can commit in.
    """
    alice, bob, carol = HONEST[0], HONEST[1], HONEST[2]
    size = rb.task.param_count
    seen = [det_vector(70 + j, size) for j in range(WIDTH)]
    own = [det_vector(90 + j, size) for j in range(WIDTH)]
    copies = seen[: WIDTH - 1]  # what Bob has seen by the last block of round v
    rb.add(rb.template([rb.commit(alice, seen)]))
    while (rb.next_height - 1) % WIDTH:
        rb.extend(1)
    for position in range(WIDTH):  # round v: Alice reveals
        txs: list[Tx] = [rb.update(alice, index=position)]
        if wait == 0 and position == WIDTH - 1:
            txs += [rb.commit(bob, copies), rb.commit(carol, own)]
        rb.add(rb.template(txs))
    if wait == 1:
        rb.add(rb.template([rb.commit(bob, copies), rb.commit(carol, own)]))
        while (rb.next_height - 1) % WIDTH:
            rb.extend(1)
    for position in range(WIDTH):  # Bob's and Carol's reveal round
        txs = [rb.update(carol, index=position)]
        if position < len(copies):
            txs.append(rb.update(bob, index=position))
        rb.add(rb.template(txs))
    assert balance(rb, carol) == WIDTH * rb.task.contributor_reward
    assert balance(rb, bob) == 0


def test_the_round_gate_refuses_a_step_that_raises_the_validation_loss() -> None:
    """With the round gate (digits' built-in task), a round whose only votes push the model up
    the loss moves nothing and pays nobody; the same blocks reversed move it."""
    from tests.unit.test_gate import descent_update

    task = dataclasses.replace(ChainBuilder().task, round_blocks=1, bond_amount=0, bond_maturity=0, f=0)
    assert task.gate_scope == "round" and task.gate_examples > 0
    cb = ChainBuilder(task)
    cb.join(HONEST[0])
    ascent = descent_update(cb, -2.0)
    before = cb.state
    cb.contribute({HONEST[0]: ascent})
    assert cb.state.model_version == before.model_version
    assert cb.state.params.tobytes() == before.params.tobytes()
    assert balance(cb, HONEST[0]) == 0
    cb.contribute({HONEST[0]: descent_update(cb, 0.5)})
    assert cb.state.model_version == before.model_version + 1
    assert balance(cb, HONEST[0]) == cb.task.contributor_reward


def test_unbonded_coins_return_in_the_block_the_delay_ends(rb: ChainBuilder) -> None:
    locked = rb.state.task.stakes[addr(HONEST[0])].amount
    rb.add(rb.template([rb.unbond(HONEST[0])]))
    release = len(rb.blocks) - 1 + rb.task.unbond_delay
    start = balance(rb, HONEST[0])
    while len(rb.blocks) - 1 < release - 1:
        rb.extend(1)
        assert balance(rb, HONEST[0]) == start
    rb.extend(1)
    assert balance(rb, HONEST[0]) == start + locked
    assert addr(HONEST[0]) not in rb.state.task.unbonding


# -- determinism and undo ------------------------------------------------------------------


def test_applying_the_same_block_twice_gives_the_same_bits(cb: ChainBuilder) -> None:
    cb.add(cb.template([cb.commit(kp, seeds=(i,)) for i, kp in enumerate(HONEST)]))
    block = cb.template([cb.update(kp) for kp in HONEST])
    first, _ = state_transition(cb.view(), cb.state, block, block.header.time)
    second, _ = state_transition(cb.view(), cb.state, block, block.header.time)
    assert_same_state(first, second)


def test_undo_restores_the_parent_state_bit_for_bit(rb: ChainBuilder) -> None:
    """Transfers, bonds, commitments, mid-round votes and a round's end all come back undone."""
    commit_round(rb, HONEST[:3], seed=7)
    rb.add(rb.template([rb.transfer(MINER, key(20), AMOUNT, fee=FEE)]))  # a reveal block below needs none
    for position in range(1, WIDTH):
        parent = rb.state
        txs: list[Tx] = [rb.update(kp, index=position) for kp in HONEST[:3]]
        if position == 1:
            txs.append(rb.unbond(HONEST[3]))
        block = rb.template(txs)
        child, undo = state_transition(rb.view(), parent, block, block.header.time)
        assert child.root != parent.root
        assert_same_state(undo_block(child, undo), parent)
        rb.add(block)
    assert undo.outcome.round_counted is not None  # the last one closed the round


def test_undo_of_a_chain_of_blocks_walks_back_to_genesis() -> None:
    cb = ChainBuilder(quick_task(f=0))
    undos = []
    for i in range(6):
        if i == 1:
            txs: list[Tx] = [cb.bond(HONEST[0])]
        elif i == 3:
            txs = [cb.commit(HONEST[0], seeds=(i,))]
        elif i == 4:
            txs = [cb.update(HONEST[0])]
        else:
            txs = []
        block = cb.template(txs)
        _, undo = state_transition(cb.view(), cb.state, block, block.header.time)
        undos.append(undo)
        cb.add(block)
    assert cb.state.model_version == 1
    state = cb.state
    for height in range(6, 0, -1):
        state = undo_block(state, undos[height - 1])
        assert_same_state(state, cb.states[height - 1])
