"""Peers: handshakes, gossip (announce, then fetch), headers-first sync, bans.

A peer is known by its listen URL. Either side may start a connection with
``POST /p2p/handshake``; after it, both know each other's URL and talk by
plain HTTP requests in both directions. Peers given with ``--peer`` are
retried with backoff whenever the connection drops, so a restarted peer is
found again.

Session tokens make the URL claim unspoofable. For each peer URL a node
issues ``token_in`` (32 random bytes, per node start) and sends it only in a
Handshake it POSTs *to that URL*, so only whoever listens there learns it.
Every later /p2p/ request carries ``X-Gradchain-Peer: <url>`` and
``X-Gradchain-Session: <hex of the token the receiver issued>``; a wrong or
missing token is 403 and punishes nobody. A handshake proves its claimed URL
the same way, by presenting the receiver's token in the session header; a
handshake that cannot (first contact, or the receiver restarted) is answered
with ``NO_SESSION`` and the receiver calls the claimed URL back, presenting
the token the claimant just sent: the genuine owner recognises it and the
exchange completes in that call. A stranger who names an honest peer's URL
thus never receives a token for it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from consensus.block import decode_block
from consensus.errors import BlockRejected, Reject
from consensus.header import decode as decode_header
from consensus.header import hash_hex
from consensus.tx import txid
from node import limits
from node.mempool import PolicyRejected
from node.p2p import messages as m
from node.p2p.penalties import TIP_DEPENDENT, BanList, Misbehaviour, RelayAllowance, penalty

log = logging.getLogger("gradchain.p2p")

PEER_HEADER = "X-Gradchain-Peer"
SESSION_HEADER = "X-Gradchain-Session"
HANDSHAKE_AGAIN = "unknown or stale session token: handshake again"
MAX_SESSIONS = limits.MAX_KNOWN_ADDRS  # one per URL we know or were told of: a handshake flood cannot grow memory
# An unproven handshake makes us dial the URL it claims: bound how many such call-backs run at once,
# so a flood of handshakes naming other hosts cannot turn the node into a request reflector.
MAX_CALLBACKS_IN_FLIGHT = limits.MAX_OUTBOUND_PEERS
CONTENT_TYPE = "application/msgpack"
RETRY_MIN_S = 0.5  # first retry of a dropped --peer: quick, it may just be restarting
RETRY_MAX_S = 30.0  # backoff ceiling: a long-dead peer costs one request per half minute
CONNECT_LOOP_S = 0.5  # how often the connector looks at seeds and the address book


class PeerError(Exception):
    """A request to a peer failed (network, timeout, refusal, bad answer)."""


def _new_token() -> bytes:
    return secrets.token_bytes(m.SESSION_BYTES)


@dataclass
class Session:
    """The tokens between this node and one peer URL.

    ``token_in`` is what we issued and expect on the peer's requests;
    ``token_out`` is what the peer issued and we present on ours, learnt
    only from a source that proved to be the URL's owner; ``candidate`` is
    a token offered by an unproven handshake claiming the URL, which we
    present once when calling that URL back.
    """

    token_in: bytes = field(default_factory=_new_token)
    token_out: bytes | None = None
    candidate: bytes | None = None


@dataclass
class Peer:
    url: str
    height: int
    tip: bytes
    user_agent: str
    outbound: bool
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    relay_allowance: RelayAllowance = field(default_factory=RelayAllowance)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "height": self.height,
            "tip": hash_hex(self.tip),
            "user_agent": self.user_agent,
            "direction": "outbound" if self.outbound else "inbound",
            "connected_for_s": round(time.time() - self.connected_at, 1),
        }


@dataclass
class _Retry:
    next_at: float = 0.0
    delay: float = RETRY_MIN_S


class PeerManager:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.peers: dict[str, Peer] = {}
        self.known: set[str] = set()
        self.seeds: list[str] = list(node.config.peers)
        self.bans = BanList()
        self._retry: dict[str, _Retry] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connector: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()
        self._connecting: set[str] = set()
        self._calling_back: set[str] = set()  # URLs being called back to verify an inbound claim
        self._sessions: dict[str, Session] = {}
        self._registered: dict[str, asyncio.Event] = {}

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=limits.REQUEST_TIMEOUT_S, connect=limits.HANDSHAKE_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._connector = asyncio.create_task(self._connect_loop(), name="p2p-connector")

    async def stop(self) -> None:
        tasks = [t for t in (self._connector, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- our own facts ----------------------------------------------------------------------
    def _hello(self) -> dict[str, Any]:
        chain = self.node.chain
        return {
            "magic": chain.network.magic,
            "protocol_version": limits.PROTOCOL_VERSION,
            "chain_id": chain.chain_id,
            "genesis": chain.genesis_hash,
            "height": chain.height,
            "tip": chain.tip.hash,
            "listen_url": self.node.url,
            "nonce": self.node.instance_nonce,
            "user_agent": limits.USER_AGENT,
        }

    def handshake_reply(self, session: bytes = m.NO_SESSION) -> m.HandshakeReply:
        sample = random.sample(sorted(self.peers), min(len(self.peers), limits.MAX_ADDRS_IN_HANDSHAKE))
        return m.HandshakeReply(**self._hello(), session=session, peers=tuple(sample))

    def check_hello(self, hello: m.Handshake | m.HandshakeReply) -> str | None:
        """Why a peer's handshake is refused, or None if it is welcome."""
        chain = self.node.chain
        if hello.magic != chain.network.magic or hello.chain_id != chain.chain_id:
            return f"wrong network (chain id {hello.chain_id}, ours {chain.chain_id})"
        if hello.genesis != chain.genesis_hash:
            return f"different genesis {hash_hex(hello.genesis)[:16]}…: another chain or task"
        if hello.protocol_version < limits.MIN_PROTOCOL_VERSION:
            return f"protocol version {hello.protocol_version} is too old"
        if hello.nonce == self.node.instance_nonce:
            return "that is this node itself"
        return None

    # -- session tokens ----------------------------------------------------------------------
    def session_for(self, url: str) -> Session:
        """The tokens for ``url``, created (a fresh ``token_in``) on first use."""
        session = self._sessions.get(url)
        if session is None:
            if len(self._sessions) >= MAX_SESSIONS:
                self._evict_session()
            session = self._sessions[url] = Session()
        return session

    def _evict_session(self) -> None:
        """Forget the oldest session of a URL that is neither a peer nor being dialled."""
        for url in self._sessions:
            if url not in self.peers and url not in self._connecting and url not in self._calling_back:
                del self._sessions[url]
                return

    def authenticate(self, url: str | None, presented: str | None) -> bool:
        """True if ``presented`` (hex) is the token we issued to ``url``: the caller owns that URL."""
        if url is None or presented is None:
            return False
        session = self._sessions.get(url)
        if session is None:
            return False
        try:
            token = bytes.fromhex(presented)
        except ValueError:
            return False
        return hmac.compare_digest(token, session.token_in)

    def on_handshake(self, hello: m.Handshake, presented: str | None) -> m.HandshakeReply:
        """Answer a handshake already checked by :meth:`check_hello`.

        A caller that presents the token we issued to its URL is that URL's
        owner: take its token, register it, and grant ours. Any other claim
        gets ``NO_SESSION`` and a call-back to the claimed URL, whose owner
        completes the exchange (an impostor learns nothing and its token is
        never used).
        """
        url = hello.listen_url
        if not url or url == self.node.url:
            return self.handshake_reply()
        if self.authenticate(url, presented):
            session = self.session_for(url)
            session.token_out, session.candidate = hello.session, None
            self.register(hello, outbound=False)
            return self.handshake_reply(session.token_in)
        self.session_for(url).candidate = hello.session
        if (
            url not in self._connecting
            and url not in self._calling_back
            and len(self._calling_back) < MAX_CALLBACKS_IN_FLIGHT
        ):
            self.spawn(self.connect(url, outbound=False))
        return self.handshake_reply()

    # -- registering peers ---------------------------------------------------------------------
    def register(self, hello: m.Handshake | m.HandshakeReply, *, outbound: bool) -> Peer | None:
        url = hello.listen_url
        if not url or url == self.node.url:
            return None
        peer = self.peers.get(url)
        if peer is None:
            peer = Peer(url, hello.height, hello.tip, hello.user_agent, outbound)
            self.peers[url] = peer
            self.node.metrics.peers.set(len(self.peers))
            self.node.event("peer", f"connected peer {url} (height {hello.height}, {'out' if outbound else 'in'})")
            self.spawn(self._share_mempool(url))
            self.spawn(self._gossip_address(url))
        else:
            peer.height, peer.tip, peer.last_seen = hello.height, hello.tip, time.time()
        self.known.add(url)
        self._retry.pop(url, None)
        event = self._registered.get(url)
        if event is not None:
            event.set()
        if hello.height > self.node.chain.height:
            self.spawn(self.sync_from(url))
        return peer

    def drop(self, url: str, reason: str) -> None:
        if self.peers.pop(url, None) is not None:
            self.node.metrics.peers.set(len(self.peers))
            self.node.event("peer", f"disconnected peer {url}: {reason}")

    def punish(self, url: str, code: Reject | Misbehaviour, detail: str, *, relayed_tx: bool = False) -> None:
        points = penalty(code, relayed_tx=relayed_tx)
        if points <= 0:
            return
        if self.bans.punish(url, points, time.time()):
            self.node.metrics.peer_bans.inc()
            self.node.event("peer", f"banned peer {url} for {int(self.bans.duration_s)}s: {detail}")
            self.drop(url, "banned")
            self.known.discard(url)
            self._sessions.pop(url, None)

    def is_banned(self, url: str) -> bool:
        return self.bans.is_banned(url, time.time())

    # -- outgoing requests ------------------------------------------------------------------------
    async def request(self, url: str, route: str, msg: m.Message, reply_kind: str | None,
                      *, token: bytes | None = None) -> m.Message | None:
        """POST ``msg`` to ``url``/p2p/``route`` and decode the reply as ``reply_kind``.

        Presents ``token`` (default: the one ``url`` issued us) in the session
        header. A 403 asking us to handshake again (the peer restarted, or
        never knew us) raises ``PeerError``, which makes callers drop the
        peer, and starts a fresh handshake that re-registers it.
        """
        assert self._session is not None
        headers = {"Content-Type": CONTENT_TYPE, PEER_HEADER: self.node.url}
        session = self._sessions.get(url)
        token = token if token is not None or session is None else session.token_out
        if token is not None:
            headers[SESSION_HEADER] = token.hex()
        try:
            async with self._session.post(f"{url}/p2p/{route}", data=m.encode(msg), headers=headers) as resp:
                if resp.status >= 400:
                    text = (await resp.text())[:200]
                    if resp.status == 403 and route != "handshake" and "handshake" in text:
                        self.spawn(self.connect(url))
                    raise PeerError(f"{route}: HTTP {resp.status} {text}")
                if resp.status == 204 or reply_kind is None:
                    return None
                if resp.status != 200:
                    raise PeerError(f"{route}: HTTP {resp.status}")
                cap = m.MESSAGES[reply_kind].MAX_BYTES
                if resp.content_length is not None and resp.content_length > cap:
                    raise PeerError(f"{route}: reply of {resp.content_length} bytes > {cap}")
                raw = await resp.content.read(cap + 1)
                while len(raw) <= cap and not resp.content.at_eof():
                    more = await resp.content.read(cap + 1 - len(raw))
                    if not more:
                        break
                    raw += more
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerError(f"{route}: {type(exc).__name__} {exc}") from None
        try:
            return m.decode(reply_kind, raw)
        except m.MessageError as exc:
            self.punish(url, Misbehaviour.MALFORMED_MESSAGE, str(exc))
            raise PeerError(f"{route}: malformed reply ({exc})") from None

    async def _handshake(self, url: str) -> m.HandshakeReply:
        """POST our Handshake (with the token we issue ``url``) and take the token it grants, if any.

        The proof presented is the token ``url``'s claimant offered us, else
        the one ``url`` granted us before. The reply comes from the URL we
        dialled, so a granted token is trusted as that owner's.
        """
        session = self.session_for(url)
        proof = session.candidate if session.candidate is not None else session.token_out
        hello = m.Handshake(**self._hello(), session=session.token_in)
        reply = await self.request(url, "handshake", hello, "handshake_reply", token=proof)
        assert isinstance(reply, m.HandshakeReply)
        if reply.session != m.NO_SESSION:
            session.token_out, session.candidate = reply.session, None
        elif session.candidate is not None and session.candidate == proof:
            session.candidate = None  # the URL's owner did not recognise it: an impostor's token
        return reply

    async def _await_registered(self, url: str) -> Peer | None:
        """Wait for ``url``'s call-back handshake to register it, up to the handshake timeout."""
        event = self._registered.setdefault(url, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), limits.HANDSHAKE_TIMEOUT_S)
        except TimeoutError:
            log.debug("no call-back from %s", url)
        finally:
            self._registered.pop(url, None)
        return self.peers.get(url)

    async def connect(self, url: str, *, outbound: bool = True) -> Peer | None:
        """Handshake with ``url``; register it if it is on our chain.

        If ``url`` cannot yet grant us a token (first contact, or it
        restarted) it calls our URL back, and that call registers it. If it
        offered us a token while our first handshake was in flight (both
        sides dialled at once), one more handshake presents that token.
        ``outbound=False`` is the call-back that verifies a peer which dialled
        us: it completes the session but takes no outbound slot.
        """
        in_flight = self._connecting if outbound else self._calling_back
        if url in self._connecting or url in self._calling_back or self.is_banned(url):
            return None
        in_flight.add(url)
        try:
            offered = self.session_for(url).candidate
            reply = await self._handshake(url)
            candidate = self.session_for(url).candidate
            if reply.session == m.NO_SESSION and candidate is not None and candidate != offered:
                reply = await self._handshake(url)
        except PeerError as exc:
            self._schedule_retry(url)
            log.debug("handshake with %s failed: %s", url, exc)
            return None
        finally:
            in_flight.discard(url)
        refusal = self.check_hello(reply)
        if refusal is not None:
            log.info("not peering with %s: %s", url, refusal)
            if "itself" in refusal:
                self.known.discard(url)
                if url in self.seeds:
                    self.seeds.remove(url)
            else:
                self._schedule_retry(url)
            return None
        if reply.listen_url != url:
            # A peer that lists itself under another URL is reachable where we asked.
            reply = m.HandshakeReply(**{**_fields(reply), "listen_url": url})
        if reply.session == m.NO_SESSION:
            peer = self.peers.get(url) or await self._await_registered(url)
            if peer is not None and outbound:
                peer.outbound = True
        else:
            peer = self.register(reply, outbound=outbound)
        for addr in reply.peers:
            if addr != self.node.url and len(self.known) < limits.MAX_KNOWN_ADDRS:
                self.known.add(addr)
        return peer

    def _schedule_retry(self, url: str) -> None:
        retry = self._retry.setdefault(url, _Retry())
        retry.next_at = time.monotonic() + retry.delay
        retry.delay = min(retry.delay * 2, RETRY_MAX_S)

    async def _connect_loop(self) -> None:
        last_ping = time.monotonic()
        while True:
            now = time.monotonic()
            for url in self.dial_candidates(now):
                self.spawn(self.connect(url))
            if now - last_ping > limits.PING_INTERVAL_S:
                last_ping = now
                for url in list(self.peers):
                    self.spawn(self._ping(url))
            await asyncio.sleep(CONNECT_LOOP_S)

    def dial_candidates(self, now: float) -> list[str]:
        """The URLs to dial on this pass of the connector.

        Every --peer seed we are not connected to (the user asked for them),
        plus learned addresses only while outbound slots are free: at most
        ``MAX_OUTBOUND_PEERS`` outbound links, counting dials in progress.
        (Dialling every learned address at once let one Addr message make the
        node open hundreds of connections.)
        """

        def due(url: str) -> bool:
            retry = self._retry.get(url)
            return (
                url not in self.peers and url not in self._connecting and url not in self._calling_back
                and (retry is None or retry.next_at <= now) and not self.is_banned(url)
            )

        seeds = [u for u in self.seeds if due(u)]
        outbound = sum(1 for p in self.peers.values() if p.outbound)
        room = limits.MAX_OUTBOUND_PEERS - outbound - len(self._connecting) - len(seeds)
        if room <= 0:
            return seeds
        learned = sorted(u for u in self.known if u not in self.seeds and due(u))
        return seeds + random.sample(learned, min(room, len(learned)))

    async def _ping(self, url: str) -> None:
        try:
            reply = await self._handshake(url)
        except PeerError as exc:
            self.drop(url, str(exc))
            self._schedule_retry(url)
            return
        # NO_SESSION: the peer restarted and forgot us; its call-back re-registers it.
        if reply.session != m.NO_SESSION and self.check_hello(reply) is None:
            self.register(m.HandshakeReply(**{**_fields(reply), "listen_url": url}), outbound=True)

    # -- gossip ------------------------------------------------------------------------------------
    def announce_block(self, block_hash: bytes, *, exclude: str | None) -> None:
        self._announce(m.Announce(blocks=(block_hash,), txs=()), exclude)

    def announce_tx(self, tx_id: bytes, *, exclude: str | None) -> None:
        self._announce(m.Announce(blocks=(), txs=(tx_id,)), exclude)

    def announce_txs(self, tx_ids: list[bytes], *, exclude: str | None) -> None:
        """Announce many txids (a reorg's re-pooled txs) in as few messages as fit."""
        for start in range(0, len(tx_ids), limits.MAX_INV_PER_ANNOUNCE):
            chunk = tuple(tx_ids[start : start + limits.MAX_INV_PER_ANNOUNCE])
            self._announce(m.Announce(blocks=(), txs=chunk), exclude)

    def _announce(self, msg: m.Announce, exclude: str | None) -> None:
        for url in list(self.peers):
            if url != exclude:
                self.spawn(self._send_announce(url, msg))

    async def _gossip_address(self, new_url: str) -> None:
        """Tell our other peers about a new one (and learn theirs): a node that knew only
        a seed meets the rest of the network at once, not at the next ping."""
        for url in [u for u in self.peers if u != new_url]:
            try:
                reply = await self.request(url, "addr", m.Addr(addrs=(new_url,)), "addr")
            except PeerError as exc:
                log.debug("addr to %s failed: %s", url, exc)
                continue
            assert isinstance(reply, m.Addr)
            self.learn(reply.addrs)

    async def _share_mempool(self, url: str) -> None:
        """Tell a new peer what our mempool holds: updates made before it connected still spread."""
        tx_ids = await self.node.run_chain(self.node.mempool.txids)
        if tx_ids:
            await self._send_announce(url, m.Announce(blocks=(), txs=tuple(tx_ids[: limits.MAX_INV_PER_ANNOUNCE])))

    async def _send_announce(self, url: str, msg: m.Announce) -> None:
        try:
            await self.request(url, "announce", msg, None)
        except PeerError as exc:
            self.drop(url, str(exc))
            self._schedule_retry(url)

    async def on_announce(self, url: str, msg: m.Announce) -> None:
        """A peer has new blocks or txs: fetch those we lack from it."""
        missing_blocks = [h for h in msg.blocks if not self.node.chain.has_block(h)]
        if missing_blocks:
            await self.fetch_blocks(url, missing_blocks)
        missing_txs = [t for t in msg.txs if t not in self.node.mempool]
        if missing_txs:
            peer = self.peers.get(url)
            if peer is not None and peer.height > self.node.chain.height:
                # Its txs build on blocks we lack: catch up first, or they look invalid.
                await self.sync_from(url)
            await self.fetch_txs(url, missing_txs)

    async def fetch_blocks(self, url: str, hashes: list[bytes]) -> None:
        for start in range(0, len(hashes), limits.MAX_BLOCKS_PER_REQUEST):
            wanted = hashes[start : start + limits.MAX_BLOCKS_PER_REQUEST]
            try:
                reply = await self.request(url, "blocks", m.GetBlocks(hashes=tuple(wanted)), "blocks")
            except PeerError as exc:
                self.drop(url, str(exc))
                return
            assert isinstance(reply, m.Blocks)
            for raw in reply.blocks:
                if not await self.deliver_block(url, raw, set(wanted)):
                    return

    async def deliver_block(self, url: str, raw: bytes, requested: set[bytes]) -> bool:
        """Decode and submit a block from ``url``; False stops the batch."""
        try:
            block = decode_block(raw)
        except BlockRejected as exc:
            self.punish(url, exc.code, f"undecodable block: {exc}")
            return False
        if block.hash not in requested:
            self.punish(url, Misbehaviour.UNREQUESTED_DATA, f"block {hash_hex(block.hash)[:16]} not asked for")
            return False
        try:
            result = await self.node.submit_block(block, source=url)
        except BlockRejected as exc:
            if exc.code == Reject.UNKNOWN_PARENT:
                self.spawn(self.sync_from(url))
            else:
                self.punish(url, exc.code, f"invalid block {hash_hex(block.hash)[:16]}: {exc}")
            return False
        if result.status == "side" and self._bodies_missing():
            # The block extends a branch with more work whose earlier bodies we lack
            # (we hold only their headers, say from a sync that saw a tie): fetch them
            # from the peer that has this block, or the branch never connects.
            self.spawn(self.sync_from(url))
        return True

    def _bodies_missing(self) -> bool:
        """True if the best header has more work than the tip: some bodies are still to come."""
        chain = self.node.chain
        return bool(chain.best_header.chain_work > chain.tip.chain_work)

    async def fetch_txs(self, url: str, tx_ids: list[bytes]) -> None:
        try:
            reply = await self.request(url, "txs", m.GetTxs(txids=tuple(tx_ids)), "txs")
        except PeerError as exc:
            self.drop(url, str(exc))
            return
        assert isinstance(reply, m.Txs)
        wanted = set(tx_ids)
        for raw in reply.txs:
            if txid(raw) not in wanted:
                self.punish(url, Misbehaviour.UNREQUESTED_DATA, "a tx we did not ask for")
                continue
            try:
                await self.node.submit_tx(raw, source=url)
            except BlockRejected as exc:
                self.node.metrics.txs_rejected.labels(reason=exc.code.value).inc()
                self.punish(url, exc.code, f"invalid tx: {exc}", relayed_tx=True)
                peer = self.peers.get(url)
                if exc.code in TIP_DEPENDENT and peer is not None:
                    if not peer.relay_allowance.spend(len(raw), time.time()):
                        self.punish(url, Misbehaviour.WASTED_RELAY, f"relayed txs refused on our tip: {exc}")
            except PolicyRejected as exc:
                self.node.metrics.txs_rejected.labels(reason=exc.reason.value).inc()

    # -- headers-first sync ---------------------------------------------------------------------------
    async def sync_from(self, url: str) -> None:
        """Fetch headers from ``url`` until it has no more, then the missing bodies."""
        async with self._sync_lock:
            self.node.syncing = True
            try:
                await self._sync(url)
            finally:
                self.node.syncing = False

    async def _sync(self, url: str) -> None:
        from node.p2p.download import BlockDownloader

        while url in self.peers:
            locator = await self.node.run_chain(self._best_header_locator)
            try:
                reply = await self.request(
                    url, "headers", m.GetHeaders(locator=tuple(locator), stop=m.ZERO_HASH), "headers"
                )
            except PeerError as exc:
                self.drop(url, str(exc))
                return
            assert isinstance(reply, m.Headers)
            try:
                headers = [decode_header(raw) for raw in reply.headers]
                await self.node.run_chain(self._accept_headers, headers)
            except BlockRejected as exc:
                if exc.code == Reject.UNKNOWN_PARENT:
                    self.punish(url, Misbehaviour.PROTOCOL_VIOLATION, "headers do not connect")
                else:
                    self.punish(url, exc.code, f"invalid header: {exc}")
                return
            # Even with no new headers, bodies of headers we already hold may be missing.
            missing = await self.node.run_chain(self._missing_bodies)
            if missing:
                await BlockDownloader(self, missing).run()
            if len(reply.headers) < limits.MAX_HEADERS_PER_MESSAGE:
                break

    def _best_header_locator(self) -> list[bytes]:
        return self.node.chain.header_locator()

    def _accept_headers(self, headers: list[Any]) -> None:
        now = int(time.time())
        for header in headers:
            self.node.chain.accept_header(header, now)

    def _missing_bodies(self) -> list[bytes]:
        return self.node.chain.missing_bodies(limits.MAX_BLOCKS_IN_FLIGHT_TOTAL * 64)

    # -- serving requests -----------------------------------------------------------------------------
    def serve_headers(self, msg: m.GetHeaders) -> m.Headers:
        from consensus.header import encode

        headers = self.node.chain.headers_after(msg.locator, limits.MAX_HEADERS_PER_MESSAGE)
        if msg.stop != m.ZERO_HASH:
            from consensus.header import header_hash

            for i, header in enumerate(headers):
                if header_hash(header) == msg.stop:
                    headers = headers[: i + 1]
                    break
        return m.Headers(headers=tuple(encode(h) for h in headers))

    def serve_blocks(self, msg: m.GetBlocks) -> m.Blocks:
        raws = [r for r in (self.node.chain.get_raw_block(h) for h in msg.hashes) if r is not None]
        n = m.fitting(raws, m.Blocks.MAX_BYTES, max_count=limits.MAX_BLOCKS_PER_REQUEST)
        return m.Blocks(blocks=tuple(raws[:n]))

    def serve_txs(self, msg: m.GetTxs) -> m.Txs:
        entries = [e for e in (self.node.mempool.get(t) for t in msg.txids) if e is not None]
        raws = [e.raw for e in entries]
        n = m.fitting(raws, m.Txs.MAX_BYTES, max_count=limits.MAX_TXS_PER_REQUEST)
        return m.Txs(txs=tuple(raws[:n]))

    def learn(self, addrs: Iterable[str]) -> None:
        for addr in addrs:
            if len(self.known) >= limits.MAX_KNOWN_ADDRS:
                break
            if addr != self.node.url and not self.is_banned(addr):
                self.known.add(addr)


def _fields(msg: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}

