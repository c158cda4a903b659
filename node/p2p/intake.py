"""The one way a peer's block enters the node, whether it was announced or synced.

The event loop never decodes a block. It reads the 80 header bytes at their
fixed place in the canonical encoding and hashes them (microseconds), which
is enough to check that the peer sent what we asked for and to order a
download. The chain service then decodes and validates the block on the
chain thread, once. What a rejection costs the sender, and which rejections
mean "sync first", is decided here and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from consensus.block import Block
from consensus.errors import BlockRejected, Reject
from consensus.header import hash_hex
from node.chain_service import ChainService, peek_block_hash
from node.p2p.connections import ConnectionManager
from node.p2p.penalties import Misbehaviour


class BlockIntake:
    """Takes blocks from peers to the chain service and charges the peers for bad ones."""

    def __init__(self, chain: ChainService, conns: ConnectionManager, request_sync: Callable[[str], None]) -> None:
        self.chain = chain
        self.conns = conns
        self._request_sync = request_sync

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
                self._request_sync(url)  # it is ahead of us: fetch the headers in between
            else:
                self.conns.punish(url, exc.code, f"invalid block: {exc}")
            return False
        peer = self.conns.peers.get(url)
        if peer is not None and result.status in ("connected", "reorg", "side"):
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
