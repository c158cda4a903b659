"""`gradchain testnet measure`'s arithmetic: when a goal has held, and who the chain paid for what."""

from __future__ import annotations

from typing import Any

from node.testnet.measure import Participant, Report, Sample, held, summary, tally


def samples(*points: tuple[float, float]) -> list[Sample]:
    return [Sample(t, int(t), accuracy, 1.0) for t, accuracy in points]


def test_the_goal_holds_only_for_an_unbroken_run_of_polls_at_or_above_it() -> None:
    assert not held(samples((0, 0.5), (5, 0.94)), 0.93, 10)
    assert held(samples((0, 0.5), (5, 0.94), (15, 0.93)), 0.93, 10)
    assert not held(samples((0, 0.94), (5, 0.92), (10, 0.94), (15, 0.95)), 0.93, 10), "a dip restarts the clock"
    assert not held(samples((0, 0.94), (20, 0.95), (25, 0.90)), 0.93, 10), "the latest poll must be above"


class Chain:
    """What ``tally`` reads: ``/api/blocks/<h>`` of a short chain."""

    def __init__(self, blocks: list[dict[str, Any]]) -> None:
        self.blocks = blocks

    def block(self, height: int) -> dict[str, Any]:
        return self.blocks[height - 1]


def block(miner: str, status: str | None, updates: int, paid: list[str]) -> dict[str, Any]:
    payouts = [{"address": miner, "amount": 50}] + [{"address": a, "amount": 1} for a in paid]
    txs = [{"type": "coinbase", "payouts": payouts}] + [{"type": "update"}] * updates
    return {"vote": None if status is None else {"status": status}, "txs": txs}


def test_tally_counts_each_owners_blocks_votes_and_pay_as_a_miner_apart_from_pay_as_a_contributor() -> None:
    honest, attacker = Participant("node0", False, 1), Participant("node3", True, 4)
    owners = {"h": honest, "a1": attacker, "a2": attacker}
    chain = Chain([
        block("h", "counted", 3, []),
        block("a1", "rejected", 4, []),
        block("h", "counted", 3, ["h", "h", "stranger"]),  # a round's last block pays contributors
        block("a2", None, 0, []),
    ])
    tally(chain, 4, owners)  # type: ignore[arg-type]
    assert (honest.blocks, honest.votes, honest.updates_carried) == (2, {"counted": 2}, 6)
    assert (honest.updates_paid, honest.contributor_paid, honest.miner_paid) == (2, 2, 100)
    assert (attacker.blocks, attacker.votes, attacker.updates_carried) == (2, {"rejected": 1, "open": 1}, 4)
    assert (attacker.contributor_paid, attacker.miner_paid) == (0, 100)
    report = Report({"nodes": 4, "attackers": 1, "attack": "miner-poison", "task": "digits"}, 0.93, 360, 200,
                    samples((0, 0.5), (200, 0.95)), 200, 0.95, 4, [honest, attacker])
    text = summary(report)
    assert ">= 0.93 after 200 s" in text and "node3 (attacker): 4 key(s), mined 2 blocks [open 1, rejected 1]" in text
