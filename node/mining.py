"""Turning a block template into a mined block with the hashing core.

``solve`` searches the nonce space with ``search_nonce``; when all 2**32
nonces fail it rolls the header time forward one second and searches again
(the header's time is not committed by ``root``, so nothing else changes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from consensus import header as header_codec
from consensus.block import Block
from consensus.contracts import is_training, task_specs
from consensus.errors import BlockRejected
from consensus.hashing import search_nonce
from consensus.pow import bits_to_target
from consensus.template import build_block
from consensus.tx import GradientUpdate, Tx
from node.mempool import inclusion_ranks
from wallet import address_bytes

log = logging.getLogger("gradchain.miner")

NONCE_SPACE = 2**32
# Nonces per search call: small enough that a new tip interrupts the miner
# within a fraction of a second even on one slow core.
NONCES_PER_ROUND = 1 << 22
FUTURE_MARGIN_S = 5  # keep our block times this far inside the peers' future limit
HASHRATE_WINDOW_S = 2.0  # the reported hashrate averages this long
MAX_TEMPLATE_TXS = 2000  # transactions per mined block (policy)
MAX_TEMPLATE_BYTES = 16 * 1024 * 1024  # template size (policy), below the consensus block cap
MINER_RETRY_S = 1.0  # after a failed round (template, search or submit): log, pause, try again
CLOCK_CATCH_UP_S = 1.0  # poll period while our next block's time would run ahead of the clock
IDLE_POLL_S = 1.0  # poll period while the trainer wants no blocks (sybil-flood, once its stake is bonded)
SUBMIT_TIMEOUT_S = 60.0  # validating our own block on a busy chain worker


def solve(
    block: Block,
    *,
    threads: int | None = None,
    stop: threading.Event | None = None,
    max_time: Callable[[], int] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Block | None:
    """``block`` with a nonce that meets its target, or None if ``stop`` was set.

    ``max_time`` bounds time rolling (the node passes now + allowed drift).
    ``on_progress`` receives the count of nonces tried after each round.
    """
    header = block.header
    target = bits_to_target(header.bits)
    while True:
        start = 0
        while start < NONCE_SPACE:
            count = min(NONCES_PER_ROUND, NONCE_SPACE - start)
            nonce = search_nonce(header_codec.encode(header), target, start, count, threads=threads, stop=stop)
            if stop is not None and stop.is_set():
                return None
            if on_progress is not None:
                on_progress(count if nonce is None else nonce - start + 1)
            if nonce is not None:
                return dataclasses.replace(block, header=header.with_nonce(nonce))
            start += count
        if max_time is not None and header.time + 1 > max_time():
            return None
        header = header.with_time(header.time + 1)


def latest_block_time(drift_s: int) -> int:
    """The latest time our blocks carry: well inside the peers' future-time limit."""
    return int(time.time()) + drift_s // 2


def template_txs(node: Any) -> list[Tx]:
    """On the chain thread: what this node's next block carries.

    An honest miner takes the mempool's choice (:meth:`node.mempool.Mempool.select`:
    commitments, updates by fair inclusion, spends by fee rate). The testnet's
    attacking miners change it: ``censor`` drops every update but its own;
    ``miner-poison`` drops every update and carries its own poisoned ones,
    one per key it fields (:meth:`node.training.Trainer.private_reveals`).
    """
    chain = node.chain
    specs = task_specs(chain.rules.task, chain.state.tasks)
    caps = {
        task_id: spec.max_updates_per_block for task_id, spec in specs.items() if is_training(chain.state.tasks[task_id])
    }
    picked = node.mempool.select(
        max_updates=caps, max_txs=MAX_TEMPLATE_TXS, max_bytes=MAX_TEMPLATE_BYTES,
        ranks=inclusion_ranks(chain.state, specs, chain.height + 1, chain.main.__getitem__),
    )
    txs: list[Tx] = [tx for _, tx in picked]
    attack = node.config.attack
    trainer = node.trainer
    if attack == "censor":
        own = {address_bytes(k.public) for k in trainer.keys} if trainer is not None else set()
        txs = [tx for tx in txs if not isinstance(tx, GradientUpdate) or tx.sender_address in own]
    elif attack == "miner-poison":
        txs = [tx for tx in txs if not isinstance(tx, GradientUpdate)]
        if trainer is not None:
            txs += trainer.private_reveals()[: chain.task.max_updates_per_block]
    return txs


def make_template(node: Any) -> Block:
    """On the chain thread: a block on the tip with :func:`template_txs`, paying this node."""
    chain = node.chain
    miner = address_bytes(node.keypair.public)
    txs = template_txs(node)
    block_time = max(int(time.time()), chain.min_next_time())
    view = chain.tip_view()
    try:
        block, _ = build_block(view, chain.state, txs, miner=miner, time=block_time)
    except BlockRejected as exc:
        # One tx the tip no longer takes (a round turned, a nonce was mined elsewhere):
        # keep the ones that still go in, in order.
        log.info("template: %s; keeping the txs that still apply", exc)
        kept: list[Tx] = []
        for tx in txs:
            try:
                build_block(view, chain.state, [*kept, tx], miner=miner, time=block_time)
            except BlockRejected:
                continue
            kept.append(tx)
        block, _ = build_block(view, chain.state, kept, miner=miner, time=block_time)
    return block


async def mine_blocks(node: Any, count: int) -> list[bytes]:
    """Mine ``count`` blocks now, one after another (the on-demand miner of regtest)."""
    loop = asyncio.get_running_loop()
    hashes = []
    for _ in range(count):
        template = await node.run_chain(make_template, node)
        block = await loop.run_in_executor(None, functools.partial(solve, template, threads=node.config.threads))
        assert block is not None
        await node.submit_block(block, source=None, mined=True)
        hashes.append(block.hash)
    return hashes


class Miner:
    """The mining thread of a node: template from the tip and mempool, search, submit.

    A tip change sets the current stop event, so the search returns within one
    batch and the next template builds on the new tip.
    """

    def __init__(self, node: Any) -> None:
        self.node = node
        self._shutdown = threading.Event()
        self._stop_search = threading.Event()
        self._thread = threading.Thread(target=self._run, name="miner", daemon=True)
        self.hashrate = 0.0
        self._window_hashes = 0
        self._window_start = time.monotonic()
        self._template_updates = 0
        node.on_tip_change(self._stop_search.set)
        node.on_new_update(self._on_new_update)

    def start(self) -> None:
        self._thread.start()

    def _on_new_update(self) -> None:
        """A fresh update arrived: mine it now rather than after this block.

        Trainers submit right after each tip, a moment after our template was
        built; restarting the search (from nonce 0 of a new root, no work
        lost: every hash is an independent try) puts their updates in this
        block instead of the next.
        """
        if self._template_updates < self.node.chain.task.max_updates_per_block:
            self._stop_search.set()

    def stop(self) -> None:
        self._shutdown.set()
        self._stop_search.set()
        self._thread.join(timeout=30)

    def _count(self, hashes: int) -> None:
        self._window_hashes += hashes
        elapsed = time.monotonic() - self._window_start
        if elapsed >= HASHRATE_WINDOW_S:
            self.hashrate = self._window_hashes / elapsed
            self.node.metrics.hashrate.set(self.hashrate)
            self._window_hashes, self._window_start = 0, time.monotonic()

    def _run(self) -> None:
        """Mine until stopped; a failing round is logged and retried, never the end of the miner."""
        while not self._shutdown.is_set():
            try:
                self._round()
            except Exception:
                if self._shutdown.is_set():  # e.g. the chain worker already shut down
                    return
                log.exception("mining round failed; retrying in %.0f s", MINER_RETRY_S)
                self._shutdown.wait(MINER_RETRY_S)

    def _round(self) -> None:
        """One template, one search, and the submission of what it found."""
        node = self.node
        self._stop_search.clear()
        if node.trainer is not None and not node.trainer.wants_blocks:
            self.hashrate = 0.0
            self._shutdown.wait(IDLE_POLL_S)
            return
        drift = node.chain.params.max_future_block_time_s
        earliest = node.call_chain(node.chain.min_next_time)
        if earliest > time.time() + drift - FUTURE_MARGIN_S:
            # Blocks came faster than the clock: the median-time rule would push
            # our time past what peers accept. Let the clock catch up.
            self._shutdown.wait(CLOCK_CATCH_UP_S)
            return
        template = node.call_chain(make_template, node)
        self._template_updates = sum(isinstance(tx, GradientUpdate) for tx in template.txs)
        block = solve(
            template,
            threads=node.config.threads,
            stop=self._stop_search,
            max_time=functools.partial(latest_block_time, drift),
            on_progress=self._count,
        )
        if block is None or self._shutdown.is_set():
            return
        future = asyncio.run_coroutine_threadsafe(node.submit_block(block, source=None, mined=True), node.loop)
        try:
            future.result(timeout=SUBMIT_TIMEOUT_S)
        except BlockRejected as exc:
            log.error("own block rejected (%s); rebuilding the template", exc)
        if node.config.min_block_interval_s > 0:
            self._shutdown.wait(node.config.min_block_interval_s)
