"""The chain service: the one owner of the chain state and the mempool, on its own thread.

``ChainState`` and ``Mempool`` are not thread-safe, and validating a block
takes long enough that it must not run on the event loop. So both live on
one worker thread ("chain"), and this service is the only door to them:

* :attr:`ChainService.snapshot` is a frozen :class:`ChainSnapshot` of the tip
  (height, hashes, work, state root, mempool size), replaced after every
  change. The loop reads it and nothing else of the chain.
* Blocks enter through :meth:`ChainService.accept_block` whatever their
  source (a peer's announce, headers-first sync, the miner, a test): raw
  bytes are decoded and checked on the chain thread, once.
* Headers enter in batches through :meth:`ChainService.accept_headers`, one
  disk sync per batch.
* Transactions enter through :meth:`ChainService.submit_tx`.
* Anything else runs on the chain thread through :meth:`ChainService.run`
  (a function that receives nothing and reads ``service.chain``).

After a tip change the service calls its listeners on the loop with a
:class:`TipChange`, so metrics, events, gossip and the miner follow the chain
without reading it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from consensus import header as header_codec
from consensus.block import Block, decode_block
from consensus.errors import NOT_PUNISHED, BlockRejected
from consensus.hashing import sha256d
from consensus.header import Header, hash_hex
from consensus.params import ChainParams
from consensus.pow import work
from consensus.tx import GradientUpdate, decode_tx
from ml.tasks import TaskSpec
from node.chainstate import ChainState, Connected
from node.mempool import Mempool, PolicyRejected
from node.metrics import NodeMetrics

log = logging.getLogger("gradchain.chain")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """The tip as the loop may read it: immutable, replaced whole after every change."""

    network: str
    params: ChainParams  # the network's consensus parameters with the task's block time
    chain_id: int
    magic: bytes
    genesis_hash: bytes
    task: TaskSpec
    height: int
    tip_hash: bytes
    tip_time: int
    tip_work: int
    tip_bits: int
    state_root: bytes
    model_version: int
    best_header_hash: bytes
    best_header_height: int
    best_header_work: int
    mempool_txs: int
    mempool_bytes: int

    @property
    def bodies_missing(self) -> bool:
        """True while the best header has more work than the tip: some bodies are still to come."""
        return self.best_header_work > self.tip_work

    @classmethod
    def of(cls, chain: ChainState, mempool: Mempool) -> ChainSnapshot:
        """Read on the chain thread."""
        tip, best = chain.tip, chain.best_header
        return cls(
            network=chain.network.name, params=chain.params, chain_id=chain.chain_id, magic=chain.network.magic,
            genesis_hash=chain.genesis_hash, task=chain.task, height=chain.height, tip_hash=tip.hash,
            tip_time=tip.header.time, tip_work=tip.chain_work, tip_bits=tip.header.bits,
            state_root=chain.state.root, model_version=chain.state.model_version,
            best_header_hash=best.hash, best_header_height=best.height, best_header_work=best.chain_work,
            mempool_txs=len(mempool), mempool_bytes=mempool.bytes,
        )


@dataclass(frozen=True, slots=True)
class TipChange:
    """What one accepted block changed; handed to the tip listeners on the loop."""

    result: Connected
    source: str | None  # the peer URL it came from; None for our own (mined, API, test)
    mined: bool
    requeued: tuple[bytes, ...]  # txids of disconnected blocks that are back in the mempool


@dataclass(frozen=True, slots=True)
class HeadersAccepted:
    """The outcome of a batch of headers: how far it reached and how much of it was new."""

    last_hash: bytes
    last_height: int
    last_work: int
    new: int


@dataclass(frozen=True, slots=True)
class TxAdmission:
    txid: bytes
    added: bool  # False: the pool already held it
    is_update: bool


TipListener = Callable[[TipChange], None]
TxListener = Callable[[TxAdmission, "str | None"], None]


class ChainService:
    """Owns a node's ``ChainState`` and ``Mempool`` on one worker thread (module docstring)."""

    def __init__(self, metrics: NodeMetrics, event: Callable[..., None]) -> None:
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chain")
        self._chain: ChainState | None = None
        self.mempool = Mempool()
        self.metrics = metrics
        self._event = event
        self._snapshot: ChainSnapshot | None = None
        self._tip_listeners: list[TipListener] = []
        self._tx_listeners: list[TxListener] = []

    # -- life cycle ------------------------------------------------------------------------------
    async def open(self, opener: Callable[[], ChainState]) -> None:
        """Open the chain on the chain thread (``opener`` reads or creates the datadir)."""
        self._chain = await self.run(opener)
        self._snapshot = await self.run(self._take_snapshot)

    async def close(self) -> None:
        if self._chain is not None:
            await self.run(self._chain.close)
            self._chain = None
        self._worker.shutdown(wait=True)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def chain(self) -> ChainState:
        """The chain state itself: for code already running on the chain thread."""
        if self._chain is None:
            raise RuntimeError("the chain service is not open")
        return self._chain

    @property
    def is_open(self) -> bool:
        return self._chain is not None

    @property
    def snapshot(self) -> ChainSnapshot:
        if self._snapshot is None:
            raise RuntimeError("the chain service is not open")
        return self._snapshot

    def _take_snapshot(self) -> ChainSnapshot:
        return ChainSnapshot.of(self.chain, self.mempool)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the chain thread: the only place chain and mempool are touched."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking twin of :meth:`run` for other threads (the miner)."""
        return self._worker.submit(fn, *args).result()

    # -- listeners ---------------------------------------------------------------------------------
    def on_tip_change(self, callback: TipListener) -> None:
        """``callback(change)`` runs on the loop after every tip change."""
        self._tip_listeners.append(callback)

    def on_new_tx(self, callback: TxListener) -> None:
        """``callback(admission, source)`` runs on the loop when a transaction enters the mempool."""
        self._tx_listeners.append(callback)

    # -- blocks ------------------------------------------------------------------------------------
    async def accept_block(self, block: Block | bytes, *, source: str | None, mined: bool = False) -> Connected:
        """Validate and store a block (decoded on the chain thread if given as bytes).

        Raises ``BlockRejected`` with the rule it broke; the caller decides
        what that costs ``source``.
        """
        started = time.perf_counter()
        try:
            result, requeued = await self.run(self._accept_block, block)
        except BlockRejected as exc:
            self.metrics.blocks_rejected.labels(reason=exc.code.value).inc()
            if exc.code not in NOT_PUNISHED:
                block_hash = block.hash if isinstance(block, Block) else peek_block_hash(block)
                shown = hash_hex(block_hash) if block_hash is not None else "an undecodable block"
                self._event("rejected", f"rejected block {shown[:16]}… from {source or 'local'}: {exc}",
                            hash=shown, reason=exc.code.value, source=source or "local")
            raise
        self.metrics.block_validation_seconds.observe(time.perf_counter() - started)
        if result.status in ("connected", "reorg"):
            snap = self.snapshot
            self.metrics.height.set(snap.height)
            self.metrics.mempool_size.set(snap.mempool_txs)
            change = TipChange(result, source, mined, requeued)
            for callback in list(self._tip_listeners):
                callback(change)
        return result

    def _accept_block(self, block: Block | bytes) -> tuple[Connected, tuple[bytes, ...]]:
        chain = self.chain
        if not isinstance(block, Block):
            # The header first: an orphan, a duplicate, a header without its proof of
            # work or a low-work fork costs us 80 bytes read, never a decoded body.
            header = peek_header(block)
            screened = chain.screen(header) if header is not None else None
            if screened is not None:
                return screened, ()
            block = decode_block(block)
        try:
            result = chain.accept_block(block, int(time.time()))
            requeued: tuple[bytes, ...] = ()
            if result.status in ("connected", "reorg"):
                self.mempool.update_tip(
                    chain, connected=result.connected, disconnected=result.disconnected, now=time.time()
                )
                # Txs of disconnected blocks back in the pool: peers that only saw them in a
                # block (never loose) must have them announced, or nobody mines them again.
                requeued = tuple(t for b in result.disconnected for t in b.txids if t in self.mempool)
        finally:  # a rejected block may still have changed the best header
            self._snapshot = self._take_snapshot()
        return result, requeued

    async def accept_headers(self, headers: Sequence[Header]) -> HeadersAccepted:
        """Validate and store consecutive headers; one disk sync for the whole batch.

        Raises ``BlockRejected`` at the first invalid one (those before it stay).
        """
        return await self.run(self._accept_headers, list(headers))

    def _accept_headers(self, headers: list[Header]) -> HeadersAccepted:
        chain = self.chain
        now = int(time.time())
        new = 0
        entry = None
        try:
            with chain.storage.group():
                for header in headers:
                    known = header_codec.header_hash(header) in chain.index
                    entry = chain.accept_header(header, now)
                    new += not known
        finally:
            self._snapshot = self._take_snapshot()
        assert entry is not None, "an empty batch of headers"
        return HeadersAccepted(entry.hash, entry.height, entry.chain_work, new)

    def parent_work(self, prev: bytes) -> int | None:
        """On the chain thread: the chain work up to ``prev``, or None if we do not know it."""
        entry = self.chain.index.get(prev)
        return None if entry is None else int(entry.chain_work)

    # -- transactions ------------------------------------------------------------------------------
    async def submit_tx(self, raw: bytes, *, source: str | None) -> TxAdmission:
        """Validate ``raw`` against the tip and pool it (decoded on the chain thread).

        Raises ``BlockRejected`` (consensus) or ``PolicyRejected`` (our
        mempool's choice); either is counted by reason.
        """
        try:
            admission = await self.run(self._pool_tx, raw)
        except BlockRejected as exc:
            self.metrics.txs_rejected.labels(reason=exc.code.value).inc()
            raise
        except PolicyRejected as exc:
            self.metrics.txs_rejected.labels(reason=exc.reason.value).inc()
            raise
        self.metrics.mempool_size.set(self.snapshot.mempool_txs)
        if admission.added:
            self.metrics.txs_accepted.inc()
            for callback in list(self._tx_listeners):
                callback(admission, source)
        return admission

    def _pool_tx(self, raw: bytes) -> TxAdmission:
        tx = decode_tx(raw)
        result = self.mempool.add(raw, tx, self.chain, time.time())
        if result.added:
            self._snapshot = self._take_snapshot()
        return TxAdmission(result.txid, result.added, isinstance(tx, GradientUpdate))

    # -- queries peers make -------------------------------------------------------------------------
    def lacking_blocks(self, hashes: Sequence[bytes]) -> list[bytes]:
        """On the chain thread: which of ``hashes`` we hold no body for."""
        return [h for h in hashes if not self.chain.has_block(h)]

    def lacking_txs(self, txids: Sequence[bytes]) -> list[bytes]:
        """On the chain thread: which of ``txids`` the mempool does not hold."""
        return [t for t in txids if t not in self.mempool]


# A canonical block is msgpack [header: bin8 of 80 bytes, state root, txs]: 0x93, then 0xc4 0x50.
_CANONICAL_PREFIX = bytes([0x93, 0xC4, header_codec.HEADER_SIZE])


def _header_bytes(raw: bytes) -> bytes | None:
    start = len(_CANONICAL_PREFIX)
    if len(raw) < start + header_codec.HEADER_SIZE or not raw.startswith(_CANONICAL_PREFIX):
        return None
    return raw[start : start + header_codec.HEADER_SIZE]


def peek_block_hash(raw: bytes) -> bytes | None:
    """The hash of a canonically encoded block, read from its header bytes without decoding it.

    None if ``raw`` does not start like a canonical block (the decoder will refuse it).
    """
    header = _header_bytes(raw)
    return None if header is None else sha256d(header)


def peek_header(raw: bytes) -> Header | None:
    """The header of a canonically encoded block, without decoding the rest; None as :func:`peek_block_hash`."""
    header = _header_bytes(raw)
    return None if header is None else header_codec.decode(header)


def header_work(headers: Sequence[Header]) -> int:
    """The work the headers claim by their bits (checked against the retarget only when stored)."""
    return sum(work(h.bits) for h in headers)
