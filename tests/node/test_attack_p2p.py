"""Attacks by peers: junk relays, stalled syncs, header spam, slot and address floods, reflection.

Each scenario replays one attack against live nodes on loopback (regtest,
in-process): the attacker is a :class:`FakePeer` (a tiny aiohttp server of
the test that speaks the handshake) or a client of the test, and the honest
side is real nodes. Every test ends by checking that the node under attack
still serves and still syncs from an honest peer, its data intact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web

from consensus.errors import Reject
from consensus.tx import GradientUpdate, encode_tx, sign_tx, txid
from ml.codec import encode_update
from node import limits
from node.p2p import messages as m
from node.p2p.session import CONTENT_TYPE
from node.service import Node
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    FakePeer,
    connect,
    get_json,
    http,
    mine,
    node_key,
    scenario,
    wait_same_tip,
)

HUGE_UPDATE_VALUES = 2_000_000  # 8 MB of f32: the largest update the consensus size cap allows
STALE_RELAYS = 40  # small right-shaped updates with a wrong nonce
SMALL_ALLOWANCE = 100_000  # bytes of forgiven refusals, shrunk so the flood runs it dry


def msgpack_reply(msg: m.Message) -> web.Response:
    return web.Response(body=m.encode(msg), content_type=CONTENT_TYPE)


async def still_serving(node: Node, peer: Node) -> None:
    """The node answers /api/status and follows a block its honest peer mines."""
    async with http() as session:
        status, body = await get_json(session, f"{node.url}/api/status")
        assert status == 200 and body["height"] == node.chain.height
    (block_hash,) = await mine(peer, 1)
    await wait_same_tip([node, peer], target=block_hash)


def relayer(node: Node, raws: list[bytes]) -> dict[str, Any]:
    """FakePeer routes that serve ``raws`` to whoever asks for their txids."""
    by_id = {txid(raw): raw for raw in raws}

    async def txs(request: web.Request) -> web.Response:
        wanted = m.decode_as(m.GetTxs, await request.read())
        return msgpack_reply(m.Txs(txs=tuple(by_id[t] for t in wanted.txids if t in by_id)))

    async def headers(request: web.Request) -> web.Response:
        return msgpack_reply(m.Headers(headers=()))

    return {"txs": txs, "headers": headers}


def update_tx(node: Node, key_name: str, nonce: int, values: int) -> bytes:
    """A signed update from ``key_name`` on ``node``'s tip with ``values`` zeros."""
    key = node_key(key_name)
    tip = node.chain.tip
    tx = GradientUpdate(key.public, nonce, 0, tip.height, tip.hash, encode_update(np.zeros(values, np.float32)))
    return encode_tx(sign_tx(tx, key, node.chain.chain_id))


@scenario
async def test_junk_updates_relayed_by_a_peer_cost_it_its_standing(cluster: Cluster, monkeypatch: Any) -> None:
    """8 MB wrong-shape updates, then a flood of stale ones: the relayers lose standing, a stays clean.

    ::

        fake1 --announce--> a --get_txs--> fake1: an 8 MB update of the wrong shape and a wrong nonce
              a checks the shape first (no hash of 8 MB, no signature): bad-update-shape, fake1 banned
        fake2 --announce 40--> a: right-shaped updates, wrong nonce: forgiven (tip-dependent)
              until fake2's relay allowance runs dry, then charged wasted-relay until banned
        a - b  keep syncing; a's mempool holds none of it

    Before the fix the signature came first and a wrong nonce cost the relayer nothing.
    """
    monkeypatch.setattr(limits, "RELAY_WASTE_BURST_BYTES", SMALL_ALLOWANCE)
    a, b = await cluster.start_many(2)
    await connect(a, b)
    huge = update_tx(a, "junk", nonce=7, values=HUGE_UPDATE_VALUES)
    async with FakePeer(a, relayer(a, [huge])) as fake1, http() as session:
        assert await fake1.handshake(session) == 200
        announce = m.encode(m.Announce(blocks=(), txs=(txid(huge),)))
        assert (await fake1.post(session, "announce", announce))[0] == 204
        await until(lambda: a.peers.is_banned(fake1.url), 15, what="a to ban the junk relayer")
    assert a.metrics.txs_rejected.labels(reason=Reject.BAD_UPDATE_SHAPE.value)._value.get() == 1
    param_count = a.chain.task.param_count
    stale = [update_tx(a, f"stale{i}", nonce=5, values=param_count) for i in range(STALE_RELAYS)]
    async with FakePeer(a, relayer(a, stale)) as fake2, http() as session:
        assert await fake2.handshake(session) == 200
        announce = m.encode(m.Announce(blocks=(), txs=tuple(txid(raw) for raw in stale)))
        assert (await fake2.post(session, "announce", announce))[0] == 204
        await until(lambda: a.peers.is_banned(fake2.url), 15, what="a to ban the stale-update flooder")
    assert a.metrics.txs_rejected.labels(reason=Reject.BAD_NONCE.value)._value.get() > 1
    assert len(a.mempool) == 0
    assert not a.peers.is_banned(b.url)
    await still_serving(a, b)
