"""Tasks as contracts: deploy, several tasks at once, bounty payouts, closing (consensus/contracts.py).

Each rule is shown with a block that breaks it and the code it is rejected
with; the state before such a block is unchanged (the builder's tip stays).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import pathlib

import numpy as np
import pytest

import consensus.contracts
from consensus.caps import (
    DEPLOY_BURN,
    MAX_DEPLOYED_ROUND_FLOATS,
    MAX_IDLE_BLOCKS,
    MIN_BOUNTY,
    MIN_DEPLOYED_BOND,
)
from consensus.contracts import deploy_burn
from consensus.errors import Reject
from consensus.state import CLOSED, TRAINING
from consensus.transition import undo_block
from consensus.tx import Coinbase, Deploy, decode_tx, encode_tx, txid
from ml.evalset import encode_evalset, evalset_digest
from ml.tasks import TaskSpec
from tests.chainbuilder import (
    ChainBuilder,
    addr,
    assert_same_state,
    covers,
    det_vector,
    key,
    quick_task,
    rejection,
)

DEPLOYER = key(0)  # the builder's miner: it has the coins
BOUNTY = 10_000_000


def deployed_spec(**changes: object) -> TaskSpec:
    """A small deployable task: digits' shape, one-block rounds, f=0 so one update moves it."""
    base: dict[str, object] = dict(init_seed=2, f=0, block_reward=3_000_000, contributor_reward=1_000_000,
                                   bond_amount=MIN_DEPLOYED_BOND)
    return dataclasses.replace(quick_task("digits", **{**base, **changes}), name="contract")


def eval_rows(spec: TaskSpec, rows: int = 40, width: int | None = None) -> bytes:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(rows, width or spec.input_dim)).astype(np.float32)
    y = rng.integers(0, spec.output_dim, size=rows)
    return encode_evalset(X, y)


@pytest.fixture
def cb() -> ChainBuilder:
    builder = ChainBuilder(quick_task(f=0))
    builder.extend(1)  # the miner (DEPLOYER) earns a block reward
    return builder


def deploy(cb: ChainBuilder, spec: TaskSpec | None = None, bounty: int = BOUNTY) -> bytes:
    """Deploy ``spec`` in a new block; return the task id."""
    tx = cb.deploy(DEPLOYER, spec or deployed_spec(), eval_rows(spec or deployed_spec()), bounty)
    cb.add(cb.template([tx]))
    return txid(encode_tx(tx))


def test_deploy_creates_a_task_locks_the_bounty_and_undoes_bit_for_bit(cb: ChainBuilder) -> None:
    parent = cb.state
    before = parent.account(addr(DEPLOYER)).balance
    task_id = deploy(cb)
    task = cb.state.tasks[task_id]
    assert list(cb.state.tasks)[0] == cb.rules.task_id and len(cb.state.tasks) == 2
    assert task.contract is not None and task.contract.status == TRAINING
    assert task.contract.bounty == BOUNTY and task.contract.deployer == addr(DEPLOYER)
    assert task.contract.eval_digest == evalset_digest(eval_rows(deployed_spec()))
    assert task.model_version == 0 and task.params.shape == (deployed_spec().param_count,)
    # the bounty left the deployer's balance, and the fee's burn (the deployer mined the block, so
    # the rest of its fee came back); the block's own reward came in
    assert cb.state.account(addr(DEPLOYER)).balance == before - BOUNTY - DEPLOY_BURN + cb.task.block_reward
    _, undo = _rerun_last(cb)
    assert_same_state(undo_block(cb.state, undo), parent)
    assert undo_block(cb.state, undo).tasks.keys() == parent.tasks.keys()


def _rerun_last(cb: ChainBuilder):  # type: ignore[no-untyped-def]
    from consensus.transition import state_transition

    parent = cb.fork(len(cb.blocks) - 2)
    return state_transition(parent.view(), parent.state, cb.tip, cb.tip.header.time)


def test_the_deploy_tx_round_trips_canonically(cb: ChainBuilder) -> None:
    tx = cb.deploy(DEPLOYER, deployed_spec(), eval_rows(deployed_spec()), BOUNTY, fee=3)
    assert decode_tx(encode_tx(tx)) == tx
    assert isinstance(decode_tx(encode_tx(tx)), Deploy)


@covers(Reject.BAD_TASK_SPEC)
def test_a_spec_with_an_unknown_field_is_refused(cb: ChainBuilder) -> None:
    bad = {**deployed_spec().to_dict(), "learning_rate": 0.1}
    tip = cb.state
    block = cb.forge([cb.deploy(DEPLOYER, bad, eval_rows(deployed_spec()), BOUNTY)])
    assert rejection(lambda: cb.add(block)) is Reject.BAD_TASK_SPEC
    assert cb.state is tip


def test_a_spec_not_in_canonical_form_or_with_a_gate_is_refused(cb: ChainBuilder) -> None:
    spec = deployed_spec()
    explicit = {**spec.to_dict(), "label_scale": 1.0}  # a default the canonical form leaves out
    gated = dataclasses.replace(spec, gate_examples=10, gate_data_sha256="0" * 64)
    for task in (explicit, gated.to_dict()):
        block = cb.forge([cb.deploy(DEPLOYER, task, eval_rows(spec), BOUNTY)])
        assert rejection(functools.partial(cb.add, block)) is Reject.BAD_TASK_SPEC


@covers(Reject.BAD_EVAL_SET)
def test_an_evaluation_set_of_the_wrong_width_is_refused(cb: ChainBuilder) -> None:
    spec = deployed_spec()
    block = cb.forge([cb.deploy(DEPLOYER, spec, eval_rows(spec, width=spec.input_dim - 1), BOUNTY)])
    assert rejection(lambda: cb.add(block)) is Reject.BAD_EVAL_SET
    labels = encode_evalset(np.zeros((3, spec.input_dim), np.float32), np.array([0, 1, spec.output_dim]))
    block = cb.forge([cb.deploy(DEPLOYER, spec, labels, BOUNTY)])
    assert rejection(lambda: cb.add(block)) is Reject.BAD_EVAL_SET


@covers(Reject.BAD_BOUNTY)
def test_a_deploy_without_a_bounty_is_refused(cb: ChainBuilder) -> None:
    for bounty in (0, MIN_BOUNTY - 1):
        block = cb.forge([cb.deploy(DEPLOYER, deployed_spec(), eval_rows(deployed_spec()), bounty)])
        assert rejection(functools.partial(cb.add, block)) is Reject.BAD_BOUNTY


def test_a_deploy_without_funds_is_refused(cb: ChainBuilder) -> None:
    poor = key(7)
    tx = cb.deploy(poor, deployed_spec(), eval_rows(deployed_spec()), BOUNTY)
    assert rejection(lambda: cb.add(cb.forge([tx]))) is Reject.INSUFFICIENT_FUNDS
    rich = cb.state.account(addr(DEPLOYER)).balance
    tx = cb.deploy(DEPLOYER, deployed_spec(), eval_rows(deployed_spec()), rich + 1)
    assert rejection(lambda: cb.add(cb.forge([tx]))) is Reject.INSUFFICIENT_FUNDS


@covers(Reject.TOO_MANY_TASKS)
def test_open_tasks_are_capped(cb: ChainBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consensus.contracts, "MAX_OPEN_TASKS", 2)
    deploy(cb)
    tx = cb.deploy(DEPLOYER, deployed_spec(init_seed=9), eval_rows(deployed_spec()), BOUNTY)
    assert rejection(lambda: cb.add(cb.forge([tx]))) is Reject.TOO_MANY_TASKS


def _join_task(cb: ChainBuilder, k, task_id: bytes) -> None:  # type: ignore[no-untyped-def]
    """Fund ``k`` with a deployed task's bond (from the miner's rewards) and bond it."""
    cb.add(cb.template([cb.transfer(DEPLOYER, k, MIN_DEPLOYED_BOND)]))
    cb.add(cb.template([cb.bond(k, task_id=task_id)]))


def _commit_reveal(cb: ChainBuilder, k, task_id: bytes, seed: int = 3, extra=()):  # type: ignore[no-untyped-def]
    vec = det_vector(seed, cb.task.param_count)
    cb.add(cb.template([cb.commit(k, [vec], task_id=task_id)]))
    reveal = cb.update(k, vec, task_id=task_id, round_=cb.round - 1)
    block = cb.template([reveal, *extra])
    cb.add(block)
    return block


def test_two_tasks_train_in_one_block_each_paid_its_own_way(cb: ChainBuilder) -> None:
    task_id = deploy(cb)
    a, b = key(11), key(12)
    cb.add(cb.template([cb.transfer(DEPLOYER, b, MIN_DEPLOYED_BOND)]))
    cb.add(cb.template([cb.bond(a), cb.bond(b, task_id=task_id)]))
    va, vb = det_vector(3, cb.task.param_count), det_vector(4, cb.task.param_count)
    cb.add(cb.template([cb.commit(a, [va]), cb.commit(b, [vb], task_id=task_id)]))
    before = cb.state
    block = cb.template([cb.update(a, va), cb.update(b, vb, task_id=task_id)])
    cb.add(block)
    after = cb.state
    assert after.task.model_version == before.task.model_version + 1  # the genesis task moved
    assert after.tasks[task_id].model_version == 1  # and the deployed one
    np.testing.assert_array_equal(after.tasks[task_id].params, before.tasks[task_id].params - vb)
    # the coinbase pays only the genesis task's new coins: miner reward and its contributor
    coinbase = block.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert [p.address for p in coinbase.payouts] == [addr(DEPLOYER), addr(a)]
    # the deployed task pays its miner and contributor from the bounty
    spec = deployed_spec()
    contract = after.tasks[task_id].contract
    assert contract is not None and contract.bounty == BOUNTY - spec.block_reward - spec.contributor_reward
    assert after.account(addr(b)).balance == before.account(addr(b)).balance + spec.contributor_reward
    miner_gain = after.account(addr(DEPLOYER)).balance - before.account(addr(DEPLOYER)).balance
    assert miner_gain == cb.task.block_reward + spec.block_reward
    # no coins made for the deployed task: balances plus bounty grew by the coinbase alone
    held_before = before.tasks[task_id].contract
    assert held_before is not None
    total_before = sum(acc.balance for acc in before.accounts.values()) + held_before.bounty
    total_after = sum(acc.balance for acc in after.accounts.values()) + contract.bounty
    assert total_after - total_before == sum(p.amount for p in coinbase.payouts)


@covers(Reject.TASK_CLOSED)
def test_a_spent_bounty_closes_the_task_and_refuses_its_updates(cb: ChainBuilder) -> None:
    spec = deployed_spec(block_reward=MIN_BOUNTY - 50)
    task_id = deploy(cb, spec, bounty=MIN_BOUNTY)  # less than one round's payouts
    k = key(11)
    _join_task(cb, k, task_id)
    before = cb.state.account(addr(k)).balance
    _commit_reveal(cb, k, task_id)
    contract = cb.state.tasks[task_id].contract
    assert contract is not None and contract.status == CLOSED and contract.bounty == 0
    assert cb.state.account(addr(k)).balance == before + 50  # what was left went to the contributor
    closed_model = cb.state.tasks[task_id].params.copy()
    # a commitment for a closed task is refused with its own code, and changes nothing
    tip = cb.state
    commit = cb.commit(k, [det_vector(5, cb.task.param_count)], task_id=task_id)
    assert rejection(lambda: cb.add(cb.forge([commit]))) is Reject.TASK_CLOSED
    assert rejection(lambda: cb.add(cb.forge([cb.bond(key(12), task_id=task_id)]))) is Reject.TASK_CLOSED
    assert cb.state is tip
    # the bond still comes back, once, and the final model stays
    cb.add(cb.template([cb.unbond(k, task_id=task_id)]))
    assert addr(k) not in cb.state.tasks[task_id].stakes and addr(k) in cb.state.tasks[task_id].unbonding
    again = cb.forge([cb.unbond(k, task_id=task_id)])
    assert rejection(lambda: cb.add(again)) is Reject.NOT_BONDED
    cb.extend(3)
    assert addr(k) not in cb.state.tasks[task_id].unbonding
    np.testing.assert_array_equal(cb.state.tasks[task_id].params, closed_model)


def test_a_reached_target_closes_the_task_and_returns_the_rest(cb: ChainBuilder) -> None:
    spec = deployed_spec(target_metric="loss", target_value=1e6)  # met by the first step
    task_id = deploy(cb, spec)
    k = key(11)
    _join_task(cb, k, task_id)
    deployer_before = cb.state.account(addr(DEPLOYER)).balance
    _commit_reveal(cb, k, task_id)
    contract = cb.state.tasks[task_id].contract
    assert contract is not None and contract.status == CLOSED and contract.bounty == 0
    refund = BOUNTY - spec.block_reward - spec.contributor_reward
    gained = cb.state.account(addr(DEPLOYER)).balance - deployer_before
    assert gained == 2 * cb.task.block_reward + spec.block_reward + refund  # two blocks mined, a round, the rest


@covers(Reject.TOO_MANY_UPDATES)
def test_a_deployed_task_caps_its_updates_per_block(cb: ChainBuilder) -> None:
    task_id = deploy(cb, deployed_spec(max_updates_per_block=1))
    a, b = key(11), key(12)
    cb.add(cb.template([cb.transfer(DEPLOYER, k, MIN_DEPLOYED_BOND, nonce=cb.nonce_of(DEPLOYER) + i)
                        for i, k in enumerate((a, b))]))
    cb.add(cb.template([cb.bond(a, task_id=task_id), cb.bond(b, task_id=task_id)]))
    va, vb = det_vector(3, cb.task.param_count), det_vector(4, cb.task.param_count)
    cb.add(cb.template([cb.commit(a, [va], task_id=task_id), cb.commit(b, [vb], task_id=task_id)]))
    block = cb.forge([cb.update(a, va, task_id=task_id), cb.update(b, vb, task_id=task_id)])
    assert rejection(lambda: cb.add(block)) is Reject.TOO_MANY_UPDATES


@covers(Reject.UNKNOWN_TASK)
def test_a_bond_for_a_task_no_block_deployed_is_refused(cb: ChainBuilder) -> None:
    assert rejection(lambda: cb.add(cb.forge([cb.bond(key(11), task_id=bytes(range(32)))]))) is Reject.UNKNOWN_TASK


def test_a_branch_without_the_deploy_has_no_such_task(cb: ChainBuilder) -> None:
    fork_at = len(cb.blocks) - 1
    task_id = deploy(cb)
    other = cb.fork(fork_at)
    other.extend(1)
    assert task_id not in other.state.tasks
    k = key(11)
    assert rejection(lambda: other.add(other.forge([other.bond(k, task_id=task_id)]))) is Reject.UNKNOWN_TASK


@pytest.mark.parametrize("name", ["digits", "stock"])
def test_the_shipped_task_files_deploy(name: str, tmp_path: pathlib.Path) -> None:
    """examples/tasks/{digits,stock}.json with their example data are deploys the chain takes."""
    from ml.datasets import synthetic_prices
    from ml.tabular import sklearn_table, table_csv
    from node.taskfile import read_evalset, read_spec

    spec = read_spec(pathlib.Path(__file__).parents[2] / "examples" / "tasks" / f"{name}.json")
    path = tmp_path / "eval.csv"
    if name == "digits":
        path.write_text("\n".join(table_csv(sklearn_table("digits")).split("\n")[:401]) + "\n")  # 400 rows
    else:
        closes = synthetic_prices(11, 300)
        days = [datetime.date(2020, 1, 1) + datetime.timedelta(days=i) for i in range(len(closes))]
        path.write_text("date,close\n" + "".join(f"{d.isoformat()},{c:.6f}\n" for d, c in zip(days, closes, strict=True)))
    spec_, contract = consensus.contracts.check_deploy(
        Deploy(bytes(32), 0, DEPLOY_BURN, MIN_BOUNTY, spec.to_dict(), read_evalset(spec, path)), open_tasks=1
    )
    assert spec_ == spec and contract.evalset is not None and contract.evalset.rows > 100


def test_storage_keeps_a_contract_and_its_rows_once(cb: ChainBuilder) -> None:
    """A task's stored state holds its rows; an undo record leaves them out and gets them back on undo."""
    from node.storage import decode_task_state, decode_undo, encode_task_state, encode_undo

    parent = cb.state
    task_id = deploy(cb)
    k = key(11)
    _join_task(cb, k, task_id)
    before_round = cb.state
    _commit_reveal(cb, k, task_id)
    stored = decode_task_state(encode_task_state(cb.state.tasks[task_id]))
    assert stored.digest == cb.state.tasks[task_id].digest and stored.contract == cb.state.tasks[task_id].contract
    assert stored.contract is not None and stored.contract.evalset is not None
    _, undo = _rerun_last(cb)
    decoded = decode_undo(encode_undo(undo))
    left_out = decoded.tasks_before[task_id].contract
    assert left_out is not None and left_out.evalset is None  # no evaluation rows in an undo record
    back = undo_block(cb.state, decoded)
    assert back.root == cb.states[-2].root
    contract = back.tasks[task_id].contract
    assert contract is not None and contract.evalset is not None and contract.evalset.rows == 40
    assert before_round.root != parent.root


def test_a_task_nobody_trains_closes_after_its_idle_blocks(cb: ChainBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consensus.contracts, "MAX_IDLE_BLOCKS", 3)
    assert MAX_IDLE_BLOCKS > 3  # the chain's own figure is far longer
    task_id = deploy(cb)
    deployer_before = cb.state.account(addr(DEPLOYER)).balance
    cb.extend(2)
    assert cb.state.tasks[task_id].contract.status == TRAINING  # type: ignore[union-attr]
    cb.extend(1)
    contract = cb.state.tasks[task_id].contract
    assert contract is not None and contract.status == CLOSED and contract.bounty == 0
    assert cb.state.account(addr(DEPLOYER)).balance == deployer_before + 3 * cb.task.block_reward + BOUNTY
    closed = cb.state
    cb.extend(1)  # a closed task is not changed by later blocks, nor kept in their undo records
    assert cb.state.tasks[task_id] is closed.tasks[task_id]
    _, undo = _rerun_last(cb)
    assert task_id not in undo.tasks_before and list(undo.tasks_before) == [cb.rules.task_id]
    assert_same_state(undo_block(cb.state, undo), closed)


def test_a_deployed_task_is_size_capped(cb: ChainBuilder) -> None:
    wide = deployed_spec(model="mlp", hidden=(1024,))  # 64*1024 + 1024*10 weights: past the deployed cap
    block = cb.forge([cb.deploy(DEPLOYER, wide, eval_rows(wide), BOUNTY)])
    assert rejection(lambda: cb.add(block)) is Reject.BAD_TASK_SPEC


def test_a_deployed_task_caps_its_rounds_votes(cb: ChainBuilder) -> None:
    """A round's votes (parameters x round blocks) are capped: every node keeps them, and every
    block's undo record holds the round's votes so far (a 64 Ki-parameter task with rounds of 64
    wrote 16 MiB of zero votes per idle block)."""
    dims = (MAX_DEPLOYED_ROUND_FLOATS // 64 - 10) // 10  # the widest 10-class softmax with rounds of 64
    fits = deployed_spec(input_dim=dims, round_blocks=64)
    assert fits.param_count * 64 <= MAX_DEPLOYED_ROUND_FLOATS
    cb.add(cb.template([cb.deploy(DEPLOYER, fits, eval_rows(fits), BOUNTY)]))
    longer = deployed_spec(input_dim=dims, round_blocks=64, init_seed=7)
    wide = deployed_spec(input_dim=dims + 1, round_blocks=64)
    assert wide.param_count * 64 > MAX_DEPLOYED_ROUND_FLOATS
    assert rejection(lambda: cb.add(cb.forge([cb.deploy(DEPLOYER, wide, eval_rows(wide), BOUNTY)]))) \
        is Reject.BAD_TASK_SPEC
    cb.add(cb.template([cb.deploy(DEPLOYER, longer, eval_rows(longer), BOUNTY)]))


@covers(Reject.DEPLOY_FEE_TOO_LOW)
def test_a_deploy_fee_short_of_the_burn_is_deploy_fee_too_low(cb: ChainBuilder) -> None:
    """The burn doubles with each open task; a fee one short of it is refused, and the
    burn (not the rest of the fee) leaves circulation."""
    assert [deploy_burn(k) for k in (0, 1, 2, 3, 15)] == [DEPLOY_BURN, DEPLOY_BURN, 2 * DEPLOY_BURN,
                                                           4 * DEPLOY_BURN, 2**14 * DEPLOY_BURN]
    short = cb.deploy(DEPLOYER, deployed_spec(), eval_rows(deployed_spec()), BOUNTY, fee=DEPLOY_BURN - 1)
    assert rejection(lambda: cb.add(cb.forge([short]))) is Reject.DEPLOY_FEE_TOO_LOW
    deploy(cb)  # one task training past the genesis task: the next burns twice as much
    second = deployed_spec(init_seed=9)
    short = cb.deploy(DEPLOYER, second, eval_rows(second), BOUNTY, fee=2 * DEPLOY_BURN - 1)
    assert rejection(lambda: cb.add(cb.forge([short]))) is Reject.DEPLOY_FEE_TOO_LOW
    # two deploys in one block: the second pays for the first's slot too
    first, then = (deployed_spec(init_seed=s) for s in (10, 11))
    a = cb.deploy(DEPLOYER, first, eval_rows(first), BOUNTY, fee=2 * DEPLOY_BURN)
    b = cb.deploy(DEPLOYER, then, eval_rows(then), BOUNTY, fee=2 * DEPLOY_BURN, nonce=a.nonce + 1)
    assert rejection(lambda: cb.add(cb.forge([a, b]))) is Reject.DEPLOY_FEE_TOO_LOW
    tip = 123
    b = cb.deploy(DEPLOYER, then, eval_rows(then), BOUNTY, fee=4 * DEPLOY_BURN + tip, nonce=a.nonce + 1)
    miner = key(5)
    supply = sum(acc.balance for acc in cb.state.accounts.values())
    cb.add(cb.template([a, b], miner=miner))
    assert cb.state.account(addr(miner)).balance == cb.task.block_reward + tip  # the miner keeps the tip only
    held = sum(t.contract.bounty for t in cb.state.tasks.values() if t.contract is not None)
    held_before = sum(t.contract.bounty for t in cb.states[-2].tasks.values() if t.contract is not None)
    burned = supply + cb.task.block_reward - sum(acc.balance for acc in cb.state.accounts.values()) \
        - (held - held_before)
    assert burned == 2 * DEPLOY_BURN + 4 * DEPLOY_BURN
