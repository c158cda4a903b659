"""Hostile bytes on every /p2p/ route: a 4xx with a reason, and the node keeps serving.

The node under test is real (in-process, loopback, regtest). Requests come
from an aiohttp client of the test posing as a peer; after each battery the
node must still answer its API and still sync a block from an honest peer.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
from collections.abc import AsyncIterator

import aiohttp
import msgpack

from node import limits
from node.p2p import messages as m
from node.p2p.routes import ROUTES
from node.p2p.session import CONTENT_TYPE, PEER_HEADER, SESSION_HEADER
from node.service import Node
from tests.conftest import until
from tests.node.harness import (
    Cluster,
    FakePeer,
    connect,
    get_json,
    http,
    mine,
    scenario,
    wait_same_tip,
)

MIB = 1024 * 1024
HUGE_BODY_BYTES = 64 * MIB  # declared by the client; the node must refuse before reading it
TRICKLE_CHUNK_BYTES = 64 * 1024  # the generator's chunk: 1024 of them make the 64 MiB
TRICKLE_PAUSE_S = 0.05  # per chunk: producing the whole body would take ~50 s
RSS_SLACK_BYTES = 32 * MIB  # far below the 64 MiB a buffered body would add
FAKE_PEER = "http://127.0.0.1:9"  # a listen URL nobody serves (the discard port)

GARBAGE = b"\xc1\xff not msgpack \x00\x01"  # 0xc1 is the one byte msgpack never uses
HASH = bytes(range(32))

# Bodies every route must refuse with 400, whatever its message kind.
BAD_BODIES: dict[str, bytes] = {
    "garbage bytes": GARBAGE,
    "empty body": b"",
    "a map, not an array": msgpack.packb({"blocks": [], "txs": []}),
    "an ext type": msgpack.packb(msgpack.ExtType(7, b"boom")),
    "a bare integer": msgpack.packb(42),
    "too many fields": msgpack.packb([[], [], [], [], [], [], [], [], [], [], [], []]),
    "trailing bytes": msgpack.packb([[], []]) + b"\x00",
    "bool for a field": msgpack.packb([True, False]),
    "nested too deep": msgpack.packb([[[[[[HASH]]]]], []]),
}


def _hello(node: Node, listen_url: str, **changes: object) -> bytes:
    chain = node.chain
    fields = {
        "magic": chain.network.magic, "protocol_version": limits.PROTOCOL_VERSION, "chain_id": chain.chain_id,
        "genesis": chain.genesis_hash, "height": chain.height, "tip": chain.tip.hash,
        "listen_url": listen_url, "nonce": secrets.randbits(64), "user_agent": "fuzz/0.1",
        "session": secrets.token_bytes(m.SESSION_BYTES),
    }
    fields.update(changes)
    return msgpack.packb(list(fields.values()), use_bin_type=True)


async def post_raw(session: aiohttp.ClientSession, node: Node, route: str, body: bytes,
                   sender: str | None = FAKE_PEER, token: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": CONTENT_TYPE}
    if sender is not None:
        headers[PEER_HEADER] = sender
    if token is not None:
        headers[SESSION_HEADER] = token.hex()
    async with session.post(f"{node.url}/p2p/{route}", data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def post(session: aiohttp.ClientSession, node: Node, route: str, body: bytes,
               sender: str | None = FAKE_PEER, token: bytes | None = None) -> tuple[int, str]:
    status, raw = await post_raw(session, node, route, body, sender, token)
    return status, raw.decode("utf-8", "replace")


async def still_serving(node: Node, peer: Node) -> None:
    """The node answers its API and connects a block the honest peer mines."""
    async with http() as session:
        status, body = await get_json(session, f"{node.url}/api/status")
        assert status == 200 and body["height"] == node.chain.height
    await mine(peer, 1)
    await wait_same_tip([node, peer])


@scenario
async def test_every_route_refuses_malformed_bodies_with_a_reason(cluster: Cluster) -> None:
    """Each /p2p/ route x each bad body: 400 and a one-line reason naming the kind.

    ::

        fuzzer --(garbage, wrong types, maps, ext, ...)--> a - b (honest)
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    async with http() as session:
        for route, (kind, _) in ROUTES.items():
            for label, body in BAD_BODIES.items():
                status, reason = await post(session, a, route, body, sender=None)
                assert status == 400, f"{route} / {label}: {status} {reason}"
                assert reason.startswith(kind), f"{route} / {label}: reason {reason!r}"
            # A body over the route's cap is refused before it is parsed.
            cap = m.MESSAGES[kind].MAX_BYTES
            status, reason = await post(session, a, route, b"\x00" * (cap + 1), sender=None)
            assert status == 413 and str(cap) in reason, f"{route} oversize: {status} {reason}"
            # The routes take POST only.
            async with session.get(f"{a.url}/p2p/{route}") as resp:
                assert resp.status == 405
        async with session.post(f"{a.url}/p2p/nosuchroute", data=b"") as resp:
            assert resp.status == 404
    assert a.peers.bans.banned(0.0) == {}, "no sender header: nobody to punish"
    await still_serving(a, b)


@scenario
async def test_wrong_field_types_and_values_are_refused(cluster: Cluster) -> None:
    """Well-formed msgpack with a wrong field: type, length, range, URL shape.

    ::

        fuzzer --(handshake with a str height, a 31-byte hash, ...)--> a - b
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    cases: list[tuple[str, bytes, str]] = [
        ("handshake", _hello(a, FAKE_PEER, height="7"), "handshake.height"),
        ("handshake", _hello(a, FAKE_PEER, height=-1), "handshake.height"),
        ("handshake", _hello(a, FAKE_PEER, height=2**32), "handshake.height"),
        ("handshake", _hello(a, FAKE_PEER, genesis=HASH[:31]), "handshake.genesis"),
        ("handshake", _hello(a, FAKE_PEER, magic="regt"), "handshake.magic"),
        ("handshake", _hello(a, "http://user@host:1/path"), "handshake.listen_url"),
        ("handshake", _hello(a, "http://127.0.0.1:99999"), "handshake.listen_url"),
        ("handshake", _hello(a, FAKE_PEER, user_agent="bell\x07"), "handshake.user_agent"),
        ("handshake", _hello(a, FAKE_PEER, session=HASH[:31]), "handshake.session"),
        ("announce", msgpack.packb([[HASH + b"x"], []]), "announce"),  # over max_bin_len at unpack
        ("announce", msgpack.packb([[12345], []]), "announce.blocks[0]"),
        ("announce", msgpack.packb([[], [HASH] * (limits.MAX_INV_PER_ANNOUNCE + 1)]), "announce"),
        ("headers", msgpack.packb([[HASH], b"short"]), "get_headers.stop"),
        ("headers", msgpack.packb([[HASH] * (limits.MAX_LOCATOR_HASHES + 1), HASH]), "get_headers"),
        ("blocks", msgpack.packb([[HASH] * (limits.MAX_BLOCKS_PER_REQUEST + 1)]), "get_blocks"),
        ("blocks", msgpack.packb([HASH]), "get_blocks.hashes"),
        ("txs", msgpack.packb([[1, 2, 3]]), "get_txs.txids[0]"),
        ("addr", msgpack.packb([["ftp://127.0.0.1:21"]]), "addr.addrs[0]"),
        ("addr", msgpack.packb([[b"http://127.0.0.1:1"]]), "addr"),  # no bin allowed at unpack
    ]
    async with http() as session:
        for route, body, reason_start in cases:
            status, reason = await post(session, a, route, body, sender=None)
            assert status == 400, f"{route} {reason_start}: {status} {reason}"
            assert reason.startswith(reason_start), f"{route}: reason {reason!r}"
        # Handshakes that decode but are for another chain, or from the node itself: 409.
        other_genesis = _hello(a, FAKE_PEER, genesis=HASH)
        status, reason = await post(session, a, "handshake", other_genesis, sender=None)
        assert status == 409 and "genesis" in reason
        own = _hello(a, FAKE_PEER, nonce=a.instance_nonce)
        status, reason = await post(session, a, "handshake", own, sender=None)
        assert status == 409 and "itself" in reason
        assert FAKE_PEER not in a.peers.peers
    await still_serving(a, b)


@scenario
async def test_requests_without_a_handshake_get_403(cluster: Cluster) -> None:
    """Valid messages from nobody (no header) or a stranger (unknown URL): 403, nothing done.

    ::

        stranger --(announce, get_headers, get_blocks, get_txs, addr)--> a
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    valid: dict[str, m.Message] = {
        "announce": m.Announce(blocks=(HASH,), txs=()),
        "headers": m.GetHeaders(locator=(a.chain.genesis_hash,), stop=m.ZERO_HASH),
        "blocks": m.GetBlocks(hashes=(a.chain.genesis_hash,)),
        "txs": m.GetTxs(txids=(HASH,)),
        "addr": m.Addr(addrs=("http://127.0.0.1:2",)),
    }
    async with http() as session:
        for route, msg in valid.items():
            for sender in (None, "http://127.0.0.1:3"):
                status, reason = await post(session, a, route, m.encode(msg), sender=sender)
                assert status == 403 and "handshake first" in reason, f"{route} from {sender}: {status}"
    assert "http://127.0.0.1:2" not in a.peers.known, "an addr from a stranger must not be learned"
    await still_serving(a, b)


@scenario
async def test_a_handshaken_peer_sending_garbage_is_banned(cluster: Cluster) -> None:
    """A peer's malformed messages add up (20 points each): the fifth bans it.

    ::

        fake (handshaken, token granted) --garbage x5--> a      a - b keep going
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    strikes = limits.BAN_THRESHOLD // (limits.BAN_THRESHOLD // 5)
    async with FakePeer(a) as fake, http() as session:
        assert await fake.handshake(session) == 200 and fake.url in a.peers.peers
        for strike in range(strikes):
            assert not a.peers.is_banned(fake.url), f"banned after only {strike} strikes"
            status, _ = await fake.post(session, "announce", GARBAGE)
            assert status == 400
        assert a.peers.is_banned(fake.url) and fake.url not in a.peers.peers
        status, reason = await fake.post(session, "announce", m.encode(m.Announce(blocks=(), txs=())))
        assert status == 403 and "banned" in reason
        status, listing = await get_json(session, f"{a.url}/api/peers")
        assert status == 200 and fake.url in listing["banned"]
    assert not a.peers.is_banned(b.url)
    await still_serving(a, b)


SPOOF_ATTEMPTS = 10  # twice the strikes that would ban the named peer if the claim were believed


@scenario
async def test_a_spoofer_naming_an_honest_peer_cannot_get_it_banned(cluster: Cluster) -> None:
    """Garbage and announces "from" b without b's token: 403 each time, b unpunished and syncing.

    ::

        spoofer --(X-Gradchain-Peer: b, no or a guessed token)--> a - b (honest)

    The spoofer also handshakes naming b's URL: a answers without a token and
    calls b back, which does not recognise the spoofer's token; b then calls a
    and the honest pair completes its exchange. Nothing reaches the spoofer.
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    granted = a.peers.session_for(b.url).token_in
    async with http() as session:
        reply = m.decode_as(m.HandshakeReply, (await post_raw(session, a, "handshake", _hello(a, b.url)))[1])
        assert reply.session == m.NO_SESSION, "a must not hand b's token to whoever names b"
        announce = m.encode(m.Announce(blocks=(HASH,), txs=()))
        for attempt in range(SPOOF_ATTEMPTS):
            token = None if attempt % 2 else secrets.token_bytes(m.SESSION_BYTES)
            for body in (GARBAGE, announce):
                status, reason = await post(session, a, "announce", body, sender=b.url, token=token)
                assert status == 403 and "handshake again" in reason, f"attempt {attempt}: {status} {reason}"
    assert a.peers.bans.banned(0.0) == {}, "the claimed peer must not be punished"
    assert a.peers.session_for(b.url).token_in == granted
    await until(lambda: b.url in a.peers.peers and a.url in b.peers.peers, 10, what="a and b to stay peers")
    await still_serving(a, b)


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; ru_maxrss as a fallback)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _trickle(total: int) -> AsyncIterator[bytes]:
    """A body that would take ~50 s to produce: the server must not wait for it."""
    sent = 0
    while sent < total:
        await asyncio.sleep(TRICKLE_PAUSE_S)
        sent += TRICKLE_CHUNK_BYTES
        yield b"\x00" * TRICKLE_CHUNK_BYTES


@scenario
async def test_a_64_mib_body_gets_413_without_being_read(cluster: Cluster) -> None:
    """Content-Length: 64 MiB on /p2p/blocks, /p2p/handshake and /api/tx: 413 at once.

    ::

        client --(headers say 64 MiB, body trickles)--> a: 413 before the body arrives

    The body generator would need ~50 s; the answer comes from the declared
    length alone, and the process's resident memory does not grow by the
    64 MiB a buffered body would take.
    """
    (a,) = await cluster.start_many(1)
    before = _rss_bytes()
    async with http() as session:
        for path in ("/p2p/blocks", "/p2p/handshake", "/api/tx"):
            headers = {"Content-Type": CONTENT_TYPE, "Content-Length": str(HUGE_BODY_BYTES)}
            async with session.post(f"{a.url}{path}", data=_trickle(HUGE_BODY_BYTES), headers=headers) as resp:
                assert resp.status == 413, path
                assert str(HUGE_BODY_BYTES) in await resp.text()
        # The same without a length (chunked): read only until it passes the cap.
        async with session.post(f"{a.url}/p2p/handshake", data=_trickle(HUGE_BODY_BYTES),
                                headers={"Content-Type": CONTENT_TYPE}) as resp:
            assert resp.status == 413
        status, _ = await get_json(session, f"{a.url}/api/status")
        assert status == 200
    assert _rss_bytes() - before < RSS_SLACK_BYTES


@scenario
async def test_a_flood_of_malformed_requests_leaves_the_node_serving(cluster: Cluster) -> None:
    """200 concurrent garbage requests across all routes; then a real peer still syncs.

    ::

        fuzzer x200 (concurrent) --> a - b
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    bodies = list(BAD_BODIES.values())
    routes = list(ROUTES)

    async def one(i: int, session: aiohttp.ClientSession) -> int:
        status, _ = await post(session, a, routes[i % len(routes)], bodies[i % len(bodies)], sender=None)
        return status

    async with http() as session:
        statuses = await asyncio.gather(*(one(i, session) for i in range(200)))
    assert set(statuses) == {400}
    await until(lambda: b.url in a.peers.peers, 10, what="b to stay a's peer")
    await still_serving(a, b)
