"""Issue 18's chain attacks, run by real trainers in real nodes at regtest size, and the defence.

Each scenario starts in-process nodes whose trainers take the roles
``gradchain testnet up --attack`` gives them (node/training.py: the same code
paths, not test doubles) and mines on demand, one block at a time on the
node a schedule names, after every trainer has finished with the tip and
what it pooled has reached that miner. The chain's answer is read over the
public API, as the dashboard and ``gradchain testnet measure`` read it:

- ``miner-poison``: the attacker's blocks vote with its own poisoned updates;
  the round rejects those votes, nobody in them is paid, and the dashboard
  marks them rejected.
- ``censor``: the censor's blocks carry only its own updates; the honest
  blocks carry everyone's, and the honest participant is paid.
- ``copy``: the copier's reveals are clones of another sender's; they land in
  blocks and are never paid.
- ``sybil-flood``: the sybil mines only until its keys are bonded; its keys'
  updates take only the slots the honest bonds leave, the block's rule
  throws them out and they are never paid.

The full-size figures (4 nodes on the testnet for 6 minutes) are the README's
"Security model", from ``gradchain testnet measure``.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consensus.tx import Commit, GradientUpdate, update_bytes
from node.api.summaries import CLONE_REASON, unpaid_reason
from node.service import Node
from tests.conftest import until
from tests.node.harness import Cluster, connect, get_json, http, mine, scenario, wait_same_tip
from wallet import address_bytes, address_of, encode_address

STEP_TIMEOUT_S = 30.0  # one trainer pass (a round's updates for every key) on a loaded 2-core box


def own_contributions(node: Node) -> set[bytes]:
    """On the chain thread: the commitments and reveals the node's trainer pooled under its keys
    (its spends need not reach other miners: its bonds go in with any block, its own included)."""
    return {
        e.txid for k in node.trainer.keys for e in node.mempool.pending(address_bytes(k.public))
        if isinstance(e.tx, Commit | GradientUpdate)
    }


async def step(nodes: Sequence[Node], miner: Node) -> None:
    """Mine one block on ``miner`` once every trainer has finished with the tip and its contributions
    reached the miner."""
    await wait_same_tip(list(nodes))
    height = miner.chain.height
    await until(lambda: all(n.trainer.done_height >= height for n in nodes), STEP_TIMEOUT_S,
                what=f"every trainer done with tip {height}")
    for node in nodes:
        if node is not miner:
            pooled = await node.run_chain(own_contributions, node)
            await until(lambda p=pooled: miner.run_chain(lambda: p <= set(miner.mempool.txids())),  # type: ignore[misc]
                        STEP_TIMEOUT_S, what=f"{node.config.datadir.name}'s contributions at the miner")
    await mine(miner, 1)


async def run(nodes: Sequence[Node], blocks: int, who: Callable[[int], Node]) -> None:
    """Mine ``blocks`` blocks, the one at height ``h`` on ``who(h)``."""
    for _ in range(blocks):
        await wait_same_tip(list(nodes))
        await step(nodes, who(nodes[0].chain.height + 1))
    await wait_same_tip(list(nodes))


async def blocks_of(node: Node, heights: range) -> list[dict[str, Any]]:
    """The blocks at ``heights`` as ``/api/blocks/<h>`` shows them."""
    out = []
    async with http() as session:
        for h in heights:
            status, block = await get_json(session, f"{node.url}/api/blocks/{h}")
            assert status == 200, block
            out.append(block)
    return out


def addresses(node: Node) -> set[str]:
    return {address_of(k.public) for k in node.trainer.keys}


def miner_of(block: dict[str, Any]) -> str:
    return str(block["txs"][0]["payouts"][0]["address"])


def updates_in(block: dict[str, Any]) -> list[dict[str, Any]]:
    return [tx for tx in block["txs"] if tx["type"] == "update"]


def contributor_pay(blocks: Sequence[dict[str, Any]], whose: set[str]) -> int:
    """Coins the coinbases paid ``whose`` addresses as contributors (every payout after the miner's)."""
    return sum(p["amount"] for b in blocks for p in b["txs"][0]["payouts"][1:] if p["address"] in whose)


def votes(blocks: Sequence[dict[str, Any]], miner: str) -> collections.Counter[str]:
    """What the rounds made of the votes of ``miner``'s blocks that carried updates."""
    return collections.Counter(b["vote"]["status"] for b in blocks if miner_of(b) == miner and updates_in(b))


async def pair(cluster: Cluster, attack: str, **overrides: Any) -> tuple[Node, Node]:
    """An honest trainer and an attacker trainer, connected; f = 0 so that one honest update is a vote."""
    honest = await cluster.start("honest", train=True, byzantine_f=0, **overrides)
    attacker = await cluster.start("attacker", train=True, byzantine_f=0, attack=attack, **overrides)
    await connect(attacker, honest)
    return honest, attacker


@scenario
async def test_a_poisoning_miners_votes_are_rejected_and_the_dashboard_says_so(cluster: Cluster) -> None:
    honest, attacker = await pair(cluster, "miner-poison")
    width = honest.chain.task.round_blocks
    assert len(attacker.trainer.keys) == honest.chain.task.max_updates_per_block, "a key per update slot"
    # a quarter of the blocks: the attacker mines heights 1, 5, 9, ...
    await run([honest, attacker], 4 * width, lambda h: attacker if h % 4 == 1 else honest)
    blocks = await blocks_of(honest, range(1, honest.chain.height + 1))
    bad, good = addresses(attacker), addresses(honest)
    mine_a = {b["height"] for b in blocks if miner_of(b) in bad and updates_in(b)}
    assert len(mine_a) >= 2, "the attacker's blocks never carried its poison"
    for b in blocks:
        if b["height"] in mine_a:
            assert {u["from"] for u in updates_in(b)} <= bad, "miner-poison carries only its own updates"
    attacker_votes, honest_votes = votes(blocks, address_of(attacker.keypair.public)), votes(blocks, address_of(
        honest.keypair.public))
    assert attacker_votes["counted"] == 0 and attacker_votes["rejected"] >= 2, attacker_votes
    assert honest_votes["counted"] > honest_votes["rejected"] + honest_votes["gated"], honest_votes
    assert contributor_pay(blocks, bad) == 0 and contributor_pay(blocks, good) > 0
    for b in blocks:  # what the API says of the poisoned updates: counted in their block, but not paid
        if b["vote"]["status"] == "rejected" and b["height"] in mine_a:
            assert all(u["reason"] == unpaid_reason(honest.chain.task.rule, "rejected") for u in updates_in(b) if u["accepted"])

    rejected = max(h for h in mine_a if blocks[h - 1]["vote"]["status"] == "rejected")
    async with http() as session:
        async with session.get(f"{honest.url}/blocks/{rejected}") as resp:
            page = await resp.text()
        async with session.get(f"{honest.url}/") as resp:
            live = await resp.text()
    assert re.search(r'<dt>Vote</dt><dd>\s*<span class="badge bad"[^>]*>rejected</span>', page), page[:2000]
    rows = dict(re.findall(r'<tr data-height="(\d+)">(.*?)</tr>', live, re.S))
    shown = [h for h in mine_a if str(h) in rows]
    assert shown, "the live page lists recent blocks: at least one of the attacker's"
    for h in shown:
        assert f">{blocks[h - 1]['vote']['status']}</span>" in rows[str(h)]


@scenario
async def test_a_censoring_miner_does_not_stop_the_honest_updates(cluster: Cluster) -> None:
    honest, censor = await pair(cluster, "censor")
    width = honest.chain.task.round_blocks
    await run([honest, censor], 4 * width, lambda h: censor if h % 2 else honest)  # half the blocks
    blocks = await blocks_of(honest, range(1, honest.chain.height + 1))
    good, own = addresses(honest), addresses(censor)
    censored = [b for b in blocks if miner_of(b) in own]
    carried = [b for b in blocks if miner_of(b) in good]
    assert all({u["from"] for u in updates_in(b)} <= own for b in censored), "a censor's block carried another's update"
    assert any(good & {u["from"] for u in updates_in(b)} for b in carried), "honest blocks never carried the honest update"
    assert contributor_pay(blocks, good) > 0, "the honest participant was never paid"
    assert any(b["vote"]["status"] == "counted" and miner_of(b) in good for b in blocks)


@scenario
async def test_a_copier_lands_clones_and_is_never_paid(cluster: Cluster) -> None:
    honest, copier = await pair(cluster, "copy")
    width = honest.chain.task.round_blocks
    # the copier mines the first block only (its bond), then watches the honest reveals
    await run([honest, copier], 4 * width, lambda h: copier if h == 1 else honest)
    blocks = await blocks_of(honest, range(1, honest.chain.height + 1))
    theirs = addresses(copier)
    copies = [u for b in blocks for u in updates_in(b) if u["from"] in theirs]
    assert len(copies) >= 2, "the copier's reveals never reached a block"
    assert not any(u["accepted"] for u in copies), "a clone was counted"
    assert {u["reason"] for u in copies} == {CLONE_REASON}
    assert contributor_pay(blocks, theirs) == 0
    assert contributor_pay(blocks, addresses(honest)) > 0
    # each copy is exactly an honest update of an earlier block
    def content(node: Node, height: int) -> list[tuple[bytes, bytes]]:
        block = node.chain.get_block(node.chain.main[height])
        assert block is not None
        return [(tx.sender_address, update_bytes(tx.update)) for tx in block.txs if isinstance(tx, GradientUpdate)]

    seen: dict[bytes, str] = {}
    for h in range(1, honest.chain.height + 1):
        for sender, data in await honest.run_chain(content, honest, h):
            if encode_address(sender) in theirs:
                assert seen.get(data) in addresses(honest), "the copier revealed an update nobody sent"
            else:
                seen.setdefault(data, encode_address(sender))


@scenario
async def test_sybil_keys_get_the_leftover_slots_and_no_pay(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.training

    monkeypatch.setattr(node.training, "SYBIL_KEYS", 6)  # a regtest-sized flood; the testnet figure uses 24
    honest = [await cluster.start(f"honest{i}", train=True, shard=(i, 3)) for i in range(3)]
    sybil = await cluster.start("sybil", train=True, attack="sybil-flood")
    for other in honest[1:] + [sybil]:
        await connect(other, honest[0])
    nodes = [*honest, sybil]
    width = honest[0].chain.task.round_blocks
    # the honest nodes mine in turn first, for their bonds and the top-ups that give each more
    # bond units than a round has blocks (slots go by stake: node.mempool.inclusion_ranks); the
    # sybil mines while it still wants blocks (to fund and bond its keys), the first honest node
    # mines the rest
    mined = 0
    head_start = 4 * len(honest)

    def who(height: int) -> Node:
        nonlocal mined
        if height <= head_start:
            return honest[(height - 1) % len(honest)]
        if sybil.trainer.wants_blocks:
            mined += 1
            return sybil
        return honest[0]

    await run(nodes, head_start + 5 * width, who)
    assert not sybil.trainer.wants_blocks and 0 < mined < 3 * width, "the sybil stopped mining once bonded"
    blocks = await blocks_of(honest[0], range(1, honest[0].chain.height + 1))
    theirs, good = addresses(sybil), set().union(*(addresses(n) for n in honest))
    slots = honest[0].chain.task.max_updates_per_block
    flooded = [b for b in blocks if theirs & {u["from"] for u in updates_in(b)}]
    assert flooded, "the sybil keys never got an update into a block"
    for b in flooded:
        senders = [u["from"] for u in updates_in(b)]
        assert sum(s in theirs for s in senders) <= slots - sum(s in good for s in senders)
        assert not any(u["accepted"] for u in updates_in(b) if u["from"] in theirs), "a poisoned update counted"
    assert contributor_pay(blocks, theirs) == 0 and contributor_pay(blocks, good) > 0


@scenario
async def test_an_honest_trainer_pools_a_rounds_reveals_at_once(cluster: Cluster) -> None:
    """At a round's first block the trainer pools every reveal of its last commitment, so each
    miner has one for every block of the round without waiting for the trainer after each tip."""
    node = await cluster.start("honest", train=True, byzantine_f=0)
    width = node.chain.task.round_blocks
    address = address_bytes(node.keypair.public)

    def pooled_reveals() -> int:
        return sum(isinstance(e.tx, GradientUpdate) for e in node.mempool.pending(address))

    seen = 0
    for _ in range(3 * width):
        await step([node], node)
        await until(lambda: node.trainer.done_height >= node.chain.height, STEP_TIMEOUT_S, what="the trainer")
        seen = max(seen, await node.run_chain(pooled_reveals))
    assert seen == width, f"at most {seen} reveals pooled at once"
