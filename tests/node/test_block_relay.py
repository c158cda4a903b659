"""A peer's invalid blocks: each is rejected with the rule it broke, and the peer is banned.

Bitcoin Core's ``p2p_invalid_block`` for gradchain: a real node on loopback,
and fake peers (``FakePeer``) that offer it blocks through the real p2p
routes (announce, then serve on request). Each case is one line,
``send_blocks([block], expect=Reject.X)``, which checks through the node's
API that it reported the block rejected with X, stored nothing and banned
the peer. The blocks are built on the node's own template, so each breaks
exactly one rule::

    genesis - 1 - 2          (a)
                    \\ X      (one fake peer per X, each breaking one rule)
                    \\ ok     (a last peer's valid block connects)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from consensus.block import Block
from consensus.errors import Reject
from consensus.header import hash_hex, header_hash
from consensus.pow import bits_to_target, hash_to_int
from consensus.tx import Coinbase, GradientUpdate, Payout, Transfer, sign_tx
from consensus.validation import HEADER_VERSION
from ml.codec import encode_update
from node.mining import make_template
from node.p2p import messages as m
from node.service import Node
from tests.chainbuilder import mine as solve
from tests.chainbuilder import recommit
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    FakePeer,
    http,
    is_banned,
    mine,
    node_key,
    scenario,
    wait_event,
)
from wallet import address_bytes

HARDER_BITS = 0x207FFFFE  # a hair harder than regtest's: what the retarget does not say
NONCE_TRIES = 1 << 16


def with_header(block: Block, **changes: object) -> Block:
    """``block`` with header fields changed, then mined again."""
    return solve(dataclasses.replace(block, header=dataclasses.replace(block.header, nonce=0, **changes)))


def failing_pow(block: Block) -> Block:
    """``block`` with the first nonce whose hash misses the target."""
    target = bits_to_target(block.header.bits)
    for nonce in range(NONCE_TRIES):
        header = block.header.with_nonce(nonce)
        if hash_to_int(header_hash(header)) > target:
            return dataclasses.replace(block, header=header)
    raise AssertionError("every nonce tried met the target")


def transfer(node: Node, amount: int) -> Transfer:
    tx = Transfer(node.keypair.public, 0, address_bytes(node_key("payee").public), amount, 0)
    signed = sign_tx(tx, node.keypair, node.chain.signing_tag)
    assert isinstance(signed, Transfer)
    return signed


def updates(node: Node, count: int) -> list[GradientUpdate]:
    """``count`` signed updates from fresh keys (a block of more than the task's limit fails before their bonds)."""
    vector = np.full(node.chain.task.param_count, 0.001, dtype=np.float32)
    out = []
    for i in range(count):
        kp = node_key(f"updater-{i}")
        signed = sign_tx(GradientUpdate(kp.public, node.chain.rules.task_id, 0, encode_update(vector)), kp, node.chain.signing_tag)
        assert isinstance(signed, GradientUpdate)
        out.append(signed)
    return out


@scenario
async def test_a_peers_invalid_blocks_are_rejected_with_the_rule_they_break(cluster: Cluster) -> None:
    (a,) = await cluster.start_many(1)
    await mine(a, 2)
    good = await a.run_chain(make_template, a)
    coinbase = good.txs[0]
    assert isinstance(coinbase, Coinbase)
    miner = coinbase.payouts[0]
    pay = transfer(a, 1_000)
    forged_sig = dataclasses.replace(pay, signature=bytes([pay.signature[0] ^ 1]) + pay.signature[1:])
    mtp = a.chain.min_next_time() - 1
    bad_root = recommit(good, good.txs, state_root=bytes(32))
    overpaid = Coinbase(coinbase.height, (Payout(miner.address, miner.amount + 1),), coinbase.extra)
    other_body = Block.build(good.header, good.state_root, [dataclasses.replace(coinbase, extra=b"other")])
    child_of_bad = with_header(good, prev=bad_root.hash, time=good.header.time + 1)

    cases: list[tuple[Reject, Block]] = [
        (Reject.BAD_STATE_ROOT, bad_root),
        (Reject.BAD_PREV, child_of_bad),  # its parent was just found invalid
        (Reject.BAD_COINBASE, recommit(good, [overpaid])),
        (Reject.BAD_TX_ROOT, solve(other_body)),
        (Reject.BAD_POW, failing_pow(solve(good))),
        (Reject.BAD_BITS, with_header(good, bits=HARDER_BITS)),
        (Reject.BAD_VERSION, with_header(good, version=HEADER_VERSION + 1)),
        (Reject.TIME_TOO_OLD, with_header(good, time=mtp)),
        (Reject.DUPLICATE_TX, recommit(good, [coinbase, pay, pay])),
        (Reject.BAD_SIGNATURE, recommit(good, [coinbase, forged_sig])),
        (Reject.TOO_MANY_UPDATES, recommit(good, [coinbase, *updates(a, a.chain.task.max_updates_per_block + 1)])),
    ]
    for code, block in cases:
        async with FakePeer(a) as fake:
            await fake.send_blocks([block], expect=code)
    assert a.chain.height == 2
    async with FakePeer(a) as honest:
        await honest.send_blocks([solve(good)])
    assert a.chain.tip.hash == solve(good).hash


@scenario
async def test_an_undecodable_block_is_reported_and_punished(cluster: Cluster) -> None:
    """Bytes that do not decode as a block: reported with the decoder's code, the peer banned.

    The trailing byte leaves the header where the node reads it before decoding,
    so the event still names the block the peer claimed to send.
    """
    (a,) = await cluster.start_many(1)
    await mine(a, 1)
    good = solve(await a.run_chain(make_template, a))
    async with FakePeer(a) as fake, http() as session:
        assert await fake.handshake(session) == 200
        fake.inventory[good.hash] = good.encode() + b"\x00"  # a trailing byte: not canonical msgpack
        announce = m.encode(m.Announce(blocks=(good.hash,), txs=()))
        assert (await fake.post(session, "announce", announce))[0] == 204
        event = await wait_event(a, "rejected", source=fake.url)
        assert event["reason"] == Reject.BAD_ENCODING.value and event["hash"] == hash_hex(good.hash)
        await until(lambda: is_banned(a, fake.url), 15, what="a to ban the peer")
    assert a.chain.height == 1
