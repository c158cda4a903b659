"""The mempool: validated transactions waiting for a block (policy, not consensus).

What goes in is checked with the consensus rules against the current tip,
extended by the sender's transactions already in the pool, so every sender's
pooled transactions form a chain of consecutive nonces that the next block
could include in order: signature, nonce, funds for all of the sender's
pooled spends, and for gradient updates the ml checks of the state
transition (encoding, shape, finiteness, norm, staleness, base hash, and the
task's useful-update gate against the tip's model), run by
the same functions the state transition runs. A consensus failure raises
``BlockRejected`` with its code; a policy refusal raises ``PolicyRejected``.

The rest is this node's own choice: the pool is bounded in count and bytes
and evicts the lowest fee rate (fee per byte) first, one sender may hold at
most ``max_per_sender`` transactions, transactions expire, and ``select``
hands the miner the best fee rates while keeping each sender's nonce order.
Fee rates are compared as exact fractions, never floats.

Eviction, expiry and revalidation remove a sender's transactions from the
highest nonce down, or a transaction together with every later one of the
same sender, because those depend on it.

Not thread-safe: the node calls it from one thread.
"""

from __future__ import annotations

import builtins
import enum
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from consensus.block import Block
from consensus.errors import BlockRejected, Reject
from consensus.state import Account, State
from consensus.transition import check_update, check_update_payload, useful_gate
from consensus.tx import GradientUpdate, SignedTx, Transfer, Tx, check_signature, txid
from consensus.view import ChainView
from node import limits


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
        object.__setattr__(self, "fee_rate", Fraction(self.tx.fee, len(self.raw)))

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def nonce(self) -> int:
        return self.tx.nonce

    @property
    def spend(self) -> int:
        """What the tx debits from its sender: amount and fee, or the fee of an update."""
        return self.tx.amount + self.tx.fee if isinstance(self.tx, Transfer) else self.tx.fee


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of :meth:`Mempool.add`: whether it is new, and what it pushed out."""

    txid: bytes
    added: bool  # False: the pool already held this transaction
    evicted: tuple[bytes, ...] = ()


def _priority(entry: PoolEntry) -> tuple[Fraction, float, bytes]:
    """Sort key, best first: higher fee rate, then older, then txid for determinism."""
    return (-entry.fee_rate, entry.added_at, entry.txid)


def _check_against_tip(
    tx: SignedTx, account: Account, pending: Sequence[PoolEntry], chain: PoolChain, *, signature: bool
) -> None:
    """The consensus rules for ``tx`` as the next of ``pending`` on the tip; raises BlockRejected.

    Cheapest first, so junk costs the node little: an update's stateless
    checks (its shape is one comparison), then nonce and funds (lookups),
    then the signature (a hash of the whole transaction, megabytes for an
    update), and last an update's checks against the tip, whose useful-update
    gate evaluates the model.
    """
    view = chain.tip_view()  # the branch the next block extends
    if isinstance(tx, GradientUpdate):
        check_update_payload(view.rules.task, tx)
    expected = account.nonce + len(pending)
    if tx.nonce != expected:
        raise BlockRejected(Reject.BAD_NONCE, f"nonce {tx.nonce}, the pool expects {expected}")
    spend = sum(e.spend for e in pending) + (tx.amount + tx.fee if isinstance(tx, Transfer) else tx.fee)
    if spend > account.balance:
        raise BlockRejected(
            Reject.INSUFFICIENT_FUNDS, f"pooled spends {spend} exceed the balance {account.balance}"
        )
    if signature:
        check_signature(tx, view.rules.chain_id)
    if isinstance(tx, GradientUpdate):
        gate = useful_gate(view.rules, chain.state.params)  # the tip is the next block's parent
        check_update(view, tx, gate=gate)


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
        self._by_sender: dict[builtins.bytes, list[PoolEntry]] = {}  # each in nonce order, consecutive
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
        """The sender's pooled transactions (by address), in nonce order."""
        return list(self._by_sender.get(sender, ()))

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
        if not isinstance(tx, Transfer | GradientUpdate):
            raise BlockRejected(Reject.BAD_COINBASE, "only a block may carry a coinbase or the task")
        if len(raw) > self.max_bytes:
            raise PolicyRejected(PolicyReason.TOO_LARGE, f"{len(raw)} bytes > pool limit {self.max_bytes}")
        entry = PoolEntry(raw, tx, tx_id, now)
        pending = self._by_sender.get(entry.sender, [])
        if len(pending) >= self.max_per_sender:
            raise PolicyRejected(
                PolicyReason.SENDER_LIMIT, f"the sender has {len(pending)} pooled transactions"
            )
        _check_against_tip(tx, chain.state.account(entry.sender), pending, chain, signature=signature)
        victims = self._eviction_plan(entry)
        for victim in victims:
            self._remove(victim)
        self._insert(entry)
        return AddResult(tx_id, added=True, evicted=tuple(v.txid for v in victims))

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
    def select(self, max_updates: int, max_txs: int, max_bytes: int) -> list[tuple[builtins.bytes, SignedTx]]:
        """The best txs for the next block, in an order the block may carry them.

        Greedy by fee rate over each sender's next tx, so a sender's txs come
        out in nonce order. A sender whose next tx does not fit (bytes, or the
        task's update limit) is done for this block: its later txs need it.
        """
        heap = [(_priority(chain_[0]), sender, 0) for sender, chain_ in self._by_sender.items()]
        heapq.heapify(heap)
        chosen: list[tuple[builtins.bytes, SignedTx]] = []
        updates = size = 0
        while heap and len(chosen) < max_txs:
            _, sender, index = heapq.heappop(heap)
            entry = self._by_sender[sender][index]
            is_update = isinstance(entry.tx, GradientUpdate)
            if size + entry.size > max_bytes or (is_update and updates >= max_updates):
                continue
            chosen.append((entry.raw, entry.tx))
            size += entry.size
            updates += is_update
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
        return removed

    def remove_for_block(self, block: Block) -> list[builtins.bytes]:
        """Drop the txs a newly connected block included, and those they replace.

        A pooled tx of a sender with the same or a lower nonce than one the
        block carries can never be mined any more; neither can its successors
        if the block's tx differed (they are dropped by :meth:`revalidate`).
        """
        removed: list[builtins.bytes] = []
        included: dict[builtins.bytes, int] = {}
        for tx in block.txs:
            if isinstance(tx, Transfer | GradientUpdate):
                address = tx.sender_address
                included[address] = max(included.get(address, -1), tx.nonce)
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
        funds and, for updates, staleness and base hash are. A failure drops
        the tx and every later one of its sender.
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
                    _check_against_tip(entry.tx, account, chain_[:index], chain, signature=False)
                except BlockRejected:
                    removed += self._drop_from(sender, index)
                    break
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
                if isinstance(tx, Transfer | GradientUpdate):
                    candidates.append((raw, tx, now, True))
        # By nonce, so each sender's txs come in order; at equal nonces the mined
        # tx first, since a pooled tx with the same nonce was its competitor.
        candidates.sort(key=lambda c: (c[1].nonce if isinstance(c[1], Transfer | GradientUpdate) else -1, not c[3]))
        self._entries.clear()
        self._by_sender.clear()
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
