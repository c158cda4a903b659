"""Tasks as contracts: a task deployed by a transaction, paid from its bounty, closed by its terms.

The rules :func:`consensus.transition.apply_body` applies to every task a
``Deploy`` transaction created (docs/tasks.md, "Tasks as contracts"):

* **Deploy.** The spec must be a valid task in its one canonical encoding
  (``BAD_TASK_SPEC``: unknown or missing fields, a value out of range, a
  dict that is not ``to_dict`` of the spec it decodes to, a model too large
  for the caps or for a deployed task's caps on its size, round length and
  their product (a round's votes), a bond below
  :data:`consensus.caps.MIN_DEPLOYED_BOND`, a per-update gate, whose
  validation set no node holds); the
  evaluation rows must fit the spec (``BAD_EVAL_SET``: width, classes,
  finite, caps; with a target, rows x parameters at most
  :data:`consensus.caps.MAX_DEPLOYED_EVAL_WORK`, since every node checks it
  at each round's end); the bounty must be at least :data:`consensus.caps.MIN_BOUNTY`
  (``BAD_BOUNTY``) and, with the
  fee, covered by the sender's balance (``INSUFFICIENT_FUNDS``); at most
  :data:`consensus.caps.MAX_OPEN_TASKS` tasks train at once
  (``TOO_MANY_TASKS``); the fee covers the deploy's burn,
  :func:`deploy_burn` of the tasks training before it
  (``DEPLOY_FEE_TOO_LOW``). The bounty leaves the sender's balance at once and
  is held by the task; the burn leaves circulation (the miner is paid the
  rest of the fee). The task's id is the deploy's txid.
* **Why a burn.** A task slot is scarce (16 train at once) and the bounty
  comes back, so without it 15 deploys of the minimum bounty held every
  slot for the idle period and cost nothing in the end. The burn doubles
  with each open task: the k-th deployed slot burns ``2**(k-1)`` times
  :data:`consensus.caps.DEPLOY_BURN`, so taking the last free slot costs
  about as much as all the others together, and a squatter pays for every
  slot it holds the price an honest deployer would pay for the next one.
* **Training.** A deployed task runs the same rounds, bonds and
  commit-reveal as the genesis task (:mod:`consensus.rounds`), with its own
  spec: its round length, bond, rule and reward amounts.
* **Payouts from the bounty.** At a round's last block whose step was
  applied, the task pays its ``block_reward`` to the block's miner and its
  ``contributor_reward`` to each update the round counted, in that order and
  each as far as the bounty left goes: never new coins (only the genesis
  task's rewards are minted, through the coinbase).
* **Closing.** When the bounty is spent, or its model has not moved for
  :data:`consensus.caps.MAX_IDLE_BLOCKS` blocks, or the task's target
  (``target_metric`` on its evaluation set, in the fixed-order float64 loop
  of :func:`ml.gate.validation_figures`, the same bits on every node) is
  reached, the task's status turns ``closed``: what is left of the bounty
  returns to the deployer, bonds, commitments and updates for it are refused
  (``TASK_CLOSED``; an unbond still returns a bond), and the final model
  stays in the state, served as before.

Everything is a pure, bit-reproducible function of its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from consensus.caps import (
    DEPLOY_BURN,
    MAX_DEPLOYED_EVAL_WORK,
    MAX_DEPLOYED_PARAMS,
    MAX_DEPLOYED_ROUND_BLOCKS,
    MAX_DEPLOYED_ROUND_FLOATS,
    MAX_IDLE_BLOCKS,
    MAX_OPEN_TASKS,
    MIN_BOUNTY,
    MIN_DEPLOYED_BOND,
    check_task_fits,
)
from consensus.errors import BlockRejected, Reject
from consensus.state import CLOSED, TRAINING, Contract, State, TaskState
from consensus.tx import Deploy, Payout
from ml.evalset import EvalSetError, decode_evalset, evalset_digest, exact_figures
from ml.models import init_params
from ml.tasks import TaskSpec


def deployed_spec(tx: Deploy) -> TaskSpec:
    """The spec a deploy carries, checked to be a task this chain can run; ``BAD_TASK_SPEC`` if not."""
    try:
        spec = TaskSpec.from_dict(tx.task)
        check_task_fits(spec)
    except ValueError as exc:
        raise BlockRejected(Reject.BAD_TASK_SPEC, str(exc)) from None
    if spec.to_dict() != tx.task:
        raise BlockRejected(Reject.BAD_TASK_SPEC, "the task is not in its canonical form (TaskSpec.to_dict)")
    if spec.param_count > MAX_DEPLOYED_PARAMS or spec.round_blocks > MAX_DEPLOYED_ROUND_BLOCKS:
        raise BlockRejected(
            Reject.BAD_TASK_SPEC,
            f"a deployed task has at most {MAX_DEPLOYED_PARAMS} parameters and rounds of at most "
            f"{MAX_DEPLOYED_ROUND_BLOCKS} blocks; this one has {spec.param_count} and {spec.round_blocks}",
        )
    if spec.param_count * spec.round_blocks > MAX_DEPLOYED_ROUND_FLOATS:
        raise BlockRejected(
            Reject.BAD_TASK_SPEC,
            f"a deployed task keeps a round's votes, parameters x round blocks at most "
            f"{MAX_DEPLOYED_ROUND_FLOATS}; this one has {spec.param_count} x {spec.round_blocks}: "
            "shorten its rounds or its model",
        )
    if spec.bond_amount < MIN_DEPLOYED_BOND:
        raise BlockRejected(
            Reject.BAD_TASK_SPEC,
            f"a deployed task's bond_amount is at least {MIN_DEPLOYED_BOND} (an identity in every node's "
            f"state is not free); this one asks {spec.bond_amount}",
        )
    if spec.gate_examples != 0:
        raise BlockRejected(
            Reject.BAD_TASK_SPEC,
            "a deployed task cannot commit a gate validation set (gate_examples must be 0); "
            "set a target on its evaluation set instead",
        )
    return spec


def deploy_burn(open_tasks: int) -> int:
    """The part of a deploy's fee that is burned while ``open_tasks`` tasks train (the genesis task included).

    :data:`consensus.caps.DEPLOY_BURN` for the first deployed task, doubled
    for each further task training: 1 M, 2 M, 4 M, ... 16.4 G for the 15th.
    """
    return DEPLOY_BURN << max(open_tasks - 1, 0)


def check_deploy(tx: Deploy, open_tasks: int) -> tuple[TaskSpec, Contract]:
    """Every rule of a deploy but the signature and the funds; the spec and its contract at height 0.

    ``open_tasks`` is how many tasks train before it (the genesis task
    included). The mempool runs this as it is; :func:`deploy_task` gives the
    contract its height.
    """
    spec = deployed_spec(tx)
    try:
        evalset = decode_evalset(tx.evalset, spec)
    except EvalSetError as exc:
        raise BlockRejected(Reject.BAD_EVAL_SET, str(exc)) from None
    if spec.target_metric != "" and evalset.rows * spec.param_count > MAX_DEPLOYED_EVAL_WORK:
        raise BlockRejected(
            Reject.BAD_EVAL_SET,
            f"every node checks the target on the evaluation rows at each round's end: rows x parameters "
            f"at most {MAX_DEPLOYED_EVAL_WORK}; {evalset.rows} x {spec.param_count} is more (send fewer rows)",
        )
    if tx.bounty < MIN_BOUNTY:
        raise BlockRejected(
            Reject.BAD_BOUNTY, f"a bounty of {tx.bounty}; a deployed task locks at least {MIN_BOUNTY} to pay "
            "its miners and contributors"
        )
    if open_tasks >= MAX_OPEN_TASKS:
        raise BlockRejected(Reject.TOO_MANY_TASKS, f"{open_tasks} tasks train already; at most {MAX_OPEN_TASKS}")
    burn = deploy_burn(open_tasks)
    if tx.fee < burn:
        raise BlockRejected(
            Reject.DEPLOY_FEE_TOO_LOW,
            f"a fee of {tx.fee}; with {open_tasks} tasks training a deploy burns {burn}, "
            "which its fee must cover (the rest goes to the miner)",
        )
    contract = Contract(
        spec=spec, deployer=tx.sender_address, bounty=tx.bounty, status=TRAINING,
        eval_digest=evalset_digest(tx.evalset), deployed_at=0, moved_at=0, evalset=evalset,
    )
    return spec, contract


def deploy_task(tx: Deploy, height: int, open_tasks: int) -> TaskState:
    """The new task's state: its initial model and its contract (the caller debits bounty and fee)."""
    spec, contract = check_deploy(tx, open_tasks)
    params = np.array(init_params(spec), dtype=np.float32)
    return TaskState(
        params=params, last_aggregate=np.zeros_like(params), model_version=0,
        contract=replace(contract, deployed_at=height, moved_at=height),
    )


def is_training(task: TaskState) -> bool:
    """True while the task takes bonds, commitments and updates (the genesis task always does)."""
    return task.contract is None or task.contract.open


@dataclass(frozen=True)
class Settlement:
    """What a deployed task's round end paid, and its contract after it."""

    credits: list[Payout]
    contract: Contract
    target_reached: bool


def target_reached(contract: Contract, params: np.ndarray) -> bool:
    """True when the model meets the spec's target on the evaluation set (False without a target)."""
    spec = contract.spec
    if spec.target_metric == "":
        return False
    if contract.evalset is None:
        raise ValueError("a contract's evaluation rows must be loaded to check its target")
    figures = exact_figures(spec, params, contract.evalset)
    if spec.target_metric == "accuracy":
        return figures.accuracy >= spec.target_value
    return figures.loss <= spec.target_value


def close(contract: Contract) -> Settlement:
    """Close the task: the rest of the bounty returns to the deployer."""
    credits = [Payout(contract.deployer, contract.bounty)] if contract.bounty > 0 else []
    return Settlement(credits, replace(contract, bounty=0, status=CLOSED), False)


def settle_idle(contract: Contract, height: int) -> Settlement | None:
    """Close a task whose model has not moved for :data:`MAX_IDLE_BLOCKS` blocks; None while it may still."""
    if height - contract.moved_at < MAX_IDLE_BLOCKS:
        return None
    return close(contract)


def settle_round(
    contract: Contract, miner: bytes, contributors: list[bytes], params: np.ndarray, height: int
) -> Settlement:
    """Pay a round whose step was applied from the bounty; close the task if it is spent or its target met.

    Payouts go in order (the miner, then each counted contributor), each as
    far as the bounty left goes; a payout of zero is left out. On closing,
    the rest returns to the deployer.
    """
    spec = contract.spec
    left = contract.bounty
    credits: list[Payout] = []
    for address, amount in [(miner, spec.block_reward), *[(c, spec.contributor_reward) for c in contributors]]:
        share = min(amount, left)
        if share > 0:
            credits.append(Payout(address, share))
            left -= share
    reached = target_reached(contract, params)
    after = replace(contract, bounty=left, moved_at=height)
    if left == 0 or reached:
        closed = close(after)
        return Settlement([*credits, *closed.credits], closed.contract, reached)
    return Settlement(credits, after, reached)


def task_of(
    task: TaskSpec, tasks: Mapping[bytes, TaskState], task_id: bytes, *, training: bool = True
) -> tuple[TaskSpec, TaskState]:
    """The spec and state of the task ``task_id`` among ``tasks`` (``task`` is the genesis task's spec).

    Raises
    ------
    BlockRejected
        ``UNKNOWN_TASK`` if the chain runs no such task, ``TASK_CLOSED`` if
        ``training`` is asked of a task whose training has closed.
    """
    found = tasks.get(task_id)
    if found is None:
        raise BlockRejected(Reject.UNKNOWN_TASK, f"no task {task_id[::-1].hex()[:16]}… on this chain")
    spec = task if found.contract is None else found.contract.spec
    if training and not is_training(found):
        raise BlockRejected(Reject.TASK_CLOSED, f"task {spec.name!r} ({task_id[::-1].hex()[:16]}…) has closed its training")
    return spec, found


def open_task_count(state: State) -> int:
    """How many of the state's tasks still train (the genesis task always does)."""
    return sum(is_training(t) for t in state.tasks.values())


def task_specs(task: TaskSpec, tasks: Mapping[bytes, TaskState]) -> dict[bytes, TaskSpec]:
    """Every task's spec by id, in the state's order (``task`` is the genesis task's, first)."""
    return {task_id: task if t.contract is None else t.contract.spec for task_id, t in tasks.items()}
