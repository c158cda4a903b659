"""Federated rounds in one process, no chain: how well does a rule hold up under an attack?

One round of the simulation is what one block does on the chain, minus mining
and gossip:

1. every node trains :func:`ml.trainer.train_update` on its own shard, from
   the current parameters (label-flip attackers train on flipped labels,
   or negated targets on a regression task);
2. the attackers -- nodes ``0 .. n_byzantine - 1`` -- replace their delta
   with :func:`ml.attacks.attack`, seeing the honest deltas of the round;
3. every delta travels through the wire codec (:mod:`ml.codec`) and the
   consensus checks (:func:`ml.checks.check_update`: shape, finiteness,
   norm bound); a delta that fails is dropped, as a miner never includes an
   invalid update in a block;
4. the task's rule aggregates what is left and the model moves,
   ``params <- params - server_lr * aggregate``, in float32;
5. the test split is evaluated (policy figures, numpy with BLAS).

``f`` defaults to the number of attackers. When fewer updates survive the
checks than the rule needs for that ``f`` (Krum needs ``n >= 2f + 3``), or
the rule tolerates none (``mean``), the round uses the largest ``f`` the rule
accepts; each round records the ``f`` it used.

Model-poisoning attackers know the chain's norm bound (it is in the task), so
by default they use it: sign-flip publishes the reversed delta at the bound
(``to_norm``), Gaussian noise is drawn with the per-coordinate std that puts
its norm just inside the bound, and IPM uses ``eps = nodes / attackers``
(enough to reverse the plain mean) capped so it passes the bound. Scaling
keeps its boost of 10 and is therefore rejected whenever the boosted delta
exceeds the bound, which is the point.
Explicit ``attack_params`` override these defaults.

The norm bound is itself a defence: it caps how far the attackers can pull
the mean each round (two sign-flippers of eight move it by at most
``2 * bound / 8``), so the honest majority settles the model where its own
pull balances that. ``SimConfig.norm_bound`` overrides the task's bound (for
the checks, the honest clipping and the attackers' defaults alike) to show
what each rule does without that help.

Rules that need more than the task's parameters get what the chain gives
them: ``centered_clip`` clips around the previous round's applied aggregate
(the chain's ``last_aggregate``, zero before the first), and ``bucket+``
rules shuffle with a seed derived from ``SimConfig.seed`` and the round
number (on the chain, from the parent block's hash). A rule other than the
task's gets :func:`default_rule_params` (``centered_clip``'s radius scales
with the task's norm bound).

A federation on the participants' own data (issue 19) passes
``own_data``: the task, one table per node and the evaluation set, in place
of a built-in task's shards.

Everything is seeded from ``SimConfig.seed``; this module reads no clock (the
CLI times the run) and no file beyond the task's package data.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ml.aggregation import AggregationError, aggregate, bucket_seed, is_rule
from ml.attacks import ATTACKS, attack, flip_labels, is_data_attack
from ml.checks import UpdateCheckError, check_update
from ml.codec import KINDS, decode_update, encode_update
from ml.datasets import Dataset, load_dataset
from ml.evaluate import evaluate, headline
from ml.models import init_params
from ml.shards import SCHEMES, shard
from ml.tasks import TaskSpec, builtin_task
from ml.trainer import NORM_MARGIN, train_update

__all__ = [
    "OwnData",
    "RoundRecord",
    "SimConfig",
    "SimResult",
    "default_rule_params",
    "n_attackers",
    "run_simulation",
]

F32 = npt.NDArray[np.float32]

NO_ATTACK = "none"
# Gaussian attackers aim the noise norm (about sigma * sqrt(d)) at this share of
# the bound, leaving room for the chi distribution's spread so it still passes.
GAUSSIAN_NORM_SHARE = 0.9
TOPK_FRACTION = 0.1  # values a "topk" codec keeps, as a share of the parameters
SHARD_KEY_PREFIX = b"gradchain-sim/"
# Each round's block "height" for the staleness check: updates are always fresh here.
FRESH_WINDOW_BLOCKS = 1
# centered_clip's radius as a share of the norm bound when the task does not set
# one: digits' bound 20 gives tau 2, about an honest delta's norm mid-training.
CCLIP_TAU_SHARE = 0.1
BUCKET_SEED_DOMAIN = b"gradchain-sim/bucket/"  # stands in for the parent block's hash


@dataclass(frozen=True)
class SimConfig:
    """One simulated federation.

    Parameters
    ----------
    task
        A built-in task name (``digits``, ``stock``).
    nodes
        Participants, honest and Byzantine.
    rule
        Aggregation rule (a key of ``ml.aggregation.RULES``, optionally after
        ``nnm+``/``bucket+``); None: the task's.
    attack
        One of ``ml.attacks.ATTACKS`` or ``"none"``.
    byzantine
        Share of the nodes that attack; ``round(byzantine * nodes)`` of them.
    rounds
        Federated rounds (blocks).
    f
        Byzantine bound given to the rule; None: the number of attackers.
    scheme, alpha
        Data split (``hash`` i.i.d. or ``dirichlet`` label skew with ``alpha``).
    seed
        Seeds shards, minibatches and attack noise.
    codec
        Wire kind every update travels as (``f32`` exact; ``f16``, ``int8``, ``topk`` lossy).
    attack_params
        ``(name, value)`` pairs passed to the attack, overriding the defaults.
    local_steps
        Override of the task's local SGD steps (None: the task's).
    norm_bound
        Override of the task's L2 bound on every update (None: the task's).
    """

    task: str = "digits"
    nodes: int = 8
    rule: str | None = None
    attack: str = NO_ATTACK
    byzantine: float = 0.0
    rounds: int = 100
    f: int | None = None
    scheme: str = "hash"
    alpha: float = 0.5
    seed: int = 0
    codec: str = "f32"
    attack_params: tuple[tuple[str, float], ...] = ()
    local_steps: int | None = None
    norm_bound: float | None = None

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"need at least one node, got {self.nodes}")
        if self.attack != NO_ATTACK and self.attack not in ATTACKS:
            raise ValueError(
                f"unknown attack {self.attack!r}; choose from none, {', '.join(ATTACKS)}"
            )
        if not 0.0 <= self.byzantine < 1.0:
            raise ValueError(f"byzantine is a share in [0, 1), got {self.byzantine}")
        if n_attackers(self) >= self.nodes:
            raise ValueError("at least one node must be honest")
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.rule is not None and not is_rule(self.rule):
            raise ValueError(
                f"unknown rule {self.rule!r}; choose a rule of ml.aggregation.RULES, "
                "optionally after nnm+ or bucket+"
            )
        if self.f is not None and self.f < 0:
            raise ValueError(f"f must be >= 0, got {self.f}")
        if self.scheme not in SCHEMES:
            raise ValueError(
                f"unknown shard scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}"
            )
        if self.codec not in KINDS:
            raise ValueError(f"unknown codec {self.codec!r}; choose from {', '.join(KINDS)}")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")
        if self.norm_bound is not None and not (
            math.isfinite(self.norm_bound) and self.norm_bound > 0
        ):
            raise ValueError(f"norm_bound must be a finite number > 0, got {self.norm_bound}")


def n_attackers(config: SimConfig) -> int:
    """``round(byzantine * nodes)``, half up; zero when there is no attack."""
    if config.attack == NO_ATTACK:
        return 0
    return math.floor(config.byzantine * config.nodes + 0.5)


@dataclass(frozen=True)
class OwnData:
    """A task trained on its participants' own tables: one ``(X, y)`` per node, and the test set."""

    spec: TaskSpec
    shards: tuple[tuple[npt.NDArray[np.float32], npt.NDArray[np.generic]], ...]
    test: Dataset


@dataclass(frozen=True)
class RoundRecord:
    """What one round did: test figures after it, updates kept and dropped, the f used.

    ``f_used`` is -1 when the rule could not run on the kept updates and the
    model stayed as it was.
    """

    round: int
    metrics: Mapping[str, float]
    accepted: int
    rejected: int
    f_used: int


@dataclass(frozen=True)
class SimResult:
    """A finished simulation: its config, the task it ran, and every round's record."""

    config: SimConfig
    spec: TaskSpec
    rule: str
    attackers: tuple[int, ...]
    f: int
    norm_bound: float
    initial_metrics: Mapping[str, float]
    rounds: tuple[RoundRecord, ...]
    rejections: Mapping[str, int]
    params: F32 = field(repr=False)

    @property
    def metric_name(self) -> str:
        """The headline figure of the task (:func:`ml.evaluate.headline`)."""
        return headline(self.spec)

    @property
    def curve(self) -> list[float]:
        """The headline figure after each round."""
        return [r.metrics[self.metric_name] for r in self.rounds]

    @property
    def final(self) -> float:
        """The headline figure after the last round (before any round if there were none)."""
        return (
            self.rounds[-1].metrics[self.metric_name]
            if self.rounds
            else self.initial_metrics[self.metric_name]
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: config, rule, attackers, per-round figures, final figure."""
        return {
            "config": asdict(self.config),
            "task": self.spec.name,
            "rule": self.rule,
            "f": self.f,
            "norm_bound": self.norm_bound,
            "attackers": list(self.attackers),
            "metric": self.metric_name,
            "initial": self.initial_metrics[self.metric_name],
            "final": self.final,
            self.metric_name: self.curve,
            "accepted": [r.accepted for r in self.rounds],
            "rejected": [r.rejected for r in self.rounds],
            "f_used": [r.f_used for r in self.rounds],
            "rejections": dict(self.rejections),
        }


@dataclass
class _Node:
    X: npt.NDArray[np.float32]
    y: npt.NDArray[np.generic]
    rng: np.random.Generator


def _default_attack_params(
    name: str, spec: TaskSpec, norm_bound: float, n_bad: int, nodes: int
) -> dict[str, float]:
    """What a bound-aware attacker uses when the caller does not say (see the module docstring)."""
    bound = NORM_MARGIN * norm_bound
    if name == "sign-flip":
        return {"to_norm": bound}
    if name == "gaussian":
        return {"sigma": GAUSSIAN_NORM_SHARE * bound / math.sqrt(spec.param_count)}
    if name == "alie":
        return {"f": float(n_bad)}
    if name == "ipm":
        # eps = n / f: the published sum turns to -f * mean, reversed, capped at the bound
        return {"eps": nodes / max(n_bad, 1), "to_norm": bound}
    return {}


def _attack_params(
    config: SimConfig, spec: TaskSpec, norm_bound: float, n_bad: int
) -> dict[str, Any]:
    params: dict[str, Any] = _default_attack_params(
        config.attack, spec, norm_bound, n_bad, config.nodes
    )
    given = dict(config.attack_params)
    if config.attack == "sign-flip" and "scale" in given:
        params.pop("to_norm", None)  # an explicit scale means a plain -scale * own
    params.update(given)
    if config.attack == "alie" and "f" in params:
        params["f"] = int(params["f"])
    return params


def _poisoned_targets(y: npt.NDArray[np.generic], dataset: Dataset, regress: bool) -> Any:
    """Label-flip's targets: flipped classes, or for regression the negated targets."""
    if regress:
        return (-np.asarray(y)).astype(np.asarray(y).dtype)  # predict the opposite move
    return flip_labels(np.asarray(y, dtype=np.int64), _n_classes(dataset))


def _make_nodes(
    config: SimConfig,
    dataset: Dataset,
    n_bad: int,
    seeds: list[np.random.SeedSequence],
    regress: bool,
    own: OwnData | None = None,
) -> list[_Node]:
    key = SHARD_KEY_PREFIX + str(config.seed).encode()
    nodes = []
    for i in range(config.nodes):
        X, y = own.shards[i] if own is not None else shard(
            dataset, i, config.nodes, config.scheme, alpha=config.alpha, seed=config.seed, key=key
        )
        if i < n_bad and is_data_attack(config.attack):
            y = _poisoned_targets(y, dataset, regress)
        nodes.append(_Node(X=X, y=y, rng=np.random.default_rng(seeds[i])))
    return nodes


def _n_classes(dataset: Dataset) -> int:
    return int(max(int(np.max(dataset.y_train)), int(np.max(dataset.y_test)))) + 1


def _through_the_wire(delta: F32, kind: str, size: int) -> F32:
    k = max(1, math.floor(TOPK_FRACTION * size)) if kind == "topk" else None
    return decode_update(encode_update(delta, kind, k=k), size)


def default_rule_params(rule: str, spec: TaskSpec, norm_bound: float) -> dict[str, Any]:
    """Parameters for ``rule`` when it is not the task's own (whose ``rule_params`` apply).

    ``centered_clip`` gets ``tau = CCLIP_TAU_SHARE * norm_bound``; the other
    rules run on their documented defaults.
    """
    if spec.rule == rule:
        return spec.rule_kwargs()
    if rule.split("+")[-1] == "centered_clip":
        return {"tau": CCLIP_TAU_SHARE * norm_bound}
    return {}


def _round_params(
    rule: str, base: Mapping[str, Any], seed: int, round_index: int, previous: F32
) -> dict[str, Any]:
    """What the chain adds per block: the reference point and the bucket seed."""
    params = dict(base)
    *stages, last = rule.split("+")
    if last == "centered_clip":
        params["reference"] = previous
    if "bucket" in stages:
        stand_in = hashlib.sha256(BUCKET_SEED_DOMAIN + f"{seed}/{round_index}".encode()).digest()
        params["seed"] = bucket_seed(stand_in)
    return params


def _aggregate_with_bound(
    rule: str, updates: F32, f: int, params: Mapping[str, Any]
) -> tuple[F32 | None, int]:
    """Aggregate with the Byzantine bound ``f``, or not at all, as the chain does.

    A round whose surviving updates are too few for the rule to tolerate
    ``f`` of them leaves the model unchanged, reported as ``(None, -1)``:
    with fewer, a lone attacker could steer the round. Plain ``mean``
    tolerates no attacker whatever ``f`` says and always runs with ``f = 0``.
    """
    f_rule = 0 if rule.split("+")[-1] == "mean" else f
    try:
        agg, _ = aggregate(rule, updates, f=f_rule, **params)
    except AggregationError:
        return None, -1
    return agg, f_rule


def run_simulation(
    config: SimConfig,
    progress: Callable[[RoundRecord], None] | None = None,
    *,
    own_data: OwnData | None = None,
) -> SimResult:
    """Run ``config.rounds`` federated rounds and return every round's record.

    Parameters
    ----------
    config
        What to simulate.
    progress
        Called with each round's record as soon as it is done (the CLI prints it).
    own_data
        The task and each node's own table (``config.task`` and ``scheme``
        are then unused); ``config.nodes`` must equal the number of tables.

    Raises
    ------
    ValueError
        For a config the task cannot run (for example a rule parameter it lacks).
    """
    if own_data is not None and len(own_data.shards) != config.nodes:
        raise ValueError(f"{len(own_data.shards)} tables for {config.nodes} nodes")
    spec = own_data.spec if own_data is not None else builtin_task(config.task)
    if config.local_steps is not None:
        # only the local trainer reads local_steps; the on-chain contract is untouched
        train_steps: int | None = config.local_steps
    else:
        train_steps = None
    rule = config.rule if config.rule is not None else spec.rule
    n_bad = n_attackers(config)
    f = n_bad if config.f is None else config.f
    dataset = own_data.test if own_data is not None else load_dataset(spec)
    root = np.random.SeedSequence(config.seed)
    node_seeds = root.spawn(config.nodes)
    attack_rng = np.random.default_rng(root.spawn(1)[0])
    nodes = _make_nodes(config, dataset, n_bad, node_seeds, spec.head == "regress", own_data)
    norm_bound = spec.norm_bound if config.norm_bound is None else config.norm_bound
    rule_params = default_rule_params(rule, spec, norm_bound)
    attack_params = _attack_params(config, spec, norm_bound, n_bad)
    d = spec.param_count
    server_lr = np.float32(spec.server_lr)

    params = init_params(spec)
    last_aggregate = np.zeros_like(params, dtype=np.float32)
    initial = evaluate(spec, params, dataset)
    records: list[RoundRecord] = []
    rejections: dict[str, int] = {}
    for t in range(config.rounds):
        own = [
            train_update(spec, params, n.X, n.y, rng=n.rng, steps=train_steps, clip_norm=norm_bound)
            for n in nodes
        ]
        honest = np.stack(own[n_bad:])
        published = [
            attack(config.attack, own[i], honest, attack_rng, **attack_params)
            if i < n_bad
            else own[i]
            for i in range(config.nodes)
        ]
        kept: list[F32] = []
        for delta in published:
            try:
                received = _through_the_wire(delta, config.codec, d)
                check_update(
                    received,
                    expected_size=d,
                    norm_bound=norm_bound,
                    base_height=t,
                    block_height=t + 1,
                    window=FRESH_WINDOW_BLOCKS,
                )
            except UpdateCheckError as exc:
                rejections[exc.problem.value] = rejections.get(exc.problem.value, 0) + 1
                continue
            kept.append(received)
        round_params = _round_params(rule, rule_params, config.seed, t, last_aggregate)
        agg, f_used = (
            (None, -1) if not kept else _aggregate_with_bound(rule, np.stack(kept), f, round_params)
        )
        if agg is not None:
            params = (params - server_lr * agg).astype(np.float32)
            last_aggregate = agg
        record = RoundRecord(
            round=t + 1,
            metrics=evaluate(spec, params, dataset),
            accepted=len(kept),
            rejected=config.nodes - len(kept),
            f_used=f_used,
        )
        records.append(record)
        if progress is not None:
            progress(record)
    return SimResult(
        config=config,
        spec=spec,
        rule=rule,
        attackers=tuple(range(n_bad)),
        f=f,
        norm_bound=norm_bound,
        initial_metrics=initial,
        rounds=tuple(records),
        rejections=rejections,
        params=params,
    )
