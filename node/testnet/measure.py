"""`gradchain testnet measure`: run a testnet with an attacker and record what the chain made of it.

The README's security figures come from here (issue 18): the launcher starts
the same nodes ``make testnet`` does, and every few seconds the measurement
asks the first honest node's ``/api/predict`` for the digits test split, as
any user of the model would. At the deadline it reads the chain from that
node's API: who mined each block and what the round made of its vote
(counted / rejected / zero / gated), and what each participant's keys were
paid as contributors. Nothing is taken from the nodes' internals, so the
figures are what the public surface shows.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.datasets import load_dataset
from ml.tasks import TaskSpec
from node.client import ApiError, NodeClient
from node.keystore_file import read_keystore
from node.testnet.launcher import NodeEntry, TestnetPlan, down, testnet_password, up
from node.training import participant_keys
from wallet import address_of

POLL_S = 5.0  # between two accuracy polls
API_TIMEOUT_S = 30.0  # a predict over the whole test split on a busy box


@dataclass
class Sample:
    """One poll of the first honest node: seconds since the start, its height, the tip model's accuracy,
    and the machine's 1-minute load average then (the figures are only as good as the CPU they had)."""

    t: float
    height: int
    accuracy: float
    load: float


@dataclass
class Participant:
    """One node of the testnet as the chain saw it."""

    name: str
    attacker: bool
    keys: int
    blocks: int = 0  # main-chain blocks it mined
    miner_paid: int = 0  # coins its blocks' coinbases paid it as their miner (reward and fees)
    votes: dict[str, int] = field(default_factory=dict)  # its blocks' votes by round outcome
    updates_carried: int = 0  # updates in its blocks
    contributor_paid: int = 0  # coins its keys earned as contributors
    updates_paid: int = 0  # paid updates of its keys


@dataclass
class Report:
    plan: dict[str, Any]
    goal: float
    deadline_s: float
    elapsed_s: float  # the deadline, or less when the goal held for the hold time
    samples: list[Sample]
    reached_goal_s: float | None  # first poll at or above the goal
    final_accuracy: float
    final_height: int
    participants: list[Participant]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def accuracy(client: NodeClient, X: np.ndarray, y: np.ndarray, height: int) -> float:
    """Share of ``X`` the model at ``height`` labels as ``y``, asked through ``/api/predict``."""
    predictions = np.asarray(client.predict(X, height=height))
    return float(np.mean(predictions == y))


def addresses_of(entry: NodeEntry, plan: TestnetPlan, task: TaskSpec, password: str) -> list[str]:
    """Every address the node contributes under (an attacker's extra keys derive from its main key)."""
    main = read_keystore(pathlib.Path(entry.datadir) / "wallet.json", password)
    role = plan.attack if entry.attacker else None
    return [address_of(k.public) for k in participant_keys(main, role, task)]


def tally(client: NodeClient, height: int, owners: dict[str, Participant]) -> None:
    """Walk blocks 1..height: who mined each, its vote's outcome, and miner and contributor payouts per owner."""
    for h in range(1, height + 1):
        block = client.block(h)
        payouts = block["txs"][0]["payouts"]
        miner = owners.get(payouts[0]["address"])
        if miner is not None:
            miner.blocks += 1
            miner.miner_paid += int(payouts[0]["amount"])
            status = "open" if block["vote"] is None else block["vote"]["status"]
            miner.votes[status] = miner.votes.get(status, 0) + 1
            miner.updates_carried += sum(1 for tx in block["txs"] if tx["type"] == "update")
        for payout in payouts[1:]:
            owner = owners.get(payout["address"])
            if owner is not None:
                owner.contributor_paid += int(payout["amount"])
                owner.updates_paid += 1


def held(samples: list[Sample], goal: float, hold_s: float) -> bool:
    """True once the latest polls have stayed at or above ``goal`` for ``hold_s`` seconds."""
    since = None
    for sample in samples:
        since = (since if since is not None else sample.t) if sample.accuracy >= goal else None
    return since is not None and samples[-1].t - since >= hold_s


def measure(directory: pathlib.Path, plan: TestnetPlan, task: TaskSpec, *, goal: float, deadline_s: float,
            base_port: int, hold_s: float | None = None,
            progress: Callable[[Sample], None] = lambda s: None) -> Report:
    """Start a fresh testnet of ``plan`` in ``directory``, poll it for ``deadline_s`` (or until the
    accuracy has held the goal for ``hold_s``), tally, stop it."""
    data = load_dataset(task)
    entries = up(directory, plan, fresh=True, base_port=base_port)
    try:
        honest = next(e for e in entries if not e.attacker)
        client = NodeClient(honest.api, timeout=API_TIMEOUT_S)
        started = time.monotonic()
        samples: list[Sample] = []
        while (elapsed := time.monotonic() - started) < deadline_s:
            try:
                height = int(client.status()["height"])
                score = accuracy(client, data.X_test, data.y_test, height)
                sample = Sample(round(elapsed, 1), height, score, round(os.getloadavg()[0], 2))
            except ApiError:  # still starting
                sample = None
            if sample is not None:
                samples.append(sample)
                progress(sample)
                if hold_s is not None and held(samples, goal, hold_s):
                    break
            time.sleep(max(0.0, min(POLL_S, deadline_s - (time.monotonic() - started))))
        final_height = int(client.status()["height"])
        final = accuracy(client, data.X_test, data.y_test, final_height)
        elapsed = time.monotonic() - started
        password = testnet_password(directory)
        participants = []
        owners: dict[str, Participant] = {}
        for entry in entries:
            addresses = addresses_of(entry, plan, task, password)
            who = Participant(entry.name, entry.attacker, len(addresses))
            participants.append(who)
            owners.update(dict.fromkeys(addresses, who))
        tally(client, final_height, owners)
    finally:
        down(directory)
    reached = next((s.t for s in samples if s.accuracy >= goal), None)
    return Report(asdict(plan), goal, deadline_s, round(elapsed, 1), samples, reached, final, final_height,
                  participants)


def summary(report: Report) -> str:
    """The figures in a few lines, for the terminal and the README."""
    plan = report.plan
    reached = "never" if report.reached_goal_s is None else f"after {report.reached_goal_s:.0f} s"
    loads = [s.load for s in report.samples]
    load = f"; load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    lines = [
        f"{plan['nodes']} nodes, {plan['attackers']} attacker(s) ({plan['attack']}), {plan['task']}: "
        f"{report.final_accuracy:.3f} at height {report.final_height} after {report.elapsed_s:.0f} s; "
        f">= {report.goal:.2f} {reached}{load}",
    ]
    for p in report.participants:
        votes = ", ".join(f"{k} {v}" for k, v in sorted(p.votes.items()))
        lines.append(f"  {p.name}{' (attacker)' if p.attacker else ''}: {p.keys} key(s), mined {p.blocks} "
                     f"blocks [{votes}], carried {p.updates_carried} updates; paid {p.updates_paid} updates "
                     f"= {p.contributor_paid} as a contributor, {p.miner_paid} as a miner")
    return "\n".join(lines)


def write_report(report: Report, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")

