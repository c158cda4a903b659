"""The chain state of a node: block index, active chain, tip state, reorgs.

This is the one place that connects and disconnects blocks. Consensus rules
come from ``consensus/`` as pure functions; this module feeds them values,
chooses the branch with the most cumulative work, and writes each change to
storage in one transaction, so a failure in the middle of a reorg (an invalid
block, a crash) leaves the old tip intact.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from consensus import header as header_codec
from consensus.block import Block, decode_block
from consensus.errors import BlockRejected, Reject
from consensus.genesis import chain_params_for, make_genesis, task_of_genesis
from consensus.header import Header, hash_hex
from consensus.params import ChainParams, get_params
from consensus.pow import check_proof_of_work, next_anchor_time, work
from consensus.state import State
from consensus.transition import Undo, state_transition, undo_block, validate_block
from consensus.tx import GradientUpdate
from consensus.validation import earliest_time, validate_header
from consensus.view import BranchView, ChainRules, ChainView
from ml.datasets import load_gate_set
from ml.tasks import TaskSpec
from node.limits import ANTI_DOS_WORK_BLOCKS, MAX_LOCATOR_HASHES
from node.storage import BlockStatus, IndexRow, Storage, StorageError, VoteStatus

log = logging.getLogger("gradchain.chain")

DB_NAME = "chain.sqlite"
LOW_WORK = "low-work"  # Connected.status of a block on a branch too far below the tip's work to store


def min_branch_work(tip_work: int, tip_bits: int) -> int:
    """The chain work a branch needs before a node stores its headers or blocks.

    Within ``ANTI_DOS_WORK_BLOCKS`` blocks' work of the tip (Bitcoin Core's
    anti-DoS threshold; headers-first sync and block intake both apply it):
    a fork from deep in the past may be mined at the proof-of-work limit (its
    old schedule is far behind), so storing it would cost an attacker almost
    nothing per block and us a block body each.
    """
    return tip_work - ANTI_DOS_WORK_BLOCKS * work(tip_bits)


def chain_rules(network: ChainParams, task: TaskSpec, genesis_hash: bytes | None = None) -> ChainRules:
    """The rules of ``task``'s chain on ``network``, with the data they read loaded from disk.

    The one place the node turns a genesis into consensus inputs: the
    network's parameters with the task's block time, the task, the genesis
    hash every signature binds (default: the genesis of this network and
    task), and its committed validation set when the useful-update gate is
    on (a ``ValueError`` if this node's copy of the data does not match).
    """
    params = chain_params_for(network, task)
    if genesis_hash is None:
        genesis_hash = make_genesis(params, task)[0].hash
    gate_set = load_gate_set(task) if task.gate_examples > 0 else None
    return ChainRules(params, task, genesis_hash, gate_set)


@dataclass
class IndexEntry:
    """What the node knows about one header, on any branch."""

    hash: bytes
    header: Header
    height: int
    chain_work: int
    status: int
    anchor: int | None = None  # the ASERT anchor after this block (consensus.pow.next_anchor_time)

    @property
    def prev(self) -> bytes:
        return self.header.prev

    def row(self) -> IndexRow:
        return IndexRow(
            self.hash, self.header.prev, self.height, self.chain_work, header_codec.encode(self.header), self.status
        )


@dataclass
class Connected:
    """The outcome of accepting a block."""

    block_hash: bytes
    height: int
    status: str  # "connected", "reorg", "side", "duplicate", LOW_WORK (neither stored nor an error)
    disconnected: list[Block] = field(default_factory=list)
    connected: list[Block] = field(default_factory=list)


class ChainState:
    """A node's chain: open one per datadir with :meth:`open` or :meth:`create`."""

    def __init__(self, storage: Storage, network: ChainParams, genesis: Block, task: TaskSpec) -> None:
        self.storage = storage
        self.network = network
        self.task = task
        self.rules = chain_rules(network, task, genesis.hash)
        self.params = self.rules.params
        self.genesis = genesis
        self.chain_id = network.chain_id
        self.index: dict[bytes, IndexEntry] = {}
        for row in storage.load_index():
            self.index[row.hash] = IndexEntry(
                row.hash, header_codec.decode(row.header), row.height, row.chain_work, row.status
            )
        self.children: dict[bytes, list[bytes]] = {}
        for entry in sorted(self.index.values(), key=lambda e: e.height):
            if entry.height > 0:
                self.children.setdefault(entry.prev, []).append(entry.hash)
                parent_anchor = self.index[entry.prev].anchor
                entry.anchor = next_anchor_time(self.params, parent_anchor, entry.height, entry.header.time)
        self.main: list[bytes] = storage.main_chain()
        state = storage.load_state()
        if state is None or not self.main:
            raise StorageError(f"{storage.path}: no chain here; run `gradchain chain init` first")
        self.state: State = state
        if state.height != len(self.main) - 1:
            raise StorageError(f"{storage.path}: state height {state.height} != tip height {len(self.main) - 1}")
        self.best_header = self._find_best_header()

    def _find_best_header(self) -> IndexEntry:
        valid = (e for e in self.index.values() if e.status != BlockStatus.INVALID)
        return max(valid, key=lambda e: (e.chain_work, -e.height))

    # -- opening --------------------------------------------------------------------
    @classmethod
    def create(cls, datadir: pathlib.Path, network: str, task: TaskSpec) -> ChainState:
        """Initialise ``datadir`` with the genesis block of ``network`` and ``task``."""
        datadir.mkdir(parents=True, exist_ok=True)
        path = datadir / DB_NAME
        if path.exists():
            raise StorageError(f"{datadir} already holds a chain; use another --datadir")
        params = get_params(network)
        genesis, state = make_genesis(chain_params_for(params, task), task)
        storage = Storage(path)
        with storage.transaction():
            storage.set_meta("network", network.encode())
            storage.set_meta("genesis", genesis.encode())
            entry = IndexEntry(genesis.hash, genesis.header, 0, work(genesis.header.bits), BlockStatus.VALID)
            storage.put_index(entry.row())
            storage.put_body(genesis.hash, genesis.encode())
            storage.set_main(0, genesis.hash)
            storage.write_state(state, set())
        return cls(storage, params, genesis, task)

    @classmethod
    def open(cls, datadir: pathlib.Path, *, repair: bool = True) -> ChainState:
        """Open ``datadir``'s chain; ``repair`` rebuilds a damaged database first (node/reindex.py)."""
        path = datadir / DB_NAME
        if not path.exists():
            raise StorageError(f"no chain in {datadir}; run `gradchain chain init --datadir {datadir}` first")
        from node.reindex import repair_if_damaged

        if repair:
            repair_if_damaged(datadir, DB_NAME)
        storage = Storage(path)
        network = storage.get_meta("network")
        raw_genesis = storage.get_meta("genesis")
        if network is None or raw_genesis is None:
            raise StorageError(f"{path} is incomplete; remove it and run `gradchain chain init` again")
        genesis = decode_block(raw_genesis)
        return cls(storage, get_params(network.decode()), genesis, task_of_genesis(genesis))

    def close(self) -> None:
        self.storage.close()

    # -- queries --------------------------------------------------------------------
    @property
    def height(self) -> int:
        return len(self.main) - 1

    @property
    def tip(self) -> IndexEntry:
        return self.index[self.main[-1]]

    @property
    def genesis_hash(self) -> bytes:
        return self.genesis.hash

    @property
    def signing_tag(self) -> bytes:
        """What a transaction for this chain is signed over besides its fields (:func:`consensus.tx.chain_tag`)."""
        return self.rules.tag

    def hash_at(self, height: int) -> bytes | None:
        return self.main[height] if 0 <= height < len(self.main) else None

    def get_block(self, block_hash: bytes) -> Block | None:
        raw = self.storage.get_body(block_hash)
        return None if raw is None else decode_block(raw)

    def get_raw_block(self, block_hash: bytes) -> bytes | None:
        return self.storage.get_body(block_hash)

    def has_block(self, block_hash: bytes) -> bool:
        entry = self.index.get(block_hash)
        return entry is not None and entry.status in (BlockStatus.BODY, BlockStatus.VALID)

    def is_main(self, block_hash: bytes) -> bool:
        entry = self.index.get(block_hash)
        return entry is not None and self.hash_at(entry.height) == block_hash

    def model_at(self, height: int, task_id: bytes | None = None) -> tuple[np.ndarray, int]:
        """The model parameters and version of task ``task_id`` (default: the genesis task)
        committed at ``height`` on the main chain.

        Raises
        ------
        ValueError
            If ``height`` is not on the main chain, or the task was not deployed yet at ``height``.
        """
        if not 0 <= height <= self.height:
            raise ValueError(f"height {height} is not in 0..{self.height}")
        now = self.state.task if task_id is None else self.state.tasks.get(task_id)
        if now is None:
            raise ValueError("no such task on this chain")
        contract = now.contract
        if contract is not None and height < contract.deployed_at:
            raise ValueError(f"the task was not deployed yet at height {height}")
        if height == self.height or (contract is not None and not contract.open and height >= contract.moved_at):
            return now.params, now.model_version  # a closed task's model stays as its last step left it
        # The model at ``height`` is the one before the first later block that moved it (its undo
        # record keeps it), or the tip's if none did: a walk of at most a round for a task that trains.
        wanted = next(iter(self.state.tasks)) if task_id is None else task_id
        model = self.storage.model_at(wanted, height, self.height)
        return (now.params, now.model_version) if model is None else model

    def vote_status(self, block_hash: bytes) -> str:
        """What the round made of a main-chain block's vote: a :class:`node.storage.VoteStatus`, or
        ``"open"`` while its round is still running."""
        return self.storage.get_vote_outcome(block_hash) or "open"

    def locator(self) -> list[bytes]:
        """Block locator: dense near the tip, then exponentially sparser, then genesis."""
        hashes: list[bytes] = []
        step, height = 1, self.height
        while height > 0 and len(hashes) < MAX_LOCATOR_HASHES - 1:
            hashes.append(self.main[height])
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self.main[0])
        return hashes

    def headers_after(self, locator: Iterable[bytes], limit: int) -> list[Header]:
        """Main-chain headers after the first locator hash we have on our main chain."""
        start = 0
        for block_hash in locator:
            if self.is_main(block_hash):
                start = self.index[block_hash].height
                break
        return [self.index[h].header for h in self.main[start + 1 : start + 1 + limit]]

    def view_of(self, parent: IndexEntry) -> ChainView:
        """The branch from genesis to ``parent``, which a block on ``parent`` extends.

        O(1) to build, on the main chain or off it: a side branch is read
        from the index on demand (validation reads the last few headers and
        the anchor kept per entry), never copied.
        """
        if self.is_main(parent.hash):
            return BranchView(self.rules, parent.height, self.main, self._header_of, parent.anchor)
        return _IndexBranch(self.rules, parent, self.index, self.main)

    def tip_view(self) -> BranchView:
        """The main chain, which the next block on the tip extends."""
        return BranchView(self.rules, self.height, self.main, self._header_of, self.tip.anchor)

    def _header_of(self, block_hash: bytes) -> Header:
        return self.index[block_hash].header

    def min_next_time(self) -> int:
        """The smallest time a block on the current tip may carry."""
        return earliest_time(self.tip_view())

    # -- accepting headers and blocks --------------------------------------------------
    def accept_header(self, header: Header, now: int) -> IndexEntry:
        """Validate ``header`` against its parent and add it to the index."""
        block_hash = header_codec.header_hash(header)
        known = self.index.get(block_hash)
        if known is not None:
            if known.status == BlockStatus.INVALID:
                raise BlockRejected(Reject.BAD_PREV, f"block {hash_hex(block_hash)[:16]} is known invalid")
            return known
        parent = self.index.get(header.prev)
        if parent is None:
            raise BlockRejected(Reject.UNKNOWN_PARENT, f"parent {hash_hex(header.prev)[:16]} unknown")
        if parent.status == BlockStatus.INVALID:
            raise BlockRejected(Reject.BAD_PREV, "the parent block is invalid")
        validate_header(self.view_of(parent), header, now)
        height = parent.height + 1
        entry = IndexEntry(
            block_hash, header, height, parent.chain_work + work(header.bits), BlockStatus.HEADER,
            next_anchor_time(self.params, parent.anchor, height, header.time),
        )
        self.index[block_hash] = entry
        self.children.setdefault(header.prev, []).append(block_hash)
        if entry.chain_work > self.best_header.chain_work:
            self.best_header = entry
        with self.storage.transaction():
            self.storage.put_index(entry.row())
        return entry

    def min_branch_work(self) -> int:
        """The chain work a branch needs before this node stores its blocks (:func:`min_branch_work`)."""
        return min_branch_work(self.tip.chain_work, self.tip.header.bits)

    def screen(self, header: Header) -> Connected | None:
        """The cheap checks on a block's header, before its body is decoded or stored.

        Returns the outcome when the body is not needed at all: ``duplicate``
        (we hold it) or :data:`LOW_WORK` (its branch is below
        :meth:`min_branch_work`: ignored, not punished, since an honest
        peer on a minority fork announces such blocks). Returns None when the
        body must be read. Raises ``BlockRejected`` for a header that is
        known invalid, misses its own proof of work (checked before its
        parent, so an orphan costs its maker that work), or extends an
        invalid or unknown parent (``UNKNOWN_PARENT``: an orphan is never
        decoded). A header that sync already stored passed the work
        test with its branch and is not tested again.
        """
        block_hash = header_codec.header_hash(header)
        known = self.index.get(block_hash)
        if known is not None:
            if known.status in (BlockStatus.BODY, BlockStatus.VALID):
                return Connected(block_hash, known.height, "duplicate")
            if known.status == BlockStatus.INVALID:
                raise BlockRejected(Reject.BAD_PREV, f"block {hash_hex(block_hash)[:16]} is known invalid")
            return None
        check_proof_of_work(block_hash, header.bits, self.params)  # first: an orphan is not free to make
        parent = self.index.get(header.prev)
        if parent is None:
            raise BlockRejected(Reject.UNKNOWN_PARENT, f"parent {hash_hex(header.prev)[:16]} unknown")
        if parent.status == BlockStatus.INVALID:
            raise BlockRejected(Reject.BAD_PREV, "the parent block is invalid")
        if parent.chain_work + work(header.bits) < self.min_branch_work():
            return Connected(block_hash, parent.height + 1, LOW_WORK)
        return None

    def accept_block(self, block: Block, now: int) -> Connected:
        """Store ``block`` and, if it makes the most-work chain, connect it.

        Raises ``BlockRejected`` with the rule the block broke; the node's data
        is then unchanged apart from remembering the block as invalid. Its
        header, body and connection are written in one storage group: one
        disk sync per block instead of one per step. A duplicate or a block
        on a branch of too little work is not stored (:meth:`screen`).
        """
        block_hash = block.hash
        screened = self.screen(block.header)
        if screened is not None:
            return screened
        with self.storage.group():
            entry = self.accept_header(block.header, now)
            try:
                validate_block(self.rules, block, entry.height)
            except BlockRejected as exc:
                if exc.code in (Reject.BAD_TX_ROOT,):
                    # The body does not match the header: the header may still be fine.
                    raise
                self._mark_invalid(entry)
                raise
            entry.status = BlockStatus.BODY
            with self.storage.transaction():
                self.storage.put_body(block_hash, block.encode())
                self.storage.put_index(entry.row())
            best = self._best_stored_descendant(entry)
            if best.chain_work <= self.tip.chain_work:
                return Connected(block_hash, entry.height, "side")
            if best is entry:
                result = self._activate(entry, block, now)
            else:
                # This body completes a branch whose later bodies came first (a block
                # announced before sync fetched its ancestors): connect up to the best.
                body = self.get_block(best.hash)
                assert body is not None
                try:
                    result = self._activate(best, body, now)
                except BlockRejected:
                    if entry.status == BlockStatus.INVALID:
                        raise  # the block we were given is itself at fault
                    return Connected(block_hash, entry.height, "side")  # a descendant was
            # Bodies that arrived before this one (out of order) can connect now.
            while result.status in ("connected", "reorg"):
                waiting = [
                    self.index[h] for h in self.children.get(self.tip.hash, ())
                    if self.index[h].status == BlockStatus.BODY
                ]
                if not waiting:
                    break
                child = max(waiting, key=lambda e: e.chain_work)
                body = self.get_block(child.hash)
                assert body is not None
                try:
                    more = self._activate(child, body, now)
                except BlockRejected:  # the child is now marked invalid; our block stands
                    break
                if more.status not in ("connected", "reorg"):
                    break
                result = Connected(
                    more.block_hash, more.height, result.status,
                    result.disconnected + more.disconnected, result.connected + more.connected,
                )
            return result

    def _best_stored_descendant(self, entry: IndexEntry) -> IndexEntry:
        """The most-work block at or above ``entry`` reachable through stored bodies only."""
        best, stack = entry, [entry]
        while stack:
            item = stack.pop()
            if item.chain_work > best.chain_work:
                best = item
            stack.extend(
                child for child in (self.index[h] for h in self.children.get(item.hash, ()))
                if child.status in (BlockStatus.BODY, BlockStatus.VALID)
            )
        return best

    def _mark_invalid(self, entry: IndexEntry) -> None:
        """Remember ``entry`` and every descendant we know as invalid."""
        stack = [entry]
        with self.storage.transaction():
            while stack:
                item = stack.pop()
                item.status = BlockStatus.INVALID
                self.storage.set_status(item.hash, BlockStatus.INVALID)
                stack.extend(self.index[h] for h in self.children.get(item.hash, ()))
        self.best_header = self._find_best_header()

    def header_locator(self) -> list[bytes]:
        """A locator from the best header we know (for headers-first sync)."""
        hashes: list[bytes] = []
        entry = self.best_header
        step = 1
        while len(hashes) < MAX_LOCATOR_HASHES - 1 and entry.height > 0:
            hashes.append(entry.hash)
            if len(hashes) >= 10:
                step *= 2
            target = max(0, entry.height - step)
            if self.is_main(entry.hash):
                entry = self.index[self.main[target]]
                continue
            while entry.height > target:
                entry = self.index[entry.prev]
        hashes.append(self.main[0])
        return hashes

    def missing_bodies(self, limit: int) -> list[bytes]:
        """Hashes on the best-header branch whose bodies we lack, lowest first."""
        branch: list[IndexEntry] = []
        entry = self.best_header
        while not self.is_main(entry.hash):
            branch.append(entry)
            entry = self.index[entry.prev]
        branch.reverse()
        return [e.hash for e in branch if e.status == BlockStatus.HEADER][:limit]

    def _branch_to(self, entry: IndexEntry) -> tuple[int, list[IndexEntry]]:
        """The fork height with the main chain and the branch's entries above it."""
        branch: list[IndexEntry] = []
        cursor = entry
        while not self.is_main(cursor.hash):
            branch.append(cursor)
            cursor = self.index[cursor.prev]
        branch.reverse()
        return cursor.height, branch

    def _round_verdicts(self, chain: list[bytes], height: int, undo: Undo) -> list[tuple[bytes, str]]:
        """The vote status of each block of the round the block at ``height`` (on ``chain``) closed."""
        assert undo.outcome.round_counted is not None
        width = len(undo.outcome.round_counted)
        blocks = chain[height - width + 1 : height + 1]
        votes = [*undo.tasks_before[self.rules.task_id].votes]
        ran = [v.ran for v in votes] + [undo.outcome.vote_ran]
        verdicts = []
        for block_hash, counted, vote_ran in zip(blocks, undo.outcome.round_counted, ran, strict=True):
            if not vote_ran:
                status = VoteStatus.ZERO
            elif undo.outcome.gated:
                status = VoteStatus.GATED
            else:
                status = VoteStatus.COUNTED if counted else VoteStatus.REJECTED
            verdicts.append((block_hash, status))
        return verdicts

    def _activate(self, entry: IndexEntry, new_block: Block, now: int) -> Connected:
        """Make ``entry`` the tip: disconnect to the fork, connect the branch."""
        fork_height, branch = self._branch_to(entry)
        for item in branch:
            if item.status == BlockStatus.INVALID:
                # An ancestor failed when another descendant tried to connect it.
                self._mark_invalid(entry)
                raise BlockRejected(Reject.BAD_PREV, f"block {item.height} on this branch is invalid")
            if item.status not in (BlockStatus.BODY, BlockStatus.VALID):
                # A body on the branch is missing: wait until sync brings it.
                return Connected(entry.hash, entry.height, "side")
        tip_height = self.height
        # Extending the tip (the usual case) appends to the main chain in place, not to a copy of
        # it (O(height) a block); a failure cuts it back to the old tip.
        chain = self.main if fork_height == tip_height else list(self.main)
        try:
            state = self.state
            disconnected: list[Block] = []
            # Every account a block changed, from its undo data: its transactions' and its payouts', and
            # those whose unbonded coins it returned (no transaction of theirs names them).
            touched: set[bytes] = set()
            for height in range(tip_height, fork_height, -1):
                block_hash = chain[height]
                undo = self.storage.get_undo(block_hash, state)
                block = self.get_block(block_hash)
                if undo is None or block is None:
                    raise StorageError(f"undo data for block {height} is missing; run `chain verify`")
                state = undo_block(state, undo)
                disconnected.append(block)
                chain.pop()
                touched.update(undo.accounts_before)
            connected: list[tuple[Block, State, Undo, IndexEntry]] = []
            for item in branch:
                block = new_block if item.hash == entry.hash else self.get_block(item.hash)
                assert block is not None
                try:
                    parent_anchor = self.index[item.prev].anchor
                    view = BranchView(self.rules, item.height - 1, chain, self._header_of, parent_anchor)
                    new_state, undo = state_transition(view, state, block, now)
                except BlockRejected as exc:
                    # The block and everything built on it can never connect.
                    for invalid in branch[branch.index(item) :]:
                        self._mark_invalid(invalid)
                    log.warning(
                        "rejected block %d %s…: %s", item.height, hash_hex(item.hash)[:16], exc
                    )
                    raise
                connected.append((block, new_state, undo, item))
                state = new_state
                chain.append(item.hash)
            # Everything validated: write the whole switch in one transaction.
            with self.storage.transaction():
                for height in range(tip_height, fork_height, -1):
                    self.storage.drop_main(height)
                for block in disconnected:
                    self.storage.unindex_txs(block.txids)
                    self.storage.drop_vote_outcomes(block.hash)
                for block, new_state, undo, item in connected:
                    item.status = BlockStatus.VALID
                    self.storage.put_index(item.row())
                    self.storage.put_undo(item.hash, undo, new_state, _outcomes(block, undo))
                    self.storage.set_main(item.height, item.hash)
                    if undo.outcome.round_counted is not None:
                        self.storage.put_vote_outcomes(item.hash, self._round_verdicts(chain, item.height, undo))
                    self.storage.index_txs(item.hash, block.txids)
                    touched.update(undo.accounts_before)
                self.storage.write_state(state, touched, self.state)
        except BaseException:
            del self.main[tip_height + 1 :]
            raise
        self.main = chain
        self.state = state
        status = "reorg" if disconnected else "connected"
        if disconnected:
            log.info(
                "reorg: %d block(s) disconnected, %d connected, tip %d %s…",
                len(disconnected), len(connected), entry.height, hash_hex(entry.hash)[:16],
            )
        return Connected(
            entry.hash, entry.height, status, list(reversed(disconnected)), [c[0] for c in connected]
        )


@dataclass(frozen=True)
class _IndexBranch:
    """A :class:`~consensus.view.ChainView` of the branch ending at ``parent``, read from the index.

    ``hash_at(h)`` walks back from ``parent`` until height ``h`` or the main
    chain, whichever comes first, so reading the last few ancestors costs a
    few steps however long the branch is.
    """

    rules: ChainRules
    parent: IndexEntry
    index: dict[bytes, IndexEntry]
    main: list[bytes]

    @property
    def height(self) -> int:
        return self.parent.height

    def hash_at(self, height: int) -> bytes:
        if not 0 <= height <= self.parent.height:
            raise IndexError(f"height {height} is not on this branch (0..{self.parent.height})")
        entry = self.parent
        while entry.height > height:
            if entry.height < len(self.main) and self.main[entry.height] == entry.hash:
                return self.main[height]
            entry = self.index[entry.prev]
        return entry.hash

    def header_at(self, height: int) -> Header:
        return self.index[self.hash_at(height)].header

    def asert_anchor(self) -> int | None:
        return self.parent.anchor


def _outcomes(block: Block, undo: Undo) -> list[tuple[bytes, bool | None]]:
    """Each gradient update's sender and whether its task's rule counted it in the block.

    None for an update of a task whose updates in the block were too few for
    its rule to run with the task's bound: nobody was rejected, the task's
    block vote was zero.
    """
    senders = [tx.sender_address for tx in block.txs if isinstance(tx, GradientUpdate)]
    out = undo.outcome
    return [
        (sender, counted if out.update_ran(i) else None)
        for i, (sender, counted) in enumerate(zip(senders, out.counted, strict=True))
    ]
