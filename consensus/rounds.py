"""Identities, rounds and commit-reveal: who may move a task's model, and when it moves.

The rules :func:`consensus.transition.apply_body` applies per task, read top
to bottom (docs/DESIGN-NOTES.md, "Rounds, bonds and commit-reveal", has the
reasons and the measurements):

* **Bonds.** ``Bond`` locks the task's ``bond_amount`` of the sender's coins;
  from a sender already bonded it tops up its stake (one more unit, same
  bond height); the bond is *mature* ``bond_maturity`` blocks after the
  block that first bonded it. Honest miners give a sender a share of a
  task's update slots in proportion to its stake (``node/mempool.py``). ``Unbond``
  stops it counting at once and returns the coins in the block
  ``unbond_delay`` blocks later (:func:`release_unbonded`). Only a mature
  bond commits or reveals (``NOT_BONDED``): an identity costs coins.
* **Rounds.** Round ``r`` is the blocks ``r*W + 1 .. (r+1)*W`` (``W`` the
  task's ``round_blocks``). The model is constant during a round; its
  updates are computed on the model at height ``r*W``.
* **Commit.** During round ``r`` a bonded sender commits once (a second
  commitment is ``DUPLICATE_COMMIT``) to at most ``W`` distinct digests
  (``BAD_COMMIT``) of updates on that model, naming the round (``BAD_ROUND``
  for another) and its start block (``UPDATE_BAD_BASE`` for another branch's).
* **Reveal.** During round ``r + 1`` the sender reveals them, at most one per
  block (``DUPLICATE_SENDER``), each matching an unrevealed digest of its own
  commitment (``NO_COMMITMENT``). A copier sees a reveal only after the
  commitments it could have matched were closed; re-signing it later is an
  exact clone, kept in the block but never counted or paid, if revealed
  within ``CLONE_WINDOW_ROUNDS`` rounds of the original: committing in the
  round it saw the reveal, or in the next (a reveal in a round's last block),
  is caught; a copier that waits longer reveals an update three rounds
  staler than everyone else's.
* **Votes.** Each block's vote is the task's rule over its counted updates
  with the task's ``f`` (:func:`consensus.transition.aggregate_updates`), or
  zero when they are too few: no block decides anything alone.
* **Round end.** The round's last block combines the ``W`` votes with the
  task's vote rule (:func:`ml.rounds.aggregate_votes`: every vote clipped to
  the round's median vote norm, then a robust rule); with the task's round
  gate the step is applied only if it does not raise the loss on the task's
  committed validation set past the tolerance. The block pays each update
  its block's rule counted, in a block whose vote the round counted, of a
  round whose step was applied (:func:`consensus.participation.round_payouts`).

Everything is a pure, bit-reproducible function of its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from consensus.errors import BlockRejected, Reject
from consensus.state import Commitment, Stake, TaskState, Unbonding, Vote
from consensus.tx import Bond, Commit, GradientUpdate, Unbond, commitment_digest
from ml.gate import GateSet, validation_loss
from ml.rounds import CLONE_WINDOW_ROUNDS, RoundResult, aggregate_votes
from ml.tasks import TaskSpec


def round_of(height: int, round_blocks: int) -> int:
    """The round a block at ``height >= 1`` belongs to."""
    return (height - 1) // round_blocks


def round_start(round_: int, round_blocks: int) -> int:
    """The height whose model round ``round_``'s updates are computed on (the block before it)."""
    return round_ * round_blocks


def closes_round(height: int, round_blocks: int) -> bool:
    """True for a round's last block, where the model moves and contributors are paid."""
    return height % round_blocks == 0


def is_mature(stake: Stake | None, height: int, maturity: int) -> bool:
    """A bond counts in the block at ``height`` once ``maturity`` blocks have passed since it was made."""
    return stake is not None and height - stake.since >= maturity


@dataclass
class BlockUpdate:
    """One revealed update of the block being applied."""

    sender: bytes
    vector: np.ndarray
    clone: bool


@dataclass
class TaskWork:
    """A task's state while one block runs: copies of what the block may change."""

    base: TaskState
    stakes: dict[bytes, Stake] = field(init=False)
    unbonding: dict[bytes, Unbonding] = field(init=False)
    commitments: dict[tuple[int, bytes], Commitment] = field(init=False)
    reveals: dict[bytes, tuple[int, bytes]] = field(init=False)
    updates: list[BlockUpdate] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stakes = dict(self.base.stakes)
        self.unbonding = dict(self.base.unbonding)
        self.commitments = dict(self.base.commitments)
        self.reveals = dict(self.base.reveals)


def _require_task(task_id: bytes, known: bytes) -> None:
    if task_id != known:
        raise BlockRejected(
            Reject.UNKNOWN_TASK, f"task {task_id[::-1].hex()[:16]}…; this chain runs {known[::-1].hex()[:16]}…"
        )


def _require_mature(work: TaskWork, address: bytes, height: int, task: TaskSpec) -> None:
    stake = work.stakes.get(address)
    if not is_mature(stake, height, task.bond_maturity):
        detail = "no bond" if stake is None else f"bond from height {stake.since} matures at {stake.since + task.bond_maturity}"
        raise BlockRejected(Reject.NOT_BONDED, f"{detail}; only a mature bond commits or reveals updates")


def release_unbonded(work: TaskWork, height: int) -> dict[bytes, int]:
    """The coins whose unbonding delay ends at ``height``, by address (removed from ``work``)."""
    due = {address: out.amount for address, out in sorted(work.unbonding.items()) if out.release <= height}
    for address in due:
        del work.unbonding[address]
    return due


def apply_bond(work: TaskWork, tx: Bond, height: int, task: TaskSpec, task_id: bytes) -> int:
    """Lock one more ``bond_amount``: a new bond, or a top-up of the sender's stake (which keeps its
    height: maturity and bond age belong to the identity); return the amount to lock (the caller
    debits it with the fee)."""
    _require_task(tx.task_id, task_id)
    address = tx.sender_address
    held = work.stakes.get(address)
    work.stakes[address] = (
        Stake(task.bond_amount, height) if held is None else Stake(held.amount + task.bond_amount, held.since)
    )
    return task.bond_amount


def apply_unbond(work: TaskWork, tx: Unbond, height: int, task: TaskSpec, task_id: bytes) -> None:
    """Stop the sender's bond counting now; its coins return ``unbond_delay`` blocks later."""
    _require_task(tx.task_id, task_id)
    address = tx.sender_address
    stake = work.stakes.pop(address, None)
    if stake is None:
        raise BlockRejected(Reject.NOT_BONDED, "nothing to unbond")
    pending = work.unbonding.get(address)
    amount = stake.amount + (pending.amount if pending is not None else 0)
    work.unbonding[address] = Unbonding(amount, height + task.unbond_delay)


def apply_commit(
    work: TaskWork, tx: Commit, height: int, task: TaskSpec, task_id: bytes, round_base: bytes | None
) -> None:
    """Record a commitment of round ``round_of(height)``; ``round_base`` is the hash at the round's start."""
    _require_task(tx.task_id, task_id)
    address = tx.sender_address
    _require_mature(work, address, height, task)
    current = round_of(height, task.round_blocks)
    if tx.round != current:
        raise BlockRejected(Reject.BAD_ROUND, f"a commitment for round {tx.round} in round {current}")
    if tx.base_hash != round_base:
        raise BlockRejected(
            Reject.UPDATE_BAD_BASE,
            f"base is not the block at height {round_start(current, task.round_blocks)} on this branch",
        )
    if len(tx.hashes) > task.round_blocks or len(set(tx.hashes)) != len(tx.hashes):
        raise BlockRejected(
            Reject.BAD_COMMIT,
            f"{len(tx.hashes)} digests, {len(set(tx.hashes))} distinct; at most {task.round_blocks}, all distinct",
        )
    if (current, address) in work.commitments:
        raise BlockRejected(Reject.DUPLICATE_COMMIT, f"the sender already committed in round {current}")
    work.commitments[(current, address)] = Commitment(tx.hashes, (False,) * len(tx.hashes))


def check_reveal(work: TaskWork, tx: GradientUpdate, height: int, task: TaskSpec, task_id: bytes) -> int:
    """The checks of a reveal that need the task's state; return the index of the digest it matches.

    Bond, round, one per sender per block, and a matching unrevealed digest
    of the sender's own commitment. The update's contents are checked by the caller.
    """
    _require_task(tx.task_id, task_id)
    address = tx.sender_address
    _require_mature(work, address, height, task)
    reveal_round = round_of(height, task.round_blocks)
    if tx.round + 1 != reveal_round:
        raise BlockRejected(
            Reject.BAD_ROUND,
            f"an update committed in round {tx.round} is revealed in round {tx.round + 1}, "
            f"this block is in round {reveal_round}",
        )
    if any(u.sender == address for u in work.updates):
        raise BlockRejected(Reject.DUPLICATE_SENDER, "one update per sender per block")
    commitment = work.commitments.get((tx.round, address))
    digest = commitment_digest(address, tx.task_id, tx.round, tx.update)
    if commitment is not None:
        for index, (committed, revealed) in enumerate(zip(commitment.hashes, commitment.revealed, strict=True)):
            if committed == digest and not revealed:
                return index
    raise BlockRejected(Reject.NO_COMMITMENT, f"no unrevealed digest of this sender's round-{tx.round} commitment matches")


def content_digest(vector: np.ndarray) -> bytes:
    """What makes two updates clones: the same float32 values, however they were encoded."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes()).digest()


def record_reveal(
    work: TaskWork, tx: GradientUpdate, index: int, vector: np.ndarray
) -> BlockUpdate:
    """Mark the digest revealed and the update's contents seen; a copy of another sender's is a clone."""
    address = tx.sender_address
    key = (tx.round, address)
    work.commitments[key] = work.commitments[key].with_revealed(index)
    content = content_digest(vector)
    first = work.reveals.get(content)
    clone = first is not None and first[1] != address
    if first is None:
        work.reveals[content] = (tx.round, address)
    update = BlockUpdate(address, vector, clone)
    work.updates.append(update)
    return update


@dataclass(frozen=True)
class RoundClose:
    """What a round's last block did: the step (None: the model stayed), the votes counted, the gate."""

    step: np.ndarray | None
    counted: tuple[bool, ...]
    gated: bool
    result: RoundResult


def close_round(
    task: TaskSpec, votes: tuple[Vote, ...], params: np.ndarray, last_aggregate: np.ndarray, gate: GateSet | None
) -> RoundClose:
    """The round's step from its ``W`` votes, or None if every vote was zero or the gate refused it."""
    stacked = np.ascontiguousarray(np.stack([v.vector for v in votes]), dtype=np.float32)
    result = aggregate_votes(task.vote_rule, stacked, previous=np.asarray(last_aggregate, dtype=np.float32))
    step = result.aggregate
    if not step.any():
        return RoundClose(None, (False,) * len(votes), False, result)
    if gate is not None and task.gate_scope == "round":
        before = validation_loss(task, params, gate.X, gate.y)
        candidate = (params - np.float32(task.server_lr) * step).astype(np.float32, copy=False)
        after = validation_loss(task, candidate, gate.X, gate.y)
        if not after <= before * (1.0 + task.gate_tolerance):
            return RoundClose(None, (False,) * len(votes), True, result)
    return RoundClose(step, tuple(bool(c) for c in result.counted), False, result)


def next_task_state(
    base: TaskState,
    work: TaskWork,
    *,
    height: int,
    task: TaskSpec,
    vote: Vote,
    params: np.ndarray,
    last_aggregate: np.ndarray,
    version: int,
    closed: bool,
) -> TaskState:
    """The task's post-state: the block's vote appended, or at a round's end the round wound up.

    At a round's end the votes are cleared, the previous round's commitments
    (revealed during this one) dropped, and reveals forgotten that a copy in
    the next round could no longer clone (revealed more than
    ``CLONE_WINDOW_ROUNDS`` rounds before it; ``reveals`` holds each
    original's commitment round, one less than its reveal round).
    """
    commitments: Mapping[tuple[int, bytes], Commitment] = work.commitments
    reveals: Mapping[bytes, tuple[int, bytes]] = work.reveals
    kept = params is base.params and last_aggregate is base.last_aggregate
    votes: tuple[Vote, ...] = (*base.votes, vote)
    if closed:
        current = round_of(height, task.round_blocks)
        commitments = {key: c for key, c in work.commitments.items() if key[0] >= current}
        oldest = current + 1 - CLONE_WINDOW_ROUNDS  # the oldest reveal round the next round still clones
        reveals = {digest: seen for digest, seen in work.reveals.items() if seen[0] + 1 >= oldest}
        votes = ()
    return TaskState(
        params=params,
        last_aggregate=last_aggregate,
        model_version=version,
        stakes=work.stakes,
        unbonding=work.unbonding,
        commitments=commitments,
        votes=votes,
        reveals=reveals,
        contract=base.contract,
        model_digests=(base.params_digest, base.last_aggregate_digest) if kept else None,
    )
