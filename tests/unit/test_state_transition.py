"""The state transition: who is paid, when the model moves, and undo.

Each test states a fact about ``state_transition`` / ``undo_block`` that a
regression in consensus/transition.py would break: the miner earns the
reward plus every fee; a contributor is paid only when the task's rule
counted their update; the model and its version move only when an aggregate
is applied; and disconnecting a block gives back the parent's state bit for
bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from consensus.transition import state_transition, undo_block
from consensus.tx import Coinbase, Tx
from ml.tasks import TaskSpec
from tests.chainbuilder import ChainBuilder, addr, assert_same_state, det_vector, key, solo_task
from wallet import KeyPair

MINER = key(0)
HONEST = [key(i) for i in range(1, 5)]
OUTLIER = key(9)
FEE = 11
UPDATE_FEE = 3
AMOUNT = 12_345
OUTLIER_VALUE = 0.3  # every coordinate 0.3: norm 7.6 < 10, far from every honest delta
KRUM_UPDATES = 5  # Krum with f = 1 needs n >= 2f + 3


def balance(cb: ChainBuilder, kp: KeyPair) -> int:
    return cb.state.account(addr(kp)).balance


def krum_task() -> TaskSpec:
    return dataclasses.replace(ChainBuilder().task, rule="krum", f=1, max_updates_per_block=KRUM_UPDATES)


@pytest.fixture
def cb() -> ChainBuilder:
    """genesis - 1: the miner holds one reward (f=0: a single update trains)."""
    builder = ChainBuilder(solo_task())
    builder.extend(1)
    return builder


def test_miner_earns_reward_plus_every_fee(cb: ChainBuilder) -> None:
    before = balance(cb, MINER)
    txs: list[Tx] = [
        cb.transfer(MINER, HONEST[0], AMOUNT, fee=FEE),
        cb.update(HONEST[1], fee=0),
    ]
    cb.add(cb.template(txs))
    reward = cb.task.block_reward
    assert balance(cb, MINER) == before - AMOUNT - FEE + reward + FEE
    assert balance(cb, HONEST[0]) == AMOUNT
    assert balance(cb, HONEST[1]) == cb.task.contributor_reward

    miner_before = balance(cb, MINER)
    cb.add(cb.template([cb.update(HONEST[1], fee=UPDATE_FEE, seed=5)], miner=HONEST[2]))
    coinbase = cb.tip.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert coinbase.payouts[0].address == addr(HONEST[2])
    assert coinbase.payouts[0].amount == reward + UPDATE_FEE
    assert balance(cb, HONEST[2]) == reward + UPDATE_FEE
    assert balance(cb, HONEST[1]) == 2 * cb.task.contributor_reward - UPDATE_FEE
    assert balance(cb, MINER) == miner_before  # the old miner earns nothing from this block


def test_nonces_advance_once_per_signed_transaction(cb: ChainBuilder) -> None:
    txs = [cb.transfer(MINER, HONEST[0], AMOUNT, nonce=0), cb.transfer(MINER, HONEST[0], AMOUNT, nonce=1)]
    cb.add(cb.template([*txs, cb.update(HONEST[1])]))
    assert cb.state.account(addr(MINER)).nonce == 2
    assert cb.state.account(addr(HONEST[1])).nonce == 1
    assert cb.state.account(addr(HONEST[0])).nonce == 0  # receiving does not use a nonce


def test_transfer_to_self_costs_only_the_fee(cb: ChainBuilder) -> None:
    other_miner = HONEST[3]
    before = balance(cb, MINER)
    cb.add(cb.template([cb.transfer(MINER, MINER, AMOUNT, fee=FEE)], miner=other_miner))
    assert balance(cb, MINER) == before - FEE


def test_krum_pays_only_the_update_it_selects_and_never_the_outlier() -> None:
    """Four honest deltas and one far outlier under Krum (f = 1): one honest delta is applied."""
    cb = ChainBuilder(krum_task())
    cb.extend(1)
    size = cb.task.param_count
    honest = [cb.update(kp, seed=i) for i, kp in enumerate(HONEST)]
    outlier = cb.update(OUTLIER, np.full(size, OUTLIER_VALUE, dtype=np.float32))
    params_before = cb.state.params
    cb.add(cb.template([*honest[:2], outlier, *honest[2:]]))

    assert balance(cb, OUTLIER) == 0
    paid = [kp for kp in HONEST if balance(cb, kp) == cb.task.contributor_reward]
    assert len(paid) == 1  # Krum selects exactly one update
    unpaid = [kp for kp in HONEST if kp not in paid]
    assert all(balance(cb, kp) == 0 for kp in unpaid)
    coinbase = cb.tip.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert [p.address for p in coinbase.payouts] == [addr(MINER), addr(paid[0])]

    chosen = det_vector(HONEST.index(paid[0]), size)
    expected = (params_before - np.float32(cb.task.server_lr) * chosen).astype(np.float32)
    assert cb.state.params.tobytes() == expected.tobytes()
    assert cb.state.last_aggregate.tobytes() == chosen.tobytes()
    assert cb.state.model_version == 1


def test_median_counts_and_pays_every_contributor(cb: ChainBuilder) -> None:
    cb.add(cb.template([cb.update(kp, seed=i) for i, kp in enumerate(HONEST[:3])]))
    assert all(balance(cb, kp) == cb.task.contributor_reward for kp in HONEST[:3])
    assert cb.state.model_version == 1


def test_model_version_moves_only_when_an_aggregate_is_applied(cb: ChainBuilder) -> None:
    params = cb.state.params
    cb.add(cb.template([cb.transfer(MINER, HONEST[0], AMOUNT)]))
    assert cb.state.model_version == 0
    assert cb.state.params.tobytes() == params.tobytes()
    cb.add(cb.template([cb.update(HONEST[0])]))
    assert cb.state.model_version == 1
    assert cb.state.params.tobytes() != params.tobytes()
    cb.extend(2)
    assert cb.state.model_version == 1
    cb.add(cb.template([cb.update(HONEST[1], seed=1), cb.update(HONEST[2], seed=2)]))
    assert cb.state.model_version == 2


def test_the_rule_runs_only_with_the_tasks_byzantine_bound() -> None:
    """Median with f=1 needs 2f+1 = 3 updates: with one or two, a lone attacker could
    steer the block, so the model stays and nobody is paid; with three it moves."""
    cb = ChainBuilder()  # the built-in digits task: median, f=1
    assert cb.task.rule == "median" and cb.task.f == 1
    cb.extend(1)
    before = cb.state
    cb.add(cb.template([cb.update(HONEST[0], seed=0), cb.update(HONEST[1], seed=1)]))
    assert cb.state.model_version == before.model_version
    assert cb.state.params.tobytes() == before.params.tobytes()
    assert balance(cb, HONEST[0]) == 0
    cb.add(cb.template([cb.update(HONEST[i], seed=10 + i) for i in range(3)]))
    assert cb.state.model_version == before.model_version + 1
    assert all(balance(cb, HONEST[i]) == cb.task.contributor_reward for i in range(1, 3))


def test_too_few_updates_for_the_rule_leave_the_model_unchanged() -> None:
    """Krum cannot run on two updates: the model, its version and the last aggregate stay.

    Fees are still paid and nonces still used, but no contributor is rewarded.
    """
    cb = ChainBuilder(krum_task())
    cb.extend(1)
    assert cb.task.pipeline.max_f(2) < 0
    before = cb.state
    updates = [cb.update(HONEST[0], seed=0), cb.update(MINER, seed=1, fee=UPDATE_FEE)]
    cb.add(cb.template(updates, miner=HONEST[3]))
    assert cb.state.params.tobytes() == before.params.tobytes()
    assert cb.state.last_aggregate.tobytes() == before.last_aggregate.tobytes()
    assert cb.state.model_version == before.model_version
    assert balance(cb, HONEST[0]) == 0
    assert balance(cb, HONEST[3]) == cb.task.block_reward + UPDATE_FEE
    assert cb.state.account(addr(HONEST[0])).nonce == 1


def test_applying_the_same_block_twice_gives_the_same_bits(cb: ChainBuilder) -> None:
    block = cb.template([cb.update(kp, seed=i) for i, kp in enumerate(HONEST)])
    first, _ = state_transition(cb.view(), cb.state, block, block.header.time)
    second, _ = state_transition(cb.view(), cb.state, block, block.header.time)
    assert_same_state(first, second)


def test_undo_restores_the_parent_state_bit_for_bit(cb: ChainBuilder) -> None:
    """Transfers, new accounts, fees and an applied aggregate all come back undone."""
    makers: list[Callable[[], list[Tx]]] = [
        lambda: [cb.transfer(MINER, HONEST[0], AMOUNT, fee=FEE)],
        lambda: [cb.update(kp, seed=i, fee=1 if kp == HONEST[0] else 0) for i, kp in enumerate(HONEST[:3])],
        lambda: [],
    ]
    for make in makers:
        parent = cb.state
        block = cb.template(make())
        child, undo = state_transition(cb.view(), parent, block, block.header.time)
        assert child.root != parent.root
        restored = undo_block(child, undo)
        assert_same_state(restored, parent)
        cb.add(block)


def test_undo_of_a_chain_of_blocks_walks_back_to_genesis() -> None:
    cb = ChainBuilder()
    undos = []
    for i in range(4):
        txs = [cb.update(HONEST[i % len(HONEST)], seed=i)] if i % 2 else []
        block = cb.template(txs)
        _, undo = state_transition(cb.view(), cb.state, block, block.header.time)
        undos.append(undo)
        cb.add(block)
    state = cb.state
    for height in range(4, 0, -1):
        state = undo_block(state, undos[height - 1])
        assert_same_state(state, cb.states[height - 1])
