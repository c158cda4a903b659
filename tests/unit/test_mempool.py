"""The mempool: only txs valid on the tip get in; it stays bounded, fee-ordered for
spends, fair for contributions (one update per sender per block, oldest bond
first), nonce-consistent, and follows the chain through new blocks and reorgs.

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
    txid,
)
from ml.codec import EncodedUpdate
from node.chainstate import ChainState
from node.mempool import Mempool, PolicyReason, PolicyRejected, inclusion_ranks
from tests.chainbuilder import ChainBuilder, det_vector, key, quick_task, rejection
from wallet import KeyPair, address_bytes

FUNDED = [key(i) for i in range(1, 5)]  # each starts with FUNDING
FUNDING = 1_000_000
FAR_FUTURE = 2**31  # 'now' for accepting blocks: no header is too new
NOW = 1_000.0  # mempool clock in these tests: seconds, arbitrary origin


WIDTH = 2  # blocks per round


class World:
    """A builder and a node chain kept on the same tip: FUNDED hold FUNDING and are bonded
    (oldest bond: FUNDED[0]); the next block opens a round."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.builder = ChainBuilder(quick_task(round_blocks=WIDTH, f=0))
        self.builder.extend(2)
        self.builder.extend(1, lambda b: [
            b.transfer(b.miner, kp, FUNDING, nonce=i) for i, kp in enumerate(FUNDED)
        ])
        for kp in FUNDED:  # one bond per block: the first bonded is the oldest
            self.builder.add(self.builder.template([self.builder.bond(kp)]))
        while (self.builder.next_height - 1) % WIDTH:
            self.builder.extend(1)
        self.chain = ChainState.create(tmp_path, "regtest", self.builder.task)
        self.sync()

    def sync(self) -> None:
        for block in self.builder.blocks[self.chain.height + 1:]:
            self.chain.accept_block(block, FAR_FUTURE)
        assert self.chain.tip.hash == self.builder.tip.hash

    def mine(self, txs: Sequence[Tx] = ()) -> None:
        self.builder.add(self.builder.template(txs))
        self.sync()

    def committed(self, *senders: KeyPair, count: int = 1) -> None:
        """Each sender commits ``count`` updates now; mine on to the round that reveals them."""
        self.mine([self.builder.commit(kp, seeds=tuple(10 * i + j for j in range(count)))
                   for i, kp in enumerate(senders)])
        while (self.builder.next_height - 1) % WIDTH:
            self.mine()


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path)


def pay(w: World, sender: KeyPair, nonce: int = 0, fee: int = 10, amount: int = 1) -> SignedTx:
    """A transfer of ``sender``'s with ``nonce`` counted from its account's next one (its bond used one)."""
    return w.builder.transfer(sender, key(99), amount, fee=fee, nonce=w.builder.nonce_of(sender) + nonce)


def add(pool: Mempool, w: World, tx: Tx, now: float = NOW) -> bytes:
    result = pool.add(encode_tx(tx), tx, w.chain, now)
    assert result.added
    return result.txid


def nan_update(w: World) -> EncodedUpdate:
    """An update of NaNs (the encoder refuses them, so the bytes are made by hand)."""
    n = w.builder.task.param_count
    return EncodedUpdate("f32", n, np.full(n, np.nan, dtype="<f4").tobytes())


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
    assert pool.next_nonce(address_bytes(sender.public), world.chain) == world.builder.nonce_of(sender) + 3
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


def test_a_committed_update_is_pooled_in_its_reveal_round(world: World) -> None:
    pool = Mempool()
    commit = world.builder.commit(FUNDED[0])
    add(pool, world, commit)
    world.mine([commit])
    reveal = world.builder.update(FUNDED[0], round_=world.builder.round)
    assert rejection(lambda: add(pool, world, reveal)) is Reject.BAD_ROUND  # its own round: too early
    while (world.builder.next_height - 1) % WIDTH:
        world.mine()
    add(pool, world, world.builder.update(FUNDED[0]))
    assert len(pool) == 2


def test_an_update_needs_a_matching_commitment_and_a_mature_bond(world: World) -> None:
    world.committed(FUNDED[0])
    size = world.builder.task.param_count
    assert rejection(lambda: add(Mempool(), world, world.builder.update(FUNDED[0], det_vector(5, size)))) \
        is Reject.NO_COMMITMENT
    stranger = world.builder.update(key(50), det_vector(5, size))
    assert rejection(lambda: add(Mempool(), world, stranger)) is Reject.NOT_BONDED


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (lambda w: det_vector(1, w.builder.task.param_count, scale=100.0), Reject.UPDATE_NORM),
        (nan_update, Reject.UPDATE_NOT_FINITE),
        (lambda w: det_vector(1, w.builder.task.param_count + 1), Reject.BAD_UPDATE_SHAPE),
    ],
    ids=["norm", "not-finite", "shape"],
)
def test_consensus_update_checks_run_on_the_tip(world: World, payload: object, code: Reject) -> None:
    world.mine([world.builder.commit(FUNDED[0], [payload(world)])])  # type: ignore[operator]
    world.mine()
    tx = world.builder.update(FUNDED[0])
    assert rejection(lambda: Mempool().add(encode_tx(tx), tx, world.chain, NOW)) is code


def test_a_commitment_on_another_branch_has_a_bad_base(world: World) -> None:
    height = world.chain.height
    other = world.builder.fork(height - 1)
    other.extend(1, extra=b"other")  # same heights, another round start block
    tx = world.builder.commit(FUNDED[0], base_hash=other.tip.hash)
    assert rejection(lambda: Mempool().add(encode_tx(tx), tx, world.chain, NOW)) is Reject.UPDATE_BAD_BASE


def test_one_commitment_per_sender_and_round(world: World) -> None:
    pool = Mempool()
    add(pool, world, world.builder.commit(FUNDED[0], seeds=(1,)))
    second = world.builder.commit(FUNDED[0], seeds=(2,))
    assert rejection(lambda: add(pool, world, second)) is Reject.DUPLICATE_COMMIT


def test_bonds_lock_funds_and_a_bonded_key_may_top_up(world: World) -> None:
    pool = Mempool()
    newcomer = key(60)
    assert rejection(lambda: add(pool, world, world.builder.unbond(newcomer))) is Reject.NOT_BONDED
    add(pool, world, world.builder.bond(FUNDED[0]))  # a top-up of its stake
    add(pool, world, world.builder.bond(FUNDED[0], nonce=world.builder.nonce_of(FUNDED[0]) + 1))
    add(pool, world, pay(world, FUNDED[1], nonce=0))
    add(pool, world, world.builder.unbond(FUNDED[1], nonce=world.builder.nonce_of(FUNDED[1]) + 1))
    assert len(pool) == 4


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
    update = world.builder.update(FUNDED[3])
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


def test_fair_inclusion_one_update_per_sender_by_rank_not_arrival(world: World) -> None:
    """Updates are not sold: at equal stakes and no slot yet this round, the round's tie order
    decides, however early an update arrived (shares by stake: tests/unit/test_round_attacks.py);
    a sender with two pooled updates gets one slot; commitments all go in."""
    world.committed(*FUNDED, count=2)
    pool = Mempool()
    for i, kp in enumerate(reversed(FUNDED)):  # the youngest bond's updates arrive first
        add(pool, world, world.builder.update(kp, index=0), now=NOW + i)
        add(pool, world, world.builder.update(kp, index=1), now=NOW + i + 0.5)
    commit = world.builder.commit(FUNDED[3], seeds=(77,))
    add(pool, world, commit)
    ranks = inclusion_ranks(world.chain.state, {world.chain.rules.task_id: world.builder.task},
                            world.chain.height + 1, world.chain.main.__getitem__)
    picked = [tx for _, tx in pool.select(max_updates=3, max_txs=100, max_bytes=10**8, ranks=ranks)]
    assert picked[0] == commit
    updates = [tx for tx in picked if isinstance(tx, GradientUpdate)]
    task_id = world.chain.rules.task_id
    first = sorted(FUNDED, key=lambda kp: ranks[(task_id, address_bytes(kp.public))])[:3]
    assert [u.sender for u in updates] == [kp.public for kp in first]  # the round's order, one each
    assert all(u == world.builder.update(kp, index=0) for u, kp in zip(updates, first, strict=True))
    world.mine(picked)  # a valid block
    pool.remove_for_block(world.builder.tip)
    assert len(pool) == 2 * len(FUNDED) - 3


def test_select_respects_update_count_tx_count_and_bytes(world: World) -> None:
    world.committed(*FUNDED)
    pool = Mempool()
    for i, kp in enumerate(FUNDED):
        add(pool, world, world.builder.update(kp))
        add(pool, world, pay(world, kp, nonce=0, fee=1 + i))
    picked = pool.select(max_updates=2, max_txs=100, max_bytes=10**8)
    updates = [tx for _, tx in picked if isinstance(tx, GradientUpdate)]
    assert len(updates) == 2
    assert len(picked) == 2 + len(FUNDED)  # every transfer: they do not compete with updates
    assert len(pool.select(max_updates=4, max_txs=3, max_bytes=10**8)) == 3
    one_update = len(encode_tx(world.builder.update(FUNDED[0])))
    assert len(pool.select(max_updates=4, max_txs=100, max_bytes=one_update)) == 1


# -- following the chain ---------------------------------------------------------------------------
def test_updates_of_a_closed_reveal_round_are_dropped(world: World) -> None:
    world.committed(FUNDED[0], count=2)
    pool = Mempool()
    first = add(pool, world, world.builder.update(FUNDED[0], index=0))
    world.mine([world.builder.update(FUNDED[0], index=1)])  # another miner took the other one
    pool.update_tip(world.chain, connected=[world.builder.tip], disconnected=[], now=NOW)
    assert first in pool  # the round still reveals
    world.mine()
    pool.update_tip(world.chain, connected=[world.builder.tip], disconnected=[], now=NOW)
    assert first not in pool  # BAD_ROUND on the new tip


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


def test_reorg_returns_disconnected_txs_to_the_pool(world: World) -> None:
    """
    ... - t - a1(x, y)            (first the node's tip)
            \\ b1(y) - b2        (more work: the node reorgs; x returns, y stays mined)
    """
    pool = Mempool()
    fork_height = world.chain.height
    n0 = world.builder.nonce_of(FUNDED[0])
    x = pay(world, FUNDED[0], fee=7)
    y = pay(world, FUNDED[1], fee=8)
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
    assert [e.nonce for e in pool.pending(address_bytes(FUNDED[0].public))] == [n0, n0 + 1]
    entry = pool.get(z)
    assert entry is not None and entry.added_at == NOW  # kept its original age
    # What the pool now offers is a valid block on the new tip.
    world.builder = rival
    world.mine([tx for _, tx in pool.select(4, 100, 10**8)])


def test_pooled_bytes_round_trip_through_the_consensus_decoder(world: World) -> None:
    pool = Mempool()
    add(pool, world, world.builder.commit(FUNDED[0]))
    add(pool, world, pay(world, FUNDED[1], nonce=0))
    for raw, tx in pool.select(4, 10, 10**8):
        assert decode_tx(raw) == tx
