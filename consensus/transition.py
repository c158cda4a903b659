"""The state transition: a block arrives; is it valid, and what is the new state?

:func:`state_transition` is the one entry point, read top to bottom like
ethereum/execution-specs' ``fork.py``:

1. header rules (:func:`consensus.validation.validate_header`): version,
   parent, bits, proof of work, time;
2. body rules (:func:`validate_block`): the caps of :mod:`consensus.caps`
   on the encoded sizes, the header commits to this body, the coinbase
   comes first and only there, no duplicates, the task's update limit;
3. each transaction (:func:`apply_transfer`, :func:`apply_update`):
   signature, nonce, funds, and for a gradient update the ml checks
   (encoding, shape, finiteness, norm bound, staleness and base hash, and the
   useful-update gate when the task commits a validation set);
4. aggregation (:func:`aggregate_updates`): the task's rule over the
   block's updates, applied to the model;
5. payouts (:func:`consensus.participation.payouts`, the one file that
   says who gets paid): the miner, and the contributors the rule counted;
   the coinbase must list exactly these;
6. the state root: the computed post-state must be the one the block names.

Steps 3-5 are :func:`apply_body`, which the miner's template runs too, so a
block is built and checked by the same code. Everything here is a pure,
bit-reproducible function of its arguments: the chain comes in as a
:class:`~consensus.view.ChainView`, the time as ``now``, and anything read
from disk (the gate's validation set) inside the view's
:class:`~consensus.view.ChainRules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from consensus.block import Block
from consensus.caps import (
    MAX_AMOUNT,
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    MAX_COINBASE_EXTRA,
    MAX_PAYOUTS,
    MAX_TX_BYTES,
)
from consensus.errors import BlockRejected, Reject
from consensus.participation import counted, payouts
from consensus.state import Account, Accounts, State
from consensus.tx import (
    Coinbase,
    GradientUpdate,
    Payout,
    TaskTx,
    Transfer,
    Tx,
    check_signature,
)
from consensus.validation import validate_header
from consensus.view import ChainRules, ChainView, hash_at_height
from ml.aggregation import AggregationError, Pipeline, bucket_seed
from ml.checks import UpdateCheckError, UpdateProblem, check_finite, check_norm, check_staleness
from ml.codec import decode_update
from ml.gate import check_useful, validation_loss
from ml.tasks import TaskSpec

_UPDATE_REJECTS = {
    UpdateProblem.ENCODING: Reject.BAD_UPDATE_ENCODING,
    UpdateProblem.SHAPE: Reject.BAD_UPDATE_SHAPE,
    UpdateProblem.NOT_FINITE: Reject.UPDATE_NOT_FINITE,
    UpdateProblem.NORM: Reject.UPDATE_NORM,
    UpdateProblem.STALE: Reject.UPDATE_STALE,
    UpdateProblem.BAD_BASE: Reject.UPDATE_BAD_BASE,
    UpdateProblem.NOT_USEFUL: Reject.UPDATE_NOT_USEFUL,
}


@dataclass(frozen=True)
class Undo:
    """What a block changed, so it can be disconnected bit for bit."""

    accounts_before: Mapping[bytes, Account | None]
    params_before: np.ndarray
    last_aggregate_before: np.ndarray
    model_version_before: int
    accepted: tuple[bool, ...] = ()  # per gradient update in block order: did the rule count it


@dataclass(frozen=True)
class Execution:
    """The result of running a block's transactions on a parent state."""

    state: State
    undo: Undo
    payouts: list[Payout]
    accepted: np.ndarray  # one flag per gradient update, in block order


# -- the entry point -----------------------------------------------------------------------


def state_transition(view: ChainView, state: State, block: Block, now: int) -> tuple[State, Undo]:
    """Check ``block`` on the branch ``view`` and its parent's ``state``; return the post-state and undo.

    Raises
    ------
    BlockRejected
        With the code of the first rule the block breaks, in the order of the
        module docstring; nothing is changed.
    """
    validate_header(view, block.header, now)
    coinbase = validate_block(view.rules, block, view.height + 1)
    run = apply_body(view, state, coinbase.payouts[0].address, block.txs[1:])
    if list(coinbase.payouts) != run.payouts:
        raise BlockRejected(
            Reject.BAD_COINBASE,
            f"coinbase pays {[p.amount for p in coinbase.payouts]}, "
            f"the block earns {[p.amount for p in run.payouts]}",
        )
    if run.state.root != block.state_root:
        raise BlockRejected(
            Reject.BAD_STATE_ROOT,
            f"computed {run.state.root[::-1].hex()[:16]}, block has {block.state_root[::-1].hex()[:16]}",
        )
    return run.state, run.undo


# -- body rules ----------------------------------------------------------------------------


def validate_block(rules: ChainRules, block: Block, height: int) -> Coinbase:
    """Checks on the body alone (no state): the caps, commitment, coinbase, limits, duplicates.

    The node runs these before it stores a body, so a body that breaks one
    is refused without touching the state. The caps (:mod:`consensus.caps`)
    are the decoder's, checked again on the encoded size: a block built in
    this process that its peers' decoders would refuse is refused here too.
    """
    check_caps(block)
    block.check_commitment()
    if not block.txs or not isinstance(block.txs[0], Coinbase):
        raise BlockRejected(Reject.BAD_COINBASE, "the first transaction must be the coinbase")
    coinbase = block.txs[0]
    if len(coinbase.payouts) > MAX_PAYOUTS or len(coinbase.extra) > MAX_COINBASE_EXTRA:
        raise BlockRejected(
            Reject.BAD_ENCODING,
            f"coinbase: {len(coinbase.payouts)} payouts (at most {MAX_PAYOUTS}), "
            f"{len(coinbase.extra)} extra bytes (at most {MAX_COINBASE_EXTRA})",
        )
    if coinbase.height != height:
        raise BlockRejected(Reject.BAD_COINBASE, f"coinbase height {coinbase.height}, block height {height}")
    if not coinbase.payouts:
        raise BlockRejected(Reject.BAD_COINBASE, "coinbase pays no miner")
    for tx in block.txs[1:]:
        if isinstance(tx, Coinbase | TaskTx):
            raise BlockRejected(Reject.BAD_COINBASE, "only the first transaction may be a coinbase")
    if len(set(block.txids)) != len(block.txids):
        raise BlockRejected(Reject.DUPLICATE_TX, "a transaction appears twice")
    n_updates = sum(isinstance(tx, GradientUpdate) for tx in block.txs)
    limit = rules.task.max_updates_per_block
    if n_updates > limit:
        raise BlockRejected(Reject.TOO_MANY_UPDATES, f"{n_updates} updates > {limit} per block")
    return coinbase


def check_caps(block: Block) -> None:
    """The block and each transaction within :mod:`consensus.caps`, on their encoded sizes."""
    if block.size > MAX_BLOCK_BYTES:
        raise BlockRejected(Reject.OVERSIZE, f"block: {block.size} bytes > limit {MAX_BLOCK_BYTES}")
    if len(block.tx_bytes) > MAX_BLOCK_TXS:
        raise BlockRejected(Reject.TOO_MANY_TXS, f"{len(block.tx_bytes)} transactions > {MAX_BLOCK_TXS}")
    largest = max((len(raw) for raw in block.tx_bytes), default=0)
    if largest > MAX_TX_BYTES:
        raise BlockRejected(Reject.OVERSIZE, f"transaction: {largest} bytes > limit {MAX_TX_BYTES}")


# -- each transaction ----------------------------------------------------------------------


class Ledger:
    """Copy-on-write accounts that remember what they overwrote."""

    def __init__(self, accounts: Mapping[bytes, Account]) -> None:
        self.base = accounts
        self.changed: dict[bytes, Account] = {}
        self.before: dict[bytes, Account | None] = {}

    def get(self, address: bytes) -> Account:
        if address in self.changed:
            return self.changed[address]
        return self.base.get(address, Account())

    def set(self, address: bytes, account: Account) -> None:
        if address not in self.before:
            self.before[address] = self.base.get(address)
        self.changed[address] = account

    def debit(self, address: bytes, nonce: int, amount: int) -> None:
        """Spend ``amount`` with the account's next ``nonce``; BAD_NONCE or INSUFFICIENT_FUNDS."""
        account = self.get(address)
        if nonce != account.nonce:
            raise BlockRejected(Reject.BAD_NONCE, f"nonce {nonce}, account expects {account.nonce}")
        if amount > account.balance:
            raise BlockRejected(
                Reject.INSUFFICIENT_FUNDS, f"spends {amount}, balance is {account.balance}"
            )
        self.set(address, Account(account.balance - amount, account.nonce + 1))

    def credit(self, address: bytes, amount: int) -> None:
        account = self.get(address)
        if account.balance + amount > MAX_AMOUNT:
            # Past this a balance no longer fits the state root's u64 or storage's i64.
            raise BlockRejected(
                Reject.BAD_AMOUNT, f"credit of {amount} takes a balance of {account.balance} past {MAX_AMOUNT}"
            )
        self.set(address, Account(account.balance + amount, account.nonce))

    def merged(self) -> Accounts:
        """The base with the changes applied; an account back at zero is dropped."""
        base = self.base if isinstance(self.base, Accounts) else Accounts(self.base)
        return base.updated(
            {address: None if account == Account() else account for address, account in self.changed.items()}
        )


@dataclass(frozen=True)
class UsefulGate:
    """The useful-update gate for one block: the parent's parameters, their loss, and the set."""

    params: np.ndarray
    base_loss: float
    X: np.ndarray
    y: np.ndarray


def useful_gate(rules: ChainRules, params: np.ndarray) -> UsefulGate | None:
    """The useful-update gate on parent ``params``, or None when the task has it off."""
    if rules.gate_set is None:
        return None
    flat = np.ascontiguousarray(params, dtype=np.float32).reshape(-1)
    gate_set = rules.gate_set
    loss = validation_loss(rules.task, flat, gate_set.X, gate_set.y)
    return UsefulGate(flat, loss, gate_set.X, gate_set.y)


def check_update_payload(task: TaskSpec, tx: GradientUpdate, param_count: int | None = None) -> np.ndarray:
    """The checks of an update that need no chain: encoding, shape, finiteness, norm bound.

    Returns the decoded vector. The mempool runs these first, since they are
    cheap and need no state; :func:`check_update` runs them after the base.

    Raises
    ------
    BlockRejected
        With the code of the first check the update fails.
    """
    try:
        vector = decode_update(tx.update, task.param_count if param_count is None else param_count)
        check_finite(vector)
        check_norm(vector, task.norm_bound)
    except UpdateCheckError as exc:
        raise BlockRejected(_UPDATE_REJECTS[exc.problem], exc.detail) from None
    return vector


def check_update(
    view: ChainView, tx: GradientUpdate, *, gate: UsefulGate | None, param_count: int | None = None
) -> np.ndarray:
    """The decoded update of ``tx`` for the block after ``view``'s parent, after the ml checks.

    In order: staleness and base hash on this branch, then
    :func:`check_update_payload`, then the useful-update gate. ``gate`` is
    :func:`useful_gate` of the parent state; it must be given when the task
    has the gate on (the mempool passes the tip's).

    Raises
    ------
    BlockRejected
        With the code of the first check the update fails.
    """
    task = view.rules.task
    if gate is None and view.rules.gate_set is not None:
        raise ValueError("the task has a useful-update gate: pass useful_gate(rules, parent params)")
    try:
        check_staleness(tx.base_height, view.height + 1, task.staleness_window)
        if hash_at_height(view, tx.base_height) != tx.base_hash:
            raise UpdateCheckError(
                UpdateProblem.BAD_BASE, f"base hash is not the block at height {tx.base_height}"
            )
    except UpdateCheckError as exc:
        raise BlockRejected(_UPDATE_REJECTS[exc.problem], exc.detail) from None
    vector = check_update_payload(task, tx, param_count)
    if gate is not None:
        try:
            check_useful(task, gate.params, vector, gate.X, gate.y, gate.base_loss)
        except UpdateCheckError as exc:
            raise BlockRejected(_UPDATE_REJECTS[exc.problem], exc.detail) from None
    return vector


def apply_transfer(ledger: Ledger, tx: Transfer, chain_id: int) -> int:
    """Move ``tx.amount`` from the sender to the recipient; return the fee it pays the miner."""
    check_signature(tx, chain_id)
    ledger.debit(tx.sender_address, tx.nonce, tx.amount + tx.fee)
    ledger.credit(tx.to, tx.amount)
    return tx.fee


def apply_update(
    ledger: Ledger, view: ChainView, tx: GradientUpdate, gate: UsefulGate | None, param_count: int
) -> tuple[bytes, np.ndarray]:
    """Check a gradient update and charge its fee; return its sender's address and its vector."""
    check_signature(tx, view.rules.chain_id)
    vector = check_update(view, tx, gate=gate, param_count=param_count)
    sender = tx.sender_address  # a hash of the key: derive it once
    ledger.debit(sender, tx.nonce, tx.fee)
    return sender, vector


# -- aggregation ---------------------------------------------------------------------------


def chain_inputs(pipeline: Pipeline, last_aggregate: np.ndarray, parent_hash: bytes | None) -> dict[str, Any]:
    """The parameters the chain supplies per block, for the ones ``pipeline`` takes.

    Centered clipping clips around the previous applied aggregate
    (``reference``); bucketing shuffles with a seed from the parent block's
    hash (``seed``), unknown to a submitter before the parent is mined.
    """
    inputs: dict[str, Any] = {}
    if "reference" in pipeline.params:
        inputs["reference"] = np.asarray(last_aggregate, dtype=np.float32)
    if "seed" in pipeline.params:
        if parent_hash is None:
            raise BlockRejected(Reject.BAD_AGGREGATION, "bucketing needs the parent block's hash")
        inputs["seed"] = bucket_seed(parent_hash)
    return inputs


def aggregate_updates(
    task: TaskSpec,
    updates: list[np.ndarray],
    last_aggregate: np.ndarray,
    parent_hash: bytes | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """The block's aggregate (None: model unchanged) and which updates counted (:mod:`consensus.participation`).

    The rule runs with the task's f or not at all: a block with too few
    updates for that bound (one update against median with f=1) could be a
    single attacker's, so it leaves the model unchanged. A rule that
    tolerates no attacker (plain mean) runs with f=0 whatever the task says.
    """
    n = len(updates)
    pipeline = task.pipeline
    params: dict[str, Any] = {**task.rule_kwargs(), **chain_inputs(pipeline, last_aggregate, parent_hash)}
    f = pipeline.f_for(task.f)
    try:
        if pipeline.max_f(n, **params) < f:
            return None, np.zeros(n, dtype=bool)
        stacked = np.ascontiguousarray(np.stack(updates), dtype=np.float32)
        result, mask = pipeline.run(stacked, f, **params)
    except AggregationError as exc:  # parameters the task names but the rule refuses for this block
        raise BlockRejected(Reject.BAD_AGGREGATION, str(exc)) from None
    return result, counted(pipeline, stacked, result, mask)


# -- the body: steps 3 to 5 ------------------------------------------------------------------


def apply_body(view: ChainView, state: State, miner: bytes, txs: Sequence[Tx]) -> Execution:
    """Run the non-coinbase ``txs`` on ``state``, aggregate, and pay ``miner``; no root checks.

    Shared by :func:`state_transition` and the miner's template, so both
    compute the payouts and the post-state in exactly the same way.
    """
    if state.height != view.height:
        raise ValueError(f"the state is at height {state.height}, the view's parent at {view.height}")
    rules = view.rules
    task = rules.task
    ledger = Ledger(state.accounts)
    param_count = task.param_count  # computed from the layer sizes on each access
    fees = 0
    updates: list[np.ndarray] = []
    senders: list[bytes] = []
    gate = useful_gate(rules, state.params) if any(isinstance(tx, GradientUpdate) for tx in txs) else None
    for tx in txs:
        if isinstance(tx, Transfer):
            fees += apply_transfer(ledger, tx, rules.chain_id)
        elif isinstance(tx, GradientUpdate):
            sender, vector = apply_update(ledger, view, tx, gate, param_count)
            senders.append(sender)
            updates.append(vector)
            fees += tx.fee
        else:
            raise BlockRejected(Reject.BAD_COINBASE, "only the first transaction may be a coinbase")

    params = state.params
    last_aggregate = state.last_aggregate
    version = state.model_version
    accepted = np.zeros(len(updates), dtype=bool)
    if updates:
        result, accepted = aggregate_updates(task, updates, state.last_aggregate, hash_at_height(view, view.height))
        if result is not None:
            step = np.float32(task.server_lr) * result.astype(np.float32, copy=False)
            params = (state.params - step).astype(np.float32, copy=False)
            last_aggregate = result.astype(np.float32, copy=True)
            version += 1

    paid = payouts(task, miner, fees, senders, accepted)
    for payout in paid:
        ledger.credit(payout.address, payout.amount)
    new_state = State(
        height=state.height + 1,
        accounts=ledger.merged(),
        params=np.array(params, dtype=np.float32),
        last_aggregate=np.array(last_aggregate, dtype=np.float32),
        model_version=version,
    )
    undo = Undo(
        accounts_before=dict(ledger.before),
        params_before=state.params,
        last_aggregate_before=state.last_aggregate,
        model_version_before=state.model_version,
        accepted=tuple(bool(a) for a in accepted),
    )
    return Execution(new_state, undo, paid, accepted)


def undo_block(state: State, undo: Undo) -> State:
    """The parent's state, from a block's post-state and its undo data."""
    accounts = state.accounts if isinstance(state.accounts, Accounts) else Accounts(state.accounts)
    accounts = accounts.updated(undo.accounts_before)
    return State(
        height=state.height - 1,
        accounts=accounts,
        params=np.array(undo.params_before, dtype=np.float32),
        last_aggregate=np.array(undo.last_aggregate_before, dtype=np.float32),
        model_version=undo.model_version_before,
    )
