"""Consensus fuzzing: bad input is ``BlockRejected`` and nothing else; valid blocks are deterministic.

The pinned examples at the top are regressions the fuzzers below found.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consensus.block import Block, decode_block
from consensus.caps import MAX_AMOUNT
from consensus.errors import BlockRejected
from consensus.genesis import GENESIS_TIME
from consensus.header import U32_MAX, Header
from consensus.state import State, compute_state_root
from consensus.transition import state_transition, undo_block
from consensus.tx import (
    Bond,
    Commit,
    GradientUpdate,
    Payout,
    Transfer,
    Tx,
    decode_tx,
    encode_tx,
    sign_tx,
)
from ml.checks import UpdateCheckError
from ml.codec import EncodedUpdate, encode_update
from node.chainstate import ChainState
from node.verify import verify_chain
from tests.chainbuilder import (
    ChainBuilder,
    addr,
    assert_same_state,
    det_vector,
    key,
    quick_task,
    recommit,
    solo_task,
)
from wallet import KeyPair

_T = TypeVar("_T")
MINER = key(0)
ALICE = key(1)
NOW = GENESIS_TIME + 10**6  # the clock of the node judging the blocks: after every block built here


def _int8_with_chunk(cb: ChainBuilder, chunk: int) -> GradientUpdate:
    """Alice's committed int8 update of the task's size whose one scale covers every value."""
    size = cb.task.param_count
    encoded = EncodedUpdate("int8", size, bytes(size), np.float32(0.0).tobytes(), b"", chunk)
    cb.add(cb.template([cb.commit(ALICE, [encoded])]))
    return cb.update(ALICE)


def test_int8_update_with_a_chunk_beyond_intp_is_rejected_or_accepted_never_crashes() -> None:
    """Found by fuzzing: a chunk of 2**62 or 2**64 - 1 made ``np.repeat`` raise ValueError / OverflowError.

    One chunk larger than the vector is canonical (the encoder writes its
    default 256 for shorter vectors), so such an update is valid and decodes
    to the same vector as with ``chunk = size``.
    """
    twin = ChainBuilder(solo_task())
    twin.join(ALICE)
    expected = twin.add(twin.template([_int8_with_chunk(twin, twin.task.param_count)]))
    for chunk in (2**33, 2**62, 2**64 - 1):
        cb = ChainBuilder(solo_task())
        cb.join(ALICE)
        tx = _int8_with_chunk(cb, chunk)
        assert decode_tx(encode_tx(tx)) == tx
        block = cb.template([tx])
        assert decode_block(block.encode()).txs == block.txs
        assert cb.add(block).params.tobytes() == expected.params.tobytes()


# -- fixtures shared by the fuzzers --------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
KEYS = [key(i) for i in range(5)]  # 0 is the miner; 1..4 send updates
RULES_FUZZED = (
    "mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geomed", "centered_clip",
    "nnm+krum", "bucket+median",
)
MAX_FUZZ_UPDATES = 6
HUGE_INTS = (2**64 - 1, 2**63, 2**63 - 1, 2**32, U32_MAX, -1, -(2**63), 0)


@functools.cache
def sample_chain() -> tuple[ChainBuilder, Block]:
    """A chain whose next block is valid with a transfer, a bond, a commitment and one update
    of each codec kind (committed in the block before)."""
    cb = ChainBuilder(solo_task())
    cb.extend(1)
    cb.join(*KEYS[1:])
    size = cb.task.param_count
    kinds = {KEYS[1]: "f32", KEYS[2]: "f16", KEYS[3]: "int8"}
    commits = [cb.commit(k, [encode_update(det_vector(i, size), kind)]) for i, (k, kind) in enumerate(kinds.items())]
    commits.append(cb.commit(KEYS[4], [encode_update(det_vector(4, size), "topk", k=size // 3)]))
    cb.add(cb.template(commits))
    txs: list[Tx] = [cb.transfer(MINER, ALICE, 1_000, fee=3), cb.bond(key(7), nonce=0)]
    txs += [cb.update(k) for k in KEYS[1:]]
    txs.append(cb.commit(KEYS[1], seeds=(9,)))
    return cb, cb.template(txs)


@functools.cache
def window_chain(rule: str, f: int) -> ChainBuilder:
    """A chain of task ``rule`` / ``f`` (rounds of one block, up to six updates) with four bonded keys."""
    task = quick_task(rule=rule, f=f, max_updates_per_block=MAX_FUZZ_UPDATES)
    cb = ChainBuilder(task)
    cb.extend(1)
    cb.join(*KEYS[1:])
    return cb


def only_rejected(fn: Callable[[], _T]) -> _T | None:
    """``fn()``, or None if it raised BlockRejected; any other exception fails the test."""
    try:
        result = fn()
    except BlockRejected as exc:
        event(f"rejected: {exc.code.value}")
        return None
    event("accepted")
    return result


# -- 1. byte level ------------------------------------------------------------------------

def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every node of a decoded msgpack object (containers included)."""
    paths = [path]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            paths += _leaves(item, (*path, i))
    elif isinstance(obj, dict):
        for k, item in obj.items():
            paths += _leaves(item, (*path, k))
    return paths


def _replace_at(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, list):
        return [_replace_at(item, rest, value) if i == head else item for i, item in enumerate(obj)]
    return {k: _replace_at(item, rest, value) if k == head else item for k, item in obj.items()}


msgpack_leaf = st.one_of(
    st.sampled_from(HUGE_INTS), st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.binary(max_size=40),
    st.none(), st.booleans(), st.floats(), st.just([]), st.just({}), st.just({"kind": "f32"}),
)


@st.composite
def byte_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` flipped, truncated, extended or spliced with a msgpack fragment."""
    how = draw(st.sampled_from(("flip", "truncate", "extend", "splice", "overwrite")))
    at = draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if how == "truncate":
        return raw[:at]
    if how == "extend":
        return raw + draw(st.binary(min_size=1, max_size=16))
    fragment = bytes(msgpack.packb(draw(msgpack_leaf), use_bin_type=True))
    if how == "splice":
        return raw[:at] + fragment + raw[at:]
    return raw[:at] + fragment + raw[at + len(fragment) :]


@st.composite
def leaf_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` decoded, one node replaced by a hostile value, re-encoded."""
    obj = msgpack.unpackb(raw, raw=False)
    path = draw(st.sampled_from(_leaves(obj)))
    return bytes(msgpack.packb(_replace_at(obj, path, draw(msgpack_leaf)), use_bin_type=True))


def _apply_if_decodes(cb: ChainBuilder, raw_block: bytes) -> None:
    block = only_rejected(lambda: decode_block(raw_block))
    if isinstance(block, Block):
        only_rejected(lambda: state_transition(cb.view(), cb.state, block, NOW))


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_block_bytes_are_rejected_or_applied_never_crash(data: st.DataObject) -> None:
    cb, block = sample_chain()
    raw = block.encode()
    _apply_if_decodes(cb, data.draw(st.one_of(byte_mutation(raw), leaf_mutation(raw))))


@FUZZ_SETTINGS
@given(data=st.data(), index=st.integers(0, 7), resign=st.booleans())
def test_mutated_transactions_are_rejected_or_applied_never_crash(
    data: st.DataObject, index: int, resign: bool
) -> None:
    """A mutated tx that still decodes is put back in the block (re-signed, re-committed) and applied."""
    cb, block = sample_chain()
    raw_tx = block.tx_bytes[index]
    mutated = data.draw(st.one_of(byte_mutation(raw_tx), leaf_mutation(raw_tx)))
    tx = only_rejected(lambda: decode_tx(mutated))
    if tx is None:
        return
    assert encode_tx(tx) == mutated  # decoding is canonical: what decodes re-encodes to itself
    if resign and isinstance(tx, Transfer | GradientUpdate | Commit | Bond):
        signer = next((k for k in [*KEYS, key(7)] if k.public == tx.sender), None)
        if signer is not None:
            tx = sign_tx(tx, signer, cb.rules.tag)
    txs = list(block.txs)
    txs[index] = tx
    rebuilt = recommit(block, txs)
    only_rejected(lambda: state_transition(cb.view(), cb.state, rebuilt, NOW))
    _apply_if_decodes(cb, rebuilt.encode())


# -- 2. structure level ---------------------------------------------------------------------

VECTOR_SHAPES = ("honest", "zeros", "huge", "tiny", "denormal", "at_bound", "above_bound", "constant")


def _vector(kind: str, seed: int, size: int, bound: float) -> np.ndarray:
    if kind == "honest":
        return det_vector(seed, size)
    if kind == "zeros":
        return np.zeros(size, dtype=np.float32)
    if kind == "huge":
        return np.full(size, 3e38, dtype=np.float32)
    if kind == "tiny":
        return det_vector(seed, size, scale=1e-30)
    if kind == "denormal":
        return np.full(size, 1e-42, dtype=np.float32)
    one_hot = np.zeros(size, dtype=np.float32)
    if kind == "at_bound":  # l2 norm of a one-hot vector is |x| exactly
        one_hot[seed % size] = np.float32(bound)
        return one_hot
    if kind == "above_bound":
        one_hot[seed % size] = np.nextafter(np.float32(bound), np.float32(np.inf))
        return one_hot
    return np.full(size, np.float32(0.001), dtype=np.float32)


update_spec = st.tuples(
    st.integers(1, 4),  # sender
    st.sampled_from(VECTOR_SHAPES),
    st.integers(0, 3),  # seed
    st.sampled_from(("f32", "f16", "int8", "topk")),
    st.sampled_from(("last", "last", "last", "last", "this", "older", "next")),  # the round it names
    st.sampled_from((True, True, True, False)),  # committed in the block before
    st.sampled_from(("genesis", "genesis", "genesis", "other")),  # task id
)
transfer_spec = st.tuples(
    st.sampled_from((0, 0, 1)),  # sender: the miner holds the rewards
    st.sampled_from((1, 1_000, 1_000, 2**62, 2**63 - 1, 2**63 - 10)),  # amount
    st.sampled_from((0, 1, 9, 2**63 - 1)),  # fee
    st.sampled_from((0, 0, 0, 0, -1, 1, 2)),  # nonce offset: mostly right
)


def _make_update(cb: ChainBuilder, spec: tuple[Any, ...], same: np.ndarray | None) -> tuple[GradientUpdate, bool]:
    """The reveal ``spec`` describes, and whether its sender should commit to it first."""
    sender_i, shape, seed, kind, which, committed, task_id = spec
    sender = KEYS[sender_i]
    vector = same if same is not None else _vector(shape, seed, cb.task.param_count, cb.task.norm_bound)
    try:
        encoded = encode_update(vector, kind, k=cb.task.param_count // 2)
    except UpdateCheckError:  # f16 overflow: keep the value, send it as f32
        encoded = encode_update(vector, "f32")
    reveal_round = cb.round + 1  # the fuzzed block comes after the block of commitments
    round_ = {"last": reveal_round - 1, "this": reveal_round, "older": reveal_round - 2, "next": reveal_round + 1}[which]
    tid = cb.rules.task_id if task_id == "genesis" else b"\x01" * 32
    tx = GradientUpdate(sender.public, tid, max(round_, 0), encoded)
    return _signed(cb, tx, sender), committed


def _signed(cb: ChainBuilder, tx: GradientUpdate, sender: KeyPair) -> GradientUpdate:
    signed = sign_tx(tx, sender, cb.rules.tag)
    assert isinstance(signed, GradientUpdate)
    return signed


def _commit_first(cb: ChainBuilder, updates: list[tuple[GradientUpdate, bool]]) -> ChainBuilder:
    """A fork of ``cb`` one block on, whose block commits each sender to its first committed update."""
    fork = cb.fork(len(cb.blocks) - 1)
    first: dict[bytes, GradientUpdate] = {}
    for tx, committed in updates:
        if committed and tx.task_id == fork.rules.task_id:
            first.setdefault(tx.sender, tx)
    commits = [
        fork.commit(next(k for k in KEYS if k.public == sender), [tx.update]) for sender, tx in first.items()
    ]
    fork.add(fork.template(commits))
    return fork


def _make_transfer(cb: ChainBuilder, spec: tuple[Any, ...], nonces: dict[bytes, int]) -> Transfer:
    """A transfer of the miner (who holds the rewards) or Alice, nonce mostly right."""
    sender_i, amount, fee, nonce_offset = spec
    sender = KEYS[sender_i]
    address = addr(sender)
    nonce = max(0, nonces.get(address, cb.nonce_of(sender)) + nonce_offset)
    nonces[address] = nonce + 1
    return cb.transfer(sender, ALICE, amount, fee=fee, nonce=nonce)


def _check_deterministic(cb: ChainBuilder, block: Block) -> None:
    """Same root on every application and on a copied parent; undo restores the parent bit for bit."""
    parent = cb.state
    after, undo = state_transition(cb.view(), parent, block, NOW)
    again, _ = state_transition(cb.view(), parent, block, NOW)
    copied = State(parent.height, dict(parent.accounts), {
        task_id: dataclasses.replace(task, params=task.params.copy(), last_aggregate=task.last_aggregate.copy())
        for task_id, task in parent.tasks.items()
    })
    on_copy, _ = state_transition(cb.view(), copied, decode_block(block.encode()), NOW)
    assert after.root == again.root == on_copy.root == block.state_root
    assert_same_state(after, on_copy)
    restored = undo_block(after, undo)
    assert_same_state(restored, parent)
    assert compute_state_root(restored) == parent.root


@FUZZ_SETTINGS
@given(
    rule_f=st.sampled_from([(r, f) for r in RULES_FUZZED for f in (0, 1)]),
    updates=st.lists(update_spec, max_size=MAX_FUZZ_UPDATES + 1),
    transfers=st.lists(transfer_spec, max_size=2),
    all_equal=st.booleans(),
    duplicate=st.integers(0, 4).map(lambda i: i == 0),
    updates_first=st.booleans(),
)
def test_fuzzed_blocks_are_rejected_or_deterministic(
    rule_f: tuple[str, int],
    updates: list[tuple[Any, ...]],
    transfers: list[tuple[Any, ...]],
    all_equal: bool,
    duplicate: bool,
    updates_first: bool,
) -> None:
    base = window_chain(*rule_f)
    nonces: dict[bytes, int] = {}
    same = det_vector(99, base.task.param_count) if all_equal else None
    reveals = [_make_update(base, spec, same) for spec in updates]
    cb = only_rejected(lambda: _commit_first(base, reveals))
    if cb is None:  # two senders' first updates alike commit fine; another task's id never commits
        return
    made_updates: list[Tx] = [tx for tx, _ in reveals]
    made_transfers: list[Tx] = [_make_transfer(cb, spec, nonces) for spec in transfers]
    txs = made_updates + made_transfers if updates_first else made_transfers + made_updates
    if duplicate and txs:
        txs.append(txs[0])
    block = only_rejected(lambda: cb.template(txs))
    if isinstance(block, Block):
        _check_deterministic(cb, block)
    else:
        # The coinbase as if all were valid (a sum of fees past MAX_AMOUNT could not be
        # encoded: pay MAX_AMOUNT instead), the parent's state root.
        fees = sum(tx.fee for tx in txs if isinstance(tx, Transfer))
        payouts = None if cb.task.block_reward + fees <= MAX_AMOUNT else [Payout(addr(MINER), MAX_AMOUNT)]
        forged = cb.forge(txs, payouts=payouts)
        assert only_rejected(lambda: state_transition(cb.view(), cb.state, forged, NOW)) is None


# -- 3. chain state --------------------------------------------------------------------------

CHAIN_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
MAIN_BLOCKS = 4
FORK_BLOCKS = 2
NOW_MARGIN_S = 3600  # "now" well past every block time: no block is TIME_TOO_NEW


@functools.cache
def chain_inputs() -> tuple[ChainBuilder, list[Block], list[Block]]:
    """A main chain with bonds, commitments, updates and transfers, and a shorter fork from block 2."""
    cb = ChainBuilder(solo_task())
    cb.extend(1)
    cb.join(*KEYS[1:])
    fork = cb.fork(2)
    for i in range(MAIN_BLOCKS - 1):
        txs: list[Tx] = [cb.transfer(MINER, ALICE, 10 + i, fee=1), cb.commit(KEYS[1 + i % 4], seeds=(i,))]
        if i:
            txs.append(cb.update(KEYS[1 + (i - 1) % 4]))
        cb.add(cb.template(txs))

    def fork_txs(b: ChainBuilder) -> list[Tx]:
        txs: list[Tx] = [b.commit(KEYS[2], seeds=(50 + len(b.blocks),))]
        if len(b.blocks) > 3:
            txs.append(b.update(KEYS[2]))
        return txs

    fork.extend(FORK_BLOCKS, fork_txs, extra=b"fork")
    return cb, cb.blocks[1:], fork.blocks[3:]


@CHAIN_SETTINGS
@given(data=st.data())
def test_chainstate_survives_a_random_mix_of_valid_and_mutated_blocks(data: st.DataObject) -> None:
    cb, main_blocks, fork_blocks = chain_inputs()
    now = main_blocks[-1].header.time + NOW_MARGIN_S
    pool: list[Block | Header] = [*main_blocks, *fork_blocks]
    pool += [b.header for b in data.draw(st.lists(st.sampled_from(main_blocks + fork_blocks), max_size=3))]
    for victim in data.draw(st.lists(st.sampled_from(main_blocks + fork_blocks), max_size=4)):
        mutated = only_rejected(functools.partial(decode_block, data.draw(byte_mutation(victim.encode()))))
        if isinstance(mutated, Block):
            pool.append(mutated)
    order = data.draw(st.permutations(pool))
    with tempfile.TemporaryDirectory() as tmp:
        datadir = pathlib.Path(tmp)
        chain = ChainState.create(datadir, cb.params.name, cb.task)
        try:
            for item in order:
                if isinstance(item, Header):
                    only_rejected(functools.partial(chain.accept_header, item, now))
                else:
                    only_rejected(functools.partial(chain.accept_block, item, now))
            tip, root = chain.tip.hash, chain.state.root
        finally:
            chain.close()
        reopened = ChainState.open(datadir)
        try:
            assert (reopened.tip.hash, reopened.state.root) == (tip, root)
            report = verify_chain(reopened)
            assert report.failed_height is None, report.error
            # The valid chain, fed again in order, always ends on the builder's tip.
            for block in main_blocks:
                only_rejected(functools.partial(reopened.accept_block, block, now))
            assert reopened.tip.hash == cb.tip.hash
            assert reopened.state.root == cb.state.root
        finally:
            reopened.close()
