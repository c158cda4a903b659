"""A peer's blocks that break a rule of bonds, rounds or commit-reveal: rejected with that rule, peer banned.

Issue 18's rules as a node meets them from the network (the unit tests in
tests/unit/test_block_rules.py hold the same rules against the pure state
transition). A real node on loopback; fake peers offer it blocks built on its
own template, each with one transaction swapped for a broken one
(``send_blocks([block], expect=Reject.X)``)::

    genesis - ... - j (Alice and Bob bonded, mature) - c (Alice commits, round r)
                                                          \\ X   one fake peer per X, round r
    ... - c - ... - s (round r + 1 opens)
                      \\ Y                                     one fake peer per Y, round r + 1
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from consensus.errors import Reject
from consensus.rounds import round_start
from consensus.tx import Commit, GradientUpdate, Tx, Unbond, chain_tag, sign_tx
from ml.codec import encode_update
from node.contributor import Contributor
from node.mining import make_template
from node.service import Node
from tests.chainbuilder import mine as solve
from tests.chainbuilder import recommit
from tests.node.contrib import commit, join, next_round, reveals, status_of
from tests.node.harness import Cluster, FakePeer, node_key, scenario

ALICE = node_key("alice")
BOB = node_key("bob")
STRANGER = node_key("stranger")


def vectors(node: Node, seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.01 * rng.standard_normal(node.chain.task.param_count)).astype(np.float32) for _ in range(count)]


def signed_commit(node: Node, key: object, tag: bytes | None = None, **changes: object) -> Commit:
    """A commitment of ``key`` in the next block's round (one update), with fields changed, signed for ``tag``."""
    me = Contributor(key, node.chain.task, node.chain.signing_tag, node.chain.rules.task_id)  # type: ignore[arg-type]
    status = status_of(node, key)  # type: ignore[arg-type]
    base = node.chain.main[round_start(status.round, node.chain.task.round_blocks)]
    honest = me.commit(status, base, vectors(node, 9, 1))
    fields = {"task_id": honest.task_id, "round": honest.round, "base_hash": honest.base_hash,
              "hashes": honest.hashes, **changes}
    tx = Commit(honest.sender, fields["task_id"], fields["round"], fields["base_hash"], fields["hashes"])  # type: ignore[arg-type]
    return sign_tx(tx, key, tag or node.chain.signing_tag)  # type: ignore[arg-type, return-value]


async def offer(node: Node, cases: list[tuple[Reject, list[Tx]]]) -> None:
    """Each case's txs in a block on the node's template, from its own fake peer; expect the code."""
    good = await node.run_chain(make_template, node)
    coinbase = good.txs[0]
    for code, txs in cases:
        async with FakePeer(node) as fake:
            await fake.send_blocks([recommit(good, [coinbase, *txs])], expect=code)


@scenario
async def test_blocks_breaking_the_round_rules_are_rejected_with_their_code(cluster: Cluster) -> None:
    (a,) = await cluster.start_many(1)
    await join(a, [ALICE, BOB])
    await next_round(a)  # Alice commits in a round's first block: the next block is still that round
    contributors = await commit(a, {ALICE: vectors(a, 1, 2)})
    height = a.chain.height
    tag = a.chain.signing_tag
    nothing = Unbond(STRANGER.public, 0, 0, a.chain.rules.task_id)
    # the same network, another chain (another genesis: another task, --rule or --f)
    elsewhere = chain_tag(a.chain.rules.chain_id, hashlib.sha256(b"another genesis").digest())
    await offer(a, [
        (Reject.NOT_BONDED, [signed_commit(a, STRANGER)]),
        (Reject.UNKNOWN_TASK, [signed_commit(a, BOB, task_id=b"\x01" * 32)]),
        (Reject.BAD_ROUND, [signed_commit(a, BOB, round=status_of(a, BOB).round + 1)]),
        (Reject.UPDATE_BAD_BASE, [signed_commit(a, BOB, base_hash=bytes(32))]),
        (Reject.BAD_COMMIT, [signed_commit(a, BOB, hashes=(b"\x01" * 32, b"\x01" * 32))]),
        (Reject.DUPLICATE_COMMIT, [signed_commit(a, ALICE)]),
        (Reject.NOT_BONDED, [sign_tx(nothing, STRANGER, tag)]),
        (Reject.BAD_SIGNATURE, [signed_commit(a, BOB, tag=elsewhere)]),
    ])
    assert a.chain.height == height  # none of them connected

    await next_round(a)
    (first,) = reveals(a, contributors)
    second = contributors[ALICE].plans[first.round][1]
    stray = GradientUpdate(ALICE.public, a.chain.rules.task_id, first.round, encode_update(vectors(a, 5, 1)[0]))
    uncommitted = sign_tx(stray, ALICE, tag)
    late = sign_tx(dataclasses.replace(first, round=first.round + 1, signature=b""), ALICE, tag)
    await offer(a, [
        (Reject.NO_COMMITMENT, [uncommitted]),
        (Reject.BAD_ROUND, [late]),
        (Reject.DUPLICATE_SENDER, [first, second]),
    ])
    async with FakePeer(a) as honest:  # the valid block still connects from a fresh peer
        good = await a.run_chain(make_template, a)
        await honest.send_blocks([solve(good)])
