"""The running node: chain state, mempool, peers, miner and trainer together.

Threading model. The event loop serves HTTP and talks to peers. Everything
that touches the chain state or the mempool runs on one worker thread
(``Node.run_chain``), so those objects need no locks and validation never
blocks the loop. The miner is its own thread (the hashing core releases the
GIL); training runs in the loop's default executor.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from consensus.block import Block
from consensus.errors import BlockRejected, Reject
from consensus.header import hash_hex
from consensus.tx import GradientUpdate, Tx, decode_tx
from ml.floatenv import float_environment
from ml.tasks import with_overrides
from node import limits
from node.chainstate import ChainState, Connected
from node.config import NodeConfig
from node.listener import ConnectionGuard, GuardedSite, runner_options
from node.mempool import AddResult, Mempool
from node.metrics import NodeMetrics
from node.storage import StorageError
from node.taskfile import load_task

log = logging.getLogger("gradchain.node")
T = TypeVar("T")

MAX_EVENTS = 200  # recent events kept for the API, dashboard and terminal view


@dataclass(frozen=True)
class Event:
    time: float
    kind: str  # "block", "mined", "rejected", "reorg", "peer", "update", "tx"
    message: str
    height: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


class DatadirLocked(Exception):
    """Another node already runs on this datadir."""


class FloatEnvironmentError(ValueError):
    """The CPU flushes subnormal floats: this node would compute other state roots."""


class Node:
    """One gradchain node; ``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.chain: ChainState
        self.mempool = Mempool()
        self.metrics = NodeMetrics()
        self.events: collections.deque[Event] = collections.deque(maxlen=MAX_EVENTS)
        self.instance_nonce = secrets.randbits(64)  # detects connections to ourselves
        self.cookie = ""
        self.keypair: Any = None
        self.url = ""
        self.started_at = time.time()
        self.syncing = False
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chain")
        self._runner: web.AppRunner | None = None
        self._lock_fd: int | None = None
        self._tip_listeners: list[Callable[[], None]] = []
        self._update_listeners: list[Callable[[], None]] = []
        self.loop: asyncio.AbstractEventLoop
        self.peers: Any = None  # node.p2p.peers.PeerManager, set in start()
        self.miner: Any = None
        self.trainer: Any = None
        self.evaluator: Any = None

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        from node.app import make_app
        from node.evaluation import Evaluator
        from node.mining import Miner
        from node.p2p.peers import PeerManager
        from node.training import Trainer

        self.loop = asyncio.get_running_loop()
        # Consensus runs on the chain thread: its floating-point mode must keep subnormals.
        env = await self.run_chain(float_environment)
        if not env.ieee:
            raise FloatEnvironmentError(env.describe())
        self.config.datadir.mkdir(parents=True, exist_ok=True)
        self._lock_datadir()
        self.chain = await self.run_chain(self._open_chain)
        self.keypair = await self.loop.run_in_executor(None, self._load_keypair)
        self.cookie = self._write_cookie()
        self.evaluator = Evaluator(self)
        self.peers = PeerManager(self)
        app = make_app(self)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options())
        await self._runner.setup()
        self.connections = ConnectionGuard(limits.MAX_CONNECTIONS, limits.MAX_CONNECTIONS_PER_HOST)
        site = GuardedSite(self._runner, self.config.host, self.config.port, self.connections)
        await site.start()
        port = self._runner.addresses[0][1]
        self.config.port = port
        self.url = self.config.advertise_url or f"http://{self.config.host}:{port}"
        self.metrics.height.set(self.chain.height)
        self.event("node", f"listening on {self.url} ({self.config.network}, height {self.chain.height})")
        await self.peers.start()
        if self.config.mine:
            self.miner = Miner(self)
            self.miner.start()
        if self.config.train:
            self.trainer = Trainer(self)
            await self.trainer.start()

    async def stop(self) -> None:
        if self.trainer is not None:
            await self.trainer.stop()
        if self.miner is not None:
            await self.loop.run_in_executor(None, self.miner.stop)
        if self.peers is not None:
            await self.peers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if hasattr(self, "chain"):
            await self.run_chain(self.chain.close)
        self._worker.shutdown(wait=True)
        self._unlock_datadir()
        log.info("stopped cleanly")

    def _open_chain(self) -> ChainState:
        from node.chainstate import DB_NAME

        if (self.config.datadir / DB_NAME).exists():
            chain = ChainState.open(self.config.datadir)
            if chain.network.name != self.config.network:
                chain.close()
                raise StorageError(
                    f"{self.config.datadir} holds a {chain.network.name} chain, not {self.config.network}"
                )
            return chain
        task = with_overrides(load_task(self.config.task), rule=self.config.rule, f=self.config.byzantine_f)
        return ChainState.create(self.config.datadir, self.config.network, task)

    def _lock_datadir(self) -> None:
        import fcntl

        path = self.config.datadir / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:  # ELOOP: a symlink where the lock file goes
            raise DatadirLocked(f"cannot open {path} ({exc.strerror}); remove it and start again") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DatadirLocked(
                f"another node is running on {self.config.datadir}; stop it or use another --datadir"
            ) from None
        self._lock_fd = fd

    def _unlock_datadir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _write_cookie(self) -> str:
        """A fresh token for local control routes, readable only by this user."""
        from node.keystore_file import write_private_file

        token = secrets.token_hex(32)
        write_private_file(self.config.cookie_path, token.encode())
        return token

    def _load_keypair(self) -> Any:
        """The node's wallet: given in-process, or read from an encrypted keystore.

        Mining and training need one (rewards go to it, updates are signed by
        it); a key is never kept unencrypted in the datadir.
        """
        from node.keystore_file import read_keystore

        if self.config.keypair is not None:
            return self.config.keypair
        if self.config.keystore is not None:
            if self.config.password is None:
                raise ValueError("a keystore needs a password: set GRADCHAIN_PASSWORD")
            return read_keystore(self.config.keystore, self.config.password)
        if self.config.mine or self.config.train:
            raise ValueError(
                "--mine and --train need a wallet for rewards and signatures: add --keystore FILE "
                "(create one with `gradchain wallet new --keystore FILE`)"
            )
        return None

    # -- the chain worker -----------------------------------------------------------------------
    async def run_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the chain thread: the only place chain and mempool change."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def call_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking twin of :meth:`run_chain` for other threads (the miner)."""
        return self._worker.submit(fn, *args).result()

    def on_new_update(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on the loop when a gradient update enters the mempool."""
        self._update_listeners.append(callback)

    def on_tip_change(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on the loop after every tip change."""
        self._tip_listeners.append(callback)

    # -- events -----------------------------------------------------------------------------------
    def event(self, kind: str, message: str, height: int | None = None, **data: Any) -> None:
        self.events.append(Event(time.time(), kind, message, height, data))
        log.info(message)

    # -- blocks ---------------------------------------------------------------------------------
    async def submit_block(self, block: Block, *, source: str | None, mined: bool = False) -> Connected:
        """Validate and store ``block``; announce it if it became (part of) the tip.

        Raises ``BlockRejected``; the caller punishes ``source``.
        """
        started = time.perf_counter()
        try:
            result = await self.run_chain(self._accept_block, block)
        except BlockRejected as exc:
            self.metrics.blocks_rejected.labels(reason=exc.code.value).inc()
            if exc.code not in (Reject.UNKNOWN_PARENT, Reject.TIME_TOO_NEW):
                self.event(
                    "rejected",
                    f"rejected block {hash_hex(block.hash)[:16]}… from {source or 'local'}: {exc}",
                    data_hash=hash_hex(block.hash),
                )
            raise
        self.metrics.block_validation_seconds.observe(time.perf_counter() - started)
        if result.status in ("connected", "reorg"):
            self._after_tip_change(result, mined=mined, source=source)
        return result

    def _accept_block(self, block: Block) -> Connected:
        now = int(time.time())
        result = self.chain.accept_block(block, now)
        if result.status in ("connected", "reorg"):
            self.mempool.update_tip(
                self.chain, connected=result.connected, disconnected=result.disconnected, now=time.time()
            )
        return result

    def _after_tip_change(self, result: Connected, *, mined: bool, source: str | None) -> None:
        chain = self.chain
        tip = chain.tip
        self.metrics.height.set(chain.height)
        self.metrics.mempool_size.set(len(self.mempool))
        for block in result.connected:
            updates = sum(1 for tx in block.txs[1:] if type(tx).__name__ == "GradientUpdate")
            height = chain.index[block.hash].height
            if mined and block.hash == result.block_hash:
                self.metrics.blocks_mined.inc()
                self.event(
                    "mined", f"mined block {height} {hash_hex(block.hash)[:16]}… ({updates} updates)", height
                )
            else:
                self.metrics.blocks_received.inc()
                self.event(
                    "block",
                    f"block {height} {hash_hex(block.hash)[:16]}… from {source or 'local'} ({updates} updates)",
                    height,
                )
        if result.status == "reorg":
            depth = len(result.disconnected)
            self.metrics.reorgs.inc()
            self.metrics.reorg_depth.observe(depth)
            self.event("reorg", f"reorg: {depth} block(s) replaced, new tip {tip.height}", tip.height)
        if self.peers is not None:
            self.peers.announce_block(result.block_hash, exclude=source)
            # Txs of disconnected blocks that are back in our pool: peers that never
            # saw them loose (they came in a block) would otherwise never mine them.
            back = [t for b in result.disconnected for t in b.txids if t in self.mempool]
            if back:
                self.peers.announce_txs(back, exclude=None)
        for callback in self._tip_listeners:
            callback()

    # -- transactions -----------------------------------------------------------------------------
    def _pool_tx(self, raw: bytes) -> tuple[Tx, AddResult]:
        """On the chain thread: decode (an update can be megabytes) and validate against the tip."""
        tx = decode_tx(raw)
        return tx, self.mempool.add(raw, tx, self.chain, time.time())

    async def submit_tx(self, raw: bytes, *, source: str | None) -> bytes:
        """Validate ``raw`` against the tip and pool it; announce it. Returns the txid.

        Raises ``BlockRejected`` (consensus) or ``PolicyRejected`` (our mempool's choice).
        """
        tx, result = await self.run_chain(self._pool_tx, raw)
        self.metrics.mempool_size.set(len(self.mempool))
        if result.added:
            self.metrics.txs_accepted.inc()
            if isinstance(tx, GradientUpdate):
                for callback in self._update_listeners:
                    callback()
            if self.peers is not None:
                self.peers.announce_tx(result.txid, exclude=source)
        return result.txid

