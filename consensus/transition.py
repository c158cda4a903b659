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
from dataclasses import dataclass, field
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
from consensus.contracts import (
    deploy_burn,
    deploy_task,
    is_training,
    settle_idle,
    settle_round,
    task_of,
)
from consensus.errors import BlockRejected, Reject
from consensus.participation import counted, payouts
from consensus.rounds import (
    TaskWork,
    apply_bond,
    apply_commit,
    apply_unbond,
    check_reveal,
    close_round,
    closes_round,
    next_task_state,
    record_reveal,
    release_unbonded,
    round_of,
    round_start,
)
from consensus.state import Account, Accounts, State, TaskState, Vote
from consensus.tx import (
    Bond,
    Coinbase,
    Commit,
    Deploy,
    GradientUpdate,
    Payout,
    TaskTx,
    Transfer,
    Tx,
    Unbond,
    check_signature,
    encode_tx,
    txid,
)
from consensus.validation import validate_header
from consensus.view import ChainRules, ChainView, hash_at_height
from ml.aggregation import AggregationError, Pipeline, bucket_seed
from ml.checks import UpdateCheckError, UpdateProblem, check_finite, check_norm
from ml.codec import decode_update
from ml.gate import GateSet, check_useful, validation_loss
from ml.tasks import TaskSpec

_UPDATE_REJECTS = {
    UpdateProblem.ENCODING: Reject.BAD_UPDATE_ENCODING,
    UpdateProblem.SHAPE: Reject.BAD_UPDATE_SHAPE,
    UpdateProblem.NOT_FINITE: Reject.UPDATE_NOT_FINITE,
    UpdateProblem.NORM: Reject.UPDATE_NORM,
    UpdateProblem.NOT_USEFUL: Reject.UPDATE_NOT_USEFUL,
}


@dataclass(frozen=True)
class Outcome:
    """What a block did with its updates and, at a round's end, with the round's votes.

    ``counted`` per update in block order: the block's rule counted it
    (a clone never counts; all False when the rule could not run, see
    ``ran``); ``ran`` per update: its own task's rule ran on this block's
    updates (empty in records stored before it existed: ``vote_ran`` for
    all). ``vote_ran``, ``round_counted`` and ``gated`` are the genesis
    task's: its block vote ran; at a round's last block, per block of
    the round, whether its vote counted (None elsewhere); the round gate
    refused the round's step.
    """

    counted: tuple[bool, ...] = ()
    clones: tuple[bool, ...] = ()
    vote_ran: bool = False
    round_counted: tuple[bool, ...] | None = None
    gated: bool = False
    ran: tuple[bool, ...] = ()

    def update_ran(self, index: int) -> bool:
        """Whether the rule of update ``index``'s task ran on the block's updates of that task."""
        return self.ran[index] if self.ran else self.vote_ran


@dataclass(frozen=True)
class Undo:
    """What a block changed, so it can be disconnected bit for bit, and what it did.

    ``tasks_before`` holds the state before the block of every task the block
    changed (every task that trains, the genesis task first; a closed task
    only when an unbond of it came due), ``created`` the tasks it deployed.
    """

    accounts_before: Mapping[bytes, Account | None]
    tasks_before: Mapping[bytes, TaskState]
    outcome: Outcome = Outcome()
    created: tuple[bytes, ...] = ()

    @property
    def params_before(self) -> np.ndarray:
        """The genesis task's model before the block."""
        return next(iter(self.tasks_before.values())).params

    @property
    def model_version_before(self) -> int:
        return next(iter(self.tasks_before.values())).model_version


@dataclass(frozen=True)
class Execution:
    """The result of running a block's transactions on a parent state."""

    state: State
    undo: Undo
    payouts: list[Payout]

    @property
    def outcome(self) -> Outcome:
        return self.undo.outcome


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
    # the genesis task's cap here; a deployed task's, whose spec is in the state, in apply_tx
    n_updates = sum(isinstance(tx, GradientUpdate) and tx.task_id == rules.task_id for tx in block.txs)
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
    """The useful-update gate on parent ``params``, or None unless the task gates each update."""
    if rules.gate_set is None or rules.task.gate_scope != "update":
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
    task: TaskSpec, tx: GradientUpdate, *, gate: UsefulGate | None, param_count: int | None = None
) -> np.ndarray:
    """The decoded update of ``tx`` after the ml checks: :func:`check_update_payload`, then
    the useful-update gate when the task gates each update (``gate_scope`` "update").

    ``gate`` is :func:`useful_gate` of the parent state; it must be given
    when the task gates updates (the mempool passes the tip's).

    Raises
    ------
    BlockRejected
        With the code of the first check the update fails.
    """
    vector = check_update_payload(task, tx, param_count)
    if gate is not None:
        try:
            check_useful(task, gate.params, vector, gate.X, gate.y, gate.base_loss)
        except UpdateCheckError as exc:
            raise BlockRejected(_UPDATE_REJECTS[exc.problem], exc.detail) from None
    return vector


def apply_transfer(ledger: Ledger, tx: Transfer, tag: bytes) -> int:
    """Move ``tx.amount`` from the sender to the recipient; return the fee it pays the miner."""
    check_signature(tx, tag)
    ledger.debit(tx.sender_address, tx.nonce, tx.amount + tx.fee)
    ledger.credit(tx.to, tx.amount)
    return tx.fee


@dataclass
class TaskRun:
    """One task's part of the block being applied: its spec, working state and gate."""

    task_id: bytes
    spec: TaskSpec
    work: TaskWork
    gate: UsefulGate | None = None
    reveals: int = 0  # this block's reveals for the task (its per-block cap)

    @property
    def training(self) -> bool:
        return is_training(self.work.base)


@dataclass
class BlockRun:
    """One block's walk through its transactions: the ledger, every task's work and the fees."""

    view: ChainView
    ledger: Ledger
    tasks: dict[bytes, TaskRun]
    fees: int = 0
    updates: list[tuple[bytes, int]] = field(default_factory=list)  # (task id, index in its work), block order

    @property
    def height(self) -> int:
        return self.view.height + 1

    def task(self, task_id: bytes, *, training: bool = True) -> TaskRun:
        """The run of the task ``task_id``: ``UNKNOWN_TASK`` if the chain has none, ``TASK_CLOSED`` if
        ``training`` is asked of a task whose training has closed."""
        run = self.tasks.get(task_id)
        if run is None or (training and not run.training):
            task_of(self.view.rules.task, {t: r.work.base for t, r in self.tasks.items()}, task_id, training=training)
        assert run is not None
        return run

    def open_tasks(self) -> int:
        return sum(t.training for t in self.tasks.values())


def apply_tx(run: BlockRun, tx: Tx) -> None:
    """Apply one non-coinbase transaction of the block (:mod:`consensus.rounds` and
    :mod:`consensus.contracts` have the rules)."""
    rules = run.view.rules
    if isinstance(tx, Transfer):
        run.fees += apply_transfer(run.ledger, tx, rules.tag)
    elif isinstance(tx, Deploy):
        check_signature(tx, rules.tag)
        open_tasks = run.open_tasks()
        new = deploy_task(tx, run.height, open_tasks)
        run.ledger.debit(tx.sender_address, tx.nonce, tx.bounty + tx.fee)
        run.fees += tx.fee - deploy_burn(open_tasks)  # the burn leaves circulation
        task_id = txid(encode_tx(tx))
        assert new.contract is not None
        run.tasks[task_id] = TaskRun(task_id, new.contract.spec, TaskWork(new))
    elif isinstance(tx, Bond):
        check_signature(tx, rules.tag)
        task = run.task(tx.task_id)
        locked = apply_bond(task.work, tx, run.height, task.spec, task.task_id)
        run.ledger.debit(tx.sender_address, tx.nonce, locked + tx.fee)
        run.fees += tx.fee
    elif isinstance(tx, Unbond):
        check_signature(tx, rules.tag)
        task = run.task(tx.task_id, training=False)
        apply_unbond(task.work, tx, run.height, task.spec, task.task_id)
        run.ledger.debit(tx.sender_address, tx.nonce, tx.fee)
        run.fees += tx.fee
    elif isinstance(tx, Commit):
        check_signature(tx, rules.tag)
        task = run.task(tx.task_id)
        W = task.spec.round_blocks
        base = hash_at_height(run.view, round_start(round_of(run.height, W), W))
        apply_commit(task.work, tx, run.height, task.spec, task.task_id, base)
    elif isinstance(tx, GradientUpdate):
        check_signature(tx, rules.tag)
        task = run.task(tx.task_id)
        task.reveals += 1
        if task.reveals > task.spec.max_updates_per_block:
            raise BlockRejected(
                Reject.TOO_MANY_UPDATES, f"{task.reveals} updates > {task.spec.max_updates_per_block} per block "
                f"for task {task.spec.name!r}"
            )
        index = check_reveal(task.work, tx, run.height, task.spec, task.task_id)
        vector = check_update(task.spec, tx, gate=task.gate)
        record_reveal(task.work, tx, index, vector)
        run.updates.append((task.task_id, len(task.work.updates) - 1))
    else:
        raise BlockRejected(Reject.BAD_COINBASE, "only the first transaction may be a coinbase")


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


@dataclass(frozen=True)
class TaskEnd:
    """What the block did to one task: its post-state, the coinbase's or the bounty's payouts."""

    state: TaskState
    counted: tuple[bool, ...]
    vote_ran: bool = False
    round_counted: tuple[bool, ...] | None = None
    gated: bool = False
    coinbase: tuple[Payout, ...] = ()  # the genesis task's: new coins, listed by the coinbase
    credits: tuple[Payout, ...] = ()  # a deployed task's: from its bounty


def apply_body(view: ChainView, state: State, miner: bytes, txs: Sequence[Tx]) -> Execution:
    """Run the non-coinbase ``txs`` on ``state``, vote, close rounds when due, pay; no root checks.

    In order: the coins whose unbonding delay ends here return (every
    task); each transaction (:func:`apply_tx`); then every task that trains,
    in id order of creation (the genesis task first): the block's vote (the
    task's rule over its counted updates, zero when too few), at the task's
    round's last block the round's step and payouts
    (:func:`consensus.rounds.close_round`; new coins for the genesis task,
    the bounty for a deployed one, :func:`consensus.contracts.settle_round`).
    Shared by :func:`state_transition` and the miner's template, so both
    compute the payouts and the post-state in exactly the same way.
    """
    if state.height != view.height:
        raise ValueError(f"the state is at height {state.height}, the view's parent at {view.height}")
    rules = view.rules
    height = state.height + 1
    ledger = Ledger(state.accounts)
    tasks: dict[bytes, TaskRun] = {}
    for task_id, task_state in state.tasks.items():
        spec = rules.task if task_state.contract is None else task_state.contract.spec
        work = TaskWork(task_state)
        for address, amount in release_unbonded(work, height).items():
            ledger.credit(address, amount)
        tasks[task_id] = TaskRun(task_id, spec, work)
    genesis_id = next(iter(state.tasks))  # the genesis task: first, the one without a contract
    genesis = tasks[genesis_id]
    if any(isinstance(tx, GradientUpdate) and tx.task_id == genesis_id for tx in txs):
        genesis.gate = useful_gate(rules, state.params)
    run = BlockRun(view, ledger, tasks)
    for tx in txs:
        apply_tx(run, tx)

    ends: dict[bytes, TaskEnd] = {}
    for task_id, task in run.tasks.items():
        ends[task_id] = end_task(view, task, miner, run.fees, rules.gate_set if task is genesis else None)
        for payout in (*ends[task_id].coinbase, *ends[task_id].credits):
            ledger.credit(payout.address, payout.amount)

    main = ends[genesis_id]
    new_state = State(
        height=height, accounts=ledger.merged(), tasks={task_id: end.state for task_id, end in ends.items()}
    )
    counted_flags = tuple(ends[task_id].counted[i] for task_id, i in run.updates)
    clones = tuple(run.tasks[task_id].work.updates[i].clone for task_id, i in run.updates)
    outcome = Outcome(
        counted=counted_flags, clones=clones, vote_ran=main.vote_ran, round_counted=main.round_counted,
        gated=main.gated, ran=tuple(ends[task_id].vote_ran for task_id, _ in run.updates),
    )
    changed = {task_id: t for task_id, t in state.tasks.items() if ends[task_id].state is not t}
    created = tuple(task_id for task_id in run.tasks if task_id not in state.tasks)
    undo = Undo(accounts_before=dict(ledger.before), tasks_before=changed, outcome=outcome, created=created)
    return Execution(new_state, undo, list(main.coinbase))


def end_task(view: ChainView, run: TaskRun, miner: bytes, fees: int, gate_set: GateSet | None) -> TaskEnd:
    """One task's end of the block: its vote, its round's close when due, its payouts.

    A closed task only keeps what its unbonds changed. ``fees`` go to the
    miner with the genesis task's block reward (``run.work.base.contract`` is None).
    """
    base, work, task = run.work.base, run.work, run.spec
    if not run.training:  # only its bonds change: unbonds, and the coins they release
        if work.stakes == base.stakes and work.unbonding == base.unbonding:
            return TaskEnd(base, ())
        return TaskEnd(base.evolve(stakes=work.stakes, unbonding=work.unbonding), ())
    height = view.height + 1
    kept = [u for u in work.updates if not u.clone]
    vote_vector = np.zeros(task.param_count, dtype=np.float32)
    counted_kept = np.zeros(len(kept), dtype=bool)
    vote_ran = False
    if kept:
        result, counted_kept = aggregate_updates(
            task, [u.vector for u in kept], base.last_aggregate, hash_at_height(view, view.height)
        )
        if result is not None:
            vote_vector, vote_ran = np.array(result, dtype=np.float32), True
    counted_iter = iter(counted_kept)
    counted_flags = tuple(False if u.clone else bool(next(counted_iter)) for u in work.updates)
    vote = Vote(
        vote_vector, vote_ran, tuple(u.sender for u, c in zip(work.updates, counted_flags, strict=True) if c)
    )

    params, last_aggregate, version = base.params, base.last_aggregate, base.model_version
    closed = closes_round(height, task.round_blocks)
    contributors: list[bytes] = []
    round_counted: tuple[bool, ...] | None = None
    gated = stepped = False
    if closed:
        votes = (*base.votes, vote)
        close = close_round(task, votes, params, last_aggregate, gate_set)
        round_counted, gated = close.counted, close.gated
        if close.step is not None:
            params = np.array(params - np.float32(task.server_lr) * close.step, dtype=np.float32)
            last_aggregate = np.array(close.step, dtype=np.float32)
            version += 1
            stepped = True
        for each, ok in zip(votes, close.counted, strict=True):
            if ok:
                contributors += each.counted

    new_task = next_task_state(
        base, work, height=height, task=task, vote=vote, params=params,
        last_aggregate=last_aggregate, version=version, closed=closed,
    )
    coinbase: tuple[Payout, ...] = ()
    credits: tuple[Payout, ...] = ()
    if base.contract is None:
        coinbase = tuple(payouts(task, miner, fees, contributors))
    else:
        settled = (
            settle_round(base.contract, miner, contributors, params, height) if stepped
            else settle_idle(base.contract, height)
        )
        if settled is not None:
            credits = tuple(settled.credits)
            new_task = new_task.evolve(contract=settled.contract)
    return TaskEnd(new_task, counted_flags, vote_ran, round_counted, gated, coinbase, credits)


def undo_block(state: State, undo: Undo) -> State:
    """The parent's state, from a block's post-state and its undo data.

    A stored undo may leave out a contract's evaluation rows (they never
    change after the deploy, so storage keeps them once, with the task);
    they are taken from the same task in ``state``.
    """
    accounts = state.accounts if isinstance(state.accounts, Accounts) else Accounts(state.accounts)
    accounts = accounts.updated(undo.accounts_before)
    tasks = {
        task_id: undo.tasks_before[task_id].with_rows_of(task) if task_id in undo.tasks_before else task
        for task_id, task in state.tasks.items()
        if task_id not in undo.created
    }
    return State(height=state.height - 1, accounts=accounts, tasks=tasks)
