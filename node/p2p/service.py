"""The peer service: the p2p wing behind one typed face.

It wires the pieces together and is what the rest of the node sees:

* :class:`~node.p2p.connections.ConnectionManager`: handshakes, slots,
  eviction, bans, the address book and the dialler;
* :class:`~node.p2p.sync.HeaderSync` and
  :class:`~node.p2p.sync.Downloader`: headers-first sync and block download;
* :class:`~node.p2p.gossip.Gossip`: announce-then-fetch and address relay;
* :class:`~node.p2p.intake.BlockIntake`: the one path of a peer's block
  into the chain service.

It follows the chain through the chain service's listeners (a new tip is
announced, a new transaction too) and answers the /p2p/ routes with data it
reads on the chain thread.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from consensus.errors import Reject
from consensus.header import encode as encode_header
from node import limits
from node.chain_service import ChainService, TipChange, TxAdmission
from node.metrics import NodeMetrics
from node.p2p import messages as m
from node.p2p.addrman import AddressBook
from node.p2p.connections import ConnectionManager
from node.p2p.gossip import Gossip
from node.p2p.intake import BlockIntake
from node.p2p.penalties import BanList, Misbehaviour
from node.p2p.session import Peer, PeerClient, Session
from node.p2p.sync import Downloader, HeaderSync


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One connected peer as the API and the dashboard show it."""

    url: str
    height: int
    tip: bytes
    user_agent: str
    outbound: bool
    connected_for_s: float


class PeerService:
    """A node's peers, sync and gossip; start with :meth:`start` once the node listens."""

    def __init__(self, chain: ChainService, metrics: NodeMetrics, *, seeds: list[str],
                 event: Callable[[str, str], None], dial_learned: bool = True,
                 datadir: pathlib.Path | None = None) -> None:
        self.chain = chain
        self.metrics = metrics
        self.url = ""  # our listen URL, set when the node listens
        self.client = PeerClient(lambda: self.url)
        self.conns = ConnectionManager(
            chain, self.client, own_url=lambda: self.url, seeds=seeds, event=event,
            on_ban=metrics.peer_bans.inc, on_peers_changed=metrics.peers.set, dial_learned=dial_learned,
            datadir=datadir,
        )
        self.intake = BlockIntake(chain, self.conns, request_sync=self._request_sync)
        self.downloader = Downloader(chain, self.conns, self.intake, event)
        self.sync = HeaderSync(chain, self.conns, self.downloader)
        self.gossip = Gossip(chain, self.conns, self.intake, self.sync,
                             on_announce_dropped=metrics.announces_dropped.inc)
        self.conns.on_connected = self._on_connected
        self.conns.on_refreshed = self._sync_if_ahead
        chain.on_tip_change(self._on_tip_change)
        chain.on_new_tx(self._on_new_tx)
        self._connector: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self, url: str, local_host: str | None) -> None:
        """Listen URL known: read back saved bans and addresses, then start dialling."""
        self.url = url
        self.conns.load_saved()
        await self.client.start(local_host)
        self._connector = asyncio.create_task(self.conns.run(), name="p2p-connector")

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        await self.conns.stop()
        await self.client.close()

    # -- what the rest of the node reads -----------------------------------------------------------
    @property
    def peers(self) -> dict[str, Peer]:
        return self.conns.peers

    @property
    def known(self) -> AddressBook:
        return self.conns.book

    @property
    def seeds(self) -> list[str]:
        return self.conns.seeds

    @property
    def bans(self) -> BanList:
        return self.conns.bans

    def banned(self) -> dict[str, float]:
        """Running bans: peer (host, or URL on the shared local host) -> wall-clock end."""
        return self.conns.bans.banned(self.conns.clock())

    @property
    def syncing(self) -> bool:
        return self.sync.syncing

    @property
    def nonce(self) -> int:
        return self.conns.nonce

    def peer_infos(self) -> list[PeerInfo]:
        now = time.time()
        return [PeerInfo(p.url, p.height, p.tip, p.user_agent, p.outbound, round(now - p.connected_at, 1))
                for p in sorted(self.conns.peers.values(), key=lambda p: p.url)]

    def is_banned(self, url: str) -> bool:
        return self.conns.is_banned(url)

    def session_for(self, url: str) -> Session:
        return self.conns.session_for(url)

    # -- what the rest of the node asks for --------------------------------------------------------
    async def connect(self, url: str) -> Peer | None:
        return await self.conns.connect(url)

    def add_seed(self, url: str) -> None:
        if url not in self.conns.seeds:
            self.conns.seeds.append(url)

    def drop(self, url: str, reason: str) -> None:
        self.conns.drop(url, reason)

    def punish(self, url: str, code: Reject | Misbehaviour, detail: str) -> None:
        self.conns.punish(url, code, detail)

    async def sync_from(self, url: str) -> None:
        await self.sync.sync_from(url)

    # -- following the chain and the peers ----------------------------------------------------------
    def _on_tip_change(self, change: TipChange) -> None:
        self.gossip.announce_block(change.result.block_hash, exclude=change.source)
        if change.requeued:
            self.gossip.announce_txs(change.requeued, exclude=None)

    def _on_new_tx(self, admission: TxAdmission, source: str | None) -> None:
        self.gossip.announce_txs([admission.txid], exclude=source)

    def _on_connected(self, peer: Peer, fresh: bool) -> None:
        self.gossip.on_connected(peer, fresh)
        self._sync_if_ahead(peer)

    def _sync_if_ahead(self, peer: Peer) -> None:
        """A peer that says it is higher than us (at its handshake or a ping): fetch its headers."""
        if peer.height > self.chain.snapshot.height:
            self._request_sync(peer.url)

    def _request_sync(self, url: str) -> None:
        self.sync.request(url)

    # -- serving peers (on the chain thread) ----------------------------------------------------------
    def serve_headers(self, msg: m.GetHeaders) -> m.Headers:
        """Main-chain headers after the locator, up to ``msg.stop`` if it is one of them.

        The stop is found by its height in the index: hashing each header
        to compare would cost ~6 ms of chain-thread time for 2000 headers,
        for any 32 bytes a peer puts there.
        """
        chain = self.chain.chain
        headers = chain.headers_after(msg.locator, limits.MAX_HEADERS_PER_MESSAGE)
        stop = chain.index.get(msg.stop) if headers and msg.stop != m.ZERO_HASH else None
        if stop is not None and chain.is_main(stop.hash):
            first = chain.index[headers[0].prev].height + 1
            if first <= stop.height < first + len(headers):
                headers = headers[: stop.height - first + 1]
        return m.Headers(headers=tuple(encode_header(h) for h in headers))

    def serve_blocks(self, msg: m.GetBlocks) -> m.Blocks:
        chain = self.chain.chain
        raws = [r for r in (chain.get_raw_block(h) for h in msg.hashes) if r is not None]
        n = m.fitting(raws, m.Blocks.MAX_BYTES, max_count=limits.MAX_BLOCKS_PER_REQUEST)
        return m.Blocks(blocks=tuple(raws[:n]))

    def serve_txs(self, msg: m.GetTxs) -> m.Txs:
        pool = self.chain.mempool
        raws = [e.raw for e in (pool.get(t) for t in msg.txids) if e is not None]
        n = m.fitting(raws, m.Txs.MAX_BYTES, max_count=limits.MAX_TXS_PER_REQUEST)
        return m.Txs(txs=tuple(raws[:n]))
