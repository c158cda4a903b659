"""The consensus caps (consensus/caps.py): one number each, and every bound fits every cap.

Three kinds of test:

* the size formulas are exact (or tight upper bounds) against real encodings;
* ``validate_block`` refuses, on its encoded size, a block built in this
  process that a peer's decoder would refuse, with the decoder's code;
* a walk of every task bound (ml/tasks.py) and every policy cap
  (node/limits.py, node/mining.py) against the consensus caps, so that no
  valid task can make a block that connects here and is refused elsewhere.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import caps
from consensus.block import Block, decode_block
from consensus.errors import Reject
from consensus.genesis import make_genesis
from consensus.header import U32_MAX
from consensus.params import REGTEST
from consensus.tx import Coinbase, GradientUpdate, Payout, decode_tx, encode_tx
from ml import tasks as task_bounds
from ml.codec import EncodedUpdate
from ml.tasks import BUILTIN_TASKS, TaskSpec, builtin_task
from node import limits, mining
from tests.chainbuilder import ChainBuilder, addr, key, recommit, rejection, solo_task

U64_MAX = 2**64 - 1
LENGTH_EDGES = (0, 1, 15, 16, 255, 256, 65535, 65536)  # where msgpack headers change width


def widest_update(param_count: int) -> GradientUpdate:
    """An f32 update of ``param_count`` values with every integer field at its widest."""
    update = EncodedUpdate("f32", param_count, bytes(4 * param_count))
    return GradientUpdate(bytes(32), b"\xff" * 32, U32_MAX, update, bytes(64))


def widest_coinbase(payouts: int) -> Coinbase:
    paid = tuple(Payout(bytes(21), caps.MAX_AMOUNT) for _ in range(payouts))
    return Coinbase(U32_MAX, paid, bytes(caps.MAX_COINBASE_EXTRA))


# -- the formulas ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.sampled_from(LENGTH_EDGES) | st.integers(0, 70_000), max_size=20))
def test_block_size_is_the_encoded_length(sizes: list[int]) -> None:
    cb_block = ChainBuilder().tip
    block = Block(cb_block.header, cb_block.state_root, tuple(bytes(n) for n in sizes), ())
    assert block.size == caps.block_size(sizes) == len(block.encode())


@pytest.mark.parametrize("param_count", [0, 1, 63, 64, 650, 16_383, 16_384, 100_000])
def test_max_update_tx_size_is_the_widest_encoding(param_count: int) -> None:
    assert caps.max_update_tx_size(param_count) == len(encode_tx(widest_update(param_count)))


@pytest.mark.parametrize("payouts", [1, 15, 16, 5, caps.MAX_PAYOUTS])
def test_max_coinbase_size_is_the_widest_encoding(payouts: int) -> None:
    assert caps.max_coinbase_size(payouts) == len(encode_tx(widest_coinbase(payouts)))


# -- validate_block checks the encoded form --------------------------------------------------


@pytest.fixture
def cb() -> ChainBuilder:
    builder = ChainBuilder(solo_task())
    builder.extend(1)
    return builder


def test_a_coinbase_with_too_long_an_extra_is_refused_in_process(cb: ChainBuilder) -> None:
    """Built here it encodes fine; a peer's decoder refuses it, so validate_block must too."""
    block = cb.template(extra=bytes(caps.MAX_COINBASE_EXTRA + 1))
    assert rejection(lambda: decode_block(block.encode())) is Reject.BAD_ENCODING
    assert rejection(lambda: cb.add(block)) is Reject.BAD_ENCODING
    cb.add(cb.template(extra=bytes(caps.MAX_COINBASE_EXTRA)))


def test_more_payouts_than_the_cap_are_refused_in_process(cb: ChainBuilder) -> None:
    payouts = [Payout(addr(key(0)), 1)] * (caps.MAX_PAYOUTS + 1)
    block = cb.forge([], payouts=payouts)
    assert rejection(lambda: decode_block(block.encode())) is Reject.BAD_ENCODING
    assert rejection(lambda: cb.add(block)) is Reject.BAD_ENCODING


def test_a_transaction_over_the_cap_is_oversize_in_process(cb: ChainBuilder) -> None:
    honest = cb.update(key(1))
    huge = dataclasses.replace(honest, update=EncodedUpdate("f32", 2**21, bytes(caps.MAX_TX_BYTES)))
    block = recommit(cb.template(), [cb.template().txs[0], huge])
    assert len(block.tx_bytes[1]) > caps.MAX_TX_BYTES
    assert rejection(lambda: cb.add(block)) is Reject.OVERSIZE


def test_a_block_over_the_cap_is_oversize_in_process(cb: ChainBuilder) -> None:
    coinbase = cb.template().txs[0]
    near_cap = caps.MAX_TX_BYTES - 4096
    fillers = [
        dataclasses.replace(cb.update(key(i)), update=EncodedUpdate("f32", near_cap // 4, bytes(near_cap)))
        for i in range(1, 5)
    ]
    block = recommit(cb.template(), [coinbase, *fillers])
    assert all(len(raw) <= caps.MAX_TX_BYTES for raw in block.tx_bytes)
    assert block.size > caps.MAX_BLOCK_BYTES
    assert rejection(lambda: cb.add(block)) is Reject.OVERSIZE


def test_more_transactions_than_the_cap_is_too_many_txs_in_process(cb: ChainBuilder) -> None:
    template = cb.template()
    block = Block(template.header, template.state_root, (b"",) * (caps.MAX_BLOCK_TXS + 1), ())
    assert rejection(lambda: cb.add(block)) is Reject.TOO_MANY_TXS


# -- every task bound against every cap -------------------------------------------------------


def test_a_full_block_of_the_most_updates_pays_everyone_and_decodes() -> None:
    """The task bound max_updates_per_block, every update counted: its coinbase must decode.

    This is the bug the cap file was made for: MAX_PAYOUTS was 1024 while a
    task could allow 1024 updates, whose coinbase has 1025 payouts.
    """
    assert caps.MAX_PAYOUTS >= task_bounds.MAX_UPDATES_PER_BLOCK + 1
    full = widest_coinbase(task_bounds.MAX_UPDATES_PER_BLOCK + 1)
    assert decode_tx(encode_tx(full)) == full
    over = widest_coinbase(caps.MAX_PAYOUTS + 1)
    assert rejection(lambda: decode_tx(encode_tx(over))) is Reject.BAD_ENCODING


def test_block_counts_fit_every_task() -> None:
    assert caps.MAX_BLOCK_TXS >= task_bounds.MAX_UPDATES_PER_BLOCK + 1  # coinbase + every update
    assert caps.MAX_ARRAY_LEN >= max(caps.MAX_BLOCK_TXS, caps.MAX_PAYOUTS)  # decoded before they are counted


def test_the_largest_task_genesis_fits_the_decoder() -> None:
    """A task with every text field at its longest decodes as a genesis transaction."""
    longest = "x" * task_bounds.MAX_NAME_LEN
    task = dataclasses.replace(builtin_task("digits"), name=longest)
    assert task_bounds.MAX_NAME_LEN <= caps.MAX_STR_BYTES and task_bounds.SHA256_HEX_LEN <= caps.MAX_STR_BYTES
    genesis, _ = make_genesis(REGTEST, task)
    assert len(TaskSpec.__dataclass_fields__) <= caps.MAX_MAP_LEN
    assert decode_block(genesis.encode()).txs[0] == genesis.txs[0]
    assert len(json.dumps(task.to_dict())) < caps.MAX_TX_BYTES


def test_the_largest_model_a_task_may_declare_fills_one_transaction() -> None:
    """check_task_fits admits models up to one f32 update per transaction, and no further."""
    estimate = (caps.MAX_TX_BYTES - caps.max_update_tx_size(0)) // 4
    largest = next(n for n in range(estimate, 0, -1) if caps.max_update_tx_size(n) <= caps.MAX_TX_BYTES)
    assert estimate - largest < 4  # the framing of a large update is a few bytes wider, no more
    assert caps.max_update_tx_size(largest + 1) > caps.MAX_TX_BYTES
    assert largest <= caps.MAX_UPDATE_PARAMS and 4 * largest <= caps.MAX_UPDATE_BYTES


def test_tasks_whose_full_blocks_break_a_cap_are_refused() -> None:
    digits = builtin_task("digits")
    wide = dataclasses.replace(digits, model="mlp", hidden=(4096, 4096))  # ~17M parameters
    with pytest.raises(ValueError, match="parameters"):
        caps.check_task_fits(wide)
    with pytest.raises(ValueError, match="parameters"):
        make_genesis(REGTEST, wide)
    # ~1.4M parameters (5.6 MB an update): four fit a block, five do not.
    big = dataclasses.replace(digits, model="mlp", hidden=(1024, 1300), max_updates_per_block=5)
    caps.check_task_fits(dataclasses.replace(big, max_updates_per_block=4))
    with pytest.raises(ValueError, match="max_updates_per_block"):
        caps.check_task_fits(big)
    many = dataclasses.replace(digits, max_updates_per_block=task_bounds.MAX_UPDATES_PER_BLOCK, round_blocks=1)
    caps.check_task_fits(many)  # small updates: 1024 of them fit
    with pytest.raises(ValueError, match="round_blocks"):  # a round's last block would pay 2048
        dataclasses.replace(many, round_blocks=2)


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_tasks_fit_and_a_miner_fills_their_blocks(name: str) -> None:
    task = builtin_task(name)
    caps.check_task_fits(task)
    full = caps.max_full_block_size(task)
    coinbase = caps.max_coinbase_size(task.round_blocks * task.max_updates_per_block + 1)
    assert full - coinbase <= mining.MAX_TEMPLATE_BYTES  # the template's policy room holds every update


def test_policy_caps_leave_room_for_the_largest_valid_objects() -> None:
    """node/limits.py and the miner's template are policy; none may refuse what consensus allows."""
    framing = 64
    assert limits.MAX_BLOCKS_REPLY_BYTES >= caps.MAX_BLOCK_BYTES + framing  # a Blocks reply carries one full block
    assert limits.MAX_TXS_REPLY_BYTES >= caps.MAX_TX_BYTES + framing  # a Txs reply carries one full tx
    assert limits.MAX_API_BODY_BYTES >= 2 * caps.MAX_TX_BYTES + framing  # POST /api/tx is hex in JSON
    assert limits.MEMPOOL_MAX_BYTES >= caps.MAX_TX_BYTES
    block_room = caps.MAX_BLOCK_BYTES - caps.block_size([caps.max_coinbase_size(caps.MAX_PAYOUTS)])
    assert mining.MAX_TEMPLATE_BYTES <= block_room  # a full template plus the widest coinbase is a valid block
    assert mining.MAX_TEMPLATE_TXS + 1 <= caps.MAX_BLOCK_TXS
    assert limits.MAX_REQUEST_BODY_BYTES >= max(limits.MAX_BLOCKS_REPLY_BYTES, limits.MAX_API_BODY_BYTES)


def test_a_real_update_of_the_task_fits_its_bound() -> None:
    """The builder's honest f32 update is within the bound check_task_fits relies on."""
    cb = ChainBuilder()
    raw = encode_tx(cb.update(key(1), np.ones(cb.task.param_count, dtype=np.float32)))
    assert len(raw) <= caps.max_update_tx_size(cb.task.param_count)
