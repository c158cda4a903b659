"""Attacks with blocks a peer offers: orphans, deep forks, headers without work, fat bodies.

A node fetches every block a peer announces. Before these fixes it decoded
each one in full on the chain thread before looking at its header, and stored
any block whose header was valid, however little work its branch had. On
testnet a fork from far back mines at the proof-of-work limit (2**16 hashes a
block: its old schedule is far behind), so a peer could write a 24 MiB body
to our disk for every 2**16 hashes, and make us decode 24 MiB orphans for
nothing (77 ms of chain-thread time each, unpunished).

Regtest stands in for testnet here: every block has the same work, so a fork
from genesis with a node more than ``ANTI_DOS_WORK_BLOCKS`` blocks ahead is
exactly the "too little work to store" case, whatever the difficulty. The
threshold is cut to ``THRESHOLD`` blocks (sync and intake read the same one)
so a few blocks show it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from typing import Any

from aiohttp import web

import node.chainstate as chainstate
from consensus import header as header_codec
from consensus.block import Block
from consensus.errors import Reject
from consensus.header import Header, hash_hex
from consensus.tx import Coinbase, Payout, Transfer
from node import limits
from node.mining import make_template
from node.p2p import messages as m
from node.service import Node
from tests.chainbuilder import mine as solve
from tests.chainbuilder import recommit
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    FakePeer,
    all_stored,
    connect,
    get_json,
    http,
    is_banned,
    metric,
    mine,
    node_key,
    scenario,
    wait_same_tip,
)
from tests.node.test_attack_p2p import msgpack_reply, still_serving
from tests.node.test_block_relay import failing_pow
from wallet import address_bytes

THRESHOLD = 6
FAT_TRANSFERS = 7_000  # ~1 MB of transfers: the body a junk block carries (24 MiB is allowed; this is enough to see)


def fat_block(parent: Block | Header, parent_hash: bytes, height: int, tag: bytes, *, fat: bool = True) -> Block:
    """A mined block on ``parent_hash``; its body (unless not ``fat``) ~1 MB of unsigned transfers, valid only as bytes.

    ``parent`` gives the time and bits; ``parent_hash`` may name a block nobody has (an orphan).
    """
    header = parent.header if isinstance(parent, Block) else parent
    junk = Transfer(node_key("junk").public, 0, address_bytes(node_key("payee").public), 1, 0, bytes(64))
    body = [dataclasses.replace(junk, nonce=i) for i in range(FAT_TRANSFERS if fat else 0)]
    coinbase = Coinbase(height, (Payout(address_bytes(node_key("junk").public), 1),), extra=tag)
    shell = Block.build(Header(1, parent_hash, bytes(32), header.time + 1, header.bits, 0), bytes(32), [])
    return recommit(shell, [coinbase, *body])


def datadir_bytes(node: Node) -> int:
    return sum(p.stat().st_size for p in node.config.datadir.glob("chain.sqlite*"))


def decode_spy(monkeypatch: Any) -> list[bytes]:
    """Record the hash of every block the chain service decodes."""
    import node.chain_service as chain_service

    decoded: list[bytes] = []
    real = chain_service.decode_block

    def spy(raw: bytes) -> Block:
        block = real(raw)
        decoded.append(block.hash)
        return block

    monkeypatch.setattr(chain_service, "decode_block", spy)
    return decoded


class WatchedPeer(FakePeer):
    """A fake peer that records the blocks and header requests the node sends it.

    It answers ``get_headers`` with ``serve_headers`` (none by default).
    """

    def __init__(self, node: Node) -> None:
        super().__init__(node, routes={"blocks": self._blocks, "headers": self._headers})
        self.served: list[bytes] = []
        self.header_requests = 0
        self.serve_headers: list[Header] = []
        self.hold_blocks: asyncio.Event | None = None  # when set, block requests are answered once it fires

    async def _blocks(self, request: web.Request) -> web.Response:
        wanted = m.decode_as(m.GetBlocks, await request.read())
        self.served.extend(wanted.hashes)
        if self.hold_blocks is not None:
            await self.hold_blocks.wait()
        return msgpack_reply(m.Blocks(blocks=tuple(self.inventory[h] for h in wanted.hashes if h in self.inventory)))

    async def _headers(self, request: web.Request) -> web.Response:
        self.header_requests += 1
        return msgpack_reply(m.Headers(headers=tuple(header_codec.encode(h) for h in self.serve_headers)))

    async def announce(self, session: Any, *blocks: Block) -> None:
        for block in blocks:
            self.inventory[block.hash] = block.encode()
        status, text = await self.post(session, "announce", m.encode(m.Announce(blocks=tuple(b.hash for b in blocks),
                                                                                 txs=())))
        assert status == 204, text


@scenario
async def test_a_deep_fork_and_orphans_are_never_decoded_or_stored(cluster: Cluster, monkeypatch: Any) -> None:
    """Peers announce a sibling of the tip, a low-work fork block (twice) and an orphan, all with fat bodies.

    ::

        genesis - 1 - ... - 12           (a)
              \\ x                         low work: fetched once, ignored, body never read
                             ... 11 \\ s   the tip's sibling: stored as a side block
        ? - o                             orphan (another peer): never decoded; a asks for headers

    Only the sibling is decoded and stored; both peers keep their standing
    (an honest node on a minority fork, or ahead of us, announces such
    blocks too), but what they announce next waits for their headers: the
    low-work block announced again is not fetched again. Then a block
    whose header misses its proof of work costs its sender a ban, again
    without its body being decoded.
    """
    monkeypatch.setattr(chainstate, "ANTI_DOS_WORK_BLOCKS", THRESHOLD)
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, THRESHOLD + 6)
    await wait_same_tip([a, b])
    chain = a.chain
    genesis = chain.genesis
    parent = chain.index[chain.tip.prev]
    low_work = fat_block(genesis, genesis.hash, 1, b"deep")
    sibling = fat_block(parent.header, parent.hash, parent.height + 1, b"sibling", fat=False)
    orphan = fat_block(parent.header, secrets.token_bytes(32), parent.height + 1, b"orphan")
    decoded = decode_spy(monkeypatch)

    before = datadir_bytes(a)
    async with WatchedPeer(a) as minority, WatchedPeer(a) as ahead, http() as session:
        for fake in (minority, ahead):
            assert await fake.handshake(session) == 200
        for block in (sibling, low_work, low_work):  # one peer's announces are handled in order
            await minority.announce(session, block)
        await ahead.announce(session, orphan)
        await until(lambda: minority.header_requests > 0 and ahead.header_requests > 0, 30,
                    what="a to ask for headers instead of fetching the second low-work announce, and after the orphan")
        assert await all_stored(a, [sibling])
        assert minority.served == [sibling.hash, low_work.hash] and ahead.served == [orphan.hash]
        for block in (orphan, low_work):
            status, _ = await get_json(session, f"{a.url}/api/blocks/{hash_hex(block.hash)}")
            assert status == 404, f"block {hash_hex(block.hash)[:16]} was stored"
        assert decoded == [sibling.hash], f"decoded {[hash_hex(h)[:16] for h in decoded]}"
        grown = datadir_bytes(a) - before
        assert grown < len(low_work.encode()) + len(sibling.encode()), f"the datadir grew by {grown} bytes"
        for fake in (minority, ahead):
            assert not await is_banned(a, fake.url)

    good = solve(await a.run_chain(make_template, a))
    no_work = failing_pow(dataclasses.replace(good, header=dataclasses.replace(good.header, nonce=0)))
    async with FakePeer(a) as liar:
        await liar.send_blocks([no_work], expect=Reject.BAD_POW)
    assert decoded == [sibling.hash], "a block without its proof of work was decoded"
    await still_serving(a, b)


@scenario
async def test_a_heavier_branch_forked_deeper_than_the_threshold_still_wins(cluster: Cluster, monkeypatch: Any) -> None:
    """Two nodes mine apart from genesis; when they meet, the heavier deep branch wins on both.

    a's first blocks are each too little work alone for b (they would be
    ignored if announced one by one); headers-first sync proves the branch's
    total work first, then its bodies are fetched and connected. A minority
    fork within the threshold (the sibling in the test above) and this deep
    one are the two honest cases the screen must let through.
    """
    monkeypatch.setattr(chainstate, "ANTI_DOS_WORK_BLOCKS", THRESHOLD)
    a, b = await cluster.start_many(2)
    await mine(b, THRESHOLD + 4)
    heavier = await mine(a, THRESHOLD + 8)
    await connect(b, a)
    await wait_same_tip([a, b], target=heavier[-1])
    await mine(b, 1)  # and the two keep building on it together
    await wait_same_tip([a, b])


@scenario
async def test_orphans_cost_one_download_until_the_sender_shows_real_headers(cluster: Cluster) -> None:
    """A peer announces fat orphans (valid proof of work at the easiest bits, unknown parents), one after another.

    An orphan is never punished (an honest peer ahead of us sends them), so
    before this fix each one was downloaded in full, forever: 40 bytes of
    announce bought 2 MB of our bandwidth and memory (32 MiB with real fat
    blocks). Now the first orphan sends the peer's announces through header
    sync: what it announces next is fetched only once headers we store
    connect it. So the other orphans cost a small get_headers each, and a
    real block (its header served on request) still gets in and lifts the
    restriction. An orphan without its proof of work costs its sender a ban.
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, 2)
    await wait_same_tip([a, b])
    tip = a.chain.tip
    orphans = [fat_block(tip.header, secrets.token_bytes(32), tip.height + 2, b"o%d" % i) for i in range(6)]
    real = solve(await a.run_chain(make_template, a))

    async with WatchedPeer(a) as fake, http() as session:
        assert await fake.handshake(session) == 200
        for orphan in orphans:  # each one handled (its header request answered, the sync over) before the next
            asked = fake.header_requests
            await fake.announce(session, orphan)
            await until(lambda: fake.header_requests > asked and not a.peers.syncing, 30,  # noqa: B023
                        what="a to ask the orphan's sender for headers")
        fake.serve_headers = [real.header]
        await fake.announce(session, real)
        await wait_same_tip([a, b], target=real.hash)
        fetched = [h for h in fake.served if h != real.hash]
        assert fetched == [orphans[0].hash], f"a fetched {len(fetched)} orphans"
        assert not await is_banned(a, fake.url)

    free = failing_pow(fat_block(tip.header, secrets.token_bytes(32), tip.height + 2, b"free"))
    async with FakePeer(a) as liar:
        await liar.send_blocks([free], expect=Reject.BAD_POW)
    await still_serving(a, b)


@scenario
async def test_announces_flooded_behind_a_stalled_request_do_not_queue_without_bound(cluster: Cluster) -> None:
    """A peer stalls our requests and floods announces meanwhile: at most ``MAX_ANNOUNCES_PENDING`` wait.

    Each announce is answered at once. Before this bound every one waited
    in memory (~70 KB for 1000 hashes) for as long as the peer stalled (30
    s): 3000 block announces in five seconds held 270 MB behind one stalled
    block fetch; 2800 tx announces held 430 MB behind the header sync that
    the peer's claimed height starts. Now the rest are dropped and counted
    (``gradchain_announces_dropped``); a dropped block announce goes to
    header sync (a header request reaches the peer while the fetch stalls).
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    flood = limits.MAX_ANNOUNCES_PENDING + 3
    # Each wait well inside REQUEST_TIMEOUT_S: once a stalled request times out the peer is dropped.
    deadline = limits.REQUEST_TIMEOUT_S / 3

    def announce(blocks: bool) -> bytes:
        many = tuple(secrets.token_bytes(32) for _ in range(limits.MAX_INV_PER_ANNOUNCE))
        return m.encode(m.Announce(blocks=many, txs=()) if blocks else m.Announce(blocks=(), txs=many))

    async with WatchedPeer(a) as fake, http() as session:
        assert await fake.handshake(session) == 200
        fake.hold_blocks = asyncio.Event()
        first = secrets.token_bytes(32)
        status, text = await fake.post(session, "announce", m.encode(m.Announce(blocks=(first,), txs=())))
        assert status == 204, text
        await until(lambda: fake.served == [first], deadline, what="a to ask for the announced block")
        for _ in range(flood):
            status, text = await fake.post(session, "announce", announce(blocks=True))
            assert status == 204, text
        await until(lambda: fake.header_requests > 0, deadline,
                    what="an announce past the bound to go to header sync while the fetch is stalled")
        assert fake.served == [first], "the stalled fetch is still the only one"
        expected = flood - (limits.MAX_ANNOUNCES_PENDING - 1)  # the first is still being handled

        async def all_dropped() -> bool:
            return await metric(a, "gradchain_announces_dropped_total") == expected

        await until(all_dropped, deadline, what=f"{expected} block announces dropped")
        fake.hold_blocks.set()

    hold_headers = asyncio.Event()

    async def stalled_headers(request: web.Request) -> web.Response:
        await hold_headers.wait()
        return msgpack_reply(m.Headers(headers=()))

    dropped = await metric(a, "gradchain_announces_dropped_total")
    async with FakePeer(a, routes={"headers": stalled_headers}) as ahead, http() as session:
        ahead.claimed_height = 10_000  # its txs wait for a header sync, which it stalls
        assert await ahead.handshake(session) == 200
        for _ in range(flood):
            status, text = await ahead.post(session, "announce", announce(blocks=False))
            assert status == 204, text

        async def dropped_now() -> bool:
            return await metric(a, "gradchain_announces_dropped_total") >= dropped + flood - limits.MAX_ANNOUNCES_PENDING

        await until(dropped_now, deadline, what="tx announces past the bound to be dropped")
        hold_headers.set()
    await still_serving(a, b)
