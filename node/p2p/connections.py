"""Connection management: handshakes, slots, eviction, bans, and dialling from the address book.

Slots. At most ``MAX_OUTBOUND_PEERS`` links we dialled (the ones that
resist eclipse: we chose them) and ``MAX_INBOUND_PEERS`` that dialled us.
When the inbound slots are full a newcomer may take the place of an inbound
peer, as in Bitcoin Core's eviction: the peers that most recently gave us
new blocks or new transactions are protected, and among the rest the
youngest of the network group with the most inbound peers leaves. If every
inbound peer is protected the newcomer is refused (``Refusal.NO_SLOT``).

Bans are keyed by host (``netgroups.ban_key``), so a banned peer does not
return on another port, and requests from a banned host are refused at the
door whatever URL they name.

Memory across restarts. With a datadir, the bans and the address book are
saved there (``node.p2p.peerfiles``: ``banlist.json``, ``peers.json``) and
read back at start: a banned peer stays banned until its ban's wall-clock
end, and a restarted node dials the addresses it had learned as well as its
seeds (unless ``dial_learned`` is off). Both are written on the loop, which
owns them (no copy, no race between writers): the ban list when a ban is
added or lifted, but at most once per ``BANS_SAVE_MIN_INTERVAL_S`` (a full
list of ``MAX_BANNED_PEERS`` takes ~27 ms to write: a stream of bans from
throw-away hosts must not turn into a stream of writes), the book every
``BOOK_SAVE_INTERVAL_S``, and both at shutdown.

Reflection. An unproven handshake makes us call back the URL it claims;
that call-back goes only to the host the handshake came from (a DNS name
must resolve to it), so nobody can aim this node at a third party. At
most ``MAX_CALLBACKS_IN_FLIGHT`` call-backs run at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import logging
import pathlib
import random
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from consensus.errors import Reject
from consensus.header import hash_hex
from node import limits
from node.chain_service import ChainService
from node.p2p import messages as m
from node.p2p import peerfiles
from node.p2p.addrman import SELF_SOURCE, AddressBook
from node.p2p.netgroups import ban_key, host_of, is_shared_local, url_group
from node.p2p.penalties import BanList, Misbehaviour, penalty
from node.p2p.session import Peer, PeerClient, PeerError, Refusal, Session, SessionTable

log = logging.getLogger("gradchain.p2p")
T = TypeVar("T")

RETRY_MIN_S = 0.5  # first retry of a dropped --peer: quick, it may just be restarting
RETRY_MAX_S = 30.0  # backoff ceiling: a long-dead peer costs one request per half minute
CONNECT_LOOP_S = 0.5  # how often the connector looks at seeds and the address book
RESOLVE_TIMEOUT_S = 5.0  # a DNS name in a claimed URL must resolve this fast, or no call-back
# How often the address book is saved (Bitcoin Core: 15 minutes). A book of 7,500 addresses takes ~30 ms
# of the loop to encode, write and fsync; a crash loses at most this much of what it learned.
BOOK_SAVE_INTERVAL_S = 300.0
BANS_SAVE_MIN_INTERVAL_S = 1.0  # a new ban reaches the disk at once, or within this (module docstring)


class HandshakeRefused(Exception):
    """We will not answer this handshake; ``refusal`` says why (the route maps it to a status)."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal


@dataclass
class _Retry:
    next_at: float = 0.0
    delay: float = RETRY_MIN_S


EventSink = Callable[[str, str], None]  # (kind, message): the node's event log


class ConnectionManager:
    """The peers of one node: who is connected, who may connect, who is banned."""

    def __init__(self, chain: ChainService, client: PeerClient, *, own_url: Callable[[], str],
                 seeds: list[str], event: EventSink, on_ban: Callable[[], None],
                 on_peers_changed: Callable[[int], None], dial_learned: bool = True,
                 datadir: pathlib.Path | None = None) -> None:
        self.chain = chain
        self.datadir = datadir  # where bans and addresses are saved; None: nowhere (unit tests)
        self.clock: Callable[[], float] = time.time  # wall-clock time of bans and the book; tests move it
        self.dial_learned = dial_learned  # False: dial the seeds only (NodeConfig.dial_learned)
        self.client = client
        self._own_url = own_url
        self.seeds = list(seeds)
        self._event = event
        self._on_ban = on_ban
        self._on_peers_changed = on_peers_changed
        self.nonce = secrets.randbits(64)  # a handshake carrying our own nonce is a self-connection
        self.peers: dict[str, Peer] = {}
        self.book = AddressBook(secrets.token_bytes(32))
        self.bans = BanList()
        self._bans_saved = 0  # bans.changes when banlist.json was last written
        self._bans_saved_at = -BANS_SAVE_MIN_INTERVAL_S  # time.monotonic() of that write
        self.sessions = SessionTable(limits.MAX_SESSIONS)
        self.connecting: set[str] = set()
        self.calling_back: set[str] = set()
        self._retry: dict[str, _Retry] = {}
        self._registered: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        # Hooks the peer service sets: what a new peer triggers (sync, gossip), and a known one's news.
        self.on_connected: Callable[[Peer, bool], None] = lambda peer, fresh: None
        self.on_refreshed: Callable[[Peer], None] = lambda peer: None

    # -- tasks -----------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task that :meth:`stop` cancels."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.save_bans(now=True)
        self.save_book()

    # -- memory across restarts (module docstring) --------------------------------------------------
    def load_saved(self) -> None:
        """Read back the bans and addresses the last run saved; every problem is a "node" event."""
        if self.datadir is None:
            return
        now = self.clock()
        bans = peerfiles.load_bans(self.datadir, now, self.bans.duration_s, self.bans.max_banned)
        book = peerfiles.load_book(self.datadir, now)
        for note in bans.notes + book.notes:
            self._event("node", note)
        self.bans.restore(bans.items)
        # A file with anything ignored is rewritten at the next save (at the latest, at shutdown), clean.
        self._bans_saved = self.bans.changes if not bans.notes else -1
        placed = self.book.restore(i for i in book.items if i.url != self.url and not self.is_banned(i.url))
        if bans.items or book.items:
            self._event("peer", f"restored {len(bans.items)} bans from {peerfiles.BANS_FILE} and {placed} of "
                                f"{len(book.items)} addresses from {peerfiles.PEERS_FILE}")

    def save_bans(self, *, now: bool = False) -> None:
        """Write banlist.json if a ban was added or lifted since; unless ``now``, not twice in a second."""
        if self.datadir is None or self.bans.changes == self._bans_saved:
            return
        if not now and time.monotonic() - self._bans_saved_at < BANS_SAVE_MIN_INTERVAL_S:
            return  # the connector's next pass writes it
        self._bans_saved_at = time.monotonic()
        running = self.bans.banned(self.clock())  # lifts the ended ones first
        self._bans_saved = self.bans.changes  # a failed write is retried at the next change, not in a loop
        self._note(peerfiles.save(self.datadir / peerfiles.BANS_FILE, peerfiles.bans_document(running)))

    def save_book(self) -> None:
        """Write peers.json: every address with its table and history (the key stays secret: addrman)."""
        if self.datadir is not None:
            document = peerfiles.book_document(self.book.entries())
            self._note(peerfiles.save(self.datadir / peerfiles.PEERS_FILE, document))

    def _note(self, problem: str | None) -> None:
        if problem is not None:
            self._event("node", problem)

    # -- our own facts ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._own_url()

    def _hello(self) -> dict[str, object]:
        snap = self.chain.snapshot
        return {
            "magic": snap.magic, "protocol_version": limits.PROTOCOL_VERSION, "chain_id": snap.chain_id,
            "genesis": snap.genesis_hash, "height": snap.height, "tip": snap.tip_hash,
            "listen_url": self.url, "nonce": self.nonce, "user_agent": limits.USER_AGENT,
        }

    def handshake_reply(self, session: bytes = m.NO_SESSION) -> m.HandshakeReply:
        sample = random.sample(sorted(self.peers), min(len(self.peers), limits.MAX_ADDRS_IN_HANDSHAKE))
        return m.HandshakeReply(**self._hello(), session=session, peers=tuple(sample))  # type: ignore[arg-type]

    def check_hello(self, hello: m.Handshake | m.HandshakeReply) -> HandshakeRefused | None:
        """Why a peer's handshake is refused, or None if it is welcome."""
        snap = self.chain.snapshot
        if hello.magic != snap.magic or hello.chain_id != snap.chain_id:
            return HandshakeRefused(Refusal.WRONG_NETWORK,
                                    f"wrong network (chain id {hello.chain_id}, ours {snap.chain_id})")
        if hello.genesis != snap.genesis_hash:
            return HandshakeRefused(Refusal.OTHER_GENESIS,
                                    f"different genesis {hash_hex(hello.genesis)[:16]}…: another chain or task")
        if hello.protocol_version < limits.MIN_PROTOCOL_VERSION:
            return HandshakeRefused(Refusal.OLD_PROTOCOL, f"protocol version {hello.protocol_version} is too old")
        if hello.nonce == self.nonce:
            return HandshakeRefused(Refusal.SELF, "that is this node itself")
        return None

    # -- sessions --------------------------------------------------------------------------------
    def session_for(self, url: str) -> Session:
        return self.sessions.session_for(url, protected=self._in_use)

    def _in_use(self, url: str) -> bool:
        return url in self.peers or url in self.connecting or url in self.calling_back

    def authenticate(self, url: str | None, presented: str | None) -> bool:
        return self.sessions.authenticate(url, presented)

    # -- bans ------------------------------------------------------------------------------------
    def is_banned(self, url: str) -> bool:
        try:
            key = ban_key(url)
        except ValueError:
            return False
        return self.bans.is_banned(key, self.clock())

    def is_banned_host(self, remote: str | None) -> bool:
        """A request from ``remote`` (an IP) comes from a banned host (the shared local host never is)."""
        if not remote or is_shared_local(remote):
            return False
        return self.bans.is_banned(remote.lower(), self.clock())

    def punish(self, url: str, code: Reject | Misbehaviour, detail: str, *, relayed_tx: bool = False) -> None:
        points = penalty(code, relayed_tx=relayed_tx)
        if points <= 0:
            return
        try:
            key = ban_key(url)
        except ValueError:
            return
        if self.bans.punish(key, points, self.clock()):
            self._on_ban()
            self.save_bans()
            self._event("peer", f"banned peer {url} ({key}) for {int(self.bans.duration_s)}s: {detail}")
            for other in [u for u in self.peers if ban_key(u) == key]:
                self.drop(other, "banned")
            self.book.discard(url)
            self.sessions.forget(url)

    # -- registering -----------------------------------------------------------------------------
    def inbound(self) -> list[Peer]:
        return [p for p in self.peers.values() if not p.outbound]

    def outbound_count(self) -> int:
        return sum(1 for p in self.peers.values() if p.outbound)

    def eviction_candidate(self) -> Peer | None:
        """The inbound peer to evict for a newcomer (module docstring), or None if all are protected."""
        pool = self.inbound()
        protected: set[str] = set()
        for field_name, count in (("last_block_at", limits.INBOUND_PROTECTED_BY_BLOCKS),
                                  ("last_tx_at", limits.INBOUND_PROTECTED_BY_TXS)):
            useful = sorted((p for p in pool if getattr(p, field_name) > 0),
                            key=lambda p: float(getattr(p, field_name)), reverse=True)
            protected.update(p.url for p in useful[:count])
        candidates = [p for p in pool if p.url not in protected]
        if not candidates:
            return None
        groups = collections.Counter(p.group for p in candidates)
        biggest = max(groups.values())
        crowded = [p for p in candidates if groups[p.group] == biggest]
        return max(crowded, key=lambda p: p.connected_at)

    def has_inbound_room(self) -> bool:
        return len(self.inbound()) < limits.MAX_INBOUND_PEERS or self.eviction_candidate() is not None

    def register(self, hello: m.Handshake | m.HandshakeReply, *, outbound: bool) -> Peer | None:
        """Add or refresh a peer that proved its URL; None if there is no slot for it."""
        url = hello.listen_url
        if not url or url == self.url:
            return None
        peer = self.peers.get(url)
        if peer is not None:
            peer.height, peer.tip, peer.last_seen = hello.height, hello.tip, time.time()
            peer.outbound = peer.outbound or outbound
            self._registered_event(url)
            self.on_refreshed(peer)
            return peer
        if not outbound and len(self.inbound()) >= limits.MAX_INBOUND_PEERS:
            victim = self.eviction_candidate()
            if victim is None:
                log.info("no inbound slot for %s", url)
                return None
            self.drop(victim.url, f"evicted for {url} (inbound slots full)")
        peer = Peer(url, hello.height, hello.tip, hello.user_agent, outbound)
        self.peers[url] = peer
        self._on_peers_changed(len(self.peers))
        self._event("peer", f"connected peer {url} (height {hello.height}, {'out' if outbound else 'in'})")
        fresh = url not in self.book
        self.book.good(url, self.clock())
        self._retry.pop(url, None)
        self._registered_event(url)
        self.on_connected(peer, fresh)
        return peer

    def _registered_event(self, url: str) -> None:
        event = self._registered.get(url)
        if event is not None:
            event.set()

    def drop(self, url: str, reason: str) -> None:
        if self.peers.pop(url, None) is not None:
            self._on_peers_changed(len(self.peers))
            self._event("peer", f"disconnected peer {url}: {reason}")

    def learn(self, addrs: tuple[str, ...] | list[str], source: str | None) -> list[str]:
        """Put ``addrs`` (heard from peer ``source``) in the book; returns the ones new to it."""
        group = url_group(source) if source else SELF_SOURCE
        now = self.clock()
        fresh = []
        for addr in addrs:
            if addr != self.url and not self.is_banned(addr) and self.book.add(addr, group, now):
                fresh.append(addr)
        return fresh

    # -- inbound handshakes ------------------------------------------------------------------------
    async def on_handshake(self, hello: m.Handshake, presented: str | None, remote: str | None) -> m.HandshakeReply:
        """Answer a handshake (the caller proved nothing yet but its bytes).

        A caller that presents the token we issued to its URL is that URL's
        owner: take its token, register it, and grant ours. Any other claim
        gets ``NO_SESSION`` and a call-back to the claimed URL, whose owner
        completes the exchange (an impostor learns nothing and its token is
        never used) - if the URL is on the host the request came from.
        """
        url = hello.listen_url
        if url and self.is_banned(url):
            raise HandshakeRefused(Refusal.BANNED, "banned for misbehaviour")
        refused = self.check_hello(hello)
        if refused is not None:
            raise refused
        if not url or url == self.url:
            return self.handshake_reply()
        # While we dial ``url`` ourselves, its handshake is the call-back completing our dial.
        ours = url in self.connecting
        if url not in self.peers and not ours and not self.has_inbound_room():
            raise HandshakeRefused(Refusal.NO_SLOT, "no inbound slot free")
        session = self.session_for(url)
        if self.authenticate(url, presented):
            session.token_out, session.candidate = hello.session, None
            peer = self.register(hello, outbound=ours)
            if peer is None:
                raise HandshakeRefused(Refusal.NO_SLOT, "no inbound slot free")
            return self.handshake_reply(session.token_in)
        if not await self._is_on_host(url, remote):
            raise HandshakeRefused(Refusal.UNVERIFIABLE_URL,
                                   f"{url} is not on the host this handshake came from ({remote})")
        session.candidate = hello.session
        if (url not in self.connecting and url not in self.calling_back
                and len(self.calling_back) < limits.MAX_CALLBACKS_IN_FLIGHT):
            self.spawn(self.connect(url, outbound=False))
        return self.handshake_reply()

    async def _is_on_host(self, url: str, remote: str | None) -> bool:
        """True if ``url``'s host is (or resolves to) the address ``remote`` (module docstring)."""
        if remote is None:
            return False
        host = host_of(url)
        try:
            remote_ip = ipaddress.ip_address(remote)
        except ValueError:
            return False
        try:
            return ipaddress.ip_address(host) == remote_ip
        except ValueError:
            pass  # a DNS name: resolve it
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, None), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return False
        return any(ipaddress.ip_address(info[4][0]) == remote_ip for info in infos)

    # -- outbound handshakes -----------------------------------------------------------------------
    async def request(self, url: str, route: str, msg: m.Message, reply_kind: str | None,
                      *, token: bytes | None = None) -> m.Message | None:
        """POST to a peer with our session token for it; see ``PeerClient.request``.

        A refusal asking us to handshake again (the peer restarted) starts a
        fresh handshake, which re-registers it; a malformed reply costs the peer.
        """
        session = self.sessions.get(url)
        presented = token if token is not None or session is None else session.token_out
        try:
            return await self.client.request(url, route, msg, reply_kind, presented)
        except PeerError as exc:
            if exc.refusal is Refusal.HANDSHAKE_AGAIN and route != "handshake":
                self.spawn(self.connect(url))
            raise
        except m.MessageError as exc:
            self.punish(url, Misbehaviour.MALFORMED_MESSAGE, str(exc))
            raise PeerError(f"{route}: malformed reply ({exc})") from None

    async def _handshake(self, url: str) -> m.HandshakeReply:
        """POST our Handshake (with the token we issue ``url``) and take the token it grants, if any."""
        session = self.session_for(url)
        proof = session.candidate if session.candidate is not None else session.token_out
        hello = m.Handshake(**self._hello(), session=session.token_in)  # type: ignore[arg-type]
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
        in_flight = self.connecting if outbound else self.calling_back
        if url in self.connecting or url in self.calling_back or self.is_banned(url):
            return None
        in_flight.add(url)
        if outbound:
            self.book.attempt(url, self.clock())
        try:
            offered = self.session_for(url).candidate
            reply = await self._handshake(url)
            candidate = self.session_for(url).candidate
            if reply.session == m.NO_SESSION and candidate is not None and candidate != offered:
                reply = await self._handshake(url)
        except PeerError as exc:
            self.book.failed(url)
            self.schedule_retry(url)
            log.debug("handshake with %s failed: %s", url, exc)
            return None
        finally:
            in_flight.discard(url)
        refused = self.check_hello(reply)
        if refused is not None:
            log.info("not peering with %s: %s", url, refused)
            if refused.refusal is Refusal.SELF:
                self.book.discard(url)
                if url in self.seeds:
                    self.seeds.remove(url)
            else:
                self.schedule_retry(url)
            return None
        if reply.listen_url != url:
            # A peer that lists itself under another URL is reachable where we asked.
            reply = dataclasses.replace(reply, listen_url=url)
        if reply.session == m.NO_SESSION:
            peer = self.peers.get(url) or await self._await_registered(url)
            # It may have dialled us meanwhile (registered inbound): count it as our outbound
            # link only while a slot is free, so a dial race never exceeds MAX_OUTBOUND_PEERS.
            if (peer is not None and outbound and not peer.outbound
                    and self.outbound_count() < limits.MAX_OUTBOUND_PEERS):
                peer.outbound = True
        else:
            peer = self.register(reply, outbound=outbound)
        self.learn(reply.peers, source=url)
        return peer

    def schedule_retry(self, url: str) -> None:
        retry = self._retry.setdefault(url, _Retry())
        retry.next_at = time.monotonic() + retry.delay
        retry.delay = min(retry.delay * 2, RETRY_MAX_S)

    # -- the connector -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Dial seeds and learned addresses forever; ping idle peers; save bans and addresses."""
        last_ping = last_book_save = time.monotonic()
        while True:
            now = time.monotonic()
            for url in self.dial_candidates(now):
                self.spawn(self.connect(url))
            if now - last_ping > limits.PING_INTERVAL_S:
                last_ping = now
                for url in list(self.peers):
                    self.spawn(self._ping(url))
            self.save_bans()  # one deferred by the rate limit, or made outside punish() (an operator, a test)
            if now - last_book_save > BOOK_SAVE_INTERVAL_S:
                last_book_save = now
                self.save_book()
            await asyncio.sleep(CONNECT_LOOP_S)

    def _due(self, url: str, now: float) -> bool:
        retry = self._retry.get(url)
        return (
            url not in self.peers and url not in self.connecting and url not in self.calling_back
            and url != self.url and (retry is None or retry.next_at <= now) and not self.is_banned(url)
        )

    def dial_candidates(self, now: float) -> list[str]:
        """The URLs to dial on this pass of the connector.

        Every --peer seed we are not connected to (the user asked for them),
        plus addresses from the book only while outbound slots are free: at
        most ``MAX_OUTBOUND_PEERS`` outbound links, counting dials in
        progress, and never two in one network group.
        """
        seeds = [u for u in self.seeds if self._due(u, now)]
        if not self.dial_learned:
            return seeds
        room = limits.MAX_OUTBOUND_PEERS - self.outbound_count() - len(self.connecting) - len(seeds)
        picked: list[str] = []
        groups = {url_group(p.url) for p in self.peers.values() if p.outbound}
        groups.update(url_group(u) for u in (*self.connecting, *seeds))
        wall = self.clock()
        while room > len(picked):
            url = self.book.select(wall, lambda u: u not in self.seeds and u not in picked
                                   and url_group(u) not in groups and self._due(u, now))
            if url is None:
                break
            picked.append(url)
            groups.add(url_group(url))
        return seeds + picked

    async def _ping(self, url: str) -> None:
        try:
            reply = await self._handshake(url)
        except PeerError as exc:
            self.drop(url, str(exc))
            self.schedule_retry(url)
            return
        # NO_SESSION: the peer restarted and forgot us; its call-back re-registers it.
        if reply.session != m.NO_SESSION and self.check_hello(reply) is None:
            self.register(dataclasses.replace(reply, listen_url=url), outbound=True)
