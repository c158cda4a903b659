"""Body and transaction rules: one block per rule, breaking only that rule.

How each block is made so that only the intended rule fails:

* body rules (coinbase, duplicates, roots): take a valid block from the
  builder and ``recommit`` it with the one change, so the header's commitment
  and the proof of work are right;
* transaction rules: build the valid block first, then swap the one
  transaction for its broken twin (same sender, nonce and fee) and recommit,
  so the coinbase and state root are those the valid block would have; where
  no valid twin exists (a replayed or skipped nonce) ``ChainBuilder.forge``
  writes the coinbase by hand;
* update rules: the update is committed first (its digest is what a block
  checks before its contents), then the reveal block is built valid and the
  reveal swapped for its broken twin;
* encoding rules: bytes fed to ``decode_block`` / ``decode_tx``.

Each test asserts on ``exc.code``. ``test_every_reject_code_is_tested`` fails
when a ``Reject`` member has no test here (or in test_header_rules) and no
reason in ``NOT_TESTED``.
"""

from __future__ import annotations

import dataclasses
import importlib
import struct

import msgpack
import numpy as np
import pytest

from consensus import header as header_codec
from consensus.block import Block, decode_block
from consensus.caps import MAX_AMOUNT, MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_TX_BYTES
from consensus.encoding import pack
from consensus.errors import BlockRejected, Reject
from consensus.params import TESTNET
from consensus.state import State
from consensus.transition import apply_body, state_transition
from consensus.tx import (
    Coinbase,
    GradientUpdate,
    Payout,
    SignedTx,
    TaskTx,
    Tx,
    chain_tag,
    decode_tx,
    sign_tx,
    signing_digest,
)
from ml.codec import EncodedUpdate, encode_update
from tests.chainbuilder import (
    COVERED,
    ChainBuilder,
    addr,
    covers,
    det_vector,
    key,
    quick_task,
    recommit,
    rejection,
    solo_task,
)
from wallet import KeyPair, sign

MINER = key(0)
ALICE = key(1)
BOB = key(2)
CAROL = key(3)
FEE = 7
AMOUNT = 1_000

# Codes no block in this suite can provoke, each with the reason. Adding a
# Reject member without a test and without an entry here fails the suite.
NOT_TESTED: dict[Reject, str] = {
    Reject.ALREADY_BONDED: "no longer raised: a Bond from a bonded sender tops up its stake "
    "(consensus/rounds.py apply_bond); the enum is append-only",
}


@pytest.fixture(scope="module")
def base() -> ChainBuilder:
    """genesis - 1 - 2: the miner (key 0) holds block rewards; Alice, Bob and Carol are bonded.

    The task is :func:`solo_task`: rounds of one block, free bonds mature at
    once, f=0, so one revealed update moves the model in the block after its commitment.
    """
    builder = ChainBuilder(solo_task())
    builder.extend(1)
    builder.join(ALICE, BOB, CAROL)
    return builder


@pytest.fixture
def cb(base: ChainBuilder) -> ChainBuilder:
    """A private copy of ``base`` a test may extend."""
    return base.fork(len(base.blocks) - 1)


def swap(block: Block, index: int, tx: Tx) -> Block:
    """``block`` with transaction ``index`` replaced, re-committed and re-mined."""
    txs = list(block.txs)
    txs[index] = tx
    return recommit(block, txs)


def code_of(cb: ChainBuilder, block: Block) -> Reject:
    return rejection(lambda: cb.add(block))


def resign(cb: ChainBuilder, tx: SignedTx, signer: KeyPair, tag: bytes | None = None) -> Tx:
    return sign_tx(dataclasses.replace(tx, signature=b""), signer, cb.rules.tag if tag is None else tag)


def committed(cb: ChainBuilder, sender: KeyPair, *updates: np.ndarray | EncodedUpdate) -> None:
    """Add a block committing ``sender`` to ``updates``: the next block may reveal any of them."""
    cb.add(cb.template([cb.commit(sender, list(updates))]))


def f32_bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


# -- roots -------------------------------------------------------------------------------


@covers(Reject.BAD_TX_ROOT)
def test_body_that_does_not_match_the_header_is_bad_tx_root(cb: ChainBuilder) -> None:
    valid = cb.template([cb.transfer(MINER, ALICE, AMOUNT)])
    other_txs = Block.build(valid.header, valid.state_root, [valid.txs[0]])
    assert code_of(cb, other_txs) is Reject.BAD_TX_ROOT
    other_root = Block.build(valid.header, bytes(32), list(valid.txs))
    assert code_of(cb, other_root) is Reject.BAD_TX_ROOT
    cb.add(valid)


@covers(Reject.BAD_STATE_ROOT)
def test_wrong_state_root_is_bad_state_root(cb: ChainBuilder) -> None:
    committed(cb, ALICE, det_vector(0, cb.task.param_count))
    valid = cb.template([cb.update(ALICE)])
    assert code_of(cb, recommit(valid, valid.txs, state_root=bytes(32))) is Reject.BAD_STATE_ROOT


def test_state_root_differing_by_one_ulp_of_one_parameter_is_rejected(cb: ChainBuilder) -> None:
    """The root commits to the model's bits: one parameter one ULP off is a different state."""
    committed(cb, ALICE, det_vector(0, cb.task.param_count))
    valid = cb.template([cb.update(ALICE)])
    right, _ = state_transition(cb.view(), cb.state, valid, valid.header.time)
    params = right.params.copy()
    params[0] = np.nextafter(params[0], np.float32(np.inf))
    nudged_task = dataclasses.replace(right.task, params=params)
    nudged = State(right.height, right.accounts, {cb.rules.task_id: nudged_task})
    assert nudged.root != right.root
    assert code_of(cb, recommit(valid, valid.txs, state_root=nudged.root)) is Reject.BAD_STATE_ROOT


def test_a_miner_that_still_aggregates_by_the_median_is_bad_state_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """digits' block rule is meamed (issue 18's sybil-flood): a block of three honest updates and
    a sybil's at the norm bound against them, whose state a miner computed with the median of
    four (which follows the sybil), is refused; the same block with the meamed state passes."""
    from ml.aggregation import RuleRecord, median

    cb = ChainBuilder(quick_task())
    assert cb.task.rule == "meamed" and cb.task.f == 1
    sybil = key(9)
    cb.join(ALICE, BOB, CAROL, sybil)
    size = cb.task.param_count
    honest = {kp: (np.full(size, 0.01) + det_vector(i, size, 0.005)).astype(np.float32)
              for i, kp in enumerate((ALICE, BOB, CAROL))}
    poison = (-0.9 * cb.task.norm_bound / np.sqrt(size) * np.ones(size)).astype(np.float32)
    cb.add(cb.template([cb.commit(kp, [v]) for kp, v in {**honest, sybil: poison}.items()]))
    valid = cb.template([cb.update(kp) for kp in (ALICE, BOB, CAROL, sybil)])
    right, _ = state_transition(cb.view(), cb.state, valid, valid.header.time)
    run = RuleRecord.run
    monkeypatch.setattr(
        RuleRecord, "run", lambda self, u, f, p: median(u, f=f) if self.name == "meamed" else run(self, u, f, p)
    )
    miner = addr(cb.miner)
    median_run = apply_body(cb.view(), cb.state, miner, valid.txs[1:])
    monkeypatch.undo()
    by_median = median_run.state
    assert median_run.payouts == apply_body(cb.view(), cb.state, miner, valid.txs[1:]).payouts  # sybil unpaid
    honest_mean = np.mean(np.stack(list(honest.values())).astype(np.float64), axis=0)
    moved = cb.state.params.astype(np.float64) - right.params
    assert np.allclose(moved, np.float32(cb.task.server_lr) * honest_mean, atol=1e-6)  # the sybil left out
    assert not np.array_equal(by_median.params, right.params)
    assert code_of(cb, recommit(valid, valid.txs, state_root=by_median.root)) is Reject.BAD_STATE_ROOT
    cb.add(valid)


# -- coinbase ----------------------------------------------------------------------------


def with_coinbase(block: Block, **changes: object) -> Block:
    coinbase = block.txs[0]
    assert isinstance(coinbase, Coinbase)
    return swap(block, 0, dataclasses.replace(coinbase, **changes))  # type: ignore[arg-type]


@covers(Reject.BAD_COINBASE)
def test_block_without_coinbase_is_bad_coinbase(cb: ChainBuilder) -> None:
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    assert code_of(cb, cb.forge([], coinbase=False)) is Reject.BAD_COINBASE
    assert code_of(cb, cb.forge([transfer], coinbase=False)) is Reject.BAD_COINBASE


def test_coinbase_not_first_is_bad_coinbase(cb: ChainBuilder) -> None:
    valid = cb.template([cb.transfer(MINER, ALICE, AMOUNT)])
    coinbase, transfer = valid.txs
    assert code_of(cb, recommit(valid, [transfer, coinbase])) is Reject.BAD_COINBASE


def test_two_coinbases_are_bad_coinbase(cb: ChainBuilder) -> None:
    valid = cb.template()
    coinbase = valid.txs[0]
    assert isinstance(coinbase, Coinbase)
    second = dataclasses.replace(coinbase, extra=b"second")
    assert code_of(cb, recommit(valid, [coinbase, second])) is Reject.BAD_COINBASE


def test_task_transaction_after_genesis_is_bad_coinbase(cb: ChainBuilder) -> None:
    valid = cb.template()
    assert code_of(cb, recommit(valid, [*valid.txs, TaskTx(cb.task.to_dict())])) is Reject.BAD_COINBASE


def test_coinbase_with_wrong_height_is_bad_coinbase(cb: ChainBuilder) -> None:
    valid = cb.template()
    height = len(cb.blocks)
    assert code_of(cb, with_coinbase(valid, height=height + 1)) is Reject.BAD_COINBASE
    assert code_of(cb, with_coinbase(valid, height=height - 1)) is Reject.BAD_COINBASE
    cb.add(valid)


def test_coinbase_paying_the_miner_too_much_or_too_little_is_bad_coinbase(cb: ChainBuilder) -> None:
    valid = cb.template([cb.transfer(MINER, ALICE, AMOUNT, fee=FEE)])
    coinbase = valid.txs[0]
    assert isinstance(coinbase, Coinbase)
    (miner_payout,) = coinbase.payouts
    assert miner_payout.amount == cb.task.block_reward + FEE  # reward plus fees
    for delta in (1, -1, -FEE):
        payouts = (Payout(miner_payout.address, miner_payout.amount + delta),)
        assert code_of(cb, with_coinbase(valid, payouts=payouts)) is Reject.BAD_COINBASE
    assert code_of(cb, with_coinbase(valid, payouts=())) is Reject.BAD_COINBASE


def test_coinbase_missing_or_adding_a_contributor_is_bad_coinbase(cb: ChainBuilder) -> None:
    size = cb.task.param_count
    cb.add(cb.template([cb.commit(k, [det_vector(i, size)]) for i, k in enumerate((ALICE, BOB, CAROL))]))
    valid = cb.template([cb.update(ALICE), cb.update(BOB), cb.update(CAROL)])
    coinbase = valid.txs[0]
    assert isinstance(coinbase, Coinbase)
    assert len(coinbase.payouts) == 4  # miner + three accepted contributors
    missing = coinbase.payouts[:-1]
    extra = (*coinbase.payouts, Payout(addr(key(9)), cb.task.contributor_reward))
    reordered = (coinbase.payouts[0], coinbase.payouts[2], coinbase.payouts[1], coinbase.payouts[3])
    for payouts in (missing, extra, reordered):
        assert code_of(cb, with_coinbase(valid, payouts=payouts)) is Reject.BAD_COINBASE
    cb.add(valid)


# -- limits ------------------------------------------------------------------------------


@covers(Reject.DUPLICATE_TX)
def test_same_transaction_twice_is_duplicate_tx(cb: ChainBuilder) -> None:
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    valid = cb.template([transfer])
    assert code_of(cb, recommit(valid, [*valid.txs, transfer])) is Reject.DUPLICATE_TX


@covers(Reject.TOO_MANY_UPDATES)
def test_one_update_above_the_task_limit_is_too_many_updates() -> None:
    """Five valid updates: the block passes a context allowing five and fails the task's four."""
    limit = solo_task().max_updates_per_block
    relaxed = ChainBuilder(dataclasses.replace(solo_task(), max_updates_per_block=limit + 1))
    relaxed.extend(1)
    senders = [key(10 + i) for i in range(limit + 1)]
    relaxed.join(*senders)
    relaxed.add(relaxed.template([relaxed.commit(k, seeds=(i,)) for i, k in enumerate(senders)]))
    block = relaxed.template([relaxed.update(k) for k in senders])
    strict_task = dataclasses.replace(relaxed.task, max_updates_per_block=limit)
    strict = dataclasses.replace(relaxed.view(), rules=dataclasses.replace(relaxed.rules, task=strict_task))
    code = rejection(lambda: state_transition(strict, relaxed.state, block, block.header.time))
    assert code is Reject.TOO_MANY_UPDATES
    relaxed.add(block)


@covers(Reject.TOO_MANY_TXS)
def test_more_transactions_than_the_block_limit_is_too_many_txs() -> None:
    raw = pack([bytes(80), bytes(32), [b""] * (MAX_BLOCK_TXS + 1)])
    assert rejection(lambda: decode_block(raw)) is Reject.TOO_MANY_TXS


# -- signatures --------------------------------------------------------------------------


def flip_bit(data: bytes, bit: int = 0) -> bytes:
    return bytes([data[0] ^ (1 << bit)]) + data[1:]


@covers(Reject.BAD_SIGNATURE)
def test_flipped_signature_bit_is_bad_signature(cb: ChainBuilder) -> None:
    committed(cb, BOB, det_vector(0, cb.task.param_count))
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    update = cb.update(BOB)
    valid = cb.template([transfer, update])
    broken_transfer = dataclasses.replace(transfer, signature=flip_bit(transfer.signature))
    assert code_of(cb, swap(valid, 1, broken_transfer)) is Reject.BAD_SIGNATURE
    broken_update = dataclasses.replace(update, signature=flip_bit(update.signature, 7))
    assert code_of(cb, swap(valid, 2, broken_update)) is Reject.BAD_SIGNATURE
    cb.add(valid)


def test_signature_for_another_chain_is_bad_signature(cb: ChainBuilder) -> None:
    """A transfer signed for TESTNET does not verify on REGTEST: the chain id is signed."""
    assert TESTNET.chain_id != cb.params.chain_id
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    valid = cb.template([transfer])
    testnet_signed = resign(cb, transfer, MINER, chain_tag(TESTNET.chain_id, cb.rules.genesis_hash))
    assert code_of(cb, swap(valid, 1, testnet_signed)) is Reject.BAD_SIGNATURE


def test_signature_for_another_chain_of_the_same_network_is_bad_signature(cb: ChainBuilder) -> None:
    """Same network, another genesis (another --f, another task): the genesis hash is signed too.

    Before, a transfer signed on one digits chain replayed on a stock chain of
    the same network, and across --rule/--f variants.
    """
    other = ChainBuilder(dataclasses.replace(cb.task, f=1))
    assert other.rules.chain_id == cb.rules.chain_id and other.rules.genesis_hash != cb.rules.genesis_hash
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    valid = cb.template([transfer])
    replayed = resign(cb, transfer, MINER, other.rules.tag)
    assert code_of(cb, swap(valid, 1, replayed)) is Reject.BAD_SIGNATURE


def test_signature_by_another_key_is_bad_signature(cb: ChainBuilder) -> None:
    transfer = cb.transfer(MINER, ALICE, AMOUNT)
    valid = cb.template([transfer])
    forged = dataclasses.replace(transfer, signature=sign(ALICE, signing_digest(transfer, cb.rules.tag)))
    assert code_of(cb, swap(valid, 1, forged)) is Reject.BAD_SIGNATURE


# -- nonces and funds --------------------------------------------------------------------


@covers(Reject.BAD_NONCE)
def test_replayed_transaction_in_a_later_block_is_bad_nonce(cb: ChainBuilder) -> None:
    transfer = cb.transfer(MINER, ALICE, AMOUNT, fee=FEE)
    cb.add(cb.template([transfer]))
    assert code_of(cb, cb.forge([transfer])) is Reject.BAD_NONCE


def test_skipped_nonce_is_bad_nonce(cb: ChainBuilder) -> None:
    skipped = cb.transfer(MINER, ALICE, AMOUNT, nonce=cb.nonce_of(MINER) + 1)
    assert code_of(cb, cb.forge([skipped])) is Reject.BAD_NONCE
    in_order = [cb.transfer(MINER, ALICE, AMOUNT), skipped]
    cb.add(cb.template(in_order))  # the same tx is fine once the gap is filled


def test_replayed_bond_is_bad_nonce(cb: ChainBuilder) -> None:
    cb.add(cb.template([cb.transfer(MINER, key(7), AMOUNT)]))
    bond = cb.bond(key(7))
    cb.add(cb.template([bond]))
    cb.add(cb.template([cb.unbond(key(7))]))
    assert code_of(cb, cb.forge([bond])) is Reject.BAD_NONCE  # unbonded: only the nonce stops it


@covers(Reject.INSUFFICIENT_FUNDS)
def test_spending_more_than_the_balance_is_insufficient_funds(cb: ChainBuilder) -> None:
    balance = cb.state.account(addr(MINER)).balance
    assert balance == 2 * cb.task.block_reward  # two blocks mined (the second bonded the others)
    over = cb.transfer(MINER, ALICE, balance - FEE + 1, fee=FEE)
    assert code_of(cb, cb.forge([over])) is Reject.INSUFFICIENT_FUNDS
    broke = cb.transfer(ALICE, BOB, 1)
    assert code_of(cb, cb.forge([broke])) is Reject.INSUFFICIENT_FUNDS
    exact = cb.transfer(MINER, ALICE, balance - FEE, fee=FEE)
    cb.add(cb.template([exact]))
    assert cb.state.account(addr(ALICE)).balance == balance - FEE


def test_bond_above_the_balance_is_insufficient_funds() -> None:
    """The task's bond is locked from the balance: a key without it cannot bond."""
    cb = ChainBuilder(quick_task(bond_amount=AMOUNT))
    cb.extend(1)
    assert code_of(cb, cb.forge([cb.bond(ALICE)])) is Reject.INSUFFICIENT_FUNDS
    cb.add(cb.template([cb.transfer(MINER, ALICE, AMOUNT - 1)]))
    assert code_of(cb, cb.forge([cb.bond(ALICE)])) is Reject.INSUFFICIENT_FUNDS
    cb.add(cb.template([cb.transfer(MINER, ALICE, 1)]))
    cb.add(cb.template([cb.bond(ALICE)]))
    assert cb.state.account(addr(ALICE)).balance == 0
    assert cb.state.task.stakes[addr(ALICE)].amount == AMOUNT


@covers(Reject.BAD_AMOUNT)
def test_balance_above_the_amount_limit_is_bad_amount() -> None:
    """A task whose reward would overflow a balance: the second reward is BAD_AMOUNT."""
    cb = ChainBuilder(dataclasses.replace(ChainBuilder().task, block_reward=MAX_AMOUNT))
    cb.extend(1)
    assert cb.state.account(addr(MINER)).balance == MAX_AMOUNT
    assert code_of(cb, cb.forge([])) is Reject.BAD_AMOUNT


# -- gradient updates --------------------------------------------------------------------


def update_block(cb: ChainBuilder, broken: np.ndarray | EncodedUpdate) -> tuple[Block, GradientUpdate]:
    """Commit Alice to an honest update and Bob to ``broken``; the valid block reveals Alice's,
    and its twin with Bob's committed reveal swapped in fails on the update's contents alone."""
    cb.add(cb.template([cb.commit(ALICE, [det_vector(0, cb.task.param_count)]), cb.commit(BOB, [broken])]))
    valid = cb.template([cb.update(ALICE)])
    return valid, cb.update(BOB)


@covers(Reject.BAD_UPDATE_ENCODING)
def test_update_with_wrong_byte_length_is_bad_update_encoding(cb: ChainBuilder) -> None:
    size = cb.task.param_count
    short = EncodedUpdate("f32", size, bytes(4 * (size - 1)))
    valid, broken = update_block(cb, short)
    assert code_of(cb, swap(valid, 1, broken)) is Reject.BAD_UPDATE_ENCODING


def test_update_with_unsorted_topk_indices_is_bad_update_encoding(cb: ChainBuilder) -> None:
    size = cb.task.param_count
    unsorted_topk = EncodedUpdate("topk", size, f32_bytes(np.ones(2)), indices=struct.pack("<II", 5, 3))
    valid, broken = update_block(cb, unsorted_topk)
    assert code_of(cb, swap(valid, 1, broken)) is Reject.BAD_UPDATE_ENCODING


def test_update_of_unknown_kind_is_rejected_when_decoded(cb: ChainBuilder) -> None:
    unknown = EncodedUpdate("f64", cb.task.param_count, bytes(8 * cb.task.param_count))
    valid, broken = update_block(cb, unknown)
    block = swap(valid, 1, broken)
    assert rejection(lambda: decode_block(block.encode())) is Reject.BAD_UPDATE_ENCODING


@covers(Reject.BAD_UPDATE_SHAPE)
def test_update_of_the_wrong_length_is_bad_update_shape(cb: ChainBuilder) -> None:
    size = cb.task.param_count
    for wrong in (size - 1, size + 1):
        branch = cb.fork(len(cb.blocks) - 1)
        valid, broken = update_block(branch, encode_update(np.zeros(wrong, dtype=np.float32), "f32"))
        assert code_of(branch, swap(valid, 1, broken)) is Reject.BAD_UPDATE_SHAPE


@covers(Reject.UPDATE_NOT_FINITE)
def test_update_with_nan_or_inf_is_not_finite(cb: ChainBuilder) -> None:
    size = cb.task.param_count
    for bad in (np.nan, np.inf, -np.inf):
        values = np.zeros(size, dtype=np.float32)
        values[size // 2] = bad
        branch = cb.fork(len(cb.blocks) - 1)
        valid, broken = update_block(branch, EncodedUpdate("f32", size, f32_bytes(values)))
        assert code_of(branch, swap(valid, 1, broken)) is Reject.UPDATE_NOT_FINITE


def norm_vector(size: int, last: np.float32) -> np.ndarray:
    """(12, last, 0, ...): norm exactly 20 when ``last`` is 16, as 144 + 256 = 400 is exact."""
    values = np.zeros(size, dtype=np.float32)
    values[0] = np.float32(12.0)  # 12-16-20: the norm is exactly the bound in every precision
    values[1] = last
    return values


@covers(Reject.UPDATE_NOT_USEFUL)
def test_update_that_raises_the_validation_loss_is_not_useful() -> None:
    """With the task's per-update gate on, an ascent step swapped in for an honest one fails the gate."""
    from tests.unit.test_gate import descent_update, gated

    gated_cb = ChainBuilder(gated(solo_task()))
    gated_cb.extend(1)
    gated_cb.join(ALICE)
    gated_cb.join(BOB)
    gated_cb.add(gated_cb.template([
        gated_cb.commit(ALICE, [descent_update(gated_cb, 0.5)]), gated_cb.commit(BOB, [descent_update(gated_cb, -2.0)])
    ]))
    valid = gated_cb.template([gated_cb.update(ALICE)])
    useless = gated_cb.update(BOB)
    assert code_of(gated_cb, swap(valid, 1, useless)) is Reject.UPDATE_NOT_USEFUL
    gated_cb.add(valid)


@covers(Reject.UPDATE_NORM)
def test_update_norm_just_above_the_bound_is_rejected_and_at_the_bound_passes(cb: ChainBuilder) -> None:
    assert cb.task.norm_bound == 20.0
    size = cb.task.param_count
    at_bound = norm_vector(size, np.float32(16.0))
    just_above = norm_vector(size, np.nextafter(np.float32(16.0), np.float32(np.inf)))
    valid, above = update_block(cb, just_above)
    assert code_of(cb, swap(valid, 1, above)) is Reject.UPDATE_NORM
    cb.add(cb.template([cb.commit(ALICE, [at_bound])]))
    valid = cb.template([cb.update(ALICE)])
    before = cb.state.params
    cb.add(valid)
    step = np.float32(cb.task.server_lr) * at_bound  # a round of one vote: clip+median of it is itself
    assert np.array_equal(cb.state.params, (before - step).astype(np.float32))


@covers(Reject.BAD_AGGREGATION)
def test_rule_parameter_the_rule_refuses_for_this_block_is_bad_aggregation() -> None:
    """A parameter the task may name but the rule refuses when it runs is a code, not an escaping error.

    (An unknown rule or parameter name cannot get this far: the task itself is
    refused, see test_rule_registry.)
    """
    task = dataclasses.replace(solo_task(), rule="geomed", rule_params=(("iters", 0),))
    cb = ChainBuilder(task)
    cb.join(ALICE)
    committed(cb, ALICE, det_vector(0, cb.task.param_count))
    assert code_of(cb, cb.forge([cb.update(ALICE)])) is Reject.BAD_AGGREGATION
    many = dataclasses.replace(solo_task(), rule="multi_krum", f=0, rule_params=(("m", 4),))
    cb = ChainBuilder(many)
    senders = [key(10 + i) for i in range(4)]
    cb.join(*senders)
    cb.add(cb.template([cb.commit(k, seeds=(i,)) for i, k in enumerate(senders)]))
    three = [cb.update(k) for k in senders[:3]]
    assert code_of(cb, cb.forge(three)) is Reject.BAD_AGGREGATION  # m = 4 of 3 updates
    cb.add(cb.template([*three, cb.update(senders[3])]))  # with four it runs


# -- identities, rounds and commit-reveal ---------------------------------------------------

ROUNDS = 4  # blocks per round in the tests below


@pytest.fixture(scope="module")
def rounds_base() -> ChainBuilder:
    """A chain of rounds of four, bonds of AMOUNT maturing after two blocks; Alice and Bob bonded.

    genesis - 1 .. (Alice, Bob funded, bonded, mature); the next block is the first of a round.
    """
    cb = ChainBuilder(quick_task(round_blocks=ROUNDS, bond_amount=AMOUNT, bond_maturity=2, unbond_delay=3))
    cb.join(ALICE, BOB)
    while (cb.next_height - 1) % ROUNDS:
        cb.extend(1)
    return cb


@pytest.fixture
def rb(rounds_base: ChainBuilder) -> ChainBuilder:
    return rounds_base.fork(len(rounds_base.blocks) - 1)


@covers(Reject.UNKNOWN_TASK)
def test_a_task_id_the_chain_does_not_run_is_unknown_task(rb: ChainBuilder) -> None:
    valid = rb.template([rb.commit(ALICE)])
    assert code_of(rb, swap(valid, 1, rb.commit(ALICE, task_id=b"\x01" * 32))) is Reject.UNKNOWN_TASK
    rb.add(rb.template([rb.transfer(MINER, CAROL, AMOUNT)]))
    assert code_of(rb, rb.forge([rb.bond(CAROL, task_id=rb.rules.task_id[::-1])])) is Reject.UNKNOWN_TASK


@covers(Reject.NOT_BONDED)
def test_commitments_and_updates_need_a_mature_bond(rb: ChainBuilder) -> None:
    """No bond, a bond not yet mature, an unbonded key: NOT_BONDED; the same sender bonded and mature passes."""
    valid = rb.template([rb.commit(ALICE)])
    assert code_of(rb, swap(valid, 1, rb.commit(CAROL))) is Reject.NOT_BONDED  # never bonded
    rb.add(rb.template([rb.transfer(MINER, CAROL, AMOUNT)]))
    rb.add(rb.template([rb.bond(CAROL)]))
    assert code_of(rb, rb.forge([rb.commit(CAROL)])) is Reject.NOT_BONDED  # one block old, matures at two
    assert code_of(rb, rb.forge([rb.unbond(key(8))])) is Reject.NOT_BONDED  # nothing to unbond
    rb.extend(1)
    rb.add(rb.template([rb.commit(CAROL)]))  # two blocks old: mature


def test_an_unbonded_key_stops_counting_at_once_and_gets_its_coins_back_later(rb: ChainBuilder) -> None:
    balance = rb.state.account(addr(ALICE)).balance
    rb.add(rb.template([rb.commit(ALICE)]))
    rb.add(rb.template([rb.unbond(ALICE)]))
    release = rb.state.task.unbonding[addr(ALICE)].release
    assert release == len(rb.blocks) - 1 + rb.task.unbond_delay
    assert addr(ALICE) not in rb.state.task.stakes
    while (rb.next_height - 1) % ROUNDS:
        rb.extend(1)
    # the commitment is on chain, but its sender no longer holds a bond
    assert code_of(rb, rb.forge([rb.update(ALICE)])) is Reject.NOT_BONDED
    while len(rb.blocks) - 1 < release:
        rb.extend(1)
    assert rb.state.account(addr(ALICE)).balance == balance + AMOUNT


def test_a_second_bond_tops_up_the_stake_and_an_unbond_returns_all_of_it(rb: ChainBuilder) -> None:
    """A bonded sender's Bond locks one more bond amount; the stake keeps its height (its maturity
    and bond age), and an Unbond returns the whole stake after the delay."""
    before = rb.state.task.stakes[addr(ALICE)]
    rb.add(rb.template([rb.transfer(MINER, ALICE, AMOUNT)]))
    balance = rb.state.account(addr(ALICE)).balance
    rb.add(rb.template([rb.bond(ALICE)]))
    assert rb.state.task.stakes[addr(ALICE)] == dataclasses.replace(before, amount=before.amount + AMOUNT)
    assert rb.state.account(addr(ALICE)).balance == balance - AMOUNT
    rb.add(rb.template([rb.commit(ALICE)]))  # still mature: a top-up is not a new identity
    rb.add(rb.template([rb.unbond(ALICE)]))
    assert rb.state.task.unbonding[addr(ALICE)].amount == before.amount + AMOUNT


@covers(Reject.BAD_ROUND)
def test_commitments_for_another_round_and_updates_outside_their_reveal_round_are_bad_round(
    rb: ChainBuilder,
) -> None:
    """Commit in round r, reveal in round r + 1 only: earlier or later is BAD_ROUND."""
    r = rb.round
    valid = rb.template([rb.commit(ALICE)])
    assert code_of(rb, swap(valid, 1, rb.commit(ALICE, round_=r + 1))) is Reject.BAD_ROUND
    assert code_of(rb, swap(valid, 1, rb.commit(ALICE, round_=r - 1))) is Reject.BAD_ROUND
    rb.add(valid)
    assert code_of(rb, rb.forge([rb.update(ALICE, round_=r)])) is Reject.BAD_ROUND  # same round: too early
    while rb.round == r:
        rb.extend(1)
    reveal = rb.update(ALICE)
    late = rb.fork(len(rb.blocks) - 1)
    while late.round == r + 1:
        late.extend(1)
    assert code_of(late, late.forge([reveal])) is Reject.BAD_ROUND  # the reveal round is over
    rb.add(rb.template([reveal]))


@covers(Reject.UPDATE_BAD_BASE)
def test_a_commitment_on_another_branch_is_bad_base(rb: ChainBuilder) -> None:
    r"""The commitment names the block its round's model is at; another branch's is rejected.

    ... - s (round start, this chain)
        \ s' (a fork):  a commitment naming s' is UPDATE_BAD_BASE here
    """
    start = len(rb.blocks) - 1
    fork = rb.fork(start - 1)
    fork.add(fork.template(miner=ALICE))
    valid = rb.template([rb.commit(ALICE)])
    on_fork = rb.commit(ALICE, base_hash=fork.blocks[start].hash)
    assert code_of(rb, swap(valid, 1, on_fork)) is Reject.UPDATE_BAD_BASE


@covers(Reject.BAD_COMMIT)
def test_a_commitment_of_repeated_digests_or_more_than_a_round_is_bad_commit(rb: ChainBuilder) -> None:
    valid = rb.template([rb.commit(ALICE, seeds=(1, 2))])
    twice = rb.commit(ALICE, seeds=(1, 1))
    assert code_of(rb, swap(valid, 1, twice)) is Reject.BAD_COMMIT
    too_many = rb.commit(ALICE, seeds=tuple(range(ROUNDS + 1)))
    assert code_of(rb, swap(valid, 1, too_many)) is Reject.BAD_COMMIT
    rb.add(valid)


@covers(Reject.DUPLICATE_COMMIT)
def test_a_second_commitment_in_a_round_is_duplicate_commit(rb: ChainBuilder) -> None:
    first = rb.commit(ALICE, seeds=(1,))
    second = rb.commit(ALICE, seeds=(2,))
    valid = rb.template([first])
    assert code_of(rb, recommit(valid, [*valid.txs, second])) is Reject.DUPLICATE_COMMIT  # same block
    rb.add(valid)
    assert code_of(rb, rb.forge([second])) is Reject.DUPLICATE_COMMIT  # a later block of the round


@covers(Reject.NO_COMMITMENT)
def test_an_update_that_matches_no_unrevealed_digest_is_no_commitment(rb: ChainBuilder) -> None:
    """Uncommitted, committed by someone else (a copy), or already revealed: NO_COMMITMENT."""
    size = rb.task.param_count
    rb.add(rb.template([rb.commit(ALICE, [det_vector(1, size), det_vector(2, size)]), rb.commit(BOB, seeds=(5,))]))
    while (rb.next_height - 1) % ROUNDS:
        rb.extend(1)
    first = rb.update(ALICE, index=0)
    valid = rb.template([first])
    assert code_of(rb, swap(valid, 1, rb.update(ALICE, det_vector(3, size)))) is Reject.NO_COMMITMENT
    copied = rb.update(BOB, det_vector(1, size))  # Alice's update re-signed by Bob: Bob never committed it
    assert code_of(rb, swap(valid, 1, copied)) is Reject.NO_COMMITMENT
    rb.add(valid)
    assert code_of(rb, rb.forge([first])) is Reject.NO_COMMITMENT  # revealed already
    rb.add(rb.template([rb.update(ALICE, index=1)]))


@covers(Reject.DUPLICATE_SENDER)
def test_a_second_update_by_one_sender_in_one_block_is_duplicate_sender(rb: ChainBuilder) -> None:
    """A block counts at most one update per sender: f counts participants, not updates."""
    rb.add(rb.template([rb.commit(ALICE, seeds=(1, 2))]))
    while (rb.next_height - 1) % ROUNDS:
        rb.extend(1)
    valid = rb.template([rb.update(ALICE, index=0)])
    assert code_of(rb, recommit(valid, [*valid.txs, rb.update(ALICE, index=1)])) is Reject.DUPLICATE_SENDER
    rb.add(valid)
    rb.add(rb.template([rb.update(ALICE, index=1)]))  # the next block takes the second


# -- encoding ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded_block(base: ChainBuilder) -> Block:
    cb = base.fork(len(base.blocks) - 1)
    committed(cb, BOB, det_vector(0, cb.task.param_count))
    return cb.template([cb.transfer(MINER, ALICE, AMOUNT, fee=FEE), cb.update(BOB)])


def block_with_tx_bytes(block: Block, index: int, raw: bytes) -> bytes:
    tx_bytes = list(block.tx_bytes)
    tx_bytes[index] = raw
    return pack([header_codec.encode(block.header), block.state_root, tx_bytes])


@covers(Reject.BAD_ENCODING)
def test_non_minimal_integer_is_bad_encoding(encoded_block: Block) -> None:
    coinbase_raw = encoded_block.tx_bytes[0]
    height = encoded_block.txs[0].height  # type: ignore[union-attr]
    canonical_prefix = bytes([0x94, 0x00, height])  # fixarray(4), kind 0, fixint height
    assert coinbase_raw.startswith(canonical_prefix)
    widened = bytes([0x94, 0x00, 0xCD]) + struct.pack(">H", height) + coinbase_raw[3:]  # uint16
    assert rejection(lambda: decode_tx(widened)) is Reject.BAD_ENCODING
    raw = block_with_tx_bytes(encoded_block, 0, widened)
    assert rejection(lambda: decode_block(raw)) is Reject.BAD_ENCODING
    # A non-minimal length prefix in the block itself: bin16 for the 80-byte header.
    good = encoded_block.encode()
    assert good[1:3] == bytes([0xC4, 80])
    assert rejection(lambda: decode_block(good[:1] + bytes([0xC5, 0, 80]) + good[3:])) is Reject.BAD_ENCODING


def test_extra_field_is_bad_encoding(encoded_block: Block) -> None:
    for index in range(3):
        fields = msgpack.unpackb(encoded_block.tx_bytes[index], raw=False)
        with pytest.raises(BlockRejected) as info:
            decode_tx(pack([*fields, 0]))
        assert info.value.code is Reject.BAD_ENCODING
    fields = msgpack.unpackb(encoded_block.encode(), raw=False)
    assert rejection(lambda: decode_block(pack([*fields, b""]))) is Reject.BAD_ENCODING


def test_map_instead_of_array_is_bad_encoding(encoded_block: Block) -> None:
    header, state_root, txs = msgpack.unpackb(encoded_block.encode(), raw=False)
    as_map = pack({"header": header, "state_root": state_root, "txs": txs})
    assert rejection(lambda: decode_block(as_map)) is Reject.BAD_ENCODING
    fields = msgpack.unpackb(encoded_block.tx_bytes[1], raw=False)
    tx_map = pack({str(i): v for i, v in enumerate(fields)})
    assert rejection(lambda: decode_tx(tx_map)) is Reject.BAD_ENCODING


def test_ext_type_is_bad_encoding(encoded_block: Block) -> None:
    fields = msgpack.unpackb(encoded_block.tx_bytes[1], raw=False)
    fields[2] = msgpack.ExtType(1, b"\x00")  # the nonce as an ext value
    raw = msgpack.packb(fields, use_bin_type=True)
    assert rejection(lambda: decode_tx(raw)) is Reject.BAD_ENCODING
    header, state_root, txs = msgpack.unpackb(encoded_block.encode(), raw=False)
    raw_block = msgpack.packb([header, msgpack.ExtType(5, state_root), txs], use_bin_type=True)
    assert rejection(lambda: decode_block(raw_block)) is Reject.BAD_ENCODING


def test_trailing_bytes_are_bad_encoding(encoded_block: Block) -> None:
    assert rejection(lambda: decode_block(encoded_block.encode() + b"\x00")) is Reject.BAD_ENCODING
    assert rejection(lambda: decode_tx(encoded_block.tx_bytes[1] + b"\xc0")) is Reject.BAD_ENCODING
    raw = block_with_tx_bytes(encoded_block, 2, encoded_block.tx_bytes[2] + b"\x00")
    assert rejection(lambda: decode_block(raw)) is Reject.BAD_ENCODING


def test_canonical_block_decodes(encoded_block: Block) -> None:
    decoded = decode_block(encoded_block.encode())
    assert decoded == encoded_block
    assert decoded.hash == encoded_block.hash


@covers(Reject.OVERSIZE)
def test_bodies_over_their_size_limit_are_oversize() -> None:
    """The size is checked before parsing: the bytes need not even be msgpack."""
    assert rejection(lambda: decode_block(bytes(MAX_BLOCK_BYTES + 1))) is Reject.OVERSIZE
    assert rejection(lambda: decode_tx(bytes(MAX_TX_BYTES + 1))) is Reject.OVERSIZE
    assert rejection(lambda: decode_tx(bytes(MAX_TX_BYTES))) is Reject.BAD_ENCODING  # at the limit: parsed


# -- the rule book is covered ------------------------------------------------------------

RULE_TEST_MODULES = ("tests.unit.test_block_rules", "tests.unit.test_header_rules", "tests.unit.test_contracts")


def test_every_reject_code_is_tested() -> None:
    for name in RULE_TEST_MODULES:
        importlib.import_module(name)
    untested = [code for code in Reject if code not in COVERED and code not in NOT_TESTED]
    assert not untested, f"Reject codes with no test and no reason in NOT_TESTED: {untested}"
    stale = [code for code in NOT_TESTED if code in COVERED]
    assert not stale, f"{stale} now have tests: remove them from NOT_TESTED"


def test_rejections_are_only_block_rejected(cb: ChainBuilder) -> None:
    """A block of garbage fails with a code, not with another exception type."""
    with pytest.raises(BlockRejected):
        decode_block(b"\x93\xc4\x50" + bytes(80) + b"\xc4\x20" + bytes(32) + b"\x91\xc4\x01\x00")
