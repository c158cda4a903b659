"""SQLite storage under ``--datadir``: block index, bodies, undo data, state.

WAL mode, one SQL transaction per connect/disconnect (or per reorg), so a node
killed at any instant restarts on a consistent chain. ``synchronous=FULL``
makes a committed block durable before the node acknowledges it.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from consensus.state import Account, Commitment, Contract, Stake, State, TaskState, Unbonding, Vote
from consensus.transition import Outcome, Undo
from ml.evalset import decode_evalset, encode_evalset
from ml.tasks import TaskSpec

SCHEMA_VERSION = 2  # 2: per-task state (bonds, commitments, votes) and undo with outcomes

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS block_index (
    hash BLOB PRIMARY KEY,
    prev BLOB NOT NULL,
    height INTEGER NOT NULL,
    chain_work TEXT NOT NULL,      -- 64 hex digits: text order is numeric order
    header BLOB NOT NULL,
    status INTEGER NOT NULL        -- see BlockStatus
);
CREATE INDEX IF NOT EXISTS block_index_prev ON block_index(prev);
CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS main_chain (height INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    address BLOB PRIMARY KEY, balance INTEGER NOT NULL, nonce INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tip_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    height INTEGER NOT NULL,
    root BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS task_state (
    task_id BLOB PRIMARY KEY, position INTEGER NOT NULL, data BLOB NOT NULL  -- position 0: the genesis task
);
CREATE TABLE IF NOT EXISTS tx_index (txid BLOB PRIMARY KEY, block BLOB NOT NULL, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS update_outcomes (
    block BLOB NOT NULL, position INTEGER NOT NULL, sender BLOB NOT NULL, accepted INTEGER NOT NULL,
    PRIMARY KEY (block, position)
);
CREATE TABLE IF NOT EXISTS vote_outcomes (
    block BLOB PRIMARY KEY,         -- a block of a closed round
    round_end BLOB NOT NULL,        -- the round's last block, which decided
    status TEXT NOT NULL            -- see VoteStatus
);
CREATE INDEX IF NOT EXISTS vote_outcomes_round_end ON vote_outcomes(round_end);
"""


NOT_APPLIED = -1  # update_outcomes.accepted of a block whose rule did not run


class VoteStatus:
    """What a closed round made of one block's vote (``vote_outcomes.status``)."""

    COUNTED = "counted"  # near the round's step: its counted updates are paid
    REJECTED = "rejected"  # an outlier to the round's step (an attacker's block): nobody paid
    ZERO = "zero"  # too few updates for the task's rule: the block voted for no movement
    GATED = "gated"  # the round's step failed the round gate: the model stayed, nobody paid


class BlockStatus:
    HEADER = 0  # header valid, body not here
    BODY = 1  # body stored, not yet connected
    VALID = 2  # connected at least once
    INVALID = 3  # failed validation: never connect it or its descendants


@dataclass
class IndexRow:
    hash: bytes
    prev: bytes
    height: int
    chain_work: int
    header: bytes
    status: int


class StorageError(Exception):
    """The datadir is unusable (wrong network, newer schema, corrupt)."""


CHECK_BLOCKS = 2016  # newest main-chain bodies fully checked at start (Bitcoin Core's -checkblocks, larger)


def _f32(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _from_f32(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _encode_contract(contract: Contract | None, *, rows: bool) -> list[Any] | None:
    if contract is None:
        return None
    evalset = contract.evalset
    raw_rows = encode_evalset(evalset.X, evalset.y) if rows and evalset is not None else None
    return [
        contract.spec.to_dict(), contract.deployer, contract.bounty, contract.status, contract.eval_digest,
        contract.deployed_at, contract.moved_at, raw_rows,
    ]


def _decode_contract(value: list[Any] | None) -> Contract | None:
    if value is None:
        return None
    spec_dict, deployer, bounty, status, eval_digest, deployed_at, moved_at, raw_rows = value
    spec = TaskSpec.from_dict(spec_dict)
    return Contract(
        spec=spec, deployer=bytes(deployer), bounty=bounty, status=status, eval_digest=bytes(eval_digest),
        deployed_at=deployed_at, moved_at=moved_at, evalset=None if raw_rows is None else decode_evalset(bytes(raw_rows), spec),
    )


def encode_task_state(task: TaskState, *, rows: bool = True) -> bytes:
    """A task's state as msgpack: model, stakes, unbondings, commitments, votes, recent reveals, contract.

    ``rows=False`` leaves out a contract's evaluation rows (an undo record:
    :func:`consensus.transition.undo_block` takes them from the task's current state).
    """
    raw: bytes = msgpack.packb(
        [
            _f32(task.params),
            _f32(task.last_aggregate),
            task.model_version,
            [[a, s.amount, s.since] for a, s in sorted(task.stakes.items())],
            [[a, u.amount, u.release] for a, u in sorted(task.unbonding.items())],
            [[r, a, list(c.hashes), list(c.revealed)] for (r, a), c in sorted(task.commitments.items())],
            [[_f32(v.vector), v.ran, list(v.counted)] for v in task.votes],
            [[d, r, a] for d, (r, a) in sorted(task.reveals.items())],
            _encode_contract(task.contract, rows=rows),
        ],
        use_bin_type=True,
    )
    return raw


def decode_task_state(raw: bytes) -> TaskState:
    params, last, version, stakes, unbonding, commitments, votes, reveals, contract = msgpack.unpackb(raw, raw=False)
    return TaskState(
        params=_from_f32(params),
        last_aggregate=_from_f32(last),
        model_version=version,
        stakes={bytes(a): Stake(amount, since) for a, amount, since in stakes},
        unbonding={bytes(a): Unbonding(amount, release) for a, amount, release in unbonding},
        commitments={
            (r, bytes(a)): Commitment(tuple(bytes(h) for h in hashes), tuple(bool(x) for x in revealed))
            for r, a, hashes, revealed in commitments
        },
        votes=tuple(Vote(_from_f32(v), bool(ran), tuple(bytes(c) for c in counted)) for v, ran, counted in votes),
        reveals={bytes(d): (r, bytes(a)) for d, r, a in reveals},
        contract=_decode_contract(contract),
    )


def encode_undo(undo: Undo) -> bytes:
    accounts = [
        [address, None, None] if acc is None else [address, acc.balance, acc.nonce]
        for address, acc in sorted(undo.accounts_before.items())
    ]
    out = undo.outcome
    raw: bytes = msgpack.packb(
        [
            accounts,
            # genesis task first; evaluation rows are kept once, with the task's current state
            [[task_id, encode_task_state(t, rows=False)] for task_id, t in undo.tasks_before.items()],
            list(undo.created),
            [
                list(out.counted),
                list(out.clones),
                out.vote_ran,
                None if out.round_counted is None else list(out.round_counted),
                out.gated,
                list(out.ran),
            ],
        ],
        use_bin_type=True,
    )
    return raw


def decode_undo(raw: bytes) -> Undo:
    accounts, tasks, created, outcome = msgpack.unpackb(raw, raw=False)
    counted, clones, vote_ran, round_counted, gated = outcome[:5]
    ran = outcome[5] if len(outcome) > 5 else []  # a record stored before per-task verdicts
    return Undo(
        accounts_before={
            bytes(a): (None if bal is None else Account(bal, nonce)) for a, bal, nonce in accounts
        },
        tasks_before={bytes(task_id): decode_task_state(data) for task_id, data in tasks},
        created=tuple(bytes(task_id) for task_id in created),
        outcome=Outcome(
            counted=tuple(bool(c) for c in counted),
            clones=tuple(bool(c) for c in clones),
            vote_ran=bool(vote_ran),
            round_counted=None if round_counted is None else tuple(bool(c) for c in round_counted),
            gated=bool(gated),
            ran=tuple(bool(r) for r in ran),
        ),
    )


class Storage:
    """The one place that reads and writes the datadir's database."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION).encode())
        elif int(version) > SCHEMA_VERSION:
            raise StorageError(
                f"{path} was written by a newer gradchain (schema {int(version)}); upgrade gradchain"
            )
        elif int(version) < SCHEMA_VERSION:
            raise StorageError(
                f"{path} holds a chain of an older gradchain (schema {int(version)}), whose rules this "
                "one does not run (rounds, bonds and commit-reveal were a hard fork); start a new "
                "datadir (make testnet FRESH=1) or use the gradchain that wrote it"
            )
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all (nestable).

        Inside another transaction or a :meth:`group` it is a savepoint: when
        it fails its own writes are undone, and the enclosing block decides
        about the rest.
        """
        outermost = self._depth == 0
        savepoint = f"sp{self._depth}"
        self.db.execute("BEGIN IMMEDIATE" if outermost else f"SAVEPOINT {savepoint}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if outermost:
                self.db.execute("ROLLBACK")
            elif self.db.in_transaction:
                self.db.execute(f"ROLLBACK TO {savepoint}")
                self.db.execute(f"RELEASE {savepoint}")
            raise
        self._depth -= 1
        self.db.execute("COMMIT" if outermost else f"RELEASE {savepoint}")

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Make the :meth:`transaction` blocks inside durable with one commit.

        Each transaction inside stays atomic; the ones that completed are
        committed at the end even if an exception leaves the group, as if
        each had committed on its own, only later. That saves an fsync per
        transaction (with ``synchronous=FULL`` each commit waits for the
        disk). A crash inside the group loses all of them, which leaves the
        state before the group: still consistent. Write only through
        ``transaction()`` inside a group.
        """
        if self._depth > 0:  # inside a transaction already: it commits
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            if self.db.in_transaction:  # SQLite may have rolled back on an I/O error
                self.db.execute("COMMIT")

    # -- meta -------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- block index and bodies -----------------------------------------------------
    def put_index(self, row: IndexRow) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO block_index(hash, prev, height, chain_work, header, status)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (row.hash, row.prev, row.height, f"{row.chain_work:064x}", row.header, row.status),
        )

    def set_status(self, block_hash: bytes, status: int) -> None:
        self.db.execute("UPDATE block_index SET status = ? WHERE hash = ?", (status, block_hash))

    def load_index(self) -> list[IndexRow]:
        rows = self.db.execute(
            "SELECT hash, prev, height, chain_work, header, status FROM block_index ORDER BY height"
        ).fetchall()
        return [IndexRow(bytes(h), bytes(p), ht, int(w, 16), bytes(hd), s) for h, p, ht, w, hd, s in rows]

    def put_body(self, block_hash: bytes, body: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO blocks(hash, body) VALUES (?, ?)", (block_hash, body))

    def get_body(self, block_hash: bytes) -> bytes | None:
        row = self.db.execute("SELECT body FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_undo(self, block_hash: bytes, undo: Undo) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO undo(hash, data) VALUES (?, ?)", (block_hash, encode_undo(undo))
        )

    def get_undo(self, block_hash: bytes) -> Undo | None:
        row = self.db.execute("SELECT data FROM undo WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else decode_undo(bytes(row[0]))

    # -- main chain -----------------------------------------------------------------
    def main_chain(self) -> list[bytes]:
        rows = self.db.execute("SELECT height, hash FROM main_chain ORDER BY height").fetchall()
        for expected, (height, _) in enumerate(rows):
            if height != expected:
                raise StorageError(f"{self.path}: main chain has a gap at height {expected}")
        return [bytes(h) for _, h in rows]

    def set_main(self, height: int, block_hash: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO main_chain(height, hash) VALUES (?, ?)", (height, block_hash))

    def drop_main(self, height: int) -> None:
        self.db.execute("DELETE FROM main_chain WHERE height = ?", (height,))

    # -- state -----------------------------------------------------------------------
    def write_state(self, state: State, changed: set[bytes]) -> None:
        """Persist ``state``: the accounts in ``changed``, every task's state and the tip row."""
        for address in sorted(changed):
            account = state.accounts.get(address)
            if account is None:
                self.db.execute("DELETE FROM accounts WHERE address = ?", (address,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO accounts(address, balance, nonce) VALUES (?, ?, ?)",
                    (address, account.balance, account.nonce),
                )
        self.db.execute("DELETE FROM task_state")
        self.db.executemany(
            "INSERT INTO task_state(task_id, position, data) VALUES (?, ?, ?)",
            [(task_id, i, encode_task_state(task)) for i, (task_id, task) in enumerate(state.tasks.items())],
        )
        self.db.execute(
            "INSERT OR REPLACE INTO tip_state(id, height, root) VALUES (1, ?, ?)", (state.height, state.root)
        )

    def load_state(self) -> State | None:
        row = self.db.execute("SELECT height, root FROM tip_state WHERE id = 1").fetchone()
        if row is None:
            return None
        height, root = row
        accounts = {
            bytes(a): Account(b, n)
            for a, b, n in self.db.execute("SELECT address, balance, nonce FROM accounts")
        }
        tasks = {
            bytes(task_id): decode_task_state(bytes(data))
            for task_id, data in self.db.execute("SELECT task_id, data FROM task_state ORDER BY position")
        }
        state = State(height=height, accounts=accounts, tasks=tasks)
        if state.root != bytes(root):
            raise StorageError(f"{self.path}: stored state does not match its root; run `chain verify`")
        return state

    # -- where each main-chain transaction is -------------------------------------------------------
    def index_txs(self, block_hash: bytes, txids: list[bytes]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO tx_index(txid, block, position) VALUES (?, ?, ?)",
            [(t, block_hash, i) for i, t in enumerate(txids)],
        )

    def unindex_txs(self, txids: list[bytes]) -> None:
        self.db.executemany("DELETE FROM tx_index WHERE txid = ?", [(t,) for t in txids])

    def find_tx(self, tx_id: bytes) -> tuple[bytes, int] | None:
        row = self.db.execute("SELECT block, position FROM tx_index WHERE txid = ?", (tx_id,)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    # -- what each block's rule accepted (for the API and dashboard) ----------------
    def put_outcomes(self, block_hash: bytes, outcomes: list[tuple[bytes, bool | None]]) -> None:
        """Per update: accepted (1), rejected (0) or not applied (-1: too few updates for the rule)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO update_outcomes(block, position, sender, accepted) VALUES (?, ?, ?, ?)",
            [(block_hash, i, s, NOT_APPLIED if a is None else int(a)) for i, (s, a) in enumerate(outcomes)],
        )

    def put_vote_outcomes(self, round_end: bytes, statuses: list[tuple[bytes, str]]) -> None:
        """What the round closed by ``round_end`` made of each of its blocks' votes (:class:`VoteStatus`)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO vote_outcomes(block, round_end, status) VALUES (?, ?, ?)",
            [(block, round_end, status) for block, status in statuses],
        )

    def drop_vote_outcomes(self, round_end: bytes) -> None:
        """Forget the verdicts of a round whose last block is disconnected: its votes are open again."""
        self.db.execute("DELETE FROM vote_outcomes WHERE round_end = ?", (round_end,))

    def get_vote_outcome(self, block_hash: bytes) -> str | None:
        row = self.db.execute("SELECT status FROM vote_outcomes WHERE block = ?", (block_hash,)).fetchone()
        return None if row is None else str(row[0])

    def get_outcomes(self, block_hash: bytes) -> list[tuple[bytes, bool | None]]:
        rows = self.db.execute(
            "SELECT sender, accepted FROM update_outcomes WHERE block = ? ORDER BY position", (block_hash,)
        ).fetchall()
        return [(bytes(s), None if a == NOT_APPLIED else bool(a)) for s, a in rows]


    # -- integrity (checked at start; node/reindex.py repairs) -------------------------------------
    def integrity_problems(self, check_blocks: int = CHECK_BLOCKS) -> list[str]:
        """What is wrong with this database, or nothing; never raises.

        SQLite's page-level ``quick_check`` (a torn or overwritten page); the
        main chain contiguous, each of its index rows' header hashing to its
        key; the newest ``check_blocks`` main-chain bodies decoding to their
        hash and matching their header's commitment, with their undo data; the
        tip state matching its root. A torn WAL tail needs no check of ours:
        SQLite drops frames after the last complete commit, which leaves the
        database as it was after an earlier transaction.
        """
        from consensus.block import decode_block
        from consensus.errors import BlockRejected
        from consensus.header import header_hash

        try:
            pages = [str(r[0]) for r in self.db.execute("PRAGMA quick_check").fetchall()]
            if pages != ["ok"]:
                return [f"database pages: {'; '.join(pages[:3])}"]
            main = self.main_chain()
            if not main:
                return ["no main chain"]
            problems: list[str] = []
            headers = dict(self.db.execute(
                "SELECT b.hash, b.header FROM block_index b JOIN main_chain m ON m.hash = b.hash"
            ).fetchall())
            for height, block_hash in enumerate(main):
                header = headers.get(block_hash)
                if header is None or header_hash(bytes(header)) != block_hash:
                    problems.append(f"index row of main-chain block {height} does not hash to its key")
            for height in range(max(0, len(main) - check_blocks), len(main)):
                block_hash = main[height]
                raw = self.get_body(block_hash)
                try:
                    if raw is None:
                        raise ValueError("body missing")
                    block = decode_block(raw)
                    if block.hash != block_hash:
                        raise ValueError("body is another block's")
                    block.check_commitment()
                    if height > 0 and self.get_undo(block_hash) is None:
                        raise ValueError("undo data missing")
                except (BlockRejected, ValueError) as exc:
                    problems.append(f"main-chain block {height}: {exc}")
            state = self.load_state()  # raises when the state does not match its root
            if state is None or state.height != len(main) - 1:
                problems.append(f"tip state is not at the tip height {len(main) - 1}")
            return problems
        except (sqlite3.DatabaseError, StorageError, ValueError, TypeError) as exc:
            return [f"unreadable: {exc}"]
