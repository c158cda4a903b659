"""The mempool: only txs valid on the tip get in; it stays bounded, fee-ordered,
nonce-consistent, and follows the chain through new blocks and reorgs.

Each test runs a real ``ChainState`` (SQLite in a temporary directory) fed by
a ``ChainBuilder`` on regtest, so "valid on the tip" means what the node
will mean by it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
import pytest

from consensus.errors import Reject
from consensus.tx import (
    Coinbase,
    GradientUpdate,
    Payout,
    SignedTx,
    Tx,
    decode_tx,
    encode_tx,
    sign_tx,
    txid,
)
from ml.codec import EncodedUpdate
from node.chainstate import ChainState
from node.mempool import Mempool, PolicyReason, PolicyRejected
from tests.chainbuilder import ChainBuilder, det_vector, key, rejection
from wallet import KeyPair, address_bytes

FUNDED = [key(i) for i in range(1, 5)]  # each starts with FUNDING
FUNDING = 1_000_000
FAR_FUTURE = 2**31  # 'now' for accepting blocks: no header is too new
NOW = 1_000.0  # mempool clock in these tests: seconds, arbitrary origin


class World:
    """A builder and a node chain kept on the same tip."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.builder = ChainBuilder()
        self.builder.extend(2)
        self.builder.extend(1, lambda b: [
            b.transfer(b.miner, kp, FUNDING, nonce=i) for i, kp in enumerate(FUNDED)
        ])
        self.chain = ChainState.create(tmp_path, "regtest", self.builder.task)
        self.sync()

    def sync(self) -> None:
        for block in self.builder.blocks[self.chain.height + 1:]:
            self.chain.accept_block(block, FAR_FUTURE)
        assert self.chain.tip.hash == self.builder.tip.hash

    def mine(self, txs: Sequence[Tx] = ()) -> None:
        self.builder.add(self.builder.template(txs))
        self.sync()


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path)


def pay(w: World, sender: KeyPair, nonce: int | None = None, fee: int = 10, amount: int = 1) -> SignedTx:
    return w.builder.transfer(sender, key(99), amount, fee=fee, nonce=nonce)


def add(pool: Mempool, w: World, tx: Tx, now: float = NOW) -> bytes:
    result = pool.add(encode_tx(tx), tx, w.chain, now)
    assert result.added
    return result.txid


def nan_update(w: World, sender: KeyPair) -> GradientUpdate:
    """A signed update of NaNs (the encoder refuses them, so the bytes are made by hand)."""
    b = w.builder
    n = b.task.param_count
    encoded = EncodedUpdate("f32", n, np.full(n, np.nan, dtype="<f4").tobytes())
    tx = GradientUpdate(sender.public, 0, 0, len(b.blocks) - 1, b.tip.hash, encoded)
    signed = sign_tx(tx, sender, b.params.chain_id)
    assert isinstance(signed, GradientUpdate)
    return signed


def tid(tx: Tx) -> bytes:
    return txid(encode_tx(tx))


# -- admission -------------------------------------------------------------------------------------
def test_a_valid_transfer_is_pooled(world: World) -> None:
    pool = Mempool()
    tx = pay(world, FUNDED[0])
    t = add(pool, world, tx)
    assert t in pool and len(pool) == 1
    assert pool.bytes == len(encode_tx(tx))
    entry = pool.get(t)
    assert entry is not None and entry.tx == tx and entry.added_at == NOW
    again = pool.add(encode_tx(tx), tx, world.chain, NOW + 1)
    assert not again.added and len(pool) == 1


def test_a_sender_may_chain_consecutive_nonces(world: World) -> None:
    pool = Mempool()
    sender = FUNDED[0]
    for n in range(3):
        add(pool, world, pay(world, sender, nonce=n))
    assert pool.next_nonce(address_bytes(sender.public), world.chain) == 3
    assert rejection(lambda: add(pool, world, pay(world, sender, nonce=5))) is Reject.BAD_NONCE
    assert rejection(lambda: add(pool, world, pay(world, sender, nonce=1, fee=99))) is Reject.BAD_NONCE


def test_funds_must_cover_every_pooled_spend(world: World) -> None:
    pool = Mempool()
    sender = FUNDED[0]
    add(pool, world, pay(world, sender, nonce=0, amount=FUNDING // 2, fee=0))
    add(pool, world, pay(world, sender, nonce=1, amount=FUNDING // 2 - 5, fee=5))
    over = pay(world, sender, nonce=2, amount=1, fee=0)
    assert rejection(lambda: add(pool, world, over)) is Reject.INSUFFICIENT_FUNDS


def test_a_forged_signature_is_refused(world: World) -> None:
    pool = Mempool()
    good = pay(world, FUNDED[0])
    forged = dataclasses.replace(good, signature=pay(world, FUNDED[1]).signature)
    assert rejection(lambda: add(pool, world, forged)) is Reject.BAD_SIGNATURE
    assert len(pool) == 0


def test_a_coinbase_is_not_a_mempool_tx(world: World) -> None:
    cb = Coinbase(height=9, payouts=(Payout(address_bytes(key(1).public), 5),))
    assert rejection(lambda: Mempool().add(encode_tx(cb), cb, world.chain, NOW)) is Reject.BAD_COINBASE


def test_a_valid_update_is_pooled(world: World) -> None:
    pool = Mempool()
    add(pool, world, world.builder.update(FUNDED[0], fee=3))
    assert len(pool) == 1


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda w: w.builder.update(FUNDED[0], base_height=0), Reject.UPDATE_STALE),
        (
            lambda w: w.builder.update(FUNDED[0], det_vector(1, w.builder.task.param_count, scale=100.0)),
            Reject.UPDATE_NORM,
        ),
        (lambda w: nan_update(w, FUNDED[0]), Reject.UPDATE_NOT_FINITE),
        (
            lambda w: w.builder.update(FUNDED[0], det_vector(1, w.builder.task.param_count + 1)),
            Reject.BAD_UPDATE_SHAPE,
        ),
    ],
    ids=["stale", "norm", "not-finite", "shape"],
)
def test_consensus_update_checks_run_on_the_tip(world: World, make: object, code: Reject) -> None:
    world.builder.extend(world.builder.task.staleness_window)  # so base 0 is out of the window
    world.sync()
    tx = make(world)  # type: ignore[operator]
    assert rejection(lambda: Mempool().add(encode_tx(tx), tx, world.chain, NOW)) is code


def test_an_update_on_another_branch_has_a_bad_base(world: World, tmp_path: pathlib.Path) -> None:
    other = world.builder.fork(1)
    other.extend(2, extra=b"other")  # same heights, other hashes
    tx = other.update(FUNDED[0], base_height=2, nonce=0)
    assert rejection(lambda: Mempool().add(encode_tx(tx), tx, world.chain, NOW)) is Reject.UPDATE_BAD_BASE


# -- bounds and eviction ---------------------------------------------------------------------------
def test_full_pool_evicts_the_lowest_fee_rate(world: World) -> None:
    pool = Mempool(max_txs=3)
    cheap = add(pool, world, pay(world, FUNDED[0], fee=1))
    add(pool, world, pay(world, FUNDED[1], fee=50))
    add(pool, world, pay(world, FUNDED[2], fee=60))
    result = pool.add(encode_tx(t := pay(world, FUNDED[3], fee=40)), t, world.chain, NOW)
    assert result.added and result.evicted == (cheap,)
    assert cheap not in pool and len(pool) == 3
    low = pay(world, FUNDED[0], fee=2)
    with pytest.raises(PolicyRejected) as info:
        pool.add(encode_tx(low), low, world.chain, NOW)
    assert info.value.reason is PolicyReason.POOL_FULL
    assert len(pool) == 3


def test_eviction_never_leaves_a_nonce_gap(world: World) -> None:
    """A sender's high-fee tx 0 is kept; its low-fee successor goes first."""
    pool = Mempool(max_txs=3)
    a0 = add(pool, world, pay(world, FUNDED[0], nonce=0, fee=100))
    a1 = add(pool, world, pay(world, FUNDED[0], nonce=1, fee=1))
    b0 = add(pool, world, pay(world, FUNDED[1], fee=5))
    result = pool.add(encode_tx(t := pay(world, FUNDED[2], fee=20)), t, world.chain, NOW)
    assert result.evicted == (a1,)
    assert a0 in pool and b0 in pool


def test_a_newcomer_does_not_evict_its_own_ancestors(world: World) -> None:
    pool = Mempool(max_txs=2)
    add(pool, world, pay(world, FUNDED[0], nonce=0, fee=1))
    add(pool, world, pay(world, FUNDED[1], nonce=0, fee=30))
    child = pay(world, FUNDED[0], nonce=1, fee=20)
    with pytest.raises(PolicyRejected) as info:  # it could only evict FUNDED[1]'s better tx
        pool.add(encode_tx(child), child, world.chain, NOW)
    assert info.value.reason is PolicyReason.POOL_FULL


def test_the_pool_is_bounded_in_bytes(world: World) -> None:
    size = len(encode_tx(pay(world, FUNDED[0])))
    pool = Mempool(max_bytes=2 * size)
    add(pool, world, pay(world, FUNDED[0], fee=1))
    add(pool, world, pay(world, FUNDED[1], fee=2))
    add(pool, world, pay(world, FUNDED[2], fee=3))
    assert len(pool) == 2 and pool.bytes <= 2 * size
    update = world.builder.update(FUNDED[3], fee=10**6)
    with pytest.raises(PolicyRejected) as info:
        pool.add(encode_tx(update), update, world.chain, NOW)
    assert info.value.reason is PolicyReason.TOO_LARGE


def test_per_sender_limit(world: World) -> None:
    pool = Mempool(max_per_sender=2)
    add(pool, world, pay(world, FUNDED[0], nonce=0))
    add(pool, world, pay(world, FUNDED[0], nonce=1))
    with pytest.raises(PolicyRejected) as info:
        pool.add(encode_tx(t := pay(world, FUNDED[0], nonce=2)), t, world.chain, NOW)
    assert info.value.reason is PolicyReason.SENDER_LIMIT
    add(pool, world, pay(world, FUNDED[1], nonce=0))


# -- selection -------------------------------------------------------------------------------------
def test_select_orders_by_fee_rate_but_keeps_nonce_order(world: World) -> None:
    pool = Mempool()
    a0 = pay(world, FUNDED[0], nonce=0, fee=1)
    a1 = pay(world, FUNDED[0], nonce=1, fee=500)
    b0 = pay(world, FUNDED[1], nonce=0, fee=100)
    for tx in (a0, a1, b0):
        add(pool, world, tx)
    chosen = [tx for _, tx in pool.select(max_updates=4, max_txs=10, max_bytes=10**6)]
    assert chosen == [b0, a0, a1]


def test_select_respects_update_count_tx_count_and_bytes(world: World) -> None:
    pool = Mempool()
    max_updates = world.builder.task.max_updates_per_block
    for i, kp in enumerate(FUNDED):
        add(pool, world, world.builder.update(kp, fee=100 + i, seed=i))
        add(pool, world, pay(world, kp, nonce=1, fee=1))
    picked = pool.select(max_updates=2, max_txs=100, max_bytes=10**8)
    updates = [tx for _, tx in picked if not hasattr(tx, "to")]
    assert len(updates) == 2 <= max_updates
    # The two best-paying updates, each followed by its sender's transfer; the
    # other senders' transfers wait behind their updates.
    assert len(picked) == 4
    assert len(pool.select(max_updates=4, max_txs=3, max_bytes=10**8)) == 3
    one_update = len(encode_tx(world.builder.update(FUNDED[0])))
    assert len(pool.select(max_updates=4, max_txs=100, max_bytes=one_update)) == 1


def test_selection_makes_a_valid_block(world: World) -> None:
    pool = Mempool()
    for i, kp in enumerate(FUNDED):
        add(pool, world, world.builder.update(kp, fee=5, seed=i))
        add(pool, world, pay(world, kp, nonce=1, fee=i))
    task = world.builder.task
    picked = pool.select(task.max_updates_per_block, 1000, 10**8)
    world.mine([tx for _, tx in picked])  # raises if the block is invalid
    removed = pool.remove_for_block(world.builder.tip)
    assert set(removed) == {tid(tx) for _, tx in picked}
    assert len(pool) == 2 * len(FUNDED) - len(picked)


# -- following the chain ---------------------------------------------------------------------------
def test_expiry_drops_old_txs_and_their_successors(world: World) -> None:
    pool = Mempool(expiry_s=60)
    a0 = add(pool, world, pay(world, FUNDED[0], nonce=0), now=NOW)
    a1 = add(pool, world, pay(world, FUNDED[0], nonce=1), now=NOW + 50)
    b0 = add(pool, world, pay(world, FUNDED[1], nonce=0), now=NOW + 10)
    assert pool.expire(NOW + 59) == []
    assert pool.expire(NOW + 60) == [a0, a1]
    assert b0 in pool and len(pool) == 1


def test_a_competing_tx_in_a_block_replaces_the_pooled_one(world: World) -> None:
    pool = Mempool()
    add(pool, world, pay(world, FUNDED[0], nonce=0, amount=5))
    a1 = add(pool, world, pay(world, FUNDED[0], nonce=1, amount=5))
    rival = pay(world, FUNDED[0], nonce=0, amount=FUNDING - 10, fee=0)  # same nonce, other tx
    world.mine([rival])
    pool.remove_for_block(world.builder.tip)
    assert len(pool) == 1  # a1 survives remove_for_block, but ...
    assert pool.revalidate(world.chain) == [a1]  # ... the rival left too little to fund it
    assert len(pool) == 0 and pool.bytes == 0


def test_updates_too_stale_are_dropped_as_blocks_arrive(world: World) -> None:
    pool = Mempool()
    upd = add(pool, world, world.builder.update(FUNDED[0]))
    after = add(pool, world, pay(world, FUNDED[0], nonce=1))
    window = world.builder.task.staleness_window
    for _ in range(window - 1):
        world.mine()
        pool.update_tip(world.chain, connected=[world.builder.tip], disconnected=[], now=NOW)
    assert upd in pool  # base = tip - (window - 1): still usable in the next block
    world.mine()
    pool.update_tip(world.chain, connected=[world.builder.tip], disconnected=[], now=NOW)
    assert upd not in pool and after not in pool


def test_reorg_returns_disconnected_txs_to_the_pool(world: World) -> None:
    """
    ... - t - a1(x, y)            (first the node's tip)
            \\ b1(y) - b2        (more work: the node reorgs; x returns, y stays mined)
    """
    pool = Mempool()
    fork_height = world.chain.height
    x = pay(world, FUNDED[0], nonce=0, fee=7)
    y = pay(world, FUNDED[1], nonce=0, fee=8)
    add(pool, world, x)
    z = add(pool, world, pay(world, FUNDED[0], nonce=1, fee=9))  # pooled successor of x
    world.mine([x, y])
    pool.update_tip(world.chain, connected=[world.builder.tip], disconnected=[], now=NOW)
    assert tid(x) not in pool and z in pool

    rival = world.builder.fork(fork_height)
    rival.add(rival.template([y], extra=b"b"))
    rival.add(rival.template(extra=b"b"))
    outcome = None
    for block in rival.blocks[fork_height + 1:]:
        outcome = world.chain.accept_block(block, FAR_FUTURE)
    assert outcome is not None and outcome.status == "reorg"
    pool.update_tip(world.chain, connected=outcome.connected, disconnected=outcome.disconnected, now=NOW + 5)
    assert tid(x) in pool and z in pool and tid(y) not in pool
    assert [e.nonce for e in pool.pending(address_bytes(FUNDED[0].public))] == [0, 1]
    entry = pool.get(z)
    assert entry is not None and entry.added_at == NOW  # kept its original age
    # What the pool now offers is a valid block on the new tip.
    world.builder = rival
    world.mine([tx for _, tx in pool.select(4, 100, 10**8)])


def test_pooled_bytes_round_trip_through_the_consensus_decoder(world: World) -> None:
    pool = Mempool()
    add(pool, world, world.builder.update(FUNDED[0], fee=2))
    for raw, tx in pool.select(4, 10, 10**8):
        assert decode_tx(raw) == tx
