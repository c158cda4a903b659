"""The trainer of a node: bond, commit a round's updates, reveal them one block at a time.

An honest participant, at every new tip (docs/DESIGN-NOTES.md, "Rounds, bonds
and commit-reveal"):

1. **bonds** its key as soon as it can afford the task's bond (coins come
   from mining, or from a transfer for a node that does not mine);
2. once the bond is mature, **commits** in each round ``r``: it trains one
   update per block of the round on the model at the round's start (the tip's
   model: the model moves only at a round's last block), signs them and
   submits one ``Commit`` of their digests;
3. during round ``r + 1`` it **reveals** them: all at once, as soon as the
   round starts (a block counts at most one update per sender, and the
   mempool holds a round's worth per sender), so every miner has one of them
   for each block, however soon it is found after the last.

Attacker nodes (testnet demos, ``--attack``) run the same loop with other
choices, so the chain's rules have to defend against them:

``sign-flip``, ``gaussian``, ... (:data:`ml.attacks.ATTACKS`)
    a participant whose updates are poisoned the named way.
``miner-poison``
    a miner that fields as many bonded keys as a block has update slots (it
    funds and bonds them from its rewards), commits poisoned updates
    (sign-flip at the norm bound) under each, and reveals them only in its
    own blocks (:meth:`Trainer.private_reveals`), leaving everyone else's out.
``censor``
    trains honestly; its miner leaves out every update but its own.
``copy``
    trains nothing: it commits to copies of other senders' reveals it saw
    during the round and reveals them in the next; the chain never counts a
    clone, so it earns nothing.
``sybil-flood``
    a participant with :data:`SYBIL_KEYS` keys that sends poisoned updates
    from all of them to every peer at every tip, and bonds every key it can
    afford. It buys its stake the only way a testnet offers, by mining: its
    miner runs until every key is bonded (:attr:`Trainer.wants_blocks`), then
    stops, and the sybil keys commit and reveal poisoned updates through the
    same rounds as everyone. No fee helps it: updates and commitments carry
    none and the mempool shares update slots by bonded stake, one unit per sybil key
    against the honest trainers' topped-up stakes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consensus.contracts import is_training, task_specs
from consensus.errors import BlockRejected
from consensus.header import hash_hex
from consensus.rounds import round_of, round_start
from consensus.tx import (
    HASH_SIZE,
    Bond,
    Commit,
    GradientUpdate,
    SignedTx,
    Transfer,
    encode_tx,
    sign_tx,
    txid,
    update_bytes,
)
from ml.attacks import ATTACKS, attack, flip_labels, is_data_attack
from ml.codec import EncodedUpdate, encode_update
from ml.datasets import load_dataset
from ml.shards import decrypt_shard, derive_shard_key, encrypt_shard, shard
from ml.tasks import TaskSpec
from ml.trainer import clip_to_norm, train_update
from node.contributor import Contributor, KeyStatus
from node.datafile import LocalData
from node.keystore_file import write_private_file
from node.mempool import PolicyRejected
from node.taskfile import genesis_task_id, match_task_id
from wallet import KeyPair, address_bytes, keypair_from_seed

log = logging.getLogger("gradchain.trainer")

SHARD_FILE = "shard.bin"
ATTACK_NORM_FRACTION = 0.999  # an adaptive attacker stays just inside the norm bound
CHAIN_ATTACKS = ("miner-poison", "censor", "copy", "sybil-flood")  # ml.chainsim's names
SYBIL_KEYS = 24  # sybil-flood's keys (the figure)
POISON_JITTER = 1e-6  # per-key noise on miner-poison's updates: exact copies would be clones
COPY_COMMIT_AT = 0.5  # the copier commits once this share of the round has passed
RETRY_S = 0.2  # after an own transaction the tip outran: try again this soon


def all_attacks() -> tuple[str, ...]:
    """Every ``--attack`` a node accepts: participant poisons and the chain attacks."""
    return (*ATTACKS, *CHAIN_ATTACKS)


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


def extra_keys(main: KeyPair, count: int) -> list[KeyPair]:
    """``count`` further keys of an attacker, derived from its main key's seed (same on every start)."""
    return [
        keypair_from_seed(hashlib.sha256(b"gradchain-attacker-key-%d" % i + main.seed).digest())
        for i in range(1, count + 1)
    ]


def participant_keys(main: KeyPair, role: str | None, task: TaskSpec) -> list[KeyPair]:
    """Every key a node of ``role`` contributes under: its own, plus an attacker's extra ones
    (miner-poison: one per update slot of a block; sybil-flood: :data:`SYBIL_KEYS` in all)."""
    extra = {"miner-poison": task.max_updates_per_block - 1, "sybil-flood": SYBIL_KEYS - 1}
    return [main, *extra_keys(main, extra.get(role or "", 0))]


@dataclass
class Snapshot:
    """What one pass of the trainer needs, read together on the chain thread."""

    tip_height: int
    round: int  # the next block's
    position: float  # how far into the round the next block is, 0 .. 1
    params: np.ndarray
    base_hash: bytes  # the block the round's model is at
    keys: list[KeyStatus]  # one per contributor, in the trainer's order
    pooled: set[bytes] = field(default_factory=set)  # txids of our keys' pooled transactions
    others_updates: list[GradientUpdate] = field(default_factory=list)


class Trainer:
    """The node's participant in one task: see the module docstring.

    ``task_ref`` names the task (its id or a unique prefix; None: the
    chain's first task); ``data_file`` is the participant's own file for it
    (None: the built-in task's shard). A full id of a task not on the chain
    yet is waited for: the trainer starts once a block deploys it.
    """

    def __init__(self, node: Any, task_ref: str | None = None, data_file: pathlib.Path | None = None) -> None:
        self.node = node
        self.task_ref = task_ref
        self.data_file = data_file
        self.task: TaskSpec = node.chain.task
        self.key_id: bytes = node.chain.rules.task_id  # the task's id as bytes (``task_id``: as hex)
        self.role: str | None = node.config.attack
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.X: np.ndarray
        self.y: np.ndarray
        seed = int.from_bytes(node.keypair.public[:8], "little")
        self.rng = np.random.default_rng(seed)
        self.keys: list[KeyPair] = participant_keys(node.keypair, self.role, self.task)
        self.contributors: list[Contributor] = []
        self.copies: dict[bytes, EncodedUpdate] = {}  # the copier's catch of this round, by content
        self.data: LocalData | None = None
        self.submitted = 0
        self.wants_blocks = True  # False: this node's miner idles (sybil-flood, once its stake is bonded)
        self.done_height = -1  # the tip height of the last finished pass (tests wait on it)

    # -- life cycle ------------------------------------------------------------------------------
    def _find_task(self) -> tuple[str, bytes, TaskSpec] | None:
        """On the chain thread: the task ``task_ref`` names (hex id, id, spec); None while a full id
        is not deployed yet. Raises TaskFileError for a prefix no task (or several) has."""
        chain = self.node.chain
        specs = task_specs(chain.rules.task, chain.state.tasks)
        ids = {hash_hex(task_id): task_id for task_id in specs}
        if self.task_ref is None:
            wanted = genesis_task_id(chain)
        elif len(self.task_ref) == 2 * HASH_SIZE and self.task_ref.lower() not in ids:
            return None  # a whole id: wait for the block that deploys it
        else:
            wanted = match_task_id(self.task_ref, list(ids))
        return wanted, ids[wanted], specs[ids[wanted]]

    async def start(self) -> None:
        found = await self.node.run_chain(self._find_task)
        if found is None:
            self.node.event("trainer", f"waiting for task {self.task_ref} to be deployed on the chain")
            self._task = asyncio.create_task(self._await_deploy(), name="trainer")
            return
        await self._begin(*found)

    async def _await_deploy(self) -> None:
        waiting = asyncio.Event()
        self.node.on_tip_change(waiting.set)
        while (found := await self.node.run_chain(self._find_task)) is None:
            await waiting.wait()
            waiting.clear()
        await self._begin(*found)

    async def _begin(self, task_id: str, key_id: bytes, spec: TaskSpec) -> None:
        config = self.node.config
        index, total = config.shard
        loop = asyncio.get_running_loop()
        self.task_id, self.key_id, self.task = task_id, key_id, spec
        tag = self.node.chain.signing_tag
        self.contributors = [Contributor(key, spec, tag, key_id) for key in self.keys]
        if self.data_file is not None:  # the participant's own file, followed as it grows
            self.data = await loop.run_in_executor(
                None, LocalData.open, self.data_file, config.datadir, self.node.keypair.seed, self.task
            )
            self._use(self.data.X, self.data.y)
            source = f"from {self.data_file}"
        else:
            self._use(*await loop.run_in_executor(
                None, load_or_create_shard, config.datadir, self.node.keypair.seed, self.task,
                index, total, config.shard_scheme, config.dirichlet_alpha,
            ))
            source = f"shard {index}/{total}"
        role = f"attacker ({self.role}, {len(self.keys)} key(s))" if self.role else "honest"
        self.node.event("trainer", f"trainer ready for task {self.task.name} ({self.task_id[:12]}…): "
                                   f"{len(self.y)} private examples, {source}, {role}")
        self.node.on_tip_change(self._wake.set)
        self.node.on_new_update(self._on_new_update)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trainer")
        else:  # started by _await_deploy, which is this task: carry on as the loop
            await self._run()

    def _use(self, X: np.ndarray, y: np.ndarray) -> None:
        """Train on ``(X, y)`` from now on (a label-flip attacker flips the labels)."""
        if self.role in ATTACKS and is_data_attack(self.role):
            y = flip_labels(y, self.task.output_dim)
        self.X, self.y = X, y

    def _follow_data(self) -> None:
        """At each tip: take the rows appended to the participant's file since the last one."""
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

    def _on_new_update(self) -> None:
        if self.role == "copy":
            self._wake.set()

    # -- reading the tip (chain thread) ----------------------------------------------------------
    def _pooled(self, address: bytes) -> list[SignedTx]:
        """The key's pooled transactions about this trainer's task (another task's are its trainer's)."""
        return [e.tx for e in self.node.mempool.pending(address) if getattr(e.tx, "task_id", self.key_id) == self.key_id]

    def _snapshot(self) -> Snapshot | None:
        chain, mempool = self.node.chain, self.node.mempool
        task = self.task
        state = chain.state
        task_state = state.tasks[self.key_id]
        if not is_training(task_state):
            return None
        tip = chain.tip
        height = tip.height + 1
        current = round_of(height, task.round_blocks)
        statuses = [
            KeyStatus.read(
                task, task_state, c.address, height=height, balance=state.account(c.address).balance,
                next_nonce=mempool.next_nonce(c.address, chain), pooled=self._pooled(c.address),
            )
            for c in self.contributors
        ]
        others: list[GradientUpdate] = []
        if self.role == "copy":
            ours = {c.address for c in self.contributors}
            others = [
                e.tx for e in (mempool.get(t) for t in mempool.txids())
                if e is not None and isinstance(e.tx, GradientUpdate) and e.sender not in ours
            ]
            block = chain.get_block(tip.hash)
            if block is not None:
                others += [tx for tx in block.txs if isinstance(tx, GradientUpdate) and tx.sender_address not in ours]
        pooled = {e.txid for c in self.contributors for e in mempool.pending(c.address)}
        return Snapshot(
            tip_height=tip.height,
            pooled=pooled,
            round=current,
            position=((height - 1) % task.round_blocks) / task.round_blocks,
            params=np.array(task_state.params),
            base_hash=chain.main[round_start(current, task.round_blocks)],
            keys=statuses,
            others_updates=others,
        )

    # -- what to submit --------------------------------------------------------------------------
    def _bonding(self, snap: Snapshot) -> list[SignedTx]:
        """Bond every key that can afford it; the main key funds the others (attackers only).

        An honest trainer (and ``censor``'s, which trains honestly) then tops up its stake by one
        unit a tip while its balance keeps a reserve: update slots go by bonded stake. The other
        attackers keep one unit per key (``sybil-flood``'s stake is what it mined before).
        """
        need = self.task.bond_amount
        main, main_status = self.contributors[0], snap.keys[0]
        out: list[SignedTx] = []
        bond = main.bond(main_status)
        if bond is None and self.role in (None, "censor"):
            bond = main.top_up(main_status)
        nonce, spare = main_status.next_nonce, main_status.balance
        if bond is not None:
            out.append(bond)
            nonce, spare = nonce + 1, spare - need
        for contributor, status in zip(self.contributors[1:], snap.keys[1:], strict=True):
            own = contributor.bond(status)
            if own is not None:
                out.append(own)
            elif not (status.bonded or status.bond_pending) and spare >= 2 * need:
                # fund it; keep one bond's worth for the main key
                transfer = Transfer(main.key.public, nonce, contributor.address, need, 0)
                out.append(sign_tx(transfer, main.key, self.node.chain.signing_tag))
                nonce, spare = nonce + 1, spare - need
        return out

    def _updates(self, snap: Snapshot, key: KeyPair, count: int) -> list[np.ndarray]:
        """``count`` updates of this node's kind on the round's model."""
        deltas = [train_update(self.task, snap.params, *self._rows(i), rng=self.rng) for i in range(count)]
        bound = ATTACK_NORM_FRACTION * self.task.norm_bound
        if self.role in ("miner-poison", "sybil-flood"):
            jitter = np.random.default_rng(int.from_bytes(key.public[:8], "little"))
            poisoned = []
            for delta in deltas:
                flipped = attack("sign-flip", delta, None, self.rng, to_norm=bound)
                flipped = flipped + jitter.normal(0.0, POISON_JITTER, size=flipped.shape).astype(np.float32)
                poisoned.append(clip_to_norm(flipped, bound))
            return poisoned
        if self.role in ATTACKS and not is_data_attack(self.role):
            honest = np.stack(deltas)
            params: dict[str, Any] = {"f": 1} if self.role == "alie" else {}
            if self.role == "sign-flip":
                params["scale"] = self.node.config.attack_scale
            return [clip_to_norm(attack(self.role, d, honest, self.rng, **params), bound) for d in deltas]
        return deltas

    def _rows(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows update ``index`` of a round trains on: all of them, except that a file no larger
        than a batch (every step a full batch, so every update the same, and a commitment takes only
        distinct digests) gives the later updates a bootstrap resample of its rows."""
        n = len(self.y)
        if index == 0 or n > self.task.batch_size:
            return self.X, self.y
        pick = self.rng.integers(0, n, size=n)
        return self.X[pick], self.y[pick]

    def _copies(self, snap: Snapshot) -> list[EncodedUpdate] | None:
        """The copier's catch: other senders' updates seen this round, once half the round is gone."""
        for tx in snap.others_updates:
            self.copies.setdefault(hashlib.sha256(update_bytes(tx.update)).digest(), tx.update)
        if snap.position < COPY_COMMIT_AT or not self.copies:
            return None
        picked = list(self.copies.values())
        self.copies = {}
        return picked

    def _work(self, snap: Snapshot) -> list[SignedTx]:
        """Off the loop (training is CPU work): bonds, this round's commitments, the next reveals."""
        self._follow_data()
        if self.role == "sybil-flood":  # it mined only to buy its stake
            self.wants_blocks = not all(status.bonded for status in snap.keys)
        out: list[SignedTx] = self._bonding(snap)
        for contributor, status in zip(self.contributors, snap.keys, strict=True):
            if contributor.wants_commit(status, snap.base_hash):
                if self.role == "copy":
                    copies = self._copies(snap)
                    if copies is not None:
                        out.append(contributor.commit(status, snap.base_hash, copies))
                else:
                    deltas = self._updates(snap, contributor.key, self.task.round_blocks)
                    out.append(contributor.commit(status, snap.base_hash, deltas))
            if self.role != "miner-poison":  # miner-poison reveals only in its own blocks
                out += [r for r in contributor.pending_reveals(status) if txid(encode_tx(r)) not in snap.pooled]
            contributor.forget_before(snap.round)
        return out

    def private_reveals(self) -> list[GradientUpdate]:
        """On the chain thread, for the miner: this node's reveals for the next block, one per key
        (miner-poison keeps them out of the mempool so that only its own blocks carry them)."""
        if self.role != "miner-poison":
            return []
        chain = self.node.chain
        height = chain.tip.height + 1
        out = []
        for contributor in self.contributors:
            status = KeyStatus.read(
                self.task, chain.state.tasks[self.key_id], contributor.address, height=height, balance=0, next_nonce=0
            )
            reveal = contributor.reveal(status) if status.mature else None
            if reveal is not None:
                out.append(reveal)
        return out

    def _flood_txs(self, snap: Snapshot) -> list[SignedTx]:
        """sybil-flood: a poisoned update from every unbonded key at every tip (bonded ones commit)."""
        tag = self.node.chain.signing_tag
        out: list[SignedTx] = []
        for contributor, status in zip(self.contributors, snap.keys, strict=True):
            if status.bonded:
                continue
            delta = self._updates(snap, contributor.key, 1)[0]
            update = GradientUpdate(contributor.key.public, contributor.task_id, max(snap.round - 1, 0),
                                    encode_update(delta))
            out.append(sign_tx(update, contributor.key, tag))
        return out

    # -- the loop --------------------------------------------------------------------------------
    async def _submit(self, tx: SignedTx) -> None:
        await self.node.submit_tx(encode_tx(tx), source=None)
        if isinstance(tx, GradientUpdate):
            self.submitted += 1
            self.node.event("update", f"revealed update of round {tx.round} ({self.submitted} so far)")
        elif isinstance(tx, Commit):
            self.node.event("commit", f"committed {len(tx.hashes)} updates for round {tx.round}")
        elif isinstance(tx, Bond):
            self.node.event("bond", f"bonded {address_bytes(tx.sender).hex()[:12]}… for {self.task.bond_amount}")

    async def _flood(self, raw: bytes) -> None:
        """Hand a sybil's update to every peer's API, as an outsider would; they refuse it."""
        from node.client import ApiError, NodeClient

        peers = list(self.node.peers.peers) if self.node.peers is not None else []
        loop = asyncio.get_running_loop()
        for url in peers:
            try:
                await loop.run_in_executor(None, NodeClient(url).submit_raw_tx, raw)
            except ApiError as exc:
                log.debug("peer %s refused a sybil update: %s", url, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                snap = await self.node.run_chain(self._snapshot)
                if snap is None:
                    self.node.event("trainer", f"task {self.task.name} ({self.task_id[:12]}…) has closed its "
                                               "training; the trainer stops")
                    return
                txs = await loop.run_in_executor(None, self._work, snap)
                if self.role == "sybil-flood":
                    for tx in await loop.run_in_executor(None, self._flood_txs, snap):
                        await self._flood(encode_tx(tx))
                for tx in txs:
                    try:
                        await self._submit(tx)
                    except (BlockRejected, PolicyRejected) as exc:
                        log.info("own %s not pooled (%s)", type(tx).__name__, exc)
                self.done_height = snap.tip_height
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("training step failed")
                await asyncio.sleep(1.0)
