"""The genesis block: deterministic from the network and the task.

Fixed time, nonce 0 and no randomness, so every machine builds the same
genesis hash and nodes initialised apart can join later. Like Bitcoin's, the
genesis header is trusted by construction: its proof of work is not checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from consensus.block import Block, commitment
from consensus.caps import check_task_fits
from consensus.header import Header
from consensus.merkle import merkle_root
from consensus.params import ChainParams
from consensus.state import State, TaskState
from consensus.tx import TaskTx, encode_tx, txid
from consensus.validation import HEADER_VERSION
from ml.models import init_params
from ml.tasks import TaskSpec

GENESIS_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
ZERO_HASH = bytes(32)


def chain_params_for(params: ChainParams, task: TaskSpec) -> ChainParams:
    """The network's rules with the task's target block time."""
    return dataclasses.replace(params, target_block_time_s=task.target_block_time_s)


def genesis_state(task: TaskSpec) -> State:
    """No accounts, and the task's initial model with no bond, commitment or vote yet."""
    params = np.array(init_params(task), dtype=np.float32)
    model = TaskState(params=params, last_aggregate=np.zeros_like(params), model_version=0)
    return State(height=0, accounts={}, tasks={genesis_task_id(task): model})


def genesis_task_id(task: TaskSpec) -> bytes:
    """The id of the task a genesis block carries: its ``TaskTx``'s txid (every task's id is the
    txid of the transaction that created it)."""
    return txid(encode_tx(TaskTx(task.to_dict())))


def make_genesis(params: ChainParams, task: TaskSpec) -> tuple[Block, State]:
    """The genesis block carrying ``task`` and the state it commits to.

    Raises
    ------
    ValueError
        If the task's full blocks would break a consensus cap (:func:`consensus.caps.check_task_fits`).
    """
    check_task_fits(task)
    state = genesis_state(task)
    tx = TaskTx(task.to_dict())
    tx_root = merkle_root([txid(encode_tx(tx))])
    header = Header(
        version=HEADER_VERSION,
        prev=ZERO_HASH,
        root=commitment(tx_root, state.root),
        time=GENESIS_TIME,
        bits=params.genesis_bits,
        nonce=0,
    )
    return Block.build(header, state.root, [tx]), state


def task_of_genesis(block: Block) -> TaskSpec:
    """Read the task back from a genesis block."""
    tx = block.txs[0] if block.txs else None
    if not isinstance(tx, TaskTx):
        raise ValueError("not a genesis block: its first transaction is not the task")
    return TaskSpec.from_dict(tx.task)
