"""The running node: its services, wired together, and what it does with its key.

A node is an aiohttp application (``node/app.py``) holding typed services
(``node/services.py``): the chain service, which owns the chain state and
the mempool on their own thread; the peer service (``node/p2p/``); metrics
and the event log. The application's ``cleanup_ctx`` starts them in order
(the datadir and chain, then the peers, then the miner and trainer) and
stops them in reverse, so a failure anywhere leaves nothing running.

Threading model. The event loop serves HTTP and talks to peers; it reads
the chain only through the chain service's frozen snapshot. Everything that
touches the chain state or the mempool runs on the chain thread. The miner
is its own thread (the hashing core releases the GIL); training and
evaluation run in the loop's default executor.

``Node`` keeps a few pass-through names (``chain``, ``mempool``,
``run_chain``, ``submit_block`` ...) for the miner, trainer and dashboard,
which were written against it; new code uses the services.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiohttp import web

from consensus.block import Block
from consensus.header import hash_hex
from ml.floatenv import float_environment
from ml.tasks import with_overrides
from node import limits
from node.chain_service import ChainService, TipChange
from node.chainstate import ChainState, Connected
from node.config import NodeConfig
from node.events import Event, EventLog
from node.listener import ConnectionGuard, GuardedSite, runner_options
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.p2p.service import PeerService
from node.storage import StorageError
from node.taskfile import load_task

log = logging.getLogger("gradchain.node")
T = TypeVar("T")

__all__ = ["DatadirLocked", "Event", "FloatEnvironmentError", "Node"]


class DatadirLocked(Exception):
    """Another node already runs on this datadir."""


class FloatEnvironmentError(ValueError):
    """The CPU flushes subnormal floats: this node would compute other state roots."""


class Node:
    """One gradchain node; ``await start()``, then ``await stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.metrics = NodeMetrics()
        self.events = EventLog()
        self.chain_service = ChainService(self.metrics, self.events.add)
        self.peers = PeerService(self.chain_service, self.metrics, seeds=list(config.peers), event=self.events.add,
                                 dial_learned=config.dial_learned, datadir=config.datadir)
        self.connections = ConnectionGuard(limits.MAX_CONNECTIONS, limits.MAX_CONNECTIONS_PER_HOST)
        self.cookie = ""
        self.keypair: Any = None
        self.url = ""
        self.started_at = time.time()
        self.miner: Any = None
        self.trainer: Any = None  # the first of ``trainers``: the task --train names (with --data)
        self.trainers: list[Any] = []
        self.evaluator: Any = None
        self.loop: asyncio.AbstractEventLoop
        self._runner: web.AppRunner | None = None
        self._lock_fd: int | None = None
        self.chain_service.on_tip_change(self._record_tip_change)

    # -- life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen, start the services (``cleanup_ctx``), then accept connections."""
        from node.app import make_app

        self.loop = asyncio.get_running_loop()
        sock = _listening_socket(self.config.host, self.config.port)
        self.config.port = sock.getsockname()[1]
        self.url = self.config.advertise_url or f"http://{self.config.host}:{self.config.port}"
        self._runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False, **runner_options())
        try:
            await self._runner.setup()
        except BaseException:
            sock.close()
            raise
        await GuardedSite(self._runner, sock, self.connections).start()
        self.events.add(
            "node", f"listening on {self.url} ({self.config.network}, height {self.chain_service.snapshot.height})"
        )

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        log.info("stopped cleanly")

    async def chain_context(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: check the CPU, lock the datadir, open the chain, load the key, write the cookie."""
        from node.evaluation import Evaluator

        env = await self.chain_service.run(float_environment)  # consensus runs on that thread
        if not env.ieee:
            await self.chain_service.close()
            raise FloatEnvironmentError(env.describe())
        self.config.datadir.mkdir(parents=True, exist_ok=True)
        self._lock_datadir()
        try:
            await self.chain_service.open(self._open_chain)
            self.keypair = await self.loop.run_in_executor(None, self._load_keypair)
            self.cookie = self._write_cookie()
            self.metrics.height.set(self.chain_service.snapshot.height)
            self.evaluator = Evaluator(self)
        except BaseException:
            await self.chain_service.close()
            self._unlock_datadir()
            raise
        yield
        await self.chain_service.close()
        self._unlock_datadir()

    async def peer_context(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the peer service (connector, sync, gossip)."""
        await self.peers.start(self.url, self.config.host)
        yield
        await self.peers.stop()

    async def role_context(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the miner thread and the trainer, if this node has those roles."""
        from node.mining import Miner
        from node.training import Trainer

        if self.config.mine:
            self.miner = Miner(self)
            self.miner.start()
        if self.config.train:
            self.trainers = [Trainer(self, self.config.train_task, self.config.data_file)]
            if self.config.train_first_too:  # and the chain's first task, on the built-in shard
                self.trainers.append(Trainer(self))
            self.trainer = self.trainers[0]
            for trainer in self.trainers:
                await trainer.start()
        yield
        for trainer in self.trainers:
            await trainer.stop()
        if self.miner is not None:
            await self.loop.run_in_executor(None, self.miner.stop)

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

    # -- what the chain did --------------------------------------------------------------------------
    def _record_tip_change(self, change: TipChange) -> None:
        """Metrics and one event per connected block; a reorg line when blocks were replaced."""
        result = change.result
        snap = self.chain_service.snapshot
        for offset, block in enumerate(result.connected):
            height = result.height - len(result.connected) + 1 + offset
            updates = sum(1 for tx in block.txs[1:] if type(tx).__name__ == "GradientUpdate")
            short = hash_hex(block.hash)[:16]
            if change.mined and block.hash == result.block_hash:
                self.metrics.blocks_mined.inc()
                self.events.add("mined", f"mined block {height} {short}… ({updates} updates)", height)
            else:
                self.metrics.blocks_received.inc()
                self.events.add(
                    "block", f"block {height} {short}… from {change.source or 'local'} ({updates} updates)", height
                )
        if result.status == "reorg":
            depth = len(result.disconnected)
            self.metrics.reorgs.inc()
            self.metrics.reorg_depth.observe(depth)
            self.events.add("reorg", f"reorg: {depth} block(s) replaced, new tip {snap.height}", snap.height)

    # -- pass-through names for the miner, trainer and dashboard ----------------------------------------
    @property
    def chain(self) -> ChainState:
        """The chain state: read it on the chain thread (``run_chain``), not on the loop."""
        return self.chain_service.chain

    @property
    def mempool(self) -> Mempool:
        """The mempool: like :attr:`chain`, for the chain thread."""
        return self.chain_service.mempool

    @property
    def instance_nonce(self) -> int:
        return self.peers.nonce

    @property
    def syncing(self) -> bool:
        return self.peers.syncing

    def event(self, kind: str, message: str, height: int | None = None, **data: Any) -> None:
        self.events.add(kind, message, height, **data)

    async def run_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the chain thread: the only place chain and mempool change."""
        return await self.chain_service.run(fn, *args)

    def call_chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking twin of :meth:`run_chain` for other threads (the miner)."""
        return self.chain_service.call(fn, *args)

    def on_tip_change(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on the loop after every tip change."""
        self.chain_service.on_tip_change(lambda change: callback())

    def on_new_update(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs on the loop when a gradient update enters the mempool."""
        self.chain_service.on_new_tx(lambda admission, source: callback() if admission.is_update else None)

    async def submit_block(self, block: Block, *, source: str | None, mined: bool = False) -> Connected:
        """Validate and store ``block``; raises ``BlockRejected``."""
        return await self.chain_service.accept_block(block, source=source, mined=mined)

    async def submit_tx(self, raw: bytes, *, source: str | None) -> bytes:
        """Validate ``raw`` against the tip and pool it; returns the txid.

        Raises ``BlockRejected`` (consensus) or ``PolicyRejected`` (our mempool's choice).
        """
        return (await self.chain_service.submit_tx(raw, source=source)).txid


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening before the services start, so peers that call back find us."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(limits.LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
