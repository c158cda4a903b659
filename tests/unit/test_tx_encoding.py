"""Canonical encoding: every transaction kind and block has exactly one byte form.

Two properties over generated field values (hypothesis):

* ``decode(encode(x)) == x`` -- nothing is lost on the wire;
* ``encode(decode(b)) == b`` for every ``b`` that decodes -- so any byte
  string other than the one canonical form is rejected, and two nodes can
  never hash different bytes for the same transaction.

The second is checked on canonical bytes and on mutations of them (a byte
changed, inserted or dropped) and on arbitrary bytes: each must either be
rejected with ``BlockRejected`` (never another exception) or re-encode to
itself.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.block import Block, commitment, decode_block
from consensus.caps import MAX_AMOUNT, MAX_COINBASE_EXTRA
from consensus.errors import BlockRejected
from consensus.header import Header
from consensus.merkle import merkle_root
from consensus.tx import (
    ADDRESS_SIZE,
    HASH_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Bond,
    Coinbase,
    Commit,
    GradientUpdate,
    Payout,
    TaskTx,
    Transfer,
    Tx,
    Unbond,
    decode_tx,
    encode_tx,
    txid,
)
from ml.codec import KINDS, EncodedUpdate
from ml.tasks import BUILTIN_TASKS, builtin_task

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
MAX_PAYOUTS_DRAWN = 5
MAX_PAYLOAD_DRAWN = 64  # bytes per update field: framing is what decoding checks
MAX_COMMIT_HASHES_DRAWN = 9

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixed(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


u32 = st.integers(0, U32_MAX)
u64 = st.integers(0, U64_MAX)
amounts = st.integers(0, MAX_AMOUNT)

payouts = st.builds(Payout, fixed(ADDRESS_SIZE), amounts)
coinbases = st.builds(
    Coinbase,
    height=u32,
    payouts=st.lists(payouts, max_size=MAX_PAYOUTS_DRAWN).map(tuple),
    extra=st.binary(max_size=MAX_COINBASE_EXTRA),
)
transfers = st.builds(
    Transfer,
    sender=fixed(PUBLIC_KEY_SIZE),
    nonce=u64,
    to=fixed(ADDRESS_SIZE),
    amount=amounts,
    fee=amounts,
    signature=fixed(SIGNATURE_SIZE),
)
encoded_updates = st.builds(
    EncodedUpdate,
    kind=st.sampled_from(KINDS),
    size=st.integers(0, 10_000),
    data=st.binary(max_size=MAX_PAYLOAD_DRAWN),
    scales=st.binary(max_size=MAX_PAYLOAD_DRAWN),
    indices=st.binary(max_size=MAX_PAYLOAD_DRAWN),
    chunk=st.integers(0, 1 << 16),
)
gradient_updates = st.builds(
    GradientUpdate,
    sender=fixed(PUBLIC_KEY_SIZE),
    task_id=fixed(HASH_SIZE),
    round=u32,
    update=encoded_updates,
    signature=fixed(SIGNATURE_SIZE),
)
bonds = st.builds(
    Bond,
    sender=fixed(PUBLIC_KEY_SIZE), nonce=u64, fee=amounts, task_id=fixed(HASH_SIZE), signature=fixed(SIGNATURE_SIZE),
)
unbonds = st.builds(
    Unbond, sender=fixed(PUBLIC_KEY_SIZE), nonce=u64, fee=amounts, task_id=fixed(HASH_SIZE), signature=fixed(SIGNATURE_SIZE)
)
commits = st.builds(
    Commit,
    sender=fixed(PUBLIC_KEY_SIZE),
    task_id=fixed(HASH_SIZE),
    round=u32,
    base_hash=fixed(HASH_SIZE),
    hashes=st.lists(fixed(HASH_SIZE), min_size=1, max_size=MAX_COMMIT_HASHES_DRAWN).map(tuple),
    signature=fixed(SIGNATURE_SIZE),
)
tasks = st.sampled_from(BUILTIN_TASKS).map(lambda name: TaskTx(builtin_task(name).to_dict()))
any_tx: st.SearchStrategy[Tx] = st.one_of(coinbases, transfers, bonds, unbonds, commits, gradient_updates, tasks)


@st.composite
def blocks(draw: st.DrawFn) -> Block:
    txs = draw(st.lists(any_tx, max_size=4))
    state_root = draw(fixed(HASH_SIZE))
    root = commitment(merkle_root([txid(encode_tx(tx)) for tx in txs]), state_root)
    header = Header(
        version=draw(u32), prev=draw(fixed(HASH_SIZE)), root=root, time=draw(u32), bits=draw(u32), nonce=draw(u32)
    )
    return Block.build(header, state_root, txs)


def decodes_canonically_or_rejects(decode: Any, encode: Any, raw: bytes) -> None:
    try:
        value = decode(raw)
    except BlockRejected:
        return
    assert encode(value) == raw


@EXAMPLES
@given(any_tx)
def test_every_tx_round_trips(tx: Tx) -> None:
    raw = encode_tx(tx)
    decoded = decode_tx(raw)
    assert decoded == tx
    assert type(decoded) is type(tx)
    assert encode_tx(decoded) == raw


@EXAMPLES
@given(blocks())
def test_every_block_round_trips(block: Block) -> None:
    raw = block.encode()
    decoded = decode_block(raw)
    assert decoded == block
    assert decoded.txs == block.txs
    assert decoded.hash == block.hash
    assert decoded.encode() == raw


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    position = draw(st.integers(0, len(raw)))
    action = draw(st.sampled_from(("replace", "insert", "delete")))
    byte = bytes([draw(st.integers(0, 255))])
    if action == "replace" and position < len(raw):
        return raw[:position] + byte + raw[position + 1 :]
    if action == "delete" and position < len(raw):
        return raw[:position] + raw[position + 1 :]
    return raw[:position] + byte + raw[position:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_tx_bytes_are_rejected_or_canonical(data: st.DataObject) -> None:
    raw = encode_tx(data.draw(any_tx))
    decodes_canonically_or_rejects(decode_tx, encode_tx, data.draw(mutated(raw)))


@EXAMPLES
@given(st.data())
def test_mutated_block_bytes_are_rejected_or_canonical(data: st.DataObject) -> None:
    raw = data.draw(blocks()).encode()
    decodes_canonically_or_rejects(decode_block, Block.encode, data.draw(mutated(raw)))


@EXAMPLES
@given(st.binary(max_size=256))
def test_arbitrary_bytes_are_rejected_or_canonical(raw: bytes) -> None:
    decodes_canonically_or_rejects(decode_tx, encode_tx, raw)
    decodes_canonically_or_rejects(decode_block, Block.encode, raw)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), U64_MAX) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@EXAMPLES
@given(st.integers(0, 6), st.lists(msgpack_values, max_size=8))
def test_well_formed_msgpack_of_any_shape_is_rejected_or_canonical(kind: int, fields: list[Any]) -> None:
    """Valid msgpack with a tx kind up front and any fields after it: a code, never a crash."""
    raw = msgpack.packb([kind, *fields], use_bin_type=True)
    decodes_canonically_or_rejects(decode_tx, encode_tx, raw)


def test_non_text_map_keys_are_rejected_not_crashing() -> None:
    """A task map mixing text and bytes keys used to raise TypeError while sorting."""
    for raw in (
        msgpack.packb([3, {"a": 1, b"b": 2}], use_bin_type=True),
        msgpack.packb([3, {b"a": 1}], use_bin_type=True),
    ):
        decodes_canonically_or_rejects(decode_tx, encode_tx, raw)
        try:
            decode_tx(raw)
        except BlockRejected:
            continue
        raise AssertionError("a task map with bytes keys decoded")


def test_equal_transactions_have_equal_ids_and_different_ones_differ() -> None:
    task = TaskTx(builtin_task("digits").to_dict())
    assert txid(encode_tx(task)) == txid(encode_tx(TaskTx(dict(reversed(list(task.task.items()))))))
    coinbase = Coinbase(1, (Payout(bytes(ADDRESS_SIZE), 1),))
    other = Coinbase(1, (Payout(bytes(ADDRESS_SIZE), 2),))
    assert txid(encode_tx(coinbase)) != txid(encode_tx(other))
