"""One key's part in a task's rounds: bond, commit a round's updates, reveal them one per block.

The chain's rules (:mod:`consensus.rounds`) in the order a participant meets
them. :class:`Contributor` holds what a key must remember between blocks
(the signed reveals behind each commitment) and, given what the tip says of
the key (:class:`KeyStatus`), builds the next transaction it should send.
The node's trainer runs one per key, ``gradchain chain mine`` one for its
solo miner, and ``gradchain update submit`` one over the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from consensus.rounds import is_mature, round_of
from consensus.state import TaskState
from consensus.tx import Bond, Commit, GradientUpdate, commitment_digest, sign_tx, update_bytes
from ml.codec import EncodedUpdate, encode_update
from ml.tasks import TaskSpec
from wallet import KeyPair, address_bytes

# What an honest trainer keeps unbonded when it tops up its stake: bond amounts, for a new
# key's bond or another task's, and fees.
TOP_UP_RESERVE_UNITS = 2


@dataclass(frozen=True)
class KeyStatus:
    """What the tip (and the local mempool, if any) says of one key, for the next block."""

    height: int  # of the next block
    round: int  # of the next block
    balance: int
    next_nonce: int
    bonded: bool
    mature: bool
    bond_pending: bool  # a Bond is pooled
    committed: bool  # this round's commitment is on chain or pooled
    unrevealed: tuple[int, ...]  # indices of last round's digests not yet revealed on chain
    reveal_pending: bool  # one of its updates is pooled

    def settled(self, bond_amount: int) -> bool:
        """True when nothing is due from the key for the next block, or what is due is pooled:
        a bond it can afford, this round's commitment once mature, the next reveal."""
        if not (self.bonded or self.bond_pending) and self.balance >= bond_amount:
            return False
        if self.mature and not self.committed:
            return False
        return not (self.unrevealed and not self.reveal_pending)

    @classmethod
    def read(
        cls,
        task: TaskSpec,
        task_state: TaskState,
        address: bytes,
        *,
        height: int,
        balance: int,
        next_nonce: int,
        pooled: Sequence[object] = (),
    ) -> KeyStatus:
        """The key's status from the tip's task state and its pooled transactions."""
        current = round_of(height, task.round_blocks)
        stake = task_state.stakes.get(address)
        last = task_state.commitments.get((current - 1, address))
        return cls(
            height=height,
            round=current,
            balance=balance,
            next_nonce=next_nonce,
            bonded=stake is not None,
            mature=is_mature(stake, height, task.bond_maturity),
            bond_pending=any(isinstance(tx, Bond) for tx in pooled),
            committed=(current, address) in task_state.commitments
            or any(isinstance(tx, Commit) and tx.round == current for tx in pooled),
            unrevealed=() if last is None else tuple(i for i, done in enumerate(last.revealed) if not done),
            reveal_pending=any(isinstance(tx, GradientUpdate) for tx in pooled),
        )


class Contributor:
    """One key's commitments and the reveals behind them; see the module docstring."""

    def __init__(self, key: KeyPair, task: TaskSpec, tag: bytes, task_id: bytes) -> None:
        self.key = key
        self.address = address_bytes(key.public)
        self.task = task
        self.tag = tag
        self.task_id = task_id
        self.plans: dict[int, list[GradientUpdate]] = {}  # round -> signed reveals, in commitment order
        self.bases: dict[int, bytes] = {}  # round -> the round-start block its commitment named

    def bond(self, status: KeyStatus, *, fee: int = 0) -> Bond | None:
        """A bond when the key has none (locked or pooled) and can afford the task's amount."""
        if status.bonded or status.bond_pending or status.balance < self.task.bond_amount + fee:
            return None
        signed = sign_tx(Bond(self.key.public, status.next_nonce, fee, self.task_id), self.key, self.tag)
        assert isinstance(signed, Bond)
        return signed

    def top_up(self, status: KeyStatus, *, reserve_units: int = TOP_UP_RESERVE_UNITS, fee: int = 0) -> Bond | None:
        """One more bond unit for a bonded key that holds more than ``reserve_units`` bond amounts
        besides it (and the fee), none pooled: honest miners give a task's update slots in
        proportion to bonded stake, so an honest trainer's mined coins go to its stake."""
        need = self.task.bond_amount
        if need == 0 or not status.bonded or status.bond_pending or status.balance < (reserve_units + 1) * need + fee:
            return None
        signed = sign_tx(Bond(self.key.public, status.next_nonce, fee, self.task_id), self.key, self.tag)
        assert isinstance(signed, Bond)
        return signed

    def wants_commit(self, status: KeyStatus, base_hash: bytes | None = None) -> bool:
        """True when the key may and should commit in this round: it has not, or (given the
        round's start block ``base_hash`` on the tip's branch) its commitment named another
        branch's start block, which a reorg has replaced, so it is on no chain this node follows."""
        if not status.mature or status.committed:
            return False
        named = self.bases.get(status.round)  # set with the round's plan
        return named is None or (base_hash is not None and named != base_hash)

    def commit(self, status: KeyStatus, base_hash: bytes, updates: Sequence[np.ndarray | EncodedUpdate]) -> Commit:
        """Sign a reveal of each update for this round, remember them, return the commitment of their digests."""
        reveals: list[GradientUpdate] = []
        seen: set[bytes] = set()
        for update in updates:
            if len(reveals) == self.task.round_blocks:
                break
            encoded = update if isinstance(update, EncodedUpdate) else encode_update(np.asarray(update, dtype=np.float32))
            if (wire := update_bytes(encoded)) in seen:
                continue  # a commitment lists distinct digests: a repeat would make it invalid
            seen.add(wire)
            signed = sign_tx(GradientUpdate(self.key.public, self.task_id, status.round, encoded), self.key, self.tag)
            assert isinstance(signed, GradientUpdate)
            reveals.append(signed)
        self.plans[status.round] = reveals
        self.bases[status.round] = base_hash
        digests = tuple(commitment_digest(self.address, self.task_id, status.round, r.update) for r in reveals)
        signed_commit = sign_tx(
            Commit(self.key.public, self.task_id, status.round, base_hash, digests), self.key, self.tag
        )
        assert isinstance(signed_commit, Commit)
        return signed_commit

    def reveal(self, status: KeyStatus, *, pooled_ok: bool = False) -> GradientUpdate | None:
        """The next reveal of last round's commitment, unless one is pooled (one per block counts)."""
        plan = self.plans.get(status.round - 1)
        if not plan or not status.unrevealed or (status.reveal_pending and not pooled_ok):
            return None
        return plan[status.unrevealed[0]]

    def pending_reveals(self, status: KeyStatus) -> list[GradientUpdate]:
        """Every reveal of last round's commitment the chain has not seen yet, in commitment order.

        A block counts one per sender, but the mempool holds a round's worth
        per sender: pooled together at the round's start, one is at every
        miner for each block, however soon after the last one it is found.
        """
        plan = self.plans.get(status.round - 1)
        if not plan:
            return []
        return [plan[i] for i in status.unrevealed if i < len(plan)]

    def forget_before(self, round_: int) -> None:
        """Drop plans whose reveal round has passed."""
        self.plans = {r: p for r, p in self.plans.items() if r >= round_ - 1}
        self.bases = {r: b for r, b in self.bases.items() if r >= round_ - 1}
