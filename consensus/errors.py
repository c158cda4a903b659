"""The one exception type consensus code raises, and the codes it carries.

Every rule that fails raises ``BlockRejected(Reject.X, detail)``. Tests assert
on ``exc.code``; the node maps the code to a peer penalty. Keeping every code
in one enum means a reader can see the whole rule book in one screen.
"""

from __future__ import annotations

import enum


class Reject(enum.Enum):
    """Why a header, block or transaction was rejected."""

    # encoding
    BAD_ENCODING = "bad-encoding"  # bytes that do not decode canonically
    BAD_HEADER = "bad-header"  # header of the wrong length or fields
    OVERSIZE = "oversize"  # a body over its size limit
    # header rules
    BAD_POW = "bad-pow"
    BAD_BITS = "bad-bits"
    BAD_VERSION = "bad-version"
    TIME_TOO_OLD = "time-too-old"
    TIME_TOO_NEW = "time-too-new"
    UNKNOWN_PARENT = "unknown-parent"
    BAD_PREV = "bad-prev"  # the parent, or an ancestor, is known invalid
    # body rules
    BAD_TX_ROOT = "bad-tx-root"
    BAD_STATE_ROOT = "bad-state-root"
    BAD_COINBASE = "bad-coinbase"
    DUPLICATE_TX = "duplicate-tx"
    TOO_MANY_TXS = "too-many-txs"
    TOO_MANY_UPDATES = "too-many-updates"
    # transaction rules
    BAD_SIGNATURE = "bad-signature"
    BAD_NONCE = "bad-nonce"
    BAD_AMOUNT = "bad-amount"
    INSUFFICIENT_FUNDS = "insufficient-funds"
    # gradient-update rules
    BAD_UPDATE_ENCODING = "bad-update-encoding"
    BAD_UPDATE_SHAPE = "bad-update-shape"
    UPDATE_NOT_FINITE = "update-not-finite"
    UPDATE_NORM = "update-norm"
    UPDATE_BAD_BASE = "update-bad-base"  # a commitment's base is not its round's start block
    UPDATE_NOT_USEFUL = "update-not-useful"
    BAD_AGGREGATION = "bad-aggregation"
    # identities, rounds and commit-reveal
    UNKNOWN_TASK = "unknown-task"  # a task id the chain does not run
    NOT_BONDED = "not-bonded"  # a commitment or update from an address without a mature bond
    ALREADY_BONDED = "already-bonded"  # a second bond while one is locked
    BAD_ROUND = "bad-round"  # a commitment for another round, an update outside its reveal round
    BAD_COMMIT = "bad-commit"  # a commitment of repeated digests or more than a round's worth
    DUPLICATE_COMMIT = "duplicate-commit"  # a second commitment by one sender in one round
    NO_COMMITMENT = "no-commitment"  # an update that matches no unrevealed digest of its sender
    DUPLICATE_SENDER = "duplicate-sender"  # a second update by one sender in one block
    # tasks deployed as contracts (docs/tasks.md)
    BAD_TASK_SPEC = "bad-task-spec"  # a deploy whose spec is invalid, not canonical, or cannot run on the chain
    BAD_EVAL_SET = "bad-eval-set"  # a deploy whose evaluation rows do not fit its spec or the caps
    BAD_BOUNTY = "bad-bounty"  # a deploy with no bounty
    TOO_MANY_TASKS = "too-many-tasks"  # a deploy while the chain already runs its cap of open tasks
    TASK_CLOSED = "task-closed"  # a bond, commitment or update for a task whose training has closed
    DEPLOY_FEE_TOO_LOW = "deploy-fee-too-low"  # a deploy whose fee does not cover the burn for the open tasks


class BlockRejected(Exception):
    """A header, block or transaction broke consensus rule ``code``."""

    def __init__(self, code: Reject, detail: str = "") -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail


# Codes that say "not yet" rather than "invalid": the sender is not punished.
NOT_PUNISHED: frozenset[Reject] = frozenset({Reject.TIME_TOO_NEW, Reject.UNKNOWN_PARENT})
