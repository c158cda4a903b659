"""Block download after headers-first sync: several peers, bounded, in order.

The wanted hashes (in height order) are cut into requests of at most
``MAX_BLOCKS_PER_REQUEST``. Each connected peer works on one request at a
time; what arrives is buffered and submitted strictly in height order, so
each block connects onto its parent. A peer that fails or stalls is dropped
and its request goes back to the front of the queue for another peer. A peer
that answers with none of the blocks asked for does not have that branch (it
may be on another fork): it gets no more requests in this download, so the
request goes to a peer that has the blocks instead of back to it forever.

Blocks are identified by hashing their header bytes (``chain_service.peek_block_hash``)
and decoded only when submitted, on the chain thread, through the same
``BlockIntake`` an announced block takes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from consensus.header import hash_hex
from node import limits
from node.p2p import messages as m
from node.p2p.connections import ConnectionManager
from node.p2p.intake import BlockIntake

log = logging.getLogger("gradchain.sync")


class BlockDownloader:
    def __init__(self, conns: ConnectionManager, intake: BlockIntake, hashes: list[bytes],
                 event: Callable[[str, str], None]) -> None:
        self.conns = conns
        self.intake = intake
        self._event = event
        self.order = hashes
        self.queue: collections.deque[list[bytes]] = collections.deque(
            hashes[i : i + limits.MAX_BLOCKS_PER_REQUEST]
            for i in range(0, len(hashes), limits.MAX_BLOCKS_PER_REQUEST)
        )
        self.arrived: dict[bytes, tuple[bytes, str]] = {}
        self.next_index = 0
        self.busy: set[str] = set()
        self.lacking: set[str] = set()  # peers that had none of a batch: they lack this branch
        self.failed = False
        self._progress = asyncio.Event()

    async def run(self) -> None:
        total = len(self.order)
        if total > limits.MAX_BLOCKS_PER_REQUEST:
            self._event("sync", f"downloading {total} blocks from {len(self.conns.peers)} peer(s)")
        workers: set[asyncio.Task[None]] = set()
        try:
            while self.next_index < total and not self.failed:
                in_flight = total - self.next_index - sum(len(b) for b in self.queue) - len(self.arrived)
                for url in list(self.conns.peers):
                    if not self.queue or url in self.busy or url in self.lacking:
                        continue
                    if in_flight >= limits.MAX_BLOCKS_IN_FLIGHT_TOTAL:
                        break
                    batch = self.queue.popleft()
                    in_flight += len(batch)
                    self.busy.add(url)
                    task = asyncio.create_task(self._fetch(url, batch))
                    workers.add(task)
                    task.add_done_callback(workers.discard)
                if not workers and all(url in self.lacking for url in self.conns.peers):
                    log.info("sync paused: no connected peer has the blocks")
                    return
                # Clear before submitting: a batch landing while we submit must wake the
                # wait below (clearing after it lost that wake-up and slept a whole second).
                self._progress.clear()
                await self._submit_ready()
                if self.next_index < total:
                    try:
                        await asyncio.wait_for(self._progress.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
        finally:
            for task in workers:
                task.cancel()

    async def _fetch(self, url: str, batch: list[bytes]) -> None:
        try:
            reply = await asyncio.wait_for(
                self.conns.request(url, "blocks", m.GetBlocks(hashes=tuple(batch)), "blocks"),
                timeout=limits.BLOCK_STALL_TIMEOUT_S,
            )
        except Exception as exc:  # PeerError or a stall: hand the batch to someone else
            self.queue.appendleft(batch)
            self.conns.drop(url, f"block download failed: {exc}")
            self.busy.discard(url)
            self._progress.set()
            return
        assert isinstance(reply, m.Blocks)
        got: set[bytes] = set()
        wanted = set(batch)
        for raw in reply.blocks:
            block_hash = self.intake.identify(url, raw, wanted)
            if block_hash is None:
                break
            self.arrived[block_hash] = (raw, url)
            got.add(block_hash)
        if not got:
            self.lacking.add(url)
        rest = [h for h in batch if h not in got]
        if rest:  # a size-trimmed or short reply: ask again for the rest
            self.queue.appendleft(rest)
        self.busy.discard(url)
        self._progress.set()

    async def _submit_ready(self) -> None:
        while self.next_index < len(self.order) and self.order[self.next_index] in self.arrived:
            block_hash = self.order[self.next_index]
            raw, url = self.arrived.pop(block_hash)
            if not await self.intake.submit(url, raw):
                log.warning("sync stopped at %s…: the block from %s was refused", hash_hex(block_hash)[:16], url)
                self.failed = True
                return
            self.next_index += 1
            if self.next_index % 100 == 0:
                self._event("sync", f"synced {self.next_index}/{len(self.order)} blocks")
