"""The chain's two levels in one process: blocks vote, rounds move the model, a miner attacks.

:mod:`ml.simulation` asks how a rule holds when some *participants* lie. This
module asks what the chain's security claim is about: how much can a
*miner* with a share ``p`` of the hashrate, or a participant with free keys,
steer the model? It plays the chain's rules without hashing or gossip:

1. **Blocks.** Each block is mined by the attacker with probability
   ``hashrate`` (independently, as proof of work draws winners), else by an
   honest miner. An honest miner includes up to ``max_updates_per_block``
   updates, one per contributor, the honest participants first, in an
   arrival order drawn per block, then the sybil keys. That is
   node/mempool.py's policy once the honest stakes are established: a
   weighted fair queue over bonded stake, where an honest trainer's
   topped-up stake outranks a one-unit sybil key (the sim does not model
   the first rounds, while the honest stakes grow).
2. **Votes.** A block's vote is the task's rule over its updates with the
   task's ``f`` (:func:`ml.rounds.block_vote`), zero when the block holds too
   few for that ``f``.
3. **Rounds.** Every ``round_blocks`` (W) blocks the model moves by
   ``server_lr`` times the vote rule over the round's W votes
   (:func:`ml.rounds.aggregate_votes`). With W = 1 and rule ``median`` this
   is the chain before rounds: each block's aggregate applied at once.
4. **Commit-reveal.** With ``reveal_delay`` 1 an update is trained on the
   model at the start of round r, committed during round r and revealed
   (counted) during round r + 1, so the votes of round r + 1 are computed on
   the model one step behind the one they move. Round 0 has nothing to
   reveal and votes zero. ``reveal_delay`` 0 trains on the current model.
5. **Payouts.** An update is paid iff its block's rule counted it (for
   coordinate-wise rules: not an outlier, :func:`ml.rounds.inliers` with
   consensus/participation.py's factor), its block's vote was counted by the
   round (:attr:`ml.rounds.RoundResult.counted`), and it is not a clone of
   another sender's update.

Attacks (:data:`CHAIN_ATTACKS`, the names ``gradchain sim --attack`` and
``gradchain testnet up --attack`` share):

``miner-poison``
    The attacker's blocks ignore everyone else and carry its own poison, a
    sign-flip of its honest update at the norm bound, under as many keys as
    the block has slots, so its block votes the poison.
``censor``
    The attacker's blocks leave out every update but its own honest one, so
    they hold one update and vote zero.
``copy``
    One extra bonded participant trains nothing: it re-signs another
    participant's update. Without commit-reveal it copies a same-block
    update from the mempool and is counted like its victim; with
    commit-reveal it can only commit to what was already revealed, an exact
    clone the chain never counts or pays.
``sybil-flood``
    A non-mining participant with ``sybils`` bonded keys sends a poisoned
    update from every key. Ranked after the honest participants, its keys
    take only the slots honest ones leave free.

Honest participants hold Dirichlet(``alpha``) shards of the training split;
the attacker trains on the whole split (it knows the task's data as well as
anyone). Everything is seeded by ``seed``: the same seed draws the same
miners, shards and minibatches whatever the vote rule, so rules are compared
on identical histories. No clock, no file beyond the task's package data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.aggregation import Pays, is_rule, parse_rule
from ml.datasets import load_dataset
from ml.evaluate import evaluate
from ml.gate import GateSet, gate_indices, validation_loss
from ml.models import init_params, loss_and_grad
from ml.rounds import CLONE_WINDOW_ROUNDS, VOTE_RULES, aggregate_votes, block_vote, inliers
from ml.shards import shard
from ml.tasks import TaskSpec, builtin_task
from ml.trainer import NORM_MARGIN, train_update

__all__ = [
    "CHAIN_ATTACKS",
    "CHAIN_DEFAULTS",
    "ChainSimConfig",
    "ChainSimResult",
    "CurvePoint",
    "RoundLog",
    "SeedRun",
    "run_chain_simulation",
    "sweep",
]

F32 = npt.NDArray[np.float32]

NO_ATTACK = "none"
CHAIN_ATTACKS: tuple[str, ...] = ("miner-poison", "sybil-flood", "censor", "copy")
HASHRATE_ATTACKS = frozenset({"miner-poison", "censor"})
BLOCK_OUTLIER_FACTOR = 1.75  # consensus/participation.py's factor
# The miner-poison attacker's vote. "gate-aware" knows the round gate's public
# validation set: it removes from the reversed update its component along the
# validation loss's gradient at the model the round will move, adds back the
# smallest share of descent that passes the gate, and sizes the vote like an
# honest one (the clip would cut it there anyway): the most harm the gate lets
# through, to first order.
POISONS = ("sign-flip", "gate-aware")
GATE_AWARE_MARGINS = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # descent added, share of the rest
GATE_AWARE_SCALES = (1.0, 0.5, 0.25, 0.125)  # vote norm, share of an honest update's
COPIER = -1  # participant index of the copier in payout records
SYBIL = -2  # all sybil keys, pooled, in payout records


@dataclass(frozen=True)
class ChainSimConfig:
    """One simulated chain: its participants, its round and vote rule, its attacker.

    Parameters
    ----------
    task
        A built-in task name.
    participants
        Honest participants, each with its own Dirichlet(``alpha``) shard.
    alpha
        Label skew of the shards.
    blocks
        Blocks to mine; rounded down to whole rounds.
    round_blocks
        W: blocks per round. 1 with ``vote_rule="median"`` is the chain
        before rounds (each block's aggregate applied directly).
    vote_rule
        A key of :data:`ml.rounds.VOTE_RULES`.
    reveal_delay
        Rounds between training an update and counting it: 1 with
        commit-reveal, 0 without; None: 1 when ``round_blocks > 1``, else 0.
    attack
        ``"none"`` or one of :data:`CHAIN_ATTACKS`.
    hashrate
        The attacking miner's share of the blocks (miner-poison, censor).
    sybils
        Bonded keys of the sybil-flood participant.
    round_gate
        Relative tolerance of the round gate, or None for none: a round's
        step is applied only if it raises the loss on a validation set of
        ``gate_examples`` training examples (:func:`ml.gate.gate_indices`)
        by at most this share; otherwise the round moves nothing.
    gate_examples
        Size of the round gate's validation set.
    copy_lag
        With commit-reveal, how many rounds after an honest reveal the
        ``copy`` attacker reveals its copy: up to
        :data:`ml.rounds.CLONE_WINDOW_ROUNDS` the copy is a clone (never
        counted); past it, a stale update counted like any other.
    poison
        The attacking miner's vote: ``sign-flip`` (its honest update
        reversed, at the norm bound) or ``gate-aware`` (see :data:`POISONS`).
    rule
        Override of the task's per-block rule (None: the task's), to compare
        block rules on identical histories.
    server_lr, local_steps
        Overrides of the task's (None: the task's).
    seed
        Seeds miners, shards, minibatches.
    """

    task: str = "digits"
    participants: int = 6
    alpha: float = 1.0
    blocks: int = 240
    round_blocks: int = 8
    vote_rule: str = "clip+median"
    reveal_delay: int | None = None
    attack: str = NO_ATTACK
    hashrate: float = 0.0
    sybils: int = 24
    copy_lag: int = 1
    round_gate: float | None = 0.0
    gate_examples: int = 200
    poison: str = "sign-flip"
    rule: str | None = None
    server_lr: float | None = None
    local_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.participants < 1:
            raise ValueError(f"need at least one honest participant, got {self.participants}")
        if not self.alpha > 0.0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.round_blocks < 1:
            raise ValueError(f"round_blocks must be >= 1, got {self.round_blocks}")
        if self.blocks < self.round_blocks:
            raise ValueError(f"blocks ({self.blocks}) must fill at least one round of {self.round_blocks}")
        if self.vote_rule not in VOTE_RULES:
            raise ValueError(
                f"unknown vote rule {self.vote_rule!r}; choose from {', '.join(VOTE_RULES)}"
            )
        if self.reveal_delay is not None and self.reveal_delay not in (0, 1):
            raise ValueError(f"reveal_delay must be 0 or 1, got {self.reveal_delay}")
        if self.attack != NO_ATTACK and self.attack not in CHAIN_ATTACKS:
            raise ValueError(
                f"unknown attack {self.attack!r}; choose from none, {', '.join(CHAIN_ATTACKS)}"
            )
        if not 0.0 <= self.hashrate < 1.0:
            raise ValueError(f"hashrate is a share in [0, 1), got {self.hashrate}")
        if self.copy_lag < 1:
            raise ValueError(f"copy_lag must be >= 1 (a copy follows its original), got {self.copy_lag}")
        if self.sybils < 0:
            raise ValueError(f"sybils must be >= 0, got {self.sybils}")
        if self.server_lr is not None and not (
            math.isfinite(self.server_lr) and self.server_lr > 0.0
        ):
            raise ValueError(f"server_lr must be a finite number > 0, got {self.server_lr}")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        if self.poison not in POISONS:
            raise ValueError(f"unknown poison {self.poison!r}; choose from {', '.join(POISONS)}")
        if self.round_gate is not None and not 0.0 <= self.round_gate <= 1.0:
            raise ValueError(f"round_gate is a tolerance in [0, 1], got {self.round_gate}")
        if self.rule is not None and not is_rule(self.rule):
            raise ValueError(f"unknown block rule {self.rule!r}; see ml.aggregation.RULES")

    @property
    def delay(self) -> int:
        """Rounds between training an update and counting it."""
        if self.reveal_delay is not None:
            return self.reveal_delay
        return 1 if self.round_blocks > 1 else 0

    @property
    def rounds(self) -> int:
        """Whole rounds in ``blocks``."""
        return self.blocks // self.round_blocks


CHAIN_DEFAULTS = ChainSimConfig()


@dataclass(frozen=True)
class RoundLog:
    """One round: its attacker blocks, votes counted, clip radius and test accuracy after it."""

    round: int
    height: int
    attacker_blocks: int
    zero_votes: int
    counted_votes: int
    attacker_votes_counted: int
    radius: float
    accuracy: float
    gated: bool = False


@dataclass(frozen=True)
class ChainSimResult:
    """A finished chain simulation: every round's log, payouts, the final model."""

    config: ChainSimConfig
    initial: float
    rounds: tuple[RoundLog, ...]
    paid: dict[int, int]  # participant (COPIER, SYBIL) -> paid updates
    included: dict[int, int]  # participant -> updates included in blocks
    params: F32 = field(repr=False)

    @property
    def final(self) -> float:
        """Test accuracy after the last round."""
        return self.rounds[-1].accuracy if self.rounds else self.initial

    def honest_paid_mean(self) -> float:
        """Paid updates of an honest participant, on average."""
        honest = [v for k, v in self.paid.items() if k >= 0]
        return sum(honest) / len(honest) if honest else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready: config, per-round figures, payouts."""
        return {
            "config": asdict(self.config),
            "reveal_delay": self.config.delay,
            "initial": self.initial,
            "final": self.final,
            "rounds": [asdict(r) for r in self.rounds],
            "paid": {str(k): v for k, v in sorted(self.paid.items())},
            "included": {str(k): v for k, v in sorted(self.included.items())},
            "honest_paid_mean": self.honest_paid_mean(),
        }


@dataclass
class _Participant:
    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.generic]
    rng: np.random.Generator


@dataclass
class _Update:
    sender: int
    delta: F32
    clone: bool = False  # an exact copy of another sender's update (never counted)


class _Chain:
    """The simulation's mutable state, advanced one block at a time."""

    def __init__(self, config: ChainSimConfig) -> None:
        self.config = config
        spec = builtin_task(config.task)
        if config.rule is not None:
            spec = replace(spec, rule=config.rule)
        if spec.head != "classify":
            raise ValueError(f"the chain simulation measures accuracy; {spec.name!r} is a regression task")
        self.spec: TaskSpec = spec
        self.dataset = load_dataset(spec)
        root = np.random.SeedSequence(config.seed)
        seeds = root.spawn(config.participants + 3)
        self.people = []
        for i in range(config.participants):
            X, y = shard(
                self.dataset, i, config.participants, "dirichlet", alpha=config.alpha, seed=config.seed
            )
            self.people.append(_Participant(X, y, np.random.default_rng(seeds[i])))
        self.attacker = _Participant(
            self.dataset.X_train, self.dataset.y_train, np.random.default_rng(seeds[-3])
        )
        self.miners = np.random.default_rng(seeds[-2])  # who mines each block
        self.order = np.random.default_rng(seeds[-1])  # arrival order in honest blocks
        self.server_lr = np.float32(spec.server_lr if config.server_lr is None else config.server_lr)
        self.steps = config.local_steps
        self.bound = NORM_MARGIN * spec.norm_bound
        self.params = init_params(spec)
        self.gate: GateSet | None = None
        if config.round_gate is not None or config.poison == "gate-aware":
            # the task's way of sampling a validation set from its training split
            # (ml.gate.gate_indices); the simulation checks no commitment
            idx = gate_indices(self.dataset.X_train.shape[0], config.gate_examples)
            self.gate = GateSet(
                np.ascontiguousarray(self.dataset.X_train[idx], dtype=np.float32),
                np.ascontiguousarray(self.dataset.y_train[idx], dtype=np.float64),
            )
        self.paid: dict[int, int] = {i: 0 for i in range(config.participants)}
        self.included: dict[int, int] = {i: 0 for i in range(config.participants)}
        if config.attack == "copy":
            self.paid[COPIER] = self.included[COPIER] = 0
        if config.attack == "sybil-flood":
            self.paid[SYBIL] = self.included[SYBIL] = 0

    def step(self, aggregate: F32) -> bool:
        """Apply the round's step (unless the round gate refuses it); True if refused."""
        candidate = (self.params - self.server_lr * aggregate).astype(np.float32)
        tolerance = self.config.round_gate
        if tolerance is not None and self.gate is not None and aggregate.any():
            before = validation_loss(self.spec, self.params, self.gate.X, self.gate.y)
            after = validation_loss(self.spec, candidate, self.gate.X, self.gate.y)
            if not after <= before * (1.0 + tolerance):
                return True
        self.params = candidate
        return False

    def train(self, who: _Participant, base: F32) -> F32:
        return train_update(self.spec, base, who.X, who.y, rng=who.rng, steps=self.steps)

    def poison(self, base: F32) -> F32:
        """The attacker's vote: its honest update reversed, at the norm bound or gate-aware."""
        own = self.train(self.attacker, base).astype(np.float64)
        norm = float(np.linalg.norm(own))
        if norm == 0.0:
            return own.astype(np.float32)
        if self.config.poison == "gate-aware":
            return self._gate_aware(-own, norm)
        return (-(self.bound / norm) * own).astype(np.float32)

    def _gate_aware(self, reverse: npt.NDArray[np.float64], norm: float) -> F32:
        """The vote that passes the gate and most raises the loss on the attacker's data."""
        assert self.gate is not None
        X, y = self.gate.X, self.gate.y.astype(np.int64)
        _, grad = loss_and_grad(self.spec, self.params, X, y)
        g = grad.astype(np.float64)
        g_norm = float(np.linalg.norm(g))
        unit = g / g_norm if g_norm > 0.0 else g
        flat = reverse - float(reverse @ unit) * unit  # no first-order change of the gate's loss
        before = validation_loss(self.spec, self.params, self.gate.X, self.gate.y)
        best, best_harm = np.zeros_like(reverse), -np.inf
        for margin in GATE_AWARE_MARGINS:
            direction = flat + margin * float(np.linalg.norm(flat)) * unit
            length = float(np.linalg.norm(direction))
            if length == 0.0:
                continue
            for share in GATE_AWARE_SCALES:
                vote = direction * (share * norm / length)
                moved = (self.params - self.server_lr * vote).astype(np.float32)
                if validation_loss(self.spec, moved, self.gate.X, self.gate.y) > before:
                    continue
                harm, _ = loss_and_grad(self.spec, moved, self.attacker.X, self.attacker.y)
                if harm > best_harm:
                    best, best_harm = vote, harm
        return best.astype(np.float32)

    def honest_block(self, base: F32, copyable: Sequence[F32]) -> list[_Update]:
        """An honest miner's block: one update per contributor, established bonds first."""
        slots = self.spec.max_updates_per_block
        arrival = [int(i) for i in self.order.permutation(self.config.participants)]
        contributors: list[int] = list(arrival)
        if self.config.attack == "copy":  # bonded with the honest ones, arrives in between
            contributors.insert(int(self.order.integers(0, len(contributors) + 1)), COPIER)
        if self.config.attack == "sybil-flood":
            contributors += [SYBIL] * self.config.sybils  # bonded later: after every honest one
        chosen = contributors[:slots]
        updates = [
            _Update(who, self.train(self.people[who], base)) for who in chosen if who >= 0
        ]
        poison = self.poison(base) if SYBIL in chosen else None
        for who in chosen:
            if who == SYBIL and poison is not None:
                updates.append(_Update(SYBIL, poison))
            elif who == COPIER:
                updates.append(self._copy(updates, copyable))
        return updates

    def _copy(self, updates: list[_Update], copyable: Sequence[F32]) -> _Update:
        """The copier's update: a same-block copy (no commit-reveal) or a reveal ``copy_lag`` rounds old.

        The old reveal is a clone within the chain's clone window, a stale
        update the rules cannot tell from an honest one past it.
        """
        if self.config.delay == 0:
            honest = [u for u in updates if u.sender >= 0]
            if honest:
                victim = honest[int(self.order.integers(0, len(honest)))]
                return _Update(COPIER, victim.delta.copy())
        clone = self.config.copy_lag <= CLONE_WINDOW_ROUNDS
        if copyable:
            old = copyable[int(self.order.integers(0, len(copyable)))]
            return _Update(COPIER, old.copy(), clone=clone)
        return _Update(COPIER, np.zeros(self.spec.param_count, dtype=np.float32), clone=True)

    def attacker_block(self, base: F32, poison: F32 | None) -> list[_Update]:
        """The attacking miner's block (miner-poison: its poison in every slot; censor: one honest update)."""
        if self.config.attack == "miner-poison" and poison is not None:
            return [_Update(-3, poison) for _ in range(self.spec.max_updates_per_block)]
        return [_Update(-3, self.train(self.attacker, base))]  # censor

    def vote(self, updates: list[_Update]) -> tuple[F32, list[tuple[int, bool]]]:
        """The block's vote and, per update, (sender, counted by the block's rule)."""
        kept = [u for u in updates if not u.clone]
        rows = np.stack([u.delta for u in kept]) if kept else None
        result = block_vote(
            self.spec.rule,
            rows,
            f=self.spec.f,
            size=self.spec.param_count,
            counted=_chain_counted,
            **self.spec.rule_kwargs(),
        )
        verdicts = [(u.sender, bool(c)) for u, c in zip(kept, result.counted, strict=True)]
        verdicts += [(u.sender, False) for u in updates if u.clone]
        return result.vote, verdicts


def _chain_counted(rule: str, updates: F32, agg: F32, mask: npt.NDArray[np.bool_]) -> Any:
    """The chain's payout mask, read from the rule's record: inliers, the rule's own pick, or all."""
    pays = parse_rule(rule).pays
    if pays is Pays.INLIERS:
        return inliers(updates, agg, factor=BLOCK_OUTLIER_FACTOR)
    if pays is Pays.SELECTED:
        return mask
    return np.ones(updates.shape[0], dtype=np.bool_)


def run_chain_simulation(
    config: ChainSimConfig, progress: Callable[[RoundLog], None] | None = None
) -> ChainSimResult:
    """Mine ``config.rounds`` rounds of ``config.round_blocks`` blocks and return every round's log.

    Raises
    ------
    ValueError
        For a config the task cannot run (a regression task).
    """
    chain = _Chain(config)
    spec, w = chain.spec, config.round_blocks
    initial = evaluate(spec, chain.params, chain.dataset)["accuracy"]
    bases: list[F32] = [chain.params.copy()]  # model at the start of each round
    previous = np.zeros(spec.param_count, dtype=np.float32)
    reveals: list[list[F32]] = []  # honest updates of each round so far (what a copier copies)
    logs: list[RoundLog] = []
    for r in range(config.rounds):
        base = bases[r - config.delay] if r >= config.delay else None
        hashrate = config.hashrate if config.attack in HASHRATE_ATTACKS else 0.0
        attacker_blocks = chain.miners.random(w) < hashrate
        poison = chain.poison(base) if base is not None and attacker_blocks.any() else None
        votes = np.zeros((w, spec.param_count), dtype=np.float32)
        block_verdicts: list[list[tuple[int, bool]]] = []
        copyable = reveals[r - config.copy_lag] if r >= config.copy_lag else []
        round_reveals: list[F32] = []
        for b in range(w):
            if base is None:
                block_verdicts.append([])
                continue
            if attacker_blocks[b]:
                updates = chain.attacker_block(base, poison)
            else:
                updates = chain.honest_block(base, copyable)
            votes[b], verdicts = chain.vote(updates)
            block_verdicts.append(verdicts)
            round_reveals += [u.delta for u in updates if u.sender >= 0]
        result = aggregate_votes(config.vote_rule, votes, previous=previous)
        gated = chain.step(result.aggregate)
        previous = np.zeros_like(result.aggregate) if gated else result.aggregate
        bases.append(chain.params.copy())
        reveals.append(round_reveals)
        _pay(chain, block_verdicts, result.counted & (not gated))
        accuracy = evaluate(spec, chain.params, chain.dataset)["accuracy"]
        zero = sum(1 for row in votes if not row.any())
        log = RoundLog(
            round=r + 1,
            height=(r + 1) * w,
            attacker_blocks=int(attacker_blocks.sum()),
            zero_votes=zero,
            counted_votes=int(result.counted.sum()),
            attacker_votes_counted=int((result.counted & attacker_blocks).sum()),
            radius=result.radius,
            accuracy=accuracy,
            gated=gated,
        )
        logs.append(log)
        if progress is not None:
            progress(log)
    return ChainSimResult(
        config=config,
        initial=initial,
        rounds=tuple(logs),
        paid=chain.paid,
        included=chain.included,
        params=chain.params,
    )


def _pay(
    chain: _Chain, block_verdicts: list[list[tuple[int, bool]]], votes_counted: npt.NDArray[np.bool_]
) -> None:
    """Credit each update counted by its block's rule whose block's vote the round counted."""
    for verdicts, vote_ok in zip(block_verdicts, votes_counted, strict=True):
        for sender, counted in verdicts:
            if sender in chain.included:
                chain.included[sender] += 1
                if counted and vote_ok:
                    chain.paid[sender] += 1


@dataclass(frozen=True)
class SeedRun:
    """One finished run of a sweep: its share, seed, final accuracy and what the attacker got."""

    hashrate: float
    seed: int
    final: float
    attacker_blocks: int
    attacker_votes_counted: int
    gated_rounds: int
    paid: dict[int, int]

    @classmethod
    def of(cls, result: ChainSimResult) -> SeedRun:
        """The figures a sweep keeps of ``result``."""
        return cls(
            hashrate=result.config.hashrate,
            seed=result.config.seed,
            final=result.final,
            attacker_blocks=sum(r.attacker_blocks for r in result.rounds),
            attacker_votes_counted=sum(r.attacker_votes_counted for r in result.rounds),
            gated_rounds=sum(r.gated for r in result.rounds),
            paid=dict(result.paid),
        )


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy at one attacker share: the worst final figure over seeds, and each run."""

    hashrate: float
    runs: tuple[SeedRun, ...]

    @property
    def worst(self) -> float:
        """The lowest final accuracy over the seeds."""
        return min(r.final for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures of this point."""
        return {
            "hashrate": self.hashrate,
            "worst": self.worst,
            "finals": [r.final for r in self.runs],
            "seeds": [r.seed for r in self.runs],
            "attacker_blocks": sum(r.attacker_blocks for r in self.runs),
            "attacker_votes_counted": sum(r.attacker_votes_counted for r in self.runs),
            "gated_rounds": sum(r.gated_rounds for r in self.runs),
        }


def _run_seed(config: ChainSimConfig) -> SeedRun:
    return SeedRun.of(run_chain_simulation(config))


def sweep(
    config: ChainSimConfig,
    shares: Sequence[float],
    seeds: Sequence[int],
    *,
    workers: int = 1,
    progress: Callable[[SeedRun], None] | None = None,
) -> list[CurvePoint]:
    """Final accuracy against the attacker's share of the blocks, every seed at every share.

    Each run is an independent seeded simulation, so the curve is the same
    for any ``workers`` count (processes).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [replace(config, hashrate=share, seed=seed) for share in shares for seed in seeds]
    if workers == 1:
        runs: Iterable[SeedRun] = map(_run_seed, jobs)
        return _collect(runs, shares, progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return _collect(pool.map(_run_seed, jobs), shares, progress)


def _collect(
    runs: Iterable[SeedRun], shares: Sequence[float], progress: Callable[[SeedRun], None] | None
) -> list[CurvePoint]:
    by_share: dict[float, list[SeedRun]] = {share: [] for share in shares}
    for run in runs:
        by_share[run.hashrate].append(run)
        if progress is not None:
            progress(run)
    return [CurvePoint(share, tuple(by_share[share])) for share in shares]
