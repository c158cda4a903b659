"""How well a chain of learners learns: accuracy per round and per second on digits.

Four ways to train the digits task's softmax model, each curve recorded per
round (block height, federated round or epoch) and per wall-clock second:

chain
    Three in-process regtest nodes, full mesh on loopback, each with the
    node trainer on its own shard (``NodeConfig(train=True, shard=(i, 3))``).
    The benchmark is the miner: node 0 mines and funds the others' bonds;
    before each block it waits until node 0's mempool holds what every
    trainer owes the next block (its bond, this round's commitment, the next
    reveal of last round's), mines one block on node 0 (on demand, so the
    run is bounded), waits until every node has connected it, and evaluates
    the tip model. This is the real node software: bonding, training,
    commit-reveal, signing, gossip, fair inclusion, validation, the task's
    rule (median) per block and its vote rule per round, storage.
fedavg
    What a Flower user would run instead: the same local trainer
    (:func:`ml.trainer.train_update`) on three shards, each client returning
    its new weights with its example count, averaged by Flower's own
    ``flwr.server.strategy.aggregate.aggregate`` (FedAvg, weighted by
    examples), in a plain in-process loop. No chain, no network.
centralised
    :func:`ml.trainer.train_central` on the whole training split, one epoch
    per point: the ceiling a federation tries to reach.
robust rules under attack
    :func:`ml.simulation.run_simulation` with ten nodes, three of them
    sign-flip attackers (30 %) publishing the reversed update at the norm
    bound, once per rule in ``ml.aggregation.RULES`` at run time (``mean``
    included as the undefended reference). ``f`` is the number of attackers;
    a rule that cannot run with that many (Bulyan needs ``n >= 4f + 3``) uses
    the largest ``f`` it accepts, recorded per round as ``f_used``. The
    ratio is against the same simulation with no attackers and rule mean
    (clean FedAvg with equal weights).

A last figure, ``learning_attack_curves.png``, runs the chain again with four
nodes, one of them a sign-flip attacker pushing its update to the norm
bound, under the task's rule (median) and under mean.

Seeds: every run is repeated for each of :data:`SEEDS` (the chain's node
keys, hence its trainers' random streams, the FedAvg and centralised
shuffles, the simulation's seed), and each figure is the mean of the final
accuracies with their standard deviation as its spread. The plots show the
first seed's curves.

Ratios: chain and FedAvg final accuracy against the centralised model's
final accuracy (the centralised model is their baseline, not a figure of its
own); each robust rule's accuracy under attack against clean FedAvg; the
median chain under attack against the same chain with rule mean. > 1 means
better than the baseline.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmarks.common import Headline, results_dir, write_result
from consensus.block import decode_block
from consensus.tx import GradientUpdate, Transfer, encode_tx, sign_tx
from ml.aggregation import RULES
from ml.datasets import Dataset, load_dataset
from ml.evaluate import evaluate
from ml.models import init_params
from ml.shards import shard
from ml.simulation import SimConfig, run_simulation
from ml.tasks import TaskSpec, builtin_task
from ml.trainer import train_central, train_update
from node.contributor import KeyStatus
from node.service import Node
from node.training import Trainer
from tests.node.harness import Cluster, connect, mine, wait_same_tip
from wallet import address_bytes

TASK = "digits"
METRIC = "accuracy"
CHAIN_NODES = 3
ATTACK_NODES = 4  # the attack-curve chain: one sign-flip attacker among four
ATTACK = "sign-flip"
# The node trainer multiplies its reversed delta by this, then clips it to the
# norm bound: the bound-aware attacker of ml.simulation, at the bound.
ATTACK_SCALE = 1e3
SIM_NODES = 10
BYZANTINE_SHARE = 0.3
UPDATE_WAIT_S = 30.0  # mine anyway when a trainer has not delivered by then (recorded)
POLL_S = 0.01
SEEDS = (0, 1, 2)
QUICK_SEEDS = (0, 1)


@dataclass(frozen=True)
class Sizes:
    """Heights, rounds and epochs: small in quick mode so the run takes seconds."""

    chain_heights: int
    attack_heights: int
    rounds: int
    epochs: int


FULL = Sizes(chain_heights=96, attack_heights=96, rounds=40, epochs=40)  # chain: 12 rounds of 8
QUICK = Sizes(chain_heights=3, attack_heights=3, rounds=3, epochs=2)


@dataclass
class Curve:
    """Accuracy after each step (height, round or epoch) and the seconds since the start."""

    label: str
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> float:
        return self.accuracy[-1] if self.accuracy else float("nan")


# -- chain ----------------------------------------------------------------------------------
def _settled(node: Node, members: Sequence[Node]) -> bool:
    """On the chain thread: ``node``'s mempool holds what every member's trainer owes the next block."""
    chain, task, pool = node.chain, node.chain.task, node.mempool
    for member in members:
        address = address_bytes(member.keypair.public)
        status = KeyStatus.read(
            task, chain.state.task, address, height=chain.height + 1,
            balance=chain.state.account(address).balance, next_nonce=pool.next_nonce(address, chain),
            pooled=[e.tx for e in pool.pending(address)],
        )
        if not status.settled(task.bond_amount):
            return False
    return True


async def _wait_settled(node: Node, members: Sequence[Node]) -> bool:
    """True once ``node`` pools every member's due transactions; False after UPDATE_WAIT_S."""
    deadline = time.monotonic() + UPDATE_WAIT_S
    while not await node.run_chain(_settled, node, members):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def _fund(miner: Node, members: Sequence[Node]) -> None:
    """The miner sends every other member a bond's worth (they do not mine)."""
    chain = miner.chain
    nonce = await miner.run_chain(miner.mempool.next_nonce, address_bytes(miner.keypair.public), chain)
    for member in members:
        if member is miner:
            continue
        tx = Transfer(miner.keypair.public, nonce, address_bytes(member.keypair.public), chain.task.bond_amount, 0)
        await miner.submit_tx(encode_tx(sign_tx(tx, miner.keypair, chain.signing_tag)), source=None)
        nonce += 1


async def chain_curve(base: pathlib.Path, label: str, *, nodes: int, heights: int,
                      rule: str | None = None, attackers: int = 0) -> Curve:
    """Train on a chain of ``nodes`` in-process nodes for ``heights`` blocks mined on demand."""
    spec, dataset = _task()
    cluster = Cluster(base / label)
    curve = Curve(label, extra={"nodes": nodes, "attackers": attackers, "rule": rule or spec.rule,
                                "updates_per_block": [], "short_blocks": 0})
    try:
        members = []
        for i in range(nodes):
            overrides: dict[str, Any] = {"shard": (i, nodes), "rule": rule}
            if i < attackers:
                overrides |= {"attack": ATTACK, "attack_scale": ATTACK_SCALE}
            members.append(await cluster.start(f"{label}-{i}", **overrides))
        for a, b in itertools.combinations(members, 2):
            await connect(a, b)
        # Trainers start once the mesh is up: an update pooled before its node has
        # peers is never relayed (peers exchange no mempool on connect), and median
        # with f=1 leaves the model unchanged in a block of fewer than 3 updates.
        for member in members:
            member.config.train = True
            member.trainer = Trainer(member)
            await member.trainer.start()
        miner = members[0]
        await mine(miner, 1)  # the miner's first reward funds the others' bonds
        await wait_same_tip(members)
        await _fund(miner, members)
        start = time.perf_counter()
        for _ in range(heights):
            if not await _wait_settled(miner, members):
                curve.extra["short_blocks"] += 1
            await mine(miner, 1)
            await wait_same_tip(members)
            params = await miner.run_chain(lambda: np.array(miner.chain.state.params))
            curve.extra["updates_per_block"].append(await miner.run_chain(_updates_in_tip, miner))
            curve.accuracy.append(evaluate(spec, params, dataset)[METRIC])
            curve.seconds.append(time.perf_counter() - start)
        return curve
    finally:
        await cluster.stop()


def _updates_in_tip(node: Node) -> int:
    raw = node.chain.get_raw_block(node.chain.tip.hash)
    if raw is None:
        raise RuntimeError("the tip's body is missing from storage")
    return sum(1 for tx in decode_block(raw).txs if isinstance(tx, GradientUpdate))


# -- baselines ------------------------------------------------------------------------------
def _task() -> tuple[TaskSpec, Dataset]:
    spec = builtin_task(TASK)
    return spec, load_dataset(spec)


def flower_fedavg_curve(nodes: int, rounds: int, seed: int) -> Curve:
    """FedAvg with Flower's ``aggregate`` (weighted by examples) over the node trainer, in a loop."""
    from flwr.server.strategy.aggregate import aggregate as flwr_aggregate

    spec, dataset = _task()
    shards = [shard(dataset, i, nodes) for i in range(nodes)]
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(nodes)]
    params = init_params(spec)
    curve = Curve("fedavg (flwr aggregate)")
    start = time.perf_counter()
    for _ in range(rounds):
        results = []
        for (X, y), rng in zip(shards, rngs, strict=True):
            delta = train_update(spec, params, X, y, rng=rng)
            results.append(([(params - delta).astype(np.float32)], len(y)))
        params = np.asarray(flwr_aggregate(results)[0], dtype=np.float32)
        curve.accuracy.append(evaluate(spec, params, dataset)[METRIC])
        curve.seconds.append(time.perf_counter() - start)
    return curve


def central_curve(epochs: int, seed: int) -> Curve:
    """Centralised minibatch SGD, one point per epoch, with the task's learning rate and batch."""
    spec, dataset = _task()
    params = init_params(spec)
    curve = Curve("centralised")
    start = time.perf_counter()
    for epoch in range(epochs):
        params = train_central(spec, dataset, epochs=1, lr=spec.lr, batch_size=spec.batch_size,
                               seed=seed * epochs + epoch, params=params)
        curve.accuracy.append(evaluate(spec, params, dataset)[METRIC])
        curve.seconds.append(time.perf_counter() - start)
    return curve


def simulation_curve(label: str, config: SimConfig) -> Curve:
    """One :func:`run_simulation`, timed per round through its progress callback."""
    curve = Curve(label)
    start = time.perf_counter()
    result = run_simulation(config, progress=lambda _: curve.seconds.append(time.perf_counter() - start))
    curve.accuracy = result.curve
    curve.extra = {"config": asdict(config), "rule": result.rule, "f": result.f,
                   "f_used": [r.f_used for r in result.rounds], "rejected": [r.rejected for r in result.rounds]}
    return curve


def robust_rule_curves(rounds: int, seed: int) -> tuple[Curve, dict[str, Curve]]:
    """Clean FedAvg (rule mean) and every registered rule with 30 % sign-flip attackers."""
    clean = simulation_curve("clean mean", SimConfig(task=TASK, nodes=SIM_NODES, rule="mean",
                                                     rounds=rounds, seed=seed))
    attacked = {
        rule: simulation_curve(f"{rule}, 30% {ATTACK}", SimConfig(
            task=TASK, nodes=SIM_NODES, rule=rule, attack=ATTACK, byzantine=BYZANTINE_SHARE,
            rounds=rounds, seed=seed))
        for rule in sorted(RULES)
    }
    return clean, attacked


# -- output ---------------------------------------------------------------------------------
def _plot_pair(curves: Sequence[Curve], path: pathlib.Path, title: str, x_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(13, 4.8))
    for curve in curves:
        steps = range(1, len(curve.accuracy) + 1)
        by_step.plot(steps, curve.accuracy, "-", marker=".", label=curve.label)
        by_time.plot(curve.seconds, curve.accuracy, "-", marker=".", label=curve.label)
    by_step.set_xlabel(x_label)
    by_time.set_xlabel("wall-clock seconds")
    by_time.set_xscale("symlog", linthresh=0.1)
    for axis in (by_step, by_time):
        axis.set_ylabel("test accuracy")
        axis.set_ylim(0, 1)
        axis.grid(True, alpha=0.3)
    by_step.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curve_dict(curve: Curve) -> dict[str, Any]:
    return {"label": curve.label, "accuracy": curve.accuracy, "seconds": curve.seconds,
            "final": curve.final, **curve.extra}


async def _chain_runs(sizes: Sizes, seed: int) -> tuple[Curve, Curve, Curve]:
    """The three chains of one seed; the seed names the nodes, so it picks their keys."""
    with tempfile.TemporaryDirectory(prefix="gradchain-bench-learn-") as tmp:
        base = pathlib.Path(tmp)
        chain = await chain_curve(base, f"chain-s{seed}", nodes=CHAIN_NODES, heights=sizes.chain_heights)
        chain.label = f"chain ({CHAIN_NODES} nodes, median)"
        defended = await chain_curve(base, f"median-s{seed}", nodes=ATTACK_NODES, heights=sizes.attack_heights,
                                     rule="median", attackers=1)
        defended.label = f"chain, rule median, 1 {ATTACK} of {ATTACK_NODES}"
        undefended = await chain_curve(base, f"mean-s{seed}", nodes=ATTACK_NODES, heights=sizes.attack_heights,
                                       rule="mean", attackers=1)
        undefended.label = f"chain, rule mean, 1 {ATTACK} of {ATTACK_NODES}"
        return chain, defended, undefended


def _step(what: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    print(f"  {what}: {time.perf_counter() - start:.1f} s", flush=True)
    return out


@dataclass
class SeedRuns:
    """The curves of one seed."""

    central: Curve
    fedavg: Curve
    chain: Curve
    defended: Curve
    undefended: Curve
    clean: Curve
    attacked: dict[str, Curve]


def one_seed(sizes: Sizes, seed: int) -> SeedRuns:
    central = _step(f"seed {seed}: centralised", lambda: central_curve(sizes.epochs, seed))
    fedavg = _step(f"seed {seed}: fedavg (flwr)", lambda: flower_fedavg_curve(CHAIN_NODES, sizes.rounds, seed))
    chain, defended, undefended = _step(f"seed {seed}: chain runs", lambda: asyncio.run(_chain_runs(sizes, seed)))
    clean, attacked = _step(f"seed {seed}: robust rules", lambda: robust_rule_curves(sizes.rounds, seed))
    return SeedRuns(central, fedavg, chain, defended, undefended, clean, attacked)


def over_seeds(name: str, values: list[float], baseline: str, bases: list[float]) -> Headline:
    """Mean final accuracy over seeds, its standard deviation, against the baselines' mean."""
    mean, base = statistics.fmean(values), statistics.fmean(bases)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return Headline(name, mean, "accuracy", baseline, mean / base, baseline_value=base, spread=spread,
                    samples=len(values))


def run(quick: bool = False) -> list[Headline]:
    sizes = QUICK if quick else FULL
    seeds = QUICK_SEEDS if quick else SEEDS
    runs = [one_seed(sizes, seed) for seed in seeds]
    first = runs[0]
    folder = results_dir()
    _plot_pair([first.chain, first.fedavg, first.central], folder / "learning.png",
               f"{TASK}: chain of {CHAIN_NODES} vs Flower FedAvg of {CHAIN_NODES} vs centralised (seed {seeds[0]})",
               "height / round / epoch")
    _plot_pair([first.clean, *first.attacked.values()], folder / "learning_rules.png",
               f"{TASK}: {SIM_NODES} nodes, {BYZANTINE_SHARE:.0%} {ATTACK} attackers (simulation, seed {seeds[0]})",
               "round")
    _plot_pair([first.defended, first.undefended], folder / "learning_attack_curves.png",
               f"{TASK} chain: 1 {ATTACK} attacker (update at the norm bound) among {ATTACK_NODES} nodes",
               "height")

    def finals(pick: Callable[[SeedRuns], Curve]) -> list[float]:
        return [pick(r).final for r in runs]

    central = finals(lambda r: r.central)
    central_name = f"centralised SGD, {sizes.epochs} epochs (mean over seeds)"
    headlines = [
        over_seeds("learning_chain_final_accuracy", finals(lambda r: r.chain), central_name, central),
        over_seeds("learning_fedavg_final_accuracy", finals(lambda r: r.fedavg), central_name, central),
        over_seeds("learning_chain_median_1of4_signflip_accuracy", finals(lambda r: r.defended),
                   "same chain, rule mean", finals(lambda r: r.undefended)),
    ]
    clean_name = f"clean FedAvg (mean, {SIM_NODES} nodes, no attack)"
    clean = finals(lambda r: r.clean)
    # A rule that never ran (Bulyan needs n >= 4f + 3 = 15 for 3 attackers of 10) has
    # no figure of its own: its "accuracy" would only be the untrained model's.
    ran = sorted(rule for rule in first.attacked
                 if all(any(f >= 0 for f in r.attacked[rule].extra["f_used"]) for r in runs))
    for rule in sorted(set(first.attacked) - set(ran)):
        print(f"  {rule}: cannot run with f={first.attacked[rule].extra['f']} on {SIM_NODES} nodes; no headline")
    headlines += [over_seeds(f"learning_{rule}_30pct_accuracy", [r.attacked[rule].final for r in runs],
                             clean_name, clean) for rule in ran]
    for h in headlines:
        print(f"  {h.name}: {h.value:.3f} ± {h.spread:.3f} over {h.samples} seeds "
              f"(baseline {h.baseline_value:.3f})", flush=True)
    write_result("learning", {
        "params": {**asdict(sizes), "task": TASK, "chain_nodes": CHAIN_NODES, "attack_nodes": ATTACK_NODES,
                   "attack": ATTACK, "attack_scale": ATTACK_SCALE, "sim_nodes": SIM_NODES,
                   "byzantine_share": BYZANTINE_SHARE, "seeds": list(seeds), "quick": quick,
                   "fedavg": "flwr.server.strategy.aggregate.aggregate over ml.trainer.train_update"},
        "curves": {str(seed): {name: _curve_dict(c) for name, c in (
            ("chain", r.chain), ("fedavg", r.fedavg), ("centralised", r.central), ("clean_mean", r.clean),
            ("chain_attack_median", r.defended), ("chain_attack_mean", r.undefended))}
            for seed, r in zip(seeds, runs, strict=True)},
        "attacked": {str(seed): {rule: _curve_dict(c) for rule, c in r.attacked.items()}
                     for seed, r in zip(seeds, runs, strict=True)},
        "headlines": [h.as_dict() for h in headlines],
    })
    return headlines
