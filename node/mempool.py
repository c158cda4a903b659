"""The mempool: validated transactions waiting for a block (policy, not consensus).

Two compartments, because the chain treats coins and contributions apart:

* **Spends** (transfers, bonds, unbonds, deploys) carry a nonce and a fee. What goes
  in is checked with the consensus rules against the current tip, extended by
  the sender's transactions already in the pool, so every sender's pooled
  spends form a chain of consecutive nonces that the next block could
  include in order: signature, nonce, funds for all of the sender's pooled
  spends (a bond locks its task's bond amount, a deploy its bounty), a bond's
  task, a deploy's spec and evaluation rows. The pool is
  bounded in count and bytes and evicts the lowest fee rate (fee per byte)
  first; one sender may hold at most ``max_per_sender``; ``select`` hands the
  miner the best fee rates while keeping each sender's nonce order. Fee rates
  are compared as exact fractions, never floats.
* **Contributions** (commitments and revealed updates) carry neither: update
  slots are not for sale. They are checked against the tip as the next block
  would check them (a mature bond, the round, the commitment a reveal
  matches, the update's encoding, shape, finiteness and norm, the task's
  useful-update gate), by the functions the state transition runs. ``select``
  takes every pooled commitment, then **fair inclusion**: at most one update
  per sender and task, up to each task's updates per block, in the order of
  :func:`inclusion_ranks`: a weighted fair queue over the round, so a
  sender's share of a task's update slots is its share of the task's bonded
  stake (a sender with two bond units gets a slot twice as often as one with
  one, never more than one a block), ties in an order drawn anew each round,
  then arrival. Ranking by bond age alone gave the oldest bonds every slot: a
  few keys bonded before the honest participants held every honest block's
  median (docs/security/known-limits.md). A sender may pool at most a round's worth of
  updates per task. Every task is checked with its own spec and state.

A consensus failure raises ``BlockRejected`` with its code; a policy refusal
raises ``PolicyRejected``. Transactions expire.

Eviction, expiry and revalidation remove a sender's transactions from the
highest nonce down, or a transaction together with every later one of the
same sender, because those depend on it.

Not thread-safe: the node calls it from one thread.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from consensus.block import Block
from consensus.caps import max_full_block_size
from consensus.contracts import check_deploy, open_task_count, task_of
from consensus.errors import BlockRejected, Reject
from consensus.rounds import TaskWork, apply_commit, check_reveal, round_of, round_start
from consensus.state import Account, State, TaskState
from consensus.transition import check_update, check_update_payload, useful_gate
from consensus.tx import (
    Bond,
    Commit,
    Deploy,
    GradientUpdate,
    SignedTx,
    Transfer,
    Tx,
    Unbond,
    check_signature,
    txid,
)
from consensus.view import ChainView, hash_at_height
from ml.tasks import TaskSpec
from node import limits

Spend = Transfer | Bond | Unbond | Deploy  # carries a nonce and a fee
Contribution = Commit | GradientUpdate  # carries neither


class PoolChain(Protocol):
    """What the mempool reads of the chain; ``node.chainstate.ChainState`` is one."""

    @property
    def state(self) -> State: ...

    def tip_view(self) -> ChainView: ...


class PolicyReason(enum.Enum):
    """Why the pool refused a valid transaction; never a reason to punish the sender."""

    POOL_FULL = "pool-full"  # full, and the newcomer pays the lowest fee rate
    SENDER_LIMIT = "sender-limit"  # the sender already has max_per_sender pooled txs
    TOO_LARGE = "too-large"  # bigger than the whole pool may hold


class PolicyRejected(Exception):
    """A transaction valid by consensus that this node's policy declines."""

    def __init__(self, reason: PolicyReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One pooled transaction with what the pool orders it by."""

    raw: bytes
    tx: SignedTx
    txid: bytes
    added_at: float
    sender: bytes = field(init=False)
    fee_rate: Fraction = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sender", self.tx.sender_address)
        fee = self.tx.fee if isinstance(self.tx, Spend) else 0
        object.__setattr__(self, "fee_rate", Fraction(fee, len(self.raw)))

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def nonce(self) -> int:
        assert isinstance(self.tx, Spend), "only spends carry a nonce"
        return self.tx.nonce


def spend_of(tx: Spend, chain: PoolChain) -> int:
    """What a spend debits from its sender: a transfer's amount, a bond's locked amount (its task's),
    a deploy's bounty, and the fee."""
    if isinstance(tx, Transfer):
        return tx.amount + tx.fee
    if isinstance(tx, Deploy):
        return tx.bounty + tx.fee
    if isinstance(tx, Bond):
        found = chain.state.tasks.get(tx.task_id)
        spec = chain.tip_view().rules.task if found is None or found.contract is None else found.contract.spec
        return spec.bond_amount + tx.fee
    return tx.fee


def task_key(tx: SignedTx) -> bytes | None:
    """The task a transaction is about (None for a transfer or a deploy)."""
    return getattr(tx, "task_id", None)


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of :meth:`Mempool.add`: whether it is new, and what it pushed out."""

    txid: bytes
    added: bool  # False: the pool already held this transaction
    evicted: tuple[bytes, ...] = ()


# A task's contributions hold at most this fraction of the pool (count and bytes): with the
# cap of 16 open tasks, all of them together fill at most half of it, and a task's blocks take
# only round_blocks x max_updates_per_block of its updates a round anyway. The genesis task
# keeps at least two of its fullest blocks' worth (:meth:`Mempool._task_room`).
TASK_SHARES = 32
InclusionRank = tuple[Fraction, bytes]  # (the sender's next finish time in its task's round, its tie-break)
_UNRANKED: InclusionRank = (Fraction(2**63), b"\xff" * 32)  # a sender without a bond: after every bonded one


def inclusion_rank(
    task: TaskState, spec: TaskSpec, address: builtins.bytes, height: int, seed: builtins.bytes,
    *, slots_taken: bool = True,
) -> InclusionRank:
    """One bonded sender's place in its task's queue for the block at ``height`` (see
    :func:`inclusion_ranks`); ``seed`` is the hash of the round's start block. Without
    ``slots_taken`` the update slots the sender already had this round are not counted: stake
    alone ranks it, as for a commitment, which takes no update slot."""
    stake = task.stakes.get(address)
    if stake is None:
        return _UNRANKED
    units = max(stake.amount // spec.bond_amount, 1) if spec.bond_amount > 0 else 1
    commitment = task.commitments.get((round_of(height, spec.round_blocks) - 1, address))  # this round's reveals
    included = sum(commitment.revealed) if commitment is not None and slots_taken else 0
    return (Fraction(included + 1, units), hashlib.sha256(seed + address).digest())


def inclusion_ranks(
    state: State, specs: Mapping[builtins.bytes, TaskSpec], height: int, hash_at: Callable[[int], builtins.bytes]
) -> dict[tuple[builtins.bytes, builtins.bytes], InclusionRank]:
    """Each bonded sender's place in its task's queue for the block at ``height``, by (task id, address).

    Weighted fair queueing over the task's round: ``(reveals of the sender already
    in this round's blocks + 1) / its stake in bond units``, smallest first, so
    over a round each sender gets slots in proportion to its stake. (The ``+ 1``
    matters: ranking by reveals / units would put every fresh one-unit key, at 0,
    before a large stake that had one slot.) Ties go by ``sha256(round's start
    block hash || address)``, a new order each round that nobody knows before
    that block: ranking ties by bond age gave the oldest bonds every tied slot,
    round after round, and a younger equal stake none. ``hash_at`` gives a
    block hash on the tip's branch by height.
    """
    ranks: dict[tuple[builtins.bytes, builtins.bytes], InclusionRank] = {}
    for task_id, task in state.tasks.items():
        spec = specs.get(task_id)
        if spec is None:
            continue
        seed = hash_at(round_start(round_of(height, spec.round_blocks), spec.round_blocks))
        for address in task.stakes:
            ranks[(task_id, address)] = inclusion_rank(task, spec, address, height, seed)
    return ranks


def _arrival(entry: PoolEntry) -> tuple[float, bytes]:
    return (entry.added_at, entry.txid)


def _priority(entry: PoolEntry) -> tuple[Fraction, float, bytes]:
    """Sort key, best first: higher fee rate, then older, then txid for determinism."""
    return (-entry.fee_rate, entry.added_at, entry.txid)


def _check_spend(
    tx: Spend, account: Account, pending: Sequence[PoolEntry], chain: PoolChain, *, signature: bool
) -> None:
    """The consensus rules for ``tx`` as the next of ``pending`` on the tip; raises BlockRejected.

    Cheapest first: nonce and funds (lookups), then the signature, then a
    bond's or unbond's standing in the task's state.
    """
    view = chain.tip_view()  # the branch the next block extends
    expected = account.nonce + len(pending)
    if tx.nonce != expected:
        raise BlockRejected(Reject.BAD_NONCE, f"nonce {tx.nonce}, the pool expects {expected}")
    spend = sum(spend_of(e.tx, chain) for e in pending if isinstance(e.tx, Spend)) + spend_of(tx, chain)
    if spend > account.balance:
        raise BlockRejected(
            Reject.INSUFFICIENT_FUNDS, f"pooled spends {spend} exceed the balance {account.balance}"
        )
    if signature:
        check_signature(tx, view.rules.tag)
    if isinstance(tx, Deploy):
        deploys = sum(isinstance(e.tx, Deploy) for e in pending)
        check_deploy(tx, open_task_count(chain.state) + deploys)
    elif isinstance(tx, Bond | Unbond):  # a bond from a bonded sender tops up its stake
        _, task_state = task_of(view.rules.task, chain.state.tasks, tx.task_id, training=isinstance(tx, Bond))
        if isinstance(tx, Unbond) and tx.sender_address not in task_state.stakes:
            raise BlockRejected(Reject.NOT_BONDED, "nothing to unbond")


def _check_contribution(tx: Contribution, chain: PoolChain, *, signature: bool) -> None:
    """The consensus rules for a commitment or update as the next block would apply it; raises BlockRejected.

    Stateless checks of an update first (its shape is one comparison), then
    the signature, then the task's state (bond, round, commitment), and last
    the useful-update gate, which evaluates the model.
    """
    view = chain.tip_view()
    task, task_state = task_of(view.rules.task, chain.state.tasks, tx.task_id)
    height = view.height + 1
    if isinstance(tx, GradientUpdate):
        check_update_payload(task, tx)
    if signature:
        check_signature(tx, view.rules.tag)
    work = TaskWork(task_state)
    if isinstance(tx, Commit):
        base = hash_at_height(view, round_start(round_of(height, task.round_blocks), task.round_blocks))
        apply_commit(work, tx, height, task, tx.task_id, base)
        return
    check_reveal(work, tx, height, task, tx.task_id)
    gate = useful_gate(view.rules, chain.state.params) if tx.task_id == view.rules.task_id else None
    check_update(task, tx, gate=gate)


class Mempool:
    """Validated transactions, bounded, ordered by fee rate; see the module docstring."""

    def __init__(
        self,
        *,
        max_txs: int = limits.MEMPOOL_MAX_TXS,
        max_bytes: int = limits.MEMPOOL_MAX_BYTES,
        max_per_sender: int = limits.MEMPOOL_MAX_PER_SENDER,
        expiry_s: float = limits.MEMPOOL_EXPIRY_S,
    ) -> None:
        if min(max_txs, max_bytes, max_per_sender) < 1 or expiry_s <= 0:
            raise ValueError("mempool limits must be positive")
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_per_sender = max_per_sender
        self.expiry_s = expiry_s
        self._entries: dict[builtins.bytes, PoolEntry] = {}
        self._by_sender: dict[builtins.bytes, list[PoolEntry]] = {}  # spends, each in nonce order, consecutive
        self._contributions: dict[builtins.bytes, list[PoolEntry]] = {}  # commitments and updates, by sender
        self._bytes = 0

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._entries

    @property
    def bytes(self) -> int:
        """Total size of the pooled transactions' raw bytes."""
        return self._bytes

    def get(self, tx_id: builtins.bytes) -> PoolEntry | None:
        return self._entries.get(tx_id)

    def txids(self) -> list[builtins.bytes]:
        """Every pooled txid, best fee rate first (what an announce advertises)."""
        return [e.txid for e in sorted(self._entries.values(), key=_priority)]

    def pending(self, sender: builtins.bytes) -> list[PoolEntry]:
        """The sender's pooled transactions (by address): spends in nonce order, then contributions."""
        return [*self._by_sender.get(sender, ()), *self._contributions.get(sender, ())]

    def next_nonce(self, sender: builtins.bytes, chain: PoolChain) -> int:
        """The nonce the sender's next transaction needs, counting its pooled ones."""
        return chain.state.account(sender).nonce + len(self._by_sender.get(sender, ()))

    # -- adding -----------------------------------------------------------------------------
    def add(self, raw: builtins.bytes, tx: Tx, chain: PoolChain, now: float) -> AddResult:
        """Validate ``tx`` (decoded from ``raw``) on the tip and pool it.

        Raises
        ------
        BlockRejected
            ``tx`` breaks a consensus rule on the tip plus the sender's pooled txs.
        PolicyRejected
            valid, but the pool is full of better-paying txs, the sender is at
            its limit, or the tx is larger than the whole pool.
        """
        return self._admit(raw, tx, chain, now, signature=True)

    def _admit(self, raw: builtins.bytes, tx: Tx, chain: PoolChain, now: float, *, signature: bool) -> AddResult:
        tx_id = txid(raw)
        if tx_id in self._entries:
            return AddResult(tx_id, added=False)
        if not isinstance(tx, Spend | Contribution):
            raise BlockRejected(Reject.BAD_COINBASE, "only a block may carry a coinbase or the task")
        if len(raw) > self.max_bytes:
            raise PolicyRejected(PolicyReason.TOO_LARGE, f"{len(raw)} bytes > pool limit {self.max_bytes}")
        entry = PoolEntry(raw, tx, tx_id, now)
        if isinstance(tx, Contribution):
            return self._admit_contribution(entry, tx, chain, signature=signature)
        pending = self._by_sender.get(entry.sender, [])
        if len(pending) >= self.max_per_sender:
            raise PolicyRejected(
                PolicyReason.SENDER_LIMIT, f"the sender has {len(pending)} pooled transactions"
            )
        _check_spend(tx, chain.state.account(entry.sender), pending, chain, signature=signature)
        victims = self._eviction_plan(entry)
        for victim in victims:
            self._remove(victim)
        self._insert(entry)
        return AddResult(tx_id, added=True, evicted=tuple(v.txid for v in victims))

    def _admit_contribution(
        self, entry: PoolEntry, tx: Contribution, chain: PoolChain, *, signature: bool
    ) -> AddResult:
        """Pool a commitment or update valid for the next block, within its task's share of the pool.

        A task's contributions may hold ``1 / TASK_SHARES`` of the pool's count and bytes
        (:meth:`_task_room`); at that share a newcomer whose sender ranks before the task's
        worst-ranked pooled sender (:func:`inclusion_rank`) evicts that one's latest
        contribution, never another task's. Without shares a task deployed with long rounds
        and cheap bonds filled the whole pool with valid reveals, and every node refused its
        own trainer's contributions for every task.
        """
        task, task_state = task_of(chain.tip_view().rules.task, chain.state.tasks, tx.task_id)
        mine = [e for e in self._contributions.get(entry.sender, []) if task_key(e.tx) == tx.task_id]
        if isinstance(tx, Commit) and any(isinstance(e.tx, Commit) for e in mine):
            raise BlockRejected(Reject.DUPLICATE_COMMIT, "the sender has a commitment pooled")
        if len(mine) >= task.round_blocks + 1:
            raise PolicyRejected(
                PolicyReason.SENDER_LIMIT, f"the sender has {len(mine)} pooled contributions (a round's worth)"
            )
        victim = self._task_room(entry, tx.task_id, task, task_state, chain)
        freed = (1, victim.size) if victim is not None else (0, 0)
        if len(self._entries) + 1 - freed[0] > self.max_txs or self._bytes + entry.size - freed[1] > self.max_bytes:
            raise PolicyRejected(PolicyReason.POOL_FULL, "no room for a contribution")
        _check_contribution(tx, chain, signature=signature)
        evicted: tuple[builtins.bytes, ...] = ()
        if victim is not None:
            self._drop_contribution(victim)
            evicted = (victim.txid,)
        self._entries[entry.txid] = entry
        self._contributions.setdefault(entry.sender, []).append(entry)
        self._bytes += entry.size
        return AddResult(entry.txid, added=True, evicted=evicted)

    def _task_room(
        self, entry: PoolEntry, task_id: builtins.bytes, spec: TaskSpec, task: TaskState, chain: PoolChain
    ) -> PoolEntry | None:
        """None if ``entry`` fits its task's share of the pool; else the task's contribution it
        replaces (the worst-ranked sender's latest); PolicyRejected if it ranks no better."""
        theirs = [e for mine in self._contributions.values() for e in mine if task_key(e.tx) == task_id]
        count_share, bytes_share = max(self.max_txs // TASK_SHARES, 1), self.max_bytes // TASK_SHARES
        if task_id == chain.tip_view().rules.task_id:
            # The chain's own task, fixed at genesis, not by whoever deploys: room for two of its
            # fullest blocks whatever its update size (the caps allow ~8 MiB updates there).
            count_share = max(count_share, 2 * spec.max_updates_per_block)
            bytes_share = max(bytes_share, 2 * max_full_block_size(spec))
        if len(theirs) + 1 <= count_share and sum(e.size for e in theirs) + entry.size <= bytes_share:
            return None
        height = chain.state.height + 1
        seed = hash_at_height(chain.tip_view(), round_start(round_of(height, spec.round_blocks), spec.round_blocks))

        def rank(e: PoolEntry) -> InclusionRank:
            # A commitment takes no update slot, so stake alone ranks it: counting the slots its
            # sender had this round let fresh sybil keys push out an honest key's next commitment.
            return inclusion_rank(task, spec, e.sender, height, seed or b"", slots_taken=isinstance(e.tx, GradientUpdate))

        worst = max(theirs, key=lambda e: (rank(e), e.added_at, e.txid), default=None)
        if worst is None or not rank(entry) < rank(worst):
            raise PolicyRejected(
                PolicyReason.POOL_FULL, f"this task's share of the pool is full ({len(theirs)} contributions) "
                "of senders that rank before this one"
            )
        return worst

    def _drop_contribution(self, entry: PoolEntry) -> None:
        del self._entries[entry.txid]
        self._bytes -= entry.size
        mine = self._contributions[entry.sender]
        mine.remove(entry)
        if not mine:
            del self._contributions[entry.sender]

    def _eviction_plan(self, newcomer: PoolEntry) -> list[PoolEntry]:
        """The txs to evict so ``newcomer`` fits; PolicyRejected if it pays too little.

        Candidates are the last (highest-nonce) tx of each other sender, so an
        eviction never leaves a nonce gap; the newcomer's own sender is spared,
        since its pooled txs are the newcomer's ancestors.
        """
        count, size = len(self._entries) + 1, self._bytes + newcomer.size
        if count <= self.max_txs and size <= self.max_bytes:
            return []
        tails: list[tuple[Fraction, float, builtins.bytes, builtins.bytes, int]] = []  # worst first
        for sender, chain_ in self._by_sender.items():
            if sender != newcomer.sender:
                last = chain_[-1]
                tails.append((last.fee_rate, -last.added_at, last.txid, sender, len(chain_) - 1))
        heapq.heapify(tails)
        plan: list[PoolEntry] = []
        while count > self.max_txs or size > self.max_bytes:
            if not tails or tails[0][0] >= newcomer.fee_rate:
                raise PolicyRejected(
                    PolicyReason.POOL_FULL, f"fee rate {float(newcomer.fee_rate):.6g}/byte is the lowest"
                )
            _, _, _, sender, index = heapq.heappop(tails)
            victim = self._by_sender[sender][index]
            plan.append(victim)
            count, size = count - 1, size - victim.size
            if index > 0:
                prev = self._by_sender[sender][index - 1]
                heapq.heappush(tails, (prev.fee_rate, -prev.added_at, prev.txid, sender, index - 1))
        return plan

    def _insert(self, entry: PoolEntry) -> None:
        self._entries[entry.txid] = entry
        self._by_sender.setdefault(entry.sender, []).append(entry)
        self._bytes += entry.size

    def _remove(self, entry: PoolEntry) -> None:
        """Drop one entry (the caller keeps each sender's chain consecutive)."""
        del self._entries[entry.txid]
        self._bytes -= entry.size
        chain_ = self._by_sender[entry.sender]
        chain_.remove(entry)
        if not chain_:
            del self._by_sender[entry.sender]

    def _drop_from(self, sender: builtins.bytes, index: int) -> list[builtins.bytes]:
        """Remove the sender's txs from ``index`` on (they depend on each other)."""
        doomed = self._by_sender[sender][index:]
        for entry in reversed(doomed):
            self._remove(entry)
        return [e.txid for e in doomed]

    # -- choosing for a block -----------------------------------------------------------------
    def select(
        self,
        max_updates: int | Mapping[builtins.bytes, int],
        max_txs: int,
        max_bytes: int,
        *,
        ranks: Mapping[tuple[builtins.bytes, builtins.bytes], InclusionRank] | None = None,
    ) -> list[tuple[builtins.bytes, SignedTx]]:
        """The txs for the next block, in an order the block may carry them.

        First every pooled commitment, then the updates by fair inclusion (at
        most one per sender and task, by ``ranks`` (:func:`inclusion_ranks` of
        the tip; a sender not in it last), then arrival), up to ``max_updates`` (one number for every task, or each
        task's by id; a task not named gets none); then spends greedy by fee rate over each sender's
        next tx, so a sender's spends come out in nonce order, and at most one deploy (a
        deploy's burn grows with each deploy before it). A sender whose
        next spend does not fit is done for this block: its later txs need it.
        """
        chosen: list[tuple[builtins.bytes, SignedTx]] = []
        size = 0

        def take(entry: PoolEntry) -> bool:
            nonlocal size
            if len(chosen) >= max_txs or size + entry.size > max_bytes:
                return False
            chosen.append((entry.raw, entry.tx))
            size += entry.size
            return True

        contributions = [e for mine in self._contributions.values() for e in mine]
        for entry in sorted((e for e in contributions if isinstance(e.tx, Commit)), key=_arrival):
            take(entry)
        order = ranks or {}
        firsts: dict[tuple[builtins.bytes, builtins.bytes | None], PoolEntry] = {}
        for entry in sorted((e for e in contributions if isinstance(e.tx, GradientUpdate)), key=_arrival):
            firsts.setdefault((entry.sender, task_key(entry.tx)), entry)
        ranked = sorted(
            firsts.values(),
            key=lambda e: (order.get((task_key(e.tx) or b"", e.sender), _UNRANKED), e.added_at, e.txid),
        )
        updates: dict[builtins.bytes | None, int] = {}
        for entry in ranked:
            task_id = task_key(entry.tx)
            cap = max_updates if isinstance(max_updates, int) else max_updates.get(task_id or b"", 0)
            if updates.get(task_id, 0) < cap and take(entry):
                updates[task_id] = updates.get(task_id, 0) + 1

        heap = [(_priority(chain_[0]), sender, 0) for sender, chain_ in self._by_sender.items()]
        heapq.heapify(heap)
        deployed = False  # one deploy a block: each was checked alone on the tip, and a second owes a higher burn
        while heap and len(chosen) < max_txs:
            _, sender, index = heapq.heappop(heap)
            entry = self._by_sender[sender][index]
            if (deployed and isinstance(entry.tx, Deploy)) or not take(entry):
                continue
            deployed = deployed or isinstance(entry.tx, Deploy)
            if index + 1 < len(self._by_sender[sender]):
                following = self._by_sender[sender][index + 1]
                heapq.heappush(heap, (_priority(following), sender, index + 1))
        return chosen

    # -- keeping up with the chain ------------------------------------------------------------
    def expire(self, now: float) -> list[builtins.bytes]:
        """Drop txs pooled ``expiry_s`` or more ago, with the later txs of their senders."""
        removed: list[builtins.bytes] = []
        for sender in list(self._by_sender):
            chain_ = self._by_sender[sender]
            for index, entry in enumerate(chain_):
                if now - entry.added_at >= self.expiry_s:
                    removed += self._drop_from(sender, index)
                    break
        for entry in [e for mine in self._contributions.values() for e in mine]:
            if now - entry.added_at >= self.expiry_s:
                self._drop_contribution(entry)
                removed.append(entry.txid)
        return removed

    def remove_for_block(self, block: Block) -> list[builtins.bytes]:
        """Drop the txs a newly connected block included, and those they replace.

        A pooled tx of a sender with the same or a lower nonce than one the
        block carries can never be mined any more; neither can its successors
        if the block's tx differed (they are dropped by :meth:`revalidate`).
        """
        removed: list[builtins.bytes] = []
        included: dict[builtins.bytes, int] = {}
        for tx_id, tx in zip(block.txids, block.txs, strict=True):
            if isinstance(tx, Spend):
                address = tx.sender_address
                included[address] = max(included.get(address, -1), tx.nonce)
            elif tx_id in self._entries:
                self._drop_contribution(self._entries[tx_id])
                removed.append(tx_id)
        for sender, top in included.items():
            chain_ = self._by_sender.get(sender)
            while chain_ and chain_[0].nonce <= top:
                removed.append(chain_[0].txid)
                self._remove(chain_[0])
                chain_ = self._by_sender.get(sender)
        return removed

    def revalidate(self, chain: PoolChain) -> list[builtins.bytes]:
        """Re-check every pooled tx on the current tip; drop what no longer fits.

        Signatures do not depend on the tip and are not re-checked; nonces,
        funds, bonds, rounds and commitments are. A failed spend drops every
        later one of its sender; a contribution goes alone (a turned round
        leaves the previous round's unrevealed updates behind).
        """
        removed: list[builtins.bytes] = []
        for sender in list(self._by_sender):
            account = chain.state.account(sender)
            chain_ = self._by_sender[sender]
            stale = 0
            while stale < len(chain_) and chain_[stale].nonce < account.nonce:
                stale += 1  # mined already (on this branch); not an error
            for entry in chain_[:stale]:
                removed.append(entry.txid)
                self._remove(entry)
            chain_ = self._by_sender.get(sender, [])
            for index, entry in enumerate(chain_):
                try:
                    assert isinstance(entry.tx, Spend)
                    _check_spend(entry.tx, account, chain_[:index], chain, signature=False)
                except BlockRejected:
                    removed += self._drop_from(sender, index)
                    break
        for entry in [e for mine in self._contributions.values() for e in mine]:
            assert isinstance(entry.tx, Contribution)
            try:
                _check_contribution(entry.tx, chain, signature=False)
            except BlockRejected:
                self._drop_contribution(entry)
                removed.append(entry.txid)
        return removed

    def readd(self, blocks: Iterable[Block], chain: PoolChain, now: float) -> list[builtins.bytes]:
        """Return the txs of blocks a reorg disconnected to the pool, on the new tip.

        The pool is rebuilt from those txs and the pooled ones, in nonce
        order, so a sender's disconnected tx comes back before its pooled
        successors. What is invalid on the new tip (mined on the new branch,
        too stale) stays out. Returns the txids of block txs now pooled.
        """
        candidates: list[tuple[builtins.bytes, Tx, float, bool]] = [
            (e.raw, e.tx, e.added_at, False) for e in self._entries.values()
        ]
        for block in blocks:
            for raw, tx in zip(block.tx_bytes, block.txs, strict=True):
                if isinstance(tx, Spend | Contribution):
                    candidates.append((raw, tx, now, True))
        # By nonce, so each sender's spends come in order; at equal nonces the mined
        # tx first, since a pooled tx with the same nonce was its competitor.
        candidates.sort(key=lambda c: (c[1].nonce if isinstance(c[1], Spend) else -1, not c[3]))
        self._entries.clear()
        self._by_sender.clear()
        self._contributions.clear()
        self._bytes = 0
        readded: list[builtins.bytes] = []
        for raw, tx, added_at, from_block in candidates:
            try:
                result = self._admit(raw, tx, chain, added_at, signature=False)
            except (BlockRejected, PolicyRejected):
                continue
            if from_block and result.added:
                readded.append(result.txid)
        return [t for t in readded if t in self._entries]

    def update_tip(
        self, chain: PoolChain, *, connected: Sequence[Block], disconnected: Sequence[Block], now: float
    ) -> None:
        """Follow a tip change (``ChainState.accept_block``'s ``Connected``) in the right order."""
        for block in connected:
            self.remove_for_block(block)
        if disconnected:
            self.readd(disconnected, chain, now)
        else:
            self.revalidate(chain)
