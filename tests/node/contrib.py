"""Contributions through a real node's public surface: fund, bond, commit, reveal.

Scenario tests that want gradient updates in a block go through the chain's
rounds as any participant does (docs/DESIGN-NOTES.md, "Rounds, bonds and
commit-reveal"): the node's miner key funds the participants, they bond and
wait for maturity, commit in one round and reveal in the next. Blocks are
mined on demand (regtest), so this takes a few dozen milliseconds a block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from consensus.rounds import round_start
from consensus.tx import Bond, GradientUpdate, Transfer, encode_tx, sign_tx
from node.contributor import Contributor, KeyStatus
from node.service import Node
from tests.conftest import until
from tests.node.harness import mine
from wallet import KeyPair, address_bytes


async def submit(node: Node, txs: Sequence[object]) -> None:
    for tx in txs:
        await node.submit_tx(encode_tx(tx), source=None)  # type: ignore[arg-type]


async def fund(node: Node, keys: Sequence[KeyPair]) -> None:
    """Send each key a bond's worth from the node's miner key (mining until it has them)."""
    chain = node.chain
    need = chain.task.bond_amount
    miner = address_bytes(node.keypair.public)
    while chain.state.account(miner).balance < need * len(keys) + 1:
        await mine(node, 1)
    nonce = node.mempool.next_nonce(miner, chain)
    await submit(node, [
        sign_tx(Transfer(node.keypair.public, nonce + i, address_bytes(k.public), need, 0), node.keypair,
                chain.signing_tag)
        for i, k in enumerate(keys)
    ])


def settled(node: Node, members: Sequence[Node]) -> bool:
    """On the chain thread: ``node``'s mempool holds what every member's trainer owes the next block."""
    chain, pool = node.chain, node.mempool
    for member in members:
        address = address_bytes(member.keypair.public)
        status = KeyStatus.read(
            chain.task, chain.state.task, address, height=chain.height + 1,
            balance=chain.state.account(address).balance, next_nonce=pool.next_nonce(address, chain),
            pooled=[e.tx for e in pool.pending(address)],
        )
        if not status.settled(chain.task.bond_amount):
            return False
    return True


async def mine_settled(node: Node, timeout: float) -> bool:
    """Mine one block once ``node``'s own trainer has pooled what it owes it; True if it carries an update.

    A training node bonds with its first reward, commits once the bond is
    mature and reveals one update per block in the next round, so most of the
    first blocks carry none.
    """
    await until(lambda: node.run_chain(settled, node, [node]), timeout, what="the trainer's txs")
    await mine(node, 1)
    block = node.chain.get_block(node.chain.tip.hash)
    return block is not None and any(isinstance(tx, GradientUpdate) for tx in block.txs)


async def join(node: Node, keys: Sequence[KeyPair]) -> None:
    """Fund ``keys`` from the node's miner key, bond them and mine until their bonds are mature."""
    chain = node.chain
    if chain.task.bond_amount:
        await fund(node, keys)
        await mine(node, 1)
    await submit(node, [
        sign_tx(Bond(k.public, chain.state.account(address_bytes(k.public)).nonce, 0, chain.rules.task_id), k,
                chain.signing_tag)
        for k in keys
    ])
    await mine(node, 1)
    await mine(node, chain.task.bond_maturity)


async def next_round(node: Node) -> None:
    """Mine until the next block opens a round."""
    width = node.chain.task.round_blocks
    while node.chain.height % width:
        await mine(node, 1)


def status_of(node: Node, key: KeyPair) -> KeyStatus:
    chain = node.chain
    address = address_bytes(key.public)
    return KeyStatus.read(chain.task, chain.state.task, address, height=chain.height + 1,
                          balance=chain.state.account(address).balance, next_nonce=0)


async def commit(node: Node, plans: Mapping[KeyPair, Sequence[np.ndarray]]) -> dict[KeyPair, Contributor]:
    """Each key commits its vectors in the current round (one block); returns their contributors."""
    chain = node.chain
    out = {}
    commits = []
    for key, vectors in plans.items():
        me = Contributor(key, chain.task, chain.signing_tag, chain.rules.task_id)
        status = status_of(node, key)
        base = chain.main[round_start(status.round, chain.task.round_blocks)]
        commits.append(me.commit(status, base, [np.asarray(v, dtype=np.float32) for v in vectors]))
        out[key] = me
    await submit(node, commits)
    await mine(node, 1)
    return out


def reveals(node: Node, contributors: Mapping[KeyPair, Contributor]) -> list[GradientUpdate]:
    """The next reveal of each contributor, for the next block (in its reveal round)."""
    out = []
    for key, me in contributors.items():
        reveal = me.reveal(status_of(node, key))
        if reveal is not None:
            out.append(reveal)
    return out


async def contribute(node: Node, updates: Mapping[KeyPair, np.ndarray]) -> None:
    """Bonded ``updates``' keys commit one update each, and the first block of the next round reveals them all."""
    contributors = await commit(node, {k: [v] for k, v in updates.items()})
    await next_round(node)
    await submit(node, reveals(node, contributors))
    await mine(node, 1)
