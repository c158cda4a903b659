"""The trainer of a node: a fresh gradient update on its private data per tip.

When the tip advances, the trainer takes the model at the tip, runs the
task's local steps on this node's encrypted shard (or on the participant's
own file given with ``--data``, followed as rows are appended:
node/datafile.py), signs the update and submits it like any transaction,
so it reaches peers by gossip. An attacker
node (testnet demos) runs the same trainer with a poisoned step, so the
chain's aggregation rule has to defend against it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from consensus.errors import BlockRejected
from consensus.tx import GradientUpdate, encode_tx, sign_tx
from ml.attacks import attack, flip_labels, is_data_attack
from ml.codec import encode_update
from ml.datasets import load_dataset
from ml.shards import decrypt_shard, derive_shard_key, encrypt_shard, shard
from ml.tasks import TaskSpec
from ml.trainer import clip_to_norm, train_update
from node.datafile import LocalData
from node.keystore_file import write_private_file
from node.mempool import PolicyRejected
from node.taskfile import genesis_task_id, match_task_id
from wallet import address_bytes

log = logging.getLogger("gradchain.trainer")

SHARD_FILE = "shard.bin"
ATTACK_NORM_FRACTION = 0.999  # an adaptive attacker stays just inside the norm bound


def load_or_create_shard(
    datadir: pathlib.Path, secret: bytes, task: TaskSpec, index: int, total: int, scheme: str, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """This node's training data, kept encrypted at rest under a key from ``secret``."""
    key = derive_shard_key(secret)
    path = datadir / SHARD_FILE
    if path.exists():
        X, y = decrypt_shard(path.read_bytes(), key)
        return np.asarray(X, dtype=np.float32), np.asarray(y)
    X, y = shard(load_dataset(task), index, total, scheme, alpha=alpha)
    write_private_file(path, encrypt_shard(X, y, key, os.urandom(12)))
    return X, y


@dataclass
class _Job:
    params: np.ndarray
    height: int
    tip: bytes
    nonce: int
    honest: np.ndarray | None  # updates of others on this base (what an omniscient attacker sees)


class Trainer:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.task: TaskSpec = node.chain.task
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.X: np.ndarray
        self.y: np.ndarray
        seed = int.from_bytes(node.keypair.public[:8], "little")
        self.rng = np.random.default_rng(seed)
        self.submitted = 0
        self.data: LocalData | None = None

    async def start(self) -> None:
        config = self.node.config
        index, total = config.shard
        loop = asyncio.get_running_loop()
        self.task_id = await self.node.run_chain(genesis_task_id, self.node.chain)
        if config.train_task is not None:  # the chain holds one task: the id must name it
            match_task_id(config.train_task, [self.task_id])
        if config.data_file is not None:  # the participant's own file, followed as it grows
            self.data = await loop.run_in_executor(
                None, LocalData.open, config.data_file, config.datadir, self.node.keypair.seed, self.task
            )
            self._use(self.data.X, self.data.y)
            source = f"from {config.data_file}"
        else:
            self._use(*await loop.run_in_executor(
                None, load_or_create_shard, config.datadir, self.node.keypair.seed, self.task,
                index, total, config.shard_scheme, config.dirichlet_alpha,
            ))
            source = f"shard {index}/{total}"
        role = f"attacker ({config.attack})" if config.attack else "honest"
        self.node.event("trainer", f"trainer ready for task {self.task.name} ({self.task_id[:12]}…): "
                                   f"{len(self.y)} private examples, {source}, {role}")
        self.node.on_tip_change(self._wake.set)
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="trainer")

    def _use(self, X: np.ndarray, y: np.ndarray) -> None:
        """Train on ``(X, y)`` from now on (a label-flip attacker flips the labels)."""
        attack_name = self.node.config.attack
        if attack_name and is_data_attack(attack_name):
            y = flip_labels(y, self.task.output_dim)
        self.X, self.y = X, y

    def _follow_data(self) -> None:
        """Before a step: take the rows appended to the participant's file since the last one."""
        if self.data is not None and (added := self.data.refresh()) != 0:
            self._use(self.data.X, self.data.y)
            self.node.event("data", f"{added:+d} rows from {self.data.source}: training on {self.data.rows}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _snapshot(self) -> _Job | None:
        """On the chain thread: the tip model, unless our last update is still pending."""
        chain, mempool = self.node.chain, self.node.mempool
        sender = address_bytes(self.node.keypair.public)
        pending = mempool.pending(sender)
        if any(isinstance(e.tx, GradientUpdate) for e in pending):
            return None
        others = [
            e.tx for e in (mempool.get(t) for t in mempool.txids())
            if e is not None and isinstance(e.tx, GradientUpdate) and e.tx.sender != self.node.keypair.public
        ]
        honest = None
        if others:
            from ml.codec import decode_update

            honest = np.stack([decode_update(tx.update, self.task.param_count) for tx in others])
        tip = chain.tip
        return _Job(np.array(chain.state.params), tip.height, tip.hash, mempool.next_nonce(sender, chain), honest)

    def _train(self, job: _Job) -> GradientUpdate:
        self._follow_data()
        delta = train_update(self.task, job.params, self.X, self.y, rng=self.rng)
        name = self.node.config.attack
        if name and not is_data_attack(name):
            honest = job.honest if job.honest is not None else delta[None, :]
            params: dict[str, Any] = {}
            if name == "alie":
                params["f"] = 1
            elif name == "sign-flip":
                params["scale"] = self.node.config.attack_scale
            delta = attack(name, delta, honest, self.rng, **params)
            delta = clip_to_norm(delta, ATTACK_NORM_FRACTION * self.task.norm_bound)
        tx = GradientUpdate(
            self.node.keypair.public, job.nonce, 0, job.height, job.tip, encode_update(delta)
        )
        signed = sign_tx(tx, self.node.keypair, self.node.chain.chain_id)
        assert isinstance(signed, GradientUpdate)
        return signed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                job = await self.node.run_chain(self._snapshot)
                if job is None:
                    continue
                tx = await loop.run_in_executor(None, self._train, job)
                await self.node.submit_tx(encode_tx(tx), source=None)
                self.submitted += 1
                self.node.event(
                    "update", f"submitted update on base {job.height} ({self.submitted} so far)", job.height
                )
            except (BlockRejected, PolicyRejected) as exc:
                # The tip moved on while we trained (stale nonce or base): train again.
                log.info("own update not pooled (%s); retrying on the new tip", exc)
                self._wake.set()
                await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("training step failed")
                await asyncio.sleep(1.0)
