"""Four nodes split 2/2, both halves mine and take transfers, the link heals: one chain again.

::

    a = b     (west)              genesis - 1 - ... - w1 .. wN   [west's transfers]
    |   |     cut both links              \\ e1 .. eM            [east's transfers]
    c = d     (east)              heal: everyone on the branch with the most work,
                                  one state root, within HEAL_DEADLINE_S; the
                                  losing half's confirmed transfers are back in
                                  every mempool, and the next block confirms them.

Topology is pinned (``dial_learned=False``): the halves can only meet through the
links the test makes. Each round the other half wins (it mines more
blocks); ``make test-long`` runs more rounds.
"""

from __future__ import annotations

from consensus.tx import Transfer, encode_tx, sign_tx
from node.service import Node
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    connect,
    mine,
    node_key,
    partition,
    scenario,
    tip_of,
    wait_same_tip,
)
from tests.reliability import sized
from wallet import address_bytes

ROUNDS = sized(1, 6)
HEAL_DEADLINE_S = 30.0  # loopback reorg of a few blocks: well under a second when the box is idle
TRANSFERS_PER_SIDE = 2


async def send(node: Node, amount: int) -> bytes:
    """A transfer from ``node``'s key with its next nonce, submitted to ``node``."""
    sender = address_bytes(node.keypair.public)
    nonce = await node.run_chain(node.mempool.next_nonce, sender, node.chain)
    to = address_bytes(node_key("recipient").public)
    tx = sign_tx(Transfer(node.keypair.public, nonce, to, amount, 1), node.keypair, node.chain.signing_tag)
    return await node.submit_tx(encode_tx(tx), source=None)


async def cut(west: list[Node], east: list[Node]) -> None:
    """Partition: each side refuses the other (harness ``partition``: bans both ways)."""
    partition(west, east)
    await until(lambda: all(e.url not in w.peers.peers and w.url not in e.peers.peers for w in west for e in east),
                15, what="the cut")


async def heal(west: list[Node], east: list[Node]) -> None:
    """Link every node of one half with every node of the other (lifting the bans)."""
    for w in west:
        for e in east:
            await connect(w, e)


@scenario
async def test_two_halves_mine_apart_then_converge_and_repool_the_losers_txs(cluster: Cluster) -> None:
    a, b, c, d = nodes = await cluster.start_many(4, dial_learned=False)
    west, east = [a, b], [c, d]
    await connect(a, b)
    await connect(c, d)
    await heal(west, east)
    for n in nodes:  # each node earns a reward to pay transfers from
        await mine(n, 1)
        await wait_same_tip(nodes)
    for round_ in range(ROUNDS):
        await cut(west, east)
        winners, losers = (east, west) if round_ % 2 == 0 else (west, east)
        sent: dict[bytes, list[bytes]] = {}
        for side, blocks in ((winners, 3), (losers, 2)):
            txids = [await send(side[i % 2], 10 + i) for i in range(TRANSFERS_PER_SIDE)]
            await until(lambda s=side, t=txids: all(x in n.mempool for n in s for x in t), 15,
                        what="the transfers in the half's mempools")
            await mine(side[0], 1)  # confirms them on this half only
            await wait_same_tip(side)  # (mining on a stale tip would fork the half itself)
            await mine(side[1], blocks - 1)
            await wait_same_tip(side)
            sent[side[0].url] = txids
        assert tip_of(a) != tip_of(c), "the halves really were apart"
        target = max((side[0] for side in (west, east)), key=lambda n: n.chain.tip.chain_work).chain.tip.hash
        assert target == winners[0].chain.tip.hash
        await heal(west, east)
        await wait_same_tip(nodes, timeout=HEAL_DEADLINE_S, target=target)
        lost = sent[losers[0].url]
        await until(lambda t=lost: all(x in n.mempool for n in nodes for x in t), HEAL_DEADLINE_S,
                    what=f"round {round_}: the losing half's transfers back in every mempool")
        (confirming,) = await mine(winners[1], 1)
        await wait_same_tip(nodes, timeout=HEAL_DEADLINE_S, target=confirming)
        block = winners[1].chain.get_block(confirming)
        assert block is not None and set(lost) <= set(block.txids), "the next block confirms them"
        assert all(len(n.mempool) == 0 for n in nodes)
    print(f"{ROUNDS} partition/heal rounds of 4 nodes: converged at height {a.chain.height}")
