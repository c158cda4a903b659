"""Attacks by peers: junk relays, stalled syncs, header spam, slot and address floods, reflection.

Each scenario replays one attack against live nodes on loopback (regtest,
in-process): the attacker is a :class:`FakePeer` (a tiny aiohttp server of
the test that speaks the handshake) or a client of the test, and the honest
side is real nodes. Every test ends by checking that the node under attack
still serves and still syncs from an honest peer, its data intact.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from typing import Any

import numpy as np
from aiohttp import web

from consensus.errors import Reject
from consensus.header import Header, header_hash
from consensus.header import decode as decode_header
from consensus.header import encode as encode_header
from consensus.tx import GradientUpdate, encode_tx, sign_tx, txid
from ml.codec import encode_update
from node import limits
from node.p2p import addrman, peerfiles
from node.p2p import messages as m
from node.p2p.netgroups import url_group
from node.p2p.session import CONTENT_TYPE
from node.service import Node
from tests.conftest import until
from tests.headers import regtest_headers
from tests.node.harness import (
    Cluster,
    FakePeer,
    connect,
    get_json,
    http,
    metric,
    mine,
    node_key,
    scenario,
    wait_same_tip,
)

BAD_HOST = "127.0.0.2"  # an attacker's own host (loopback, but not the shared 127.0.0.1)
VICTIM_HOST = "127.0.0.3"  # a third party the attacker would like the node to hit
HUGE_UPDATE_VALUES = 2_000_000  # 8 MB of f32: the largest update the consensus size cap allows
STALE_RELAYS = 40  # small right-shaped updates with a wrong nonce
SMALL_ALLOWANCE = 100_000  # bytes of forgiven refusals, shrunk so the flood runs it dry
SLOW_REFILL = 512  # bytes a second the allowance refills while the flood is checked


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


def update_tx(node: Node, key_name: str, values: int) -> bytes:
    """A signed update from ``key_name`` (no bond, no commitment) naming the last round, with ``values`` zeros."""
    key = node_key(key_name)
    last_round = max(node.chain.height // node.chain.task.round_blocks - 1, 0)
    tx = GradientUpdate(key.public, node.chain.rules.task_id, last_round, encode_update(np.zeros(values, np.float32)))
    return encode_tx(sign_tx(tx, key, node.chain.signing_tag))


@scenario
async def test_junk_updates_relayed_by_a_peer_cost_it_its_standing(cluster: Cluster, monkeypatch: Any) -> None:
    """8 MB wrong-shape updates, then a flood of stale ones: the relayers lose standing, a stays clean.

    ::

        fake1 --announce--> a --get_txs--> fake1: an 8 MB update of the wrong shape from an unbonded key
              a checks the shape first (no hash of 8 MB, no signature): bad-update-shape, fake1 banned
        fake2 --announce 40--> a: right-shaped updates from unbonded keys: forgiven (tip-dependent)
              until fake2's relay allowance runs dry, then charged wasted-relay until banned
        a - b  keep syncing; a's mempool holds none of it

    Before the fix the signature came first and a tip-dependent refusal cost the relayer nothing.
    """
    monkeypatch.setattr(limits, "RELAY_WASTE_BURST_BYTES", SMALL_ALLOWANCE)
    # the flood overruns the allowance by a few updates: at the real refill (64 KiB/s) a loaded
    # box spends long enough on the forty that the bucket refills and the flooder is never charged
    monkeypatch.setattr(limits, "RELAY_WASTE_BYTES_PER_S", SLOW_REFILL)
    a, b = await cluster.start_many(2)
    await connect(a, b)
    huge = update_tx(a, "junk", values=HUGE_UPDATE_VALUES)
    async with FakePeer(a, relayer(a, [huge])) as fake1, http() as session:
        assert await fake1.handshake(session) == 200
        announce = m.encode(m.Announce(blocks=(), txs=(txid(huge),)))
        assert (await fake1.post(session, "announce", announce))[0] == 204
        await until(lambda: a.peers.is_banned(fake1.url), 15, what="a to ban the junk relayer")
    assert await metric(a, "gradchain_txs_rejected_total", reason=Reject.BAD_UPDATE_SHAPE.value) == 1
    param_count = a.chain.task.param_count
    stale = [update_tx(a, f"stale{i}", values=param_count) for i in range(STALE_RELAYS)]
    async with FakePeer(a, relayer(a, stale)) as fake2, http() as session:
        assert await fake2.handshake(session) == 200
        announce = m.encode(m.Announce(blocks=(), txs=tuple(txid(raw) for raw in stale)))
        assert (await fake2.post(session, "announce", announce))[0] == 204
        await until(lambda: a.peers.is_banned(fake2.url), 15, what="a to ban the stale-update flooder")
    assert await metric(a, "gradchain_txs_rejected_total", reason=Reject.NOT_BONDED.value) > 1
    assert len(a.mempool) == 0
    assert not a.peers.is_banned(b.url)
    await still_serving(a, b)


# -- headers ---------------------------------------------------------------------------------------
def header_server(batches: list[list[Header]]) -> dict[str, Any]:
    """FakePeer routes answering each get_headers with the next batch (the last one forever); no bodies."""
    served: list[int] = []

    async def headers(request: web.Request) -> web.Response:
        m.decode_as(m.GetHeaders, await request.read())
        batch = batches[min(len(served), len(batches) - 1)]
        served.append(len(batch))
        return msgpack_reply(m.Headers(headers=tuple(encode_header(h) for h in batch)))

    async def blocks(request: web.Request) -> web.Response:
        return msgpack_reply(m.Blocks(blocks=()))

    return {"headers": headers, "blocks": blocks, "served": served}  # type: ignore[dict-item]


@scenario
async def test_a_peer_repeating_known_headers_cannot_stall_sync(cluster: Cluster) -> None:
    """A peer answers every get_headers with 2000 copies of genesis; the node still syncs from a.

    ::

        fake (claims height 10000) --headers: genesis x 2000, every time--> b
        a: genesis - 1 - ... - 20 ------------------------------------------> b must reach a20

    Before the fix b asked the fake again and again under one global lock
    (2000 headers means "there are more"), unpunished, and never synced from a.
    """
    a, b = await cluster.start_many(2)
    await mine(a, 20)
    genesis = a.chain.genesis.header
    routes = header_server([[genesis] * limits.MAX_HEADERS_PER_MESSAGE])
    served = routes.pop("served")
    async with FakePeer(b, routes) as fake, http() as session:
        fake.claimed_height = 10_000
        assert await fake.handshake(session) == 200
        await until(lambda: len(served) >= 1, 10, what="b to ask the fake for headers")
        await connect(b, a)
        await wait_same_tip([a, b], target=a.chain.tip.hash, timeout=30)
        assert b.peers.bans.score(fake.url) > 0 or b.peers.is_banned(fake.url), "the staller paid for it"
        assert len(served) <= 2, f"b asked the staller {len(served)} times"
    await still_serving(b, a)


@scenario
async def test_cheap_headers_are_not_stored_and_a_batch_costs_one_disk_sync(cluster: Cluster) -> None:
    """Low-work headers off an old fork are counted and dropped; headers worth storing share one commit.

    ::

        a: genesis - 1 - ... - 160                 (regtest: 2 units of work a block)
                  \\ f1 - ... - f10              the fake's branch: 10 headers, 138 blocks' work short
                                                 of a's tip minus the anti-DoS margin: not stored
        b: genesis                               the fake's 150 headers outweigh b's tip: stored,
                  \\ g1 - ... - g150             in one transaction (one fsync), not 150
    """
    a, b = await cluster.start_many(2)
    await mine(a, 160)
    genesis = a.chain.genesis.header
    low = regtest_headers(genesis, 10)
    routes = header_server([low])
    served = routes.pop("served")
    async with FakePeer(a, routes) as fake, http() as session:
        fake.claimed_height = 10_000
        assert await fake.handshake(session) == 200
        await until(lambda: len(served) >= 1 and not a.peers.syncing, 15, what="a to sync from the fake")
    stored = await a.run_chain(lambda: sum(header_hash(h) in a.chain.index for h in low))
    assert stored == 0, f"{stored} low-work headers stored"
    commits: list[str] = []
    await b.run_chain(lambda: b.chain.storage.db.set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip().upper().startswith("COMMIT") else None))
    high = regtest_headers(genesis, 150, salt=b"heavy")
    routes = header_server([high])
    routes.pop("served")
    async with FakePeer(b, routes) as fake, http() as session:
        fake.claimed_height = 10_000
        assert await fake.handshake(session) == 200
        await until(lambda: b.chain_service.snapshot.best_header_height == 150, 15, what="b to store the headers")
    await b.run_chain(lambda: b.chain.storage.db.set_trace_callback(None))
    assert len(commits) <= 2, f"{len(commits)} commits for one batch of 150 headers"
    await connect(a, b)
    await wait_same_tip([a, b], target=a.chain.tip.hash)
    await still_serving(b, a)


@scenario
async def test_a_stop_hash_in_get_headers_costs_no_hashing(cluster: Cluster, monkeypatch: Any) -> None:
    """``get_headers`` with a stop hash ends its reply there, found in the index, not by hashing each header.

    Before, any 32 bytes as ``stop`` made the node hash every header it was
    about to serve (up to 2000, ~6 ms of chain-thread time) for a request of
    a hundred bytes; our own sync never sends one.
    """
    import node.p2p.service as service

    a = await cluster.start("a")
    await mine(a, 12)
    main = list(a.chain.main)
    hashed: list[Header] = []
    real_hash = header_hash  # the service module need not import it at all
    monkeypatch.setattr(service, "header_hash", lambda h: hashed.append(h) or real_hash(h), raising=False)
    async with FakePeer(a) as fake, http() as session:
        assert await fake.handshake(session) == 200

        async def heights(locator: bytes, stop: bytes) -> list[int]:
            body = m.encode(m.GetHeaders(locator=(locator,), stop=stop))
            async with session.post(f"{a.url}/p2p/headers", data=body, headers=fake.headers()) as resp:
                assert resp.status == 200, await resp.text()
                reply = m.decode_as(m.Headers, await resp.read())
            return [main.index(header_hash(decode_header(raw))) for raw in reply.headers]

        assert await heights(main[0], bytes(32)) == list(range(1, 13))
        assert await heights(main[0], main[5]) == list(range(1, 6))
        assert await heights(main[3], main[5]) == [4, 5]
        assert await heights(main[6], main[5]) == list(range(7, 13))  # a stop below the reply: no cut
        assert await heights(main[0], secrets.token_bytes(32)) == list(range(1, 13))  # unknown: no cut
    assert hashed == [], f"the node hashed {len(hashed)} headers to find a stop"


# -- slots, bans, addresses ---------------------------------------------------------------------------
INBOUND_CAP = 4  # MAX_INBOUND_PEERS, shrunk so a handful of fakes fill it
SLOT_FLOOD = 8  # fake inbound peers: twice the cap


def addr_counter() -> tuple[dict[str, Any], list[int]]:
    """FakePeer routes that count the Addr messages they receive (answering with none)."""
    received: list[int] = []

    async def addr(request: web.Request) -> web.Response:
        received.append(len(m.decode_as(m.Addr, await request.read()).addrs))
        return msgpack_reply(m.Addr(addrs=()))

    return {"addr": addr}, received


@scenario
async def test_inbound_slots_are_capped_and_useful_peers_keep_theirs(cluster: Cluster, monkeypatch: Any) -> None:
    """Twice as many inbound peers as slots: the cap holds, and the peer that gave us blocks stays.

    ::

        b --(inbound, delivers a block)--> a <--(inbound)-- fake1 ... fake8
        a keeps at most 4 inbound peers; each fake evicts the youngest unprotected one, never b
    """
    monkeypatch.setattr(limits, "MAX_INBOUND_PEERS", INBOUND_CAP)
    a, b = await cluster.start_many(2)
    await connect(b, a)
    (block_hash,) = await mine(b, 1)
    await wait_same_tip([a, b], target=block_hash)
    async with contextlib.AsyncExitStack() as stack, http() as session:
        for _ in range(SLOT_FLOOD):
            fake = await stack.enter_async_context(FakePeer(a))
            status = await fake.handshake(session)
            assert status in (200, 503), status
            inbound = [p for p in a.peers.peers.values() if not p.outbound]
            assert len(inbound) <= INBOUND_CAP, f"{len(inbound)} inbound peers > cap {INBOUND_CAP}"
            assert b.url in a.peers.peers, "the peer that delivered a block was evicted"
    await still_serving(a, b)


@scenario
async def test_a_banned_host_does_not_come_back_on_another_port(cluster: Cluster) -> None:
    """A peer on 127.0.0.2 is banned for garbage; the same host on a new port is refused at the door.

    ::

        fake1 http://127.0.0.2:P1 --garbage x5--> a: banned (the host 127.0.0.2)
        fake2 http://127.0.0.2:P2 --handshake--> a: 403 banned
        a - b (127.0.0.1) unaffected
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    async with http(local_host=BAD_HOST) as session:
        async with FakePeer(a, host=BAD_HOST) as fake1:
            assert await fake1.handshake(session) == 200
            for _ in range(5):
                assert (await fake1.post(session, "announce", b"\xc1 junk"))[0] == 400
            assert a.peers.is_banned(fake1.url)
        async with FakePeer(a, host=BAD_HOST) as fake2:
            assert fake2.url != fake1.url
            assert await fake2.handshake(session) == 403
            assert fake2.url not in a.peers.peers
    status, listing = await _peers_listing(a)
    assert BAD_HOST in listing["banned"] and b.url not in listing["banned"]
    await still_serving(a, b)


@scenario
async def test_a_banned_host_is_still_refused_after_the_node_restarts(cluster: Cluster) -> None:
    """The ban outlives a restart (banlist.json), and ends when it was going to end, not before.

    ::

        fake1 http://127.0.0.2:P1 --garbage x5--> a: banned
        a stops, starts again (same datadir, new port)
        fake2 http://127.0.0.2:P2 --handshake--> a: 403 banned; any /p2p/ request from 127.0.0.2: 403
        a's clock moves past the ban's end --> fake2's handshake is welcome
    """
    a = await cluster.start("a")
    async with http(local_host=BAD_HOST) as session:
        async with FakePeer(a, host=BAD_HOST) as fake1:
            assert await fake1.handshake(session) == 200
            for _ in range(5):
                assert (await fake1.post(session, "announce", b"\xc1 junk"))[0] == 400
            await until(lambda: a.peers.is_banned(fake1.url), 15, what="a to ban the junk sender")
        ban_end = a.peers.banned()[BAD_HOST]
        await cluster.stop_node(a)
        a = await cluster.start("a")
        b = await cluster.start("b")
        await connect(a, b)
        assert (await _peers_listing(a))[1]["banned"] == {BAD_HOST: ban_end}, "same host, same end"
        async with FakePeer(a, host=BAD_HOST) as fake2:
            assert await fake2.handshake(session) == 403
            status, text = await fake2.post(session, "announce", m.encode(m.Announce(blocks=(), txs=())))
            assert status == 403 and "banned" in text, "refused at the door whatever it sends"
            assert fake2.url not in a.peers.peers
            a.peers.conns.clock = lambda: time.time() + limits.BAN_DURATION_S + 1
            assert await fake2.handshake(session) == 200, "welcome again once the ban has run out"
    await still_serving(a, b)


@scenario
async def test_bad_peer_files_do_not_stop_the_node(cluster: Cluster) -> None:
    """A node whose banlist.json is garbage and whose peers.json is a 1 TB sparse file starts and serves.

    ::

        a stops; banlist.json <- bytes of junk; peers.json <- 2**40 bytes (sparse)
        a starts: two "node" events say what was ignored and why; it peers, mines, syncs
        a stops: both files are its own again (read back without a word)
    """
    a = await cluster.start("a")
    datadir = a.config.datadir
    await cluster.stop_node(a)
    (datadir / peerfiles.BANS_FILE).write_bytes(b"\x00\x01 not json at all")
    with (datadir / peerfiles.PEERS_FILE).open("wb") as handle:
        handle.truncate(2**40)
    a = await cluster.start("a")
    notes = [e.message for e in a.events if e.kind == "node" and " ignored: " in e.message]
    assert any(n.startswith("banlist.json ignored: it is not a gradchain-banlist file") for n in notes), notes
    assert any(n.startswith("peers.json ignored: it holds 1099511627776 bytes") for n in notes), notes
    b = await cluster.start("b")
    await connect(a, b)
    await still_serving(a, b)
    await cluster.stop_node(a)
    assert (datadir / peerfiles.PEERS_FILE).stat().st_size < 1024 * 1024
    assert peerfiles.load_book(datadir, time.time()).notes == []
    assert [i.url for i in peerfiles.load_book(datadir, time.time()).items] == [b.url]


async def _peers_listing(node: Node) -> tuple[int, Any]:
    async with http() as session:
        return await get_json(session, f"{node.url}/api/peers")


ADDR_FLOOD = 5 * limits.MAX_ADDRS_PER_MESSAGE  # fake addresses one peer sends
HONEST_LATE = 20  # addresses an honest peer sends after the flood


@scenario
async def test_an_address_flood_does_not_crowd_out_honest_addresses(cluster: Cluster) -> None:
    """One peer sends 5000 made-up addresses; addresses an honest peer sends afterwards are still learned.

    ::

        flooder --addr x5 (1000 each, many /16s)--> a     a processes what its rate limit allows,
        honest  --addr (20 real-looking addresses)--> a   into the flooder's share of the buckets;
                                                          the honest ones find their places

    Before the fix the book kept the first 4096 addresses it heard and
    never evicted one: the flood filled it for good.
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    flood = [f"http://10.{i % 250}.{i // 250}.7:{1000 + i}" for i in range(ADDR_FLOOD)]
    honest = [f"http://172.{16 + i}.0.9:8733" for i in range(HONEST_LATE)]
    async with FakePeer(a) as flooder, FakePeer(a) as good, http() as session:
        assert await flooder.handshake(session) == 200 and await good.handshake(session) == 200
        for start in range(0, ADDR_FLOOD, limits.MAX_ADDRS_PER_MESSAGE):
            body = m.encode(m.Addr(addrs=tuple(flood[start : start + limits.MAX_ADDRS_PER_MESSAGE])))
            assert (await flooder.post(session, "addr", body))[0] == 200
        assert (await good.post(session, "addr", m.encode(m.Addr(addrs=tuple(honest)))))[0] == 200
        flooder_group, good_group = url_group(flooder.url), url_group(good.url)
    known = a.peers.known
    # The flooder reaches only its own sixteen buckets. Honest addresses whose bucket is not one
    # of them must all be kept, save any that collide among themselves (a flood-free book shows which).
    flood_buckets = {known._new_slot(u, flooder_group)[0] for u in flood}
    control = addrman.AddressBook(known._key)
    safe = [u for u in honest if control.add(u, good_group, 0.0) and known._new_slot(u, good_group)[0] not in flood_buckets]
    assert len(flood_buckets) <= addrman.NEW_BUCKETS_PER_SOURCE_GROUP
    assert len(safe) >= HONEST_LATE // 2
    assert [u for u in safe if u not in known] == []
    from_flood = sum(1 for url in flood if url in known)
    share = addrman.NEW_BUCKETS_PER_SOURCE_GROUP * addrman.BUCKET_SLOTS
    assert from_flood <= min(share, limits.MAX_ADDRS_PER_MESSAGE), from_flood
    print(f"\naddress flood: {from_flood} of {ADDR_FLOOD} kept; "
          f"{sum(u in known for u in honest)} of {HONEST_LATE} honest addresses learned after it")
    await still_serving(a, b)


JOINERS = 10  # peers that join the hub one after another


@scenario
async def test_each_new_peer_costs_the_network_a_few_addr_messages_not_one_per_peer(cluster: Cluster) -> None:
    """Ten peers join a hub in turn; the hub relays each new address to at most two peers.

    ::

        fake1 ... fake10 --handshake, one at a time--> hub
        total Addr messages the fakes receive: <= 2 per join (fan-out), not 0 + 1 + ... + 9

    Every fake counts the Addr messages it is sent.
    """
    hub = await cluster.start("hub")
    counts: list[list[int]] = []
    async with contextlib.AsyncExitStack() as stack, http() as session:
        for _ in range(JOINERS):
            routes, received = addr_counter()
            fake = await stack.enter_async_context(FakePeer(hub, routes))
            counts.append(received)
            assert await fake.handshake(session) == 200
        await until(lambda: sum(map(len, counts)) >= limits.ADDR_RELAY_FANOUT, 10, what="some address relay")
        relayed = sum(map(len, counts))
        assert relayed <= limits.ADDR_RELAY_FANOUT * JOINERS, f"{relayed} Addr messages for {JOINERS} joins"
        print(f"\naddress relay: {relayed} Addr messages for {JOINERS} joins "
              f"(one to every peer would be {JOINERS * (JOINERS - 1) // 2})")


@scenario
async def test_a_handshake_cannot_aim_the_node_at_a_third_party(cluster: Cluster) -> None:
    """A stranger on 127.0.0.1 names a victim on 127.0.0.3: the node refuses, and never calls it.

    ::

        stranger (127.0.0.1) --handshake {listen_url: http://127.0.0.3:V}--> a: 403 unverifiable-url
        victim http://127.0.0.3:V counts the requests it gets: none
        fake on 127.0.0.2, connecting from 127.0.0.2, is welcome as before
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    hits: list[str] = []

    async def victim_handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=404)

    victim = web.Application()
    victim.router.add_route("*", "/{tail:.*}", victim_handler)
    runner = web.AppRunner(victim, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, VICTIM_HOST, 0)
    await site.start()
    victim_url = f"http://{VICTIM_HOST}:{runner.addresses[0][1]}"
    try:
        async with FakePeer(a) as liar, http() as session:
            liar.url = victim_url  # it claims the victim's URL in its handshake
            for _ in range(3):
                async with session.post(f"{a.url}/p2p/handshake", data=m.encode(liar.hello()),
                                        headers={"Content-Type": CONTENT_TYPE}) as resp:
                    assert resp.status == 403, await resp.text()
                    assert resp.headers.get("X-Gradchain-Refusal") == "unverifiable-url"
            assert not a.peers.conns.calling_back, "no call-back was started"
        async with http(local_host=BAD_HOST) as session, FakePeer(a, host=BAD_HOST) as honest:
            assert await honest.handshake(session) == 200, "a peer on its own host still connects"
    finally:
        await runner.cleanup()
    assert hits == [], f"the node sent the victim {hits}"
    await still_serving(a, b)


# -- one intake path ---------------------------------------------------------------------------------
SYNC_BLOCKS = 40


@scenario
async def test_peer_blocks_are_decoded_once_each_on_the_chain_thread(cluster: Cluster, monkeypatch: Any) -> None:
    """40 blocks by sync and 3 by announce: each decoded exactly once, never on the event loop.

    ::

        a: genesis - 1 - ... - 40    j joins (headers-first sync), then a mines 3 (announce, fetch)

    Before the fix a peer's block was decoded on the loop to read its hash,
    and the download decoded it a second time before submitting it.
    """
    import node.chain_service as chain_service

    a = await cluster.start("a")
    await mine(a, SYNC_BLOCKS)
    loop_thread = threading.current_thread()
    decoded: list[tuple[bytes, bool]] = []
    real = chain_service.decode_block

    def spy(raw: bytes) -> Any:
        block = real(raw)
        decoded.append((block.hash, threading.current_thread() is loop_thread))
        return block

    monkeypatch.setattr(chain_service, "decode_block", spy)
    j = await cluster.start("j", peers=[a])
    await wait_same_tip([a, j], timeout=60)
    await mine(a, 3)
    await wait_same_tip([a, j])
    hashes = [h for h, _ in decoded]
    assert len(hashes) == len(set(hashes)) == SYNC_BLOCKS + 3, f"{len(hashes)} decodes, {len(set(hashes))} blocks"
    assert not any(on_loop for _, on_loop in decoded), "a block was decoded on the event loop"
