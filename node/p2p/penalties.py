"""What a peer's misbehaviour costs it, and the ban list that remembers.

One function, :func:`penalty`, maps every consensus reject code and every
protocol-level fault to a score; a peer whose score reaches
``limits.BAN_THRESHOLD`` is disconnected and banned for
``limits.BAN_DURATION_S``. Time is passed in as ``now`` (seconds), so the
whole module is a plain function of its inputs.

Two kinds of fault cost nothing:

* "not yet" codes (``consensus.errors.NOT_PUNISHED``: a block from slightly
  in the future, or whose parent we lack) say nothing about the sender;
* for a relayed transaction, codes that depend on the receiver's tip (nonce,
  funds, staleness, base hash): after a block or a reorg an honest peer may
  relay a tx that was valid on its tip a moment ago. The same codes inside a
  block are fatal, because the block claims to be valid on its own parent.

Forgiven is not free, though: each such refusal spends the relaying peer's
:class:`RelayAllowance` by the transaction's size, and a peer that runs it
dry (a flood of bad-nonce updates, each costing us a decode) is charged
``WASTED_RELAY``.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field

from consensus.errors import NOT_PUNISHED, Reject
from node import limits


class Misbehaviour(enum.Enum):
    """Faults of the protocol itself, below or around consensus."""

    MALFORMED_MESSAGE = "malformed-message"  # a body that does not decode (MessageError)
    PROTOCOL_VIOLATION = "protocol-violation"  # well-formed but out of order or over a limit
    UNREQUESTED_DATA = "unrequested-data"  # blocks or txs we never asked this peer for
    WASTED_RELAY = "wasted-relay"  # relayed txs refused on our tip, beyond the peer's RelayAllowance


BAN = limits.BAN_THRESHOLD  # one fault of this weight bans at once

_MISBEHAVIOUR_SCORES: dict[Misbehaviour, int] = {
    # Five malformed bodies ban: a buggy peer gets a few chances, a fuzzer does not.
    Misbehaviour.MALFORMED_MESSAGE: BAN // 5,
    # Two violations ban: never an accident of timing, always a broken or hostile peer.
    Misbehaviour.PROTOCOL_VIOLATION: BAN // 2,
    # Ten unrequested deliveries ban: a response racing a timeout may arrive once or twice.
    Misbehaviour.UNREQUESTED_DATA: BAN // 10,
    # Four times over its allowance bans: an honest peer's stale relays never get that far.
    Misbehaviour.WASTED_RELAY: BAN // 4,
}

# Tx rejects that depend on the receiver's tip, not on the tx alone (see the module docstring).
TIP_DEPENDENT: frozenset[Reject] = frozenset(
    {
        Reject.BAD_NONCE,
        Reject.INSUFFICIENT_FUNDS,
        Reject.UPDATE_BAD_BASE,
        Reject.UPDATE_NOT_USEFUL,
        Reject.DUPLICATE_TX,
        # bonds mature, rounds turn and commitments land at a height: a peer a block
        # ahead or behind relays these in good faith
        Reject.NOT_BONDED,
        Reject.ALREADY_BONDED,
        Reject.BAD_ROUND,
        Reject.DUPLICATE_COMMIT,
        Reject.NO_COMMITMENT,
        # a task is deployed, or closes, at a height
        Reject.UNKNOWN_TASK,
        Reject.TASK_CLOSED,
        Reject.TOO_MANY_TASKS,
        # a deploy's burn doubles when another deploy lands first
        Reject.DEPLOY_FEE_TOO_LOW,
    }
)


def penalty(code: Reject | Misbehaviour, *, relayed_tx: bool = False) -> int:
    """The score a peer earns for sending something rejected with ``code``.

    Parameters
    ----------
    code
        A consensus reject code (the sender's block, header or tx broke that
        rule) or a protocol-level :class:`Misbehaviour`.
    relayed_tx
        True when the rejected object is a loose transaction the peer relayed
        for the mempool, where tip-dependent codes are forgiven.
    """
    if isinstance(code, Misbehaviour):
        return _MISBEHAVIOUR_SCORES[code]
    if code in NOT_PUNISHED:
        return 0
    if relayed_tx and code in TIP_DEPENDENT:
        return 0
    # Every other consensus code means the sender offered data that is invalid
    # whatever its tip: an invalid proof of work, root, signature or update.
    return BAN


@dataclass
class RelayAllowance:
    """A token bucket of bytes: how much relayed data may be refused, forgiven, before it costs.

    Starts full at ``capacity`` and refills at ``rate`` bytes a second.
    """

    capacity: float = field(default_factory=lambda: float(limits.RELAY_WASTE_BURST_BYTES))
    rate: float = field(default_factory=lambda: float(limits.RELAY_WASTE_BYTES_PER_S))
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def spend(self, size: int, now: float) -> bool:
        """Take ``size`` bytes; False (and the bucket emptied) if they were not there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if size > self.tokens:
            self.tokens = 0.0
            return False
        self.tokens -= size
        return True


@dataclass
class PeerScore:
    """One peer's accumulated misbehaviour; it never decays while connected."""

    score: int = 0

    def add(self, points: int) -> bool:
        """Add ``points``; True once the peer has reached the ban threshold."""
        if points < 0:
            raise ValueError(f"a penalty is never negative, got {points}")
        self.score += points
        return self.banned

    @property
    def banned(self) -> bool:
        return self.score >= limits.BAN_THRESHOLD


@dataclass
class BanList:
    """Peers (by host or URL) banned until a time; scores of peers not yet banned.

    Bounded: past ``max_banned`` entries the soonest-expiring ban is dropped,
    so a flood of bad peers costs memory in proportion to the bound only.
    ``changes`` counts the bans added and lifted, so the owner knows when the
    list on disk (``node.p2p.peerfiles``) is behind; scores are never saved.
    """

    duration_s: float = limits.BAN_DURATION_S
    max_banned: int = limits.MAX_BANNED_PEERS
    changes: int = 0
    _until: dict[str, float] = field(default_factory=dict)
    _scores: dict[str, PeerScore] = field(default_factory=dict)

    def punish(self, peer: str, points: int, now: float) -> bool:
        """Add ``points`` to ``peer``'s score; ban it if it reaches the threshold.

        Returns True if the peer is banned (now or already): the caller
        disconnects it.
        """
        if self.is_banned(peer, now):
            return True
        score = self._scores.setdefault(peer, PeerScore())
        if score.add(points):
            self.ban(peer, now)
            return True
        return False

    def ban(self, peer: str, now: float) -> None:
        """Ban ``peer`` until ``now + duration_s``; its score starts afresh after."""
        self._scores.pop(peer, None)
        self._until[peer] = now + self.duration_s
        self.changes += 1
        self._trim()

    def restore(self, until: dict[str, float]) -> None:
        """Add bans read back from disk (peer -> end time); the bound holds as for :meth:`ban`."""
        self._until.update(until)
        self._trim()

    def _trim(self) -> None:
        excess = len(self._until) - self.max_banned
        if excess > 0:
            for peer in heapq.nsmallest(excess, self._until, key=self._until.__getitem__):
                del self._until[peer]

    def unban(self, peer: str) -> None:
        if self._until.pop(peer, None) is not None:
            self.changes += 1

    def is_banned(self, peer: str, now: float) -> bool:
        until = self._until.get(peer)
        if until is None:
            return False
        if now >= until:
            del self._until[peer]
            self.changes += 1
            return False
        return True

    def score(self, peer: str) -> int:
        """The peer's current score (0 once banned or never seen)."""
        entry = self._scores.get(peer)
        return 0 if entry is None else entry.score

    def forget(self, peer: str) -> None:
        """Drop a disconnected peer's score (bans stay)."""
        self._scores.pop(peer, None)

    def expire(self, now: float) -> list[str]:
        """Lift every ban that has run out; returns the peers unbanned."""
        done = [peer for peer, until in self._until.items() if now >= until]
        for peer in done:
            del self._until[peer]
        self.changes += len(done)
        return done

    def banned(self, now: float) -> dict[str, float]:
        """Active bans: peer -> time the ban ends."""
        self.expire(now)
        return dict(self._until)
