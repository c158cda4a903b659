"""The one way a peer's block enters the node, whether it was announced or synced.

The event loop never decodes a block. It reads the 80 header bytes at their
fixed place in the canonical encoding and hashes them (microseconds), which
is enough to check that the peer sent what we asked for and to order a
download. The chain service then decodes and validates the block on the
chain thread, once. What a rejection costs the sender, and which rejections
mean "sync first", is decided here and nowhere else.

Orphans and low-work blocks. A block whose parent we lack, or on a branch
too far below our tip's work to store, is never punished (an honest peer
ahead of us, or on a minority fork, sends them), but it is not free to
fetch: an attacker could announce such blocks again and again, 40 bytes
each, and have us download up to 32 MiB for every one. So after one a peer
is *headers-first*: what it announces next is not fetched but triggers
header sync (which checks a branch's work before storing anything), and
its bodies come through the downloader once headers we store connect them.
The peer leaves that state when a block or a new header of its is stored
(which takes real work); it is remembered by ban key, so reconnecting does
not clear it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from consensus.block import Block
from consensus.errors import BlockRejected, Reject
from consensus.header import hash_hex
from node import limits
from node.chain_service import ChainService, peek_block_hash
from node.chainstate import LOW_WORK
from node.p2p.connections import ConnectionManager
from node.p2p.netgroups import ban_key
from node.p2p.penalties import Misbehaviour


class BlockIntake:
    """Takes blocks from peers to the chain service and charges the peers for bad ones."""

    def __init__(self, chain: ChainService, conns: ConnectionManager, request_sync: Callable[[str], None]) -> None:
        self.chain = chain
        self.conns = conns
        self._request_sync = request_sync
        self._headers_first: OrderedDict[str, None] = OrderedDict()  # ban keys that last sent an orphan or low work

    def headers_first(self, url: str) -> bool:
        """True if ``url``'s announced blocks must wait for its headers (module docstring)."""
        return _key(url) in self._headers_first

    def connected_by(self, url: str) -> None:
        """``url`` gave us a block or header we stored: fetch what it announces directly again."""
        self._headers_first.pop(_key(url), None)

    def _wait_for_headers(self, url: str) -> None:
        self._headers_first[_key(url)] = None
        self._headers_first.move_to_end(_key(url))
        while len(self._headers_first) > limits.MAX_SESSIONS:
            self._headers_first.popitem(last=False)

    def identify(self, url: str, raw: bytes, wanted: set[bytes]) -> bytes | None:
        """The hash of ``raw`` if it is one of ``wanted``; else punish ``url`` and return None."""
        claimed = peek_block_hash(raw)
        if claimed is None:
            self.conns.punish(url, Misbehaviour.MALFORMED_MESSAGE, "a block that is not canonically encoded")
            return None
        if claimed not in wanted:
            self.conns.punish(url, Misbehaviour.UNREQUESTED_DATA, f"block {hash_hex(claimed)[:16]} not asked for")
            return None
        return claimed

    async def submit(self, url: str, block: bytes | Block) -> bool:
        """Hand one block from ``url`` to the chain; False if it was refused (the peer is dealt with)."""
        try:
            result = await self.chain.accept_block(block, source=url)
        except BlockRejected as exc:
            if exc.code == Reject.UNKNOWN_PARENT:
                self._wait_for_headers(url)
                self._request_sync(url)  # it is ahead of us: fetch the headers in between
            else:
                self.conns.punish(url, exc.code, f"invalid block: {exc}")
            return False
        if result.status == LOW_WORK:
            self._wait_for_headers(url)
        elif result.status in ("connected", "reorg", "side"):
            self.connected_by(url)
            peer = self.conns.peers.get(url)
            if peer is not None:
                peer.last_block_at = time.time()  # a block we lacked and stored: eviction protection
        if result.status == "side" and self.chain.snapshot.bodies_missing:
            # The block extends a branch with more work whose earlier bodies we lack
            # (we hold only their headers): fetch them, or the branch never connects.
            self._request_sync(url)
        return True

    async def deliver(self, url: str, raw: bytes, wanted: set[bytes]) -> bool:
        """Identify and submit one announced block; False stops the peer's batch."""
        if self.identify(url, raw, wanted) is None:
            return False
        return await self.submit(url, raw)


def _key(url: str) -> str:
    try:
        return ban_key(url)
    except ValueError:  # not a URL we could ever have connected to: keyed as given
        return url
