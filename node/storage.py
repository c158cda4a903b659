"""SQLite storage under ``--datadir``: block index, bodies, undo data, state.

WAL mode, one SQL transaction per connect/disconnect (or per reorg), so a node
killed at any instant restarts on a consistent chain. ``synchronous=FULL``
makes a committed block durable before the node acknowledges it.

This database is the datadir's only consensus data; the other files there
(lock, cookie, banlist.json, peers.json, a trainer's sealed data) are listed
in docs/DESIGN-NOTES.md, "The node".
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from consensus.state import Account, Commitment, Contract, Stake, State, TaskState, Unbonding, Vote
from consensus.transition import Outcome, Undo
from ml.evalset import decode_evalset, encode_evalset
from ml.tasks import TaskSpec

SCHEMA_VERSION = 3  # 3: per-key task state rows, undo records that hold only what a block changed
REINDEX_SCHEMAS = (2,)  # older layouts of the same rules: `gradchain chain reindex` rebuilds them

META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"

SCHEMA = """
CREATE TABLE IF NOT EXISTS block_index (
    hash BLOB PRIMARY KEY,
    prev BLOB NOT NULL,
    height INTEGER NOT NULL,
    chain_work TEXT NOT NULL,      -- 64 hex digits: text order is numeric order
    header BLOB NOT NULL,
    status INTEGER NOT NULL        -- see BlockStatus
) WITHOUT ROWID;
-- Tables of small rows are WITHOUT ROWID (one B-tree each, not a table and its key's index); those
-- of large blobs keep a rowid table, whose leaves hold more of a row before it overflows.
CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS undo (hash BLOB PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS main_chain (height INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    address BLOB PRIMARY KEY, balance INTEGER NOT NULL, nonce INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tip_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    height INTEGER NOT NULL,
    root BLOB NOT NULL
);
-- Each task's state, one row per key, so a block rewrites only what it changed (write_state).
CREATE TABLE IF NOT EXISTS task_model (
    task_id BLOB PRIMARY KEY,
    position INTEGER NOT NULL,      -- 0: the genesis task; State.tasks order
    params BLOB NOT NULL,           -- little-endian float32
    last_aggregate BLOB NOT NULL,
    version INTEGER NOT NULL,
    contract BLOB                   -- msgpack, with the evaluation rows; NULL for the genesis task
);
CREATE TABLE IF NOT EXISTS task_stakes (
    task_id BLOB NOT NULL, address BLOB NOT NULL, amount INTEGER NOT NULL, since INTEGER NOT NULL,
    PRIMARY KEY (task_id, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_unbonding (
    task_id BLOB NOT NULL, address BLOB NOT NULL, amount INTEGER NOT NULL, release INTEGER NOT NULL,
    PRIMARY KEY (task_id, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_commitments (
    task_id BLOB NOT NULL, round INTEGER NOT NULL, address BLOB NOT NULL,
    hashes BLOB NOT NULL, revealed BLOB NOT NULL,  -- msgpack list of digests; one byte per digest
    PRIMARY KEY (task_id, round, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_votes (
    task_id BLOB NOT NULL, idx INTEGER NOT NULL, vector BLOB NOT NULL, ran INTEGER NOT NULL,
    counted BLOB NOT NULL,          -- msgpack list of addresses
    PRIMARY KEY (task_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_reveals (     -- keyed by round first: a block's reveals share a page
    task_id BLOB NOT NULL, round INTEGER NOT NULL, content BLOB NOT NULL, sender BLOB NOT NULL,
    PRIMARY KEY (task_id, round, content)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tx_index (
    txid BLOB PRIMARY KEY, block BLOB NOT NULL, position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vote_outcomes (
    block BLOB PRIMARY KEY,         -- a block of a closed round
    round_end BLOB NOT NULL,        -- the round's last block, which decided
    status TEXT NOT NULL            -- see VoteStatus
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vote_outcomes_round_end ON vote_outcomes(round_end);
"""


K = TypeVar("K")
V = TypeVar("V")

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


# -- undo records ------------------------------------------------------------------------------
# A block changes a few keys of each task it touches (a vote appended, a few commitments marked
# revealed, a few reveals added); the model only at a round's end. So an undo record keeps, per
# task, only the keys the block changed with their values before it, and the model and the
# contract only when they changed: decoding it needs the task's state after the block, which a
# disconnect always has. A record written without that state (or for a task the state after
# lacks) keeps the whole task state, as schema 2 did.
_TASK_TABLES = ("task_model", "task_stakes", "task_unbonding", "task_commitments", "task_votes", "task_reveals")
_EMPTY_TASK = TaskState(np.zeros(0, np.float32), np.zeros(0, np.float32), 0)  # what write_state diffs a new task from
_FULL, _DIFF = 0, 1  # how an undo record keeps one task's state before the block
_UNCHANGED: list[Any] = []  # a diff's contract slot when the block left the contract as it was


def _changed_keys(before: Mapping[K, V], after: Mapping[K, V]) -> list[K]:
    """Every key whose value differs between two maps (present in one only, or with another value)."""
    if before is after:
        return []
    try:  # values are frozen dataclasses and tuples: the symmetric difference runs in C
        return list({k for k, _ in before.items() ^ after.items()})
    except TypeError:  # an unhashable value
        return [k for k, v in before.items() if after.get(k) != v] + [k for k in after if k not in before]


def _before(before: Mapping[K, V], after: Mapping[K, V]) -> list[tuple[K, V | None]]:
    """Each key a block changed with its value before the block (None: it was absent)."""
    return [(k, before.get(k)) for k in _changed_keys(before, after)]


def _reverted(after: Mapping[K, V], changes: list[tuple[K, V | None]]) -> dict[K, V]:
    """``after`` with each changed key set back to its value before (removed where it was absent), key order."""
    out = dict(after)
    for k, v in changes:
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return dict(sorted(out.items()))


def _same_vote(a: Vote, b: Vote) -> bool:
    return a is b or (a.digest == b.digest and a.ran == b.ran and a.counted == b.counted)


def _kept_votes(before: tuple[Vote, ...], after: tuple[Vote, ...]) -> int | None:
    """len(before) when ``before`` is a prefix of ``after`` (a block appends its vote), else None."""
    if len(before) > len(after) or not all(_same_vote(a, b) for a, b in zip(before, after, strict=False)):
        return None
    return len(before)


def _same_contract(a: Contract | None, b: Contract | None) -> bool:
    return a is b or (a is not None and b is not None and a.digest == b.digest)


def _encode_vote(vote: Vote) -> list[Any]:
    return [_f32(vote.vector), vote.ran, list(vote.counted)]


def _decode_vote(value: list[Any]) -> Vote:
    vector, ran, counted = value
    return Vote(_from_f32(vector), bool(ran), tuple(bytes(c) for c in counted))


def _task_diff(before: TaskState, after: TaskState) -> list[Any]:
    """What an undo record keeps of a task the block changed from ``before`` to ``after`` (:func:`_task_back`)."""
    same_model = (
        before.params_digest == after.params_digest
        and before.last_aggregate_digest == after.last_aggregate_digest
        and before.model_version == after.model_version
    )
    kept = _kept_votes(tuple(before.votes), tuple(after.votes))
    return [
        None if same_model else [_f32(before.params), _f32(before.last_aggregate), before.model_version],
        [[a, None, None] if s is None else [a, s.amount, s.since] for a, s in _before(before.stakes, after.stakes)],
        [[a, None, None] if u is None else [a, u.amount, u.release]
         for a, u in _before(before.unbonding, after.unbonding)],
        [[r, a, None, None] if c is None else [r, a, list(c.hashes), list(c.revealed)]
         for (r, a), c in _before(before.commitments, after.commitments)],
        [_encode_vote(v) for v in before.votes] if kept is None else kept,
        [[d, None, None] if v is None else [d, v[0], v[1]] for d, v in _before(before.reveals, after.reveals)],
        _UNCHANGED if _same_contract(before.contract, after.contract)
        else [_encode_contract(before.contract, rows=False)],
    ]


def _task_back(after: TaskState, diff: list[Any]) -> TaskState:
    """The task's state before the block, from its state ``after`` and :func:`_task_diff`'s record."""
    model, stakes, unbonding, commitments, votes, reveals, contract = diff
    if model is None:
        params, last, version = after.params, after.last_aggregate, after.model_version
        digests: tuple[bytes, bytes] | None = (after.params_digest, after.last_aggregate_digest)
    else:
        params, last, version, digests = _from_f32(model[0]), _from_f32(model[1]), model[2], None
    return TaskState(
        params=params,
        last_aggregate=last,
        model_version=version,
        stakes=_reverted(after.stakes, [
            (bytes(a), None if n is None else Stake(n, since)) for a, n, since in stakes
        ]),
        unbonding=_reverted(after.unbonding, [
            (bytes(a), None if n is None else Unbonding(n, release)) for a, n, release in unbonding
        ]),
        commitments=_reverted(after.commitments, [
            ((r, bytes(a)), None if hashes is None
             else Commitment(tuple(bytes(h) for h in hashes), tuple(bool(x) for x in revealed)))
            for r, a, hashes, revealed in commitments
        ]),
        votes=tuple(after.votes[:votes]) if isinstance(votes, int) else tuple(_decode_vote(v) for v in votes),
        reveals=_reverted(after.reveals, [
            (bytes(d), None if r is None else (r, bytes(sender))) for d, r, sender in reveals
        ]),
        contract=after.contract if contract == _UNCHANGED else _decode_contract(contract[0]),
        model_digests=digests,
    )


Verdicts = list[tuple[bytes, bool | None]]  # each update's sender and whether the block's rule counted it


def encode_undo(undo: Undo, after: State | None = None, verdicts: Sequence[tuple[bytes, bool | None]] = ()) -> bytes:
    """An undo record; with ``after`` (the state the block left) it keeps only what the block changed.

    Evaluation rows are never kept: they are the task's current state's
    (:func:`consensus.transition.undo_block` takes them from there). The
    record also keeps the block's ``verdicts`` for the API (:meth:`Storage.get_outcomes`).
    """
    accounts = [
        [address, None, None] if acc is None else [address, acc.balance, acc.nonce]
        for address, acc in sorted(undo.accounts_before.items())
    ]
    tasks = []
    for task_id, before in undo.tasks_before.items():  # genesis task first
        now = None if after is None else after.tasks.get(task_id)
        if now is None:
            tasks.append([task_id, _FULL, encode_task_state(before, rows=False)])
        else:
            tasks.append([task_id, _DIFF, _task_diff(before, now)])
    out = undo.outcome
    raw: bytes = msgpack.packb(
        [
            accounts,
            tasks,
            list(undo.created),
            [
                list(out.counted),
                list(out.clones),
                out.vote_ran,
                None if out.round_counted is None else list(out.round_counted),
                out.gated,
                list(out.ran),
            ],
            [[sender, accepted] for sender, accepted in verdicts],
        ],
        use_bin_type=True,
    )
    return raw


def _decode_outcome(value: list[Any]) -> Outcome:
    counted, clones, vote_ran, round_counted, gated = value[:5]
    ran = value[5] if len(value) > 5 else []  # a record stored before per-task verdicts
    return Outcome(
        counted=tuple(bool(c) for c in counted),
        clones=tuple(bool(c) for c in clones),
        vote_ran=bool(vote_ran),
        round_counted=None if round_counted is None else tuple(bool(c) for c in round_counted),
        gated=bool(gated),
        ran=tuple(bool(r) for r in ran),
    )


def decode_undo(raw: bytes, after: State | None = None) -> Undo:
    """The undo record :func:`encode_undo` wrote; ``after`` must be the state the block left when it
    was written with one (a ``ValueError`` otherwise)."""
    accounts, tasks, created, outcome, _ = msgpack.unpackb(raw, raw=False)
    tasks_before: dict[bytes, TaskState] = {}
    for task_id, mode, data in tasks:
        task_id = bytes(task_id)
        if mode == _FULL:
            tasks_before[task_id] = decode_task_state(bytes(data))
            continue
        now = None if after is None else after.tasks.get(task_id)
        if now is None:
            raise ValueError("this undo record keeps only what its block changed: it needs the state after the block")
        tasks_before[task_id] = _task_back(now, data)
    return Undo(
        accounts_before={
            bytes(a): (None if bal is None else Account(bal, nonce)) for a, bal, nonce in accounts
        },
        tasks_before=tasks_before,
        created=tuple(bytes(task_id) for task_id in created),
        outcome=_decode_outcome(outcome),
    )


def undo_model(raw: bytes, task_id: bytes) -> tuple[np.ndarray, int] | None:
    """The model (parameters, version) of ``task_id`` before the block whose undo record is ``raw``,
    or None when the block left that model as it was."""
    _, tasks, _, _, _ = msgpack.unpackb(raw, raw=False)
    for tid, mode, data in tasks:
        if bytes(tid) != task_id:
            continue
        if mode == _FULL:
            before = decode_task_state(bytes(data))
            return before.params, before.model_version
        model = data[0]
        return None if model is None else (_from_f32(model[0]), int(model[2]))
    return None


def undo_outcome(raw: bytes) -> Outcome:
    """Only what the block's rules decided (:class:`consensus.transition.Outcome`) of an undo record."""
    return _decode_outcome(msgpack.unpackb(raw, raw=False)[3])


class Storage:
    """The one place that reads and writes the datadir's database."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute(META)
        try:
            self._check_schema()  # before any table of ours is created in an older file
        except StorageError:
            self.db.close()
            raise
        self.db.executescript(SCHEMA)
        self._depth = 0

    def _check_schema(self) -> None:
        """Mark a new file with our schema; refuse one this code cannot read, saying what to do."""
        raw = self.get_meta("schema_version")
        if raw is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION).encode())
            return
        version = int(raw)
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path} was written by a newer gradchain (schema {version}); upgrade gradchain")
        if version in REINDEX_SCHEMAS:
            raise StorageError(
                f"{self.path} keeps its chain in an older storage layout (schema {version}); run "
                f"`gradchain chain reindex --datadir {self.path.parent}` once to rebuild it from its blocks"
            )
        if version < SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} holds a chain of an older gradchain (schema {version}), whose rules this "
                "one does not run (rounds, bonds and commit-reveal were a hard fork); start a new "
                "datadir (make testnet FRESH=1) or use the gradchain that wrote it"
            )

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

    def put_undo(self, block_hash: bytes, undo: Undo, after: State, verdicts: Verdicts) -> None:
        """Store the undo data of the block that left ``after`` (only what it changed: :func:`encode_undo`),
        with each of its updates' sender and verdict (None: too few updates for the rule to run)."""
        self.db.execute(
            "INSERT OR REPLACE INTO undo(hash, data) VALUES (?, ?)",
            (block_hash, encode_undo(undo, after, verdicts)),
        )

    def _undo_record(self, block_hash: bytes) -> bytes | None:
        row = self.db.execute("SELECT data FROM undo WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_undo(self, block_hash: bytes, after: State) -> Undo | None:
        """The undo data of the block that left ``after`` (the main chain's tip state when it is disconnected)."""
        raw = self._undo_record(block_hash)
        return None if raw is None else decode_undo(raw, after)

    def get_undo_outcome(self, block_hash: bytes) -> Outcome | None:
        """What a connected block's rules decided (its undo record's :class:`Outcome`), or None."""
        raw = self._undo_record(block_hash)
        return None if raw is None else undo_outcome(raw)

    def model_at(self, task_id: bytes, height: int, tip: int) -> tuple[np.ndarray, int] | None:
        """``task_id``'s model (parameters, version) at main-chain ``height`` below ``tip``: the one
        before the first later block that moved it, whose undo record keeps it; None when no block
        up to the tip did (the tip state's model is it). One ordered scan of the undo records."""
        rows = self.db.execute(
            "SELECT m.height, u.data FROM main_chain m LEFT JOIN undo u ON u.hash = m.hash"
            " WHERE m.height > ? AND m.height <= ? ORDER BY m.height",
            (height, tip),
        )
        for later, raw in rows:
            if raw is None:
                raise StorageError(f"undo data for height {later} is missing; run `chain verify`")
            model = undo_model(bytes(raw), task_id)
            if model is not None:
                return model
        return None

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
    def write_state(self, state: State, changed: set[bytes], before: State | None = None) -> None:
        """Persist ``state`` over ``before``, the state stored now (None: nothing stored yet).

        Writes the accounts in ``changed``, the tip row, and of each task only
        the rows whose keys differ from ``before``'s: a block's vote, the
        commitments and reveals it changed, and the model only when it moved.
        """
        accounts = [(address, state.accounts.get(address)) for address in sorted(changed)]
        self.db.executemany("DELETE FROM accounts WHERE address = ?", [(a,) for a, acc in accounts if acc is None])
        self.db.executemany(
            "INSERT OR REPLACE INTO accounts(address, balance, nonce) VALUES (?, ?, ?)",
            [(a, acc.balance, acc.nonce) for a, acc in accounts if acc is not None],
        )
        old_tasks: Mapping[bytes, TaskState] = {} if before is None else before.tasks
        for task_id in old_tasks:
            if task_id not in state.tasks:  # deployed by a disconnected block
                self._delete_task(task_id)
        reordered = list(old_tasks) != list(state.tasks)[: len(old_tasks)]
        for position, (task_id, task) in enumerate(state.tasks.items()):
            old = old_tasks.get(task_id)
            if old is None:
                self._delete_task(task_id)
                self._write_task(task_id, position, task, _EMPTY_TASK)
            elif old is not task or reordered:
                self._write_task(task_id, position, task, old, moved=reordered)
        self.db.execute(
            "INSERT OR REPLACE INTO tip_state(id, height, root) VALUES (1, ?, ?)", (state.height, state.root)
        )

    def _delete_task(self, task_id: bytes) -> None:
        for table in _TASK_TABLES:
            self.db.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))  # noqa: S608 (fixed names)

    def _write_task(self, task_id: bytes, position: int, task: TaskState, old: TaskState, *, moved: bool = False) -> None:
        """Write the rows of ``task`` that differ from ``old`` (the stored state of the same task)."""
        if (moved or old is _EMPTY_TASK or task.params_digest != old.params_digest
                or task.last_aggregate_digest != old.last_aggregate_digest
                or task.model_version != old.model_version or not _same_contract(task.contract, old.contract)):
            contract = _encode_contract(task.contract, rows=True)
            self.db.execute(
                "INSERT OR REPLACE INTO task_model(task_id, position, params, last_aggregate, version, contract)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, position, _f32(task.params), _f32(task.last_aggregate), task.model_version,
                 None if contract is None else msgpack.packb(contract, use_bin_type=True)),
            )
        self._write_keys("task_stakes", "address", "amount, since", task_id, old.stakes, task.stakes,
                         lambda a, s: (a, s.amount, s.since))
        self._write_keys("task_unbonding", "address", "amount, release", task_id, old.unbonding, task.unbonding,
                         lambda a, u: (a, u.amount, u.release))
        self._write_keys("task_commitments", "round, address", "hashes, revealed", task_id, old.commitments,
                         task.commitments,
                         lambda k, c: (*k, msgpack.packb(list(c.hashes), use_bin_type=True), bytes(c.revealed)))
        self._write_keys("task_reveals", "round, content", "sender", task_id, old.reveals, task.reveals,
                         lambda d, v: (v[0], d, v[1]))
        kept = _kept_votes(tuple(old.votes), tuple(task.votes)) or 0
        if kept < len(old.votes):
            self.db.execute("DELETE FROM task_votes WHERE task_id = ? AND idx >= ?", (task_id, kept))
        if kept < len(task.votes):
            self.db.executemany(
                "INSERT INTO task_votes(task_id, idx, vector, ran, counted) VALUES (?, ?, ?, ?, ?)",
                [(task_id, i, _f32(v.vector), int(v.ran), msgpack.packb(list(v.counted), use_bin_type=True))
                 for i, v in enumerate(task.votes) if i >= kept],
            )

    def _write_keys(self, table: str, keys: str, columns: str, task_id: bytes, old: Mapping[Any, Any],
                    new: Mapping[Any, Any], row: Callable[[Any, Any], tuple[Any, ...]]) -> None:
        """Make ``table``'s rows of ``task_id`` go from map ``old`` to map ``new``: only the keys that changed."""
        changed = _changed_keys(old, new)
        if not changed:
            return
        names = ("task_id", *keys.split(", "))
        width = len(names) - 1
        gone, rows = [], []
        for k in changed:
            now = row(k, new[k]) if k in new else None
            if k in old:
                was = row(k, old[k])[:width]
                if now is None or now[:width] != was:  # a row whose primary key moves is deleted first
                    gone.append((task_id, *was))
            if now is not None:
                rows.append((task_id, *now))
        if gone:
            where = " AND ".join(f"{name} = ?" for name in names)
            self.db.executemany(f"DELETE FROM {table} WHERE {where}", gone)  # noqa: S608 (our own table names)
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            self.db.executemany(
                f"INSERT OR REPLACE INTO {table}({', '.join(names)}, {columns}) VALUES ({marks})", rows  # noqa: S608
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
            bytes(task_id): self._load_task(bytes(task_id), bytes(params), bytes(last), version, contract)
            for task_id, params, last, version, contract in self.db.execute(
                "SELECT task_id, params, last_aggregate, version, contract FROM task_model ORDER BY position"
            )
        }
        state = State(height=height, accounts=accounts, tasks=tasks)
        if state.root != bytes(root):
            raise StorageError(f"{self.path}: stored state does not match its root; run `chain verify`")
        return state

    def _load_task(self, task_id: bytes, params: bytes, last: bytes, version: int, contract: bytes | None) -> TaskState:
        def rows(sql: str) -> list[Any]:
            return self.db.execute(sql, (task_id,)).fetchall()

        return TaskState(
            params=_from_f32(params),
            last_aggregate=_from_f32(last),
            model_version=version,
            stakes={bytes(a): Stake(n, since) for a, n, since in rows(
                "SELECT address, amount, since FROM task_stakes WHERE task_id = ? ORDER BY address")},
            unbonding={bytes(a): Unbonding(n, release) for a, n, release in rows(
                "SELECT address, amount, release FROM task_unbonding WHERE task_id = ? ORDER BY address")},
            commitments={
                (r, bytes(a)): Commitment(tuple(bytes(h) for h in msgpack.unpackb(hashes, raw=False)),
                                          tuple(bool(x) for x in bytes(revealed)))
                for r, a, hashes, revealed in rows(
                    "SELECT round, address, hashes, revealed FROM task_commitments WHERE task_id = ?"
                    " ORDER BY round, address")
            },
            votes=tuple(
                Vote(_from_f32(bytes(vector)), bool(ran), tuple(bytes(c) for c in msgpack.unpackb(counted, raw=False)))
                for vector, ran, counted in rows(
                    "SELECT vector, ran, counted FROM task_votes WHERE task_id = ? ORDER BY idx")
            ),
            reveals={bytes(d): (r, bytes(sender)) for d, r, sender in rows(
                "SELECT content, round, sender FROM task_reveals WHERE task_id = ? ORDER BY content")},
            contract=None if contract is None else _decode_contract(msgpack.unpackb(contract, raw=False)),
        )

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

    def get_outcomes(self, block_hash: bytes) -> Verdicts:
        """Each update's sender and verdict, in block order, as the block's rule decided when it was
        connected (kept with its undo data; empty for a block never connected)."""
        raw = self._undo_record(block_hash)
        if raw is None:
            return []
        return [(bytes(s), None if a is None else bool(a)) for s, a in msgpack.unpackb(raw, raw=False)[4]]


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
                    if height > 0 and self.get_undo_outcome(block_hash) is None:
                        raise ValueError("undo data missing")
                except (BlockRejected, ValueError) as exc:
                    problems.append(f"main-chain block {height}: {exc}")
            state = self.load_state()  # raises when the state does not match its root
            if state is None or state.height != len(main) - 1:
                problems.append(f"tip state is not at the tip height {len(main) - 1}")
            return problems
        except (sqlite3.DatabaseError, StorageError, ValueError, TypeError) as exc:
            return [f"unreadable: {exc}"]
