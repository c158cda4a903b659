"""Gossip: announce, then fetch (blocks and transactions), and address relay.

Blocks and transactions. A node announces the hashes of what it has just
accepted to every peer but the one it came from; a peer fetches only what it
lacks. Fetched blocks go through :class:`~node.p2p.intake.BlockIntake`.
Relayed transactions a peer sends us that fail on our tip for a reason that
depends on the tip are forgiven but spend its relay allowance
(``penalties.RelayAllowance``).

Addresses. Each address is relayed, when it is new to us, to at most
``ADDR_RELAY_FANOUT`` peers (Bitcoin's two), so one node joining costs the
network a number of messages that grows with its size, not with its
square. A peer's first Addr to us is answered with a sample of our address
book (how a node that knows one seed meets the rest); later ones get an
empty answer. What we process from a peer is rate-limited per peer, and the
address book bounds what we keep.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from consensus.errors import BlockRejected
from consensus.tx import txid
from node import limits
from node.chain_service import ChainService
from node.mempool import PolicyRejected
from node.p2p import messages as m
from node.p2p.connections import ConnectionManager
from node.p2p.intake import BlockIntake
from node.p2p.penalties import TIP_DEPENDENT, Misbehaviour
from node.p2p.session import Peer, PeerError
from node.p2p.sync import HeaderSync

log = logging.getLogger("gradchain.p2p")


class Gossip:
    """Announce-then-fetch for blocks and txs; fan-out-limited address relay (module docstring)."""

    def __init__(self, chain: ChainService, conns: ConnectionManager, intake: BlockIntake, sync: HeaderSync,
                 on_announce_dropped: Callable[[], None] = lambda: None) -> None:
        self.chain = chain
        self.conns = conns
        self.intake = intake
        self.sync = sync
        self._on_announce_dropped = on_announce_dropped
        self._rng = random.Random()

    # -- announcing -------------------------------------------------------------------------------
    def announce_block(self, block_hash: bytes, *, exclude: str | None) -> None:
        self._announce(m.Announce(blocks=(block_hash,), txs=()), exclude)

    def announce_txs(self, tx_ids: list[bytes] | tuple[bytes, ...], *, exclude: str | None) -> None:
        """Announce txids in as few messages as fit."""
        for start in range(0, len(tx_ids), limits.MAX_INV_PER_ANNOUNCE):
            chunk = tuple(tx_ids[start : start + limits.MAX_INV_PER_ANNOUNCE])
            self._announce(m.Announce(blocks=(), txs=chunk), exclude)

    def _announce(self, msg: m.Announce, exclude: str | None) -> None:
        for url in list(self.conns.peers):
            if url != exclude:
                self.conns.spawn(self._send_announce(url, msg))

    async def _send_announce(self, url: str, msg: m.Announce) -> None:
        try:
            await self.conns.request(url, "announce", msg, None)
        except PeerError as exc:
            self.conns.drop(url, str(exc))
            self.conns.schedule_retry(url)

    async def share_mempool(self, url: str) -> None:
        """Tell a new peer what our mempool holds: updates made before it connected still spread."""
        tx_ids = await self.chain.run(self.chain.mempool.txids)
        if tx_ids:
            await self._send_announce(url, m.Announce(blocks=(), txs=tuple(tx_ids[: limits.MAX_INV_PER_ANNOUNCE])))

    # -- fetching -----------------------------------------------------------------------------------
    async def on_announce(self, url: str, msg: m.Announce) -> None:
        """A peer has new blocks or txs: fetch those we lack from it.

        At most ``MAX_ANNOUNCES_PENDING`` of a peer's announces are handled at
        once: a peer that stalls our requests (a block fetch, the header sync
        its claimed height starts) and floods announces meanwhile would
        otherwise have each wait in memory. The rest are dropped and counted;
        their blocks are left to header sync, which brings them if they are real.
        """
        peer = self.conns.peers.get(url)
        if peer is None:
            return
        if peer.announces_pending >= limits.MAX_ANNOUNCES_PENDING:
            self._on_announce_dropped()
            if msg.blocks:
                self.sync.request(url)
            return
        peer.announces_pending += 1
        try:
            if msg.blocks:
                await self._fetch_announced_blocks(peer, msg.blocks)
            missing_txs = await self.chain.run(self.chain.lacking_txs, msg.txs)
            if missing_txs:
                if peer.height > self.chain.snapshot.height:
                    # Its txs build on blocks we lack: catch up first, or they look invalid.
                    await self.sync.sync_from(url)
                await self.fetch_txs(url, missing_txs)
        finally:
            peer.announces_pending -= 1

    async def _fetch_announced_blocks(self, peer: Peer, hashes: tuple[bytes, ...]) -> None:
        """Fetch the announced blocks we lack, one announce of the peer's at a time.

        One at a time, so that ten announces sent at once cannot start ten
        downloads before the first shows the peer sends orphans; after an
        orphan its blocks wait for its headers (``node.p2p.intake``).
        """
        async with peer.announced_blocks:
            missing = await self.chain.run(self.chain.lacking_blocks, hashes)
            if not missing:
                return
            if self.intake.headers_first(peer.url):
                self.sync.request(peer.url)
            else:
                await self.fetch_blocks(peer.url, missing)

    async def fetch_blocks(self, url: str, hashes: list[bytes]) -> None:
        for start in range(0, len(hashes), limits.MAX_BLOCKS_PER_REQUEST):
            wanted = hashes[start : start + limits.MAX_BLOCKS_PER_REQUEST]
            try:
                reply = await self.conns.request(url, "blocks", m.GetBlocks(hashes=tuple(wanted)), "blocks")
            except PeerError as exc:
                self.conns.drop(url, str(exc))
                return
            assert isinstance(reply, m.Blocks)
            for raw in reply.blocks:
                if not await self.intake.deliver(url, raw, set(wanted)):
                    return

    async def fetch_txs(self, url: str, tx_ids: list[bytes]) -> None:
        try:
            reply = await self.conns.request(url, "txs", m.GetTxs(txids=tuple(tx_ids)), "txs")
        except PeerError as exc:
            self.conns.drop(url, str(exc))
            return
        assert isinstance(reply, m.Txs)
        wanted = set(tx_ids)
        for raw in reply.txs:
            if txid(raw) not in wanted:
                self.conns.punish(url, Misbehaviour.UNREQUESTED_DATA, "a tx we did not ask for")
                continue
            await self._relayed_tx(url, raw)

    async def _relayed_tx(self, url: str, raw: bytes) -> None:
        try:
            admission = await self.chain.submit_tx(raw, source=url)
        except BlockRejected as exc:
            self.conns.punish(url, exc.code, f"invalid tx: {exc}", relayed_tx=True)
            peer = self.conns.peers.get(url)
            if exc.code in TIP_DEPENDENT and peer is not None:
                if not peer.relay_allowance.spend(len(raw), time.time()):
                    self.conns.punish(url, Misbehaviour.WASTED_RELAY, f"relayed txs refused on our tip: {exc}")
            return
        except PolicyRejected:
            return  # our pool's choice (full, sender limit): nothing the peer did wrong
        if admission.added:
            peer = self.conns.peers.get(url)
            if peer is not None:
                peer.last_tx_at = time.time()

    # -- addresses ----------------------------------------------------------------------------------
    def on_connected(self, peer: Peer, fresh: bool) -> None:
        """A new peer: tell it our mempool, introduce ourselves if we dialled it, relay it if new."""
        self.conns.spawn(self.share_mempool(peer.url))
        if peer.outbound and self.conns.url:
            self.conns.spawn(self._introduce(peer.url))
        if fresh:
            self.relay_addresses([peer.url], exclude=peer.url)

    async def _introduce(self, url: str) -> None:
        """Send a peer we dialled our own address; its answer (a sample of its book) is our first list."""
        try:
            reply = await self.conns.request(url, "addr", m.Addr(addrs=(self.conns.url,)), "addr")
        except PeerError as exc:
            log.debug("addr to %s failed: %s", url, exc)
            return
        assert isinstance(reply, m.Addr)
        self.conns.learn(reply.addrs, source=url)

    def relay_addresses(self, addrs: list[str], *, exclude: str) -> None:
        """Send each address to at most ``ADDR_RELAY_FANOUT`` peers other than ``exclude`` and itself."""
        targets: dict[str, list[str]] = {}
        for addr in addrs:
            pool = [u for u in self.conns.peers if u not in (exclude, addr)]
            for url in self._rng.sample(pool, min(limits.ADDR_RELAY_FANOUT, len(pool))):
                targets.setdefault(url, []).append(addr)
        for url, batch in targets.items():
            self.conns.spawn(self._send_addrs(url, batch))

    async def _send_addrs(self, url: str, addrs: list[str]) -> None:
        for start in range(0, len(addrs), limits.MAX_ADDRS_PER_MESSAGE):
            try:
                await self.conns.request(url, "addr", m.Addr(addrs=tuple(addrs[start : start + limits.MAX_ADDRS_PER_MESSAGE])),
                                         "addr")
            except PeerError as exc:
                log.debug("addr to %s failed: %s", url, exc)
                return

    def on_addr(self, url: str, msg: m.Addr) -> m.Addr:
        """Learn what a peer sent (within its rate limit), relay what is new, answer its first with a sample."""
        peer = self.conns.peers.get(url)
        if peer is None:
            return m.Addr(addrs=())
        budget = peer.take_addr_budget(len(msg.addrs), time.monotonic())
        fresh = self.conns.learn(msg.addrs[:budget], source=url)
        if fresh:
            self.relay_addresses(fresh, exclude=url)
        if peer.asked_for_addrs:
            return m.Addr(addrs=())
        peer.asked_for_addrs = True
        return m.Addr(addrs=tuple(self.conns.book.sample(limits.ADDR_REPLY_SAMPLE)))
