"""Blocks and transactions as the API serves them and the dashboard shows them: typed summaries.

``GET /api/blocks/…`` and ``GET /api/tx/…`` answer with ``to_json()`` of
these; the dashboard's block views are built from the same objects, so the
two cannot disagree about a sender, a payout or the rule's verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from consensus.block import Block
from consensus.contracts import task_specs
from consensus.header import hash_hex
from consensus.participation import verdict
from consensus.rounds import round_of
from consensus.tx import Bond, Coinbase, Commit, GradientUpdate, Transfer, Tx, Unbond, txid
from ml.tasks import TaskSpec
from wallet import encode_address

if TYPE_CHECKING:
    from node.chainstate import ChainState

Outcome = Literal["accepted", "rejected", "not applied"]
OUTCOME_NAMES: dict[bool | None, Outcome] = {True: "accepted", False: "rejected", None: "not applied"}


@dataclass(frozen=True)
class Payout:
    address: str
    amount: int


@dataclass(frozen=True)
class CoinbaseSummary:
    txid: str
    size: int
    height: int
    payouts: tuple[Payout, ...]

    kind = "coinbase"

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "size": self.size, "type": self.kind, "height": self.height,
                "payouts": [{"address": p.address, "amount": p.amount} for p in self.payouts]}


@dataclass(frozen=True)
class TransferSummary:
    txid: str
    size: int
    sender: str
    to: str
    amount: int
    fee: int
    nonce: int

    kind = "transfer"

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "size": self.size, "type": self.kind, "from": self.sender, "to": self.to,
                "amount": self.amount, "fee": self.fee, "nonce": self.nonce}


@dataclass(frozen=True)
class BondSummary:
    """A bond (``kind`` "bond") or an unbond ("unbond") of a task."""

    txid: str
    size: int
    sender: str
    task: str  # the task's id (hex, as /api/tasks shows it)
    fee: int
    nonce: int
    kind: Literal["bond", "unbond"]

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "size": self.size, "type": self.kind, "from": self.sender, "task": self.task,
                "fee": self.fee, "nonce": self.nonce}


@dataclass(frozen=True)
class CommitSummary:
    """A commitment to a round's updates."""

    txid: str
    size: int
    sender: str
    task: str  # the task's id (hex, as /api/tasks shows it)
    round: int
    base_hash: str
    updates: int

    kind = "commit"

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "size": self.size, "type": self.kind, "from": self.sender, "task": self.task,
                "round": self.round, "base_hash": self.base_hash, "updates": self.updates}


@dataclass(frozen=True)
class UpdateSummary:
    """A revealed gradient update; in a connected block, with the block rule's verdict."""

    txid: str
    size: int
    sender: str
    task: str  # the task's id (hex, as /api/tasks shows it)
    round: int  # the round it was committed in (trained on that round's model)
    encoding: str
    values: int
    connected: bool = False  # whether ``accepted`` is a verdict: only a connected block has one
    accepted: bool | None = None  # None in a connected block: too few updates for the rule to run
    reason: str | None = None  # the verdict in words, from the rule's record (connected blocks only)

    kind = "update"

    @property
    def outcome(self) -> Outcome | None:
        """"accepted", "rejected" or "not applied"; None while the block is not connected."""
        return OUTCOME_NAMES[self.accepted] if self.connected else None

    def to_json(self) -> dict[str, Any]:
        out = {"txid": self.txid, "size": self.size, "type": self.kind, "from": self.sender, "task": self.task,
               "round": self.round, "encoding": self.encoding, "values": self.values}
        if self.connected:
            out |= {"accepted": self.accepted, "outcome": self.outcome}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class TaskSummary:
    txid: str
    size: int
    task: Mapping[str, Any]  # the task's canonical dict

    kind = "task"

    def to_json(self) -> dict[str, Any]:
        return {"txid": self.txid, "size": self.size, "type": self.kind, "task": dict(self.task)}


TxSummary = CoinbaseSummary | TransferSummary | BondSummary | CommitSummary | UpdateSummary | TaskSummary
VoteStatusName = Literal["open", "counted", "rejected", "zero", "gated"]


@dataclass(frozen=True)
class VoteSummary:
    """A block's vote in its round and what the round made of it.

    ``open`` while the round runs; then ``counted`` (its counted updates are
    paid), ``rejected`` (an outlier to the round's step: an attacker's block),
    ``zero`` (too few updates for the task's rule) or ``gated`` (the round
    gate refused the round's step).
    """

    round: int
    position: int
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "position": self.position, "status": self.status}


@dataclass(frozen=True)
class BlockSummary:
    height: int
    hash: str
    prev: str
    time: int
    bits: str  # compact target, "0x1d00ffff"
    nonce: int
    version: int
    state_root: str
    main_chain: bool
    txs: tuple[TxSummary, ...]
    vote: VoteSummary | None = None  # None for genesis

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "hash": self.hash, "prev": self.prev, "time": self.time, "bits": self.bits,
                "nonce": self.nonce, "version": self.version, "state_root": self.state_root,
                "main_chain": self.main_chain, "vote": None if self.vote is None else self.vote.to_json(),
                "txs": [tx.to_json() for tx in self.txs]}


def summarise_tx(
    tx: Tx, raw: bytes, accepted: bool | None = None, connected: bool = False, task: TaskSpec | None = None
) -> TxSummary:
    """A tx and its encoded bytes; the rest only matters for an update.

    An update of a connected block carries the rule's verdict: ``accepted``
    (None when the block's updates were too few for the rule to run with the
    task's Byzantine bound) and, given the ``task``, the reason in words
    (:func:`consensus.participation.verdict`).
    """
    tx_id, size = hash_hex(txid(raw)), len(raw)
    if isinstance(tx, Coinbase):
        payouts = tuple(Payout(encode_address(p.address), p.amount) for p in tx.payouts)
        return CoinbaseSummary(tx_id, size, tx.height, payouts)
    if isinstance(tx, Transfer):
        return TransferSummary(tx_id, size, encode_address(tx.sender_address), encode_address(tx.to), tx.amount,
                               tx.fee, tx.nonce)
    if isinstance(tx, Bond | Unbond):
        kind: Literal["bond", "unbond"] = "bond" if isinstance(tx, Bond) else "unbond"
        return BondSummary(tx_id, size, encode_address(tx.sender_address), hash_hex(tx.task_id), tx.fee, tx.nonce,
                           kind)
    if isinstance(tx, Commit):
        return CommitSummary(tx_id, size, encode_address(tx.sender_address), hash_hex(tx.task_id), tx.round,
                             hash_hex(tx.base_hash), len(tx.hashes))
    if isinstance(tx, GradientUpdate):
        reason = None
        if connected and task is not None:
            reason = verdict(task.pipeline, task.pipeline.f_for(task.f), accepted)
        return UpdateSummary(tx_id, size, encode_address(tx.sender_address), hash_hex(tx.task_id), tx.round,
                             tx.update.kind,
                             tx.update.size, connected, accepted, reason)
    return TaskSummary(tx_id, size, tx.task)


CLONE_REASON = "a clone of another sender's recent update: never counted or paid"


def unpaid_reason(rule: str, vote: str) -> str:
    """Why an update its block's rule counted is not paid after all: the round's verdict on the block."""
    if vote == "gated":
        return f"counted by {rule} in its block, but the round's step raised the validation loss: not paid"
    return f"counted by {rule} in its block, but the round rejected the block's vote: not paid"


def summarise_block(chain: ChainState, block: Block, height: int) -> BlockSummary:
    """A stored block with each update's verdict (reads storage: call it on the chain thread).

    An update's reason also says what came after its block's rule: a clone
    of another sender's update is never counted, and an update of a block
    whose vote the round rejected (an attacker's block) or whose round the
    gate refused is not paid.
    """
    outcomes = chain.storage.get_outcomes(block.hash)
    connected = bool(outcomes)
    specs = task_specs(chain.task, chain.state.tasks)  # each update is judged by its own task's rule
    verdicts = iter(accepted for _, accepted in outcomes)
    main = chain.is_main(block.hash)
    vote_status = chain.vote_status(block.hash) if main and height > 0 else "open"
    outcome = chain.storage.get_undo_outcome(block.hash) if connected else None
    clones = iter(outcome.clones if outcome is not None else ())
    summaries: list[TxSummary] = []
    for tx, raw in zip(block.txs, block.tx_bytes, strict=True):
        if not isinstance(tx, GradientUpdate):
            summaries.append(summarise_tx(tx, raw, None, connected, chain.task))
            continue
        task = specs.get(tx.task_id, chain.task)
        summary = summarise_tx(tx, raw, next(verdicts, None), connected, task)
        assert isinstance(summary, UpdateSummary)
        # the round verdicts the node keeps (vote_status) are the genesis task's
        genesis = tx.task_id == chain.rules.task_id
        if next(clones, False):
            summary = dataclasses.replace(summary, reason=CLONE_REASON)
        elif summary.accepted and genesis and vote_status in ("rejected", "gated"):
            summary = dataclasses.replace(summary, reason=unpaid_reason(task.pipeline.name, vote_status))
        summaries.append(summary)
    txs = tuple(summaries)
    h = block.header
    vote = None
    if height > 0:
        width = chain.task.round_blocks
        vote = VoteSummary(round_of(height, width), (height - 1) % width, vote_status)
    return BlockSummary(height, hash_hex(block.hash), hash_hex(h.prev), h.time, f"{h.bits:#010x}", h.nonce,
                        h.version, hash_hex(block.state_root), main, txs, vote)
